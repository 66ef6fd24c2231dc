//! The JSON protocol of `docs/protocol.md`, message family by message
//! family and error code by error code, driven through [`ProtocolHarness`]
//! (no sockets, no store, no waiting on timers).
//!
//! Every test reads the replies as a client would: each queued frame must be
//! one unmasked, uncompressed text frame holding one JSON object, and the
//! assertions name the fields the protocol promises (`type`, `success`,
//! `code`, the `requestId` echo, `limit`/`max`, ...).

use super::harness::ProtocolHarness;
use crate::config::{AuthToken, Config};
use serde_json::{json, Value};

// --- Reading server frames ---

/// The payload of one unmasked, uncompressed server frame; checks that the
/// frame is a complete, final text frame and that its length field matches.
fn text_payload(frame: &[u8]) -> &[u8] {
    assert!(frame.len() >= 2, "short frame {frame:?}");
    assert_eq!(frame[0], 0x81, "not a final, uncompressed text frame");
    assert_eq!(frame[1] & 0x80, 0, "server frames are not masked");
    let (start, len) = match frame[1] & 0x7f {
        126 => (4, u64::from(u16::from_be_bytes([frame[2], frame[3]]))),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&frame[2..10]);
            (10, u64::from_be_bytes(n))
        }
        n => (2, u64::from(n)),
    };
    let payload = &frame[start..];
    assert_eq!(payload.len() as u64, len, "frame length field");
    payload
}

fn parse(frame: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(text_payload(frame)).expect("a JSON reply");
    assert!(v.is_object(), "reply is not an object: {v}");
    assert!(v["type"].is_string(), "reply without a type: {v}");
    v
}

/// The text of the reply's payload, exactly as the server wrote it.
fn raw_text(frame: &[u8]) -> String {
    String::from_utf8(text_payload(frame).to_vec()).expect("UTF-8 reply")
}

fn h() -> ProtocolHarness {
    ProtocolHarness::new(Config::default())
}

/// Send `msg` as a text message; all replies.
fn send(h: &mut ProtocolHarness, msg: &str) -> Vec<Value> {
    h.text(msg).iter().map(|f| parse(&f[..])).collect()
}

/// Send `msg`; exactly one reply.
fn one_raw(h: &mut ProtocolHarness, msg: &str) -> Value {
    let r = send(h, msg);
    assert_eq!(r.len(), 1, "{msg} -> {r:?}");
    r.into_iter().next().unwrap()
}

fn one(h: &mut ProtocolHarness, msg: Value) -> Value {
    one_raw(h, &msg.to_string())
}

/// Send `msg`; no reply at all.
fn silent(h: &mut ProtocolHarness, msg: Value) {
    let r = send(h, &msg.to_string());
    assert!(r.is_empty(), "{msg} -> {r:?}");
}

/// Send a binary message; exactly one reply.
fn one_bin(h: &mut ProtocolHarness, b: &[u8]) -> Value {
    let r: Vec<Value> = h.binary(b).iter().map(|f| parse(&f[..])).collect();
    assert_eq!(r.len(), 1, "binary {b:?} -> {r:?}");
    r.into_iter().next().unwrap()
}

fn silent_bin(h: &mut ProtocolHarness, b: &[u8]) {
    let r: Vec<Value> = h.binary(b).iter().map(|f| parse(&f[..])).collect();
    assert!(r.is_empty(), "binary {b:?} -> {r:?}");
}

/// The sorted key set of a reply.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// An `error` with `code`; its `message` is a non-empty string.
fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {v}"
    );
}

/// `"2026-11-26T12:00:00.000Z"`: ISO-8601 UTC with milliseconds.
fn assert_timestamp(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {v} is not a string"));
    let b = s.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    assert!(
        b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z'
            && digits.iter().all(|&i| b[i].is_ascii_digit()),
        "timestamp {s:?} is not ISO-8601 UTC with milliseconds"
    );
}

/// A connection that handshook as a service client.
fn service() -> ProtocolHarness {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    assert_eq!(r["success"], true);
    h
}

/// `{"a":[[...]]}` holding `arrays` nested arrays: depth `arrays + 1`.
fn nested(arrays: usize) -> String {
    format!(
        r#"{{"type":"heartbeat","a":{}{}}}"#,
        "[".repeat(arrays),
        "]".repeat(arrays)
    )
}

// --- Session: heartbeat, handshake, auth ---

#[test]
fn session_heartbeat_reply_is_type_and_timestamp_only() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "heartbeat", "junk": [1, 2], "x": null}),
    );
    assert_eq!(r["type"], "heartbeat_response");
    assert_eq!(keys(&r), ["timestamp", "type"]);
    assert_timestamp(&r["timestamp"]);
    assert!(!h.closing());
}

#[test]
fn session_handshake_reports_client_id_and_type() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "microcontroller",
               "capabilities": ["temperature"], "version": "1.0.0", "deviceId": "dev-1"}),
    );
    assert_eq!(r["type"], "handshake_response");
    assert_eq!(r["success"], true);
    assert_eq!(r["clientType"], "microcontroller");
    // `<instance>-<shard>-<n>`, on shard 0.
    let id = r["clientId"]
        .as_str()
        .expect("clientId is a string")
        .to_owned();
    let mut parts = id.rsplitn(3, '-');
    let n = parts.next().unwrap();
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(parts.next(), Some("0"), "{id}");
    assert!(parts.next().is_some_and(|i| !i.is_empty()), "{id}");
    // A second handshake may change the type; the id stays.
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "application"}),
    );
    assert_eq!(
        (
            r["success"].as_bool(),
            r["clientType"].as_str(),
            r["clientId"].as_str()
        ),
        (Some(true), Some("application"), Some(id.as_str()))
    );
}

#[test]
fn session_handshake_unknown_type_lists_allowed_types() {
    let mut h = ProtocolHarness::new(Config {
        client_types: vec!["sensor".into(), "dashboard".into()],
        ..Config::default()
    });
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "microcontroller"}),
    );
    assert_eq!(r["type"], "handshake_response");
    assert_eq!(r["success"], false);
    assert!(r.get("clientType").is_none(), "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("microcontroller"), "{msg}");
    assert!(msg.contains("sensor, dashboard"), "{msg}");
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "dashboard"}),
    );
    assert_eq!(r["success"], true);
}

#[test]
fn session_handshake_field_errors() {
    let mut h = h();
    for bad in [
        json!({"type": "handshake"}),
        json!({"type": "handshake", "clientType": ""}),
        json!({"type": "handshake", "clientType": 3}),
    ] {
        let r = one(&mut h, bad.clone());
        assert_error(&r, "invalid_message");
        assert_eq!(r["field"], "clientType", "{bad}");
    }
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "service", "deviceId": ["d"]}),
    );
    assert_error(&r, "invalid_message");
    assert_eq!(r["field"], "deviceId");
}

#[test]
fn session_handshake_then_auth() {
    let mut h = ProtocolHarness::new(Config {
        enable_authentication: true,
        auth_token: Some("sensor-secret-123".into()),
        ..Config::default()
    });
    // Handshake and heartbeat are allowed before auth.
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "microcontroller"}),
    );
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("handshake_response"), Some(true))
    );
    assert_eq!(
        one(&mut h, json!({"type": "heartbeat"}))["type"],
        "heartbeat_response"
    );
    let r = one(&mut h, json!({"type": "auth", "token": "wrong"}));
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["message"].as_str()
        ),
        (Some("auth_response"), Some(false), Some("Invalid token"))
    );
    let r = one(&mut h, json!({"type": "auth"}));
    assert_eq!(
        (r["success"].as_bool(), r["message"].as_str()),
        (Some(false), Some("Missing token"))
    );
    assert!(!h.closing(), "two failures are under max_auth_failures (3)");
    let r = one(
        &mut h,
        json!({"type": "auth", "token": "sensor-secret-123"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["message"].as_str()
        ),
        (Some("auth_response"), Some(true), Some("Authenticated"))
    );
    let r = one(&mut h, json!({"type": "auth", "token": "wrong"}));
    assert_eq!(
        (r["success"].as_bool(), r["message"].as_str()),
        (Some(true), Some("Already authenticated"))
    );
    // Authenticated: the rest of the protocol opens.
    let r = one(&mut h, json!({"type": "data", "data": {"t": 1}}));
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("data_response"), Some(true))
    );
}

#[test]
fn session_auth_not_required_when_off() {
    let mut h = h();
    let r = one(&mut h, json!({"type": "auth", "token": "anything"}));
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["message"].as_str()
        ),
        (
            Some("auth_response"),
            Some(true),
            Some("Authentication not required")
        )
    );
    let r = one(&mut h, json!({"type": "auth", "token": 5}));
    assert_error(&r, "invalid_message");
    assert_eq!(r["field"], "token");
}

#[test]
fn session_auth_failures_close_the_connection() {
    let mut h = ProtocolHarness::new(Config {
        enable_authentication: true,
        auth_token: Some("t".into()),
        max_auth_failures: 2,
        ..Config::default()
    });
    let r = one(&mut h, json!({"type": "auth", "token": "x"}));
    assert_eq!(r["success"], false);
    assert!(!h.closing());
    // The last failed attempt is still answered, then the close is queued.
    let frames = h.text(&json!({"type": "auth", "token": "y"}).to_string());
    let r = parse(&frames[0]);
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("auth_response"), Some(false))
    );
    assert!(h.closing());
}

#[test]
fn session_plain_token_cannot_claim_a_bound_type() {
    let cfg = Config {
        enable_authentication: true,
        auth_tokens: vec![
            AuthToken::Plain("plain".into()),
            AuthToken::bound("svc-only", Some("service")),
        ],
        ..Config::default()
    };
    // Handshake as `service` first, then the plain token: refused.
    let mut h = ProtocolHarness::new(cfg.clone());
    one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    let r = one(&mut h, json!({"type": "auth", "token": "plain"}));
    assert_eq!(
        (r["success"].as_bool(), r["message"].as_str()),
        (Some(false), Some("Invalid token"))
    );
    // The bound token, before its handshake names a type: accepted.
    let r = one(&mut h, json!({"type": "auth", "token": "svc-only"}));
    assert_eq!(r["success"], true);

    // Plain token first, then a handshake as the reserved type: forbidden.
    let mut h = ProtocolHarness::new(cfg);
    assert_eq!(
        one(&mut h, json!({"type": "auth", "token": "plain"}))["success"],
        true
    );
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["code"].as_str()
        ),
        (Some("handshake_response"), Some(false), Some("forbidden"))
    );
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "application"}),
    );
    assert_eq!(r["success"], true);
}

// --- Data: data, sensor_data ---

#[test]
fn data_reply_without_store_has_timestamp_and_no_insert_id() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "data", "dataType": "sensor", "timestamp": "client's own",
               "data": {"temperature": 25.5, "humidity": 60}}),
    );
    assert_eq!(r["type"], "data_response");
    assert_eq!(r["success"], true);
    assert_eq!(
        keys(&r),
        ["success", "timestamp", "type"],
        "persist is off: no insertId"
    );
    assert_timestamp(&r["timestamp"]);
    assert_ne!(r["timestamp"], "client's own");
    // Any JSON value is a record, with a string or numeric messageId.
    for d in [json!(null), json!([1, 2]), json!("s"), json!(7)] {
        let r = one(&mut h, json!({"type": "data", "data": d, "messageId": 9}));
        assert_eq!(
            (r["type"].as_str(), r["success"].as_bool()),
            (Some("data_response"), Some(true))
        );
    }
}

#[test]
fn data_table_must_be_allowed() {
    let mut h = ProtocolHarness::new(Config {
        allowed_tables: vec!["readings".into()],
        ..Config::default()
    });
    let r = one(
        &mut h,
        json!({"type": "data", "table": "secrets", "data": 1}),
    );
    assert_eq!(r["type"], "data_response");
    assert_eq!(r["success"], false);
    assert_eq!(r["message"], "Table not allowed: secrets");
    assert_timestamp(&r["timestamp"]);
    for table in ["readings", "sensor_data"] {
        let r = one(&mut h, json!({"type": "data", "table": table, "data": 1}));
        assert_eq!(r["success"], true, "{table}");
    }
}

#[test]
fn data_sensor_data_validated_in_required_fields_order() {
    let mut h = ProtocolHarness::new(Config {
        required_fields: vec!["temperature".into(), "humidity".into()],
        ..Config::default()
    });
    // sensor_data: the whole message (minus `type`) is the record.
    let r = one(
        &mut h,
        json!({"type": "sensor_data", "sensor_id": "ESP32_DHT22_01"}),
    );
    assert_eq!(r["type"], "data_response");
    assert_eq!(r["success"], false);
    assert_eq!(
        r["message"],
        "Missing required fields: temperature, humidity"
    );
    assert_eq!(r["missingFields"], json!(["temperature", "humidity"]));
    assert_timestamp(&r["timestamp"]);
    let r = one(
        &mut h,
        json!({"type": "sensor_data", "humidity": 60, "temperature": 25.0}),
    );
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("data_response"), Some(true))
    );
    // data: only the `data` object counts, not the message's own fields.
    let r = one(
        &mut h,
        json!({"type": "data", "temperature": 1, "data": {"humidity": 2}}),
    );
    assert_eq!(r["missingFields"], json!(["temperature"]));

    // Validation off: accepted as sent.
    let mut h = ProtocolHarness::new(Config {
        required_fields: vec!["temperature".into()],
        enable_data_validation: false,
        ..Config::default()
    });
    let r = one(&mut h, json!({"type": "sensor_data", "x": 1}));
    assert_eq!(r["success"], true);
}

#[test]
fn data_fields_of_the_wrong_type_are_refused_with_request_id() {
    let mut h = h();
    for (msg, field) in [
        (
            json!({"type": "data", "requestId": "d1", "data": 1, "dataType": 5}),
            "dataType",
        ),
        (
            json!({"type": "data", "requestId": "d1", "data": 1, "table": 5}),
            "table",
        ),
        (
            json!({"type": "data", "requestId": "d1", "data": 1, "messageId": true}),
            "messageId",
        ),
        (
            json!({"type": "data", "requestId": "d1", "data": 1, "messageId": ""}),
            "messageId",
        ),
        (json!({"type": "data", "requestId": "d1"}), "data"),
    ] {
        let r = one(&mut h, msg.clone());
        assert_error(&r, "invalid_message");
        assert_eq!(r["field"], field, "{msg}");
        assert_eq!(r["requestId"], "d1", "{msg}");
    }
}

// --- Calls: request, rpc_call, response, rpc_response, register, unregister ---

#[test]
fn calls_request_echo_returns_request_id_as_string() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": 42, "endpoint": "echo", "data": {"x": [1, "y"]}}),
    );
    assert_eq!(r["type"], "response");
    assert_eq!(
        r["requestId"], "42",
        "replies carry the requestId back as a string"
    );
    assert_eq!(r["success"], true);
    assert_eq!(r["data"], json!({"x": [1, "y"]}));
    // No data: null.
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "e", "endpoint": "echo"}),
    );
    assert_eq!(
        (r["requestId"].as_str(), r["data"].clone()),
        (Some("e"), Value::Null)
    );
    assert!(r.as_object().unwrap().contains_key("data"));
}

#[test]
fn calls_request_unknown_endpoint_and_service_only_builtins() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "req_123", "endpoint": "get_weather", "data": {}}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["requestId"].as_str(),
            r["success"].as_bool()
        ),
        (Some("response"), Some("req_123"), Some(false))
    );
    assert_eq!(r["error"], "Unknown endpoint: get_weather");
    assert!(r.get("data").is_none(), "{r}");
    for ep in ["server.status", "store.query"] {
        let r = one(
            &mut h,
            json!({"type": "request", "requestId": "s", "endpoint": ep}),
        );
        assert_eq!(
            (r["type"].as_str(), r["success"].as_bool()),
            (Some("response"), Some(false))
        );
        assert_eq!(r["error"], format!("{ep} is for service clients"));
    }
    // A service client may query, but persistence is off in the harness.
    let mut h = service();
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "q1", "endpoint": "store.query", "data": {"limit": 2}}),
    );
    assert_eq!(
        (
            r["requestId"].as_str(),
            r["success"].as_bool(),
            r["error"].as_str()
        ),
        (Some("q1"), Some(false), Some("Persistence is off"))
    );
    // ... and again: the one-at-a-time guard was released.
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "q2", "endpoint": "store.query"}),
    );
    assert_eq!(
        (r["type"].as_str(), r["requestId"].as_str()),
        (Some("response"), Some("q2"))
    );
}

#[test]
fn calls_server_status_for_a_service_client() {
    let mut h = service();
    one(&mut h, json!({"type": "subscribe", "topic": "sensors.>"}));
    // The status is gathered through the shard's mailbox; in the harness it
    // may come with the next message's replies, so read both.
    let mut replies = send(
        &mut h,
        r#"{"type":"request","requestId":"st","endpoint":"server.status"}"#,
    );
    replies.extend(send(&mut h, r#"{"type":"heartbeat"}"#));
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{replies:?}");
    assert!(kinds.contains(&"heartbeat_response"), "{replies:?}");
    let r = replies
        .iter()
        .find(|r| r["type"] == "response")
        .expect("a response");
    assert_eq!(
        (r["requestId"].as_str(), r["success"].as_bool()),
        (Some("st"), Some(true))
    );
    let status = &r["data"];
    assert_eq!(status["connectionCount"], 1, "{status}");
    assert_eq!(status["maxConnections"], 100);
    assert_eq!(status["shards"], json!([1]));
    assert_eq!(status["topicCount"], 1);
    let client = &status["clients"][0];
    assert_eq!(status["clients"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (
            client["clientType"].as_str(),
            client["authenticated"].as_bool()
        ),
        (Some("service"), Some(false))
    );
    assert_eq!(client["subscriptions"], json!(["sensors.>"]));
    assert!(status.get("clientsTruncated").is_none());
}

#[test]
fn calls_request_and_rpc_field_errors() {
    let mut h = h();
    for (msg, field, echo) in [
        (
            json!({"type": "request", "endpoint": "echo"}),
            "requestId",
            None,
        ),
        // Echoed as sent, even the empty id it refuses.
        (
            json!({"type": "request", "requestId": "", "endpoint": "echo"}),
            "requestId",
            Some(""),
        ),
        (
            json!({"type": "request", "requestId": true, "endpoint": "echo"}),
            "requestId",
            None,
        ),
        (
            json!({"type": "request", "requestId": "r1"}),
            "endpoint",
            Some("r1"),
        ),
        (
            json!({"type": "request", "requestId": "r1", "endpoint": 1}),
            "endpoint",
            Some("r1"),
        ),
        (
            json!({"type": "rpc_call", "requestId": "r2"}),
            "method",
            Some("r2"),
        ),
        (
            json!({"type": "rpc_call", "method": "m"}),
            "requestId",
            None,
        ),
    ] {
        let r = one(&mut h, msg.clone());
        assert_error(&r, "invalid_message");
        assert_eq!(r["field"], field, "{msg}");
        assert_eq!(r["requestId"].as_str(), echo, "{msg}");
    }
}

#[test]
fn calls_rpc_method_not_found_echoes_numeric_id_as_string() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "rpc_call", "requestId": 456, "method": "calculateAverage",
               "params": {"values": [10, 20]}}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["requestId"].as_str(),
            r["success"].as_bool()
        ),
        (Some("rpc_response"), Some("456"), Some(false))
    );
    assert_eq!(r["error"], "Method not found: calculateAverage");
}

#[test]
fn calls_register_and_unregister_replies() {
    let mut h = service();
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "method", "name": "calc"}),
    );
    assert_eq!(r["type"], "register_response");
    assert_eq!(keys(&r), ["kind", "name", "success", "type"]);
    assert_eq!(
        (
            r["success"].as_bool(),
            r["kind"].as_str(),
            r["name"].as_str()
        ),
        (Some(true), Some("method"), Some("calc"))
    );
    // Registering twice is fine.
    assert_eq!(
        one(
            &mut h,
            json!({"type": "register", "kind": "method", "name": "calc"})
        )["success"],
        true
    );
    let r = one(
        &mut h,
        json!({"type": "unregister", "kind": "method", "name": "calc"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["kind"].as_str(),
            r["name"].as_str()
        ),
        (
            Some("unregister_response"),
            Some(true),
            Some("method"),
            Some("calc")
        )
    );
    let r = one(
        &mut h,
        json!({"type": "unregister", "kind": "method", "name": "calc"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["message"].as_str()
        ),
        (
            Some("unregister_response"),
            Some(false),
            Some("Not registered")
        )
    );
    // After unregistering, nobody serves it.
    let r = one(
        &mut h,
        json!({"type": "rpc_call", "requestId": "c", "method": "calc"}),
    );
    assert_eq!(r["error"], "Method not found: calc");
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "endpoint", "requestId": 3}),
    );
    assert_error(&r, "invalid_message");
    assert_eq!(
        (r["field"].as_str(), r["requestId"].as_i64()),
        (Some("name"), Some(3))
    );
}

#[test]
fn calls_request_routed_to_registrant_and_response_relayed() {
    let mut h = service();
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "endpoint", "name": "get_weather"}),
    );
    assert_eq!(r["success"], true);
    // The caller is the registrant itself (one connection): it receives the
    // forwarded request under a server-chosen id.
    let frames = h.text(
        r#"{"type":"request","requestId":"req_123","endpoint":"get_weather","data":{"city":"New York","n":1.50}}"#,
    );
    assert_eq!(frames.len(), 1);
    // The data is forwarded as the caller sent it, digit for digit.
    let text = raw_text(&frames[0]);
    assert!(
        text.contains(r#""data":{"city":"New York","n":1.50}"#),
        "{text}"
    );
    let r = parse(&frames[0]);
    assert_eq!(r["type"], "request");
    assert_eq!(r["endpoint"], "get_weather");
    let srv = r["requestId"]
        .as_str()
        .expect("server-chosen id")
        .to_owned();
    assert!(srv.starts_with("srv-0-"), "{srv}");
    assert_ne!(srv, "req_123");
    // The answer goes back to the caller under the caller's id.
    let frames = h.text(
        &json!({"type": "response", "requestId": srv, "success": true,
                "data": {"temperature": 22, "condition": "sunny"}})
        .to_string(),
    );
    assert_eq!(frames.len(), 1);
    let r = parse(&frames[0]);
    assert_eq!(
        (
            r["type"].as_str(),
            r["requestId"].as_str(),
            r["success"].as_bool()
        ),
        (Some("response"), Some("req_123"), Some(true))
    );
    assert_eq!(r["data"], json!({"temperature": 22, "condition": "sunny"}));
    // Answered once: a second answer is for no waiting request.
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": srv, "data": 1}),
    );
    assert_error(&r, "unknown_request");
    assert_eq!(r["requestId"], srv.as_str());
}

#[test]
fn calls_rpc_routed_to_registrant_and_error_relayed() {
    let mut h = service();
    one(
        &mut h,
        json!({"type": "register", "kind": "method", "name": "calculateAverage"}),
    );
    let r = one(
        &mut h,
        json!({"type": "rpc_call", "requestId": 456, "method": "calculateAverage",
               "params": {"values": [10, 20, 30]}}),
    );
    assert_eq!(r["type"], "rpc_call");
    assert_eq!(r["method"], "calculateAverage");
    assert_eq!(r["params"], json!({"values": [10, 20, 30]}));
    let srv = r["requestId"].as_str().unwrap().to_owned();
    let r = one(
        &mut h,
        json!({"type": "rpc_response", "requestId": srv, "success": false, "error": "division by zero"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["requestId"].as_str(),
            r["success"].as_bool()
        ),
        (Some("rpc_response"), Some("456"), Some(false))
    );
    assert_eq!(r["error"], "division by zero");
}

// --- Pub/sub: subscribe, unsubscribe, publish ---

#[test]
fn pubsub_subscribe_and_unsubscribe_reply_with_topic() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "subscribe", "topic": "sensors.*.temperature"}),
    );
    assert_eq!(keys(&r), ["success", "topic", "type"]);
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["topic"].as_str()
        ),
        (
            Some("subscribe_response"),
            Some(true),
            Some("sensors.*.temperature")
        )
    );
    // Re-subscribing to a held pattern succeeds.
    assert_eq!(
        one(
            &mut h,
            json!({"type": "subscribe", "topic": "sensors.*.temperature"})
        )["success"],
        true
    );
    let r = one(
        &mut h,
        json!({"type": "unsubscribe", "topic": "sensors.*.temperature"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["topic"].as_str()
        ),
        (
            Some("unsubscribe_response"),
            Some(true),
            Some("sensors.*.temperature")
        )
    );
    assert!(r.get("message").is_none());
    let r = one(
        &mut h,
        json!({"type": "unsubscribe", "topic": "sensors.*.temperature"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["message"].as_str()
        ),
        (
            Some("unsubscribe_response"),
            Some(false),
            Some("Not subscribed")
        )
    );
    assert_eq!(r["topic"], "sensors.*.temperature");
}

#[test]
fn pubsub_not_subscribed_counts_against_the_error_budget() {
    let mut h = ProtocolHarness::new(Config {
        max_errors_per_minute: 2,
        ..Config::default()
    });
    for _ in 0..2 {
        assert_eq!(
            one(&mut h, json!({"type": "unsubscribe", "topic": "a"}))["success"],
            false
        );
        assert!(!h.closing());
    }
    // The third is still answered, then the close is queued.
    let frames = h.text(&json!({"type": "unsubscribe", "topic": "a"}).to_string());
    let r = parse(&frames[0]);
    assert_eq!(
        (r["type"].as_str(), r["message"].as_str()),
        (Some("unsubscribe_response"), Some("Not subscribed"))
    );
    assert!(h.closing());
}

#[test]
fn pubsub_publish_response_and_topic_rules() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "publish", "topic": "temperature-alerts", "data": {"value": 35}}),
    );
    assert_eq!(keys(&r), ["success", "topic", "type"]);
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["topic"].as_str()
        ),
        (
            Some("publish_response"),
            Some(true),
            Some("temperature-alerts")
        )
    );
    // No data is null data: still published.
    assert_eq!(
        one(&mut h, json!({"type": "publish", "topic": "a.b"}))["success"],
        true
    );
    for (ty, topic) in [
        ("publish", json!("a.*")),
        ("publish", json!("a.>")),
        ("publish", json!("a..b")),
        ("publish", json!("")),
        ("publish", json!(7)),
        ("subscribe", json!("a.>.b")),
        ("subscribe", json!("a.b*")),
        ("subscribe", json!(".a")),
        ("unsubscribe", json!("a..")),
    ] {
        let msg = json!({"type": ty, "topic": topic, "requestId": "p"});
        let r = one(&mut h, msg.clone());
        assert_error(&r, "invalid_message");
        assert_eq!(
            (r["field"].as_str(), r["requestId"].as_str()),
            (Some("topic"), Some("p")),
            "{msg}"
        );
    }
    let r = one(&mut h, json!({"type": "publish", "data": 1}));
    assert_error(&r, "invalid_message");
    assert_eq!(r["field"], "topic");
}

// --- Streams: stream_start, stream_data, stream_end, binary frames ---

#[test]
fn streams_json_chunks_are_counted_in_decoded_bytes() {
    let mut h = h();
    let id = "upload_1700000000_a.bin";
    let r = one(
        &mut h,
        json!({"type": "stream_start", "streamId": id, "streamType": "file_upload",
               "metadata": {"filename": "a.bin", "size": 5000}}),
    );
    assert_eq!(keys(&r), ["streamId", "success", "type"]);
    assert_eq!(
        (
            r["type"].as_str(),
            r["streamId"].as_str(),
            r["success"].as_bool()
        ),
        (Some("stream_start_response"), Some(id), Some(true))
    );
    let r = one(&mut h, json!({"type": "stream_start", "streamId": id}));
    assert_eq!(
        (
            r["success"].as_bool(),
            r["message"].as_str(),
            r["streamId"].as_str()
        ),
        (Some(false), Some("Stream already active"), Some(id))
    );
    // base64 (4 bytes), another JSON value (its text: 7 bytes), a missing
    // sequenceNumber (the next one): no replies.
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": id, "data": "AAECAw==", "sequenceNumber": 0}),
    );
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": id, "data": {"a": 1}, "sequenceNumber": 1}),
    );
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": id, "data": "AA=="}),
    );
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": id, "sequenceNumber": 3}),
    );
    let r = one(&mut h, json!({"type": "stream_end", "streamId": id}));
    assert_eq!(
        (
            r["type"].as_str(),
            r["streamId"].as_str(),
            r["streamType"].as_str(),
            r["success"].as_bool()
        ),
        (
            Some("stream_end_response"),
            Some(id),
            Some("file_upload"),
            Some(true)
        )
    );
    assert_eq!(
        (r["chunks"].as_u64(), r["bytes"].as_u64()),
        (Some(4), Some(4 + 7 + 1))
    );
    // Ended: the id is free again, and its type defaults to "data".
    assert_eq!(
        one(&mut h, json!({"type": "stream_start", "streamId": id}))["success"],
        true
    );
    let r = one(&mut h, json!({"type": "stream_end", "streamId": id}));
    assert_eq!(
        (
            r["streamType"].as_str(),
            r["chunks"].as_u64(),
            r["bytes"].as_u64()
        ),
        (Some("data"), Some(0), Some(0))
    );
}

#[test]
fn streams_binary_frames_share_the_sequence_with_json_chunks() {
    use crate::protocol::stream::encode;
    let mut h = h();
    one(
        &mut h,
        json!({"type": "stream_start", "streamId": "cam", "streamType": "video"}),
    );
    silent_bin(&mut h, &encode("cam", 0, b"hello"));
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": "cam", "data": "AAEC", "sequenceNumber": 1}),
    );
    silent_bin(&mut h, &encode("cam", 2, &[0u8; 300]));
    silent_bin(&mut h, &encode("cam", 3, b""));
    let r = one(&mut h, json!({"type": "stream_end", "streamId": "cam"}));
    assert_eq!(
        (
            r["streamType"].as_str(),
            r["chunks"].as_u64(),
            r["bytes"].as_u64()
        ),
        (Some("video"), Some(4), Some(5 + 3 + 300))
    );
}

#[test]
fn streams_first_sequence_number_may_be_one() {
    use crate::protocol::stream::encode;
    let mut h = h();
    one(&mut h, json!({"type": "stream_start", "streamId": "s"}));
    silent_bin(&mut h, &encode("s", 1, b"ab"));
    silent_bin(&mut h, &encode("s", 2, b"cd"));
    let r = one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
    assert_eq!(
        (r["chunks"].as_u64(), r["bytes"].as_u64()),
        (Some(2), Some(4))
    );
}

#[test]
fn streams_binary_malformed_frames_are_invalid_message() {
    let mut h = h();
    let mut too_long_id = vec![0x01, 0x01, 0x01]; // id length 257
    too_long_id.extend_from_slice(&[b'a'; 257]);
    too_long_id.extend_from_slice(&[0; 8]);
    let mut not_utf8 = vec![0x01, 0x00, 0x01, 0xff];
    not_utf8.extend_from_slice(&[0; 8]);
    for bad in [
        &b""[..],
        b"\x01\x00",
        b"\x02\x00\x01s\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x01\x00\x01s\x00\x00\x00",
        &too_long_id,
        &not_utf8,
    ] {
        let r = one_bin(&mut h, bad);
        assert_error(&r, "invalid_message");
        assert!(r.get("streamId").is_none(), "{r}");
    }
    assert!(!h.closing());
}

#[test]
fn streams_data_field_errors() {
    let mut h = h();
    one(&mut h, json!({"type": "stream_start", "streamId": "s"}));
    for (msg, field) in [
        (
            r#"{"type":"stream_data","streamId":"s","data":"not base64!","sequenceNumber":0}"#,
            "data",
        ),
        (
            r#"{"type":"stream_data","streamId":"s","data":1,"sequenceNumber":-1}"#,
            "sequenceNumber",
        ),
        (
            r#"{"type":"stream_data","streamId":"s","data":1,"sequenceNumber":6.5}"#,
            "sequenceNumber",
        ),
        (
            r#"{"type":"stream_data","streamId":"s","data":1,"sequenceNumber":"7"}"#,
            "sequenceNumber",
        ),
        (
            r#"{"type":"stream_data","data":1,"sequenceNumber":0}"#,
            "streamId",
        ),
        (
            r#"{"type":"stream_data","streamId":5,"data":1}"#,
            "streamId",
        ),
        (r#"{"type":"stream_start","streamId":""}"#, "streamId"),
        (
            r#"{"type":"stream_start","streamId":"t","streamType":1}"#,
            "streamType",
        ),
        (r#"{"type":"stream_end"}"#, "streamId"),
    ] {
        let r = one_raw(&mut h, msg);
        assert_error(&r, "invalid_message");
        assert_eq!(r["field"], field, "{msg}");
    }
    // None of the refused chunks was counted.
    let r = one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
    assert_eq!(
        (r["chunks"].as_u64(), r["bytes"].as_u64()),
        (Some(0), Some(0))
    );
}

// --- One test per error code ---

#[test]
fn code_invalid_json() {
    let mut h = h();
    let r = one_raw(&mut h, r#"{"type":"heartbeat","x":nope}"#);
    assert_error(&r, "invalid_json");
    assert_eq!(
        r["message"],
        "invalid JSON at byte 24: expected true, false or null"
    );
    for text in [
        "",
        "nope",
        "{\"type\":\"heartbeat\"",
        "{\"type\":\"heartbeat\"} x",
    ] {
        let r = one_raw(&mut h, text);
        assert_error(&r, "invalid_json");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON at byte "),
            "{text:?}: {r}"
        );
    }
    // A lone surrogate is refused; a pair is a character and is echoed as sent.
    let r = one_raw(
        &mut h,
        r#"{"type":"request","requestId":"e","endpoint":"echo","data":"\udc00"}"#,
    );
    assert_error(&r, "invalid_json");
    assert!(
        r["message"].as_str().unwrap().contains("lone surrogate"),
        "{r}"
    );
    let f = h.text(r#"{"type":"request","requestId":"e","endpoint":"echo","data":"\ud83d\ude00"}"#);
    assert_eq!(f.len(), 1);
    assert!(
        raw_text(&f[0]).contains(r#""data":"\ud83d\ude00""#),
        "{}",
        raw_text(&f[0])
    );
    assert_eq!(parse(&f[0])["data"], "\u{1F600}");
    assert!(!h.closing(), "the connection stays open");
}

#[test]
fn code_unknown_type() {
    let mut h = h();
    let r = one(&mut h, json!({"type": "teleport", "requestId": "u1"}));
    assert_error(&r, "unknown_type");
    assert_eq!(r["message"], "Unknown message type: teleport");
    assert_eq!(r["requestId"], "u1");
    let r = one(&mut h, json!({"requestId": 2}));
    assert_error(&r, "unknown_type");
    assert_eq!(r["message"], "Missing message type");
    assert_eq!(r["requestId"], 2, "echoed as sent: a number stays a number");
    let r = one(&mut h, json!({"type": null}));
    assert_error(&r, "unknown_type");
    assert_eq!(r["message"], "The message type must be a string");
    // Type names are case-sensitive; server-only types are not client types.
    for ty in ["Heartbeat", "welcome", "error", "publish_response"] {
        assert_error(&one(&mut h, json!({"type": ty})), "unknown_type");
    }
}

#[test]
fn code_feature_disabled() {
    let mut h = ProtocolHarness::new(Config {
        enable_request_response: false,
        enable_rpc: false,
        enable_pub_sub: false,
        enable_streaming: false,
        ..Config::default()
    });
    for (msg, feature) in [
        (
            json!({"type": "request", "requestId": "f1", "endpoint": "echo"}),
            "request-response",
        ),
        (
            json!({"type": "rpc_call", "requestId": "f1", "method": "m"}),
            "rpc",
        ),
        (
            json!({"type": "subscribe", "requestId": "f1", "topic": "a"}),
            "pub-sub",
        ),
        (
            json!({"type": "unsubscribe", "requestId": "f1", "topic": "a"}),
            "pub-sub",
        ),
        (
            json!({"type": "publish", "requestId": "f1", "topic": "a"}),
            "pub-sub",
        ),
        (
            json!({"type": "stream_start", "requestId": "f1", "streamId": "s"}),
            "streaming",
        ),
        (
            json!({"type": "stream_data", "requestId": "f1", "streamId": "s", "data": 1}),
            "streaming",
        ),
        (
            json!({"type": "stream_end", "requestId": "f1", "streamId": "s"}),
            "streaming",
        ),
    ] {
        let r = one(&mut h, msg.clone());
        assert_error(&r, "feature_disabled");
        assert_eq!(
            (r["feature"].as_str(), r["requestId"].as_str()),
            (Some(feature), Some("f1")),
            "{msg}"
        );
        assert_eq!(r["message"], format!("The {feature} feature is disabled"));
    }
    // Checked before the message's own fields.
    let r = one(&mut h, json!({"type": "publish"}));
    assert_eq!(
        (r["code"].as_str(), r["feature"].as_str()),
        (Some("feature_disabled"), Some("pub-sub"))
    );
    let r = one_bin(&mut h, &crate::protocol::stream::encode("s", 0, b"x"));
    assert_error(&r, "feature_disabled");
    assert_eq!(r["feature"], "streaming");
    // What belongs to no feature still works.
    assert_eq!(
        one(&mut h, json!({"type": "heartbeat"}))["type"],
        "heartbeat_response"
    );
    assert_eq!(
        one(&mut h, json!({"type": "data", "data": 1}))["success"],
        true
    );
}

#[test]
fn code_invalid_message() {
    let mut h = h();
    for text in ["[1]", "\"heartbeat\"", "42", "null", "true"] {
        let r = one_raw(&mut h, text);
        assert_error(&r, "invalid_message");
        assert_eq!(r["message"], "a message must be a JSON object", "{text}");
    }
    let r = one_raw(&mut h, r#"{"type":"heartbeat","n":1,"n":2}"#);
    assert_error(&r, "invalid_message");
    assert_eq!(r["message"], r#"duplicate key "n" in message"#);
    // Nested objects may repeat keys: only the top level is checked.
    let r = one_raw(&mut h, r#"{"type":"heartbeat","n":{"a":1,"a":2}}"#);
    assert_eq!(r["type"], "heartbeat_response");
    // A field error names the field and echoes the requestId as sent.
    let r = one(&mut h, json!({"type": "subscribe", "requestId": 5}));
    assert_error(&r, "invalid_message");
    assert_eq!(r["field"], "topic");
    assert_eq!(r["requestId"], 5);
    assert!(
        r["message"].as_str().unwrap().starts_with("subscribe: "),
        "{r}"
    );
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "nope", "name": "x", "requestId": "k"}),
    );
    assert_eq!(
        (
            r["code"].as_str(),
            r["field"].as_str(),
            r["requestId"].as_str()
        ),
        (Some("invalid_message"), Some("kind"), Some("k"))
    );
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": "x", "success": "yes"}),
    );
    assert_error(&r, "invalid_message");
    assert_eq!(
        (r["field"].as_str(), r["requestId"].as_str()),
        (Some("success"), Some("x"))
    );
    let r = one(&mut h, json!({"type": "rpc_response", "success": true}));
    assert_error(&r, "invalid_message");
    assert_eq!(r["field"], "requestId");
    assert!(!h.closing());
}

#[test]
fn code_unauthenticated() {
    let mut h = ProtocolHarness::new(Config {
        enable_authentication: true,
        auth_token: Some("t".into()),
        ..Config::default()
    });
    for msg in [
        json!({"type": "data", "requestId": 9, "data": 1}),
        json!({"type": "sensor_data", "requestId": 9, "t": 1}),
        json!({"type": "request", "requestId": 9, "endpoint": "echo"}),
        json!({"type": "rpc_call", "requestId": 9, "method": "m"}),
        json!({"type": "response", "requestId": 9}),
        json!({"type": "register", "requestId": 9, "kind": "method", "name": "m"}),
        json!({"type": "publish", "requestId": 9, "topic": "a"}),
        json!({"type": "stream_start", "requestId": 9, "streamId": "s"}),
        // Checked before the message's own fields are read.
        json!({"type": "stream_data", "requestId": 9}),
    ] {
        let r = one(&mut h, msg.clone());
        assert_error(&r, "unauthenticated");
        assert_eq!(r["requestId"], 9, "{msg}");
        assert_eq!(r["message"], "Authentication required");
    }
    let r = one_bin(&mut h, &crate::protocol::stream::encode("s", 0, b"x"));
    assert_error(&r, "unauthenticated");
    assert!(
        !h.closing(),
        "refusals before auth do not close by themselves"
    );
    one(&mut h, json!({"type": "auth", "token": "t"}));
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": 9, "endpoint": "echo"}),
    );
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("response"), Some(true))
    );
}

#[test]
fn code_unknown_stream() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "stream_data", "streamId": "nope", "data": "AA==", "requestId": "s1"}),
    );
    assert_error(&r, "unknown_stream");
    assert_eq!(
        (r["streamId"].as_str(), r["requestId"].as_str()),
        (Some("nope"), Some("s1"))
    );
    let r = one(
        &mut h,
        json!({"type": "stream_end", "streamId": "nope", "requestId": 4}),
    );
    assert_error(&r, "unknown_stream");
    assert_eq!(
        (r["streamId"].as_str(), r["requestId"].as_i64()),
        (Some("nope"), Some(4))
    );
    let r = one_bin(&mut h, &crate::protocol::stream::encode("ghost", 0, b"x"));
    assert_error(&r, "unknown_stream");
    assert_eq!(r["streamId"], "ghost");
    // A stream that has ended is unknown again.
    one(&mut h, json!({"type": "stream_start", "streamId": "s"}));
    one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
    let r = one(
        &mut h,
        json!({"type": "stream_data", "streamId": "s", "data": 1}),
    );
    assert_error(&r, "unknown_stream");
    assert_eq!(r["streamId"], "s");
    let r = one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
    assert_error(&r, "unknown_stream");
}

#[test]
fn code_stream_sequence() {
    use crate::protocol::stream::encode;
    let mut h = h();
    one(&mut h, json!({"type": "stream_start", "streamId": "s"}));
    // First one other than 0 or 1.
    let r = one(
        &mut h,
        json!({"type": "stream_data", "streamId": "s", "data": 1, "sequenceNumber": 2, "requestId": "q"}),
    );
    assert_error(&r, "stream_sequence");
    assert_eq!(
        (
            r["streamId"].as_str(),
            r["expected"].as_u64(),
            r["got"].as_u64(),
            r["requestId"].as_str()
        ),
        (Some("s"), Some(1), Some(2), Some("q"))
    );
    let r = one_raw(
        &mut h,
        r#"{"type":"stream_data","streamId":"s","data":1,"sequenceNumber":18446744073709551615}"#,
    );
    assert_error(&r, "stream_sequence");
    assert_eq!(r["got"].as_u64(), Some(u64::MAX));
    silent(
        &mut h,
        json!({"type": "stream_data", "streamId": "s", "data": "AAAA", "sequenceNumber": 0}),
    );
    // A repeat, then a gap (JSON and binary).
    let r = one(
        &mut h,
        json!({"type": "stream_data", "streamId": "s", "data": 1, "sequenceNumber": 0}),
    );
    assert_error(&r, "stream_sequence");
    assert_eq!(
        (r["expected"].as_u64(), r["got"].as_u64()),
        (Some(1), Some(0))
    );
    let r = one_bin(&mut h, &encode("s", 5, b"abc"));
    assert_error(&r, "stream_sequence");
    assert_eq!(
        (
            r["streamId"].as_str(),
            r["expected"].as_u64(),
            r["got"].as_u64()
        ),
        (Some("s"), Some(1), Some(5))
    );
    assert!(r.get("requestId").is_none());
    // Refused chunks are not counted and do not move the sequence.
    silent_bin(&mut h, &encode("s", 1, b"abc"));
    let r = one(&mut h, json!({"type": "stream_end", "streamId": "s"}));
    assert_eq!(
        (r["chunks"].as_u64(), r["bytes"].as_u64()),
        (Some(2), Some(6))
    );
}

#[test]
fn code_forbidden() {
    // register / unregister from a client that is not a service.
    let mut h = h();
    one(
        &mut h,
        json!({"type": "handshake", "clientType": "application"}),
    );
    let r = one(
        &mut h,
        json!({"type": "unregister", "kind": "method", "name": "m"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["code"].as_str()
        ),
        (Some("unregister_response"), Some(false), Some("forbidden"))
    );
    assert_eq!(
        (r["kind"].as_str(), r["name"].as_str()),
        (Some("method"), Some("m"))
    );
    assert_eq!(r["message"], "Only service clients may register handlers");
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "method", "name": "m"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["code"].as_str()
        ),
        (Some("register_response"), Some(false), Some("forbidden"))
    );
    // A handshake naming a type the credential does not allow.
    let mut h = ProtocolHarness::new(Config {
        enable_authentication: true,
        auth_tokens: vec![AuthToken::bound("svc-only", Some("service"))],
        ..Config::default()
    });
    assert_eq!(
        one(&mut h, json!({"type": "auth", "token": "svc-only"}))["success"],
        true
    );
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "microcontroller"}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["success"].as_bool(),
            r["code"].as_str()
        ),
        (Some("handshake_response"), Some(false), Some("forbidden"))
    );
    assert!(
        r["message"].as_str().unwrap().contains("microcontroller"),
        "{r}"
    );
    let r = one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    assert_eq!(
        (r["success"].as_bool(), r["clientType"].as_str()),
        (Some(true), Some("service"))
    );
}

#[test]
fn code_too_deep() {
    // Default bound 64; the message object is level 1.
    let mut h = h();
    assert_eq!(one_raw(&mut h, &nested(63))["type"], "heartbeat_response");
    let r = one_raw(&mut h, &nested(64));
    assert_error(&r, "too_deep");
    assert_eq!(
        (r["limit"].as_str(), r["max"].as_u64()),
        (Some("max_json_depth"), Some(64))
    );
    assert_eq!(
        r["message"],
        "JSON nested deeper than 64 levels (max_json_depth)"
    );
    // A configured bound, reached by objects as well as arrays.
    let mut h = ProtocolHarness::new(Config {
        max_json_depth: 3,
        ..Config::default()
    });
    assert_eq!(
        one_raw(&mut h, r#"{"type":"heartbeat","a":{"b":[1]}}"#)["type"],
        "heartbeat_response"
    );
    let r = one_raw(&mut h, r#"{"type":"heartbeat","a":{"b":{"c":{}}}}"#);
    assert_error(&r, "too_deep");
    assert_eq!(
        (r["limit"].as_str(), r["max"].as_u64()),
        (Some("max_json_depth"), Some(3))
    );
    assert!(!h.closing());
}

#[test]
fn code_limit_exceeded_subscriptions() {
    let mut h = ProtocolHarness::new(Config {
        max_subscriptions_per_connection: 2,
        ..Config::default()
    });
    one(&mut h, json!({"type": "subscribe", "topic": "a"}));
    one(&mut h, json!({"type": "subscribe", "topic": "b.>"}));
    let r = one(
        &mut h,
        json!({"type": "subscribe", "topic": "c", "requestId": "l1"}),
    );
    assert_error(&r, "limit_exceeded");
    assert_eq!(
        (
            r["limit"].as_str(),
            r["max"].as_u64(),
            r["topic"].as_str(),
            r["requestId"].as_str()
        ),
        (
            Some("max_subscriptions_per_connection"),
            Some(2),
            Some("c"),
            Some("l1")
        )
    );
    // A held pattern is not a new one; freeing one makes room.
    assert_eq!(
        one(&mut h, json!({"type": "subscribe", "topic": "b.>"}))["success"],
        true
    );
    one(&mut h, json!({"type": "unsubscribe", "topic": "a"}));
    assert_eq!(
        one(&mut h, json!({"type": "subscribe", "topic": "c"}))["success"],
        true
    );
    assert!(!h.closing(), "the connection stays open");
}

#[test]
fn code_limit_exceeded_streams() {
    let mut h = ProtocolHarness::new(Config {
        max_streams_per_connection: 1,
        ..Config::default()
    });
    assert_eq!(
        one(&mut h, json!({"type": "stream_start", "streamId": "a"}))["success"],
        true
    );
    let r = one(
        &mut h,
        json!({"type": "stream_start", "streamId": "b", "requestId": 1}),
    );
    assert_error(&r, "limit_exceeded");
    assert_eq!(
        (
            r["limit"].as_str(),
            r["max"].as_u64(),
            r["streamId"].as_str(),
            r["requestId"].as_i64()
        ),
        (
            Some("max_streams_per_connection"),
            Some(1),
            Some("b"),
            Some(1)
        )
    );
    // A duplicate of the open stream is "already active", not over the limit.
    let r = one(&mut h, json!({"type": "stream_start", "streamId": "a"}));
    assert_eq!(
        (r["type"].as_str(), r["success"].as_bool()),
        (Some("stream_start_response"), Some(false))
    );
    one(&mut h, json!({"type": "stream_end", "streamId": "a"}));
    assert_eq!(
        one(&mut h, json!({"type": "stream_start", "streamId": "b"}))["success"],
        true
    );
}

#[test]
fn code_limit_exceeded_field_lengths() {
    let mut h = ProtocolHarness::new(Config {
        max_id_length: 8,
        max_topic_length: 10,
        max_name_length: 8,
        client_types: vec!["iot".into(), "application".into()],
        ..Config::default()
    });
    let cases = [
        (
            json!({"type": "request", "requestId": "123456789", "endpoint": "echo"}),
            "requestId",
            "max_id_length",
            8,
        ),
        (
            json!({"type": "request", "requestId": 123_456_789, "endpoint": "echo"}),
            "requestId",
            "max_id_length",
            8,
        ),
        (
            json!({"type": "data", "data": 1, "messageId": "123456789"}),
            "messageId",
            "max_id_length",
            8,
        ),
        (
            json!({"type": "handshake", "clientType": "iot", "deviceId": "123456789"}),
            "deviceId",
            "max_id_length",
            8,
        ),
        // clientType is bounded like the other names.
        (
            json!({"type": "handshake", "clientType": "application"}),
            "clientType",
            "max_name_length",
            8,
        ),
        (
            json!({"type": "stream_start", "streamId": "123456789"}),
            "streamId",
            "max_id_length",
            8,
        ),
        (
            json!({"type": "subscribe", "topic": "a.b.c.d.e.f"}),
            "topic",
            "max_topic_length",
            10,
        ),
        (
            json!({"type": "publish", "topic": "abcdefghijk"}),
            "topic",
            "max_topic_length",
            10,
        ),
        (
            json!({"type": "request", "requestId": "r", "endpoint": "echo.xyzw"}),
            "endpoint",
            "max_name_length",
            8,
        ),
        (
            json!({"type": "rpc_call", "requestId": "r", "method": "abcdefghi"}),
            "method",
            "max_name_length",
            8,
        ),
        (
            json!({"type": "data", "data": 1, "dataType": "abcdefghi"}),
            "dataType",
            "max_name_length",
            8,
        ),
        (
            json!({"type": "data", "data": 1, "table": "abcdefghi"}),
            "table",
            "max_name_length",
            8,
        ),
        (
            json!({"type": "stream_start", "streamId": "s", "streamType": "abcdefghi"}),
            "streamType",
            "max_name_length",
            8,
        ),
    ];
    for (msg, field, limit, max) in cases {
        let r = one(&mut h, msg.clone());
        assert_error(&r, "limit_exceeded");
        assert_eq!(
            (r["field"].as_str(), r["limit"].as_str(), r["max"].as_u64()),
            (Some(field), Some(limit), Some(max)),
            "{msg}"
        );
    }
    // At the bound exactly: accepted.
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "12345678", "endpoint": "echo"}),
    );
    assert_eq!(
        (r["type"].as_str(), r["requestId"].as_str()),
        (Some("response"), Some("12345678"))
    );
    let r = one(&mut h, json!({"type": "subscribe", "topic": "a.b.c.d.e"}));
    assert_eq!(r["success"], true);
    // The refusal echoes a requestId that fits.
    let r = one(
        &mut h,
        json!({"type": "rpc_call", "requestId": "ok", "method": "abcdefghi"}),
    );
    assert_eq!(r["requestId"], "ok");
    // Only service clients register; the name bound applies there too.
    let mut h = ProtocolHarness::new(Config {
        max_name_length: 8,
        ..Config::default()
    });
    one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    let r = one(
        &mut h,
        json!({"type": "register", "kind": "endpoint", "name": "abcdefghi"}),
    );
    assert_error(&r, "limit_exceeded");
    assert_eq!(
        (r["field"].as_str(), r["limit"].as_str()),
        (Some("name"), Some("max_name_length"))
    );
}

#[test]
fn code_limit_exceeded_pending_requests() {
    let mut h = ProtocolHarness::new(Config {
        max_pending_requests: 1,
        ..Config::default()
    });
    one(
        &mut h,
        json!({"type": "handshake", "clientType": "service"}),
    );
    one(
        &mut h,
        json!({"type": "register", "kind": "endpoint", "name": "slow"}),
    );
    // The first call waits on the registrant (ourselves): one pending.
    let fwd = one(
        &mut h,
        json!({"type": "request", "requestId": "a", "endpoint": "slow"}),
    );
    assert_eq!(fwd["type"], "request");
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "b", "endpoint": "slow"}),
    );
    assert_error(&r, "limit_exceeded");
    assert_eq!(
        (
            r["limit"].as_str(),
            r["max"].as_u64(),
            r["requestId"].as_str()
        ),
        (Some("max_pending_requests"), Some(1), Some("b"))
    );
    // Answering it frees the slot.
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": fwd["requestId"], "data": "done"}),
    );
    assert_eq!(
        (r["requestId"].as_str(), r["data"].as_str()),
        (Some("a"), Some("done"))
    );
    let r = one(
        &mut h,
        json!({"type": "request", "requestId": "c", "endpoint": "slow"}),
    );
    assert_eq!(r["type"], "request");
}

#[test]
fn code_unknown_request() {
    let mut h = h();
    let r = one(
        &mut h,
        json!({"type": "rpc_response", "requestId": 77, "success": true, "data": 1}),
    );
    assert_error(&r, "unknown_request");
    assert_eq!(r["requestId"], 77, "echoed as sent");
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": "srv-0-1-0000000000000000", "success": false, "error": "x"}),
    );
    assert_error(&r, "unknown_request");
    assert_eq!(r["requestId"], "srv-0-1-0000000000000000");
}

#[test]
fn calls_routed_request_id_is_unguessable() {
    // A routed call's id is unguessable: one hex digit off is refused.
    let mut h = service();
    one(
        &mut h,
        json!({"type": "register", "kind": "endpoint", "name": "e"}),
    );
    let fwd = one(
        &mut h,
        json!({"type": "request", "requestId": "r", "endpoint": "e"}),
    );
    let srv = fwd["requestId"].as_str().unwrap().to_owned();
    let guess = format!("{}0", &srv[..srv.len() - 1]);
    let guess = if guess == srv {
        format!("{}1", &srv[..srv.len() - 1])
    } else {
        guess
    };
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": guess, "data": 1}),
    );
    assert_error(&r, "unknown_request");
    assert_eq!(r["requestId"], guess.as_str());
    // The real id still works after the failed guess.
    let r = one(
        &mut h,
        json!({"type": "response", "requestId": srv, "data": 2}),
    );
    assert_eq!(
        (
            r["type"].as_str(),
            r["requestId"].as_str(),
            r["data"].as_i64()
        ),
        (Some("response"), Some("r"), Some(2))
    );
}
