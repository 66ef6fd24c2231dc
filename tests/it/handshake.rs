//! The HTTP upgrade: accepted and refused requests, and the health check.

use crate::both_drivers;
use crate::util::*;

both_drivers!(accepts_and_echoes_with_tungstenite, |driver| {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let srv = TestServer::start(test_config(driver)).await;
    assert_eq!(
        srv.server.driver().map(|d| d.to_string()),
        Some(match driver {
            wshandler::IoDriver::Epoll => "epoll".to_string(),
            _ => "io_uring".to_string(),
        })
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    srv.stop().await;
});

both_drivers!(refuses_bad_upgrades_with_the_right_status, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let good = |h: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{h}\r\n"
        )
    };
    let r = http(srv.addr, &good("").replace("GET", "POST")).await;
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    assert!(r.contains("Allow: GET\r\n"), "{r}");
    assert!(r.contains("\"error\""), "{r}");

    let r = http(srv.addr, &good("").replace("Upgrade: websocket\r\n", "")).await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("Upgrade"), "{r}");

    let r = http(
        srv.addr,
        &good("").replace("Connection: Upgrade", "Connection: close"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");

    let r = http(srv.addr, &good("").replace("Version: 13", "Version: 8")).await;
    assert!(r.starts_with("HTTP/1.1 426 "), "{r}");
    assert!(r.contains("Sec-WebSocket-Version: 13\r\n"), "{r}");

    let r = http(srv.addr, &good("").replace(KEY, "not-a-key")).await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("Sec-WebSocket-Key"), "{r}");

    let r = http(srv.addr, "this is not http\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");

    // Every refusal carries a correct Content-Length.
    let body = r.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        r.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{r}"
    );

    // The server is still fine afterwards.
    let mut c = RawClient::connect(srv.addr).await;
    c.send(&client_frame(true, false, 1, b"still up")).await;
    assert_eq!(c.read_frame().await.unwrap().payload, b"still up");
    srv.stop().await;
});

both_drivers!(health_answers_json, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let _c = RawClient::connect(srv.addr).await;
    let r = http(srv.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Type: application/json"), "{r}");
    let body: serde_json::Value =
        serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["connections"], 1);
    assert_eq!(body["shards"], 2);
    srv.stop().await;
});

both_drivers!(frames_pipelined_with_the_upgrade_are_processed, |driver| {
    use tokio::io::AsyncWriteExt;
    let srv = TestServer::start(test_config(driver)).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    req.extend(client_frame(true, false, 1, b"early"));
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !out.ends_with(b"early") {
        let mut tmp = [0u8; 512];
        let n = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut s, &mut tmp))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        out.extend_from_slice(&tmp[..n]);
    }
    srv.stop().await;
});
