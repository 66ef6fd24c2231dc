//! The pub/sub family: `subscribe`, `unsubscribe`, `publish`. Each shard
//! matches topics against its own subscription trie; a publish is encoded
//! once and spread by [`fan_out`](crate::shard::mesh::fan_out).

use std::rc::Rc;

use super::reply::Handled;
use crate::auth::Op;
use crate::events::Event;
use crate::metrics::OutLabel;
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::Msg;
use crate::protocol::{topic, ErrorCode};
use crate::shard::client::Conn;
use crate::shard::ctx::ShardCtx;
use crate::shard::mesh::{self, Publish};

impl ShardCtx {
    pub(super) fn on_subscribe(&self, conn: &Rc<Conn>, m: &Msg<'_>, subscribe: bool) -> Handled {
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
        if subscribe {
            self.permit(conn, m, Op::Subscribe, &t)?;
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

    pub(super) fn on_publish(&self, conn: &Rc<Conn>, m: &Msg<'_>) -> Handled {
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
        self.permit(conn, m, Op::Publish, &t)?;
        let data = m.get("data").map_or(&b"null"[..], |d| d.raw());
        let p = Publish::new(&t, data, Some(&conn.client_id), Some((self.id, conn.key)));
        self.m.publishes.inc();
        self.topk.borrow_mut().count(&p.topic, 1, 0);
        mesh::fan_out(
            &self.shared.mailboxes,
            p,
            Some((self.id, &|p| self.deliver(p))),
        );
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

    /// Queue a publish on every matching local subscriber (and the
    /// dashboard's taps, if any).
    pub(super) fn deliver(&self, p: &Publish) {
        if !self.taps.is_empty() {
            self.taps.offer(&p.topic, &p.payload);
        }
        if self.subs.borrow().is_empty() {
            return;
        }
        let exclude = p.exclude_on(self.id);
        let mut keys = std::mem::take(&mut *self.match_buf.borrow_mut());
        self.subs.borrow().matches(&p.topic, &mut keys);
        let mut reached = 0;
        for &k in &keys {
            if Some(k) == exclude {
                continue;
            }
            if let Some(c) = self.conn(k) {
                self.push(&c, OutLabel::Publish, true, &p.payload, &p.frame);
                reached += 1;
            }
        }
        *self.match_buf.borrow_mut() = keys;
        self.m.deliveries.add(reached);
        self.m.fanout.observe(reached);
        self.topk.borrow_mut().count(&p.topic, 0, reached);
    }
}
