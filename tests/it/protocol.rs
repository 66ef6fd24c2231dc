//! The WebSocketHandler JSON protocol over real sockets, across two shards.

use std::time::Duration;

use serde_json::json;

use crate::both_drivers;
use crate::client::*;
use crate::util::*;

both_drivers!(welcome_handshake_heartbeat, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::connect(srv.addr).await;
    let w = &c.welcome;
    assert_eq!(w["authRequired"], false);
    assert!(w["serverVersion"].is_string());
    assert_eq!(w["features"]["pubSub"], true);
    assert_eq!(w["features"]["rpc"], true);
    let r = c.call(json!({"type": "handshake", "clientType": "microcontroller", "capabilities": ["temp"], "version": "1.0.0"})).await;
    assert_eq!(
        r,
        json!({"type": "handshake_response", "success": true, "clientId": c.id, "clientType": "microcontroller"})
    );
    let r = c
        .call(json!({"type": "handshake", "clientType": "toaster"}))
        .await;
    assert_eq!(r["success"], false);
    assert!(r["message"].as_str().unwrap().contains("toaster"));
    let r = c.call(json!({"type": "heartbeat"})).await;
    assert_eq!(r["type"], "heartbeat_response");
    assert_eq!(r["timestamp"].as_str().unwrap().len(), 24);
    // Ids are unique.
    let d = Client::connect(srv.addr).await;
    assert_ne!(c.id, d.id);
    srv.stop().await;
});

both_drivers!(errors_have_codes_and_the_connection_survives, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::connect(srv.addr).await;
    c.send_raw("{not json").await;
    assert_eq!(c.recv().await["code"], "invalid_json");
    c.send_raw("[1,2]").await;
    assert_eq!(c.recv().await["code"], "invalid_message");
    assert_eq!(c.call(json!({"no": "type"})).await["code"], "unknown_type");
    let r = c.call(json!({"type": "teleport"})).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unknown_type"))
    );
    let r = c.call(json!({"type": "subscribe"})).await;
    assert_eq!(r["code"], "invalid_message");
    assert!(r["message"].as_str().unwrap().contains("topic"));
    let r = c
        .call(json!({"type": "publish", "topic": "a.*", "data": 1}))
        .await;
    assert_eq!(r["code"], "invalid_message");
    let r = c.call(json!({"type": "request", "endpoint": "echo"})).await;
    assert!(r["message"].as_str().unwrap().contains("requestId"));
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});

both_drivers!(too_many_errors_closes_with_1008, |driver| {
    let mut cfg = proto_config(driver);
    cfg.max_errors_per_minute = 3;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    for _ in 0..4 {
        c.send_raw("nope").await;
    }
    assert_eq!(c.closed().await, Some(1008));
    srv.stop().await;
});

both_drivers!(disabled_features_are_refused, |driver| {
    let mut cfg = proto_config(driver);
    cfg.enable_rpc = false;
    cfg.enable_pub_sub = false;
    cfg.enable_streaming = false;
    cfg.enable_request_response = false;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.welcome["features"]["rpc"], false);
    for m in [
        json!({"type": "rpc_call", "requestId": "1", "method": "m"}),
        json!({"type": "subscribe", "topic": "t"}),
        json!({"type": "publish", "topic": "t", "data": 1}),
        json!({"type": "stream_start", "streamId": "s"}),
        json!({"type": "request", "requestId": "1", "endpoint": "echo"}),
    ] {
        let r = c.call(m.clone()).await;
        assert_eq!(r["code"], "feature_disabled", "{m}");
    }
    // Data still works.
    assert_eq!(
        c.call(json!({"type": "data", "dataType": "sensor", "data": {"t": 1}}))
            .await["success"],
        true
    );
    srv.stop().await;
});

both_drivers!(authentication, |driver| {
    let mut cfg = proto_config(driver);
    cfg.enable_authentication = true;
    cfg.auth_token = Some("s3cret".into());
    cfg.auth_tokens = vec![wshandler::config::AuthToken::bound(
        "svc-token",
        Some("service"),
    )];
    cfg.auth_timeout = Duration::from_millis(800);
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(c.welcome["authRequired"], true);
    // Everything but handshake, auth and heartbeat waits for auth.
    assert_eq!(
        c.call(json!({"type": "data", "data": {}})).await["code"],
        "unauthenticated"
    );
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    assert_eq!(c.call(json!({"type": "auth"})).await["success"], false);
    assert_eq!(
        c.call(json!({"type": "auth", "token": "s3cret"})).await["success"],
        true
    );
    assert_eq!(
        c.call(json!({"type": "data", "data": {}})).await["success"],
        true
    );

    // A token bound to "service" does not authenticate a microcontroller.
    let mut d = Client::with_type(srv.addr, "microcontroller").await;
    assert_eq!(
        d.call(json!({"type": "auth", "token": "svc-token"})).await["success"],
        false
    );
    let mut s = Client::with_type(srv.addr, "service").await;
    assert_eq!(
        s.call(json!({"type": "auth", "token": "svc-token"})).await["success"],
        true
    );

    // Three failures close with 1008.
    let mut bad = Client::connect(srv.addr).await;
    for _ in 0..3 {
        let r = bad.call(json!({"type": "auth", "token": "guess"})).await;
        assert_eq!(r["success"], false);
    }
    assert_eq!(bad.closed().await, Some(1008));
    // Not authenticating in time closes with 1008.
    let mut slow = Client::connect(srv.addr).await;
    assert_eq!(slow.closed().await, Some(1008));
    srv.stop().await;
});

both_drivers!(data_and_validation, |driver| {
    let mut cfg = proto_config(driver);
    cfg.required_fields = vec!["temperature".into(), "humidity".into(), "location".into()];
    let srv = TestServer::start(cfg).await;
    let events = srv.server.subscribe_events();
    let mut c = Client::with_type(srv.addr, "microcontroller").await;
    let r = c.call(json!({"type": "data", "dataType": "sensor", "data": {"temperature": 25.5, "humidity": 60, "location": "bedroom"}})).await;
    assert_eq!(r["type"], "data_response");
    assert_eq!(r["success"], true);
    assert!(r["timestamp"].is_string());
    match wait_event(&events, |e| {
        matches!(e, wshandler::Event::DataReceived { .. })
    })
    .await
    {
        wshandler::Event::DataReceived {
            data,
            data_type,
            client_type,
            ..
        } => {
            assert_eq!(data["temperature"], 25.5);
            assert_eq!(data_type, "sensor");
            assert_eq!(client_type.as_deref(), Some("microcontroller"));
        }
        _ => unreachable!(),
    }
    let r = c
        .call(json!({"type": "data", "dataType": "sensor", "data": {"humidity": 60}}))
        .await;
    assert_eq!(r["success"], false);
    assert_eq!(
        r["message"],
        "Missing required fields: temperature, location"
    );
    assert_eq!(r["missingFields"], json!(["temperature", "location"]));
    // Legacy sensor_data: top-level fields are the data.
    let r = c.call(json!({"type": "sensor_data", "temperature": 21.0, "humidity": 40, "location": "hall", "sensor_id": "ESP32_DHT22_01"})).await;
    assert_eq!(r["success"], true);
    match wait_event(&events, |e| {
        matches!(e, wshandler::Event::DataReceived { .. })
    })
    .await
    {
        wshandler::Event::DataReceived {
            data, data_type, ..
        } => {
            assert_eq!(data_type, "sensor");
            assert_eq!(data["sensor_id"], "ESP32_DHT22_01");
            assert!(data.get("type").is_none());
        }
        _ => unreachable!(),
    }
    assert_eq!(
        c.call(json!({"type": "data", "dataType": "sensor"})).await["code"],
        "invalid_message"
    );
    srv.stop().await;

    // Validation off: the same incomplete record is accepted.
    let mut cfg = proto_config(driver);
    cfg.required_fields = vec!["temperature".into()];
    cfg.enable_data_validation = false;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.call(json!({"type": "data", "data": {"humidity": 1}}))
            .await["success"],
        true
    );
    srv.stop().await;
});

both_drivers!(requests_and_rpc, |driver| {
    let mut cfg = proto_config(driver);
    cfg.request_timeout = Duration::from_millis(500);
    let srv = TestServer::start(cfg).await;
    srv.server
        .register_endpoint("get_weather", |ctx, data| async move {
            Ok(json!({"city": data["city"], "temperature": 22, "caller": ctx.client_id}))
        });
    srv.server.register_endpoint("slow", |_, _| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(json!(null))
    });
    srv.server
        .register_rpc_method("calculateAverage", |_, p| async move {
            let v: Vec<f64> = p["values"]
                .as_array()
                .ok_or("values must be an array")?
                .iter()
                .filter_map(|x| x.as_f64())
                .collect();
            Ok(json!(v.iter().sum::<f64>() / v.len() as f64))
        });
    srv.server
        .register_rpc_method("explode", |_, _| async { panic!("kaboom") });
    let mut c = Client::connect(srv.addr).await;
    let r = c.call(json!({"type": "request", "requestId": "req_1", "endpoint": "get_weather", "data": {"city": "New York"}})).await;
    assert_eq!(r["type"], "response");
    assert_eq!(r["requestId"], "req_1");
    assert_eq!(r["success"], true);
    assert_eq!(r["data"]["city"], "New York");
    assert_eq!(r["data"]["caller"], c.id.as_str());
    let r = c
        .call(
            json!({"type": "request", "requestId": "e", "endpoint": "echo", "data": {"x": [1, 2]}}),
        )
        .await;
    assert_eq!(r["data"], json!({"x": [1, 2]}));
    let r = c
        .call(json!({"type": "request", "requestId": "u", "endpoint": "nowhere"}))
        .await;
    assert_eq!(
        (r["success"].clone(), r["error"].clone()),
        (json!(false), json!("Unknown endpoint: nowhere"))
    );
    let r = c
        .call(json!({"type": "request", "requestId": "s", "endpoint": "slow"}))
        .await;
    assert_eq!(r["error"], "Request timed out");
    let r = c.call(json!({"type": "rpc_call", "requestId": "rpc_456", "method": "calculateAverage", "params": {"values": [10, 20, 30, 40, 50]}})).await;
    assert_eq!(
        r,
        json!({"type": "rpc_response", "requestId": "rpc_456", "success": true, "data": 30.0})
    );
    let r = c.call(json!({"type": "rpc_call", "requestId": "bad", "method": "calculateAverage", "params": {}})).await;
    assert_eq!(r["error"], "values must be an array");
    let r = c
        .call(json!({"type": "rpc_call", "requestId": "x", "method": "explode"}))
        .await;
    assert_eq!(r["success"], false);
    assert!(r["error"].as_str().unwrap().contains("kaboom"));
    let r = c
        .call(json!({"type": "rpc_call", "requestId": "m", "method": "nope"}))
        .await;
    assert_eq!(r["error"], "Method not found: nope");
    // The server is alive after the panic.
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    // server.status is for service clients only.
    let r = c
        .call(json!({"type": "request", "requestId": "st", "endpoint": "server.status"}))
        .await;
    assert_eq!(r["success"], false);
    let mut s = Client::with_type(srv.addr, "service").await;
    let r = s
        .call(json!({"type": "request", "requestId": "st", "endpoint": "server.status"}))
        .await;
    assert_eq!(r["success"], true);
    assert_eq!(r["data"]["connectionCount"], 2);
    srv.stop().await;
});

both_drivers!(pubsub_across_shards, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let (mut a, mut b) = on_two_shards(srv.addr, "application").await;
    let mut pubr = Client::with_type(srv.addr, "microcontroller").await;
    for (c, pattern) in [(&mut a, "sensors.*.temperature"), (&mut b, "sensors.>")] {
        let r = c.call(json!({"type": "subscribe", "topic": pattern})).await;
        assert_eq!(
            r,
            json!({"type": "subscribe_response", "success": true, "topic": pattern})
        );
    }
    // b overlaps itself: still one delivery per publish.
    assert_eq!(
        b.call(json!({"type": "subscribe", "topic": "sensors.kitchen.temperature"}))
            .await["success"],
        true
    );
    // The publisher also subscribes, and is excluded from its own publishes.
    assert_eq!(
        pubr.call(json!({"type": "subscribe", "topic": "sensors.>"}))
            .await["success"],
        true
    );
    for i in 0..200 {
        pubr.send(
            json!({"type": "publish", "topic": "sensors.kitchen.temperature", "data": {"seq": i}}),
        )
        .await;
    }
    for i in 0..200 {
        let r = pubr.recv().await;
        assert_eq!(
            r,
            json!({"type": "publish_response", "success": true, "topic": "sensors.kitchen.temperature"}),
            "{i}"
        );
    }
    for c in [&mut a, &mut b] {
        for i in 0..200 {
            let m = c.recv().await;
            assert_eq!(m["type"], "publish");
            assert_eq!(m["topic"], "sensors.kitchen.temperature");
            assert_eq!(m["data"]["seq"], i, "in order");
            assert_eq!(m["from"], pubr.id.as_str());
            assert!(m["timestamp"].is_string());
        }
    }
    // Only b matches a deeper topic.
    pubr.send(json!({"type": "publish", "topic": "sensors.hall.humidity.raw", "data": 1}))
        .await;
    assert_eq!(b.recv().await["topic"], "sensors.hall.humidity.raw");
    // Unsubscribe stops delivery.
    assert_eq!(
        a.call(json!({"type": "unsubscribe", "topic": "sensors.*.temperature"}))
            .await["success"],
        true
    );
    assert_eq!(
        a.call(json!({"type": "unsubscribe", "topic": "sensors.*.temperature"}))
            .await["success"],
        false
    );
    pubr.send(json!({"type": "publish", "topic": "sensors.x.temperature", "data": 2}))
        .await;
    assert_eq!(b.recv().await["data"], 2);
    assert!(a.quiet_for(200).await);
    // Server-side publish with exclusion.
    srv.server
        .publish("sensors.y.temperature", &json!({"v": 3}), Some(&b.id))
        .unwrap();
    srv.server
        .publish("sensors.y.temperature", &json!({"v": 4}), None)
        .unwrap();
    let m = b.recv().await;
    assert_eq!(m["data"]["v"], 4);
    assert_eq!(m["from"], "server");
    srv.stop().await;
});

both_drivers!(routed_requests_to_service_clients, |driver| {
    let mut cfg = proto_config(driver);
    cfg.request_timeout = Duration::from_secs(3);
    let srv = TestServer::start(cfg).await;
    let (mut svc1, mut svc2) = on_two_shards(srv.addr, "service").await;
    let mut dev = Client::with_type(srv.addr, "microcontroller").await;
    for s in [&mut svc1, &mut svc2] {
        let r = s
            .call(json!({"type": "register", "kind": "endpoint", "name": "get_reading"}))
            .await;
        assert_eq!(
            r,
            json!({"type": "register_response", "success": true, "kind": "endpoint", "name": "get_reading"})
        );
    }
    assert_eq!(
        svc1.call(json!({"type": "register", "kind": "method", "name": "reboot"}))
            .await["success"],
        true
    );
    // A device may not register.
    assert_eq!(
        dev.call(json!({"type": "register", "kind": "endpoint", "name": "x"}))
            .await["success"],
        false
    );
    // Two calls go round-robin, one to each service.
    let mut served_by = Vec::new();
    for i in 0..2 {
        dev.send(json!({"type": "request", "requestId": format!("r{i}"), "endpoint": "get_reading", "data": {"n": i}})).await;
        let (which, s) = tokio::select! {
            m = svc1.recv() => (1, m),
            m = svc2.recv() => (2, m),
        };
        assert_eq!(s["type"], "request");
        assert_eq!(s["endpoint"], "get_reading");
        assert_eq!(s["data"]["n"], i);
        let srv_id = s["requestId"].as_str().unwrap().to_owned();
        assert_ne!(srv_id, format!("r{i}"));
        let svc = if which == 1 { &mut svc1 } else { &mut svc2 };
        svc.send(json!({"type": "response", "requestId": srv_id, "success": true, "data": {"value": 42 + i}})).await;
        let r = dev.recv().await;
        assert_eq!(
            r,
            json!({"type": "response", "requestId": format!("r{i}"), "success": true, "data": {"value": 42 + i}})
        );
        served_by.push(which);
    }
    served_by.sort();
    assert_eq!(served_by, vec![1, 2]);
    // RPC routed, with an error answer.
    dev.send(json!({"type": "rpc_call", "requestId": "rb", "method": "reboot", "params": {}}))
        .await;
    let s = svc1.recv().await;
    assert_eq!(s["type"], "rpc_call");
    svc1.send(json!({"type": "rpc_response", "requestId": s["requestId"], "success": false, "error": "busy"})).await;
    assert_eq!(
        dev.recv().await,
        json!({"type": "rpc_response", "requestId": "rb", "success": false, "error": "busy"})
    );
    // A registrant that disconnects mid-call fails the call at once.
    dev.send(json!({"type": "rpc_call", "requestId": "rb2", "method": "reboot"}))
        .await;
    let _ = svc1.recv().await;
    drop(svc1);
    let r = dev.recv().await;
    assert_eq!(
        (r["requestId"].clone(), r["success"].clone()),
        (json!("rb2"), json!(false))
    );
    assert_eq!(r["error"], "Service disconnected");
    // Its registration is gone: only svc2 serves now, and reboot is unknown.
    let r = dev
        .call(json!({"type": "rpc_call", "requestId": "rb3", "method": "reboot"}))
        .await;
    assert_eq!(r["error"], "Method not found: reboot");
    srv.stop().await;
});

both_drivers!(client_streams, |driver| {
    use base64::Engine;
    use futures_util::SinkExt;
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::with_type(srv.addr, "application").await;
    let r = c.call(json!({"type": "stream_start", "streamId": "upload_1", "streamType": "file_upload", "metadata": {"filename": "a.bin"}})).await;
    assert_eq!(
        r,
        json!({"type": "stream_start_response", "streamId": "upload_1", "success": true})
    );
    assert_eq!(
        c.call(json!({"type": "stream_start", "streamId": "upload_1"}))
            .await["success"],
        false
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for seq in 0..3u64 {
        c.send(json!({"type": "stream_data", "streamId": "upload_1", "data": b64.encode([7u8; 1000]), "sequenceNumber": seq})).await;
    }
    // A binary chunk continues the same stream.
    let mut bin = vec![1u8];
    bin.extend_from_slice(&(8u16).to_be_bytes());
    bin.extend_from_slice(b"upload_1");
    bin.extend_from_slice(&3u64.to_be_bytes());
    bin.extend_from_slice(&[9u8; 500]);
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(bin))
        .await
        .unwrap();
    // A gap is reported.
    let r = c.call(json!({"type": "stream_data", "streamId": "upload_1", "data": "AA==", "sequenceNumber": 9})).await;
    assert_eq!(r["code"], "stream_sequence");
    assert_eq!(
        (r["expected"].clone(), r["got"].clone()),
        (json!(4), json!(9))
    );
    let r = c
        .call(json!({"type": "stream_end", "streamId": "upload_1"}))
        .await;
    assert_eq!(r["type"], "stream_end_response");
    assert_eq!(
        (r["chunks"].clone(), r["bytes"].clone()),
        (json!(4), json!(3500))
    );
    let r = c.call(json!({"type": "stream_data", "streamId": "upload_1", "data": "AA==", "sequenceNumber": 4})).await;
    assert_eq!(r["code"], "unknown_stream");
    let r = c
        .call(json!({"type": "stream_end", "streamId": "never"}))
        .await;
    assert_eq!(r["code"], "unknown_stream");
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});

both_drivers!(server_api, |driver| {
    let mut cfg = proto_config(driver);
    cfg.request_timeout = Duration::from_millis(700);
    let srv = TestServer::start(cfg).await;
    let (mut a, mut b) = on_two_shards(srv.addr, "microcontroller").await;
    let mut app = Client::with_type(srv.addr, "application").await;
    // send_to_client
    srv.server
        .send_to_client(&b.id, &json!({"message": "hello b"}))
        .await
        .unwrap();
    assert_eq!(b.recv().await, json!({"message": "hello b"}));
    assert!(srv
        .server
        .send_to_client("nobody-0-1", &json!(1))
        .await
        .is_err());
    // broadcast_to_all with a client type filter
    srv.server
        .broadcast_to_all(&json!({"message": "maintenance"}), Some("microcontroller"));
    assert_eq!(a.recv().await["message"], "maintenance");
    assert_eq!(b.recv().await["message"], "maintenance");
    assert!(app.quiet_for(200).await);
    // request_client: the device answers like the ESP32 sketch does.
    let id = a.id.clone();
    let server = &srv.server;
    let empty = json!({});
    let (r, _) = tokio::join!(server.request_client(&id, "get_status", &empty), async {
        let q = a.recv().await;
        assert_eq!(q["type"], "request");
        assert_eq!(q["endpoint"], "get_status");
        a.send(json!({"type": "response", "requestId": q["requestId"], "success": true, "data": {"temperature": 20}})).await;
    });
    assert_eq!(r.unwrap(), json!({"temperature": 20}));
    let (r, _) = tokio::join!(server.request_client(&id, "ignored", &empty), a.recv());
    assert_eq!(r.unwrap_err(), wshandler::ApiError::Timeout);
    // Server-initiated stream.
    srv.server
        .start_stream(&b.id, "data_stream_1", "sensor_data")
        .await
        .unwrap();
    srv.server
        .send_stream_data("data_stream_1", &json!({"value": 1}))
        .await
        .unwrap();
    srv.server
        .send_stream_data("data_stream_1", &json!({"value": 2}))
        .await
        .unwrap();
    srv.server.end_stream("data_stream_1").await.unwrap();
    assert_eq!(
        b.recv().await,
        json!({"type": "stream_start", "streamId": "data_stream_1", "streamType": "sensor_data"})
    );
    assert_eq!(
        b.recv().await,
        json!({"type": "stream_data", "streamId": "data_stream_1", "data": {"value": 1}, "sequenceNumber": 1})
    );
    assert_eq!(b.recv().await["sequenceNumber"], 2);
    assert_eq!(
        b.recv().await,
        json!({"type": "stream_end", "streamId": "data_stream_1", "chunks": 2})
    );
    // get_status
    assert_eq!(
        app.call(json!({"type": "subscribe", "topic": "alerts.>"}))
            .await["success"],
        true
    );
    let st = srv.server.get_status().await.unwrap();
    assert_eq!(st.connection_count, 3);
    assert_eq!(st.clients.len(), 3);
    assert_eq!(st.shards.iter().sum::<usize>(), 3);
    assert_eq!(st.topic_count, 1);
    let ac = st.clients.iter().find(|c| c.id == app.id).unwrap();
    assert_eq!(ac.client_type.as_deref(), Some("application"));
    assert_eq!(ac.subscriptions, vec!["alerts.>".to_string()]);
    assert!(ac.messages_in >= 2);
    srv.stop().await;
});
