//! The scenarios. Each connection plays one role (device, subscriber,
//! publisher, caller, idle holder); a scenario is a set of roles, and the
//! `mixed` scenario builds one from a TOML fleet profile.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::report::Report;
use crate::runner::{self, Run, Task, DRAINING, STOPPED};
use crate::wsconn::{self, msg_type, u64_field, WsConn};
use crate::{Limits, Target};

/// Connect, read `welcome`, handshake (and auth) as `client_type`.
async fn open(target: &Target, i: usize, run: &Run, client_type: &str) -> Option<WsConn> {
    let mut c = match wsconn::connect(target.addr, target.src(i), target.tls.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            let kind = if e.to_string().contains("503") {
                "refused_503"
            } else {
                "connect"
            };
            run.sample.borrow_mut().error(kind);
            return None;
        }
    };
    let mut msg = format!(
        r#"{{"type":"handshake","clientType":"{client_type}","version":"1.0.0","deviceId":"lt-{i}"}}"#
    );
    c.queue_text(msg.as_bytes());
    let mut want = 1;
    if let Some(tok) = &target.token {
        msg = serde_json::json!({"type": "auth", "token": tok}).to_string();
        c.queue_text(msg.as_bytes());
        want += 1;
    }
    if c.flush().await.is_err() {
        run.sample.borrow_mut().error("connect");
        return None;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while want > 0 {
        match tokio::time::timeout_at(deadline, c.next()).await {
            Ok(Ok(Some(m))) => match msg_type(&m) {
                b"handshake_response" | b"auth_response" => {
                    if memchr::memmem::find(&m, b"\"success\":false").is_some() {
                        run.sample.borrow_mut().error("auth");
                        return None;
                    }
                    want -= 1;
                }
                _ => {}
            },
            _ => {
                run.sample.borrow_mut().error("handshake");
                return None;
            }
        }
    }
    Some(c)
}

/// Device parameters.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Device {
    /// Messages in flight per connection (pipelining window).
    #[serde(default = "one")]
    pub window: usize,
    /// Messages per second per connection; 0 = as fast as acks allow.
    #[serde(default)]
    pub rate: f64,
    /// Heartbeat interval in seconds; 0 = none.
    #[serde(default)]
    pub heartbeat_s: f64,
    /// Extra payload bytes per record (a `pad` string).
    #[serde(default)]
    pub pad: usize,
}

fn one() -> usize {
    1
}

/// A device: sends sensor `data`, measures send → `data_response`.
/// How far a rate-limited sender may fall behind its schedule and still
/// catch up. Timers fire on a 1 ms grid, so at rates above 1,000/s every
/// wake-up sends the few messages that came due since the last one; past
/// this lag (a stalled connection) the backlog is dropped instead of sent
/// as one burst.
const MAX_LAG: Duration = Duration::from_millis(20);

/// The next send time after one sent at `next`, every `every`.
fn next_due(
    next: tokio::time::Instant,
    every: Duration,
    now: tokio::time::Instant,
) -> tokio::time::Instant {
    let due = next + every;
    if due + MAX_LAG < now {
        now
    } else {
        due
    }
}

async fn device(target: Target, i: usize, run: Run, p: Device) {
    let Some(mut c) = open(&target, i, &run, "microcontroller").await else {
        return;
    };
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(p.window);
    let mut seq = 0u64;
    let every = (p.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / p.rate));
    // Spread the first sends of rate-limited devices over one period.
    let mut next_send = tokio::time::Instant::now()
        + every.map_or(Duration::ZERO, |e| e.mul_f64((i % 997) as f64 / 997.0));
    let hb = (p.heartbeat_s > 0.0).then(|| Duration::from_secs_f64(p.heartbeat_s));
    let mut next_hb = tokio::time::Instant::now() + hb.unwrap_or(Duration::from_secs(3600));
    let pad = "x".repeat(p.pad);
    loop {
        let sending = run.phase() == runner::RUNNING;
        let now = tokio::time::Instant::now();
        while sending
            && inflight.len() < p.window
            && every.is_none_or(|_| now >= next_send)
            && run.may_send()
        {
            let s = seq;
            c.queue_text_with(|b| {
                let _ = write!(
                    b,
                    r#"{{"type":"data","dataType":"sensor","data":{{"seq":{s},"device":"lt-{i}","temperature":21.5,"humidity":40{}}}}}"#,
                    if pad.is_empty() { String::new() } else { format!(r#","pad":"{pad}""#) }
                );
            });
            seq += 1;
            inflight.push_back(Instant::now());
            run.sample.borrow_mut().sent += 1;
            if let Some(e) = every {
                next_send = next_due(next_send, e, now);
            }
        }
        if hb.is_some() && now >= next_hb {
            c.queue_text(br#"{"type":"heartbeat"}"#);
            next_hb = now + hb.unwrap_or_default();
        }
        if c.flush().await.is_err() {
            run.sample.borrow_mut().error("connection");
            return;
        }
        if run.phase() >= DRAINING && inflight.is_empty() {
            return;
        }
        if run.phase() == STOPPED {
            let mut s = run.sample.borrow_mut();
            for _ in 0..inflight.len() {
                s.error("unanswered");
            }
            return;
        }
        let wake = if sending && inflight.len() < p.window && every.is_some() {
            next_send.min(next_hb)
        } else {
            next_hb.min(tokio::time::Instant::now() + Duration::from_millis(100))
        };
        let got = tokio::select! {
            r = c.next() => r,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        let mut first = match got {
            Ok(Some(m)) => Some(m),
            Ok(None) | Err(_) => {
                let mut s = run.sample.borrow_mut();
                s.error("connection");
                for _ in 0..inflight.len() {
                    s.error("unanswered");
                }
                return;
            }
        };
        // Take everything already buffered before refilling the window.
        loop {
            let m = match first.take() {
                Some(m) => m,
                None => match c.try_next() {
                    Ok(Some(m)) => m,
                    _ => break,
                },
            };
            match msg_type(&m) {
                b"data_response" => {
                    let mut s = run.sample.borrow_mut();
                    match inflight.pop_front() {
                        Some(t) => s.latency(t.elapsed()),
                        None => s.error("unmatched_reply"),
                    }
                    if memchr::memmem::find(&m, b"\"success\":true").is_some() {
                        s.ops += 1;
                    } else {
                        s.error("success_false");
                    }
                }
                b"error" => run.sample.borrow_mut().error("server_error"),
                _ => {}
            }
        }
    }
}

/// Fan-out parameters.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Fanout {
    /// Subscribers.
    pub subscribers: usize,
    /// Topics (subscriber i listens on topic i % topics).
    #[serde(default = "one")]
    pub topics: usize,
    /// Publishers (publisher j publishes on topic j % topics).
    #[serde(default = "one")]
    pub publishers: usize,
    /// Publishes per second per publisher; 0 = as fast as the window allows.
    #[serde(default)]
    pub rate: f64,
    /// Unacknowledged publishes per publisher (max-rate mode).
    #[serde(default = "sixteen")]
    pub window: usize,
}

fn sixteen() -> usize {
    16
}

/// State the publishers and subscribers of one fan-out share.
#[derive(Debug)]
pub struct FanoutShared {
    ready: AtomicUsize,
    published: Vec<AtomicU64>,
    /// Subscriber count; publishers start when all are subscribed.
    subscribers: usize,
}

impl FanoutShared {
    /// For `p` publishers and `s` subscribers.
    pub fn new(p: usize, s: usize) -> Arc<FanoutShared> {
        Arc::new(FanoutShared {
            ready: AtomicUsize::new(0),
            published: (0..p).map(|_| AtomicU64::new(0)).collect(),
            subscribers: s,
        })
    }
}

/// A subscriber: checks every publisher's sequence arrives complete and in order.
async fn subscriber(target: Target, i: usize, run: Run, f: Fanout, shared: Arc<FanoutShared>) {
    let Some(mut c) = open(&target, i, &run, "application").await else {
        return;
    };
    let topic = i % f.topics;
    c.queue_text(format!(r#"{{"type":"subscribe","topic":"lt.t{topic}"}}"#).as_bytes());
    if c.flush().await.is_err() {
        run.sample.borrow_mut().error("connection");
        return;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Ok(Some(m))) if msg_type(&m) == b"subscribe_response" => break,
            Ok(Ok(Some(_))) => {}
            _ => {
                run.sample.borrow_mut().error("subscribe");
                return;
            }
        }
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let mine: Vec<usize> = (0..f.publishers)
        .filter(|p| p % f.topics == topic)
        .collect();
    let mut next = vec![0u64; f.publishers];
    let mut received = vec![0u64; f.publishers];
    loop {
        let all_in = || {
            mine.iter()
                .all(|&p| received[p] >= shared.published[p].load(Ordering::Acquire))
        };
        if run.phase() == STOPPED || (run.phase() == DRAINING && all_in()) {
            break;
        }
        let m = tokio::select! {
            r = c.next() => r,
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        let m = match m {
            Ok(Some(m)) => m,
            _ => {
                run.sample.borrow_mut().error("connection");
                break;
            }
        };
        if msg_type(&m) != b"publish" {
            continue;
        }
        let (Some(p), Some(s), Some(ts)) = (
            u64_field(&m, b"\"p\":"),
            u64_field(&m, b"\"s\":"),
            u64_field(&m, b"\"ts\":"),
        ) else {
            run.sample.borrow_mut().error("bad_publish");
            continue;
        };
        let p = p as usize;
        if p >= f.publishers {
            run.sample.borrow_mut().error("bad_publish");
            continue;
        }
        let mut smp = run.sample.borrow_mut();
        smp.ops += 1;
        smp.latency(Duration::from_nanos(run.now_ns().saturating_sub(ts)));
        received[p] += 1;
        if s == next[p] {
            next[p] += 1;
        } else if s > next[p] {
            // A gap: counted as lost at the end unless the missing ones show up.
            next[p] = s + 1;
        } else {
            smp.out_of_order += 1;
        }
    }
    let mut smp = run.sample.borrow_mut();
    for &p in &mine {
        let published = shared.published[p].load(Ordering::Acquire);
        smp.lost += published.saturating_sub(received[p]);
    }
}

/// A publisher: publishes sequence-numbered, timestamped messages.
async fn publisher(
    target: Target,
    i: usize,
    j: usize,
    run: Run,
    f: Fanout,
    shared: Arc<FanoutShared>,
) {
    let Some(mut c) = open(&target, i, &run, "service").await else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.ready.load(Ordering::Acquire) < shared.subscribers {
        if Instant::now() > deadline || run.phase() != runner::RUNNING {
            run.sample.borrow_mut().error("subscribers_not_ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let topic = j % f.topics;
    let every = (f.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / f.rate));
    let mut next_send = tokio::time::Instant::now();
    let mut unacked = 0usize;
    let mut seq = 0u64;
    loop {
        if run.phase() != runner::RUNNING {
            break;
        }
        let now = tokio::time::Instant::now();
        while unacked < f.window && every.is_none_or(|_| now >= next_send) && run.may_send() {
            let (s, ts) = (seq, run.now_ns());
            c.queue_text_with(|b| {
                let _ = write!(b, r#"{{"type":"publish","topic":"lt.t{topic}","data":{{"p":{j},"s":{s},"ts":{ts}}}}}"#);
            });
            seq += 1;
            unacked += 1;
            run.sample.borrow_mut().sent += 1;
            if let Some(e) = every {
                next_send = next_due(next_send, e, now);
            }
        }
        shared.published[j].store(seq, Ordering::Release);
        if c.flush().await.is_err() {
            run.sample.borrow_mut().error("connection");
            break;
        }
        let wake = if every.is_some() && unacked < f.window {
            next_send
        } else {
            now + Duration::from_millis(100)
        };
        let got = tokio::select! {
            r = c.next() => r,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        match got {
            Ok(Some(m)) => {
                if msg_type(&m) == b"publish_response" {
                    unacked = unacked.saturating_sub(1);
                }
                while let Ok(Some(m)) = c.try_next() {
                    if msg_type(&m) == b"publish_response" {
                        unacked = unacked.saturating_sub(1);
                    }
                }
            }
            _ => {
                run.sample.borrow_mut().error("connection");
                break;
            }
        }
    }
    shared.published[j].store(seq, Ordering::Release);
}

/// A caller: `request` round trips to the built-in `echo` endpoint.
async fn caller(target: Target, i: usize, run: Run, window: usize) {
    let Some(mut c) = open(&target, i, &run, "application").await else {
        return;
    };
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq = 0u64;
    loop {
        while run.phase() == runner::RUNNING && inflight.len() < window && run.may_send() {
            let s = seq;
            c.queue_text_with(|b| {
                let _ = write!(
                    b,
                    r#"{{"type":"request","requestId":"{s}","endpoint":"echo","data":{{"n":{s}}}}}"#
                );
            });
            inflight.push_back((s, Instant::now()));
            seq += 1;
            run.sample.borrow_mut().sent += 1;
        }
        if c.flush().await.is_err() {
            run.sample.borrow_mut().error("connection");
            return;
        }
        if run.phase() >= DRAINING && inflight.is_empty() || run.phase() == STOPPED {
            return;
        }
        let got = tokio::select! {
            r = c.next() => r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let Ok(Some(m)) = got else {
            run.sample.borrow_mut().error("connection");
            return;
        };
        if msg_type(&m) != b"response" {
            continue;
        }
        let mut s = run.sample.borrow_mut();
        let id = wsconn::str_field(&m, b"\"requestId\":\"")
            .and_then(|x| std::str::from_utf8(x).ok()?.parse::<u64>().ok());
        match (inflight.pop_front(), id) {
            (Some((want, t)), Some(got)) if want == got => {
                s.latency(t.elapsed());
                s.ops += 1;
            }
            _ => s.error("mismatched_response"),
        }
    }
}

/// A held connection: heartbeats, and a final check that it is still alive.
async fn holder(
    target: Target,
    i: usize,
    run: Run,
    start_at: Duration,
    heartbeat: Duration,
    alive: Arc<AtomicUsize>,
) {
    tokio::time::sleep(start_at).await;
    if run.phase() != runner::RUNNING {
        return;
    }
    let t0 = Instant::now();
    let Some(mut c) = open(&target, i, &run, "microcontroller").await else {
        return;
    };
    {
        let mut s = run.sample.borrow_mut();
        s.latency(t0.elapsed());
        s.ops += 1;
    }
    loop {
        let until_stop = tokio::time::sleep(heartbeat);
        tokio::select! {
            r = c.next() => match r {
                Ok(Some(_)) => continue,
                _ => {
                    run.sample.borrow_mut().error("dropped");
                    return;
                }
            },
            _ = until_stop => {}
        }
        if run.phase() != runner::RUNNING {
            break;
        }
        c.queue_text(br#"{"type":"heartbeat"}"#);
        if c.flush().await.is_err() {
            run.sample.borrow_mut().error("dropped");
            return;
        }
    }
    // Still alive: a heartbeat is answered.
    c.queue_text(br#"{"type":"heartbeat"}"#);
    if c.flush().await.is_ok() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(deadline, c.next()).await {
            if msg_type(&m) == b"heartbeat_response" {
                alive.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    run.sample.borrow_mut().error("dropped");
}

/// `ingest`: `conns` devices.
pub fn ingest(target: &Target, limits: Limits, conns: usize, p: Device, progress: bool) -> Report {
    let target = target.clone();
    runner::run("ingest", conns, limits, progress, move |i, run| -> Task {
        Box::pin(device(target.clone(), i, run, p))
    })
}

/// `fanout`: subscribers and publishers.
pub fn fanout(target: &Target, limits: Limits, f: Fanout, progress: bool) -> Report {
    let target = target.clone();
    let shared = FanoutShared::new(f.publishers, f.subscribers);
    let s2 = shared.clone();
    let mut r = runner::run(
        "fanout",
        f.subscribers + f.publishers,
        limits,
        progress,
        move |i, run| -> Task {
            if i < f.subscribers {
                Box::pin(subscriber(target.clone(), i, run, f, s2.clone()))
            } else {
                Box::pin(publisher(
                    target.clone(),
                    i,
                    i - f.subscribers,
                    run,
                    f,
                    s2.clone(),
                ))
            }
        },
    );
    let published: u64 = shared
        .published
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .sum();
    r.extra.insert("published".into(), published.into());
    r.extra.insert(
        "publish_rate".into(),
        (published as f64 / r.duration_s).into(),
    );
    r.extra
        .insert("deliveries_per_s".into(), r.throughput_per_s.into());
    r.extra.insert(
        "nothing_lost_in_order".into(),
        (r.lost == 0 && r.out_of_order == 0 && r.error_count() == 0).into(),
    );
    r
}

/// `rpc`: request/response round trips.
pub fn rpc(target: &Target, limits: Limits, conns: usize, window: usize, progress: bool) -> Report {
    let target = target.clone();
    runner::run("rpc", conns, limits, progress, move |i, run| -> Task {
        Box::pin(caller(target.clone(), i, run, window.max(1)))
    })
}

/// `connect`: open `n` connections at `rate`/s and hold them.
pub fn connect(
    target: &Target,
    limits: Limits,
    n: usize,
    rate: f64,
    heartbeat: Duration,
    progress: bool,
) -> Report {
    let target = target.clone();
    let alive_total = Arc::new(AtomicUsize::new(0));
    let at = alive_total.clone();
    let mut r = runner::run("connect", n, limits, progress, move |i, run| -> Task {
        let start_at = Duration::from_secs_f64(i as f64 / rate.max(1.0));
        Box::pin(holder(
            target.clone(),
            i,
            run,
            start_at,
            heartbeat,
            at.clone(),
        ))
    });

    r.extra.insert(
        "alive_at_end".into(),
        alive_total.load(Ordering::Relaxed).into(),
    );
    r
}

/// A fleet profile for `mixed` (TOML).
#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    /// Device groups.
    #[serde(default)]
    pub devices: Vec<DeviceGroup>,
    /// Fan-out groups (dashboards subscribed, services publishing).
    #[serde(default)]
    pub fanout: Vec<Fanout>,
    /// Request/response callers.
    #[serde(default)]
    pub callers: Vec<CallerGroup>,
}

/// `count` devices with the same parameters.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct DeviceGroup {
    /// How many.
    pub count: usize,
    /// Their behaviour.
    #[serde(flatten)]
    pub device: Device,
}

/// `count` callers.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CallerGroup {
    /// How many.
    pub count: usize,
    /// Requests in flight each.
    #[serde(default = "one")]
    pub window: usize,
}

enum Role {
    Device(Device),
    Sub(Fanout, usize),
    Pub(Fanout, usize, usize),
    Caller(usize),
}

/// `mixed`: every group of a profile at once, in one report.
pub fn mixed(target: &Target, limits: Limits, profile: &Profile, progress: bool) -> Report {
    let mut roles: Vec<Role> = Vec::new();
    let mut shared = Vec::new();
    for g in &profile.devices {
        roles.extend((0..g.count).map(|_| Role::Device(g.device)));
    }
    for (k, f) in profile.fanout.iter().enumerate() {
        shared.push(FanoutShared::new(f.publishers, f.subscribers));
        roles.extend((0..f.subscribers).map(|_| Role::Sub(*f, k)));
        roles.extend((0..f.publishers).map(|j| Role::Pub(*f, k, j)));
    }
    for g in &profile.callers {
        roles.extend((0..g.count).map(|_| Role::Caller(g.window)));
    }
    let n = roles.len();
    let roles = Arc::new(roles);
    let target = target.clone();
    runner::run("mixed", n, limits, progress, move |i, run| -> Task {
        let t = target.clone();
        match &roles[i] {
            Role::Device(d) => Box::pin(device(t, i, run, *d)),
            Role::Sub(f, k) => Box::pin(subscriber(t, i, run, *f, shared[*k].clone())),
            Role::Pub(f, k, j) => Box::pin(publisher(t, i, *j, run, *f, shared[*k].clone())),
            Role::Caller(w) => Box::pin(caller(t, i, run, *w)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_schedule_catches_up_within_the_lag_and_drops_beyond() {
        let t0 = tokio::time::Instant::now();
        let every = Duration::from_micros(250);
        // 1 ms late (a timer tick): keep the schedule, so the sender sends
        // the four messages that came due.
        assert_eq!(
            next_due(t0, every, t0 + Duration::from_millis(1)),
            t0 + every
        );
        // Stalled far past the lag: restart from now, no burst.
        let late = t0 + MAX_LAG + Duration::from_millis(5);
        assert_eq!(next_due(t0, every, late), late);
    }
}
