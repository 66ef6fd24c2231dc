//! Limits: message size, connection count, slow consumers, dead peers.

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
