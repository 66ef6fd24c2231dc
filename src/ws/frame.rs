//! Frame headers: parsing in place from a `BytesMut`, and encoding server frames.
//!
//! The parser looks at the first 2–14 bytes of the read buffer and either says
//! "need more bytes" (`Ok(None)`, nothing consumed) or returns a
//! [`FrameHeader`] that the session uses to split the payload off the buffer
//! as `Bytes` — the payload is never copied. Server frames are encoded once
//! into `Bytes`; cloning that handle is how one frame goes to many sockets.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continue,
    /// Text data.
    Text,
    /// Binary data.
    Binary,
    /// Close control frame.
    Close,
    /// Ping control frame.
    Ping,
    /// Pong control frame.
    Pong,
}

impl OpCode {
    /// Decode the low nibble of the first header byte.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => OpCode::Continue,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::BadOpcode(other)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continue => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header. `Debug` shows lengths only, never payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1: "this message is compressed" under permessage-deflate.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Header length in bytes (2..=14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Parse a header from the front of `buf`. `Ok(None)`: not enough bytes yet.
    ///
    /// Checks only what the header alone can tell: RSV2/RSV3, the opcode, the
    /// 64-bit length's top bit and control-frame rules. Masking, RSV1 and size
    /// limits depend on the session and are checked there.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let (payload_len, mut header_len) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(ProtocolError::BadLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if payload_len > 125 {
                return Err(ProtocolError::ControlTooLong(payload_len));
            }
        }
        let mask = if masked {
            if buf.len() < header_len + 4 {
                return Ok(None);
            }
            let mut k = [0u8; 4];
            k.copy_from_slice(&buf[header_len..header_len + 4]);
            header_len += 4;
            Some(k)
        } else {
            None
        };
        Ok(Some(FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
            header_len,
        }))
    }
}

/// Length of the header of an unmasked server frame carrying `len` bytes.
pub fn server_header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Write an unmasked (server) frame header into `out`.
pub fn put_header(out: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, len: usize) {
    let b0 = (fin as u8) << 7 | (rsv1 as u8) << 6 | opcode.as_u8();
    match len {
        0..=125 => {
            out.put_u8(b0);
            out.put_u8(len as u8);
        }
        126..=65535 => {
            out.put_u8(b0);
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(b0);
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// Encode a whole unmasked frame (header + payload) into one `Bytes`.
pub fn encode(opcode: OpCode, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(server_header_len(payload.len()) + payload.len());
    put_header(&mut out, true, rsv1, opcode, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Payloads at least this long are queued as a separate `Bytes` after their
/// header instead of being copied next to it (writev sends both in one call).
pub const COPY_THRESHOLD: usize = 4096;

/// Encode a frame whose payload is already `Bytes`: small payloads are copied
/// into one buffer, large ones are shared as they are (zero-copy echo/fan-out).
pub fn encode_shared(opcode: OpCode, rsv1: bool, payload: Bytes, out: &mut impl Extend<Bytes>) {
    if payload.len() < COPY_THRESHOLD {
        out.extend(std::iter::once(encode(opcode, rsv1, &payload)));
    } else {
        let mut hdr = BytesMut::with_capacity(10);
        put_header(&mut hdr, true, rsv1, opcode, payload.len());
        out.extend([hdr.freeze(), payload]);
    }
}

/// Encode a close frame with `code` and a reason (truncated to fit 125 bytes
/// on a character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, false, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_needs_more() {
        assert_eq!(FrameHeader::parse(&[0x81]).unwrap(), None);
        assert_eq!(FrameHeader::parse(&[0x81, 0xFE, 0x01]).unwrap(), None);
        assert_eq!(FrameHeader::parse(&[0x81, 0x85, 1, 2, 3]).unwrap(), None);
    }

    #[test]
    fn parse_lengths() {
        let h = FrameHeader::parse(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 256);
        assert_eq!(h.header_len, 8);
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        let mut b = vec![0x82, 0x7F];
        b.extend_from_slice(&70000u64.to_be_bytes());
        let h = FrameHeader::parse(&b).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len, h.mask), (70000, 10, None));
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(
            FrameHeader::parse(&[0xA1, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            FrameHeader::parse(&[0x83, 0x80]),
            Err(ProtocolError::BadOpcode(3))
        );
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControl)
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 0xFE, 0, 126]),
            Err(ProtocolError::ControlTooLong(126))
        );
        let mut b = vec![0x82, 0xFF];
        b.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(FrameHeader::parse(&b), Err(ProtocolError::BadLength));
    }

    #[test]
    fn encode_round_trip_headers() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 100_000] {
            let payload = vec![7u8; len];
            let f = encode(OpCode::Binary, false, &payload);
            let h = FrameHeader::parse(&f).unwrap().unwrap();
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(h.header_len + len, f.len());
            assert!(h.fin && h.mask.is_none());
        }
    }

    #[test]
    fn close_reason_truncated_on_char_boundary() {
        let reason = "é".repeat(100);
        let f = encode_close(1000, &reason);
        assert!(f.len() <= 127);
        let h = FrameHeader::parse(&f).unwrap().unwrap();
        assert!(std::str::from_utf8(&f[h.header_len + 2..]).is_ok());
    }
}
