//! An HTTP response of the admin API: status, content type, body, and the
//! JSON error body every refusal has (`{"error": code, "message": ...}`).

use std::fmt::Write as _;

use bytes::Bytes;

/// A complete response; the connection closes after it.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    /// Extra header lines, each ending in `\r\n`.
    pub(crate) headers: String,
}

impl Response {
    /// 200 with a JSON body.
    pub(crate) fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(v).expect("a value serialises")),
            headers: String::new(),
        }
    }

    /// A body of `content_type`.
    pub(crate) fn body(
        status: u16,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: String::new(),
        }
    }

    /// A refusal: `{"error": code, "message": message}`.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    /// Add a header line.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Response {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    /// The bytes on the wire: head and body.
    pub(crate) fn encode(&self) -> Bytes {
        let mut head = String::with_capacity(160 + self.headers.len());
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.headers,
        );
        let mut out = Vec::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_head_and_body() {
        let r = Response::error(404, "not_found", "no such route").header("X-A", "b");
        let s = String::from_utf8(r.encode().to_vec()).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Content-Type: application/json\r\n"));
        assert!(s.contains("X-A: b\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap()["error"],
            "not_found"
        );
        assert!(s.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
