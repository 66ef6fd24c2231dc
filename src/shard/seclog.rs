//! Security events in the log: each at warn with the peer's address,
//! rate-limited per shard so a storm (36k failed logins a minute) costs a
//! few lines, not one per attempt.
//!
//! Per kind and shard, the first [`BURST`] events of each [`WINDOW`] are
//! logged one by one; the rest are counted and reported in one summary line
//! when the next event of that kind arrives after the window (or on the
//! shard's next sweep).

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::warn;

/// Events logged one by one per kind, window and shard.
pub(crate) const BURST: u32 = 5;
/// The rate-limit window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecEvent {
    /// An `auth` with a wrong or missing token.
    AuthFailed,
    /// Closed for too many failed `auth` attempts.
    AuthLockout,
    /// Closed: not authenticated within `auth_timeout`.
    AuthTimeout,
    /// A client tried something its credential does not allow.
    Forbidden,
    /// Closed: outbound queue over `max_backpressure`.
    SlowConsumer,
    /// Closed: more than `max_errors_per_minute` error replies.
    ErrorBudget,
    /// Closed for a WebSocket protocol violation.
    ProtocolError,
    /// A `response`/`rpc_response` to no request sent to this connection.
    UnknownReply,
    /// Upgrade refused (403): an `Origin` not on `limits.allowed_origins`.
    OriginRefused,
    /// Upgrade refused (429): the address is in auth-failure back-off.
    AuthBackoff,
    /// Upgrade refused (429): over `limits.connections_per_ip_per_s`.
    RateLimited,
    /// Upgrade refused (429): at `limits.max_connections_per_ip`.
    PerIpConnections,
    /// Upgrade refused (503): `limits.max_tracked_ips` addresses tracked.
    TrackedIpsFull,
    /// A TLS handshake failed (no or untrusted client certificate, no
    /// shared version, not TLS, timeout).
    TlsHandshake,
}

const KINDS: usize = 14;

impl SecEvent {
    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        match self {
            SecEvent::AuthFailed => "authentication failed",
            SecEvent::AuthLockout => "closed after too many failed authentications",
            SecEvent::AuthTimeout => "closed: authentication timeout",
            SecEvent::Forbidden => "forbidden operation refused",
            SecEvent::SlowConsumer => "closed as a slow consumer",
            SecEvent::ErrorBudget => "closed: too many errors",
            SecEvent::ProtocolError => "closed: WebSocket protocol error",
            SecEvent::UnknownReply => "reply to an unknown request",
            SecEvent::OriginRefused => "upgrade refused: origin not allowed",
            SecEvent::AuthBackoff => "upgrade refused: address in auth-failure back-off",
            SecEvent::RateLimited => "upgrade refused: connection rate limit",
            SecEvent::PerIpConnections => "upgrade refused: max_connections_per_ip",
            SecEvent::TrackedIpsFull => "upgrade refused: max_tracked_ips reached",
            SecEvent::TlsHandshake => "TLS handshake failed",
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    window: Cell<Option<Instant>>,
    logged: Cell<u32>,
    suppressed: Cell<u64>,
}

/// One shard's rate-limited security log.
#[derive(Debug, Default)]
pub(crate) struct SecLog {
    slots: [Slot; KINDS],
}

impl SecLog {
    /// Log `ev` for `peer` (client `client`), unless this window's burst
    /// is spent; `detail` is only formatted when the line is written.
    pub(crate) fn log(
        &self,
        ev: SecEvent,
        shard: usize,
        peer: SocketAddr,
        client: &str,
        detail: impl FnOnce() -> String,
    ) {
        let s = &self.slots[ev.index()];
        let now = Instant::now();
        self.roll(ev, s, now, shard);
        if s.logged.get() < BURST {
            s.logged.set(s.logged.get() + 1);
            warn!(shard, %peer, client, detail = %detail(), "security: {}", ev.as_str());
        } else {
            s.suppressed.set(s.suppressed.get() + 1);
        }
    }

    /// Report windows that ended with suppressed events.
    pub(crate) fn sweep(&self, shard: usize) {
        let now = Instant::now();
        for (i, s) in self.slots.iter().enumerate() {
            self.roll(KIND_LIST[i], s, now, shard);
        }
    }

    /// Events not written one by one so far (for tests).
    #[cfg(test)]
    fn suppressed(&self, ev: SecEvent) -> u64 {
        self.slots[ev.index()].suppressed.get()
    }

    fn roll(&self, ev: SecEvent, s: &Slot, now: Instant, shard: usize) {
        match s.window.get() {
            Some(start) if now.duration_since(start) < WINDOW => {}
            Some(_) | None => {
                let n = s.suppressed.replace(0);
                if n > 0 {
                    warn!(
                        shard,
                        suppressed = n,
                        "security: {} more \"{}\" events in the last {}s (not logged one by one)",
                        n,
                        ev.as_str(),
                        WINDOW.as_secs()
                    );
                }
                s.window.set(Some(now));
                s.logged.set(0);
            }
        }
    }
}

const KIND_LIST: [SecEvent; KINDS] = [
    SecEvent::AuthFailed,
    SecEvent::AuthLockout,
    SecEvent::AuthTimeout,
    SecEvent::Forbidden,
    SecEvent::SlowConsumer,
    SecEvent::ErrorBudget,
    SecEvent::ProtocolError,
    SecEvent::UnknownReply,
    SecEvent::OriginRefused,
    SecEvent::AuthBackoff,
    SecEvent::RateLimited,
    SecEvent::PerIpConnections,
    SecEvent::TrackedIpsFull,
    SecEvent::TlsHandshake,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_summarised() {
        let log = SecLog::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..1000 {
            log.log(SecEvent::AuthFailed, 0, peer, "c", String::new);
        }
        assert_eq!(log.slots[SecEvent::AuthFailed.index()].logged.get(), BURST);
        assert_eq!(log.suppressed(SecEvent::AuthFailed), 1000 - BURST as u64);
        assert_eq!(log.suppressed(SecEvent::SlowConsumer), 0);
        for (i, k) in KIND_LIST.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
