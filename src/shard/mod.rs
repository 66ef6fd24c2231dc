//! Shards: one OS thread per core, each with its own runtime, its own
//! SO_REUSEPORT listener and the connections it accepted.
//!
//! A shard never shares a connection. Other threads reach it only through
//! its mailbox, a lock-free crossbeam channel paired with an `AtomicWaker`
//! that wakes the shard's mailbox task; everything inside the shard is
//! single-threaded (`Rc`, `RefCell`, `Cell`).

pub(crate) mod conn;
pub(crate) mod driver;
pub(crate) mod listen;
pub(crate) mod notify;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
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
use crate::config::IoDriver;
use crate::server::Shared;
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
    /// Send a message to every open connection; `frame` is encoded once.
    Broadcast {
        text: bool,
        payload: Bytes,
        frame: Bytes,
    },
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

struct Inbox {
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
fn mailbox() -> (Mailbox, Inbox) {
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
}

impl ShardCtx {
    pub(crate) fn next_key(&self) -> u64 {
        let k = self.next_key.get();
        self.next_key.set(k + 1);
        k
    }

    /// Unique across shards (shard id) and restarts (the instance tag).
    pub(crate) fn client_id(&self, key: u64) -> String {
        format!("{}-{}-{}", self.shared.instance, self.id, key)
    }

    pub(crate) fn insert(&self, c: Rc<Conn>) {
        self.conns.borrow_mut().insert(c.key, c);
    }

    pub(crate) fn remove(&self, key: u64) {
        self.conns.borrow_mut().remove(&key);
        self.conn_gone.notify();
    }

    /// A complete message arrived on `conn`.
    pub(crate) fn on_message(&self, conn: &Rc<Conn>, msg: Message) {
        match msg {
            Message::Text(b) if self.shared.config.echo => conn.send_reply(true, b),
            Message::Binary(b) if self.shared.config.echo => conn.send_reply(false, b),
            Message::Text(_) | Message::Binary(_) => {
                // The JSON protocol (issue #3) plugs in here; until then the
                // server only speaks the echo conformance mode.
                conn.close_with(
                    close::UNSUPPORTED,
                    "protocol mode not available: run with --echo",
                );
            }
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
            } => {
                for c in self.snapshot() {
                    c.push_external(self, text, &payload, &frame);
                }
            }
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
    ready: std::sync::mpsc::Sender<Result<DriverKind, String>>,
) -> std::io::Result<ShardHandle> {
    let (mailbox, inbox) = mailbox();
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
    let ctx = Rc::new(ShardCtx {
        id,
        shared,
        conns: RefCell::new(HashMap::new()),
        next_key: Cell::new(0),
        tick: Cell::new(0),
        stopping: Cell::new(false),
        stop: tokio::sync::Notify::new(),
        conn_gone: LocalNotify::default(),
    });
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
