//! What the model counts about itself: lock spinning and waits, gate decisions, run calls
//! (docs/design.md "Replay"). Per-thread accumulators are plain integers (one writer, no sharing);
//! the engine merges them after the run. The live view is in [`crate::live`].

use hdrhistogram::Histogram;
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

/// Who called `btrfs_run_delayed_refs` (§2.8, §4.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    /// `btrfs_commit_transaction`: the pre-flush and the exclusive phase.
    Commit,
    /// The async metadata reclaim worker, for waiting tickets (6.x).
    AsyncReclaim,
    /// The preemptive reclaim worker (6.x).
    PreemptiveReclaim,
    /// `__btrfs_end_transaction` (3.x).
    HandleEnd,
    /// Anything else (`btrfs_should_end_transaction`'s run in 3.x, …).
    #[default]
    Other,
}

/// `btrfs_run_delayed_refs` calls per [`Caller`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunCallsByCaller {
    /// For [`Caller::Commit`].
    pub commit: u64,
    /// For [`Caller::AsyncReclaim`].
    pub async_reclaim: u64,
    /// For [`Caller::PreemptiveReclaim`].
    pub preemptive_reclaim: u64,
    /// For [`Caller::HandleEnd`].
    pub handle_end: u64,
    /// For [`Caller::Other`].
    pub other: u64,
}

impl RunCallsByCaller {
    /// Counts one for `c`.
    pub fn add(&mut self, c: Caller) {
        *match c {
            Caller::Commit => &mut self.commit,
            Caller::AsyncReclaim => &mut self.async_reclaim,
            Caller::PreemptiveReclaim => &mut self.preemptive_reclaim,
            Caller::HandleEnd => &mut self.handle_end,
            Caller::Other => &mut self.other,
        } += 1;
    }
    /// Adds `o`'s counts.
    pub fn merge(&mut self, o: &Self) {
        self.commit += o.commit;
        self.async_reclaim += o.async_reclaim;
        self.preemptive_reclaim += o.preemptive_reclaim;
        self.handle_end += o.handle_end;
        self.other += o.other;
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
    /// Extent-tree lock acquisitions (one per update, contended or not).
    pub extent_tree_acquisitions: u64,
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
        self.extent_tree_acquisitions += o.extent_tree_acquisitions;
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
