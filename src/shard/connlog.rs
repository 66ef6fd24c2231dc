//! Connection churn, summarised: opens, closes and refused handshakes are
//! logged one by one only at `debug`; at `info` each shard prints at most
//! one line per [`SUMMARY_EVERY`], and only when something happened, so a
//! reconnect storm of 100k devices costs a handful of lines, not 100k.
//!
//! Plain `Cell` counters on the shard's own thread: no lock, no atomic per
//! connection.

use std::cell::Cell;
use std::time::Duration;

use tracing::info;

/// How often a shard may print its summary line.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// One shard's connection counters since its last summary.
#[derive(Debug, Default)]
pub(crate) struct ConnLog {
    opened: Cell<u64>,
    closed: Cell<u64>,
    refused: Cell<u64>,
}

impl ConnLog {
    /// An upgrade was accepted.
    pub(crate) fn opened(&self) {
        self.opened.set(self.opened.get() + 1);
    }

    /// An accepted connection ended.
    pub(crate) fn closed(&self) {
        self.closed.set(self.closed.get() + 1);
    }

    /// An upgrade was refused (bad request, limits, `max_connections`).
    pub(crate) fn refused(&self) {
        self.refused.set(self.refused.get() + 1);
    }

    /// The counts since the last call, reset; `None` if nothing happened.
    pub(crate) fn take(&self) -> Option<(u64, u64, u64)> {
        let n = (self.opened.take(), self.closed.take(), self.refused.take());
        (n != (0, 0, 0)).then_some(n)
    }

    /// Print the summary line for `shard` if anything happened.
    pub(crate) fn flush(&self, shard: usize) {
        if let Some((opened, closed, refused)) = self.take() {
            let secs = SUMMARY_EVERY.as_secs();
            info!(
                shard,
                opened,
                closed,
                refused,
                "connections: {opened} opened, {closed} closed, {refused} refused in the last {secs} s"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_resets_and_is_none_when_quiet() {
        let l = ConnLog::default();
        assert_eq!(l.take(), None);
        l.opened();
        l.opened();
        l.closed();
        l.refused();
        assert_eq!(l.take(), Some((2, 1, 1)));
        assert_eq!(l.take(), None);
    }
}
