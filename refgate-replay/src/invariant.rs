//! The §7.4 correctness invariant, checked after every replay: final per-extent and
//! per-backref counts equal the net effect of the input, whatever the policy and threads.
//!
//! The check reads the input on its own: it keys every add-API call from the call's raw
//! fields (`parent`, root, owner) by its own reading of §1.2/§7.1 ([`keyed_backref`]), not
//! through the model's [`RefSpec::key`], so a model that keys refs wrongly fails it; it
//! derives each extent's flags from §2.7 (the allocation flag of the kind, OR-ed extent
//! ops); and it checks each extent's allocation history — items inserted, freed, and heads
//! pinned with their bytes — against the ADD_EXTENT calls that allow them.

use crate::btree::OWN_BLOCKS_BASE;
use crate::extent_tree::{ExtentItem, ExtentLife, ExtentTree};
use crate::refkey::{AddAction, BackrefKey, RefOwner, RefSpec};
use crate::vecmap::U64Build;
use crate::workload::{Op, Workload, shift_key};
use refgate_common::event::{
    EXTENT_DATA_REF_KEY, SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY, TREE_BLOCK_REF_KEY,
};
use serde::Serialize;
use std::collections::HashMap;

/// `BTRFS_EXTENT_FLAG_DATA`, `BTRFS_EXTENT_FLAG_TREE_BLOCK` (`btrfs_tree.h`), written here
/// rather than imported from the model so that a wrong model constant fails the check.
const FLAG_DATA: u64 = 1;
const FLAG_TREE_BLOCK: u64 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvariantSummary {
    pub extents_checked: u64,
    pub backrefs_checked: u64,
    pub extents_live: u64,
    /// Live items whose flags were checked.
    pub flags_checked: u64,
    /// Extents allocated and freed inside one transaction (pinned, never inserted), and
    /// their bytes, each checked against the allocations of its extent.
    pub pinned: u64,
    pub pinned_bytes: u64,
    /// The B-tree's own blocks (`--extent-tree btree`) checked against the tree: each live
    /// block has its item, each replaced one none (`ExtentTree::check_own_blocks`).
    pub own_blocks_checked: u64,
}

/// Where the check reads the final extent tree from: the oracle itself (no copy of it is
/// made: a large replay's tree is checked in place) or a snapshot.
pub trait ExtentLookup {
    /// Every extent with an item.
    fn bytenrs(&self) -> Vec<u64>;
    fn item(&self, bytenr: u64) -> Option<ExtentItem>;
    /// The extent's allocation history, if the source kept one (the oracle does; a bare
    /// map of items does not, and then only the items are checked).
    fn life(&self, bytenr: u64) -> Option<ExtentLife>;
    /// Extents with an allocation history.
    fn life_bytenrs(&self) -> Vec<u64>;
}

impl ExtentLookup for HashMap<u64, ExtentItem> {
    fn bytenrs(&self) -> Vec<u64> {
        self.keys().copied().collect()
    }
    fn item(&self, bytenr: u64) -> Option<ExtentItem> {
        self.get(&bytenr).cloned()
    }
    fn life(&self, _: u64) -> Option<ExtentLife> {
        None
    }
    fn life_bytenrs(&self) -> Vec<u64> {
        Vec::new()
    }
}

impl ExtentLookup for ExtentTree {
    fn bytenrs(&self) -> Vec<u64> {
        ExtentTree::bytenrs(self)
    }
    fn item(&self, bytenr: u64) -> Option<ExtentItem> {
        self.get(bytenr)
    }
    fn life(&self, bytenr: u64) -> Option<ExtentLife> {
        Some(ExtentTree::life(self, bytenr))
    }
    fn life_bytenrs(&self) -> Vec<u64> {
        ExtentTree::life_bytenrs(self)
    }
}

/// The backref an add-API call creates or drops, read from its raw fields (§1.2 type
/// selection: `parent != 0` ⇒ SHARED_*; §7.1 key fields: TREE = root, SHARED_BLOCK =
/// parent, EXTENT_DATA = (root, objectid, offset), SHARED_DATA = parent; level is payload).
/// Deliberately not [`RefSpec::key`]: this is the check's second opinion.
pub fn keyed_backref(r: &RefSpec) -> BackrefKey {
    let (ref_type, a, b, c) = match (r.owner, r.parent) {
        (RefOwner::Tree { .. }, 0) => (TREE_BLOCK_REF_KEY, r.ref_root, 0, 0),
        (RefOwner::Tree { .. }, parent) => (SHARED_BLOCK_REF_KEY, parent, 0, 0),
        (RefOwner::Data { objectid, offset }, 0) => {
            (EXTENT_DATA_REF_KEY, r.ref_root, objectid, offset)
        }
        (RefOwner::Data { .. }, parent) => (SHARED_DATA_REF_KEY, parent, 0, 0),
    };
    BackrefKey { ref_type, a, b, c }
}

/// What the input says of one extent of copy 0 besides its backrefs.
#[derive(Clone, Debug, Default)]
struct ExtentInput {
    /// The initial item's flags, if the extent existed before the workload.
    initial_flags: Option<u64>,
    /// Any call names it as data (a data ref or a data extent op).
    data: bool,
    /// ADD_EXTENT calls, and the transactions holding at least one.
    add_extents: u64,
    add_extent_txns: u64,
    last_add_extent_txn: Option<usize>,
    /// The sizes those calls allocated (smallest, largest).
    alloc_bytes: Option<(u64, u64)>,
    /// OR of every extent op's `flags_to_set` on the extent.
    op_flags: u64,
}

impl ExtentInput {
    /// The allocation flag §2.7's `alloc_reserved_*` gives a new item of this kind.
    fn alloc_flag(&self) -> u64 {
        if self.data {
            FLAG_DATA
        } else {
            FLAG_TREE_BLOCK
        }
    }
    /// One allocation and nothing freed: the item holds what it was created with plus
    /// every op. Otherwise flags are only bounded (an item freed and allocated again
    /// forgets the earlier ops; which ops came after depends on the interleaving).
    fn single_incarnation(&self) -> bool {
        self.add_extents + u64::from(self.initial_flags.is_some()) <= 1
    }
    /// Flags every op could have set, over the whole history.
    fn possible_flags(&self) -> u64 {
        let alloc = if self.add_extents > 0 {
            self.alloc_flag()
        } else {
            0
        };
        self.initial_flags.unwrap_or(0) | alloc | self.op_flags
    }
}

fn extent_inputs(w: &Workload) -> HashMap<u64, ExtentInput, U64Build> {
    let mut m: HashMap<u64, ExtentInput, U64Build> = HashMap::default();
    for (b, it) in &w.initial {
        m.entry(*b).or_default().initial_flags = Some(it.flags);
    }
    for (txn, op) in w.ops_of_one_copy() {
        match op {
            Op::AddRef { r, extent_op } => {
                let e = m.entry(r.bytenr).or_default();
                e.data |= matches!(r.owner, RefOwner::Data { .. });
                if let Some(o) = extent_op {
                    e.op_flags |= o.flags.unwrap_or(0);
                }
                if r.action == AddAction::AddExtent {
                    e.add_extents += 1;
                    if e.last_add_extent_txn != Some(txn) {
                        e.add_extent_txns += 1;
                        e.last_add_extent_txn = Some(txn);
                    }
                    e.alloc_bytes = Some(match e.alloc_bytes {
                        None => (r.num_bytes, r.num_bytes),
                        Some((lo, hi)) => (lo.min(r.num_bytes), hi.max(r.num_bytes)),
                    });
                }
            }
            Op::AddExtentOp {
                bytenr,
                is_data,
                op,
                ..
            } => {
                let e = m.entry(*bytenr).or_default();
                e.data |= *is_data;
                e.op_flags |= op.flags.unwrap_or(0);
            }
            _ => {}
        }
    }
    m
}

/// Compare the final extent tree with the workload's net effect (§7.4). At most 20
/// mismatches are reported. Copies of a replicated workload are disjoint, so the expected
/// effect is computed once, for copy 0, and each copy's extents are checked against it
/// shifted: the check holds one copy's expectations, however many copies ran.
pub fn check_extent_tree(
    w: &Workload,
    items: &impl ExtentLookup,
) -> Result<InvariantSummary, Vec<String>> {
    let base = w.net_backrefs_of_one_copy(keyed_backref);
    let inputs = extent_inputs(w);
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
            let input = inputs.get(&b0).cloned().unwrap_or_default();
            let item = items.item(b0 + off);
            let live = item.is_some();
            check_one(b0 + off, &exp, &input, item, &mut sum, &mut errs);
            if let Some(life) = items.life(b0 + off) {
                check_life(b0 + off, &input, live, life, &mut sum, &mut errs);
            }
            if errs.len() >= 20 {
                break 'copies;
            }
        }
    }
    // Items (or histories) the input never touched.
    let mut stray = items.bytenrs();
    stray.extend(items.life_bytenrs());
    stray.sort_unstable();
    stray.dedup();
    // The B-tree's own blocks are the model's, not the input's: `check_own_blocks`.
    for b in stray.into_iter().filter(|&b| b < OWN_BLOCKS_BASE) {
        let (copy, b0) = w.copy_of(b);
        if copy >= w.copies() as u64 || !base.contains_key(&b0) {
            sum.extents_checked += 1;
            errs.push(format!(
                "extent {b}: present or allocated, but no add or initial item names it"
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

/// One extent: the item (or its absence) against the expected backrefs and flags.
fn check_one(
    b: u64,
    exp: &[(BackrefKey, i64)],
    input: &ExtentInput,
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
            check_flags(b, input, it.flags, sum, errs);
        }
    }
}

/// §2.7: an item gets its kind's allocation flag OR-ed with the head's extent op when
/// inserted; later ops only OR flags in (`__run_delayed_extent_op`); nothing clears one.
fn check_flags(
    b: u64,
    input: &ExtentInput,
    flags: u64,
    sum: &mut InvariantSummary,
    errs: &mut Vec<String>,
) {
    sum.flags_checked += 1;
    let possible = input.possible_flags();
    if input.single_incarnation() {
        if flags != possible {
            errs.push(format!(
                "extent {b}: flags {flags:#x}, expected {possible:#x}"
            ));
        }
        return;
    }
    if flags & !possible != 0 {
        errs.push(format!(
            "extent {b}: flags {flags:#x} set bits {:#x} no allocation or op of it sets",
            flags & !possible
        ));
    }
    let alloc = input.alloc_flag();
    if input.add_extents > 0 && flags & alloc != alloc {
        errs.push(format!(
            "extent {b}: flags {flags:#x} lack the allocation flag {alloc:#x}"
        ));
    }
}

/// The extent's allocation history against its ADD_EXTENT calls (§1.4, §2.7, §7.4): every
/// `must_insert_reserved` head ends in exactly one insertion or one pin; a head comes from
/// at least one ADD_EXTENT call and at least one per transaction that made one (heads do
/// not outlive their transaction); an item's existence is initial + inserted − freed;
/// pinned bytes are the size of an allocation per pin.
fn check_life(
    b: u64,
    input: &ExtentInput,
    live: bool,
    life: ExtentLife,
    sum: &mut InvariantSummary,
    errs: &mut Vec<String>,
) {
    let runs = life.inserts + life.pins;
    if runs < input.add_extent_txns || runs > input.add_extents {
        errs.push(format!(
            "extent {b}: {} insertions + {} pins for {} ADD_EXTENT calls in {} transactions \
             (expected between the two)",
            life.inserts, life.pins, input.add_extents, input.add_extent_txns
        ));
    }
    let existed = i64::from(input.initial_flags.is_some());
    let net = existed + life.inserts as i64 - life.frees as i64;
    if net != i64::from(live) {
        errs.push(format!(
            "extent {b}: {} initial + {} inserted − {} freed, but the item is {}",
            existed,
            life.inserts,
            life.frees,
            if live { "live" } else { "absent" }
        ));
    }
    let (lo, hi) = input.alloc_bytes.unwrap_or((0, 0));
    if life.pinned_bytes < life.pins * lo || life.pinned_bytes > life.pins * hi {
        errs.push(format!(
            "extent {b}: {} pins hold {} bytes; its allocations were {lo}–{hi} bytes",
            life.pins, life.pinned_bytes
        ));
    }
    sum.pinned += life.pins;
    sum.pinned_bytes += life.pinned_bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::ExtentOp;
    use crate::workload::{Handle, Task, TaskTransaction};

    const NB: u64 = 4096;

    /// A bare item map with a history, standing in for the oracle.
    struct State {
        items: HashMap<u64, ExtentItem>,
        life: HashMap<u64, ExtentLife>,
    }

    impl ExtentLookup for State {
        fn bytenrs(&self) -> Vec<u64> {
            self.items.keys().copied().collect()
        }
        fn item(&self, b: u64) -> Option<ExtentItem> {
            self.items.get(&b).cloned()
        }
        fn life(&self, b: u64) -> Option<ExtentLife> {
            Some(self.life.get(&b).copied().unwrap_or_default())
        }
        fn life_bytenrs(&self) -> Vec<u64> {
            self.life.keys().copied().collect()
        }
    }

    fn one_txn(ops: Vec<Op>) -> Workload {
        Workload {
            tasks: vec![Task {
                id: 0,
                transactions: vec![TaskTransaction {
                    handles: vec![Handle { ops }],
                    commit: true,
                }],
            }],
            transactions: 1,
            ..Default::default()
        }
    }

    fn data(action: AddAction, num_bytes: u64) -> Op {
        Op::AddRef {
            r: RefSpec::data(1 << 20, num_bytes, action, 0, 5, 257, 0),
            extent_op: None,
        }
    }

    /// §1.2 / §7.1, read independently of `BackrefKey::tree`/`data`: the four types and
    /// their key fields; level never keys.
    #[test]
    fn keyed_backref_follows_the_type_selection_and_key_fields() {
        let t = RefSpec {
            owner: RefOwner::Tree { level: 3 },
            ..RefSpec::tree(1 << 20, NB, AddAction::Add, 0, 7)
        };
        let k = |ref_type, a, b, c| BackrefKey { ref_type, a, b, c };
        assert_eq!(keyed_backref(&t), k(TREE_BLOCK_REF_KEY, 7, 0, 0));
        assert_eq!(
            keyed_backref(&RefSpec { parent: 99, ..t }),
            k(SHARED_BLOCK_REF_KEY, 99, 0, 0)
        );
        let d = RefSpec::data(1 << 20, NB, AddAction::Add, 0, 5, 257, 8192);
        assert_eq!(keyed_backref(&d), k(EXTENT_DATA_REF_KEY, 5, 257, 8192));
        assert_eq!(
            keyed_backref(&RefSpec { parent: 99, ..d }),
            k(SHARED_DATA_REF_KEY, 99, 0, 0)
        );
        // The model's key agrees on all four.
        for r in [
            t,
            RefSpec { parent: 99, ..t },
            d,
            RefSpec { parent: 99, ..d },
        ] {
            assert_eq!(keyed_backref(&r), r.key());
        }
    }

    /// §7.4: an extent allocated and freed in one transaction ends in one pin of its
    /// allocation's bytes, or one insertion and one free; anything else is flagged.
    #[test]
    fn allocation_history_is_checked_against_add_extent_calls() {
        let w = one_txn(vec![
            data(AddAction::AddExtent, NB),
            data(AddAction::Drop, NB),
        ]);
        let check = |life: ExtentLife| {
            let s = State {
                items: HashMap::new(),
                life: [(1 << 20, life)].into_iter().collect(),
            };
            check_extent_tree(&w, &s)
        };
        let pinned = ExtentLife {
            pins: 1,
            pinned_bytes: NB,
            ..Default::default()
        };
        let sum = check(pinned).unwrap();
        assert_eq!((sum.pinned, sum.pinned_bytes), (1, NB));
        let inserted_and_freed = ExtentLife {
            inserts: 1,
            frees: 1,
            ..Default::default()
        };
        assert_eq!(check(inserted_and_freed).unwrap().pinned, 0);
        // No pin and no insertion: the must_insert_reserved head was lost.
        assert!(check(ExtentLife::default()).is_err());
        // Pinned twice, or with the wrong size.
        assert!(
            check(ExtentLife {
                pins: 2,
                pinned_bytes: 2 * NB,
                ..pinned
            })
            .is_err()
        );
        assert!(
            check(ExtentLife {
                pinned_bytes: NB / 2,
                ..pinned
            })
            .is_err()
        );
        // Inserted but never freed, yet absent.
        assert!(
            check(ExtentLife {
                inserts: 1,
                ..Default::default()
            })
            .is_err()
        );
    }

    /// §2.7: a new item holds its kind's flag OR-ed with every extent op; a missing or an
    /// extra bit is flagged.
    #[test]
    fn flags_of_a_new_item_are_its_kind_and_its_ops() {
        let op = ExtentOp {
            flags: Some(1 << 8),
            key: None,
        };
        let w = one_txn(vec![
            Op::AddRef {
                r: RefSpec::tree(1 << 20, 16384, AddAction::AddExtent, 0, 5),
                extent_op: None,
            },
            Op::AddExtentOp {
                bytenr: 1 << 20,
                num_bytes: 16384,
                is_data: false,
                op,
            },
        ]);
        let check = |flags: u64| {
            let mut it = ExtentItem {
                num_bytes: 16384,
                refs: 1,
                flags,
                ..Default::default()
            };
            it.backrefs.insert(BackrefKey::tree(0, 5), 1);
            let s = State {
                items: [(1 << 20, it)].into_iter().collect(),
                life: [(
                    1 << 20,
                    ExtentLife {
                        inserts: 1,
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
            };
            check_extent_tree(&w, &s)
        };
        assert_eq!(check(FLAG_TREE_BLOCK | 1 << 8).unwrap().flags_checked, 1);
        assert!(check(1 << 8).is_err(), "TREE_BLOCK missing");
        assert!(
            check(FLAG_TREE_BLOCK).is_err(),
            "the op's FULL_BACKREF missing"
        );
        assert!(
            check(FLAG_TREE_BLOCK | FLAG_DATA | 1 << 8).is_err(),
            "DATA on a tree block"
        );
    }
}
