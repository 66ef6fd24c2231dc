//! Crash test: SIGKILL a server that is ingesting from 50 connections at a
//! random moment, restart it on the same data dir, and check that every
//! record whose `data_response` arrived is there — in `sync` and `wal` mode.

use std::collections::HashMap;
use std::process::Child;

use crate::util::{bin, signal, spawn_listening};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn spawn_server(dir: &std::path::Path, durability: &str) -> (Child, String) {
    spawn_listening(
        bin()
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--shards",
                "2",
                "--log-level",
                "error",
            ])
            .args([
                "--set",
                "persist=true",
                "--set",
                "max_connections=500",
                "--set",
                "enable_heartbeat=false",
            ])
            .arg("--set")
            .arg(format!("data_dir={}", dir.display()))
            .arg("--set")
            .arg(format!("durability={durability}")),
    )
}

/// A seed from the clock, printed so a failure can be replayed.
fn random_ms(lo: u64, hi: u64) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let ms = lo + seed % (hi - lo);
    println!("killing after {ms} ms");
    ms
}

async fn crash_and_check(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path(), durability);
    // (client, seq) acknowledged → insertId
    let acked: Arc<Mutex<HashMap<(usize, u64), u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..50usize {
        let acked = acked.clone();
        let url = format!("ws://{addr}/");
        tasks.push(tokio::spawn(async move {
            let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let sender = tokio::spawn(async move {
                for i in 0..100_000u64 {
                    let m = json!({"type": "data", "dataType": "sensor", "data": {"c": c, "i": i}});
                    if tx.send(Message::text(m.to_string())).await.is_err() {
                        return;
                    }
                    if i % 8 == 7 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            });
            // Replies come in send order; data_responses carry the insertId.
            let mut i = 0u64;
            while let Some(Ok(m)) = rx.next().await {
                let Message::Text(t) = m else { continue };
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "data_response" {
                    assert_eq!(v["success"], true, "{v}");
                    acked
                        .lock()
                        .unwrap()
                        .insert((c, i), v["insertId"].as_u64().unwrap());
                    i += 1;
                }
            }
            sender.abort();
        }));
    }
    tokio::time::sleep(Duration::from_millis(random_ms(400, 1500))).await;
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} records acknowledged before the kill",
        acked.len()
    );

    // Restart on the same directory; read back through the CLI while it runs.
    let (mut child, _addr) = spawn_server(dir.path(), durability);
    let out = bin()
        .args(["query", "--table", "sensor_data", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stored: HashMap<u64, (usize, u64)> = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = &v["data"];
        stored.insert(
            v["insertId"].as_u64().unwrap(),
            (d["c"].as_u64().unwrap() as usize, d["i"].as_u64().unwrap()),
        );
    }
    let mut lost = 0;
    for ((c, i), id) in &acked {
        match stored.get(id) {
            Some(&(sc, si)) => assert_eq!((sc, si), (*c, *i), "insertId {id} holds another record"),
            None => lost += 1,
        }
    }
    println!(
        "{durability}: {} acknowledged, {} stored after restart, {lost} acknowledged records lost",
        acked.len(),
        stored.len()
    );
    assert_eq!(lost, 0, "acknowledged records lost in {durability} mode");
    signal(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_record_sync() {
    crash_and_check("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_record_wal() {
    crash_and_check("wal").await;
}
