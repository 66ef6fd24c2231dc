//! Framing over real sockets: fragmentation, large messages, control frames
//! and the close codes of protocol violations.

use crate::both_drivers;
use crate::util::*;

both_drivers!(fragmented_messages_are_reassembled, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let mut c = RawClient::connect(srv.addr).await;
    // Text in three fragments with a ping in the middle.
    c.send(&client_frame(false, false, 1, "κό".as_bytes()))
        .await;
    c.send(&client_frame(true, false, 9, b"mid")).await;
    c.send(&client_frame(false, false, 0, "σμ".as_bytes()))
        .await;
    c.send(&client_frame(true, false, 0, "ε!".as_bytes())).await;
    let pong = c.read_frame().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"mid"[..]));
    let msg = c.read_frame().await.unwrap();
    assert_eq!(msg.opcode, 1);
    assert_eq!(String::from_utf8(msg.payload).unwrap(), "κόσμε!");
    // A UTF-8 sequence split across fragments is fine.
    let snow = "☃".as_bytes();
    c.send(&client_frame(false, false, 1, &snow[..1])).await;
    c.send(&client_frame(true, false, 0, &snow[1..])).await;
    assert_eq!(c.read_frame().await.unwrap().payload, snow);
    srv.stop().await;
});

both_drivers!(large_messages_round_trip, |driver| {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let srv = TestServer::start(test_config(driver)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
    for size in [125usize, 126, 65535, 65536, 1 << 20, 5 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert!(b[..] == payload[..], "size {size}"),
            other => panic!("{other:?}"),
        }
    }
    srv.stop().await;
});

both_drivers!(ping_gets_pong_with_same_payload, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let mut c = RawClient::connect(srv.addr).await;
    c.send(&client_frame(true, false, 9, &[0xAB; 125])).await;
    let f = c.read_frame().await.unwrap();
    assert_eq!(f.opcode, 10);
    assert_eq!(f.payload, vec![0xAB; 125]);
    srv.stop().await;
});

both_drivers!(close_handshake_echoes_the_code, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let mut c = RawClient::connect(srv.addr).await;
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(&client_frame(true, false, 8, &payload)).await;
    assert_eq!(c.expect_close().await, Some(4000));
    // The server then closes the TCP connection.
    assert!(c.read_frame().await.is_none());
    srv.stop().await;
});

/// Send `frames` on a fresh connection and return the close code the server answers with.
async fn close_code_for(addr: std::net::SocketAddr, frames: &[Vec<u8>]) -> Option<u16> {
    let mut c = RawClient::connect(addr).await;
    for f in frames {
        c.send(f).await;
    }
    c.expect_close().await
}

both_drivers!(protocol_violations_get_the_right_close_code, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let a = srv.addr;
    // Unmasked client frame.
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"hi");
    assert_eq!(close_code_for(a, &[unmasked]).await, Some(1002));
    // Reserved bits (RSV2) and RSV1 without negotiated compression.
    let mut rsv2 = client_frame(true, false, 1, b"x");
    rsv2[0] |= 0x20;
    assert_eq!(close_code_for(a, &[rsv2]).await, Some(1002));
    assert_eq!(
        close_code_for(a, &[client_frame(true, true, 1, b"x")]).await,
        Some(1002)
    );
    // Reserved opcodes.
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 3, b"")]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 0xB, b"")]).await,
        Some(1002)
    );
    // Control frame too long, fragmented control frame.
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 9, &[0; 126])]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_for(a, &[client_frame(false, false, 9, b"")]).await,
        Some(1002)
    );
    // Continuation with nothing to continue; data frame inside a fragmented message.
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 0, b"x")]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_for(
            a,
            &[
                client_frame(false, false, 1, b"a"),
                client_frame(true, false, 1, b"b")
            ]
        )
        .await,
        Some(1002)
    );
    // Invalid UTF-8: whole frame, and fail-fast on the first bad fragment.
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 1, &[0xce, 0xba, 0xff])]).await,
        Some(1007)
    );
    assert_eq!(
        close_code_for(a, &[client_frame(false, false, 1, &[0xf4, 0x90])]).await,
        Some(1007)
    );
    // Bad close frames: one-byte payload, reserved code, non-UTF-8 reason.
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 8, &[3])]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 8, &1005u16.to_be_bytes())]).await,
        Some(1002)
    );
    assert_eq!(
        close_code_for(a, &[client_frame(true, false, 8, &[0x03, 0xe8, 0xff])]).await,
        Some(1007)
    );
    srv.stop().await;
});

both_drivers!(a_bad_connection_does_not_disturb_others, |driver| {
    let srv = TestServer::start(test_config(driver)).await;
    let mut good = RawClient::connect(srv.addr).await;
    let mut bad = RawClient::connect(srv.addr).await;
    bad.send(&[0xff; 64]).await;
    assert_eq!(bad.expect_close().await, Some(1002));
    good.send(&client_frame(true, false, 2, b"ok")).await;
    assert_eq!(good.read_frame().await.unwrap().payload, b"ok");
    srv.stop().await;
});
