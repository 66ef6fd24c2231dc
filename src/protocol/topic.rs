//! Topics and subscription matching, NATS style.
//!
//! Topics are dot-separated, non-empty, at most 256 bytes. A subscription may
//! use `*` for exactly one segment and `>` as its last segment for one or
//! more segments: `sensors.*.temperature`, `sensors.>`. A publish topic may
//! not contain wildcards. [`SubTrie`] holds one shard's subscriptions and
//! returns each subscriber once per publish, however many of its
//! subscriptions match.

use std::collections::HashMap;

/// Longest topic accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic.
    #[error("topic must be a non-empty string")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("topic longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// An empty segment (`a..b`, leading or trailing dot).
    #[error("topic has an empty segment")]
    EmptySegment,
    /// `>` not in last position, or a wildcard inside a segment.
    #[error("wildcards must be whole segments and '>' must be last")]
    BadWildcard,
    /// Wildcards in a publish topic.
    #[error("a publish topic may not contain wildcards")]
    WildcardInPublish,
}

/// Validate a subscription pattern.
pub fn validate_pattern(t: &str) -> Result<(), TopicError> {
    basic(t)?;
    let segs: Vec<&str> = t.split('.').collect();
    for (i, s) in segs.iter().enumerate() {
        if s.is_empty() {
            return Err(TopicError::EmptySegment);
        }
        if (*s == ">" && i != segs.len() - 1)
            || (s.len() > 1 && (s.contains('*') || s.contains('>')))
        {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

/// Validate a publish topic (no wildcards).
pub fn validate_publish(t: &str) -> Result<(), TopicError> {
    basic(t)?;
    for s in t.split('.') {
        if s.is_empty() {
            return Err(TopicError::EmptySegment);
        }
        if s.contains('*') || s.contains('>') {
            return Err(TopicError::WildcardInPublish);
        }
    }
    Ok(())
}

/// Whether one (valid) `pattern` matches the publish `topic`: what a
/// [`SubTrie`] computes for many patterns at once, for a single one (the
/// dashboard's tail).
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    let mut t = topic.split('.');
    let mut p = pattern.split('.').peekable();
    while let Some(ps) = p.next() {
        if ps == ">" && p.peek().is_none() {
            return t.next().is_some();
        }
        match t.next() {
            Some(ts) if ps == "*" || ps == ts => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

fn basic(t: &str) -> Result<(), TopicError> {
    if t.is_empty() {
        return Err(TopicError::Empty);
    }
    if t.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Subscribers whose pattern ends here.
    here: Vec<u64>,
    /// Subscribers of `<prefix>.>`.
    tail: Vec<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.tail.is_empty()
    }
}

/// One shard's subscriptions: pattern → subscriber keys.
#[derive(Debug, Default)]
pub struct SubTrie {
    root: Node,
    patterns: usize,
}

impl SubTrie {
    /// Add `key` under `pattern` (validated by the caller). False if it was there.
    pub fn insert(&mut self, pattern: &str, key: u64) -> bool {
        let mut node = &mut self.root;
        let segs: Vec<&str> = pattern.split('.').collect();
        for (i, s) in segs.iter().enumerate() {
            if *s == ">" && i == segs.len() - 1 {
                return push_unique(&mut node.tail, key);
            }
            node = if *s == "*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.children.entry((*s).into()).or_default()
            };
        }
        let added = push_unique(&mut node.here, key);
        if added {
            self.patterns += 1;
        }
        added
    }

    /// Remove `key` from `pattern`. False if it was not there.
    pub fn remove(&mut self, pattern: &str, key: u64) -> bool {
        let segs: Vec<&str> = pattern.split('.').collect();
        let removed = remove_rec(&mut self.root, &segs, key);
        if removed {
            self.patterns = self.patterns.saturating_sub(1);
        }
        removed
    }

    /// Every key subscribed to a pattern matching `topic`, each once, sorted.
    pub fn matches(&self, topic: &str, out: &mut Vec<u64>) {
        out.clear();
        let segs: Vec<&str> = topic.split('.').collect();
        collect(&self.root, &segs, out);
        out.sort_unstable();
        out.dedup();
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

fn push_unique(v: &mut Vec<u64>, key: u64) -> bool {
    if v.contains(&key) {
        false
    } else {
        v.push(key);
        true
    }
}

fn remove_rec(node: &mut Node, segs: &[&str], key: u64) -> bool {
    let Some((first, rest)) = segs.split_first() else {
        return remove_key(&mut node.here, key);
    };
    if *first == ">" && rest.is_empty() {
        return remove_key(&mut node.tail, key);
    }
    let removed;
    if *first == "*" {
        let Some(child) = node.star.as_mut() else {
            return false;
        };
        removed = remove_rec(child, rest, key);
        if child.is_empty() {
            node.star = None;
        }
    } else {
        let Some(child) = node.children.get_mut(*first) else {
            return false;
        };
        removed = remove_rec(child, rest, key);
        if child.is_empty() {
            node.children.remove(*first);
        }
    }
    removed
}

fn remove_key(v: &mut Vec<u64>, key: u64) -> bool {
    match v.iter().position(|k| *k == key) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    }
}

fn collect(node: &Node, segs: &[&str], out: &mut Vec<u64>) {
    let Some((first, rest)) = segs.split_first() else {
        out.extend_from_slice(&node.here);
        return;
    };
    // `>` needs at least one more segment: it matches here with segs non-empty.
    out.extend_from_slice(&node.tail);
    if let Some(child) = node.children.get(*first) {
        collect(child, rest, out);
    }
    if let Some(star) = &node.star {
        collect(star, rest, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_agrees_with_the_trie() {
        let patterns = ["a", "a.b", "a.*", "a.>", "*.b", ">", "a.*.c", "a.b.>"];
        let topics = ["a", "a.b", "a.c", "a.b.c", "b.b", "a.x.c", "a.b.c.d"];
        for (k, p) in patterns.iter().enumerate() {
            let mut t = SubTrie::default();
            t.insert(p, k as u64);
            for topic in topics {
                let mut out = Vec::new();
                t.matches(topic, &mut out);
                assert_eq!(pattern_matches(p, topic), !out.is_empty(), "{p} vs {topic}");
            }
        }
    }

    fn m(t: &SubTrie, topic: &str) -> Vec<u64> {
        let mut v = Vec::new();
        t.matches(topic, &mut v);
        v
    }

    #[test]
    fn validation() {
        assert!(validate_pattern("sensors.*.temperature").is_ok());
        assert!(validate_pattern("sensors.>").is_ok());
        assert!(validate_pattern(">").is_ok());
        assert_eq!(validate_pattern(""), Err(TopicError::Empty));
        assert_eq!(validate_pattern("a..b"), Err(TopicError::EmptySegment));
        assert_eq!(validate_pattern("a.>.b"), Err(TopicError::BadWildcard));
        assert_eq!(validate_pattern("a.b*"), Err(TopicError::BadWildcard));
        assert_eq!(validate_pattern(&"a".repeat(257)), Err(TopicError::TooLong));
        assert!(validate_publish("temperature-alerts").is_ok());
        assert_eq!(validate_publish("a.*"), Err(TopicError::WildcardInPublish));
    }

    #[test]
    fn wildcards_match_like_nats() {
        let mut t = SubTrie::default();
        t.insert("sensors.*.temperature", 1);
        t.insert("sensors.>", 2);
        t.insert("sensors.kitchen.temperature", 3);
        t.insert(">", 4);
        t.insert("*", 5);
        assert_eq!(m(&t, "sensors.kitchen.temperature"), vec![1, 2, 3, 4]);
        assert_eq!(m(&t, "sensors.hall.humidity"), vec![2, 4]);
        assert_eq!(m(&t, "sensors"), vec![4, 5]);
        assert_eq!(m(&t, "other"), vec![4, 5]);
        assert_eq!(m(&t, "sensors.a.b.c"), vec![2, 4]);
    }

    #[test]
    fn overlapping_subscriptions_deliver_once() {
        let mut t = SubTrie::default();
        t.insert("a.b", 7);
        t.insert("a.*", 7);
        t.insert("a.>", 7);
        assert_eq!(m(&t, "a.b"), vec![7]);
    }

    #[test]
    fn remove_prunes() {
        let mut t = SubTrie::default();
        assert!(t.insert("a.*.c", 1));
        assert!(!t.insert("a.*.c", 1));
        assert!(t.insert("a.>", 1));
        assert!(t.remove("a.*.c", 1));
        assert!(!t.remove("a.*.c", 1));
        assert!(t.remove("a.>", 1));
        assert!(t.is_empty());
    }
}
