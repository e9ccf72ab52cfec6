//! What the model counts about itself: lock spinning and waits, gate decisions, run calls
//! (docs/design.md "Replay"). Per-thread accumulators are plain integers (one writer, no sharing);
//! the engine merges them after the run. The live view is in [`crate::live`].

use hdrhistogram::Histogram;
use refgate_common::names::caller as names;
use serde::Serialize;

fn new_hist() -> Histogram<u64> {
    // Auto-resizing from 1 ns at 2 significant digits: a histogram grows only to the
    // largest value it records (a task's metrics hold five; the virtual engine has one
    // worker per task, thousands in a large replay).
    Histogram::new(2).expect("static precision")
}

/// Waits of one kind (count, total, distribution) in nanoseconds.
#[derive(Clone, Debug)]
pub struct WaitStats {
    /// Waits recorded.
    pub count: u64,
    /// Their total (ns).
    pub total_ns: u64,
    hist: Histogram<u64>,
}

impl Default for WaitStats {
    fn default() -> Self {
        Self {
            count: 0,
            total_ns: 0,
            hist: new_hist(),
        }
    }
}

impl WaitStats {
    /// Counts one wait of `ns`.
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        // `record` grows the auto-resizing histogram; only a value beyond what any
        // histogram can hold (never, for ns) falls back to saturating.
        if self.hist.record(ns.max(1)).is_err() {
            self.hist.saturating_record(ns.max(1));
        }
    }
    /// Adds `o`'s waits (another worker's).
    pub fn merge(&mut self, o: &WaitStats) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.hist.add(&o.hist).expect("same bounds");
    }
    /// Count, total, median, 99th percentile and maximum.
    pub fn summary(&self) -> WaitSummary {
        let q = |p: f64| {
            if self.count == 0 {
                0
            } else {
                self.hist.value_at_quantile(p)
            }
        };
        WaitSummary {
            count: self.count,
            total_ns: self.total_ns,
            p50_ns: q(0.5),
            p99_ns: q(0.99),
            max_ns: if self.count == 0 { 0 } else { self.hist.max() },
        }
    }
}

/// [`WaitStats`] as the report shows them (ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaitSummary {
    /// Waits.
    pub count: u64,
    /// Total time waited (ns).
    pub total_ns: u64,
    /// Median wait (ns; the histogram keeps two significant digits).
    pub p50_ns: u64,
    /// 99th-percentile wait (ns).
    pub p99_ns: u64,
    /// Longest wait (ns).
    pub max_ns: u64,
}

/// A spinlock's cost: acquisitions, contended acquisitions, CPU burnt spinning (time inside
/// spin bursts only; time given away by yielding is not CPU we burnt) and the full wait of
/// each contended acquisition.
#[derive(Clone, Debug, Default)]
pub struct SpinStats {
    /// Acquisitions, contended or not.
    pub acquisitions: u64,
    /// Acquisitions that found the lock held.
    pub contended: u64,
    /// CPU ns burnt spinning (inside spin bursts).
    pub spin_ns: u64,
    /// The part of `spin_ns` spun by tasks inside `btrfs_run_delayed_refs` (the rest is
    /// the add path, lookups and commits' bookkeeping).
    pub runner_spin_ns: u64,
    /// Real threads: times a contended acquisition yielded the CPU after `spin_limit` spins.
    pub yields: u64,
    /// The full wait of each contended acquisition.
    pub wait: WaitStats,
}

impl SpinStats {
    /// Adds `o`'s counts (another worker's).
    pub fn merge(&mut self, o: &SpinStats) {
        self.acquisitions += o.acquisitions;
        self.contended += o.contended;
        self.spin_ns += o.spin_ns;
        self.runner_spin_ns += o.runner_spin_ns;
        self.yields += o.yields;
        self.wait.merge(&o.wait);
    }
    /// The figures as the report shows them.
    pub fn summary(&self) -> SpinSummary {
        SpinSummary {
            acquisitions: self.acquisitions,
            contended: self.contended,
            spin_cpu_seconds: self.spin_ns as f64 / 1e9,
            runner_spin_cpu_seconds: self.runner_spin_ns as f64 / 1e9,
            yields: self.yields,
            wait: self.wait.summary(),
        }
    }
}

/// [`SpinStats`] as the report shows them (spinning in CPU seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SpinSummary {
    /// Acquisitions, contended or not.
    pub acquisitions: u64,
    /// Acquisitions that found the lock held.
    pub contended: u64,
    /// CPU seconds burnt spinning.
    pub spin_cpu_seconds: f64,
    /// Of which spun inside `btrfs_run_delayed_refs`.
    pub runner_spin_cpu_seconds: f64,
    /// Real threads: yields after `spin_limit` spins.
    pub yields: u64,
    /// Wait of contended acquisitions only.
    pub wait: WaitSummary,
}

/// The seed gate's decisions (§2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GateStats {
    /// Throttled callers that won the `procs_running_refs` cmpxchg (first try or re-check).
    pub acquisitions: u64,
    /// run_all / run_most callers that incremented `procs_running_refs` without the gate.
    pub bypasses: u64,
    /// Throttled callers that returned because `num_entries < 16348`.
    pub early_returns: u64,
    /// Sleeps on `delayed_refs->wait`.
    pub sleeps: u64,
    /// Wake-all calls at runner exit that found waiters.
    pub wake_alls: u64,
    /// Sleepers woken.
    pub wakeups: u64,
    /// Returns because `refs_newer(seq0, 256)` said enough progress was made.
    pub refs_newer_exits: u64,
}

impl GateStats {
    /// Adds `o`'s counts (another worker's).
    pub fn merge(&mut self, o: &GateStats) {
        self.acquisitions += o.acquisitions;
        self.bypasses += o.bypasses;
        self.early_returns += o.early_returns;
        self.sleeps += o.sleeps;
        self.wake_alls += o.wake_alls;
        self.wakeups += o.wakeups;
        self.refs_newer_exits += o.refs_newer_exits;
    }
}

/// Who called `btrfs_run_delayed_refs` (§2.8, §4.7): an open vocabulary. The built-in
/// callers are the associated constants; a policy names callers of its own with
/// [`Caller::task`] or [`Caller::kernel_worker`], and they appear under their names in
/// `run_calls_by_caller`, `refs_run_by_caller`, the text report and `--validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    name: &'static str,
    kind: CallerKind,
}

/// What kind of task a [`Caller`] is, as `--validate` attributes recorded runs (by the
/// task's `comm` and the commit's tid): the committer, a kernel worker, or any other task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallerKind {
    /// `btrfs_commit_transaction`.
    Commit,
    /// A kernel thread or workqueue item (a policy's [`crate::policy::WorkerKind`]).
    KernelWorker,
    /// A user task: handle ends, `btrfs_should_end_transaction`, explicit runs.
    Task,
}

impl Caller {
    /// `btrfs_commit_transaction`: the pre-flush and the exclusive phase.
    pub const COMMIT: Caller = Caller::new(names::COMMIT.id, CallerKind::Commit);
    /// The async metadata reclaim worker, for waiting tickets (6.x).
    pub const ASYNC_RECLAIM: Caller = Caller::kernel_worker(names::ASYNC_RECLAIM.id);
    /// The preemptive reclaim worker (6.x).
    pub const PREEMPTIVE_RECLAIM: Caller = Caller::kernel_worker(names::PREEMPTIVE_RECLAIM.id);
    /// `__btrfs_end_transaction` (3.x).
    pub const HANDLE_END: Caller = Caller::task(names::HANDLE_END.id);
    /// Anything else (`btrfs_should_end_transaction`'s run in 3.x, …).
    pub const OTHER: Caller = Caller::task(names::OTHER.id);
    /// The built-in callers, in the order the JSON has always listed them: every report
    /// carries these keys, zero or not, so its shape does not depend on the policy.
    pub const BUILTIN: [Caller; 5] = [
        Caller::COMMIT,
        Caller::ASYNC_RECLAIM,
        Caller::PREEMPTIVE_RECLAIM,
        Caller::HANDLE_END,
        Caller::OTHER,
    ];

    /// A caller named `name` (snake_case: it is a JSON key) of this kind.
    pub const fn new(name: &'static str, kind: CallerKind) -> Caller {
        Caller { name, kind }
    }
    /// A user-task caller of a policy's own (see [`CallerKind::Task`]).
    pub const fn task(name: &'static str) -> Caller {
        Caller::new(name, CallerKind::Task)
    }
    /// A kernel-worker caller of a policy's own (see [`CallerKind::KernelWorker`]).
    pub const fn kernel_worker(name: &'static str) -> Caller {
        Caller::new(name, CallerKind::KernelWorker)
    }
    /// Its name: the JSON key.
    pub const fn name(self) -> &'static str {
        self.name
    }
    /// Its name for people: the table's label for a built-in caller
    /// ([`refgate_common::names::caller`]), the name with spaces for a policy's own.
    pub fn label(self) -> String {
        names::ALL
            .iter()
            .find(|n| n.id == self.name)
            .map_or_else(|| self.name.replace('_', " "), |n| n.label.to_string())
    }
    /// What kind of task it is.
    pub const fn kind(self) -> CallerKind {
        self.kind
    }
}

impl Default for Caller {
    fn default() -> Self {
        Caller::OTHER
    }
}

/// `btrfs_run_delayed_refs` calls (or refs run) per [`Caller`]: the built-in callers first, in
/// [`Caller::BUILTIN`]'s order, then any a policy named, in name order (so the merge order of
/// the workers' counts never shows). Serialized as one JSON object keyed by caller name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCallsByCaller {
    counts: Vec<(Caller, u64)>,
}

impl Default for RunCallsByCaller {
    fn default() -> Self {
        Self {
            counts: Caller::BUILTIN.iter().map(|&c| (c, 0)).collect(),
        }
    }
}

impl RunCallsByCaller {
    /// Counts one for `c`.
    pub fn add(&mut self, c: Caller) {
        self.add_n(c, 1);
    }
    /// Counts `n` for `c`.
    pub fn add_n(&mut self, c: Caller, n: u64) {
        // Linear: a handful of callers, and this runs once per ref.
        if let Some(e) = self.counts.iter_mut().find(|(k, _)| *k == c) {
            e.1 += n;
            return;
        }
        let builtin = Caller::BUILTIN.len();
        let at = builtin + self.counts[builtin..].partition_point(|(k, _)| k.name < c.name);
        self.counts.insert(at, (c, n));
    }
    /// The count for `c` (0 if it never called).
    pub fn get(&self, c: Caller) -> u64 {
        self.counts.iter().find(|(k, _)| *k == c).map_or(0, |e| e.1)
    }
    /// The count for the caller named `name` (0 if none has called).
    pub fn get_named(&self, name: &str) -> u64 {
        self.counts
            .iter()
            .find(|(k, _)| k.name == name)
            .map_or(0, |e| e.1)
    }
    /// The sum over callers of one kind.
    pub fn of_kind(&self, kind: CallerKind) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|e| e.1)
            .sum()
    }
    /// Every caller with its count: the built-in ones (zero or not), then the others.
    pub fn iter(&self) -> impl Iterator<Item = (Caller, u64)> + '_ {
        self.counts.iter().copied()
    }
    /// Adds `o`'s counts.
    pub fn merge(&mut self, o: &Self) {
        for &(c, n) in &o.counts {
            self.add_n(c, n);
        }
    }
}

impl Serialize for RunCallsByCaller {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.counts.len()))?;
        for (c, n) in &self.counts {
            m.serialize_entry(c.name, n)?;
        }
        m.end()
    }
}

/// Waits on the extent tree's block locks by where the block is: the root, a node below it,
/// a leaf (`--extent-tree btree`).
#[derive(Clone, Debug, Default)]
pub struct LevelWaits {
    /// Indexed by root 0, node 1, leaf 2.
    pub by_class: [WaitStats; 3],
}

impl LevelWaits {
    /// Adds another worker's waits.
    pub fn merge(&mut self, o: &LevelWaits) {
        for (a, b) in self.by_class.iter_mut().zip(&o.by_class) {
            a.merge(b);
        }
    }
}

/// Everything one worker thread counted.
#[derive(Clone, Debug, Default)]
pub struct ThreadMetrics {
    /// `delayed_refs->lock`.
    pub dr_lock: SpinStats,
    /// Per-head spinlock (modern `head->lock`; in the v3.x model only taken under `dr_lock`).
    pub head_lock: SpinStats,
    /// Blocking on a head's `mutex` (§2.4, §2.9).
    pub head_mutex: WaitStats,
    /// Blocking on the extent-tree lock (§2.7, §7.2).
    pub extent_tree: WaitStats,
    /// The B-tree's block-lock waits by level (`--extent-tree btree`; all in `extent_tree`
    /// too).
    pub extent_tree_levels: LevelWaits,
    /// Extent-tree lock acquisitions (one per update, contended or not).
    pub extent_tree_acquisitions: u64,
    /// Delayed refs the extent tree queued on its own blocks (COWs and splits under
    /// `--extent-tree btree`), not counted in `adds`.
    pub self_fed_refs: u64,
    /// The seed gate's decisions (§2.3).
    pub gate: GateStats,
    /// Latency of each `btrfs_run_delayed_refs` call.
    pub run_calls: WaitStats,
    /// `btrfs_run_delayed_refs` calls, by caller.
    pub run_calls_by_caller: RunCallsByCaller,
    /// Ref nodes run, by who called `btrfs_run_delayed_refs`.
    pub refs_run_by_caller: RunCallsByCaller,
    /// Modern: add calls that waited on a space ticket (§4.7).
    pub space_waits: u64,
    /// Heads and refs run per transaction, refs by caller (`--validate`).
    pub per_txn: Vec<TxnCounts>,
    /// Add-API calls (tree, data, extent op).
    pub adds: u64,
    /// Ref nodes run against the extent tree.
    pub refs_run: u64,
    /// Heads deleted by a runner (`run_delayed_ref_head`).
    pub heads_run: u64,
    /// Extent ops run on their own (`run_delayed_extent_op`: §2.4 step 6, §4.4 `cleanup_ref_head`).
    pub extent_ops_run: u64,
    /// Nodes dropped by insert-time cancellation (§1.4) and run-time merging (§2.6).
    pub insert_cancels: u64,
    /// Nodes dropped by run-time merging (`btrfs_merge_delayed_refs`, §2.6, §4.4).
    pub run_merges: u64,
    /// Heads given back because their selected ref was held back by seq (§1.6, §2.4 step 4).
    pub seq_holdbacks: u64,
    /// Nodes walked under `delayed_refs->lock` to find work: K3.x `btrfs_find_ref_cluster`
    /// (§2.2), K6.x the heads `btrfs_select_ref_head` looks at.
    pub nodes_walked: u64,
    /// `-EAGAIN` from the head lock dance: the head left the tree while we slept (§2.4).
    pub head_eagain: u64,
}

impl ThreadMetrics {
    fn txn(&mut self, t: usize) -> &mut TxnCounts {
        if self.per_txn.len() <= t {
            self.per_txn.resize_with(t + 1, Default::default);
        }
        &mut self.per_txn[t]
    }

    /// A ref node ran in transaction `t` for `caller`.
    pub fn ref_run(&mut self, t: usize, is_data: bool, caller: Caller) {
        self.refs_run += 1;
        self.refs_run_by_caller.add(caller);
        let c = self.txn(t);
        if is_data {
            c.data_refs_run += 1;
        } else {
            c.tree_refs_run += 1;
        }
        c.refs_by_caller.add(caller);
    }

    /// A head was run (deleted by a runner) in transaction `t`.
    pub fn head_run(&mut self, t: usize) {
        self.heads_run += 1;
        self.txn(t).heads_run += 1;
    }

    /// Adds `o`'s counts (another worker's).
    pub fn merge(&mut self, o: &ThreadMetrics) {
        self.dr_lock.merge(&o.dr_lock);
        self.head_lock.merge(&o.head_lock);
        self.head_mutex.merge(&o.head_mutex);
        self.extent_tree.merge(&o.extent_tree);
        self.extent_tree_levels.merge(&o.extent_tree_levels);
        self.extent_tree_acquisitions += o.extent_tree_acquisitions;
        self.self_fed_refs += o.self_fed_refs;
        self.gate.merge(&o.gate);
        self.run_calls.merge(&o.run_calls);
        self.run_calls_by_caller.merge(&o.run_calls_by_caller);
        self.refs_run_by_caller.merge(&o.refs_run_by_caller);
        self.space_waits += o.space_waits;
        if self.per_txn.len() < o.per_txn.len() {
            self.per_txn.resize_with(o.per_txn.len(), Default::default);
        }
        for (a, b) in self.per_txn.iter_mut().zip(&o.per_txn) {
            a.merge(b);
        }
        self.adds += o.adds;
        self.refs_run += o.refs_run;
        self.heads_run += o.heads_run;
        self.extent_ops_run += o.extent_ops_run;
        self.insert_cancels += o.insert_cancels;
        self.run_merges += o.run_merges;
        self.seq_holdbacks += o.seq_holdbacks;
        self.nodes_walked += o.nodes_walked;
        self.head_eagain += o.head_eagain;
    }
}

/// What the replay counted per transaction (filled by the runners, see `ThreadMetrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnCounts {
    /// Heads deleted by a runner (`run_delayed_ref_head`).
    pub heads_run: u64,
    /// Tree ref nodes run.
    pub tree_refs_run: u64,
    /// Data ref nodes run.
    pub data_refs_run: u64,
    /// Ref nodes run, by who called `btrfs_run_delayed_refs`.
    pub refs_by_caller: RunCallsByCaller,
}

impl TxnCounts {
    /// Adds `o`'s counts (another worker's).
    pub fn merge(&mut self, o: &TxnCounts) {
        self.heads_run += o.heads_run;
        self.tree_refs_run += o.tree_refs_run;
        self.data_refs_run += o.data_refs_run;
        self.refs_by_caller.merge(&o.refs_by_caller);
    }
}

/// One virtual CPU's time, in virtual ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuTime {
    /// Model work: adds, walks, ref runs, think time.
    pub work_ns: u64,
    /// Spinning on `delayed_refs->lock`.
    pub spin_delayed_refs_lock_ns: u64,
    /// Spinning on a head's spinlock.
    pub spin_head_lock_ns: u64,
    /// Spinning on the extent tree's lock (3.x spinning tree locks, `ExtentLock::Spin`).
    pub spin_extent_tree_ns: u64,
    /// Context switches, wake-up latency, `cond_resched` polling.
    pub switch_ns: u64,
    /// No runnable task while some of its tasks sleep (gate, head mutex, extent tree,
    /// transaction barrier).
    pub sleeping_ns: u64,
    /// All of its tasks finished (or none was mapped to it).
    pub idle_ns: u64,
    /// Ref nodes its tasks ran.
    pub refs_run: u64,
}

impl CpuTime {
    /// Spinning of any kind (ns): the three `spin_*` fields.
    pub fn spin_ns(&self) -> u64 {
        self.spin_delayed_refs_lock_ns + self.spin_head_lock_ns + self.spin_extent_tree_ns
    }
    /// The CPU's whole time (ns): work, spinning, switching, sleeping and idle.
    pub fn total_ns(&self) -> u64 {
        self.work_ns + self.spin_ns() + self.switch_ns + self.sleeping_ns + self.idle_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The auto-resizing histogram keeps large values (a run-all of seconds) and merges
    /// histograms of different ranges.
    /// Built-in callers keep their place and zero counts; a policy's own callers follow in
    /// name order whatever order the workers' counts merge in.
    #[test]
    fn callers_of_a_policy_follow_the_builtin_ones_in_name_order() {
        const B: Caller = Caller::task("b_mine");
        const A: Caller = Caller::kernel_worker("a_mine");
        let mut x = RunCallsByCaller::default();
        x.add(B);
        x.add(Caller::COMMIT);
        let mut y = RunCallsByCaller::default();
        y.add_n(A, 3);
        y.add(B);
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(&y);
        yx.merge(&x);
        assert_eq!(xy, yx);
        let names: Vec<_> = xy.iter().map(|(c, n)| (c.name(), n)).collect();
        assert_eq!(
            names,
            [
                ("commit", 1),
                ("async_reclaim", 0),
                ("preemptive_reclaim", 0),
                ("handle_end", 0),
                ("other", 0),
                ("a_mine", 3),
                ("b_mine", 2)
            ]
        );
        assert_eq!(xy.get(B), 2);
        assert_eq!(xy.get_named("a_mine"), 3);
        assert_eq!(xy.of_kind(CallerKind::KernelWorker), 3);
        assert_eq!(xy.of_kind(CallerKind::Task), 2);
        assert_eq!(
            serde_json::to_string(&xy).unwrap(),
            r#"{"commit":1,"async_reclaim":0,"preemptive_reclaim":0,"handle_end":0,"other":0,"a_mine":3,"b_mine":2}"#
        );
    }

    #[test]
    fn large_values_are_kept_and_merged() {
        let mut a = WaitStats::default();
        a.record(300_000_000_000);
        let mut b = WaitStats::default();
        b.record(5);
        b.merge(&a);
        let s = b.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_ns >= 297_000_000_000, "{s:?}");
        assert!(s.p50_ns <= 5, "{s:?}");
    }
}
