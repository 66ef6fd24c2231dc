//! The `[limits]` table: abuse limits per source address, applied at the
//! WebSocket upgrade (connection rate, concurrent connections, back-off
//! after failed authentications), which peers may speak for a client
//! through `X-Forwarded-For` (`trusted_proxies`), and which browser origins
//! may open a connection (`allowed_origins`).
//!
//! Only the shape and the checks live here; the state that enforces them
//! is `shard::admission`. [`Cidr`] and [`OriginPattern`] are parsed here so
//! a bad entry is refused at start naming its key (`limits.trusted_proxies`)
//! and the enforcing side never sees text it cannot read.
//!
//! Why the per-address limits are off by default: fleets sit behind NAT
//! (carrier-grade NAT, a site's one gateway), so hundreds of honest devices
//! can share one address, and a default that refuses them is an outage
//! nobody chose. The global `max_connections` and `handshake_timeout` bound
//! one host regardless. The back-off after failed authentications is on:
//! honest clients do not fail thirty times a minute.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration_serde, ConfigError};

/// Abuse limits per source address, and who may speak for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// New connections per second one address may open (token bucket,
    /// refilled at this rate, holding `connections_per_ip_burst`); past it
    /// the upgrade is answered 429 with `Retry-After`. 0 = off. Default 0.
    pub connections_per_ip_per_s: u32,
    /// Upgrades one address may make at once before the rate applies (the
    /// bucket's size). At least 1 when the rate is on. Default 20.
    pub connections_per_ip_burst: u32,
    /// Connections one address may hold open at once; past it the upgrade is
    /// answered 429. 0 = off. Default 0.
    pub max_connections_per_ip: u32,
    /// Failed authentications one address may make per minute (token bucket
    /// of this size, refilled over a minute); one more starts
    /// `auth_failure_backoff`, during which its upgrades are answered 429.
    /// Counts every failed `auth` message and failed upgrade credential.
    /// 0 = off. Default 30.
    pub auth_failures_per_ip_per_min: u32,
    /// How long an address that went over `auth_failures_per_ip_per_min`
    /// is refused. 1s..=1d. Default 5m.
    #[serde(with = "duration_serde")]
    pub auth_failure_backoff: Duration,
    /// Peers (addresses or CIDR blocks, `10.0.0.0/8`, `::1`) whose
    /// `X-Forwarded-For` header is believed: from one of them, the client is
    /// the right-most address in the header that is not itself a trusted
    /// proxy. From anyone else the header is ignored. Default none.
    pub trusted_proxies: Vec<String>,
    /// Browser origins (`https://app.example.com`, `https://*.example.com`,
    /// `null`) that may open a connection; an upgrade with an `Origin`
    /// header not on the list is answered 403 (cross-site WebSocket
    /// hijacking). A request without `Origin` (not a browser) is not
    /// checked. Empty = any origin. Default empty.
    pub allowed_origins: Vec<String>,
    /// Addresses tracked at once for the limits above (about 100 bytes
    /// each); idle entries are pruned when the table is full, and a new
    /// address that finds it full of live entries is answered 503 with
    /// `Retry-After`. At least `max_connections` when
    /// `connections_per_ip_per_s` or `max_connections_per_ip` is on.
    /// Default 100000.
    pub max_tracked_ips: usize,
    /// IPv6 clients are limited per block of this prefix length, not per
    /// address: one host usually holds a whole /64. 32..=128. Default 64.
    pub ipv6_prefix: u8,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connections_per_ip_per_s: 0,
            connections_per_ip_burst: 20,
            max_connections_per_ip: 0,
            auth_failures_per_ip_per_min: 30,
            auth_failure_backoff: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            max_tracked_ips: 100_000,
            ipv6_prefix: 64,
        }
    }
}

impl LimitsConfig {
    /// Does any limit keep per-address state?
    pub fn tracks_addresses(&self) -> bool {
        self.connections_per_ip_per_s > 0
            || self.max_connections_per_ip > 0
            || self.auth_failures_per_ip_per_min > 0
    }

    /// `trusted_proxies`, parsed (entries that do not parse are skipped:
    /// [`Config::validate`](super::Config::validate) refuses them at start).
    pub fn proxies(&self) -> Vec<Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// `allowed_origins`, parsed (as [`proxies`](Self::proxies)).
    pub fn origins(&self) -> Vec<OriginPattern> {
        self.allowed_origins
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// The rules of the table; `max_connections` is the server-wide limit.
    pub(super) fn check(&self, max_connections: usize) -> Result<(), ConfigError> {
        let invalid =
            |field: &'static str, message: String| Err(ConfigError::Invalid { field, message });
        if self.connections_per_ip_per_s > 0 && self.connections_per_ip_burst == 0 {
            return invalid(
                "limits.connections_per_ip_burst",
                "must be at least 1 when limits.connections_per_ip_per_s is on".to_owned(),
            );
        }
        if self.auth_failure_backoff < Duration::from_secs(1)
            || self.auth_failure_backoff > Duration::from_secs(86_400)
        {
            return invalid(
                "limits.auth_failure_backoff",
                format!(
                    "must be between 1s and 1d (got {})",
                    humantime::format_duration(self.auth_failure_backoff)
                ),
            );
        }
        if !(32..=128).contains(&self.ipv6_prefix) {
            return invalid(
                "limits.ipv6_prefix",
                format!("must be between 32 and 128 (got {})", self.ipv6_prefix),
            );
        }
        // Open connections from distinct addresses each hold an entry under
        // these two; past the table's size they would be refused with 503
        // before max_connections is reached.
        let per_connection = self.connections_per_ip_per_s > 0 || self.max_connections_per_ip > 0;
        if per_connection && self.max_tracked_ips < max_connections.max(1) {
            return invalid(
                "limits.max_tracked_ips",
                format!(
                    "must be at least max_connections ({max_connections}) when connections_per_ip_per_s or max_connections_per_ip is on (got {})",
                    self.max_tracked_ips
                ),
            );
        }
        for p in &self.trusted_proxies {
            if let Err(e) = p.parse::<Cidr>() {
                return invalid("limits.trusted_proxies", e.to_string());
            }
        }
        for o in &self.allowed_origins {
            if let Err(e) = o.parse::<OriginPattern>() {
                return invalid("limits.allowed_origins", e.to_string());
            }
        }
        Ok(())
    }
}

/// A block of addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address
/// (`127.0.0.1` is `127.0.0.1/32`). IPv4-mapped IPv6 addresses
/// (`::ffff:10.1.2.3`, what a dual-stack socket reports) match as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A `trusted_proxies` entry that is not an address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not an IP address.
    #[error("`{0}` is not an IP address or CIDR block (e.g. 10.0.0.0/8, ::1)")]
    Address(String),
    /// The prefix length is not a number within the address's width.
    #[error("`{entry}`: prefix length must be 0..={max}")]
    Prefix {
        /// The entry as written.
        entry: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits set past the prefix: probably not what was meant.
    #[error("`{entry}` has bits set past the /{prefix}; did you mean {suggest}?")]
    HostBits {
        /// The entry as written.
        entry: String,
        /// Its prefix length.
        prefix: u8,
        /// The block with those bits cleared.
        suggest: String,
    },
}

impl Cidr {
    /// Does the block hold `ip`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `v` with only its first `prefix` bits kept.
pub fn mask32(v: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => v,
        p => v & (u32::MAX << (32 - p)),
    }
}

/// `v` with only its first `prefix` bits kept.
pub fn mask128(v: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => v,
        p => v & (u128::MAX << (128 - p)),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let (a, p) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        let addr: IpAddr = a
            .parse::<IpAddr>()
            .map_err(|_| CidrError::Address(entry.to_owned()))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(CidrError::Prefix {
                        entry: entry.to_owned(),
                        max,
                    })
                }
            },
        };
        let net = match addr {
            IpAddr::V4(v) => IpAddr::V4(mask32(u32::from(v), prefix).into()),
            IpAddr::V6(v) => IpAddr::V6(mask128(u128::from(v), prefix).into()),
        };
        if net != addr {
            return Err(CidrError::HostBits {
                entry: entry.to_owned(),
                prefix,
                suggest: format!("{net}/{prefix}"),
            });
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An `allowed_origins` entry: `scheme://host[:port]`, with `*.` before the
/// host to allow any subdomain (not the domain itself), or `null` (what
/// sandboxed frames and `file:` pages send). Compared without regard to
/// ASCII case, and with the scheme's default port left out, as browsers
/// send it (`https://a.example:443` is `https://a.example`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// Lower-case scheme.
    scheme: String,
    /// Lower-case host; for a wildcard, the part after `*.`.
    host: String,
    /// The port, unless it is the scheme's default.
    port: Option<u16>,
    /// `*.host`: any subdomain of `host`.
    wildcard: bool,
    /// The literal `null` origin.
    null: bool,
}

/// An `allowed_origins` entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not an origin: {why} (write scheme://host[:port], e.g. https://app.example.com, https://*.example.com, or null)")]
pub struct OriginError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The parts of an origin: lower-case scheme and host, and the port unless
/// it is the scheme's default; what is wrong if it is not
/// `scheme://host[:port]`.
fn origin_parts(s: &str) -> Result<(String, String, Option<u16>), &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("no scheme://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err("bad scheme");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or user");
    }
    // `[v6]:port` or `host:port`.
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (h, tail) = after.split_once(']').ok_or("unclosed [")?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or("junk after ]")?),
        };
        (format!("[{h}]"), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("no host");
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| "bad port")?),
    };
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    };
    let port = port.filter(|p| Some(*p) != default);
    Ok((scheme, host.to_ascii_lowercase(), port))
}

impl FromStr for OriginPattern {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let err = |why| OriginError {
            entry: entry.to_owned(),
            why,
        };
        if entry.eq_ignore_ascii_case("null") {
            return Ok(OriginPattern {
                scheme: String::new(),
                host: String::new(),
                port: None,
                wildcard: false,
                null: true,
            });
        }
        if entry == "*" {
            return Err(err("leave allowed_origins empty to allow any origin"));
        }
        let (scheme, host, port) = origin_parts(entry).map_err(err)?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(h) => (h.to_owned(), true),
            None => (host, false),
        };
        if host.contains('*') {
            return Err(err(
                "`*` may only stand for subdomains, as in https://*.example.com",
            ));
        }
        if host.is_empty() {
            return Err(err("no host"));
        }
        Ok(OriginPattern {
            scheme,
            host,
            port,
            wildcard,
            null: false,
        })
    }
}

impl OriginPattern {
    /// Does the `Origin` header value `origin` match?
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.trim();
        if self.null {
            return origin.eq_ignore_ascii_case("null");
        }
        let Ok((scheme, host, port)) = origin_parts(origin) else {
            return false;
        };
        if scheme != self.scheme || port != self.port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped matches as v4");
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(" ::1 ".parse::<Cidr>().unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 128, .. })
        ));
        assert!(matches!(
            "proxy.local".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Prefix { .. })
        ));
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.0.0.1/8` has bits set past the /8; did you mean 10.0.0.0/8?"
        );
    }

    #[test]
    fn origins_parse_and_match() {
        let p: OriginPattern = "https://App.Example.com".parse().unwrap();
        assert!(p.matches("https://app.example.com"));
        assert!(p.matches("HTTPS://APP.EXAMPLE.COM"));
        assert!(p.matches("https://app.example.com:443"), "default port");
        assert!(!p.matches("http://app.example.com"), "scheme");
        assert!(!p.matches("https://app.example.com:8443"), "port");
        assert!(!p.matches("https://app.example.com.evil.test"));
        assert!(!p.matches("https://evil.test"));
        assert!(!p.matches("null"));
        let p: OriginPattern = "http://localhost:3000/".parse().unwrap();
        assert!(p.matches("http://localhost:3000"));
        assert!(!p.matches("http://localhost:3001"));
        let w: OriginPattern = "https://*.example.com".parse().unwrap();
        assert!(w.matches("https://a.example.com"));
        assert!(w.matches("https://a.b.example.com"));
        assert!(!w.matches("https://example.com"), "not the apex");
        assert!(!w.matches("https://evilexample.com"));
        assert!(!w.matches("http://a.example.com"));
        let n: OriginPattern = "null".parse().unwrap();
        assert!(n.matches("null") && !n.matches("https://a.example.com"));
        let v6: OriginPattern = "http://[::1]:8080".parse().unwrap();
        assert!(v6.matches("http://[::1]:8080"));
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "*",
            "app.example.com",
            "https://",
            "https://a.example.com/path",
            "https://a.example.com:99999",
            "https://a.*.example.com",
            "https://user@a.example.com",
        ] {
            let e = bad.parse::<OriginPattern>().unwrap_err();
            assert!(e.to_string().contains(bad.trim()), "{bad}: {e}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn the_table_from_a_file_env_and_flags() {
        use crate::config::Config;
        let c = Config::from_toml_str(
            "[limits]\nconnections_per_ip_per_s = 10\nconnections_per_ip_burst = 50\n\
             auth_failure_backoff = \"90s\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
             allowed_origins = [\"https://app.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(c.limits.connections_per_ip_per_s, 10);
        assert_eq!(c.limits.connections_per_ip_burst, 50);
        assert_eq!(c.limits.auth_failure_backoff, Duration::from_secs(90));
        assert_eq!(c.limits.proxies().len(), 2);
        assert_eq!(c.limits.origins().len(), 1);

        let c = Config::load(
            None,
            env(&[
                ("WSH_LIMITS_MAX_CONNECTIONS_PER_IP", "5"),
                ("WSH_LIMITS_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
                ("WSH_LIMITS_AUTH_FAILURE_BACKOFF", "2m"),
            ]),
            &env(&[
                (
                    "limits.allowed_origins",
                    "https://a.example,https://*.b.example",
                ),
                ("--limits-ipv6-prefix", "56"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.max_connections_per_ip, 5);
        assert_eq!(c.limits.trusted_proxies, ["10.0.0.0/8", "::1"]);
        assert_eq!(c.limits.auth_failure_backoff, Duration::from_secs(120));
        assert_eq!(
            c.limits.allowed_origins,
            ["https://a.example", "https://*.b.example"]
        );
        assert_eq!(c.limits.ipv6_prefix, 56);
        // Printed and read back as the same table.
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("[limits]"), "{text}");
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn bad_entries_name_their_key() {
        use crate::config::Config;
        let err =
            Config::from_toml_str("[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "limits.trusted_proxies",
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("limits.trusted_proxies") && msg.contains("10.0.0.0/33"),
            "{msg}"
        );

        let err = Config::load(
            None,
            env(&[("WSH_LIMITS_TRUSTED_PROXIES", "proxy.internal")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("limits.trusted_proxies"), "{err}");
        assert!(err.to_string().contains("proxy.internal"), "{err}");

        let err =
            Config::load(None, env(&[]), &env(&[("limits.allowed_origins", "*")])).unwrap_err();
        assert!(err.to_string().contains("limits.allowed_origins"), "{err}");

        let err = Config::from_toml_str("[limits]\nmax_conections_per_ip = 3").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        assert!(
            err.to_string().contains("limits.max_conections_per_ip"),
            "{err}"
        );

        let err = Config::load(
            None,
            env(&[("WSH_LIMITS_MAX_CONNECTIONS_PER_IP", "-1")]),
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("WSH_LIMITS_MAX_CONNECTIONS_PER_IP"),
            "{err}"
        );

        let err = Config::from_toml_str(
            "max_connections = 1000\n[limits]\nmax_connections_per_ip = 10\nmax_tracked_ips = 999",
        )
        .unwrap_err();
        assert!(err.to_string().contains("limits.max_tracked_ips"), "{err}");
    }

    #[test]
    fn rules() {
        let ok = LimitsConfig::default();
        ok.check(100).unwrap();
        let bad = |l: LimitsConfig, field: &str| match l.check(100) {
            Err(ConfigError::Invalid { field: f, message }) => {
                assert_eq!(f, field, "{message}");
                message
            }
            other => panic!("expected {field}: {other:?}"),
        };
        let m = bad(
            LimitsConfig {
                trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.300".into()],
                ..ok.clone()
            },
            "limits.trusted_proxies",
        );
        assert!(m.contains("10.0.0.300"), "{m}");
        bad(
            LimitsConfig {
                allowed_origins: vec!["example.com".into()],
                ..ok.clone()
            },
            "limits.allowed_origins",
        );
        bad(
            LimitsConfig {
                connections_per_ip_per_s: 5,
                connections_per_ip_burst: 0,
                ..ok.clone()
            },
            "limits.connections_per_ip_burst",
        );
        bad(
            LimitsConfig {
                auth_failure_backoff: Duration::from_millis(500),
                ..ok.clone()
            },
            "limits.auth_failure_backoff",
        );
        bad(
            LimitsConfig {
                ipv6_prefix: 129,
                ..ok.clone()
            },
            "limits.ipv6_prefix",
        );
        bad(
            LimitsConfig {
                max_tracked_ips: 99,
                max_connections_per_ip: 10,
                ..ok.clone()
            },
            "limits.max_tracked_ips",
        );
        // Only failing addresses are tracked for the auth limit: the table
        // need not hold max_connections of them.
        LimitsConfig {
            max_tracked_ips: 99,
            ..ok.clone()
        }
        .check(100)
        .unwrap();
        // A burst of 0 is fine while the rate is off.
        LimitsConfig {
            connections_per_ip_burst: 0,
            ..ok
        }
        .check(100)
        .unwrap();
    }
}
