//! Server configuration: every knob the operator can turn, where it comes
//! from, and the checks it must pass before anything is bound or allocated.
//!
//! Settings come from four layers, later ones winning:
//!
//! 1. built-in defaults ([`Config::default`], matching the original
//!    WebSocketHandler: port 8080, 100 connections, 10 MB payloads, ...);
//! 2. a TOML file (see `wshandler.example.toml` at the repository root);
//! 3. `WSH_*` environment variables (`WSH_PORT=9000`, `WSH_IO_DRIVER=epoll`);
//! 4. command-line flags, passed in by `main` as `(name, value)` pairs.
//!
//! There is one merge path for all of them: the file is read into a
//! [`toml::Table`], each environment variable or flag is converted to a
//! [`toml::Value`] according to a static table of field kinds (`FIELDS`) and
//! inserted over it, and the result is deserialized once into [`Config`] with
//! `deny_unknown_fields`. Doing it this way means a flag, a variable and a
//! file entry cannot disagree about syntax, and a misspelt name anywhere is an
//! error instead of a silently ignored setting. Every error names where the bad
//! value came from (file path, variable name or `--flag`) and the field.
//!
//! [`Config::validate`] then checks ranges and cross-field rules and returns
//! a [`Checked`] config with the derived values (table list, retention per
//! table, largest message) computed once; the server only ever runs from a
//! `Checked` config. This module imports nothing else of the crate: it is
//! the bottom layer.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod auth;
pub mod limits;

pub use auth::{parse_expiry, AuthToken, JwtConfig, KeyFile, PermSpec, TokenEntry};
pub use limits::LimitsConfig;

/// Prefix of the environment variables that set configuration fields.
pub const ENV_PREFIX: &str = "WSH_";

/// `WSH_*` variables that are not fields and are skipped by [`Config::load`]
/// (`WSH_CONFIG` names the config file; `main` reads it, not this module).
pub const RESERVED_ENV: &[&str] = &["WSH_CONFIG", "WSH_LOG", "WSH_ENCRYPTION_KEY"];

/// Log levels accepted by `log_level`, most to least verbose.
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// Log formats accepted by `log_format`.
pub const LOG_FORMATS: &[&str] = &["text", "json"];

/// The complete server configuration.
///
/// Field names are the TOML keys; the environment variable for a field is
/// `WSH_` followed by its name in upper case (`max_connections` ->
/// `WSH_MAX_CONNECTIONS`). Missing keys take their [`Default`] value. Build
/// one with [`Config::load`] or [`Config::from_toml_str`], which both run
/// [`Config::validate`]; constructing one by hand (tests do) skips that.
///
/// `Debug` redacts `auth_token`, so logging the config at startup is safe.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    // --- Server ---
    /// TCP port to listen on. `0` asks the kernel for an ephemeral port
    /// (tests use it and read the bound address back). Default 8080.
    pub port: u16,
    /// Address to bind. `"0.0.0.0"` listens on every IPv4 interface; use
    /// `"127.0.0.1"` to accept only local clients. Default `"0.0.0.0"`.
    pub host: String,
    /// Maximum concurrent WebSocket connections, enforced across all shards
    /// together (not per shard); connections past the limit are refused
    /// during the handshake. Bounds memory use against connection floods.
    /// Default 100.
    pub max_connections: usize,
    /// On shutdown, how long to wait for open connections to close after
    /// they are sent a close frame, before they are dropped. At most 1h.
    /// Default 5s.
    #[serde(with = "duration_serde")]
    pub drain_timeout: Duration,
    /// How long a new TCP connection may take to send its complete HTTP
    /// upgrade request (slow-loris guard: a connection that trickles its
    /// request holds a socket, not a `max_connections` slot). 1ms..=1h.
    /// Default 10s.
    #[serde(with = "duration_serde")]
    pub handshake_timeout: Duration,

    // --- TLS ---
    /// PEM file with the server certificate, then its chain (intermediates),
    /// for `wss://`. With `tls_key` set, the listener speaks TLS (see
    /// `tls_port`). Read at start (an unreadable or bad file is a start
    /// error) and again on SIGHUP or when it changes. Default unset.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    /// Required when `tls_cert` is set. Default unset.
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates client certificates must chain to
    /// (mutual TLS). When set, a client without a certificate this CA
    /// signed is refused during the TLS handshake, and the certificate's
    /// subject (`tls_identity`) is the connection's device identity: it is
    /// authenticated without a token. Default unset (no client certificates).
    pub tls_client_ca: Option<PathBuf>,
    /// Oldest TLS version accepted: `"1.2"` or `"1.3"`. Older ones (1.0,
    /// 1.1, SSL) are never accepted. Default `"1.2"`.
    pub tls_min_version: TlsVersion,
    /// Serve TLS on this port and plain `ws://` on `port` (e.g. `/health`
    /// on a private plain port). Unset: with a certificate, `port` is TLS
    /// only. `0` picks an ephemeral port. Default unset.
    pub tls_port: Option<u16>,
    /// Which part of a client certificate names the device (mutual TLS):
    /// `"cn"` (the subject's common name) or `"san"` (the first DNS or URI
    /// subject alternative name). Default `"cn"`.
    pub tls_identity: TlsIdentity,
    /// How often the certificate, key and client CA files are checked for
    /// changes (modification time and size); a change reloads them (as
    /// SIGHUP does). `"0s"` turns watching off. Default 5s.
    #[serde(with = "duration_serde")]
    pub tls_watch_interval: Duration,

    // --- Shards & I/O ---
    /// Number of shards: one single-threaded runtime, each with its own
    /// SO_REUSEPORT listener. Default: the number of CPUs this process may
    /// use (`std::thread::available_parallelism`, 1 if unknown). 1..=1024.
    pub shards: usize,
    /// Which socket driver each shard uses; see [`IoDriver`]. Default `auto`.
    pub io_driver: IoDriver,
    /// Pin shard `i` to CPU `i`. Helps tail latency on dedicated machines;
    /// hurts when the host is shared or shards outnumber CPUs. Default false.
    pub pin_shards: bool,
    /// Length of each shard listener's accept queue (`listen(2)` backlog;
    /// the kernel caps it at `net.core.somaxconn`). Connections arriving
    /// faster than the shards accept them wait here; past it the kernel
    /// drops SYNs. 1..=65535. Default 4096.
    pub listen_backlog: u32,

    // --- Authentication ---
    /// Require clients to present `auth_token` before anything else is
    /// accepted. Default false.
    pub enable_authentication: bool,
    /// Shared secret clients must send when `enable_authentication` is on
    /// (required and non-empty then). Prefer `WSH_AUTH_TOKEN` over writing it
    /// in the file. Never printed by `Debug`. Default unset.
    pub auth_token: Option<String>,
    /// More accepted tokens, each either a plain string or a table binding it
    /// to one client type: `["t1", { token = "t2", client_type = "service" }]`.
    /// A bound token only authenticates a client whose handshake named that
    /// type. From `WSH_AUTH_TOKENS` or `--set auth_tokens=...`: a
    /// comma-separated list of plain tokens (`t1,t2`), or the TOML array
    /// above for bound ones.
    /// Never printed by `Debug`. Default empty.
    pub auth_tokens: Vec<AuthToken>,
    /// Failed `auth` attempts after which the connection is closed (1008).
    /// Default 3.
    pub max_auth_failures: u32,
    /// With authentication on, a connection that has not authenticated this
    /// long after connecting is closed (1008). Default 10s.
    #[serde(with = "duration_serde")]
    pub auth_timeout: Duration,
    /// Accept a credential in the upgrade URL (`ws://host/?token=...`):
    /// browsers cannot set headers. Such URLs land in proxy and access
    /// logs; turn it off where that matters. Default true.
    pub allow_query_token: bool,
    /// A second live connection of a device that is already connected:
    /// `"allow"` both, or `"replace"` (the older one is closed with 4002).
    /// Default allow.
    pub on_duplicate_device: DuplicateDevice,
    /// How often credential files (`[jwt]` key files, JWKS) are checked for
    /// changes; they are also re-read on SIGHUP. Default 5s.
    #[serde(with = "duration_serde")]
    pub auth_watch_interval: Duration,
    /// Client types a `handshake` may name. Default microcontroller,
    /// application, service.
    pub client_types: Vec<String>,
    /// Error replies (bad JSON, unknown types, ...) a connection may earn per
    /// minute before it is closed with 1008. Default 100.
    pub max_errors_per_minute: u32,

    // --- Features ---
    /// Allow the request/response pattern (a reply per request id).
    /// Default true.
    pub enable_request_response: bool,
    /// Allow publish/subscribe on topics. Default true.
    pub enable_pub_sub: bool,
    /// Allow remote procedure calls. Default true.
    pub enable_rpc: bool,
    /// Allow streaming data (sensor readings, chunked transfers).
    /// Default true.
    pub enable_streaming: bool,
    /// Conformance mode: echo every message back unchanged instead of
    /// interpreting it (used for the Autobahn test suite). Default false.
    pub echo: bool,

    // --- Data handling ---
    /// Check incoming data messages before storing them, rejecting those
    /// missing any of `required_fields`. Default true.
    pub enable_data_validation: bool,
    /// Fields every data message must carry when `enable_data_validation` is
    /// on, e.g. `["temperature", "humidity"]`. Default empty.
    pub required_fields: Vec<String>,
    /// Fields encrypted before a message is written to storage. Default empty.
    pub fields_to_encrypt: Vec<String>,

    // --- Performance & limits ---
    /// Negotiate permessage-deflate with clients that offer it. Default true.
    pub enable_compression: bool,
    /// Outbound payloads smaller than this many bytes are sent uncompressed:
    /// deflate costs more than it saves on tiny messages. Default 256.
    pub compression_threshold: usize,
    /// Keep permessage-deflate state between messages (context takeover).
    /// Threat: zlib state is ~472 KB per connection that has exchanged a
    /// compressed message (measured: docs/benchmarks.md), so 10k clients
    /// could pin gigabytes. Off, the server negotiates
    /// `server_no_context_takeover` and `client_no_context_takeover`, and
    /// holds zlib state only while a message is being (de)compressed.
    /// Default false.
    pub compression_context_takeover: bool,
    /// Largest LZ77 window (log2 bytes) the server compresses with, and asks
    /// clients that allow it (`client_max_window_bits`) to stay within:
    /// bounds the window memory held per connection with context takeover.
    /// 9..=15. Default 15.
    pub compression_window_bits: u8,
    /// zlib memLevel of the server's compressor: its buffers are
    /// `2^(mem_level + 6)` symbols. Lower saves memory, costs ratio.
    /// 1..=9. Default 8.
    pub compression_mem_level: u8,
    /// Largest message (after reassembling fragments and decompressing) a
    /// client may send, in bytes. Checked before buffering, so a peer cannot
    /// make us allocate more than this; a larger message closes the
    /// connection with 1009. 125..=1 GiB. Default 10485760 (10 MiB).
    pub max_payload_size: usize,
    /// Bytes of outbound data that may queue for one connection before it is
    /// treated as a slow consumer and closed; stops one stalled client from
    /// holding unbounded memory. At least 1024. Default 1048576 (1 MiB).
    pub max_backpressure: usize,
    /// How long a request may wait for its response before failing with a
    /// timeout. Greater than zero. Default 10s.
    #[serde(with = "duration_serde")]
    pub request_timeout: Duration,

    // --- Per-connection limits ---
    /// How deeply arrays and objects may nest in one message (the message
    /// object is level 1). Bounds the parser and every later reader: a frame of
    /// 100,000 `[` must be refused, not crash a shard or store a record no
    /// reader can open. 1..=100. Default 64.
    pub max_json_depth: u32,
    /// Subscriptions one connection may hold (each costs ~1 KiB of trie and
    /// state); past it `subscribe` is refused with `limit_exceeded`. Wildcards
    /// (`sensors.>`) cover many topics with one. At least 1. Default 128
    /// (Centrifugo's default channel limit).
    pub max_subscriptions_per_connection: usize,
    /// Client streams open at once on one connection; past it `stream_start`
    /// is refused with `limit_exceeded`. At least 1. Default 16.
    pub max_streams_per_connection: usize,
    /// Longest `requestId`, `messageId`, `streamId` or `deviceId` accepted, in
    /// bytes; a longer one is refused with `limit_exceeded` (each id is kept
    /// in per-connection tables and stored records). At least 8. Default 128.
    pub max_id_length: usize,
    /// Longest topic or subscription pattern, in bytes. At least 8. Default 256.
    pub max_topic_length: usize,
    /// Longest `dataType`, `streamType`, `table`, endpoint, method or
    /// registration name, in bytes. At least 8. Default 128.
    pub max_name_length: usize,
    /// Requests one connection may have waiting at once, each way: calls it
    /// made that are not answered yet, and server-issued requests it has not
    /// answered. Past it a call is refused with `limit_exceeded` (a service
    /// that stops answering fails further calls at once instead of growing
    /// tables). At least 1. Default 64.
    pub max_pending_requests: usize,
    /// Clients listed in a `server.status` reply (the rest are counted, not
    /// listed: `clientsTruncated`), so one small request cannot return
    /// megabytes. At least 1. Default 1000.
    pub status_max_clients: usize,
    /// Topics with their own series in `GET /metrics`
    /// (`wshandler_topic_*{topic}`): the busiest this many, so 100k topics
    /// never make 100k series. 0: no per-topic series. At most 1000.
    /// Default 20.
    pub metrics_top_topics: usize,
    /// The bearer token of the HTTP admin API (`/status`, `/clients`,
    /// `/publish`, the dashboard, ...), compared in constant time. Unset:
    /// the admin API answers only on a loopback listener (403
    /// `admin_disabled` elsewhere). Never printed. Default unset.
    pub admin_token: Option<String>,
    /// Serve the HTTP API (admin, `/metrics`, `/ready`, `/health`, the
    /// dashboard) on this `host:port` instead of `port`, e.g. a private
    /// interface. WebSocket upgrades are refused there; `port` then serves
    /// only upgrades, `/health`, `/ready` and `/metrics`. Default unset.
    pub admin_listen: Option<String>,
    /// Whether `/ready` and `/metrics` answer without the admin token
    /// (`/health` always does). Default true: Prometheus and load
    /// balancers usually scrape without credentials on a private network.
    pub metrics_public: bool,
    /// Largest HTTP request body accepted (`POST /publish`, ...), checked
    /// against `Content-Length` before reading: 413 beyond it. At least
    /// 64, at most 16 MiB. Default 65536.
    pub admin_max_body_bytes: usize,

    // --- Monitoring ---
    /// Send pings and close connections that stop answering, so dead peers
    /// (pulled cables, sleeping devices) do not hold connection slots.
    /// Default true.
    pub enable_heartbeat: bool,
    /// Time between heartbeat pings; a peer that misses one is closed. At
    /// least 100ms when heartbeats are on. Default 30s.
    #[serde(with = "duration_serde")]
    pub heartbeat_interval: Duration,
    /// Log verbosity: one of `trace`, `debug`, `info`, `warn`, `error`.
    /// Default `info`.
    pub log_level: String,
    /// Log line format: `text` (human-readable) or `json` (one JSON object
    /// per line: timestamp, level, target, fields; for log shippers).
    /// Default `text`.
    pub log_format: String,

    // --- Storage ---
    /// Directory holding the on-disk store; created if missing.
    /// Default `./wshandler-data`.
    pub data_dir: PathBuf,
    /// Name of the table (key prefix) that data messages are stored under.
    /// Letters, digits, `_` and `-` only. Default `sensor_data`.
    pub db_table_name: String,
    /// Store accepted `data` records in RocksDB under `data_dir`; with it on,
    /// a `data_response` is sent only once the record is durable and carries
    /// its `insertId`. Default true.
    pub persist: bool,
    /// What an acknowledgement promises: `"sync"` (WAL fsynced per batch:
    /// survives power loss), `"wal"` (WAL written, fsync left to the OS:
    /// survives a process crash), `"none"` (no WAL: throwaway data).
    /// Default `"sync"`.
    pub durability: Durability,
    /// Most records the writer commits in one batch. Default 4096.
    pub store_batch_max: usize,
    /// Most bytes the writer commits in one batch. Default 4 MiB.
    pub store_batch_bytes: usize,
    /// Records that may wait for the writer across all shards; when it is
    /// full, shards stop reading from connections that send data (TCP
    /// back-pressure). Default 65536.
    pub store_queue: usize,
    /// RocksDB memtable size per table, bytes. Default 64 MiB.
    pub store_write_buffer_size: usize,
    /// Other tables a `data` message may name in its `table` field.
    /// Default none.
    pub allowed_tables: Vec<String>,
    /// File holding the base64 32-byte key for `fields_to_encrypt` (the
    /// `WSH_ENCRYPTION_KEY` environment variable is the alternative).
    /// Default unset.
    pub encryption_key_file: Option<PathBuf>,
    /// How long a (deviceId, messageId) pair is remembered for
    /// effectively-once ingest. Default 10m.
    #[serde(with = "duration_serde")]
    pub dedup_window: Duration,
    /// Delete records older than this in the background (`"0s"`: keep
    /// forever). Default 0s.
    #[serde(with = "duration_serde")]
    pub retention: Duration,
    /// Per-table retention overriding `retention`, as `"table=30d"` items.
    /// Default none.
    pub table_retention: Vec<String>,
    /// Most records one `store.query` reply holds (a request's `limit` is
    /// capped to it); the reply's `next` gives where the following page
    /// starts. Bounds the work and memory of one request against a table of
    /// millions of records. 1..=100000. Default 1000.
    pub query_max_records: usize,
    /// Most bytes of record text one `store.query` reply holds, checked
    /// before each record is copied: without it, a few pipelined queries
    /// over a large table build replies of gigabytes (issue 9 item 7). A
    /// record larger than this is reported as skipped. Pages are also kept
    /// to half of `max_backpressure` (see [`Config::query_page_bytes`]), so
    /// a page fits the connection's outbound bound with room to spare. At
    /// least 1024. Default 524288 (512 KiB).
    pub query_max_bytes: usize,
    /// How JWTs are verified (`[jwt]` table).
    pub jwt: JwtConfig,
    // --- Abuse limits ---
    /// Per-address limits at the upgrade, trusted proxies, allowed browser
    /// origins (`[limits]` table; see [`LimitsConfig`]).
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8080,
            host: "0.0.0.0".to_owned(),
            max_connections: 100,
            shards: default_shards(),
            io_driver: IoDriver::Auto,
            pin_shards: false,
            listen_backlog: 4096,
            enable_authentication: false,
            auth_token: None,
            auth_tokens: Vec::new(),
            max_auth_failures: 3,
            auth_timeout: Duration::from_secs(10),
            allow_query_token: true,
            on_duplicate_device: DuplicateDevice::Allow,
            auth_watch_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_min_version: TlsVersion::V1_2,
            tls_port: None,
            tls_identity: TlsIdentity::Cn,
            tls_watch_interval: Duration::from_secs(5),
            client_types: vec![
                "microcontroller".into(),
                "application".into(),
                "service".into(),
            ],
            max_errors_per_minute: 100,
            enable_request_response: true,
            enable_pub_sub: true,
            enable_rpc: true,
            enable_streaming: true,
            enable_data_validation: true,
            required_fields: Vec::new(),
            fields_to_encrypt: Vec::new(),
            enable_compression: true,
            compression_threshold: 256,
            compression_context_takeover: false,
            compression_window_bits: 15,
            compression_mem_level: 8,
            max_payload_size: 10 * 1024 * 1024,
            max_backpressure: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_json_depth: 64,
            max_subscriptions_per_connection: 128,
            max_streams_per_connection: 16,
            max_id_length: 128,
            max_topic_length: 256,
            max_name_length: 128,
            max_pending_requests: 64,
            status_max_clients: 1000,
            metrics_top_topics: 20,
            admin_token: None,
            admin_listen: None,
            metrics_public: true,
            admin_max_body_bytes: 64 * 1024,
            enable_heartbeat: true,
            heartbeat_interval: Duration::from_secs(30),
            log_level: "info".to_owned(),
            log_format: "text".to_owned(),
            echo: false,
            drain_timeout: Duration::from_secs(5),
            data_dir: PathBuf::from("./wshandler-data"),
            db_table_name: "sensor_data".to_owned(),
            persist: true,
            durability: Durability::Sync,
            store_batch_max: 4096,
            store_batch_bytes: 4 * 1024 * 1024,
            store_queue: 65536,
            store_write_buffer_size: 64 * 1024 * 1024,
            allowed_tables: Vec::new(),
            encryption_key_file: None,
            dedup_window: Duration::from_secs(600),
            retention: Duration::ZERO,
            table_retention: Vec::new(),
            query_max_records: 1000,
            query_max_bytes: 512 * 1024,
            jwt: JwtConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// One shard per CPU we may run on, capped at the validated maximum so the
/// default is always valid.
fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_SHARDS)
}

const MAX_SHARDS: usize = 1024;
const MIN_PAYLOAD: usize = 125;
const MAX_PAYLOAD: usize = 1 << 30;
const MIN_BACKPRESSURE: usize = 1024;
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const MAX_DRAIN: Duration = Duration::from_secs(3600);

// Written out rather than derived so `auth_token` is redacted. The
// destructuring makes adding a field without listing it here a compile error.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            port,
            host,
            max_connections,
            shards,
            io_driver,
            pin_shards,
            listen_backlog,
            enable_authentication,
            auth_token,
            auth_tokens,
            max_auth_failures,
            auth_timeout,
            allow_query_token,
            on_duplicate_device,
            auth_watch_interval,
            handshake_timeout,
            tls_cert,
            tls_key,
            tls_client_ca,
            tls_min_version,
            tls_port,
            tls_identity,
            tls_watch_interval,
            client_types,
            max_errors_per_minute,
            enable_request_response,
            enable_pub_sub,
            enable_rpc,
            enable_streaming,
            enable_data_validation,
            required_fields,
            fields_to_encrypt,
            enable_compression,
            compression_threshold,
            compression_context_takeover,
            compression_window_bits,
            compression_mem_level,
            max_payload_size,
            max_backpressure,
            request_timeout,
            max_json_depth,
            max_subscriptions_per_connection,
            max_streams_per_connection,
            max_id_length,
            max_topic_length,
            max_name_length,
            max_pending_requests,
            status_max_clients,
            metrics_top_topics,
            admin_token,
            admin_listen,
            metrics_public,
            admin_max_body_bytes,
            enable_heartbeat,
            heartbeat_interval,
            log_level,
            log_format,
            echo,
            drain_timeout,
            data_dir,
            db_table_name,
            persist,
            durability,
            store_batch_max,
            store_batch_bytes,
            store_queue,
            store_write_buffer_size,
            allowed_tables,
            encryption_key_file,
            dedup_window,
            retention,
            table_retention,
            query_max_records,
            query_max_bytes,
            jwt,
            limits,
        } = self;
        f.debug_struct("Config")
            .field("port", port)
            .field("host", host)
            .field("max_connections", max_connections)
            .field("shards", shards)
            .field("io_driver", io_driver)
            .field("pin_shards", pin_shards)
            .field("listen_backlog", listen_backlog)
            .field("enable_authentication", enable_authentication)
            .field("auth_token", &auth_token.as_ref().map(|_| "<redacted>"))
            .field(
                "auth_tokens",
                &format_args!("<{} redacted>", auth_tokens.len()),
            )
            .field("max_auth_failures", max_auth_failures)
            .field("auth_timeout", auth_timeout)
            .field("allow_query_token", allow_query_token)
            .field("on_duplicate_device", on_duplicate_device)
            .field("auth_watch_interval", auth_watch_interval)
            .field("handshake_timeout", handshake_timeout)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_client_ca", tls_client_ca)
            .field("tls_min_version", tls_min_version)
            .field("tls_port", tls_port)
            .field("tls_identity", tls_identity)
            .field("tls_watch_interval", tls_watch_interval)
            .field("client_types", client_types)
            .field("max_errors_per_minute", max_errors_per_minute)
            .field("enable_request_response", enable_request_response)
            .field("enable_pub_sub", enable_pub_sub)
            .field("enable_rpc", enable_rpc)
            .field("enable_streaming", enable_streaming)
            .field("enable_data_validation", enable_data_validation)
            .field("required_fields", required_fields)
            .field("fields_to_encrypt", fields_to_encrypt)
            .field("enable_compression", enable_compression)
            .field("compression_threshold", compression_threshold)
            .field("compression_context_takeover", compression_context_takeover)
            .field("compression_window_bits", compression_window_bits)
            .field("compression_mem_level", compression_mem_level)
            .field("max_payload_size", max_payload_size)
            .field("max_backpressure", max_backpressure)
            .field("request_timeout", request_timeout)
            .field("max_json_depth", max_json_depth)
            .field(
                "max_subscriptions_per_connection",
                max_subscriptions_per_connection,
            )
            .field("max_streams_per_connection", max_streams_per_connection)
            .field("max_id_length", max_id_length)
            .field("max_topic_length", max_topic_length)
            .field("max_name_length", max_name_length)
            .field("max_pending_requests", max_pending_requests)
            .field("status_max_clients", status_max_clients)
            .field("metrics_top_topics", metrics_top_topics)
            .field("admin_token", &admin_token.as_ref().map(|_| "<redacted>"))
            .field("admin_listen", admin_listen)
            .field("metrics_public", metrics_public)
            .field("admin_max_body_bytes", admin_max_body_bytes)
            .field("enable_heartbeat", enable_heartbeat)
            .field("heartbeat_interval", heartbeat_interval)
            .field("log_level", log_level)
            .field("log_format", log_format)
            .field("echo", echo)
            .field("drain_timeout", drain_timeout)
            .field("data_dir", data_dir)
            .field("db_table_name", db_table_name)
            .field("persist", persist)
            .field("durability", durability)
            .field("store_batch_max", store_batch_max)
            .field("store_batch_bytes", store_batch_bytes)
            .field("store_queue", store_queue)
            .field("store_write_buffer_size", store_write_buffer_size)
            .field("allowed_tables", allowed_tables)
            .field("encryption_key_file", encryption_key_file)
            .field("dedup_window", dedup_window)
            .field("retention", retention)
            .field("table_retention", table_retention)
            .field("query_max_records", query_max_records)
            .field("query_max_bytes", query_max_bytes)
            .field("jwt", jwt)
            .field("limits", limits)
            .finish()
    }
}

/// Algorithms a `[jwt] public_key_files` entry may name.
pub const PUBLIC_KEY_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Largest message accepted in echo mode whatever `max_payload_size` says:
/// the Autobahn suite sends 16 MiB (cases 9.1.6 and 9.2.6).
pub const ECHO_MIN_PAYLOAD: usize = 16 * 1024 * 1024;

/// A configuration that passed [`Config::validate`], with the values derived
/// from it computed once. Reads as a [`Config`] (`Deref`).
#[derive(Debug, Clone)]
pub struct Checked {
    config: Config,
    tables: Vec<Arc<str>>,
    retention: Vec<(String, Option<Duration>)>,
    max_message_size: usize,
}

impl Deref for Checked {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl Checked {
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every table a record may go to: `db_table_name` first, then
    /// `allowed_tables` (shared names: no allocation per record).
    pub fn tables(&self) -> &[Arc<str>] {
        &self.tables
    }

    /// Retention per table, in [`tables`](Self::tables) order (`None`:
    /// keep forever).
    pub fn retention(&self) -> &[(String, Option<Duration>)] {
        &self.retention
    }

    /// Largest message accepted: `max_payload_size`, raised to
    /// [`ECHO_MIN_PAYLOAD`] in echo mode.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

/// What a second live connection of the same device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateDevice {
    /// Both stay connected.
    #[default]
    Allow,
    /// The new one replaces the older ones (closed with 4002).
    Replace,
}

/// How durable an acknowledged record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL fsynced before the ack: survives process crash and power loss.
    #[default]
    Sync,
    /// WAL written (page cache) before the ack: survives a process crash,
    /// not a power loss.
    Wal,
    /// No WAL: records live in the memtable until a flush; a crash loses
    /// them. For throwaway data.
    None,
}

/// The oldest TLS version the server accepts (`tls_min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// Which part of a client certificate is the device identity (`tls_identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsIdentity {
    /// The subject's common name (CN).
    #[default]
    Cn,
    /// The first DNS or URI subject alternative name.
    San,
}

/// Which I/O driver the shards use for sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring if the kernel and sandbox allow it (it can be missing, too
    /// old, blocked by seccomp, or short of locked memory), else epoll.
    Auto,
    /// io_uring only; startup fails if it is unavailable.
    Uring,
    /// epoll (readiness-based); works everywhere Linux does.
    Epoll,
}

impl IoDriver {
    /// The lowercase name used in config files, env vars and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            IoDriver::Auto => "auto",
            IoDriver::Uring => "uring",
            IoDriver::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoDriver {
    type Err = ParseIoDriverError;

    /// Parses `auto`, `uring` or `epoll`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [IoDriver::Auto, IoDriver::Uring, IoDriver::Epoll]
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseIoDriverError(s.to_owned()))
    }
}

/// A string that is not `auto`, `uring` or `epoll` was given as an [`IoDriver`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown io driver `{0}` (expected auto, uring or epoll)")]
pub struct ParseIoDriverError(pub String);

/// Why a configuration could not be loaded. `Display` is written for the
/// operator: it names the source (file, variable, flag) and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TOML syntax error, or a value of the wrong type in the file (toml's
    /// message names the field and, for files, the line).
    #[error("cannot parse {source_name}: {message}")]
    Parse {
        /// `config file <path>`, or `config text` for
        /// [`Config::from_toml_str`].
        source_name: String,
        /// toml's message.
        message: String,
    },
    /// A key that is not a setting: `prot` in a file, `WSH_PROT` in the
    /// environment, `--prot` on the command line.
    #[error("unknown setting {key} (from {origin}){}", did_you_mean(.key))]
    UnknownKey {
        /// The key as the operator wrote it.
        key: String,
        /// `config file <path>`, `config text`, `environment`, or
        /// `command line`.
        origin: String,
    },
    /// An environment variable or flag whose value does not fit its field.
    #[error("invalid value for {key} (from {origin}): {message}")]
    BadValue {
        /// The field name.
        key: String,
        /// Where the value came from, e.g. `environment variable WSH_PORT`
        /// or `flag --port`.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// The merged config parsed but breaks a rule in [`Config::validate`].
    #[error("invalid config: {field} {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// The rule and the value, e.g. `must be between 1 and 1024 (got 0)`.
        message: String,
    },
}

fn valid_table(t: &str) -> bool {
    !t.is_empty()
        && !matches!(t, "default" | "meta" | "dedup")
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Every table: `db_table_name` first, then `allowed_tables`.
    fn table_list(&self) -> Vec<String> {
        let mut t = vec![self.db_table_name.clone()];
        for a in &self.allowed_tables {
            if !t.contains(a) {
                t.push(a.clone());
            }
        }
        t
    }

    /// The byte bound of one `store.query` page: `query_max_bytes`, but at
    /// most half of `max_backpressure` so the reply fits the connection's
    /// outbound bound.
    pub fn query_page_bytes(&self) -> usize {
        self.query_max_bytes.min(self.max_backpressure / 2)
    }

    /// Retention per table (`None`: keep forever).
    fn retention_map(&self) -> Result<Vec<(String, Option<Duration>)>, ConfigError> {
        let mut out: Vec<(String, Option<Duration>)> = self
            .table_list()
            .into_iter()
            .map(|t| (t, (!self.retention.is_zero()).then_some(self.retention)))
            .collect();
        for item in &self.table_retention {
            let bad = |m: String| ConfigError::Invalid {
                field: "table_retention",
                message: m,
            };
            let (t, d) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("`{item}`: expected `table=duration`")))?;
            let d =
                humantime::parse_duration(d.trim()).map_err(|e| bad(format!("`{item}`: {e}")))?;
            match out.iter_mut().find(|(n, _)| n == t.trim()) {
                Some(e) => e.1 = (!d.is_zero()).then_some(d),
                None => {
                    return Err(bad(format!(
                        "`{item}`: `{}` is not db_table_name or in allowed_tables",
                        t.trim()
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Builds the configuration from its layers: defaults, then the TOML
    /// `file` (if given), then `env` (pass `std::env::vars()`; only `WSH_*`
    /// names are used, except those in [`RESERVED_ENV`]), then `overrides`
    /// (command-line flags as `(name, value)`; the name may be `port`,
    /// `max-connections` or `--max-connections`, the value uses the same
    /// syntax as environment values), then [`validate`](Self::validate)s it.
    ///
    /// Value syntax for env and flags: booleans `true`/`false`/`1`/`0`;
    /// integers in decimal; durations as milliseconds (`30000`) or humantime
    /// (`30s`, `250ms`, `1h 30m`); lists either comma-separated (`a,b`; empty
    /// means an empty list; an item with a bracket, brace or leading quote is
    /// refused as half-written TOML) or, when the value starts with `[` or
    /// `{`, a TOML array or one inline table (`["a", "b"]`,
    /// `[{ token = "t", client_type = "service" }]`); anything else taken
    /// verbatim.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                parse_file(&text, &format!("config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };

        // Sorted so that, with several bad variables, the error is stable.
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .filter(|(name, _)| !RESERVED_ENV.contains(&name.as_str()))
            .collect();
        env.sort();
        for (name, raw) in &env {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            let Some((key, kind)) = resolve(&key) else {
                return Err(ConfigError::UnknownKey {
                    key: name.clone(),
                    origin: "environment".to_owned(),
                });
            };
            let origin = format!("environment variable {name}");
            overlay(&mut table, key, kind, raw, &origin)?;
        }

        for (flag, raw) in overrides {
            let key = flag.trim_start_matches('-').replace('-', "_");
            let flag = format!("--{}", key.replace('_', "-"));
            let Some((key, kind)) = resolve(&key) else {
                return Err(ConfigError::UnknownKey {
                    key: flag,
                    origin: "command line".to_owned(),
                });
            };
            overlay(&mut table, key, kind, raw, &format!("flag {flag}"))?;
        }

        let config = deserialize_table(table, "merged configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (the contents of a config file, no env or
    /// flags) over the defaults and validates the result.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let table = parse_file(s, "config text")?;
        let config = deserialize_table(table, "config text")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and cross-field rules (the first violation is the
    /// error) and computes the values derived from the settings, once: the
    /// server only ever runs from a [`Checked`] config.
    pub fn validate(&self) -> Result<Checked, ConfigError> {
        self.check_rules()?;
        let tables = self
            .table_list()
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
        Ok(Checked {
            retention: self.retention_map()?,
            max_message_size: if self.echo {
                self.max_payload_size.max(ECHO_MIN_PAYLOAD)
            } else {
                self.max_payload_size
            },
            tables,
            config: self.clone(),
        })
    }

    /// The same settings with every secret (tokens, the HMAC key) replaced
    /// by `<redacted>`: what `wshandler config` prints.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if c.auth_token.is_some() {
            c.auth_token = Some("<redacted>".to_owned());
        }
        c.auth_tokens = c.auth_tokens.iter().map(AuthToken::redacted).collect();
        c.jwt = c.jwt.redacted();
        if c.admin_token.is_some() {
            c.admin_token = Some("<redacted>".to_owned());
        }
        c
    }

    fn jwt_rules(&self) -> Result<(), ConfigError> {
        let j = &self.jwt;
        let invalid = |field: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if j.hmac_secret.is_some() && j.hmac_secret_file.is_some() {
            return invalid(
                "jwt.hmac_secret",
                "and jwt.hmac_secret_file are both set; set one",
            );
        }
        if j.hmac_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return invalid(
                "jwt.hmac_secret",
                "must be at least 32 bytes (a short HMAC key can be brute-forced offline from one token)",
            );
        }
        if j.expired_grace.is_zero() {
            return invalid("jwt.expired_grace", "must be greater than 0");
        }
        if j.leeway > Duration::from_secs(600) {
            return invalid("jwt.leeway", "must be at most 10m");
        }
        for k in &j.public_key_files {
            if let KeyFile::Spec { alg: Some(a), .. } = k {
                if !PUBLIC_KEY_ALGS.contains(&a.as_str()) {
                    return Err(ConfigError::Invalid {
                        field: "jwt.public_key_files",
                        message: format!(
                            "algorithm `{a}` is not one of {}",
                            PUBLIC_KEY_ALGS.join(", ")
                        ),
                    });
                }
            }
        }
        if self.auth_watch_interval < Duration::from_millis(100) {
            return invalid("auth_watch_interval", "must be at least 100ms");
        }
        Ok(())
    }

    fn check_rules(&self) -> Result<(), ConfigError> {
        fn invalid(field: &'static str, message: String) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid { field, message })
        }

        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return invalid(
                "shards",
                format!("must be between 1 and {MAX_SHARDS} (got {})", self.shards),
            );
        }
        if self.max_connections < 1 {
            return invalid("max_connections", "must be at least 1 (got 0)".to_owned());
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            return invalid(
                "listen_backlog",
                format!("must be 1..=65535 (got {})", self.listen_backlog),
            );
        }
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.max_payload_size) {
            return invalid(
                "max_payload_size",
                format!(
                    "must be between {MIN_PAYLOAD} and {MAX_PAYLOAD} bytes (1 GiB) (got {})",
                    self.max_payload_size
                ),
            );
        }
        if self.max_backpressure < MIN_BACKPRESSURE {
            return invalid(
                "max_backpressure",
                format!(
                    "must be at least {MIN_BACKPRESSURE} bytes (got {})",
                    self.max_backpressure
                ),
            );
        }
        if self.enable_heartbeat && self.heartbeat_interval < MIN_HEARTBEAT {
            return invalid(
                "heartbeat_interval",
                format!(
                    "must be at least 100ms when enable_heartbeat is true (got {})",
                    humantime::format_duration(self.heartbeat_interval)
                ),
            );
        }
        if !(1..=100).contains(&self.max_json_depth) {
            return invalid(
                "max_json_depth",
                format!("must be between 1 and 100 (got {})", self.max_json_depth),
            );
        }
        for (field, v, min) in [
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
                1,
            ),
            (
                "max_streams_per_connection",
                self.max_streams_per_connection,
                1,
            ),
            ("max_id_length", self.max_id_length, 8),
            ("max_topic_length", self.max_topic_length, 8),
            ("max_name_length", self.max_name_length, 8),
            ("max_pending_requests", self.max_pending_requests, 1),
            ("status_max_clients", self.status_max_clients, 1),
        ] {
            if v < min {
                return invalid(field, format!("must be at least {min} (got {v})"));
            }
        }
        if !(64..=16 << 20).contains(&self.admin_max_body_bytes) {
            return invalid(
                "admin_max_body_bytes",
                format!(
                    "must be between 64 and 16777216 (got {})",
                    self.admin_max_body_bytes
                ),
            );
        }
        if let Some(a) = &self.admin_listen {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return invalid(
                    "admin_listen",
                    format!("`{a}` is not an address:port (e.g. 127.0.0.1:9090)"),
                );
            }
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return invalid(
                "admin_token",
                "must be at least 16 characters (it grants every admin operation)".to_owned(),
            );
        }
        if self.metrics_top_topics > 1000 {
            return invalid(
                "metrics_top_topics",
                format!("must be at most 1000 (got {})", self.metrics_top_topics),
            );
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be greater than zero".to_owned());
        }
        if !LOG_LEVELS.contains(&self.log_level.as_str()) {
            return invalid(
                "log_level",
                format!(
                    "must be one of {} (got `{}`)",
                    LOG_LEVELS.join(", "),
                    self.log_level
                ),
            );
        }
        if !LOG_FORMATS.contains(&self.log_format.as_str()) {
            return invalid(
                "log_format",
                format!(
                    "must be one of {} (got `{}`)",
                    LOG_FORMATS.join(", "),
                    self.log_format
                ),
            );
        }
        if self.host.is_empty() {
            return invalid("host", "must not be empty".to_owned());
        }
        if self.db_table_name.is_empty() {
            return invalid("db_table_name", "must not be empty".to_owned());
        }
        if !valid_table(&self.db_table_name) {
            return invalid(
                "db_table_name",
                format!(
                    "may contain only ASCII letters, digits, `_` and `-`, and may not be default, meta or dedup (got `{}`)",
                    self.db_table_name
                ),
            );
        }
        let has_token = !self.auth_token.as_deref().unwrap_or("").is_empty()
            || !self.auth_tokens.is_empty()
            || self.jwt.enabled();
        if self.enable_authentication && !has_token {
            return invalid(
                "auth_token",
                "must be set to a non-empty token (or auth_tokens listed, or a [jwt] key) when enable_authentication is true"
                    .to_owned(),
            );
        }
        for (i, t) in self.auth_tokens.iter().enumerate() {
            if let Err(m) = t.check() {
                return invalid("auth_tokens", format!("entry {i}: {m}"));
            }
        }
        self.jwt_rules()?;
        if let Some(t) = self
            .auth_tokens
            .iter()
            .filter_map(AuthToken::client_type)
            .find(|t| !self.client_types.iter().any(|c| c == t))
        {
            return invalid(
                "auth_tokens",
                format!("token bound to client type `{t}`, which is not in client_types"),
            );
        }
        if self.client_types.is_empty() {
            return invalid(
                "client_types",
                "must list at least one client type".to_owned(),
            );
        }
        if self.max_auth_failures == 0 {
            return invalid("max_auth_failures", "must be at least 1".to_owned());
        }
        if self.handshake_timeout.is_zero() || self.handshake_timeout > MAX_DRAIN {
            return invalid(
                "handshake_timeout",
                format!(
                    "must be greater than 0 and at most 1h (got {})",
                    humantime::format_duration(self.handshake_timeout)
                ),
            );
        }
        self.check_tls()?;
        if self.auth_timeout.is_zero() {
            return invalid("auth_timeout", "must be greater than 0".to_owned());
        }
        for t in &self.allowed_tables {
            if !valid_table(t) {
                return invalid(
                    "allowed_tables",
                    format!(
                        "`{t}`: table names may contain only ASCII letters, digits, `_` and `-`"
                    ),
                );
            }
        }
        if self.store_batch_max == 0 || self.store_batch_bytes == 0 || self.store_queue == 0 {
            return invalid(
                "store_batch_max",
                "store_batch_max, store_batch_bytes and store_queue must be at least 1".to_owned(),
            );
        }
        if self.store_write_buffer_size < 64 * 1024 {
            return invalid(
                "store_write_buffer_size",
                "must be at least 64 KiB".to_owned(),
            );
        }
        self.retention_map()?;
        if !(1..=100_000).contains(&self.query_max_records) {
            return invalid(
                "query_max_records",
                format!("must be 1..=100000 (got {})", self.query_max_records),
            );
        }
        if self.query_max_bytes < 1024 {
            return invalid(
                "query_max_bytes",
                format!("must be at least 1024 (got {})", self.query_max_bytes),
            );
        }
        if self.max_errors_per_minute == 0 {
            return invalid("max_errors_per_minute", "must be at least 1".to_owned());
        }
        if !(9..=15).contains(&self.compression_window_bits) {
            return invalid(
                "compression_window_bits",
                format!(
                    "must be between 9 and 15 (got {})",
                    self.compression_window_bits
                ),
            );
        }
        if !(1..=9).contains(&self.compression_mem_level) {
            return invalid(
                "compression_mem_level",
                format!(
                    "must be between 1 and 9 (got {})",
                    self.compression_mem_level
                ),
            );
        }
        if self.drain_timeout > MAX_DRAIN {
            return invalid(
                "drain_timeout",
                format!(
                    "must be at most 1h (got {})",
                    humantime::format_duration(self.drain_timeout)
                ),
            );
        }
        self.limits.check(self.max_connections)?;
        Ok(())
    }
}

impl Config {
    /// Whether the server speaks TLS (on `port`, or on `tls_port`).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The TLS settings' own rules: a certificate needs its key (and the
    /// other way round), and the settings that only mean something with a
    /// certificate are refused without one rather than silently ignored.
    /// Whether the files are readable and valid is checked when the server
    /// starts (they are read then, and again on reload).
    fn check_tls(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return invalid(
                    "tls_key",
                    "must be set when tls_cert is set (the PEM file with the certificate's private key)",
                )
            }
            (None, Some(_)) => {
                return invalid("tls_cert", "must be set when tls_key is set")
            }
            _ => {}
        }
        if self.tls_cert.is_none() {
            if self.tls_client_ca.is_some() {
                return invalid(
                    "tls_client_ca",
                    "needs tls_cert and tls_key (client certificates are only asked for over TLS)",
                );
            }
            if self.tls_port.is_some() {
                return invalid("tls_port", "needs tls_cert and tls_key");
            }
        }
        if let Some(tp) = self.tls_port {
            if tp != 0 && tp == self.port {
                return invalid(
                    "tls_port",
                    &format!(
                        "must differ from port (both {tp}); unset it to serve TLS only on port"
                    ),
                );
            }
        }
        if !self.tls_watch_interval.is_zero() && self.tls_watch_interval < MIN_HEARTBEAT {
            return invalid(
                "tls_watch_interval",
                &format!(
                    "must be 0s (off) or at least 100ms (got {})",
                    humantime::format_duration(self.tls_watch_interval)
                ),
            );
        }
        Ok(())
    }
}

/// Every setting's name, in the order of the example file's sections.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|&(name, _)| name)
}

/// How an env var or flag value is turned into a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `true`/`false`/`1`/`0`.
    Bool,
    /// A decimal integer; serde checks the range for the field's type.
    Int,
    /// An integer (milliseconds) or a humantime string.
    Duration,
    /// Comma-separated strings, or a TOML array / inline table when the
    /// value starts with `[` or `{`.
    List,
    /// Taken verbatim; serde parses it (paths, enums, plain strings).
    Str,
}

/// Every field of [`Config`] and its kind. A test checks this against the
/// struct itself, so it cannot drift.
const FIELDS: &[(&str, Kind)] = &[
    ("port", Kind::Int),
    ("host", Kind::Str),
    ("max_connections", Kind::Int),
    ("drain_timeout", Kind::Duration),
    ("handshake_timeout", Kind::Duration),
    ("tls_cert", Kind::Str),
    ("tls_key", Kind::Str),
    ("tls_client_ca", Kind::Str),
    ("tls_min_version", Kind::Str),
    ("tls_port", Kind::Int),
    ("tls_identity", Kind::Str),
    ("tls_watch_interval", Kind::Duration),
    ("shards", Kind::Int),
    ("io_driver", Kind::Str),
    ("pin_shards", Kind::Bool),
    ("listen_backlog", Kind::Int),
    ("enable_authentication", Kind::Bool),
    ("auth_token", Kind::Str),
    ("auth_tokens", Kind::List),
    ("max_auth_failures", Kind::Int),
    ("auth_timeout", Kind::Duration),
    ("allow_query_token", Kind::Bool),
    ("on_duplicate_device", Kind::Str),
    ("auth_watch_interval", Kind::Duration),
    ("client_types", Kind::List),
    ("max_errors_per_minute", Kind::Int),
    ("enable_request_response", Kind::Bool),
    ("enable_pub_sub", Kind::Bool),
    ("enable_rpc", Kind::Bool),
    ("enable_streaming", Kind::Bool),
    ("echo", Kind::Bool),
    ("enable_data_validation", Kind::Bool),
    ("required_fields", Kind::List),
    ("fields_to_encrypt", Kind::List),
    ("enable_compression", Kind::Bool),
    ("compression_threshold", Kind::Int),
    ("compression_context_takeover", Kind::Bool),
    ("compression_window_bits", Kind::Int),
    ("compression_mem_level", Kind::Int),
    ("max_payload_size", Kind::Int),
    ("max_backpressure", Kind::Int),
    ("request_timeout", Kind::Duration),
    ("max_json_depth", Kind::Int),
    ("max_subscriptions_per_connection", Kind::Int),
    ("max_streams_per_connection", Kind::Int),
    ("max_id_length", Kind::Int),
    ("max_topic_length", Kind::Int),
    ("max_name_length", Kind::Int),
    ("max_pending_requests", Kind::Int),
    ("status_max_clients", Kind::Int),
    ("metrics_top_topics", Kind::Int),
    ("admin_token", Kind::Str),
    ("admin_listen", Kind::Str),
    ("metrics_public", Kind::Bool),
    ("admin_max_body_bytes", Kind::Int),
    ("enable_heartbeat", Kind::Bool),
    ("heartbeat_interval", Kind::Duration),
    ("log_level", Kind::Str),
    ("log_format", Kind::Str),
    ("data_dir", Kind::Str),
    ("db_table_name", Kind::Str),
    ("persist", Kind::Bool),
    ("durability", Kind::Str),
    ("store_batch_max", Kind::Int),
    ("store_batch_bytes", Kind::Int),
    ("store_queue", Kind::Int),
    ("store_write_buffer_size", Kind::Int),
    ("allowed_tables", Kind::List),
    ("encryption_key_file", Kind::Str),
    ("dedup_window", Kind::Duration),
    ("retention", Kind::Duration),
    ("table_retention", Kind::List),
    ("query_max_records", Kind::Int),
    ("query_max_bytes", Kind::Int),
    ("jwt.hmac_secret", Kind::Str),
    ("jwt.hmac_secret_file", Kind::Str),
    ("jwt.public_key_files", Kind::List),
    ("jwt.jwks_file", Kind::Str),
    ("jwt.audience", Kind::Str),
    ("jwt.issuer", Kind::Str),
    ("jwt.require_exp", Kind::Bool),
    ("jwt.leeway", Kind::Duration),
    ("jwt.expired_grace", Kind::Duration),
    ("limits.connections_per_ip_per_s", Kind::Int),
    ("limits.connections_per_ip_burst", Kind::Int),
    ("limits.max_connections_per_ip", Kind::Int),
    ("limits.auth_failures_per_ip_per_min", Kind::Int),
    ("limits.auth_failure_backoff", Kind::Duration),
    ("limits.trusted_proxies", Kind::List),
    ("limits.allowed_origins", Kind::List),
    ("limits.max_tracked_ips", Kind::Int),
    ("limits.ipv6_prefix", Kind::Int),
];

fn field_kind(key: &str) -> Option<Kind> {
    FIELDS
        .iter()
        .find(|&&(name, _)| name == key)
        .map(|&(_, kind)| kind)
}

/// The field an env variable or flag names: `jwt.hmac_secret` is reached as
/// `WSH_JWT_HMAC_SECRET`, `--set jwt.hmac_secret=...` or `--jwt-hmac-secret`.
fn resolve(key: &str) -> Option<(&'static str, Kind)> {
    let key = key.replace('-', "_");
    FIELDS
        .iter()
        .find(|&&(name, _)| name == key || name.replace('.', "_") == key)
        .copied()
}

/// Is `key` the name of a table of settings (`jwt` for `jwt.*`)?
fn is_section(key: &str) -> bool {
    FIELDS
        .iter()
        .any(|(name, _)| name.split_once('.').is_some_and(|(s, _)| s == key))
}

/// Insert `value` at the dotted `name` (`jwt.leeway` goes into `[jwt]`).
fn insert_at(table: &mut toml::Table, name: &str, value: toml::Value) {
    match name.split_once('.') {
        Some((section, key)) => {
            let sub = table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !sub.is_table() {
                *sub = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = sub {
                t.insert(key.to_owned(), value);
            }
        }
        None => {
            table.insert(name.to_owned(), value);
        }
    }
}

/// The first key of a parsed file that is not a setting, as written
/// (`jwt.bogus` for a bad key inside `[jwt]`).
fn unknown_key(table: &toml::Table) -> Option<String> {
    for (k, v) in table {
        if is_section(k) {
            if let toml::Value::Table(t) = v {
                if let Some(sub) = t.keys().find(|s| field_kind(&format!("{k}.{s}")).is_none()) {
                    return Some(format!("{k}.{sub}"));
                }
            }
            // A non-table value there is a type error serde reports.
        } else if field_kind(k).is_none() {
            return Some(k.clone());
        }
    }
    None
}

/// Parses file contents into a table, rejecting unknown keys by name and
/// reporting type errors with toml's line/column context.
fn parse_file(text: &str, source_name: &str) -> Result<toml::Table, ConfigError> {
    let parse_err = |e: toml::de::Error| ConfigError::Parse {
        source_name: source_name.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    };
    let table: toml::Table = toml::from_str(text).map_err(parse_err)?;
    if let Some(key) = unknown_key(&table) {
        return Err(ConfigError::UnknownKey {
            key,
            origin: source_name.to_owned(),
        });
    }
    // Deserializing from the text (not the table) keeps spans in the error.
    toml::from_str::<Config>(text).map_err(parse_err)?;
    Ok(table)
}

fn deserialize_table(table: toml::Table, source_name: &str) -> Result<Config, ConfigError> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
}

/// Converts one env/flag value and inserts it into `table`, checking it on
/// its own first so a bad value is blamed on its origin, not the merge.
fn overlay(
    table: &mut toml::Table,
    key: &str,
    kind: Kind,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::BadValue {
        key: key.to_owned(),
        origin: origin.to_owned(),
        message,
    };
    let value = convert(kind, raw).map_err(bad)?;
    let mut single = toml::Table::new();
    insert_at(&mut single, key, value.clone());
    toml::Value::Table(single)
        .try_into::<Config>()
        .map_err(|e| {
            // toml appends "\nin `key`"; the error already names the field.
            let message = e.to_string();
            let message = message.trim_end();
            let message = message
                .strip_suffix(&format!("\nin `{key}`"))
                .unwrap_or(message);
            bad(message.to_owned())
        })?;
    insert_at(table, key, value);
    Ok(())
}

fn convert(kind: Kind, raw: &str) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    Ok(match kind {
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(format!("expected true, false, 1 or 0, got `{raw}`")),
        },
        Kind::Int => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got `{raw}`"))?,
        Kind::Duration => match trimmed.parse::<i64>() {
            Ok(ms) => toml::Value::Integer(ms),
            Err(_) => toml::Value::String(trimmed.to_owned()),
        },
        Kind::List if trimmed.starts_with(['[', '{']) => inline_toml_list(trimmed)?,
        Kind::List => toml::Value::Array(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    // A stray bracket, brace or quote means TOML syntax was
                    // meant (`["a", "b"]` split at commas gives `["a"` and
                    // `"b"]`); refuse rather than store mangled items.
                    if s.contains(['[', ']', '{', '}']) || s.starts_with(['"', '\'']) {
                        Err(format!(
                            "item `{s}` of a comma-separated list looks like TOML syntax; \
                             write the whole value as a TOML array, e.g. [\"a\", \"b\"]"
                        ))
                    } else {
                        Ok(toml::Value::String(s.to_owned()))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        Kind::Str => toml::Value::String(raw.to_owned()),
    })
}

/// A list value written in TOML: an array (`["a", "b"]`,
/// `[{ token = "t", client_type = "service" }]`) or one inline table
/// (`{ token = "t" }`, taken as a one-item list).
fn inline_toml_list(text: &str) -> Result<toml::Value, String> {
    let doc = format!("value = {text}");
    let mut table: toml::Table = toml::from_str(&doc).map_err(|e| {
        // `message()` leaves out toml's excerpt of our `value = ` wrapper;
        // its lines ("invalid array", "expected `]`") go on one line.
        let message = e.message().trim_end().replace('\n', "; ");
        format!("cannot parse `{text}` as a TOML array or inline table: {message}")
    })?;
    match table.remove("value") {
        Some(toml::Value::Array(items)) => Ok(toml::Value::Array(items)),
        Some(t @ toml::Value::Table(_)) => Ok(toml::Value::Array(vec![t])),
        _ => Err(format!("expected a TOML array, got `{text}`")),
    }
}

/// `; did you mean X?` for a near-miss key, in the same spelling as `key`
/// (`WSH_PROT` -> `WSH_PORT`, `--prot` -> `--port`, `maxConnections` ->
/// `max_connections`), or nothing.
fn did_you_mean(key: &str) -> String {
    let (style, bare) = if let Some(rest) = key.strip_prefix(ENV_PREFIX) {
        ("env", rest)
    } else if let Some(rest) = key.strip_prefix("--") {
        ("flag", rest)
    } else {
        ("file", key)
    };
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = squash(bare);
    let best = field_names()
        .map(|name| (osa_distance(&wanted, &squash(name)), name))
        .min_by_key(|&(d, _)| d);
    match best {
        Some((d, name)) if d <= (wanted.len() / 4).max(1) => match style {
            "env" => format!(
                "; did you mean {ENV_PREFIX}{}?",
                name.replace('.', "_").to_ascii_uppercase()
            ),
            "flag" => format!("; did you mean --{}?", name.replace(['_', '.'], "-")),
            _ => format!("; did you mean {name}?"),
        },
        _ => String::new(),
    }
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// adjacent characters (so `prot` is one edit from `port`).
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Durations in config: read from an integer (milliseconds, as the original
/// WebSocketHandler's `heartbeatInterval: 30000`) or a humantime string
/// (`"30s"`, `"250ms"`, `"1h 30m"`); written as a humantime string.
mod duration_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration: milliseconds as an integer, or a string like \"30s\"")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("duration must not be negative (got {ms})")))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            let s = s.trim();
            if let Ok(ms) = s.parse::<u64>() {
                return Ok(Duration::from_millis(ms));
            }
            humantime::parse_duration(s)
                .map_err(|e| E::custom(format!("invalid duration `{s}`: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../wshandler.example.toml");

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn write_temp(name: &str, contents: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wshandler-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn defaults_match_seed() {
        let c = Config::default();
        assert_eq!(c.port, 8080);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.max_connections, 100);
        assert_eq!(c.max_payload_size, 10_485_760);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.db_table_name, "sensor_data");
        assert_eq!(c.log_level, "info");
        assert!(!c.enable_authentication && c.auth_token.is_none());
        assert!(c.enable_request_response && c.enable_pub_sub && c.enable_rpc);
        assert!(c.enable_streaming && c.enable_data_validation && c.enable_compression);
        assert!(c.enable_heartbeat);
        assert!(c.required_fields.is_empty() && c.fields_to_encrypt.is_empty());
        assert_eq!(c.io_driver, IoDriver::Auto);
        assert!(c.shards >= 1);
        c.validate().unwrap();
        assert_eq!(Config::from_toml_str("").unwrap(), c);
        assert_eq!(Config::load(None, env(&[]), &[]).unwrap(), c);
    }

    #[test]
    fn fields_table_matches_struct() {
        let c = Config {
            auth_token: Some("t".into()),
            encryption_key_file: Some("k".into()),
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tls_client_ca: Some("ca".into()),
            tls_port: Some(8443),
            admin_token: Some("a".into()),
            admin_listen: Some("127.0.0.1:9090".into()),
            ..Config::default()
        };
        let c = Config {
            jwt: JwtConfig {
                hmac_secret: Some("s".into()),
                hmac_secret_file: Some("f".into()),
                jwks_file: Some("j".into()),
                audience: Some("a".into()),
                issuer: Some("i".into()),
                ..JwtConfig::default()
            },
            ..c
        };
        let toml::Value::Table(t) = toml::Value::try_from(&c).unwrap() else {
            panic!("config did not serialize to a table");
        };
        // Tables of settings (`[jwt]`) flattened to dotted names.
        let mut flat = Vec::new();
        for (k, v) in &t {
            match v {
                toml::Value::Table(sub) if is_section(k) => {
                    flat.extend(sub.iter().map(|(s, v)| (format!("{k}.{s}"), v.clone())))
                }
                _ => flat.push((k.clone(), v.clone())),
            }
        }
        let mut from_struct: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        let mut from_table: Vec<&str> = field_names().collect();
        from_struct.sort_unstable();
        from_table.sort_unstable();
        assert_eq!(from_struct, from_table);
        for (key, value) in &flat {
            let kind = field_kind(key).unwrap();
            let ok = match kind {
                Kind::Bool => value.is_bool(),
                Kind::Int => value.is_integer(),
                Kind::Duration | Kind::Str => value.is_str(),
                Kind::List => value.is_array(),
            };
            assert!(ok, "{key} is {kind:?} but serializes as {value:?}");
        }
    }

    #[test]
    fn serialize_round_trips() {
        let c = Config {
            auth_token: Some("secret".into()),
            request_timeout: Duration::from_millis(250),
            required_fields: vec!["a".into()],
            ..Config::default()
        };
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("request_timeout = \"250ms\""), "{text}");
        assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    }

    #[test]
    fn durations_from_ms_and_strings() {
        let c = Config::from_toml_str(
            "heartbeat_interval = 30000\nrequest_timeout = \"30s\"\ndrain_timeout = \"250ms\"",
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.drain_timeout, Duration::from_millis(250));

        let c = Config::from_toml_str("request_timeout = \"30d\"").unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(30 * 86_400));

        let c = Config::load(None, env(&[("WSH_REQUEST_TIMEOUT", "1500")]), &[]).unwrap();
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        let c = Config::load(None, env(&[("WSH_REQUEST_TIMEOUT", "2m")]), &[]).unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(120));

        let err = Config::from_toml_str("request_timeout = -5").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = Config::from_toml_str("request_timeout = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("request_timeout"), "{err}");
    }

    #[test]
    fn env_wins_over_file_and_flags_win_over_env() {
        let path = write_temp(
            "layers.toml",
            "port = 7000\nio_driver = \"uring\"\nshards = 3\n",
        );
        let c = Config::load(Some(&path), env(&[]), &[]).unwrap();
        assert_eq!((c.port, c.io_driver, c.shards), (7000, IoDriver::Uring, 3));

        let vars = env(&[
            ("WSH_PORT", "9000"),
            ("WSH_IO_DRIVER", "epoll"),
            ("PATH", "/bin"),
            ("WSH_CONFIG", "/ignored.toml"),
        ]);
        let c = Config::load(Some(&path), vars.clone(), &[]).unwrap();
        assert_eq!((c.port, c.io_driver, c.shards), (9000, IoDriver::Epoll, 3));

        let flags = env(&[("port", "9100"), ("--io-driver", "auto")]);
        let c = Config::load(Some(&path), vars, &flags).unwrap();
        assert_eq!((c.port, c.io_driver, c.shards), (9100, IoDriver::Auto, 3));
    }

    #[test]
    fn env_value_syntax() {
        let vars = env(&[
            ("WSH_REQUIRED_FIELDS", "a, b"),
            ("WSH_FIELDS_TO_ENCRYPT", ""),
            ("WSH_ENABLE_PUB_SUB", "0"),
            ("WSH_PIN_SHARDS", "TRUE"),
            ("WSH_DATA_DIR", "/var/lib/wsh"),
            ("WSH_ENABLE_AUTHENTICATION", "1"),
            ("WSH_AUTH_TOKEN", "s3cret"),
        ]);
        let c = Config::load(None, vars, &[]).unwrap();
        assert_eq!(c.required_fields, ["a", "b"]);
        assert!(c.fields_to_encrypt.is_empty());
        assert!(!c.enable_pub_sub && c.pin_shards && c.enable_authentication);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/wsh"));
        assert_eq!(c.auth_token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn issue9_item12_list_settings_accept_toml_arrays() {
        // Env and flags share one converter; check both spellings.
        let fields = r#"["temperature", "humidity"]"#;
        let c = Config::load(None, env(&[("WSH_REQUIRED_FIELDS", fields)]), &[]).unwrap();
        assert_eq!(c.required_fields, ["temperature", "humidity"]);
        let c = Config::load(None, env(&[]), &env(&[("required_fields", fields)])).unwrap();
        assert_eq!(c.required_fields, ["temperature", "humidity"]);
        // Without spaces, as a shell user types it.
        let c = Config::load(
            None,
            env(&[("WSH_REQUIRED_FIELDS", r#"["temperature","humidity"]"#)]),
            &[],
        )
        .unwrap();
        assert_eq!(c.required_fields, ["temperature", "humidity"]);
        let c = Config::load(None, env(&[("WSH_ALLOWED_TABLES", "[]")]), &[]).unwrap();
        assert!(c.allowed_tables.is_empty());

        // Bound tokens keep their binding: one token, not two plain ones.
        let tokens = r#"[{token="svc-only",client_type="service"}, "plain"]"#;
        let c = Config::load(None, env(&[]), &env(&[("auth_tokens", tokens)])).unwrap();
        assert_eq!(
            c.auth_tokens,
            [
                AuthToken::bound("svc-only", Some("service")),
                AuthToken::Plain("plain".into())
            ]
        );
        // One inline table is a one-item list.
        let c = Config::load(
            None,
            env(&[(
                "WSH_AUTH_TOKENS",
                r#"{token="svc-only",client_type="service"}"#,
            )]),
            &[],
        )
        .unwrap();
        assert_eq!(c.auth_tokens.len(), 1);
        assert_eq!(c.auth_tokens[0].client_type(), Some("service"));

        // The simple form still works.
        let c = Config::load(None, env(&[("WSH_AUTH_TOKENS", "a, b")]), &[]).unwrap();
        assert_eq!(
            c.auth_tokens,
            [AuthToken::Plain("a".into()), AuthToken::Plain("b".into())]
        );
    }

    #[test]
    fn issue9_item12_half_written_toml_lists_are_refused_naming_the_setting() {
        let cases = [
            ("WSH_REQUIRED_FIELDS", r#"["temperature","humidity""#),
            ("WSH_REQUIRED_FIELDS", r#"[temperature, humidity]"#),
            ("WSH_REQUIRED_FIELDS", r#""temperature","humidity""#),
            ("WSH_REQUIRED_FIELDS", "temperature,humidity]"),
            (
                "WSH_AUTH_TOKENS",
                r#"plain,{token="svc-only",client_type="service"}"#,
            ),
            ("WSH_REQUIRED_FIELDS", "[1, 2]"),
        ];
        for (var, value) in cases {
            let err = Config::load(None, env(&[(var, value)]), &[]).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadValue { .. }),
                "{value}: {err:?}"
            );
            let msg = err.to_string();
            let field = var[ENV_PREFIX.len()..].to_ascii_lowercase();
            assert!(msg.contains(&field) && msg.contains(var), "{value}: {msg}");
            assert!(!msg.contains('\n'), "{value}: {msg}");
        }
        let err =
            Config::load(None, env(&[]), &env(&[("required_fields", r#"["a","b""#)])).unwrap_err();
        assert!(err.to_string().contains("flag --required-fields"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml_str("prot = 1").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "unknown setting prot (from config text); did you mean port?"
        );

        let err = Config::from_toml_str("maxConnections = 5").unwrap_err();
        assert!(
            err.to_string().contains("did you mean max_connections?"),
            "{err}"
        );

        let err = Config::from_toml_str("[server]\nport = 1").unwrap_err();
        assert!(err.to_string().contains("unknown setting server"), "{err}");

        let path = write_temp("unknown.toml", "port = 1\nbogus_setting = true\n");
        let err = Config::load(Some(&path), env(&[]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("bogus_setting") && msg.contains("unknown.toml"),
            "{msg}"
        );
        assert!(!msg.contains("did you mean"), "{msg}");

        let err = Config::load(None, env(&[("WSH_PROT", "1")]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting WSH_PROT (from environment); did you mean WSH_PORT?"
        );

        let err = Config::load(None, env(&[]), &env(&[("max-conections", "1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting --max-conections (from command line); did you mean --max-connections?"
        );
    }

    #[test]
    fn bad_values_name_field_and_origin() {
        let err = Config::load(None, env(&[("WSH_PORT", "abc")]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");
        assert!(
            msg.contains("port") && msg.contains("WSH_PORT") && msg.contains("abc"),
            "{msg}"
        );

        let err = Config::load(None, env(&[("WSH_PORT", "70000")]), &[]).unwrap_err();
        assert!(err.to_string().contains("WSH_PORT"), "{err}");

        let err = Config::load(None, env(&[("WSH_IO_DRIVER", "kqueue")]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("io_driver") && msg.contains("kqueue"), "{msg}");

        let err = Config::load(None, env(&[]), &env(&[("echo", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("flag --echo"), "{err}");

        let path = write_temp("badtype.toml", "port = \"abc\"\n");
        let err = Config::load(Some(&path), env(&[]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(
            msg.contains("badtype.toml") && msg.contains("port"),
            "{msg}"
        );

        let err = Config::from_toml_str("port = ").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");

        let missing = Path::new("/nonexistent/wshandler.toml");
        let err = Config::load(Some(missing), env(&[]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/wshandler.toml"),
            "{err}"
        );
    }

    #[test]
    fn validation_rules() {
        let err = Config::from_toml_str("shards = 0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: shards must be between 1 and 1024 (got 0)"
        );
        let err = Config::from_toml_str("log_level = \"loud\"").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "log_level",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("loud"), "{err}");
        let err = Config::from_toml_str("enable_authentication = true").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "auth_token",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("enable_authentication"), "{err}");
        Config::from_toml_str("enable_authentication = true\nauth_token = \"t\"").unwrap();

        let rejects = [
            ("shards = 1025", "shards"),
            ("max_connections = 0", "max_connections"),
            ("max_payload_size = 124", "max_payload_size"),
            ("max_payload_size = 1073741825", "max_payload_size"),
            ("max_backpressure = 1023", "max_backpressure"),
            ("heartbeat_interval = 99", "heartbeat_interval"),
            ("request_timeout = 0", "request_timeout"),
            ("host = \"\"", "host"),
            ("db_table_name = \"\"", "db_table_name"),
            ("db_table_name = \"a;drop\"", "db_table_name"),
            (
                "enable_authentication = true\nauth_token = \"\"",
                "auth_token",
            ),
            ("drain_timeout = \"61m\"", "drain_timeout"),
            ("compression_window_bits = 8", "compression_window_bits"),
            ("compression_window_bits = 16", "compression_window_bits"),
            ("compression_mem_level = 0", "compression_mem_level"),
            ("compression_mem_level = 10", "compression_mem_level"),
            ("query_max_records = 0", "query_max_records"),
            ("query_max_records = 100001", "query_max_records"),
            ("query_max_bytes = 1023", "query_max_bytes"),
        ];
        for (text, field) in rejects {
            match Config::from_toml_str(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected Invalid({field}), got {other:?}"),
            }
        }
        let accepts = [
            "port = 0",
            "shards = 1024",
            "max_payload_size = 125",
            "max_payload_size = 1073741824",
            "max_backpressure = 1024",
            "enable_heartbeat = false\nheartbeat_interval = 0",
            "drain_timeout = \"1h\"",
            "db_table_name = \"Sensor-data_2\"",
            "compression_window_bits = 9\ncompression_mem_level = 1",
            "compression_window_bits = 15\ncompression_mem_level = 9",
            "query_max_records = 1\nquery_max_bytes = 1024",
            "query_max_records = 100000",
        ];
        for text in accepts {
            Config::from_toml_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn io_driver_text() {
        for d in [IoDriver::Auto, IoDriver::Uring, IoDriver::Epoll] {
            assert_eq!(d.to_string().parse::<IoDriver>(), Ok(d));
        }
        assert_eq!("EPOLL".parse::<IoDriver>(), Ok(IoDriver::Epoll));
        let err = "kqueue".parse::<IoDriver>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown io driver `kqueue` (expected auto, uring or epoll)"
        );
    }

    #[test]
    fn tls_settings_rules() {
        let field = |text: &str| match Config::from_toml_str(text) {
            Err(ConfigError::Invalid { field, message }) => (field, message),
            other => panic!("{text}: {other:?}"),
        };
        let (f, m) = field("tls_cert = \"c.pem\"");
        assert_eq!(f, "tls_key", "a cert without a key names the key");
        assert!(m.contains("tls_cert"), "{m}");
        assert_eq!(field("tls_key = \"k.pem\"").0, "tls_cert");
        assert_eq!(field("tls_client_ca = \"ca.pem\"").0, "tls_client_ca");
        assert_eq!(field("tls_port = 8443").0, "tls_port");
        assert_eq!(
            field("tls_cert = \"c\"\ntls_key = \"k\"\nport = 8443\ntls_port = 8443").0,
            "tls_port"
        );
        assert_eq!(
            field("tls_cert = \"c\"\ntls_key = \"k\"\ntls_watch_interval = \"10ms\"").0,
            "tls_watch_interval"
        );
        let c = Config::from_toml_str(
            "tls_cert = \"c\"\ntls_key = \"k\"\ntls_min_version = \"1.3\"\n\
             tls_identity = \"san\"\ntls_port = 0\ntls_watch_interval = \"0s\"",
        )
        .unwrap();
        assert!(c.tls_enabled());
        assert_eq!(
            (c.tls_min_version, c.tls_identity, c.tls_port),
            (TlsVersion::V1_3, TlsIdentity::San, Some(0))
        );
        let err = Config::from_toml_str("tls_min_version = \"1.1\"").unwrap_err();
        assert!(err.to_string().contains("tls_min_version"), "{err}");
        let c = Config::load(
            None,
            env(&[("WSH_TLS_CERT", "/c.pem"), ("WSH_TLS_KEY", "/k.pem")]),
            &[("tls-min-version".into(), "1.3".into())],
        )
        .unwrap();
        assert_eq!(c.tls_cert.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(c.tls_min_version, TlsVersion::V1_3);
    }

    #[test]
    fn example_file_is_the_defaults() {
        let c = Config::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_connections, 100);
        // `shards` is commented out in the example, so it is the default too.
        assert_eq!(c, Config::default());
        // And it documents every setting.
        for full in field_names() {
            let name = full.rsplit('.').next().unwrap();
            assert!(
                EXAMPLE.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(name) && l[name.len()..].trim_start().starts_with('=')
                }),
                "{full} missing from wshandler.example.toml"
            );
        }
    }
}
