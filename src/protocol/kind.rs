//! Message types a client may send, and the two decisions every type needs:
//! which feature it belongs to and whether it is allowed before
//! authentication. The type and its wire name are one line of the
//! `msg_types!` table; both decisions are exhaustive matches, so a new
//! variant does not compile until someone has decided them (and routed it:
//! the router's match in `shard::handlers` is exhaustive too).

/// Declares [`MsgType`], its wire names and the list of all of them from
/// one table, so a new type is one line here: the name and the variant
/// cannot drift apart, and `ALL` cannot miss one.
macro_rules! msg_types {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A client message's `type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum MsgType {
            $($(#[$doc])* $variant,)*
        }

        /// Every type, in declaration order.
        pub const ALL: &[MsgType] = &[$(MsgType::$variant,)*];

        impl MsgType {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(MsgType::$variant => $name,)*
                }
            }
        }
    };
}

msg_types! {
    /// `heartbeat`
    Heartbeat = "heartbeat",
    /// `handshake`
    Handshake = "handshake",
    /// `auth`
    Auth = "auth",
    /// `refresh` (a new credential before the current one expires)
    Refresh = "refresh",
    /// `data`
    Data = "data",
    /// `sensor_data` (every field but `type` is the data)
    SensorData = "sensor_data",
    /// `request`
    Request = "request",
    /// `rpc_call`
    RpcCall = "rpc_call",
    /// `response` (to a server-issued request)
    Response = "response",
    /// `rpc_response` (to a server-issued RPC)
    RpcResponse = "rpc_response",
    /// `register`
    Register = "register",
    /// `unregister`
    Unregister = "unregister",
    /// `subscribe`
    Subscribe = "subscribe",
    /// `unsubscribe`
    Unsubscribe = "unsubscribe",
    /// `publish`
    Publish = "publish",
    /// `stream_start`
    StreamStart = "stream_start",
    /// `stream_data`
    StreamData = "stream_data",
    /// `stream_end`
    StreamEnd = "stream_end",
}

/// A feature that `enable_*` settings switch off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `enable_request_response`
    RequestResponse,
    /// `enable_rpc`
    Rpc,
    /// `enable_pub_sub`
    PubSub,
    /// `enable_streaming`
    Streaming,
}

impl Feature {
    /// The name sent in `feature_disabled` errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::RequestResponse => "request-response",
            Feature::Rpc => "rpc",
            Feature::PubSub => "pub-sub",
            Feature::Streaming => "streaming",
        }
    }
}

impl MsgType {
    /// The type named `s`, if the protocol has it.
    pub fn parse(s: &str) -> Option<MsgType> {
        ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// The feature that must be on for this type.
    pub fn feature(self) -> Option<Feature> {
        match self {
            MsgType::Request => Some(Feature::RequestResponse),
            MsgType::RpcCall => Some(Feature::Rpc),
            MsgType::Subscribe | MsgType::Unsubscribe | MsgType::Publish => Some(Feature::PubSub),
            MsgType::StreamStart | MsgType::StreamData | MsgType::StreamEnd => {
                Some(Feature::Streaming)
            }
            MsgType::Heartbeat
            | MsgType::Handshake
            | MsgType::Auth
            | MsgType::Refresh
            | MsgType::Data
            | MsgType::SensorData
            | MsgType::Response
            | MsgType::RpcResponse
            | MsgType::Register
            | MsgType::Unregister => None,
        }
    }

    /// May an unauthenticated connection send it (with authentication on)?
    pub fn allowed_before_auth(self) -> bool {
        match self {
            MsgType::Heartbeat | MsgType::Handshake | MsgType::Auth => true,
            MsgType::Refresh
            | MsgType::Data
            | MsgType::SensorData
            | MsgType::Request
            | MsgType::RpcCall
            | MsgType::Response
            | MsgType::RpcResponse
            | MsgType::Register
            | MsgType::Unregister
            | MsgType::Subscribe
            | MsgType::Unsubscribe
            | MsgType::Publish
            | MsgType::StreamStart
            | MsgType::StreamData
            | MsgType::StreamEnd => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &t in ALL {
            assert_eq!(MsgType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ALL.len(), 18);
        assert_eq!(MsgType::parse("Data"), None);
        assert_eq!(MsgType::parse(""), None);
    }
}
