//! Reading records back: paged range scans by insertId and time, and
//! table stats.
//!
//! A scan returns each record's stored text unchanged (see
//! [`super::record`] for why nothing is parsed into a tree), reports records
//! it cannot return instead of failing the whole read, and stops at a record
//! count or a byte budget, whichever comes first, with a cursor for the next
//! page: a reply is never larger than the caller allowed, however big the
//! table.

use serde::Serialize;

use super::crypto::FieldKey;
use super::record::{self, Unreadable};
use super::{keys, Store, StoreError};

/// A range read. `from` is inclusive; `since`/`until` compare the server
/// timestamp (RFC 3339, inclusive).
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Table to read.
    pub table: String,
    /// First insertId (inclusive): `Page::next` of the previous page.
    pub from: Option<u64>,
    /// Records at or after this time (RFC 3339, e.g. `2026-11-26T00:00:00Z`).
    pub since: Option<String>,
    /// Records at or before this time.
    pub until: Option<String>,
    /// At most this many entries (records and skipped records) in one page.
    /// `None`: no count bound.
    pub limit: Option<usize>,
    /// At most this many bytes of record text (and skip reasons) in one
    /// page. A record larger than this on its own is reported in
    /// `Page::skipped` (too large) instead of breaking the bound. `None`: no
    /// byte bound.
    pub max_bytes: Option<usize>,
}

/// One stored record, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its insertId.
    pub insert_id: u64,
    /// The record's JSON text exactly as stored (`insertId` first, then the
    /// envelope, then `data` as the client sent it), with sealed fields
    /// replaced by their plaintext when the scan had the key.
    pub json: String,
}

/// A record a scan could not return, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Its insertId.
    pub insert_id: u64,
    /// Why it cannot be returned (not parseable, wrong key, ...).
    pub reason: String,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Records in insertId order.
    pub records: Vec<Record>,
    /// Records in the page's range that could not be returned.
    pub skipped: Vec<Skipped>,
    /// Where the next page starts (pass it as `Scan::from`); `None` when the
    /// table has nothing after this page.
    pub next: Option<u64>,
}

impl Page {
    /// The page as the `store.query` reply:
    /// `{"records":[...],"next":N|null}`, plus `"skipped":[{insertId,
    /// reason}]` when records were skipped. Records are copied as stored.
    pub fn to_json(&self) -> Vec<u8> {
        let len: usize = self.records.iter().map(|r| r.json.len() + 1).sum();
        let mut out = Vec::with_capacity(len + 40);
        out.extend_from_slice(b"{\"records\":[");
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(r.json.as_bytes());
        }
        out.extend_from_slice(b"],\"next\":");
        match self.next {
            Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        if !self.skipped.is_empty() {
            out.extend_from_slice(b",\"skipped\":");
            serde_json::to_writer(&mut out, &self.skipped).expect("writing to a Vec");
        }
        out.push(b'}');
        out
    }
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

/// The record's `timestamp` string, found by scanning its top level (no
/// parse of `data`).
fn timestamp(raw: &[u8]) -> Option<&[u8]> {
    let v = crate::protocol::scan::Field::from_validated(raw.trim_ascii())
        .get("timestamp")?
        .raw();
    let s = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!s.contains(&b'\\')).then_some(s)
}

/// A stored record as a reader returns it: validated, decrypted with `key`.
fn readable(raw: &[u8], key: Option<&FieldKey>) -> Result<String, Unreadable> {
    let shape = record::check(raw, record::MAX_DEPTH, true)?;
    let text = match key {
        Some(k) if !shape.sealed.is_empty() => record::decrypt(raw, &shape, k)?,
        _ => raw.to_vec(),
    };
    // `check` proved the stored bytes UTF-8 and `decrypt` spliced in only
    // checked plaintext, so this never takes the lossy branch.
    Ok(String::from_utf8(text)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

impl Store {
    /// Read one page of records in insertId order. Encrypted fields are
    /// decrypted when `key` is given and left as `{"$encrypted": ...}`
    /// otherwise. A record that cannot be returned (not parseable, too deep,
    /// a lone surrogate, a field the key does not open) is listed in
    /// `Page::skipped` and the scan goes on; only a bad query or a database
    /// failure is an error.
    pub fn scan(&self, q: &Scan, key: Option<&FieldKey>) -> Result<Page, StoreError> {
        let db = self.db();
        let cf = db
            .cf_handle(&q.table)
            .ok_or_else(|| StoreError::UnknownTable(q.table.clone()))?;
        let since = q.since.as_deref().map(normalise).transpose()?;
        let until = q.until.as_deref().map(normalise).transpose()?;
        let filtered = since.is_some() || until.is_some();
        let limit = q.limit.unwrap_or(usize::MAX);
        let max_bytes = q.max_bytes.unwrap_or(usize::MAX);
        let mut page = Page::default();
        let mut entries = 0;
        let mut bytes = 0usize;
        let mut it = db.raw_iterator_cf(cf);
        match q.from {
            Some(f) => it.seek(keys::record_key(f)),
            None => it.seek_to_first(),
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some(id) = keys::parse_record_key(k) else {
                // Not a record key (nothing else writes here): skip it.
                it.next();
                continue;
            };
            if entries >= limit {
                page.next = Some(id);
                break;
            }
            if filtered {
                match timestamp(v) {
                    Some(ts) => {
                        let after = since.as_deref().is_none_or(|s| ts >= s.as_bytes());
                        let before = until.as_deref().is_none_or(|u| ts <= u.as_bytes());
                        if !(after && before) {
                            it.next();
                            continue;
                        }
                    }
                    // Cannot tell its time: report it rather than hide it.
                    None => {
                        let reason = record::check(v, record::MAX_DEPTH, true)
                            .err()
                            .unwrap_or(Unreadable::NoTimestamp)
                            .to_string();
                        if entries > 0 && bytes + reason.len() > max_bytes {
                            page.next = Some(id);
                            break;
                        }
                        bytes += reason.len();
                        entries += 1;
                        page.skipped.push(Skipped {
                            insert_id: id,
                            reason,
                        });
                        it.next();
                        continue;
                    }
                }
            }
            // Check the stored size before copying anything: decryption only
            // shrinks a record (the base64 of nonce, plaintext and tag is
            // longer than the plaintext), so a record that fits stored fits.
            if entries > 0 && bytes + v.len() > max_bytes {
                page.next = Some(id);
                break;
            }
            let entry = readable(v, key).and_then(|json| {
                if json.len() > max_bytes {
                    // Alone on its page and still too big: say so rather
                    // than break the caller's bound.
                    Err(Unreadable::TooLarge {
                        size: json.len(),
                        max: max_bytes,
                    })
                } else {
                    Ok(json)
                }
            });
            match entry {
                Ok(json) => {
                    bytes += json.len();
                    page.records.push(Record {
                        insert_id: id,
                        json,
                    });
                }
                Err(e) => {
                    let reason = e.to_string();
                    bytes += reason.len();
                    page.skipped.push(Skipped {
                        insert_id: id,
                        reason,
                    });
                }
            }
            entries += 1;
            it.next();
        }
        it.status()?;
        Ok(page)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::store::{Durability, StoreConfig, WriteMsg, WriteTask};

    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            dir: dir.to_path_buf(),
            tables: vec!["t".into()],
            durability: Durability::Wal,
            batch_max: 64,
            batch_bytes: 1 << 20,
            queue: 1024,
            dedup_window: Duration::from_secs(60),
            retention: vec![("t".into(), None)],
            write_buffer_size: 1 << 20,
        }
    }

    /// Store `bodies` (records without insertId) through the real writer
    /// thread; their insertIds are 1, 2, ...
    fn store_through_writer(dir: &std::path::Path, bodies: &[Vec<u8>]) -> Store {
        let cfg = config(dir);
        let store = Store::open(&cfg).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(bodies.len() + 1);
        let sink: crate::store::CompletionSink = Box::new(|_, _| {});
        let writer = crate::store::spawn_writer(
            store.clone(),
            cfg,
            rx,
            (1, sink),
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let table: Arc<str> = "t".into();
        for (i, b) in bodies.iter().enumerate() {
            tx.send(WriteMsg::Write(WriteTask {
                shard: 0,
                ticket: i as u64,
                table: table.clone(),
                body: b.clone(),
                dedup: None,
            }))
            .unwrap();
        }
        // The writer commits everything queued before it exits.
        tx.send(WriteMsg::Shutdown).unwrap();
        writer.join().unwrap();
        store
    }

    fn body(data: &[u8]) -> Vec<u8> {
        let mut b = br#"{"clientId":"c-0-1","clientType":null,"dataType":"sensor","timestamp":"2026-11-26T12:00:00.000Z","data":"#.to_vec();
        b.extend_from_slice(data);
        b.push(b'}');
        b
    }

    /// What the writer stores for `body` as record `id`.
    fn stored(body: &[u8], id: u64) -> String {
        format!(
            "{{\"insertId\":{id},{}",
            std::str::from_utf8(&body[1..]).unwrap()
        )
    }

    fn scan_all(store: &Store, key: Option<&FieldKey>) -> Page {
        store
            .scan(
                &Scan {
                    table: "t".into(),
                    ..Scan::default()
                },
                key,
            )
            .unwrap()
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", " ", "\n\t ", "\r\n"])
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            // 17-18 significant digits, where an f64 round trip alters the
            // last ones.
            (0.0f64..1.0).prop_map(|f| format!("{f:.18}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:.16e}")),
            "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            Just("123456789012345678901234567890".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("-0".to_owned()),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            any::<char>()
                .prop_filter("needs no escape", |c| !matches!(c, '"' | '\\') && *c >= ' ')
                .prop_map(String::from),
            prop::sample::select(vec![
                "\\n",
                "\\\"",
                "\\\\",
                "\\/",
                "\\u00e9",
                "\\ud83d\\ude00",
                "\\u0000",
                "é",
                "日本",
                "\\t",
            ])
            .prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    /// Random JSON text: every number form, escapes, unicode, nested
    /// objects whose keys come in any order, whitespace between tokens.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            number(),
            string(),
            prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec((ws(), inner.clone()), 0..6).prop_map(|xs| {
                    let items: Vec<String> = xs.iter().map(|(w, x)| format!("{w}{x}{w}")).collect();
                    format!("[{}]", items.join(","))
                }),
                prop::collection::vec((ws(), string(), inner), 0..6).prop_map(|xs| {
                    let items: Vec<String> = xs
                        .iter()
                        .map(|(w, k, x)| format!("{w}{k}{w}:{w}{x}"))
                        .collect();
                    format!("{{{}}}", items.join(","))
                }),
            ]
        })
    }

    fn key() -> FieldKey {
        FieldKey::from_base64("KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Issue 9 item 3: records come back byte for byte as stored, with
        /// and without an unrelated field sealed.
        #[test]
        fn issue9_item3_records_read_back_byte_identical(
            docs in prop::collection::vec((json_text(), json_text(), ws()), 1..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let k = key();
            // Odd records have a sealed field beside the random one.
            let plain: Vec<Vec<u8>> = docs
                .iter()
                .enumerate()
                .map(|(i, (a, b, w))| {
                    if i % 2 == 0 {
                        a.clone().into_bytes()
                    } else {
                        format!("{{{w}\"other\"{w}:{w}{a}{w},\"secret\":{b}}}").into_bytes()
                    }
                })
                .collect();
            let mut bodies = Vec::new();
            for (i, d) in plain.iter().enumerate() {
                if i % 2 == 0 {
                    bodies.push(body(d));
                } else {
                    let sealed = k.encrypt_fields_text(d, &["secret".to_owned()]).unwrap();
                    let secret = &docs[i].1;
                    prop_assert!(
                        secret.len() < 16
                            || docs[i].0.contains(secret.as_str())
                            || !sealed.windows(secret.len()).any(|x| x == secret.as_bytes()),
                        "plaintext on disk"
                    );
                    bodies.push(body(&sealed));
                }
            }
            let store = store_through_writer(dir.path(), &bodies);
            // Without the key: exactly the stored bytes.
            let page = scan_all(&store, None);
            prop_assert!(page.skipped.is_empty(), "{:?}", page.skipped);
            prop_assert_eq!(page.records.len(), bodies.len());
            for (i, r) in page.records.iter().enumerate() {
                prop_assert_eq!(r.insert_id, i as u64 + 1);
                prop_assert_eq!(&r.json, &stored(&bodies[i], r.insert_id));
            }
            // With it: exactly what was sent, the sealed field opened in place.
            let page = scan_all(&store, Some(&k));
            prop_assert!(page.skipped.is_empty(), "{:?}", page.skipped);
            for (i, r) in page.records.iter().enumerate() {
                prop_assert_eq!(&r.json, &stored(&body(&plain[i]), r.insert_id));
            }
        }
    }

    /// Plant raw values as record keys (what a bad record on disk looks like).
    fn plant(store: &Store, recs: &[(u64, &[u8])]) {
        let db = store.db();
        let cf = db.cf_handle("t").unwrap();
        for (id, v) in recs {
            db.put_cf(cf, keys::record_key(*id), v).unwrap();
        }
    }

    /// Issue 9 item 2: an unreadable record was a hard error for the whole
    /// scan; now it is reported and the rest is returned.
    #[test]
    fn issue9_item2_bad_records_are_reported_and_the_scan_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let good = |id: u64| stored(&body(b"{\"x\":1.10}"), id);
        let deep = stored(
            &body(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).as_bytes()),
            2,
        );
        let (g1, g5) = (good(1), good(5));
        plant(
            &store,
            &[
                (1, g1.as_bytes()),
                (2, deep.as_bytes()),
                (3, stored(&body(br#""\udfff""#), 3).as_bytes()),
                (4, b"\x00\x01corrupt"),
                (5, g5.as_bytes()),
                (
                    6,
                    stored(&body(br#"{"$encrypted":"bm90IHNlYWxlZA=="}"#), 6).as_bytes(),
                ),
            ],
        );
        let page = scan_all(&store, None);
        let ids: Vec<u64> = page.records.iter().map(|r| r.insert_id).collect();
        // Without a key, a sealed-looking value is returned as is.
        assert_eq!(ids, [1, 5, 6]);
        assert_eq!(page.records[0].json, g1);
        let skipped: Vec<u64> = page.skipped.iter().map(|s| s.insert_id).collect();
        assert_eq!(skipped, [2, 3, 4]);
        assert!(page.skipped[0].reason.contains("nested deeper than 127"));
        assert!(page.skipped[1].reason.contains("lone surrogate"));
        assert_eq!(page.skipped[2].reason, "not a JSON object");
        // With a key it does not open: reported, naming the field.
        let page = scan_all(&store, Some(&key()));
        assert_eq!(page.skipped.len(), 4);
        assert!(
            page.skipped[3].reason.contains("wrong encryption key"),
            "{:?}",
            page.skipped
        );
        // A time filter reads the timestamp without a parse and still
        // reports what it cannot read.
        let q = Scan {
            table: "t".into(),
            since: Some("2026-11-26T00:00:00Z".into()),
            ..Scan::default()
        };
        let page = store.scan(&q, None).unwrap();
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.skipped.len(), 3);
        let q = Scan {
            until: Some("2026-11-25T00:00:00Z".into()),
            ..q
        };
        let page = store.scan(&q, None).unwrap();
        assert!(page.records.is_empty());
        // Only the record without a readable timestamp.
        assert_eq!(
            page.skipped.iter().map(|s| s.insert_id).collect::<Vec<_>>(),
            [4]
        );
    }

    /// Issue 9 item 7: a page stops at `limit` or `max_bytes`, whichever
    /// comes first, and says where the next one starts.
    #[test]
    fn issue9_item7_pages_stop_at_the_byte_limit_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<String> = (1..=50)
            .map(|id| {
                stored(
                    &body(format!("{{\"pad\":\"{}\"}}", "p".repeat(id as usize)).as_bytes()),
                    id,
                )
            })
            .collect();
        let store = Store::open(&config(dir.path())).unwrap();
        let planted: Vec<(u64, &[u8])> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.as_bytes()))
            .collect();
        plant(&store, &planted);
        for (limit, max_bytes) in [
            (Some(7), None),
            (None, Some(1000)),
            (Some(3), Some(1000)),
            (Some(1000), Some(160)),
        ] {
            let mut q = Scan {
                table: "t".into(),
                limit,
                max_bytes,
                ..Scan::default()
            };
            let mut got = Vec::new();
            let mut skipped = Vec::new();
            for _ in 0..100 {
                let page = store.scan(&q, None).unwrap();
                let bytes: usize = page.records.iter().map(|r| r.json.len()).sum::<usize>()
                    + page.skipped.iter().map(|s| s.reason.len()).sum::<usize>();
                assert!(bytes <= max_bytes.unwrap_or(usize::MAX), "{bytes}");
                assert!(page.records.len() + page.skipped.len() <= limit.unwrap_or(usize::MAX));
                assert!(!page.records.is_empty() || !page.skipped.is_empty());
                got.extend(page.records.iter().map(|r| r.json.clone()));
                skipped.extend(page.skipped.iter().map(|s| s.insert_id));
                match page.next {
                    Some(n) => q.from = Some(n),
                    None => break,
                }
            }
            if max_bytes == Some(160) {
                // Records over 160 bytes cannot be on a 160-byte page: named.
                let small = recs.iter().filter(|r| r.len() <= 160).count();
                assert!(small > 0 && small < 50);
                assert_eq!(got, recs[..small]);
                assert_eq!(skipped, (small as u64 + 1..=50).collect::<Vec<_>>());
            } else {
                assert_eq!(got, recs, "{limit:?} {max_bytes:?}");
                assert!(skipped.is_empty());
            }
        }
        // limit 0: nothing, and the cursor stays put.
        let page = store
            .scan(
                &Scan {
                    table: "t".into(),
                    from: Some(9),
                    limit: Some(0),
                    ..Scan::default()
                },
                None,
            )
            .unwrap();
        assert_eq!((page.records.len(), page.next), (0, Some(9)));
    }

    #[test]
    fn page_json_is_the_store_query_reply() {
        let page = Page {
            records: vec![
                Record {
                    insert_id: 1,
                    json: r#"{"insertId":1,"data":1.10}"#.into(),
                },
                Record {
                    insert_id: 2,
                    json: r#"{"insertId":2}"#.into(),
                },
            ],
            skipped: vec![],
            next: Some(3),
        };
        assert_eq!(
            String::from_utf8(page.to_json()).unwrap(),
            r#"{"records":[{"insertId":1,"data":1.10},{"insertId":2}],"next":3}"#
        );
        let page = Page {
            skipped: vec![Skipped {
                insert_id: 4,
                reason: "bad \"x\"".into(),
            }],
            ..Page::default()
        };
        assert_eq!(
            String::from_utf8(page.to_json()).unwrap(),
            r#"{"records":[],"next":null,"skipped":[{"insertId":4,"reason":"bad \"x\""}]}"#
        );
    }
}
