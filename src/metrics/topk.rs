//! The busiest topics, in bounded memory: per-topic series only for the
//! top K (`metrics_top_topics`), so 100k topics never make 100k series.
//!
//! Space-Saving (Metwally et al., 2005) over a fixed table of
//! `4 × K` slots (at least 64): a topic already in the table is counted
//! exactly; a new topic when the table is full takes the slot of the
//! least-counted one and inherits its count (an overestimate bounded by
//! that count). Every topic whose true share of the traffic is above
//! 1/slots is guaranteed to be in the table. The table's map and slots are
//! allocated once; topics are the `Arc<str>` the publish already carries,
//! so counting allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

/// One counted topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCount {
    /// The topic.
    pub topic: Arc<str>,
    /// Publishes on it.
    pub publishes: u64,
    /// Deliveries of its publishes to subscribers.
    pub deliveries: u64,
    /// How much of `publishes + deliveries` may belong to topics this slot
    /// held before (0: exact).
    pub error: u64,
}

impl TopicCount {
    fn score(&self) -> u64 {
        self.publishes + self.deliveries
    }
}

/// A shard's topic table (single-threaded).
#[derive(Debug)]
pub struct TopK {
    index: HashMap<Arc<str>, usize>,
    slots: Vec<TopicCount>,
    cap: usize,
}

impl TopK {
    /// A table that keeps the top `k` (0: count nothing).
    pub fn new(k: usize) -> TopK {
        let cap = if k == 0 { 0 } else { (k * 4).max(64) };
        TopK {
            index: HashMap::with_capacity(cap),
            slots: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Count `publishes` and `deliveries` for `topic`.
    pub fn count(&mut self, topic: &Arc<str>, publishes: u64, deliveries: u64) {
        if self.cap == 0 || publishes + deliveries == 0 {
            return;
        }
        if let Some(&i) = self.index.get(&**topic) {
            let s = &mut self.slots[i];
            s.publishes += publishes;
            s.deliveries += deliveries;
            return;
        }
        if self.slots.len() < self.cap {
            self.index.insert(topic.clone(), self.slots.len());
            self.slots.push(TopicCount {
                topic: topic.clone(),
                publishes,
                deliveries,
                error: 0,
            });
            return;
        }
        let (i, min) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.score())
            .map(|(i, s)| (i, s.score()))
            .expect("cap > 0");
        let old = std::mem::replace(
            &mut self.slots[i],
            TopicCount {
                topic: topic.clone(),
                publishes: publishes + min,
                deliveries,
                error: min,
            },
        );
        self.index.remove(&old.topic);
        self.index.insert(topic.clone(), i);
    }

    /// Every counted topic (unordered).
    pub fn entries(&self) -> &[TopicCount] {
        &self.slots
    }
}

/// Fold several shards' tables and keep the `k` with the highest counts,
/// highest first.
pub fn top(tables: &[Vec<TopicCount>], k: usize) -> Vec<TopicCount> {
    let mut all: HashMap<Arc<str>, TopicCount> = HashMap::new();
    for t in tables {
        for c in t {
            let e = all.entry(c.topic.clone()).or_insert_with(|| TopicCount {
                topic: c.topic.clone(),
                publishes: 0,
                deliveries: 0,
                error: 0,
            });
            e.publishes += c.publishes;
            e.deliveries += c.deliveries;
            e.error += c.error;
        }
    }
    let mut v: Vec<TopicCount> = all.into_values().collect();
    v.sort_by(|a, b| b.score().cmp(&a.score()).then(a.topic.cmp(&b.topic)));
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_topics_survive_many_light_ones() {
        let mut t = TopK::new(2); // 64 slots
        let hot: Arc<str> = "hot".into();
        let warm: Arc<str> = "warm".into();
        for i in 0..10_000u64 {
            t.count(&hot, 1, 3);
            if i % 2 == 0 {
                t.count(&warm, 1, 0);
            }
            let cold: Arc<str> = format!("cold/{i}").into();
            t.count(&cold, 1, 0);
        }
        assert_eq!(t.entries().len(), 64, "bounded");
        let top = top(&[t.entries().to_vec()], 2);
        assert_eq!(&*top[0].topic, "hot");
        assert_eq!(top[0].publishes, 10_000, "never evicted: exact");
        assert_eq!(top[0].deliveries, 30_000);
        assert_eq!(&*top[1].topic, "warm");
    }

    #[test]
    fn shards_add_up() {
        let a: Arc<str> = "a".into();
        let mut s0 = TopK::new(1);
        let mut s1 = TopK::new(1);
        s0.count(&a, 2, 5);
        s1.count(&a, 0, 7);
        let top = top(&[s0.entries().to_vec(), s1.entries().to_vec()], 5);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].publishes, top[0].deliveries), (2, 12));
    }

    #[test]
    fn zero_k_counts_nothing() {
        let mut t = TopK::new(0);
        t.count(&"x".into(), 1, 1);
        assert!(t.entries().is_empty());
    }
}
