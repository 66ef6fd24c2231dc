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
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;

use super::client::Conn;
use super::ctx::ShardCtx;
use super::mesh::{mailbox, Inbox};
use super::shared::Shared;
use crate::auth::Authenticator;
use crate::config::Config;
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
        let config = config
            .validate()
            .expect("the harness needs a valid configuration");
        let auth = Authenticator::new(&config).expect("the harness needs valid credentials");
        let mut shared = Shared::new(config, auth, vec![mb], None, None, Default::default());
        shared.instance = "harness".to_owned();
        shared.conn_count = AtomicUsize::new(1);
        let shared = Arc::new(shared);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let local = tokio::task::LocalSet::new();
        let ctx = ShardCtx::new(0, shared);
        let peer: SocketAddr = ([127, 0, 0, 1], 9).into();
        let conn = ctx.new_conn(peer, None);
        ctx.insert(conn.clone());
        {
            let (ctx, conn) = (ctx.clone(), conn.clone());
            local.block_on(&rt, async move { ctx.on_open(&conn) });
        }
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
        let (ctx, conn, inbox) = (self.ctx.clone(), self.conn.clone(), &self.inbox);
        self.local.block_on(&self.rt, async move {
            ctx.on_message(&conn, m);
            // Let the tasks the message spawned (handlers, status
            // collection) and the mail the shard sent itself (routed calls,
            // their results) run, inside the runtime, until both are quiet.
            for _ in 0..16 {
                tokio::task::yield_now().await;
                let mut mail = false;
                while let Some(m) = inbox.try_recv() {
                    ctx.on_mail(m);
                    mail = true;
                }
                if !mail {
                    break;
                }
            }
        });
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

/// The payload of an unmasked, uncompressed server frame.
#[cfg(test)]
fn frame_payload(frame: &[u8]) -> &[u8] {
    let len = frame[1] & 0x7f;
    let start = match len {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[start..]
}

#[cfg(test)]
mod tests {
    //! Protocol handlers without sockets: each answer is checked as the
    //! client would read it.
    use super::*;
    use serde_json::{json, Value};

    fn h() -> ProtocolHarness {
        ProtocolHarness::new(Config::default())
    }

    fn replies(h: &mut ProtocolHarness, msg: &str) -> Vec<Value> {
        h.text(msg)
            .iter()
            .map(|f| serde_json::from_slice(frame_payload(f)).expect("JSON reply"))
            .collect()
    }

    fn one(h: &mut ProtocolHarness, msg: Value) -> Value {
        let r = replies(h, &msg.to_string());
        assert_eq!(r.len(), 1, "{msg} -> {r:?}");
        r.into_iter().next().unwrap()
    }

    /// The store's completions, delivered as the writer's sink would:
    /// a failure is `storage_unavailable` (nothing stored, no detail sent),
    /// a success carries the insertId; a completion for an unknown ticket
    /// is ignored.
    #[test]
    fn store_completions_answer_the_record_they_belong_to() {
        use crate::shard::ctx::PendingStore;
        use crate::shard::mesh::ShardMsg;
        use crate::store::{Completion, StoreAck, WriteError};
        let mut h = h();
        for ticket in [7, 8] {
            h.ctx.pending_store.borrow_mut().insert(
                ticket,
                PendingStore {
                    key: h.conn.key,
                    table: "t".into(),
                    timestamp: "2026-12-02T00:00:00.000Z".into(),
                },
            );
        }
        h.ctx.on_mail(ShardMsg::StoreDone(vec![
            Completion {
                ticket: 7,
                result: Err(WriteError::UnknownTable("t".into())),
            },
            Completion {
                ticket: 8,
                result: Ok(StoreAck {
                    insert_id: 42,
                    duplicate: false,
                }),
            },
            Completion {
                ticket: 99,
                result: Ok(StoreAck {
                    insert_id: 1,
                    duplicate: false,
                }),
            },
        ]));
        let r: Vec<Value> = h
            .take_frames()
            .iter()
            .map(|f| serde_json::from_slice(frame_payload(f)).unwrap())
            .collect();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0]["type"], "data_response");
        assert_eq!(r[0]["success"], false);
        assert_eq!(r[0]["code"], "storage_unavailable");
        assert!(
            !r[0]["message"].as_str().unwrap().contains("table"),
            "no detail: {r:?}"
        );
        assert_eq!(r[1]["success"], true);
        assert_eq!(r[1]["insertId"], 42);
        assert!(h.ctx.pending_store.borrow().is_empty());
    }

    #[test]
    fn heartbeat_and_handshake() {
        let mut h = h();
        assert_eq!(
            one(&mut h, json!({"type": "heartbeat"}))["type"],
            "heartbeat_response"
        );
        let r = one(
            &mut h,
            json!({"type": "handshake", "clientType": "service"}),
        );
        assert_eq!(r["success"], true);
        let r = one(
            &mut h,
            json!({"type": "handshake", "clientType": "toaster"}),
        );
        assert_eq!(r["success"], false);
    }

    #[test]
    fn every_scan_refusal_has_its_code() {
        let mut h = h();
        for (text, code) in [
            ("{", "invalid_json"),
            ("[1]", "invalid_message"),
            (r#"{"a":"\ud800"}"#, "invalid_json"),
            (r#"{"type":"x","type":"y"}"#, "invalid_message"),
            (&format!("{}{}", "[".repeat(65), "]".repeat(65)), "too_deep"),
            (r#"{"no":"type"}"#, "unknown_type"),
            (r#"{"type":7}"#, "unknown_type"),
            (r#"{"type":"teleport"}"#, "unknown_type"),
        ] {
            let r = replies(&mut h, text);
            assert_eq!(r[0]["code"], code, "{text}");
        }
    }

    #[test]
    fn auth_gate_and_feature_gate() {
        let mut h = ProtocolHarness::new(Config {
            enable_authentication: true,
            auth_token: Some("t".into()),
            enable_pub_sub: false,
            ..Config::default()
        });
        let r = one(
            &mut h,
            json!({"type": "subscribe", "topic": "a", "requestId": 1}),
        );
        assert_eq!(
            (r["code"].as_str(), r["requestId"].as_i64()),
            (Some("unauthenticated"), Some(1))
        );
        assert_eq!(
            one(&mut h, json!({"type": "auth", "token": "t"}))["success"],
            true
        );
        let r = one(&mut h, json!({"type": "subscribe", "topic": "a"}));
        assert_eq!(
            (r["code"].as_str(), r["feature"].as_str()),
            (Some("feature_disabled"), Some("pub-sub"))
        );
    }

    #[test]
    fn data_without_store_and_validation() {
        let mut h = ProtocolHarness::new(Config {
            required_fields: vec!["t".into()],
            ..Config::default()
        });
        assert_eq!(
            one(&mut h, json!({"type": "data", "data": {"t": 1}}))["success"],
            true
        );
        let r = one(&mut h, json!({"type": "data", "data": {"u": 1}}));
        assert_eq!(r["missingFields"], json!(["t"]));
        let r = one(&mut h, json!({"type": "sensor_data", "t": 2}));
        assert_eq!(r["success"], true);
        let r = one(&mut h, json!({"type": "data"}));
        assert_eq!(
            (r["code"].as_str(), r["field"].as_str()),
            (Some("invalid_message"), Some("data"))
        );
    }

    #[test]
    fn requests_echo_and_unknown() {
        let mut h = h();
        let raw = h.text(
            r#"{"type":"request","requestId":"r","endpoint":"echo","data":{"b":1.10,"a":[1e400]}}"#,
        );
        assert!(std::str::from_utf8(frame_payload(&raw[0]))
            .unwrap()
            .contains(r#""data":{"b":1.10,"a":[1e400]}"#));
        let r = one(
            &mut h,
            json!({"type": "rpc_call", "requestId": "m", "method": "nope"}),
        );
        assert_eq!(r["error"], "Method not found: nope");
        let r = one(
            &mut h,
            json!({"type": "response", "requestId": "srv-0-1-00", "data": 1}),
        );
        assert_eq!(r["code"], "unknown_request");
    }

    #[test]
    fn pubsub_on_one_shard() {
        let mut h = h();
        assert_eq!(
            one(&mut h, json!({"type": "subscribe", "topic": "a.>"}))["success"],
            true
        );
        // Our own publish is not delivered back to us.
        let r = one(
            &mut h,
            json!({"type": "publish", "topic": "a.b", "data": 1}),
        );
        assert_eq!(r["type"], "publish_response");
        let r = one(&mut h, json!({"type": "unsubscribe", "topic": "zz"}));
        assert_eq!(r["success"], false);
        let r = one(&mut h, json!({"type": "subscribe", "topic": "a.*.>x"}));
        assert_eq!(r["code"], "invalid_message");
    }

    #[test]
    fn streams() {
        let mut h = h();
        assert_eq!(
            one(&mut h, json!({"type": "stream_start", "streamId": "s"}))["success"],
            true
        );
        assert!(h.text(&json!({"type": "stream_data", "streamId": "s", "sequenceNumber": 1, "data": "AAEC"}).to_string()).is_empty());
        let r = one(
            &mut h,
            json!({"type": "stream_data", "streamId": "s", "sequenceNumber": 5, "data": 1}),
        );
        assert_eq!(
            (r["code"].as_str(), r["expected"].as_u64()),
            (Some("stream_sequence"), Some(2))
        );
        let r = one(
            &mut h,
            json!({"type": "stream_data", "streamId": "x", "data": 1}),
        );
        assert_eq!(r["code"], "unknown_stream");
        let r = one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
        assert_eq!(
            (r["chunks"].as_u64(), r["bytes"].as_u64()),
            (Some(1), Some(3))
        );
        let bin = crate::protocol::stream::encode("s", 1, b"x");
        let r: Value = serde_json::from_slice(frame_payload(&h.binary(&bin)[0])).unwrap();
        assert_eq!(r["code"], "unknown_stream");
    }

    #[test]
    fn register_needs_a_service() {
        let mut h = h();
        let r = one(
            &mut h,
            json!({"type": "register", "kind": "endpoint", "name": "x"}),
        );
        assert_eq!(
            (r["success"].as_bool(), r["code"].as_str()),
            (Some(false), Some("forbidden"))
        );
        one(
            &mut h,
            json!({"type": "handshake", "clientType": "service"}),
        );
        let r = one(
            &mut h,
            json!({"type": "register", "kind": "endpoint", "name": "x"}),
        );
        assert_eq!(r["success"], true);
        let r = one(
            &mut h,
            json!({"type": "register", "kind": "nope", "name": "x"}),
        );
        assert_eq!(r["field"], "kind");
    }

    proptest::proptest! {
        /// What the fuzz target does, as a test: conversations of protocol
        /// messages with fields of every JSON type never panic a handler.
        #[test]
        fn conversations_never_panic(msgs in proptest::collection::vec(arb_message(), 1..12), auth: bool) {
            let mut h = ProtocolHarness::new(Config {
                enable_authentication: auth,
                auth_token: Some("t".into()),
                ..Config::default()
            });
            for m in &msgs {
                // Text frames are replies; a close frame (auth lockout,
                // error budget) may follow them.
                for f in h.text(m).into_iter().filter(|f| f[0] & 0x0f == 1) {
                    let reply: Value = serde_json::from_slice(frame_payload(&f)).expect("JSON reply");
                    proptest::prop_assert!(reply["type"].is_string(), "{m} -> {reply}");
                }
            }
        }
    }

    fn arb_message() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        const TYPES: &[&str] = &[
            "heartbeat",
            "handshake",
            "auth",
            "data",
            "sensor_data",
            "request",
            "rpc_call",
            "response",
            "rpc_response",
            "register",
            "unregister",
            "subscribe",
            "unsubscribe",
            "publish",
            "stream_start",
            "stream_data",
            "stream_end",
        ];
        const FIELDS: &[&str] = &[
            "clientType",
            "deviceId",
            "token",
            "data",
            "dataType",
            "table",
            "messageId",
            "requestId",
            "endpoint",
            "method",
            "params",
            "kind",
            "name",
            "topic",
            "streamId",
            "streamType",
            "sequenceNumber",
            "success",
            "error",
        ];
        let value = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1e400".to_owned()),
            Just("18446744073709551615".to_owned()),
            prop::sample::select(vec![
                "service",
                "echo",
                "server.status",
                "store.query",
                "a.>",
                "a.b",
                "endpoint",
                "method",
                "AAEC",
                "t",
                ""
            ])
            .prop_map(|s| format!("\"{s}\"")),
            Just("{\"a\":[1,{\"b\":null}]}".to_owned()),
            Just("[]".to_owned()),
        ];
        (
            prop::sample::select(TYPES),
            proptest::collection::vec((prop::sample::select(FIELDS), value), 0..5),
        )
            .prop_map(|(ty, fields)| {
                let mut m = format!("{{\"type\":\"{ty}\"");
                let mut seen = std::collections::HashSet::new();
                for (k, v) in fields {
                    if seen.insert(k) {
                        m.push_str(&format!(",\"{k}\":{v}"));
                    }
                }
                m.push('}');
                m
            })
    }

    #[test]
    fn error_budget_closes() {
        let mut h = ProtocolHarness::new(Config {
            max_errors_per_minute: 2,
            ..Config::default()
        });
        for _ in 0..3 {
            h.text("nope");
        }
        assert!(h.closing());
    }
}
