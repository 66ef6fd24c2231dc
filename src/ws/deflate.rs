//! permessage-deflate (RFC 7692): offer negotiation and the per-connection
//! compressor/decompressor.
//!
//! zlib state is large: with zlib-rs a compressor allocates about 370 KiB at
//! a 15-bit window and memLevel 8 (window, chain, a fixed 128 KiB hash table
//! and symbol buffers), a decompressor its 32 KiB window and state. Held per
//! connection, as context takeover requires, that measured 472 KB of RSS
//! per connection that had exchanged one message (docs/benchmarks.md). So the server's policy
//! ([`DeflatePolicy`], from the config) is by default *no context takeover*:
//! the response always carries `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 §7.1.1.1 and §7.1.1.2 let a server
//! add both to any offer), every message is compressed and inflated on its
//! own, and the zlib state used for it goes back to a small per-thread cache
//! as soon as the message is done. A shard is one thread, so its connections
//! share one compressor (a message is compressed in one call) and a few
//! decompressors (one is held while a fragmented message is in flight): an
//! idle connection holds no zlib state at all.
//!
//! With `compression_context_takeover = true` the server keeps state per
//! connection for the directions where the client did not ask otherwise
//! (better ratios on streams of similar messages, at the memory cost above);
//! `compression_window_bits` then bounds both windows it holds, and
//! `compression_mem_level` the compressor's buffers.
//!
//! Inflating is bounded: output beyond `max_size` fails with
//! [`ProtocolError::MessageTooBig`] before more than `max_size + 1` bytes are
//! produced, so a deflate bomb is refused without being inflated.

use std::cell::RefCell;
use std::fmt;

use flate2::{Decompress, FlushDecompress, Status};
use zlib_rs::DeflateFlush;

use super::ProtocolError;

/// The server's side of the negotiation: what it is willing to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Largest LZ77 window (log2 bytes, 9..=15) the server compresses with,
    /// and asks the client to stay within when the client lets it
    /// (`client_max_window_bits` in the offer).
    pub window_bits: u8,
    /// zlib memLevel (1..=9) of the compressor: its symbol buffers are
    /// `2^(mem_level + 6)` entries. Lower saves memory, costs ratio.
    pub mem_level: u8,
    /// Keep compression state between messages (context takeover) unless
    /// the client asks otherwise. Off: both sides start every message from
    /// an empty window and no zlib state stays with the connection.
    pub context_takeover: bool,
}

impl Default for DeflatePolicy {
    fn default() -> Self {
        DeflatePolicy {
            window_bits: 15,
            mem_level: 8,
            context_takeover: false,
        }
    }
}

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
    /// The largest window the client may use (8..=15): 15 unless the
    /// response bounded it; our decompressor's window (at least 9, as zlib
    /// turns a raw 8-bit window into 9).
    pub client_max_window_bits: u8,
}

/// Pick the first acceptable permessage-deflate offer from the
/// `Sec-WebSocket-Extensions` header values under `policy`; returns the
/// agreed parameters and the response header value.
///
/// An offer is declined (and the next one tried) if it has an unknown or
/// duplicated parameter, a bad value, or asks for `server_max_window_bits=8`,
/// which zlib cannot produce for raw deflate.
///
/// The response names `server_max_window_bits` only if the offer did (some
/// clients, Firefox among them, refuse it unasked) and `client_max_window_bits`
/// only if the offer did (RFC 7692 §7.1.2.2 forbids it otherwise).
pub fn negotiate<'a>(
    policy: &DeflatePolicy,
    headers: impl Iterator<Item = &'a str>,
) -> Option<(DeflateParams, String)> {
    for header in headers {
        for offer in header.split(',') {
            if let Some(r) = accept_offer(policy, offer) {
                return Some(r);
            }
        }
    }
    None
}

fn accept_offer(policy: &DeflatePolicy, offer: &str) -> Option<(DeflateParams, String)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut snct, mut cnct) = (false, false);
    // `Some(bits)`: the offer named the parameter (bits 15 if no value).
    let (mut smwb, mut cmwb): (Option<u8>, Option<u8>) = (None, None);
    for param in parts {
        if param.is_empty() {
            continue;
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !snct && value.is_none() => snct = true,
            "client_no_context_takeover" if !cnct && value.is_none() => cnct = true,
            "server_max_window_bits" if smwb.is_none() => {
                let bits: u8 = value?.parse().ok()?;
                if !(9..=15).contains(&bits) {
                    return None;
                }
                smwb = Some(bits);
            }
            "client_max_window_bits" if cmwb.is_none() => {
                let bits = match value {
                    Some(v) => v.parse().ok()?,
                    None => 15,
                };
                if !(8..=15).contains(&bits) {
                    return None;
                }
                cmwb = Some(bits);
            }
            _ => return None,
        }
    }
    let takeover = policy.context_takeover;
    let p = DeflateParams {
        server_no_context_takeover: snct || !takeover,
        client_no_context_takeover: cnct || !takeover,
        server_max_window_bits: smwb.unwrap_or(15).min(policy.window_bits),
        client_max_window_bits: cmwb.map_or(15, |b| b.min(policy.window_bits)),
    };
    let mut response = String::from("permessage-deflate");
    if p.server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    if p.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if smwb.is_some() {
        response.push_str(&format!(
            "; server_max_window_bits={}",
            p.server_max_window_bits
        ));
    }
    // Bound the client's window only when it offered to be bounded and the
    // bound says something (a value below 15, or a value it gave).
    if let Some(offered) = cmwb {
        if p.client_max_window_bits < 15 || offered < 15 {
            response.push_str(&format!(
                "; client_max_window_bits={}",
                p.client_max_window_bits
            ));
        }
    }
    Some((p, response))
}

/// zlib state waiting for its next message, shared by the connections of
/// one thread (one shard) that run without context takeover. Everything in
/// it has been reset, so it carries nothing from one message to the next.
struct Spare {
    /// At most [`SPARE_COMPRESSORS`], each with its (window bits, memLevel).
    compress: Vec<(u8, u8, Box<zlib_rs::Deflate>)>,
    /// At most [`SPARE_DECOMPRESSORS`], all with a 15-bit window. Boxed
    /// because connections hold them boxed: moving one in or out of the
    /// spares moves a pointer, not the inflater's state.
    #[allow(clippy::vec_box)]
    decompress: Vec<Box<Decompress>>,
}

/// Compressors kept per thread: one per distinct (window, memLevel) in use,
/// and the policy gives one unless clients ask for smaller windows.
const SPARE_COMPRESSORS: usize = 2;
/// Decompressors kept per thread: one is held per fragmented message in
/// flight, so a few cover the usual case; more are freed when returned.
const SPARE_DECOMPRESSORS: usize = 4;

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            compress: Vec::new(),
            decompress: Vec::new(),
        })
    };
}

fn new_compressor(window_bits: u8, mem_level: u8) -> Box<zlib_rs::Deflate> {
    Box::new(zlib_rs::Deflate::new_with_config(zlib_rs::DeflateConfig {
        // Level 1: on a server, CPU per message matters more than the last
        // few percent of ratio.
        level: 1,
        method: zlib_rs::Method::Deflated,
        // Negative: raw deflate, no zlib header (RFC 7692 §7.2.1).
        window_bits: -i32::from(window_bits),
        mem_level: i32::from(mem_level),
        strategy: zlib_rs::Strategy::Default,
    }))
}

fn take_compressor(window_bits: u8, mem_level: u8) -> Box<zlib_rs::Deflate> {
    SPARE
        .with_borrow_mut(|s| {
            let i = s
                .compress
                .iter()
                .position(|&(w, m, _)| (w, m) == (window_bits, mem_level))?;
            Some(s.compress.swap_remove(i).2)
        })
        .unwrap_or_else(|| new_compressor(window_bits, mem_level))
}

fn give_compressor(window_bits: u8, mem_level: u8, mut c: Box<zlib_rs::Deflate>) {
    c.reset();
    SPARE.with_borrow_mut(|s| {
        if s.compress.len() < SPARE_COMPRESSORS {
            s.compress.push((window_bits, mem_level, c));
        }
    });
}

fn take_decompressor() -> Box<Decompress> {
    SPARE
        .with_borrow_mut(|s| s.decompress.pop())
        .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, 15)))
}

fn give_decompressor(mut d: Box<Decompress>) {
    d.reset(false);
    SPARE.with_borrow_mut(|s| {
        if s.decompress.len() < SPARE_DECOMPRESSORS {
            s.decompress.push(d);
        }
    });
}

/// One connection's compression state.
pub struct Deflate {
    params: DeflateParams,
    mem_level: u8,
    /// Held between messages only with server context takeover.
    compress: Option<Box<zlib_rs::Deflate>>,
    /// Held between messages only with client context takeover; otherwise
    /// from the first frame of a compressed message to its last.
    decompress: Option<Box<Decompress>>,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .field("mem_level", &self.mem_level)
            .field("compress", &self.compress.is_some())
            .field("decompress", &self.decompress.is_some())
            .finish()
    }
}

const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

impl Deflate {
    /// State for a connection that agreed on `params`, compressing with
    /// zlib's default memLevel (8).
    pub fn new(params: DeflateParams) -> Self {
        Self::with_mem_level(params, 8)
    }

    /// State for a connection that agreed on `params`; `mem_level` (1..=9)
    /// sizes the compressor's buffers.
    pub fn with_mem_level(params: DeflateParams, mem_level: u8) -> Self {
        Deflate {
            params,
            mem_level: mem_level.clamp(1, 9),
            compress: None,
            decompress: None,
        }
    }

    /// The agreed parameters.
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Whether this connection holds any zlib state right now (false
    /// between messages without context takeover).
    pub fn holds_state(&self) -> bool {
        self.compress.is_some() || self.decompress.is_some()
    }

    /// Compress one whole message (RFC 7692 §7.2.1: sync flush, tail removed).
    pub fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        let (bits, mem) = (self.params.server_max_window_bits, self.mem_level);
        let mut c = match self.compress.take() {
            Some(c) => c,
            None if self.params.server_no_context_takeover => take_compressor(bits, mem),
            None => new_compressor(bits, mem),
        };
        let out = deflate_message(&mut c, input);
        if self.params.server_no_context_takeover {
            give_compressor(bits, mem, c);
        } else {
            self.compress = Some(c);
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
        let no_takeover = self.params.client_no_context_takeover;
        let bits = self.params.client_max_window_bits.max(9);
        let d = self.decompress.get_or_insert_with(|| {
            if no_takeover {
                take_decompressor()
            } else {
                Box::new(Decompress::new_with_window_bits(false, bits))
            }
        });
        let result = inflate(d, input, out, max_size);
        let result = result.and_then(|()| {
            if fin {
                inflate(d, &TAIL, out, max_size)
            } else {
                Ok(())
            }
        });
        // A failed message ends the connection: drop its state rather than
        // hand a half-used inflater to the next message.
        if result.is_err() {
            self.decompress = None;
        } else if fin && no_takeover {
            if let Some(d) = self.decompress.take() {
                give_decompressor(d);
            }
        }
        result
    }
}

/// Deflate `input` with a sync flush, growing the output until zlib leaves
/// room (which is how it says the flush is complete), then strip the tail.
fn deflate_message(c: &mut zlib_rs::Deflate, input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + 64);
    let (start_in, start_out) = (c.total_in(), c.total_out());
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let len = out.len();
        out.resize(out.capacity(), 0);
        c.compress(&input[consumed..], &mut out[len..], DeflateFlush::SyncFlush)
            .expect("deflate on an in-memory buffer cannot fail");
        let produced = (c.total_out() - start_out) as usize;
        let filled = produced == out.len();
        out.truncate(produced);
        let consumed = (c.total_in() - start_in) as usize;
        if consumed == input.len() && !filled {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    }
    out
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

    const TAKEOVER: DeflatePolicy = DeflatePolicy {
        window_bits: 15,
        mem_level: 8,
        context_takeover: true,
    };

    fn agree(policy: &DeflatePolicy, offer: &str) -> Option<(DeflateParams, String)> {
        negotiate(policy, [offer].into_iter())
    }

    #[test]
    fn negotiate_basic_and_params() {
        let (p, r) = agree(&TAKEOVER, "permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(r, "permessage-deflate");
        assert!(!p.server_no_context_takeover);
        let (p, r) = agree(
            &TAKEOVER,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
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
        let policy = DeflatePolicy::default();
        assert!(agree(&policy, "x-webkit-deflate-frame").is_none());
        assert!(agree(&policy, "permessage-deflate; server_max_window_bits=8").is_none());
        assert!(agree(&policy, "permessage-deflate; foo").is_none());
        assert!(agree(&policy, "permessage-deflate; client_max_window_bits=16").is_none());
        assert!(agree(
            &policy,
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        )
        .is_none());
        let (p, _) = agree(
            &policy,
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
    }

    #[test]
    fn issue9_item9_default_policy_asks_both_sides_for_no_context_takeover() {
        let policy = DeflatePolicy::default();
        assert!(!policy.context_takeover);
        // What browsers offer, and a bare offer: both directions reset.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ] {
            let (p, r) = agree(&policy, offer).unwrap();
            assert!(p.server_no_context_takeover && p.client_no_context_takeover);
            assert_eq!(
                (p.server_max_window_bits, p.client_max_window_bits),
                (15, 15)
            );
            assert_eq!(
                r,
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            );
        }
        // With takeover allowed, only what the client asked for.
        let (p, r) = agree(&TAKEOVER, "permessage-deflate; client_no_context_takeover").unwrap();
        assert!(!p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(r, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn issue9_item9_window_bits_bound_both_windows() {
        let small = DeflatePolicy {
            window_bits: 10,
            ..TAKEOVER
        };
        // Unasked, the server just uses the smaller window: the client's
        // decompressor (sized by the 15 it assumes) reads it anyway.
        let (p, r) = agree(&small, "permessage-deflate").unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(p.client_max_window_bits, 15);
        assert_eq!(r, "permessage-deflate");
        // Asked: answered with the smaller of the two.
        let (p, r) = agree(
            &small,
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (10, 10)
        );
        assert_eq!(
            r,
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10"
        );
        let (p, r) = agree(&small, "permessage-deflate; server_max_window_bits=9").unwrap();
        assert_eq!(p.server_max_window_bits, 9);
        assert_eq!(r, "permessage-deflate; server_max_window_bits=9");
        // The client's own bound is honoured (and echoed), 8 included.
        let (p, r) = agree(&TAKEOVER, "permessage-deflate; client_max_window_bits=8").unwrap();
        assert_eq!(p.client_max_window_bits, 8);
        assert_eq!(r, "permessage-deflate; client_max_window_bits=8");
        // A bound of 15 says nothing: left out.
        let (_, r) = agree(&TAKEOVER, "permessage-deflate; client_max_window_bits=15").unwrap();
        assert_eq!(r, "permessage-deflate");
    }

    /// Text whose repeats are `distance` bytes apart, so that a compressor
    /// with a window of `distance` or more finds them.
    fn repeats_at(distance: usize) -> Vec<u8> {
        let mut seed = 0x2545_f491_u32;
        let block: Vec<u8> = (0..distance)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                b'a' + (seed % 26) as u8
            })
            .collect();
        block.repeat(4)
    }

    fn inflate_all(compressed: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut out = Vec::new();
        inflate(&mut d, compressed, &mut out, 1 << 20).unwrap();
        inflate(&mut d, &TAIL, &mut out, 1 << 20).unwrap();
        out
    }

    #[test]
    fn issue9_item9_compressor_stays_within_the_agreed_window() {
        // Random letters repeating every 4 KiB: the only matches are 4 KiB
        // back. (zlib's inflater reads matches out of its output buffer
        // whatever its window, so a small-window inflater cannot tell the
        // window used; what gets compressed can.)
        let msg = repeats_at(4096);
        for mem_level in [1, 8, 9] {
            let mut small = Deflate::with_mem_level(params(true, true, 9), mem_level);
            let c = small.compress(&msg);
            assert_eq!(inflate_all(&c), msg, "mem_level {mem_level}");
            assert!(
                c.len() > msg.len() * 9 / 10,
                "a 9-bit window finds no match"
            );
            let mut big = Deflate::with_mem_level(params(true, true, 15), mem_level);
            let c15 = big.compress(&msg);
            assert_eq!(inflate_all(&c15), msg, "mem_level {mem_level}");
            assert!(c15.len() < msg.len() / 2, "a 15-bit window finds them");
        }
    }

    #[test]
    fn issue9_item9_no_state_between_messages_without_takeover() {
        let msg = "temperature=21.5 humidity=40 ".repeat(50).into_bytes();
        let mut tx = Deflate::new(params(true, true, 15));
        let mut rx = Deflate::new(params(true, true, 15));
        for _ in 0..3 {
            let c = tx.compress(&msg);
            assert!(!tx.holds_state());
            // Every message inflates on its own.
            assert_eq!(inflate_all(&c), msg);
            let (a, b) = c.split_at(c.len() / 2);
            let mut out = Vec::new();
            rx.decompress(a, false, &mut out, 1 << 20).unwrap();
            assert!(rx.holds_state(), "held while the message is in flight");
            rx.decompress(b, true, &mut out, 1 << 20).unwrap();
            assert!(!rx.holds_state());
            assert_eq!(out, msg);
        }
        // With takeover both halves keep their state, and later messages
        // lean on earlier ones.
        let mut tx = Deflate::new(params(false, false, 15));
        let mut rx = Deflate::new(params(false, false, 15));
        let first = tx.compress(&msg);
        let second = tx.compress(&msg);
        assert!(second.len() < first.len());
        for c in [first, second] {
            let mut out = Vec::new();
            rx.decompress(&c, true, &mut out, 1 << 20).unwrap();
            assert_eq!(out, msg);
        }
        assert!(tx.holds_state() && rx.holds_state());
    }

    #[test]
    fn failed_message_does_not_poison_the_shared_decompressor() {
        let mut bad = Deflate::new(params(true, true, 15));
        let mut out = Vec::new();
        assert!(bad
            .decompress(&[0xff, 0xff, 0xff, 0xff, 0x00], true, &mut out, 1 << 20)
            .is_err());
        assert!(!bad.holds_state());
        let msg = b"hello hello hello hello".repeat(20);
        let c = Deflate::new(params(true, true, 15)).compress(&msg);
        let mut good = Deflate::new(params(true, true, 15));
        let mut out = Vec::new();
        good.decompress(&c, true, &mut out, 1 << 20).unwrap();
        assert_eq!(out, msg);
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
