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
const ESCAPE: [bool; 256] = {
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

/// The raw text of member `key` of the JSON object `text`, as it was sent.
///
/// Storing or forwarding a message's `data` this way copies its bytes
/// instead of serialising the parsed value again (float formatting alone
/// was ~2% of a shard's time in the durable-ingest profile). `text` must be
/// valid JSON (the shard has parsed it already); for anything unexpected,
/// or any top-level key written with escapes, the answer is `None` and the
/// caller serialises the parsed value instead. With a key given twice the last one
/// counts, as in the parser.
pub fn member_span<'t>(text: &'t [u8], key: &str) -> Option<&'t [u8]> {
    let ws = |i: &mut usize| {
        while *i < text.len() && matches!(text[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    if text.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        ws(&mut i);
        match text.get(i)? {
            b'}' => return found,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let k_start = i + 1;
        i = string_end(text, i)?;
        let k = &text[k_start..i - 1];
        if k.contains(&b'\\') {
            // An escaped key may spell `key` too; the parser would count it,
            // so don't guess which one wins.
            return None;
        }
        ws(&mut i);
        if text.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let v_start = i;
        i = value_end(text, i)?;
        if k == key.as_bytes() {
            found = Some(&text[v_start..i]);
        }
    }
}

/// Index just past the string starting at `text[i] == '"'`.
fn string_end(text: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Index just past the value starting at `text[i]`.
fn value_end(text: &[u8], mut i: usize) -> Option<usize> {
    match text.get(i)? {
        b'"' => string_end(text, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            while i < text.len() {
                match text[i] {
                    b'"' => {
                        i = string_end(text, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            while i < text.len()
                && !matches!(text[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Some(i)
        }
    }
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
    fn member_span_finds_the_raw_value() {
        let t = br#" { "type" : "data", "x":{"data":1,"s":"}\"]"} , "data" : {"a":[1,{"b":"]"}],"t":-1.5e3} ,"z":null}"#;
        assert_eq!(
            member_span(t, "data").unwrap(),
            br#"{"a":[1,{"b":"]"}],"t":-1.5e3}"#
        );
        assert_eq!(member_span(t, "type").unwrap(), br#""data""#);
        assert_eq!(member_span(t, "z").unwrap(), b"null");
        assert_eq!(member_span(t, "missing"), None);
        assert_eq!(
            member_span(br#"{"data":1,"data":[2]}"#, "data").unwrap(),
            b"[2]"
        );
        assert_eq!(member_span(br#"{"data":true}"#, "data").unwrap(), b"true");
        assert_eq!(member_span(b"[1]", "data"), None);
        // `d\u0061ta` is `data` to the parser: refuse rather than pick one.
        assert_eq!(member_span(br#"{"data":1,"d\u0061ta":2}"#, "data"), None);
        // Truncated input is refused, not read past.
        assert_eq!(member_span(br#"{"data":{"a":"#, "data"), None);
    }

    proptest::proptest! {
        #[test]
        fn member_span_agrees_with_serde(v in arb_json(3), w in arb_json(2), pretty: bool) {
            let obj = serde_json::json!({"type": "data", "data": v, "other": w});
            let text = if pretty { serde_json::to_vec_pretty(&obj) } else { serde_json::to_vec(&obj) }.unwrap();
            let span = member_span(&text, "data").expect("found");
            let back: serde_json::Value = serde_json::from_slice(span).unwrap();
            proptest::prop_assert_eq!(back, obj["data"].clone());
        }
    }

    fn arb_json(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            // Floats that survive serde_json's text round trip exactly.
            (-1_000_000i64..1_000_000).prop_map(|n| serde_json::Value::from(n as f64 / 8.0)),
            "[ -~\\PC]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(depth, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"\\\\{}]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
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
