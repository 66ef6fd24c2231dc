//! Regression tests for defects found by hostile and careful use (issue 9),
//! named `issue9_item<N>_...` after the item they cover. Each failed before
//! its fix; all run on both drivers over real sockets.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_drivers;
use crate::client::*;
use crate::util::*;

fn store_cfg(driver: wshandler::IoDriver, dir: &std::path::Path) -> wshandler::Config {
    let mut c = proto_config(driver);
    c.persist = true;
    c.data_dir = dir.to_path_buf();
    c
}

async fn still_alive(c: &mut Client) {
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
}

// Item 1: one unauthenticated frame of deep nesting killed the process.
both_drivers!(issue9_item1_deep_nesting_is_refused_not_a_crash, |driver| {
    let mut cfg = proto_config(driver);
    cfg.max_payload_size = 1 << 20;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    for n in [9_000usize, 100_000] {
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        c.send_raw(&deep).await;
        let r = c.recv().await;
        assert_eq!(r["code"], "too_deep", "{r}");
        assert_eq!(r["limit"], "max_json_depth");
        let wrapped = format!(r#"{{"type":"data","data":{deep}}}"#);
        c.send_raw(&wrapped).await;
        assert_eq!(c.recv().await["code"], "too_deep");
    }
    still_alive(&mut c).await;
    // With authentication on, before authenticating, too.
    let mut cfg = proto_config(driver);
    cfg.enable_authentication = true;
    cfg.auth_token = Some("t".into());
    let srv2 = TestServer::start(cfg).await;
    let mut u = Client::connect(srv2.addr).await;
    u.send_raw(&format!(
        r#"{{"type":"auth","token":{}{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    ))
    .await;
    assert_eq!(u.recv().await["code"], "too_deep");
    still_alive(&mut u).await;
    srv2.stop().await;
    srv.stop().await;
});

// Item 2: records nested past a reader's limit, or holding a lone
// surrogate, were acknowledged and then unreadable.
both_drivers!(
    issue9_item2_unreadable_records_are_never_acknowledged,
    |driver| {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start(store_cfg(driver, dir.path())).await;
        let mut c = Client::with_type(srv.addr, "service").await;
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let r = c
            .call_raw(&format!(r#"{{"type":"data","data":{{"v":{deep}}}}}"#))
            .await;
        assert!(r.contains(r#""code":"too_deep""#), "{r}");
        let r: Value =
            serde_json::from_str(&c.call_raw(r#"{"type":"data","data":{"s":"\ud800"}}"#).await)
                .unwrap();
        assert_eq!(r["code"], "invalid_json", "{r}");
        assert!(r["message"].as_str().unwrap().contains("surrogate"), "{r}");
        let ok = c.call(json!({"type": "data", "data": {"v": 1}})).await;
        assert_eq!(ok["success"], true, "{ok}");
        let q = c
            .call(
                json!({"type": "request", "requestId": "q", "endpoint": "store.query", "data": {}}),
            )
            .await;
        assert_eq!(q["success"], true, "{q}");
        assert_eq!(q["data"]["records"].as_array().unwrap().len(), 1, "{q}");
        srv.stop().await;
    }
);

// Item 3: numbers must come back digit for digit, also past u64 and f64.
both_drivers!(issue9_item3_numbers_pass_through_unchanged, |driver| {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(store_cfg(driver, dir.path())).await;
    let data = r#"{"f":0.026279616940263262,"big":18446744073709551616,"huge":123456789012345678901234567890,"e":1e400,"neg":-0.0,"k":{"z":1,"a":2}}"#;
    let (mut s, mut p) = on_two_shards(srv.addr, "service").await;
    let r = s.call(json!({"type": "subscribe", "topic": "n"})).await;
    assert_eq!(r["success"], true);
    // Publish: the subscriber (on another shard) gets the bytes as sent.
    let r = p
        .call_raw(&format!(
            r#"{{"type":"publish","topic":"n","data":{data}}}"#
        ))
        .await;
    assert!(r.contains(r#""success":true"#), "{r}");
    let got = s.recv_text().await;
    assert!(got.contains(&format!(r#""data":{data}"#)), "{got}");
    // Echo.
    let got = p
        .call_raw(&format!(
            r#"{{"type":"request","requestId":"e","endpoint":"echo","data":{data}}}"#
        ))
        .await;
    assert!(got.contains(&format!(r#""data":{data}"#)), "{got}");
    // Stored and read back.
    let r = p
        .call_raw(&format!(r#"{{"type":"data","data":{data}}}"#))
        .await;
    assert!(r.contains(r#""success":true"#), "{r}");
    let q = p
        .call_raw(r#"{"type":"request","requestId":"q","endpoint":"store.query","data":{}}"#)
        .await;
    assert!(q.contains(&format!(r#""data":{data}"#)), "{q}");
    srv.stop().await;
});

// Item 4: a reply to a routed request from another connection replaced the
// service's answer.
both_drivers!(
    issue9_item4_only_the_addressed_connection_may_answer,
    |driver| {
        let srv = TestServer::start(proto_config(driver)).await;
        let mut svc = Client::with_type(srv.addr, "service").await;
        let r = svc
            .call(json!({"type": "register", "kind": "endpoint", "name": "temp"}))
            .await;
        assert_eq!(r["success"], true);
        let mut caller = Client::with_type(srv.addr, "application").await;
        let mut attacker = Client::with_type(srv.addr, "microcontroller").await;
        caller
            .send(json!({"type": "request", "requestId": "c1", "endpoint": "temp", "data": {}}))
            .await;
        let req = svc.recv_type("request").await;
        let id = req["requestId"].as_str().unwrap().to_owned();
        // Not a guessable counter: shard, counter and a 64-bit tag.
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!(parts[3].len(), 16, "{id}");
        // Even knowing the id, another connection cannot answer.
        let r = attacker
            .call(json!({"type": "response", "requestId": id, "success": true, "data": "forged"}))
            .await;
        assert_eq!(r["code"], "unknown_request", "{r}");
        assert_eq!(r["requestId"], id.as_str());
        svc.send(json!({"type": "response", "requestId": id, "success": true, "data": "real"}))
            .await;
        let r = caller.recv_type("response").await;
        assert_eq!(r["data"], "real", "{r}");
        // A late (or made-up) answer is refused and counted.
        let r = svc
            .call(json!({"type": "response", "requestId": id, "success": true, "data": 1}))
            .await;
        assert_eq!(r["code"], "unknown_request");
        srv.stop().await;
    }
);

// Item 5: a handshake after authenticating with a plain token gained
// service powers.
both_drivers!(
    issue9_item5_client_type_is_fixed_by_the_credential,
    |driver| {
        let mut cfg = proto_config(driver);
        cfg.enable_authentication = true;
        cfg.auth_tokens = vec![
            wshandler::config::AuthToken::Plain("plain".into()),
            wshandler::config::AuthToken::bound("svc-only", Some("service")),
        ];
        let srv = TestServer::start(cfg).await;
        // auth first, then try to become a service.
        let mut c = Client::connect(srv.addr).await;
        assert_eq!(
            c.call(json!({"type": "auth", "token": "plain"})).await["success"],
            true
        );
        let r = c
            .call(json!({"type": "handshake", "clientType": "service"}))
            .await;
        assert_eq!(r["success"], false, "{r}");
        assert_eq!(r["code"], "forbidden");
        let r = c
            .call(json!({"type": "register", "kind": "endpoint", "name": "x"}))
            .await;
        assert_eq!(r["success"], false);
        let r = c
            .call(json!({"type": "request", "requestId": "1", "endpoint": "server.status"}))
            .await;
        assert_eq!(r["success"], false, "{r}");
        // Other unbound types are still fine with the plain token.
        let r = c
            .call(json!({"type": "handshake", "clientType": "application"}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        // Handshake as service first, then the plain token: refused.
        let mut d = Client::with_type(srv.addr, "service").await;
        assert_eq!(
            d.call(json!({"type": "auth", "token": "plain"})).await["success"],
            false
        );
        // The bound token does make a service.
        let mut s = Client::with_type(srv.addr, "service").await;
        assert_eq!(
            s.call(json!({"type": "auth", "token": "svc-only"})).await["success"],
            true
        );
        let r = s
            .call(json!({"type": "register", "kind": "endpoint", "name": "x"}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        srv.stop().await;
    }
);

// Item 7: routed requests to a service that does not read bypassed the
// outbound bound.
both_drivers!(
    issue9_item7_routed_requests_obey_the_outbound_bound,
    |driver| {
        let mut cfg = proto_config(driver);
        cfg.max_backpressure = 64 * 1024;
        cfg.max_pending_requests = 100_000;
        cfg.max_payload_size = 1 << 20;
        let srv = TestServer::start(cfg).await;
        let events = srv.server.subscribe_events();
        let mut svc = Client::with_type(srv.addr, "service").await;
        let r = svc
            .call(json!({"type": "register", "kind": "endpoint", "name": "sink"}))
            .await;
        assert_eq!(r["success"], true);
        let svc_id = svc.id.clone();
        // From here on the service reads nothing.
        let mut caller = Client::with_type(srv.addr, "application").await;
        let blob = "x".repeat(10_000);
        let text = |i: usize| {
            json!({"type": "request", "requestId": i.to_string(), "endpoint": "sink", "data": blob})
                .to_string()
        };
        let mut n = 0;
        let closed = |events: &crossbeam_channel::Receiver<wshandler::Event>| {
            events.try_iter().any(|e| {
                matches!(e, wshandler::Event::ClientError { client_id, code: 1008, .. } if client_id == svc_id)
            })
        };
        loop {
            for _ in 0..100 {
                caller.send_raw(&text(n)).await;
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            if closed(&events) {
                break;
            }
            assert!(
                n < 5_000,
                "50 MB queued for a service that does not read, never closed"
            );
        }
        // Every call that was forwarded fails at once when the service goes.
        let r = caller.recv_type("response").await;
        assert_eq!(r["success"], false, "{r}");
        drop(svc);
        srv.stop().await;
    }
);

both_drivers!(
    issue9_item7_pending_requests_are_bounded_and_expire,
    |driver| {
        let mut cfg = proto_config(driver);
        cfg.max_pending_requests = 4;
        cfg.request_timeout = Duration::from_millis(400);
        let srv = TestServer::start(cfg).await;
        let mut svc = Client::with_type(srv.addr, "service").await;
        let r = svc
            .call(json!({"type": "register", "kind": "endpoint", "name": "mute"}))
            .await;
        assert_eq!(r["success"], true);
        let mut caller = Client::with_type(srv.addr, "application").await;
        for round in 0..2 {
            for i in 0..4 {
                caller
                .send(json!({"type": "request", "requestId": format!("{round}-{i}"), "endpoint": "mute"}))
                .await;
            }
            let r = caller
                .call(json!({"type": "request", "requestId": "over", "endpoint": "mute"}))
                .await;
            assert_eq!(r["code"], "limit_exceeded", "{r}");
            assert_eq!(r["requestId"], "over");
            assert_eq!(r["limit"], "max_pending_requests");
            // All four time out; the service side forgets them too, so the
            // second round is forwarded again (not "Service busy").
            for _ in 0..4 {
                let r = caller.recv_type("response").await;
                assert_eq!(r["error"], "Request timed out", "{r}");
            }
            for _ in 0..4 {
                svc.recv_type("request").await;
            }
        }
        srv.stop().await;
    }
);

both_drivers!(issue9_item7_server_status_is_capped, |driver| {
    let mut cfg = proto_config(driver);
    cfg.status_max_clients = 3;
    let srv = TestServer::start(cfg).await;
    let mut others = Vec::new();
    for _ in 0..6 {
        others.push(Client::connect(srv.addr).await);
    }
    let mut s = Client::with_type(srv.addr, "service").await;
    let r = s
        .call(json!({"type": "request", "requestId": "st", "endpoint": "server.status"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["clients"].as_array().unwrap().len(), 3);
    assert_eq!(r["data"]["clientsTruncated"], true);
    assert_eq!(r["data"]["connectionCount"], 7);
    srv.stop().await;
});

// Item 10: per-connection limits.
both_drivers!(issue9_item10_per_connection_limits, |driver| {
    let mut cfg = proto_config(driver);
    cfg.max_subscriptions_per_connection = 3;
    cfg.max_streams_per_connection = 2;
    cfg.max_payload_size = 4 << 20;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    for i in 0..3 {
        let r = c
            .call(json!({"type": "subscribe", "topic": format!("t{i}")}))
            .await;
        assert_eq!(r["success"], true);
    }
    // Subscribing again to a held topic is not a new one.
    assert_eq!(
        c.call(json!({"type": "subscribe", "topic": "t0"})).await["success"],
        true
    );
    let r = c.call(json!({"type": "subscribe", "topic": "t3"})).await;
    assert_eq!(r["code"], "limit_exceeded", "{r}");
    assert_eq!(r["limit"], "max_subscriptions_per_connection");
    for i in 0..2 {
        let r = c
            .call(json!({"type": "stream_start", "streamId": format!("s{i}")}))
            .await;
        assert_eq!(r["success"], true);
    }
    let r = c
        .call(json!({"type": "stream_start", "streamId": "s2"}))
        .await;
    assert_eq!(r["limit"], "max_streams_per_connection", "{r}");
    let long = "i".repeat(1 << 20);
    let r = c
        .call(json!({"type": "stream_start", "streamId": long}))
        .await;
    assert_eq!(r["limit"], "max_id_length", "{r}");
    let r = c
        .call(json!({"type": "stream_start", "streamId": "ok", "streamType": "t".repeat(10_000)}))
        .await;
    assert_eq!(r["limit"], "max_name_length", "{r}");
    let r = c
        .call(json!({"type": "subscribe", "topic": "a".repeat(300)}))
        .await;
    assert_eq!(r["limit"], "max_topic_length", "{r}");
    let r = c
        .call(json!({"type": "request", "requestId": "r".repeat(200), "endpoint": "echo"}))
        .await;
    assert_eq!(r["limit"], "max_id_length", "{r}");
    srv.stop().await;
});

// Item 11: "not subscribed" counts against the error budget.
both_drivers!(
    issue9_item11_unsubscribe_unknown_counts_as_an_error,
    |driver| {
        let mut cfg = proto_config(driver);
        cfg.max_errors_per_minute = 3;
        let srv = TestServer::start(cfg).await;
        let mut c = Client::connect(srv.addr).await;
        for i in 0..3 {
            let r = c
                .call(json!({"type": "unsubscribe", "topic": format!("never{i}")}))
                .await;
            assert_eq!(r["success"], false);
        }
        c.send(json!({"type": "unsubscribe", "topic": "never"}))
            .await;
        assert_eq!(c.closed().await, Some(1008));
        srv.stop().await;
    }
);

// Item 13: every refusal of a message with a requestId echoes it.
both_drivers!(issue9_item13_refusals_echo_the_request_id, |driver| {
    let mut cfg = proto_config(driver);
    cfg.enable_authentication = true;
    cfg.auth_token = Some("t".into());
    cfg.enable_rpc = false;
    let srv = TestServer::start(cfg).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c
        .call(json!({"type": "request", "requestId": "a1", "endpoint": "echo"}))
        .await;
    assert_eq!(
        (r["code"].as_str(), r["requestId"].as_str()),
        (Some("unauthenticated"), Some("a1"))
    );
    let r = c
        .call(json!({"type": "rpc_call", "requestId": 7, "method": "m"}))
        .await;
    assert_eq!(r["code"], "unauthenticated");
    assert_eq!(r["requestId"], 7);
    assert_eq!(
        c.call(json!({"type": "auth", "token": "t"})).await["success"],
        true
    );
    let r = c
        .call(json!({"type": "rpc_call", "requestId": "a2", "method": "m"}))
        .await;
    assert_eq!(
        (r["code"].as_str(), r["requestId"].as_str()),
        (Some("feature_disabled"), Some("a2"))
    );
    let r = c.call(json!({"type": "request", "requestId": "a3"})).await;
    assert_eq!(
        (r["code"].as_str(), r["requestId"].as_str()),
        (Some("invalid_message"), Some("a3"))
    );
    assert_eq!(r["field"], "endpoint");
    let r = c.call(json!({"type": "nope", "requestId": "a4"})).await;
    assert_eq!(
        (r["code"].as_str(), r["requestId"].as_str()),
        (Some("unknown_type"), Some("a4"))
    );
    srv.stop().await;
});

// Items 15 and 16: lone surrogates and duplicate keys are refused alike
// everywhere (they were altered or read inconsistently).
both_drivers!(
    issue9_items15_16_text_that_cannot_be_read_back_is_refused,
    |driver| {
        let srv = TestServer::start(proto_config(driver)).await;
        let mut c = Client::connect(srv.addr).await;
        for m in [
            r#"{"type":"request","requestId":"1","endpoint":"echo","data":"a\ud800b"}"#,
            r#"{"type":"subscribe","topic":"a\ud800b"}"#,
            r#"{"type":"stream_start","streamId":"a\udc00"}"#,
            r#"{"type":"publish","topic":"t","data":"\ud800"}"#,
        ] {
            let r: Value = serde_json::from_str(&c.call_raw(m).await).unwrap();
            assert_eq!(r["code"], "invalid_json", "{m}: {r}");
        }
        // A surrogate pair is a character: passed through as sent.
        let r = c
            .call_raw(
                r#"{"type":"request","requestId":"2","endpoint":"echo","data":"\ud83d\ude00"}"#,
            )
            .await;
        assert!(r.contains(r#""data":"\ud83d\ude00""#), "{r}");
        let r: Value = serde_json::from_str(
            &c.call_raw(r#"{"type":"data","type":"subscribe","topic":"x"}"#)
                .await,
        )
        .unwrap();
        assert_eq!(r["code"], "invalid_message", "{r}");
        assert!(r["message"].as_str().unwrap().contains("duplicate"), "{r}");
        srv.stop().await;
    }
);

// Item 17: wrong-typed fields are refused, naming the field.
both_drivers!(issue9_item17_wrong_types_are_refused, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::connect(srv.addr).await;
    for (m, field) in [
        (json!({"type": "data", "table": 5, "data": {}}), "table"),
        (
            json!({"type": "data", "dataType": 5, "data": {}}),
            "dataType",
        ),
        (
            json!({"type": "data", "messageId": {}, "data": {}}),
            "messageId",
        ),
        (json!({"type": "handshake", "clientType": 1}), "clientType"),
        (json!({"type": "subscribe", "topic": ["a"]}), "topic"),
    ] {
        let r = c.call(m.clone()).await;
        assert_eq!(
            (r["code"].as_str(), r["field"].as_str()),
            (Some("invalid_message"), Some(field)),
            "{m}: {r}"
        );
    }
    assert_eq!(
        c.call(json!({"type": "stream_start", "streamId": "s"}))
            .await["success"],
        true
    );
    for bad in [json!(-1), json!(6.5), json!("7")] {
        let r = c
            .call(json!({"type": "stream_data", "streamId": "s", "sequenceNumber": bad, "data": 1}))
            .await;
        assert_eq!(r["field"], "sequenceNumber", "{bad}: {r}");
    }
    let r = c
        .call(json!({"type": "stream_data", "streamId": "s", "sequenceNumber": 5, "data": 1}))
        .await;
    assert_eq!(r["code"], "stream_sequence", "{r}");
    let r = c
        .call(json!({"type": "stream_data", "streamId": "s", "sequenceNumber": 1, "data": "not base64!"}))
        .await;
    assert_eq!(r["field"], "data", "{r}");
    assert_eq!(
        c.call(json!({"type": "stream_start", "streamId": "m"}))
            .await["success"],
        true
    );
    // A valid base64 chunk gets no reply: the next message is the heartbeat's.
    c.send(json!({"type": "stream_data", "streamId": "m", "sequenceNumber": 1, "data": "AAEC"}))
        .await;
    still_alive(&mut c).await;
    srv.stop().await;
});

// Item 17 (cont.): u64::MAX as a first-after-base sequence number must not
// wrap to 0.
both_drivers!(issue9_item17_sequence_number_does_not_wrap, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.call(json!({"type": "stream_start", "streamId": "s"}))
            .await["success"],
        true
    );
    let r = c
        .call_raw(r#"{"type":"stream_data","streamId":"s","sequenceNumber":18446744073709551615,"data":1}"#)
        .await;
    assert!(
        r.contains("stream_sequence") || r.contains("sequenceNumber"),
        "{r}"
    );
    srv.stop().await;
});

// Item 18: error texts are for people, not parser internals.
both_drivers!(issue9_item18_error_texts_are_readable, |driver| {
    let srv = TestServer::start(proto_config(driver)).await;
    let mut c = Client::connect(srv.addr).await;
    for (m, words) in [
        (r#"{"type":"data","data":tru}"#, "byte 22"),
        ("\u{0}", "byte 0"),
        (r#"{"type":"data","data":"a	b"}"#, "control character"),
    ] {
        let r: Value = serde_json::from_str(&c.call_raw(m).await).unwrap();
        let msg = r["message"].as_str().unwrap();
        assert_eq!(r["code"], "invalid_json");
        assert!(msg.contains(words), "{m:?}: {msg}");
        assert!(!msg.contains("Tape") && !msg.contains("Internal"), "{msg}");
    }
    srv.stop().await;
});

// Item 18 (cont.): a storage failure reaches the client as
// `storage_unavailable`, without server paths.
both_drivers!(
    issue9_item18_storage_errors_are_generic_for_clients,
    |driver| {
        // A 2 MiB tmpfs fills up fast; needs root (CI has it).
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        }
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _u = Unmount(dir.path().to_path_buf());
        let mut cfg = store_cfg(driver, dir.path());
        cfg.store_write_buffer_size = 256 * 1024;
        let srv = TestServer::start(cfg).await;
        let mut c = Client::connect(srv.addr).await;
        let blob = "z".repeat(60_000);
        let mut refused = None;
        for i in 0..200 {
            let r = c
                .call(json!({"type": "data", "data": {"i": i, "b": blob}}))
                .await;
            if r["success"] == false {
                refused = Some(r);
                break;
            }
        }
        let r = refused.expect("a 2 MiB disk never filled");
        assert_eq!(r["code"], "storage_unavailable", "{r}");
        let msg = r["message"].as_str().unwrap();
        assert!(!msg.contains('/') && !msg.contains(".log"), "{msg}");
        drop(c);
        srv.stop().await;
    }
);

// Item 14: security events are logged at warn with the peer address, and a
// storm is rate-limited.
#[test]
fn issue9_item14_security_events_are_logged_and_rate_limited() {
    use std::io::Read;
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--shards",
        "1",
        "--set",
        "persist=false",
        "--set",
        "enable_authentication=true",
        "--set",
        "auth_token=right",
        "--set",
        "max_auth_failures=1000",
    ])
    .stderr(std::process::Stdio::piped());
    let (mut child, addr) = spawn_listening(&mut cmd);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(addr).await;
        for _ in 0..200 {
            let r = c.call(json!({"type": "auth", "token": "wrong"})).await;
            assert_eq!(r["success"], false);
        }
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
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("security: authentication failed"))
        .collect();
    assert!(!lines.is_empty(), "no security line in:\n{err}");
    assert!(
        lines.len() <= 5,
        "200 failures, {} lines:\n{err}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("127.0.0.1:")),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the token must not be logged:\n{err}"
    );
}
