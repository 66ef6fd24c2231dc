//! Durable ingest, end to end: records sent over real WebSocket connections
//! on loopback, stored by the writer thread with group commit, acknowledged
//! with their insertId. The same workload with `durability = "sync"`,
//! `"wal"` and persistence off, in one run.
//!
//! ```sh
//! cargo bench --bench store
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use wshandler::store::Durability;
use wshandler::{Config, IoDriver, WebSocketHandler};

const CONNS: usize = 16;
const PER_CONN: usize = 500;
const WINDOW: usize = 32;

async fn ingest(addr: std::net::SocketAddr) {
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            let (mut sent, mut acked) = (0, 0);
            while acked < PER_CONN {
                while sent < PER_CONN && sent - acked < WINDOW {
                    let m = format!(
                        r#"{{"type":"data","dataType":"sensor","data":{{"c":{c},"i":{sent},"temperature":21.5,"humidity":40}}}}"#
                    );
                    tx.feed(Message::text(m)).await.unwrap();
                    sent += 1;
                }
                tx.flush().await.unwrap();
                match rx.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("data_response") => {
                        assert!(t.contains("\"success\":true"), "{t}");
                        acked += 1;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("durable_ingest");
    g.throughput(Throughput::Elements((CONNS * PER_CONN) as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (name, persist, durability) in [
        ("persist_off", false, Durability::Sync),
        ("sync", true, Durability::Sync),
        ("wal", true, Durability::Wal),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = WebSocketHandler::new(Config {
            host: "127.0.0.1".into(),
            port: 0,
            shards: 1,
            io_driver: IoDriver::Auto,
            persist,
            durability,
            data_dir: dir.path().to_path_buf(),
            enable_heartbeat: false,
            max_connections: 1000,
            ..Config::default()
        });
        rt.block_on(server.start()).unwrap();
        let addr = server.local_addr().unwrap();
        g.bench_function(name, |b| b.iter(|| rt.block_on(ingest(addr))));
        rt.block_on(server.stop());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
