//! Inbound JSON: one validating pass over a client's message, before
//! anything else reads it.
//!
//! Every text message goes through [`scan`] once. It is a complete JSON
//! validator (RFC 8259 grammar) with three rules of our own, each there
//! because the server promises to hand back what a client sent unchanged:
//!
//! - **Nesting is bounded** (`max_json_depth`) with an explicit counter, no
//!   recursion: a frame of 100,000 `[` cannot overflow a shard's stack, and
//!   nothing stored can later defeat a reader's recursion limit.
//! - **Lone surrogate escapes are refused** (`"\ud800"`): they name no
//!   Unicode character, so no reader can return them as text; a pair
//!   (`"\ud83d\ude00"`) is fine.
//! - **Duplicate top-level keys are refused**: parsers disagree on which
//!   one wins (first or last), so a message could be validated on one value
//!   and acted on with another.
//!
//! What it leaves behind is where each top-level member is, as byte ranges
//! into the message ([`Msg`]). Handlers read fields through it and forward
//! `data`, `params` and the like as the exact bytes the client sent, never
//! a re-serialised value: numbers keep every digit (also past u64 or f64
//! range, which RFC 8259 allows), strings their escapes, objects their key
//! order. There is no value tree: the hot path allocates nothing here once
//! the shard's member buffer has grown to the largest message's key count.
//!
//! Nested objects (a `data` object's fields, for `required_fields`) are read
//! with [`members`], which trusts that the text was validated already.

use std::borrow::Cow;
use std::fmt;

// Bytes that end the fast part of a string scan: exactly those a JSON
// string must escape (control characters, `"`, `\`).
use super::json::ESCAPE as STR_STOP;

/// Upper bound for `max_json_depth`: the nesting stack is a `u128` of
/// object/array bits.
pub const MAX_DEPTH_LIMIT: u32 = 128;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Not JSON at all, or broken JSON; `at` is the byte offset.
    #[error("invalid JSON at byte {at}: {what}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was expected or found, in words.
        what: &'static str,
    },
    /// A `\uD800`–`\uDFFF` escape that is not half of a surrogate pair.
    #[error("invalid JSON at byte {at}: lone surrogate escape \\u{code:04x} (not a Unicode character; send the character itself or a surrogate pair)")]
    LoneSurrogate {
        /// Byte offset of the escape.
        at: usize,
        /// The escaped code unit.
        code: u16,
    },
    /// More nested arrays/objects than `max_json_depth`.
    #[error("JSON nested deeper than {max} levels (max_json_depth)")]
    TooDeep {
        /// The configured bound.
        max: u32,
    },
    /// Valid JSON, but not an object.
    #[error("a message must be a JSON object")]
    NotObject,
    /// The same key twice at the top level.
    #[error("duplicate key \"{0}\" in message")]
    DuplicateKey(String),
}

impl ScanError {
    /// The `error` code a client receives for this refusal.
    pub fn code(&self) -> super::ErrorCode {
        use super::ErrorCode;
        match self {
            ScanError::Syntax { .. } | ScanError::LoneSurrogate { .. } => ErrorCode::InvalidJson,
            ScanError::TooDeep { .. } => ErrorCode::TooDeep,
            ScanError::NotObject | ScanError::DuplicateKey(_) => ErrorCode::InvalidMessage,
        }
    }
}

/// One top-level member: byte ranges into the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The key's text between its quotes (escapes not decoded).
    key: (u32, u32),
    /// The value's text, exactly as sent.
    value: (u32, u32),
}

/// A validated message: the text and where its top-level members are.
#[derive(Clone, Copy)]
pub struct Msg<'t> {
    text: &'t [u8],
    members: &'t [Member],
}

impl fmt::Debug for Msg<'_> {
    // Lengths only: a message may carry secrets (tokens) and payloads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msg")
            .field("len", &self.text.len())
            .field("members", &self.members.len())
            .finish()
    }
}

/// A member's value, as sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Field<'t> {
    raw: &'t [u8],
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({} bytes)", self.raw.len())
    }
}

/// A field is there but of the wrong JSON type (or an out-of-range number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType {
    /// What the field must be, e.g. `a string`.
    pub expected: &'static str,
}

/// Validate `text` as a message (a JSON object nested at most `max_depth`
/// deep) and record its top-level members in `out` (cleared first).
pub fn scan<'t>(
    text: &'t [u8],
    max_depth: u32,
    out: &'t mut Vec<Member>,
) -> Result<Msg<'t>, ScanError> {
    out.clear();
    Scanner {
        b: text,
        i: 0,
        max_depth: max_depth.min(MAX_DEPTH_LIMIT),
    }
    .run(out)?;
    check_duplicates(text, out)?;
    Ok(Msg { text, members: out })
}

impl<'t> Msg<'t> {
    /// The whole message.
    pub fn text(&self) -> &'t [u8] {
        self.text
    }

    /// The member `key`, if present (keys written with escapes match too).
    pub fn get(&self, key: &str) -> Option<Field<'t>> {
        self.members
            .iter()
            .find(|m| key_eq(self.slice(m.key), key))
            .map(|m| Field {
                raw: self.slice(m.value),
            })
    }

    /// Every top-level member as (key, value), in the order sent; keys with
    /// escapes are decoded.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'t, str>, Field<'t>)> + '_ {
        self.members.iter().map(|m| {
            (
                decode_str(self.slice(m.key)),
                Field {
                    raw: self.slice(m.value),
                },
            )
        })
    }

    /// The raw text of every member but `skip`, as an object: `{...}`.
    pub fn object_without(&self, skip: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len());
        out.push(b'{');
        for m in self.members {
            let k = self.slice(m.key);
            if key_eq(k, skip) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k);
            out.extend_from_slice(b"\":");
            out.extend_from_slice(self.slice(m.value));
        }
        out.push(b'}');
        out
    }

    /// A string field: `Ok(None)` if absent, `Err` if not a string.
    pub fn str(&self, key: &str) -> Result<Option<Cow<'t, str>>, WrongType> {
        self.get(key).map(|f| f.as_str()).transpose()
    }

    /// A non-negative integer field: `Ok(None)` if absent.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, WrongType> {
        self.get(key).map(|f| f.as_u64()).transpose()
    }

    /// A boolean field: `Ok(None)` if absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, WrongType> {
        self.get(key).map(|f| f.as_bool()).transpose()
    }

    fn slice(&self, (a, b): (u32, u32)) -> &'t [u8] {
        &self.text[a as usize..b as usize]
    }
}

impl<'t> Field<'t> {
    /// Wrap text that was validated already (a span [`scan`] returned, or
    /// one of [`members`]).
    pub fn from_validated(raw: &'t [u8]) -> Field<'t> {
        Field { raw }
    }

    /// The value's text, exactly as sent.
    pub fn raw(&self) -> &'t [u8] {
        self.raw
    }

    /// A string's value (escapes decoded; borrowed when it has none).
    pub fn as_str(&self) -> Result<Cow<'t, str>, WrongType> {
        match self.raw.first() {
            Some(b'"') => Ok(decode_str(&self.raw[1..self.raw.len() - 1])),
            _ => Err(WrongType {
                expected: "a string",
            }),
        }
    }

    /// A non-negative integer that fits u64 (`7`, not `7.0`, `-1` or `"7"`).
    pub fn as_u64(&self) -> Result<u64, WrongType> {
        let err = WrongType {
            expected: "a non-negative integer (at most 18446744073709551615)",
        };
        if !self.raw.iter().all(u8::is_ascii_digit) {
            return Err(err);
        }
        std::str::from_utf8(self.raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(err)
    }

    /// `true` or `false`.
    pub fn as_bool(&self) -> Result<bool, WrongType> {
        match self.raw {
            b"true" => Ok(true),
            b"false" => Ok(false),
            _ => Err(WrongType {
                expected: "true or false",
            }),
        }
    }

    /// Is it `null`?
    pub fn is_null(&self) -> bool {
        self.raw == b"null"
    }

    /// Is it a string?
    pub fn is_str(&self) -> bool {
        self.raw.first() == Some(&b'"')
    }

    /// Is it a number?
    pub fn is_number(&self) -> bool {
        matches!(self.raw.first(), Some(b'-' | b'0'..=b'9'))
    }

    /// Is it an object?
    pub fn is_object(&self) -> bool {
        self.raw.first() == Some(&b'{')
    }

    /// An object's member `key` (validated text only).
    pub fn get(&self, key: &str) -> Option<Field<'t>> {
        if !self.is_object() {
            return None;
        }
        let mut found = None;
        for (k, v) in members(self.raw) {
            if key_eq(k, key) {
                found = Some(Field { raw: v });
            }
        }
        found
    }
}

/// Does the raw key text (between quotes, escapes undecoded) spell `key`?
fn key_eq(raw: &[u8], key: &str) -> bool {
    if raw.contains(&b'\\') {
        decode_str(raw) == key
    } else {
        raw == key.as_bytes()
    }
}

/// Decode the text between a string's quotes. The text was validated, so
/// every escape is well formed and surrogates come in pairs.
fn decode_str(raw: &[u8]) -> Cow<'_, str> {
    // Validated text is UTF-8 (the WebSocket layer checks text frames) and
    // the scanner accepts only well-formed escapes.
    let s = match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(_) => return Cow::Owned(String::from_utf8_lossy(raw).into_owned()),
    };
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.char_indices();
    while let Some((_, c)) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = it.next() else { break };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex = |it: &mut std::str::CharIndices<'_>| {
                    let mut v = 0u32;
                    for _ in 0..4 {
                        let d = it.next().and_then(|(_, h)| h.to_digit(16)).unwrap_or(0);
                        v = v * 16 + d;
                    }
                    v
                };
                let hi = hex(&mut it);
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    it.next();
                    it.next(); // `\u`
                    let lo = hex(&mut it);
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    hi
                };
                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            other => out.push(other), // `"`, `\`, `/`
        }
    }
    Cow::Owned(out)
}

fn check_duplicates(text: &[u8], m: &[Member]) -> Result<(), ScanError> {
    let key = |x: &Member| &text[x.key.0 as usize..x.key.1 as usize];
    let escaped = m.iter().any(|x| key(x).contains(&b'\\'));
    let dup = |a: &Member, b: &Member| {
        if escaped {
            decode_str(key(a)) == decode_str(key(b))
        } else {
            key(a) == key(b)
        }
    };
    let found = if m.len() <= 16 {
        (0..m.len()).find_map(|i| m[i + 1..].iter().find(|b| dup(&m[i], b)))
    } else {
        // Many keys: sort instead of comparing every pair.
        let mut keys: Vec<(Cow<'_, str>, usize)> = m
            .iter()
            .enumerate()
            .map(|(i, x)| (decode_str(key(x)), i))
            .collect();
        keys.sort();
        keys.windows(2)
            .find(|w| w[0].0 == w[1].0)
            .map(|w| &m[w[1].1])
    };
    match found {
        Some(d) => Err(ScanError::DuplicateKey(decode_str(key(d)).into_owned())),
        None => Ok(()),
    }
}

struct Scanner<'t> {
    b: &'t [u8],
    i: usize,
    max_depth: u32,
}

impl Scanner<'_> {
    fn err(&self, what: &'static str) -> ScanError {
        ScanError::Syntax { at: self.i, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The whole text: one value, then only whitespace. Top-level members
    /// go to `out` when that value is an object.
    fn run(&mut self, out: &mut Vec<Member>) -> Result<(), ScanError> {
        // Bit d of `stack` is 1 when the container at depth d+1 is an object.
        let mut stack: u128 = 0;
        let mut depth: u32 = 0;
        // The top-level member whose value is being read: (key, value start).
        let mut member: Option<((u32, u32), u32)> = None;
        let mut top_is_object = false;
        'value: loop {
            self.ws();
            if depth == 1 && top_is_object {
                if let Some((k, _)) = member {
                    member = Some((k, self.i as u32));
                }
            }
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth >= self.max_depth {
                        return Err(ScanError::TooDeep {
                            max: self.max_depth,
                        });
                    }
                    let obj = open == b'{';
                    if depth == 0 {
                        top_is_object = obj;
                    }
                    if obj {
                        stack |= 1 << depth;
                    } else {
                        stack &= !(1 << depth);
                    }
                    depth += 1;
                    self.i += 1;
                    self.ws();
                    let close = if obj { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                    } else if obj {
                        self.key(depth, &mut member)?;
                        continue 'value;
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(self.err("expected a value")),
                None => return Err(self.err("unexpected end of text, expected a value")),
            }
            // After a value: close containers, or go on to the next item.
            loop {
                if depth == 1 && top_is_object {
                    if let Some((k, start)) = member.take() {
                        out.push(Member {
                            key: k,
                            value: (start, self.i as u32),
                        });
                    }
                }
                self.ws();
                if depth == 0 {
                    if self.i != self.b.len() {
                        return Err(self.err("unexpected text after the end of the message"));
                    }
                    return if top_is_object {
                        Ok(())
                    } else {
                        Err(ScanError::NotObject)
                    };
                }
                let in_obj = stack & (1 << (depth - 1)) != 0;
                match (self.peek(), in_obj) {
                    (Some(b','), true) => {
                        self.i += 1;
                        self.ws();
                        self.key(depth, &mut member)?;
                        continue 'value;
                    }
                    (Some(b','), false) => {
                        self.i += 1;
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.i += 1;
                        depth -= 1;
                    }
                    (None, _) => return Err(self.err("unexpected end of text")),
                    (_, true) => return Err(self.err("expected ',' or '}' after an object member")),
                    (_, false) => {
                        return Err(self.err("expected ',' or ']' after an array element"))
                    }
                }
            }
        }
    }

    /// `"key"` then `:`; at depth 1 the key is remembered in `member`.
    fn key(&mut self, depth: u32, member: &mut Option<((u32, u32), u32)>) -> Result<(), ScanError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        let start = self.i + 1;
        self.string()?;
        if depth == 1 {
            *member = Some(((start as u32, (self.i - 1) as u32), 0));
        }
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.err("expected ':' after an object key"));
        }
        self.i += 1;
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected true, false or null"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// RFC 8259 number grammar; any size (the text is kept as sent).
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.err("a number may not have leading zeros"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("expected a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected a digit in the exponent"));
            }
        }
        Ok(())
    }

    /// A string starting at the opening quote; leaves `i` past the closing one.
    fn string(&mut self) -> Result<(), ScanError> {
        self.i += 1;
        loop {
            // Fast part: plain bytes.
            while self.i < self.b.len() && !STR_STOP[self.b[self.i] as usize] {
                self.i += 1;
            }
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.err("control character in a string (escape it)")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("unterminated \\u escape"))?;
        let mut v = 0u16;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("expected four hex digits after \\u"))?;
            v = v * 16 + d as u16;
        }
        self.i += 4;
        Ok(v)
    }

    fn escape(&mut self) -> Result<(), ScanError> {
        let at = self.i;
        self.i += 1; // the backslash
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                let cu = self.hex4()?;
                match cu {
                    0xD800..=0xDBFF => {
                        // Must be followed by a low surrogate escape.
                        if self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                            let save = self.i;
                            self.i += 2;
                            let lo = self.hex4()?;
                            if (0xDC00..=0xDFFF).contains(&lo) {
                                return Ok(());
                            }
                            self.i = save;
                        }
                        Err(ScanError::LoneSurrogate { at, code: cu })
                    }
                    0xDC00..=0xDFFF => Err(ScanError::LoneSurrogate { at, code: cu }),
                    _ => Ok(()),
                }
            }
            Some(_) => {
                Err(self.err("unknown escape (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"))
            }
            None => Err(self.err("unterminated string")),
        }
    }
}

/// The members of an object whose text was validated already, as raw
/// (key between quotes, value) pairs; empty for anything but an object.
pub fn members(text: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut i = 0;
    let ws = move |text: &[u8], i: &mut usize| {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = text.get(*i) {
            *i += 1;
        }
    };
    ws(text, &mut i);
    let mut ok = text.get(i) == Some(&b'{');
    i += 1;
    std::iter::from_fn(move || {
        if !ok {
            return None;
        }
        ws(text, &mut i);
        if text.get(i) == Some(&b',') {
            i += 1;
            ws(text, &mut i);
        }
        if text.get(i) != Some(&b'"') {
            ok = false;
            return None;
        }
        let k_start = i + 1;
        i = string_end(text, i)?;
        let k = &text[k_start..i - 1];
        ws(text, &mut i);
        i += 1; // ':'
        ws(text, &mut i);
        let v_start = i;
        i = value_end(text, i)?;
        Some((k, &text[v_start..i]))
    })
}

/// Index just past the string starting at `text[i] == '"'` (validated text).
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

/// Index just past the value starting at `text[i]` (validated text).
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

    fn ok(t: &str) -> Vec<(String, String)> {
        let mut buf = Vec::new();
        let m = scan(t.as_bytes(), 64, &mut buf).unwrap_or_else(|e| panic!("{t}: {e}"));
        m.iter()
            .map(|(k, v)| (k.into_owned(), String::from_utf8(v.raw().to_vec()).unwrap()))
            .collect()
    }

    fn bad(t: &[u8]) -> ScanError {
        let mut buf = Vec::new();
        scan(t, 64, &mut buf).expect_err(&String::from_utf8_lossy(t))
    }

    #[test]
    fn members_are_the_text_as_sent() {
        let m = ok(
            r#" { "type" : "data", "data" : {"b":1.0000000000000000001,"a":[1,{"c":"]"}],"n":123456789012345678901234567890} ,"z":null}  "#,
        );
        assert_eq!(m[0], ("type".into(), r#""data""#.into()));
        assert_eq!(
            m[1].1,
            r#"{"b":1.0000000000000000001,"a":[1,{"c":"]"}],"n":123456789012345678901234567890}"#
        );
        assert_eq!(m[2], ("z".into(), "null".into()));
        assert_eq!(ok("{}"), vec![]);
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(bad(deep.as_bytes()), ScanError::TooDeep { max: 64 });
        // Exactly at the bound is fine: the object is level 1.
        let at = format!("{{\"a\":{}{}}}", "[".repeat(63), "]".repeat(63));
        ok(&at);
        let over = format!("{{\"a\":{}{}}}", "[".repeat(64), "]".repeat(64));
        assert_eq!(bad(over.as_bytes()), ScanError::TooDeep { max: 64 });
    }

    #[test]
    fn lone_surrogates_are_refused_pairs_are_not() {
        assert!(matches!(
            bad(br#"{"a":"x\ud800y"}"#),
            ScanError::LoneSurrogate { code: 0xd800, .. }
        ));
        assert!(matches!(
            bad(br#"{"a":"\udc00"}"#),
            ScanError::LoneSurrogate { code: 0xdc00, .. }
        ));
        assert!(matches!(
            bad(br#"{"a":"\ud800\u0041"}"#),
            ScanError::LoneSurrogate { .. }
        ));
        let m = ok(r#"{"a":"\ud83d\ude00 \u00e9"}"#);
        let mut buf = Vec::new();
        let msg = scan(br#"{"a":"\ud83d\ude00 \u00e9"}"#, 64, &mut buf).unwrap();
        assert_eq!(msg.str("a").unwrap().unwrap(), "😀 é");
        assert_eq!(m[0].1, r#""\ud83d\ude00 \u00e9""#);
    }

    #[test]
    fn duplicate_top_level_keys_are_refused() {
        assert_eq!(
            bad(br#"{"type":"data","type":"subscribe"}"#),
            ScanError::DuplicateKey("type".into())
        );
        // Spelled with an escape, still the same key.
        assert_eq!(
            bad(br#"{"type":"data","t\u0079pe":"subscribe"}"#),
            ScanError::DuplicateKey("type".into())
        );
        let many: String = (0..40).map(|i| format!("\"k{i}\":1,")).collect();
        assert_eq!(
            bad(format!("{{{many}\"k7\":2}}").as_bytes()),
            ScanError::DuplicateKey("k7".into())
        );
        // Nested duplicates are the data's business, kept as sent.
        ok(r#"{"data":{"a":1,"a":2}}"#);
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        let cases: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"{", 1),
            (b"{\"a\":1,}", 7),
            (b"{\"a\" 1}", 5),
            (b"{\"a\":01}", 6),
            (b"{\"a\":1.}", 7),
            (b"{\"a\":tru}", 5),
            (b"{\"a\":\"x\x00\"}", 7),
            (b"{\"a\":\"\\x\"}", 7),
            (b"{\"a\":1} x", 8),
            (b"\x00", 0),
        ];
        for (t, at) in cases {
            match bad(t) {
                ScanError::Syntax { at: got, what } => {
                    assert_eq!(got, *at, "{:?}: {what}", String::from_utf8_lossy(t));
                    let shown = bad(t).to_string();
                    assert!(
                        !shown.contains("Tape") && !shown.contains("Internal"),
                        "{shown}"
                    );
                }
                e => panic!("{:?}: {e:?}", String::from_utf8_lossy(t)),
            }
        }
        assert_eq!(bad(b"[1]"), ScanError::NotObject);
        assert_eq!(bad(b" 5 "), ScanError::NotObject);
    }

    #[test]
    fn typed_access() {
        let mut buf = Vec::new();
        let m = scan(
            br#"{"s":"a\"b","n":7,"neg":-1,"f":6.5,"q":"7","b":true,"big":18446744073709551616,"nul":null}"#,
            64,
            &mut buf,
        )
        .unwrap();
        assert_eq!(m.str("s").unwrap().unwrap(), "a\"b");
        assert_eq!(m.u64("n").unwrap(), Some(7));
        assert!(m.u64("neg").is_err());
        assert!(m.u64("f").is_err());
        assert!(m.u64("q").is_err());
        assert!(m.u64("big").is_err());
        assert!(m.str("n").is_err());
        assert_eq!(m.bool("b").unwrap(), Some(true));
        assert_eq!(m.str("missing").unwrap(), None);
        assert!(m.get("nul").unwrap().is_null());
        assert_eq!(
            m.object_without("s"),
            br#"{"n":7,"neg":-1,"f":6.5,"q":"7","b":true,"big":18446744073709551616,"nul":null}"#
        );
    }

    #[test]
    fn nested_members() {
        let d =
            Field::from_validated(br#" {"a": 1, "b" :{"c":[1,"}"]}, "a\u0062":2} "#.trim_ascii());
        assert_eq!(d.get("a").unwrap().raw(), b"1");
        assert_eq!(d.get("b").unwrap().get("c").unwrap().raw(), br#"[1,"}"]"#);
        assert_eq!(d.get("ab").unwrap().raw(), b"2");
        assert!(d.get("zz").is_none());
        assert!(Field::from_validated(b"[1]").get("a").is_none());
    }

    proptest::proptest! {
        /// The scanner accepts exactly what serde_json accepts (for objects
        /// without duplicate keys or lone surrogates, which serde_json
        /// generates neither of), and each member's span reads back as the
        /// member.
        #[test]
        fn agrees_with_serde(v in arb_json(4), pretty: bool) {
            let obj = serde_json::json!({"type": "data", "data": v});
            let text = if pretty { serde_json::to_vec_pretty(&obj) } else { serde_json::to_vec(&obj) }.unwrap();
            let mut buf = Vec::new();
            let m = scan(&text, 64, &mut buf).expect("valid");
            let data = m.get("data").expect("data");
            let back: serde_json::Value = serde_json::from_slice(data.raw()).unwrap();
            proptest::prop_assert_eq!(back, obj["data"].clone());
        }

        /// Arbitrary bytes: never a panic; whatever is accepted serde_json
        /// accepts too.
        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut buf = Vec::new();
            if scan(&b, 64, &mut buf).is_ok() {
                proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
            }
        }
    }

    fn arb_json(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
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
}
