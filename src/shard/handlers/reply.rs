//! How handlers answer: the refusal every handler uses (it echoes the
//! message's `requestId`, so a client waiting on an id fails at once), the
//! error budget, the typed field readers (each bound is a config value
//! checked before anything is copied) and the small reply builders.

use std::borrow::Cow;
use std::rc::Rc;

use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::{Msg, WrongType};
use crate::protocol::ErrorCode;
use crate::shard::client::Conn;
use crate::shard::ctx::ShardCtx;
use crate::shard::seclog::SecEvent;
use crate::ws::close;

/// A refusal was sent to the client; the handler stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

/// What a handler returns: done, or refused (the refusal already sent).
pub(crate) type Handled = Result<(), Refused>;

impl ShardCtx {
    /// Send an `error` that answers no particular message (a binary frame,
    /// a stream chunk); closes the connection (1008) past
    /// `max_errors_per_minute`.
    pub(super) fn send_error(
        &self,
        conn: &Rc<Conn>,
        code: ErrorCode,
        message: &str,
        extra: impl FnOnce(Obj) -> Obj,
    ) {
        self.error_reply(conn, None, code, message, extra);
    }

    /// Refuse message `m` with an `error` that echoes its `requestId`.
    pub(super) fn refuse(
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

    pub(super) fn error_reply(
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
        self.count_code(code);
        self.count_error(conn);
    }

    /// Count an error code sent (`wshandler_errors_sent_total`).
    #[inline]
    pub(super) fn count_code(&self, code: ErrorCode) {
        self.m.errors[code as usize].inc();
    }

    /// Count an error against the connection's budget; close it (1008)
    /// when it is spent.
    pub(super) fn count_error(&self, conn: &Rc<Conn>) {
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

    pub(super) fn bad_field(
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

    pub(super) fn too_long(
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
    pub(super) fn opt_str<'t>(
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
    pub(super) fn req_str<'t>(
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
    pub(super) fn opt_id(
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

    pub(super) fn req_id(
        &self,
        conn: &Rc<Conn>,
        m: &Msg<'_>,
        ty: MsgType,
        field: &str,
    ) -> Result<String, Refused> {
        self.opt_id(conn, m, ty, field)?
            .ok_or_else(|| self.bad_field(conn, m, ty, field, "is missing"))
    }

    pub(super) fn id_bound(&self) -> (&'static str, usize) {
        ("max_id_length", self.shared.config.max_id_length)
    }

    pub(super) fn name_bound(&self) -> (&'static str, usize) {
        ("max_name_length", self.shared.config.max_name_length)
    }

    pub(super) fn topic_bound(&self) -> (&'static str, usize) {
        ("max_topic_length", self.shared.config.max_topic_length)
    }
}

/// Send a `response`/`rpc_response` with a raw JSON body (data or error).
pub(super) fn send_result(
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
pub(super) fn json_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    crate::protocol::json::write_str(&mut v, s);
    v
}

/// At most `max` bytes of `s` (on a char boundary), for messages that
/// quote client text.
pub(super) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
