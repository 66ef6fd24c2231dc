//! The final report: human summary, JSON, and a self-contained HTML page
//! with a latency-percentile chart and throughput over time (inline SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::{Latency, Sample};

/// One second of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Second {
    /// Seconds since start.
    pub t: f64,
    /// Completed operations per second in that second.
    pub ops_per_s: f64,
    /// p99 latency in that second (µs).
    pub p99_us: u64,
    /// Errors in that second.
    pub errors: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Connections used.
    pub connections: usize,
    /// The sending window, seconds.
    pub duration_s: f64,
    /// Completed operations (acks, deliveries, responses, connections held).
    pub ops: u64,
    /// Messages sent.
    pub sent: u64,
    /// `ops` per second of the sending window.
    pub throughput_per_s: f64,
    /// Latency percentiles, µs.
    pub latency_us: Latency,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Messages never delivered, or gaps in a sequence.
    pub lost: u64,
    /// Messages delivered out of order or twice.
    pub out_of_order: u64,
    /// Scenario-specific figures.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Per-second throughput and p99.
    pub series: Vec<Second>,
}

impl Report {
    /// Build from the folded sample.
    pub fn new(
        scenario: &str,
        connections: usize,
        window: Duration,
        s: &Sample,
        series: Vec<Second>,
    ) -> Report {
        let secs = window.as_secs_f64().max(1e-9);
        Report {
            scenario: scenario.to_owned(),
            connections,
            duration_s: secs,
            ops: s.ops,
            sent: s.sent,
            throughput_per_s: s.ops as f64 / secs,
            latency_us: Latency::of(&s.hist),
            errors: s
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            lost: s.lost,
            out_of_order: s.out_of_order,
            extra: serde_json::Map::new(),
            series,
        }
    }

    /// Total errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let l = &self.latency_us;
        let mut s = format!(
            "{}: {} connections, {:.1} s: {} ops ({:.0}/s), {} sent\n  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} (n={})\n  errors: {}  lost: {}  out-of-order: {}\n",
            self.scenario,
            self.connections,
            self.duration_s,
            self.ops,
            self.throughput_per_s,
            self.sent,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.count,
            self.error_count(),
            self.lost,
            self.out_of_order
        );
        for (k, v) in &self.errors {
            let _ = writeln!(s, "    {k}: {v}");
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  {k}: {v}");
        }
        s
    }

    /// A self-contained HTML page for one or more reports.
    pub fn html(reports: &[Report]) -> String {
        let mut h = String::from(
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>wshandler-loadtest report</title>\
             <style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}\
             svg{background:#fafafa;border:1px solid #ddd;margin:8px 0}</style></head><body>\
             <h1>wshandler-loadtest report</h1>",
        );
        for r in reports {
            let l = &r.latency_us;
            let _ = write!(
                h,
                "<h2>{}</h2><table><tr><th>connections</th><th>duration s</th><th>ops/s</th><th>sent</th>\
                 <th>errors</th><th>lost</th><th>out of order</th></tr><tr><td>{}</td><td>{:.1}</td><td>{:.0}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                esc(&r.scenario),
                r.connections,
                r.duration_s,
                r.throughput_per_s,
                r.sent,
                r.error_count(),
                r.lost,
                r.out_of_order
            );
            h.push_str("<h3>Latency (µs)</h3>");
            h.push_str(&bars(&[
                ("p50", l.p50),
                ("p90", l.p90),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
            ]));
            h.push_str("<h3>Throughput over time (ops/s)</h3>");
            h.push_str(&line(
                &r.series
                    .iter()
                    .map(|s| (s.t, s.ops_per_s))
                    .collect::<Vec<_>>(),
            ));
            h.push_str("<h3>p99 latency over time (µs)</h3>");
            h.push_str(&line(
                &r.series
                    .iter()
                    .map(|s| (s.t, s.p99_us as f64))
                    .collect::<Vec<_>>(),
            ));
            if !r.extra.is_empty() {
                let _ = write!(
                    h,
                    "<pre>{}</pre>",
                    esc(&serde_json::to_string_pretty(&r.extra).unwrap_or_default())
                );
            }
        }
        h.push_str("</body></html>\n");
        h
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn bars(items: &[(&str, u64)]) -> String {
    let (w, bh) = (600.0, 26.0);
    let max = items.iter().map(|i| i.1).max().unwrap_or(1).max(1) as f64;
    let mut s = format!(
        "<svg width='{w}' height='{}'>",
        bh * items.len() as f64 + 10.0
    );
    for (i, (name, v)) in items.iter().enumerate() {
        let y = 5.0 + i as f64 * bh;
        let len = (*v as f64 / max) * (w - 170.0);
        let _ = write!(
            s,
            "<text x='5' y='{}' font-size='13'>{name}</text><rect x='60' y='{}' width='{len:.1}' height='{}' fill='#4a7bd0'/>\
             <text x='{}' y='{}' font-size='13'>{v}</text>",
            y + 17.0,
            y + 3.0,
            bh - 6.0,
            65.0 + len,
            y + 17.0
        );
    }
    s.push_str("</svg>");
    s
}

fn line(points: &[(f64, f64)]) -> String {
    let (w, h) = (800.0, 220.0);
    let mut s = format!("<svg width='{w}' height='{h}'>");
    if points.is_empty() {
        s.push_str("<text x='10' y='20'>no samples</text></svg>");
        return s;
    }
    let tmax = points.iter().map(|p| p.0).fold(1e-9, f64::max);
    let ymax = points.iter().map(|p| p.1).fold(1e-9, f64::max);
    let pts: Vec<String> = points
        .iter()
        .map(|(t, y)| {
            format!(
                "{:.1},{:.1}",
                50.0 + t / tmax * (w - 70.0),
                h - 25.0 - y / ymax * (h - 45.0)
            )
        })
        .collect();
    let _ = write!(
        s,
        "<polyline fill='none' stroke='#d04a4a' stroke-width='2' points='{}'/>\
         <text x='5' y='15' font-size='12'>{ymax:.0}</text><text x='5' y='{}' font-size='12'>0</text>\
         <text x='{}' y='{}' font-size='12'>{tmax:.0} s</text>",
        pts.join(" "),
        h - 25.0,
        w - 60.0,
        h - 5.0
    );
    s.push_str("</svg>");
    s
}
