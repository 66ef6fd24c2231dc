//! Publish routing across shards, end to end over loopback: one publisher
//! on shard 0, subscribers either on the same shard (the publish is matched
//! and queued locally) or on shard 1 (the encoded frame crosses the
//! crossbeam mailbox and is matched there). The difference between the two
//! is the cost of the cross-shard hop; throughput counts deliveries.
//!
//! Which shard a connection lands on is the kernel's SO_REUSEPORT choice, so
//! the bench connects until it has enough clients on each shard (the shard
//! is part of the `clientId` in `welcome`) and closes the rest.
//!
//! ```sh
//! cargo bench --bench routing
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wshandler::{Config, IoDriver, WebSocketHandler};

/// Subscribers per topic.
const SUBS: usize = 50;
/// Publishes per iteration.
const PUBLISHES: usize = 200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Tx = SplitSink<Ws, Message>;
type Rx = SplitStream<Ws>;

/// Read text messages until one contains `needle`.
async fn until(rx: &mut Rx, needle: &str) -> String {
    loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) if t.contains(needle) => return t.to_string(),
            Some(Ok(_)) => {}
            other => panic!("connection ended waiting for {needle}: {other:?}"),
        }
    }
}

/// Open a connection; returns it and the shard that owns it.
async fn connect(addr: std::net::SocketAddr) -> (Tx, Rx, usize) {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let (tx, mut rx) = ws.split();
    let welcome = until(&mut rx, "\"welcome\"").await;
    let v: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    let id = v["clientId"].as_str().unwrap();
    let shard = id.rsplit('-').nth(1).unwrap().parse().unwrap();
    (tx, rx, shard)
}

struct Fixture {
    publisher: (Tx, Rx),
    /// Subscribers of `bench.local` (shard 0) and `bench.remote` (shard 1).
    local: Vec<Rx>,
    remote: Vec<Rx>,
    /// The subscribers' write halves: kept so the connections stay open.
    _writers: Vec<Tx>,
}

async fn fixture(addr: std::net::SocketAddr) -> Fixture {
    let mut publisher = None;
    let (mut local, mut remote, mut writers) = (Vec::new(), Vec::new(), Vec::new());
    let mut opened = 0;
    while publisher.is_none() || local.len() < SUBS || remote.len() < SUBS {
        opened += 1;
        assert!(
            opened < 20 * SUBS,
            "SO_REUSEPORT put too few connections on one shard"
        );
        let (mut tx, mut rx, shard) = connect(addr).await;
        let topic = match shard {
            0 if publisher.is_none() => {
                publisher = Some((tx, rx));
                continue;
            }
            0 if local.len() < SUBS => "bench.local",
            1 if remote.len() < SUBS => "bench.remote",
            _ => {
                tx.close().await.ok();
                continue;
            }
        };
        let sub = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
        tx.send(Message::text(sub)).await.unwrap();
        until(&mut rx, "subscribe_response").await;
        writers.push(tx);
        if shard == 0 {
            local.push(rx);
        } else {
            remote.push(rx);
        }
    }
    Fixture {
        publisher: publisher.unwrap(),
        local,
        remote,
        _writers: writers,
    }
}

/// One iteration: `PUBLISHES` pipelined publishes to `topic`; done when
/// every subscriber has all of them, in order, and the publisher has its
/// acks.
async fn round(publisher: &mut (Tx, Rx), subs: &mut [Rx], topic: &str) {
    let (tx, rx) = publisher;
    let send = async {
        for seq in 0..PUBLISHES {
            let m = format!(r#"{{"type":"publish","topic":"{topic}","data":{{"seq":{seq}}}}}"#);
            tx.feed(Message::text(m)).await.unwrap();
        }
        tx.flush().await.unwrap();
        for _ in 0..PUBLISHES {
            until(rx, "publish_response").await;
        }
    };
    let receive = futures_util::future::join_all(subs.iter_mut().map(|rx| async move {
        for seq in 0..PUBLISHES {
            let m = until(rx, "\"publish\"").await;
            let want = format!("\"seq\":{seq}}}");
            assert!(m.contains(&want), "out of order: wanted {want} in {m}");
        }
    }));
    tokio::join!(send, receive);
}

fn bench(c: &mut Criterion) {
    // One client thread; the server's two shards get their own threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut server = WebSocketHandler::new(Config {
        host: "127.0.0.1".into(),
        port: 0,
        shards: 2,
        io_driver: IoDriver::Auto,
        persist: false,
        enable_heartbeat: false,
        max_connections: 10_000,
        ..Config::default()
    });
    rt.block_on(server.start()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut f = rt.block_on(fixture(addr));

    let mut g = c.benchmark_group("publish_routing");
    g.throughput(Throughput::Elements((SUBS * PUBLISHES) as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("same_shard", |b| {
        b.iter(|| rt.block_on(round(&mut f.publisher, &mut f.local, "bench.local")))
    });
    g.bench_function("cross_shard", |b| {
        b.iter(|| rt.block_on(round(&mut f.publisher, &mut f.remote, "bench.remote")))
    });
    g.finish();
    drop(f);
    rt.block_on(server.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);
