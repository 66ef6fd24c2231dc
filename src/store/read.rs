//! Reading records back: range scans by insertId and time, and table stats.

use serde::Serialize;

use super::crypto::FieldKey;
use super::{keys, Store, StoreError};

/// A range read. `from` is inclusive; `since`/`until` compare the server
/// timestamp (RFC 3339, inclusive).
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Table to read.
    pub table: String,
    /// First insertId (inclusive).
    pub from: Option<u64>,
    /// Records at or after this time (RFC 3339, e.g. `2026-11-26T00:00:00Z`).
    pub since: Option<String>,
    /// Records at or before this time.
    pub until: Option<String>,
    /// At most this many records.
    pub limit: Option<usize>,
}

/// Per-table figures for `wshandler stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableStats {
    /// Table name.
    pub table: String,
    /// Records stored.
    pub records: u64,
    /// Last insertId issued.
    pub last_insert_id: u64,
    /// Bytes in SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables.
    pub memtable_bytes: u64,
}

/// Normalise an RFC 3339 time to the stored form (UTC, milliseconds) so
/// string comparison orders correctly.
fn normalise(t: &str) -> Result<String, StoreError> {
    let ts = humantime::parse_rfc3339_weak(t)
        .map_err(|e| StoreError::Query(format!("bad time `{t}`: {e}")))?;
    Ok(humantime::format_rfc3339_millis(ts).to_string())
}

impl Store {
    /// Read records in insertId order. Encrypted fields are decrypted when
    /// `key` is given and left as `{"$encrypted": ...}` otherwise.
    pub fn scan(
        &self,
        q: &Scan,
        key: Option<&FieldKey>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let db = self.db();
        let cf = db
            .cf_handle(&q.table)
            .ok_or_else(|| StoreError::UnknownTable(q.table.clone()))?;
        let since = q.since.as_deref().map(normalise).transpose()?;
        let until = q.until.as_deref().map(normalise).transpose()?;
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut it = db.raw_iterator_cf(cf);
        match q.from {
            Some(f) => it.seek(keys::record_key(f)),
            None => it.seek_to_first(),
        }
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let id = keys::parse_record_key(k).unwrap_or(0);
            let rec = Store::decode(&q.table, id, v, key)?;
            let ts = rec.get("timestamp").and_then(|t| t.as_str()).unwrap_or("");
            let after = since.as_deref().is_none_or(|s| ts >= s);
            let before = until.as_deref().is_none_or(|u| ts <= u);
            if after && before {
                out.push(rec);
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Count, last insertId and size of every table.
    pub fn stats(&self) -> Result<Vec<TableStats>, StoreError> {
        let db = self.db();
        let meta = db.cf_handle(keys::META_CF);
        let mut out = Vec::new();
        for t in self.tables() {
            let cf = db
                .cf_handle(t)
                .ok_or_else(|| StoreError::UnknownTable(t.clone()))?;
            let mut it = db.raw_iterator_cf(cf);
            it.seek_to_first();
            let mut records = 0;
            while it.valid() {
                records += 1;
                it.next();
            }
            let last = meta
                .and_then(|m| db.get_cf(m, keys::seq_key(t)).ok().flatten())
                .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            out.push(TableStats {
                table: t.clone(),
                records,
                last_insert_id: last,
                sst_bytes: db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")?
                    .unwrap_or(0),
                memtable_bytes: db
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")?
                    .unwrap_or(0),
            });
        }
        Ok(out)
    }
}
