//! How shards reach each other: the messages, the mailboxes, and the one
//! publish fan-out.
//!
//! A shard never shares a connection. Other threads reach it only through
//! its mailbox, a lock-free crossbeam channel paired with an `AtomicWaker`
//! that wakes the shard's mailbox task. A publish is encoded once (JSON and
//! frame) and the same `Bytes` go to every shard: [`fan_out`] is the only
//! code that spreads one, whether a client or the API published it.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::api::{CallKind, HandlerResult};
use crate::protocol::json::Obj;
use crate::status::ShardStatus;
use crate::store::{Completion, CompletionSink};
use crate::ws::frame::{self, OpCode};

/// A message to a shard from another thread (or from itself, handled on a
/// later turn).
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
    /// Deliver a publish to this shard's matching subscribers.
    Publish(Publish),
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
        reply: tokio::sync::oneshot::Sender<HandlerResult>,
    },
    /// Close this shard's connections of `device` except `keep` (4002).
    ReplaceDevice {
        device: Arc<str>,
        keep: (usize, u64),
    },
    /// Send one text message to every connection of `device`; `ack`
    /// learns how many.
    SendToDevice {
        device: Arc<str>,
        payload: Bytes,
        ack: tokio::sync::oneshot::Sender<usize>,
    },
    /// Report this shard's connections.
    Status(tokio::sync::oneshot::Sender<ShardStatus>),
    /// Close connections (`who`) with `code` and `reason`; `ack` learns
    /// how many.
    Disconnect {
        who: Who,
        code: u16,
        reason: Arc<str>,
        ack: tokio::sync::oneshot::Sender<usize>,
    },
    /// The most recent connection of `device` here: when it connected and
    /// its key.
    FindDevice {
        device: Arc<str>,
        ack: tokio::sync::oneshot::Sender<Option<(std::time::Instant, u64)>>,
    },
    /// This shard's subscription patterns starting with `prefix`, with
    /// their subscriber counts.
    Topics {
        prefix: Box<str>,
        ack: tokio::sync::oneshot::Sender<Vec<(String, u64)>>,
    },
    /// Report this shard's levels for a metrics scrape.
    Scrape(tokio::sync::oneshot::Sender<crate::metrics::ShardLevels>),
    /// The store writer finished records sent from this shard (or has room
    /// again for records this shard parked).
    StoreDone(Vec<Completion>),
}

/// Which connections a [`ShardMsg::Disconnect`] closes.
#[derive(Debug, Clone)]
pub(crate) enum Who {
    /// The connection with this key on the shard.
    Key(u64),
    /// Every connection of this device on the shard.
    Device(Arc<str>),
}

/// One `publish` message, encoded once for every subscriber on every shard.
#[derive(Debug, Clone)]
pub(crate) struct Publish {
    pub(crate) topic: Arc<str>,
    /// The JSON text (connections that compress encode their own frame).
    pub(crate) payload: Bytes,
    /// The uncompressed text frame everyone else gets.
    pub(crate) frame: Bytes,
    /// A client that must not get it (the publisher): (shard, key).
    pub(crate) exclude: Option<(usize, u64)>,
}

impl Publish {
    /// The `publish` message for `data` (JSON text, forwarded as it is) on
    /// `topic`, from client `from` (`None`: no `from` field).
    pub(crate) fn new(
        topic: &str,
        data: &[u8],
        from: Option<&str>,
        exclude: Option<(usize, u64)>,
    ) -> Publish {
        let payload = Obj::typed("publish")
            .str("topic", topic)
            .raw("data", data)
            .opt_str("from", from)
            .now()
            .finish();
        Publish {
            frame: frame::encode(OpCode::Text, false, &payload),
            topic: topic.into(),
            payload,
            exclude,
        }
    }

    /// The key to skip on shard `shard`, if any.
    pub(crate) fn exclude_on(&self, shard: usize) -> Option<u64> {
        self.exclude.filter(|(s, _)| *s == shard).map(|(_, k)| k)
    }
}

/// The calling shard and its local delivery, for [`fan_out`].
pub(crate) type Here<'a> = (usize, &'a dyn Fn(&Publish));

/// Spread `p` to every shard. `here` is the calling shard and its local
/// delivery (it delivers at once instead of through its own mailbox); off
/// a shard (the API) pass `None`.
pub(crate) fn fan_out(mailboxes: &[Mailbox], p: Publish, here: Option<Here<'_>>) {
    for (shard, m) in mailboxes.iter().enumerate() {
        match here {
            Some((me, deliver)) if me == shard => deliver(&p),
            _ => m.send(ShardMsg::Publish(p.clone())),
        }
    }
}

/// The answer to a routed call.
#[derive(Debug)]
pub(crate) struct CallResult {
    pub(crate) call_id: u64,
    pub(crate) ok: bool,
    /// Raw JSON: the data on success, the error string otherwise.
    pub(crate) body: Bytes,
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
    pub(crate) async fn recv(&self) -> Option<ShardMsg> {
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

    /// A message if one is waiting (harnesses drain the mailbox by hand).
    pub(crate) fn try_recv(&self) -> Option<ShardMsg> {
        self.rx.try_recv().ok()
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

/// The store writer's completions, routed to the shard the records came
/// from: the store knows only a sink, never a shard type.
pub(crate) fn store_sink(mailboxes: Vec<Mailbox>) -> CompletionSink {
    Box::new(move |shard, done| {
        if let Some(m) = mailboxes.get(shard) {
            m.send(ShardMsg::StoreDone(done));
        }
    })
}
