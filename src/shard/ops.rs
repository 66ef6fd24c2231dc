//! The server's operations on its clients, over [`Shared`] from any
//! thread: publish, broadcast, send, request, disconnect, find. One
//! implementation for the Rust API (`server::Handle` delegates here) and
//! the HTTP admin API (`http`), so both behave the same.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::mesh::{self, Publish, ShardMsg, Who};
use super::shared::Shared;
use crate::api::CallKind;
use crate::ws::frame::{self, OpCode};

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The server is stopping or stopped.
    #[error("server is not running")]
    NotRunning,
    /// No such client (never existed, or disconnected).
    #[error("unknown client {0}")]
    UnknownClient(String),
    /// No live connection of this device.
    #[error("unknown device {0}")]
    UnknownDevice(String),
    /// The client did not answer within `request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// The client answered `success:false`.
    #[error("client error: {0}")]
    Client(String),
    /// A bad argument (topic, close code).
    #[error("{0}")]
    Invalid(String),
}

/// Who an operation is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// One connection, by client id.
    Client(&'a str),
    /// Every connection of a device.
    Device(&'a str),
}

fn running(shared: &Shared) -> Result<(), OpError> {
    if shared.stopping.load(Ordering::Acquire) {
        return Err(OpError::NotRunning);
    }
    Ok(())
}

fn owner(shared: &Shared, client_id: &str) -> Result<(usize, u64), OpError> {
    running(shared)?;
    shared
        .route(client_id)
        .ok_or_else(|| OpError::UnknownClient(client_id.to_owned()))
}

/// Publish `data` (JSON text, forwarded byte for byte) on `topic` to every
/// matching subscriber, except `exclude_client_id`.
pub(crate) fn publish(
    shared: &Shared,
    topic: &str,
    data: &[u8],
    exclude_client_id: Option<&str>,
) -> Result<(), OpError> {
    running(shared)?;
    crate::protocol::topic::validate_publish(topic).map_err(|e| OpError::Invalid(e.to_string()))?;
    let exclude = exclude_client_id.and_then(|c| shared.route(c));
    let p = Publish::new(topic, data, Some("server"), exclude);
    shared.api_publishes.fetch_add(1, Ordering::Relaxed);
    mesh::fan_out(&shared.mailboxes, p, None);
    Ok(())
}

/// Send `payload` to every open connection (of one client type, if
/// `filter`), encoded once.
pub(crate) fn broadcast(
    shared: &Shared,
    text: bool,
    payload: Bytes,
    filter: Option<&str>,
) -> Result<(), OpError> {
    running(shared)?;
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let frame = frame::encode(opcode, false, &payload);
    let filter: Option<Arc<str>> = filter.map(Into::into);
    for m in &shared.mailboxes {
        m.send(ShardMsg::Broadcast {
            text,
            payload: payload.clone(),
            frame: frame.clone(),
            filter: filter.clone(),
        });
    }
    Ok(())
}

/// Send one text message (JSON) to a client or every connection of a
/// device; how many connections it was queued on.
pub(crate) async fn send(
    shared: &Shared,
    to: Target<'_>,
    payload: Bytes,
) -> Result<usize, OpError> {
    match to {
        Target::Client(id) => {
            let (shard, key) = owner(shared, id)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            shared.mailboxes[shard].send(ShardMsg::SendTo {
                key,
                payload,
                ack: Some(tx),
            });
            match rx.await {
                Ok(true) => Ok(1),
                _ => Err(OpError::UnknownClient(id.to_owned())),
            }
        }
        Target::Device(d) => {
            running(shared)?;
            let device: Arc<str> = Arc::from(d);
            let mut acks = Vec::with_capacity(shared.mailboxes.len());
            for mb in &shared.mailboxes {
                let (tx, rx) = tokio::sync::oneshot::channel();
                mb.send(ShardMsg::SendToDevice {
                    device: device.clone(),
                    payload: payload.clone(),
                    ack: tx,
                });
                acks.push(rx);
            }
            let mut n = 0;
            for rx in acks {
                n += rx.await.unwrap_or(0);
            }
            if n == 0 {
                return Err(OpError::UnknownDevice(d.to_owned()));
            }
            Ok(n)
        }
    }
}

/// Close a client, or every connection of a device, with `code` and
/// `reason`; how many were closed.
pub(crate) async fn disconnect(
    shared: &Shared,
    to: Target<'_>,
    code: u16,
    reason: &str,
) -> Result<usize, OpError> {
    if !(code == 1000 || (4000..=4999).contains(&code)) {
        return Err(OpError::Invalid(format!(
            "close code {code}: use 1000 or 4000-4999"
        )));
    }
    if reason.len() > 123 {
        return Err(OpError::Invalid(
            "close reason longer than 123 bytes".to_owned(),
        ));
    }
    let reason: Arc<str> = Arc::from(reason);
    let (shards, who): (Vec<usize>, _) = match to {
        Target::Client(id) => {
            let (shard, key) = owner(shared, id)?;
            (vec![shard], Who::Key(key))
        }
        Target::Device(d) => {
            running(shared)?;
            (
                (0..shared.mailboxes.len()).collect(),
                Who::Device(Arc::from(d)),
            )
        }
    };
    let mut acks = Vec::with_capacity(shards.len());
    for s in shards {
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.mailboxes[s].send(ShardMsg::Disconnect {
            who: who.clone(),
            code,
            reason: reason.clone(),
            ack: tx,
        });
        acks.push(rx);
    }
    let mut n = 0;
    for rx in acks {
        n += rx.await.unwrap_or(0);
    }
    if n == 0 {
        return Err(match to {
            Target::Client(id) => OpError::UnknownClient(id.to_owned()),
            Target::Device(d) => OpError::UnknownDevice(d.to_owned()),
        });
    }
    Ok(n)
}

/// The client id of a device's most recent connection.
async fn newest_of_device(shared: &Shared, device: &str) -> Result<(usize, u64), OpError> {
    running(shared)?;
    let device: Arc<str> = Arc::from(device);
    let mut asks = Vec::with_capacity(shared.mailboxes.len());
    for mb in &shared.mailboxes {
        let (tx, rx) = tokio::sync::oneshot::channel();
        mb.send(ShardMsg::FindDevice {
            device: device.clone(),
            ack: tx,
        });
        asks.push(rx);
    }
    let mut best: Option<(std::time::Instant, usize, u64)> = None;
    for (shard, rx) in asks.into_iter().enumerate() {
        if let Ok(Some((at, key))) = rx.await {
            if best.is_none_or(|(b, _, _)| at > b) {
                best = Some((at, shard, key));
            }
        }
    }
    best.map(|(_, s, k)| (s, k))
        .ok_or_else(|| OpError::UnknownDevice(device.to_string()))
}

/// Send a server-initiated `request` to a client (or a device's most
/// recent connection) and wait for its `response`, at most
/// `request_timeout`. `Ok` is the response's `data`.
pub(crate) async fn request(
    shared: &Shared,
    to: Target<'_>,
    endpoint: &str,
    body: Bytes,
) -> Result<serde_json::Value, OpError> {
    let (shard, key, who) = match to {
        Target::Client(id) => {
            let (s, k) = owner(shared, id)?;
            (s, k, OpError::UnknownClient(id.to_owned()))
        }
        Target::Device(d) => {
            let (s, k) = newest_of_device(shared, d).await?;
            (s, k, OpError::UnknownDevice(d.to_owned()))
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.mailboxes[shard].send(ShardMsg::RequestClient {
        key,
        kind: CallKind::Endpoint,
        name: endpoint.to_owned(),
        body,
        reply: tx,
    });
    match tokio::time::timeout(shared.config.request_timeout, rx).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(msg))) if msg == "Client not connected" => Err(who),
        Ok(Ok(Err(msg))) => Err(OpError::Client(msg)),
        Ok(Err(_)) => Err(who),
        Err(_) => Err(OpError::Timeout),
    }
}

/// Subscription patterns with their subscriber counts summed over shards,
/// most subscribed first; only patterns starting with `prefix`.
pub(crate) async fn topics(shared: &Shared, prefix: &str) -> Vec<(String, u64)> {
    let mut asks = Vec::with_capacity(shared.mailboxes.len());
    for mb in &shared.mailboxes {
        let (tx, rx) = tokio::sync::oneshot::channel();
        mb.send(ShardMsg::Topics {
            prefix: prefix.into(),
            ack: tx,
        });
        asks.push(rx);
    }
    let mut all: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for rx in asks {
        for (t, n) in rx.await.unwrap_or_default() {
            *all.entry(t).or_insert(0) += n;
        }
    }
    let mut v: Vec<(String, u64)> = all.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}
