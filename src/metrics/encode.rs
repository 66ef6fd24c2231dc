//! The Prometheus text exposition format (0.0.4), written by hand at scrape
//! time: `# HELP`, `# TYPE`, samples with escaped label values, histograms
//! as cumulative `_bucket{le}` series with `_sum` and `_count`.

use std::fmt::{Display, Write};

use super::HistSnapshot;

/// The content type of a scrape's body.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// A scrape body being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// An empty body.
    pub fn new() -> Text {
        Text::default()
    }

    /// Start a family: its help and type lines. Samples of it follow.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A histogram's samples; `scale` turns a bucket bound or the sum into
    /// the base unit (1e-6 for microseconds to seconds, 1 for counts).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistSnapshot,
        scale: f64,
    ) -> &mut Self {
        let mut cumulative = 0;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le = match h.bounds.get(i) {
                Some(b) => fmt_f64(*b as f64 * scale),
                None => "+Inf".to_owned(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", fmt_f64(h.sum as f64 * scale));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
        self
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"");
            escape_value(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// The body.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A float as Prometheus reads it, without noise digits (`0.0001`, `2.5`).
pub fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.9}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_samples_and_histograms() {
        let mut t = Text::new();
        t.family("x_total", "Things.", Kind::Counter)
            .sample("x_total", &[("a", "q\"\\\nz")], 3);
        let h = HistSnapshot {
            bounds: vec![100, 1000],
            counts: vec![1, 2, 3],
            sum: 5000,
        };
        t.family("lat_seconds", "Latency.", Kind::Histogram)
            .histogram("lat_seconds", &[("k", "v")], &h, 1e-6);
        let s = t.finish();
        assert!(s.contains("# TYPE x_total counter\n"));
        assert!(s.contains("x_total{a=\"q\\\"\\\\\\nz\"} 3\n"), "{s}");
        assert!(
            s.contains("lat_seconds_bucket{k=\"v\",le=\"0.0001\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("lat_seconds_bucket{k=\"v\",le=\"0.001\"} 3\n"));
        assert!(s.contains("lat_seconds_bucket{k=\"v\",le=\"+Inf\"} 6\n"));
        assert!(s.contains("lat_seconds_sum{k=\"v\"} 0.005\n"));
        assert!(s.contains("lat_seconds_count{k=\"v\"} 6\n"));
    }

    #[test]
    fn floats_have_no_noise() {
        assert_eq!(fmt_f64(0.0001), "0.0001");
        assert_eq!(fmt_f64(2.5), "2.5");
        assert_eq!(fmt_f64(10.0), "10");
    }
}
