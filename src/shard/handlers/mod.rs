//! The WebSocketHandler protocol on a shard: the router and one file per
//! message family.
//!
//! - [`session`]: `heartbeat`, `handshake`, `auth`;
//! - [`data`]: `data`, `sensor_data` (and the store's completions,
//!   `store.query`);
//! - [`call`]: `request`, `rpc_call`, `response`, `rpc_response`,
//!   `register`, `unregister`, and routed / server-issued calls;
//! - [`pubsub`]: `subscribe`, `unsubscribe`, `publish`;
//! - [`stream`]: `stream_start`, `stream_data`, `stream_end`, binary frames;
//! - [`reply`]: refusals, the error budget, field readers, reply builders.
//!
//! The transport calls three functions: [`ShardCtx::on_open`],
//! [`ShardCtx::on_message`], [`ShardCtx::on_close`]; the mailbox task calls
//! [`ShardCtx::on_mail`]. Handlers never touch a socket: they act through
//! the connection's out-queue ([`Conn`]) and the shard's few effects (its
//! mailbox peers, its [`StoreQueue`](crate::store::StoreQueue), local
//! tasks for calls that wait), so a test builds a `ShardCtx` and a `Conn`
//! and drives them without sockets (`harness`).
//!
//! A text message is validated once by [`scan`] (depth bound, no lone
//! surrogates, no duplicate keys) and read through the spans it leaves:
//! `data`, `params` and every other value a client sent are stored and
//! forwarded as the bytes it sent, never a re-serialised value, so what a
//! client wrote is what every reader gets.
//!
//! Adding a message type: a variant in [`MsgType`] (the compiler then asks
//! for its name, feature and auth decision in `protocol/kind.rs` and for its
//! arm in [`ShardCtx::on_msg`]), and its handler in the family file.

mod call;
mod data;
pub(crate) mod identity;
mod pubsub;
mod reply;
mod session;
mod stream;

use std::rc::Rc;

use bytes::Bytes;

use self::reply::Handled;
use super::client::Conn;
use super::ctx::{Served, ShardCtx, Target, Waiting};
use super::mesh::{ShardMsg, Who};
use super::seclog::SecEvent;
use crate::api::{CallKind, Registrant};
use crate::metrics::{InLabel, OutLabel, RejectReason};
use crate::protocol::json::Obj;
use crate::protocol::kind::{Feature, MsgType};
use crate::protocol::scan::{self, Msg, ScanError};
use crate::protocol::{ErrorCode, SERVER_VERSION};
use crate::ws::{close, Message};

/// Parse a span the scanner validated into a `serde_json` value (exact:
/// serde_json keeps number text and key order in this build).
fn to_serde(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null)
}

impl ShardCtx {
    /// A connection was upgraded and registered: send `welcome` and, with
    /// authentication on, arm its `auth_timeout`.
    pub(crate) fn on_open(&self, conn: &Rc<Conn>) {
        self.on_open_with(conn, None);
    }

    /// [`on_open`](Self::on_open) for a connection that presented a
    /// credential at the upgrade (verified by the transport): installed, it
    /// skips `auth`; refused, the connection is told and closed (4003).
    pub(crate) fn on_open_with(
        &self,
        conn: &Rc<Conn>,
        cred: Option<Result<crate::auth::Identity, crate::auth::AuthError>>,
    ) {
        let c = &self.shared.config;
        if c.echo {
            return;
        }
        // A client certificate (mTLS) is an identity even with
        // authentication off: the device is known and reachable
        // (`send_to_device`).
        let from_cert = matches!(&cred, Some(Ok(id)) if id.scope.starts_with("cert:"));
        let upgraded = match cred {
            Some(cred) if c.enable_authentication || from_cert => {
                Some(self.upgrade_credential(conn, cred))
            }
            _ => None,
        };
        let features = Obj::new()
            .bool("requestResponse", c.enable_request_response)
            .bool("pubSub", c.enable_pub_sub)
            .bool("rpc", c.enable_rpc)
            .bool("streaming", c.enable_streaming)
            .bool("compression", c.enable_compression)
            .finish_vec();
        let ok = matches!(upgraded, Some(Ok(())));
        let mut welcome = Obj::typed("welcome")
            .str("clientId", &conn.client_id)
            .bool("authRequired", c.enable_authentication && !ok);
        if ok {
            let cl = conn.client.borrow();
            welcome = welcome.bool("authenticated", true);
            if let Some(g) = &cl.grant {
                if let Some(d) = &g.device_id {
                    welcome = welcome.str("deviceId", d);
                }
                if let Some(x) = g.expires_at {
                    welcome = welcome.u64("expiresIn", identity::secs_until(x));
                }
            }
        }
        let welcome = welcome
            .str("serverVersion", SERVER_VERSION)
            .raw("features", &features)
            .finish();
        conn.send_text(welcome);
        if let Some(Err(why)) = &upgraded {
            self.refuse_upgrade_credential(conn, why);
            return;
        }
        if c.enable_authentication && upgraded.is_none() {
            let (weak, timeout) = (Rc::downgrade(conn), c.auth_timeout);
            let shard = self.weak();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(timeout).await;
                let Some(c) = weak.upgrade() else { return };
                if c.client.borrow().authenticated {
                    return;
                }
                c.close_with(close::POLICY, "authentication timeout");
                if let Some(ctx) = shard.upgrade() {
                    ctx.m.rejected[RejectReason::AuthTimeout as usize].inc();
                    ctx.seclog
                        .log(SecEvent::AuthTimeout, ctx.id, c.peer, &c.client_id, || {
                            format!("not authenticated within {timeout:?}")
                        });
                }
            });
        }
    }

    /// A complete message arrived on `conn`.
    pub(crate) fn on_message(&self, conn: &Rc<Conn>, msg: Message) {
        if let Message::Text(b) | Message::Binary(b) = &msg {
            self.m.payload_in.add(b.len() as u64);
        }
        match msg {
            Message::Text(b) if self.shared.config.echo => {
                self.received(InLabel::Invalid);
                conn.send_reply(true, b)
            }
            Message::Binary(b) if self.shared.config.echo => {
                self.received(InLabel::Binary);
                conn.send_reply(false, b)
            }
            Message::Text(b) => self.on_text(conn, b),
            Message::Binary(b) => {
                self.received(InLabel::Binary);
                self.on_binary(conn, b)
            }
            Message::Close(_) => {}
        }
    }

    /// A text message in protocol mode.
    fn on_text(&self, conn: &Rc<Conn>, text: Bytes) {
        // The member list is the shard's, reused from message to message.
        let mut members = std::mem::take(&mut *self.members.borrow_mut());
        match scan::scan(&text, self.shared.config.max_json_depth, &mut members) {
            Ok(m) => {
                let _ = self.on_msg(conn, &m);
            }
            Err(e) => {
                self.received(InLabel::Invalid)
                    .send_error(conn, e.code(), &e.to_string(), |o| match e {
                        ScanError::TooDeep { max } => {
                            o.str("limit", "max_json_depth").u64("max", max.into())
                        }
                        _ => o,
                    })
            }
        }
        if members.capacity() <= 1024 {
            *self.members.borrow_mut() = members;
        }
    }

    /// Route a scanned message: its type, then the two gates every type
    /// has (authentication, feature switch), then its family's handler.
    fn on_msg(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = match m.str("type") {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(self.received(InLabel::Invalid).refuse(
                    conn,
                    m,
                    ErrorCode::UnknownType,
                    "Missing message type",
                    |o| o,
                ))
            }
            Err(_) => {
                return Err(self.received(InLabel::Invalid).refuse(
                    conn,
                    m,
                    ErrorCode::UnknownType,
                    "The message type must be a string",
                    |o| o,
                ))
            }
        };
        let Some(kind) = MsgType::parse(&ty) else {
            return Err(self.received(InLabel::Invalid).refuse(
                conn,
                m,
                ErrorCode::UnknownType,
                &format!("Unknown message type: {}", reply::clip(&ty, 64)),
                |o| o,
            ));
        };
        self.received(InLabel::Type(kind));
        let cfg = &self.shared.config;
        if cfg.enable_authentication
            && !kind.allowed_before_auth()
            && !conn.client.borrow().authenticated
        {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::Unauthenticated,
                "Authentication required",
                |o| o,
            ));
        }
        if let Some(f) = kind.feature() {
            let on = match f {
                Feature::RequestResponse => cfg.enable_request_response,
                Feature::Rpc => cfg.enable_rpc,
                Feature::PubSub => cfg.enable_pub_sub,
                Feature::Streaming => cfg.enable_streaming,
            };
            if !on {
                return Err(self.refuse(
                    conn,
                    m,
                    ErrorCode::FeatureDisabled,
                    &format!("The {} feature is disabled", f.as_str()),
                    |o| o.str("feature", f.as_str()),
                ));
            }
        }
        match kind {
            MsgType::Heartbeat => self.on_heartbeat(conn),
            MsgType::Handshake => self.on_handshake(conn, m),
            MsgType::Auth => self.on_auth(conn, m),
            MsgType::Refresh => self.on_refresh(conn, m),
            MsgType::Data => self.on_data(conn, m, false),
            MsgType::SensorData => self.on_data(conn, m, true),
            MsgType::Request => self.on_call(conn, m, CallKind::Endpoint),
            MsgType::RpcCall => self.on_call(conn, m, CallKind::Method),
            MsgType::Response | MsgType::RpcResponse => self.on_client_response(conn, m, kind),
            MsgType::Register => self.on_register(conn, m, true),
            MsgType::Unregister => self.on_register(conn, m, false),
            MsgType::Subscribe => self.on_subscribe(conn, m, true),
            MsgType::Unsubscribe => self.on_subscribe(conn, m, false),
            MsgType::Publish => self.on_publish(conn, m),
            MsgType::StreamStart => self.on_stream_start(conn, m),
            MsgType::StreamData => self.on_stream_data(conn, m),
            MsgType::StreamEnd => self.on_stream_end(conn, m),
        }
    }

    /// Count a received message; returns `self` to chain the reply.
    #[inline]
    fn received(&self, l: InLabel) -> &Self {
        self.m.received[l.index()].inc();
        self
    }

    /// A message from another shard, the API or the store writer.
    pub(crate) fn on_mail(&self, msg: ShardMsg) {
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
                        self.push(&c, OutLabel::Broadcast, text, &payload, &frame);
                    }
                }
            }
            ShardMsg::Publish(p) => self.deliver(&p),
            ShardMsg::SendTo { key, payload, ack } => {
                let found = match self.conn(key) {
                    Some(c) => {
                        let frame = crate::ws::frame::encode(
                            crate::ws::frame::OpCode::Text,
                            false,
                            &payload,
                        );
                        self.push(&c, OutLabel::Direct, true, &payload, &frame)
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
            ShardMsg::ReplaceDevice { device, keep } => self.replace_device(&device, keep),
            ShardMsg::SendToDevice {
                device,
                payload,
                ack,
            } => {
                let _ = ack.send(self.send_to_device_local(&device, &payload));
            }
            ShardMsg::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ShardMsg::Scrape(tx) => {
                let _ = tx.send(self.levels());
            }
            ShardMsg::Disconnect {
                who,
                code,
                reason,
                ack,
            } => {
                let conns = match who {
                    Who::Key(k) => self.conn(k).into_iter().collect(),
                    Who::Device(d) => self.device_conns(&d),
                };
                for c in &conns {
                    c.close_with(code, &reason);
                }
                let _ = ack.send(conns.len());
            }
            ShardMsg::FindDevice { device, ack } => {
                let newest = self
                    .device_conns(&device)
                    .iter()
                    .map(|c| (c.connected_at, c.key))
                    .max();
                let _ = ack.send(newest);
            }
            ShardMsg::Topics { prefix, ack } => {
                let mut counts: std::collections::HashMap<String, u64> = Default::default();
                for c in self.snapshot() {
                    for s in c.client.borrow().subs.iter() {
                        if s.starts_with(&*prefix) {
                            *counts.entry(s.to_string()).or_insert(0) += 1;
                        }
                    }
                }
                let _ = ack.send(counts.into_iter().collect());
            }
            ShardMsg::StoreDone(done) => self.on_store_done(done),
        }
    }

    /// The connection is gone: drop its subscriptions and registrations and
    /// fail calls that were waiting on it.
    pub(crate) fn on_close(&self, conn: &Conn) {
        let c = std::mem::take(&mut *conn.client.borrow_mut());
        self.forget_device(
            conn.key,
            c.grant.as_ref().and_then(|g| g.device_id.as_ref()),
        );
        if !c.subs.is_empty() {
            let mut trie = self.subs.borrow_mut();
            for s in &c.subs {
                trie.remove(s, conn.key);
            }
        }
        let me = Registrant {
            shard: self.id,
            key: conn.key,
        };
        for (kind, name) in &c.registered {
            self.shared.registry.remove_service(*kind, name, &me);
        }
        let failed: Vec<Served> = {
            let mut served = self.served.borrow_mut();
            let ids: Vec<String> = served
                .iter()
                .filter(|(_, s)| s.key == conn.key)
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| served.remove(&id))
                .collect()
        };
        for s in failed {
            self.complete(
                s.target,
                false,
                Bytes::from(reply::json_string("Service disconnected")),
            );
        }
        let gone: Vec<Waiting> = {
            let mut calls = self.calls.borrow_mut();
            let ids: Vec<u64> = calls
                .iter()
                .filter(|(_, w)| w.key == conn.key)
                .map(|(k, _)| *k)
                .collect();
            ids.into_iter().filter_map(|id| calls.remove(&id)).collect()
        };
        drop(gone);
    }
}
