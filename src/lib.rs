//! wshandler: a thread-per-core WebSocket server for real-time messaging and
//! fleet-scale IoT ingestion — the Rust implementation of the
//! WebSocketHandler design.
//!
//! # Layout
//!
//! Layers, bottom to top; each imports only from the layers below it:
//!
//! 1. [`config`]: the one `Config` struct; defaults < TOML file < `WSH_*`
//!    environment < CLI flags, validated into a [`config::Checked`] config
//!    with the derived values computed once. Imports nothing of the crate.
//! 2. [`ws`]: the sans-IO WebSocket core (handshake, frame codec, masking,
//!    UTF-8, close codes, permessage-deflate, session state machine). Bytes
//!    in, messages and frames out; never a socket. [`protocol`]: the
//!    WebSocketHandler JSON codec (message kinds, the validating scan,
//!    reply building, topics, binary stream frames, error codes). [`status`],
//!    [`events`], [`api`]: plain data, the event hub, the handler registry.
//!    [`auth`]: credentials verified into an identity and its permissions.
//!    [`tls`]: the TLS files as a rustls configuration, reloadable.
//!    [`metrics`]: per-shard counters and histograms with one writer each,
//!    and the Prometheus text they are rendered to at scrape time.
//! 3. [`store`]: RocksDB persistence — the writer thread (group commit)
//!    reporting through a sink it is given, each shard's back-pressure
//!    queue, keys, field encryption, read-back.
//! 4. `shard`: one OS thread per core with its own runtime (io_uring via
//!    tokio-uring, or epoll via tokio) and SO_REUSEPORT listener; inside,
//!    the mesh between shards, the connection state, the protocol handlers
//!    by message family, the transport, and `shard::driver`, the only code
//!    that touches sockets.
//! 5. [`server`]: bootstrap, lifecycle and the cross-thread API
//!    ([`WebSocketHandler`], [`Handle`]).
//!
//! Everything but [`ws`] and [`protocol`] is behind the default `server`
//! feature; with `default-features = false` the crate is just those two
//! (and the open-file-limit helper), without RocksDB, tokio or the other
//! server dependencies: what `loadtest/` links.
//!
//! See `docs/architecture.md` for the design and its alternatives.

#![deny(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod events;
#[doc(hidden)]
pub mod fdlimit;
#[cfg(feature = "server")]
pub mod metrics;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod shard;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
pub mod ws;

#[cfg(feature = "server")]
pub use api::{CallContext, HandlerResult};
#[cfg(feature = "server")]
pub use config::{Config, IoDriver};
#[cfg(feature = "server")]
pub use events::Event;
#[cfg(feature = "server")]
pub use server::{ApiError, BindError, Handle, ServerError, Status, WebSocketHandler};
#[cfg(feature = "server")]
pub use shard::{DriverKind, StartError};

/// One shard's protocol handlers without sockets (fuzz targets, tests).
#[cfg(feature = "server")]
#[doc(hidden)]
pub use shard::harness::ProtocolHarness;
