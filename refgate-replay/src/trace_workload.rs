//! Building a [`Workload`] from a recorded trace (refgate-common `Record`s).
//!
//! What the trace gives, and how it maps (docs/design.md "Replay"):
//! * **Queued refs**: each task's `add_delayed_tree_ref`/`add_delayed_data_ref` events become
//!   [`Op::AddRef`] in the task's order. The head event that precedes a ref event of the same
//!   task and bytenr carries the caller's action: `ADD_DELAYED_EXTENT` (3) marks the ref as
//!   [`AddAction::AddExtent`] (the ref event itself reports it as ADD, spec §1.4/§5.1). A head
//!   event with `UPDATE_DELAYED_HEAD` (4) and no ref is `btrfs_add_delayed_extent_op`
//!   ([`Op::AddExtentOp`]).
//! * **Transactions**: `btrfs_transaction_commit` events split the trace; the committing task
//!   commits in the replay. Every replayed transaction ends with a commit that drains the
//!   queue, including the last (open) one.
//! * **Handles**: where the recorder had kprobes, `start_transaction` (return) and
//!   `__btrfs_end_transaction` bound each task's handles (outermost start to its end; nested
//!   starts return the handle the task holds). Without them — tracepoint-only kernels like
//!   this project's 6.18 — a handle is a burst of one task's adds with no gap longer than
//!   `handle_gap_ns` (default 1 ms; the task-to-CPU mapping docs/design.md "Replay" asks to
//!   document). Adds outside any recorded handle (begun before the probes attached) fall back
//!   to the heuristic too.
//! * **Order across tasks**: the replay runs each task's ops in order and transactions one
//!   after another, but threads race within a transaction. Two tasks touching one extent in
//!   one transaction (a kworker allocating a data extent that a writer then frees) would lose
//!   their recorded order — and a DROP could reach the extent tree before the ADD_EXTENT that
//!   created it, which the kernel never does. So, within a transaction, every op on an extent
//!   stays with the first task that touched that extent there (`rehomed` counts the moves).
//!   Per-extent order, and hence the §7.4 net effect at every step, is exactly the trace's.
//! * **Initial extent tree**: refs dropped before the trace added them, and extents used
//!   (ADD without ADD_EXTENT, extent ops) before they appear, existed before the recording.
//!   They are seeded with the smallest counts that keep every backref non-negative in trace
//!   order; an extent that must exist but has no known backref gets one placeholder backref
//!   (`root = u64::MAX`), so that it exists and the invariant still balances.
//! * **Think times**: with `speed = Some(f)`, the recorded gap before each op of a task is
//!   replayed as [`Op::Think`] of `gap / f`.
use std::collections::{BTreeMap, HashMap};

use refgate_common::event::{
    ADD_DELAYED_EXTENT, Event, EventKind, FsId, Record, UPDATE_DELAYED_HEAD,
};
use serde::Serialize;

use crate::error::WorkloadError;
use crate::{
    extent_tree::{EXTENT_FLAG_DATA, EXTENT_FLAG_TREE_BLOCK, ExtentItem},
    head::ExtentOp,
    refkey::{AddAction, BackrefKey, RefSpec},
    workload::{Handle, Op, Task, TaskTransaction, Workload},
};

/// Which recorded refs a 3.x kernel would have added `for_cow` (§1.6), and so without a
/// tree-mod seq. 6.x tracepoints carry no `for_cow`, and their `seq` is a read of
/// `tree_mod_seq` (0 while nothing holds the tree-mod log), so a 6.x trace cannot say;
/// the replay of a 6.x trace under `pre`/`seed` needs a rule (`--seq-rule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SeqRule {
    /// Tree-block refs are COW (`__btrfs_cow_block` allocates and frees blocks with
    /// `for_cow = 1`), data refs are file operations (`for_cow = 0`: writes, truncates,
    /// unlinks) and get seqs on fs trees. Misclassified: data refs that COW of a *shared*
    /// leaf adds (`btrfs_inc_ref`/`dec_ref` after snapshots or reflinks: really `for_cow`,
    /// given seqs here) and tree-block refs that are not COW (new roots, snapshot
    /// creation, relocation: given none).
    #[default]
    Data,
    /// Every fs-tree ref gets a seq (the most hold-backs a 3.x kernel could show).
    All,
    /// `for_cow` iff the recorded `seq` is 0 (what a 6.x kernel's own seq says: nearly
    /// every ref is then seq-less).
    Recorded,
}

impl SeqRule {
    /// The rule's `--seq-rule` name.
    pub fn name(self) -> &'static str {
        match self {
            SeqRule::Data => "data",
            SeqRule::All => "all",
            SeqRule::Recorded => "recorded",
        }
    }
    /// Sets `for_cow` on a recorded ref by the rule.
    pub fn classify(self, mut r: RefSpec, recorded_seq: u64) -> RefSpec {
        r.for_cow = match self {
            SeqRule::Data => !r.is_data(),
            SeqRule::All => false,
            SeqRule::Recorded => recorded_seq == 0,
        };
        r
    }
}

/// How to turn a trace into a workload.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// A task's adds separated by more than this start a new handle.
    pub handle_gap_ns: u64,
    /// Replay recorded think-times divided by this factor (`None`: as fast as possible).
    pub speed: Option<f64>,
    /// Which refs get 3.x tree-mod seqs (§1.6).
    pub seq_rule: SeqRule,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            handle_gap_ns: 1_000_000,
            speed: None,
            seq_rule: SeqRule::default(),
        }
    }
}

/// What the conversion found and did, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceConversion {
    /// The filesystem replayed (the one with the most queued refs) and how many were seen.
    pub filesystem: FsId,
    /// Filesystems with add events in the trace.
    pub filesystems_seen: usize,
    /// Add events of other filesystems, left out.
    pub other_fs_events: u64,
    /// Tasks in the workload: the recorded threads that queued refs or committed.
    pub tasks: usize,
    /// Transactions: the recorded commits plus the last (open) one.
    pub transactions: usize,
    /// Handles, over every task and transaction.
    pub handles: usize,
    /// Ref events (`add_delayed_tree_ref`/`_data_ref`) turned into [`Op::AddRef`].
    pub ref_adds: u64,
    /// `UPDATE_DELAYED_HEAD` head events turned into [`Op::AddExtentOp`].
    pub extent_ops: u64,
    /// Ops moved to the task that first touched their extent in the transaction.
    pub rehomed: u64,
    /// Extents present before the recording (seeded into the initial extent tree).
    pub initial_extents: usize,
    /// Ref events whose action or type the model does not know (skipped).
    pub unknown: u64,
    /// `run_delayed_*` events seen, of any filesystem (counted, not replayed; §7.5).
    pub recorded_run_events: u64,
    /// `"kprobes"` when handle boundaries came from the recorded handle probes, else
    /// `"gap heuristic"`.
    pub handle_source: &'static str,
    /// The `for_cow` rule used, and how many of the fs-tree refs it gives a seq under 3.x
    /// policies (§1.6).
    pub seq_rule: SeqRule,
    /// Of `ref_adds`, those `seq_rule` gives a seq (`need_ref_seq`, §1.6).
    pub fs_tree_refs_with_seq: u64,
    /// Median gap between consecutive run events of one task (under 1 ms): the kernel's cost
    /// of running one node, extent-tree update included (§7.5). Feeds `Params::ext_cost_ns`.
    pub run_cost_ns: u64,
}

/// One add-side call, in trace order.
struct Call {
    ts: u64,
    tid: u32,
    op: Op,
    bytenr: u64,
}

/// Builds a workload from `records` (as read from a trace, in file order).
pub fn workload_from_records(
    records: impl IntoIterator<Item = Record>,
    opts: &TraceOptions,
) -> Result<(Workload, TraceConversion), WorkloadError> {
    let events = events_in_time_order(records);
    let mut conv = TraceConversion {
        seq_rule: opts.seq_rule,
        ..TraceConversion::default()
    };
    let fs = choose_filesystem(&events, &mut conv)?;
    let handles = RecordedHandles::from_events(&events);
    conv.handle_source = handles.source();
    let commits = commits_of(&events, fs);
    let calls = add_calls(&events, fs, opts.seq_rule, &mut conv);
    conv.run_cost_ns = median_run_gap(&events, fs);
    if calls.is_empty() {
        return Err(WorkloadError::NoReplayableAdds);
    }
    let transactions = commits.len() + 1;
    conv.transactions = transactions;

    // Tasks, in order of first appearance; committers are tasks too.
    let mut tids = TaskIds::default();
    let assigned = assign_calls(calls, &commits, &handles, &mut tids, &mut conv);
    let committers: Vec<usize> = commits.iter().map(|&(_, tid)| tids.index_of(tid)).collect();
    let mut tasks = empty_tasks(tids.len(), transactions, &committers);
    place_calls(&mut tasks, assigned, opts);
    conv.tasks = tasks.len();
    conv.handles = tasks
        .iter()
        .flat_map(|t| &t.transactions)
        .map(|tt| tt.handles.len())
        .sum();

    let initial = initial_extents(&tasks, transactions);
    conv.initial_extents = initial.len();
    let w = Workload {
        tasks,
        initial,
        transactions,
        ..Workload::default()
    };
    w.validate()?;
    Ok((w, conv))
}

/// The trace's events, stably sorted by timestamp.
fn events_in_time_order(records: impl IntoIterator<Item = Record>) -> Vec<Event> {
    let mut events: Vec<_> = records
        .into_iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    // The ring buffer delivers in reservation order, which can differ from timestamp order by
    // a little across CPUs; the stable sort keeps each task's own order.
    events.sort_by_key(|e| e.ts_ns);
    events
}

/// The filesystem of an add-side event.
fn add_event_fs(k: &EventKind) -> Option<FsId> {
    match k {
        EventKind::AddTreeRef(r) => Some(r.fs),
        EventKind::AddDataRef(r) => Some(r.fs),
        EventKind::AddRefHead(h) => Some(h.fs),
        _ => None,
    }
}

/// The filesystem to replay: the one with the most add events (the first such by id).
/// Records it, how many filesystems were seen and the other filesystems' add events.
fn choose_filesystem(events: &[Event], conv: &mut TraceConversion) -> Result<FsId, WorkloadError> {
    let mut per_fs: BTreeMap<FsId, u64> = BTreeMap::new();
    for e in events {
        if let Some(fs) = add_event_fs(&e.kind) {
            *per_fs.entry(fs).or_default() += 1;
        }
    }
    let Some((&fs, _)) = per_fs.iter().max_by_key(|(_, n)| **n) else {
        return Err(WorkloadError::NoAdds);
    };
    conv.filesystem = fs;
    conv.filesystems_seen = per_fs.len();
    conv.other_fs_events = per_fs
        .iter()
        .filter(|(f, _)| **f != fs)
        .map(|(_, n)| n)
        .sum();
    Ok(fs)
}

/// Recorded handles (kprobes on `start_transaction`/`__btrfs_end_transaction`): per task,
/// `[start, end]` of each outermost handle, in time order.
struct RecordedHandles(HashMap<u32, Vec<(u64, u64)>>);

impl RecordedHandles {
    /// Nested starts only count depth: a task's handle ends when its outermost start does.
    fn from_events(events: &[Event]) -> Self {
        let mut open: HashMap<u32, (u64, u32)> = HashMap::new();
        let mut handles_of: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for e in events {
            match e.kind {
                EventKind::TransHandleStart { .. } => {
                    open.entry(e.tid)
                        .and_modify(|o| o.1 += 1)
                        .or_insert((e.ts_ns, 1));
                }
                EventKind::TransHandleEnd { .. } => {
                    if let Some(o) = open.get_mut(&e.tid) {
                        o.1 -= 1;
                        if o.1 == 0 {
                            let (start, _) = open.remove(&e.tid).expect("present");
                            handles_of.entry(e.tid).or_default().push((start, e.ts_ns));
                        }
                    }
                }
                _ => {}
            }
        }
        RecordedHandles(handles_of)
    }

    /// Where handle boundaries come from, for [`TraceConversion::handle_source`].
    fn source(&self) -> &'static str {
        if self.0.is_empty() {
            "gap heuristic"
        } else {
            "kprobes"
        }
    }

    /// The start of the recorded handle `tid` held at `ts`, if any.
    fn containing(&self, tid: u32, ts: u64) -> Option<u64> {
        let hs = self.0.get(&tid)?;
        let i = hs.partition_point(|&(s, _)| s <= ts);
        (i > 0 && ts <= hs[i - 1].1).then(|| hs[i - 1].0)
    }
}

/// Transaction boundaries and committers: `(ts, tid)` of each `btrfs_transaction_commit`
/// of `fs`.
fn commits_of(events: &[Event], fs: FsId) -> Vec<(u64, u32)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TransactionCommit { fs: f, .. } if f == fs => Some((e.ts_ns, e.tid)),
            _ => None,
        })
        .collect()
}

/// The add-side calls on `fs`, in trace order: head events paired with the ref event that
/// follows on the same task. Counts extent ops, refs, unknown refs and recorded run events.
fn add_calls(events: &[Event], fs: FsId, rule: SeqRule, conv: &mut TraceConversion) -> Vec<Call> {
    let mut pending_head: HashMap<u32, (u64, u8)> = HashMap::new();
    let mut calls: Vec<Call> = Vec::new();
    for e in events {
        if let Some(op) = add_op(e, fs, rule, &mut pending_head, conv) {
            calls.push(Call {
                ts: e.ts_ns,
                tid: e.tid,
                bytenr: op_bytenr(&op),
                op,
            });
        }
    }
    calls
}

/// The op one event adds, if any. A head event with `UPDATE_DELAYED_HEAD` is
/// `btrfs_add_delayed_extent_op`; any other head event is remembered in `pending_head`
/// for the task's next ref event, which it may mark ADD_EXTENT (§1.4/§5.1).
fn add_op(
    e: &Event,
    fs: FsId,
    rule: SeqRule,
    pending_head: &mut HashMap<u32, (u64, u8)>,
    conv: &mut TraceConversion,
) -> Option<Op> {
    match &e.kind {
        EventKind::AddRefHead(h) if h.fs == fs => {
            if h.action == UPDATE_DELAYED_HEAD {
                conv.extent_ops += 1;
                Some(Op::AddExtentOp {
                    bytenr: h.bytenr,
                    num_bytes: h.num_bytes,
                    is_data: h.is_data,
                    op: ExtentOp {
                        flags: Some(0),
                        key: None,
                    },
                })
            } else {
                pending_head.insert(e.tid, (h.bytenr, h.action));
                None
            }
        }
        EventKind::AddTreeRef(r) if r.fs == fs => {
            let spec = RefSpec::from_tree_event(r).map(|s| rule.classify(s, r.seq));
            ref_op(spec, pending_head.remove(&e.tid), r.bytenr, true, conv)
        }
        EventKind::AddDataRef(r) if r.fs == fs => {
            let spec = RefSpec::from_data_event(r).map(|s| rule.classify(s, r.seq));
            ref_op(spec, pending_head.remove(&e.tid), r.bytenr, false, conv)
        }
        EventKind::RunTreeRef(_) | EventKind::RunDataRef(_) | EventKind::RunRefHead(_) => {
            conv.recorded_run_events += 1;
            None
        }
        _ => None,
    }
}

/// The extent an add-side op is on.
fn op_bytenr(op: &Op) -> u64 {
    match op {
        Op::AddRef { r, .. } => r.bytenr,
        Op::AddExtentOp { bytenr, .. } => *bytenr,
        _ => unreachable!(),
    }
}

/// Task indices by tid, in order of first appearance.
#[derive(Default)]
struct TaskIds {
    index: HashMap<u32, usize>,
    tids: Vec<u32>,
}

impl TaskIds {
    fn index_of(&mut self, tid: u32) -> usize {
        let tids = &mut self.tids;
        *self.index.entry(tid).or_insert_with(|| {
            tids.push(tid);
            tids.len() - 1
        })
    }
    fn len(&self) -> usize {
        self.tids.len()
    }
}

/// A call placed on a task in a transaction.
struct Assigned {
    transaction: usize,
    task: usize,
    ts: u64,
    /// The start of the recorded handle the calling task held, if any.
    handle: Option<u64>,
    op: Op,
}

/// Assigns each call to (transaction, task), re-homing per extent within a transaction:
/// every op on an extent stays with the first task that touched it there (`rehomed`).
fn assign_calls(
    calls: Vec<Call>,
    commits: &[(u64, u32)],
    handles: &RecordedHandles,
    tids: &mut TaskIds,
    conv: &mut TraceConversion,
) -> Vec<Assigned> {
    let transaction_of = |ts: u64| commits.partition_point(|&(c, _)| c < ts);
    let mut owner: HashMap<(usize, u64), usize> = HashMap::new();
    let mut assigned = Vec::with_capacity(calls.len());
    for c in calls {
        let t = transaction_of(c.ts);
        let me = tids.index_of(c.tid);
        let who = *owner.entry((t, c.bytenr)).or_insert(me);
        if who != me {
            conv.rehomed += 1;
        }
        assigned.push(Assigned {
            transaction: t,
            task: who,
            ts: c.ts,
            handle: handles.containing(c.tid, c.ts),
            op: c.op,
        });
    }
    assigned
}

/// `n` tasks with `transactions` empty transactions each; `committers[t]` commits `t`.
fn empty_tasks(n: usize, transactions: usize, committers: &[usize]) -> Vec<Task> {
    let mut tasks: Vec<Task> = (0..n)
        .map(|i| Task {
            id: i as u32,
            transactions: vec![TaskTransaction::default(); transactions],
        })
        .collect();
    for (t, &who) in committers.iter().enumerate() {
        tasks[who].transactions[t].commit = true;
    }
    tasks
}

/// Per task, where its last placed op was: to split handles and replay think times.
#[derive(Clone, Copy, Default)]
struct LastOp {
    ts: Option<u64>,
    handle: Option<u64>,
}

/// Appends each assigned op to its task's transaction, opening a new handle where the
/// recorded handle changes or (without recorded boundaries) after a gap over
/// `handle_gap_ns`; with `speed`, the gap before the op becomes an [`Op::Think`].
fn place_calls(tasks: &mut [Task], assigned: Vec<Assigned>, opts: &TraceOptions) {
    let mut last = vec![LastOp::default(); tasks.len()];
    for a in assigned {
        let last = &mut last[a.task];
        let gap = last.ts.map(|p| a.ts.saturating_sub(p));
        last.ts = Some(a.ts);
        let new_handle = match (a.handle, last.handle) {
            // Recorded boundaries decide when both ops lie in recorded handles.
            (Some(h), Some(prev)) => h != prev,
            _ => gap.is_none_or(|g| g > opts.handle_gap_ns),
        };
        last.handle = a.handle;
        let tt = &mut tasks[a.task].transactions[a.transaction];
        if tt.handles.is_empty() || new_handle {
            tt.handles.push(Handle::default());
        }
        let h = tt.handles.last_mut().expect("pushed");
        if let (Some(speed), Some(g)) = (opts.speed, gap)
            && g > 0
        {
            h.ops.push(Op::Think {
                ns: (g as f64 / speed) as u64,
            });
        }
        h.ops.push(a.op);
    }
}

/// §7.5: "gaps between consecutive run events on one TID ≈ c_ext + lock waits"; the median
/// of gaps under 1 ms keeps out the idle time between two runs.
fn median_run_gap(events: &[Event], fs: FsId) -> u64 {
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut gaps: Vec<u64> = Vec::new();
    for e in events {
        let f = match &e.kind {
            EventKind::RunTreeRef(r) => r.fs,
            EventKind::RunDataRef(r) => r.fs,
            EventKind::RunRefHead(h) => h.fs,
            _ => continue,
        };
        if f != fs {
            continue;
        }
        if let Some(p) = last.insert(e.tid, e.ts_ns) {
            let g = e.ts_ns.saturating_sub(p);
            if g < 1_000_000 {
                gaps.push(g);
            }
        }
    }
    if gaps.is_empty() {
        return 0;
    }
    let mid = gaps.len() / 2;
    *gaps.select_nth_unstable(mid).1
}

/// The [`Op::AddRef`] of one recorded ref event (`None`, counted unknown, if the model does
/// not know its action or type). A preceding head event of the task on the same bytenr with
/// `ADD_DELAYED_EXTENT` turns its ADD into ADD_EXTENT (§1.4/§5.1).
fn ref_op(
    spec: Option<RefSpec>,
    head: Option<(u64, u8)>,
    bytenr: u64,
    tree: bool,
    conv: &mut TraceConversion,
) -> Option<Op> {
    let Some(mut r) = spec else {
        conv.unknown += 1;
        return None;
    };
    conv.ref_adds += 1;
    if r.need_ref_seq() {
        conv.fs_tree_refs_with_seq += 1;
    }
    let add_extent = head.is_some_and(|(b, a)| b == bytenr && a == ADD_DELAYED_EXTENT);
    if add_extent && r.action == AddAction::Add {
        r.action = AddAction::AddExtent;
    }
    // A tree block's ADD_EXTENT always carries an extent op (flags/key of the new block, §2.7).
    let extent_op = (tree && r.action == AddAction::AddExtent).then_some(ExtentOp {
        flags: Some(0),
        key: None,
    });
    Some(Op::AddRef { r, extent_op })
}

/// The extent tree before the recording: the smallest per-backref counts that keep every
/// prefix of the (per-extent ordered) op stream non-negative, plus a placeholder backref for
/// extents that must exist but have no known backref.
fn initial_extents(tasks: &[Task], transactions: usize) -> Vec<(u64, ExtentItem)> {
    extent_histories(tasks, transactions)
        .into_iter()
        .filter_map(|(bytenr, s)| s.initial_item().map(|item| (bytenr, item)))
        .collect()
}

/// What the trace's ops say about one extent, walked in its trace order.
struct ExtentHistory {
    num_bytes: u64,
    data: bool,
    /// The extent exists at this point of the walk.
    exists: bool,
    /// It was used before any ADD_EXTENT created it: it existed before the recording.
    needs_item: bool,
    /// Per backref, the running count change and its minimum over every prefix.
    run: BTreeMap<BackrefKey, i64>,
    min: BTreeMap<BackrefKey, i64>,
}

impl ExtentHistory {
    fn new(num_bytes: u64, data: bool) -> Self {
        ExtentHistory {
            num_bytes,
            data,
            exists: false,
            needs_item: false,
            run: BTreeMap::new(),
            min: BTreeMap::new(),
        }
    }

    /// The extent is used here (ADD without ADD_EXTENT, DROP, extent op).
    fn must_exist(&mut self) {
        if !self.exists {
            self.needs_item = true;
            self.exists = true;
        }
    }

    fn add_ref(&mut self, r: &RefSpec) {
        if r.action == AddAction::AddExtent {
            self.exists = true;
        } else {
            self.must_exist();
        }
        let v = self.run.entry(r.key()).or_insert(0);
        *v += r.action.count_mod();
        let m = self.min.entry(r.key()).or_insert(0);
        *m = (*m).min(*v);
    }

    /// The initial extent item, if the extent existed before the recording: each backref's
    /// deficit, or one placeholder backref (`root = u64::MAX`) if none had one.
    fn initial_item(&self) -> Option<ExtentItem> {
        if !self.needs_item {
            return None;
        }
        let mut backrefs: BTreeMap<BackrefKey, u64> = self
            .min
            .iter()
            .filter(|(_, m)| **m < 0)
            .map(|(k, m)| (*k, (-m) as u64))
            .collect();
        if backrefs.is_empty() {
            let k = if self.data {
                BackrefKey::data(0, u64::MAX, u64::MAX, u64::MAX)
            } else {
                BackrefKey::tree(0, u64::MAX)
            };
            backrefs.insert(k, 1);
        }
        let refs = backrefs.values().sum();
        Some(ExtentItem {
            num_bytes: self.num_bytes,
            refs,
            // Every extent item carries its kind's flag (§2.7 `alloc_reserved_*`).
            flags: if self.data {
                EXTENT_FLAG_DATA
            } else {
                EXTENT_FLAG_TREE_BLOCK
            },
            key: None,
            backrefs,
        })
    }
}

/// Every extent's history, by bytenr.
fn extent_histories(tasks: &[Task], transactions: usize) -> BTreeMap<u64, ExtentHistory> {
    // Per extent, its ops are all on one task within a transaction (re-homing), so walking
    // transactions in order and tasks within each gives each extent's trace order.
    let mut ext: BTreeMap<u64, ExtentHistory> = BTreeMap::new();
    for t in 0..transactions {
        for task in tasks {
            for op in task.transactions[t].handles.iter().flat_map(|h| &h.ops) {
                match op {
                    Op::AddRef { r, .. } => ext
                        .entry(r.bytenr)
                        .or_insert_with(|| ExtentHistory::new(r.num_bytes, r.is_data()))
                        .add_ref(r),
                    Op::AddExtentOp {
                        bytenr,
                        num_bytes,
                        is_data,
                        ..
                    } => ext
                        .entry(*bytenr)
                        .or_insert_with(|| ExtentHistory::new(*num_bytes, *is_data))
                        .must_exist(),
                    _ => {}
                }
            }
        }
    }
    ext
}
