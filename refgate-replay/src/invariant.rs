//! The §7.4 correctness invariant, checked after every replay: final per-extent and
//! per-backref counts equal the net effect of the input, whatever the policy and threads.

use crate::extent_tree::{ExtentItem, ExtentTree};
use crate::refkey::BackrefKey;
use crate::workload::{Workload, shift_key};
use serde::Serialize;
use std::collections::HashMap;

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

/// Where the check reads the final extent tree from: the oracle itself (no copy of it is
/// made: a large replay's tree is checked in place) or a snapshot.
pub trait ExtentLookup {
    /// Every extent with an item.
    fn bytenrs(&self) -> Vec<u64>;
    fn item(&self, bytenr: u64) -> Option<ExtentItem>;
}

impl ExtentLookup for HashMap<u64, ExtentItem> {
    fn bytenrs(&self) -> Vec<u64> {
        self.keys().copied().collect()
    }
    fn item(&self, bytenr: u64) -> Option<ExtentItem> {
        self.get(&bytenr).cloned()
    }
}

impl ExtentLookup for ExtentTree {
    fn bytenrs(&self) -> Vec<u64> {
        ExtentTree::bytenrs(self)
    }
    fn item(&self, bytenr: u64) -> Option<ExtentItem> {
        self.get(bytenr)
    }
}

/// Compare the final extent tree with the workload's net effect (§7.4). At most 20
/// mismatches are reported. Copies of a replicated workload are disjoint, so the expected
/// effect is computed once, for copy 0, and each copy's extents are checked against it
/// shifted: the check holds one copy's expectations, however many copies ran.
pub fn check_extent_tree(
    w: &Workload,
    items: &impl ExtentLookup,
) -> Result<InvariantSummary, Vec<String>> {
    let base = w.expected_backrefs_of_one_copy();
    let mut base_bytenrs: Vec<u64> = base.keys().copied().collect();
    base_bytenrs.sort_unstable();
    let mut errs = Vec::new();
    let mut sum = InvariantSummary::default();
    'copies: for copy in 0..w.copies() as u64 {
        let off = copy * w.stride;
        for &b0 in &base_bytenrs {
            let exp: Vec<(BackrefKey, i64)> = base[&b0]
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (shift_key(*k, off), *v))
                .collect();
            sum.extents_checked += 1;
            check_one(b0 + off, &exp, items.item(b0 + off), &mut sum, &mut errs);
            if errs.len() >= 20 {
                break 'copies;
            }
        }
    }
    // Items the input never touched.
    for b in items.bytenrs() {
        let (copy, b0) = w.copy_of(b);
        if copy >= w.copies() as u64 || !base.contains_key(&b0) {
            sum.extents_checked += 1;
            errs.push(format!(
                "extent {b}: present, but no add or initial item names it"
            ));
        }
        if errs.len() >= 20 {
            break;
        }
    }
    if errs.len() >= 20 {
        errs.truncate(20);
        errs.push("…".into());
    }
    if errs.is_empty() { Ok(sum) } else { Err(errs) }
}

/// One extent: the item (or its absence) against the expected backrefs.
fn check_one(
    b: u64,
    exp: &[(BackrefKey, i64)],
    item: Option<ExtentItem>,
    sum: &mut InvariantSummary,
    errs: &mut Vec<String>,
) {
    if let Some((k, v)) = exp.iter().find(|(_, v)| *v < 0) {
        errs.push(format!("extent {b}: input nets backref {k:?} to {v}"));
        return;
    }
    let exp_refs: i64 = exp.iter().map(|(_, v)| *v).sum();
    match item {
        None if exp_refs > 0 => errs.push(format!("extent {b}: missing, expected refs {exp_refs}")),
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
            for (k, v) in exp {
                sum.backrefs_checked += 1;
                let a = it.backrefs.get(k).copied().unwrap_or(0) as i64;
                if a != *v {
                    errs.push(format!("extent {b}: backref {k:?} = {a}, expected {v}"));
                }
            }
            for (k, v) in &it.backrefs {
                if !exp.iter().any(|(ek, _)| ek == k) {
                    errs.push(format!("extent {b}: unexpected backref {k:?} = {v}"));
                }
            }
        }
    }
}
