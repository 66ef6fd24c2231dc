//! The HTTP API over real sockets: access rules, bounds, every endpoint
//! against real WebSocket clients, `admin_listen`, `/ready` in a drain.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wshandler::config::{AuthToken, TokenEntry};

use crate::both_drivers;
use crate::client::*;
use crate::util::*;

const TOKEN: &str = "admin-token-for-tests-0123";

/// One HTTP request; the status and the body (JSON if it parses, else a
/// string).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    parse_response(&http(addr, &req).await)
}

fn parse_response(resp: &str) -> (u16, Value) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, v)
}

fn admin_config(driver: wshandler::IoDriver) -> wshandler::Config {
    let mut c = proto_config(driver);
    c.admin_token = Some(TOKEN.into());
    c
}

both_drivers!(access_rules, |driver| {
    let srv = TestServer::start(admin_config(driver)).await;
    let a = srv.addr;
    assert_eq!(call(a, "GET", "/status", None, None).await.0, 401);
    let (s, v) = call(a, "GET", "/status", Some("wrong-token-wrong-token"), None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    let (s, v) = call(a, "GET", "/status", Some(TOKEN), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["connectionCount"], 0);
    // Public by default: health, ready, metrics.
    assert_eq!(call(a, "GET", "/health", None, None).await.0, 200);
    assert_eq!(
        call(a, "GET", "/ready", None, None).await,
        (200, json!({"ready": true}))
    );
    let (s, m) = call(a, "GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    assert!(m
        .as_str()
        .unwrap()
        .contains("# TYPE wshandler_connections gauge"));
    srv.stop().await;

    // metrics_public = false: /metrics and /ready need the token; /health never.
    let mut cfg = admin_config(driver);
    cfg.metrics_public = false;
    let srv = TestServer::start(cfg).await;
    let a = srv.addr;
    assert_eq!(call(a, "GET", "/metrics", None, None).await.0, 401);
    assert_eq!(call(a, "GET", "/ready", None, None).await.0, 401);
    assert_eq!(call(a, "GET", "/metrics", Some(TOKEN), None).await.0, 200);
    assert_eq!(call(a, "GET", "/health", None, None).await.0, 200);
    srv.stop().await;

    // No admin_token, but the listener is loopback: allowed.
    let srv = TestServer::start(proto_config(driver)).await;
    assert_eq!(call(srv.addr, "GET", "/status", None, None).await.0, 200);
    srv.stop().await;
});

both_drivers!(bad_input_is_refused_with_json, |driver| {
    let mut cfg = admin_config(driver);
    cfg.admin_max_body_bytes = 64;
    let srv = TestServer::start(cfg).await;
    let a = srv.addr;
    let big = format!("{{\"topic\":\"t\",\"data\":\"{}\"}}", "x".repeat(100));
    let (s, v) = call(a, "POST", "/publish", Some(TOKEN), Some(&big)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    for bad in [
        "{not json",
        "[1,2]",
        "{\"topic\":\"t\",\"topic\":\"u\",\"data\":1}",
    ] {
        let (s, v) = call(a, "POST", "/publish", Some(TOKEN), Some(bad)).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_json")),
            "{bad}: {v}"
        );
    }
    let (s, v) = call(a, "POST", "/publish", Some(TOKEN), Some("{\"data\":1}")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_message")),
        "{v}"
    );
    let (s, v) = call(
        a,
        "POST",
        "/publish",
        Some(TOKEN),
        Some("{\"topic\":\"a.>\",\"data\":1}"),
    )
    .await;
    assert_eq!(s, 400, "a wildcard is not a publish topic: {v}");
    assert_eq!(call(a, "GET", "/publish", Some(TOKEN), None).await.0, 405);
    assert_eq!(call(a, "POST", "/status", Some(TOKEN), None).await.0, 405);
    assert_eq!(
        call(a, "GET", "/clients/x/y/z", Some(TOKEN), None).await.0,
        404
    );
    assert_eq!(
        call(
            a,
            "POST",
            "/clients/nobody-0-1/send",
            Some(TOKEN),
            Some("{\"data\":1}")
        )
        .await
        .0,
        404
    );
    // Chunked bodies: 411.
    let resp = http(
        a,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(parse_response(&resp).0, 411, "{resp}");
    // Two Content-Length headers: refused before anything is read.
    let resp = http(
        a,
        "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    )
    .await;
    assert_eq!(parse_response(&resp).0, 400, "{resp}");
    // A plain GET / is still the upgrade's refusal.
    let (s, _) = call(a, "GET", "/", None, None).await;
    assert_eq!(s, 400);
    // Still serving.
    assert_eq!(call(a, "GET", "/health", None, None).await.0, 200);
    srv.stop().await;
});

both_drivers!(publish_broadcast_clients_topics, |driver| {
    let srv = TestServer::start(admin_config(driver)).await;
    let a = srv.addr;
    let mut sub = Client::with_type(a, "microcontroller").await;
    let r = sub
        .call(json!({"type": "subscribe", "topic": "plant.>"}))
        .await;
    assert_eq!(r["success"], true);
    let mut other = Client::with_type(a, "application").await;
    let r = other
        .call(json!({"type": "subscribe", "topic": "plant.>"}))
        .await;
    assert_eq!(r["success"], true);
    let r = other
        .call(json!({"type": "subscribe", "topic": "office.x"}))
        .await;
    assert_eq!(r["success"], true);

    // data forwarded byte for byte.
    let data = r#"{"b":1,"a":1.10,"n":12345678901234567890,"s":"\u00e9"}"#;
    let body = format!("{{\"topic\":\"plant.line1\",\"data\":{data}}}");
    let (s, v) = call(a, "POST", "/publish", Some(TOKEN), Some(&body)).await;
    assert_eq!(s, 202, "{v}");
    for c in [&mut sub, &mut other] {
        let text = c.recv_text().await;
        assert!(text.contains(&format!("\"data\":{data}")), "{text}");
        assert!(text.contains("\"topic\":\"plant.line1\""), "{text}");
    }

    // broadcast to one client type.
    let (s, _) = call(
        a,
        "POST",
        "/broadcast",
        Some(TOKEN),
        Some(r#"{"data":{"alert":"x"},"clientType":"application"}"#),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(other.recv().await, json!({"alert": "x"}));
    assert!(
        sub.quiet_for(200).await,
        "microcontroller is not in the broadcast"
    );

    let (s, v) = call(a, "GET", "/clients?type=application", Some(TOKEN), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 1);
    assert_eq!(v["clients"][0]["id"], other.id.as_str());
    assert!(v["clients"][0]["queueBytes"].is_u64(), "{v}");
    let (_, v) = call(a, "GET", "/clients?limit=1", Some(TOKEN), None).await;
    assert_eq!(
        (v["total"].as_u64(), v["listed"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(
        call(a, "GET", "/clients?limit=x", Some(TOKEN), None)
            .await
            .0,
        400
    );

    let (_, v) = call(a, "GET", "/topics", Some(TOKEN), None).await;
    assert_eq!(
        v["topics"],
        json!([{"topic": "plant.>", "subscribers": 2}, {"topic": "office.x", "subscribers": 1}])
    );
    let (_, v) = call(a, "GET", "/topics?prefix=off", Some(TOKEN), None).await;
    assert_eq!(
        v["topics"],
        json!([{"topic": "office.x", "subscribers": 1}])
    );
    srv.stop().await;
});

both_drivers!(send_request_disconnect_one_client, |driver| {
    let mut cfg = admin_config(driver);
    cfg.request_timeout = Duration::from_millis(500);
    let srv = TestServer::start(cfg).await;
    let a = srv.addr;
    let mut c = Client::with_type(a, "microcontroller").await;
    let id = c.id.clone();
    let path = |action: &str| format!("/clients/{id}/{action}");

    let (s, v) = call(
        a,
        "POST",
        &path("send"),
        Some(TOKEN),
        Some(r#"{"data":{"cmd":"blink"}}"#),
    )
    .await;
    assert_eq!((s, v["sent"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(c.recv().await, json!({"cmd": "blink"}));

    // A request the client answers.
    let p = path("request");
    let ask = tokio::spawn(async move {
        call(
            a,
            "POST",
            &p,
            Some(TOKEN),
            Some(r#"{"endpoint":"led","data":{"on":true}}"#),
        )
        .await
    });
    let req = c.recv_type("request").await;
    assert_eq!(req["endpoint"], "led");
    assert_eq!(req["data"], json!({"on": true}));
    c.send(json!({"type": "response", "requestId": req["requestId"], "success": true, "data": {"led": "on"}}))
        .await;
    let (s, v) = ask.await.unwrap();
    assert_eq!((s, &v), (200, &json!({"data": {"led": "on"}})));

    // An error answer is 502; no answer is 504.
    let p = path("request");
    let ask = tokio::spawn(async move {
        call(a, "POST", &p, Some(TOKEN), Some(r#"{"endpoint":"led"}"#)).await
    });
    let req = c.recv_type("request").await;
    c.send(json!({"type": "response", "requestId": req["requestId"], "success": false, "error": "busy"}))
        .await;
    let (s, v) = ask.await.unwrap();
    assert_eq!((s, v["error"].as_str()), (502, Some("client_error")), "{v}");
    let (s, v) = call(
        a,
        "POST",
        &path("request"),
        Some(TOKEN),
        Some(r#"{"endpoint":"slow"}"#),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (504, Some("timeout")), "{v}");
    let _ = c.recv_type("request").await;

    // Bad close codes are refused; a good one closes the client with it.
    let (s, _) = call(
        a,
        "POST",
        &path("disconnect"),
        Some(TOKEN),
        Some(r#"{"code":1006}"#),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v) = call(
        a,
        "POST",
        &path("disconnect"),
        Some(TOKEN),
        Some(r#"{"code":4000,"reason":"maintenance"}"#),
    )
    .await;
    assert_eq!((s, v["disconnected"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(c.closed().await, Some(4000));
    srv.stop().await;
});

both_drivers!(device_routes_reach_every_connection_of_a_device, |driver| {
    let mut cfg = admin_config(driver);
    cfg.enable_authentication = true;
    cfg.auth_tokens = vec![AuthToken::Entry(Box::new(TokenEntry {
        token: Some("dev-1-secret".into()),
        device_id: Some("dev-1".into()),
        ..TokenEntry::default()
    }))];
    let srv = TestServer::start(cfg).await;
    let a = srv.addr;
    let mut conns = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(a).await;
        let r = c
            .call(json!({"type": "auth", "token": "dev-1-secret"}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        conns.push(c);
    }
    let (s, v) = call(
        a,
        "POST",
        "/devices/dev-1/send",
        Some(TOKEN),
        Some(r#"{"data":{"x":1}}"#),
    )
    .await;
    assert_eq!((s, v["sent"].as_u64()), (200, Some(2)), "{v}");
    for c in &mut conns {
        assert_eq!(c.recv().await, json!({"x": 1}));
    }
    // request goes to the most recent connection.
    let ask = tokio::spawn(async move {
        call(
            a,
            "POST",
            "/devices/dev-1/request",
            Some(TOKEN),
            Some(r#"{"endpoint":"ping"}"#),
        )
        .await
    });
    let req = conns[1].recv_type("request").await;
    conns[1]
        .send(json!({"type": "response", "requestId": req["requestId"], "success": true, "data": "pong"}))
        .await;
    assert_eq!(ask.await.unwrap(), (200, json!({"data": "pong"})));
    let (s, v) = call(a, "POST", "/devices/dev-1/disconnect", Some(TOKEN), None).await;
    assert_eq!((s, v["disconnected"].as_u64()), (200, Some(2)), "{v}");
    for c in &mut conns {
        assert_eq!(c.closed().await, Some(1000));
    }
    let (s, v) = call(
        a,
        "POST",
        "/devices/nobody/send",
        Some(TOKEN),
        Some(r#"{"data":1}"#),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("unknown_device")));
    srv.stop().await;
});

both_drivers!(admin_listen_serves_the_api_apart, |driver| {
    let mut cfg = proto_config(driver);
    cfg.admin_listen = Some("127.0.0.1:0".into());
    let srv = TestServer::start(cfg).await;
    let admin = srv.server.admin_addr().expect("admin listener");
    assert_ne!(admin.port(), srv.addr.port());
    // Loopback and no token: the admin API answers there.
    assert_eq!(call(admin, "GET", "/status", None, None).await.0, 200);
    assert_eq!(call(admin, "GET", "/metrics", None, None).await.0, 200);
    assert_eq!(call(admin, "GET", "/nope", None, None).await.0, 404);
    // No upgrades on the admin listener.
    let resp = http(
        admin,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // The WebSocket port keeps health, ready, metrics and upgrades only.
    assert_eq!(call(srv.addr, "GET", "/status", None, None).await.0, 404);
    assert_eq!(call(srv.addr, "GET", "/health", None, None).await.0, 200);
    assert_eq!(call(srv.addr, "GET", "/ready", None, None).await.0, 200);
    let _c = Client::connect(srv.addr).await;
    srv.stop().await;
});

both_drivers!(ready_is_503_during_the_drain, |driver| {
    let mut cfg = proto_config(driver);
    cfg.drain_timeout = Duration::from_secs(3);
    let srv = TestServer::start(cfg).await;
    let addr = srv.addr;
    // Clients that never answer the close keep the drain going, one on
    // each shard (the early connection below may land on either).
    let mut stuck: Vec<RawClient> = Vec::new();
    let mut shards = std::collections::HashSet::new();
    while shards.len() < 2 {
        assert!(stuck.len() < 64, "SO_REUSEPORT never used both shards");
        let mut c = RawClient::connect(addr).await;
        let welcome = c.read_frame().await.expect("welcome");
        let v: Value = serde_json::from_slice(&welcome.payload).unwrap();
        let shard = v["clientId"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .nth(1)
            .unwrap()
            .to_owned();
        shards.insert(shard);
        stuck.push(c);
    }
    // Accepted before the stop: the listeners close when it starts.
    let mut early = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(srv.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    early
        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, early.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (s, v) = parse_response(&String::from_utf8_lossy(&out));
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["reason"], "shutting down");
    drop(stuck);
    stopping.await.unwrap();
});
