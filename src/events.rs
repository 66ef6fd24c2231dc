//! Server events (the seed's `on(event, handler)`), delivered off the hot path.
//!
//! Shards publish [`Event`]s to an [`EventHub`]; each subscriber gets its own
//! unbounded crossbeam receiver and handles events on its own thread. When
//! nobody subscribed, publishing costs one atomic load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use crossbeam_channel::{Receiver, Sender};

/// Something that happened in the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every shard listens.
    ServerStarted {
        /// The bound address.
        addr: SocketAddr,
    },
    /// The server stopped.
    ServerStopped,
    /// A WebSocket connection was accepted.
    ClientConnected {
        /// Server-assigned id.
        client_id: String,
        /// Peer address.
        remote_addr: SocketAddr,
    },
    /// A connection ended.
    ClientDisconnected {
        /// Server-assigned id.
        client_id: String,
        /// How long it was connected, in milliseconds.
        connected_duration_ms: u64,
        /// The close code sent or received, if any.
        code: Option<u16>,
    },
    /// A client misbehaved or could not keep up; the connection was closed.
    ClientError {
        /// Server-assigned id.
        client_id: String,
        /// What happened.
        message: String,
        /// The close code the connection was closed with.
        code: u16,
    },
    /// A server-side failure not tied to one client.
    ServerError {
        /// What happened.
        message: String,
    },
    /// A client completed its handshake.
    ClientHandshake {
        /// Server-assigned id.
        client_id: String,
        /// The client type it named.
        client_type: String,
    },
    /// A client authenticated.
    ClientAuthenticated {
        /// Server-assigned id.
        client_id: String,
        /// The credential's device identity, if it has one.
        device_id: Option<String>,
    },
    /// A `data`/`sensor_data` record was accepted.
    DataReceived {
        /// Who sent it.
        client_id: String,
        /// The sender's client type.
        client_type: Option<String>,
        /// The sender's device id (its credential's, else its handshake's).
        device_id: Option<String>,
        /// The record's `dataType`.
        data_type: String,
        /// The record's data.
        data: serde_json::Value,
        /// Server timestamp (ISO-8601).
        timestamp: String,
    },
    /// A `request` arrived.
    Request {
        /// Who sent it.
        client_id: String,
        /// The caller's request id.
        request_id: String,
        /// The endpoint.
        endpoint: String,
    },
    /// An `rpc_call` arrived.
    RpcCall {
        /// Who sent it.
        client_id: String,
        /// The caller's request id.
        request_id: String,
        /// The method.
        method: String,
    },
    /// A client subscribed.
    Subscribed {
        /// Who.
        client_id: String,
        /// The pattern.
        topic: String,
    },
    /// A client unsubscribed.
    Unsubscribed {
        /// Who.
        client_id: String,
        /// The pattern.
        topic: String,
    },
    /// A client published.
    Published {
        /// Who.
        client_id: String,
        /// The topic.
        topic: String,
    },
    /// A client started a stream.
    StreamStarted {
        /// Who.
        client_id: String,
        /// The stream id.
        stream_id: String,
        /// The stream type.
        stream_type: String,
    },
    /// A chunk of a client's stream arrived.
    StreamData {
        /// Who.
        client_id: String,
        /// The stream id.
        stream_id: String,
        /// The chunk's sequence number.
        sequence: u64,
        /// Decoded bytes in the chunk.
        bytes: u64,
    },
    /// A record was stored.
    DatabaseInsert {
        /// Who sent it.
        client_id: String,
        /// The table.
        table: String,
        /// Its insertId.
        insert_id: u64,
    },
    /// A record could not be stored (its sender got `success:false`).
    DatabaseError {
        /// Who sent it.
        client_id: String,
        /// The table.
        table: String,
        /// The database's message.
        message: String,
    },
    /// A client ended a stream.
    StreamEnded {
        /// Who.
        client_id: String,
        /// The stream id.
        stream_id: String,
        /// Chunks received.
        chunks: u64,
        /// Decoded bytes received.
        bytes: u64,
    },
}

impl Event {
    /// The seed's event name (`client-connected`, `data-received`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::ServerStarted { .. } => "server-started",
            Event::ServerStopped => "server-stopped",
            Event::ClientConnected { .. } => "client-connected",
            Event::ClientDisconnected { .. } => "client-disconnected",
            Event::ClientError { .. } => "client-error",
            Event::ServerError { .. } => "server-error",
            Event::ClientHandshake { .. } => "client-handshake",
            Event::ClientAuthenticated { .. } => "client-authenticated",
            Event::DataReceived { .. } => "data-received",
            Event::Request { .. } => "request",
            Event::RpcCall { .. } => "rpc-call",
            Event::Subscribed { .. } => "subscribe",
            Event::Unsubscribed { .. } => "unsubscribe",
            Event::Published { .. } => "publish",
            Event::StreamStarted { .. } => "stream-started",
            Event::StreamData { .. } => "stream-data",
            Event::StreamEnded { .. } => "stream-ended",
            Event::DatabaseInsert { .. } => "database-insert",
            Event::DatabaseError { .. } => "database-error",
        }
    }
}

/// Fan-out of events to any number of subscribers.
#[derive(Debug, Default)]
pub struct EventHub {
    any: AtomicBool,
    subscribers: RwLock<Vec<Sender<Event>>>,
}

impl EventHub {
    /// Subscribe: every event from now on is sent to the returned receiver.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.subscribers
            .write()
            .expect("event hub poisoned")
            .push(tx);
        self.any.store(true, Ordering::Release);
        rx
    }

    /// Add an existing sender as a subscriber.
    pub(crate) fn add(&self, tx: Sender<Event>) {
        self.subscribers
            .write()
            .expect("event hub poisoned")
            .push(tx);
        self.any.store(true, Ordering::Release);
    }

    /// Publish an event; subscribers that went away are dropped.
    pub fn emit(&self, make: impl FnOnce() -> Event) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let ev = make();
        let mut dead = Vec::new();
        for s in self.subscribers.read().expect("event hub poisoned").iter() {
            if s.send(ev.clone()).is_err() {
                dead.push(s.clone());
            }
        }
        if !dead.is_empty() {
            let mut subs = self.subscribers.write().expect("event hub poisoned");
            subs.retain(|s| !dead.iter().any(|d| d.same_channel(s)));
            self.any.store(!subs.is_empty(), Ordering::Release);
        }
    }
}
