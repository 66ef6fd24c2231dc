//! Counters and latency histograms: one set per worker thread, folded into
//! the report by the collector once a tick (no sharing on the hot path).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one worker thread measured since its last tick.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Completed operations (acks, deliveries, responses, connections).
    pub ops: u64,
    /// Messages sent.
    pub sent: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Messages missing (a gap in a sequence, or never delivered).
    pub lost: u64,
    /// Messages that arrived out of order or twice.
    pub out_of_order: u64,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            ops: 0,
            sent: 0,
            errors: BTreeMap::new(),
            lost: 0,
            out_of_order: 0,
            hist: new_hist(),
        }
    }
}

/// A histogram for 1 µs .. 100 s with 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

impl Sample {
    /// Record one latency.
    pub fn latency(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 100_000_000);
        let _ = self.hist.record(us);
    }

    /// Count an error.
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Add another sample into this one.
    pub fn merge(&mut self, o: &Sample) {
        self.ops += o.ops;
        self.sent += o.sent;
        for (k, v) in &o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.lost += o.lost;
        self.out_of_order += o.out_of_order;
        let _ = self.hist.add(&o.hist);
    }

    /// All errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}
