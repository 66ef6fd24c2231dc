//! Taps: the dashboard's live tail of a topic pattern.
//!
//! Every shard receives every publish ([`fan_out`](super::mesh::fan_out)),
//! so a tap on the shard serving the HTTP request sees them all without any
//! cross-shard traffic. Each tap holds a small bounded queue of the publish
//! messages' JSON text: when the browser reads slower than topics are
//! published, the oldest entry is dropped and counted, so a slow page never
//! holds more than [`TAP_QUEUE`] messages. A tap is removed when its
//! [`TapGuard`] drops (the HTTP connection ended). With no tap, a publish
//! costs one `is_empty` check.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use super::notify::LocalNotify;
use crate::protocol::topic;

/// Messages a tap holds before it drops the oldest.
pub(crate) const TAP_QUEUE: usize = 256;

/// One live tail: its pattern and the publishes not yet sent to the browser.
#[derive(Debug)]
pub(crate) struct Tap {
    pattern: Box<str>,
    queue: RefCell<VecDeque<Bytes>>,
    dropped: Cell<u64>,
    ready: LocalNotify,
}

impl Tap {
    /// Wait for publishes, then take them all, with the number dropped
    /// since the tap was made.
    pub(crate) async fn next(&self) -> (Vec<Bytes>, u64) {
        loop {
            {
                let mut q = self.queue.borrow_mut();
                if !q.is_empty() {
                    return (q.drain(..).collect(), self.dropped.get());
                }
            }
            self.ready.wait().await;
        }
    }

    fn offer(&self, topic: &str, payload: &Bytes) {
        if !topic::pattern_matches(&self.pattern, topic) {
            return;
        }
        let mut q = self.queue.borrow_mut();
        if q.len() >= TAP_QUEUE {
            q.pop_front();
            self.dropped.set(self.dropped.get() + 1);
        }
        q.push_back(payload.clone());
        drop(q);
        self.ready.notify();
    }
}

/// One shard's taps.
#[derive(Debug, Default)]
pub(crate) struct Taps {
    list: Rc<RefCell<Vec<Rc<Tap>>>>,
}

impl Taps {
    /// No tap: the publish path skips the rest.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// A new tap on `pattern` (validated by the caller), until the guard drops.
    pub(crate) fn add(&self, pattern: &str) -> TapGuard {
        let tap = Rc::new(Tap {
            pattern: pattern.into(),
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            ready: LocalNotify::default(),
        });
        self.list.borrow_mut().push(tap.clone());
        TapGuard {
            tap,
            list: self.list.clone(),
        }
    }

    /// Hand a publish to every tap whose pattern matches.
    pub(crate) fn offer(&self, topic: &str, payload: &Bytes) {
        for t in self.list.borrow().iter() {
            t.offer(topic, payload);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.list.borrow().len()
    }
}

/// A tap's registration; dropping it removes the tap.
#[derive(Debug)]
pub(crate) struct TapGuard {
    tap: Rc<Tap>,
    list: Rc<RefCell<Vec<Rc<Tap>>>>,
}

impl std::ops::Deref for TapGuard {
    type Target = Tap;
    fn deref(&self) -> &Tap {
        &self.tap
    }
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.list.borrow_mut().retain(|t| !Rc::ptr_eq(t, &self.tap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn matching_publishes_queue_and_the_guard_removes_the_tap() {
        let taps = Taps::default();
        assert!(taps.is_empty());
        let g = taps.add("sensors.>");
        taps.offer("sensors.a", &Bytes::from_static(b"1"));
        taps.offer("other", &Bytes::from_static(b"2"));
        taps.offer("sensors.b.c", &Bytes::from_static(b"3"));
        let (got, dropped) = block_on(g.next());
        assert_eq!(
            got,
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"3")]
        );
        assert_eq!(dropped, 0);
        assert_eq!(taps.len(), 1);
        drop(g);
        assert!(taps.is_empty());
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_and_they_are_counted() {
        let taps = Taps::default();
        let g = taps.add("t");
        for i in 0..TAP_QUEUE + 10 {
            taps.offer("t", &Bytes::from(i.to_string()));
        }
        let (got, dropped) = block_on(g.next());
        assert_eq!(got.len(), TAP_QUEUE);
        assert_eq!(dropped, 10);
        assert_eq!(got[0], Bytes::from("10"));
    }
}
