//! Label values as enum indexes: each metric with a label keeps one counter
//! per variant in a fixed array, and the name is looked up only when a
//! scrape writes the text.

use crate::protocol::kind::{MsgType, ALL as MSG_TYPES};

/// Declares a label enum with its `COUNT`, `ALL` and wire names.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $v,)*
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// How many values.
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)*
                }
            }
        }
    };
}

label! {
    /// Why a connection was refused (`wshandler_connections_rejected_total`).
    RejectReason {
        /// 503 at `max_connections`.
        MaxConnections = "max_connections",
        /// A request that is not a valid WebSocket upgrade (4xx).
        BadHandshake = "bad_handshake",
        /// A credential refused (at the upgrade, 4003, or an `auth` that
        /// used up its attempts).
        AuthFailed = "auth_failed",
        /// Not authenticated within `auth_timeout`.
        AuthTimeout = "auth_timeout",
        /// Refused by the `[limits]` checks (origin, rate, per-address).
        Admission = "admission",
        /// Arrived during shutdown.
        ShuttingDown = "shutting_down",
        /// The TLS handshake failed.
        Tls = "tls",
    }
}

label! {
    /// A close code (`wshandler_connection_closes_total{code}`).
    CloseLabel {
        /// 1000
        Normal = "1000",
        /// 1001
        GoingAway = "1001",
        /// 1002
        Protocol = "1002",
        /// 1003
        Unsupported = "1003",
        /// No close frame: the peer dropped the connection.
        Abnormal = "1006",
        /// 1007
        InvalidData = "1007",
        /// 1008
        Policy = "1008",
        /// 1009
        TooBig = "1009",
        /// 1011
        Internal = "1011",
        /// 4001 token expired
        TokenExpired = "4001",
        /// 4002 replaced by a newer connection of the device
        Replaced = "4002",
        /// 4003 credential refused
        AuthRefused = "4003",
        /// Any other code.
        Other = "other",
    }
}

impl CloseLabel {
    /// The label for close code `code` (`None`: no close frame).
    pub fn of(code: Option<u16>) -> CloseLabel {
        match code {
            Some(1000) => CloseLabel::Normal,
            Some(1001) => CloseLabel::GoingAway,
            Some(1002) => CloseLabel::Protocol,
            Some(1003) => CloseLabel::Unsupported,
            None | Some(1006) => CloseLabel::Abnormal,
            Some(1007) => CloseLabel::InvalidData,
            Some(1008) => CloseLabel::Policy,
            Some(1009) => CloseLabel::TooBig,
            Some(1011) => CloseLabel::Internal,
            Some(4001) => CloseLabel::TokenExpired,
            Some(4002) => CloseLabel::Replaced,
            Some(4003) => CloseLabel::AuthRefused,
            Some(_) => CloseLabel::Other,
        }
    }
}

/// A received message's type label: every [`MsgType`], then `binary`
/// (binary frames: streams, echo) and `invalid` (not JSON, no or unknown
/// type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InLabel {
    /// A protocol message of this type.
    Type(MsgType),
    /// A binary frame.
    Binary,
    /// Text that is not a message of a known type (and, in echo mode,
    /// every text message).
    Invalid,
}

impl InLabel {
    /// How many label values.
    pub const COUNT: usize = MSG_TYPES.len() + 2;

    /// The counter index.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            InLabel::Type(t) => t as usize,
            InLabel::Binary => MSG_TYPES.len(),
            InLabel::Invalid => MSG_TYPES.len() + 1,
        }
    }

    /// The label value of counter `i`.
    pub fn name(i: usize) -> &'static str {
        match MSG_TYPES.get(i) {
            Some(t) => t.as_str(),
            None if i == MSG_TYPES.len() => "binary",
            None => "invalid",
        }
    }
}

label! {
    /// A sent message's type label (`wshandler_messages_sent_total{type}`).
    OutLabel {
        /// `welcome`
        Welcome = "welcome",
        /// `heartbeat_response`
        HeartbeatResponse = "heartbeat_response",
        /// `handshake_response`
        HandshakeResponse = "handshake_response",
        /// `auth_response`
        AuthResponse = "auth_response",
        /// `refresh_response`
        RefreshResponse = "refresh_response",
        /// `data_response`
        DataResponse = "data_response",
        /// `publish` (deliveries to subscribers)
        Publish = "publish",
        /// `publish_response`
        PublishResponse = "publish_response",
        /// `subscribe_response`
        SubscribeResponse = "subscribe_response",
        /// `unsubscribe_response`
        UnsubscribeResponse = "unsubscribe_response",
        /// `unsubscribed` (permission removed)
        Unsubscribed = "unsubscribed",
        /// `register_response`
        RegisterResponse = "register_response",
        /// `unregistered`
        Unregistered = "unregistered",
        /// `request` (server-issued or routed)
        Request = "request",
        /// `rpc_call` (routed)
        RpcCall = "rpc_call",
        /// `response`
        Response = "response",
        /// `rpc_response`
        RpcResponse = "rpc_response",
        /// `stream_start`, `stream_data`, `stream_end` and their responses
        Stream = "stream",
        /// `token_expired`, `error`
        Error = "error",
        /// A broadcast (any payload).
        Broadcast = "broadcast",
        /// A message sent to one client or device by the API.
        Direct = "direct",
        /// Binary frames (streams, echo).
        Binary = "binary",
        /// Anything else (echo text).
        Other = "other",
    }
}

impl OutLabel {
    /// The label of a JSON text our reply builders made: they all start
    /// with `{"type":"<name>"`. No allocation: a match on the name bytes.
    #[inline]
    pub fn of_json(payload: &[u8]) -> OutLabel {
        const P: &[u8] = b"{\"type\":\"";
        let Some(rest) = payload.strip_prefix(P) else {
            return OutLabel::Other;
        };
        let end = rest.iter().position(|b| *b == b'"').unwrap_or(rest.len());
        match &rest[..end] {
            b"welcome" => OutLabel::Welcome,
            b"heartbeat_response" => OutLabel::HeartbeatResponse,
            b"handshake_response" => OutLabel::HandshakeResponse,
            b"auth_response" => OutLabel::AuthResponse,
            b"refresh_response" => OutLabel::RefreshResponse,
            b"data_response" => OutLabel::DataResponse,
            b"publish" => OutLabel::Publish,
            b"publish_response" => OutLabel::PublishResponse,
            b"subscribe_response" => OutLabel::SubscribeResponse,
            b"unsubscribe_response" => OutLabel::UnsubscribeResponse,
            b"unsubscribed" => OutLabel::Unsubscribed,
            b"register_response" | b"unregister_response" => OutLabel::RegisterResponse,
            b"unregistered" => OutLabel::Unregistered,
            b"request" => OutLabel::Request,
            b"rpc_call" => OutLabel::RpcCall,
            b"response" => OutLabel::Response,
            b"rpc_response" => OutLabel::RpcResponse,
            b"stream_start"
            | b"stream_data"
            | b"stream_end"
            | b"stream_start_response"
            | b"stream_end_response" => OutLabel::Stream,
            b"error" | b"token_expired" => OutLabel::Error,
            _ => OutLabel::Other,
        }
    }
}

label! {
    /// Which kind of call a latency belongs to.
    CallKindLabel {
        /// `request` (endpoints).
        Request = "request",
        /// `rpc_call` (methods).
        Rpc = "rpc",
    }
}

label! {
    /// How a call ended.
    Outcome {
        /// Answered with data.
        Ok = "ok",
        /// Answered with an error (including "no such endpoint").
        Error = "error",
        /// No answer within `request_timeout`.
        Timeout = "timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_types_are_read_from_the_prefix() {
        assert_eq!(
            OutLabel::of_json(br#"{"type":"data_response","success":true}"#),
            OutLabel::DataResponse
        );
        assert_eq!(OutLabel::of_json(br#"{"type":"error"}"#), OutLabel::Error);
        assert_eq!(OutLabel::of_json(br#"{"a":1}"#), OutLabel::Other);
        assert_eq!(OutLabel::of_json(br#"{"type":"nope""#), OutLabel::Other);
        assert_eq!(OutLabel::of_json(b""), OutLabel::Other);
    }

    #[test]
    fn in_labels_name_every_index() {
        for (i, t) in MSG_TYPES.iter().enumerate() {
            assert_eq!(InLabel::Type(*t).index(), i);
            assert_eq!(InLabel::name(i), t.as_str());
        }
        assert_eq!(InLabel::name(InLabel::Binary.index()), "binary");
        assert_eq!(InLabel::name(InLabel::Invalid.index()), "invalid");
        assert_eq!(InLabel::Invalid.index() + 1, InLabel::COUNT);
    }

    #[test]
    fn close_codes_map_to_labels() {
        assert_eq!(CloseLabel::of(None).as_str(), "1006");
        assert_eq!(CloseLabel::of(Some(4002)).as_str(), "4002");
        assert_eq!(CloseLabel::of(Some(3999)), CloseLabel::Other);
    }
}
