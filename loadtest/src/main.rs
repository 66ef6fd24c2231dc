//! `wshandler-loadtest`: see `loadtest/README.md`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wshandler_loadtest::report::Report;
use wshandler_loadtest::scenario::{self, Device, Fanout, Profile};
use wshandler_loadtest::{Limits, Target};

// The server's own limit-raising code.
use wshandler::fdlimit;

#[derive(Parser, Debug)]
#[command(
    name = "wshandler-loadtest",
    version,
    about = "Fleet simulator for WebSocketHandler-protocol servers (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Debug)]
struct Common {
    /// Server port (ignored with --spawn).
    #[arg(short, long, global = true, default_value_t = 8080)]
    port: u16,
    /// Server address (loopback only).
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Source addresses: 127.0.1.1 .. 127.0.1.N (0: let the kernel pick).
    #[arg(long, global = true, default_value_t = 8)]
    src_ips: u8,
    /// Auth token to send after the handshake.
    #[arg(long, global = true)]
    token: Option<String>,
    /// Connect with TLS (wss://), trusting the CA in --ca. With --spawn,
    /// the server must serve TLS on its port (--spawn-set tls_cert=...
    /// --spawn-set tls_key=...).
    #[arg(long, global = true, requires = "ca")]
    tls: bool,
    /// PEM file of the CA the server's certificate chains to (with --tls).
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Seconds to send.
    #[arg(short, long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many messages in total (0: no limit).
    #[arg(long, global = true, default_value_t = 0)]
    max_messages: u64,
    /// Seconds to wait for replies after sending stops.
    #[arg(long, global = true, default_value_t = 5.0)]
    drain: f64,
    /// Worker threads (default: CPUs available to this process).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print the report as one JSON line on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Write a self-contained HTML report.
    #[arg(long, global = true)]
    html: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Start this wshandler binary on a free port for the run, stop it after.
    #[arg(long, global = true)]
    spawn: Option<PathBuf>,
    /// Config file for the spawned server.
    #[arg(long, global = true)]
    spawn_config: Option<PathBuf>,
    /// Extra `key=value` settings for the spawned server (repeatable).
    #[arg(long = "spawn-set", global = true)]
    spawn_set: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Devices sending sensor data, each with W messages in flight or at R msgs/s.
    Ingest {
        /// Connections (devices).
        #[arg(short, long, default_value_t = 100)]
        connections: usize,
        /// Messages in flight per device.
        #[arg(short, long, default_value_t = 16)]
        window: usize,
        /// Messages per second per device (0: as fast as acks allow).
        #[arg(short, long, default_value_t = 0.0)]
        rate: f64,
        /// Heartbeat interval, seconds (0: none).
        #[arg(long, default_value_t = 0.0)]
        heartbeat: f64,
        /// Extra payload bytes per record.
        #[arg(long, default_value_t = 0)]
        pad: usize,
    },
    /// Subscribers on topics and publishers; checks complete, in-order delivery.
    Fanout {
        /// Subscribers.
        #[arg(short, long, default_value_t = 1000)]
        subscribers: usize,
        /// Topics.
        #[arg(short, long, default_value_t = 1)]
        topics: usize,
        /// Publishers.
        #[arg(short = 'P', long, default_value_t = 1)]
        publishers: usize,
        /// Publishes per second per publisher (0: as fast as the window allows).
        #[arg(short, long, default_value_t = 1000.0)]
        rate: f64,
        /// Unacknowledged publishes per publisher.
        #[arg(short, long, default_value_t = 16)]
        window: usize,
    },
    /// Request/response round trips to the `echo` endpoint.
    Rpc {
        /// Connections.
        #[arg(short, long, default_value_t = 100)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(short, long, default_value_t = 1)]
        window: usize,
    },
    /// Open N connections at a controlled rate and hold them with heartbeats.
    Connect {
        /// Connections.
        #[arg(short, long, default_value_t = 10_000)]
        n: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 2000.0)]
        connect_rate: f64,
        /// Heartbeat interval, seconds.
        #[arg(long, default_value_t = 5.0)]
        heartbeat: f64,
    },
    /// A fleet profile from a TOML file (see loadtest/fleet.example.toml).
    Mixed {
        /// The profile.
        profile: PathBuf,
    },
}

fn spawn_server(c: &Common) -> anyhow::Result<(Child, u16)> {
    let bin = c.spawn.as_ref().expect("checked");
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
    if let Some(cfg) = &c.spawn_config {
        cmd.arg("--config").arg(cfg);
    }
    for kv in &c.spawn_set {
        cmd.args(["--set", kv]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("wshandler listening on ")
        .ok_or_else(|| anyhow::anyhow!("the spawned server said {line:?}"))?
        .parse()?;
    Ok((child, addr.port()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(r) => {
            if r.error_count() > 0 || r.lost > 0 || r.out_of_order > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("wshandler-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Report> {
    fdlimit::raise_nofile();
    let c = &cli.common;
    let mut server = None;
    let port = if c.spawn.is_some() {
        let (child, port) = spawn_server(c)?;
        server = Some(child);
        port
    } else {
        c.port
    };
    let target = Target {
        addr: SocketAddr::new(c.host, port),
        src_ips: (1..=c.src_ips)
            .map(|i| IpAddr::from([127, 0, 1, i]))
            .collect(),
        token: c.token.clone(),
        tls: match (&c.ca, c.tls) {
            (Some(ca), true) => Some(wshandler_loadtest::tls_client(ca)?),
            _ => None,
        },
    };
    target.check()?;
    let limits = Limits {
        duration: Duration::from_secs_f64(c.duration),
        max_messages: c.max_messages,
        drain: Duration::from_secs_f64(c.drain),
        threads: c
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let progress = !c.no_progress;
    let report = match &cli.scenario {
        Scenario::Ingest {
            connections,
            window,
            rate,
            heartbeat,
            pad,
        } => scenario::ingest(
            &target,
            limits,
            *connections,
            Device {
                window: *window,
                rate: *rate,
                heartbeat_s: *heartbeat,
                pad: *pad,
            },
            progress,
        ),
        Scenario::Fanout {
            subscribers,
            topics,
            publishers,
            rate,
            window,
        } => scenario::fanout(
            &target,
            limits,
            Fanout {
                subscribers: *subscribers,
                topics: (*topics).max(1),
                publishers: (*publishers).max(1),
                rate: *rate,
                window: (*window).max(1),
            },
            progress,
        ),
        Scenario::Rpc {
            connections,
            window,
        } => scenario::rpc(&target, limits, *connections, *window, progress),
        Scenario::Connect {
            n,
            connect_rate,
            heartbeat,
        } => scenario::connect(
            &target,
            limits,
            *n,
            *connect_rate,
            Duration::from_secs_f64(*heartbeat),
            progress,
        ),
        Scenario::Mixed { profile } => {
            let p: Profile = toml::from_str(&std::fs::read_to_string(profile)?)?;
            scenario::mixed(&target, limits, &p, progress)
        }
    };
    if let Some(mut s) = server {
        // SAFETY: kill(2) on the child we started.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(s.id() as i32, libc::SIGTERM);
        }
        let _ = s.wait();
    }
    if c.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &c.html {
        std::fs::write(path, Report::html(std::slice::from_ref(&report)))?;
    }
    Ok(report)
}
