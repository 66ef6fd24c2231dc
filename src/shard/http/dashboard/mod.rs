//! The operator's dashboard: three static files embedded in the binary
//! (no CDN, works offline) and two server-sent-events streams, all behind
//! the admin token (the page sends it as `Authorization: Bearer`; the
//! static files themselves hold no data and are served without it).
//!
//! - `GET /dashboard`, `/dashboard/app.js`, `/dashboard/style.css`;
//! - `GET /dashboard/live`: `data: <Overview JSON>\n\n` once per second;
//! - `GET /dashboard/tail?topic=<pattern>`: each publish matching the
//!   pattern, as the `publish` message subscribers get, through a tap on
//!   the serving shard ([`crate::shard::tap`]); when the page reads too
//!   slowly the oldest are dropped and a `{"type":"dropped","dropped":N}`
//!   event says how many so far.
//!
//! A stream ends when a write fails (the browser went away); a comment
//! line every [`KEEPALIVE`] finds that out on a quiet stream, so an idle
//! tail is removed within two of them.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::shard::ctx::ShardCtx;
use crate::shard::scrape;

/// Time between `/dashboard/live` events.
pub(crate) const LIVE_EVERY: Duration = Duration::from_secs(1);
/// Time between keep-alive comments on a quiet tail.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);

/// One embedded file: its content type and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset {
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static str,
}

/// The static file at `path`, if it is one of the dashboard's.
pub(crate) fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/dashboard" | "/dashboard/" | "/dashboard/index.html" => {
            ("text/html; charset=utf-8", include_str!("index.html"))
        }
        "/dashboard/app.js" => ("text/javascript; charset=utf-8", include_str!("app.js")),
        "/dashboard/style.css" => ("text/css; charset=utf-8", include_str!("style.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// The response head of an event stream (the body follows until the end).
pub(crate) const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\n\
    content-type: text/event-stream\r\n\
    cache-control: no-store\r\n\
    x-accel-buffering: no\r\n\
    connection: close\r\n\r\n";

/// One event: `data: <json>\n\n` (the JSON holds no raw newline).
pub(crate) fn event(json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// `/dashboard/live`: the overview now, then once per [`LIVE_EVERY`],
/// until `send` reports the peer gone.
pub(crate) async fn live<F, Fut>(ctx: &ShardCtx, mut send: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut every = tokio::time::interval(LIVE_EVERY);
    loop {
        every.tick().await;
        let o = scrape::overview(&ctx.shared).await;
        let json = serde_json::to_vec(&o).expect("the overview serialises");
        if !send(event(&json)).await {
            return;
        }
    }
}

/// `/dashboard/tail?topic=<pattern>` (`pattern` validated by the caller):
/// every matching publish until `send` reports the peer gone; the tap is
/// removed when this returns.
pub(crate) async fn tail<F, Fut>(ctx: &ShardCtx, pattern: &str, mut send: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let tap = ctx.taps.add(pattern);
    // A first comment: the page learns at once that the tail is open.
    if !send(Bytes::from_static(b": tail open\n\n")).await {
        return;
    }
    let mut reported = 0;
    loop {
        let chunk = match tokio::time::timeout(KEEPALIVE, tap.next()).await {
            Ok((msgs, dropped)) => {
                let mut b = BytesMut::new();
                if dropped != reported {
                    reported = dropped;
                    b.put(event(
                        format!(r#"{{"type":"dropped","dropped":{dropped}}}"#).as_bytes(),
                    ));
                }
                for m in msgs {
                    b.put(event(&m));
                }
                b.freeze()
            }
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
        };
        if !send(chunk).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_link_each_other() {
        let page = asset("/dashboard").unwrap();
        assert!(page.content_type.starts_with("text/html"));
        assert!(page.body.contains("/dashboard/app.js"));
        assert!(page.body.contains("/dashboard/style.css"));
        assert!(!page.body.contains("https://"), "no CDN");
        assert!(asset("/dashboard/app.js")
            .unwrap()
            .body
            .contains("getReader"));
        assert!(asset("/dashboard/style.css").is_some());
        assert!(asset("/dashboard/nope").is_none());
    }

    #[test]
    fn an_event_is_one_data_line() {
        assert_eq!(&event(br#"{"a":1}"#)[..], b"data: {\"a\":1}\n\n");
    }
}
