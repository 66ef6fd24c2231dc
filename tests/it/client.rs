//! A JSON protocol client for tests, over tokio-tungstenite.

#![allow(dead_code)]

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::util::WAIT;

/// What a client's WebSocket runs over: a TCP stream, or a TLS stream
/// over one (`tests/it/tls.rs`).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// A connected protocol client that has read its `welcome`.
pub struct Client {
    pub ws: Ws,
    pub id: String,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_req(format!("ws://{addr}/")).await
    }

    /// Connect with extra request headers (`X-Forwarded-For`, `Origin`).
    pub async fn connect_with_headers(addr: SocketAddr, headers: &[(&str, &str)]) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/").into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Client::connect_req(req).await
    }

    /// Connect with a URL (`ws://addr/?token=...`) or a request carrying
    /// headers (`Authorization: Bearer ...`), and read the `welcome`.
    pub async fn connect_req(
        req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Client {
        let req = req.into_client_request().unwrap();
        let authority = req.uri().authority().unwrap().as_str().to_owned();
        let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
        Client::over(Box::new(tcp), req).await.unwrap()
    }

    /// Upgrade `io` (connected to the request's server) and read the `welcome`.
    pub async fn over(
        io: Box<dyn Io>,
        req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::client_async(req, io).await?;
        let mut c = Client {
            ws,
            id: String::new(),
            welcome: Value::Null,
        };
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.id = w["clientId"].as_str().unwrap().to_owned();
        c.welcome = w;
        Ok(c)
    }

    /// Connect and complete a handshake as `client_type`.
    pub async fn with_type(addr: SocketAddr, client_type: &str) -> Client {
        let mut c = Client::connect(addr).await;
        let r = c
            .call(json!({"type": "handshake", "clientType": client_type, "version": "1.0.0"}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        c
    }

    /// The shard that owns this client (from its id `<instance>-<shard>-<key>`).
    pub fn shard(&self) -> usize {
        self.id.rsplit('-').nth(1).unwrap().parse().unwrap()
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// The next JSON message (pings are skipped).
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).unwrap()
    }

    /// The next text message exactly as the server sent it.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no message within WAIT")
                .expect("stream ended")
                .expect("websocket error");
            match m {
                Message::Text(t) => return t.to_string(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Send raw text and return the next message as sent.
    pub async fn call_raw(&mut self, text: &str) -> String {
        self.send_raw(text).await;
        self.recv_text().await
    }

    /// Send and return the next message.
    pub async fn call(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Skip messages until one of type `ty`.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Read until the server closes; the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close within WAIT")
            {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Whether a message arrives within `ms`.
    pub async fn quiet_for(&mut self, ms: u64) -> bool {
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(ms), self.ws.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected message: {t}"),
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}

/// Protocol-mode config: two shards, loopback, no heartbeat.
pub fn proto_config(driver: wshandler::IoDriver) -> wshandler::Config {
    let mut c = crate::util::test_config(driver);
    c.echo = false;
    c
}

/// Open clients until there is one on each of two different shards.
pub async fn on_two_shards(addr: SocketAddr, client_type: &str) -> (Client, Client) {
    let a = Client::with_type(addr, client_type).await;
    for _ in 0..64 {
        let b = Client::with_type(addr, client_type).await;
        if b.shard() != a.shard() {
            return (a, b);
        }
    }
    panic!("SO_REUSEPORT never spread 65 connections over two shards");
}
