//! Shards: one OS thread per core, each with its own runtime, its own
//! SO_REUSEPORT listener and the connections it accepted.
//!
//! A shard never shares a connection. Other threads reach it only through
//! its mailbox, a lock-free crossbeam channel paired with an `AtomicWaker`
//! that wakes the shard's mailbox task; everything inside the shard is
//! single-threaded (`Rc`, `RefCell`, `Cell`).

pub(crate) mod client;
pub(crate) mod conn;
pub(crate) mod dispatch;
pub(crate) mod driver;
pub(crate) mod harness;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod seclog;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tracing::{debug, info, warn};

use self::conn::Conn;
use self::driver::Listener;
use self::notify::LocalNotify;
use crate::api::CallKind;
use crate::config::IoDriver;
use crate::protocol::topic::SubTrie;
use crate::server::{ShardStatus, Shared};
use crate::ws::{close, Message};

/// Which I/O driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring (tokio-uring).
    Uring,
    /// epoll (tokio).
    Epoll,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::Uring => "io_uring",
            DriverKind::Epoll => "epoll",
        })
    }
}

/// A message to a shard from another thread.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// Stop accepting, close every connection with 1001, drain, exit.
    Stop,
    /// Send a message to every open connection (of one client type, if
    /// `filter`); `frame` is encoded once.
    Broadcast {
        text: bool,
        payload: Bytes,
        frame: Bytes,
        filter: Option<Arc<str>>,
    },
    /// A publish from the API that must skip one local client.
    SendFiltered {
        topic: Arc<str>,
        payload: Bytes,
        frame: Bytes,
        exclude: u64,
    },
    /// Deliver a publish to this shard's matching subscribers.
    Publish {
        topic: Arc<str>,
        payload: Bytes,
        frame: Bytes,
    },
    /// Send one text message to one connection; `ack` learns if it existed.
    SendTo {
        key: u64,
        payload: Bytes,
        ack: Option<tokio::sync::oneshot::Sender<bool>>,
    },
    /// A routed call for the registrant `key` on this shard.
    Forward {
        key: u64,
        kind: CallKind,
        name: String,
        body: Bytes,
        reply_shard: usize,
        call_id: u64,
    },
    /// The result of a routed call made from this shard.
    CallResult(CallResult),
    /// A request from the API to client `key`.
    RequestClient {
        key: u64,
        kind: CallKind,
        name: String,
        body: Bytes,
        reply: tokio::sync::oneshot::Sender<crate::api::HandlerResult>,
    },
    /// Report this shard's connections.
    Status(tokio::sync::oneshot::Sender<ShardStatus>),
    /// The store writer finished records sent from this shard.
    StoreDone(Vec<crate::store::Completion>),
}

/// A record handed to the store writer, waiting for its insertId.
#[derive(Debug)]
pub(crate) struct PendingStore {
    pub(crate) key: u64,
    pub(crate) table: Arc<str>,
    pub(crate) timestamp: Rc<str>,
}

/// The answer to a routed call.
#[derive(Debug)]
pub(crate) struct CallResult {
    pub(crate) call_id: u64,
    pub(crate) ok: bool,
    /// Raw JSON: the data on success, the error string otherwise.
    pub(crate) body: Bytes,
}

/// A local caller waiting for a routed call's result.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) key: u64,
    pub(crate) request_id: String,
    pub(crate) reply_ty: &'static str,
    /// Counts against the caller's `max_pending_requests` while it waits.
    pub(crate) _pending: dispatch::PendingGuard,
}

/// Where the answer to a server-issued request goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// Back to the caller's shard.
    Remote { shard: usize, call_id: u64 },
    /// To an API caller.
    Api(tokio::sync::oneshot::Sender<crate::api::HandlerResult>),
}

/// A server-issued request awaiting a local client's answer.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) key: u64,
    pub(crate) target: Target,
    /// Counts against the client's `max_pending_requests` while it waits.
    pub(crate) _pending: dispatch::PendingGuard,
}

/// The sending side of a shard's mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    tx: Sender<ShardMsg>,
    waker: Arc<AtomicWaker>,
}

impl Mailbox {
    pub(crate) fn send(&self, msg: ShardMsg) {
        if self.tx.send(msg).is_ok() {
            self.waker.wake();
        }
    }
}

/// The receiving side of a shard's mailbox.
pub(crate) struct Inbox {
    rx: Receiver<ShardMsg>,
    waker: Arc<AtomicWaker>,
}

impl Inbox {
    async fn recv(&self) -> Option<ShardMsg> {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.rx.try_recv() {
                Ok(m) => Poll::Ready(Some(m)),
                Err(TryRecvError::Empty) => Poll::Pending,
                Err(TryRecvError::Disconnected) => Poll::Ready(None),
            }
        })
        .await
    }
}

/// A new mailbox pair.
pub(crate) fn mailbox() -> (Mailbox, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    (
        Mailbox {
            tx,
            waker: waker.clone(),
        },
        Inbox { rx, waker },
    )
}

/// What a shard's thread knows: its id, the server-wide state, its connections.
pub(crate) struct ShardCtx {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_key: Cell<u64>,
    /// Heartbeat tick counter (a coarse clock: no syscall per read).
    pub(crate) tick: Cell<u32>,
    stopping: Cell<bool>,
    stop: tokio::sync::Notify,
    conn_gone: LocalNotify,
    me: Weak<ShardCtx>,
    /// This shard's subscriptions.
    pub(crate) subs: RefCell<SubTrie>,
    /// Reused buffers: top-level members of the message being handled,
    /// topic matches.
    pub(crate) members: RefCell<Vec<crate::protocol::scan::Member>>,
    pub(crate) match_buf: RefCell<Vec<u64>>,
    /// Security events, rate-limited.
    pub(crate) seclog: seclog::SecLog,
    /// Secret key that makes server-issued request ids unguessable.
    pub(crate) id_key: std::hash::RandomState,
    /// Calls made by local clients, waiting for a result from a service.
    pub(crate) calls: RefCell<HashMap<u64, Waiting>>,
    /// Requests sent to local clients, waiting for their answer.
    pub(crate) served: RefCell<HashMap<String, Served>>,
    next_call: Cell<u64>,
    /// Tables a record may go to: `db_table_name` first, then
    /// `allowed_tables` (shared names: no allocation per record).
    pub(crate) tables: Vec<Arc<str>>,
    /// Records sent to the writer, by ticket.
    pub(crate) pending_store: RefCell<HashMap<u64, PendingStore>>,
    /// Records the writer's full queue did not take yet.
    pub(crate) store_backlog: RefCell<std::collections::VecDeque<crate::store::WriteTask>>,
    /// Set while `store_backlog` is non-empty: readers pause.
    pub(crate) store_blocked: Cell<bool>,
    pub(crate) store_ready: tokio::sync::Notify,
}

impl ShardCtx {
    /// A shard's state, before it runs: no sockets, no tasks. `run` drives
    /// it; a test or fuzz harness can drive its handlers directly.
    pub(crate) fn new(id: usize, shared: Arc<Shared>) -> Rc<ShardCtx> {
        let tables = std::iter::once(&shared.config.db_table_name)
            .chain(&shared.config.allowed_tables)
            .map(|t| Arc::from(t.as_str()))
            .collect();
        Rc::new_cyclic(|me| ShardCtx {
            id,
            shared,
            conns: RefCell::new(HashMap::new()),
            next_key: Cell::new(0),
            tick: Cell::new(0),
            stopping: Cell::new(false),
            stop: tokio::sync::Notify::new(),
            conn_gone: LocalNotify::default(),
            me: me.clone(),
            subs: RefCell::new(SubTrie::default()),
            members: RefCell::new(Vec::new()),
            match_buf: RefCell::new(Vec::new()),
            seclog: seclog::SecLog::default(),
            id_key: std::hash::RandomState::new(),
            calls: RefCell::new(HashMap::new()),
            served: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
            tables,
            pending_store: RefCell::new(HashMap::new()),
            store_backlog: RefCell::new(std::collections::VecDeque::new()),
            store_blocked: Cell::new(false),
            store_ready: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn next_key(&self) -> u64 {
        let k = self.next_key.get();
        self.next_key.set(k + 1);
        k
    }

    /// Unique across shards (shard id) and restarts (the instance tag).
    pub(crate) fn client_id(&self, key: u64) -> String {
        format!("{}-{}-{}", self.shared.instance, self.id, key)
    }

    pub(crate) fn self_rc(&self) -> Rc<ShardCtx> {
        self.me.upgrade().expect("shard context outlives its tasks")
    }

    pub(crate) fn next_call_id(&self) -> u64 {
        let n = self.next_call.get();
        self.next_call.set(n + 1);
        n
    }

    pub(crate) fn conn(&self, key: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&key).cloned()
    }

    /// Send to a shard's mailbox (our own included: handled on a later turn).
    pub(crate) fn send_to_shard(&self, shard: usize, msg: ShardMsg) {
        if let Some(m) = self.shared.mailboxes.get(shard) {
            m.send(msg);
        }
    }

    pub(crate) fn insert(&self, c: Rc<Conn>) {
        self.conns.borrow_mut().insert(c.key, c);
    }

    pub(crate) fn remove(&self, key: u64) {
        let gone = self.conns.borrow_mut().remove(&key);
        if let Some(c) = gone {
            self.cleanup(&c);
        }
        self.conn_gone.notify();
    }

    fn status(&self) -> ShardStatus {
        let clients = self
            .snapshot()
            .iter()
            .map(|c| {
                let st = c.client.borrow();
                crate::server::ClientInfo {
                    id: c.client_id.clone(),
                    client_type: st.client_type.clone(),
                    device_id: st.device_id.clone(),
                    remote_address: c.peer.to_string(),
                    connected_since: humantime::format_rfc3339_millis(c.connected_wall).to_string(),
                    authenticated: st.authenticated,
                    subscriptions: {
                        let mut s: Vec<String> = st.subs.iter().map(|s| s.to_string()).collect();
                        s.sort();
                        s
                    },
                    messages_in: c.msgs_in.get(),
                    messages_out: c.msgs_out.get(),
                }
            })
            .collect();
        ShardStatus {
            shard: self.id,
            clients,
        }
    }

    /// A complete message arrived on `conn`.
    pub(crate) fn on_message(&self, conn: &Rc<Conn>, msg: Message) {
        match msg {
            Message::Text(b) if self.shared.config.echo => conn.send_reply(true, b),
            Message::Binary(b) if self.shared.config.echo => conn.send_reply(false, b),
            Message::Text(b) => self.on_text(conn, b),
            Message::Binary(b) => self.on_binary(conn, b),
            Message::Close(_) => {}
        }
    }

    fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Stop => {
                self.stopping.set(true);
                self.stop.notify_waiters();
            }
            ShardMsg::Broadcast {
                text,
                payload,
                frame,
                filter,
            } => {
                for c in self.snapshot() {
                    let wanted = filter
                        .as_deref()
                        .is_none_or(|f| c.client.borrow().client_type.as_deref() == Some(f));
                    if wanted {
                        c.push_external(self, text, &payload, &frame);
                    }
                }
            }
            ShardMsg::Publish {
                topic,
                payload,
                frame,
            } => self.deliver(&topic, &payload, &frame, None),
            ShardMsg::SendFiltered {
                topic,
                payload,
                frame,
                exclude,
            } => self.deliver(&topic, &payload, &frame, Some(exclude)),
            ShardMsg::SendTo { key, payload, ack } => {
                let found = match self.conn(key) {
                    Some(c) => {
                        let frame = crate::ws::frame::encode(
                            crate::ws::frame::OpCode::Text,
                            false,
                            &payload,
                        );
                        c.push_external(self, true, &payload, &frame)
                    }
                    None => false,
                };
                if let Some(a) = ack {
                    let _ = a.send(found);
                }
            }
            ShardMsg::Forward {
                key,
                kind,
                name,
                body,
                reply_shard,
                call_id,
            } => self.on_forward(key, kind, name, body, reply_shard, call_id),
            ShardMsg::CallResult(r) => self.on_call_result(r),
            ShardMsg::RequestClient {
                key,
                kind,
                name,
                body,
                reply,
            } => match self.conn(key) {
                Some(c) => {
                    // Failures (busy, slow consumer) are reported to `reply`.
                    let _ = self.issue_request(&c, kind, &name, &body, Target::Api(reply));
                }
                None => {
                    let _ = reply.send(Err("Client not connected".into()));
                }
            },
            ShardMsg::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ShardMsg::StoreDone(done) => self.on_store_done(done),
        }
    }
}

static URING_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Everything a shard thread needs to start.
pub(crate) struct ShardSpec {
    pub(crate) id: usize,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) shared: Arc<Shared>,
    pub(crate) driver: IoDriver,
    pub(crate) core: Option<core_affinity::CoreId>,
}

/// A running shard, seen from the server.
#[derive(Debug)]
pub(crate) struct ShardHandle {
    pub(crate) mailbox: Mailbox,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

/// Start a shard thread. `ready` gets the driver it runs on, or why it could not start.
pub(crate) fn spawn(
    spec: ShardSpec,
    inbox: Inbox,
    ready: std::sync::mpsc::Sender<Result<DriverKind, String>>,
) -> std::io::Result<ShardHandle> {
    let mailbox = spec.shared.mailboxes[spec.id].clone();
    let thread = std::thread::Builder::new()
        .name(format!("wsh-shard-{}", spec.id))
        .spawn(move || shard_main(spec, inbox, ready))?;
    Ok(ShardHandle { mailbox, thread })
}

fn shard_main(
    spec: ShardSpec,
    inbox: Inbox,
    ready: std::sync::mpsc::Sender<Result<DriverKind, String>>,
) {
    if let Some(core) = spec.core {
        if !core_affinity::set_for_current(core) {
            warn!(
                shard = spec.id,
                core = core.id,
                "could not pin shard thread"
            );
        }
    }
    let use_uring = match spec.driver {
        IoDriver::Epoll => false,
        IoDriver::Uring | IoDriver::Auto => true,
    };
    if use_uring {
        match driver::uring::runtime() {
            Ok(rt) => {
                rt.block_on(async move {
                    let listener = driver::uring::UringListener::from_std(spec.listener);
                    run(
                        spec.id,
                        spec.shared,
                        listener,
                        inbox,
                        ready,
                        DriverKind::Uring,
                    )
                    .await
                });
                return;
            }
            Err(e) if spec.driver == IoDriver::Uring => {
                let _ = ready.send(Err(format!(
                    "io_driver = \"uring\" but io_uring could not be set up: {e} \
                     (check kernel.io_uring_disabled, seccomp, RLIMIT_MEMLOCK; or use io_driver = \"epoll\")"
                )));
                return;
            }
            Err(e) => {
                if !URING_FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                    warn!(error = %e, "io_uring unavailable, falling back to the epoll driver");
                }
            }
        }
    }
    let rt = match driver::epoll::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("could not start the epoll runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        match driver::epoll::EpollListener::from_std(spec.listener) {
            Ok(l) => run(spec.id, spec.shared, l, inbox, ready, DriverKind::Epoll).await,
            Err(e) => {
                let _ = ready.send(Err(format!("could not register the listener: {e}")));
            }
        }
    });
}

async fn run<L: Listener>(
    id: usize,
    shared: Arc<Shared>,
    listener: L,
    inbox: Inbox,
    ready: std::sync::mpsc::Sender<Result<DriverKind, String>>,
    kind: DriverKind,
) {
    let ctx = ShardCtx::new(id, shared);
    let mailbox_task = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            while let Some(m) = inbox.recv().await {
                ctx.handle(m);
            }
        })
    };
    let heartbeat_task = ctx
        .shared
        .config
        .enable_heartbeat
        .then(|| tokio::task::spawn_local(heartbeat(ctx.clone())));
    let _ = ready.send(Ok(kind));
    debug!(shard = id, driver = %kind, "listening");

    let stopped = ctx.stop.notified();
    tokio::pin!(stopped);
    loop {
        if ctx.stopping.get() {
            break;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(conn::serve(stream, peer, ctx.clone()));
                }
                Err(e) => {
                    // EMFILE/ENFILE: back off briefly instead of spinning.
                    warn!(shard = id, error = %e, "accept failed");
                    ctx.shared.events.emit(|| crate::events::Event::ServerError {
                        message: format!("shard {id}: accept failed: {e}"),
                    });
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            _ = &mut stopped => break,
        }
    }
    drop(listener);

    // Graceful drain: 1001 to everyone, then wait for the close handshakes.
    let open = ctx.snapshot();
    info!(shard = id, connections = open.len(), "stopping");
    for c in &open {
        c.close_with(close::GOING_AWAY, "server shutting down");
    }
    drop(open);
    let drain = async {
        while !ctx.conns.borrow().is_empty() {
            ctx.conn_gone.wait().await;
        }
    };
    if tokio::time::timeout(ctx.shared.config.drain_timeout, drain)
        .await
        .is_err()
    {
        let left = ctx.snapshot();
        warn!(
            shard = id,
            connections = left.len(),
            "drain timeout: dropping connections"
        );
        for c in left {
            c.abort();
        }
        // Give the aborted tasks one turn to release their slots.
        tokio::task::yield_now().await;
    }
    mailbox_task.abort();
    if let Some(h) = heartbeat_task {
        h.abort();
    }
}

/// Ping every connection each interval; close those silent for two.
async fn heartbeat(ctx: Rc<ShardCtx>) {
    let every = ctx.shared.config.heartbeat_interval;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        interval.tick().await;
        let now = ctx.tick.get().wrapping_add(1);
        ctx.tick.set(now);
        ctx.seclog.sweep(ctx.id);
        for c in ctx.snapshot() {
            // last_seen is the tick during which bytes last arrived; three
            // ticks later at least two full intervals have passed.
            if now.wrapping_sub(c.last_seen.get()) >= 3 {
                c.close_with(close::POLICY, "heartbeat timeout");
            } else {
                c.ping();
            }
        }
    }
}
