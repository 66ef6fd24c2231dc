//! The data family: `data` and `sensor_data`. A record is validated,
//! sealed (encrypted fields) on the shard, and handed to the store writer
//! through the shard's [`StoreQueue`](crate::store::StoreQueue); it is
//! acknowledged (`data_response` with its `insertId`) only when the writer
//! reports it durable. Also `store.query`, the read side for services.

use std::borrow::Cow;
use std::rc::Rc;

use super::reply::{json_string, send_result, Handled};
use super::to_serde;
use crate::auth::Op;
use crate::events::Event;
use crate::protocol::json::Obj;
use crate::protocol::kind::MsgType;
use crate::protocol::scan::{Field, Msg};
use crate::protocol::ErrorCode;
use crate::shard::client::Conn;
use crate::shard::client::{HeavyGuard, PendingGuard};
use crate::shard::ctx::{PendingStore, ShardCtx};
use crate::store::{Completion, DedupKey, Scan, WriteTask};

impl ShardCtx {
    pub(super) fn on_data(&self, conn: &Rc<Conn>, m: &Msg<'_>, legacy: bool) -> Handled {
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
        self.permit(conn, m, Op::Ingest, &data_type)?;
        if let Some(t) = &table_name {
            self.permit(conn, m, Op::Ingest, t)?;
        }
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
        let tables = self.shared.config.tables();
        let table = match table_name.as_deref() {
            None => &tables[0],
            Some(t) if let Some(known) = tables.iter().find(|k| &***k == t) => known,
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
        self.m.ingested.inc();
        match &self.store {
            Some(queue) => {
                let (device, scope) = {
                    let c = conn.client.borrow();
                    (
                        c.device_id.clone(),
                        c.grant
                            .as_ref()
                            .map(|g| g.scope.to_string())
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
                let task = WriteTask {
                    shard: self.id,
                    ticket,
                    table: table.clone(),
                    body,
                    dedup: message_id.map(|m| DedupKey {
                        scope,
                        device: device.unwrap_or_else(|| conn.client_id.clone()),
                        message: m,
                    }),
                };
                self.pending_store.borrow_mut().insert(
                    ticket,
                    PendingStore {
                        key: conn.key,
                        table: table.clone(),
                        timestamp: ts.clone(),
                    },
                );
                queue.push(task);
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
            device_id: conn.client.borrow().device_id.clone(),
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
    pub(super) fn record_body(
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

    /// The writer stored (or failed) records from this shard: answer them.
    pub(super) fn on_store_done(&self, done: Vec<Completion>) {
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
                Err(e) => {
                    let message = e.to_string();
                    // The detail (it may name server paths) stays in the
                    // log and the event; the client learns only that
                    // nothing was stored.
                    if let Some(conn) = &conn {
                        self.count_code(ErrorCode::StorageUnavailable);
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
        if let Some(q) = &self.store {
            q.retry();
        }
    }

    /// `store.query` for service clients: a range read off the shard thread.
    pub(super) fn store_query(
        &self,
        conn: &Rc<Conn>,
        request_id: String,
        data: Option<Field<'_>>,
        guard: (PendingGuard, HeavyGuard),
    ) {
        let Some(store) = self.store.as_ref().map(|q| q.store().clone()) else {
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
        let scan = Scan {
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
            let r = tokio::task::spawn_blocking(move || store.scan(&scan, key.as_ref())).await;
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
}
