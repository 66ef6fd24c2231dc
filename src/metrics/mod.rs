//! What the server counts, and how it is read: per-shard counters and
//! fixed-bucket histograms (written only by the shard that owns them), the
//! store writer's counters, and the Prometheus text they are rendered to at
//! scrape time.
//!
//! Plain data below every layer that fills it in: no metrics crate, no
//! string built per message. Labels are enum indexes; a scrape folds every
//! shard's counters and names them.

use std::collections::BTreeMap;

use serde::Serialize;

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
    /// Readings ingested (`data` messages and `batch` items).
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
    /// Store commit latency, median, in milliseconds (0 before any commit).
    pub commit_p50_ms: f64,
    /// Store commit latency, 99th percentile, in milliseconds.
    pub commit_p99_ms: f64,
}
