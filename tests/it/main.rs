//! Integration tests: the real server on 127.0.0.1 with real clients
//! (tokio-tungstenite, and a raw TCP client for malformed input), each test
//! body run once per I/O driver (io_uring and epoll).

mod client;
mod crash;
mod util;

mod admin;
mod cli;
mod deflate;
mod frames;
mod handshake;
mod identity;
mod lifecycle;
mod limits;
mod metrics;
mod protocol;
mod regression;
mod release;
mod store;
mod tls;
