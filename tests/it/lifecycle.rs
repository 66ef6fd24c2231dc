//! Start and stop: graceful drain with 1001, port conflicts, events.

use crate::both_drivers;
use crate::util::*;

both_drivers!(stop_closes_every_connection_with_1001, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let events = srv.server.subscribe_events();
    let addr = srv.addr;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(RawClient::connect(addr).await);
    }
    assert_eq!(srv.server.connection_count(), 6);
    // Each client answers the server's close, as a well-behaved client does.
    let answers = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let code = c.expect_close().await;
            c.send(&client_frame(true, false, 8, &1001u16.to_be_bytes()))
                .await;
            let eof = c.read_frame().await.is_none();
            (code, eof)
        })
    });
    let answers: Vec<_> = answers.collect();
    srv.stop().await;
    for a in answers {
        assert_eq!(a.await.unwrap(), (Some(1001), true));
    }
    wait_event(&events, |e| *e == wshandler::Event::ServerStopped).await;
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
});

both_drivers!(
    stop_does_not_wait_past_drain_timeout_for_silent_clients,
    |driver| {
        let mut cfg = test_config(driver);
        cfg.drain_timeout = std::time::Duration::from_millis(500);
        let srv = TestServer::start(cfg).await;
        // This client never answers the close frame.
        let mut c = RawClient::connect(srv.addr).await;
        let stop = tokio::spawn(srv.stop());
        assert_eq!(c.expect_close().await, Some(1001));
        tokio::time::timeout(WAIT, stop)
            .await
            .expect("stop returned")
            .unwrap();
    }
);

both_drivers!(port_in_use_is_a_clear_error, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let mut cfg = test_config(driver);
    cfg.port = srv.addr.port();
    let mut second = wshandler::WebSocketHandler::new(cfg);
    let err = second.start().await.unwrap_err();
    assert!(
        matches!(
            err,
            wshandler::ServerError::Listen(wshandler::BindError::AddrInUse { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&srv.addr.to_string()), "{err}");
    srv.stop().await;
});

both_drivers!(connect_and_disconnect_events, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let events = srv.server.subscribe_events();
    let mut c = RawClient::connect(srv.addr).await;
    let id = match wait_event(&events, |e| {
        matches!(e, wshandler::Event::ClientConnected { .. })
    })
    .await
    {
        wshandler::Event::ClientConnected { client_id, .. } => client_id,
        _ => unreachable!(),
    };
    c.send(&client_frame(true, false, 8, &1000u16.to_be_bytes()))
        .await;
    assert_eq!(c.expect_close().await, Some(1000));
    match wait_event(&events, |e| {
        matches!(e, wshandler::Event::ClientDisconnected { .. })
    })
    .await
    {
        wshandler::Event::ClientDisconnected {
            client_id, code, ..
        } => {
            assert_eq!(client_id, id);
            assert_eq!(code, Some(1000));
        }
        _ => unreachable!(),
    }
    srv.stop().await;
});

// Issue 10: a `Handle` kept past `stop()` used to accept every call and do
// nothing (a publish "succeeded", a broadcast vanished).
both_drivers!(handle_after_stop_is_not_running, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let handle = srv.server.handle().unwrap();
    assert!(handle.publish("t", &serde_json::json!(1), None).is_ok());
    srv.stop().await;
    let not_running = Err(wshandler::ApiError::NotRunning);
    assert_eq!(
        handle.publish("t", &serde_json::json!(1), None),
        not_running
    );
    assert_eq!(
        handle.broadcast(true, bytes::Bytes::from_static(b"{}"), None),
        not_running
    );
    assert_eq!(
        handle.broadcast_to_all(&serde_json::json!({}), None),
        not_running
    );
    assert!(matches!(
        handle.get_status().await,
        Err(wshandler::ApiError::NotRunning)
    ));
    assert_eq!(
        handle.send_to_client("x-0-0", &serde_json::json!(1)).await,
        not_running
    );
});
