//! Message types a client may send, and the two decisions every type needs:
//! which feature it belongs to and whether it is allowed before
//! authentication. Both are exhaustive matches, so a new variant does not
//! compile until someone has decided them.

/// A client message's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// `heartbeat`
    Heartbeat,
    /// `handshake`
    Handshake,
    /// `auth`
    Auth,
    /// `data`
    Data,
    /// `sensor_data` (every field but `type` is the data)
    SensorData,
    /// `request`
    Request,
    /// `rpc_call`
    RpcCall,
    /// `response` (to a server-issued request)
    Response,
    /// `rpc_response` (to a server-issued RPC)
    RpcResponse,
    /// `register`
    Register,
    /// `unregister`
    Unregister,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// `publish`
    Publish,
    /// `stream_start`
    StreamStart,
    /// `stream_data`
    StreamData,
    /// `stream_end`
    StreamEnd,
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

const ALL: [MsgType; 17] = [
    MsgType::Heartbeat,
    MsgType::Handshake,
    MsgType::Auth,
    MsgType::Data,
    MsgType::SensorData,
    MsgType::Request,
    MsgType::RpcCall,
    MsgType::Response,
    MsgType::RpcResponse,
    MsgType::Register,
    MsgType::Unregister,
    MsgType::Subscribe,
    MsgType::Unsubscribe,
    MsgType::Publish,
    MsgType::StreamStart,
    MsgType::StreamData,
    MsgType::StreamEnd,
];

impl MsgType {
    /// The type named `s`, if the protocol has it.
    pub fn parse(s: &str) -> Option<MsgType> {
        ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MsgType::Heartbeat => "heartbeat",
            MsgType::Handshake => "handshake",
            MsgType::Auth => "auth",
            MsgType::Data => "data",
            MsgType::SensorData => "sensor_data",
            MsgType::Request => "request",
            MsgType::RpcCall => "rpc_call",
            MsgType::Response => "response",
            MsgType::RpcResponse => "rpc_response",
            MsgType::Register => "register",
            MsgType::Unregister => "unregister",
            MsgType::Subscribe => "subscribe",
            MsgType::Unsubscribe => "unsubscribe",
            MsgType::Publish => "publish",
            MsgType::StreamStart => "stream_start",
            MsgType::StreamData => "stream_data",
            MsgType::StreamEnd => "stream_end",
        }
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
            MsgType::Data
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
        for t in ALL {
            assert_eq!(MsgType::parse(t.as_str()), Some(t));
        }
        assert_eq!(MsgType::parse("Data"), None);
        assert_eq!(MsgType::parse(""), None);
    }
}
