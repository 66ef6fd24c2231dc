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
//! See `docs/architecture.md` for the design and its alternatives.

#![deny(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod events;
pub mod protocol;
pub mod server;
mod shard;
pub mod store;
pub mod ws;

pub use api::{CallContext, HandlerResult};
pub use config::{Config, IoDriver};
pub use events::Event;
pub use server::{ApiError, Handle, ServerError, Status, WebSocketHandler};
pub use shard::DriverKind;

/// One shard's protocol handlers without sockets (fuzz targets, tests).
#[doc(hidden)]
pub use shard::harness::ProtocolHarness;
