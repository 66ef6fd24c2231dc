//! One shard's way into the writer, and the whole of store back-pressure.
//!
//! The writer's channel is bounded (`store_queue`). When it is full a shard
//! does not drop, block or grow without limit: it parks the record here,
//! asks the writer to wake it after its next batch, and pauses reading from
//! its connections ([`StoreQueue::ready`]) so TCP pushes back on the
//! senders. When the wake-up comes ([`StoreQueue::retry`], on every
//! completion message) parked records move over in order and reading
//! resumes. Park, retry and pause live only here; the shard calls three
//! methods.
//!
//! Shard-local (`Cell`/`RefCell`): one per shard thread, never shared.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use super::{Store, StoreHandle, WriteTask};

/// A shard's queue to the store writer.
#[derive(Debug)]
pub(crate) struct StoreQueue {
    handle: StoreHandle,
    shard: usize,
    /// Records the writer's full queue did not take yet, oldest first.
    backlog: RefCell<VecDeque<WriteTask>>,
    /// Set while `backlog` is non-empty: readers pause.
    blocked: Cell<bool>,
    ready: tokio::sync::Notify,
}

impl StoreQueue {
    /// Shard `shard`'s queue into the writer behind `handle`.
    pub(crate) fn new(handle: StoreHandle, shard: usize) -> StoreQueue {
        StoreQueue {
            handle,
            shard,
            backlog: RefCell::new(VecDeque::new()),
            blocked: Cell::new(false),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// The database, for reads.
    pub(crate) fn store(&self) -> &Store {
        self.handle.store()
    }

    /// Hand a record to the writer, or park it (and pause reading) if the
    /// writer's queue is full. Order is kept: while anything is parked, new
    /// records park behind it.
    pub(crate) fn push(&self, task: WriteTask) {
        if self.blocked.get() {
            self.backlog.borrow_mut().push_back(task);
            return;
        }
        if let Err(task) = self.offer(task) {
            self.backlog.borrow_mut().push_back(task);
            self.blocked.set(true);
        }
    }

    /// The writer finished a batch (there is room again): move parked
    /// records over; once none is left, wake the paused readers.
    pub(crate) fn retry(&self) {
        if !self.blocked.get() {
            return;
        }
        let mut backlog = self.backlog.borrow_mut();
        while let Some(t) = backlog.pop_front() {
            if let Err(t) = self.offer(t) {
                backlog.push_front(t);
                return;
            }
        }
        self.blocked.set(false);
        self.ready.notify_waiters();
    }

    /// Records parked here now.
    pub(crate) fn parked(&self) -> usize {
        self.backlog.borrow().len()
    }

    /// Are records parked (readers should pause)?
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.get()
    }

    /// Returns once nothing is parked (at once if nothing is).
    pub(crate) async fn ready(&self) {
        while self.blocked.get() {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if !self.blocked.get() {
                return;
            }
            ready.await;
        }
    }

    /// Try the channel; when it is full, ask for a wake-up first and then
    /// try once more: if that fails too the queue is full, so the writer
    /// has a batch to do and will see the request after it (no lost
    /// wake-up with a writer that just went idle).
    // By value, as `try_send`: a box per record would cost on the ingest path.
    #[allow(clippy::result_large_err)]
    fn offer(&self, task: WriteTask) -> Result<(), WriteTask> {
        self.handle.try_send(task).or_else(|task| {
            self.handle.mark_blocked(self.shard);
            self.handle.try_send(task)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;
    use crate::store::WriteMsg;

    fn task(ticket: u64) -> WriteTask {
        WriteTask {
            shard: 0,
            ticket,
            table: "t".into(),
            body: b"{}".to_vec(),
            dedup: None,
        }
    }

    fn queue(
        cap: usize,
    ) -> (
        StoreQueue,
        crossbeam_channel::Receiver<WriteMsg>,
        Arc<AtomicU64>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::store::StoreConfig {
            dir: dir.path().to_owned(),
            tables: vec!["t".into()],
            durability: crate::config::Durability::None,
            batch_max: 1,
            batch_bytes: 1,
            queue: cap,
            dedup_window: std::time::Duration::from_secs(1),
            retention: vec![],
            write_buffer_size: 1 << 20,
        })
        .unwrap();
        std::mem::forget(dir); // the store holds it open for the test's life
        let (tx, rx) = crossbeam_channel::bounded(cap);
        let blocked = Arc::new(AtomicU64::new(0));
        let handle = StoreHandle {
            tx,
            store,
            blocked: blocked.clone(),
            metrics: Default::default(),
        };
        (StoreQueue::new(handle, 3), rx, blocked)
    }

    fn tickets(rx: &crossbeam_channel::Receiver<WriteMsg>) -> Vec<u64> {
        rx.try_iter()
            .map(|m| match m {
                WriteMsg::Write(t) => t.ticket,
                WriteMsg::Shutdown => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn full_queue_parks_in_order_asks_for_a_wake_up_and_drains_on_retry() {
        let (q, rx, blocked) = queue(2);
        for t in 0..5 {
            q.push(task(t));
        }
        assert!(q.is_blocked(), "three records did not fit");
        assert_eq!(
            blocked.load(std::sync::atomic::Ordering::Acquire),
            1 << 3,
            "shard 3 asked the writer for a wake-up"
        );
        assert_eq!(tickets(&rx), [0, 1]);
        // The writer took its batch: room for two more, one stays parked.
        q.retry();
        assert!(q.is_blocked());
        assert_eq!(tickets(&rx), [2, 3]);
        q.retry();
        assert!(!q.is_blocked(), "everything moved over: readers resume");
        assert_eq!(tickets(&rx), [4]);
        q.push(task(5));
        assert_eq!(tickets(&rx), [5], "an unblocked queue sends at once");
    }

    #[test]
    fn ready_returns_once_the_backlog_is_gone() {
        let (q, rx, _) = queue(1);
        q.push(task(0));
        q.push(task(1));
        assert!(q.is_blocked());
        use std::future::Future;
        use std::task::{Context, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        let wait = q.ready();
        tokio::pin!(wait);
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "paused while records are parked"
        );
        assert_eq!(tickets(&rx), [0]);
        q.retry();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
