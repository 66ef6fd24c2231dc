//! The HTTP/1.1 upgrade (RFC 6455 §4.2) and the few plain HTTP answers the
//! server gives on the same port.
//!
//! [`parse_request`] reads a request head with `httparse` (no allocation for
//! the header list) and [`Request::decide`] turns it into one of: accept (101),
//! health (200), or a refusal with the status an HTTP client can act on —
//! 405 for a non-GET, 400 for a missing or bad upgrade header or key, 426 for
//! a version other than 13 (with `Sec-WebSocket-Version: 13`). Policy
//! refusals decided above this layer (the `[limits]` checks: 403, 429 with
//! `Retry-After`, 503) are written by [`refusal_response`].

use std::fmt::Write as _;

/// Largest request head accepted, in bytes; beyond it the answer is 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;

/// Why a request head could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The head did not end within [`MAX_REQUEST_HEAD`] bytes.
    #[error("request head larger than {MAX_REQUEST_HEAD} bytes")]
    TooLarge,
}

/// The parts of a request head the server looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/` or `/health`.
    pub path: String,
    /// HTTP minor version (1 for HTTP/1.1).
    pub minor_version: u8,
    /// `Upgrade` header.
    pub upgrade: Option<String>,
    /// `Connection` header.
    pub connection: Option<String>,
    /// `Sec-WebSocket-Version` header.
    pub version: Option<String>,
    /// `Sec-WebSocket-Key` header.
    pub key: Option<String>,
    /// Every `Sec-WebSocket-Extensions` header value.
    pub extensions: Vec<String>,
    /// `Origin` header (sent by browsers).
    pub origin: Option<String>,
    /// `Authorization` header, as sent (e.g. `Bearer <token>`).
    pub authorization: Option<String>,
    /// Every `X-Forwarded-For` header value, in order.
    pub forwarded_for: Vec<String>,
    /// `Content-Length` header, as sent (plain HTTP requests with a body).
    pub content_length: Option<String>,
    /// `Transfer-Encoding` header, as sent.
    pub transfer_encoding: Option<String>,
}

impl Request {
    /// The token of an `Authorization: Bearer <token>` header, if any.
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.authorization.as_deref()?;
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(&self.path, |(p, _)| p)
    }

    /// A path segment or query value with its `%XX` escapes (and `+`)
    /// decoded; `None` on a bad escape or invalid UTF-8.
    pub fn decode_component(s: &str) -> Option<String> {
        percent_decode(s)
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a
    /// space). `None` if absent or not valid UTF-8 once decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, q) = self.path.split_once('?')?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name)
                .then(|| percent_decode(v))
                .flatten()
        })
    }
}

/// Decode `%XX` escapes and `+`; `None` on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parse a request head from the front of `buf`: `Ok(None)` if incomplete,
/// else the request and the head's length in bytes.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_REQUEST_HEAD {
                return Err(HandshakeError::TooLarge);
            }
            return Ok(None);
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    if n > MAX_REQUEST_HEAD {
        return Err(HandshakeError::TooLarge);
    }
    let mut r = Request {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        minor_version: req.version.unwrap_or(0),
        ..Request::default()
    };
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_owned();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            r.upgrade = Some(value());
        } else if name.eq_ignore_ascii_case("connection") {
            r.connection = Some(value());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            r.version = Some(value());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            r.key = Some(value());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            r.extensions.push(value());
        } else if name.eq_ignore_ascii_case("origin") {
            r.origin = Some(value());
        } else if name.eq_ignore_ascii_case("authorization") {
            r.authorization = Some(value());
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            r.forwarded_for.push(value());
        } else if name.eq_ignore_ascii_case("content-length") {
            if r.content_length.is_some() {
                // Two lengths: a request-smuggling shape. Refuse it.
                return Err(HandshakeError::Malformed(
                    "more than one Content-Length header".into(),
                ));
            }
            r.content_length = Some(value());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            r.transfer_encoding = Some(value());
        }
    }
    Ok(Some((r, n)))
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade: answer 101 with this accept key.
    Accept {
        /// `Sec-WebSocket-Accept` value.
        accept_key: String,
    },
    /// `GET /health`.
    Health,
    /// Answer with an HTTP error and close.
    Reject(Rejection),
}

/// A refused request: status, reason, and any extra header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code.
    pub status: u16,
    /// A short machine-friendly reason, sent as JSON.
    pub message: String,
}

impl Rejection {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

fn has_token(header: Option<&str>, token: &str) -> bool {
    header.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn valid_key(key: &str) -> bool {
    // 16 random bytes, base64: 24 characters ending in "==".
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl Request {
    /// Decide how to answer this request.
    pub fn decide(&self) -> Decision {
        let is_upgrade = self.upgrade.is_some();
        if self.method != "GET" {
            return Decision::Reject(Rejection::new(405, "method not allowed: use GET"));
        }
        if !is_upgrade && (self.path == "/health" || self.path.starts_with("/health?")) {
            return Decision::Health;
        }
        if self.minor_version < 1 {
            return Decision::Reject(Rejection::new(400, "WebSocket upgrade needs HTTP/1.1"));
        }
        if !has_token(self.upgrade.as_deref(), "websocket") {
            return Decision::Reject(Rejection::new(
                400,
                "missing or invalid Upgrade: websocket header",
            ));
        }
        if !has_token(self.connection.as_deref(), "upgrade") {
            return Decision::Reject(Rejection::new(
                400,
                "missing or invalid Connection: Upgrade header",
            ));
        }
        if self.version.as_deref() != Some("13") {
            return Decision::Reject(Rejection::new(
                426,
                "unsupported Sec-WebSocket-Version: use 13",
            ));
        }
        match self.key.as_deref() {
            Some(k) if valid_key(k) => Decision::Accept {
                accept_key: tungstenite::handshake::derive_accept_key(k.as_bytes()),
            },
            _ => Decision::Reject(Rejection::new(400, "missing or invalid Sec-WebSocket-Key")),
        }
    }
}

/// The 101 response, with the agreed extension if any.
pub fn accept_response(accept_key: &str, extension: Option<&str>) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    s.push_str(accept_key);
    s.push_str("\r\n");
    if let Some(ext) = extension {
        let _ = write!(s, "Sec-WebSocket-Extensions: {ext}\r\n");
    }
    s.push_str("\r\n");
    s
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete HTTP response with a JSON body; the connection closes after it.
pub fn json_response(status: u16, body: &str) -> String {
    response(status, body, None)
}

fn response(status: u16, body: &str, retry_after: Option<u64>) -> String {
    let mut s = String::with_capacity(160 + body.len());
    let _ = write!(
        s,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    match status {
        405 => s.push_str("Allow: GET\r\n"),
        426 => s.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
        _ => {}
    }
    if let Some(secs) = retry_after {
        let _ = write!(s, "Retry-After: {secs}\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// The response refusing an upgrade by policy (a rate or connection limit,
/// an origin): `status`, a `Retry-After` header when the client may retry,
/// and a JSON body `{error, status, code, retryAfter?}` a client can read.
pub fn refusal_response(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> String {
    let mut body = serde_json::json!({ "error": message, "status": status, "code": code });
    if let Some(secs) = retry_after {
        body["retryAfter"] = secs.into();
    }
    response(status, &body.to_string(), retry_after)
}

/// The response for a refusal.
pub fn reject_response(r: &Rejection) -> String {
    let body = serde_json::json!({ "error": r.message, "status": r.status }).to_string();
    json_response(r.status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn decide(s: &str) -> Decision {
        parse_request(s.as_bytes()).unwrap().unwrap().0.decide()
    }

    #[test]
    fn accepts_rfc_example() {
        assert_eq!(
            decide(GOOD),
            Decision::Accept {
                accept_key: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
    }

    #[test]
    fn partial_then_complete() {
        assert_eq!(parse_request(&GOOD.as_bytes()[..30]).unwrap(), None);
        let (_, n) = parse_request(GOOD.as_bytes()).unwrap().unwrap();
        assert_eq!(n, GOOD.len());
    }

    #[test]
    fn rejections() {
        let status = |s: &str| match decide(s) {
            Decision::Reject(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(&GOOD.replace("GET", "POST")), 405);
        assert_eq!(status(&GOOD.replace("Upgrade: websocket\r\n", "")), 400);
        assert_eq!(
            status(&GOOD.replace("Upgrade: websocket", "Upgrade: h2c")),
            400
        );
        assert_eq!(
            status(&GOOD.replace("keep-alive, Upgrade", "keep-alive")),
            400
        );
        assert_eq!(status(&GOOD.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")),
            400
        );
        assert_eq!(status(&GOOD.replace("HTTP/1.1", "HTTP/1.0")), 400);
    }

    #[test]
    fn health() {
        assert_eq!(
            decide("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            Decision::Health
        );
    }

    #[test]
    fn too_large_and_garbage() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST_HEAD));
        assert_eq!(parse_request(big.as_bytes()), Err(HandshakeError::TooLarge));
        assert!(matches!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn responses_are_well_formed() {
        let r = reject_response(&Rejection::new(426, "x"));
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        assert!(r.contains(&format!("Content-Length: {}\r\n", body.len())));

        let r = refusal_response(429, "rate_limited", "slow down", Some(3));
        assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{r}");
        assert!(r.contains("\r\nRetry-After: 3\r\n"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["retryAfter"], 3);
        let r = refusal_response(403, "origin_not_allowed", "no", None);
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n") && !r.contains("Retry-After"));
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn req(path: &str, auth: Option<&str>) -> Request {
        Request {
            path: path.into(),
            authorization: auth.map(Into::into),
            ..Request::default()
        }
    }

    #[test]
    fn query_params_are_decoded() {
        let r = req("/?a=1&token=ab%2Bc%3D+d&x", None);
        assert_eq!(r.query_param("token").as_deref(), Some("ab+c= d"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("b"), None);
        assert_eq!(r.path_only(), "/");
        assert_eq!(req("/?token=%zz", None).query_param("token"), None);
        assert_eq!(req("/?token=%ff", None).query_param("token"), None);
        assert_eq!(req("/plain", None).query_param("token"), None);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(req("/", Some("Bearer abc")).bearer_token(), Some("abc"));
        assert_eq!(req("/", Some("bearer  abc ")).bearer_token(), Some("abc"));
        assert_eq!(req("/", Some("Basic abc")).bearer_token(), None);
        assert_eq!(req("/", Some("Bearer ")).bearer_token(), None);
        assert_eq!(req("/", None).bearer_token(), None);
    }

    #[test]
    fn security_headers_are_kept() {
        let head = b"GET /?token=t HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\
X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-For: 10.0.0.3\r\nAuthorization: Bearer k\r\n\r\n";
        let (r, _) = parse_request(head).unwrap().unwrap();
        assert_eq!(r.origin.as_deref(), Some("https://a.example"));
        assert_eq!(r.bearer_token(), Some("k"));
        assert_eq!(r.forwarded_for, vec!["10.0.0.1, 10.0.0.2", "10.0.0.3"]);
    }
}
