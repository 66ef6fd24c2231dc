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
    let srv = TestServer::start(test_config(driver)).await;
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
