//! A single-waiter wake-up flag for tasks on one shard.
//!
//! The connection's writer task sleeps on it; whoever queues a frame sets it.
//! Plain `Cell`s: shard-local, so no atomics and no lock on the per-message
//! path (tokio's `Notify` takes a mutex when a waiter is parked).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Set by producers, consumed by one waiting task.
#[derive(Default)]
pub(crate) struct LocalNotify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for LocalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNotify")
            .field("set", &self.set.get())
            .finish()
    }
}

impl LocalNotify {
    /// Wake the waiter (or make its next `wait` return at once).
    pub(crate) fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Wait until notified; consumes the notification.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn notify_before_and_after_wait() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let n = Rc::new(LocalNotify::default());
            n.notify();
            n.wait().await; // already set: returns at once
            let n2 = n.clone();
            let h = tokio::task::spawn_local(async move { n2.wait().await });
            tokio::task::yield_now().await;
            n.notify();
            h.await.unwrap();
        });
    }
}
