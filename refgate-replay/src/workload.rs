//! What the engine replays: per-task streams of add-API calls grouped into transaction
//! handles and transactions, plus the extent tree's initial state.
//!
//! A later issue builds this from a recorded trace (per-task `add_delayed_*` events →
//! [`Op::AddRef`] via [`RefSpec::from_tree_event`]/[`RefSpec::from_data_event`], handle
//! boundaries, commits); [`synthetic`] generates one deterministically from a seed.

use crate::btree::is_own_block_backref;
use crate::error::WorkloadError;
use crate::extent_tree::{EXTENT_FLAG_DATA, EXTENT_FLAG_TREE_BLOCK};
use crate::refkey::{AddAction, BackrefKey, RefOwner, RefSpec};
use crate::vecmap::{U64Build, VecMap};
use serde::{Deserialize, Serialize};

/// The model types a workload's operations and initial extents carry.
pub use crate::extent_tree::ExtentItem;
pub use crate::head::ExtentOp;
use std::collections::{BTreeMap, HashMap};

/// One operation inside a transaction handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// `btrfs_add_delayed_tree_ref` / `_data_ref`, optionally with an extent op (the
    /// kernel passes one with ADD_EXTENT of tree blocks).
    AddRef {
        /// The ref to queue.
        r: RefSpec,
        /// The extent op queued with the ref on its head, if any (`extent_op` argument).
        extent_op: Option<ExtentOp>,
    },
    /// `btrfs_add_delayed_extent_op`.
    AddExtentOp {
        /// The extent's start (bytes).
        bytenr: u64,
        /// The extent's length (bytes).
        num_bytes: u64,
        /// Whether the extent is a data extent (the head's `is_data`).
        is_data: bool,
        /// The flags and key to apply.
        op: ExtentOp,
    },
    /// `btrfs_lookup_extent_info`: a head-mutex reader (§2.9).
    LookupExtentInfo {
        /// The start (`bytenr`, bytes) of the extent looked up.
        bytenr: u64,
    },
    /// `btrfs_should_end_transaction` poll; if it says so the handle ends and a new one starts.
    ShouldEnd,
    /// Time spent outside delayed-ref code.
    Think {
        /// How long (ns).
        ns: u64,
    },
    /// An explicit `btrfs_run_delayed_refs` (scenarios): 3.x `count` (`u64::MAX` = −1,
    /// 0 = run_most, N nodes), 6.x `min_bytes` (`u64::MAX`, 0 = heads now, N bytes).
    RunDelayedRefs {
        /// `count` (3.x) or `min_bytes` (6.x), as above.
        arg: u64,
    },
}

/// One `btrfs_trans_handle` from start to `btrfs_end_transaction`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Handle {
    /// The handle's operations, in order.
    pub ops: Vec<Op>,
}

/// A task's share of one transaction: its handles, then optionally a commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTransaction {
    /// The task's handles in this transaction, in order.
    pub handles: Vec<Handle>,
    /// The task calls `btrfs_commit_transaction` at the end of this transaction.
    pub commit: bool,
}

/// One writer: its operations, transaction by transaction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id: its workload-file `task`, or its index among a trace's recorded threads.
    pub id: u32,
    /// One entry per transaction of the workload (possibly empty).
    pub transactions: Vec<TaskTransaction>,
}

/// What an engine replays: tasks, the initial extent tree and the number of transactions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// The tasks of one copy (see `copies`).
    pub tasks: Vec<Task>,
    /// Extent items present before the first transaction (of one copy).
    pub initial: Vec<(u64, ExtentItem)>,
    /// Number of transactions; every one ends with a commit that drains the queue.
    pub transactions: usize,
    /// [`Workload::replicate`]: this many copies of `tasks` and `initial` replay side by
    /// side, copy `i` shifted by `i × stride` bytes. A view, not materialised: a replay of
    /// many copies holds the operations of one (0 counts as 1).
    #[serde(default)]
    pub copies: usize,
    /// Bytes between two copies' extent addresses ([`Workload::replicate`]).
    #[serde(default)]
    pub stride: u64,
}

/// One task of a (possibly replicated) workload: the recorded task and its copy's shift.
#[derive(Clone, Copy, Debug)]
pub struct TaskView<'a> {
    /// The task as recorded (copy 0).
    pub task: &'a Task,
    /// Bytes added to every extent address of this copy.
    pub offset: u64,
    /// `copy × tasks + task.id`.
    pub id: u32,
}

impl TaskView<'_> {
    /// The operation as this copy replays it.
    pub fn op(&self, op: &Op) -> Op {
        op.shifted(self.offset)
    }
}

/// A replica's backref key: SHARED_* keys name a parent block, which moves with the copy.
pub(crate) fn shift_key(k: BackrefKey, off: u64) -> BackrefKey {
    use refgate_common::event::{SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY};
    if off != 0 && (k.ref_type == SHARED_BLOCK_REF_KEY || k.ref_type == SHARED_DATA_REF_KEY) {
        BackrefKey { a: k.a + off, ..k }
    } else {
        k
    }
}

impl Op {
    /// The same operation on extents `off` bytes further (a replica, [`Workload::replicate`]).
    pub fn shifted(&self, off: u64) -> Op {
        let mut op = self.clone();
        if off != 0 {
            match &mut op {
                Op::AddRef { r, .. } => {
                    r.bytenr += off;
                    if r.parent != 0 {
                        r.parent += off;
                    }
                }
                Op::AddExtentOp { bytenr, .. } | Op::LookupExtentInfo { bytenr } => *bytenr += off,
                Op::ShouldEnd | Op::Think { .. } | Op::RunDelayedRefs { .. } => {}
            }
        }
        op
    }
}

impl Workload {
    /// Copies replayed (at least 1).
    pub fn copies(&self) -> usize {
        self.copies.max(1)
    }

    /// Tasks of all copies.
    pub fn task_count(&self) -> usize {
        self.tasks.len() * self.copies()
    }

    /// Task `i` of all copies, copy-major: copy `i / tasks`, recorded task `i % tasks`.
    pub fn task(&self, i: usize) -> TaskView<'_> {
        let n = self.tasks.len();
        let copy = (i / n) as u64;
        let task = &self.tasks[i % n];
        TaskView {
            task,
            offset: copy * self.stride,
            id: (copy as u32) * n as u32 + task.id,
        }
    }

    /// The initial extent items of every copy.
    pub fn initial_extents(&self) -> impl Iterator<Item = (u64, ExtentItem)> + '_ {
        (0..self.copies() as u64).flat_map(move |c| {
            let off = c * self.stride;
            self.initial.iter().map(move |(b, it)| {
                let mut it = it.clone();
                if off != 0 {
                    it.backrefs = it
                        .backrefs
                        .into_iter()
                        .map(|(k, v)| (shift_key(k, off), v))
                        .collect();
                }
                (b + off, it)
            })
        })
    }

    /// Operations of one copy.
    fn base_ops(&self) -> impl Iterator<Item = &Op> {
        self.ops_of_one_copy().map(|(_, op)| op)
    }

    /// Operations the engine will execute (progress denominator).
    pub fn total_ops(&self) -> u64 {
        self.base_ops().count() as u64 * self.copies() as u64
    }

    /// One past the highest extent address any copy names (initial items and adds): the
    /// address range the B-tree's leaves are spread over when it is sized above the
    /// initial extents (`Params::extent_key_end`).
    pub fn key_end(&self) -> u64 {
        let one = self
            .base_ops()
            .filter_map(|o| match o {
                Op::AddRef { r, .. } => Some(r.bytenr + r.num_bytes),
                Op::AddExtentOp {
                    bytenr, num_bytes, ..
                } => Some(bytenr + num_bytes),
                _ => None,
            })
            .chain(self.initial.iter().map(|(b, it)| b + it.num_bytes))
            .max()
            .unwrap_or(0);
        one + (self.copies() as u64 - 1) * self.stride
    }

    /// Add-API calls (adds + drops + extent ops).
    pub fn total_adds(&self) -> u64 {
        self.base_ops()
            .filter(|o| matches!(o, Op::AddRef { .. } | Op::AddExtentOp { .. }))
            .count() as u64
            * self.copies() as u64
    }

    /// The workload without the refs of the extent tree's own blocks: the tree refs of root
    /// 2 (`BTRFS_EXTENT_TREE_OBJECTID`), which a recording holds because the kernel's COW of
    /// its extent tree queued them, and which `--extent-tree btree` queues itself from its
    /// own COWs (`docs/extent-tree.md` "Self-feeding"); replaying both would count them twice.
    /// Initial items lose their root-2 backrefs (and go if none is left). `None` when the
    /// workload has none; else the workload and how many add calls (one copy) were left out.
    pub fn without_extent_root_refs(&self) -> Option<(Workload, u64)> {
        let own = |op: &Op| matches!(op, Op::AddRef { r, .. } if !r.is_data() && is_own_block_backref(&r.key()));
        let own_initial = |it: &ExtentItem| it.backrefs.keys().any(is_own_block_backref);
        let removed = self.base_ops().filter(|o| own(o)).count() as u64;
        if removed == 0 && !self.initial.iter().any(|(_, it)| own_initial(it)) {
            return None;
        }
        let mut w = self.clone();
        for h in w
            .tasks
            .iter_mut()
            .flat_map(|t| t.transactions.iter_mut())
            .flat_map(|tt| tt.handles.iter_mut())
        {
            h.ops.retain(|o| !own(o));
        }
        w.initial = std::mem::take(&mut w.initial)
            .into_iter()
            .filter_map(|(b, mut it)| {
                let gone: u64 = it
                    .backrefs
                    .iter()
                    .filter(|(k, _)| is_own_block_backref(k))
                    .map(|(_, v)| *v)
                    .sum();
                it.backrefs.retain(|k, _| !is_own_block_backref(k));
                it.refs = it.refs.saturating_sub(gone);
                (!it.backrefs.is_empty()).then_some((b, it))
            })
            .collect();
        Some((w, removed))
    }

    /// Every operation of every copy, as replayed.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        (0..self.copies() as u64)
            .flat_map(move |c| self.base_ops().map(move |op| op.shifted(c * self.stride)))
    }

    /// Operations of one copy with the index of their transaction.
    pub fn ops_of_one_copy(&self) -> impl Iterator<Item = (usize, &Op)> {
        self.tasks.iter().flat_map(|t| {
            t.transactions.iter().enumerate().flat_map(|(i, tt)| {
                tt.handles
                    .iter()
                    .flat_map(move |h| h.ops.iter().map(move |o| (i, o)))
            })
        })
    }

    /// §7.4 net effect of copy 0 (every copy nets the same, shifted): initial backrefs
    /// plus +1 per ADD/ADD_EXTENT call and −1 per DROP, per extent, each call keyed by
    /// `key_of` (the model's [`RefSpec::key`], or the invariant's own reading of §1.2).
    pub fn net_backrefs_of_one_copy(
        &self,
        key_of: impl Fn(&RefSpec) -> BackrefKey,
    ) -> HashMap<u64, VecMap<BackrefKey, i64>, U64Build> {
        let mut m: HashMap<u64, VecMap<BackrefKey, i64>, U64Build> = HashMap::default();
        for (b, it) in &self.initial {
            let e = m.entry(*b).or_default();
            for (k, v) in &it.backrefs {
                *e.get_or_insert_with(*k, || 0) += *v as i64;
            }
        }
        for op in self.base_ops() {
            if let Op::AddRef { r, .. } = op {
                *m.entry(r.bytenr)
                    .or_default()
                    .get_or_insert_with(key_of(r), || 0) += r.action.count_mod();
            }
        }
        m
    }

    /// [`Workload::net_backrefs_of_one_copy`] keyed as the model keys refs.
    pub fn expected_backrefs_of_one_copy(&self) -> HashMap<u64, VecMap<BackrefKey, i64>, U64Build> {
        self.net_backrefs_of_one_copy(RefSpec::key)
    }

    /// The copy an extent address belongs to, and its address in copy 0.
    pub fn copy_of(&self, bytenr: u64) -> (u64, u64) {
        match self.stride {
            0 => (0, bytenr),
            s => (bytenr / s, bytenr % s),
        }
    }

    /// §7.4 net effect of every copy (tests; `invariant` checks copy by copy).
    pub fn expected_backrefs(&self) -> HashMap<u64, VecMap<BackrefKey, i64>, U64Build> {
        let base = self.expected_backrefs_of_one_copy();
        let mut m = HashMap::default();
        for c in 0..self.copies() as u64 {
            let off = c * self.stride;
            for (b, keys) in &base {
                m.insert(
                    b + off,
                    keys.iter().map(|(k, v)| (shift_key(*k, off), *v)).collect(),
                );
            }
        }
        m
    }

    /// The scaling mode: `n` copies of every task, copy `i` shifted by `i × stride` bytes
    /// (bytenrs, SHARED_* parents, lookups), so `n × tasks` writers work on disjoint extents.
    /// Task ids become `i × tasks + id`. The copies are a view ([`Workload::task`]).
    pub fn replicate(&self, n: usize, stride: u64) -> Workload {
        assert_eq!(self.copies(), 1, "replicate a workload once");
        Workload {
            copies: n.max(1),
            stride,
            ..self.clone()
        }
    }

    /// The smallest stride that keeps replicas disjoint (see [`Workload::replicate`]).
    pub fn span(&self) -> u64 {
        let mut hi = 0u64;
        for (b, it) in &self.initial {
            hi = hi.max(b + it.num_bytes);
        }
        for op in self.base_ops() {
            match op {
                Op::AddRef { r, .. } => hi = hi.max(r.bytenr + r.num_bytes).max(r.parent + 1),
                Op::AddExtentOp {
                    bytenr, num_bytes, ..
                } => hi = hi.max(bytenr + num_bytes),
                _ => {}
            }
        }
        hi.next_power_of_two()
    }

    /// Structural checks: every task has one entry per transaction and the net effect never
    /// goes negative (a recorded trace that fails this is missing events, §7.4).
    pub fn validate(&self) -> Result<(), WorkloadError> {
        for t in &self.tasks {
            if t.transactions.len() != self.transactions {
                return Err(WorkloadError::TaskTransactions {
                    task: t.id,
                    found: t.transactions.len(),
                    expected: self.transactions,
                });
            }
        }
        // Every copy nets what copy 0 does.
        for (b, keys) in self.expected_backrefs_of_one_copy() {
            for (k, &v) in keys.iter() {
                if v < 0 {
                    return Err(WorkloadError::NegativeNet {
                        bytenr: b,
                        key: *k,
                        net: v,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Parameters of the synthetic generator.
#[derive(Clone, Debug, Serialize)]
pub struct SynthParams {
    /// The RNG seed: the same parameters and seed give the same workload.
    pub seed: u64,
    /// Writer tasks.
    pub tasks: usize,
    /// Transactions, each ending with one or two committers.
    pub transactions: usize,
    /// Handles per task per transaction.
    pub handles_per_transaction: usize,
    /// Rounds per handle: each queues about one ref change, plus the extra ops of the
    /// `*_prob` fields.
    pub ops_per_handle: usize,
    /// Pre-existing extents every task may add refs to and drop (non-base) refs from.
    pub shared_extents: usize,
    /// Fraction of extents that are data extents.
    pub data_fraction: f64,
    /// Probability that a newly allocated extent is freed again in the same transaction
    /// (insert-time cancellation / pinned never-inserted extents, §1.4, §2.7).
    pub cancel_prob: f64,
    /// Per round, probability of an extent op (`btrfs_add_delayed_extent_op`) on a shared
    /// extent.
    pub extent_op_prob: f64,
    /// Per round, probability of a `btrfs_lookup_extent_info` on a shared extent (§2.9).
    pub lookup_prob: f64,
    /// Per round, probability of a `btrfs_should_end_transaction` poll.
    pub should_end_prob: f64,
    /// Fraction of tree refs that are COW-induced (no seq, §1.6).
    pub for_cow_fraction: f64,
    /// Probability of a second, concurrent committer in a transaction.
    pub second_committer_prob: f64,
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            seed: 1,
            tasks: 8,
            transactions: 4,
            handles_per_transaction: 8,
            ops_per_handle: 16,
            shared_extents: 256,
            data_fraction: 0.5,
            cancel_prob: 0.2,
            extent_op_prob: 0.03,
            lookup_prob: 0.03,
            should_end_prob: 0.02,
            for_cow_fraction: 0.3,
            second_committer_prob: 0.3,
        }
    }
}

/// splitmix64: small, deterministic, good enough for workload generation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

const TREE_BYTES: u64 = 16384;
const DATA_BYTES: u64 = 131072;
const SHARED_BASE: u64 = 1 << 30;
const PRIVATE_BASE: u64 = 1 << 40;

struct Shared {
    bytenr: u64,
    num_bytes: u64,
    is_data: bool,
    /// Committed non-base backrefs and their counts at the start of the transaction, minus
    /// drops already handed out in it (the shared drop budget).
    budget: Vec<(BackrefKey, u64)>,
    /// Backrefs added in this transaction (committed at its end).
    added: Vec<BackrefKey>,
}

struct Private {
    bytenr: u64,
    is_data: bool,
    root: u64,
    /// Live backrefs (the owner's program order makes any of them droppable).
    backrefs: BTreeMap<BackrefKey, u64>,
}

/// The add-API call that the generator's `key` stands for (the generator thinks in backrefs;
/// §1.2's type selection read backwards).
fn spec_for_key(
    bytenr: u64,
    num_bytes: u64,
    action: AddAction,
    key: BackrefKey,
    root: u64,
) -> RefSpec {
    use refgate_common::event::{EXTENT_DATA_REF_KEY, SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY};
    let (parent, owner) = match key.ref_type {
        SHARED_BLOCK_REF_KEY => (key.a, RefOwner::Tree { level: 0 }),
        SHARED_DATA_REF_KEY => (
            key.a,
            RefOwner::Data {
                objectid: 0,
                offset: 0,
            },
        ),
        EXTENT_DATA_REF_KEY => (
            0,
            RefOwner::Data {
                objectid: key.b,
                offset: key.c,
            },
        ),
        _ => (0, RefOwner::Tree { level: 0 }),
    };
    RefSpec {
        bytenr,
        num_bytes,
        action,
        parent,
        ref_root: root,
        owner,
        for_cow: false,
    }
}

/// A deterministic synthetic workload: `tasks` writers, each allocating private extents
/// (ADD_EXTENT, more refs, frees — some within the same transaction), adding refs to and
/// dropping refs from a pool of shared extents, issuing extent ops, lookups and
/// should-end polls; every transaction ends with one or two committers.
///
/// Causality is kept the way the kernel keeps it: a task only drops a shared backref that
/// was committed before the transaction (from a budget shared by all tasks) or that it
/// added itself earlier; shared extents keep a base backref nobody drops (so concurrent
/// adds always find the item); private extents are touched by their owner only. Any
/// interleaving of the tasks is therefore a valid execution.
#[allow(
    clippy::too_many_lines,
    reason = "the synthetic generator: one pass that keeps the causality rules above in one place"
)]
pub fn synthetic(p: &SynthParams) -> Workload {
    let mut rng = Rng(p.seed ^ 0x5eed);
    let mut fresh_parent = 1u64 << 44;
    let mut next_private = PRIVATE_BASE;
    let mut shared: Vec<Shared> = Vec::new();
    let mut initial = Vec::new();
    for i in 0..p.shared_extents {
        let is_data = rng.chance(p.data_fraction);
        let num_bytes = if is_data { DATA_BYTES } else { TREE_BYTES };
        let bytenr = SHARED_BASE + i as u64 * DATA_BYTES;
        let base = if is_data {
            BackrefKey::data(0, 5, 256 + i as u64, 0)
        } else {
            BackrefKey::tree(0, 5)
        };
        let mut it = ExtentItem {
            num_bytes,
            refs: 1,
            flags: if is_data {
                EXTENT_FLAG_DATA
            } else {
                EXTENT_FLAG_TREE_BLOCK
            },
            ..Default::default()
        };
        it.backrefs.insert(base, 1);
        initial.push((bytenr, it));
        shared.push(Shared {
            bytenr,
            num_bytes,
            is_data,
            budget: Vec::new(),
            added: Vec::new(),
        });
    }
    let mut privates: Vec<Vec<Private>> = (0..p.tasks).map(|_| Vec::new()).collect();
    let mut tasks: Vec<Task> = (0..p.tasks)
        .map(|i| Task {
            id: i as u32,
            transactions: Vec::new(),
        })
        .collect();

    let tree_ref =
        |rng: &mut Rng, bytenr: u64, key: BackrefKey, root: u64, action: AddAction| Op::AddRef {
            r: RefSpec {
                for_cow: rng.chance(p.for_cow_fraction),
                ..spec_for_key(bytenr, TREE_BYTES, action, key, root)
            },
            extent_op: None,
        };
    let data_ref = |bytenr: u64, key: BackrefKey, root: u64, action: AddAction| Op::AddRef {
        r: spec_for_key(bytenr, DATA_BYTES, action, key, root),
        extent_op: None,
    };

    for _t in 0..p.transactions {
        // Commit last transaction's adds into the shared budget.
        for s in &mut shared {
            for k in s.added.drain(..) {
                match s.budget.iter_mut().find(|(bk, _)| *bk == k) {
                    Some((_, c)) => *c += 1,
                    None => s.budget.push((k, 1)),
                }
            }
        }
        let committer = rng.below(p.tasks as u64) as usize;
        let second = if p.tasks > 1 && rng.chance(p.second_committer_prob) {
            Some((committer + 1 + rng.below(p.tasks as u64 - 1) as usize) % p.tasks)
        } else {
            None
        };
        for (ti, task) in tasks.iter_mut().enumerate() {
            let root = 256 + ti as u64 % 4;
            let mut tt = TaskTransaction {
                handles: Vec::new(),
                commit: ti == committer || Some(ti) == second,
            };
            // Backrefs this task added to shared extents in this transaction.
            let mut my_shared_adds: Vec<(usize, BackrefKey)> = Vec::new();
            for _ in 0..p.handles_per_transaction {
                let mut h = Handle::default();
                for _ in 0..p.ops_per_handle {
                    let roll = rng.below(100);
                    if rng.chance(p.lookup_prob) && !shared.is_empty() {
                        let s = &shared[rng.below(shared.len() as u64) as usize];
                        h.ops.push(Op::LookupExtentInfo { bytenr: s.bytenr });
                    }
                    if rng.chance(p.should_end_prob) {
                        h.ops.push(Op::ShouldEnd);
                    }
                    if rng.chance(p.extent_op_prob) && !shared.is_empty() {
                        let s = &shared[rng.below(shared.len() as u64) as usize];
                        let op = ExtentOp {
                            flags: Some(1 << rng.below(8)),
                            key: None,
                        };
                        h.ops.push(Op::AddExtentOp {
                            bytenr: s.bytenr,
                            num_bytes: s.num_bytes,
                            is_data: s.is_data,
                            op,
                        });
                    }
                    let mine = &mut privates[ti];
                    if roll < 30 || shared.is_empty() {
                        // Allocate a private extent.
                        let is_data = rng.chance(p.data_fraction);
                        let num_bytes = if is_data { DATA_BYTES } else { TREE_BYTES };
                        let bytenr = next_private;
                        next_private += num_bytes;
                        let key = if is_data {
                            BackrefKey::data(0, root, 1000 + rng.below(64), 0)
                        } else {
                            BackrefKey::tree(0, root)
                        };
                        let mut op = if is_data {
                            data_ref(bytenr, key, root, AddAction::AddExtent)
                        } else {
                            tree_ref(&mut rng, bytenr, key, root, AddAction::AddExtent)
                        };
                        if !is_data && let Op::AddRef { extent_op, .. } = &mut op {
                            *extent_op = Some(ExtentOp {
                                flags: Some(2),
                                key: Some(bytenr),
                            });
                        }
                        h.ops.push(op);
                        let mut pr = Private {
                            bytenr,
                            is_data,
                            root,
                            backrefs: BTreeMap::new(),
                        };
                        pr.backrefs.insert(key, 1);
                        if rng.chance(p.cancel_prob) {
                            // Freed again right away: cancels at insertion or nets to a pinned head.
                            let d = if is_data {
                                data_ref(bytenr, key, root, AddAction::Drop)
                            } else {
                                tree_ref(&mut rng, bytenr, key, root, AddAction::Drop)
                            };
                            h.ops.push(d);
                        } else {
                            mine.push(pr);
                        }
                    } else if roll < 45 && !mine.is_empty() {
                        // Another ref to one of my extents.
                        let i = rng.below(mine.len() as u64) as usize;
                        let pr = &mut mine[i];
                        let key = if pr.is_data {
                            if rng.chance(0.5)
                                && let Some(k) = pr.backrefs.keys().next().copied()
                            {
                                k
                            } else {
                                BackrefKey::data(
                                    0,
                                    pr.root,
                                    1000 + rng.below(64),
                                    4096 * rng.below(4),
                                )
                            }
                        } else {
                            fresh_parent += 1;
                            BackrefKey::tree(fresh_parent, pr.root)
                        };
                        *pr.backrefs.entry(key).or_insert(0) += 1;
                        let (b, r) = (pr.bytenr, pr.root);
                        h.ops.push(if pr.is_data {
                            data_ref(b, key, r, AddAction::Add)
                        } else {
                            tree_ref(&mut rng, b, key, r, AddAction::Add)
                        });
                    } else if roll < 60 && !mine.is_empty() {
                        // Drop one of my extents' refs (possibly freeing it).
                        let i = rng.below(mine.len() as u64) as usize;
                        let pr = &mut mine[i];
                        let key = *pr
                            .backrefs
                            .keys()
                            .nth(rng.below(pr.backrefs.len() as u64) as usize)
                            .unwrap();
                        let c = pr.backrefs.get_mut(&key).unwrap();
                        *c -= 1;
                        if *c == 0 {
                            pr.backrefs.remove(&key);
                        }
                        let (b, r, d) = (pr.bytenr, pr.root, pr.is_data);
                        h.ops.push(if d {
                            data_ref(b, key, r, AddAction::Drop)
                        } else {
                            tree_ref(&mut rng, b, key, r, AddAction::Drop)
                        });
                        if mine[i].backrefs.is_empty() {
                            mine.swap_remove(i);
                        }
                    } else if roll < 82 {
                        // Add a ref to a shared extent.
                        let si = rng.below(shared.len() as u64) as usize;
                        let s = &mut shared[si];
                        let key = if s.is_data {
                            BackrefKey::data(0, root, 2000 + rng.below(8), 4096 * rng.below(2))
                        } else {
                            fresh_parent += 1;
                            BackrefKey::tree(fresh_parent, root)
                        };
                        s.added.push(key);
                        my_shared_adds.push((si, key));
                        let b = s.bytenr;
                        h.ops.push(if s.is_data {
                            data_ref(b, key, root, AddAction::Add)
                        } else {
                            tree_ref(&mut rng, b, key, root, AddAction::Add)
                        });
                    } else {
                        // Drop a shared backref: my own add from this transaction, or budget.
                        let pick = if !my_shared_adds.is_empty() && rng.chance(0.5) {
                            let (si, key) = my_shared_adds
                                .swap_remove(rng.below(my_shared_adds.len() as u64) as usize);
                            let s = &mut shared[si];
                            let pos = s
                                .added
                                .iter()
                                .position(|k| *k == key)
                                .expect("recorded add");
                            s.added.swap_remove(pos);
                            Some((si, key))
                        } else {
                            let si = rng.below(shared.len() as u64) as usize;
                            let s = &mut shared[si];
                            if s.budget.is_empty() {
                                None
                            } else {
                                let j = rng.below(s.budget.len() as u64) as usize;
                                let key = s.budget[j].0;
                                s.budget[j].1 -= 1;
                                if s.budget[j].1 == 0 {
                                    s.budget.swap_remove(j);
                                }
                                Some((si, key))
                            }
                        };
                        if let Some((si, key)) = pick {
                            let s = &shared[si];
                            let r = if key.ref_type == refgate_common::event::SHARED_BLOCK_REF_KEY {
                                root
                            } else {
                                key.a
                            };
                            h.ops.push(if s.is_data {
                                data_ref(s.bytenr, key, r, AddAction::Drop)
                            } else {
                                tree_ref(&mut rng, s.bytenr, key, r, AddAction::Drop)
                            });
                        }
                    }
                }
                tt.handles.push(h);
            }
            task.transactions.push(tt);
        }
    }
    Workload {
        tasks,
        initial,
        transactions: p.transactions,
        ..Workload::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_deterministic_and_valid() {
        let p = SynthParams::default();
        let a = synthetic(&p);
        let b = synthetic(&p);
        assert_eq!(a, b);
        a.validate().unwrap();
        assert!(a.total_adds() > 1000);
        assert!(
            a.tasks
                .iter()
                .all(|t| t.transactions.len() == p.transactions)
        );
        // Every transaction has a committer.
        for t in 0..p.transactions {
            assert!(a.tasks.iter().any(|task| task.transactions[t].commit));
        }
    }

    #[test]
    fn replicate_is_disjoint() {
        let w = synthetic(&SynthParams {
            tasks: 2,
            transactions: 2,
            ..Default::default()
        });
        let r = w.replicate(3, w.span());
        assert_eq!(r.task_count(), 6);
        assert_eq!((r.task(5).id, r.task(5).offset), (5, 2 * w.span()));
        assert_eq!(r.total_ops(), 3 * w.total_ops());
        assert_eq!(r.initial_extents().count(), 3 * w.initial.len());
        let e1 = w.expected_backrefs();
        let e3 = r.expected_backrefs();
        assert_eq!(e3.len(), 3 * e1.len());
        // Copy 2 of an extent nets what copy 0 does, 2 × span further.
        for (b, keys) in &e1 {
            let k2: Vec<i64> = e3[&(b + 2 * w.span())].values().copied().collect();
            assert_eq!(k2, keys.values().copied().collect::<Vec<_>>());
        }
        r.validate().unwrap();
    }
}
