//! What the metrics cost per message: the counter and histogram updates a
//! shard makes for one ingested reading, one publish delivered to 1,000
//! subscribers, and one scrape's text for a server with every family
//! populated, so the per-message figure can be set against the server's
//! time per message (docs/benchmarks.md).
//!
//! - `per_message/ingest`: one `data` message: received by type, payload
//!   in, ingested, the reply's type label (`OutLabel::of_json`) and sent by
//!   type, payload out, wire bytes in and out.
//! - `per_message/publish_1000`: one publish reaching 1,000 subscribers on
//!   a shard: received, publishes, the top-K topic table, 1,000 sent-by-type
//!   increments, deliveries, the fan-out histogram.
//! - `encode/text`: rendering a histogram-heavy body with [`Text`].
//!
//! Run with `cargo bench --bench metrics`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use wshandler::metrics::encode::{Kind, Text};
use wshandler::metrics::topk::TopK;
use wshandler::metrics::{InLabel, OutLabel, ShardMetrics, LATENCY_BUCKETS_US};
use wshandler::protocol::kind::MsgType;

fn per_message(c: &mut Criterion) {
    let m = Arc::new(ShardMetrics::default());
    let reply = br#"{"type":"data_response","success":true,"insertId":42,"timestamp":"2026-12-02T23:00:00.000Z"}"#;
    let mut g = c.benchmark_group("per_message");
    g.bench_function("ingest", |b| {
        b.iter(|| {
            let m = black_box(&m);
            m.wire_in.add(black_box(120));
            m.payload_in.add(black_box(100));
            m.received[InLabel::Type(MsgType::Data).index()].inc();
            m.ingested.inc();
            m.sent[OutLabel::of_json(black_box(reply)) as usize].inc();
            m.payload_out.add(black_box(reply.len() as u64));
            m.wire_out.add(black_box(reply.len() as u64 + 2));
        })
    });
    let topic: Arc<str> = "plant.line1.temperature".into();
    let mut topk = TopK::new(20);
    g.bench_function("publish_1000", |b| {
        b.iter(|| {
            let m = black_box(&m);
            m.received[InLabel::Type(MsgType::Publish).index()].inc();
            m.publishes.inc();
            topk.count(black_box(&topic), 1, 0);
            for _ in 0..1000 {
                m.sent[OutLabel::Publish as usize].inc();
            }
            m.deliveries.add(1000);
            m.fanout.observe(1000);
            topk.count(&topic, 0, 1000);
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let m = ShardMetrics::default();
    for i in 0..10_000u64 {
        m.calls[i as usize % 6].observe(i * 37 % 2_000_000);
    }
    c.bench_function("encode/text", |b| {
        b.iter(|| {
            let mut t = Text::new();
            t.family("x_seconds", "x", Kind::Histogram);
            for h in &m.calls {
                t.histogram("x_seconds", &[("kind", "request")], &h.snapshot(), 1e-6);
            }
            black_box(t.finish().len())
        })
    });
    let _ = LATENCY_BUCKETS_US;
}

criterion_group!(benches, per_message, encode);
criterion_main!(benches);
