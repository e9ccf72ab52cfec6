//! The §7.4 correctness invariant, checked after every replay: final per-extent and
//! per-backref counts equal the net effect of the input, whatever the policy and threads.

use crate::extent_tree::ExtentItem;
use crate::workload::Workload;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// A replay whose end state disagrees with the input (or whose model hit a kernel BUG).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("invariant violated (policy {policy}, {threads} threads): {}", errors.join("; "))]
pub struct InvariantViolation {
    pub policy: String,
    pub threads: usize,
    pub errors: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvariantSummary {
    pub extents_checked: u64,
    pub backrefs_checked: u64,
    pub extents_live: u64,
    /// Extents allocated and freed inside one transaction (pinned, never inserted).
    pub pinned: u64,
}

/// Compare the oracle with the workload's net effect (§7.4). At most 20 mismatches are
/// reported.
pub fn check_extent_tree(
    w: &Workload,
    items: &HashMap<u64, ExtentItem>,
) -> Result<InvariantSummary, Vec<String>> {
    let expected = w.expected_backrefs();
    let mut errs = Vec::new();
    let mut sum = InvariantSummary::default();
    let all: BTreeSet<u64> = expected.keys().chain(items.keys()).copied().collect();
    for b in all {
        sum.extents_checked += 1;
        let exp: Vec<_> = expected
            .get(&b)
            .into_iter()
            .flatten()
            .filter(|(_, v)| **v != 0)
            .collect();
        if let Some((k, v)) = exp.iter().find(|(_, v)| **v < 0) {
            errs.push(format!("extent {b}: input nets backref {k:?} to {v}"));
            continue;
        }
        let exp_refs: i64 = exp.iter().map(|(_, v)| **v).sum();
        match items.get(&b) {
            None if exp_refs > 0 => {
                errs.push(format!("extent {b}: missing, expected refs {exp_refs}"))
            }
            None => {}
            Some(_) if exp_refs == 0 => errs.push(format!("extent {b}: present, expected no item")),
            Some(it) => {
                sum.extents_live += 1;
                if it.refs as i64 != exp_refs {
                    errs.push(format!("extent {b}: refs {} expected {exp_refs}", it.refs));
                }
                let actual_sum: u64 = it.backrefs.values().sum();
                if actual_sum != it.refs {
                    errs.push(format!(
                        "extent {b}: item refs {} != Σ backrefs {actual_sum}",
                        it.refs
                    ));
                }
                for (k, v) in &exp {
                    sum.backrefs_checked += 1;
                    let a = it.backrefs.get(k).copied().unwrap_or(0) as i64;
                    if a != **v {
                        errs.push(format!("extent {b}: backref {k:?} = {a}, expected {v}"));
                    }
                }
                for (k, v) in &it.backrefs {
                    if !exp.iter().any(|(ek, _)| *ek == k) {
                        errs.push(format!("extent {b}: unexpected backref {k:?} = {v}"));
                    }
                }
            }
        }
        if errs.len() >= 20 {
            errs.push("…".into());
            break;
        }
    }
    if errs.is_empty() { Ok(sum) } else { Err(errs) }
}
