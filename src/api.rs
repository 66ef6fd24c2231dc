//! Handlers the embedding program registers: `request` endpoints and RPC
//! methods, and the registry every shard reads.
//!
//! Handlers are `async` and `Send`; a call runs as a task on the shard of the
//! connection that made it (so it never blocks other connections, but a
//! handler that does blocking work should move it to
//! `tokio::task::spawn_blocking`). A handler that fails, panics or exceeds
//! `request_timeout` answers `success:false` with its message; the server
//! carries on. The registry is swapped atomically (`ArcSwap`), so shards read
//! it without a lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Who made a call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The caller's client id.
    pub client_id: String,
    /// The caller's client type, if its handshake named one.
    pub client_type: Option<String>,
    /// The endpoint or method name.
    pub name: String,
}

/// What a handler returns: the `data` of a success, or an error message.
pub type HandlerResult = Result<serde_json::Value, String>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A registered handler.
pub(crate) type Handler =
    Arc<dyn Fn(CallContext, serde_json::Value) -> HandlerFuture + Send + Sync>;

/// Wrap a closure returning a future into a [`Handler`].
pub(crate) fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(CallContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |ctx, v| Box::pin(f(ctx, v)) as HandlerFuture)
}

/// Endpoint (`request`) or method (`rpc_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A `request` endpoint.
    Endpoint,
    /// An `rpc_call` method.
    Method,
}

impl CallKind {
    /// `"endpoint"` or `"method"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Endpoint => "endpoint",
            CallKind::Method => "method",
        }
    }
}

/// A service client that registered to serve a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registrant {
    pub(crate) shard: usize,
    pub(crate) key: u64,
}

/// The registrants of one name, served round-robin.
#[derive(Debug, Default)]
pub(crate) struct ServiceSet {
    pub(crate) members: Vec<Registrant>,
    next: AtomicUsize,
}

impl ServiceSet {
    pub(crate) fn pick(&self) -> Option<&Registrant> {
        if self.members.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.members.len();
        self.members.get(i)
    }
}

type Services = HashMap<(CallKind, String), Arc<ServiceSet>>;

/// Everything that can answer a call, read by every shard.
#[derive(Default)]
pub(crate) struct Registry {
    handlers: ArcSwap<HashMap<(CallKind, String), Handler>>,
    services: ArcSwap<Services>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.load().len())
            .field("services", &self.services.load().len())
            .finish()
    }
}

impl Registry {
    pub(crate) fn register(&self, kind: CallKind, name: &str, h: Handler) {
        self.handlers.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert((kind, name.to_owned()), h.clone());
            m
        });
    }

    pub(crate) fn handler(&self, kind: CallKind, name: &str) -> Option<Handler> {
        self.handlers.load().get(&(kind, name.to_owned())).cloned()
    }

    pub(crate) fn service(&self, kind: CallKind, name: &str) -> Option<Registrant> {
        self.services
            .load()
            .get(&(kind, name.to_owned()))
            .and_then(|s| s.pick().cloned())
    }

    pub(crate) fn add_service(&self, kind: CallKind, name: &str, r: Registrant) {
        self.services.rcu(|m| {
            let mut m = Services::clone(m);
            let old = m.get(&(kind, name.to_owned()));
            let mut members = old.map(|s| s.members.clone()).unwrap_or_default();
            if !members.contains(&r) {
                members.push(r.clone());
            }
            m.insert(
                (kind, name.to_owned()),
                Arc::new(ServiceSet {
                    members,
                    next: AtomicUsize::new(0),
                }),
            );
            m
        });
    }

    pub(crate) fn remove_service(&self, kind: CallKind, name: &str, r: &Registrant) -> bool {
        let mut removed = false;
        self.services.rcu(|m| {
            let mut m = Services::clone(m);
            removed = false;
            if let Some(s) = m.get(&(kind, name.to_owned())) {
                let members: Vec<_> = s.members.iter().filter(|x| *x != r).cloned().collect();
                removed = members.len() != s.members.len();
                if members.is_empty() {
                    m.remove(&(kind, name.to_owned()));
                } else {
                    m.insert(
                        (kind, name.to_owned()),
                        Arc::new(ServiceSet {
                            members,
                            next: AtomicUsize::new(0),
                        }),
                    );
                }
            }
            m
        });
        removed
    }
}
