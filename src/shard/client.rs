//! What the protocol layer remembers about one connection.

use std::collections::{HashMap, HashSet};
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

/// What a successful `auth` granted, fixed for the connection's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The client type the credential is bound to; `None`: any type no
    /// other credential is bound to.
    pub(crate) bound_type: Option<String>,
    /// Which credential it was (`token:<index>` of `auth_tokens`, or
    /// `token` for `auth_token`): scopes message-id de-duplication, so a
    /// client holding one credential cannot pre-empt another's records.
    pub(crate) scope: String,
}

/// Protocol state of one connection (handshake, auth, subscriptions, streams).
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) client_type: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) authenticated: bool,
    /// Set by a successful `auth` when authentication is on.
    pub(crate) grant: Option<Grant>,
    pub(crate) auth_failures: u32,
    /// Subscription patterns (a set: unsubscribe is O(1)).
    pub(crate) subs: HashSet<Box<str>>,
    pub(crate) streams: HashMap<String, InStream>,
    /// Names this service client serves.
    pub(crate) registered: Vec<(CallKind, String)>,
    /// Requests this client made that are not answered yet.
    pub(crate) pending_calls: usize,
    /// Server-issued requests this client has not answered yet.
    pub(crate) pending_served: usize,
    /// A `server.status` or `store.query` is being answered.
    pub(crate) heavy_in_flight: bool,
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
