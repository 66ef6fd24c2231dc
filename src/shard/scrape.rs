//! A scrape: every shard's counters folded into the Prometheus text of
//! `GET /metrics`, and the dashboard's [`Overview`].
//!
//! Counters are read straight from each shard's [`ShardMetrics`] (atomics
//! only that shard writes); what only the shard's thread can see (its
//! connections by client type, out-queue bytes, its topic table) comes back
//! through its mailbox ([`ShardMsg::Scrape`]). The cost of a scrape is
//! one pass over the connections per shard; the per-message path pays
//! nothing for it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::mesh::ShardMsg;
use super::shared::Shared;
use crate::metrics::encode::{Kind, Text};
use crate::metrics::{
    process, topk, CallKindLabel, CloseLabel, HistSnapshot, InLabel, OutLabel, Outcome, Overview,
    RejectReason, ShardLevels, ShardMetrics,
};
use crate::protocol::ErrorCode;

/// Every shard's levels, in shard order (a shard that does not answer —
/// stopping — counts as empty).
async fn levels(shared: &Shared) -> Vec<ShardLevels> {
    let mut rxs = Vec::with_capacity(shared.mailboxes.len());
    for m in &shared.mailboxes {
        let (tx, rx) = tokio::sync::oneshot::channel();
        m.send(ShardMsg::Scrape(tx));
        rxs.push(rx);
    }
    let mut out = Vec::with_capacity(rxs.len());
    for rx in rxs {
        out.push(rx.await.unwrap_or_default());
    }
    out
}

/// `f` summed over every shard.
fn sum(shared: &Shared, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
    shared.metrics.iter().map(|m| f(m)).sum()
}

fn hist(shared: &Shared, f: impl Fn(&ShardMetrics) -> HistSnapshot) -> HistSnapshot {
    let mut h = HistSnapshot::default();
    for m in &shared.metrics {
        h.merge(&f(m));
    }
    h
}

/// Records waiting for the store writer: its channel and what shards parked.
fn store_depth(shared: &Shared, levels: &[ShardLevels]) -> u64 {
    let parked: u64 = levels.iter().map(|l| l.store_parked).sum();
    shared.store.as_ref().map_or(0, |s| s.queued() as u64) + parked
}

/// The body of `GET /metrics` (Prometheus text exposition format 0.0.4).
pub(crate) async fn metrics_text(shared: &Shared) -> String {
    let levels = levels(shared).await;
    let mut t = Text::new();

    t.family(
        "wshandler_build_info",
        "The running version (always 1).",
        Kind::Gauge,
    )
    .sample(
        "wshandler_build_info",
        &[("version", crate::protocol::SERVER_VERSION)],
        1,
    );
    t.family(
        "wshandler_connections",
        "Open WebSocket connections, by shard and client type (none: no handshake yet).",
        Kind::Gauge,
    );
    for (shard, l) in levels.iter().enumerate() {
        let shard = shard.to_string();
        for (ty, n) in &l.by_type {
            let ty = ty.as_deref().unwrap_or("none");
            t.sample(
                "wshandler_connections",
                &[("shard", &shard), ("client_type", ty)],
                n,
            );
        }
    }
    t.family(
        "wshandler_connections_max",
        "The max_connections limit.",
        Kind::Gauge,
    )
    .sample(
        "wshandler_connections_max",
        &[],
        shared.config.max_connections,
    );
    t.family(
        "wshandler_connections_accepted_total",
        "WebSocket upgrades accepted.",
        Kind::Counter,
    )
    .sample(
        "wshandler_connections_accepted_total",
        &[],
        sum(shared, |m| m.accepted.get()),
    );
    t.family(
        "wshandler_connections_rejected_total",
        "Connections refused, by reason.",
        Kind::Counter,
    );
    for r in RejectReason::ALL {
        let n = sum(shared, |m| m.rejected[*r as usize].get());
        t.sample(
            "wshandler_connections_rejected_total",
            &[("reason", r.as_str())],
            n,
        );
    }
    let adm = shared.admission.status().refused;
    t.family(
        "wshandler_admission_refusals_total",
        "Upgrades refused by the [limits] checks, by check.",
        Kind::Counter,
    );
    for (check, n) in [
        ("origin", adm.origin),
        ("auth_backoff", adm.auth_backoff),
        ("rate", adm.rate),
        ("per_ip_connections", adm.per_ip_connections),
        ("tracked_ips_full", adm.tracked_ips_full),
    ] {
        t.sample("wshandler_admission_refusals_total", &[("check", check)], n);
    }
    t.family(
        "wshandler_connection_closes_total",
        "Connections ended, by close code (1006: no close frame).",
        Kind::Counter,
    );
    for c in CloseLabel::ALL {
        let n = sum(shared, |m| m.closes[*c as usize].get());
        t.sample(
            "wshandler_connection_closes_total",
            &[("code", c.as_str())],
            n,
        );
    }
    t.family(
        "wshandler_messages_received_total",
        "Messages received, by type (binary: binary frames; invalid: not a message of a known type).",
        Kind::Counter,
    );
    for i in 0..InLabel::COUNT {
        let n = sum(shared, |m| m.received[i].get());
        t.sample(
            "wshandler_messages_received_total",
            &[("type", InLabel::name(i))],
            n,
        );
    }
    t.family(
        "wshandler_messages_sent_total",
        "Messages queued to clients, by type.",
        Kind::Counter,
    );
    for o in OutLabel::ALL {
        let n = sum(shared, |m| m.sent[*o as usize].get());
        t.sample("wshandler_messages_sent_total", &[("type", o.as_str())], n);
    }
    for (name, help, f) in [
        (
            "wshandler_wire_received_bytes_total",
            "Bytes read from connections after the upgrade (WebSocket frames as sent: compressed, with framing; after TLS decryption).",
            (|m: &ShardMetrics| m.wire_in.get()) as fn(&ShardMetrics) -> u64,
        ),
        (
            "wshandler_wire_sent_bytes_total",
            "Bytes written to connections after the upgrade (frames, compressed, with framing; before TLS).",
            |m| m.wire_out.get(),
        ),
        (
            "wshandler_payload_received_bytes_total",
            "Message payload bytes received (after decompression).",
            |m| m.payload_in.get(),
        ),
        (
            "wshandler_payload_sent_bytes_total",
            "Message payload bytes queued to clients (before compression).",
            |m| m.payload_out.get(),
        ),
        (
            "wshandler_readings_ingested_total",
            "Readings accepted (data and sensor_data messages that passed validation).",
            |m| m.ingested.get(),
        ),
        (
            "wshandler_deliveries_total",
            "Publish messages queued to subscribers.",
            |m| m.deliveries.get(),
        ),
        (
            "wshandler_slow_consumer_disconnects_total",
            "Connections closed (1008) because their out-queue was over max_backpressure.",
            |m| m.slow_consumers.get(),
        ),
    ] {
        t.family(name, help, Kind::Counter)
            .sample(name, &[], sum(shared, f));
    }
    t.family(
        "wshandler_errors_sent_total",
        "Error codes sent to clients (error messages and failed responses), by code.",
        Kind::Counter,
    );
    for c in ErrorCode::ALL {
        let n = sum(shared, |m| m.errors[c as usize].get());
        t.sample("wshandler_errors_sent_total", &[("code", c.as_str())], n);
    }
    t.family(
        "wshandler_publishes_total",
        "Publishes, by source (client: publish messages; api: HTTP and the Rust API).",
        Kind::Counter,
    )
    .sample(
        "wshandler_publishes_total",
        &[("source", "client")],
        sum(shared, |m| m.publishes.get()),
    )
    .sample(
        "wshandler_publishes_total",
        &[("source", "api")],
        shared.api_publishes.load(Ordering::Relaxed),
    );
    t.family(
        "wshandler_publish_fanout",
        "Subscribers one publish reached on one shard (observed on shards that have subscriptions).",
        Kind::Histogram,
    )
    .histogram(
        "wshandler_publish_fanout",
        &[],
        &hist(shared, |m| m.fanout.snapshot()),
        1.0,
    );
    t.family(
        "wshandler_outbound_queue_bytes",
        "Bytes waiting in connections' out-queues, all connections.",
        Kind::Gauge,
    )
    .sample(
        "wshandler_outbound_queue_bytes",
        &[],
        levels.iter().map(|l| l.queue_bytes).sum::<u64>(),
    );
    t.family(
        "wshandler_outbound_queue_max_bytes",
        "The largest single connection's out-queue now.",
        Kind::Gauge,
    )
    .sample(
        "wshandler_outbound_queue_max_bytes",
        &[],
        levels.iter().map(|l| l.queue_max).max().unwrap_or(0),
    );
    t.family(
        "wshandler_call_duration_seconds",
        "Client request / rpc_call latency, from arrival to answer, by kind and outcome.",
        Kind::Histogram,
    );
    for k in CallKindLabel::ALL {
        for o in Outcome::ALL {
            let i = *k as usize * Outcome::COUNT + *o as usize;
            t.histogram(
                "wshandler_call_duration_seconds",
                &[("kind", k.as_str()), ("outcome", o.as_str())],
                &hist(shared, |m| m.calls[i].snapshot()),
                1e-6,
            );
        }
    }
    let k = shared.config.metrics_top_topics;
    if k > 0 {
        let tables: Vec<_> = levels.iter().map(|l| l.topics.clone()).collect();
        let top = topk::top(&tables, k);
        t.family(
            "wshandler_topic_publishes_total",
            "Client publishes on the busiest topics (top metrics_top_topics; approximate for topics that entered the table late).",
            Kind::Counter,
        );
        for c in &top {
            t.sample(
                "wshandler_topic_publishes_total",
                &[("topic", &c.topic)],
                c.publishes,
            );
        }
        t.family(
            "wshandler_topic_deliveries_total",
            "Deliveries to subscribers on the busiest topics.",
            Kind::Counter,
        );
        for c in &top {
            t.sample(
                "wshandler_topic_deliveries_total",
                &[("topic", &c.topic)],
                c.deliveries,
            );
        }
    }
    store_metrics(shared, &levels, &mut t);
    process_metrics(&mut t);
    t.finish()
}

fn store_metrics(shared: &Shared, levels: &[ShardLevels], t: &mut Text) {
    let Some(store) = &shared.store else { return };
    let m = store.metrics();
    t.family(
        "wshandler_store_queue_depth",
        "Records waiting for the store writer (its queue and what shards parked).",
        Kind::Gauge,
    )
    .sample(
        "wshandler_store_queue_depth",
        &[],
        store_depth(shared, levels),
    );
    t.family(
        "wshandler_store_records_written_total",
        "Records committed to RocksDB (duplicates not counted).",
        Kind::Counter,
    )
    .sample(
        "wshandler_store_records_written_total",
        &[],
        m.records_written.get(),
    );
    t.family(
        "wshandler_store_write_errors_total",
        "Records whose write batch failed (nothing was stored; the client got storage_unavailable).",
        Kind::Counter,
    )
    .sample(
        "wshandler_store_write_errors_total",
        &[],
        m.write_errors.get(),
    );
    t.family(
        "wshandler_store_batch_records",
        "Records per commit (group commit batch size).",
        Kind::Histogram,
    )
    .histogram(
        "wshandler_store_batch_records",
        &[],
        &m.batch_size.snapshot(),
        1.0,
    );
    t.family(
        "wshandler_store_commit_duration_seconds",
        "Time one write batch took to commit.",
        Kind::Histogram,
    )
    .histogram(
        "wshandler_store_commit_duration_seconds",
        &[],
        &m.commit_latency.snapshot(),
        1e-6,
    );
    for (name, help, prop) in [
        (
            "wshandler_store_size_bytes",
            "Size of RocksDB's SST files, all column families.",
            "rocksdb.total-sst-files-size",
        ),
        (
            "wshandler_store_memtable_bytes",
            "Size of RocksDB's memtables, all column families.",
            "rocksdb.cur-size-all-mem-tables",
        ),
        (
            "wshandler_store_pending_compaction_bytes",
            "RocksDB's estimate of bytes compaction still has to rewrite.",
            "rocksdb.estimate-pending-compaction-bytes",
        ),
    ] {
        if let Some(v) = store.db_property(prop) {
            t.family(name, help, Kind::Gauge).sample(name, &[], v);
        }
    }
}

fn process_metrics(t: &mut Text) {
    let p = process::read();
    let gauges = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
        (
            "process_threads",
            "Number of OS threads in the process.",
            p.threads.map(|v| v as f64),
        ),
    ];
    if let Some(cpu) = p.cpu_seconds {
        t.family(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
        )
        .sample(
            "process_cpu_seconds_total",
            &[],
            crate::metrics::encode::fmt_f64(cpu),
        );
    }
    for (name, help, v) in gauges {
        if let Some(v) = v {
            t.family(name, help, Kind::Gauge)
                .sample(name, &[], crate::metrics::encode::fmt_f64(v));
        }
    }
}

/// The dashboard's live numbers.
pub(crate) async fn overview(shared: &Shared) -> Overview {
    let levels = levels(shared).await;
    let mut by_type = BTreeMap::new();
    let mut by_shard = Vec::with_capacity(levels.len());
    for l in &levels {
        let mut n = 0;
        for (ty, c) in &l.by_type {
            *by_type
                .entry(ty.clone().unwrap_or_else(|| "none".into()))
                .or_insert(0) += c;
            n += c;
        }
        by_shard.push(n);
    }
    let mut errors = BTreeMap::new();
    for c in ErrorCode::ALL {
        let n = sum(shared, |m| m.errors[c as usize].get());
        if n > 0 {
            errors.insert(c.as_str().to_owned(), n);
        }
    }
    let (records, p50, p99) = match &shared.store {
        Some(s) => {
            let h = s.metrics().commit_latency.snapshot();
            (
                s.metrics().records_written.get(),
                h.quantile_bound(0.5) as f64 / 1000.0,
                h.quantile_bound(0.99) as f64 / 1000.0,
            )
        }
        None => (0, 0.0, 0.0),
    };
    Overview {
        uptime_ms: shared.started.elapsed().as_millis() as u64,
        connections: shared.conn_count.load(Ordering::Acquire) as u64,
        connections_by_type: by_type,
        connections_by_shard: by_shard,
        messages_in: sum(shared, |m| m.received.iter().map(|c| c.get()).sum()),
        messages_out: sum(shared, |m| m.sent.iter().map(|c| c.get()).sum()),
        ingested: sum(shared, |m| m.ingested.get()),
        publishes: sum(shared, |m| m.publishes.get())
            + shared.api_publishes.load(Ordering::Relaxed),
        deliveries: sum(shared, |m| m.deliveries.get()),
        errors_by_code: errors,
        slow_consumer_disconnects: sum(shared, |m| m.slow_consumers.get()),
        store_queue_depth: store_depth(shared, &levels),
        records_written: records,
        commit_p50_ms: p50,
        commit_p99_ms: p99,
    }
}
