//! Binary stream frames: stream data without base64.
//!
//! A binary WebSocket message carrying stream data starts with a small
//! header (all integers big-endian):
//!
//! ```text
//! byte 0      0x01 (format version)
//! bytes 1-2   length L of the stream id, in bytes (1..=256)
//! bytes 3..   the stream id, UTF-8, L bytes
//! next 8      sequenceNumber (u64)
//! rest        the chunk's bytes
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::json::Obj;

/// The `stream_start` message a server stream begins with.
pub fn start_message(stream_id: &str, stream_type: &str) -> Bytes {
    Obj::typed("stream_start")
        .str("streamId", stream_id)
        .str("streamType", stream_type)
        .finish()
}

/// One `stream_data` chunk of a server stream (`sequenceNumber` from 1).
pub fn data_message(stream_id: &str, data: &serde_json::Value, sequence: u64) -> Bytes {
    Obj::typed("stream_data")
        .str("streamId", stream_id)
        .value("data", data)
        .u64("sequenceNumber", sequence)
        .finish()
}

/// The `stream_end` message closing a server stream of `chunks` chunks.
pub fn end_message(stream_id: &str, chunks: u64) -> Bytes {
    Obj::typed("stream_end")
        .str("streamId", stream_id)
        .u64("chunks", chunks)
        .finish()
}

/// Format version byte.
pub const VERSION: u8 = 0x01;

/// A decoded binary stream frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryChunk<'a> {
    /// The stream id.
    pub stream_id: &'a str,
    /// The sequence number.
    pub sequence: u64,
    /// The chunk's payload.
    pub data: &'a [u8],
}

/// Why a binary message is not a stream frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryChunkError {
    /// Too short or wrong version byte.
    #[error("binary messages must be stream frames (version byte 0x01, id length, id, u64 sequence, data)")]
    Malformed,
    /// The id is empty, too long or not UTF-8.
    #[error("invalid stream id in binary stream frame")]
    BadId,
}

/// Parse a binary stream frame.
pub fn parse(b: &[u8]) -> Result<BinaryChunk<'_>, BinaryChunkError> {
    if b.len() < 3 || b[0] != VERSION {
        return Err(BinaryChunkError::Malformed);
    }
    let l = u16::from_be_bytes([b[1], b[2]]) as usize;
    if l == 0 || l > 256 {
        return Err(BinaryChunkError::BadId);
    }
    if b.len() < 3 + l + 8 {
        return Err(BinaryChunkError::Malformed);
    }
    let stream_id = std::str::from_utf8(&b[3..3 + l]).map_err(|_| BinaryChunkError::BadId)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[3 + l..3 + l + 8]);
    Ok(BinaryChunk {
        stream_id,
        sequence: u64::from_be_bytes(seq),
        data: &b[3 + l + 8..],
    })
}

/// Build a binary stream frame.
pub fn encode(stream_id: &str, sequence: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(11 + stream_id.len() + data.len());
    b.put_u8(VERSION);
    b.put_u16(stream_id.len() as u16);
    b.extend_from_slice(stream_id.as_bytes());
    b.put_u64(sequence);
    b.extend_from_slice(data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = encode("upload_1", 7, b"chunk");
        let c = parse(&f).unwrap();
        assert_eq!(
            (c.stream_id, c.sequence, c.data),
            ("upload_1", 7, &b"chunk"[..])
        );
        assert_eq!(parse(&f[..5]), Err(BinaryChunkError::Malformed));
        assert_eq!(parse(b"\x02abc"), Err(BinaryChunkError::Malformed));
        assert_eq!(parse(b"\x01\x00\x00aaaaaaaa"), Err(BinaryChunkError::BadId));
    }
}
