//! permessage-deflate (RFC 7692): offer negotiation and the per-connection
//! compressor/decompressor.
//!
//! zlib state is large (a 15-bit window costs ~300 KiB for deflate), so both
//! halves are created on first use and, when the peer asked for "no context
//! takeover", dropped after every message: an idle connection that negotiated
//! compression holds no zlib memory.
//!
//! Inflating is bounded: output beyond `max_size` fails with
//! [`ProtocolError::MessageTooBig`] before more than `max_size + 1` bytes are
//! produced, so a deflate bomb is refused without being inflated.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::ProtocolError;

/// The parameters agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so our
    /// decompressor may reset too.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window (9..=15).
    pub server_max_window_bits: u8,
    /// The window the client said it will use (informational; we inflate with 15).
    pub client_max_window_bits: u8,
}

/// Pick the first acceptable permessage-deflate offer from the
/// `Sec-WebSocket-Extensions` header values; returns the agreed parameters and
/// the response header value.
///
/// An offer is declined (and the next one tried) if it has an unknown or
/// duplicated parameter, a bad value, or asks for `server_max_window_bits=8`,
/// which zlib cannot produce for raw deflate.
pub fn negotiate<'a>(headers: impl Iterator<Item = &'a str>) -> Option<(DeflateParams, String)> {
    for header in headers {
        for offer in header.split(',') {
            if let Some(r) = accept_offer(offer) {
                return Some(r);
            }
        }
    }
    None
}

fn accept_offer(offer: &str) -> Option<(DeflateParams, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut p = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    let (mut seen_snct, mut seen_cnct, mut seen_smwb, mut seen_cmwb) = (false, false, false, false);
    let mut response = String::from("permessage-deflate");
    for param in parts {
        if param.is_empty() {
            continue;
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !seen_snct && value.is_none() => {
                seen_snct = true;
                p.server_no_context_takeover = true;
                response.push_str("; server_no_context_takeover");
            }
            "client_no_context_takeover" if !seen_cnct && value.is_none() => {
                seen_cnct = true;
                p.client_no_context_takeover = true;
                response.push_str("; client_no_context_takeover");
            }
            "server_max_window_bits" if !seen_smwb => {
                seen_smwb = true;
                let bits: u8 = value?.parse().ok()?;
                if !(9..=15).contains(&bits) {
                    return None;
                }
                p.server_max_window_bits = bits;
                response.push_str(&format!("; server_max_window_bits={bits}"));
            }
            "client_max_window_bits" if !seen_cmwb => {
                seen_cmwb = true;
                if let Some(v) = value {
                    let bits: u8 = v.parse().ok()?;
                    if !(8..=15).contains(&bits) {
                        return None;
                    }
                    p.client_max_window_bits = bits;
                }
            }
            _ => return None,
        }
    }
    Some((p, response))
}

/// One connection's compression state.
#[derive(Debug)]
pub struct Deflate {
    params: DeflateParams,
    compress: Option<Box<Compress>>,
    decompress: Option<Box<Decompress>>,
}

const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

impl Deflate {
    /// State for a connection that agreed on `params`.
    pub fn new(params: DeflateParams) -> Self {
        Deflate {
            params,
            compress: None,
            decompress: None,
        }
    }

    /// The agreed parameters.
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Compress one whole message (RFC 7692 §7.2.1: sync flush, tail removed).
    pub fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        let bits = self.params.server_max_window_bits;
        let c = self.compress.get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::fast(),
                false,
                bits,
            ))
        });
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start_in = c.total_in();
        loop {
            let consumed = (c.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            c.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate on an in-memory buffer cannot fail");
            let consumed = (c.total_in() - start_in) as usize;
            // Done when all input is in and zlib left room (nothing pending).
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - 4);
        }
        if self.params.server_no_context_takeover {
            self.compress = None;
        }
        out
    }

    /// Inflate one frame's payload of a compressed message into `out`;
    /// `fin` adds the stripped tail. Fails with `MessageTooBig` once `out`
    /// would exceed `max_size`.
    pub fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        max_size: usize,
    ) -> Result<(), ProtocolError> {
        let d = self
            .decompress
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
        inflate(d, input, out, max_size)?;
        if fin {
            inflate(d, &TAIL, out, max_size)?;
            if self.params.client_no_context_takeover {
                self.decompress = None;
            }
        }
        Ok(())
    }
}

fn inflate(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max_size: usize,
) -> Result<(), ProtocolError> {
    let mut chunk = [0u8; 16 * 1024];
    let mut consumed = 0usize;
    loop {
        // Never produce more than one byte past the limit: enough to detect it.
        let budget = (max_size + 1).saturating_sub(out.len()).min(chunk.len());
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress(
                &input[consumed..],
                &mut chunk[..budget],
                FlushDecompress::Sync,
            )
            .map_err(|_| ProtocolError::BadDeflate)?;
        consumed += (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        if out.len() + produced > max_size {
            return Err(ProtocolError::MessageTooBig {
                size: out.len() + produced,
                max_size,
            });
        }
        out.extend_from_slice(&chunk[..produced]);
        let drained = consumed == input.len() && produced < budget;
        if drained || matches!(status, Status::StreamEnd) || (produced == 0 && d.total_in() == in0)
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_basic_and_params() {
        let (p, r) = negotiate(["permessage-deflate; client_max_window_bits"].into_iter()).unwrap();
        assert_eq!(r, "permessage-deflate");
        assert!(!p.server_no_context_takeover);
        let (p, r) = negotiate(
            ["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"]
                .into_iter(),
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn negotiate_declines_bad_offers_and_falls_back() {
        assert!(negotiate(["x-webkit-deflate-frame"].into_iter()).is_none());
        assert!(negotiate(["permessage-deflate; server_max_window_bits=8"].into_iter()).is_none());
        assert!(negotiate(["permessage-deflate; foo"].into_iter()).is_none());
        assert!(negotiate(
            ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]
                .into_iter()
        )
        .is_none());
        let (p, _) = negotiate(
            ["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9"].into_iter(),
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
    }

    fn params(snct: bool, cnct: bool, bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: bits,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for (snct, bits) in [(false, 15), (true, 15), (false, 9), (true, 9)] {
            let mut tx = Deflate::new(params(snct, snct, bits));
            let mut rx = Deflate::new(params(snct, snct, bits));
            for i in 0..5 {
                let msg: Vec<u8> = format!("hello hello hello {i} ").repeat(200).into_bytes();
                let c = tx.compress(&msg);
                assert!(c.len() < msg.len());
                let mut out = Vec::new();
                rx.decompress(&c, true, &mut out, 1 << 20).unwrap();
                assert_eq!(out, msg);
            }
        }
    }

    #[test]
    fn bomb_is_refused_at_the_limit() {
        let mut tx = Deflate::new(params(false, false, 15));
        let big = vec![0u8; 10 << 20];
        let c = tx.compress(&big);
        assert!(c.len() < 1 << 20, "{}", c.len());
        let mut rx = Deflate::new(params(false, false, 15));
        let mut out = Vec::new();
        let err = rx.decompress(&c, true, &mut out, 1 << 20).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooBig { .. }));
        assert!(out.len() <= (1 << 20) + 1);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut rx = Deflate::new(params(false, false, 15));
        let mut out = Vec::new();
        assert!(rx
            .decompress(&[0xff, 0xff, 0xff, 0xff, 0x00], true, &mut out, 1 << 20)
            .is_err());
    }
}
