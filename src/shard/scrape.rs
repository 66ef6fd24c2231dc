//! A scrape: every shard's counters folded into the Prometheus text of

// Wired to `GET /metrics` and the dashboard by the HTTP layer (in progress).
#![allow(dead_code)]
//! `GET /metrics`, and the dashboard's [`Overview`].

use super::shared::Shared;
use crate::metrics::Overview;

/// The body of `GET /metrics` (Prometheus text exposition format 0.0.4).
pub(crate) async fn metrics_text(shared: &Shared) -> String {
    let _ = shared;
    String::new()
}

/// The dashboard's live numbers.
pub(crate) async fn overview(shared: &Shared) -> Overview {
    Overview {
        uptime_ms: shared.started.elapsed().as_millis() as u64,
        connections: shared.conn_count.load(std::sync::atomic::Ordering::Acquire) as u64,
        ..Overview::default()
    }
}
