//! The writer thread: group commit.
//!
//! It blocks for the first record, drains whatever else is queued (up to
//! `batch_max` records or `batch_bytes`), assigns insertIds, writes one
//! `WriteBatch` with the durability mode's options and then completes every
//! record: each shard gets one message with its records' results. Between
//! batches it enforces retention and expires old de-duplication entries.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use tracing::{debug, error, info, warn};

use super::keys;
use super::{Durability, Store, StoreConfig};

/// A record for the writer.
#[derive(Debug)]
pub(crate) struct WriteTask {
    pub(crate) shard: usize,
    pub(crate) ticket: u64,
    pub(crate) table: std::sync::Arc<str>,
    /// The record as a JSON object without `insertId` (the writer adds it).
    pub(crate) body: Vec<u8>,
    /// (scope, deviceId, messageId) for effectively-once ingest.
    pub(crate) dedup: Option<DedupKey>,
}

/// What makes two `data` messages "the same message" for de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DedupKey {
    /// The identity the connection's credential proves (e.g. the auth
    /// token entry that authenticated it), `""` with authentication off:
    /// a client can only collide with messages of its own identity.
    pub(crate) scope: String,
    /// deviceId from the handshake, else the clientId.
    pub(crate) device: String,
    /// The message's `messageId`.
    pub(crate) message: String,
}

impl DedupKey {
    /// The `dedup` column family key (see [`keys::dedup_key`]).
    pub(crate) fn encode(&self) -> Vec<u8> {
        keys::dedup_key(&self.scope, &self.device, &self.message)
    }
}

/// A message to the writer.
#[derive(Debug)]
pub(crate) enum WriteMsg {
    /// Store a record.
    Write(WriteTask),
    /// Finish what is queued and exit.
    Shutdown,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreAck {
    pub(crate) insert_id: u64,
    /// An earlier message with the same (deviceId, messageId) was stored.
    pub(crate) duplicate: bool,
}

/// Why a record was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriteError {
    /// The record names a table the store does not have.
    #[error("unknown table `{0}`")]
    UnknownTable(std::sync::Arc<str>),
    /// RocksDB failed the read (de-duplication) or the batch write.
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
}

/// One record's outcome, sent back to its shard.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) ticket: u64,
    pub(crate) result: Result<StoreAck, WriteError>,
}

/// Where the writer reports finished records: called on the writer thread
/// with a shard id and that shard's completions after every batch. The
/// list may be empty: a wake-up for a shard that parked records because
/// the queue was full. The store knows nothing of who listens.
pub(crate) type CompletionSink = Box<dyn Fn(usize, Vec<Completion>) + Send>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn splice_id(body: &[u8], id: u64) -> Vec<u8> {
    use std::io::Write;
    // body is `{...}`; the stored record is `{"insertId":N,...}`.
    let mut v = Vec::with_capacity(body.len() + 32);
    let _ = write!(v, "{{\"insertId\":{id}");
    if body.len() > 2 {
        v.push(b',');
    }
    v.extend_from_slice(&body[1..]);
    v
}

struct Writer {
    blocked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    store: Store,
    cfg: StoreConfig,
    counters: HashMap<String, u64>,
    sink: CompletionSink,
    shards: usize,
    wopts: WriteOptions,
    /// Where the next sweep of expired de-duplication entries starts: each
    /// sweep looks at a bounded number, so with more live entries than
    /// that the sweeps take turns over the whole column family instead of
    /// re-reading its first part forever.
    dedup_cursor: Option<Vec<u8>>,
    /// Most entries one sweep looks at ([`DEDUP_SWEEP`]; smaller in tests).
    dedup_sweep: usize,
    /// Batches, commit latency, records written (read by scrapes).
    metrics: std::sync::Arc<crate::metrics::StoreMetrics>,
}

/// Most de-duplication entries one maintenance sweep looks at.
const DEDUP_SWEEP: usize = 100_000;

/// Start the writer thread for `shards` shards, reporting to `sink`.
pub(crate) fn spawn_writer(
    store: Store,
    cfg: StoreConfig,
    rx: Receiver<WriteMsg>,
    (shards, sink): (usize, CompletionSink),
    blocked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    metrics: std::sync::Arc<crate::metrics::StoreMetrics>,
) -> Result<std::thread::JoinHandle<()>, super::StoreError> {
    let db = store.db().clone();
    let mut counters = HashMap::new();
    for t in store.tables() {
        counters.insert(t.clone(), last_id(&db, t)?);
    }
    let mut wopts = WriteOptions::default();
    match cfg.durability {
        Durability::Sync => wopts.set_sync(true),
        Durability::Wal => wopts.set_sync(false),
        Durability::None => wopts.disable_wal(true),
    }
    let w = Writer {
        blocked,
        store,
        cfg,
        counters,
        sink,
        shards,
        wopts,
        dedup_cursor: None,
        dedup_sweep: DEDUP_SWEEP,
        metrics,
    };
    std::thread::Builder::new()
        .name("wsh-store-writer".into())
        .spawn(move || w.run(rx))
        .map_err(super::StoreError::Spawn)
}

/// The last insertId issued for a table: the counter in `meta`, or the last
/// key if that is larger (a store written before counters existed).
fn last_id(db: &DB, table: &str) -> Result<u64, super::StoreError> {
    let meta = db.cf_handle(keys::META_CF).expect("meta cf");
    let counter = db
        .get_cf(meta, keys::seq_key(table))?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    let cf = db
        .cf_handle(table)
        .ok_or_else(|| super::StoreError::UnknownTable(table.into()))?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_last();
    let last = it.key().and_then(keys::parse_record_key).unwrap_or(0);
    Ok(counter.max(last))
}

impl Writer {
    fn run(mut self, rx: Receiver<WriteMsg>) {
        let every = self.maintenance_interval();
        let mut next_maintenance = Instant::now() + every;
        let mut shutdown = false;
        while !shutdown {
            let first =
                match rx.recv_timeout(next_maintenance.saturating_duration_since(Instant::now())) {
                    Ok(WriteMsg::Write(t)) => t,
                    Ok(WriteMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        self.maintenance();
                        next_maintenance = Instant::now() + every;
                        continue;
                    }
                };
            let mut bytes = first.body.len();
            let mut batch = vec![first];
            while batch.len() < self.cfg.batch_max && bytes < self.cfg.batch_bytes {
                match rx.try_recv() {
                    Ok(WriteMsg::Write(t)) => {
                        bytes += t.body.len();
                        batch.push(t);
                    }
                    Ok(WriteMsg::Shutdown) => {
                        shutdown = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if Instant::now() >= next_maintenance {
                self.maintenance();
                next_maintenance = Instant::now() + every;
            }
        }
        // Shutting down: whatever is still queued is written before exit.
        let rest: Vec<WriteTask> = rx
            .try_iter()
            .filter_map(|m| match m {
                WriteMsg::Write(t) => Some(t),
                WriteMsg::Shutdown => None,
            })
            .collect();
        if !rest.is_empty() {
            self.commit(rest);
        }
        if let Err(e) = self.store.db().flush_wal(true) {
            warn!(error = %e, "flushing the WAL at shutdown failed");
        }
        self.metrics
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        info!("store writer stopped");
    }

    fn maintenance_interval(&self) -> Duration {
        let shortest = self
            .cfg
            .retention
            .iter()
            .filter_map(|(_, r)| *r)
            .min()
            .unwrap_or(Duration::from_secs(600));
        (shortest.min(self.cfg.dedup_window) / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    fn commit(&mut self, batch: Vec<WriteTask>) {
        let db = self.store.db().clone();
        let before = self.counters.clone();
        let mut wb = WriteBatch::default();
        let mut results: Vec<(usize, u64, Result<StoreAck, WriteError>)> =
            Vec::with_capacity(batch.len());
        let mut seen: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut touched: Vec<std::sync::Arc<str>> = Vec::new();
        let dedup_cf = db.cf_handle(keys::DEDUP_CF).expect("dedup cf");
        let now = now_ms();
        for t in &batch {
            let Some(cf) = db.cf_handle(&t.table) else {
                results.push((
                    t.shard,
                    t.ticket,
                    Err(WriteError::UnknownTable(t.table.clone())),
                ));
                continue;
            };
            let dkey = t.dedup.as_ref().map(DedupKey::encode);
            if let Some(k) = &dkey {
                let earlier = match seen.get(k) {
                    Some(id) => Some(*id),
                    None => match db.get_cf(dedup_cf, k) {
                        Ok(Some(v)) => keys::parse_dedup_value(&v)
                            .filter(|(table, _, exp)| *exp > now && *table == *t.table)
                            .map(|(_, id, _)| id),
                        Ok(None) => None,
                        Err(e) => {
                            results.push((t.shard, t.ticket, Err(WriteError::Db(e))));
                            continue;
                        }
                    },
                };
                if let Some(id) = earlier {
                    results.push((
                        t.shard,
                        t.ticket,
                        Ok(StoreAck {
                            insert_id: id,
                            duplicate: true,
                        }),
                    ));
                    continue;
                }
            }
            let c = match self.counters.get_mut(&*t.table) {
                Some(c) => c,
                None => self.counters.entry(t.table.to_string()).or_insert(0),
            };
            *c += 1;
            let id = *c;
            wb.put_cf(cf, keys::record_key(id), splice_id(&t.body, id));
            if let Some(k) = dkey {
                let exp = now + self.cfg.dedup_window.as_millis() as u64;
                wb.put_cf(dedup_cf, &k, keys::dedup_value(&t.table, id, exp));
                seen.insert(k, id);
            }
            if !touched.contains(&t.table) {
                touched.push(t.table.clone());
            }
            results.push((
                t.shard,
                t.ticket,
                Ok(StoreAck {
                    insert_id: id,
                    duplicate: false,
                }),
            ));
        }
        let meta = db.cf_handle(keys::META_CF).expect("meta cf");
        for t in &touched {
            wb.put_cf(meta, keys::seq_key(t), self.counters[&**t].to_be_bytes());
        }
        self.metrics.batch_size.observe(batch.len() as u64);
        let fresh = results
            .iter()
            .filter(|r| {
                matches!(
                    r.2,
                    Ok(StoreAck {
                        duplicate: false,
                        ..
                    })
                )
            })
            .count() as u64;
        if !wb.is_empty() {
            let started = Instant::now();
            let written = db.write_opt(wb, &self.wopts);
            let took = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
            self.metrics.commit_latency.observe(took);
            if written.is_ok() {
                self.metrics.records_written.add(fresh);
            } else {
                self.metrics.write_errors.add(fresh);
            }
            self.metrics
                .failing
                .store(written.is_err(), std::sync::atomic::Ordering::Release);
            if let Err(e) = written {
                error!(error = %e, records = batch.len(), "write batch failed");
                self.counters = before;
                let err = WriteError::Db(e);
                for r in results.iter_mut() {
                    // Duplicates refer to records stored earlier: still valid.
                    if matches!(
                        r.2,
                        Ok(StoreAck {
                            duplicate: false,
                            ..
                        })
                    ) {
                        r.2 = Err(err.clone());
                    }
                }
            }
        }
        debug!(records = batch.len(), "batch committed");
        let mut per_shard: Vec<Vec<Completion>> = (0..self.shards).map(|_| Vec::new()).collect();
        for (shard, ticket, result) in results {
            if let Some(v) = per_shard.get_mut(shard) {
                v.push(Completion { ticket, result });
            }
        }
        // Shards that parked records because the queue was full get a
        // message even if none of their records were in this batch.
        let blocked = self.blocked.swap(0, std::sync::atomic::Ordering::AcqRel);
        for (shard, done) in per_shard.into_iter().enumerate() {
            if !done.is_empty() || blocked & (1 << (shard % 64)) != 0 {
                (self.sink)(shard, done);
            }
        }
    }

    /// Retention (range delete of records older than the table's limit) and
    /// expiry of old de-duplication entries.
    fn maintenance(&mut self) {
        let db = self.store.db().clone();
        let now = SystemTime::now();
        for (table, keep) in &self.cfg.retention {
            let Some(keep) = keep else { continue };
            let Some(cf) = db.cf_handle(table) else {
                continue;
            };
            let cutoff = humantime::format_rfc3339_millis(now - *keep).to_string();
            // Records are in insertId order, which follows time: find the
            // first one young enough and delete everything before it.
            let mut it = db.raw_iterator_cf(cf);
            it.seek_to_first();
            let Some(first) = it.key().and_then(keys::parse_record_key) else {
                continue;
            };
            let last = self.counters.get(table).copied().unwrap_or(0);
            let (mut lo, mut hi) = (first, last + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                it.seek(keys::record_key(mid));
                let old = match (it.key().and_then(keys::parse_record_key), it.value()) {
                    (Some(_), Some(v)) => {
                        record_timestamp(v).is_some_and(|ts| ts < cutoff.as_str())
                    }
                    _ => false,
                };
                if old {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo > first {
                match db.delete_range_cf(cf, keys::record_key(first), keys::record_key(lo)) {
                    Ok(()) => debug!(table, deleted_below = lo, "retention"),
                    Err(e) => warn!(table, error = %e, "retention delete failed"),
                }
            }
        }
        let dedup = db.cf_handle(keys::DEDUP_CF).expect("dedup cf");
        let now = now_ms();
        let mut wb = WriteBatch::default();
        let mut it = db.raw_iterator_cf(dedup);
        match self.dedup_cursor.take() {
            Some(k) => it.seek(k),
            None => it.seek_to_first(),
        }
        let mut scanned = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if scanned >= self.dedup_sweep {
                self.dedup_cursor = Some(k.to_vec());
                break;
            }
            if keys::parse_dedup_value(v).is_none_or(|(_, _, exp)| exp <= now) {
                wb.delete_cf(dedup, k);
            }
            scanned += 1;
            it.next();
        }
        if !wb.is_empty() {
            let _ = db.write_opt(wb, &self.wopts);
        }
    }
}

/// The `timestamp` of a stored record, found without a full parse.
fn record_timestamp(v: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(v).ok()?;
    let i = s.find("\"timestamp\":\"")? + 13;
    s.get(i..i + 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_adds_the_id_first() {
        assert_eq!(
            splice_id(br#"{"a":1}"#, 7),
            br#"{"insertId":7,"a":1}"#.to_vec()
        );
        assert_eq!(splice_id(b"{}", 7), br#"{"insertId":7}"#.to_vec());
    }

    /// Each sweep looked at the first 100,000 entries only: with that many
    /// live ones in front, expired entries behind them were never deleted
    /// and the `dedup` column family grew without bound.
    #[test]
    fn dedup_sweeps_reach_expired_entries_behind_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            dir: dir.path().to_path_buf(),
            tables: vec!["t".into()],
            durability: Durability::Wal,
            batch_max: 64,
            batch_bytes: 1 << 20,
            queue: 16,
            dedup_window: Duration::from_secs(60),
            retention: vec![],
            write_buffer_size: 1 << 20,
        };
        let store = Store::open(&cfg).unwrap();
        let db = store.db().clone();
        let cf = db.cf_handle(keys::DEDUP_CF).unwrap();
        let now = now_ms();
        for i in 0..5u64 {
            // Device "a" sorts before "b": live entries first.
            let m = i.to_string();
            db.put_cf(
                cf,
                keys::dedup_key("", "a", &m),
                keys::dedup_value("t", i, now + 3_600_000),
            )
            .unwrap();
            db.put_cf(
                cf,
                keys::dedup_key("", "b", &m),
                keys::dedup_value("t", i, now - 1),
            )
            .unwrap();
        }
        let mut w = Writer {
            blocked: Default::default(),
            store: store.clone(),
            cfg,
            counters: HashMap::new(),
            sink: Box::new(|_, _| {}),
            shards: 1,
            wopts: WriteOptions::default(),
            dedup_cursor: None,
            dedup_sweep: 3,
            metrics: Default::default(),
        };
        for _ in 0..4 {
            w.maintenance();
        }
        let left: Vec<Vec<u8>> = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        let live: Vec<Vec<u8>> = (0..5u64)
            .map(|i| keys::dedup_key("", "a", &i.to_string()))
            .collect();
        assert_eq!(left, live);
    }

    #[test]
    fn finds_timestamp() {
        let r =
            br#"{"insertId":1,"clientId":"x","timestamp":"2026-11-26T12:00:00.000Z","data":{}}"#;
        assert_eq!(record_timestamp(r), Some("2026-11-26T12:00:00.000Z"));
    }
}
