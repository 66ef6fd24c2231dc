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
}
