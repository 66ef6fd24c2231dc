//! Plain HTTP beside the WebSocket: health, readiness, metrics, the admin
//! API and the dashboard, on the WebSocket port or on `admin_listen`.
//!
//! A request that is not an upgrade and names one of these routes comes
//! here from the transport with its head parsed. The body (`POST`) is read
//! only after its `Content-Length` was checked against
//! `admin_max_body_bytes`; every refusal is a 4xx/5xx with a JSON body
//! `{"error": code, "message": ...}`. One request per connection
//! (`Connection: close`): operators and scrapers, not a hot path.
//!
//! Who may call what ([`Access`]): `/health` is public; `/ready` and
//! `/metrics` too unless `metrics_public = false`; everything else needs
//! `Authorization: Bearer <admin_token>` (constant-time compare). With no
//! `admin_token` configured the admin routes answer only on a listener
//! bound to loopback. The dashboard's static files are public (they hold
//! no data); its streams need the token.

mod admin;
pub(crate) mod dashboard;
pub(crate) mod response;

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use subtle::ConstantTimeEq;

use self::response::Response;
use super::ctx::ShardCtx;
use super::driver::{self, Stream};
use crate::ws::handshake::Request;

/// How long writing a response may take.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The WebSocket port (or its TLS twin).
    Main,
    /// `admin_listen`.
    Admin,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone (`/health`).
    Public,
    /// Anyone, on the listener that serves the admin API (the dashboard's
    /// static files: they hold no data).
    Page,
    /// Anyone if `metrics_public`, else the admin token.
    Metrics,
    /// The admin token (or loopback when none is configured).
    Admin,
}

/// The access rule of `path`, or `None` if it is not an HTTP route.
fn access(path: &str) -> Option<Access> {
    Some(match path {
        "/health" => Access::Public,
        "/ready" | "/metrics" => Access::Metrics,
        "/status" | "/clients" | "/topics" | "/publish" | "/broadcast" => Access::Admin,
        "/dashboard/live" | "/dashboard/tail" => Access::Admin,
        p if dashboard::asset(p).is_some() => Access::Page,
        p if p.starts_with("/clients/") || p.starts_with("/devices/") => Access::Admin,
        _ => return None,
    })
}

/// Whether `req` is a plain HTTP request for one of the routes here (the
/// transport then calls [`serve`]). On `admin_listen` every non-upgrade
/// request is (unknown paths get a JSON 404 there).
pub(crate) fn is_route(req: &Request, on: Listener) -> bool {
    req.upgrade.is_none() && (on == Listener::Admin || access(req.path_only()).is_some())
}

/// The request as the handlers see it.
#[derive(Debug)]
pub(crate) struct HttpRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) head: &'a Request,
    pub(crate) body: Bytes,
}

impl HttpRequest<'_> {
    /// Query parameter `name`, percent-decoded.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        self.head.query_param(name)
    }
}

/// Serve one HTTP request whose head is `req` (already consumed from
/// `buf`; what follows in `buf` is the start of the body), then return:
/// the caller closes the connection.
pub(crate) async fn serve<S: Stream>(
    stream: &S,
    req: &Request,
    buf: &mut BytesMut,
    ctx: &ShardCtx,
    deadline: tokio::time::Instant,
    on: Listener,
) {
    let resp = match prepare(stream, req, buf, ctx, deadline, on).await {
        Ok(r) if r.method == "GET" && r.path == "/dashboard/live" => {
            return stream_events(stream, ctx, None).await;
        }
        Ok(r) if r.method == "GET" && r.path == "/dashboard/tail" => match r.query("topic") {
            Some(t) if crate::protocol::topic::validate_pattern(&t).is_ok() => {
                return stream_events(stream, ctx, Some(&t)).await;
            }
            _ => Response::error(
                400,
                "invalid_message",
                "topic: a valid subscription pattern is required",
            ),
        },
        Ok(r) => admin::route(ctx, &r).await,
        Err(refusal) => refusal,
    };
    driver::write_all(stream, resp.encode(), WRITE_TIMEOUT).await;
}

/// A server-sent-events response: the dashboard's live numbers, or the
/// tail of `topic`; it ends when a write fails (the page went away) or
/// takes longer than [`WRITE_TIMEOUT`].
async fn stream_events<S: Stream>(stream: &S, ctx: &ShardCtx, topic: Option<&str>) {
    let head = Bytes::from_static(dashboard::SSE_HEAD.as_bytes());
    if !driver::write_all(stream, head, WRITE_TIMEOUT).await {
        return;
    }
    let send = |b: Bytes| driver::write_all(stream, b, WRITE_TIMEOUT);
    match topic {
        None => dashboard::live(ctx, send).await,
        Some(t) => dashboard::tail(ctx, t, send).await,
    }
}

/// Check the route, the credentials and the body bound, then read the body.
async fn prepare<'a, S: Stream>(
    stream: &S,
    req: &'a Request,
    buf: &mut BytesMut,
    ctx: &ShardCtx,
    deadline: tokio::time::Instant,
    on: Listener,
) -> Result<HttpRequest<'a>, Response> {
    let cfg = &ctx.shared.config;
    let path = req.path_only();
    let Some(rule) = access(path) else {
        return Err(Response::error(404, "not_found", "no such route"));
    };
    // With an admin listener, the WebSocket port keeps only what load
    // balancers and scrapers need.
    let admin_side = matches!(rule, Access::Admin | Access::Page);
    if on == Listener::Main && cfg.admin_listen.is_some() && admin_side {
        return Err(Response::error(
            404,
            "not_found",
            "the admin API is served on admin_listen",
        ));
    }
    let needs_token = match rule {
        Access::Public | Access::Page => false,
        Access::Metrics => !cfg.metrics_public,
        Access::Admin => true,
    };
    if needs_token {
        authorize(req, ctx, on)?;
    }
    let body = read_body(stream, req, buf, cfg.admin_max_body_bytes, deadline).await?;
    Ok(HttpRequest {
        method: &req.method,
        path,
        head: req,
        body,
    })
}

/// The admin-token check (reusable by streaming routes).
pub(crate) fn authorize(req: &Request, ctx: &ShardCtx, on: Listener) -> Result<(), Response> {
    let cfg = &ctx.shared.config;
    match &cfg.admin_token {
        Some(token) => {
            let given = req.bearer_token().unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                Ok(())
            } else {
                Err(Response::error(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <admin_token>",
                )
                .header("WWW-Authenticate", "Bearer realm=\"wshandler\""))
            }
        }
        None if on_loopback(ctx, on) => Ok(()),
        None => Err(Response::error(
            403,
            "admin_disabled",
            "no admin_token is configured: the admin API answers only on a loopback listener",
        )),
    }
}

/// Whether the listener a request came in on is bound to loopback.
fn on_loopback(ctx: &ShardCtx, on: Listener) -> bool {
    let cfg = &ctx.shared.config;
    match on {
        Listener::Admin => cfg
            .admin_listen
            .as_deref()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .is_some_and(|a| a.ip().is_loopback()),
        Listener::Main => {
            cfg.host == "localhost" || cfg.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The request body: `Content-Length` bytes, at most `max`, read before
/// `deadline`. No length means no body; chunked bodies are refused (411).
async fn read_body<S: Stream>(
    stream: &S,
    req: &Request,
    buf: &mut BytesMut,
    max: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Response> {
    if req.transfer_encoding.is_some() {
        return Err(Response::error(
            411,
            "length_required",
            "send the body with Content-Length (chunked bodies are not accepted)",
        ));
    }
    let len = match req.content_length.as_deref() {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Response::error(400, "bad_request", "Content-Length is not a number"))?,
    };
    if len > max {
        return Err(Response::error(
            413,
            "body_too_large",
            &format!("body of {len} bytes is over admin_max_body_bytes ({max})"),
        ));
    }
    while buf.len() < len {
        let b = std::mem::take(buf);
        let want = len - b.len();
        match tokio::time::timeout_at(deadline, stream.read(b, want)).await {
            Ok((Ok(n), b)) if n > 0 => *buf = b,
            Ok(_) => {
                return Err(Response::error(
                    400,
                    "bad_request",
                    "the body ended before Content-Length",
                ))
            }
            Err(_) => {
                return Err(Response::error(
                    408,
                    "timeout",
                    "the body did not arrive within handshake_timeout",
                ))
            }
        }
    }
    Ok(buf.split_to(len).freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_have_access_rules() {
        assert_eq!(access("/health"), Some(Access::Public));
        assert_eq!(access("/metrics"), Some(Access::Metrics));
        assert_eq!(access("/clients/abc/send"), Some(Access::Admin));
        assert_eq!(access("/devices/d1/request"), Some(Access::Admin));
        assert_eq!(access("/"), None);
        assert_eq!(access("/chat"), None);
    }
}
