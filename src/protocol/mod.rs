//! The WebSocketHandler JSON protocol as a codec: message kinds, error codes,
//! topics, the validating scan and reply building. Pure functions over
//! bytes: it imports nothing above it. The per-message logic that uses it
//! lives with the shard that owns the connection (`shard::handlers`, one
//! file per message family); the wire format is written down in
//! `docs/protocol.md`.
//!
//! Parsing is one validating scan ([`scan`]) that leaves spans into the
//! message buffer; replies on the hot path are written field by field
//! ([`json`]).

pub mod json;
pub mod kind;
pub mod scan;
pub mod stream;
pub mod topic;

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The text was not JSON.
    InvalidJson,
    /// No `type`, or one the server does not know.
    UnknownType,
    /// The message is for a feature switched off in the config.
    FeatureDisabled,
    /// A required field is missing or has the wrong type.
    InvalidMessage,
    /// Authentication is required first.
    Unauthenticated,
    /// `stream_data`/`stream_end` for a stream that was never started.
    UnknownStream,
    /// A gap or repeat in a stream's `sequenceNumber`.
    StreamSequence,
    /// The client type or credential may not do this (e.g. `register` from
    /// a non-service, a handshake widening the authenticated client type).
    Forbidden,
    /// JSON nested deeper than `max_json_depth`.
    TooDeep,
    /// A per-connection bound was reached (subscriptions, streams, pending
    /// requests) or a field is longer than its limit; `limit` names it.
    LimitExceeded,
    /// A `response`/`rpc_response` whose `requestId` names no request the
    /// server sent to this connection.
    UnknownRequest,
    /// The store could not take the record (disk full, I/O error); nothing
    /// was stored. The detail is in the server's log, not sent.
    StorageUnavailable,
    /// The connection's credential expired; `closeIn` says how many seconds
    /// it has to send `refresh` before it is closed with 4001.
    TokenExpired,
    /// A credential presented at the upgrade was refused; the connection is
    /// closed with 4003 (do not retry with the same credential).
    AuthFailed,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its index).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::FeatureDisabled,
        ErrorCode::InvalidMessage,
        ErrorCode::Unauthenticated,
        ErrorCode::UnknownStream,
        ErrorCode::StreamSequence,
        ErrorCode::Forbidden,
        ErrorCode::TooDeep,
        ErrorCode::LimitExceeded,
        ErrorCode::UnknownRequest,
        ErrorCode::StorageUnavailable,
        ErrorCode::TokenExpired,
        ErrorCode::AuthFailed,
    ];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FeatureDisabled => "feature_disabled",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::UnknownStream => "unknown_stream",
            ErrorCode::StreamSequence => "stream_sequence",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::AuthFailed => "auth_failed",
        }
    }
}

/// The server's version, sent in `welcome`.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
