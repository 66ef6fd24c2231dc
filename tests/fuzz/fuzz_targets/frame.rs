//! The server read loop on arbitrary bytes: the first byte picks how the
//! input is split across reads and whether deflate was negotiated.
#![no_main]

use wshandler::ws;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ws::deflate::{Deflate, DeflateParams};
use ws::{Limits, OutQueue, Session};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else { return };
    let deflate = (ctl & 1 == 1).then(|| {
        Deflate::new(DeflateParams {
            server_no_context_takeover: ctl & 2 != 0,
            client_no_context_takeover: ctl & 4 != 0,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        })
    });
    let chunk = 1 + (ctl as usize >> 3) * 16;
    let mut s = Session::new(Limits { max_message_size: 64 * 1024 }, deflate);
    let mut out = OutQueue::default();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match s.read(&mut buf, &mut out) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    s.fail(&e, &mut out);
                    return;
                }
            }
        }
    }
});
