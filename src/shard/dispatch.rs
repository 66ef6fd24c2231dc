//! The WebSocketHandler protocol on a shard: one function per message type.
//!
//! Runs on the shard that owns the connection. A text message is validated
//! once by [`scan`] (depth bound, no lone surrogates, no duplicate keys) and
//! read through the spans it leaves: `data`, `params` and every other value
//! a client sent are stored and forwarded as the bytes it sent, never a
//! re-serialised value, so what a client wrote is what every reader gets.
//! Replies on the hot paths (`data`, `publish`, `heartbeat`) are written
//! field by field. Calls that must wait (handlers, routed requests) become
//! local tasks or entries in the shard's call tables, each bounded per
//! connection; nothing here blocks.
//!
//! Every refusal of a message goes through [`ShardCtx::refuse`], which echoes
//! the message's `requestId`, so a client waiting on an id fails at once.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use futures_util::FutureExt;
use subtle::ConstantTimeEq;

use super::client::{Grant, InStream};
use super::conn::Conn;
use super::seclog::SecEvent;
use super::{CallResult, Served, ShardCtx, ShardMsg, Target, Waiting};
use crate::api::{CallContext, CallKind, Registrant};
use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::kind::{Feature, MsgType};
use crate::protocol::scan::{self, Field, Msg, ScanError, WrongType};
use crate::protocol::{stream, topic, ErrorCode, SERVER_VERSION};
use crate::ws::close;

/// A refusal was sent to the client; the handler stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

type Handled = Result<(), Refused>;

/// Parse a span the scanner validated into a `serde_json` value (exact:
/// serde_json keeps number text and key order in this build).
fn to_serde(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null)
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

/// Counts one pending request of a connection while it lives.
#[derive(Debug)]
pub(crate) struct PendingGuard {
    conn: Weak<Conn>,
    served: bool,
}

impl PendingGuard {
    fn calls(conn: &Rc<Conn>) -> PendingGuard {
        conn.client.borrow_mut().pending_calls += 1;
        PendingGuard {
            conn: Rc::downgrade(conn),
            served: false,
        }
    }

    fn served(conn: &Rc<Conn>) -> PendingGuard {
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
struct HeavyGuard(Rc<Conn>);

impl Drop for HeavyGuard {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.client.try_borrow_mut() {
            st.heavy_in_flight = false;
        }
    }
}

impl ShardCtx {
    /// Send an `error` that answers no particular message (a binary frame,
    /// a stream chunk); closes the connection (1008) past
    /// `max_errors_per_minute`.
    pub(crate) fn send_error(
        &self,
        conn: &Rc<Conn>,
        code: ErrorCode,
        message: &str,
        extra: impl FnOnce(Obj) -> Obj,
    ) {
        self.error_reply(conn, None, code, message, extra);
    }

    /// Refuse message `m` with an `error` that echoes its `requestId`.
    fn refuse(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        code: ErrorCode,
        message: &str,
        extra: impl FnOnce(Obj) -> Obj,
    ) -> Refused {
        self.error_reply(conn, Some(m), code, message, extra);
        Refused
    }

    fn error_reply(
        &self,
        conn: &Rc<Conn>,
        m: Option<&Msg<'_>>,
        code: ErrorCode,
        message: &str,
        extra: impl FnOnce(Obj) -> Obj,
    ) {
        let mut o = Obj::typed("error")
            .str("code", code.as_str())
            .str("message", message);
        if let Some(id) = m.and_then(|m| m.get("requestId")) {
            if id.is_str() || id.is_number() {
                o = o.raw("requestId", id.raw());
            }
        }
        conn.send_text(extra(o).finish());
        self.count_error(conn);
    }

    /// Count an error against the connection's budget; close it (1008)
    /// when it is spent.
    fn count_error(&self, conn: &Rc<Conn>) {
        let over = conn
            .client
            .borrow_mut()
            .note_error(self.shared.config.max_errors_per_minute);
        if over {
            conn.close_with(close::POLICY, "too many errors");
            self.seclog.log(
                SecEvent::ErrorBudget,
                self.id,
                conn.peer,
                &conn.client_id,
                || {
                    format!(
                        "more than {} error replies in a minute",
                        self.shared.config.max_errors_per_minute
                    )
                },
            );
            self.shared.events.emit(|| Event::ClientError {
                client_id: conn.client_id.clone(),
                message: "too many errors per minute".into(),
                code: close::POLICY,
            });
        }
    }

    /// A text message in protocol mode.
    pub(crate) fn on_text(&self, conn: &Rc<Conn>, text: Bytes) {
        // The member list is the shard's, reused from message to message.
        let mut members = std::mem::take(&mut *self.members.borrow_mut());
        match scan::scan(&text, self.shared.config.max_json_depth, &mut members) {
            Ok(m) => {
                let _ = self.on_msg(conn, &m);
            }
            Err(e) => self.send_error(conn, e.code(), &e.to_string(), |o| match e {
                ScanError::TooDeep { max } => {
                    o.str("limit", "max_json_depth").u64("max", max.into())
                }
                _ => o,
            }),
        }
        if members.capacity() <= 1024 {
            *self.members.borrow_mut() = members;
        }
    }

    fn on_msg(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = match m.str("type") {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(self.refuse(
                    conn,
                    m,
                    ErrorCode::UnknownType,
                    "Missing message type",
                    |o| o,
                ))
            }
            Err(_) => {
                return Err(self.refuse(
                    conn,
                    m,
                    ErrorCode::UnknownType,
                    "The message type must be a string",
                    |o| o,
                ))
            }
        };
        let Some(kind) = MsgType::parse(&ty) else {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::UnknownType,
                &format!("Unknown message type: {}", clip(&ty, 64)),
                |o| o,
            ));
        };
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
            MsgType::Heartbeat => {
                conn.send_text(Obj::typed("heartbeat_response").now().finish());
                Ok(())
            }
            MsgType::Handshake => self.on_handshake(conn, m),
            MsgType::Auth => self.on_auth(conn, m),
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

    // --- Field access: each returns the refusal already sent on error. ---

    fn bad_field(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        ty: MsgType,
        field: &str,
        why: &str,
    ) -> Refused {
        self.refuse(
            conn,
            m,
            ErrorCode::InvalidMessage,
            &format!("{}: field '{field}' {why}", ty.as_str()),
            |o| o.str("field", field),
        )
    }

    fn too_long(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        field: &str,
        limit: &str,
        max: usize,
    ) -> Refused {
        self.refuse(
            conn,
            m,
            ErrorCode::LimitExceeded,
            &format!("field '{field}' is longer than {max} bytes ({limit})"),
            |o| {
                o.str("field", field)
                    .str("limit", limit)
                    .u64("max", max as u64)
            },
        )
    }

    /// An optional string field, at most `max` bytes (`limit` names the setting).
    fn opt_str<'t>(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'t>,
        ty: MsgType,
        field: &str,
        (limit, max): (&str, usize),
    ) -> Result<Option<Cow<'t, str>>, Refused> {
        match m.str(field) {
            Ok(Some(s)) if s.len() > max => Err(self.too_long(conn, m, field, limit, max)),
            Ok(s) => Ok(s),
            Err(WrongType { expected }) => {
                Err(self.bad_field(conn, m, ty, field, &format!("must be {expected}")))
            }
        }
    }

    /// A required, non-empty string field.
    fn req_str<'t>(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'t>,
        ty: MsgType,
        field: &str,
        bound: (&str, usize),
    ) -> Result<Cow<'t, str>, Refused> {
        match self.opt_str(conn, m, ty, field, bound)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.bad_field(conn, m, ty, field, "is missing or empty")),
        }
    }

    /// An id (`requestId`, `messageId`): a non-empty string or a number
    /// (kept as written), at most `max_id_length` bytes.
    fn opt_id(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        ty: MsgType,
        field: &str,
    ) -> Result<Option<String>, Refused> {
        let Some(f) = m.get(field) else {
            return Ok(None);
        };
        let max = self.shared.config.max_id_length;
        let id = if f.is_number() {
            String::from_utf8_lossy(f.raw()).into_owned()
        } else {
            match f.as_str() {
                Ok(s) if !s.is_empty() => s.into_owned(),
                _ => {
                    return Err(self.bad_field(
                        conn,
                        m,
                        ty,
                        field,
                        "must be a non-empty string or a number",
                    ))
                }
            }
        };
        if id.len() > max {
            return Err(self.too_long(conn, m, field, "max_id_length", max));
        }
        Ok(Some(id))
    }

    fn req_id(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        ty: MsgType,
        field: &str,
    ) -> Result<String, Refused> {
        self.opt_id(conn, m, ty, field)?
            .ok_or_else(|| self.bad_field(conn, m, ty, field, "is missing"))
    }

    fn id_bound(&self) -> (&'static str, usize) {
        ("max_id_length", self.shared.config.max_id_length)
    }

    fn name_bound(&self) -> (&'static str, usize) {
        ("max_name_length", self.shared.config.max_name_length)
    }

    fn topic_bound(&self) -> (&'static str, usize) {
        ("max_topic_length", self.shared.config.max_topic_length)
    }

    // --- Handshake and authentication ---

    /// Client types some credential is bound to: only that credential may
    /// claim them.
    fn reserved_type(&self, ct: &str) -> bool {
        self.shared
            .config
            .auth_tokens
            .iter()
            .any(|t| t.client_type() == Some(ct))
    }

    /// May a connection holding `grant` be of client type `ct`?
    fn type_allowed(&self, grant: &Grant, ct: &str) -> bool {
        match &grant.bound_type {
            Some(b) => b == ct,
            None => !self.reserved_type(ct),
        }
    }

    fn on_handshake(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::Handshake;
        let ct = self.req_str(conn, m, ty, "clientType", self.name_bound())?;
        let device = self.opt_str(conn, m, ty, "deviceId", self.id_bound())?;
        let cfg = &self.shared.config;
        let reply_fail = |msg: &str, code: Option<ErrorCode>| {
            let mut o = Obj::typed("handshake_response")
                .bool("success", false)
                .str("clientId", &conn.client_id)
                .str("message", msg);
            if let Some(c) = code {
                o = o.str("code", c.as_str());
            }
            conn.send_text(o.finish());
        };
        if !cfg.client_types.iter().any(|t| *t == *ct) {
            reply_fail(
                &format!(
                    "Unknown client type: {} (allowed: {})",
                    clip(&ct, 64),
                    cfg.client_types.join(", ")
                ),
                None,
            );
            return Ok(());
        }
        // The client type a credential allows is fixed at authentication:
        // a later handshake cannot widen it.
        let grant = conn.client.borrow().grant.clone();
        if let Some(g) = grant {
            if !self.type_allowed(&g, &ct) {
                self.seclog.log(
                    SecEvent::Forbidden,
                    self.id,
                    conn.peer,
                    &conn.client_id,
                    || {
                        format!(
                            "handshake as `{}` after authenticating for another client type",
                            clip(&ct, 64)
                        )
                    },
                );
                reply_fail(
                    &format!(
                        "Client type {} is not allowed for the credential this connection authenticated with",
                        clip(&ct, 64)
                    ),
                    Some(ErrorCode::Forbidden),
                );
                self.count_error(conn);
                return Ok(());
            }
        }
        {
            let mut c = conn.client.borrow_mut();
            c.client_type = Some(ct.to_string());
            c.device_id = device.map(Cow::into_owned);
        }
        conn.send_text(
            Obj::typed("handshake_response")
                .bool("success", true)
                .str("clientId", &conn.client_id)
                .str("clientType", &ct)
                .finish(),
        );
        self.shared.events.emit(|| Event::ClientHandshake {
            client_id: conn.client_id.clone(),
            client_type: ct.to_string(),
        });
        Ok(())
    }

    /// The credential `token` is, if any: constant time in every entry.
    fn credential(&self, token: &str) -> Option<Grant> {
        let cfg = &self.shared.config;
        let t = token.as_bytes();
        let mut found = None;
        if let Some(a) = cfg.auth_token.as_deref() {
            if bool::from(a.as_bytes().ct_eq(t)) {
                found = Some(Grant {
                    bound_type: None,
                    scope: "token".to_owned(),
                });
            }
        }
        for (i, at) in cfg.auth_tokens.iter().enumerate() {
            if bool::from(at.token().as_bytes().ct_eq(t)) && found.is_none() {
                found = Some(Grant {
                    bound_type: at.client_type().map(str::to_owned),
                    scope: format!("token:{i}"),
                });
            }
        }
        found
    }

    fn on_auth(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let cfg = &self.shared.config;
        let token = match m.str("token") {
            Ok(t) => t.unwrap_or_default(),
            Err(_) => {
                return Err(self.bad_field(conn, m, MsgType::Auth, "token", "must be a string"))
            }
        };
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
            reply(true, "Authentication not required");
            return Ok(());
        }
        if conn.client.borrow().authenticated {
            // What the first auth granted stays; a second one changes nothing.
            reply(true, "Already authenticated");
            return Ok(());
        }
        let client_type = conn.client.borrow().client_type.clone();
        let grant = (!token.is_empty())
            .then(|| self.credential(&token))
            .flatten()
            .filter(|g| {
                client_type
                    .as_deref()
                    .is_none_or(|ct| self.type_allowed(g, ct))
            });
        if let Some(g) = grant {
            let mut c = conn.client.borrow_mut();
            c.authenticated = true;
            c.grant = Some(g);
            drop(c);
            reply(true, "Authenticated");
            self.shared.events.emit(|| Event::ClientAuthenticated {
                client_id: conn.client_id.clone(),
            });
            return Ok(());
        }
        let failures = {
            let mut c = conn.client.borrow_mut();
            c.auth_failures += 1;
            c.auth_failures
        };
        self.seclog.log(
            SecEvent::AuthFailed,
            self.id,
            conn.peer,
            &conn.client_id,
            || {
                format!(
                    "{} token (attempt {failures} of {})",
                    if token.is_empty() {
                        "missing"
                    } else {
                        "invalid"
                    },
                    cfg.max_auth_failures
                )
            },
        );
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
            self.seclog.log(
                SecEvent::AuthLockout,
                self.id,
                conn.peer,
                &conn.client_id,
                || format!("{failures} failed auth attempts"),
            );
            self.shared.events.emit(|| Event::ClientError {
                client_id: conn.client_id.clone(),
                message: format!("{failures} failed auth attempts"),
                code: close::POLICY,
            });
        }
        Ok(())
    }

    // --- Data ingestion ---

    fn on_data(&self, conn: &Rc<Conn>, m: &Msg<'_>, legacy: bool) -> Handled {
        let cfg = &self.shared.config;
        let ty = if legacy {
            MsgType::SensorData
        } else {
            MsgType::Data
        };
        // sensor_data: every field but `type` is the data, as sent.
        let legacy_data;
        let (data, data_type): (&[u8], Cow<'_, str>) = if legacy {
            legacy_data = m.object_without("type");
            (&legacy_data, Cow::Borrowed("sensor"))
        } else {
            let Some(d) = m.get("data") else {
                return Err(self.bad_field(conn, m, ty, "data", "is missing"));
            };
            let dt = self
                .opt_str(conn, m, ty, "dataType", self.name_bound())?
                .unwrap_or(Cow::Borrowed("generic"));
            (d.raw(), dt)
        };
        let table_name = self.opt_str(conn, m, ty, "table", self.name_bound())?;
        let message_id = self.opt_id(conn, m, ty, "messageId")?;
        if cfg.enable_data_validation && !cfg.required_fields.is_empty() {
            let d = Field::from_validated(data);
            let missing: Vec<&str> = cfg
                .required_fields
                .iter()
                .map(String::as_str)
                .filter(|f| d.get(f).is_none())
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
                conn.send_text(
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
                return Ok(());
            }
        }
        let ts = crate::protocol::json::now_shared();
        let table = match table_name.as_deref() {
            None => &self.tables[0],
            Some(t) if let Some(known) = self.tables.iter().find(|k| &***k == t) => known,
            Some(t) => {
                conn.send_text(
                    Obj::typed("data_response")
                        .bool("success", false)
                        .str("message", &format!("Table not allowed: {t}"))
                        .str("timestamp", &ts)
                        .finish(),
                );
                return Ok(());
            }
        };
        match &self.shared.store {
            Some(store) => {
                let (device, scope) = {
                    let c = conn.client.borrow();
                    (
                        c.device_id.clone(),
                        c.grant
                            .as_ref()
                            .map(|g| g.scope.clone())
                            .unwrap_or_default(),
                    )
                };
                let body = self.record_body(
                    conn,
                    &data_type,
                    &ts,
                    data,
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
                        scope,
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
            data_type: data_type.to_string(),
            data: to_serde(data),
            timestamp: ts.to_string(),
        });
        Ok(())
    }

    /// The stored form of a record, without `insertId` (the writer adds it).
    /// `data` goes in as the client sent it. Encrypted fields are sealed
    /// here, on the shard, so encryption runs in parallel across shards and
    /// plaintext never reaches the writer.
    fn record_body(
        &self,
        conn: &Rc<Conn>,
        data_type: &str,
        ts: &str,
        data: &[u8],
        device: Option<&str>,
        message_id: Option<&str>,
    ) -> Vec<u8> {
        let cfg = &self.shared.config;
        // Sealed in the text: every other byte stays as the client sent it.
        let sealed = match &self.shared.field_key {
            Some(k) if !cfg.fields_to_encrypt.is_empty() => Some(
                k.encrypt_fields_text(data, &cfg.fields_to_encrypt)
                    .unwrap_or_else(|| {
                        let mut d = to_serde(data);
                        k.encrypt_fields(&mut d, &cfg.fields_to_encrypt);
                        serde_json::to_vec(&d).expect("value serialises")
                    }),
            ),
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
            .raw("data", sealed.as_deref().unwrap_or(data))
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
        let mut failed = 0usize;
        let mut first_error = None;
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
                    // The detail (it may name server paths) stays in the
                    // log and the event; the client learns only that
                    // nothing was stored.
                    if let Some(conn) = &conn {
                        conn.send_text(
                            Obj::typed("data_response")
                                .bool("success", false)
                                .str("code", ErrorCode::StorageUnavailable.as_str())
                                .str("message", "Storage unavailable: the record was not stored")
                                .str("timestamp", &p.timestamp)
                                .finish(),
                        );
                    }
                    failed += 1;
                    if first_error.is_none() {
                        first_error = Some(message.clone());
                    }
                    self.shared.events.emit(|| Event::DatabaseError {
                        client_id: client_id(),
                        table: p.table.to_string(),
                        message: message.clone(),
                    });
                }
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(shard = self.id, records = failed, error = %e, "store write failed");
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
    fn store_query(
        &self,
        conn: &Rc<Conn>,
        request_id: String,
        data: Option<Field<'_>>,
        guard: (PendingGuard, HeavyGuard),
    ) {
        let Some(store) = self.shared.store.clone() else {
            return send_result(
                conn,
                "response",
                &request_id,
                false,
                &json_string("Persistence is off"),
            );
        };
        let d = data
            .map(|d| to_serde(d.raw()))
            .unwrap_or(serde_json::Value::Null);
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
            let _guard = guard;
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

    // --- Requests and RPC ---

    fn on_call(&self, conn: &Rc<Conn>, m: &Msg<'_>, kind: CallKind) -> Handled {
        let (ty, name_field, data_field, reply_ty) = match kind {
            CallKind::Endpoint => (MsgType::Request, "endpoint", "data", "response"),
            CallKind::Method => (MsgType::RpcCall, "method", "params", "rpc_response"),
        };
        let request_id = self.req_id(conn, m, ty, "requestId")?;
        let name = self.req_str(conn, m, ty, name_field, self.name_bound())?;
        let data = m.get(data_field);
        let body = data.map_or(&b"null"[..], |d| d.raw());
        let cfg = &self.shared.config;
        if conn.client.borrow().pending_calls >= cfg.max_pending_requests {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::LimitExceeded,
                &format!(
                    "{} requests are already waiting for an answer (max_pending_requests)",
                    cfg.max_pending_requests
                ),
                |o| {
                    o.str("limit", "max_pending_requests")
                        .u64("max", cfg.max_pending_requests as u64)
                },
            ));
        }
        self.shared.events.emit(|| match kind {
            CallKind::Endpoint => Event::Request {
                client_id: conn.client_id.clone(),
                request_id: request_id.clone(),
                endpoint: name.to_string(),
            },
            CallKind::Method => Event::RpcCall {
                client_id: conn.client_id.clone(),
                request_id: request_id.clone(),
                method: name.to_string(),
            },
        });
        let is_service = conn.client.borrow().client_type.as_deref() == Some("service");
        // Built-in endpoints.
        if kind == CallKind::Endpoint {
            match &*name {
                "echo" => {
                    send_result(conn, reply_ty, &request_id, true, body);
                    return Ok(());
                }
                "server.status" | "store.query" if !is_service => {
                    let err = json_string(&format!("{name} is for service clients"));
                    send_result(conn, reply_ty, &request_id, false, &err);
                    return Ok(());
                }
                "server.status" | "store.query" => {
                    // One at a time per connection: each may be large.
                    if conn.client.borrow().heavy_in_flight {
                        return Err(self.refuse(
                            conn,
                            m,
                            ErrorCode::LimitExceeded,
                            &format!(
                                "{name}: one server.status or store.query at a time per connection"
                            ),
                            |o| o.str("limit", "heavy_requests_in_flight").u64("max", 1),
                        ));
                    }
                    conn.client.borrow_mut().heavy_in_flight = true;
                    let guard = (PendingGuard::calls(conn), HeavyGuard(conn.clone()));
                    if name == "store.query" {
                        self.store_query(conn, request_id, data, guard);
                    } else {
                        self.server_status(conn, request_id, guard);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        if let Some(h) = self.shared.registry.handler(kind, &name) {
            let cc = CallContext {
                client_id: conn.client_id.clone(),
                client_type: conn.client.borrow().client_type.clone(),
                name: name.to_string(),
            };
            let fut = std::panic::AssertUnwindSafe(h(cc, to_serde(body))).catch_unwind();
            let timeout = cfg.request_timeout;
            let conn = conn.clone();
            let guard = PendingGuard::calls(&conn);
            tokio::task::spawn_local(async move {
                let _guard = guard;
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
            return Ok(());
        }
        if let Some(reg) = self.shared.registry.service(kind, &name) {
            let call_id = self.next_call_id();
            self.calls.borrow_mut().insert(
                call_id,
                Waiting {
                    key: conn.key,
                    request_id,
                    reply_ty,
                    _pending: PendingGuard::calls(conn),
                },
            );
            self.send_to_shard(
                reg.shard,
                ShardMsg::Forward {
                    key: reg.key,
                    kind,
                    name: name.into_owned(),
                    body: Bytes::copy_from_slice(body),
                    reply_shard: self.id,
                    call_id,
                },
            );
            self.arm_call_timeout(call_id);
            return Ok(());
        }
        let what = match kind {
            CallKind::Endpoint => format!("Unknown endpoint: {name}"),
            CallKind::Method => format!("Method not found: {name}"),
        };
        send_result(conn, reply_ty, &request_id, false, &json_string(&what));
        Ok(())
    }

    /// `server.status` for a service client: at most `status_max_clients`
    /// clients listed.
    fn server_status(
        &self,
        conn: &Rc<Conn>,
        request_id: String,
        guard: (PendingGuard, HeavyGuard),
    ) {
        let shared = self.shared.clone();
        let conn = conn.clone();
        tokio::task::spawn_local(async move {
            let _guard = guard;
            let mut status = crate::server::collect_status(&shared).await;
            let max = shared.config.status_max_clients;
            let total = status.clients.len();
            status.clients.truncate(max);
            let mut v = serde_json::to_value(&status).expect("status serialises");
            if total > max {
                v["clientsTruncated"] = serde_json::Value::Bool(true);
                v["clientsListed"] = max.into();
            }
            let body = serde_json::to_vec(&v).expect("status serialises");
            send_result(&conn, "response", &request_id, true, &body);
        });
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
        let target = Target::Remote {
            shard: reply_shard,
            call_id,
        };
        match self.conn(key) {
            Some(conn) => {
                self.issue_request(&conn, kind, &name, &body, target);
            }
            None => self.complete(
                target,
                false,
                Bytes::from(json_string("Service unavailable")),
            ),
        }
    }

    /// Send a server-initiated `request`/`rpc_call` to a local client and
    /// remember, until `request_timeout`, where its answer goes. The
    /// request is a frame pushed from elsewhere: it obeys the client's
    /// outbound bound like a publish (a client that does not read is closed
    /// as a slow consumer), and at most `max_pending_requests` wait on one
    /// client. Returns the request id, or `None` if the request failed at
    /// once (the target has been told).
    pub(crate) fn issue_request(
        &self,
        conn: &Rc<Conn>,
        kind: CallKind,
        name: &str,
        body: &[u8],
        target: Target,
    ) -> Option<String> {
        let max = self.shared.config.max_pending_requests;
        if conn.client.borrow().pending_served >= max {
            self.complete(
                target,
                false,
                Bytes::from(json_string(&format!(
                    "Service busy: {max} requests already waiting for it (max_pending_requests)"
                ))),
            );
            return None;
        }
        // Unguessable: another connection cannot answer in its place (and
        // an answer from another connection is refused anyway).
        let n = self.next_call_id();
        let srv_id = format!("srv-{}-{}-{:016x}", self.id, n, self.id_key.hash_one(n));
        let msg = match kind {
            CallKind::Endpoint => Obj::typed("request")
                .str("requestId", &srv_id)
                .str("endpoint", name)
                .raw("data", body),
            CallKind::Method => Obj::typed("rpc_call")
                .str("requestId", &srv_id)
                .str("method", name)
                .raw("params", body),
        }
        .finish();
        let frame = crate::ws::frame::encode(crate::ws::frame::OpCode::Text, false, &msg);
        if !conn.push_external(self, true, &msg, &frame) {
            self.complete(
                target,
                false,
                Bytes::from(json_string("Service unavailable")),
            );
            return None;
        }
        // Forget it with the caller's timeout: a routed caller's shard
        // answers "timed out" at the same moment, whichever comes first; an
        // API caller has its own timer, so give it a second to fire first.
        let mut timeout = self.shared.config.request_timeout;
        if matches!(target, Target::Api(_)) {
            timeout += std::time::Duration::from_secs(1);
        }
        self.served.borrow_mut().insert(
            srv_id.clone(),
            Served {
                key: conn.key,
                target,
                _pending: PendingGuard::served(conn),
            },
        );
        let (me, id) = (self.self_rc(), srv_id.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep(timeout).await;
            let gone = me.served.borrow_mut().remove(&id);
            if let Some(s) = gone {
                me.complete(
                    s.target,
                    false,
                    Bytes::from(json_string("Request timed out")),
                );
            }
        });
        Some(srv_id)
    }

    /// A client answered a server-initiated request.
    fn on_client_response(&self, conn: &Rc<Conn>, m: &Msg<'_>, ty: MsgType) -> Handled {
        let id = self.req_id(conn, m, ty, "requestId")?;
        let ok = match m.bool("success") {
            Ok(s) => s.unwrap_or(true),
            Err(_) => return Err(self.bad_field(conn, m, ty, "success", "must be true or false")),
        };
        // Only the connection the request went to may answer it.
        let served = {
            let mut served = self.served.borrow_mut();
            match served.get(&id) {
                Some(s) if s.key == conn.key => served.remove(&id),
                _ => None,
            }
        };
        let Some(served) = served else {
            self.seclog.log(
                SecEvent::UnknownReply,
                self.id,
                conn.peer,
                &conn.client_id,
                || format!("{} to unknown request id `{}`", ty.as_str(), clip(&id, 64)),
            );
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::UnknownRequest,
                "No request with this requestId is waiting for this connection's answer (late, unknown or not yours)",
                |o| o,
            ));
        };
        let body = if ok {
            m.get("data")
                .map_or_else(|| b"null".to_vec(), |d| d.raw().to_vec())
        } else {
            match m.get("error") {
                Some(e) if e.is_str() => e.raw().to_vec(),
                Some(e) => json_string(&String::from_utf8_lossy(e.raw())),
                None => json_string("Request failed"),
            }
        };
        self.complete(served.target, ok, Bytes::from(body));
        Ok(())
    }

    fn on_register(&self, conn: &Rc<Conn>, m: &Msg<'_>, register: bool) -> Handled {
        let ty = if register {
            MsgType::Register
        } else {
            MsgType::Unregister
        };
        let kind = match m.str("kind") {
            Ok(Some(k)) if k == "endpoint" => CallKind::Endpoint,
            Ok(Some(k)) if k == "method" => CallKind::Method,
            _ => {
                return Err(self.bad_field(
                    conn,
                    m,
                    ty,
                    "kind",
                    "must be \"endpoint\" or \"method\"",
                ))
            }
        };
        let name = self.req_str(conn, m, ty, "name", self.name_bound())?;
        let reply = |ok: bool, msg: Option<&str>, code: Option<ErrorCode>| {
            let mut o = Obj::typed(if register {
                "register_response"
            } else {
                "unregister_response"
            })
            .bool("success", ok)
            .str("kind", kind.as_str())
            .str("name", &name)
            .opt_str("message", msg);
            if let Some(c) = code {
                o = o.str("code", c.as_str());
            }
            conn.send_text(o.finish())
        };
        if conn.client.borrow().client_type.as_deref() != Some("service") {
            self.seclog.log(
                SecEvent::Forbidden,
                self.id,
                conn.peer,
                &conn.client_id,
                || format!("{} from a non-service client", ty.as_str()),
            );
            reply(
                false,
                Some("Only service clients may register handlers"),
                Some(ErrorCode::Forbidden),
            );
            return Ok(());
        }
        let me = Registrant {
            shard: self.id,
            key: conn.key,
        };
        let entry = (kind, name.to_string());
        if register {
            self.shared.registry.add_service(kind, &name, me);
            let mut c = conn.client.borrow_mut();
            if !c.registered.contains(&entry) {
                c.registered.push(entry);
            }
            drop(c);
            reply(true, None, None);
        } else {
            let removed = self.shared.registry.remove_service(kind, &name, &me);
            conn.client.borrow_mut().registered.retain(|e| *e != entry);
            reply(removed, (!removed).then_some("Not registered"), None);
        }
        Ok(())
    }

    // --- Pub/sub ---

    fn on_subscribe(&self, conn: &Rc<Conn>, m: &Msg<'_>, subscribe: bool) -> Handled {
        let ty = if subscribe {
            MsgType::Subscribe
        } else {
            MsgType::Unsubscribe
        };
        let t = self.req_str(conn, m, ty, "topic", self.topic_bound())?;
        if let Err(e) = topic::validate_pattern(&t) {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::InvalidMessage,
                &format!("{}: {e}", ty.as_str()),
                |o| o.str("field", "topic"),
            ));
        }
        let ok = if subscribe {
            let max = self.shared.config.max_subscriptions_per_connection;
            let mut c = conn.client.borrow_mut();
            if !c.subs.contains(&*t) {
                if c.subs.len() >= max {
                    drop(c);
                    return Err(self.refuse(
                        conn,
                        m,
                        ErrorCode::LimitExceeded,
                        &format!("subscribe: this connection holds {max} subscriptions already (max_subscriptions_per_connection)"),
                        |o| {
                            o.str("limit", "max_subscriptions_per_connection")
                                .u64("max", max as u64)
                                .str("topic", &t)
                        },
                    ));
                }
                c.subs.insert(t.as_ref().into());
                self.subs.borrow_mut().insert(&t, conn.key);
            }
            true
        } else {
            let removed = conn.client.borrow_mut().subs.remove(&*t);
            if removed {
                self.subs.borrow_mut().remove(&t, conn.key);
            }
            removed
        };
        let mut o = Obj::typed(if subscribe {
            "subscribe_response"
        } else {
            "unsubscribe_response"
        })
        .bool("success", ok)
        .str("topic", &t);
        if !ok {
            o = o.str("message", "Not subscribed");
        }
        conn.send_text(o.finish());
        if !ok {
            // Unsubscribing from what was never subscribed costs the error
            // budget, like any other refusal.
            self.count_error(conn);
            return Ok(());
        }
        self.shared.events.emit(|| {
            let (client_id, topic) = (conn.client_id.clone(), t.to_string());
            if subscribe {
                Event::Subscribed { client_id, topic }
            } else {
                Event::Unsubscribed { client_id, topic }
            }
        });
        Ok(())
    }

    fn on_publish(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::Publish;
        let t = self.req_str(conn, m, ty, "topic", self.topic_bound())?;
        if let Err(e) = topic::validate_publish(&t) {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::InvalidMessage,
                &format!("publish: {e}"),
                |o| o.str("field", "topic"),
            ));
        }
        let data = m.get("data").map_or(&b"null"[..], |d| d.raw());
        self.publish(&t, data, Some(&conn.client_id), Some(conn.key));
        conn.send_text(
            Obj::typed("publish_response")
                .bool("success", true)
                .str("topic", &t)
                .finish(),
        );
        self.shared.events.emit(|| Event::Published {
            client_id: conn.client_id.clone(),
            topic: t.to_string(),
        });
        Ok(())
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

    // --- Streams ---

    fn on_stream_start(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::StreamStart;
        let id = self.req_str(conn, m, ty, "streamId", self.id_bound())?;
        let stream_type = self
            .opt_str(conn, m, ty, "streamType", self.name_bound())?
            .unwrap_or(Cow::Borrowed("data"))
            .into_owned();
        let max = self.shared.config.max_streams_per_connection;
        let (exists, full) = {
            let c = conn.client.borrow();
            (c.streams.contains_key(&*id), c.streams.len() >= max)
        };
        if !exists && full {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::LimitExceeded,
                &format!("stream_start: {max} streams are open on this connection already (max_streams_per_connection)"),
                |o| {
                    o.str("limit", "max_streams_per_connection")
                        .u64("max", max as u64)
                        .str("streamId", &id)
                },
            ));
        }
        let mut o = Obj::typed("stream_start_response")
            .str("streamId", &id)
            .bool("success", !exists);
        if exists {
            o = o.str("message", "Stream already active");
        } else {
            conn.client.borrow_mut().streams.insert(
                id.to_string(),
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
                stream_id: id.to_string(),
                stream_type,
            });
        }
        Ok(())
    }

    fn on_stream_data(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::StreamData;
        let id = self.req_str(conn, m, ty, "streamId", self.id_bound())?;
        let seq = match m.u64("sequenceNumber") {
            Ok(s) => s,
            Err(WrongType { expected }) => {
                return Err(self.bad_field(
                    conn,
                    m,
                    ty,
                    "sequenceNumber",
                    &format!("must be {expected}"),
                ))
            }
        };
        let bytes = match m.get("data") {
            None => 0,
            Some(d) if d.is_str() => match base64_len(&d.as_str().unwrap_or_default()) {
                Some(n) => n,
                None => return Err(self.bad_field(
                    conn,
                    m,
                    ty,
                    "data",
                    "is a string but not base64 (send bytes as base64, or any other JSON value)",
                )),
            },
            Some(d) => d.raw().len() as u64,
        };
        self.on_stream_chunk(conn, Some(m), &id, seq, bytes);
        Ok(())
    }

    /// One chunk of a client stream (JSON `stream_data`, `m`, or a binary frame).
    fn on_stream_chunk(
        &self,
        conn: &Rc<Conn>,
        m: Option<&Msg<'_>>,
        id: &str,
        seq: Option<u64>,
        bytes: u64,
    ) {
        enum Bad {
            Unknown,
            Gap(u64, u64),
            First(u64),
            Range,
        }
        let res = {
            let mut c = conn.client.borrow_mut();
            match c.streams.get_mut(id) {
                None => Err(Bad::Unknown),
                Some(s) => {
                    let got = seq.or(s.expected).unwrap_or(0);
                    match s.expected {
                        Some(exp) if exp != got => Err(Bad::Gap(exp, got)),
                        None if got > 1 => Err(Bad::First(got)),
                        _ => match got.checked_add(1) {
                            None => Err(Bad::Range),
                            Some(next) => {
                                s.expected = Some(next);
                                s.chunks += 1;
                                s.bytes += bytes;
                                Ok(got)
                            }
                        },
                    }
                }
            }
        };
        let err = |code, msg: &str, extra: &dyn Fn(Obj) -> Obj| {
            self.error_reply(conn, m, code, msg, |o| extra(o.str("streamId", id)))
        };
        match res {
            Ok(seq) => self.shared.events.emit(|| Event::StreamData {
                client_id: conn.client_id.clone(),
                stream_id: id.to_owned(),
                sequence: seq,
                bytes,
            }),
            Err(Bad::Unknown) => err(
                ErrorCode::UnknownStream,
                &format!("Unknown stream: {id}"),
                &|o| o,
            ),
            Err(Bad::Gap(expected, got)) => err(
                ErrorCode::StreamSequence,
                &format!("Stream {id}: expected sequenceNumber {expected}, got {got}"),
                &|o| o.u64("expected", expected).u64("got", got),
            ),
            Err(Bad::First(got)) => err(
                ErrorCode::StreamSequence,
                &format!("Stream {id}: the first sequenceNumber must be 0 or 1, got {got}"),
                &|o| o.u64("expected", 1).u64("got", got),
            ),
            Err(Bad::Range) => err(
                ErrorCode::InvalidMessage,
                &format!(
                    "Stream {id}: sequenceNumber {} leaves no room for a next one",
                    u64::MAX
                ),
                &|o| o.str("field", "sequenceNumber"),
            ),
        }
    }

    fn on_stream_end(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let id = self.req_str(conn, m, MsgType::StreamEnd, "streamId", self.id_bound())?;
        let removed = conn.client.borrow_mut().streams.remove(&*id);
        let Some(s) = removed else {
            return Err(self.refuse(
                conn,
                m,
                ErrorCode::UnknownStream,
                &format!("Unknown stream: {id}"),
                |o| o.str("streamId", &id),
            ));
        };
        conn.send_text(
            Obj::typed("stream_end_response")
                .str("streamId", &id)
                .str("streamType", &s.stream_type)
                .bool("success", true)
                .u64("chunks", s.chunks)
                .u64("bytes", s.bytes)
                .finish(),
        );
        self.shared.events.emit(|| Event::StreamEnded {
            client_id: conn.client_id.clone(),
            stream_id: id.to_string(),
            chunks: s.chunks,
            bytes: s.bytes,
        });
        Ok(())
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
            let f = Feature::Streaming.as_str();
            return self.send_error(
                conn,
                ErrorCode::FeatureDisabled,
                &format!("The {f} feature is disabled"),
                |o| o.str("feature", f),
            );
        }
        match stream::parse(&b) {
            Ok(c) => self.on_stream_chunk(
                conn,
                None,
                c.stream_id,
                Some(c.sequence),
                c.data.len() as u64,
            ),
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

/// At most `max` bytes of `s` (on a char boundary), for messages that
/// quote client text.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decoded length of base64 text, or `None` if it is not base64.
fn base64_len(s: &str) -> Option<u64> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .map(|b| b.len() as u64)
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
