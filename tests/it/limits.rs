//! Limits: message size, connection count, slow consumers, dead peers;
//! and the `[limits]` abuse limits at the upgrade (per-address rate and
//! concurrency, auth-failure back-off, allowed origins, trusted proxies).

use std::time::Duration;

use crate::both_drivers;
use crate::util::*;

both_drivers!(max_payload_size_closes_with_1009, |driver| {
    let mut cfg = test_config(driver);
    cfg.echo = false; // echo mode raises the limit to 16 MiB for Autobahn
    cfg.max_payload_size = 1024;
    let srv = TestServer::start(cfg).await;
    // One frame over the limit: refused from its header, before its payload is buffered.
    let mut c = RawClient::connect(srv.addr).await;
    let mut hdr = client_frame(true, false, 2, &[0u8; 2000]);
    hdr.truncate(8);
    c.send(&hdr).await;
    assert_eq!(c.expect_close().await, Some(1009));
    // Fragments that add up to more than the limit.
    let mut c = RawClient::connect(srv.addr).await;
    c.send(&client_frame(false, false, 2, &[0u8; 1000])).await;
    c.send(&client_frame(true, false, 0, &[0u8; 100])).await;
    assert_eq!(c.expect_close().await, Some(1009));
    srv.stop().await;
});

both_drivers!(max_connections_is_enforced_across_shards, |driver| {
    let mut cfg = test_config(driver);
    cfg.max_connections = 3;
    let srv = TestServer::start(cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawClient::connect(srv.addr).await);
    }
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let r = http(srv.addr, &req).await;
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(r.contains("max_connections"), "{r}");
    assert_eq!(srv.server.connection_count(), 3);
    // A slot frees when a client leaves.
    let mut first = held.remove(0);
    first
        .send(&client_frame(true, false, 8, &1000u16.to_be_bytes()))
        .await;
    assert_eq!(first.expect_close().await, Some(1000));
    let deadline = tokio::time::Instant::now() + WAIT;
    while srv.server.connection_count() > 2 {
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held.push(RawClient::connect(srv.addr).await);
    srv.stop().await;
});

both_drivers!(slow_consumer_is_closed_with_1008, |driver| {
    let mut cfg = test_config(driver);
    cfg.max_backpressure = 64 * 1024;
    let srv = TestServer::start(cfg).await;
    let events = srv.server.subscribe_events();
    // A client that never reads, and a healthy one that does.
    let slow = RawClient::connect(srv.addr).await;
    let mut healthy = RawClient::connect(srv.addr).await;
    let payload = bytes::Bytes::from(vec![b'x'; 32 * 1024]);
    let mut seen = None;
    // Bounded: the kernel buffers a few MiB at most before the queue fills.
    for _ in 0..4000 {
        srv.server.broadcast(false, payload.clone());
        // The healthy client keeps up.
        let f = healthy.read_frame().await.unwrap();
        assert_eq!(f.payload.len(), payload.len());
        if let Ok(ev) = events.try_recv() {
            if matches!(ev, wshandler::Event::ClientError { .. }) {
                seen = Some(ev);
                break;
            }
        }
    }
    let ev = match seen {
        Some(ev) => ev,
        None => {
            wait_event(&events, |e| {
                matches!(e, wshandler::Event::ClientError { .. })
            })
            .await
        }
    };
    match ev {
        wshandler::Event::ClientError { code, message, .. } => {
            assert_eq!(code, 1008);
            assert!(message.contains("slow consumer"), "{message}");
        }
        _ => unreachable!(),
    }
    // The slow client is dropped; the server and the healthy client carry on.
    wait_event(&events, |e| {
        matches!(e, wshandler::Event::ClientDisconnected { .. })
    })
    .await;
    assert_eq!(srv.server.connection_count(), 1);
    healthy.send(&client_frame(true, false, 1, b"alive")).await;
    loop {
        let f = healthy.read_frame().await.unwrap();
        if f.payload == b"alive" {
            break;
        }
    }
    drop(slow);
    srv.stop().await;
});

both_drivers!(
    heartbeat_closes_silent_peers_and_keeps_live_ones,
    |driver| {
        use futures_util::StreamExt;
        let mut cfg = test_config(driver);
        cfg.enable_heartbeat = true;
        cfg.heartbeat_interval = Duration::from_millis(100);
        let srv = TestServer::start(cfg).await;
        // tungstenite answers pings while it is being read: it stays.
        let (ws, _) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
        let (_tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(Ok(m)) = rx.next().await {
                if m.is_ping() {
                    pings += 1;
                    if pings == 8 {
                        return pings;
                    }
                }
            }
            pings
        });
        // A raw client that never sends anything is closed (1008) after ~2-3 intervals.
        let mut silent = RawClient::connect(srv.addr).await;
        let mut pings = 0;
        let code = loop {
            let f = silent
                .read_frame()
                .await
                .expect("closed without a close frame");
            match f.opcode {
                9 => pings += 1,
                8 => break f.close_code(),
                _ => {}
            }
        };
        assert_eq!(code, Some(1008));
        assert!(pings >= 1);
        assert_eq!(
            tokio::time::timeout(WAIT, reader).await.unwrap().unwrap(),
            8
        );
        srv.stop().await;
    }
);

// --- [limits]: abuse limits at the upgrade -------------------------------

/// The test config, with a short drain: these tests end holding raw
/// clients that do not answer the server's close.
fn limits_config(driver: wshandler::IoDriver) -> wshandler::Config {
    wshandler::Config {
        drain_timeout: Duration::from_millis(100),
        ..test_config(driver)
    }
}

/// An upgrade request with `extra` header lines (each ending in `\r\n`).
fn upgrade(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The status code of a raw HTTP response.
fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A header's value in a raw HTTP response.
fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The JSON body of a raw HTTP response.
fn body_of(resp: &str) -> serde_json::Value {
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap()
}

/// Upgrade with `extra` headers, keeping the connection if it was accepted;
/// `Err(response)` if it was refused.
async fn try_upgrade(addr: std::net::SocketAddr, extra: &str) -> Result<RawClient, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(upgrade(extra).as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "EOF before the response head");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    if head.starts_with("HTTP/1.1 101 ") {
        return Ok(RawClient::from_upgraded(s, head));
    }
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    Err(head + &String::from_utf8_lossy(&rest))
}

/// Close `c` cleanly and wait until the server has forgotten it.
async fn close_and_wait(mut c: RawClient, events: &crossbeam_channel::Receiver<wshandler::Event>) {
    c.send(&client_frame(true, false, 8, &1000u16.to_be_bytes()))
        .await;
    assert_eq!(c.expect_close().await, Some(1000));
    wait_event(events, |e| {
        matches!(e, wshandler::Event::ClientDisconnected { .. })
    })
    .await;
}

both_drivers!(limits_burst_exceeded_gets_429_with_retry_after, |driver| {
    let mut cfg = limits_config(driver);
    cfg.limits.connections_per_ip_per_s = 1;
    cfg.limits.connections_per_ip_burst = 3;
    let srv = TestServer::start(cfg).await;
    // The burst is admitted at once; the bucket refills at 1/s, so however
    // slow this machine is, a refusal comes long before 50 attempts.
    let mut held = Vec::new();
    let refused = loop {
        match try_upgrade(srv.addr, "").await {
            Ok(c) => held.push(c),
            Err(resp) => break resp,
        }
        assert!(held.len() < 50, "never refused");
    };
    assert!(
        held.len() >= 3,
        "the burst of 3 was not admitted: {}",
        held.len()
    );
    assert_eq!(status_of(&refused), 429, "{refused}");
    let secs: u64 = header(&refused, "Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(secs, 1, "one token at 1/s: {refused}");
    let body = body_of(&refused);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["status"], 429);
    assert_eq!(body["retryAfter"], secs);
    // No upgrade happened: the refused connection holds no slot.
    assert_eq!(srv.server.connection_count(), held.len());
    // A real client sees the same refusal.
    match tokio_tungstenite::connect_async(srv.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429);
            assert!(r.headers().contains_key("retry-after"));
        }
        Ok(_) => {} // a token came back meanwhile: that is the limit working
        Err(e) => panic!("{e}"),
    }
    let st = srv.server.get_status().await.unwrap();
    assert!(st.admission.refused.rate >= 1, "{:?}", st.admission);
    assert_eq!(st.admission.refused.per_ip_connections, 0);
    srv.stop().await;
});

both_drivers!(
    limits_concurrent_per_ip_gets_429_until_one_closes,
    |driver| {
        let mut cfg = limits_config(driver);
        cfg.limits.max_connections_per_ip = 2;
        let srv = TestServer::start(cfg).await;
        let events = srv.server.subscribe_events();
        let a = try_upgrade(srv.addr, "").await.unwrap();
        let _b = try_upgrade(srv.addr, "").await.unwrap();
        let refused = try_upgrade(srv.addr, "")
            .await
            .err()
            .expect("third refused");
        assert_eq!(status_of(&refused), 429, "{refused}");
        assert!(header(&refused, "Retry-After").is_some(), "{refused}");
        assert_eq!(body_of(&refused)["code"], "too_many_connections");
        assert!(body_of(&refused)["error"]
            .as_str()
            .unwrap()
            .contains("max_connections_per_ip (2)"));
        // Closing one gives its place back.
        close_and_wait(a, &events).await;
        let _c = try_upgrade(srv.addr, "").await.unwrap();
        assert!(try_upgrade(srv.addr, "").await.is_err());
        let st = srv.server.get_status().await.unwrap();
        assert_eq!(st.admission.refused.per_ip_connections, 2);
        assert_eq!(st.admission.tracked_ips, 1);
        // In the document as `server.status` serialises it.
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["admission"]["refused"]["perIpConnections"], 2, "{v}");
        srv.stop().await;
    }
);

both_drivers!(limits_dropped_connections_give_their_place_back, |driver| {
    // Every way a connection ends releases its place: a peer that vanishes
    // without a close, and an upgrade admitted by the address limit but
    // then refused by max_connections.
    let mut cfg = limits_config(driver);
    cfg.limits.max_connections_per_ip = 2;
    cfg.max_connections = 1;
    let srv = TestServer::start(cfg).await;
    let events = srv.server.subscribe_events();
    let a = try_upgrade(srv.addr, "").await.unwrap();
    for _ in 0..3 {
        let r = try_upgrade(srv.addr, "").await.err().unwrap();
        assert_eq!(status_of(&r), 503, "max_connections, not the address: {r}");
    }
    drop(a); // TCP close, no close frame
    wait_event(&events, |e| {
        matches!(e, wshandler::Event::ClientDisconnected { .. })
    })
    .await;
    let _b = try_upgrade(srv.addr, "").await.unwrap();
    // Were a place leaked, the address would be at 2 by now: 429.
    let r = try_upgrade(srv.addr, "").await.err().unwrap();
    assert_eq!(status_of(&r), 503, "{r}");
    let st = srv.server.get_status().await.unwrap();
    assert_eq!(st.admission.refused.per_ip_connections, 0);
    srv.stop().await;
});

both_drivers!(limits_origin_refused_with_403, |driver| {
    let mut cfg = limits_config(driver);
    cfg.limits.allowed_origins = vec![
        "https://app.example.com".into(),
        "https://*.fleet.example".into(),
    ];
    let srv = TestServer::start(cfg).await;
    let refused = try_upgrade(srv.addr, "Origin: https://evil.example\r\n")
        .await
        .err()
        .expect("foreign origin refused");
    assert_eq!(status_of(&refused), 403, "{refused}");
    assert!(header(&refused, "Retry-After").is_none(), "{refused}");
    assert_eq!(body_of(&refused)["code"], "origin_not_allowed");
    // Listed origins, and a client without Origin (not a browser), upgrade.
    let _a = try_upgrade(srv.addr, "Origin: https://app.example.com\r\n")
        .await
        .unwrap();
    let _b = try_upgrade(srv.addr, "Origin: https://ops.fleet.example\r\n")
        .await
        .unwrap();
    let _c = try_upgrade(srv.addr, "").await.unwrap();
    // A real client with a browser's Origin header.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = srv.url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Origin",
        "https://app.example.com.evil.example".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let st = srv.server.get_status().await.unwrap();
    assert_eq!(st.admission.refused.origin, 2);
    srv.stop().await;
});

both_drivers!(limits_forwarded_for_only_from_trusted_proxies, |driver| {
    // Not trusted: the header is ignored, every upgrade is 127.0.0.1's.
    let mut cfg = limits_config(driver);
    cfg.limits.max_connections_per_ip = 1;
    cfg.limits.trusted_proxies = vec!["10.0.0.0/8".into()];
    let srv = TestServer::start(cfg).await;
    let _a = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.1\r\n")
        .await
        .unwrap();
    let r = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.2\r\n")
        .await
        .err()
        .expect("same address: refused");
    assert_eq!(status_of(&r), 429, "{r}");
    srv.stop().await;

    // 127.0.0.1 trusted: the limit applies to the forwarded address.
    let mut cfg = limits_config(driver);
    cfg.limits.max_connections_per_ip = 1;
    cfg.limits.trusted_proxies = vec!["127.0.0.1/32".into()];
    let srv = TestServer::start(cfg).await;
    let _a = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.1\r\n")
        .await
        .unwrap();
    let _b = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.2\r\n")
        .await
        .unwrap();
    let _own = try_upgrade(srv.addr, "").await.unwrap();
    let r = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.1\r\n")
        .await
        .err()
        .expect("203.0.113.1 is at its limit");
    assert_eq!(status_of(&r), 429, "{r}");
    // A client-supplied left part does not help: the right-most untrusted
    // address is the one the proxy saw.
    let r = try_upgrade(srv.addr, "X-Forwarded-For: 198.51.100.7, 203.0.113.1\r\n")
        .await
        .err()
        .expect("spoofed prefix ignored");
    assert_eq!(status_of(&r), 429, "{r}");
    let st = srv.server.get_status().await.unwrap();
    assert_eq!(st.admission.tracked_ips, 3, "{:?}", st.admission);
    srv.stop().await;
});

both_drivers!(limits_auth_failures_put_the_address_in_backoff, |driver| {
    let mut cfg = limits_config(driver);
    cfg.echo = false;
    cfg.enable_authentication = true;
    cfg.auth_token = Some("right".into());
    cfg.max_auth_failures = 10; // the per-connection limit is not what trips
    cfg.limits.auth_failures_per_ip_per_min = 2;
    cfg.limits.auth_failure_backoff = Duration::from_secs(120);
    let srv = TestServer::start(cfg).await;
    let mut c = crate::client::Client::connect(srv.addr).await;
    for _ in 0..3 {
        let r = c
            .call(serde_json::json!({"type": "auth", "token": "wrong"}))
            .await;
        assert_eq!(r["success"], false, "{r}");
    }
    let r = try_upgrade(srv.addr, "").await.err().expect("in back-off");
    assert_eq!(status_of(&r), 429, "{r}");
    let secs: u64 = header(&r, "Retry-After").unwrap().parse().unwrap();
    assert!((1..=120).contains(&secs), "{r}");
    assert_eq!(body_of(&r)["code"], "auth_backoff");
    // The connection that failed stays (its own limit is max_auth_failures)
    // and may still authenticate.
    let ok = c
        .call(serde_json::json!({"type": "auth", "token": "right"}))
        .await;
    assert_eq!(ok["success"], true, "{ok}");
    let st = srv.server.get_status().await.unwrap();
    assert_eq!(st.admission.auth_backoffs, 1);
    assert_eq!(st.admission.refused.auth_backoff, 1);
    srv.stop().await;
});

both_drivers!(limits_auth_failures_count_the_forwarded_address, |driver| {
    let mut cfg = limits_config(driver);
    cfg.echo = false;
    cfg.enable_authentication = true;
    cfg.auth_token = Some("right".into());
    cfg.max_auth_failures = 10;
    cfg.limits.auth_failures_per_ip_per_min = 1;
    cfg.limits.trusted_proxies = vec!["127.0.0.1".into()];
    let srv = TestServer::start(cfg).await;
    let mut c = crate::client::Client::connect_with_headers(
        srv.addr,
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    for _ in 0..2 {
        let r = c
            .call(serde_json::json!({"type": "auth", "token": "wrong"}))
            .await;
        assert_eq!(r["success"], false, "{r}");
    }
    let r = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.9\r\n")
        .await
        .err()
        .expect("the forwarded address is in back-off");
    assert_eq!(status_of(&r), 429, "{r}");
    // The proxy itself, and other clients behind it, are not.
    let _own = try_upgrade(srv.addr, "").await.unwrap();
    let _other = try_upgrade(srv.addr, "X-Forwarded-For: 203.0.113.10\r\n")
        .await
        .unwrap();
    srv.stop().await;
});

#[test]
fn limits_refusals_are_logged_rate_limited_with_the_client_address() {
    use std::io::Read;
    for driver in ["uring", "epoll"] {
        let mut cmd = bin();
        cmd.args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--shards",
            "1",
        ])
        .args(["--io-driver", driver, "--set", "persist=false"])
        .args(["--set", "limits.max_connections_per_ip=1"])
        .args(["--set", "limits.trusted_proxies=127.0.0.1"])
        .env("WSH_LIMITS_ALLOWED_ORIGINS", "https://app.example.com")
        .stderr(std::process::Stdio::piped());
        let (mut child, addr) = spawn_listening(&mut cmd);
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let xff = "X-Forwarded-For: 203.0.113.9\r\n";
            let _held = try_upgrade(addr, xff).await.unwrap();
            for _ in 0..50 {
                let r = try_upgrade(addr, xff).await.err().unwrap();
                assert_eq!(status_of(&r), 429, "{r}");
            }
            let r = try_upgrade(addr, "Origin: https://evil.example\r\n")
                .await
                .err()
                .unwrap();
            assert_eq!(status_of(&r), 403, "{r}");
        });
        signal(child.id(), libc::SIGTERM);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        let per_ip: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("security: upgrade refused: max_connections_per_ip"))
            .collect();
        assert!(!per_ip.is_empty(), "{driver}: no security line in:\n{err}");
        assert!(
            per_ip.len() <= 5,
            "{driver}: 50 refusals, {} lines:\n{err}",
            per_ip.len()
        );
        assert!(
            per_ip
                .iter()
                .all(|l| l.contains("WARN") && l.contains("client 203.0.113.9, forwarded")),
            "{driver}:\n{err}"
        );
        // Another reason has its own allowance: not drowned by the storm.
        assert!(
            err.lines()
                .any(|l| l.contains("upgrade refused: origin not allowed")
                    && l.contains("https://evil.example")),
            "{driver}:\n{err}"
        );
    }
}

both_drivers!(limits_failed_upgrade_credentials_count_too, |driver| {
    // A bad `Authorization: Bearer` at the upgrade is a failed
    // authentication like a bad `auth` message: it is refused (4003) and
    // counts toward the address's back-off.
    let mut cfg = limits_config(driver);
    cfg.echo = false;
    cfg.enable_authentication = true;
    cfg.auth_token = Some("right".into());
    cfg.limits.auth_failures_per_ip_per_min = 2;
    let srv = TestServer::start(cfg).await;
    for _ in 0..3 {
        let mut c = try_upgrade(srv.addr, "Authorization: Bearer wrong\r\n")
            .await
            .unwrap();
        assert_eq!(c.expect_close().await, Some(4003));
    }
    let r = try_upgrade(srv.addr, "Authorization: Bearer right\r\n")
        .await
        .err()
        .expect("in back-off, even with the right token");
    assert_eq!(status_of(&r), 429, "{r}");
    assert_eq!(body_of(&r)["code"], "auth_backoff");
    assert_eq!(
        srv.server
            .get_status()
            .await
            .unwrap()
            .admission
            .auth_backoffs,
        1
    );
    srv.stop().await;
});
