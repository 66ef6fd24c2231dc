//! The session family: `heartbeat`, `handshake` and `auth`. A credential
//! is compared in constant time against every configured token; what it
//! grants (a client type, a de-duplication scope) is fixed for the
//! connection's life.

use std::borrow::Cow;
use std::rc::Rc;

use super::reply::{clip, Handled};
use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::Msg;
use crate::protocol::ErrorCode;
use crate::shard::client::{Conn, Grant};
use crate::shard::ctx::ShardCtx;
use crate::shard::seclog::SecEvent;
use crate::ws::close;

impl ShardCtx {
    /// `heartbeat`: answered at once.
    pub(super) fn on_heartbeat(&self, conn: &Rc<Conn>) -> Handled {
        conn.send_text(Obj::typed("heartbeat_response").now().finish());
        Ok(())
    }

    /// Client types some credential is bound to: only that credential may
    /// claim them.
    pub(super) fn reserved_type(&self, ct: &str) -> bool {
        self.shared.auth.load().reserved_type(ct)
    }

    /// May a connection holding `grant` be of client type `ct`?
    pub(super) fn type_allowed(&self, grant: &Grant, ct: &str) -> bool {
        match &grant.client_type {
            Some(b) => b == ct,
            None => !self.reserved_type(ct),
        }
    }

    pub(super) fn on_handshake(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
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
                self.count_code(c);
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
        // A credential's device id is the connection's: a handshake may
        // repeat it but not name another device.
        let bound_device = conn
            .client
            .borrow()
            .grant
            .as_ref()
            .and_then(|g| g.device_id.clone());
        if let (Some(b), Some(d)) = (&bound_device, &device) {
            if **b != **d {
                reply_fail(
                    &format!(
                        "deviceId {} does not match the device this connection authenticated as",
                        clip(d, 64)
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
            if bound_device.is_none() {
                c.device_id = device.map(Cow::into_owned);
            }
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

    /// The credential `token` is (see [`crate::auth::Authenticator::verify`]).
    pub(super) fn credential(&self, token: &str) -> Result<Grant, crate::auth::AuthError> {
        self.shared
            .auth
            .load()
            .verify(token, std::time::SystemTime::now())
    }

    pub(super) fn on_auth(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let cfg = &self.shared.config;
        let token = match m.str("token") {
            Ok(t) => t.unwrap_or_default(),
            Err(_) => {
                return Err(self.bad_field(conn, m, MsgType::Auth, "token", "must be a string"))
            }
        };
        let reply = |ok: bool, msg: &str| {
            let mut o = Obj::typed("auth_response")
                .bool("success", ok)
                .str("message", msg);
            if ok {
                let c = conn.client.borrow();
                if let Some(g) = &c.grant {
                    if let Some(d) = &g.device_id {
                        o = o.str("deviceId", d);
                    }
                    if let Some(x) = g.expires_at {
                        o = o.u64("expiresIn", super::identity::secs_until(x));
                    }
                }
            }
            conn.send_text(o.finish())
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
        let verified = if token.is_empty() {
            Err(crate::auth::AuthError::Invalid)
        } else {
            self.credential(&token)
        };
        let refused = match verified {
            Ok(g) if self.identity_fits(conn, &g) => {
                self.install_identity(conn, g);
                None
            }
            Ok(_) => Some("Invalid token".to_owned()),
            Err(crate::auth::AuthError::Invalid) => Some("Invalid token".to_owned()),
            Err(e) => Some(format!("Invalid token: {e}")),
        };
        if refused.is_none() {
            reply(true, "Authenticated");
            self.shared.events.emit(|| Event::ClientAuthenticated {
                client_id: conn.client_id.clone(),
                device_id: conn.client.borrow().device_id.clone(),
            });
            return Ok(());
        }
        let failures = {
            let mut c = conn.client.borrow_mut();
            c.auth_failures += 1;
            c.auth_failures
        };
        self.shared
            .admission
            .note_auth_failure(conn.client_ip.get());
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
                refused.as_deref().unwrap_or("Invalid token")
            },
        );
        if failures >= cfg.max_auth_failures {
            self.m.rejected[crate::metrics::RejectReason::AuthFailed as usize].inc();
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
}
