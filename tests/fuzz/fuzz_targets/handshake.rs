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
        let _ = deflate::negotiate(req.extensions.iter().map(String::as_str));
    }
});
