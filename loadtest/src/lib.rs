//! wshandler-loadtest: simulate a fleet against any server that speaks the
//! WebSocketHandler protocol, and report throughput, latency percentiles,
//! errors, and lost or reordered messages.
//!
//! # Layout
//! - [`wsconn`]: a minimal client connection (masked frames built in one
//!   reusable buffer, replies parsed in place).
//! - [`stats`]: per-thread counters and hdrhistogram latencies.
//! - [`runner`]: worker threads (one current-thread runtime each), the
//!   once-a-tick fold into a [`report::Report`], progress, time bounds.
//! - [`scenario`]: ingest, fanout, rpc, connect and mixed.
//! - [`report`]: the final report as text, JSON and a self-contained HTML page.

pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod wsconn;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address (loopback only).
    pub addr: SocketAddr,
    /// Source addresses to spread connections over (past the ephemeral
    /// port limit of one address).
    pub src_ips: Vec<IpAddr>,
    /// Auth token, if the server requires one.
    pub token: Option<String>,
    /// Connect with TLS (`wss://`) using this client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// Refuse anything but loopback.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.addr.ip().is_loopback(),
            "only loopback targets are allowed, not {}",
            self.addr
        );
        for ip in &self.src_ips {
            anyhow::ensure!(
                ip.is_loopback(),
                "source addresses must be loopback, not {ip}"
            );
        }
        Ok(())
    }

    /// The source address for connection number `i`.
    pub fn src(&self, i: usize) -> Option<IpAddr> {
        (!self.src_ips.is_empty()).then(|| self.src_ips[i % self.src_ips.len()])
    }
}

/// A TLS client configuration trusting the CA certificates in the PEM file
/// `ca` (`--ca`), offering ALPN `http/1.1`.
pub fn tls_client(ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?
    {
        roots.add(c.map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "--ca {}: no certificate", ca.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Bounds every scenario obeys.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long to send.
    pub duration: Duration,
    /// Stop sending after this many messages in total (0: no limit).
    pub max_messages: u64,
    /// After sending stops, how long to wait for replies still in flight.
    pub drain: Duration,
    /// Worker threads.
    pub threads: usize,
}
