//! What a connection is once it has authenticated, and what follows from
//! it: the device identity (indexed per shard for `send_to_device` and the
//! duplicate-device policy), the permission check every handler asks
//! ([`ShardCtx::permit`]), the expiry timer (`token_expired`, then close
//! 4001 after `jwt.expired_grace`), `refresh`, and a credential presented
//! at the upgrade (`Authorization: Bearer`, `?token=`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use super::reply::{clip, Handled};
use crate::auth::{AuthError, Identity, Op};
use crate::config::DuplicateDevice;
use crate::events::Event;
use crate::metrics::{OutLabel, RejectReason};
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::Msg;
use crate::protocol::ErrorCode;
use crate::shard::client::Conn;
use crate::shard::ctx::ShardCtx;
use crate::shard::mesh::ShardMsg;
use crate::shard::seclog::SecEvent;
use crate::ws::close;

/// Whole seconds from now until `at` (0 if past).
pub(crate) fn secs_until(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs())
}

impl ShardCtx {
    /// May `conn` do `op` on `subject`? A connection without a permission
    /// set may do everything; otherwise deny by default, with a `forbidden`
    /// error naming the operation and subject (and echoing `requestId`).
    pub(super) fn permit(&self, conn: &Rc<Conn>, m: &Msg<'_>, op: Op, subject: &str) -> Handled {
        let allowed = conn
            .client
            .borrow()
            .grant
            .as_ref()
            .and_then(|g| g.permissions.as_ref())
            .is_none_or(|p| p.allows(op, subject));
        if allowed {
            return Ok(());
        }
        self.seclog.log(
            SecEvent::Forbidden,
            self.id,
            conn.peer,
            &conn.client_id,
            || format!("{} `{}` not permitted", op.as_str(), clip(subject, 64)),
        );
        Err(self.refuse(
            conn,
            m,
            ErrorCode::Forbidden,
            &format!(
                "{} `{}` is not permitted for this credential",
                op.as_str(),
                clip(subject, 128)
            ),
            |o| o.str("operation", op.as_str()).str("topic", subject),
        ))
    }

    /// Is `id` usable on `conn` (its client type, if it has one yet)?
    pub(super) fn identity_fits(&self, conn: &Conn, id: &Identity) -> bool {
        let ct = conn.client.borrow().client_type.clone();
        if let Some(b) = &id.client_type {
            if !self.shared.config.client_types.iter().any(|t| t == b) {
                return false;
            }
        }
        ct.as_deref().is_none_or(|ct| self.type_allowed(id, ct))
    }

    /// Make `id` the connection's identity: authenticated, its device id
    /// and client type taken from the credential, indexed for
    /// `send_to_device`, its expiry timer armed, and older connections of
    /// the same device replaced if the policy says so.
    pub(super) fn install_identity(&self, conn: &Rc<Conn>, id: Identity) {
        let device = id.device_id.clone();
        {
            let mut c = conn.client.borrow_mut();
            c.authenticated = true;
            c.auth_gen += 1;
            if let Some(d) = &device {
                c.device_id = Some(d.to_string());
            }
            if c.client_type.is_none() {
                c.client_type = id.client_type.clone();
            }
            c.grant = Some(id);
        }
        if let Some(d) = device {
            let mut idx = self.devices.borrow_mut();
            let keys = idx.entry(d.clone()).or_default();
            if !keys.contains(&conn.key) {
                keys.push(conn.key);
            }
            drop(idx);
            if self.shared.config.on_duplicate_device == DuplicateDevice::Replace {
                let keep = (self.id, conn.key);
                self.replace_device(&d, keep);
                for (shard, mb) in self.shared.mailboxes.iter().enumerate() {
                    if shard != self.id {
                        mb.send(ShardMsg::ReplaceDevice {
                            device: d.clone(),
                            keep,
                        });
                    }
                }
            }
        }
        self.arm_expiry(conn);
    }

    /// This shard's live connections of `device`.
    pub(super) fn device_conns(&self, device: &str) -> Vec<Rc<Conn>> {
        let idx = self.devices.borrow();
        let keys = idx.get(device).map_or(&[][..], Vec::as_slice);
        keys.iter().filter_map(|&k| self.conn(k)).collect()
    }

    /// Close this shard's connections of `device` except `keep` (4002).
    pub(super) fn replace_device(&self, device: &str, keep: (usize, u64)) {
        for c in self.device_conns(device) {
            if (self.id, c.key) != keep {
                c.close_with(
                    close::REPLACED,
                    "replaced by a newer connection of this device",
                );
            }
        }
    }

    /// Queue `payload` on every connection of `device` here; how many.
    pub(super) fn send_to_device_local(&self, device: &str, payload: &bytes::Bytes) -> usize {
        let frame = crate::ws::frame::encode(crate::ws::frame::OpCode::Text, false, payload);
        self.device_conns(device)
            .iter()
            .filter(|c| self.push(c, OutLabel::Direct, true, payload, &frame))
            .count()
    }

    /// Drop `conn` from the device index (it is closing).
    pub(super) fn forget_device(&self, key: u64, device: Option<&Arc<str>>) {
        let Some(d) = device else { return };
        let mut idx = self.devices.borrow_mut();
        if let Some(keys) = idx.get_mut(d) {
            keys.retain(|&k| k != key);
            if keys.is_empty() {
                idx.remove(d);
            }
        }
    }

    /// At the credential's expiry: `token_expired` with `closeIn`, then,
    /// unless a `refresh` came meanwhile, close 4001 after the grace.
    fn arm_expiry(&self, conn: &Rc<Conn>) {
        let (gen, at) = {
            let c = conn.client.borrow();
            (c.auth_gen, c.grant.as_ref().and_then(|g| g.expires_at))
        };
        let Some(at) = at else { return };
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        let grace = self.shared.config.jwt.expired_grace;
        let (weak, shard) = (Rc::downgrade(conn), self.weak());
        let current = move |weak: &std::rc::Weak<Conn>| {
            weak.upgrade().filter(|c| c.client.borrow().auth_gen == gen)
        };
        tokio::task::spawn_local(async move {
            tokio::time::sleep(wait).await;
            let Some(c) = current(&weak) else { return };
            if let Some(ctx) = shard.upgrade() {
                ctx.count_code(ErrorCode::TokenExpired);
            }
            c.send_text(
                Obj::typed("error")
                    .str("code", ErrorCode::TokenExpired.as_str())
                    .str(
                        "message",
                        "The credential expired: send refresh with a new token",
                    )
                    .u64("closeIn", grace.as_secs_f64().ceil() as u64)
                    .finish(),
            );
            drop(c);
            tokio::time::sleep(grace).await;
            let Some(c) = current(&weak) else { return };
            c.close_with(close::TOKEN_EXPIRED, "token expired");
            if let Some(ctx) = shard.upgrade() {
                ctx.seclog
                    .log(SecEvent::AuthTimeout, ctx.id, c.peer, &c.client_id, || {
                        "credential expired without refresh".to_owned()
                    });
            }
        });
    }

    /// A credential presented at the upgrade, verified by the transport:
    /// installed, or why not (sent by [`Self::refuse_upgrade_credential`]
    /// after the `welcome`).
    pub(super) fn upgrade_credential(
        &self,
        conn: &Rc<Conn>,
        cred: Result<Identity, AuthError>,
    ) -> Result<(), String> {
        match cred {
            Ok(id) if self.identity_fits(conn, &id) => {
                self.install_identity(conn, id);
                self.shared.events.emit(|| Event::ClientAuthenticated {
                    client_id: conn.client_id.clone(),
                    device_id: conn.client.borrow().device_id.clone(),
                });
                Ok(())
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "client type not allowed".to_owned(),
                };
                self.seclog.log(
                    SecEvent::AuthFailed,
                    self.id,
                    conn.peer,
                    &conn.client_id,
                    || format!("upgrade credential refused: {why}"),
                );
                Err(why)
            }
        }
    }

    /// Tell the client its upgrade credential was refused and close 4003.
    pub(super) fn refuse_upgrade_credential(&self, conn: &Rc<Conn>, why: &str) {
        self.shared
            .admission
            .note_auth_failure(conn.client_ip.get());
        self.count_code(ErrorCode::AuthFailed);
        self.m.rejected[RejectReason::AuthFailed as usize].inc();
        conn.send_text(
            Obj::typed("error")
                .str("code", ErrorCode::AuthFailed.as_str())
                .str("message", &format!("Authentication failed: {why}"))
                .finish(),
        );
        conn.close_with(close::INVALID_CREDENTIALS, "invalid credentials");
    }

    /// `refresh`: a new credential for the same device. Permissions are
    /// re-read; subscriptions and registrations the new one does not allow
    /// are removed (`unsubscribed` / `unregistered`, reason `permission`).
    pub(super) fn on_refresh(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::Refresh;
        let token = self.req_str(conn, m, ty, "token", ("token", 64 * 1024))?;
        let reply = |ok: bool, msg: &str, expires_in: Option<u64>, code: Option<ErrorCode>| {
            let mut o = Obj::typed("refresh_response")
                .bool("success", ok)
                .str("message", msg);
            if let Some(e) = expires_in {
                o = o.u64("expiresIn", e);
            }
            if let Some(c) = code {
                o = o.str("code", c.as_str());
                self.count_code(c);
            }
            conn.send_text(o.finish());
        };
        if !self.shared.config.enable_authentication {
            reply(false, "Authentication is not enabled", None, None);
            return Ok(());
        }
        let verified = self.shared.auth.load().verify(&token, SystemTime::now());
        let id = match verified {
            Ok(id) => id,
            Err(AuthError::Invalid) => {
                reply(false, "Invalid token", None, Some(ErrorCode::AuthFailed));
                self.seclog.log(
                    SecEvent::AuthFailed,
                    self.id,
                    conn.peer,
                    &conn.client_id,
                    || "invalid token in refresh".to_owned(),
                );
                conn.close_with(close::INVALID_CREDENTIALS, "invalid credentials");
                return Ok(());
            }
            Err(e) => {
                reply(false, &e.to_string(), None, Some(ErrorCode::AuthFailed));
                self.count_error(conn);
                return Ok(());
            }
        };
        let (cur_device, cur_type) = {
            let c = conn.client.borrow();
            (
                c.grant.as_ref().and_then(|g| g.device_id.clone()),
                c.client_type.clone(),
            )
        };
        let same_device = cur_device.is_none() || cur_device == id.device_id;
        let type_ok = match (&id.client_type, &cur_type) {
            (Some(b), Some(ct)) => b == ct,
            _ => true,
        };
        if !same_device || !type_ok {
            reply(
                false,
                "The new credential is for another device or client type",
                None,
                Some(ErrorCode::Forbidden),
            );
            self.count_error(conn);
            return Ok(());
        }
        let expires_in = id.expires_at.map(secs_until);
        self.install_identity(conn, id);
        self.prune_to_permissions(conn);
        reply(true, "Refreshed", expires_in, None);
        Ok(())
    }

    /// Remove what the connection's (new) permissions no longer allow.
    fn prune_to_permissions(&self, conn: &Rc<Conn>) {
        let Some(perms) = conn
            .client
            .borrow()
            .grant
            .as_ref()
            .and_then(|g| g.permissions.clone())
        else {
            return;
        };
        let (subs, regs) = {
            let mut c = conn.client.borrow_mut();
            let subs: Vec<Box<str>> = c
                .subs
                .iter()
                .filter(|s| !perms.allows(Op::Subscribe, s))
                .cloned()
                .collect();
            for s in &subs {
                c.subs.remove(s);
            }
            let mut regs = Vec::new();
            c.registered.retain(|(kind, name)| {
                let keep = perms.allows(Op::Register, name);
                if !keep {
                    regs.push((*kind, name.clone()));
                }
                keep
            });
            (subs, regs)
        };
        for s in subs {
            self.subs.borrow_mut().remove(&s, conn.key);
            conn.send_text(
                Obj::typed("unsubscribed")
                    .str("topic", &s)
                    .str("reason", "permission")
                    .finish(),
            );
        }
        let me = crate::api::Registrant {
            shard: self.id,
            key: conn.key,
        };
        for (kind, name) in regs {
            self.shared.registry.remove_service(kind, &name, &me);
            conn.send_text(
                Obj::typed("unregistered")
                    .str("kind", kind.as_str())
                    .str("name", &name)
                    .str("reason", "permission")
                    .finish(),
            );
        }
    }
}
