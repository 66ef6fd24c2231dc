//! Device identity and permissions over real sockets (issue 11): hashed
//! token entries and JWTs through the `auth` message, `Authorization:
//! Bearer` and `?token=`; `deviceId` in replies and status; permission
//! checks (`forbidden` with `requestId`); expiry (`token_expired`, 4001)
//! and `refresh`; `send_to_device`; the duplicate-device policy; key files
//! reloaded while connections stay up.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wshandler::config::{AuthToken, DuplicateDevice, JwtConfig, KeyFile, PermSpec, TokenEntry};
use wshandler::{ApiError, Config};

use crate::both_drivers;
use crate::client::{proto_config, Client};
use crate::util::{TestServer, WAIT};

const SECRET: &str = "an-hmac-secret-for-tests-32-bytes!!";

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jwt")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn rs(key: &str, claims: Value) -> String {
    let pem = std::fs::read(data(key)).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// Authentication on; a hashed token for pump-7 limited to its own topics,
/// and JWTs under `SECRET`.
fn auth_config(driver: wshandler::IoDriver) -> Config {
    let mut cfg = proto_config(driver);
    cfg.enable_authentication = true;
    cfg.auth_tokens = vec![AuthToken::Entry(Box::new(TokenEntry {
        sha256: Some(wshandler::auth::sha256_hex(b"pump-7-secret")),
        device_id: Some("pump-7".into()),
        permissions: Some(PermSpec {
            subscribe: vec!["devices.{device}.>".into(), "fleet.alerts".into()],
            publish: vec!["devices.{device}.>".into()],
            ingest: vec!["sensor".into()],
            call: vec!["time".into()],
            ..PermSpec::default()
        }),
        ..TokenEntry::default()
    }))];
    cfg.jwt = JwtConfig {
        hmac_secret: Some(SECRET.into()),
        leeway: Duration::ZERO,
        expired_grace: Duration::from_secs(1),
        ..JwtConfig::default()
    };
    cfg
}

async fn authed(addr: std::net::SocketAddr, token: &str) -> Client {
    let mut c = Client::connect(addr).await;
    let r = c.call(json!({"type": "auth", "token": token})).await;
    assert_eq!(r["success"], true, "{r}");
    c
}

both_drivers!(hashed_token_identity_and_permissions, |driver| {
    let srv = TestServer::start(auth_config(driver)).await;
    let events = srv.server.subscribe_events();
    let mut c = Client::connect(srv.addr).await;
    let r = c
        .call(json!({"type": "auth", "token": "pump-7-secret"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["deviceId"], "pump-7");
    // Events carry the device.
    let e = crate::util::wait_event(&events, |e| {
        matches!(e, wshandler::Event::ClientAuthenticated { .. })
    })
    .await;
    assert!(
        matches!(&e, wshandler::Event::ClientAuthenticated { device_id: Some(d), .. } if d == "pump-7"),
        "{e:?}"
    );
    // The hash itself is not the token.
    let mut x = Client::connect(srv.addr).await;
    let h = wshandler::auth::sha256_hex(b"pump-7-secret");
    assert_eq!(
        x.call(json!({"type": "auth", "token": h})).await["success"],
        false
    );

    // Allowed: own topics, listed data types and endpoints.
    let r = c
        .call(json!({"type": "subscribe", "topic": "devices.pump-7.>"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = c
        .call(json!({"type": "publish", "topic": "devices.pump-7.temp", "data": 1}))
        .await;
    assert_eq!(r["type"], "publish_response", "{r}");
    // Refused, with the operation named and requestId echoed.
    let r = c
        .call(json!({"type": "subscribe", "topic": ">", "requestId": "r1"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    assert_eq!(r["requestId"], "r1");
    assert_eq!(r["operation"], "subscribe");
    assert!(r["message"].as_str().unwrap().contains('>'), "{r}");
    let r = c
        .call(json!({"type": "publish", "topic": "devices.pump-8.temp", "data": 1}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = c
        .call(json!({"type": "data", "dataType": "camera", "data": {}}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    assert_eq!(r["operation"], "ingest");
    let r = c
        .call(json!({"type": "request", "endpoint": "admin", "requestId": 7}))
        .await;
    assert_eq!(
        (r["code"].as_str(), &r["requestId"]),
        (Some("forbidden"), &json!(7)),
        "{r}"
    );
    let r = c
        .call(json!({"type": "register", "kind": "endpoint", "name": "time"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");

    // A handshake may not claim another device.
    let r = c
        .call(json!({"type": "handshake", "clientType": "microcontroller", "deviceId": "pump-8"}))
        .await;
    assert_eq!(
        (r["success"].as_bool(), r["code"].as_str()),
        (Some(false), Some("forbidden")),
        "{r}"
    );
    let r = c
        .call(json!({"type": "handshake", "clientType": "microcontroller", "deviceId": "pump-7"}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    // get_status shows the device.
    let st = srv.server.get_status().await.unwrap();
    let st = serde_json::to_value(&st).unwrap();
    let clients = st["clients"].as_array().unwrap();
    let me = clients
        .iter()
        .find(|k| k["id"] == c.id.as_str())
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(me["deviceId"], "pump-7", "{me}");
    srv.stop().await;
});

both_drivers!(jwt_upgrade_credentials, |driver| {
    let mut cfg = auth_config(driver);
    cfg.client_types.push("dashboard".into());
    let srv = TestServer::start(cfg).await;
    let tok = hs(json!({"sub": "dash-1", "exp": now() + 600, "ctype": "dashboard"}));

    // Bearer header.
    let mut req = format!("ws://{}/", srv.addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {tok}").parse().unwrap());
    let mut c = Client::connect_req(req).await;
    assert_eq!(c.welcome["authRequired"], false, "{}", c.welcome);
    assert_eq!(c.welcome["authenticated"], true);
    assert_eq!(c.welcome["deviceId"], "dash-1");
    assert!(c.welcome["expiresIn"].as_u64().unwrap() > 500);
    // Authenticated: no auth message needed; ctype is its client type.
    assert_eq!(
        c.call(json!({"type": "subscribe", "topic": "a.>"})).await["success"],
        true
    );
    let r = c
        .call(json!({"type": "handshake", "clientType": "service"}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");

    // ?token= (the browser path).
    let url = format!("ws://{}/?token={tok}", srv.addr);
    let c2 = Client::connect_req(url).await;
    assert_eq!(c2.welcome["authenticated"], true);
    assert_eq!(c2.welcome["deviceId"], "dash-1");

    // A bad credential at the upgrade: told why, closed 4003.
    let bad = rs("rsa-other.key", json!({"sub": "x", "exp": now() + 600}));
    let mut b = Client::connect_req(format!("ws://{}/?token={bad}", srv.addr)).await;
    assert_eq!(b.welcome["authRequired"], true);
    let e = b.recv().await;
    assert_eq!(e["code"], "auth_failed", "{e}");
    assert_eq!(b.closed().await, Some(4003));
    srv.stop().await;

    // allow_query_token = false: the query is ignored, auth still required.
    let mut cfg = auth_config(driver);
    cfg.allow_query_token = false;
    let srv = TestServer::start(cfg).await;
    let tok = hs(json!({"sub": "d", "exp": now() + 600}));
    let mut c = Client::connect_req(format!("ws://{}/?token={tok}", srv.addr)).await;
    assert_eq!(c.welcome["authRequired"], true);
    assert!(c.welcome.get("authenticated").is_none());
    assert_eq!(
        c.call(json!({"type": "subscribe", "topic": "a"})).await["code"],
        "unauthenticated"
    );
    srv.stop().await;
});

both_drivers!(
    expiry_closes_4001_and_refresh_keeps_the_connection,
    |driver| {
        let srv = TestServer::start(auth_config(driver)).await;
        // No refresh: token_expired, then 4001 after the grace (1 s).
        let mut c = authed(srv.addr, &hs(json!({"sub": "d1", "exp": now() + 1}))).await;
        let e = c.recv().await;
        assert_eq!(e["code"], "token_expired", "{e}");
        assert_eq!(e["closeIn"], 1);
        assert_eq!(c.closed().await, Some(4001));

        // Refresh before expiry: no error, still served. The refreshed token
        // narrows permissions: a subscription it no longer allows is removed.
        let mut c = authed(srv.addr, &hs(json!({"sub": "d2", "exp": now() + 2}))).await;
        for t in ["a.b", "keep.x"] {
            assert_eq!(
                c.call(json!({"type": "subscribe", "topic": t})).await["success"],
                true
            );
        }
        let fresh = hs(json!({"sub": "d2", "exp": now() + 600,
                          "perm": {"subscribe": ["keep.>"], "publish": ["keep.>"]}}));
        let r = c.call(json!({"type": "refresh", "token": fresh})).await;
        assert_eq!(r["type"], "unsubscribed", "{r}");
        assert_eq!(
            (r["topic"].as_str(), r["reason"].as_str()),
            (Some("a.b"), Some("permission"))
        );
        let r = c.recv().await;
        assert_eq!(r["type"], "refresh_response", "{r}");
        assert_eq!(r["success"], true);
        assert!(r["expiresIn"].as_u64().unwrap() > 500);
        // Past the old expiry and its grace: nothing arrives.
        assert!(c.quiet_for(3500).await);
        let r = c
            .call(json!({"type": "publish", "topic": "keep.x", "data": 1}))
            .await;
        assert_eq!(r["success"], true, "{r}");

        // A refresh for another device is refused; an invalid one closes 4003.
        let other = hs(json!({"sub": "d3", "exp": now() + 600}));
        let r = c.call(json!({"type": "refresh", "token": other})).await;
        assert_eq!(
            (r["success"].as_bool(), r["code"].as_str()),
            (Some(false), Some("forbidden")),
            "{r}"
        );
        let r = c.call(json!({"type": "refresh", "token": "garbage"})).await;
        assert_eq!(r["code"], "auth_failed", "{r}");
        assert_eq!(c.closed().await, Some(4003));
        srv.stop().await;
    }
);

both_drivers!(send_to_device_and_duplicate_policy, |driver| {
    let srv = TestServer::start(auth_config(driver)).await;
    let tok = hs(json!({"sub": "multi", "exp": now() + 600}));
    // Connections of one device on both shards.
    // (The kernel spreads connections over the shards' listeners: keep
    // connecting until both shards hold one, at most 64 tries.)
    let mut conns = Vec::new();
    let mut shards = std::collections::HashSet::new();
    while conns.len() < 4 || shards.len() < 2 {
        assert!(conns.len() < 64, "all connections on one shard");
        let c = authed(srv.addr, &tok).await;
        shards.insert(c.shard());
        conns.push(c);
    }
    let total = conns.len();
    let n = srv
        .server
        .send_to_device("multi", &json!({"type": "note", "n": 1}))
        .await
        .unwrap();
    assert_eq!(n, total);
    for c in &mut conns {
        assert_eq!(c.recv().await, json!({"type": "note", "n": 1}));
    }
    assert_eq!(
        srv.server.send_to_device("nobody", &json!({})).await,
        Err(ApiError::UnknownDevice("nobody".into()))
    );
    // Closed connections leave the index.
    let mut last = conns.pop().unwrap();
    drop(conns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = srv
            .server
            .send_to_device("multi", &json!({"n": 2}))
            .await
            .unwrap();
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while last.recv().await["n"] != 2 {}
    srv.stop().await;

    // replace: a new connection of the device closes the older (4002).
    let mut cfg = auth_config(driver);
    cfg.on_duplicate_device = DuplicateDevice::Replace;
    let srv = TestServer::start(cfg).await;
    let mut first = authed(srv.addr, &tok).await;
    let mut second = Client::connect(srv.addr).await;
    second.send(json!({"type": "auth", "token": tok})).await;
    assert_eq!(first.closed().await, Some(4002));
    assert_eq!(second.recv().await["success"], true);
    assert_eq!(
        second.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});

both_drivers!(key_file_rotation_keeps_connections, |driver| {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("issuer.pub");
    std::fs::copy(data("rsa.pub"), &key).unwrap();
    let mut cfg = auth_config(driver);
    cfg.jwt.public_key_files = vec![KeyFile::Path(key.clone())];
    cfg.auth_watch_interval = Duration::from_millis(100);
    let srv = TestServer::start(cfg).await;
    let old = rs("rsa.key", json!({"sub": "r", "exp": now() + 600}));
    let new = rs("rsa-other.key", json!({"sub": "r", "exp": now() + 600}));
    let mut kept = authed(srv.addr, &old).await;

    // Rotate: write the new key (a bad file first: the old key stays).
    std::fs::write(&key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    authed(srv.addr, &old).await;
    std::fs::copy(data("rsa-other.pub"), &key).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Client::connect(srv.addr).await;
        if c.call(json!({"type": "auth", "token": new})).await["success"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new key never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.call(json!({"type": "auth", "token": old})).await["success"],
        false
    );
    // The connection made with the old key is still up.
    assert_eq!(
        kept.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});
