//! One shard's protocol handlers driven without sockets, for fuzzing and
//! for tests that need no transport.
//!
//! [`ProtocolHarness`] builds a shard context and one upgraded connection
//! exactly as `run` and `conn::serve` do, minus the driver: messages go in
//! through the same `on_message` a socket's reader calls, replies come out
//! of the connection's out-queue as the frames a writer would send, and the
//! shard's own mailbox (messages a shard sends itself) is drained after
//! every message. Persistence is off (the store needs a writer thread).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::conn::Conn;
use super::{mailbox, Inbox, ShardCtx};
use crate::config::Config;
use crate::server::Shared;
use crate::ws::Message;

/// A shard and one connection with no socket under them.
pub struct ProtocolHarness {
    rt: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    ctx: Rc<ShardCtx>,
    conn: Rc<Conn>,
    inbox: Inbox,
}

impl std::fmt::Debug for ProtocolHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolHarness")
            .field("client_id", &self.conn.client_id)
            .finish()
    }
}

impl ProtocolHarness {
    /// A shard with `config` (persistence is switched off) and one
    /// connection that has just been welcomed.
    pub fn new(mut config: Config) -> ProtocolHarness {
        config.persist = false;
        config.shards = 1;
        let (mb, inbox) = mailbox();
        let shared = Arc::new(Shared {
            max_message_size: config.max_payload_size,
            config,
            conn_count: AtomicUsize::new(1),
            stopping: AtomicBool::new(false),
            events: Default::default(),
            started: Instant::now(),
            instance: "harness".to_owned(),
            shards: 1,
            mailboxes: vec![mb],
            store: None,
            field_key: None,
            registry: Default::default(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let local = tokio::task::LocalSet::new();
        let ctx = ShardCtx::new(0, shared);
        let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
        let conn = Conn::new(&ctx, peer, None);
        ctx.insert(conn.clone());
        conn.send_text(super::dispatch::welcome(&ctx, &conn.client_id));
        let mut h = ProtocolHarness {
            rt,
            local,
            ctx,
            conn,
            inbox,
        };
        h.take_frames();
        h
    }

    /// A text message from the client (must be UTF-8, as the WebSocket
    /// layer guarantees); the frames the server queued in answer.
    pub fn text(&mut self, msg: &str) -> Vec<Bytes> {
        self.deliver(Message::Text(Bytes::copy_from_slice(msg.as_bytes())))
    }

    /// A binary message from the client; the frames queued in answer.
    pub fn binary(&mut self, msg: &[u8]) -> Vec<Bytes> {
        self.deliver(Message::Binary(Bytes::copy_from_slice(msg)))
    }

    fn deliver(&mut self, m: Message) -> Vec<Bytes> {
        let (ctx, conn) = (self.ctx.clone(), self.conn.clone());
        self.local.block_on(&self.rt, async move {
            ctx.on_message(&conn, m);
            // Let tasks the message spawned (handlers) take a turn.
            tokio::task::yield_now().await;
        });
        while let Ok(m) = self.inbox.rx.try_recv() {
            self.ctx.handle(m);
        }
        self.take_frames()
    }

    /// Everything queued for the client, as wire frames; the queue is
    /// emptied as a writer would.
    pub fn take_frames(&mut self) -> Vec<Bytes> {
        let mut out = self.conn.out.borrow_mut();
        let mut all = Vec::new();
        let mut batch = Vec::new();
        while !out.is_empty() {
            out.take_batch(&mut batch, 64);
            let n = batch.iter().map(Bytes::len).sum();
            all.extend(batch.iter().cloned());
            out.written(&mut batch, n);
            batch.clear();
        }
        all
    }

    /// Is the connection closing (a close frame was queued)?
    pub fn closing(&self) -> bool {
        self.conn.session.borrow().is_closing()
    }
}
