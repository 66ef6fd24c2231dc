//! The stream family: `stream_start`, `stream_data`, `stream_end`, and
//! binary stream frames. Sequence numbers are checked per stream (no gaps,
//! no repeats); at most `max_streams_per_connection` are open at once.

use std::borrow::Cow;
use std::rc::Rc;

use bytes::Bytes;

use super::reply::Handled;
use crate::auth::Op;
use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::kind::{Feature, MsgType};
use crate::protocol::scan::{Msg, WrongType};
use crate::protocol::{stream, ErrorCode};
use crate::shard::client::{Conn, InStream};
use crate::shard::ctx::ShardCtx;

impl ShardCtx {
    pub(super) fn on_stream_start(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
        let ty = MsgType::StreamStart;
        let id = self.req_str(conn, m, ty, "streamId", self.id_bound())?;
        let stream_type = self
            .opt_str(conn, m, ty, "streamType", self.name_bound())?
            .unwrap_or(Cow::Borrowed("data"))
            .into_owned();
        self.permit(conn, m, Op::Ingest, &stream_type)?;
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

    pub(super) fn on_stream_data(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
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
    pub(super) fn on_stream_chunk(
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

    pub(super) fn on_stream_end(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
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
    pub(super) fn on_binary(&self, conn: &Rc<Conn>, b: Bytes) {
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
}

/// Decoded length of base64 text, or `None` if it is not base64.
fn base64_len(s: &str) -> Option<u64> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .map(|b| b.len() as u64)
}
