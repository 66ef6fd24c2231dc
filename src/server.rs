//! The server as a whole: bootstrap, lifecycle, and the API other threads use.
//!
//! `start()` binds every listener on the calling thread, starts one shard
//! thread per listener and returns once each reports it is listening.
//! `stop()` asks every shard to stop accepting, close its connections with
//! 1001 and drain (bounded by `drain_timeout`), then joins the threads.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use crate::api::{self, CallContext, CallKind, HandlerResult, Registry};
use crate::auth::Authenticator;
use crate::config::Config;
pub use crate::config::ECHO_MIN_PAYLOAD;
use crate::events::Event;
use crate::protocol::stream as stream_msg;
use crate::shard::driver::listen;
pub use crate::shard::driver::listen::BindError;
use crate::shard::mesh::{self, ShardMsg};
use crate::shard::ops::{self, OpError, Target};
use crate::shard::shared::Shared;
use crate::shard::{self, DriverKind, ShardHandle, ShardSpec, StartError};
pub use crate::status::{ClientInfo, ShardStatus, Status};
use crate::store::StoreRuntime;
use crate::tls::TlsReloader;

/// Why the server could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The credentials configuration is unusable (a key file, a pattern).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The listeners could not be bound (port taken, bad host, ...).
    #[error(transparent)]
    Listen(#[from] BindError),
    /// A shard could not start (e.g. io_uring forced but unavailable).
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        /// Shard index.
        shard: usize,
        /// Why.
        source: StartError,
    },
    /// `start()` on a running server.
    #[error("server already started")]
    AlreadyStarted,
    /// The TLS certificate, key or client CA is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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
    /// No live connection of this device.
    #[error("unknown device {0}")]
    UnknownDevice(String),
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        match e {
            OpError::NotRunning => ApiError::NotRunning,
            OpError::UnknownClient(c) => ApiError::UnknownClient(c),
            OpError::UnknownDevice(d) => ApiError::UnknownDevice(d),
            OpError::Timeout => ApiError::Timeout,
            OpError::Client(m) => ApiError::Client(m),
            OpError::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

/// The WebSocket server (the seed's `WebSocketHandler`).
#[derive(Debug)]
pub struct WebSocketHandler {
    config: Config,
    shared: Option<Arc<Shared>>,
    shards: Vec<ShardHandle>,
    addr: Option<SocketAddr>,
    /// Where TLS is served (`addr` itself without `tls_port`).
    tls_addr: Option<SocketAddr>,
    /// Where `admin_listen` listens, if set.
    admin_addr: Option<SocketAddr>,
    /// Stops the certificate watcher (dropping it), and its thread.
    tls_watch: Option<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)>,
    driver: Option<DriverKind>,
    events: Arc<EventHubSlot>,
    registry: Arc<Registry>,
    writer: Option<StoreRuntime>,
    store: Option<crate::store::Store>,
    /// Server-initiated streams: stream id → (client id, next sequence number).
    streams: std::sync::Mutex<HashMap<String, (String, u64)>>,
}

/// Subscribers registered before `start()` carry over to the running server.
#[derive(Debug, Default)]
struct EventHubSlot {
    early: std::sync::Mutex<Vec<crossbeam_channel::Sender<Event>>>,
}

impl WebSocketHandler {
    /// A server for `config` (validated here and again at `start`).
    pub fn new(config: Config) -> Self {
        WebSocketHandler {
            config,
            shared: None,
            shards: Vec::new(),
            addr: None,
            tls_addr: None,
            admin_addr: None,
            tls_watch: None,
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
        let config = self.config.validate()?;
        let auth = Authenticator::new(&config)?;
        let tls = TlsReloader::load(&config)?.map(Arc::new);
        let n = config.shards;
        let listeners = listen::bind_all(&config.host, config.port, n, config.listen_backlog)?;
        let addr = listen::local_addr(&listeners[0], config.port)?;
        // TLS beside plain (`tls_port`), or the main port is TLS only.
        let (mut tls_listeners, tls_addr) = match (&tls, config.tls_port) {
            (Some(_), Some(port)) => {
                let ls = listen::bind_all(&config.host, port, n, config.listen_backlog)?;
                let a = listen::local_addr(&ls[0], port)?;
                (ls.into_iter().map(Some).collect(), Some(a))
            }
            (Some(_), None) => (Vec::new(), Some(addr)),
            (None, _) => (Vec::new(), None),
        };
        tls_listeners.resize_with(n, || None);
        // The HTTP API on its own address, served by shard 0.
        let (mut admin_listener, admin_addr) = match &config.admin_listen {
            Some(a) => {
                let sa: SocketAddr = a.parse().expect("validated");
                let mut ls =
                    listen::bind_all(&sa.ip().to_string(), sa.port(), 1, config.listen_backlog)?;
                let l = ls.pop().expect("one listener");
                let actual = listen::local_addr(&l, sa.port())?;
                (Some(l), Some(actual))
            }
            None => (None, None),
        };
        let listener_tls = tls.is_some() && config.tls_port.is_none();
        let (mailboxes, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| mesh::mailbox()).unzip();
        let field_key = self.load_field_key()?;
        // Echo mode is the conformance mode: it never stores anything.
        let writer = if config.persist && !config.echo {
            Some(self.open_store(&config, mesh::store_sink(mailboxes.clone()))?)
        } else {
            None
        };
        self.store = writer.as_ref().map(|w| w.handle().store().clone());
        let store = writer.as_ref().map(|w| w.handle().clone());
        self.writer = writer;
        let watch_every = config.tls_watch_interval;
        let mut shared = Shared::new(
            config,
            auth,
            mailboxes,
            store,
            field_key,
            self.registry.clone(),
        );
        shared.tls = tls.clone();
        let shared = Arc::new(shared);
        for tx in self.events.early.lock().expect("poisoned").drain(..) {
            shared.events.add(tx);
        }
        if shared.config.enable_authentication
            && !crate::auth::watched_files(&shared.config).is_empty()
        {
            spawn_auth_watch(&shared);
        }
        let cores = if self.config.pin_shards {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut shards = Vec::with_capacity(n);
        let mut failure = None;
        let all = listeners.into_iter().zip(tls_listeners).zip(inboxes);
        for (id, ((listener, tls_listener), inbox)) in all.enumerate() {
            let spec = ShardSpec {
                id,
                listener,
                listener_tls,
                tls_listener,
                admin_listener: admin_listener.take(),
                shared: shared.clone(),
                driver: self.config.io_driver,
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            };
            match shard::spawn(spec, inbox, ready_tx.clone()) {
                Ok(h) => shards.push(h),
                Err(source) => {
                    failure = Some(ServerError::Shard { shard: id, source });
                    break;
                }
            }
        }
        drop(ready_tx);
        let mut driver = None;
        for id in 0..shards.len() {
            match ready_rx.recv() {
                Ok(Ok(kind)) => driver = Some(kind),
                Ok(Err(source)) => failure = Some(ServerError::Shard { shard: id, source }),
                Err(_) => {
                    failure = Some(ServerError::Shard {
                        shard: id,
                        source: StartError::Exited,
                    })
                }
            }
        }
        self.shards = shards;
        self.shared = Some(shared.clone());
        if let Some(e) = failure {
            self.stop().await;
            return Err(e);
        }
        self.addr = Some(addr);
        self.tls_addr = tls_addr;
        self.admin_addr = admin_addr;
        self.driver = driver;
        if let Some(tls) = tls.filter(|_| !watch_every.is_zero()) {
            self.tls_watch = Some(spawn_tls_watch(tls, watch_every));
        }
        info!(%addr, tls = ?tls_addr, shards = n, driver = %driver.map(|d| d.to_string()).unwrap_or_default(), "wshandler listening");
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

    fn open_store(
        &self,
        c: &crate::config::Checked,
        sink: crate::store::CompletionSink,
    ) -> Result<StoreRuntime, ServerError> {
        let cfg = crate::store::StoreConfig {
            dir: c.data_dir.clone(),
            tables: c.tables().iter().map(|t| t.to_string()).collect(),
            durability: c.durability,
            batch_max: c.store_batch_max,
            batch_bytes: c.store_batch_bytes,
            queue: c.store_queue,
            dedup_window: c.dedup_window,
            retention: c.retention().to_vec(),
            write_buffer_size: c.store_write_buffer_size,
        };
        crate::store::start(cfg, c.shards, sink).map_err(|source| ServerError::Store {
            dir: c.data_dir.clone(),
            source,
        })
    }

    /// The store (persistence on, after `start`): `Store::scan` reads records back.
    pub fn store(&self) -> Option<&crate::store::Store> {
        self.store.as_ref()
    }

    /// The address the server listens on (after `start`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The address `wss://` is served on (after `start`, TLS configured):
    /// the `tls_port` listener, or [`local_addr`](Self::local_addr) itself
    /// when that port is TLS only.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The address of the HTTP API listener (`admin_listen`), once started.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Read the TLS certificate, key and client CA files again (what SIGHUP
    /// does): new connections get the new ones, open connections keep
    /// theirs. On error the previous certificate stays in use. `Ok(false)`:
    /// nothing to reload (TLS not configured, or the server not running).
    pub fn reload_tls(&self) -> Result<bool, crate::tls::TlsError> {
        match self.shared.as_ref().and_then(|s| s.tls.as_ref()) {
            Some(t) => t.reload().map(|()| true),
            None => Ok(false),
        }
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
            let _ = h.broadcast(text, payload, None);
        }
    }

    /// The seed's `broadcastToAll(message, clientTypeFilter)`: send `message`
    /// (JSON) to every client, or only to clients of one type.
    pub fn broadcast_to_all(&self, message: &serde_json::Value, client_type_filter: Option<&str>) {
        if let Ok(h) = self.handle() {
            let _ = h.broadcast_to_all(message, client_type_filter);
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

    /// Send `data` (JSON) to every live connection of a device (its
    /// authenticated `deviceId`), on any shard; how many it reached.
    pub async fn send_to_device(
        &self,
        device_id: &str,
        data: &serde_json::Value,
    ) -> Result<usize, ApiError> {
        self.handle()?.send_to_device(device_id, data).await
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
        let msg = stream_msg::start_message(stream_id, stream_type);
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
        let msg = stream_msg::data_message(stream_id, data, seq);
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
        let msg = stream_msg::end_message(stream_id, next - 1);
        self.send_raw(&client, msg).await
    }

    /// Connection count, limits, uptime, every client, per-shard counts.
    pub async fn get_status(&self) -> Result<Status, ApiError> {
        self.handle()?.get_status().await
    }

    /// See [`Handle::disconnect_client`].
    pub async fn disconnect_client(
        &self,
        client_id: &str,
        code: u16,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.handle()?
            .disconnect_client(client_id, code, reason)
            .await
    }

    /// See [`Handle::metrics_text`].
    pub async fn metrics_text(&self) -> Result<String, ApiError> {
        self.handle()?.metrics_text().await
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
    /// close (at most `drain_timeout`), and join the shard threads, then
    /// the store writer (which commits what is queued first).
    pub async fn stop(&mut self) {
        if let Some((shared, join)) = self.begin_stop() {
            blocking(join).await;
            stopped(&shared);
        }
    }

    /// The one shutdown path (`stop` and `Drop`): mark the server stopping
    /// (every [`Handle`] fails from now on), tell every shard, and hand back
    /// the blocking part: join the shards, then the writer.
    fn begin_stop(&mut self) -> Option<(Arc<Shared>, impl FnOnce() + Send + 'static)> {
        let shared = self.shared.take()?;
        shared.stopping.store(true, Ordering::Release);
        for s in &self.shards {
            s.mailbox.send(ShardMsg::Stop);
        }
        let shards = std::mem::take(&mut self.shards);
        let writer = self.writer.take();
        self.store = None;
        self.addr = None;
        self.tls_addr = None;
        // Dropping the sender ends the watcher at once.
        let watcher = self.tls_watch.take().map(|(_, thread)| thread);
        let join = move || {
            if let Some(w) = watcher {
                let _ = w.join();
            }
            for s in shards {
                let _ = s.thread.join();
            }
            if let Some(w) = writer {
                w.shutdown();
            }
        };
        Some((shared, join))
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

/// Watch the credential files (`auth::watched_files`) every
/// `auth_watch_interval` and rebuild the authenticator when one changes. A
/// file that no longer loads keeps the previous keys (logged). Ends with
/// the server.
fn spawn_auth_watch(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let interval = shared.config.auth_watch_interval;
    let stamp = |cfg: &Config| -> Vec<Option<(std::time::SystemTime, u64)>> {
        crate::auth::watched_files(cfg)
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    };
    let first = stamp(&shared.config);
    let spawned = std::thread::Builder::new()
        .name("wsh-auth-watch".into())
        .spawn(move || {
            let mut seen = first;
            loop {
                std::thread::sleep(interval);
                let Some(shared) = weak.upgrade() else { return };
                if shared.stopping.load(Ordering::Acquire) {
                    return;
                }
                let cfg = shared.auth_source.lock().expect("not poisoned").clone();
                let now = stamp(&cfg);
                if now == seen {
                    continue;
                }
                seen = now;
                match Authenticator::new(&cfg) {
                    Ok(a) => {
                        shared.auth.store(Arc::new(a));
                        tracing::info!("credential files changed: keys reloaded");
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "credential files changed but do not load; keeping the previous keys"
                    ),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the credential file watcher");
    }
}

impl Handle {
    /// Re-read credentials (static tokens, `[jwt]` keys) from `cfg`, e.g.
    /// the config file loaded again on SIGHUP. Connections stay up and keep
    /// what they authenticated with; new `auth`/`refresh` use the new set.
    /// Only the credential settings of `cfg` take effect. On error nothing
    /// changes.
    pub fn reload_auth(&self, cfg: &Config) -> Result<(), ServerError> {
        let shared = &self.shared;
        let checked = cfg.validate()?;
        let auth = Authenticator::new(&checked)?;
        *shared.auth_source.lock().expect("not poisoned") = cfg.clone();
        shared.auth.store(Arc::new(auth));
        Ok(())
    }

    /// See [`WebSocketHandler::reload_tls`] (what SIGHUP does for TLS).
    pub fn reload_tls(&self) -> Result<bool, crate::tls::TlsError> {
        match &self.shared.tls {
            Some(t) if !self.shared.stopping.load(Ordering::Acquire) => t.reload().map(|()| true),
            _ => Ok(false),
        }
    }

    /// Send `data` (JSON) to every live connection of `device_id`, on any
    /// shard. Returns how many connections it was queued on.
    pub async fn send_to_device(
        &self,
        device_id: &str,
        data: &serde_json::Value,
    ) -> Result<usize, ApiError> {
        let payload = Bytes::from(serde_json::to_vec(data).expect("value serialises"));
        Ok(ops::send(&self.shared, Target::Device(device_id), payload).await?)
    }

    /// Close client `client_id` with `code` (1000 or 4000–4999) and
    /// `reason` (at most 123 bytes).
    pub async fn disconnect_client(
        &self,
        client_id: &str,
        code: u16,
        reason: &str,
    ) -> Result<(), ApiError> {
        ops::disconnect(&self.shared, Target::Client(client_id), code, reason).await?;
        Ok(())
    }

    /// The server, unless `stop()` was called (or it was dropped).
    fn running(&self) -> Result<&Arc<Shared>, ApiError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(ApiError::NotRunning);
        }
        Ok(&self.shared)
    }

    /// Publish `data` on `topic` to every matching subscriber on every
    /// shard, except `exclude_client_id`.
    pub fn publish(
        &self,
        topic: &str,
        data: &serde_json::Value,
        exclude_client_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let data = serde_json::to_vec(data).expect("value serialises");
        Ok(ops::publish(&self.shared, topic, &data, exclude_client_id)?)
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
        ops::send(&self.shared, Target::Client(client_id), payload).await?;
        Ok(())
    }

    /// Send a `request` to a client and wait for its `response` (at most
    /// `request_timeout`). `Ok` carries the response's `data`.
    pub async fn request_client(
        &self,
        client_id: &str,
        endpoint: &str,
        data: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let body = Bytes::from(serde_json::to_vec(data).expect("value serialises"));
        Ok(ops::request(&self.shared, Target::Client(client_id), endpoint, body).await?)
    }

    /// The seed's `broadcastToAll(message, clientTypeFilter)`.
    pub fn broadcast_to_all(
        &self,
        message: &serde_json::Value,
        client_type_filter: Option<&str>,
    ) -> Result<(), ApiError> {
        let payload = Bytes::from(serde_json::to_vec(message).expect("value serialises"));
        self.broadcast(true, payload, client_type_filter)
    }

    /// Send a message to every open connection (of one client type, if
    /// `filter`). The frame is encoded once and shared; connections with
    /// compression get their own compressed copy.
    pub fn broadcast(
        &self,
        text: bool,
        payload: Bytes,
        filter: Option<&str>,
    ) -> Result<(), ApiError> {
        Ok(ops::broadcast(&self.shared, text, payload, filter)?)
    }

    /// See [`WebSocketHandler::get_status`].
    pub async fn get_status(&self) -> Result<Status, ApiError> {
        Ok(self.running()?.collect_status().await)
    }

    /// The metrics in the Prometheus text format: what `GET /metrics`
    /// serves (content type [`crate::metrics::encode::CONTENT_TYPE`]), for
    /// an embedder that exposes them its own way.
    pub async fn metrics_text(&self) -> Result<String, ApiError> {
        Ok(crate::shard::scrape::metrics_text(self.running()?).await)
    }

    /// The dashboard's live numbers (totals since start and levels now).
    pub async fn overview(&self) -> Result<crate::metrics::Overview, ApiError> {
        Ok(crate::shard::scrape::overview(self.running()?).await)
    }
}

impl Drop for WebSocketHandler {
    fn drop(&mut self) {
        if let Some((shared, join)) = self.begin_stop() {
            join();
            stopped(&shared);
        }
    }
}

/// Check the TLS files every `every` and reload them when they change
/// (`tls_watch_interval`); a bad new file is logged and the old certificate
/// kept. Ends when the returned sender is dropped.
fn spawn_tls_watch(
    tls: Arc<TlsReloader>,
    every: Duration,
) -> (crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("wsh-tls-watch".into())
        .spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                match tls.reload_if_changed() {
                    Some(Ok(())) => info!("TLS files changed: certificate reloaded"),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                    }
                    None => {}
                }
            }
        })
        .expect("spawn the TLS watcher thread");
    (tx, thread)
}

fn stopped(shared: &Shared) {
    info!("wshandler stopped");
    shared.events.emit(|| Event::ServerStopped);
}
