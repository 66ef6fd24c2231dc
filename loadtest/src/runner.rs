//! Worker threads, phases, and the once-a-tick fold.
//!
//! Each worker thread runs a current-thread tokio runtime with its share of
//! the connections. Connection tasks record into their thread's [`Sample`]
//! (an `Rc<RefCell>`: nothing shared across threads on the hot path); a
//! ticker task sends the sample to the collector every second and starts a
//! new one. The collector folds ticks into the report, drives the progress
//! bar, and moves the run through its phases: send for `duration`, then
//! drain for at most `drain`, then stop. A watchdog ends the run even if a
//! connection task hangs.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::report::{Report, Second};
use crate::stats::{Latency, Sample};
use crate::Limits;

/// Sending.
pub const RUNNING: u8 = 0;
/// Sending stopped; replies still counted.
pub const DRAINING: u8 = 1;
/// Everything stops.
pub const STOPPED: u8 = 2;

/// What a connection task sees of the run.
#[derive(Debug, Clone)]
pub struct Run {
    phase: Arc<AtomicU8>,
    budget: Arc<AtomicI64>,
    /// Time zero of the run (latency stamps are relative to it).
    pub origin: Instant,
    /// This thread's counters.
    pub sample: Rc<RefCell<Sample>>,
}

impl Run {
    /// The current phase.
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    /// May another message be sent? (running, and `max_messages` not reached)
    pub fn may_send(&self) -> bool {
        self.phase() == RUNNING && self.budget.fetch_sub(1, Ordering::Relaxed) > 0
    }

    /// Nanoseconds since the run's origin.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Resolve when the phase is at least `p` (polled every 50 ms).
    pub async fn until(&self, p: u8) {
        while self.phase() < p {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connection task: index of the connection, the run.
pub type Task = Pin<Box<dyn Future<Output = ()>>>;

enum Msg {
    Tick(Sample),
    Done,
}

/// Run `conns` connection tasks made by `make` over `limits.threads` threads.
pub fn run<F>(scenario: &str, conns: usize, limits: Limits, progress: bool, make: F) -> Report
where
    F: Fn(usize, Run) -> Task + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let budget = Arc::new(AtomicI64::new(if limits.max_messages == 0 {
        i64::MAX
    } else {
        limits.max_messages as i64
    }));
    let origin = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let threads = limits.threads.max(1).min(conns.max(1));
    for t in 0..threads {
        let (make, phase, budget, tx) = (make.clone(), phase.clone(), budget.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("loadtest-{t}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                let done_tx = tx.clone();
                local.block_on(&rt, async move {
                    let sample = Rc::new(RefCell::new(Sample::default()));
                    let run = Run {
                        phase: phase.clone(),
                        budget,
                        origin,
                        sample: sample.clone(),
                    };
                    let tasks: Vec<_> = (t..conns)
                        .step_by(threads)
                        .map(|i| tokio::task::spawn_local(make(i, run.clone())))
                        .collect();
                    let ticker = {
                        let (sample, tx) = (sample.clone(), tx.clone());
                        tokio::task::spawn_local(async move {
                            loop {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                let s = std::mem::take(&mut *sample.borrow_mut());
                                let _ = tx.send(Msg::Tick(s));
                            }
                        })
                    };
                    for t in tasks {
                        let _ = t.await;
                    }
                    ticker.abort();
                    let s = std::mem::take(&mut *sample.borrow_mut());
                    let _ = tx.send(Msg::Tick(s));
                });
                let _ = done_tx.send(Msg::Done);
            })
            .expect("spawn worker");
    }
    drop(tx);

    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(limits.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] {wide_msg}",
            )
            .expect("template"),
        );
        b.set_prefix(scenario.to_owned());
        b
    });
    let mut total = Sample::default();
    let mut series: Vec<Second> = Vec::new();
    let mut bucket = Sample::default();
    let mut last_bucket = Instant::now();
    let mut done = 0;
    let send_end = origin + limits.duration;
    let drain_end = send_end + limits.drain;
    let watchdog = drain_end + Duration::from_secs(15);
    let mut measured_until = None;
    while done < threads {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Tick(s)) => {
                total.merge(&s);
                bucket.merge(&s);
            }
            Ok(Msg::Done) => done += 1,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= send_end && phase.load(Ordering::Relaxed) == RUNNING {
            phase.store(DRAINING, Ordering::Relaxed);
            measured_until = Some(now);
        }
        if now >= drain_end {
            phase.store(STOPPED, Ordering::Relaxed);
        }
        if now >= watchdog {
            eprintln!(
                "loadtest: watchdog: {} worker threads did not finish; ending the run",
                threads - done
            );
            break;
        }
        if now.duration_since(last_bucket) >= Duration::from_secs(1) {
            let secs = now.duration_since(last_bucket).as_secs_f64();
            series.push(Second {
                t: origin.elapsed().as_secs_f64(),
                ops_per_s: bucket.ops as f64 / secs,
                p99_us: Latency::of(&bucket.hist).p99,
                errors: bucket.error_count(),
            });
            if let Some(b) = &bar {
                b.set_position(origin.elapsed().as_secs());
                b.set_message(format!(
                    "{:>10.0}/s  errors {}  p99 {} µs (so far {} µs)",
                    bucket.ops as f64 / secs,
                    total.error_count(),
                    Latency::of(&bucket.hist).p99,
                    Latency::of(&total.hist).p99,
                ));
            }
            bucket = Sample::default();
            last_bucket = now;
        }
    }
    phase.store(STOPPED, Ordering::Relaxed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let window = measured_until
        .unwrap_or_else(Instant::now)
        .duration_since(origin);
    Report::new(scenario, conns, window, &total, series)
}
