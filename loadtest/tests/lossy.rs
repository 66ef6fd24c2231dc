//! The harness must catch a server that loses or reorders messages: run it
//! against a small in-test server that does so on purpose (and against the
//! same server behaving, as a control).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wshandler_loadtest::scenario::{self, Device, Fanout};
use wshandler_loadtest::{Limits, Target};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Drop the publish with s == 5 and deliver s == 11 before s == 10.
    LoseAndReorder,
    /// Never answer every 7th data message.
    DropAcks,
}

type Subs = Arc<Mutex<Vec<mpsc::UnboundedSender<String>>>>;

async fn serve(fault: Fault) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let subs: Subs = Arc::default();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(conn(s, fault, subs.clone()));
        }
    });
    addr
}

async fn conn(s: tokio::net::TcpStream, fault: Fault, subs: Subs) {
    let ws = tokio_tungstenite::accept_async(s).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::text(m)).await.is_err() {
                return;
            }
        }
    });
    let _ = out_tx.send(r#"{"type":"welcome","clientId":"x","authRequired":false}"#.into());
    let mut held: Option<String> = None;
    let mut data_n = 0u64;
    while let Some(Ok(Message::Text(t))) = rx.next().await {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap_or("") {
            "handshake" => {
                let _ = out_tx.send(r#"{"type":"handshake_response","success":true}"#.into());
            }
            "subscribe" => {
                subs.lock().unwrap().push(out_tx.clone());
                let _ = out_tx.send(format!(
                    r#"{{"type":"subscribe_response","success":true,"topic":{}}}"#,
                    v["topic"]
                ));
            }
            "publish" => {
                let _ = out_tx.send(r#"{"type":"publish_response","success":true}"#.into());
                let msg =
                    serde_json::json!({"type": "publish", "topic": v["topic"], "data": v["data"]})
                        .to_string();
                let s = v["data"]["s"].as_u64().unwrap();
                let mut deliver = vec![msg.clone()];
                if fault == Fault::LoseAndReorder {
                    if s == 5 {
                        deliver.clear();
                    } else if s == 10 {
                        held = Some(msg);
                        deliver.clear();
                    } else if s == 11 {
                        deliver.push(held.take().unwrap());
                    }
                }
                for m in deliver {
                    for sub in subs.lock().unwrap().iter() {
                        let _ = sub.send(m.clone());
                    }
                }
            }
            "data" => {
                data_n += 1;
                if fault == Fault::DropAcks && data_n.is_multiple_of(7) {
                    continue;
                }
                let _ = out_tx
                    .send(r#"{"type":"data_response","success":true,"timestamp":"t"}"#.into());
            }
            _ => {}
        }
    }
}

fn limits() -> Limits {
    Limits {
        duration: Duration::from_millis(1500),
        max_messages: 0,
        drain: Duration::from_millis(1500),
        threads: 2,
    }
}

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        src_ips: vec![],
        token: None,
        tls: None,
    }
}

fn fanout_params() -> Fanout {
    Fanout {
        subscribers: 3,
        topics: 1,
        publishers: 1,
        rate: 200.0,
        window: 16,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faithful_server_passes() {
    let addr = serve(Fault::None).await;
    let r = tokio::task::spawn_blocking(move || {
        scenario::fanout(&target(addr), limits(), fanout_params(), false)
    })
    .await
    .unwrap();
    assert!(r.ops > 100, "{}", r.summary());
    assert_eq!(
        (r.lost, r.out_of_order, r.error_count()),
        (0, 0, 0),
        "{}",
        r.summary()
    );
    assert_eq!(r.extra["nothing_lost_in_order"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_reordered_messages_are_detected() {
    let addr = serve(Fault::LoseAndReorder).await;
    let r = tokio::task::spawn_blocking(move || {
        scenario::fanout(&target(addr), limits(), fanout_params(), false)
    })
    .await
    .unwrap();
    // Every subscriber misses s == 5 and sees s == 10 after s == 11.
    assert_eq!(r.lost, 3, "{}", r.summary());
    assert_eq!(r.out_of_order, 3, "{}", r.summary());
    assert_eq!(r.extra["nothing_lost_in_order"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_data_is_reported() {
    let addr = serve(Fault::DropAcks).await;
    let dev = Device {
        window: 4,
        rate: 0.0,
        heartbeat_s: 0.0,
        pad: 0,
    };
    let r = tokio::task::spawn_blocking(move || {
        scenario::ingest(&target(addr), limits(), 2, dev, false)
    })
    .await
    .unwrap();
    assert!(
        r.errors.get("unanswered").copied().unwrap_or(0) > 0,
        "{}",
        r.summary()
    );
}
