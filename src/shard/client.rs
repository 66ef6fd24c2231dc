//! What the protocol layer remembers about one connection.

use std::collections::HashMap;
use std::time::Instant;

use crate::api::CallKind;

/// A stream a client is sending.
#[derive(Debug)]
pub(crate) struct InStream {
    pub(crate) stream_type: String,
    /// The sequence number expected next (`None` until the first chunk).
    pub(crate) expected: Option<u64>,
    pub(crate) chunks: u64,
    pub(crate) bytes: u64,
}

/// Protocol state of one connection (handshake, auth, subscriptions, streams).
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) client_type: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) authenticated: bool,
    pub(crate) auth_failures: u32,
    /// Subscription patterns, in the order made.
    pub(crate) subs: Vec<Box<str>>,
    pub(crate) streams: HashMap<String, InStream>,
    /// Names this service client serves.
    pub(crate) registered: Vec<(CallKind, String)>,
    err_window: Option<Instant>,
    err_count: u32,
}

impl ClientState {
    /// Count an error reply; true if the client is now over `max_per_minute`.
    pub(crate) fn note_error(&mut self, max_per_minute: u32) -> bool {
        let now = Instant::now();
        match self.err_window {
            Some(start) if now.duration_since(start).as_secs() < 60 => self.err_count += 1,
            _ => {
                self.err_window = Some(now);
                self.err_count = 1;
            }
        }
        self.err_count > max_per_minute
    }
}
