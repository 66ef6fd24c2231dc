//! The call family: `request` and `rpc_call` (built-in endpoints, handlers
//! the embedding program registered, services routed to the shard that
//! holds them), `response`/`rpc_response` to requests the server issued,
//! and `register`/`unregister` for service clients. Every wait is bounded:
//! `max_pending_requests` per connection and `request_timeout` per call.

use std::hash::BuildHasher;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::FutureExt;

use super::reply::{clip, json_string, send_result, Handled};
use super::to_serde;
use crate::api::{CallContext, CallKind, Registrant};
use crate::auth::Op;
use crate::events::Event;
use crate::metrics::{CallKindLabel, OutLabel, Outcome};
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::Msg;
use crate::protocol::ErrorCode;
use crate::shard::client::{Conn, HeavyGuard, PendingGuard};
use crate::shard::ctx::{Served, ShardCtx, Target, Waiting};
use crate::shard::mesh::{CallResult, ShardMsg};
use crate::shard::seclog::SecEvent;

impl ShardCtx {
    pub(super) fn on_call(&self, conn: &Rc<Conn>, m: &Msg<'_>, kind: CallKind) -> Handled {
        let (ty, name_field, data_field, reply_ty) = match kind {
            CallKind::Endpoint => (MsgType::Request, "endpoint", "data", "response"),
            CallKind::Method => (MsgType::RpcCall, "method", "params", "rpc_response"),
        };
        let started = std::time::Instant::now();
        let label = match kind {
            CallKind::Endpoint => CallKindLabel::Request,
            CallKind::Method => CallKindLabel::Rpc,
        };
        let request_id = self.req_id(conn, m, ty, "requestId")?;
        let name = self.req_str(conn, m, ty, name_field, self.name_bound())?;
        self.permit(conn, m, Op::Call, &name)?;
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
                    conn.m.call_done(label, Outcome::Ok, micros(started));
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
                let (outcome, body) = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(Ok(value))) => (
                        Outcome::Ok,
                        serde_json::to_vec(&value).expect("value serialises"),
                    ),
                    Ok(Ok(Err(msg))) => (Outcome::Error, json_string(&msg)),
                    Ok(Err(panic)) => (
                        Outcome::Error,
                        json_string(&format!("Handler failed: {}", panic_message(&panic))),
                    ),
                    Err(_) => (Outcome::Timeout, json_string("Request timed out")),
                };
                conn.m.call_done(label, outcome, micros(started));
                let ok = outcome == Outcome::Ok;
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
                    started,
                    kind: label,
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
        conn.m.call_done(label, Outcome::Error, micros(started));
        send_result(conn, reply_ty, &request_id, false, &json_string(&what));
        Ok(())
    }

    /// `server.status` for a service client: at most `status_max_clients`
    /// clients listed.
    pub(super) fn server_status(
        &self,
        conn: &Rc<Conn>,
        request_id: String,
        guard: (PendingGuard, HeavyGuard),
    ) {
        let shared = self.shared.clone();
        let conn = conn.clone();
        tokio::task::spawn_local(async move {
            let _guard = guard;
            let mut status = shared.collect_status().await;
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

    pub(super) fn arm_call_timeout(&self, call_id: u64) {
        let timeout = self.shared.config.request_timeout;
        let me = self.self_rc();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(timeout).await;
            let w = me.calls.borrow_mut().remove(&call_id);
            if let Some(w) = w {
                me.m.call_done(w.kind, Outcome::Timeout, micros(w.started));
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
    pub(super) fn complete(&self, target: Target, ok: bool, body: Bytes) {
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
    pub(super) fn on_call_result(&self, r: CallResult) {
        let Some(w) = self.calls.borrow_mut().remove(&r.call_id) else {
            return; // timed out already
        };
        let outcome = if r.ok { Outcome::Ok } else { Outcome::Error };
        self.m.call_done(w.kind, outcome, micros(w.started));
        if let Some(c) = self.conn(w.key) {
            send_result(&c, w.reply_ty, &w.request_id, r.ok, &r.body);
        }
    }

    /// A routed call arrived for a registrant on this shard.
    pub(super) fn on_forward(
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
    pub(super) fn issue_request(
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
        let label = match kind {
            CallKind::Endpoint => OutLabel::Request,
            CallKind::Method => OutLabel::RpcCall,
        };
        if !self.push(conn, label, true, &msg, &frame) {
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
    pub(super) fn on_client_response(&self, conn: &Rc<Conn>, m: &Msg<'_>, ty: MsgType) -> Handled {
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

    pub(super) fn on_register(&self, conn: &Rc<Conn>, m: &Msg<'_>, register: bool) -> Handled {
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
        if register {
            self.permit(conn, m, Op::Register, &name)?;
        }
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
                self.count_code(c);
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
}

/// Microseconds since `t`.
fn micros(t: std::time::Instant) -> u64 {
    t.elapsed().as_micros().min(u64::MAX as u128) as u64
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
