//! permessage-deflate over real sockets (RFC 7692).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::both_drivers;
use crate::util::*;

fn compress(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 256 * 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.len() < out.capacity(), "output buffer large enough");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

both_drivers!(negotiates_and_round_trips_compressed_messages, |driver| {
    // The client below keeps its context across messages: with takeover on,
    // the server lets it (it did not offer client_no_context_takeover).
    let mut cfg = test_config(driver);
    cfg.compression_context_takeover = true;
    let srv = TestServer::start(cfg).await;
    let mut c = RawClient::connect_with(
        srv.addr,
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits\r\n",
    )
    .await;
    assert!(
        c.response_head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        ),
        "{}",
        c.response_head
    );
    let mut tx = Compress::new_with_window_bits(Compression::default(), false, 15);
    let text = "temperature=21.5 humidity=40 ".repeat(100);
    for _ in 0..3 {
        c.send(&client_frame(
            true,
            true,
            1,
            &compress(&mut tx, text.as_bytes()),
        ))
        .await;
        let f = c.read_frame().await.unwrap();
        assert!(f.rsv1, "a large echo comes back compressed");
        assert!(f.payload.len() < text.len());
        // server_no_context_takeover: every message inflates on its own.
        let mut fresh = Decompress::new_with_window_bits(false, 15);
        assert_eq!(inflate(&mut fresh, &f.payload), text.as_bytes());
    }
    // Under the compression threshold the echo is sent plain.
    c.send(&client_frame(true, true, 1, &compress(&mut tx, b"short")))
        .await;
    let f = c.read_frame().await.unwrap();
    assert!(!f.rsv1);
    assert_eq!(f.payload, b"short");
    // A compressed message split into fragments (RSV1 on the first only).
    let z = compress(&mut tx, text.as_bytes());
    let (a, b) = z.split_at(z.len() / 2);
    c.send(&client_frame(false, true, 1, a)).await;
    c.send(&client_frame(true, false, 0, b)).await;
    let f = c.read_frame().await.unwrap();
    let mut fresh = Decompress::new_with_window_bits(false, 15);
    assert_eq!(inflate(&mut fresh, &f.payload), text.as_bytes());
    srv.stop().await;
});

both_drivers!(deflate_bomb_is_closed_with_1009, |driver| {
    let srv = TestServer::start(test_config(driver)).await; // echo: limit 16 MiB
    let mut c =
        RawClient::connect_with(srv.addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    let mut tx = Compress::new_with_window_bits(Compression::best(), false, 15);
    let mut bomb = Vec::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..32 {
        let mut out = Vec::with_capacity(64 * 1024);
        tx.compress_vec(&zeros, &mut out, FlushCompress::None)
            .unwrap();
        bomb.extend_from_slice(&out);
    }
    bomb.extend(compress(&mut tx, b""));
    assert!(
        bomb.len() < 100_000,
        "32 MiB of zeros compress to {} bytes",
        bomb.len()
    );
    c.send(&client_frame(true, true, 2, &bomb)).await;
    assert_eq!(c.expect_close().await, Some(1009));
    srv.stop().await;
});

both_drivers!(compression_off_means_no_extension, |driver| {
    let mut cfg = test_config(driver);
    cfg.enable_compression = false;
    let srv = TestServer::start(cfg).await;
    let mut c =
        RawClient::connect_with(srv.addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    assert!(
        !c.response_head.contains("Sec-WebSocket-Extensions"),
        "{}",
        c.response_head
    );
    c.send(&client_frame(true, true, 1, b"\x00")).await;
    assert_eq!(c.expect_close().await, Some(1002));
    srv.stop().await;
});

/// Text whose repeats are 4 KiB apart: a 15-bit window finds them, a 9-bit
/// one (512 bytes) cannot, so what inflates it shows the window used.
fn far_repeats() -> String {
    let mut seed = 0x2545_f491_u32;
    let block: String = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    block.repeat(3)
}

// Issue 9 item 9: a compressed exchange works under every compression
// setting, with the negotiated parameters the setting calls for.
both_drivers!(
    issue9_item9_compressed_exchange_under_each_setting,
    |driver| {
        struct Case {
            takeover: bool,
            window_bits: u8,
            mem_level: u8,
            offer: &'static str,
            response: &'static str,
        }
        let cases = [
        // The default: no context takeover either way, whatever was offered.
        Case {
            takeover: false,
            window_bits: 15,
            mem_level: 8,
            offer: "permessage-deflate; client_max_window_bits",
            response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        },
        Case {
            takeover: true,
            window_bits: 15,
            mem_level: 8,
            offer: "permessage-deflate; client_max_window_bits",
            response: "permessage-deflate",
        },
        // Small windows: the client is asked to stay within 9 bits too.
        Case {
            takeover: false,
            window_bits: 9,
            mem_level: 1,
            offer: "permessage-deflate; client_max_window_bits",
            response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9",
        },
        Case {
            takeover: true,
            window_bits: 9,
            mem_level: 9,
            offer: "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
            response: "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
        },
    ];
        let text = far_repeats();
        for case in cases {
            let mut cfg = test_config(driver);
            cfg.compression_context_takeover = case.takeover;
            cfg.compression_window_bits = case.window_bits;
            cfg.compression_mem_level = case.mem_level;
            let srv = TestServer::start(cfg).await;
            let mut c = RawClient::connect_with(
                srv.addr,
                &format!("Sec-WebSocket-Extensions: {}\r\n", case.offer),
            )
            .await;
            let expected = format!("Sec-WebSocket-Extensions: {}\r\n", case.response);
            assert!(c.response_head.contains(&expected), "{}", c.response_head);

            // The client plays by the agreement: its window, and a fresh
            // compressor per message unless takeover is on.
            let bits = case.window_bits;
            let mut tx = Compress::new_with_window_bits(Compression::default(), false, bits);
            let mut rx = Decompress::new_with_window_bits(false, bits);
            for i in 0..3 {
                if !case.takeover {
                    tx = Compress::new_with_window_bits(Compression::default(), false, bits);
                    rx = Decompress::new_with_window_bits(false, bits);
                }
                let z = compress(&mut tx, text.as_bytes());
                if i == 2 {
                    // Fragmented: RSV1 on the first frame only.
                    let (a, b) = z.split_at(z.len() / 2);
                    c.send(&client_frame(false, true, 1, a)).await;
                    c.send(&client_frame(true, false, 0, b)).await;
                } else {
                    c.send(&client_frame(true, true, 1, &z)).await;
                }
                let f = c.read_frame().await.unwrap();
                assert!(f.rsv1, "a large echo comes back compressed");
                // The text's only matches are 4 KiB back: a 15-bit window finds
                // them, a 9-bit one cannot, which shows the window the server used.
                if bits == 15 {
                    assert!(f.payload.len() < text.len() / 2, "{}", f.payload.len());
                } else {
                    assert!(f.payload.len() > text.len() * 9 / 10, "{}", f.payload.len());
                }
                assert_eq!(inflate(&mut rx, &f.payload), text.as_bytes(), "message {i}");
            }
            srv.stop().await;
        }
    }
);

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue 9 item 9: what permessage-deflate costs per connection, with
/// context takeover off (the default) and on. A measurement for
/// docs/benchmarks.md, not a pass/fail test, so it is ignored by default:
///
/// ```sh
/// RSS_CONNS=2000 cargo test --test it deflate_rss_per_connection -- --ignored --nocapture
/// ```
///
/// `RSS_BIN` picks the server binary (default: the one this test built);
/// `RSS_OLD=1` runs it once without the takeover setting, for a binary that
/// predates it.
/// Each of `RSS_CONNS` connections offers what browsers offer, sends one
/// 1.2 KB compressible text message and reads its compressed echo, and
/// stays open; the server's RSS is read idle, after the connects and after
/// the echoes.
#[tokio::test]
#[ignore]
async fn deflate_rss_per_connection() {
    let n: usize = std::env::var("RSS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let bin_path =
        std::env::var("RSS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wshandler").to_owned());
    let mut msg = String::new();
    let mut i = 0;
    while msg.len() < 1200 {
        msg.push_str(&format!(
            "{{\"deviceId\":\"sensor-{i:04}\",\"temperature\":21.{i},\"humidity\":40}},"
        ));
        i += 1;
    }
    msg.truncate(1200);
    // The first message of a connection compresses the same way whatever
    // was agreed: one fresh compressor serves every connection.
    let mut tx = Compress::new_with_window_bits(Compression::default(), false, 15);
    let z = compress(&mut tx, msg.as_bytes());
    // (label, extra setting, client offers and sends compressed)
    const OFF: &str = "compression_context_takeover=false";
    const ON: &str = "compression_context_takeover=true";
    let modes: &[(&str, &[&str], bool)] = if std::env::var_os("RSS_OLD").is_some() {
        &[("as built", &[], true)]
    } else {
        &[
            ("no compression", &[], false),
            ("takeover off", &[OFF], true),
            ("takeover on", &[ON], true),
            (
                "takeover on, window 9, memLevel 1",
                &[ON, "compression_window_bits=9", "compression_mem_level=1"],
                true,
            ),
        ]
    };
    for &(label, settings, compressed) in modes {
        let mut cmd = without_wsh_env(std::process::Command::new(&bin_path));
        cmd.args(["serve", "--echo", "--host", "127.0.0.1", "--port", "0"])
            .args(["--shards", "2", "--log-level", "warn"])
            .args(["--set", &format!("max_connections={}", n + 100)])
            .args(["--set", "enable_heartbeat=false"]);
        for kv in settings {
            cmd.args(["--set", kv]);
        }
        let (frame, offer) = if compressed {
            (
                client_frame(true, true, 1, &z),
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            )
        } else {
            (client_frame(true, false, 1, msg.as_bytes()), "")
        };
        let (mut child, addr) = spawn_listening(&mut cmd);
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let pid = child.id();
        let idle = rss_kib(pid);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(RawClient::connect_with(addr, offer).await);
        }
        let connected = rss_kib(pid);
        for c in &mut conns {
            c.send(&frame).await;
            let f = c.read_frame().await.unwrap();
            assert_eq!(f.rsv1, compressed, "the echo is compressed if agreed");
        }
        let after = rss_kib(pid);
        println!(
            "{label}: conns={n}: rss idle {idle} KiB, connected {connected} KiB \
             (+{} B/conn), after one message each {after} KiB (+{} B/conn over connected)",
            (connected - idle) * 1024 / n as u64,
            after.saturating_sub(connected) * 1024 / n as u64,
        );
        drop(conns);
        assert_eq!(signal(pid, libc::SIGTERM), 0);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
