//! One connection as the shard sees it: its out-queue and WebSocket
//! session, and what the protocol remembers about it (handshake, auth,
//! subscriptions, streams, pending requests).
//!
//! Everything that sends to a client goes through [`Conn`]: its replies
//! (`send_text`, `send_reply`), frames pushed from elsewhere
//! (`push_external`, bounded by `max_backpressure`), pings and closes. The
//! transport (`conn::serve`) only moves the queue's bytes to the socket, so
//! a `Conn` can be built and driven without one.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::notify::LocalNotify;
use crate::api::CallKind;
use crate::config::Checked;
use crate::metrics::{OutLabel, ShardMetrics};
use crate::ws::close;
use crate::ws::deflate::Deflate;
use crate::ws::{Limits, OutQueue, Session};

/// After we start a close, how long the peer has to answer it.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A stream a client is sending.
#[derive(Debug)]
pub(crate) struct InStream {
    pub(crate) stream_type: String,
    /// The sequence number expected next (`None` until the first chunk).
    pub(crate) expected: Option<u64>,
    pub(crate) chunks: u64,
    pub(crate) bytes: u64,
}

/// What a successful `auth` granted: the verified identity (client type it
/// may claim, device, permissions, expiry, and the de-duplication scope, so
/// a client holding one credential cannot pre-empt another's records).
pub(crate) type Grant = crate::auth::Identity;

/// Protocol state of one connection (handshake, auth, subscriptions, streams).
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) client_type: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) authenticated: bool,
    /// Set by a successful `auth` when authentication is on.
    pub(crate) grant: Option<Grant>,
    pub(crate) auth_failures: u32,
    /// Bumped each time an identity is installed (auth, refresh): an
    /// expiry timer armed for an older one does nothing.
    pub(crate) auth_gen: u64,
    /// Subscription patterns (a set: unsubscribe is O(1)).
    pub(crate) subs: HashSet<Box<str>>,
    pub(crate) streams: HashMap<String, InStream>,
    /// Names this service client serves.
    pub(crate) registered: Vec<(CallKind, String)>,
    /// Requests this client made that are not answered yet.
    pub(crate) pending_calls: usize,
    /// Server-issued requests this client has not answered yet.
    pub(crate) pending_served: usize,
    /// A `server.status` or `store.query` is being answered.
    pub(crate) heavy_in_flight: bool,
    err_window: Option<Instant>,
    err_count: u32,
}

impl ClientState {
    /// Count an error reply; true if the client is now over `max_per_minute`.
    pub(crate) fn note_error(&mut self, max_per_minute: u32) -> bool {
        let now = Instant::now();
        match self.err_window {
            Some(start) if now.duration_since(start).as_secs() < 60 => self.err_count += 1,
            _ => {
                self.err_window = Some(now);
                self.err_count = 1;
            }
        }
        self.err_count > max_per_minute
    }
}

/// A connection's state shared between its reader, its writer and the shard.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Shard-local key.
    pub(crate) key: u64,
    /// Server-wide unique id, e.g. `c4f2a9-0-17`.
    pub(crate) client_id: String,
    pub(crate) peer: SocketAddr,
    /// The client's address for the `[limits]` checks: the peer's, or what
    /// a trusted proxy forwarded (set by the transport after the upgrade).
    pub(crate) client_ip: Cell<IpAddr>,
    pub(crate) connected_at: Instant,
    pub(crate) session: RefCell<Session>,
    pub(crate) out: RefCell<OutQueue>,
    /// Wakes the writer: something was queued, or it should finish.
    pub(crate) writer: LocalNotify,
    /// Wakes a reader paused on back-pressure.
    pub(crate) drained: LocalNotify,
    /// Wakes the reader to end the connection now.
    pub(crate) kill: LocalNotify,
    /// Flush what is queued, then stop writing.
    pub(crate) closing: Cell<bool>,
    /// End without flushing.
    pub(crate) dead: Cell<bool>,
    /// Heartbeat tick of the last byte received.
    pub(crate) last_seen: Cell<u32>,
    /// Close code sent or received.
    pub(crate) close_code: Cell<Option<u16>>,
    /// Wall-clock connect time, for status reports.
    pub(crate) connected_wall: std::time::SystemTime,
    /// Protocol state (handshake, auth, subscriptions, streams).
    pub(crate) client: RefCell<ClientState>,
    pub(crate) msgs_in: Cell<u64>,
    pub(crate) msgs_out: Cell<u64>,
    pub(crate) max_backpressure: usize,
    compression_threshold: usize,
    /// The shard's counters.
    pub(crate) m: Arc<ShardMetrics>,
}

impl Conn {
    /// A connection's state once upgraded, as connection `key` with id
    /// `client_id`; the transport is separate (`conn::serve`), so the
    /// protocol can be driven without a socket. `tick` is the shard's
    /// heartbeat clock now.
    pub(crate) fn new(
        cfg: &Checked,
        (key, client_id): (u64, String),
        peer: SocketAddr,
        deflate: Option<Deflate>,
        (tick, m): (u32, Arc<ShardMetrics>),
    ) -> Rc<Conn> {
        Rc::new(Conn {
            key,
            client_id,
            peer,
            client_ip: Cell::new(peer.ip()),
            connected_at: Instant::now(),
            session: RefCell::new(Session::new(
                Limits {
                    max_message_size: cfg.max_message_size(),
                },
                deflate,
            )),
            out: RefCell::new(OutQueue::default()),
            writer: LocalNotify::default(),
            drained: LocalNotify::default(),
            kill: LocalNotify::default(),
            closing: Cell::new(false),
            dead: Cell::new(false),
            last_seen: Cell::new(tick),
            close_code: Cell::new(None),
            max_backpressure: cfg.max_backpressure,
            compression_threshold: cfg.compression_threshold,
            connected_wall: std::time::SystemTime::now(),
            client: RefCell::new(Default::default()),
            msgs_in: Cell::new(0),
            msgs_out: Cell::new(0),
            m,
        })
    }

    pub(crate) fn wake_writer(&self) {
        self.writer.notify();
    }

    /// Queue a JSON text message for this connection (a reply, or anything
    /// the connection's own shard sends it).
    pub(crate) fn send_text(&self, payload: Bytes) {
        self.send_reply(true, payload);
    }

    /// Queue a reply to this connection's own message.
    pub(crate) fn send_reply(&self, text: bool, payload: Bytes) {
        if self.dead.get() || self.session.borrow().is_closing() {
            return;
        }
        self.msgs_out.set(self.msgs_out.get() + 1);
        let label = if text {
            OutLabel::of_json(&payload)
        } else {
            OutLabel::Binary
        };
        self.m.sent[label as usize].inc();
        self.m.payload_out.add(payload.len() as u64);
        let mut out = self.out.borrow_mut();
        self.session
            .borrow_mut()
            .send(text, payload, self.compression_threshold, &mut *out);
        drop(out);
        self.wake_writer();
    }

    /// Queue a frame pushed from elsewhere (broadcast, pub/sub, a
    /// server-issued request). `frame` is the shared pre-encoded frame,
    /// used unless this connection compresses. A connection whose queue is
    /// already over `max_backpressure` is a slow consumer: it is closed
    /// (1008) and the caller reports it.
    pub(crate) fn push_external(
        self: &Rc<Self>,
        label: OutLabel,
        text: bool,
        payload: &Bytes,
        frame: &Bytes,
    ) -> Pushed {
        if self.session.borrow().is_closing() || self.dead.get() {
            return Pushed::Closing;
        }
        let queued = self.out.borrow().bytes();
        if queued > self.max_backpressure {
            self.close_with(
                close::POLICY,
                "slow consumer: outbound queue over max_backpressure",
            );
            return Pushed::SlowConsumer { queued };
        }
        self.msgs_out.set(self.msgs_out.get() + 1);
        self.m.sent[label as usize].inc();
        self.m.payload_out.add(payload.len() as u64);
        let mut session = self.session.borrow_mut();
        if session.compression() && payload.len() >= self.compression_threshold {
            session.send(
                text,
                payload.clone(),
                self.compression_threshold,
                &mut *self.out.borrow_mut(),
            );
        } else {
            self.out.borrow_mut().push(frame.clone());
        }
        drop(session);
        self.wake_writer();
        Pushed::Queued
    }

    /// Queue a ping (heartbeat).
    pub(crate) fn ping(&self) {
        if !self.session.borrow().is_closing() {
            self.out.borrow_mut().push(crate::ws::frame::encode(
                crate::ws::frame::OpCode::Ping,
                false,
                b"",
            ));
            self.wake_writer();
        }
    }

    /// Start a server-side close; the peer has `CLOSE_TIMEOUT` to answer
    /// before the connection is dropped.
    pub(crate) fn close_with(self: &Rc<Self>, code: u16, reason: &str) {
        if self.session.borrow().is_closing() {
            return;
        }
        self.session
            .borrow_mut()
            .close(code, reason, &mut self.out.borrow_mut());
        self.close_code.set(Some(code));
        self.wake_writer();
        let me = Rc::clone(self);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(CLOSE_TIMEOUT).await;
            me.abort();
        });
    }

    /// End the connection now, without flushing.
    pub(crate) fn abort(&self) {
        self.dead.set(true);
        self.kill.notify();
        self.writer.notify();
        self.drained.notify();
    }
}

/// What [`Conn::push_external`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the writer.
    Queued,
    /// The connection is closing already: dropped quietly.
    Closing,
    /// Over `max_backpressure` with this many bytes queued: closed.
    SlowConsumer {
        /// Bytes that were queued.
        queued: usize,
    },
}

/// Counts one pending request of a connection while it lives.
#[derive(Debug)]
pub(crate) struct PendingGuard {
    conn: Weak<Conn>,
    served: bool,
}

impl PendingGuard {
    /// A request this client made (counts against `max_pending_requests`).
    pub(crate) fn calls(conn: &Rc<Conn>) -> PendingGuard {
        conn.client.borrow_mut().pending_calls += 1;
        PendingGuard {
            conn: Rc::downgrade(conn),
            served: false,
        }
    }

    /// A server-issued request this client has to answer.
    pub(crate) fn served(conn: &Rc<Conn>) -> PendingGuard {
        conn.client.borrow_mut().pending_served += 1;
        PendingGuard {
            conn: Rc::downgrade(conn),
            served: true,
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(c) = self.conn.upgrade() {
            if let Ok(mut st) = c.client.try_borrow_mut() {
                let n = if self.served {
                    &mut st.pending_served
                } else {
                    &mut st.pending_calls
                };
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Marks a connection's `server.status` / `store.query` as in flight.
#[derive(Debug)]
pub(crate) struct HeavyGuard(pub(crate) Rc<Conn>);

impl Drop for HeavyGuard {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.client.try_borrow_mut() {
            st.heavy_in_flight = false;
        }
    }
}
