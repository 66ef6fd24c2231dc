//! A stored record's text, read without building a tree.
//!
//! Readers hand records back exactly as they were stored: the bytes the
//! client sent for `data` (spliced in by the shard) inside the envelope the
//! shard wrote, with the `insertId` the writer put first. Parsing into a
//! `serde_json::Value` and printing it again would alter floats in their
//! last digit, reorder keys and drop whitespace, so nothing here does that.
//! Instead one iterative pass ([`check`]) validates a record and notes where
//! its sealed (`{"$encrypted": ..}`) fields are; decryption then splices each
//! field's plaintext, itself the JSON text that was sealed, in place of the
//! sealed object, leaving every other byte alone.
//!
//! The pass is the reader's definition of "readable": valid UTF-8, one JSON
//! value per RFC 8259, no lone surrogate escapes (no Unicode text can hold
//! one, and serde_json, Python's `json` in strict consumers, and Rust
//! clients refuse them), and at most [`MAX_DEPTH`] levels of nesting
//! (serde_json's recursion limit, so every record a reader returns parses
//! in the common consumers). It uses an explicit stack, so a hostile record
//! nested a million deep costs a bounded loop, not the thread's stack.

use super::crypto::{CryptoError, FieldKey, MARKER};

/// Deepest nesting of objects and arrays a readable record may have, the
/// record's own object counting as one. 127 is the most serde_json (whose
/// recursion limit is 128) parses; `data` may therefore be 126 deep.
pub const MAX_DEPTH: usize = 127;

/// Why a stored record cannot be returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// The bytes are not UTF-8.
    #[error("not UTF-8 (invalid byte at offset {at})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// Not one well-formed JSON value.
    #[error("malformed JSON at offset {at}: {what}")]
    Syntax {
        /// Offset where the text stops being JSON.
        at: usize,
        /// What was expected or found.
        what: &'static str,
    },
    /// A `\uD800`..`\uDFFF` escape that is not half of a surrogate pair.
    #[error("lone surrogate escape at offset {at}")]
    LoneSurrogate {
        /// Offset of the escape's backslash.
        at: usize,
    },
    /// Nested deeper than a reader can return.
    #[error("nested deeper than {max} levels")]
    TooDeep {
        /// The limit, [`MAX_DEPTH`].
        max: usize,
    },
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotObject,
    /// No usable `timestamp` member (needed for `since`/`until`).
    #[error("no timestamp")]
    NoTimestamp,
    /// Larger than the page's byte limit on its own.
    #[error("record is {size} bytes, more than a page may hold ({max}); read it with a larger byte limit (wshandler query)")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The page's byte limit.
        max: usize,
    },
    /// A sealed field did not open with the key, or its plaintext is not
    /// readable JSON.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A `{"$encrypted": "..."}` object inside the record's `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// The object, `{` to `}` inclusive: `start..end`.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// The base64 string's contents (between the quotes).
    pub(crate) b64: (usize, usize),
    /// Whether the string had escapes (then it must be unescaped first).
    pub(crate) escaped: bool,
    /// Depth of the sealed object itself (the record's object is 1).
    pub(crate) depth: usize,
    /// Where it is inside `data`, for messages (`location.lat`, `a[2]`).
    pub(crate) path: String,
}

/// What [`check`] learned about a readable record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Sealed fields inside the top-level `data` member, in text order.
    pub(crate) sealed: Vec<Sealed>,
}

#[derive(Debug)]
struct Frame {
    object: bool,
    start: usize,
    members: usize,
    /// Object: the current member's key (raw, between quotes).
    key: (usize, usize),
    /// Object with one member so far whose key is the marker.
    marker: bool,
    /// The marker member's value, if it was a string: (span, escaped).
    sealed_str: Option<((usize, usize), bool)>,
    /// This container is, or is inside, the top-level `data` member.
    in_data: bool,
}

enum Next {
    Value,
    AfterValue,
    Key,
}

fn syntax(at: usize, what: &'static str) -> Unreadable {
    Unreadable::Syntax { at, what }
}

/// Validate `text` as one JSON value nested at most `max_depth` deep and,
/// when `top_object` is set, as a record: an object, whose sealed fields
/// under `data` are returned.
pub(crate) fn check(text: &[u8], max_depth: usize, top_object: bool) -> Result<Shape, Unreadable> {
    if let Err(e) = std::str::from_utf8(text) {
        return Err(Unreadable::NotUtf8 {
            at: e.valid_up_to(),
        });
    }
    let mut shape = Shape::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = skip_ws(text, 0);
    if top_object && text.get(i) != Some(&b'{') {
        return Err(Unreadable::NotObject);
    }
    let mut next = Next::Value;
    loop {
        match next {
            Next::Value => {
                let Some(&c) = text.get(i) else {
                    return Err(syntax(i, "expected a value"));
                };
                match c {
                    b'{' | b'[' => {
                        if stack.len() >= max_depth {
                            return Err(Unreadable::TooDeep { max: max_depth });
                        }
                        let in_data = match stack.last() {
                            None => false,
                            Some(p) if p.in_data => true,
                            // A member of the record's own object.
                            Some(p) => {
                                stack.len() == 1 && top_object && &text[p.key.0..p.key.1] == b"data"
                            }
                        };
                        stack.push(Frame {
                            object: c == b'{',
                            start: i,
                            members: 0,
                            key: (0, 0),
                            marker: false,
                            sealed_str: None,
                            in_data,
                        });
                        i = skip_ws(text, i + 1);
                        let close = if c == b'{' { b'}' } else { b']' };
                        if text.get(i) == Some(&close) {
                            // Empty: close it right here.
                            i += 1;
                            stack.pop();
                            next = Next::AfterValue;
                        } else if c == b'{' {
                            next = Next::Key;
                        }
                        // `[`: a value follows, `next` stays Value.
                    }
                    b'"' => {
                        let (end, escaped) = string(text, i)?;
                        if let Some(f) = stack.last_mut() {
                            if f.object && f.marker && f.members == 0 {
                                f.sealed_str = Some(((i + 1, end - 1), escaped));
                            }
                        }
                        i = end;
                        next = Next::AfterValue;
                    }
                    b'-' | b'0'..=b'9' => {
                        i = number(text, i)?;
                        next = Next::AfterValue;
                    }
                    b't' => {
                        i = literal(text, i, b"true")?;
                        next = Next::AfterValue;
                    }
                    b'f' => {
                        i = literal(text, i, b"false")?;
                        next = Next::AfterValue;
                    }
                    b'n' => {
                        i = literal(text, i, b"null")?;
                        next = Next::AfterValue;
                    }
                    _ => return Err(syntax(i, "expected a value")),
                }
            }
            Next::Key => {
                if text.get(i) != Some(&b'"') {
                    return Err(syntax(i, "expected a key"));
                }
                let (end, escaped) = string(text, i)?;
                let f = stack.last_mut().expect("a key is inside an object");
                f.key = (i + 1, end - 1);
                f.marker = f.members == 0 && !escaped && &text[i + 1..end - 1] == MARKER.as_bytes();
                i = skip_ws(text, end);
                if text.get(i) != Some(&b':') {
                    return Err(syntax(i, "expected `:`"));
                }
                i = skip_ws(text, i + 1);
                next = Next::Value;
            }
            Next::AfterValue => {
                i = skip_ws(text, i);
                let Some(f) = stack.last_mut() else {
                    if i != text.len() {
                        return Err(syntax(i, "text after the value"));
                    }
                    return Ok(shape);
                };
                match (text.get(i), f.object) {
                    (Some(b','), obj) => {
                        f.members += 1;
                        f.marker = false;
                        i = skip_ws(text, i + 1);
                        next = if obj { Next::Key } else { Next::Value };
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        let f = stack.pop().expect("checked above");
                        i += 1;
                        if let (true, 0, true, Some((b64, escaped))) =
                            (f.object, f.members, f.marker, f.sealed_str)
                        {
                            if f.in_data {
                                shape.sealed.push(Sealed {
                                    start: f.start,
                                    end: i,
                                    b64,
                                    escaped,
                                    depth: stack.len() + 1,
                                    path: path_of(text, &stack),
                                });
                            }
                        }
                        next = Next::AfterValue;
                    }
                    (_, true) => return Err(syntax(i, "expected `,` or `}`")),
                    (_, false) => return Err(syntax(i, "expected `,` or `]`")),
                }
            }
        }
    }
}

/// The dot path, relative to `data`, of a value whose enclosing containers
/// are `stack` (the record's object first).
fn path_of(text: &[u8], stack: &[Frame]) -> String {
    let mut p = String::new();
    for (n, f) in stack.iter().enumerate().skip(1) {
        if f.object {
            if n > 1 {
                p.push('.');
            }
            p.push_str(&String::from_utf8_lossy(&text[f.key.0..f.key.1]));
        } else {
            p.push_str(&format!("[{}]", f.members));
        }
    }
    p
}

fn skip_ws(text: &[u8], mut i: usize) -> usize {
    while matches!(text.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

fn literal(text: &[u8], i: usize, word: &'static [u8]) -> Result<usize, Unreadable> {
    if text.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        Err(syntax(i, "expected true, false or null"))
    }
}

fn digits(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Index past the number at `i`, per RFC 8259's grammar (any magnitude).
fn number(text: &[u8], mut i: usize) -> Result<usize, Unreadable> {
    if text.get(i) == Some(&b'-') {
        i += 1;
    }
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(text, i),
        _ => return Err(syntax(i, "expected a digit")),
    }
    if text.get(i) == Some(&b'.') {
        let j = digits(text, i + 1);
        if j == i + 1 {
            return Err(syntax(j, "expected a digit after `.`"));
        }
        i = j;
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(text, i);
        if j == i {
            return Err(syntax(j, "expected a digit in the exponent"));
        }
        i = j;
    }
    Ok(i)
}

fn hex4(text: &[u8], i: usize) -> Option<u16> {
    let h = text.get(i..i + 4)?;
    let s = std::str::from_utf8(h).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// Index past the string at `text[i] == '"'`, and whether it had escapes.
/// `text` is known to be UTF-8.
fn string(text: &[u8], mut i: usize) -> Result<(usize, bool), Unreadable> {
    i += 1;
    let mut escaped = false;
    loop {
        match text.get(i) {
            None => return Err(syntax(i, "unterminated string")),
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match text.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        let at = i;
                        let Some(u) = hex4(text, i + 2) else {
                            return Err(syntax(i, "bad \\u escape"));
                        };
                        i += 6;
                        match u {
                            0xD800..=0xDBFF => {
                                let low = (text.get(i..i + 2) == Some(b"\\u"))
                                    .then(|| hex4(text, i + 2))
                                    .flatten();
                                match low {
                                    Some(0xDC00..=0xDFFF) => i += 6,
                                    _ => return Err(Unreadable::LoneSurrogate { at }),
                                }
                            }
                            0xDC00..=0xDFFF => return Err(Unreadable::LoneSurrogate { at }),
                            _ => {}
                        }
                    }
                    _ => return Err(syntax(i, "bad escape")),
                }
            }
            Some(&c) if c < 0x20 => return Err(syntax(i, "control character in a string")),
            Some(_) => i += 1,
        }
    }
}

/// The record with every sealed field of `shape` replaced by its plaintext.
/// Fails (naming the field) on a wrong key, a damaged value or plaintext
/// that is not readable JSON at that depth.
pub(crate) fn decrypt(text: &[u8], shape: &Shape, key: &FieldKey) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for s in &shape.sealed {
        let raw = &text[s.b64.0..s.b64.1];
        let b64 = if s.escaped {
            let mut quoted = Vec::with_capacity(raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(raw);
            quoted.push(b'"');
            serde_json::from_slice::<String>(&quoted)
                .map_err(|_| CryptoError::Decrypt(s.path.clone()))?
        } else {
            // Validated as UTF-8 by `check`.
            String::from_utf8_lossy(raw).into_owned()
        };
        let plain = key.open(&b64, &s.path)?;
        // The plaintext takes the sealed object's place, `depth - 1` levels
        // down.
        check(&plain, MAX_DEPTH + 1 - s.depth, false)
            .map_err(|_| CryptoError::Decrypt(s.path.clone()))?;
        out.extend_from_slice(&text[at..s.start]);
        out.extend_from_slice(trim_ws(&plain));
        at = s.end;
    }
    out.extend_from_slice(&text[at..]);
    Ok(out)
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) -> bool {
        check(t.as_bytes(), MAX_DEPTH, false).is_ok()
    }

    #[test]
    fn accepts_what_rfc_8259_accepts() {
        for t in [
            "0",
            "-0",
            "1.5e-7",
            "123456789012345678901234567890",
            "0.026279616940263262",
            r#""é\u00e9\ud83d\ude00\n\/""#,
            r#" {"a" : [1, {"b":null}, true, false, []], "c":{} } "#,
            "[[[[]]]]",
        ] {
            assert!(ok(t), "{t}");
            // serde_json agrees.
            assert!(serde_json::from_str::<serde_json::Value>(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn refuses_what_it_must() {
        for t in [
            "",
            "01",
            "1.",
            "1e",
            "-",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "\"abc",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\u12g4\"",
            "tru",
            "[1]]",
            "{} {}",
            "[",
        ] {
            assert!(!ok(t), "{t:?}");
        }
        assert_eq!(
            check(br#""a\ud800b""#, 10, false),
            Err(Unreadable::LoneSurrogate { at: 2 })
        );
        assert_eq!(
            check(br#""\udc00""#, 10, false),
            Err(Unreadable::LoneSurrogate { at: 1 })
        );
        assert_eq!(
            check(br#""\ud800\u0041""#, 10, false),
            Err(Unreadable::LoneSurrogate { at: 1 })
        );
        assert_eq!(
            check(b"\"\xff\"", 10, false),
            Err(Unreadable::NotUtf8 { at: 1 })
        );
        assert_eq!(check(b"[1]", 10, true), Err(Unreadable::NotObject));
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(ok(&deep(MAX_DEPTH)));
        assert_eq!(
            check(deep(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH, false),
            Err(Unreadable::TooDeep { max: MAX_DEPTH })
        );
        // What the reader accepts, serde_json parses.
        assert!(serde_json::from_str::<serde_json::Value>(&deep(MAX_DEPTH)).is_ok());
        // A million levels: an error, not a stack overflow.
        assert!(!ok(&deep(1_000_000)));
    }

    #[test]
    fn finds_sealed_fields_only_under_data() {
        let t = br#"{"insertId":1,"x":{"$encrypted":"AA=="},"data":{"a":{"$encrypted":"QQ=="},"b":[1,{"$encrypted":"Qg\/="}],"c":{"$encrypted":"x","y":1}}}"#;
        let s = check(t, MAX_DEPTH, true).unwrap();
        let paths: Vec<&str> = s.sealed.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, ["a", "b[1]"]);
        assert_eq!(
            &t[s.sealed[0].start..s.sealed[0].end],
            br#"{"$encrypted":"QQ=="}"#
        );
        assert_eq!(&t[s.sealed[0].b64.0..s.sealed[0].b64.1], b"QQ==");
        assert_eq!((s.sealed[0].depth, s.sealed[1].depth), (3, 4));
        assert!(s.sealed[1].escaped && !s.sealed[0].escaped);
        // `data` itself sealed.
        let t = br#"{"data":{"$encrypted":"QQ=="}}"#;
        let s = check(t, MAX_DEPTH, true).unwrap();
        assert_eq!((s.sealed.len(), s.sealed[0].path.as_str()), (1, ""));
    }
}
