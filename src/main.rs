//! The `wshandler` binary: parse the command line, load the config, run the
//! server until SIGINT/SIGTERM, then stop it gracefully (exit 0).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wshandler::{Config, WebSocketHandler};

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
    /// Any other setting, as key=value (repeatable), e.g. --set max_connections=5000.
    #[arg(long = "set", value_name = "KEY=VALUE")]
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

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("wshandler={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(args) => match args.load() {
            Ok(cfg) => {
                print!(
                    "{}",
                    toml::to_string_pretty(&cfg).expect("config serialises")
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
            init_logging(&cfg.log_level);
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wshandler: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
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
        signals.wait().await;
        tracing::info!("signal received, stopping");
        server.stop().await;
        Ok(())
    })
}

/// SIGINT and SIGTERM, registered before the server starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
