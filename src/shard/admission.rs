//! Who may open a connection: the `[limits]` checks made at the upgrade,
//! and the per-address state behind them, shared by every shard.
//!
//! At the upgrade the transport asks [`Admission::client_ip`] who the client
//! is (the TCP peer, or the address a trusted proxy forwarded), then
//! [`Admission::admit`]: the `Origin` against `allowed_origins`, the
//! address's auth-failure back-off, its connection-rate bucket and its count
//! of open connections. A refusal says which (a [`Refusal`], mapped to an
//! HTTP status and `Retry-After`); an admission is a [`Ticket`] that holds
//! the address's place among its open connections until it is dropped, so
//! every way a connection ends gives the place back.
//!
//! The state is a table per address, split in [`STRIPES`] `Mutex<HashMap>`
//! stripes by a keyed hash. A lock is fine here: it is taken once per
//! upgrade, once per connection end and once per failed authentication,
//! never per message, and held for a hash lookup. Every shard reaches the
//! same table, so limits hold whichever shard the kernel hands a connection
//! to.
//!
//! Memory is bounded: each stripe holds at most `max_tracked_ips / STRIPES`
//! (rounded up) addresses. When a new address finds its stripe full, the
//! stripe drops every idle entry (no open connection, no back-off, buckets
//! full again: nothing a fresh entry would not also say) and, if none is
//! idle, refuses the upgrade ([`Refusal::TrackedIpsFull`], 503). A full scan
//! that frees little is not repeated for [`PRUNE_INTERVAL`], so a flood of
//! new addresses cannot make every upgrade scan the table.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::limits::{mask128, Cidr, LimitsConfig, OriginPattern};
use crate::status::{AdmissionStatus, RefusalCounts};

/// Stripes of the per-address table.
pub(crate) const STRIPES: usize = 16;
/// After a prune that freed less than 1/64 of a stripe, the next one waits
/// this long (new addresses are refused meanwhile if the stripe is full).
pub(crate) const PRUNE_INTERVAL: Duration = Duration::from_millis(100);
/// `Retry-After` when an address is at `max_connections_per_ip`: nothing
/// says when one of its connections will end.
pub(crate) const CONCURRENCY_RETRY_AFTER_S: u64 = 5;
/// `Retry-After` when the table is full of live entries.
pub(crate) const FULL_RETRY_AFTER_S: u64 = 1;

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// An `Origin` header not on `allowed_origins`.
    #[error("origin not allowed")]
    Origin {
        /// The header's value.
        origin: String,
    },
    /// The address is in back-off after too many failed authentications.
    #[error("too many failed authentications from this address")]
    AuthBackoff {
        /// Seconds until the back-off ends.
        retry_after: u64,
    },
    /// Over `connections_per_ip_per_s` (its burst spent).
    #[error("connection rate limit exceeded ({per_s}/s, burst {burst})")]
    Rate {
        /// The configured rate.
        per_s: u32,
        /// The configured burst.
        burst: u32,
        /// Seconds until the next upgrade would be admitted.
        retry_after: u64,
    },
    /// At `max_connections_per_ip`.
    #[error("max_connections_per_ip ({max}) reached")]
    PerIpConnections {
        /// The configured limit.
        max: u32,
    },
    /// The table is full of addresses with live state.
    #[error("server is tracking max_tracked_ips ({max}) addresses")]
    TrackedIpsFull {
        /// The configured size.
        max: usize,
    },
}

/// Refusal reasons, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    Origin = 0,
    AuthBackoff,
    Rate,
    PerIpConnections,
    TrackedIpsFull,
}

const KINDS: usize = 5;

impl Refusal {
    /// The HTTP status of the refusal.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Refusal::Origin { .. } => 403,
            Refusal::AuthBackoff { .. }
            | Refusal::Rate { .. }
            | Refusal::PerIpConnections { .. } => 429,
            Refusal::TrackedIpsFull { .. } => 503,
        }
    }

    /// The `Retry-After` seconds, if the client may retry.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Origin { .. } => None,
            Refusal::AuthBackoff { retry_after } | Refusal::Rate { retry_after, .. } => {
                Some(*retry_after)
            }
            Refusal::PerIpConnections { .. } => Some(CONCURRENCY_RETRY_AFTER_S),
            Refusal::TrackedIpsFull { .. } => Some(FULL_RETRY_AFTER_S),
        }
    }

    /// The machine-readable code in the response body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Origin { .. } => "origin_not_allowed",
            Refusal::AuthBackoff { .. } => "auth_backoff",
            Refusal::Rate { .. } => "rate_limited",
            Refusal::PerIpConnections { .. } => "too_many_connections",
            Refusal::TrackedIpsFull { .. } => "server_busy",
        }
    }

    pub(crate) fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Origin { .. } => RefusalKind::Origin,
            Refusal::AuthBackoff { .. } => RefusalKind::AuthBackoff,
            Refusal::Rate { .. } => RefusalKind::Rate,
            Refusal::PerIpConnections { .. } => RefusalKind::PerIpConnections,
            Refusal::TrackedIpsFull { .. } => RefusalKind::TrackedIpsFull,
        }
    }
}

/// What is known about one address (or IPv6 block).
#[derive(Debug, Clone)]
struct Entry {
    /// Connection-rate bucket, as of `conn_at`.
    conn_tokens: f64,
    conn_at: Instant,
    /// Open connections (counted only with `max_connections_per_ip` on).
    open: u32,
    /// Auth-failure bucket, as of `auth_at`.
    auth_tokens: f64,
    auth_at: Instant,
    backoff_until: Option<Instant>,
}

#[derive(Debug)]
struct Stripe {
    map: HashMap<IpAddr, Entry>,
    /// No prune before this (set after a prune that freed little).
    next_prune: Option<Instant>,
}

/// The limits, as numbers the checks use.
#[derive(Debug, Clone, Copy)]
struct Rules {
    rate: f64,
    burst: f64,
    max_open: u32,
    auth_cap: f64,
    backoff: Duration,
    ipv6_prefix: u8,
    tracks: bool,
}

/// The admission state every shard shares.
#[derive(Debug)]
pub(crate) struct Admission {
    cfg: LimitsConfig,
    rules: Rules,
    proxies: Vec<Cidr>,
    origins: Vec<OriginPattern>,
    hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
    stripe_cap: usize,
    refused: [AtomicU64; KINDS],
    backoffs: AtomicU64,
}

/// An admitted connection's place among its address's open connections;
/// dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Ticket {
    held: Option<(Arc<Admission>, IpAddr)>,
}

impl Ticket {
    /// A ticket that holds nothing (no admission state: tests, harness).
    pub(crate) fn none() -> Ticket {
        Ticket { held: None }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((adm, key)) = self.held.take() {
            let mut s = adm.stripe(&key);
            if let Some(e) = s.map.get_mut(&key) {
                e.open = e.open.saturating_sub(1);
            }
        }
    }
}

/// An `X-Forwarded-For` item: an address, possibly with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:80`) or in brackets.
fn parse_forwarded(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    let ip = item
        .parse::<IpAddr>()
        .ok()
        .or_else(|| item.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            item.strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

fn lock(m: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    // A panic while holding the lock leaves counters, never a broken map.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// The state for `cfg` (already validated).
    pub(crate) fn new(cfg: &LimitsConfig) -> Admission {
        Self::with_stripes(cfg, STRIPES)
    }

    /// As [`new`](Self::new) with `stripes` stripes (tests use one, so the
    /// table's bound is exact).
    pub(crate) fn with_stripes(cfg: &LimitsConfig, stripes: usize) -> Admission {
        let stripes = stripes.max(1);
        let rules = Rules {
            rate: f64::from(cfg.connections_per_ip_per_s),
            burst: f64::from(cfg.connections_per_ip_burst),
            max_open: cfg.max_connections_per_ip,
            auth_cap: f64::from(cfg.auth_failures_per_ip_per_min),
            backoff: cfg.auth_failure_backoff,
            ipv6_prefix: cfg.ipv6_prefix,
            tracks: cfg.tracks_addresses(),
        };
        Admission {
            cfg: cfg.clone(),
            rules,
            proxies: cfg.proxies(),
            origins: cfg.origins(),
            hasher: RandomState::new(),
            stripes: (0..stripes)
                .map(|_| {
                    Mutex::new(Stripe {
                        map: HashMap::new(),
                        next_prune: None,
                    })
                })
                .collect(),
            stripe_cap: cfg.max_tracked_ips.div_ceil(stripes).max(1),
            refused: Default::default(),
            backoffs: AtomicU64::new(0),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|c| c.contains(ip))
    }

    /// The client's address: `peer`, unless `peer` is a trusted proxy and
    /// sent `X-Forwarded-For` (`forwarded_for`: every header value, in
    /// order); then the right-most address in it that is not a trusted
    /// proxy (the left-most if all are). An item that is not an address
    /// ends the walk: the client is the last trusted hop before it, so a
    /// mangled header counts against the proxy, never against an address
    /// someone typed.
    pub(crate) fn client_ip(&self, peer: IpAddr, forwarded_for: &[String]) -> IpAddr {
        let peer = peer.to_canonical();
        if forwarded_for.is_empty() || !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for item in forwarded_for.iter().rev().flat_map(|h| h.rsplit(',')) {
            let Some(ip) = parse_forwarded(item) else {
                break;
            };
            client = ip;
            if !self.trusted(ip) {
                break;
            }
        }
        client
    }

    /// May a browser from `origin` connect? (No `Origin`: not a browser.)
    pub(crate) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(o) => self.origins.iter().any(|p| p.matches(o)),
        }
    }

    /// The table key of `ip`: IPv6 addresses by their `ipv6_prefix` block.
    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask128(
                u128::from(v6),
                self.rules.ipv6_prefix,
            ))),
            v4 => v4,
        }
    }

    fn stripe(&self, key: &IpAddr) -> MutexGuard<'_, Stripe> {
        let i = (self.hasher.hash_one(key) as usize) % self.stripes.len();
        lock(&self.stripes[i])
    }

    fn fresh(&self, now: Instant) -> Entry {
        Entry {
            conn_tokens: self.rules.burst,
            conn_at: now,
            open: 0,
            auth_tokens: self.rules.auth_cap,
            auth_at: now,
            backoff_until: None,
        }
    }

    /// Would a fresh entry say the same as `e`?
    fn idle(&self, e: &Entry, now: Instant) -> bool {
        let r = &self.rules;
        e.open == 0
            && e.backoff_until.is_none_or(|t| t <= now)
            && (r.rate == 0.0
                || e.conn_tokens + now.saturating_duration_since(e.conn_at).as_secs_f64() * r.rate
                    >= r.burst)
            && (r.auth_cap == 0.0
                || e.auth_tokens
                    + now.saturating_duration_since(e.auth_at).as_secs_f64() * r.auth_cap / 60.0
                    >= r.auth_cap)
    }

    /// `key`'s entry, made if missing; `None` if the stripe is full of
    /// live entries.
    fn entry<'a>(&self, s: &'a mut Stripe, key: IpAddr, now: Instant) -> Option<&'a mut Entry> {
        if !s.map.contains_key(&key) && s.map.len() >= self.stripe_cap {
            if s.next_prune.is_some_and(|t| now < t) {
                return None;
            }
            let before = s.map.len();
            s.map.retain(|_, e| !self.idle(e, now));
            let freed = before - s.map.len();
            s.next_prune = (freed <= self.stripe_cap / 64).then_some(now + PRUNE_INTERVAL);
            if s.map.len() >= self.stripe_cap {
                return None;
            }
        }
        Some(s.map.entry(key).or_insert_with(|| self.fresh(now)))
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        self.refused[r.kind() as usize].fetch_add(1, Ordering::Relaxed);
        r
    }

    /// May `ip` (see [`client_ip`](Self::client_ip)) open a connection,
    /// from `origin`? Checks, in order: origin (403), auth-failure
    /// back-off, connection rate, open connections (429), table space
    /// (503).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        origin: Option<&str>,
    ) -> Result<Ticket, Refusal> {
        self.admit_at(ip, origin, Instant::now())
    }

    pub(crate) fn admit_at(
        self: &Arc<Self>,
        ip: IpAddr,
        origin: Option<&str>,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        if !self.origin_allowed(origin) {
            return Err(self.refuse(Refusal::Origin {
                origin: origin.unwrap_or_default().to_owned(),
            }));
        }
        let r = self.rules;
        if !r.tracks {
            return Ok(Ticket::none());
        }
        let key = self.key(ip);
        let mut s = self.stripe(&key);
        if let Some(e) = s.map.get_mut(&key) {
            match e.backoff_until {
                Some(t) if t > now => {
                    let left = t.duration_since(now).as_secs_f64().ceil() as u64;
                    return Err(self.refuse(Refusal::AuthBackoff {
                        retry_after: left.max(1),
                    }));
                }
                Some(_) => e.backoff_until = None,
                None => {}
            }
        }
        if r.rate == 0.0 && r.max_open == 0 {
            // Only the auth limit is on: nothing to record for an upgrade.
            return Ok(Ticket::none());
        }
        let Some(e) = self.entry(&mut s, key, now) else {
            return Err(self.refuse(Refusal::TrackedIpsFull {
                max: self.cfg.max_tracked_ips,
            }));
        };
        if r.rate > 0.0 {
            let elapsed = now.saturating_duration_since(e.conn_at).as_secs_f64();
            e.conn_tokens = (e.conn_tokens + elapsed * r.rate).min(r.burst);
            e.conn_at = now;
            if e.conn_tokens < 1.0 {
                let wait = ((1.0 - e.conn_tokens) / r.rate).ceil() as u64;
                return Err(self.refuse(Refusal::Rate {
                    per_s: self.cfg.connections_per_ip_per_s,
                    burst: self.cfg.connections_per_ip_burst,
                    retry_after: wait.max(1),
                }));
            }
            e.conn_tokens -= 1.0;
        }
        if r.max_open == 0 {
            return Ok(Ticket::none());
        }
        if e.open >= r.max_open {
            return Err(self.refuse(Refusal::PerIpConnections { max: r.max_open }));
        }
        e.open += 1;
        drop(s);
        Ok(Ticket {
            held: Some((self.clone(), key)),
        })
    }

    /// A failed authentication from `ip` (an `auth` message or an upgrade
    /// credential that did not verify). One more than
    /// `auth_failures_per_ip_per_min` within a minute puts the address in
    /// back-off for `auth_failure_backoff`: its upgrades are then refused.
    pub(crate) fn note_auth_failure(&self, ip: IpAddr) {
        self.note_auth_failure_at(ip, Instant::now());
    }

    /// As [`note_auth_failure`](Self::note_auth_failure), at `now`; true if
    /// this failure started a back-off.
    pub(crate) fn note_auth_failure_at(&self, ip: IpAddr, now: Instant) -> bool {
        let r = self.rules;
        if r.auth_cap == 0.0 {
            return false;
        }
        let key = self.key(ip);
        let mut s = self.stripe(&key);
        // A full table of live entries cannot record it; the failure is then
        // bounded by `max_auth_failures` per connection only.
        let Some(e) = self.entry(&mut s, key, now) else {
            return false;
        };
        if e.backoff_until.is_some_and(|t| t > now) {
            return false;
        }
        let elapsed = now.saturating_duration_since(e.auth_at).as_secs_f64();
        e.auth_tokens = (e.auth_tokens + elapsed * r.auth_cap / 60.0).min(r.auth_cap);
        e.auth_at = now;
        if e.auth_tokens >= 1.0 {
            e.auth_tokens -= 1.0;
            return false;
        }
        e.backoff_until = Some(now + r.backoff);
        // A fresh allowance once the back-off ends.
        e.auth_tokens = r.auth_cap;
        e.auth_at = now + r.backoff;
        self.backoffs.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Counters and table size for the status document.
    pub(crate) fn status(&self) -> AdmissionStatus {
        let n = |k: RefusalKind| self.refused[k as usize].load(Ordering::Relaxed);
        AdmissionStatus {
            tracked_ips: self.stripes.iter().map(|s| lock(s).map.len()).sum(),
            max_tracked_ips: self.cfg.max_tracked_ips,
            auth_backoffs: self.backoffs.load(Ordering::Relaxed),
            refused: RefusalCounts {
                origin: n(RefusalKind::Origin),
                auth_backoff: n(RefusalKind::AuthBackoff),
                rate: n(RefusalKind::Rate),
                per_ip_connections: n(RefusalKind::PerIpConnections),
                tracked_ips_full: n(RefusalKind::TrackedIpsFull),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn adm(cfg: LimitsConfig) -> Arc<Admission> {
        Arc::new(Admission::with_stripes(&cfg, 1))
    }

    fn off() -> LimitsConfig {
        LimitsConfig {
            auth_failures_per_ip_per_min: 0,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn defaults_admit_anyone_and_track_nothing() {
        let a = adm(off());
        let t0 = Instant::now();
        let tickets: Vec<_> = (0..1000)
            .map(|_| a.admit_at(ip("10.0.0.1"), None, t0).unwrap())
            .collect();
        assert_eq!(a.status().tracked_ips, 0);
        drop(tickets);
        let a = adm(LimitsConfig::default());
        a.admit_at(ip("10.0.0.1"), None, t0).unwrap();
        assert_eq!(
            a.status().tracked_ips,
            0,
            "auth limit alone records no upgrade"
        );
    }

    #[test]
    fn rate_bucket_refills() {
        let a = adm(LimitsConfig {
            connections_per_ip_per_s: 2,
            connections_per_ip_burst: 3,
            ..off()
        });
        let t0 = Instant::now();
        let me = ip("192.0.2.7");
        for _ in 0..3 {
            a.admit_at(me, None, t0).unwrap();
        }
        let r = a.admit_at(me, None, t0).unwrap_err();
        assert_eq!(
            r,
            Refusal::Rate {
                per_s: 2,
                burst: 3,
                retry_after: 1
            }
        );
        assert_eq!((r.status(), r.retry_after()), (429, Some(1)));
        // Another address has its own bucket.
        a.admit_at(ip("192.0.2.8"), None, t0).unwrap();
        // Half a second gives one token back (2/s).
        a.admit_at(me, None, t0 + Duration::from_millis(500))
            .unwrap();
        assert!(a
            .admit_at(me, None, t0 + Duration::from_millis(500))
            .is_err());
        assert_eq!(a.status().refused.rate, 2);
    }

    #[test]
    fn slow_rates_say_how_long_to_wait() {
        let a = adm(LimitsConfig {
            connections_per_ip_per_s: 1,
            connections_per_ip_burst: 1,
            ..off()
        });
        let t0 = Instant::now();
        a.admit_at(ip("192.0.2.7"), None, t0).unwrap();
        let r = a
            .admit_at(ip("192.0.2.7"), None, t0 + Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(r.retry_after(), Some(1));
    }

    #[test]
    fn open_connections_per_ip_are_released_by_the_ticket() {
        let a = adm(LimitsConfig {
            max_connections_per_ip: 2,
            ..off()
        });
        let t0 = Instant::now();
        let me = ip("198.51.100.1");
        let t1 = a.admit_at(me, None, t0).unwrap();
        let _t2 = a.admit_at(me, None, t0).unwrap();
        let r = a.admit_at(me, None, t0).unwrap_err();
        assert_eq!(r, Refusal::PerIpConnections { max: 2 });
        assert_eq!(r.retry_after(), Some(CONCURRENCY_RETRY_AFTER_S));
        drop(t1);
        let _t3 = a.admit_at(me, None, t0).unwrap();
        assert_eq!(a.status().refused.per_ip_connections, 1);
    }

    #[test]
    fn auth_failures_start_a_backoff() {
        let a = adm(LimitsConfig {
            auth_failures_per_ip_per_min: 3,
            auth_failure_backoff: Duration::from_secs(60),
            ..off()
        });
        let t0 = Instant::now();
        let me = ip("203.0.113.5");
        for _ in 0..3 {
            assert!(!a.note_auth_failure_at(me, t0));
        }
        a.admit_at(me, None, t0).unwrap();
        assert!(a.note_auth_failure_at(me, t0), "the fourth starts it");
        let r = a
            .admit_at(me, None, t0 + Duration::from_millis(1500))
            .unwrap_err();
        assert_eq!(r, Refusal::AuthBackoff { retry_after: 59 });
        assert_eq!(r.status(), 429);
        a.admit_at(ip("203.0.113.6"), None, t0).unwrap();
        // Over: admitted, with a fresh allowance.
        let after = t0 + Duration::from_secs(60);
        a.admit_at(me, None, after).unwrap();
        for _ in 0..3 {
            assert!(!a.note_auth_failure_at(me, after));
        }
        assert!(a.note_auth_failure_at(me, after));
        assert_eq!(a.status().auth_backoffs, 2);
        assert_eq!(a.status().refused.auth_backoff, 1);
    }

    #[test]
    fn auth_failures_spread_over_time_do_not_trip() {
        let a = adm(LimitsConfig {
            auth_failures_per_ip_per_min: 6,
            ..off()
        });
        let t0 = Instant::now();
        // One every 10 s is exactly the allowed rate.
        for i in 0..100 {
            let t = t0 + Duration::from_secs(10 * i);
            assert!(!a.note_auth_failure_at(ip("203.0.113.5"), t), "failure {i}");
        }
    }

    #[test]
    fn table_is_bounded_and_pruned() {
        let a = adm(LimitsConfig {
            connections_per_ip_per_s: 1,
            connections_per_ip_burst: 1,
            max_connections_per_ip: 10,
            max_tracked_ips: 2,
            ..off()
        });
        let t0 = Instant::now();
        let held = a.admit_at(ip("10.0.0.1"), None, t0).unwrap();
        let _b = a.admit_at(ip("10.0.0.2"), None, t0).unwrap();
        let r = a.admit_at(ip("10.0.0.3"), None, t0).unwrap_err();
        assert_eq!(r, Refusal::TrackedIpsFull { max: 2 });
        assert_eq!((r.status(), r.retry_after()), (503, Some(1)));
        // A known address still gets its answer while the table is full.
        assert!(matches!(
            a.admit_at(ip("10.0.0.1"), None, t0),
            Err(Refusal::Rate { .. })
        ));
        // 10.0.0.1 closes and its bucket refills: idle, pruned for a newcomer
        // (after the pause a fruitless prune imposes).
        drop(held);
        let later = t0 + Duration::from_secs(2);
        let _c = a.admit_at(ip("10.0.0.3"), None, later).unwrap();
        assert_eq!(a.status().tracked_ips, 2);
        assert_eq!(a.status().refused.tracked_ips_full, 1);
    }

    #[test]
    fn a_fruitless_prune_is_not_repeated_at_once() {
        let a = adm(LimitsConfig {
            max_connections_per_ip: 10,
            max_tracked_ips: 1,
            ..off()
        });
        let t0 = Instant::now();
        let held = a.admit_at(ip("10.0.0.1"), None, t0).unwrap();
        assert!(a.admit_at(ip("10.0.0.2"), None, t0).is_err());
        drop(held);
        // Idle now, but the stripe is not scanned again within the interval.
        assert!(a.admit_at(ip("10.0.0.2"), None, t0).is_err());
        a.admit_at(ip("10.0.0.2"), None, t0 + PRUNE_INTERVAL)
            .unwrap();
    }

    #[test]
    fn ipv6_is_limited_per_block() {
        let a = adm(LimitsConfig {
            max_connections_per_ip: 1,
            ..off()
        });
        let t0 = Instant::now();
        let _t = a.admit_at(ip("2001:db8:1:2::1"), None, t0).unwrap();
        assert!(a.admit_at(ip("2001:db8:1:2::ffff"), None, t0).is_err());
        a.admit_at(ip("2001:db8:1:3::1"), None, t0).unwrap();
        // v4-mapped is the v4 address.
        let _v4 = a.admit_at(ip("192.0.2.1"), None, t0).unwrap();
        assert!(a.admit_at(ip("::ffff:192.0.2.1"), None, t0).is_err());
    }

    #[test]
    fn origins() {
        let any = adm(off());
        assert!(any.origin_allowed(Some("https://evil.test")));
        let a = adm(LimitsConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            ..off()
        });
        assert!(a.origin_allowed(None), "not a browser");
        assert!(a.origin_allowed(Some("https://app.example.com")));
        let r = a
            .admit_at(ip("10.0.0.1"), Some("https://evil.test"), Instant::now())
            .unwrap_err();
        assert_eq!((r.status(), r.retry_after()), (403, None));
        assert_eq!(a.status().refused.origin, 1);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let a = adm(LimitsConfig {
            trusted_proxies: vec!["127.0.0.1".into(), "10.0.0.0/8".into()],
            ..off()
        });
        let xff = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let proxy = ip("127.0.0.1");
        let stranger = ip("192.0.2.50");
        // From a stranger the header is ignored.
        assert_eq!(a.client_ip(stranger, &xff(&["203.0.113.9"])), stranger);
        // From a proxy: the right-most untrusted address.
        assert_eq!(
            a.client_ip(proxy, &xff(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            a.client_ip(proxy, &xff(&["1.1.1.1, 203.0.113.9, 10.1.1.1"])),
            ip("203.0.113.9"),
            "a spoofed left part is skipped, the inner proxy too"
        );
        assert_eq!(
            a.client_ip(proxy, &xff(&["1.1.1.1", "203.0.113.9:4711"])),
            ip("203.0.113.9"),
            "several headers, a port"
        );
        assert_eq!(
            a.client_ip(proxy, &xff(&["[2001:db8::9]:80"])),
            ip("2001:db8::9")
        );
        assert_eq!(
            a.client_ip(proxy, &xff(&["10.2.2.2"])),
            ip("10.2.2.2"),
            "all trusted"
        );
        assert_eq!(
            a.client_ip(proxy, &xff(&["203.0.113.9, garbage, 10.3.3.3"])),
            ip("10.3.3.3"),
            "garbage stops the walk at the last trusted hop"
        );
        assert_eq!(a.client_ip(proxy, &xff(&["unknown"])), proxy);
        assert_eq!(a.client_ip(proxy, &[]), proxy);
        assert_eq!(
            a.client_ip(ip("::ffff:127.0.0.1"), &xff(&["203.0.113.9"])),
            ip("203.0.113.9"),
            "a dual-stack peer address matches as IPv4"
        );
    }
}
