//! The sans-IO WebSocket layer: bytes in, messages and frames out.
//!
//! Nothing here owns a socket. The drivers in [`crate::shard`] feed read
//! buffers in and write what [`session::OutQueue`] holds; tests, benchmarks
//! and fuzz targets drive the same code with plain byte slices.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade request and its responses.
//! - [`frame`]: frame header parsing and server frame encoding.
//! - [`mask`]: word-at-a-time unmasking.
//! - [`utf8`]: incremental UTF-8 validation (fail fast).
//! - [`close`]: close codes.
//! - [`deflate`]: permessage-deflate (RFC 7692).
//! - [`session`]: the state machine tying them together.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod session;
pub mod utf8;

pub use session::{Limits, Message, OutQueue, Session};

/// A peer broke a rule of RFC 6455 / RFC 7692. Each variant maps to the close
/// code the connection is failed with ([`ProtocolError::close_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// RSV2/RSV3 set, or RSV1 without permessage-deflate or on a non-first frame.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3–7 or 0xB–0xF.
    #[error("reserved opcode {0:#x}")]
    BadOpcode(u8),
    /// A 64-bit length with the top bit set.
    #[error("invalid frame length")]
    BadLength,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame too long ({0} bytes)")]
    ControlTooLong(u64),
    /// Client frames must be masked (RFC 6455 §5.1).
    #[error("unmasked client frame")]
    UnmaskedFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is in progress.
    #[error("expected a continuation frame")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload or a code that may not be sent.
    #[error("invalid close frame")]
    BadCloseFrame,
    /// A text message (or close reason) that is not UTF-8.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A compressed message that does not inflate.
    #[error("invalid deflate data")]
    BadDeflate,
    /// A message over `max_payload_size` (after reassembly and inflation).
    #[error("message too big: {size} bytes, limit {max_size}")]
    MessageTooBig {
        /// Size seen so far.
        size: usize,
        /// The configured limit.
        max_size: usize,
    },
}

impl ProtocolError {
    /// The close code a connection failed with this error is closed with.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => close::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } => close::TOO_BIG,
            _ => close::PROTOCOL_ERROR,
        }
    }
}
