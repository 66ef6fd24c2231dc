//! One shard's state: its connections, subscriptions, call tables and
//! store queue. Single-threaded (`Rc`, `RefCell`, `Cell`): only the shard's
//! own thread ever touches it.
//!
//! [`ShardCtx::new`] builds it without sockets or tasks; the run loop
//! (`shard::run`) drives it, and so can a test or fuzz harness.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::client::{Conn, PendingGuard, Pushed};
use super::connlog::ConnLog;
use super::mesh::ShardMsg;
use super::notify::LocalNotify;
use super::seclog::{self, SecEvent};
use super::shared::Shared;
use super::tap::Taps;
use crate::api::HandlerResult;
use crate::events::Event;
use crate::metrics::topk::TopK;
use crate::metrics::{OutLabel, ShardMetrics};
use crate::protocol::scan::Member;
use crate::protocol::topic::SubTrie;
use crate::status::{ClientInfo, ShardStatus};
use crate::store::StoreQueue;
use crate::ws::close;
use crate::ws::deflate::Deflate;

/// A record handed to the store writer, waiting for its insertId.
#[derive(Debug)]
pub(crate) struct PendingStore {
    pub(crate) key: u64,
    pub(crate) table: Arc<str>,
    pub(crate) timestamp: Rc<str>,
}

/// A local caller waiting for a routed call's result.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) key: u64,
    pub(crate) request_id: String,
    pub(crate) reply_ty: &'static str,
    /// Counts against the caller's `max_pending_requests` while it waits.
    pub(crate) _pending: PendingGuard,
    /// When the call arrived, and its kind (latency metrics).
    pub(crate) started: std::time::Instant,
    pub(crate) kind: crate::metrics::CallKindLabel,
}

/// Where the answer to a server-issued request goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// Back to the caller's shard.
    Remote { shard: usize, call_id: u64 },
    /// To an API caller.
    Api(tokio::sync::oneshot::Sender<HandlerResult>),
}

/// A server-issued request awaiting a local client's answer.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) key: u64,
    pub(crate) target: Target,
    /// Counts against the client's `max_pending_requests` while it waits.
    pub(crate) _pending: PendingGuard,
}

/// What a shard's thread knows: its id, the server-wide state, its connections.
pub(crate) struct ShardCtx {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_key: Cell<u64>,
    /// Heartbeat tick counter (a coarse clock: no syscall per read).
    pub(crate) tick: Cell<u32>,
    pub(crate) stopping: Cell<bool>,
    pub(crate) stop: tokio::sync::Notify,
    pub(crate) conn_gone: LocalNotify,
    me: Weak<ShardCtx>,
    /// This shard's subscriptions.
    pub(crate) subs: RefCell<SubTrie>,
    /// Reused buffers: top-level members of the message being handled,
    /// topic matches.
    pub(crate) members: RefCell<Vec<Member>>,
    pub(crate) match_buf: RefCell<Vec<u64>>,
    /// Security events, rate-limited.
    pub(crate) seclog: seclog::SecLog,
    /// Connection churn since the last summary line.
    pub(crate) connlog: ConnLog,
    /// The dashboard's live tails of topics (usually none).
    pub(crate) taps: Taps,
    /// Secret key that makes server-issued request ids unguessable.
    pub(crate) id_key: std::hash::RandomState,
    /// Calls made by local clients, waiting for a result from a service.
    pub(crate) calls: RefCell<HashMap<u64, Waiting>>,
    /// Requests sent to local clients, waiting for their answer.
    pub(crate) served: RefCell<HashMap<String, Served>>,
    next_call: Cell<u64>,
    /// Records sent to the writer, by ticket.
    pub(crate) pending_store: RefCell<HashMap<u64, PendingStore>>,
    /// This shard's way into the store writer (persistence on).
    pub(crate) store: Option<StoreQueue>,
    /// Live connections per authenticated device id.
    pub(crate) devices: RefCell<HashMap<Arc<str>, Vec<u64>>>,
    /// This shard's counters (also in `shared.metrics[id]`, for scrapes).
    pub(crate) m: Arc<ShardMetrics>,
    /// The busiest topics seen on this shard (`metrics_top_topics`).
    pub(crate) topk: RefCell<TopK>,
}

impl ShardCtx {
    /// A shard's state, before it runs: no sockets, no tasks.
    pub(crate) fn new(id: usize, shared: Arc<Shared>) -> Rc<ShardCtx> {
        let store = shared
            .store
            .clone()
            .map(|handle| StoreQueue::new(handle, id));
        let m = shared.metrics[id].clone();
        let topk = RefCell::new(TopK::new(shared.config.metrics_top_topics));
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
            connlog: ConnLog::default(),
            taps: Taps::default(),
            id_key: std::hash::RandomState::new(),
            calls: RefCell::new(HashMap::new()),
            served: RefCell::new(HashMap::new()),
            devices: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
            pending_store: RefCell::new(HashMap::new()),
            store,
            m,
            topk,
        })
    }

    /// A new upgraded connection on this shard (not yet registered).
    pub(crate) fn new_conn(&self, peer: SocketAddr, deflate: Option<Deflate>) -> Rc<Conn> {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        let id = self.shared.client_id(self.id, key);
        Conn::new(
            &self.shared.config,
            (key, id),
            peer,
            deflate,
            (self.tick.get(), self.m.clone()),
        )
    }

    pub(crate) fn weak(&self) -> Weak<ShardCtx> {
        self.me.clone()
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

    /// Every open connection, copied out (callers may close them).
    pub(crate) fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    pub(crate) fn has_conns(&self) -> bool {
        !self.conns.borrow().is_empty()
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

    /// Forget a connection (its protocol state was cleaned up by the
    /// handlers' `on_close`).
    pub(crate) fn remove(&self, key: u64) -> Option<Rc<Conn>> {
        let gone = self.conns.borrow_mut().remove(&key);
        self.conn_gone.notify();
        gone
    }

    /// Push a frame from elsewhere to `conn` (see [`Conn::push_external`]);
    /// a slow consumer is logged and reported. False if it was closed.
    pub(crate) fn push(
        &self,
        conn: &Rc<Conn>,
        label: OutLabel,
        text: bool,
        payload: &bytes::Bytes,
        frame: &bytes::Bytes,
    ) -> bool {
        match conn.push_external(label, text, payload, frame) {
            Pushed::Queued | Pushed::Closing => true,
            Pushed::SlowConsumer { queued } => {
                self.m.slow_consumers.inc();
                let max = conn.max_backpressure;
                self.seclog.log(
                    SecEvent::SlowConsumer,
                    self.id,
                    conn.peer,
                    &conn.client_id,
                    || format!("{queued} bytes queued, max_backpressure {max}"),
                );
                self.shared.events.emit(|| Event::ClientError {
                    client_id: conn.client_id.clone(),
                    message: format!(
                        "slow consumer: {queued} bytes queued, max_backpressure {max}"
                    ),
                    code: close::POLICY,
                });
                false
            }
        }
    }

    /// This shard's levels for a metrics scrape: one pass over its
    /// connections.
    pub(crate) fn levels(&self) -> crate::metrics::ShardLevels {
        let mut by_type: Vec<(Option<String>, u64)> = Vec::new();
        let (mut queue_bytes, mut queue_max) = (0u64, 0u64);
        for c in self.conns.borrow().values() {
            let q = c.out.borrow().bytes() as u64;
            queue_bytes += q;
            queue_max = queue_max.max(q);
            let st = c.client.borrow();
            match by_type.iter_mut().find(|(t, _)| *t == st.client_type) {
                Some((_, n)) => *n += 1,
                None => by_type.push((st.client_type.clone(), 1)),
            }
        }
        crate::metrics::ShardLevels {
            by_type,
            queue_bytes,
            queue_max,
            store_parked: self.store.as_ref().map_or(0, |q| q.parked() as u64),
            topics: self.topk.borrow().entries().to_vec(),
        }
    }

    /// This shard's part of `get_status`.
    pub(crate) fn status(&self) -> ShardStatus {
        let clients = self
            .snapshot()
            .iter()
            .map(|c| {
                let st = c.client.borrow();
                ClientInfo {
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
                    queue_bytes: c.out.borrow().bytes() as u64,
                }
            })
            .collect();
        ShardStatus {
            shard: self.id,
            clients,
        }
    }
}
