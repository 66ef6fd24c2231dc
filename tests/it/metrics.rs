//! Metrics after a scripted workload: exact counter values, read the way a
//! scraper reads them (the Prometheus text), over real sockets and a real
//! RocksDB.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::both_drivers;
use crate::client::*;
use crate::util::*;

/// `name{labels}` → value, for every sample line of a scrape.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse::<f64>().expect("number"))
        })
        .collect()
}

fn get(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:?}", s.keys().collect::<Vec<_>>()))
}

/// Open connections of `ty`, summed over shards.
fn open_of_type(s: &HashMap<String, f64>, ty: &str) -> f64 {
    let needle = format!("client_type=\"{ty}\"}}");
    s.iter()
        .filter(|(k, _)| k.starts_with("wshandler_connections{") && k.ends_with(&needle))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(srv: &TestServer) -> HashMap<String, f64> {
    samples(&srv.server.metrics_text().await.unwrap())
}

both_drivers!(counters_match_a_scripted_workload, |driver| {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = proto_config(driver);
    cfg.persist = true;
    cfg.data_dir = dir.path().to_path_buf();
    let srv = TestServer::start(cfg).await;
    let (mut a, mut b) = on_two_shards(srv.addr, "microcontroller").await;
    // The extra connections on_two_shards opened are gone once only a and
    // b are left.
    let mut s = scrape(&srv).await;
    for _ in 0..100 {
        if open_of_type(&s, "microcontroller") == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = scrape(&srv).await;
    }
    assert_eq!(open_of_type(&s, "microcontroller"), 2.0);
    let accepted0 = get(&s, "wshandler_connections_accepted_total");

    for i in 0..7 {
        let r = a
            .call(json!({"type": "data", "dataType": "sensor", "data": {"i": i}}))
            .await;
        assert_eq!(r["success"], true, "{r}");
    }
    for i in 0..3 {
        let r = b
            .call(json!({"type": "data", "dataType": "sensor", "data": {"i": i}}))
            .await;
        assert_eq!(r["success"], true, "{r}");
    }
    let r = b
        .call(json!({"type": "subscribe", "topic": "plant.line1"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    for n in 0..2 {
        let r = a
            .call(json!({"type": "publish", "topic": "plant.line1", "data": {"n": n}}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        let p = b.recv_type("publish").await;
        assert_eq!(p["data"]["n"], n);
    }
    a.send_raw("{not json").await;
    assert_eq!(a.recv().await["code"], "invalid_json");
    let r = a
        .call(json!({"type": "request", "requestId": "r1", "endpoint": "echo", "data": 1}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    let s = scrape(&srv).await;
    assert_eq!(
        get(&s, "wshandler_messages_received_total{type=\"data\"}"),
        10.0
    );
    assert_eq!(get(&s, "wshandler_readings_ingested_total"), 10.0);
    assert_eq!(get(&s, "wshandler_store_records_written_total"), 10.0);
    assert_eq!(get(&s, "wshandler_store_write_errors_total"), 0.0);
    assert_eq!(
        get(&s, "wshandler_messages_sent_total{type=\"data_response\"}"),
        10.0
    );
    assert_eq!(
        get(&s, "wshandler_messages_received_total{type=\"publish\"}"),
        2.0
    );
    assert_eq!(get(&s, "wshandler_publishes_total{source=\"client\"}"), 2.0);
    assert_eq!(get(&s, "wshandler_deliveries_total"), 2.0);
    assert_eq!(
        get(&s, "wshandler_messages_sent_total{type=\"publish\"}"),
        2.0
    );
    assert_eq!(
        get(&s, "wshandler_topic_publishes_total{topic=\"plant.line1\"}"),
        2.0
    );
    assert_eq!(
        get(
            &s,
            "wshandler_topic_deliveries_total{topic=\"plant.line1\"}"
        ),
        2.0
    );
    assert_eq!(
        get(&s, "wshandler_messages_received_total{type=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        get(&s, "wshandler_errors_sent_total{code=\"invalid_json\"}"),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "wshandler_call_duration_seconds_count{kind=\"request\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "wshandler_call_duration_seconds_count{kind=\"request\",outcome=\"timeout\"}"
        ),
        0.0
    );
    let batches = get(&s, "wshandler_store_batch_records_count");
    assert!(
        (1.0..=10.0).contains(&batches),
        "{batches} batches for 10 records"
    );
    assert_eq!(get(&s, "wshandler_store_batch_records_sum"), 10.0);
    assert_eq!(get(&s, "wshandler_store_queue_depth"), 0.0);
    assert!(get(&s, "wshandler_wire_received_bytes_total") > 0.0);
    assert!(get(&s, "process_resident_memory_bytes") > 0.0);
    assert!(get(&s, "process_open_fds") > 0.0);

    // A close with 1000 from the client is counted under its code; nobody
    // new connected meanwhile.
    let before = get(&s, "wshandler_connection_closes_total{code=\"1000\"}");
    drop(a);
    let mut s = scrape(&srv).await;
    for _ in 0..100 {
        if open_of_type(&s, "microcontroller") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = scrape(&srv).await;
    }
    assert_eq!(open_of_type(&s, "microcontroller"), 1.0);
    let closes: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("wshandler_connection_closes_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(closes >= 1.0);
    assert!(
        get(&s, "wshandler_connection_closes_total{code=\"1000\"}")
            + get(&s, "wshandler_connection_closes_total{code=\"1006\"}")
            > before
    );
    assert_eq!(get(&s, "wshandler_connections_accepted_total"), accepted0);
    drop(b);
    srv.stop().await;
});

both_drivers!(refusals_are_counted_by_reason, |driver| {
    let mut cfg = proto_config(driver);
    cfg.max_connections = 1;
    let srv = TestServer::start(cfg).await;
    let _a = Client::connect(srv.addr).await;
    // The second upgrade is over max_connections: 503.
    let resp = http(
        srv.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    // Not an upgrade at all: a bad handshake.
    let resp = http(
        srv.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 4"), "{resp}");
    let s = scrape(&srv).await;
    assert_eq!(
        get(
            &s,
            "wshandler_connections_rejected_total{reason=\"max_connections\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "wshandler_connections_rejected_total{reason=\"bad_handshake\"}"
        ),
        1.0
    );
    assert_eq!(get(&s, "wshandler_connections_accepted_total"), 1.0);
    srv.stop().await;
});

/// `promtool check metrics` (Prometheus's own linter) accepts a scrape
/// with every family populated: histograms observed, topics counted, the
/// store on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = proto_config(wshandler::IoDriver::Epoll);
    cfg.persist = true;
    cfg.data_dir = dir.path().to_path_buf();
    let srv = TestServer::start(cfg).await;
    let mut a = Client::with_type(srv.addr, "microcontroller").await;
    let r = a
        .call(json!({"type": "subscribe", "topic": "x.\"quoted\\"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = a
        .call(json!({"type": "data", "dataType": "sensor", "data": {"v": 1}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = a
        .call(json!({"type": "publish", "topic": "x.\"quoted\\", "data": 2}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let text = srv.server.metrics_text().await.unwrap();
    assert!(
        text.contains("wshandler_topic_publishes_total{topic=\"x.\\\"quoted\\\\\"} 1"),
        "{text}"
    );
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; tests/run.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop().await;
}
