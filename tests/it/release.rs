//! Every path that ends a connection gives its socket back (issue 9 item 6).
//!
//! On io_uring a close used to leave the fd open while the peer kept its end
//! open and silent: the cut-off read or write stayed in the ring holding the
//! socket. Here each server-initiated close path meets clients that trigger
//! it and then never read, never write and never close; the server's own
//! sockets, counted in `/proc/self/fd` (the test and the server share the
//! process), must come back to the count before the clients came, and
//! `/health` must agree.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::both_drivers;
use crate::client::proto_config;
use crate::util::*;

/// How long the server may take to release everything: the longest close
/// path is the handshake timeout (10s) plus the linger after it (2s). Far
/// more than that, so a slow machine cannot fail the test; it is a bound on
/// a hang, not a timing assertion.
const SETTLE: Duration = Duration::from_secs(60);

/// Sockets this process holds open whose local port is `port`: the server's
/// listeners and accepted connections. (The test's own client sockets have
/// `port` as their remote end, and a socket whose fd is closed is no longer
/// in `/proc/self/fd`, whatever TCP state it lingers in.)
fn server_fds(port: u16) -> usize {
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st queues tr retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = f.get(1).and_then(|a| a.rsplit(':').next()) else {
                continue;
            };
            if u16::from_str_radix(local, 16) == Ok(port) {
                if let Some(inode) = f.get(9) {
                    inodes.insert(format!("socket:[{inode}]"));
                }
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| inodes.contains(target.to_string_lossy().as_ref()))
        .count()
}

/// `/health`'s connection count.
async fn health_connections(addr: SocketAddr) -> u64 {
    let resp = http(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect(&resp);
    v["connections"].as_u64().expect(&resp)
}

/// Wait (bounded) until the server holds `baseline` sockets on its port and
/// `/health` reports `connections`.
async fn settle(what: &str, addr: SocketAddr, baseline: usize, connections: u64) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        // Counted before asking /health: the health request's own socket
        // has had the last pause to go.
        let fds = server_fds(addr.port());
        let health = health_connections(addr).await;
        if fds == baseline && health == connections {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: after {SETTLE:?} the server still holds {fds} sockets \
             (baseline {baseline}), /health says {health} connections (expected {connections})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait (bounded) until the server holds at least `n` sockets on its port.
async fn wait_held(what: &str, port: u16, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while server_fds(port) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the server never held {n} sockets (now {})",
            server_fds(port)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connect, send `bytes`, and from then on stay silent with the end open.
async fn send_and_stay(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

fn upgrade_request(version: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// Handshake timeout (silent, or a head that never ends) and every HTTP
/// refusal: 400, 405, 426, 431.
async fn handshake_paths(driver: wshandler::IoDriver) {
    let srv = TestServer::start(test_config(driver)).await;
    let baseline = server_fds(srv.addr.port());
    let mut held = Vec::new();
    let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(16 * 1024));
    let v12 = upgrade_request("12");
    let cases: [&[u8]; 7] = [
        b"",                                   // handshake timeout
        b"GET / HTTP/1.1\r\nHost: x\r\n",      // timeout, head never ends
        b"\x16\x03\x01 not http\r\n\r\n",      // 400 malformed
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  // 400 no upgrade
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", // 405
        v12.as_bytes(),                        // 426
        huge.as_bytes(),                       // 431
    ];
    for bytes in cases {
        for _ in 0..10 {
            held.push(send_and_stay(srv.addr, bytes).await);
        }
    }
    // The two timeout groups are held for the handshake timeout: the count
    // sees them (and so would see a leak).
    wait_held("handshake", srv.addr.port(), baseline + 20).await;
    settle("handshake timeout and refusals", srv.addr, baseline, 0).await;
    drop(held);
    srv.stop().await;
}

/// 503: max_connections reached.
async fn capacity_path(driver: wshandler::IoDriver) {
    let mut cfg = test_config(driver);
    cfg.max_connections = 1;
    let srv = TestServer::start(cfg).await;
    // The listeners, and the one connection allowed.
    let baseline = server_fds(srv.addr.port()) + 1;
    let holder = RawClient::connect(srv.addr).await;
    settle("503 setup", srv.addr, baseline, 1).await;
    let req = upgrade_request("13");
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(send_and_stay(srv.addr, req.as_bytes()).await);
    }
    settle("503 refusal", srv.addr, baseline, 1).await;
    drop((held, holder));
    srv.stop().await;
}

/// Upgraded clients that then say nothing, closed by `close` (auth timeout,
/// heartbeat timeout) or after sending `send` (error budget).
async fn upgraded_path(what: &str, cfg: wshandler::Config, send: &[u8]) {
    let srv = TestServer::start(cfg).await;
    let baseline = server_fds(srv.addr.port());
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut c = RawClient::connect(srv.addr).await;
        if !send.is_empty() {
            c.send(send).await;
        }
        held.push(c);
    }
    settle(what, srv.addr, baseline, 0).await;
    drop(held);
    srv.stop().await;
}

/// Slow consumers: the writer is stuck on a full socket when the close
/// comes.
async fn slow_consumer_path(driver: wshandler::IoDriver) {
    let mut cfg = test_config(driver);
    cfg.max_backpressure = 64 * 1024;
    let srv = TestServer::start(cfg).await;
    let events = srv.server.subscribe_events();
    let baseline = server_fds(srv.addr.port());
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(RawClient::connect(srv.addr).await);
    }
    let payload = bytes::Bytes::from(vec![b'x'; 32 * 1024]);
    let mut closed = 0;
    // Bounded: the kernel buffers a few MiB per socket before queues fill.
    for i in 0..20_000 {
        srv.server.broadcast(false, payload.clone());
        while let Ok(ev) = events.try_recv() {
            if matches!(ev, wshandler::Event::ClientError { .. }) {
                closed += 1;
            }
        }
        if closed == held.len() {
            break;
        }
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    while closed < held.len() {
        wait_event(&events, |e| {
            matches!(e, wshandler::Event::ClientError { .. })
        })
        .await;
        closed += 1;
    }
    settle("slow consumer", srv.addr, baseline, 0).await;
    drop(held);
    srv.stop().await;
}

/// Server stop, with upgraded clients and clients still in the handshake.
async fn stop_path(driver: wshandler::IoDriver) {
    let srv = TestServer::start(test_config(driver)).await;
    let port = srv.addr.port();
    let listeners = server_fds(port);
    let mut upgraded = Vec::new();
    let mut shaking = Vec::new();
    for _ in 0..10 {
        upgraded.push(RawClient::connect(srv.addr).await);
        shaking.push(send_and_stay(srv.addr, b"GET / HTTP/1.1\r\n").await);
    }
    wait_held("stop", port, listeners + 20).await;
    srv.stop().await;
    // Nothing left: no connection and no listener.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while server_fds(port) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stop: after {SETTLE:?} {} sockets are still open",
            server_fds(port)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((upgraded, shaking));
}

both_drivers!(
    issue9_item6_every_close_path_releases_its_socket,
    |driver| {
        let mut auth = proto_config(driver);
        auth.enable_authentication = true;
        auth.auth_token = Some("secret".into());
        auth.auth_timeout = Duration::from_millis(200);
        let mut heartbeat = test_config(driver);
        heartbeat.enable_heartbeat = true;
        heartbeat.heartbeat_interval = Duration::from_millis(100);
        let mut budget = proto_config(driver);
        budget.max_errors_per_minute = 3;
        let bad: Vec<u8> = (0..5)
            .flat_map(|_| client_frame(true, false, 1, b"{bad"))
            .collect();
        tokio::join!(
            handshake_paths(driver),
            capacity_path(driver),
            upgraded_path("auth timeout", auth, b""),
            upgraded_path("heartbeat timeout", heartbeat, b""),
            upgraded_path("error budget", budget, &bad),
            slow_consumer_path(driver),
            stop_path(driver),
        );
    }
);
