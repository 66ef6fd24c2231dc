//! The routes: health, readiness, metrics, status, and the seed's server
//! API over HTTP (`publish`, `broadcast`, send / request / disconnect one
//! client or every connection of a device), each a thin layer over
//! [`ops`](crate::shard::ops): what the Rust API does, the same way.
//!
//! Bodies are read with the protocol's validating scan, so `data` is
//! forwarded as the exact bytes the caller sent (numbers, strings, key
//! order), like a client's `publish`.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::json;

use super::response::Response;
use super::HttpRequest;
use crate::metrics::encode::CONTENT_TYPE;
use crate::protocol::scan::{self, Field};
use crate::shard::ctx::ShardCtx;
use crate::shard::ops::{self, OpError, Target};
use crate::shard::scrape;

/// Most clients `GET /clients` lists.
const MAX_LIST: usize = 10_000;

/// Answer one request.
pub(super) async fn route(ctx: &ShardCtx, r: &HttpRequest<'_>) -> Response {
    let shared = &ctx.shared;
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method, parts.as_slice()) {
        ("GET" | "HEAD", ["health"]) => {
            Response::body(200, "application/json", shared.health_json())
        }
        ("GET", ["ready"]) => ready(ctx),
        ("GET", ["dashboard", ..]) => match super::dashboard::asset(r.path) {
            Some(a) => Response::body(200, a.content_type, a.body),
            None => Response::error(404, "not_found", "no such route"),
        },
        ("GET", ["metrics"]) => {
            Response::body(200, CONTENT_TYPE, scrape::metrics_text(shared).await)
        }
        ("GET", ["status"]) => {
            let status = shared.collect_status().await;
            Response::json(
                200,
                &serde_json::to_value(&status).expect("status serialises"),
            )
        }
        ("GET", ["clients"]) => clients(ctx, r).await,
        ("GET", ["topics"]) => {
            let prefix = r.query("prefix").unwrap_or_default();
            let topics: Vec<_> = ops::topics(shared, &prefix)
                .await
                .into_iter()
                .map(|(t, n)| json!({"topic": t, "subscribers": n}))
                .collect();
            Response::json(200, &json!({ "topics": topics }))
        }
        ("POST", ["publish"]) => with_body(ctx, r, |b| {
            let topic = need_str(b, "topic")?;
            let data = need(b, "data")?;
            let exclude = opt_str(b, "excludeClientId")?;
            ops::publish(shared, &topic, data.raw(), exclude.as_deref()).map_err(op_error)?;
            Ok(Response::json(
                202,
                &json!({ "published": true, "topic": topic }),
            ))
        }),
        ("POST", ["broadcast"]) => with_body(ctx, r, |b| {
            let data = need(b, "data")?;
            let filter = opt_str(b, "clientType")?;
            let payload = Bytes::copy_from_slice(data.raw());
            ops::broadcast(shared, true, payload, filter.as_deref()).map_err(op_error)?;
            Ok(Response::json(202, &json!({ "broadcast": true })))
        }),
        ("POST", [kind @ ("clients" | "devices"), id, action]) => {
            let id = match crate::ws::handshake::Request::decode_component(id) {
                Some(id) if !id.is_empty() => id,
                _ => return Response::error(400, "bad_request", "bad id in the path"),
            };
            let to = if *kind == "clients" {
                Target::Client(&id)
            } else {
                Target::Device(&id)
            };
            targeted(ctx, r, to, action).await
        }
        (_, ["health" | "ready" | "metrics" | "status" | "clients" | "topics"]) => {
            Response::error(405, "method_not_allowed", "use GET").header("Allow", "GET")
        }
        (_, ["publish" | "broadcast"] | ["clients" | "devices", _, _]) => {
            Response::error(405, "method_not_allowed", "use POST").header("Allow", "POST")
        }
        _ => Response::error(404, "not_found", "no such route"),
    }
}

/// `GET /ready`: 200 only when every shard runs and the store (if on)
/// takes records; 503 with the reason otherwise and during the drain.
fn ready(ctx: &ShardCtx) -> Response {
    let shared = &ctx.shared;
    let not = |reason: &str| Response::json(503, &json!({ "ready": false, "reason": reason }));
    if shared.stopping.load(Ordering::Acquire) {
        return not("shutting down");
    }
    if let Some(s) = shared.shard_down() {
        return not(&format!("shard {s} is not running"));
    }
    if let Some(store) = &shared.store {
        if let Some(why) = store.unwritable() {
            return not(&format!("store: {why}"));
        }
    }
    Response::json(200, &json!({ "ready": true }))
}

/// `GET /clients?type=&limit=`.
async fn clients(ctx: &ShardCtx, r: &HttpRequest<'_>) -> Response {
    let limit = match r.query("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) => n.min(MAX_LIST),
        Some(Err(_)) => return Response::error(400, "bad_request", "limit must be a number"),
    };
    let ty = r.query("type");
    let status = ctx.shared.collect_status().await;
    let matching: Vec<_> = status
        .clients
        .into_iter()
        .filter(|c| ty.is_none() || c.client_type == ty)
        .collect();
    let total = matching.len();
    let listed: Vec<_> = matching.into_iter().take(limit).collect();
    Response::json(
        200,
        &json!({ "total": total, "listed": listed.len(), "clients": listed }),
    )
}

/// `POST /clients/{id}/...` and `/devices/{id}/...`.
async fn targeted(ctx: &ShardCtx, r: &HttpRequest<'_>, to: Target<'_>, action: &str) -> Response {
    let shared = &ctx.shared;
    let mut members = Vec::new();
    let body = match parse(r, shared.config.max_json_depth, &mut members) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let result = match action {
        "send" => match body.as_ref().map(|b| need(b, "data")) {
            Some(Ok(data)) => ops::send(shared, to, Bytes::copy_from_slice(data.raw()))
                .await
                .map(|n| Response::json(200, &json!({ "sent": n }))),
            Some(Err(e)) => return e,
            None => return missing("data"),
        },
        "request" => {
            let Some(b) = body.as_ref() else {
                return missing("endpoint");
            };
            let endpoint = match need_str(b, "endpoint") {
                Ok(e) => e,
                Err(e) => return e,
            };
            let data = b.get("data").map_or(&b"null"[..], |d| d.raw());
            ops::request(shared, to, &endpoint, Bytes::copy_from_slice(data))
                .await
                .map(|v| Response::json(200, &json!({ "data": v })))
        }
        "disconnect" => {
            let (code, reason) = match &body {
                None => (1000, Cow::Borrowed("disconnected by the operator")),
                Some(b) => {
                    let code = match b.get("code").map(|c| c.as_u64()) {
                        None => 1000,
                        Some(Ok(c)) if c <= u16::MAX as u64 => c as u16,
                        Some(_) => {
                            return Response::error(400, "bad_request", "code must be a number")
                        }
                    };
                    let reason = match opt_str(b, "reason") {
                        Ok(r) => r.unwrap_or(Cow::Borrowed("disconnected by the operator")),
                        Err(e) => return e,
                    };
                    (code, reason)
                }
            };
            ops::disconnect(shared, to, code, &reason)
                .await
                .map(|n| Response::json(200, &json!({ "disconnected": n })))
        }
        _ => return Response::error(404, "not_found", "no such route"),
    };
    result.unwrap_or_else(op_error)
}

/// A scanned JSON body (`None`: empty body).
type Body<'t> = scan::Msg<'t>;

fn parse<'t>(
    r: &'t HttpRequest<'_>,
    max_depth: u32,
    members: &'t mut Vec<scan::Member>,
) -> Result<Option<Body<'t>>, Response> {
    if r.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    scan::scan(&r.body, max_depth, members)
        .map(Some)
        .map_err(|e| Response::error(400, "invalid_json", &e.to_string()))
}

/// Run `f` on the request's JSON body (required).
fn with_body(
    ctx: &ShardCtx,
    r: &HttpRequest<'_>,
    f: impl FnOnce(&Body<'_>) -> Result<Response, Response>,
) -> Response {
    let mut members = Vec::new();
    match parse(r, ctx.shared.config.max_json_depth, &mut members) {
        Ok(Some(b)) => f(&b).unwrap_or_else(|e| e),
        Ok(None) => Response::error(400, "invalid_json", "a JSON object body is required"),
        Err(e) => e,
    }
}

fn missing(field: &str) -> Response {
    Response::error(400, "invalid_message", &format!("`{field}` is missing"))
}

fn need<'t>(b: &Body<'t>, field: &str) -> Result<Field<'t>, Response> {
    b.get(field).ok_or_else(|| missing(field))
}

fn need_str<'t>(b: &Body<'t>, field: &str) -> Result<Cow<'t, str>, Response> {
    opt_str(b, field)?.ok_or_else(|| missing(field))
}

fn opt_str<'t>(b: &Body<'t>, field: &str) -> Result<Option<Cow<'t, str>>, Response> {
    b.str(field).map_err(|_| {
        Response::error(
            400,
            "invalid_message",
            &format!("`{field}` must be a string"),
        )
    })
}

/// The HTTP answer for an operation that failed.
fn op_error(e: OpError) -> Response {
    let (status, code) = match &e {
        OpError::NotRunning => (503, "not_running"),
        OpError::UnknownClient(_) => (404, "unknown_client"),
        OpError::UnknownDevice(_) => (404, "unknown_device"),
        OpError::Timeout => (504, "timeout"),
        OpError::Client(_) => (502, "client_error"),
        OpError::Invalid(_) => (400, "invalid_message"),
    };
    Response::error(status, code, &e.to_string())
}
