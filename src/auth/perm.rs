//! Permission sets: which topics, data types, endpoints and service names a
//! credential may use. A set is written as patterns in the topic syntax
//! (`*` one segment, `>` the rest); `{device}` stands for the connection's
//! device id. Deny by default: an operation with no pattern allows nothing.

use crate::config::PermSpec;

/// An operation a permission set governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `subscribe` to a topic or pattern.
    Subscribe,
    /// `publish` to a topic.
    Publish,
    /// Read a topic's history.
    History,
    /// Store a reading of a data type (`data`, streams, `store.query` tables).
    Ingest,
    /// Call a request endpoint or RPC method.
    Call,
    /// Register a service name.
    Register,
}

impl Op {
    /// The key in a permission set.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Subscribe => "subscribe",
            Op::Publish => "publish",
            Op::History => "history",
            Op::Ingest => "ingest",
            Op::Call => "call",
            Op::Register => "register",
        }
    }
}

/// A pattern in a permission set that is not a valid topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} pattern `{pattern}`: {reason}")]
pub struct PermError {
    /// Which list it was in.
    pub op: &'static str,
    /// The pattern as written.
    pub pattern: String,
    /// Why it was refused.
    pub reason: String,
}

/// A permission set compiled for one connection (`{device}` substituted).
#[derive(Debug, Clone)]
pub struct Permissions {
    lists: [Vec<Vec<String>>; 6],
}

fn index(op: Op) -> usize {
    op as usize
}

impl Permissions {
    /// Compile `spec` for the device `device_id` (a pattern naming
    /// `{device}` matches nothing when there is no device id).
    pub fn compile(spec: &PermSpec, device_id: Option<&str>) -> Result<Self, PermError> {
        let mut lists: [Vec<Vec<String>>; 6] = Default::default();
        for (op, pats) in [
            (Op::Subscribe, &spec.subscribe),
            (Op::Publish, &spec.publish),
            (Op::History, &spec.history),
            (Op::Ingest, &spec.ingest),
            (Op::Call, &spec.call),
            (Op::Register, &spec.register),
        ] {
            for p in pats {
                let err = |reason: String| PermError {
                    op: op.as_str(),
                    pattern: p.clone(),
                    reason,
                };
                crate::protocol::topic::validate_pattern(&p.replace("{device}", "d"))
                    .map_err(|e| err(e.to_string()))?;
                if p.contains("{device}") {
                    let Some(d) = device_id else { continue };
                    if d.contains('.') || d == "*" || d == ">" || d.is_empty() {
                        continue;
                    }
                    lists[index(op)].push(
                        p.replace("{device}", d)
                            .split('.')
                            .map(String::from)
                            .collect(),
                    );
                } else {
                    lists[index(op)].push(p.split('.').map(String::from).collect());
                }
            }
        }
        Ok(Self { lists })
    }

    /// May `subject` be used for `op`? A subject with wildcards (a
    /// subscription pattern) is allowed only if one permission pattern
    /// covers everything it can match.
    pub fn allows(&self, op: Op, subject: &str) -> bool {
        self.lists[index(op)]
            .iter()
            .any(|p| covers(p, Some(subject)))
    }
}

/// Does permission pattern `p` cover every topic the subject pattern `s`
/// (its remaining segments; `None` when none are left) matches? Walks the
/// subject in place: no allocation per check.
fn covers(p: &[String], s: Option<&str>) -> bool {
    let (head, rest) = match s {
        None => (None, None),
        Some(s) => match s.split_once('.') {
            Some((h, r)) => (Some(h), Some(r)),
            None => (Some(s), None),
        },
    };
    match (p.first().map(String::as_str), head) {
        (Some(">"), Some(_)) => true,
        (None, None) => true,
        (Some(">"), None) | (None, Some(_)) | (Some(_), None) => false,
        (Some("*"), Some(x)) => x != ">" && covers(&p[1..], rest),
        (Some(a), Some(x)) => a == x && covers(&p[1..], rest),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::topic::SubTrie;

    fn set(op_patterns: &[&str]) -> Permissions {
        let spec = PermSpec {
            subscribe: op_patterns.iter().map(|s| s.to_string()).collect(),
            ..PermSpec::default()
        };
        Permissions::compile(&spec, Some("dev-1")).unwrap()
    }

    /// Does pattern `p` match topic `t`? The subscription trie is the
    /// reference: it is what routes publishes.
    fn matches(p: &str, t: &str) -> bool {
        let mut trie = SubTrie::default();
        trie.insert(p, 1);
        let mut out = Vec::new();
        trie.matches(t, &mut out);
        !out.is_empty()
    }

    /// Every topic of 1..=5 segments over {a, b}.
    fn topics() -> Vec<String> {
        let mut all: Vec<String> = vec!["a".into(), "b".into()];
        let mut last = all.clone();
        for _ in 1..5 {
            last = last
                .iter()
                .flat_map(|t| [format!("{t}.a"), format!("{t}.b")])
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 1..4).prop_flat_map(
            |segs| {
                (Just(segs), any::<bool>()).prop_map(|(mut segs, tail)| {
                    if tail {
                        segs.push(">");
                    }
                    segs.join(".")
                })
            },
        )
    }

    proptest! {
        /// A subject (topic or pattern) is allowed exactly when every topic
        /// it can match is matched by one permission pattern: checked
        /// against the trie over every topic up to five segments.
        #[test]
        fn allows_is_coverage(perm in pattern(), subject in pattern()) {
            let p = set(&[&perm]);
            let all = topics();
            let covered = all
                .iter()
                .filter(|t| matches(&subject, t))
                .all(|t| matches(&perm, t));
            prop_assert_eq!(p.allows(Op::Subscribe, &subject), covered, "{} under {}", subject, perm);
        }
    }

    #[test]
    fn wildcards_need_full_cover() {
        let p = set(&["sensors.>"]);
        assert!(p.allows(Op::Subscribe, "sensors.>"));
        assert!(p.allows(Op::Subscribe, "sensors.a.*"));
        assert!(!p.allows(Op::Subscribe, ">"));
        assert!(!p.allows(Op::Subscribe, "*.a"));
        assert!(!p.allows(Op::Subscribe, "sensors"));
        // Another operation's list is empty: deny.
        assert!(!p.allows(Op::Publish, "sensors.a"));
    }

    #[test]
    fn device_placeholder_is_the_connection_device() {
        let spec = PermSpec {
            publish: vec!["devices.{device}.>".into()],
            ..PermSpec::default()
        };
        let p = Permissions::compile(&spec, Some("pump-7")).unwrap();
        assert!(p.allows(Op::Publish, "devices.pump-7.temp"));
        assert!(!p.allows(Op::Publish, "devices.pump-8.temp"));
        // No device id: the pattern matches nothing.
        let none = Permissions::compile(&spec, None).unwrap();
        assert!(!none.allows(Op::Publish, "devices.pump-7.temp"));
        // A bad pattern names its list.
        let bad = PermSpec {
            ingest: vec!["a.>.b".into()],
            ..PermSpec::default()
        };
        let e = Permissions::compile(&bad, None).unwrap_err();
        assert_eq!(e.op, "ingest");
    }
}
