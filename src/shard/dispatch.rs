//! The WebSocketHandler protocol on a shard: one function per message type.
//!
//! Runs on the shard that owns the connection. A text message is copied into
//! the shard's scratch buffer and parsed in place by simd-json (borrowed
//! values: strings point into the scratch buffer); replies on the hot paths
//! (`data`, `publish`, `heartbeat`) are written field by field. Calls that
//! must wait (handlers, routed requests) become local tasks or entries in the
//! shard's call tables; nothing here blocks.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::FutureExt;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;
use subtle::ConstantTimeEq;

use super::client::InStream;
use super::conn::Conn;
use super::{CallResult, Served, ShardCtx, ShardMsg, Target, Waiting};
use crate::api::{CallContext, CallKind, Registrant};
use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::{stream, topic, ErrorCode, SERVER_VERSION};
use crate::ws::close;

/// Write a borrowed value as JSON text.
fn raw(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    v.write(&mut out).expect("writing to a Vec cannot fail");
    out
}

fn to_serde(v: &Value) -> serde_json::Value {
    serde_json::from_slice(&raw(v)).unwrap_or(serde_json::Value::Null)
}

fn str_field<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(|x| x.as_str())
}

/// The `welcome` message sent on connect.
pub(crate) fn welcome(ctx: &ShardCtx, client_id: &str) -> Bytes {
    let c = &ctx.shared.config;
    let features = Obj::new()
        .bool("requestResponse", c.enable_request_response)
        .bool("pubSub", c.enable_pub_sub)
        .bool("rpc", c.enable_rpc)
        .bool("streaming", c.enable_streaming)
        .bool("compression", c.enable_compression)
        .finish_vec();
    Obj::typed("welcome")
        .str("clientId", client_id)
        .bool("authRequired", c.enable_authentication)
        .str("serverVersion", SERVER_VERSION)
        .raw("features", &features)
        .finish()
}

impl ShardCtx {
    /// Send an `error` reply; closes the connection (1008) past
    /// `max_errors_per_minute`.
    pub(crate) fn send_error(
        &self,
        conn: &Rc<Conn>,
        code: ErrorCode,
        message: &str,
        extra: impl FnOnce(Obj) -> Obj,
    ) {
        let o = Obj::typed("error")
            .str("code", code.as_str())
            .str("message", message);
        conn.send_text(extra(o).finish());
        let over = conn
            .client
            .borrow_mut()
            .note_error(self.shared.config.max_errors_per_minute);
        if over {
            conn.close_with(close::POLICY, "too many errors");
            self.shared.events.emit(|| Event::ClientError {
                client_id: conn.client_id.clone(),
                message: "too many errors per minute".into(),
                code: close::POLICY,
            });
        }
    }

    /// A text message in protocol mode.
    pub(crate) fn on_text(&self, conn: &Rc<Conn>, text: Bytes) {
        let mut scratch = std::mem::take(&mut *self.scratch.borrow_mut());
        let mut buffers = std::mem::take(&mut *self.json_buffers.borrow_mut());
        scratch.clear();
        scratch.extend_from_slice(&text);
        // The parser's buffers are the shard's, reused from message to
        // message: no allocation for them per message.
        match simd_json::to_borrowed_value_with_buffers(&mut scratch, &mut buffers) {
            Ok(v) => self.on_value(conn, &v, &text),
            Err(e) => self.send_error(
                conn,
                ErrorCode::InvalidJson,
                &format!("Invalid JSON: {e}"),
                |o| o,
            ),
        }
        // Keep the scratch buffers unless a huge message grew them.
        if scratch.capacity() <= 64 * 1024 {
            *self.scratch.borrow_mut() = scratch;
            *self.json_buffers.borrow_mut() = buffers;
        }
    }

    /// `text` is the message as received (the parsed value borrows from a
    /// copy the parser rewrote).
    fn on_value(&self, conn: &Rc<Conn>, v: &Value, text: &[u8]) {
        if !v.is_object() {
            return self.send_error(
                conn,
                ErrorCode::InvalidMessage,
                "A message must be a JSON object",
                |o| o,
            );
        }
        let Some(ty) = str_field(v, "type") else {
            return self.send_error(conn, ErrorCode::UnknownType, "Missing message type", |o| o);
        };
        let cfg = &self.shared.config;
        if cfg.enable_authentication
            && !conn.client.borrow().authenticated
            && !matches!(ty, "handshake" | "auth" | "heartbeat")
        {
            return self.send_error(
                conn,
                ErrorCode::Unauthenticated,
                "Authentication required",
                |o| o,
            );
        }
        let disabled = |on: bool| !on;
        match ty {
            "heartbeat" => conn.send_text(Obj::typed("heartbeat_response").now().finish()),
            "handshake" => self.on_handshake(conn, v),
            "auth" => self.on_auth(conn, v),
            "data" | "sensor_data" => self.on_data(conn, v, ty == "sensor_data", text),
            "request" if disabled(cfg.enable_request_response) => {
                self.feature_off(conn, "request-response")
            }
            "request" => self.on_call(conn, v, CallKind::Endpoint),
            "rpc_call" if disabled(cfg.enable_rpc) => self.feature_off(conn, "rpc"),
            "rpc_call" => self.on_call(conn, v, CallKind::Method),
            "response" | "rpc_response" => self.on_client_response(conn, v),
            "register" | "unregister" => self.on_register(conn, v, ty == "register"),
            "subscribe" | "unsubscribe" | "publish" if disabled(cfg.enable_pub_sub) => {
                self.feature_off(conn, "pub-sub")
            }
            "subscribe" => self.on_subscribe(conn, v, true),
            "unsubscribe" => self.on_subscribe(conn, v, false),
            "publish" => self.on_publish(conn, v, text),
            "stream_start" | "stream_data" | "stream_end" if disabled(cfg.enable_streaming) => {
                self.feature_off(conn, "streaming")
            }
            "stream_start" => self.on_stream_start(conn, v),
            "stream_data" => {
                let Some(id) = str_field(v, "streamId") else {
                    return self.missing(conn, "stream_data", "streamId");
                };
                let seq = v.get("sequenceNumber").and_then(|s| s.as_u64());
                let bytes = match v.get("data") {
                    Some(d) => match d.as_str() {
                        Some(s) => base64_len(s),
                        None => raw(d).len() as u64,
                    },
                    None => 0,
                };
                self.on_stream_chunk(conn, id, seq, bytes);
            }
            "stream_end" => self.on_stream_end(conn, v),
            other => self.send_error(
                conn,
                ErrorCode::UnknownType,
                &format!("Unknown message type: {other}"),
                |o| o,
            ),
        }
    }

    fn feature_off(&self, conn: &Rc<Conn>, feature: &str) {
        self.send_error(
            conn,
            ErrorCode::FeatureDisabled,
            &format!("The {feature} feature is disabled"),
            |o| o.str("feature", feature),
        );
    }

    fn missing(&self, conn: &Rc<Conn>, ty: &str, field: &str) {
        self.send_error(
            conn,
            ErrorCode::InvalidMessage,
            &format!("{ty}: missing or invalid field '{field}'"),
            |o| o.str("field", field),
        );
    }

    fn on_handshake(&self, conn: &Rc<Conn>, v: &Value) {
        let Some(ct) = str_field(v, "clientType") else {
            return self.missing(conn, "handshake", "clientType");
        };
        if !self.shared.config.client_types.iter().any(|t| t == ct) {
            let msg = format!(
                "Unknown client type: {ct} (allowed: {})",
                self.shared.config.client_types.join(", ")
            );
            return conn.send_text(
                Obj::typed("handshake_response")
                    .bool("success", false)
                    .str("clientId", &conn.client_id)
                    .str("message", &msg)
                    .finish(),
            );
        }
        {
            let mut c = conn.client.borrow_mut();
            c.client_type = Some(ct.to_owned());
            c.device_id = str_field(v, "deviceId").map(str::to_owned);
        }
        conn.send_text(
            Obj::typed("handshake_response")
                .bool("success", true)
                .str("clientId", &conn.client_id)
                .str("clientType", ct)
                .finish(),
        );
        self.shared.events.emit(|| Event::ClientHandshake {
            client_id: conn.client_id.clone(),
            client_type: ct.to_owned(),
        });
    }

    fn on_auth(&self, conn: &Rc<Conn>, v: &Value) {
        let cfg = &self.shared.config;
        let reply = |ok: bool, msg: &str| {
            conn.send_text(
                Obj::typed("auth_response")
                    .bool("success", ok)
                    .str("message", msg)
                    .finish(),
            )
        };
        if !cfg.enable_authentication {
            conn.client.borrow_mut().authenticated = true;
            return reply(true, "Authentication not required");
        }
        let token = str_field(v, "token").unwrap_or("");
        let client_type = conn.client.borrow().client_type.clone();
        let ok = !token.is_empty() && {
            let t = token.as_bytes();
            let mut ok = cfg
                .auth_token
                .as_deref()
                .is_some_and(|a| bool::from(a.as_bytes().ct_eq(t)));
            for at in &cfg.auth_tokens {
                let type_ok = at
                    .client_type()
                    .is_none_or(|need| client_type.as_deref() == Some(need));
                ok |= bool::from(at.token().as_bytes().ct_eq(t)) && type_ok;
            }
            ok
        };
        if ok {
            conn.client.borrow_mut().authenticated = true;
            reply(true, "Authenticated");
            self.shared.events.emit(|| Event::ClientAuthenticated {
                client_id: conn.client_id.clone(),
            });
            return;
        }
        let failures = {
            let mut c = conn.client.borrow_mut();
            c.auth_failures += 1;
            c.auth_failures
        };
        reply(
            false,
            if token.is_empty() {
                "Missing token"
            } else {
                "Invalid token"
            },
        );
        if failures >= cfg.max_auth_failures {
            conn.close_with(close::POLICY, "too many failed auth attempts");
            self.shared.events.emit(|| Event::ClientError {
                client_id: conn.client_id.clone(),
                message: format!("{failures} failed auth attempts"),
                code: close::POLICY,
            });
        }
    }

    fn on_data(&self, conn: &Rc<Conn>, v: &Value, legacy: bool, text: &[u8]) {
        let cfg = &self.shared.config;
        // sensor_data: every field but `type` is the data.
        let legacy_data;
        let (data, data_type) = if legacy {
            let mut o = simd_json::borrowed::Object::new();
            if let Some(obj) = v.as_object() {
                for (k, x) in obj.iter() {
                    if k != "type" {
                        o.insert(k.clone(), x.clone());
                    }
                }
            }
            legacy_data = Value::from(o);
            (&legacy_data, "sensor")
        } else {
            let Some(d) = v.get("data") else {
                return self.missing(conn, "data", "data");
            };
            (d, str_field(v, "dataType").unwrap_or("generic"))
        };
        if cfg.enable_data_validation && !cfg.required_fields.is_empty() {
            let missing: Vec<&str> = cfg
                .required_fields
                .iter()
                .map(String::as_str)
                .filter(|f| data.get(*f).is_none())
                .collect();
            if !missing.is_empty() {
                let mut list = Vec::new();
                list.push(b'[');
                for (i, f) in missing.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    crate::protocol::json::write_str(&mut list, f);
                }
                list.push(b']');
                return conn.send_text(
                    Obj::typed("data_response")
                        .bool("success", false)
                        .str(
                            "message",
                            &format!("Missing required fields: {}", missing.join(", ")),
                        )
                        .raw("missingFields", &list)
                        .now()
                        .finish(),
                );
            }
        }
        let ts = crate::protocol::json::now_shared();
        let table = match str_field(v, "table") {
            None => &self.tables[0],
            Some(t) if let Some(known) = self.tables.iter().find(|k| &***k == t) => known,
            Some(t) => {
                return conn.send_text(
                    Obj::typed("data_response")
                        .bool("success", false)
                        .str("message", &format!("Table not allowed: {t}"))
                        .str("timestamp", &ts)
                        .finish(),
                )
            }
        };
        match &self.shared.store {
            Some(store) => {
                let message_id = v.get("messageId").and_then(id_string);
                let device = conn.client.borrow().device_id.clone();
                // `data` as sent, when it is there verbatim (not sensor_data).
                let data_text = if legacy {
                    None
                } else {
                    crate::protocol::json::member_span(text, "data")
                };
                let body = self.record_body(
                    conn,
                    data_type,
                    &ts,
                    (data, data_text),
                    device.as_deref(),
                    message_id.as_deref(),
                );
                let ticket = self.next_call_id();
                let task = crate::store::WriteTask {
                    shard: self.id,
                    ticket,
                    table: table.clone(),
                    body,
                    dedup: message_id.map(|m| crate::store::DedupKey {
                        // TODO(lead): the identity the credential proves.
                        scope: String::new(),
                        device: device.unwrap_or_else(|| conn.client_id.clone()),
                        message: m,
                    }),
                };
                self.pending_store.borrow_mut().insert(
                    ticket,
                    super::PendingStore {
                        key: conn.key,
                        table: table.clone(),
                        timestamp: ts.clone(),
                    },
                );
                self.queue_store(store, task);
            }
            None => conn.send_text(
                Obj::typed("data_response")
                    .bool("success", true)
                    .str("timestamp", &ts)
                    .finish(),
            ),
        }
        self.shared.events.emit(|| Event::DataReceived {
            client_id: conn.client_id.clone(),
            client_type: conn.client.borrow().client_type.clone(),
            data_type: data_type.to_owned(),
            data: to_serde(data),
            timestamp: ts.to_string(),
        });
    }

    /// The stored form of a record, without `insertId` (the writer adds it).
    /// Encrypted fields are sealed here, on the shard, so encryption runs
    /// in parallel across shards and plaintext never reaches the writer.
    fn record_body(
        &self,
        conn: &Rc<Conn>,
        data_type: &str,
        ts: &str,
        (data, data_text): (&Value, Option<&[u8]>),
        device: Option<&str>,
        message_id: Option<&str>,
    ) -> Vec<u8> {
        let cfg = &self.shared.config;
        let sealed = match &self.shared.field_key {
            Some(k) if !cfg.fields_to_encrypt.is_empty() => {
                let mut d = to_serde(data);
                k.encrypt_fields(&mut d, &cfg.fields_to_encrypt);
                Some(serde_json::to_vec(&d).expect("value serialises"))
            }
            _ => None,
        };
        let client_type = conn.client.borrow().client_type.clone();
        let mut o = Obj::new().str("clientId", &conn.client_id);
        o = match client_type.as_deref() {
            Some(t) => o.str("clientType", t),
            None => o.raw("clientType", b"null"),
        };
        o.str("dataType", data_type)
            .str("timestamp", ts)
            .opt_str("deviceId", device)
            .opt_str("messageId", message_id)
            .raw_with("data", |buf| match (sealed, data_text) {
                (Some(json), _) => buf.extend_from_slice(&json),
                (None, Some(text)) => buf.extend_from_slice(text),
                (None, None) => data.write(buf).expect("writing to a Vec cannot fail"),
            })
            .finish_vec()
    }

    /// Hand a record to the writer, or park it (and pause reading) if the
    /// writer's queue is full.
    fn queue_store(&self, store: &crate::store::StoreHandle, task: crate::store::WriteTask) {
        if self.store_blocked.get() {
            self.store_backlog.borrow_mut().push_back(task);
            return;
        }
        if let Err(task) = store.try_send(task) {
            // Ask for a wake-up first, then retry once: if the retry fails
            // the queue is full, so the writer has a batch to do and will
            // see the request after it.
            store.mark_blocked(self.id);
            if let Err(task) = store.try_send(task) {
                self.store_backlog.borrow_mut().push_back(task);
                self.store_blocked.set(true);
            }
        }
    }

    /// The writer stored (or failed) records from this shard: answer them.
    pub(crate) fn on_store_done(&self, done: Vec<crate::store::Completion>) {
        for c in done {
            let pending = self.pending_store.borrow_mut().remove(&c.ticket);
            let Some(p) = pending else {
                continue;
            };
            let conn = self.conn(p.key);
            let client_id = || {
                conn.as_ref()
                    .map(|c| c.client_id.clone())
                    .unwrap_or_default()
            };
            match c.result {
                Ok(ack) => {
                    if let Some(conn) = &conn {
                        let mut o = Obj::typed("data_response")
                            .bool("success", true)
                            .str("timestamp", &p.timestamp)
                            .u64("insertId", ack.insert_id);
                        if ack.duplicate {
                            o = o.bool("duplicate", true);
                        }
                        conn.send_text(o.finish());
                    }
                    if !ack.duplicate {
                        self.shared.events.emit(|| Event::DatabaseInsert {
                            client_id: client_id(),
                            table: p.table.to_string(),
                            insert_id: ack.insert_id,
                        });
                    }
                }
                Err(message) => {
                    if let Some(conn) = &conn {
                        conn.send_text(
                            Obj::typed("data_response")
                                .bool("success", false)
                                .str("message", &message)
                                .str("timestamp", &p.timestamp)
                                .finish(),
                        );
                    }
                    self.shared.events.emit(|| Event::DatabaseError {
                        client_id: client_id(),
                        table: p.table.to_string(),
                        message: message.clone(),
                    });
                }
            }
        }
        // Room in the writer's queue again: move parked records over.
        if self.store_blocked.get() {
            if let Some(store) = &self.shared.store {
                let mut backlog = self.store_backlog.borrow_mut();
                while let Some(t) = backlog.pop_front() {
                    if let Err(t) = store.try_send(t) {
                        backlog.push_front(t);
                        break;
                    }
                }
                if backlog.is_empty() {
                    self.store_blocked.set(false);
                    self.store_ready.notify_waiters();
                } else {
                    store.mark_blocked(self.id);
                    // Same retry as in queue_store: close the race with a
                    // writer that just went idle.
                    if let Some(t) = backlog.pop_front() {
                        if let Err(t) = store.try_send(t) {
                            backlog.push_front(t);
                        }
                    }
                }
            }
        }
    }

    /// `store.query` for service clients: a range read off the shard thread.
    fn store_query(&self, conn: &Rc<Conn>, request_id: String, data: Option<&Value>) {
        let Some(store) = self.shared.store.clone() else {
            return send_result(
                conn,
                "response",
                &request_id,
                false,
                &json_string("Persistence is off"),
            );
        };
        let d = data.map(to_serde).unwrap_or(serde_json::Value::Null);
        let cfg = &self.shared.config;
        let scan = crate::store::Scan {
            table: d["table"].as_str().unwrap_or(&cfg.db_table_name).to_owned(),
            from: d["from"].as_u64(),
            since: d["since"].as_str().map(str::to_owned),
            until: d["until"].as_str().map(str::to_owned),
            // One page: at most query_max_records records and
            // query_max_bytes bytes; `next` says where the following starts.
            limit: Some(
                d["limit"]
                    .as_u64()
                    .map_or(100, |l| usize::try_from(l).unwrap_or(usize::MAX))
                    .clamp(1, cfg.query_max_records),
            ),
            max_bytes: Some(cfg.query_page_bytes()),
        };
        let key = self.shared.field_key.clone();
        let conn = conn.clone();
        tokio::task::spawn_local(async move {
            let r =
                tokio::task::spawn_blocking(move || store.store.scan(&scan, key.as_ref())).await;
            match r {
                Ok(Ok(page)) => send_result(&conn, "response", &request_id, true, &page.to_json()),
                Ok(Err(e)) => send_result(
                    &conn,
                    "response",
                    &request_id,
                    false,
                    &json_string(&e.to_string()),
                ),
                Err(_) => send_result(
                    &conn,
                    "response",
                    &request_id,
                    false,
                    &json_string("query failed"),
                ),
            }
        });
    }

    fn on_call(&self, conn: &Rc<Conn>, v: &Value, kind: CallKind) {
        let (ty, name_field, data_field, reply_ty) = match kind {
            CallKind::Endpoint => ("request", "endpoint", "data", "response"),
            CallKind::Method => ("rpc_call", "method", "params", "rpc_response"),
        };
        let Some(request_id) = v.get("requestId").and_then(id_string) else {
            return self.missing(conn, ty, "requestId");
        };
        let Some(name) = str_field(v, name_field) else {
            return self.missing(conn, ty, name_field);
        };
        let data = v.get(data_field);
        self.shared.events.emit(|| match kind {
            CallKind::Endpoint => Event::Request {
                client_id: conn.client_id.clone(),
                request_id: request_id.clone(),
                endpoint: name.to_owned(),
            },
            CallKind::Method => Event::RpcCall {
                client_id: conn.client_id.clone(),
                request_id: request_id.clone(),
                method: name.to_owned(),
            },
        });
        let is_service = conn.client.borrow().client_type.as_deref() == Some("service");
        // Built-in endpoints.
        if kind == CallKind::Endpoint {
            match name {
                "echo" => {
                    let body = data.map_or_else(|| b"null".to_vec(), raw);
                    return send_result(conn, reply_ty, &request_id, true, &body);
                }
                "server.status" if is_service => {
                    let shared = self.shared.clone();
                    let conn = conn.clone();
                    tokio::task::spawn_local(async move {
                        let status = crate::server::collect_status(&shared).await;
                        let body = serde_json::to_vec(&status).expect("status serialises");
                        send_result(&conn, "response", &request_id, true, &body);
                    });
                    return;
                }
                "store.query" if is_service => return self.store_query(conn, request_id, data),
                "store.query" => {
                    let err = json_string("store.query is for service clients");
                    return send_result(conn, reply_ty, &request_id, false, &err);
                }
                "server.status" => {
                    let err = json_string("server.status is for service clients");
                    return send_result(conn, reply_ty, &request_id, false, &err);
                }
                _ => {}
            }
        }
        if let Some(h) = self.shared.registry.handler(kind, name) {
            let cc = CallContext {
                client_id: conn.client_id.clone(),
                client_type: conn.client.borrow().client_type.clone(),
                name: name.to_owned(),
            };
            let arg = data.map_or(serde_json::Value::Null, to_serde);
            let fut = std::panic::AssertUnwindSafe(h(cc, arg)).catch_unwind();
            let timeout = self.shared.config.request_timeout;
            let conn = conn.clone();
            tokio::task::spawn_local(async move {
                let (ok, body) = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(Ok(value))) => {
                        (true, serde_json::to_vec(&value).expect("value serialises"))
                    }
                    Ok(Ok(Err(msg))) => (false, json_string(&msg)),
                    Ok(Err(panic)) => (
                        false,
                        json_string(&format!("Handler failed: {}", panic_message(&panic))),
                    ),
                    Err(_) => (false, json_string("Request timed out")),
                };
                send_result(&conn, reply_ty, &request_id, ok, &body);
            });
            return;
        }
        if let Some(reg) = self.shared.registry.service(kind, name) {
            let call_id = self.next_call_id();
            self.calls.borrow_mut().insert(
                call_id,
                Waiting {
                    key: conn.key,
                    request_id,
                    reply_ty,
                },
            );
            let body = Bytes::from(data.map_or_else(|| b"null".to_vec(), raw));
            self.send_to_shard(
                reg.shard,
                ShardMsg::Forward {
                    key: reg.key,
                    kind,
                    name: name.to_owned(),
                    body,
                    reply_shard: self.id,
                    call_id,
                },
            );
            self.arm_call_timeout(call_id);
            return;
        }
        let what = match kind {
            CallKind::Endpoint => format!("Unknown endpoint: {name}"),
            CallKind::Method => format!("Method not found: {name}"),
        };
        send_result(conn, reply_ty, &request_id, false, &json_string(&what));
    }

    fn arm_call_timeout(&self, call_id: u64) {
        let timeout = self.shared.config.request_timeout;
        let me = self.self_rc();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(timeout).await;
            let w = me.calls.borrow_mut().remove(&call_id);
            if let Some(w) = w {
                if let Some(c) = me.conn(w.key) {
                    send_result(
                        &c,
                        w.reply_ty,
                        &w.request_id,
                        false,
                        &json_string("Request timed out"),
                    );
                }
            }
        });
    }

    /// A routed call arrived for a registrant on this shard.
    pub(crate) fn on_forward(
        &self,
        key: u64,
        kind: CallKind,
        name: String,
        body: Bytes,
        reply_shard: usize,
        call_id: u64,
    ) {
        let Some(conn) = self.conn(key) else {
            let err = Bytes::from(json_string("Service unavailable"));
            return self.send_to_shard(
                reply_shard,
                ShardMsg::CallResult(CallResult {
                    call_id,
                    ok: false,
                    body: err,
                }),
            );
        };
        self.issue_request(
            &conn,
            kind,
            &name,
            &body,
            Target::Remote {
                shard: reply_shard,
                call_id,
            },
        );
    }

    /// Send a server-initiated `request`/`rpc_call` to a local client and
    /// remember where its answer goes. Returns the server request id.
    pub(crate) fn issue_request(
        &self,
        conn: &Rc<Conn>,
        kind: CallKind,
        name: &str,
        body: &[u8],
        target: Target,
    ) -> String {
        let srv_id = format!("srv-{}-{}", self.id, self.next_call_id());
        let msg = match kind {
            CallKind::Endpoint => Obj::typed("request")
                .str("requestId", &srv_id)
                .str("endpoint", name)
                .raw("data", body),
            CallKind::Method => Obj::typed("rpc_call")
                .str("requestId", &srv_id)
                .str("method", name)
                .raw("params", body),
        };
        self.served.borrow_mut().insert(
            srv_id.clone(),
            Served {
                key: conn.key,
                target,
            },
        );
        conn.send_text(msg.finish());
        srv_id
    }

    /// A client answered a server-initiated request.
    fn on_client_response(&self, conn: &Rc<Conn>, v: &Value) {
        let Some(id) = v.get("requestId").and_then(id_string) else {
            return self.missing(conn, "response", "requestId");
        };
        let Some(served) = self.served.borrow_mut().remove(&id) else {
            return; // late or unknown: nothing waits for it
        };
        let ok = v.get("success").and_then(|s| s.as_bool()).unwrap_or(true);
        let body = if ok {
            v.get("data").map_or_else(|| b"null".to_vec(), raw)
        } else {
            match v.get("error") {
                Some(e) if e.is_str() => raw(e),
                Some(e) => json_string(&String::from_utf8_lossy(&raw(e))),
                None => json_string("Request failed"),
            }
        };
        self.complete(served.target, ok, Bytes::from(body));
    }

    /// Deliver a call's result to whoever waits for it.
    pub(crate) fn complete(&self, target: Target, ok: bool, body: Bytes) {
        match target {
            Target::Remote { shard, call_id } => self.send_to_shard(
                shard,
                ShardMsg::CallResult(CallResult { call_id, ok, body }),
            ),
            Target::Api(tx) => {
                let r = if ok {
                    Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
                } else {
                    Err(serde_json::from_slice::<String>(&body)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned()))
                };
                let _ = tx.send(r);
            }
        }
    }

    /// A routed call's result came back to the caller's shard.
    pub(crate) fn on_call_result(&self, r: CallResult) {
        let Some(w) = self.calls.borrow_mut().remove(&r.call_id) else {
            return; // timed out already
        };
        if let Some(c) = self.conn(w.key) {
            send_result(&c, w.reply_ty, &w.request_id, r.ok, &r.body);
        }
    }

    fn on_register(&self, conn: &Rc<Conn>, v: &Value, register: bool) {
        let ty = if register { "register" } else { "unregister" };
        let kind = match str_field(v, "kind") {
            Some("endpoint") => CallKind::Endpoint,
            Some("method") => CallKind::Method,
            _ => return self.missing(conn, ty, "kind"),
        };
        let Some(name) = str_field(v, "name").filter(|n| !n.is_empty()) else {
            return self.missing(conn, ty, "name");
        };
        let reply = |ok: bool, msg: Option<&str>| {
            conn.send_text(
                Obj::typed(if register {
                    "register_response"
                } else {
                    "unregister_response"
                })
                .bool("success", ok)
                .str("kind", kind.as_str())
                .str("name", name)
                .opt_str("message", msg)
                .finish(),
            )
        };
        if conn.client.borrow().client_type.as_deref() != Some("service") {
            return reply(false, Some("Only service clients may register handlers"));
        }
        let me = Registrant {
            shard: self.id,
            key: conn.key,
        };
        let entry = (kind, name.to_owned());
        if register {
            self.shared.registry.add_service(kind, name, me);
            let mut c = conn.client.borrow_mut();
            if !c.registered.contains(&entry) {
                c.registered.push(entry);
            }
            drop(c);
            reply(true, None);
        } else {
            let removed = self.shared.registry.remove_service(kind, name, &me);
            conn.client.borrow_mut().registered.retain(|e| *e != entry);
            reply(removed, (!removed).then_some("Not registered"));
        }
    }

    fn on_subscribe(&self, conn: &Rc<Conn>, v: &Value, subscribe: bool) {
        let ty = if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        };
        let Some(t) = str_field(v, "topic") else {
            return self.missing(conn, ty, "topic");
        };
        if let Err(e) = topic::validate_pattern(t) {
            return self.send_error(
                conn,
                ErrorCode::InvalidMessage,
                &format!("{ty}: {e}"),
                |o| o.str("field", "topic"),
            );
        }
        let ok = if subscribe {
            let added = self.subs.borrow_mut().insert(t, conn.key);
            if added {
                conn.client.borrow_mut().subs.push(t.into());
            }
            true
        } else {
            let removed = self.subs.borrow_mut().remove(t, conn.key);
            conn.client.borrow_mut().subs.retain(|s| &**s != t);
            removed
        };
        let mut o = Obj::typed(if subscribe {
            "subscribe_response"
        } else {
            "unsubscribe_response"
        })
        .bool("success", ok)
        .str("topic", t);
        if !ok {
            o = o.str("message", "Not subscribed");
        }
        conn.send_text(o.finish());
        self.shared.events.emit(|| {
            let (client_id, topic) = (conn.client_id.clone(), t.to_owned());
            if subscribe {
                Event::Subscribed { client_id, topic }
            } else {
                Event::Unsubscribed { client_id, topic }
            }
        });
    }

    fn on_publish(&self, conn: &Rc<Conn>, v: &Value, text: &[u8]) {
        let Some(t) = str_field(v, "topic") else {
            return self.missing(conn, "publish", "topic");
        };
        if let Err(e) = topic::validate_publish(t) {
            return self.send_error(
                conn,
                ErrorCode::InvalidMessage,
                &format!("publish: {e}"),
                |o| o.str("field", "topic"),
            );
        }
        let data: std::borrow::Cow<'_, [u8]> = match v.get("data") {
            None => b"null".as_slice().into(),
            Some(d) => crate::protocol::json::member_span(text, "data")
                .map_or_else(|| raw(d).into(), Into::into),
        };
        self.publish(t, &data, Some(&conn.client_id), Some(conn.key));
        conn.send_text(
            Obj::typed("publish_response")
                .bool("success", true)
                .str("topic", t)
                .finish(),
        );
        self.shared.events.emit(|| Event::Published {
            client_id: conn.client_id.clone(),
            topic: t.to_owned(),
        });
    }

    /// Build the `publish` message once and deliver it on every shard.
    pub(crate) fn publish(
        &self,
        topic: &str,
        data: &[u8],
        from: Option<&str>,
        exclude: Option<u64>,
    ) {
        let payload = Obj::typed("publish")
            .str("topic", topic)
            .raw("data", data)
            .opt_str("from", from)
            .now()
            .finish();
        let frame = crate::ws::frame::encode(crate::ws::frame::OpCode::Text, false, &payload);
        let topic: std::sync::Arc<str> = topic.into();
        for shard in 0..self.shared.shards {
            if shard == self.id {
                self.deliver(&topic, &payload, &frame, exclude);
            } else {
                self.send_to_shard(
                    shard,
                    ShardMsg::Publish {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        frame: frame.clone(),
                    },
                );
            }
        }
    }

    /// Queue a publish on every matching local subscriber.
    pub(crate) fn deliver(
        &self,
        topic: &str,
        payload: &Bytes,
        frame: &Bytes,
        exclude: Option<u64>,
    ) {
        if self.subs.borrow().is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut *self.match_buf.borrow_mut());
        self.subs.borrow().matches(topic, &mut keys);
        for &k in &keys {
            if Some(k) == exclude {
                continue;
            }
            if let Some(c) = self.conn(k) {
                c.push_external(self, true, payload, frame);
            }
        }
        *self.match_buf.borrow_mut() = keys;
    }

    fn on_stream_start(&self, conn: &Rc<Conn>, v: &Value) {
        let Some(id) = str_field(v, "streamId").filter(|s| !s.is_empty()) else {
            return self.missing(conn, "stream_start", "streamId");
        };
        let stream_type = str_field(v, "streamType").unwrap_or("data").to_owned();
        let exists = conn.client.borrow().streams.contains_key(id);
        let mut o = Obj::typed("stream_start_response")
            .str("streamId", id)
            .bool("success", !exists);
        if exists {
            o = o.str("message", "Stream already active");
        } else {
            conn.client.borrow_mut().streams.insert(
                id.to_owned(),
                InStream {
                    stream_type: stream_type.clone(),
                    expected: None,
                    chunks: 0,
                    bytes: 0,
                },
            );
        }
        conn.send_text(o.finish());
        if !exists {
            self.shared.events.emit(|| Event::StreamStarted {
                client_id: conn.client_id.clone(),
                stream_id: id.to_owned(),
                stream_type,
            });
        }
    }

    /// One chunk of a client stream (JSON `stream_data` or a binary frame).
    pub(crate) fn on_stream_chunk(&self, conn: &Rc<Conn>, id: &str, seq: Option<u64>, bytes: u64) {
        let res = {
            let mut c = conn.client.borrow_mut();
            match c.streams.get_mut(id) {
                None => Err(None),
                Some(s) => {
                    let got = seq.or(s.expected).unwrap_or(0);
                    match s.expected {
                        Some(exp) if exp != got => Err(Some((exp, got))),
                        _ => {
                            s.expected = Some(got + 1);
                            s.chunks += 1;
                            s.bytes += bytes;
                            Ok(got)
                        }
                    }
                }
            }
        };
        match res {
            Ok(seq) => self.shared.events.emit(|| Event::StreamData {
                client_id: conn.client_id.clone(),
                stream_id: id.to_owned(),
                sequence: seq,
                bytes,
            }),
            Err(None) => self.send_error(
                conn,
                ErrorCode::UnknownStream,
                &format!("Unknown stream: {id}"),
                |o| o.str("streamId", id),
            ),
            Err(Some((expected, got))) => self.send_error(
                conn,
                ErrorCode::StreamSequence,
                &format!("Stream {id}: expected sequenceNumber {expected}, got {got}"),
                |o| {
                    o.str("streamId", id)
                        .u64("expected", expected)
                        .u64("got", got)
                },
            ),
        }
    }

    fn on_stream_end(&self, conn: &Rc<Conn>, v: &Value) {
        let Some(id) = str_field(v, "streamId") else {
            return self.missing(conn, "stream_end", "streamId");
        };
        let removed = conn.client.borrow_mut().streams.remove(id);
        let Some(s) = removed else {
            return self.send_error(
                conn,
                ErrorCode::UnknownStream,
                &format!("Unknown stream: {id}"),
                |o| o.str("streamId", id),
            );
        };
        conn.send_text(
            Obj::typed("stream_end_response")
                .str("streamId", id)
                .str("streamType", &s.stream_type)
                .bool("success", true)
                .u64("chunks", s.chunks)
                .u64("bytes", s.bytes)
                .finish(),
        );
        self.shared.events.emit(|| Event::StreamEnded {
            client_id: conn.client_id.clone(),
            stream_id: id.to_owned(),
            chunks: s.chunks,
            bytes: s.bytes,
        });
    }

    /// A binary message in protocol mode: a stream frame.
    pub(crate) fn on_binary(&self, conn: &Rc<Conn>, b: Bytes) {
        if self.shared.config.enable_authentication && !conn.client.borrow().authenticated {
            return self.send_error(
                conn,
                ErrorCode::Unauthenticated,
                "Authentication required",
                |o| o,
            );
        }
        if !self.shared.config.enable_streaming {
            return self.feature_off(conn, "streaming");
        }
        match stream::parse(&b) {
            Ok(c) => self.on_stream_chunk(conn, c.stream_id, Some(c.sequence), c.data.len() as u64),
            Err(e) => self.send_error(conn, ErrorCode::InvalidMessage, &e.to_string(), |o| o),
        }
    }

    /// The connection is gone: drop its subscriptions and registrations and
    /// fail calls that were waiting on it.
    pub(crate) fn cleanup(&self, conn: &Conn) {
        let c = std::mem::take(&mut *conn.client.borrow_mut());
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
                Bytes::from(json_string("Service disconnected")),
            );
        }
        self.calls.borrow_mut().retain(|_, w| w.key != conn.key);
    }
}

/// Send a `response`/`rpc_response` with a raw JSON body (data or error).
pub(crate) fn send_result(
    conn: &Rc<Conn>,
    reply_ty: &str,
    request_id: &str,
    ok: bool,
    body: &[u8],
) {
    let o = Obj::typed(reply_ty)
        .str("requestId", request_id)
        .bool("success", ok);
    let o = if ok {
        o.raw("data", body)
    } else {
        o.raw("error", body)
    };
    conn.send_text(o.finish());
}

/// A JSON string literal.
pub(crate) fn json_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    crate::protocol::json::write_str(&mut v, s);
    v
}

/// Request ids may be strings or numbers; answered as strings.
fn id_string(v: &Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return (!s.is_empty()).then(|| s.to_owned());
    }
    if v.is_number() {
        return Some(String::from_utf8_lossy(&raw(v)).into_owned());
    }
    None
}

fn base64_len(s: &str) -> u64 {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(s) {
        Ok(b) => b.len() as u64,
        Err(_) => s.len() as u64,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked".to_owned()
    }
}
