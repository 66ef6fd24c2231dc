//! The upgrade request parser and decision on arbitrary bytes.
#![no_main]

use wshandler::ws;

use libfuzzer_sys::fuzz_target;
use ws::deflate;
use ws::handshake::{parse_request, Decision};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, n))) = parse_request(data) {
        assert!(n <= data.len());
        if let Decision::Accept { accept_key } = req.decide() {
            assert_eq!(accept_key.len(), 28);
        }
        for policy in [deflate::DeflatePolicy::default(), deflate::DeflatePolicy {
            window_bits: 9,
            mem_level: 1,
            context_takeover: true,
        }] {
            let _ = deflate::negotiate(&policy, req.extensions.iter().map(String::as_str));
        }
    }
});
