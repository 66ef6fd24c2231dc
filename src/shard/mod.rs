//! Shards: one OS thread per core, each with its own runtime, its own
//! SO_REUSEPORT listener and the connections it accepted.
//!
//! A shard never shares a connection. Other threads reach it only through
//! its mailbox ([`mesh`]); everything inside the shard is single-threaded
//! (`Rc`, `RefCell`, `Cell`).
//!
//! Inside, bottom to top (each file imports only from those before it):
//! `notify`, `seclog`, `driver` (sockets: the `Stream` trait, io_uring,
//! epoll, listeners) → `mesh` (messages, mailboxes, fan-out), `admission`
//! (the per-address `[limits]` state), `shared` (the registry every shard
//! shares) → `client` (one connection's queue and
//! protocol state) → `ctx` (one shard's state) → `handlers` (the protocol,
//! by message family) → `conn` (the transport over a driver's `Stream`:
//! calls the handlers) → `harness` (the handlers without a transport) →
//! this file (thread, run loop, heartbeat).

pub(crate) mod admission;
pub(crate) mod client;
pub(crate) mod conn;
pub(crate) mod connlog;
pub(crate) mod ctx;
pub(crate) mod driver;
pub(crate) mod handlers;
pub(crate) mod harness;
pub(crate) mod http;
pub(crate) mod mesh;
pub(crate) mod notify;
pub(crate) mod ops;
#[cfg(test)]
mod protocol_tests;
pub(crate) mod scrape;
pub(crate) mod seclog;
pub(crate) mod shared;
pub(crate) mod tap;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::{debug, info, warn};

use self::ctx::ShardCtx;
use self::driver::Listener;
use self::mesh::{Inbox, Mailbox};
use self::shared::Shared;
use crate::config::IoDriver;
use crate::ws::close;

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

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `io_driver = "uring"` was asked for and io_uring could not be set up.
    #[error(
        "io_driver = \"uring\" but io_uring could not be set up: {0} \
         (check kernel.io_uring_disabled, seccomp, RLIMIT_MEMLOCK; or use io_driver = \"epoll\")"
    )]
    Uring(std::io::Error),
    /// The epoll runtime could not be built.
    #[error("could not start the epoll runtime: {0}")]
    Epoll(std::io::Error),
    /// The listener could not be registered with the runtime.
    #[error("could not register the listener: {0}")]
    Register(std::io::Error),
    /// The shard thread could not be spawned.
    #[error("could not spawn the shard thread: {0}")]
    Spawn(std::io::Error),
    /// The shard thread ended before it reported.
    #[error("shard thread exited during start")]
    Exited,
}

static URING_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Everything a shard thread needs to start.
pub(crate) struct ShardSpec {
    pub(crate) id: usize,
    pub(crate) listener: std::net::TcpListener,
    /// `listener` speaks TLS (TLS configured without `tls_port`).
    pub(crate) listener_tls: bool,
    /// The TLS listener beside a plain `listener` (`tls_port`).
    pub(crate) tls_listener: Option<std::net::TcpListener>,
    /// The HTTP API's own listener (`admin_listen`; shard 0 only).
    pub(crate) admin_listener: Option<std::net::TcpListener>,
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
    ready: std::sync::mpsc::Sender<Result<DriverKind, StartError>>,
) -> Result<ShardHandle, StartError> {
    let mailbox = spec.shared.mailboxes[spec.id].clone();
    let thread = std::thread::Builder::new()
        .name(format!("wsh-shard-{}", spec.id))
        .spawn(move || shard_main(spec, inbox, ready))
        .map_err(StartError::Spawn)?;
    Ok(ShardHandle { mailbox, thread })
}

fn shard_main(
    spec: ShardSpec,
    inbox: Inbox,
    ready: std::sync::mpsc::Sender<Result<DriverKind, StartError>>,
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
                    let listeners = Listeners {
                        main: driver::uring::UringListener::from_std(spec.listener),
                        main_tls: spec.listener_tls,
                        tls: spec
                            .tls_listener
                            .map(driver::uring::UringListener::from_std),
                        admin: spec
                            .admin_listener
                            .map(driver::uring::UringListener::from_std),
                    };
                    run(
                        spec.id,
                        spec.shared,
                        listeners,
                        inbox,
                        ready,
                        DriverKind::Uring,
                    )
                    .await
                });
                return;
            }
            Err(e) if spec.driver == IoDriver::Uring => {
                let _ = ready.send(Err(StartError::Uring(e)));
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
            let _ = ready.send(Err(StartError::Epoll(e)));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let tls = spec
            .tls_listener
            .map(driver::epoll::EpollListener::from_std)
            .transpose();
        let admin = spec
            .admin_listener
            .map(driver::epoll::EpollListener::from_std)
            .transpose();
        match (
            driver::epoll::EpollListener::from_std(spec.listener),
            tls,
            admin,
        ) {
            (Ok(main), Ok(tls), Ok(admin)) => {
                let listeners = Listeners {
                    main,
                    main_tls: spec.listener_tls,
                    tls,
                    admin,
                };
                run(
                    spec.id,
                    spec.shared,
                    listeners,
                    inbox,
                    ready,
                    DriverKind::Epoll,
                )
                .await
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = ready.send(Err(StartError::Register(e)));
            }
        }
    });
}

/// A shard's listeners: the main one (plain, or TLS when TLS is
/// configured without `tls_port`) and the TLS one beside it (`tls_port`).
struct Listeners<L> {
    main: L,
    main_tls: bool,
    tls: Option<L>,
    admin: Option<L>,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serves {
    /// WebSocket (and the public HTTP routes), plain.
    Plain,
    /// The same over TLS.
    Tls,
    /// The HTTP API only (`admin_listen`).
    Admin,
}

/// Accept on `listener` until the shard stops; each connection is served
/// by its own task, through TLS first if `tls`.
async fn accept_loop<L: Listener>(listener: L, serves: Serves, ctx: Rc<ShardCtx>) {
    let id = ctx.id;
    let stopped = ctx.stop.notified();
    tokio::pin!(stopped);
    loop {
        if ctx.stopping.get() {
            break;
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => match serves {
                    Serves::Plain => {
                        tokio::task::spawn_local(conn::serve(stream, peer, ctx.clone()));
                    }
                    Serves::Tls => {
                        tokio::task::spawn_local(conn::serve_tls(stream, peer, ctx.clone()));
                    }
                    Serves::Admin => {
                        tokio::task::spawn_local(conn::serve_admin(stream, peer, ctx.clone()));
                    }
                },
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
    // Dropped here: stops listening before the drain.
    drop(listener);
}

async fn run<L: Listener>(
    id: usize,
    shared: Arc<Shared>,
    listeners: Listeners<L>,
    inbox: Inbox,
    ready: std::sync::mpsc::Sender<Result<DriverKind, StartError>>,
    kind: DriverKind,
) {
    let ctx = ShardCtx::new(id, shared);
    let mailbox_task = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            while let Some(m) = inbox.recv().await {
                ctx.on_mail(m);
            }
        })
    };
    let heartbeat_task = ctx
        .shared
        .config
        .enable_heartbeat
        .then(|| tokio::task::spawn_local(heartbeat(ctx.clone())));
    let summary_task = tokio::task::spawn_local(conn_summary(ctx.clone()));
    let _ = ready.send(Ok(kind));
    ctx.shared.running[id].store(true, Ordering::Release);
    debug!(shard = id, driver = %kind, "listening");

    // Both loops in this task, never cancelled before the stop: an accept
    // dropped while in the io_uring ring would lose the connection it
    // completes with.
    let Listeners {
        main,
        main_tls,
        tls,
        admin,
    } = listeners;
    let extra = async {
        if let Some(l) = tls {
            accept_loop(l, Serves::Tls, ctx.clone()).await;
        }
    };
    let admin = async {
        if let Some(l) = admin {
            accept_loop(l, Serves::Admin, ctx.clone()).await;
        }
    };
    let main_serves = if main_tls { Serves::Tls } else { Serves::Plain };
    tokio::join!(accept_loop(main, main_serves, ctx.clone()), extra, admin);
    ctx.shared.running[id].store(false, Ordering::Release);

    // Graceful drain: 1001 to everyone, then wait for the close handshakes.
    let open = ctx.snapshot();
    info!(shard = id, connections = open.len(), "stopping");
    for c in &open {
        c.close_with(close::GOING_AWAY, "server shutting down");
    }
    drop(open);
    let drain = async {
        while ctx.has_conns() {
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
    summary_task.abort();
    ctx.connlog.flush(id);
    if let Some(h) = heartbeat_task {
        h.abort();
    }
}

/// The connection summary line (see [`connlog`]), at most once per
/// [`connlog::SUMMARY_EVERY`].
async fn conn_summary(ctx: Rc<ShardCtx>) {
    let every = connlog::SUMMARY_EVERY;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        interval.tick().await;
        ctx.connlog.flush(ctx.id);
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
