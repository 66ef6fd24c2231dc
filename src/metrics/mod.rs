//! What the server counts, and how it is read: per-shard counters and
//! fixed-bucket histograms (written only by the shard that owns them), the
//! store writer's counters, and the Prometheus text they are rendered to at
//! scrape time.
//!
//! Plain data below every layer that fills it in: no metrics crate and no
//! string built per message. A counter is an `AtomicU64` that only its
//! owner thread writes (a relaxed load and store: no locked instruction on
//! the hot path) and a scrape on any thread reads; labels are enum
//! indexes into fixed arrays, named only when [`encode`] writes the text.
//! Each shard's block is 64-byte aligned so two shards never write the same
//! cache line.
//!
//! Why not the `prometheus` or `metrics` crates: both make a counter
//! update an atomic read-modify-write on a shared (or thread-local looked
//! up) cell and build label sets from strings; the per-message path here
//! must cost a plain add on memory the shard already owns.

pub mod encode;
pub mod labels;
pub mod process;
pub mod topk;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use labels::{CallKindLabel, CloseLabel, InLabel, OutLabel, Outcome, RejectReason};

/// A counter with one writer (the thread that owns it) and any number of
/// readers (scrapes).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning thread may call this (single writer: a
    /// load and a store, not a locked add).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Set the value (gauges written by their owner).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Latency buckets, in microseconds (upper bounds; `+Inf` is implied):
/// 100 µs to 10 s.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Fan-out buckets: subscribers one publish reached on one shard.
pub const FANOUT_BUCKETS: [u64; 14] = [
    0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 10_000, 100_000,
];

/// Store batch-size buckets: records per commit.
pub const BATCH_BUCKETS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000];

/// A histogram with fixed bucket bounds `B` and one writer.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    counts: [Counter; 17],
    sum: Counter,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `bounds` (at most 16 bounds).
    pub fn new(bounds: &'static [u64; N]) -> Self {
        assert!(N < 17, "at most 16 bounds");
        Histogram {
            bounds,
            counts: Default::default(),
            sum: Counter::default(),
        }
    }

    /// Record `v` (owning thread only).
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].inc();
        self.sum.add(v);
    }

    /// A copy of the counts now.
    pub fn snapshot(&self) -> HistSnapshot {
        let mut counts = vec![0; N + 1];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = self.counts[i].get();
        }
        HistSnapshot {
            bounds: self.bounds.to_vec(),
            counts,
            sum: self.sum.get(),
        }
    }
}

/// A histogram read at scrape time; several (one per shard) add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistSnapshot {
    /// Upper bounds.
    pub bounds: Vec<u64>,
    /// Per-bucket counts, `bounds.len() + 1` of them (the last is `+Inf`).
    pub counts: Vec<u64>,
    /// Sum of observed values.
    pub sum: u64,
}

impl HistSnapshot {
    /// Add `other` (same bounds) into this one.
    pub fn merge(&mut self, other: &HistSnapshot) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1); the last
    /// bound for the `+Inf` bucket; 0 when empty.
    pub fn quantile_bound(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return self
                    .bounds
                    .get(i)
                    .or(self.bounds.last())
                    .copied()
                    .unwrap_or(0);
            }
        }
        self.bounds.last().copied().unwrap_or(0)
    }
}

/// One shard's counters. Written only by that shard's thread.
#[derive(Debug)]
#[repr(align(64))]
pub struct ShardMetrics {
    /// Upgrades accepted.
    pub accepted: Counter,
    /// Connections refused, by [`RejectReason`].
    pub rejected: [Counter; RejectReason::COUNT],
    /// Connections ended, by [`CloseLabel`].
    pub closes: [Counter; CloseLabel::COUNT],
    /// Messages received, by [`InLabel`].
    pub received: [Counter; InLabel::COUNT],
    /// Messages sent, by [`OutLabel`].
    pub sent: [Counter; OutLabel::COUNT],
    /// Bytes read from sockets (frames and handshakes, after TLS).
    pub wire_in: Counter,
    /// Bytes written to sockets.
    pub wire_out: Counter,
    /// Message payload bytes received (after decompression).
    pub payload_in: Counter,
    /// Message payload bytes queued to clients (before compression).
    pub payload_out: Counter,
    /// `error` replies sent, by code (index: `ErrorCode as usize`).
    pub errors: [Counter; crate::protocol::ErrorCode::ALL.len()],
    /// Readings accepted (`data` and `sensor_data` messages that passed
    /// validation): handed to the store, or acknowledged without one.
    pub ingested: Counter,
    /// `publish` messages this shard received from its clients.
    pub publishes: Counter,
    /// Publish frames queued to subscribers on this shard.
    pub deliveries: Counter,
    /// Subscribers reached on this shard, per publish.
    pub fanout: Histogram<14>,
    /// Slow consumers disconnected.
    pub slow_consumers: Counter,
    /// Request / RPC latency, by kind and outcome.
    pub calls: [Histogram<16>; CallKindLabel::COUNT * Outcome::COUNT],
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            accepted: Counter::default(),
            rejected: Default::default(),
            closes: Default::default(),
            received: Default::default(),
            sent: Default::default(),
            wire_in: Counter::default(),
            wire_out: Counter::default(),
            payload_in: Counter::default(),
            payload_out: Counter::default(),
            errors: Default::default(),
            ingested: Counter::default(),
            publishes: Counter::default(),
            deliveries: Counter::default(),
            fanout: Histogram::new(&FANOUT_BUCKETS),
            slow_consumers: Counter::default(),
            calls: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS_US)),
        }
    }
}

impl ShardMetrics {
    /// Record a finished request / RPC.
    #[inline]
    pub fn call_done(&self, kind: CallKindLabel, outcome: Outcome, micros: u64) {
        self.calls[kind as usize * Outcome::COUNT + outcome as usize].observe(micros);
    }
}

/// The store writer's counters. Written only by the writer thread.
#[derive(Debug)]
#[repr(align(64))]
pub struct StoreMetrics {
    /// Records committed (duplicates not counted).
    pub records_written: Counter,
    /// Records whose write failed.
    pub write_errors: Counter,
    /// Records per commit.
    pub batch_size: Histogram<12>,
    /// Commit (write batch) latency, microseconds.
    pub commit_latency: Histogram<16>,
    /// The last write batch failed (cleared by the next that succeeds).
    pub failing: std::sync::atomic::AtomicBool,
    /// The writer thread has exited.
    pub stopped: std::sync::atomic::AtomicBool,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            records_written: Counter::default(),
            write_errors: Counter::default(),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            commit_latency: Histogram::new(&LATENCY_BUCKETS_US),
            failing: Default::default(),
            stopped: Default::default(),
        }
    }
}

/// One shard's levels at scrape time: what only the shard's thread can
/// read (its connections), computed when a scrape asks.
#[derive(Debug, Clone, Default)]
pub struct ShardLevels {
    /// Open connections by client type (`None`: no handshake yet).
    pub by_type: Vec<(Option<String>, u64)>,
    /// Bytes in every connection's out-queue.
    pub queue_bytes: u64,
    /// The largest single out-queue.
    pub queue_max: u64,
    /// Records parked on the shard for the store writer.
    pub store_parked: u64,
    /// The shard's topic table.
    pub topics: Vec<topk::TopicCount>,
}

/// The dashboard's live numbers: totals since start (the page computes
/// rates from two of them) and current levels.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Open connections.
    pub connections: u64,
    /// Open connections by client type (`none`: not identified yet).
    pub connections_by_type: BTreeMap<String, u64>,
    /// Open connections by shard.
    pub connections_by_shard: Vec<u64>,
    /// Messages received, every type.
    pub messages_in: u64,
    /// Messages sent, every type.
    pub messages_out: u64,
    /// Readings accepted (`data` and `sensor_data`).
    pub ingested: u64,
    /// `publish` messages (clients and the API).
    pub publishes: u64,
    /// Publish deliveries to subscribers.
    pub deliveries: u64,
    /// Error replies sent, by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Slow consumers disconnected.
    pub slow_consumer_disconnects: u64,
    /// Records waiting for the store writer.
    pub store_queue_depth: u64,
    /// Records the store committed.
    pub records_written: u64,
    /// Store commit latency, median bucket bound, in milliseconds (0
    /// before any commit).
    pub commit_p50_ms: f64,
    /// Store commit latency, 99th percentile bucket bound, in milliseconds.
    pub commit_p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::new(&FANOUT_BUCKETS);
        for v in [0, 1, 2, 3, 100, 100_001] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1, "0 in le=0");
        assert_eq!(s.counts[1], 1, "1 in le=1");
        assert_eq!(s.counts[2], 1, "2 in le=2");
        assert_eq!(s.counts[3], 1, "3 in le=5");
        assert_eq!(s.counts[7], 1, "100 in le=100");
        assert_eq!(s.counts[14], 1, "beyond the last bound: +Inf");
        assert_eq!(s.sum, 100_107);
        assert_eq!(s.count(), 6);
        assert_eq!(s.quantile_bound(0.5), 2);
        assert_eq!(s.quantile_bound(1.0), 100_000);
    }

    #[test]
    fn error_code_indexes_match_all() {
        for (i, c) in crate::protocol::ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.as_str());
        }
    }

    #[test]
    fn shard_block_is_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<ShardMetrics>(), 64);
        assert_eq!(std::mem::align_of::<StoreMetrics>(), 64);
    }
}
