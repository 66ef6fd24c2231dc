//! TLS (`wss://`, issue 11) over real sockets on both drivers: a CA and
//! certificates made in the test (rcgen), a rustls client (tokio-rustls)
//! under the usual protocol client. The handshake, the protocol over TLS,
//! mutual TLS and the device identity, reload without dropping
//! connections, version floors, and plain beside TLS on two ports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshandler::config::{TlsIdentity, TlsVersion};
use wshandler::{Config, WebSocketHandler};

use crate::both_drivers;
use crate::client::*;
use crate::util::*;

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as DER and as PEM.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate signed by this CA with subject `cn` and DNS names
    /// `sans`, for a server (`client` false) or a client.
    pub fn issue(&self, cn: &str, sans: &[&str], client: bool) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` / 127.0.0.1.
    pub fn server_cert(&self, cn: &str) -> Leaf {
        self.issue(cn, &["localhost", "127.0.0.1"], false)
    }
}

/// A directory holding the server's PEM files.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new(ca: &Ca, server: &Leaf) -> Files {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.install(server);
        std::fs::write(f.ca(), ca.pem()).unwrap();
        f
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Replace the certificate and key (each written to a temporary file
    /// and renamed over the old one, as a deployment would).
    pub fn install(&self, leaf: &Leaf) {
        replace(&self.key(), &leaf.key_pem);
        replace(&self.cert(), &leaf.cert_pem);
    }
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A protocol-mode config serving TLS with `files`.
pub fn tls_config(driver: wshandler::IoDriver, files: &Files) -> Config {
    let mut c = proto_config(driver);
    c.tls_cert = Some(files.cert());
    c.tls_key = Some(files.key());
    c
}

/// A rustls client trusting `ca`, presenting `auth` if given, speaking
/// only `versions` (both 1.2 and 1.3 if empty).
pub fn client_tls(
    ca: &CertificateDer<'static>,
    auth: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = if versions.is_empty() {
        rustls::ALL_VERSIONS
    } else {
        versions
    };
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match auth {
        Some(l) => b
            .with_client_auth_cert(vec![l.der.clone()], l.key.clone_key())
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A wss connection: the TLS handshake, the upgrade, the `welcome`; and
/// the server certificate it was shown.
pub async fn connect_wss(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<(Client, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let connect = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp);
    let tls = tokio::time::timeout(WAIT, connect)
        .await
        .expect("TLS handshake hangs")
        .map_err(|e| format!("tls: {e}"))?;
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
    let seen = conn.peer_certificates().unwrap()[0].clone().into_owned();
    let url = format!("wss://localhost:{}/", addr.port());
    let c = tokio::time::timeout(WAIT, Client::over(Box::new(tls), &url))
        .await
        .expect("upgrade hangs")
        .map_err(|e| format!("ws: {e}"))?;
    Ok((c, seen))
}

both_drivers!(wss_full_protocol_flow, |driver| {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let data = tempfile::tempdir().unwrap();
    let mut cfg = tls_config(driver, &files);
    cfg.enable_authentication = true;
    cfg.auth_token = Some("s3cret".into());
    cfg.persist = true;
    cfg.durability = wshandler::config::Durability::Wal;
    cfg.data_dir = data.path().to_owned();
    let srv = TestServer::start(cfg).await;
    assert_eq!(srv.server.tls_addr(), Some(srv.addr), "port is TLS only");
    let tls = client_tls(&ca.der(), None, &[]);

    let (mut sub, _) = connect_wss(srv.addr, tls.clone()).await.unwrap();
    let (mut dev, _) = connect_wss(srv.addr, tls.clone()).await.unwrap();
    assert_eq!(sub.welcome["authRequired"], true);
    for c in [&mut sub, &mut dev] {
        let r = c
            .call(json!({"type": "handshake", "clientType": "application", "version": "1.0.0"}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(
            c.call(json!({"type": "auth", "token": "s3cret"})).await["success"],
            true
        );
    }
    let r = sub
        .call(json!({"type": "subscribe", "topic": "sensors.>"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    for i in 0..50 {
        dev.send(json!({"type": "publish", "topic": "sensors.a", "data": {"seq": i}}))
            .await;
    }
    for i in 0..50 {
        assert_eq!(dev.recv().await["type"], "publish_response");
        let m = sub.recv().await;
        assert_eq!(
            (m["topic"].as_str(), &m["data"]["seq"]),
            (Some("sensors.a"), &json!(i))
        );
    }
    // Data, acknowledged once durable (with its insertId).
    for i in 0..20 {
        let r = dev
            .call(json!({"type": "data", "dataType": "sensor", "data": {"t": i}}))
            .await;
        assert_eq!(r["type"], "data_response", "{r}");
        assert_eq!(r["success"], true, "{r}");
        assert!(r["insertId"].is_u64(), "{r}");
    }
    // A message larger than a TLS record (16 KiB) and than rustls's
    // buffer (64 KiB), both ways.
    let big = "x".repeat(300_000);
    let r = dev
        .call(json!({"type": "publish", "topic": "sensors.big", "data": big}))
        .await;
    assert_eq!(r["success"], true);
    assert_eq!(
        sub.recv().await["data"].as_str().map(str::len),
        Some(300_000)
    );
    // A plain ws:// client on the TLS port gets no upgrade.
    let mut raw = TcpStream::connect(srv.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut back))
        .await
        .expect("the server closes a plain client on a TLS port");
    assert!(
        !back.starts_with(b"HTTP/1.1"),
        "plain HTTP answered on the TLS port"
    );
    srv.stop().await;
});

both_drivers!(plain_and_tls_on_two_ports, |driver| {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let mut cfg = tls_config(driver, &files);
    cfg.tls_port = Some(0);
    let srv = TestServer::start(cfg).await;
    let tls_addr = srv.server.tls_addr().unwrap();
    assert_ne!(tls_addr.port(), srv.addr.port());
    let tls = client_tls(&ca.der(), None, &[]);

    let mut plain = Client::connect(srv.addr).await;
    let (mut secure, _) = connect_wss(tls_addr, tls.clone()).await.unwrap();
    for c in [&mut plain, &mut secure] {
        assert_eq!(
            c.call(json!({"type": "heartbeat"})).await["type"],
            "heartbeat_response"
        );
    }
    // TLS on the plain port fails; /health stays plain.
    assert!(connect_wss(srv.addr, tls).await.is_err());
    let mut h = TcpStream::connect(srv.addr).await.unwrap();
    h.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, h.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    let back = String::from_utf8_lossy(&back);
    assert!(back.starts_with("HTTP/1.1 200"), "{back}");
    assert!(back.contains("\"connections\":2"), "{back}");
    srv.stop().await;
});

both_drivers!(mtls_certificate_is_the_device_identity, |driver| {
    let ca = Ca::new("wsh test CA");
    let devices = Ca::new("devices CA");
    let other = Ca::new("some other CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    std::fs::write(files.ca(), devices.pem()).unwrap();
    let mut cfg = tls_config(driver, &files);
    cfg.tls_client_ca = Some(files.ca());
    cfg.enable_authentication = true;
    cfg.auth_token = Some("s3cret".into());
    let srv = TestServer::start(cfg).await;

    // Signed by the devices CA: authenticated as its CN, no token needed.
    let good = devices.issue("device-42", &["dev42.devices.example"], true);
    let (mut c, _) = connect_wss(srv.addr, client_tls(&ca.der(), Some(&good), &[]))
        .await
        .unwrap();
    let w = &c.welcome;
    assert_eq!(
        (&w["authRequired"], &w["authenticated"], &w["deviceId"]),
        (&json!(false), &json!(true), &json!("device-42")),
        "{w}"
    );
    let r = c
        .call(json!({"type": "data", "dataType": "sensor", "data": {"t": 1}}))
        .await;
    assert_eq!(r["success"], true, "authenticated by its certificate: {r}");
    let status = srv.server.get_status().await.unwrap();
    let me = status.clients.iter().find(|x| x.id == c.id).unwrap();
    assert_eq!(me.device_id.as_deref(), Some("device-42"));
    assert!(me.authenticated);

    // A certificate from another CA, and none at all: refused in the TLS
    // handshake (the upgrade never happens).
    let wrong = other.issue("device-42", &[], true);
    let err = connect_wss(srv.addr, client_tls(&ca.der(), Some(&wrong), &[]))
        .await
        .err()
        .expect("a certificate from the wrong CA is refused");
    assert!(
        err.starts_with("tls") || err.contains("alert") || err.contains("Tls"),
        "{err}"
    );
    let err = connect_wss(srv.addr, client_tls(&ca.der(), None, &[]))
        .await
        .err()
        .expect("no client certificate is refused");
    assert!(
        err.starts_with("tls") || err.contains("alert") || err.contains("Tls"),
        "{err}"
    );
    // The good client is still there.
    assert_eq!(
        c.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});

both_drivers!(mtls_identity_from_san, |driver| {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let mut cfg = tls_config(driver, &files);
    cfg.tls_client_ca = Some(files.ca());
    cfg.tls_identity = TlsIdentity::San;
    let srv = TestServer::start(cfg).await;
    let leaf = ca.issue(
        "ignored-cn",
        &["dev7.devices.example", "second.example"],
        true,
    );
    let (mut c, _) = connect_wss(srv.addr, client_tls(&ca.der(), Some(&leaf), &[]))
        .await
        .unwrap();
    let status = srv.server.get_status().await.unwrap();
    let me = status.clients.iter().find(|x| x.id == c.id).unwrap();
    assert_eq!(me.device_id.as_deref(), Some("dev7.devices.example"));
    // Authentication is off here, yet the certificate's device is known
    // and reachable by its identity.
    assert_eq!(
        c.welcome["deviceId"], "dev7.devices.example",
        "{}",
        c.welcome
    );
    assert_eq!(
        srv.server
            .send_to_device("dev7.devices.example", &json!({"n": 1}))
            .await,
        Ok(1)
    );
    assert_eq!(c.recv().await, json!({"n": 1}));
    srv.stop().await;
});

both_drivers!(
    reload_serves_new_certificate_and_keeps_old_connections,
    |driver| {
        let ca = Ca::new("wsh test CA");
        let first = ca.server_cert("first");
        let files = Files::new(&ca, &first);
        let mut cfg = tls_config(driver, &files);
        cfg.tls_watch_interval = Duration::ZERO; // reloads only when asked here
        let srv = TestServer::start(cfg).await;
        let tls = client_tls(&ca.der(), None, &[]);
        let (mut old, seen) = connect_wss(srv.addr, tls.clone()).await.unwrap();
        assert_eq!(seen, first.der);
        assert_eq!(
            old.call(json!({"type": "subscribe", "topic": "t"})).await["success"],
            true
        );

        // New files, then a reload (what SIGHUP does).
        let second = ca.server_cert("second");
        files.install(&second);
        assert!(srv.server.reload_tls().unwrap());
        let (mut new, seen) = connect_wss(srv.addr, tls.clone()).await.unwrap();
        assert_eq!(
            seen, second.der,
            "a new connection sees the new certificate"
        );
        // The old connection is up and works both ways.
        assert_eq!(
            new.call(json!({"type": "publish", "topic": "t", "data": 1}))
                .await["success"],
            true
        );
        assert_eq!(old.recv().await["data"], 1);
        assert_eq!(
            old.call(json!({"type": "heartbeat"})).await["type"],
            "heartbeat_response"
        );

        // A bad new file: the reload fails, naming it; the last good one stays.
        std::fs::write(files.cert(), "not a certificate").unwrap();
        let err = srv.server.reload_tls().unwrap_err().to_string();
        assert!(
            err.contains("tls_cert") && err.contains("server.pem"),
            "{err}"
        );
        // A key that is not the certificate's is refused too.
        let third = ca.server_cert("third");
        std::fs::write(files.cert(), &third.cert_pem).unwrap();
        std::fs::write(files.key(), &second.key_pem).unwrap();
        assert!(srv.server.reload_tls().is_err(), "mismatched key accepted");
        let (_c, seen) = connect_wss(srv.addr, tls.clone()).await.unwrap();
        assert_eq!(seen, second.der, "the previous certificate is still served");
        assert_eq!(
            old.call(json!({"type": "heartbeat"})).await["type"],
            "heartbeat_response"
        );
        srv.stop().await;
    }
);

both_drivers!(changed_files_are_picked_up_by_the_watcher, |driver| {
    let ca = Ca::new("wsh test CA");
    let first = ca.server_cert("first");
    let files = Files::new(&ca, &first);
    let mut cfg = tls_config(driver, &files);
    cfg.tls_watch_interval = Duration::from_millis(100);
    let srv = TestServer::start(cfg).await;
    let tls = client_tls(&ca.der(), None, &[]);
    let (mut old, _) = connect_wss(srv.addr, tls.clone()).await.unwrap();
    let second = ca.server_cert("second");
    files.install(&second);
    // Wait (bounded) for the watcher to notice: new connections until one
    // sees the new certificate.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_c, seen) = connect_wss(srv.addr, tls.clone()).await.unwrap();
        if seen == second.der {
            break;
        }
        assert_eq!(seen, first.der);
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        old.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    srv.stop().await;
});

both_drivers!(tls_min_version, |driver| {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let tls12 = client_tls(&ca.der(), None, &[&rustls::version::TLS12]);
    let tls13 = client_tls(&ca.der(), None, &[&rustls::version::TLS13]);
    // Default "1.2": both.
    let srv = TestServer::start(tls_config(driver, &files)).await;
    connect_wss(srv.addr, tls12.clone()).await.unwrap();
    connect_wss(srv.addr, tls13.clone()).await.unwrap();
    srv.stop().await;
    // "1.3": a 1.2-only client is refused.
    let mut cfg = tls_config(driver, &files);
    cfg.tls_min_version = TlsVersion::V1_3;
    let srv = TestServer::start(cfg).await;
    let err = connect_wss(srv.addr, tls12)
        .await
        .err()
        .expect("1.2 refused");
    assert!(err.starts_with("tls"), "{err}");
    connect_wss(srv.addr, tls13).await.unwrap();
    srv.stop().await;
});

both_drivers!(slow_tls_handshake_is_bounded, |driver| {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let mut cfg = tls_config(driver, &files);
    cfg.handshake_timeout = Duration::from_millis(300);
    let srv = TestServer::start(cfg).await;
    // Connects and says nothing: closed after handshake_timeout.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut b))
        .await
        .expect("a silent TLS client is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    srv.stop().await;
});

#[tokio::test]
async fn bad_tls_settings_fail_the_start_naming_the_file() {
    let ca = Ca::new("wsh test CA");
    let files = Files::new(&ca, &ca.server_cert("wsh server"));
    let start = |cfg: Config| async move {
        WebSocketHandler::new(cfg)
            .start()
            .await
            .expect_err("refused")
            .to_string()
    };
    let base = tls_config(wshandler::IoDriver::Epoll, &files);
    let err = start(Config {
        tls_key: None,
        ..base.clone()
    })
    .await;
    assert!(err.contains("tls_key"), "{err}");
    let err = start(Config {
        tls_key: Some(files.dir.path().join("missing.key")),
        ..base.clone()
    })
    .await;
    assert!(
        err.contains("tls_key") && err.contains("missing.key"),
        "{err}"
    );
    std::fs::write(
        files.dir.path().join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    let err = start(Config {
        tls_cert: Some(files.dir.path().join("junk.pem")),
        ..base.clone()
    })
    .await;
    assert!(
        err.contains("tls_cert") && err.contains("junk.pem"),
        "{err}"
    );
    let err = start(Config {
        tls_client_ca: Some(files.key()),
        ..base.clone()
    })
    .await;
    assert!(err.contains("tls_client_ca"), "{err}");
}
