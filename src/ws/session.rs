//! The per-connection WebSocket state machine, after the handshake.
//!
//! Sans-IO: [`Session::read`] takes the connection's read buffer and returns
//! whole messages, pushing any frames the protocol itself owes the peer (pong,
//! close reply) onto an [`OutQueue`]. It never touches a socket, so the same
//! code runs under the io_uring and the epoll drivers, in unit tests, in
//! property tests and under the fuzzer.
//!
//! Zero copy: a single-frame message is split off the read buffer, unmasked in
//! place and frozen into `Bytes`. Only fragmented or compressed messages are
//! copied (reassembled or inflated into a fresh buffer).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::close::{self, BadClose, CloseFrame};
use super::deflate::Deflate;
use super::frame::{self, FrameHeader, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;
use super::ProtocolError;

/// A complete data message, or the peer's close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (validated UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The peer sent a close frame; the reply is already queued.
    Close(CloseFrame),
}

/// Outbound frames waiting to be written, counted in bytes.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

impl OutQueue {
    /// Queue an encoded frame (or part of one).
    pub fn push(&mut self, b: Bytes) {
        self.bytes += b.len();
        self.frames.push_back(b);
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Move up to `max` buffers into `out` for one vectored write.
    pub fn take_batch(&mut self, out: &mut Vec<Bytes>, max: usize) {
        while out.len() < max {
            match self.frames.pop_front() {
                Some(b) => out.push(b),
                None => break,
            }
        }
    }

    /// After a write of `written` bytes from `batch`, put what was not
    /// written back at the front, in order.
    pub fn written(&mut self, batch: &mut Vec<Bytes>, mut written: usize) {
        let mut rest = Vec::new();
        for mut b in batch.drain(..) {
            if written >= b.len() {
                written -= b.len();
                self.bytes -= b.len();
            } else {
                if written > 0 {
                    b.advance(written);
                    self.bytes -= written;
                    written = 0;
                }
                rest.push(b);
            }
        }
        for b in rest.into_iter().rev() {
            self.frames.push_front(b);
        }
    }

    /// Drop everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

impl Extend<Bytes> for OutQueue {
    fn extend<T: IntoIterator<Item = Bytes>>(&mut self, iter: T) {
        for b in iter {
            self.push(b);
        }
    }
}

/// Limits a session enforces on what the peer sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (after reassembly and inflation), in bytes.
    pub max_message_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// Close handshake finished (or failed): nothing more is read.
    Closed,
}

/// A fragmented or compressed message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
}

/// A frame whose payload is only partly in the buffer.
#[derive(Debug)]
struct InFrame {
    /// Payload bytes already unmasked in place.
    unmasked: usize,
    /// UTF-8 state over this frame's bytes so far (text only).
    probe: Utf8Validator,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    state: State,
    limits: Limits,
    partial: Option<Partial>,
    utf8: Utf8Validator,
    in_frame: Option<InFrame>,
    deflate: Option<Deflate>,
}

impl Session {
    /// A session after a successful handshake; `deflate` if it was agreed.
    pub fn new(limits: Limits, deflate: Option<Deflate>) -> Self {
        Session {
            state: State::Open,
            limits,
            partial: None,
            utf8: Utf8Validator::new(),
            in_frame: None,
            deflate,
        }
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether the close handshake is over (or a close was sent).
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// Whether nothing more will be read.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// How many bytes the buffer must hold before the next frame can be
    /// parsed: a hint for sizing the next read.
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match FrameHeader::parse(buf) {
            Ok(Some(h)) => h
                .header_len
                .saturating_add(h.payload_len.min(self.limits.max_message_size as u64) as usize),
            _ => 14,
        }
    }

    /// Parse frames from `buf` until a message is complete (`Ok(Some)`) or
    /// more bytes are needed (`Ok(None)`). Control replies go to `out`.
    ///
    /// On `Err` the caller sends `encode_close(err.close_code(), ..)` via
    /// [`Session::fail`] and stops reading.
    pub fn read(
        &mut self,
        buf: &mut BytesMut,
        out: &mut OutQueue,
    ) -> Result<Option<Message>, ProtocolError> {
        loop {
            if self.state == State::Closed {
                return Ok(None);
            }
            let Some(h) = FrameHeader::parse(buf)? else {
                return Ok(None);
            };
            let Some(key) = h.mask else {
                return Err(ProtocolError::UnmaskedFrame);
            };
            self.check_frame(&h)?;
            let len = h.payload_len as usize;
            if buf.len() < h.header_len + len {
                self.progress_partial(&h, buf)?;
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(len);
            let done = self.in_frame.take().map_or(0, |f| f.unmasked);
            apply_mask(&mut payload[done..], key, done);
            if let Some(msg) = self.on_frame(h, payload, out)? {
                return Ok(Some(msg));
            }
        }
    }

    fn check_frame(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        let max = self.limits.max_message_size as u64;
        match h.opcode {
            OpCode::Continue => {
                let Some(p) = &self.partial else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if h.rsv1 {
                    return Err(ProtocolError::ReservedBits);
                }
                if !p.compressed && p.data.len() as u64 + h.payload_len > max {
                    return Err(ProtocolError::MessageTooBig {
                        size: (p.data.len() as u64 + h.payload_len) as usize,
                        max_size: max as usize,
                    });
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if h.rsv1 && self.deflate.is_none() {
                    return Err(ProtocolError::ReservedBits);
                }
                if !h.rsv1 && h.payload_len > max {
                    return Err(ProtocolError::MessageTooBig {
                        size: h.payload_len.min(usize::MAX as u64) as usize,
                        max_size: max as usize,
                    });
                }
                // A compressed frame can't be larger than the limit either:
                // deflate never expands by more than a few bytes per block.
                if h.rsv1 && h.payload_len > max + 1024 {
                    return Err(ProtocolError::MessageTooBig {
                        size: h.payload_len.min(usize::MAX as u64) as usize,
                        max_size: max as usize,
                    });
                }
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if h.rsv1 {
                    return Err(ProtocolError::ReservedBits);
                }
            }
        }
        Ok(())
    }

    /// Unmask the part of a frame already received, in place, and check
    /// it for bad UTF-8 if it belongs to an uncompressed text message, so a
    /// bad byte fails the message before the rest of the frame arrives.
    /// Each byte is unmasked once however many reads the frame takes.
    fn progress_partial(
        &mut self,
        h: &FrameHeader,
        buf: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        let text = match h.opcode {
            OpCode::Text => !h.rsv1,
            OpCode::Continue => self
                .partial
                .as_ref()
                .is_some_and(|p| p.text && !p.compressed),
            _ => false,
        };
        let avail = buf.len().saturating_sub(h.header_len);
        let pf = self.in_frame.get_or_insert_with(|| InFrame {
            unmasked: 0,
            probe: if h.opcode == OpCode::Continue {
                self.utf8.clone()
            } else {
                Utf8Validator::new()
            },
        });
        if avail <= pf.unmasked {
            return Ok(());
        }
        let chunk = &mut buf[h.header_len + pf.unmasked..h.header_len + avail];
        apply_mask(chunk, h.mask.unwrap_or_default(), pf.unmasked);
        pf.unmasked = avail;
        if text {
            pf.probe
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        h: FrameHeader,
        payload: BytesMut,
        out: &mut OutQueue,
    ) -> Result<Option<Message>, ProtocolError> {
        match h.opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    out.push(frame::encode(OpCode::Pong, false, &payload));
                }
                Ok(None)
            }
            OpCode::Pong => Ok(None),
            OpCode::Close => {
                let cf = close::parse_close_payload(&payload).map_err(|e| match e {
                    BadClose::Protocol => ProtocolError::BadCloseFrame,
                    BadClose::Utf8 => ProtocolError::InvalidUtf8,
                })?;
                if self.state == State::Open {
                    let code = cf.code.unwrap_or(close::NORMAL);
                    out.push(frame::encode_close(code, ""));
                }
                self.state = State::Closed;
                Ok(Some(Message::Close(cf)))
            }
            OpCode::Text | OpCode::Binary => {
                let text = h.opcode == OpCode::Text;
                if h.fin && !h.rsv1 {
                    if text {
                        std::str::from_utf8(&payload).map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                    if self.state != State::Open {
                        return Ok(None);
                    }
                    let b = payload.freeze();
                    return Ok(Some(if text {
                        Message::Text(b)
                    } else {
                        Message::Binary(b)
                    }));
                }
                self.utf8 = Utf8Validator::new();
                self.partial = Some(Partial {
                    text,
                    compressed: h.rsv1,
                    data: Vec::new(),
                });
                self.append(payload, h.fin)
            }
            OpCode::Continue => self.append(payload, h.fin),
        }
    }

    fn append(&mut self, payload: BytesMut, fin: bool) -> Result<Option<Message>, ProtocolError> {
        let max = self.limits.max_message_size;
        let p = self.partial.as_mut().expect("checked by check_frame");
        let start = p.data.len();
        if p.compressed {
            let d = self.deflate.as_mut().expect("rsv1 only with deflate");
            d.decompress(&payload, fin, &mut p.data, max)?;
        } else {
            p.data.extend_from_slice(&payload);
        }
        if p.text {
            self.utf8
                .feed(&p.data[start..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !fin {
            return Ok(None);
        }
        let p = self.partial.take().expect("present");
        if p.text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if self.state != State::Open {
            return Ok(None);
        }
        let b = Bytes::from(p.data);
        Ok(Some(if p.text {
            Message::Text(b)
        } else {
            Message::Binary(b)
        }))
    }

    /// Encode a data message for this connection (compressed if agreed and
    /// the payload is at least `threshold` bytes) and queue it.
    pub fn send(
        &mut self,
        text: bool,
        payload: Bytes,
        threshold: usize,
        out: &mut impl Extend<Bytes>,
    ) {
        let opcode = if text { OpCode::Text } else { OpCode::Binary };
        match &mut self.deflate {
            Some(d) if payload.len() >= threshold => {
                let c = d.compress(&payload);
                frame::encode_shared(opcode, true, Bytes::from(c), out);
            }
            _ => frame::encode_shared(opcode, false, payload, out),
        }
    }

    /// Start the closing handshake with `code` (no-op if already closing).
    pub fn close(&mut self, code: u16, reason: &str, out: &mut OutQueue) {
        if self.state == State::Open {
            out.push(frame::encode_close(code, reason));
            self.state = State::CloseSent;
        }
    }

    /// Fail the connection after a protocol error: queue the matching close.
    pub fn fail(&mut self, err: &ProtocolError, out: &mut OutQueue) {
        if self.state == State::Open {
            out.push(frame::encode_close(err.close_code(), &err.to_string()));
        }
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encode a masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![(fin as u8) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Split `payload` into fragments at the given cut points and encode them.
    fn encode_message(text: bool, payload: &[u8], cuts: &[usize], key: [u8; 4]) -> Vec<u8> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut out = Vec::new();
        let mut start = 0;
        let mut first = true;
        for &p in points.iter().chain(std::iter::once(&payload.len())) {
            if p < start || (p == start && p != payload.len()) {
                continue;
            }
            let last = p == payload.len();
            let op = if first {
                if text {
                    1
                } else {
                    2
                }
            } else {
                0
            };
            out.extend(client_frame(last, op, &payload[start..p], key));
            first = false;
            start = p;
            if last {
                break;
            }
        }
        out
    }

    fn session() -> Session {
        Session::new(
            Limits {
                max_message_size: 1 << 20,
            },
            None,
        )
    }

    /// Feed `wire` in chunks of the given sizes; collect messages.
    fn run(wire: &[u8], chunks: &[usize]) -> Result<Vec<Message>, ProtocolError> {
        let mut s = session();
        let mut out = OutQueue::default();
        let mut buf = BytesMut::new();
        let mut msgs = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = chunks
                .get(i)
                .copied()
                .unwrap_or(wire.len())
                .clamp(1, wire.len() - pos);
            i += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(m) = s.read(&mut buf, &mut out)? {
                msgs.push(m);
            }
        }
        Ok(msgs)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// encode → decode is the identity for any payloads, any
        /// fragmentation and any way the bytes are split across reads.
        #[test]
        fn round_trip(
            msgs in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..3000), prop::collection::vec(any::<usize>(), 0..5)), 1..6),
            chunks in prop::collection::vec(1usize..2000, 0..40),
            key in any::<[u8; 4]>(),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (text, bytes, cuts) in &msgs {
                let payload = if *text {
                    String::from_utf8_lossy(bytes).into_owned().into_bytes()
                } else {
                    bytes.clone()
                };
                wire.extend(encode_message(*text, &payload, cuts, key));
                expected.push(if *text {
                    Message::Text(Bytes::from(payload))
                } else {
                    Message::Binary(Bytes::from(payload))
                });
            }
            prop_assert_eq!(run(&wire, &chunks).unwrap(), expected);
        }

        /// Arbitrary bytes never panic; a failure is a ProtocolError with a
        /// close code the RFC allows.
        #[test]
        fn arbitrary_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..4096), chunks in prop::collection::vec(1usize..512, 0..20)) {
            if let Err(e) = run(&data, &chunks) {
                prop_assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
            }
        }
    }

    #[test]
    fn ping_is_answered_and_close_is_echoed() {
        let mut s = session();
        let mut out = OutQueue::default();
        let mut buf = BytesMut::from(&client_frame(true, 9, b"hi", [1, 2, 3, 4])[..]);
        assert_eq!(s.read(&mut buf, &mut out).unwrap(), None);
        assert_eq!(out.bytes(), 4);
        buf.extend_from_slice(&client_frame(true, 8, &1000u16.to_be_bytes(), [1, 2, 3, 4]));
        assert!(matches!(
            s.read(&mut buf, &mut out).unwrap(),
            Some(Message::Close(_))
        ));
        assert!(s.is_closed());
    }

    #[test]
    fn out_queue_requeues_partial_writes_in_order() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::from_static(b"defg"));
        q.push(Bytes::from_static(b"h"));
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 8);
        q.written(&mut batch, 5);
        assert_eq!(q.bytes(), 3);
        q.take_batch(&mut batch, 8);
        assert_eq!(
            batch,
            vec![Bytes::from_static(b"fg"), Bytes::from_static(b"h")]
        );
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut s = Session::new(
            Limits {
                max_message_size: 100,
            },
            None,
        );
        let mut out = OutQueue::default();
        let f = client_frame(true, 2, &[0; 200], [0; 4]);
        let mut buf = BytesMut::from(&f[..8]);
        assert!(matches!(
            s.read(&mut buf, &mut out),
            Err(ProtocolError::MessageTooBig { .. })
        ));
    }

    #[test]
    fn bad_utf8_fails_before_the_frame_completes() {
        let mut s = session();
        let mut out = OutQueue::default();
        let mut payload = vec![b'a'; 100];
        payload.extend_from_slice(&[0xff; 100]);
        let f = client_frame(true, 1, &payload, [5, 6, 7, 8]);
        let mut buf = BytesMut::from(&f[..8 + 150]);
        assert_eq!(s.read(&mut buf, &mut out), Err(ProtocolError::InvalidUtf8));
    }
}
