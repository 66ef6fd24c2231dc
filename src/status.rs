//! What `get_status()` reports: the document and its parts. Plain data,
//! below every layer that fills it in (shards collect it, the server and the
//! `server.status` endpoint hand it out).

use serde::Serialize;

/// One connected client, as `get_status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Client id.
    pub id: String,
    /// Client type from its handshake.
    pub client_type: Option<String>,
    /// Device id from its handshake.
    pub device_id: Option<String>,
    /// Peer address.
    pub remote_address: String,
    /// When it connected (ISO-8601).
    pub connected_since: String,
    /// Whether it authenticated.
    pub authenticated: bool,
    /// Its subscription patterns.
    pub subscriptions: Vec<String>,
    /// Messages received from it.
    pub messages_in: u64,
    /// Messages queued to it.
    pub messages_out: u64,
    /// Bytes waiting in its out-queue now.
    pub queue_bytes: u64,
}

/// One shard's part of the status.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// Shard index.
    pub shard: usize,
    /// Its clients.
    pub clients: Vec<ClientInfo>,
}

/// The `get_status()` document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Open connections.
    pub connection_count: usize,
    /// The configured limit.
    pub max_connections: usize,
    /// Milliseconds since start.
    pub uptime: u64,
    /// Connections per shard.
    pub shards: Vec<usize>,
    /// Distinct subscription patterns across all clients.
    pub topic_count: usize,
    /// Every client.
    pub clients: Vec<ClientInfo>,
    /// The `[limits]` checks at the upgrade: what they refused.
    pub admission: AdmissionStatus,
}

/// What the `[limits]` checks at the upgrade did since start.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionStatus {
    /// Addresses (IPv6: blocks) with per-address state now.
    pub tracked_ips: usize,
    /// The configured bound on `tracked_ips` (`limits.max_tracked_ips`).
    pub max_tracked_ips: usize,
    /// Back-offs started by too many failed authentications.
    pub auth_backoffs: u64,
    /// Upgrades refused, by reason.
    pub refused: RefusalCounts,
}

/// Upgrades refused by the `[limits]` checks, by reason.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefusalCounts {
    /// 403: an `Origin` not on `allowed_origins`.
    pub origin: u64,
    /// 429: the address is in back-off after failed authentications.
    pub auth_backoff: u64,
    /// 429: over `connections_per_ip_per_s`.
    pub rate: u64,
    /// 429: at `max_connections_per_ip`.
    pub per_ip_connections: u64,
    /// 503: the address table is full (`max_tracked_ips`).
    pub tracked_ips_full: u64,
}
