//! The protocol hot path outside the codec: JSON message decode (our
//! validating scanner, as the shards do, against simd-json borrowed values,
//! which the shards used before, and serde_json into a `Value`) and topic
//! matching against 10,000 subscriptions with wildcards.
//!
//! ```sh
//! cargo bench --bench protocol
//! ```

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use simd_json::prelude::*;
use wshandler::protocol::scan;
use wshandler::protocol::topic::SubTrie;

const MSG: &str = r#"{"type":"data","dataType":"sensor","messageId":"m-123456","data":{"seq":42,"device":"esp32-livingroom-7","temperature":21.5,"humidity":40,"battery":87,"location":{"lat":51.5072,"lon":-0.1276}}}"#;

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_decode");
    g.throughput(Throughput::Bytes(MSG.len() as u64));
    let mut members = Vec::with_capacity(16);
    g.bench_function("wshandler_scan", |b| {
        b.iter(|| {
            let m = scan::scan(black_box(MSG.as_bytes()), 64, &mut members).unwrap();
            black_box(m.str("type").unwrap().map(|t| t.len()));
            black_box(
                m.get("data")
                    .and_then(|d| d.get("temperature"))
                    .map(|t| t.raw().len()),
            );
        })
    });
    let mut scratch = Vec::with_capacity(1024);
    g.bench_function("simd_json_borrowed", |b| {
        b.iter(|| {
            scratch.clear();
            scratch.extend_from_slice(MSG.as_bytes());
            let v = simd_json::to_borrowed_value(&mut scratch).unwrap();
            black_box(v.get("type").and_then(|t| t.as_str()).map(str::len));
            black_box(
                v.get("data")
                    .and_then(|d| d.get("temperature"))
                    .and_then(|t| t.as_f64()),
            );
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(MSG)).unwrap();
            black_box(v["type"].as_str().map(str::len));
            black_box(v["data"]["temperature"].as_f64());
        })
    });
    g.finish();
}

fn topics(c: &mut Criterion) {
    // 10,000 subscriptions: exact topics, one-segment and tail wildcards.
    let mut trie = SubTrie::default();
    for i in 0..10_000u64 {
        let pattern = match i % 4 {
            0 => format!("sensors.room{}.temperature", i % 2500),
            1 => format!("sensors.*.humidity{}", i % 100),
            2 => format!("sensors.room{}.>", i % 2500),
            _ => format!("alerts.zone{}.*", i % 50),
        };
        trie.insert(&pattern, i);
    }
    let mut g = c.benchmark_group("topic_match_10k_subs");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    for topic in [
        "sensors.room17.temperature",
        "sensors.room99.humidity7",
        "alerts.zone3.fire",
        "nobody.listens.here",
    ] {
        g.bench_function(topic, |b| {
            b.iter(|| {
                trie.matches(black_box(topic), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, topics);
criterion_main!(benches);
