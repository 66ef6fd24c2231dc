//! The server as a whole: bootstrap, lifecycle, and the API other threads use.
//!
//! `start()` binds every listener on the calling thread, starts one shard
//! thread per listener and returns once each reports it is listening.
//! `stop()` asks every shard to stop accepting, close its connections with
//! 1001 and drain (bounded by `drain_timeout`), then joins the threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use tracing::info;

use crate::api::{self, CallContext, CallKind, HandlerResult, Registry};
use crate::config::Config;
use crate::events::{Event, EventHub};
use crate::protocol::json::Obj;
use crate::shard::{self, DriverKind, Mailbox, ShardHandle, ShardMsg, ShardSpec};
use crate::ws::frame::{self, OpCode};

/// Why the server could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another process listens on the address.
    #[error("address {addr} is already in use")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed for another reason.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The host did not resolve.
    #[error("cannot resolve host {host:?}: {message}")]
    Resolve {
        /// The configured host.
        host: String,
        /// The resolver's message.
        message: String,
    },
    /// A shard could not start (e.g. io_uring forced but unavailable).
    #[error("shard {shard} failed to start: {message}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// Why.
        message: String,
    },
    /// `start()` on a running server.
    #[error("server already started")]
    AlreadyStarted,
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        source: crate::store::StoreError,
    },
}

/// Run a blocking join off the async runtime (inline when there is none).
async fn blocking(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => {
            let _ = tokio::task::spawn_blocking(f).await;
        }
        Err(_) => f(),
    }
}

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The server is not running.
    #[error("server is not running")]
    NotRunning,
    /// No such client (never existed, or disconnected).
    #[error("unknown client {0}")]
    UnknownClient(String),
    /// The client did not answer within `request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// The client answered `success:false`.
    #[error("client error: {0}")]
    Client(String),
    /// A bad argument (topic, stream id).
    #[error("{0}")]
    Invalid(String),
}

/// State every shard shares. Touched on connect/disconnect, never per message.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Largest message accepted (max_payload_size, raised in echo mode).
    pub(crate) max_message_size: usize,
    pub(crate) conn_count: AtomicUsize,
    pub(crate) stopping: AtomicBool,
    pub(crate) events: EventHub,
    pub(crate) started: Instant,
    /// Distinguishes client ids across restarts.
    pub(crate) instance: String,
    pub(crate) shards: usize,
    /// Every shard's mailbox, indexed by shard id.
    pub(crate) mailboxes: Vec<Mailbox>,
    /// The store writer's queue (persistence on).
    pub(crate) store: Option<crate::store::StoreHandle>,
    /// Key for `fields_to_encrypt`.
    pub(crate) field_key: Option<crate::store::crypto::FieldKey>,
    /// Handlers and service registrations.
    pub(crate) registry: Arc<Registry>,
}

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

/// Ask every shard for its clients and fold the answers.
pub(crate) async fn collect_status(shared: &Shared) -> Status {
    let mut rxs = Vec::new();
    for m in &shared.mailboxes {
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
        connection_count: shared.conn_count.load(Ordering::Acquire),
        max_connections: shared.config.max_connections,
        uptime: shared.started.elapsed().as_millis() as u64,
        shards,
        topic_count: topics.len(),
        clients,
    }
}

/// Which shard owns a client id (`<instance>-<shard>-<key>`), and its key.
fn route(shared: &Shared, client_id: &str) -> Option<(usize, u64)> {
    let mut parts = client_id.rsplitn(3, '-');
    let key = parts.next()?.parse().ok()?;
    let shard: usize = parts.next()?.parse().ok()?;
    let instance = parts.next()?;
    (instance == shared.instance && shard < shared.mailboxes.len()).then_some((shard, key))
}

impl Shared {
    pub(crate) fn health_json(&self) -> String {
        serde_json::json!({
            "status": if self.stopping.load(Ordering::Acquire) { "stopping" } else { "ok" },
            "connections": self.conn_count.load(Ordering::Acquire),
            "maxConnections": self.config.max_connections,
            "shards": self.shards,
            "uptimeMs": self.started.elapsed().as_millis() as u64,
        })
        .to_string()
    }
}

/// Largest message the Autobahn suite sends (cases 9.1.6 and 9.2.6).
pub const ECHO_MIN_PAYLOAD: usize = 16 * 1024 * 1024;

/// The WebSocket server (the seed's `WebSocketHandler`).
#[derive(Debug)]
pub struct WebSocketHandler {
    config: Config,
    shared: Option<Arc<Shared>>,
    shards: Vec<ShardHandle>,
    addr: Option<SocketAddr>,
    driver: Option<DriverKind>,
    events: Arc<EventHubSlot>,
    registry: Arc<Registry>,
    writer: Option<(
        crossbeam_channel::Sender<crate::store::WriteMsg>,
        std::thread::JoinHandle<()>,
    )>,
    store: Option<crate::store::Store>,
    /// Server-initiated streams: stream id → (client id, next sequence number).
    streams: std::sync::Mutex<HashMap<String, (String, u64)>>,
}

/// Subscribers registered before `start()` carry over to the running server.
#[derive(Debug, Default)]
struct EventHubSlot {
    early: std::sync::Mutex<Vec<crossbeam_channel::Sender<Event>>>,
}

fn instance_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mix = nanos ^ ((std::process::id() as u64) << 40);
    format!("{:x}", mix & 0xffff_ffff_ffff)
}

impl WebSocketHandler {
    /// A server for `config` (validated here and again at `start`).
    pub fn new(config: Config) -> Self {
        WebSocketHandler {
            config,
            shared: None,
            shards: Vec::new(),
            addr: None,
            driver: None,
            events: Arc::default(),
            registry: Arc::default(),
            writer: None,
            store: None,
            streams: std::sync::Mutex::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Bind, start every shard, and return once all of them listen.
    pub async fn start(&mut self) -> Result<(), ServerError> {
        if self.shared.is_some() {
            return Err(ServerError::AlreadyStarted);
        }
        self.config.validate()?;
        let n = self.config.shards;
        let listeners = shard::listen::bind_all(&self.config.host, self.config.port, n)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], self.config.port)),
                source,
            })?;
        let max_message_size = if self.config.echo {
            self.config.max_payload_size.max(ECHO_MIN_PAYLOAD)
        } else {
            self.config.max_payload_size
        };
        let (mailboxes, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| shard::mailbox()).unzip();
        let field_key = self.load_field_key()?;
        // Echo mode is the conformance mode: it never stores anything.
        let (store, writer) = if self.config.persist && !self.config.echo {
            let blocked = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (store, tx, handle) = self.open_store(&mailboxes, blocked.clone())?;
            (
                Some(crate::store::StoreHandle {
                    tx: tx.clone(),
                    store,
                    blocked,
                }),
                Some((tx, handle)),
            )
        } else {
            (None, None)
        };
        self.store = store.as_ref().map(|s| s.store.clone());
        self.writer = writer;
        let shared = Arc::new(Shared {
            mailboxes,
            store,
            field_key,
            registry: self.registry.clone(),
            config: self.config.clone(),
            max_message_size,
            conn_count: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            events: EventHub::default(),
            started: Instant::now(),
            instance: instance_tag(),
            shards: n,
        });
        for tx in self.events.early.lock().expect("poisoned").drain(..) {
            shared.events.add(tx);
        }
        let cores = if self.config.pin_shards {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut shards = Vec::with_capacity(n);
        for (id, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let spec = ShardSpec {
                id,
                listener,
                shared: shared.clone(),
                driver: self.config.io_driver,
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            };
            let h =
                shard::spawn(spec, inbox, ready_tx.clone()).map_err(|e| ServerError::Shard {
                    shard: id,
                    message: e.to_string(),
                })?;
            shards.push(h);
        }
        drop(ready_tx);
        let mut driver = None;
        let mut failure = None;
        for id in 0..n {
            match ready_rx.recv() {
                Ok(Ok(kind)) => driver = Some(kind),
                Ok(Err(message)) => failure = Some(ServerError::Shard { shard: id, message }),
                Err(_) => {
                    failure = Some(ServerError::Shard {
                        shard: id,
                        message: "shard thread exited during start".into(),
                    })
                }
            }
        }
        self.shards = shards;
        self.shared = Some(shared.clone());
        if let Some(e) = failure {
            self.stop().await;
            self.shared = None;
            return Err(e);
        }
        self.addr = Some(addr);
        self.driver = driver;
        info!(%addr, shards = n, driver = %driver.map(|d| d.to_string()).unwrap_or_default(), "wshandler listening");
        shared.events.emit(|| Event::ServerStarted { addr });
        Ok(())
    }

    fn load_field_key(&self) -> Result<Option<crate::store::crypto::FieldKey>, ServerError> {
        use crate::config::ConfigError;
        let text = match (
            &self.config.encryption_key_file,
            std::env::var("WSH_ENCRYPTION_KEY"),
        ) {
            (Some(path), _) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            (None, Ok(k)) => Some(k),
            (None, Err(_)) => None,
        };
        match text {
            Some(t) => crate::store::crypto::FieldKey::from_base64(&t)
                .map(Some)
                .map_err(|e| {
                    ServerError::Config(ConfigError::Invalid {
                        field: "encryption_key_file",
                        message: e.to_string(),
                    })
                }),
            None if !self.config.fields_to_encrypt.is_empty() => {
                Err(ServerError::Config(ConfigError::Invalid {
                    field: "fields_to_encrypt",
                    message:
                        "is set but there is no key: set encryption_key_file or WSH_ENCRYPTION_KEY \
                          (base64 of 32 random bytes, e.g. `head -c32 /dev/urandom | base64`)"
                            .into(),
                }))
            }
            None => Ok(None),
        }
    }

    #[allow(clippy::type_complexity)]
    fn open_store(
        &self,
        mailboxes: &[Mailbox],
        blocked: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<
        (
            crate::store::Store,
            crossbeam_channel::Sender<crate::store::WriteMsg>,
            std::thread::JoinHandle<()>,
        ),
        ServerError,
    > {
        let c = &self.config;
        let dir = c.data_dir.clone();
        let err = |source| ServerError::Store {
            dir: dir.clone(),
            source,
        };
        let cfg = crate::store::StoreConfig {
            dir: c.data_dir.clone(),
            tables: c.tables(),
            durability: c.durability,
            batch_max: c.store_batch_max,
            batch_bytes: c.store_batch_bytes,
            queue: c.store_queue,
            dedup_window: c.dedup_window,
            retention: c.table_retention_map()?,
            write_buffer_size: c.store_write_buffer_size,
        };
        let store = crate::store::Store::open(&cfg).map_err(err)?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue);
        let handle =
            crate::store::spawn_writer(store.clone(), cfg, rx, mailboxes.to_vec(), blocked)
                .map_err(err)?;
        Ok((store, tx, handle))
    }

    /// The store (persistence on, after `start`): `Store::scan` reads records back.
    pub fn store(&self) -> Option<&crate::store::Store> {
        self.store.as_ref()
    }

    /// The address the server listens on (after `start`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The I/O driver the shards run on (after `start`).
    pub fn driver(&self) -> Option<DriverKind> {
        self.driver
    }

    /// Open WebSocket connections across all shards.
    pub fn connection_count(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, |s| s.conn_count.load(Ordering::Acquire))
    }

    /// Receive every server event from now on.
    pub fn subscribe_events(&self) -> crossbeam_channel::Receiver<Event> {
        match &self.shared {
            Some(s) => s.events.subscribe(),
            None => {
                let (tx, rx) = crossbeam_channel::unbounded();
                self.events.early.lock().expect("poisoned").push(tx);
                rx
            }
        }
    }

    /// Send a message to every open connection on every shard. The frame is
    /// encoded once and shared (connections with compression get their own).
    pub fn broadcast(&self, text: bool, payload: Bytes) {
        if let Ok(h) = self.handle() {
            h.broadcast(text, payload, None);
        }
    }

    /// The seed's `broadcastToAll(message, clientTypeFilter)`: send `message`
    /// (JSON) to every client, or only to clients of one type.
    pub fn broadcast_to_all(&self, message: &serde_json::Value, client_type_filter: Option<&str>) {
        if let Ok(h) = self.handle() {
            h.broadcast_to_all(message, client_type_filter);
        }
    }

    /// Register an async handler for `request` messages to `endpoint`.
    /// Handlers run as tasks on the caller's shard; see [`crate::api`].
    pub fn register_endpoint<F, Fut>(&self, endpoint: &str, handler: F)
    where
        F: Fn(CallContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.registry
            .register(CallKind::Endpoint, endpoint, api::handler(handler));
    }

    /// Register an async handler for `rpc_call` messages to `method`.
    pub fn register_rpc_method<F, Fut>(&self, method: &str, handler: F)
    where
        F: Fn(CallContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.registry
            .register(CallKind::Method, method, api::handler(handler));
    }

    /// A cloneable handle for calling the server from other threads and
    /// event handlers (publish, send, request, status).
    pub fn handle(&self) -> Result<Handle, ApiError> {
        self.shared
            .clone()
            .map(|shared| Handle { shared })
            .ok_or(ApiError::NotRunning)
    }

    /// Publish `data` on `topic` to every matching subscriber on every
    /// shard, except `exclude_client_id`.
    pub fn publish(
        &self,
        topic: &str,
        data: &serde_json::Value,
        exclude_client_id: Option<&str>,
    ) -> Result<(), ApiError> {
        self.handle()?.publish(topic, data, exclude_client_id)
    }

    /// Send `data` (JSON) to one client. Fails if it is not connected.
    pub async fn send_to_client(
        &self,
        client_id: &str,
        data: &serde_json::Value,
    ) -> Result<(), ApiError> {
        self.handle()?.send_to_client(client_id, data).await
    }

    async fn send_raw(&self, client_id: &str, payload: Bytes) -> Result<(), ApiError> {
        self.handle()?.send_raw(client_id, payload).await
    }

    /// Send a `request` to a client and wait for its `response` (at most
    /// `request_timeout`). `Ok` carries the response's `data`.
    pub async fn request_client(
        &self,
        client_id: &str,
        endpoint: &str,
        data: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        self.handle()?
            .request_client(client_id, endpoint, data)
            .await
    }

    /// Start a server-to-client stream (`stream_start` to the client).
    pub async fn start_stream(
        &self,
        client_id: &str,
        stream_id: &str,
        stream_type: &str,
    ) -> Result<(), ApiError> {
        {
            let mut streams = self.streams.lock().expect("poisoned");
            if streams.contains_key(stream_id) {
                return Err(ApiError::Invalid(format!(
                    "stream {stream_id} already active"
                )));
            }
            streams.insert(stream_id.to_owned(), (client_id.to_owned(), 1));
        }
        let msg = Obj::typed("stream_start")
            .str("streamId", stream_id)
            .str("streamType", stream_type)
            .finish();
        let r = self.send_raw(client_id, msg).await;
        if r.is_err() {
            self.streams.lock().expect("poisoned").remove(stream_id);
        }
        r
    }

    /// Send one chunk on a server stream; sequence numbers start at 1.
    pub async fn send_stream_data(
        &self,
        stream_id: &str,
        data: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let (client, seq) = {
            let mut streams = self.streams.lock().expect("poisoned");
            let e = streams
                .get_mut(stream_id)
                .ok_or_else(|| ApiError::Invalid(format!("unknown stream {stream_id}")))?;
            e.1 += 1;
            (e.0.clone(), e.1 - 1)
        };
        let msg = Obj::typed("stream_data")
            .str("streamId", stream_id)
            .value("data", data)
            .u64("sequenceNumber", seq)
            .finish();
        self.send_raw(&client, msg).await
    }

    /// End a server stream (`stream_end` to the client).
    pub async fn end_stream(&self, stream_id: &str) -> Result<(), ApiError> {
        let (client, next) = self
            .streams
            .lock()
            .expect("poisoned")
            .remove(stream_id)
            .ok_or_else(|| ApiError::Invalid(format!("unknown stream {stream_id}")))?;
        let msg = Obj::typed("stream_end")
            .str("streamId", stream_id)
            .u64("chunks", next - 1)
            .finish();
        self.send_raw(&client, msg).await
    }

    /// Connection count, limits, uptime, every client, per-shard counts.
    pub async fn get_status(&self) -> Result<Status, ApiError> {
        Ok(self.handle()?.get_status().await)
    }

    /// Call `handler` on a dedicated thread for every event named `event`
    /// (the seed's names: `client-connected`, `data-received`, ...; `"*"` for
    /// all). Handlers never run on a shard.
    pub fn on<F>(&self, event: &str, handler: F)
    where
        F: Fn(&Event) + Send + 'static,
    {
        let rx = self.subscribe_events();
        let name = event.to_owned();
        std::thread::Builder::new()
            .name(format!("wsh-on-{name}"))
            .spawn(move || {
                for ev in rx.iter() {
                    if name == "*" || ev.name() == name {
                        handler(&ev);
                    }
                }
            })
            .expect("spawn event thread");
    }

    /// Stop accepting, close every connection with 1001, wait for them to
    /// close (at most `drain_timeout`), and join the shard threads.
    pub async fn stop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        shared.stopping.store(true, Ordering::Release);
        for s in &self.shards {
            s.mailbox.send(ShardMsg::Stop);
        }
        let threads: Vec<_> = self.shards.drain(..).map(|s| s.thread).collect();
        blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Some((tx, handle)) = self.writer.take() {
            let _ = tx.send(crate::store::WriteMsg::Shutdown);
            blocking(move || {
                let _ = handle.join();
            })
            .await;
        }
        self.store = None;
        info!("wshandler stopped");
        shared.events.emit(|| Event::ServerStopped);
        self.addr = None;
    }

    /// Uptime since `start`.
    pub fn uptime(&self) -> Duration {
        self.shared
            .as_ref()
            .map_or(Duration::ZERO, |s| s.started.elapsed())
    }
}

/// A cheap, cloneable, `Send + Sync` handle to a running server.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    fn running(&self) -> Result<&Arc<Shared>, ApiError> {
        Ok(&self.shared)
    }

    fn owner(&self, client_id: &str) -> Result<(&Arc<Shared>, usize, u64), ApiError> {
        let shared = self.running()?;
        let (shard, key) = route(shared, client_id)
            .ok_or_else(|| ApiError::UnknownClient(client_id.to_owned()))?;
        Ok((shared, shard, key))
    }

    /// Publish `data` on `topic` to every matching subscriber on every
    /// shard, except `exclude_client_id`.
    pub fn publish(
        &self,
        topic: &str,
        data: &serde_json::Value,
        exclude_client_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let shared = self.running()?;
        crate::protocol::topic::validate_publish(topic)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let exclude = exclude_client_id.and_then(|c| route(shared, c));
        let payload = Obj::typed("publish")
            .str("topic", topic)
            .value("data", data)
            .str("from", "server")
            .now()
            .finish();
        let frame = frame::encode(OpCode::Text, false, &payload);
        let topic: Arc<str> = topic.into();
        for (i, m) in shared.mailboxes.iter().enumerate() {
            match exclude {
                Some((shard, key)) if shard == i => m.send(ShardMsg::SendFiltered {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    frame: frame.clone(),
                    exclude: key,
                }),
                _ => m.send(ShardMsg::Publish {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    frame: frame.clone(),
                }),
            }
        }
        Ok(())
    }

    /// Send `data` (JSON) to one client. Fails if it is not connected.
    pub async fn send_to_client(
        &self,
        client_id: &str,
        data: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let payload = Bytes::from(serde_json::to_vec(data).expect("value serialises"));
        self.send_raw(client_id, payload).await
    }

    async fn send_raw(&self, client_id: &str, payload: Bytes) -> Result<(), ApiError> {
        let (shared, shard, key) = self.owner(client_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.mailboxes[shard].send(ShardMsg::SendTo {
            key,
            payload,
            ack: Some(tx),
        });
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(ApiError::UnknownClient(client_id.to_owned())),
        }
    }

    /// Send a `request` to a client and wait for its `response` (at most
    /// `request_timeout`). `Ok` carries the response's `data`.
    pub async fn request_client(
        &self,
        client_id: &str,
        endpoint: &str,
        data: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let (shared, shard, key) = self.owner(client_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.mailboxes[shard].send(ShardMsg::RequestClient {
            key,
            kind: CallKind::Endpoint,
            name: endpoint.to_owned(),
            body: Bytes::from(serde_json::to_vec(data).expect("value serialises")),
            reply: tx,
        });
        match tokio::time::timeout(shared.config.request_timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(msg))) => Err(ApiError::Client(msg)),
            Ok(Err(_)) => Err(ApiError::UnknownClient(client_id.to_owned())),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// The seed's `broadcastToAll(message, clientTypeFilter)`.
    pub fn broadcast_to_all(&self, message: &serde_json::Value, client_type_filter: Option<&str>) {
        let payload = Bytes::from(serde_json::to_vec(message).expect("value serialises"));
        self.broadcast(true, payload, client_type_filter);
    }

    /// Send a message to every open connection (of one client type, if
    /// `filter`). The frame is encoded once and shared; connections with
    /// compression get their own compressed copy.
    pub fn broadcast(&self, text: bool, payload: Bytes, filter: Option<&str>) {
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        let frame = frame::encode(opcode, false, &payload);
        let filter: Option<Arc<str>> = filter.map(Into::into);
        for m in &self.shared.mailboxes {
            m.send(ShardMsg::Broadcast {
                text,
                payload: payload.clone(),
                frame: frame.clone(),
                filter: filter.clone(),
            });
        }
    }

    /// See [`WebSocketHandler::get_status`].
    pub async fn get_status(&self) -> Status {
        collect_status(&self.shared).await
    }
}

impl Drop for WebSocketHandler {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.stopping.store(true, Ordering::Release);
            for s in &self.shards {
                s.mailbox.send(ShardMsg::Stop);
            }
            for s in self.shards.drain(..) {
                let _ = s.thread.join();
            }
            if let Some((tx, handle)) = self.writer.take() {
                let _ = tx.send(crate::store::WriteMsg::Shutdown);
                let _ = handle.join();
            }
        }
    }
}
