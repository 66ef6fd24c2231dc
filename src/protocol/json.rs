//! Writing JSON replies straight into bytes, without a `Value` tree.
//!
//! The hot replies (`data_response`, `heartbeat_response`, `publish`) are a
//! handful of known fields; building them field by field into one buffer
//! costs one allocation and no intermediate maps.

use bytes::Bytes;

/// An object being written.
#[derive(Debug)]
pub struct Obj {
    buf: Vec<u8>,
    first: bool,
}

/// Bytes that must be escaped inside a JSON string.
pub(crate) const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Append `s` as a JSON string (quoted and escaped).
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    // Keys, ids and timestamps almost never need escaping: copy them whole.
    if !bytes.iter().any(|&b| ESCAPE[b as usize]) {
        buf.extend_from_slice(bytes);
        buf.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

impl Obj {
    /// `{"type":"<ty>"` — every server message starts with its type.
    pub fn typed(ty: &str) -> Obj {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(b"{\"type\":");
        write_str(&mut buf, ty);
        Obj { buf, first: false }
    }

    /// `{` with no fields yet.
    pub fn new() -> Obj {
        let mut buf = Vec::with_capacity(256);
        buf.push(b'{');
        Obj { buf, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        write_str(&mut self.buf, k);
        self.buf.push(b':');
    }

    /// A string field.
    pub fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        write_str(&mut self.buf, v);
        self
    }

    /// A string field, if present.
    pub fn opt_str(self, k: &str, v: Option<&str>) -> Obj {
        match v {
            Some(v) => self.str(k, v),
            None => self,
        }
    }

    /// A boolean field.
    pub fn bool(mut self, k: &str, v: bool) -> Obj {
        self.key(k);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    /// An integer field.
    pub fn u64(mut self, k: &str, v: u64) -> Obj {
        self.key(k);
        self.buf.extend_from_slice(itoa(v).as_bytes());
        self
    }

    /// A field whose value is already JSON text.
    pub fn raw(mut self, k: &str, json: &[u8]) -> Obj {
        self.key(k);
        self.buf.extend_from_slice(json);
        self
    }

    /// A field whose value `write` appends as JSON text.
    pub fn raw_with(mut self, k: &str, write: impl FnOnce(&mut Vec<u8>)) -> Obj {
        self.key(k);
        write(&mut self.buf);
        self
    }

    /// A `serde_json` value field (off the hot path).
    pub fn value(mut self, k: &str, v: &serde_json::Value) -> Obj {
        self.key(k);
        serde_json::to_writer(&mut self.buf, v).expect("writing to a Vec cannot fail");
        self
    }

    /// The server timestamp field (`timestamp`, ISO-8601 UTC with milliseconds).
    pub fn now(self) -> Obj {
        self.str("timestamp", &now_shared())
    }

    /// Close the object.
    pub fn finish(mut self) -> Bytes {
        self.buf.push(b'}');
        Bytes::from(self.buf)
    }

    /// Close the object and return the raw vector.
    pub fn finish_vec(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

impl Default for Obj {
    fn default() -> Self {
        Obj::new()
    }
}

fn itoa(v: u64) -> String {
    v.to_string()
}

/// Now, as `2024-01-01T12:00:00.000Z`.
pub fn now_iso() -> String {
    now_shared().to_string()
}

/// The current time as [`now_iso`], shared: every caller on this thread in
/// the same millisecond gets the same string without an allocation.
///
/// Formatting a timestamp cost ~1.5% of a shard's time in the ingest
/// profile (one per `data_response`); at hundreds of thousands of replies a
/// second most of them fall in the same millisecond, so each thread keeps
/// the last one it formatted.
pub fn now_shared() -> std::rc::Rc<str> {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static LAST: RefCell<Option<(u128, Rc<str>)>> = const { RefCell::new(None) };
    }
    let now = SystemTime::now();
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((at, ts)) if *at == ms => ts.clone(),
            _ => {
                let ts: Rc<str> = humantime::format_rfc3339_millis(now).to_string().into();
                *last = Some((ms, ts.clone()));
                ts
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_json() {
        let b = Obj::typed("x")
            .str("s", "q\"uo\\te\n\u{1}é")
            .bool("ok", true)
            .u64("n", 42)
            .raw("d", br#"{"a":[1,2]}"#)
            .opt_str("none", None)
            .finish();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "x");
        assert_eq!(v["s"], "q\"uo\\te\n\u{1}é");
        assert_eq!(v["n"], 42);
        assert_eq!(v["d"]["a"][1], 2);
        assert!(v.get("none").is_none());
    }

    #[test]
    fn timestamp_shape() {
        let t = now_iso();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }

    #[test]
    fn cached_timestamp_moves_on() {
        let a = now_iso();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = now_iso();
        assert!(b > a, "{a} then {b}");
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped() {
        let all: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
        let mut buf = Vec::new();
        write_str(&mut buf, &all);
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, all);
    }
}
