//! wshandler: a thread-per-core WebSocket server for real-time messaging and
//! fleet-scale IoT ingestion — the Rust implementation of the
//! WebSocketHandler design.
//!
//! # Layout
//!
//! - [`config`]: the one `Config` struct; defaults < TOML file < `WSH_*`
//!   environment < CLI flags, validated into a checked config.
//! - [`ws`]: the sans-IO WebSocket core (handshake, frame codec, masking,
//!   UTF-8, close codes, permessage-deflate, session state machine). Bytes in,
//!   messages and frames out; never a socket.
//! - `shard`: one OS thread per core with its own runtime (io_uring via
//!   tokio-uring, or epoll via tokio) and SO_REUSEPORT listener;
//!   `shard::driver` is the only code that touches sockets.
//! - [`server`]: bootstrap, lifecycle and the cross-thread API
//!   ([`WebSocketHandler`]).
//! - [`events`]: server events, delivered to subscribers off the hot path.
//! - [`protocol`]: the WebSocketHandler JSON protocol (message types, error
//!   codes, topics, reply building); `shard::dispatch` applies it.
//! - [`store`]: RocksDB persistence — the writer thread (group commit),
//!   keys, field encryption, read-back.
//! - [`api`]: handlers the embedding program registers for requests and RPC.
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
pub mod config;
#[cfg(feature = "server")]
pub mod events;
#[doc(hidden)]
pub mod fdlimit;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod shard;
#[cfg(feature = "server")]
pub mod store;
pub mod ws;

#[cfg(feature = "server")]
pub use api::{CallContext, HandlerResult};
#[cfg(feature = "server")]
pub use config::{Config, IoDriver};
#[cfg(feature = "server")]
pub use events::Event;
#[cfg(feature = "server")]
pub use server::{ApiError, Handle, ServerError, Status, WebSocketHandler};
#[cfg(feature = "server")]
pub use shard::DriverKind;

/// One shard's protocol handlers without sockets (fuzz targets, tests).
#[cfg(feature = "server")]
#[doc(hidden)]
pub use shard::harness::ProtocolHarness;
