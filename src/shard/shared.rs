//! What every shard shares, and the questions answered from it: who owns a
//! client id, how healthy the server is, what `get_status` reports.
//!
//! Touched on connect and disconnect, never per message: the per-message
//! path reads only its own shard's state and the immutable config. The
//! per-address admission state ([`Admission`]) lives here for the same
//! reason: it is consulted once per upgrade.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::admission::Admission;
use super::mesh::{Mailbox, ShardMsg};
use crate::api::Registry;
use crate::auth::Authenticator;
use crate::config::Checked;
use crate::events::EventHub;
use crate::metrics::ShardMetrics;
use crate::status::Status;
use crate::store::crypto::FieldKey;
use crate::store::StoreHandle;
use crate::tls::TlsReloader;

/// State every shard shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Checked,
    /// Verifies credentials; swapped whole when tokens or keys reload.
    pub(crate) auth: ArcSwap<Authenticator>,
    /// The settings `auth` was built from (replaced by a reload): what the
    /// key-file watcher rebuilds from. Locked only to reload.
    pub(crate) auth_source: std::sync::Mutex<crate::config::Config>,
    pub(crate) conn_count: AtomicUsize,
    pub(crate) stopping: AtomicBool,
    pub(crate) events: EventHub,
    pub(crate) started: Instant,
    /// Distinguishes client ids across restarts.
    pub(crate) instance: String,
    /// Every shard's mailbox, indexed by shard id.
    pub(crate) mailboxes: Vec<Mailbox>,
    /// The store writer's queue (persistence on).
    pub(crate) store: Option<StoreHandle>,
    /// Key for `fields_to_encrypt`.
    pub(crate) field_key: Option<FieldKey>,
    /// Handlers and service registrations.
    pub(crate) registry: Arc<Registry>,
    /// The `[limits]` state per client address (see [`Admission`]).
    pub(crate) admission: Arc<Admission>,
    /// The TLS configuration new connections get (TLS configured); the
    /// server sets it after [`Shared::new`] and reloads swap what it holds.
    pub(crate) tls: Option<Arc<TlsReloader>>,
    /// Each shard's counters (index: shard id), read by scrapes.
    pub(crate) metrics: Vec<Arc<ShardMetrics>>,
    /// Which shards are running their accept loops (index: shard id).
    pub(crate) running: Vec<AtomicBool>,
    /// Publishes made through the API (HTTP or `Handle`), off any shard.
    pub(crate) api_publishes: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Shared state for `config`'s shards, reachable through `mailboxes`.
    pub(crate) fn new(
        config: Checked,
        auth: Authenticator,
        mailboxes: Vec<Mailbox>,
        store: Option<StoreHandle>,
        field_key: Option<FieldKey>,
        registry: Arc<Registry>,
    ) -> Shared {
        let shards = mailboxes.len();
        Shared {
            auth_source: std::sync::Mutex::new(crate::config::Config::clone(&config)),
            admission: Arc::new(Admission::new(&config.limits)),
            config,
            auth: ArcSwap::from_pointee(auth),
            conn_count: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            events: EventHub::default(),
            started: Instant::now(),
            instance: instance_tag(),
            mailboxes,
            store,
            field_key,
            registry,
            tls: None,
            metrics: (0..shards).map(|_| Arc::default()).collect(),
            api_publishes: Default::default(),
            running: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.mailboxes.len()
    }

    /// The id of connection `key` on `shard`: unique across shards (the
    /// shard id) and restarts (the instance tag).
    pub(crate) fn client_id(&self, shard: usize, key: u64) -> String {
        format!("{}-{}-{}", self.instance, shard, key)
    }

    /// Which shard owns `client_id`, and the connection's key there.
    pub(crate) fn route(&self, client_id: &str) -> Option<(usize, u64)> {
        let mut parts = client_id.rsplitn(3, '-');
        let key = parts.next()?.parse().ok()?;
        let shard: usize = parts.next()?.parse().ok()?;
        let instance = parts.next()?;
        (instance == self.instance && shard < self.mailboxes.len()).then_some((shard, key))
    }

    /// The first shard that is not running its accept loops, if any.
    pub(crate) fn shard_down(&self) -> Option<usize> {
        self.running.iter().position(|r| !r.load(Ordering::Acquire))
    }

    /// The body of `GET /health`.
    pub(crate) fn health_json(&self) -> String {
        serde_json::json!({
            "status": if self.stopping.load(Ordering::Acquire) { "stopping" } else { "ok" },
            "connections": self.conn_count.load(Ordering::Acquire),
            "maxConnections": self.config.max_connections,
            "shards": self.shards(),
            "uptimeMs": self.started.elapsed().as_millis() as u64,
        })
        .to_string()
    }

    /// Ask every shard for its clients and fold the answers.
    pub(crate) async fn collect_status(&self) -> Status {
        let mut rxs = Vec::new();
        for m in &self.mailboxes {
            let (tx, rx) = tokio::sync::oneshot::channel();
            m.send(ShardMsg::Status(tx));
            rxs.push(rx);
        }
        let mut shards = Vec::new();
        let mut clients = Vec::new();
        for rx in rxs {
            match rx.await {
                Ok(s) => {
                    shards.push(s.clients.len());
                    clients.extend(s.clients);
                }
                Err(_) => shards.push(0),
            }
        }
        let mut topics: Vec<&String> = clients
            .iter()
            .flat_map(|c| c.subscriptions.iter())
            .collect();
        topics.sort();
        topics.dedup();
        Status {
            connection_count: self.conn_count.load(Ordering::Acquire),
            max_connections: self.config.max_connections,
            uptime: self.started.elapsed().as_millis() as u64,
            shards,
            topic_count: topics.len(),
            clients,
            admission: self.admission.status(),
        }
    }
}

fn instance_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mix = nanos ^ ((std::process::id() as u64) << 40);
    format!("{:x}", mix & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_route_back_to_their_shard() {
        let mb: Vec<_> = (0..3).map(|_| super::super::mesh::mailbox().0).collect();
        let cfg = crate::config::Config::default().validate().unwrap();
        let auth = Authenticator::new(&cfg).unwrap();
        let s = Shared::new(cfg, auth, mb, None, None, Default::default());
        let id = s.client_id(2, 41);
        assert_eq!(s.route(&id), Some((2, 41)));
        assert_eq!(s.route(&s.client_id(3, 1)), None, "no shard 3");
        assert_eq!(s.route("other-0-1"), None, "another instance");
        assert_eq!(s.route("garbage"), None);
    }
}
