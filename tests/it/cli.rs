//! The `wshandler` binary: serve, SIGTERM → graceful stop with exit 0,
//! configuration errors and a taken port reported clearly.

use crate::util::*;

#[tokio::test]
async fn serve_echo_then_sigterm_exits_zero() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for driver in ["uring", "epoll"] {
        let (mut child, addr) = spawn_listening(
            bin()
                .args([
                    "serve",
                    "--echo",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--shards",
                    "2",
                ])
                .args(["--io-driver", driver, "--log-level", "warn"]),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        ws.send(Message::text("ping?")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping?"));
        assert_eq!(signal(child.id(), libc::SIGTERM), 0);
        // The open connection gets 1001 from the graceful stop.
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "driver {driver}");
    }
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let out = bin()
        .args(["serve", "--echo"])
        .env("WSH_SHARDS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shards"), "{err}");

    let out = bin()
        .args(["serve", "--set", "log_level=loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_level"));

    let out = bin()
        .args(["serve", "--set", "nonsense=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}

#[tokio::test]
async fn port_in_use_names_the_address() {
    let srv = TestServer::start(test_config(wshandler::IoDriver::Epoll)).await;
    let out = bin()
        .args(["serve", "--echo", "--host", "127.0.0.1", "--port"])
        .arg(srv.addr.port().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("address {} is already in use", srv.addr)),
        "{err}"
    );
    srv.stop().await;
}

#[test]
fn config_subcommand_shows_layers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(
        &file,
        "port = 9100\nheartbeat_interval = 15000\nmax_connections = 50\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "--config"])
        .arg(&file)
        .args(["--set", "max_connections=70"])
        .env("WSH_PORT", "9200")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: wshandler::Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(cfg.port, 9200); // env beats file
    assert_eq!(cfg.max_connections, 70); // flag beats file
    assert_eq!(cfg.heartbeat_interval, std::time::Duration::from_secs(15));
}

/// "Max open files" soft and hard limits of a running process.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut nums = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (nums.next().unwrap(), nums.next().unwrap())
}

#[test]
fn serve_raises_the_open_file_limit_and_warns_when_too_low() {
    use std::io::Read;
    // Start with a soft limit of 512 (as a 1,024-default shell would, only lower).
    let mut cmd = without_wsh_env(std::process::Command::new("sh"));
    cmd.arg("-c")
        .arg(r#"ulimit -Sn 512 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_wshandler"))
        .args(["serve", "--echo", "--host", "127.0.0.1", "--port", "0"])
        .args(["--set", "max_connections=100000000", "--log-level", "warn"])
        .stderr(std::process::Stdio::piped());
    let (mut child, _addr) = spawn_listening(&mut cmd);
    let (soft, hard) = open_file_limits(child.id());
    assert_eq!(soft, hard, "soft limit raised to the hard one");
    assert!(soft >= 512);
    assert_eq!(signal(child.id(), libc::SIGTERM), 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("max_connections does not fit under the open-file limit"),
        "{err}"
    );
}

/// `wshandler config` with `args` and `vars`, parsed back.
fn effective_config(args: &[&str], vars: &[(&str, &str)]) -> wshandler::Config {
    let out = bin()
        .arg("config")
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// Issue 9 item 12: list settings written as TOML arrays reach the config
/// whole, from `--set` and from `WSH_*` alike.
#[test]
fn issue9_item12_toml_array_lists_from_set_and_env() {
    let fields = r#"required_fields=["temperature","humidity"]"#;
    let cfg = effective_config(&["--set", fields], &[]);
    assert_eq!(cfg.required_fields, ["temperature", "humidity"]);
    let cfg = effective_config(
        &[],
        &[("WSH_REQUIRED_FIELDS", r#"["temperature","humidity"]"#)],
    );
    assert_eq!(cfg.required_fields, ["temperature", "humidity"]);
    // The comma form still works.
    let cfg = effective_config(&["--set", "required_fields=temperature,humidity"], &[]);
    assert_eq!(cfg.required_fields, ["temperature", "humidity"]);

    let tokens = r#"auth_tokens=[{token="svc-only",client_type="service"}]"#;
    for cfg in [
        effective_config(&["--set", tokens], &[]),
        effective_config(
            &[],
            &[(
                "WSH_AUTH_TOKENS",
                r#"[{token="svc-only",client_type="service"}]"#,
            )],
        ),
    ] {
        assert_eq!(cfg.auth_tokens.len(), 1, "{:?}", cfg.auth_tokens);
        // `wshandler config` never prints a token (issue 11).
        assert_eq!(cfg.auth_tokens[0].token(), Some("<redacted>"));
        assert_eq!(cfg.auth_tokens[0].client_type(), Some("service"));
    }

    // Half-written TOML is refused at start, naming the setting.
    let out = bin()
        .args([
            "serve",
            "--set",
            r#"required_fields=["temperature","humidity""#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("required_fields"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `serve --help` documents the value forms.
#[test]
fn issue9_item12_serve_help_shows_list_forms() {
    let out = bin().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(r#"'required_fields=["temperature", "humidity"]'"#),
        "{help}"
    );
    assert!(help.contains("comma-separated"), "{help}");
    assert!(help.contains("--data-dir"), "{help}");
}

/// stderr of a failed run: exactly one line, with no RocksDB internals.
fn single_clear_line(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    for raw in [
        "CURRENT",
        "LOCK",
        "IO error",
        "database error",
        "No such file",
        "Resource temporarily",
    ] {
        assert!(!err.contains(raw), "{raw:?} in {err}");
    }
    err
}

/// Issue 9 item 19: `query` and `stats` without a data directory say so
/// once, naming it and what to do.
#[test]
fn issue9_item19_query_and_stats_without_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["query", "stats"] {
        // The default ./wshandler-data, relative to the working directory.
        let out = bin().arg(sub).current_dir(dir.path()).output().unwrap();
        let err = single_clear_line(&out);
        assert_eq!(
            err.trim_end(),
            "wshandler: no data directory at ./wshandler-data \
             (start the server first, or pass --data-dir)",
            "{sub}"
        );
        // An explicit directory that exists but holds no database.
        let out = bin()
            .args([sub, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = single_clear_line(&out);
        assert_eq!(
            err.matches(&*dir.path().display().to_string()).count(),
            1,
            "{err}"
        );
        assert!(err.contains("pass --data-dir"), "{err}");
    }
}

/// Issue 9 item 19: a second server on a data directory in use says so
/// once, naming it and what to do.
#[test]
fn issue9_item19_second_server_on_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |port: &str| {
        let mut c = bin();
        c.args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--shards",
            "1",
        ])
        .args(["--log-level", "warn", "--data-dir"])
        .arg(&data);
        c
    };
    let (mut first, _addr) = spawn_listening(&mut serve("0"));
    let out = serve("0").output().unwrap();
    assert_eq!(signal(first.id(), libc::SIGTERM), 0);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let err = single_clear_line(&out);
    let shown = data.display().to_string();
    assert_eq!(
        err.trim_end(),
        format!(
            "wshandler: data directory {shown} is in use by another wshandler process \
             (stop it or pass a different --data-dir)"
        )
    );
    // And with the server stopped, the readers open it.
    let out = bin()
        .args(["stats", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 11: `wshandler config` prints no token or secret, from any layer;
/// hashes stay (they are what the operator compares).
#[test]
fn issue11_config_never_prints_a_secret() {
    let hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let out = bin()
        .arg("config")
        .args(["--set", "auth_token=tok-flag-1", "--set"])
        .arg(format!(
            r#"auth_tokens=["tok-plain-2", {{token="tok-entry-3", client_type="service"}}, {{sha256="{hash}", device_id="pump-7"}}]"#
        ))
        .env("WSH_JWT_HMAC_SECRET", "jwt-secret-0123456789-0123456789-x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in ["tok-flag-1", "tok-plain-2", "tok-entry-3", "jwt-secret"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains(hash) && text.contains("pump-7"), "{text}");
    assert!(text.contains("[jwt]"), "{text}");
}

/// Issue 11: `wshandler token hash` prints the SHA-256 of stdin's line.
#[test]
fn issue11_token_hash() {
    use std::io::Write;
    let mut child = bin()
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Issue 11: SIGHUP re-reads the config file's tokens; a connection made
/// with the old token stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_sighup_reloads_tokens_without_dropping_connections() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wsh.toml");
    let write = |tok: &str| {
        std::fs::write(
            &file,
            format!("enable_authentication = true\nauth_tokens = [{{ token = \"{tok}\", device_id = \"d-{tok}\" }}]\n"),
        )
        .unwrap()
    };
    write("first");
    let (mut child, addr) = spawn_listening(
        bin()
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--set",
                "persist=false",
            ])
            .args(["--log-level", "warn"]),
    );
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut kept = crate::client::Client::connect(addr).await;
    let r = kept.call(json!({"type": "auth", "token": "first"})).await;
    assert_eq!(r["deviceId"], "d-first", "{r}");
    write("second");
    assert_eq!(signal(child.id(), libc::SIGHUP), 0);
    let deadline = std::time::Instant::now() + crate::util::WAIT;
    loop {
        let mut c = crate::client::Client::connect(addr).await;
        let r = c.call(json!({"type": "auth", "token": "second"})).await;
        if r["success"] == true {
            assert_eq!(r["deviceId"], "d-second");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = crate::client::Client::connect(addr).await;
    assert_eq!(
        c.call(json!({"type": "auth", "token": "first"})).await["success"],
        false
    );
    assert_eq!(
        kept.call(json!({"type": "heartbeat"})).await["type"],
        "heartbeat_response"
    );
    assert_eq!(signal(child.id(), libc::SIGTERM), 0);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `--log-format json`: every stderr line is one JSON object with a
/// timestamp, a level and a target; connection events are `debug` lines
/// with the client id as a field, and the shard's churn summary is an
/// `info` line (flushed at stop at the latest).
#[tokio::test]
async fn log_format_json_every_line_parses() {
    use futures_util::StreamExt;
    use std::io::Read;
    let (mut child, addr) = spawn_listening(
        bin()
            .args(["serve", "--echo", "--host", "127.0.0.1", "--port", "0"])
            .args(["--shards", "1", "--io-driver", "epoll"])
            .args(["--log-format", "json", "--log-level", "debug"])
            .stderr(std::process::Stdio::piped()),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    assert_eq!(signal(child.id(), libc::SIGTERM), 0);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        for k in ["timestamp", "level", "target"] {
            assert!(l.get(k).is_some(), "no {k}: {l}");
        }
    }
    let connected = lines
        .iter()
        .find(|l| l["message"] == "connected")
        .unwrap_or_else(|| panic!("no connected line: {err}"));
    assert_eq!(connected["level"], "DEBUG");
    assert!(connected["client"].is_string(), "{connected}");
    let summary = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("connections: "))
        })
        .unwrap_or_else(|| panic!("no summary line: {err}"));
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["opened"], 1, "{summary}");
    assert_eq!(summary["closed"], 1, "{summary}");
    assert_eq!(summary["shard"], 0, "{summary}");
}
