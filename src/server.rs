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

use bytes::Bytes;
use tracing::info;

use crate::config::Config;
use crate::events::{Event, EventHub};
use crate::shard::{self, DriverKind, ShardHandle, ShardMsg, ShardSpec};
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
        let shared = Arc::new(Shared {
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
        for (id, listener) in listeners.into_iter().enumerate() {
            let spec = ShardSpec {
                id,
                listener,
                shared: shared.clone(),
                driver: self.config.io_driver,
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            };
            let h = shard::spawn(spec, ready_tx.clone()).map_err(|e| ServerError::Shard {
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
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        let frame = frame::encode(opcode, false, &payload);
        for s in &self.shards {
            s.mailbox.send(ShardMsg::Broadcast {
                text,
                payload: payload.clone(),
                frame: frame.clone(),
            });
        }
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
        let join = move || {
            for t in threads {
                let _ = t.join();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                let _ = tokio::task::spawn_blocking(join).await;
            }
            Err(_) => join(),
        }
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
        }
    }
}
