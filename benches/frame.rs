//! Frame codec benchmarks: the server's read path (parse + unmask of client
//! frames), server frame encoding and the unmask loop, each against a
//! baseline on the same workload.
//!
//! All IO is in memory and every input comes from a seeded xorshift RNG, so
//! runs are repeatable and compare like with like:
//!
//! - `parse_unmask/{wshandler,tungstenite}/<size>`: decode a ~1 MiB buffer of
//!   masked binary client frames (fin, opcode 2, random key) of `<size>`
//!   payload bytes each (at least 16 frames). Ours is the sans-IO
//!   [`Session::read`] over a `BytesMut` copied from the input inside the
//!   timed loop; tungstenite 0.26 is `WebSocket::from_raw_socket(.., Server)`
//!   over a `Read` of the same bytes, which copies them into its own read
//!   buffer. Both sides therefore pay one copy of the input, and both build
//!   their per-connection state (session / `WebSocket`) inside the loop.
//! - `encode/{wshandler,tungstenite}/<size>`: encode the same payloads as
//!   unmasked server frames, each into a fresh buffer sized for it
//!   ([`frame::encode`] vs `Frame::message(..).format(&mut Vec)`).
//! - `mask/{word,bytewise}/<size>`: [`mask::apply_mask`] vs the reference
//!   [`mask::apply_mask_bytewise`] over one `<size>`-byte buffer.
//!
//! Sizes are 16 B, 128 B, 4 KiB and 64 KiB. Throughput is payload bytes
//! (frame headers are not counted), so the rows of one size compare directly.
//! Before timing, both decoders are checked to return exactly the generated
//! payloads.
//!
//! Run with `cargo bench --bench frame`; a quick pass on a busy machine:
//! `cargo bench --bench frame -- --warm-up-time 1 --measurement-time 3`.
//! Filter with a regex after `--`, e.g. `cargo bench --bench frame -- parse_unmask`.

use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use wshandler::ws::frame::{self, OpCode};
use wshandler::ws::{mask, Limits, Message, OutQueue, Session};

/// Payload sizes benchmarked.
const SIZES: [usize; 4] = [16, 128, 4 << 10, 64 << 10];
/// Target payload bytes per input buffer.
const TARGET_BYTES: usize = 1 << 20;
/// Fewest frames per input buffer.
const MIN_FRAMES: usize = 16;
/// Message/frame size limit on both sides (well above any frame here).
const MAX_SIZE: usize = 16 << 20;
/// RNG seed: fixed so every run decodes the same bytes.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// xorshift64* (Marsaglia / Vigna): tiny, seeded, good enough for payloads
/// and mask keys.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let n = rest.len();
        rest.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
    }

    fn key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_le_bytes()
    }
}

/// One benchmark workload: `payloads` and the client frames carrying them.
struct Workload {
    size: usize,
    payloads: Vec<Bytes>,
    /// The masked frames, back to back, as a client would send them.
    wire: Vec<u8>,
}

impl Workload {
    fn new(size: usize, rng: &mut XorShift) -> Self {
        let n = (TARGET_BYTES / size).max(MIN_FRAMES);
        let mut payloads = Vec::with_capacity(n);
        let mut wire = Vec::with_capacity(n * (size + 14));
        for _ in 0..n {
            let mut p = vec![0u8; size];
            rng.fill(&mut p);
            put_client_frame(&mut wire, &p, rng.key());
            payloads.push(Bytes::from(p));
        }
        Workload {
            size,
            payloads,
            wire,
        }
    }

    fn frames(&self) -> usize {
        self.payloads.len()
    }

    fn payload_bytes(&self) -> u64 {
        (self.size * self.frames()) as u64
    }
}

/// Append a masked binary frame (fin=1, opcode 2). Masks with its own byte
/// loop so the check below does not rely on the crate's mask code.
fn put_client_frame(wire: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    wire.push(0x80 | 0x2);
    let len = payload.len();
    match len {
        0..=125 => wire.push(0x80 | len as u8),
        126..=65535 => {
            wire.push(0x80 | 126);
            wire.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            wire.push(0x80 | 127);
            wire.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    wire.extend_from_slice(&key);
    wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// An in-memory socket for tungstenite: reads from a borrowed slice (no copy
/// besides the one tungstenite makes into its read buffer), discards writes.
struct MemStream<'a> {
    rd: Cursor<&'a [u8]>,
}

impl Read for MemStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rd.read(buf)
    }
}

impl Write for MemStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tungstenite_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_SIZE))
        .max_frame_size(Some(MAX_SIZE))
}

/// Decode `wire` with our session, handing each message to `f`; returns the
/// number of messages.
fn decode_wshandler(wire: &[u8], mut f: impl FnMut(Message)) -> usize {
    let mut session = Session::new(
        Limits {
            max_message_size: MAX_SIZE,
        },
        None,
    );
    let mut out = OutQueue::default();
    let mut buf = BytesMut::from(wire);
    let mut count = 0;
    while let Some(msg) = session.read(&mut buf, &mut out).unwrap() {
        f(msg);
        count += 1;
    }
    count
}

/// Decode the first `n` messages of `wire` with tungstenite, handing each to `f`.
fn decode_tungstenite(wire: &[u8], n: usize, mut f: impl FnMut(tungstenite::Message)) {
    let stream = MemStream {
        rd: Cursor::new(wire),
    };
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, Some(tungstenite_config()));
    for _ in 0..n {
        f(ws.read().unwrap());
    }
}

/// Both decoders must return exactly the generated payloads, in order.
fn check_decoders_agree(w: &Workload) {
    let mut ours = Vec::with_capacity(w.frames());
    let count = decode_wshandler(&w.wire, |m| match m {
        Message::Binary(b) => ours.push(b),
        other => panic!("wshandler: unexpected message {other:?}"),
    });
    assert_eq!(
        count,
        w.frames(),
        "wshandler message count, size {}",
        w.size
    );
    assert!(
        ours == w.payloads,
        "wshandler payloads differ, size {}",
        w.size
    );

    let mut theirs = Vec::with_capacity(w.frames());
    decode_tungstenite(&w.wire, w.frames(), |m| match m {
        tungstenite::Message::Binary(b) => theirs.push(b),
        other => panic!("tungstenite: unexpected message {other:?}"),
    });
    assert!(
        theirs == w.payloads,
        "tungstenite payloads differ, size {}",
        w.size
    );
}

fn workloads() -> Vec<Workload> {
    let mut rng = XorShift::new(SEED);
    SIZES.iter().map(|&s| Workload::new(s, &mut rng)).collect()
}

fn bench_parse_unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_unmask");
    for w in &workloads() {
        check_decoders_agree(w);
        g.throughput(Throughput::Bytes(w.payload_bytes()));
        g.bench_with_input(BenchmarkId::new("wshandler", w.size), w, |b, w| {
            b.iter(|| {
                let n = decode_wshandler(&w.wire, |m| {
                    black_box(m);
                });
                assert_eq!(n, w.frames());
            })
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", w.size), w, |b, w| {
            b.iter(|| {
                decode_tungstenite(&w.wire, w.frames(), |m| {
                    black_box(m);
                })
            })
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for w in &workloads() {
        g.throughput(Throughput::Bytes(w.payload_bytes()));
        g.bench_with_input(BenchmarkId::new("wshandler", w.size), w, |b, w| {
            b.iter(|| {
                for p in &w.payloads {
                    black_box(frame::encode(OpCode::Binary, false, p));
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", w.size), w, |b, w| {
            b.iter(|| {
                for p in &w.payloads {
                    // `Bytes` clone: a refcount bump, not a copy.
                    let f = Frame::message(p.clone(), TOpCode::Data(Data::Binary), true);
                    let mut out = Vec::with_capacity(f.len());
                    f.format(&mut out).unwrap();
                    black_box(out);
                }
            })
        });
    }
    g.finish();
}

fn bench_mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    let mut rng = XorShift::new(SEED ^ 0x6D61_736B);
    for &size in &SIZES {
        let mut buf = vec![0u8; size];
        rng.fill(&mut buf);
        let key = rng.key();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("word", size), |b| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), black_box(key), 0))
        });
        g.bench_function(BenchmarkId::new("bytewise", size), |b| {
            b.iter(|| mask::apply_mask_bytewise(black_box(&mut buf), black_box(key), 0))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse_unmask, bench_encode, bench_mask);
criterion_main!(benches);
