//! The `wshandler` binary: parse the command line, load the config, run the
//! server until SIGINT/SIGTERM, then stop it gracefully (exit 0). SIGHUP
//! reloads what can change without a restart (credentials, TLS files).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wshandler::{Config, WebSocketHandler};

use wshandler::fdlimit;

// mimalloc: the server allocates many small, short-lived buffers (frames,
// payload handles) from several shard threads; mimalloc's per-thread heaps
// keep that fast and return memory better than glibc's malloc arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "wshandler",
    version,
    about = "Thread-per-core WebSocket server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the effective configuration (after file, env and flags) as TOML.
    Config(ServeArgs),
    /// Print stored records, one per line, exactly as stored (works while
    /// the server runs). Records that cannot be read are listed on stderr
    /// and the exit status is then 3.
    Query(QueryArgs),
    /// Print per-table record counts and sizes (works while the server runs).
    Stats(StatsArgs),
    /// Token utilities.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Print the SHA-256 (hex) of a token read from stdin (one line; the
    /// trailing newline is not part of it), for an `auth_tokens` entry
    /// `{ sha256 = "..." }`: the config then holds no secret.
    Hash,
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// The server's data directory.
    #[arg(long, default_value = "./wshandler-data")]
    data_dir: PathBuf,
    /// Table to read (default: sensor_data).
    #[arg(long, default_value = "sensor_data")]
    table: String,
    /// First insertId to print (inclusive).
    #[arg(long)]
    from: Option<u64>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// At most this many records (records that cannot be read count too).
    #[arg(long)]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// File with the base64 key for encrypted fields (or set WSH_ENCRYPTION_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// The server's data directory.
    #[arg(long, default_value = "./wshandler-data")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML config file.
    #[arg(short, long, env = "WSH_CONFIG")]
    config: Option<PathBuf>,
    /// Conformance mode: echo every message back (for Autobahn).
    #[arg(long)]
    echo: bool,
    /// Port to listen on.
    #[arg(short, long)]
    port: Option<u16>,
    /// Host address to bind.
    #[arg(long)]
    host: Option<String>,
    /// Number of shards (threads); default: number of CPUs.
    #[arg(long)]
    shards: Option<usize>,
    /// I/O driver: auto, uring or epoll.
    #[arg(long)]
    io_driver: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json (one JSON object per line).
    #[arg(long)]
    log_format: Option<String>,
    /// Directory of the on-disk store (default ./wshandler-data, relative to
    /// the working directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Any other setting, as KEY=VALUE (repeatable), e.g. --set max_connections=5000.
    ///
    /// KEY is a setting's name as in the config file (max_connections or
    /// max-connections); the same values work in WSH_<KEY> variables.
    /// VALUE forms:
    ///   booleans   true, false, 1, 0
    ///   integers   5000
    ///   durations  milliseconds (30000) or 30s, 250ms, 1h 30m
    ///   lists      comma-separated: required_fields=temperature,humidity
    ///              or a TOML array (quote it for the shell):
    ///              'required_fields=["temperature", "humidity"]'
    ///              'auth_tokens=["plain", {token="svc", client_type="service"}]'
    ///   other      taken as written (paths, names, tokens)
    /// A list item with a bracket, brace or leading quote outside a TOML
    /// array is refused, so half-written TOML is not stored mangled.
    #[arg(long = "set", value_name = "KEY=VALUE", verbatim_doc_comment)]
    set: Vec<String>,
}

impl ServeArgs {
    fn overrides(&self) -> Result<Vec<(String, String)>, String> {
        let mut o = Vec::new();
        if self.echo {
            o.push(("echo".into(), "true".into()));
        }
        if let Some(p) = self.port {
            o.push(("port".into(), p.to_string()));
        }
        if let Some(h) = &self.host {
            o.push(("host".into(), h.clone()));
        }
        if let Some(s) = self.shards {
            o.push(("shards".into(), s.to_string()));
        }
        if let Some(d) = &self.io_driver {
            o.push(("io_driver".into(), d.clone()));
        }
        if let Some(l) = &self.log_level {
            o.push(("log_level".into(), l.clone()));
        }
        if let Some(f) = &self.log_format {
            o.push(("log_format".into(), f.clone()));
        }
        if let Some(d) = &self.data_dir {
            o.push(("data_dir".into(), d.display().to_string()));
        }
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--set expects KEY=VALUE, got {kv:?}"))?;
            o.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        Ok(o)
    }

    fn load(&self) -> Result<Config, String> {
        let overrides = self.overrides()?;
        Config::load(self.config.as_deref(), std::env::vars(), &overrides)
            .map_err(|e| e.to_string())
    }
}

/// Logs go to stderr: stdout carries the "listening on" line tools read
/// for the port, and the records `query` prints. `json`: one object per
/// line (`timestamp`, `level`, `target`, `fields`), the event's fields
/// (`client`, `shard`, `code`, ...) flattened beside the message.
fn init_logging(level: &str, format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("wshandler={level},warn")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        fmt.with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Query(args) => query(args).unwrap_or_else(|e| report(Err(e))),
        Command::Stats(args) => report(stats(args)),
        Command::Token(TokenCommand::Hash) => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("wshandler: cannot read stdin: {e}");
                return ExitCode::from(2);
            }
            let token = line.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                eprintln!("wshandler: no token on stdin");
                return ExitCode::from(2);
            }
            println!("{}", wshandler::auth::sha256_hex(token.as_bytes()));
            ExitCode::SUCCESS
        }
        Command::Config(args) => match args.load() {
            Ok(cfg) => {
                print!(
                    "{}",
                    toml::to_string_pretty(&cfg.redacted()).expect("config serialises")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wshandler: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let cfg = match args.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("wshandler: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log_level, &cfg.log_format);
            report(serve(cfg, args))
        }
    }
}

fn serve(cfg: Config, args: ServeArgs) -> anyhow::Result<()> {
    raise_fd_limit(cfg.max_connections);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Handlers first: a signal that arrives right after the "listening"
        // line must stop the server gracefully, not kill the process.
        let signals = Signals::install()?;
        let mut server = WebSocketHandler::new(cfg);
        server.start().await?;
        let addr = server.local_addr().expect("started");
        // Tools (tests, the loadtest --spawn mode) read this line for the port.
        println!("wshandler listening on {addr}");
        if let Some(tls) = server.tls_addr().filter(|&a| a != addr) {
            println!("wshandler listening for wss on {tls}");
        }
        let handle = server.handle()?;
        // SIGHUP: load the configuration again (file, env, flags) and
        // reload credentials from it, and read the TLS files again;
        // connections stay up.
        signals
            .wait(|| {
                match args.load() {
                    Ok(new) => match handle.reload_auth(&new) {
                        Ok(()) => tracing::info!("SIGHUP: credentials reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed; keeping the previous credentials"),
                    },
                    Err(e) => tracing::error!(error = %e, "SIGHUP: config does not load; keeping the previous credentials"),
                }
                reload_tls(&handle);
            })
            .await;
        tracing::info!("signal received, stopping");
        server.stop().await;
        Ok(())
    })
}

/// Raise the soft open-file limit to the hard one and warn when
/// `max_connections` cannot fit under it anyway.
fn raise_fd_limit(max_connections: usize) {
    let Some(limit) = fdlimit::raise_nofile() else {
        return;
    };
    // Listeners, RocksDB files, io_uring and the like need some headroom.
    const RESERVED: u64 = 256;
    if (max_connections as u64).saturating_add(RESERVED) > limit {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "max_connections does not fit under the open-file limit; \
             accepts will fail with EMFILE before it is reached (raise `ulimit -n`)"
        );
    }
}

/// SIGHUP, TLS: the certificate, key and client CA files again. A failure
/// is logged and the running certificate kept.
fn reload_tls(handle: &wshandler::Handle) {
    match handle.reload_tls() {
        Ok(true) => tracing::info!("SIGHUP: TLS certificate reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the previous certificate")
        }
    }
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload), registered before the
/// server starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Until SIGINT or SIGTERM; `on_hup` runs on each SIGHUP.
    async fn wait(mut self, mut on_hup: impl FnMut()) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => on_hup(),
            }
        }
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wshandler: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// One line for the operator. The two store errors a newcomer meets first
/// (no data yet, a second server on the same directory) are printed alone
/// with what to do; anything else as its chain of causes, skipping a cause
/// whose text the line already holds (our errors quote their source, so
/// `{:#}` would print it twice or three times).
fn error_line(e: &anyhow::Error) -> String {
    use wshandler::store::StoreError;
    for cause in e.chain() {
        match cause.downcast_ref::<StoreError>() {
            Some(s @ StoreError::NoDataDir { .. }) => {
                return format!("{s} (start the server first, or pass --data-dir)")
            }
            Some(s @ StoreError::DataDirInUse { .. }) => {
                return format!("{s} (stop it or pass a different --data-dir)")
            }
            _ => {}
        }
    }
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Exit status of `query` when it printed every readable record but skipped
/// some it could not read (listed on stderr); see docs/storage.md.
const EXIT_SKIPPED: u8 = 3;

fn query(a: QueryArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use wshandler::store::{crypto::FieldKey, Scan, Store};
    // Records are fetched a page at a time, so memory stays bounded however
    // large the table (a page is at most PAGE records).
    const PAGE: usize = 256;
    let key = match (&a.key_file, std::env::var("WSH_ENCRYPTION_KEY")) {
        (Some(p), _) => Some(FieldKey::from_base64(&std::fs::read_to_string(p)?)?),
        (None, Ok(k)) => Some(FieldKey::from_base64(&k)?),
        (None, Err(_)) => None,
    };
    let store = Store::open_secondary(&a.data_dir)?;
    let mut scan = Scan {
        table: a.table,
        from: a.from,
        since: a.since,
        until: a.until,
        limit: None,
        max_bytes: None,
    };
    let mut left = a.limit.unwrap_or(usize::MAX);
    let mut skipped = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if matches!(a.format, Format::Csv) {
        writeln!(out, "insertId,clientId,clientType,dataType,timestamp,data")?;
    }
    while left > 0 {
        scan.limit = Some(left.min(PAGE));
        let page = store.scan(&scan, key.as_ref())?;
        for r in &page.records {
            match a.format {
                // The record as stored. Raw CR/LF bytes in valid JSON can only
                // be whitespace between tokens (inside strings they are
                // escaped), so turning them into spaces keeps one record per
                // line without changing any value.
                Format::Jsonl => {
                    let line: Vec<u8> = r
                        .json
                        .bytes()
                        .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                        .collect();
                    out.write_all(&line)?;
                    out.write_all(b"\n")?;
                }
                Format::Csv => write_csv(&mut out, r)?,
            }
        }
        left -= page.records.len() + page.skipped.len();
        for s in &page.skipped {
            skipped += 1;
            // Out first, so stdout and stderr interleave in order.
            out.flush()?;
            eprintln!(
                "wshandler: skipped record {} in table {}: {}",
                s.insert_id, scan.table, s.reason
            );
        }
        match page.next {
            Some(n) => scan.from = Some(n),
            None => break,
        }
    }
    out.flush()?;
    if skipped > 0 {
        eprintln!("wshandler: {skipped} record(s) could not be read (exit status {EXIT_SKIPPED})");
        return Ok(ExitCode::from(EXIT_SKIPPED));
    }
    Ok(ExitCode::SUCCESS)
}

/// One CSV row: the envelope's fields, and `data` as its stored JSON text.
fn write_csv(out: &mut impl std::io::Write, r: &wshandler::store::Record) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Row<'a> {
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_type: Option<String>,
        #[serde(default)]
        data_type: Option<String>,
        #[serde(default)]
        timestamp: Option<String>,
        #[serde(borrow, default)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    // A checked record (the reader validated it); `data` is borrowed raw, so
    // its numbers and key order are printed as stored.
    let row: Row = serde_json::from_str(&r.json)?;
    let s = |v: Option<String>| csv_field(&v.unwrap_or_default());
    writeln!(
        out,
        "{},{},{},{},{},{}",
        r.insert_id,
        s(row.client_id),
        s(row.client_type),
        s(row.data_type),
        s(row.timestamp),
        csv_field(row.data.map_or("null", |d| d.get()))
    )?;
    Ok(())
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let store = wshandler::store::Store::open_secondary(&a.data_dir)?;
    println!(
        "{:<24} {:>12} {:>14} {:>14} {:>14}",
        "table", "records", "lastInsertId", "sstBytes", "memtableBytes"
    );
    for t in store.stats()? {
        println!(
            "{:<24} {:>12} {:>14} {:>14} {:>14}",
            t.table, t.records, t.last_insert_id, t.sst_bytes, t.memtable_bytes
        );
    }
    Ok(())
}
