//! Shared test helpers: a server that stops on drop, a raw frame client, and
//! the `both_drivers!` macro that runs one test body on each I/O driver.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshandler::{Config, IoDriver, WebSocketHandler};

/// Bound on any single wait in a test: tests wait on events, never sleep for
/// a fixed time, but a bug must fail the test rather than hang it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server on an ephemeral loopback port; stopped on drop.
pub struct TestServer {
    pub server: WebSocketHandler,
    pub addr: SocketAddr,
}

/// A config for tests: loopback, ephemeral port, two shards, echo mode.
pub fn test_config(driver: IoDriver) -> Config {
    Config {
        host: "127.0.0.1".into(),
        port: 0,
        shards: 2,
        io_driver: driver,
        echo: true,
        persist: false,
        enable_heartbeat: false,
        drain_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start(cfg: Config) -> TestServer {
        let mut server = WebSocketHandler::new(cfg);
        server.start().await.expect("server starts");
        let addr = server.local_addr().unwrap();
        TestServer { server, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn stop(mut self) {
        self.server.stop().await;
    }
}

/// Run `$body` (an async block using `driver: IoDriver`) on both drivers.
#[macro_export]
macro_rules! both_drivers {
    ($name:ident, |$driver:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uring() {
                let $driver = wshandler::IoDriver::Uring;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn epoll() {
                let $driver = wshandler::IoDriver::Epoll;
                $body
            }
        }
    };
}

/// A masked client frame.
pub fn client_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![(fin as u8) << 7 | (rsv1 as u8) << 6 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A server frame as read back by [`RawClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A hand-rolled client for sending what a well-behaved library won't.
pub struct RawClient {
    pub stream: TcpStream,
    pub response_head: String,
    buf: Vec<u8>,
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

impl RawClient {
    /// Connect and upgrade, with extra request headers.
    pub async fn connect_with(addr: SocketAddr, extra_headers: &str) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut c = RawClient {
            stream,
            response_head: String::new(),
            buf: Vec::new(),
        };
        let head = c.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        c.response_head = head;
        c
    }

    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::connect_with(addr, "").await
    }

    /// A client over `stream`, whose upgrade response `head` was read.
    pub fn from_upgraded(stream: TcpStream, head: String) -> RawClient {
        RawClient {
            stream,
            response_head: head,
            buf: Vec::new(),
        }
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).into_owned();
                self.buf.drain(..i + 4);
                return head;
            }
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut tmp))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "EOF before response head");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub async fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.unwrap();
    }

    /// Read one frame; `None` on EOF or reset.
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((f, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut tmp = vec![0u8; 64 * 1024];
            match tokio::time::timeout(WAIT, self.stream.read(&mut tmp))
                .await
                .expect("read timed out")
            {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Read frames until a close frame; its code (`None` if EOF first).
    pub async fn expect_close(&mut self) -> Option<u16> {
        while let Some(f) = self.read_frame().await {
            if f.opcode == 8 {
                return f.close_code();
            }
        }
        None
    }
}

fn parse_server_frame(b: &[u8]) -> Option<(ServerFrame, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
    let (len, hl) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < hl + len {
        return None;
    }
    Some((
        ServerFrame {
            fin: b[0] & 0x80 != 0,
            rsv1: b[0] & 0x40 != 0,
            opcode: b[0] & 0x0f,
            payload: b[hl..hl + len].to_vec(),
        },
        hl + len,
    ))
}

/// Send a raw HTTP request and return the whole response (read to EOF).
pub async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Wait (bounded) for an event matching `pred`.
pub async fn wait_event(
    rx: &crossbeam_channel::Receiver<wshandler::Event>,
    pred: impl Fn(&wshandler::Event) -> bool + Send + 'static,
) -> wshandler::Event {
    let rx = rx.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(e) if pred(&e) => return e,
                Ok(_) => continue,
                Err(_) => panic!("event not seen within {WAIT:?}"),
            }
        }
    })
    .await
    .unwrap()
}

/// The `wshandler` binary, with no `WSH_*` settings inherited (it refuses
/// unknown ones, and the test environment must not leak into it).
pub fn bin() -> std::process::Command {
    without_wsh_env(std::process::Command::new(env!("CARGO_BIN_EXE_wshandler")))
}

/// `cmd` without the caller's `WSH_*` variables (the server reads them as
/// settings).
pub fn without_wsh_env(mut cmd: std::process::Command) -> std::process::Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("WSH_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Send `sig` to a child we started.
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions; pid is our child.
    unsafe { libc::kill(pid as i32, sig) }
}

/// Start `cmd` (a `wshandler serve`) and wait for its "listening on" line;
/// the child and the address it printed.
pub fn spawn_listening(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("wshandler listening on ")
        .expect(&line)
        .to_owned();
    (child, addr)
}
