//! A replay's report: one engine's run ([`crate::engine`]) merged into the figures a user
//! reads, with the §7.4 invariant checked on the final extent tree (`invariant`) —
//! the entry points [`replay`], [`run`] and [`run_live`].

use crate::btree::OWN_BLOCKS_BASE;
pub use crate::btree::ShapeReport;
use crate::engine::vcpu::{self, Timeline};
use crate::engine::{self, Config, Engine, Outcome, VirtualFigures, model_error};
use crate::error::{InvariantViolation, ReplayError};
pub use crate::extent_tree::BtreeReport;
use crate::invariant::{InvariantSummary, check_extent_tree};
use crate::live::Live;
use crate::metrics::{
    Caller, GateStats, RunCallsByCaller, SpinSummary, ThreadMetrics, TxnCounts, WaitSummary,
};
use crate::params::{ExtentTreeModel, Params};
use crate::policy::Policy;
use crate::root::FsModel;
use crate::workload::Workload;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;

/// Replays `workload` with `threads` real threads under `policy`. Errors if the model hits a
/// kernel BUG or the §7.4 invariant fails.
///
/// ```
/// use refgate_replay::workload::{SynthParams, synthetic};
/// use refgate_replay::{Params, by_name, run};
///
/// let w = synthetic(&SynthParams { tasks: 4, transactions: 2, ..SynthParams::default() });
/// let r = run(&w, by_name("pre").unwrap().as_ref(), 4, &Params::default())?;
/// // Real threads: the counts are the model's, the times are this host's.
/// assert_eq!(r.adds, w.total_adds());
/// assert!(r.virtual_figures.is_none());
/// # Ok::<(), refgate_replay::ReplayError>(())
/// ```
pub fn run(
    workload: &Workload,
    policy: &dyn Policy,
    threads: usize,
    params: &Params,
) -> Result<Report, ReplayError> {
    run_live(
        workload,
        policy,
        threads,
        params,
        Arc::new(Live::new(threads.max(1))),
    )
}

/// [`run`] publishing progress into `live` (which must have `threads` worker slots) so a
/// dashboard can poll [`Live::snapshot`] meanwhile.
///
/// ```
/// use refgate_replay::workload::{SynthParams, synthetic};
/// use refgate_replay::{Params, by_name, live::Live, run_live};
/// use std::sync::Arc;
///
/// let w = synthetic(&SynthParams::default());
/// let live = Arc::new(Live::new(2));
/// let r = std::thread::scope(|s| {
///     let h = s.spawn(|| run_live(&w, by_name("modern").unwrap().as_ref(), 2, &Params::default(), live.clone()));
///     let _progress = live.snapshot().ops_done; // what a dashboard polls meanwhile
///     h.join().unwrap()
/// })?;
/// assert_eq!(live.snapshot().ops_done, w.total_ops());
/// assert!(!r.partial);
/// # Ok::<(), refgate_replay::ReplayError>(())
/// ```
pub fn run_live(
    workload: &Workload,
    policy: &dyn Policy,
    threads: usize,
    params: &Params,
    live: Arc<Live>,
) -> Result<Report, ReplayError> {
    let (model, replaced) = model_workload(workload, params);
    let out = engine::threads::run_live(&model, policy, threads, params, live)?;
    finish(&model, policy, out, replaced)
}

/// The workload the model replays: under `--extent-tree btree`, without the recorded refs
/// of the extent tree's own blocks, which the B-tree queues itself
/// ([`Workload::without_extent_root_refs`]); and how many add calls that left out.
fn model_workload<'a>(w: &'a Workload, params: &Params) -> (Cow<'a, Workload>, u64) {
    if params.extent_tree != ExtentTreeModel::Btree {
        return (Cow::Borrowed(w), 0);
    }
    match w.without_extent_root_refs() {
        Some((own, n)) => (Cow::Owned(own), n * w.copies() as u64),
        None => (Cow::Borrowed(w), 0),
    }
}

/// Figures that depend on the host that ran the replay (everything else in a virtual
/// replay's [`Report`] is the same on any host).
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostFigures {
    /// The run's wall-clock time (s), pauses left out.
    pub wall_seconds: f64,
    /// (adds + refs run) per wall second.
    pub ops_per_second: f64,
    /// Ref nodes run per wall second.
    pub refs_per_second: f64,
    /// `std::thread::available_parallelism()` of the machine that ran the replay.
    pub cores: usize,
    /// Time held by [`Live::pause`], left out of `wall_seconds`.
    pub paused_seconds: f64,
}

/// One extent item of the final extent tree, as `--dump-state` writes it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpExtent {
    /// The extent's start (bytes).
    pub bytenr: u64,
    /// The extent's length (bytes).
    pub num_bytes: u64,
    /// The item's `refs`.
    pub refs: u64,
    /// The item's `BTRFS_EXTENT_FLAG_*` flags.
    pub flags: u64,
    /// The tree block's key, if any.
    pub key: Option<u64>,
    /// Per backref: its kind (`tree`/`shared_block`/`data`/`shared_data`), fields, count.
    pub backrefs: Vec<DumpBackref>,
}

/// One backref of a [`DumpExtent`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DumpBackref {
    /// `tree`, `shared_block`, `data` or `shared_data`.
    pub kind: &'static str,
    /// TREE/EXTENT_DATA: root; SHARED_*: parent.
    pub a: u64,
    /// EXTENT_DATA: the inode number (`objectid`); else 0.
    pub objectid: u64,
    /// EXTENT_DATA: `offset` (file offset − extent offset, §1.2); else 0.
    pub offset: u64,
    /// The backref's count.
    pub count: u64,
}

/// The model's end state (`--dump-state`): extent items in bytenr order and what was pinned.
#[derive(Clone, Debug, Serialize)]
pub struct FinalState {
    /// The extent items, in bytenr order.
    pub extents: Vec<DumpExtent>,
    /// The B-tree's own blocks (`--extent-tree btree`), whose items are left out of
    /// `extents`: they are the model's, at `OWN_BLOCKS_BASE` and above.
    pub own_blocks: u64,
    /// Extents allocated and freed inside one transaction (pinned, never inserted, §2.7).
    pub pinned_extents: u64,
    /// Their bytes.
    pub pinned_bytes: u64,
}

fn final_state(fs: &FsModel) -> FinalState {
    use refgate_common::event::{
        EXTENT_DATA_REF_KEY, SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY, TREE_BLOCK_REF_KEY,
    };
    let mut extents: Vec<DumpExtent> = fs
        .extent_tree
        .snapshot()
        .into_iter()
        .map(|(bytenr, it)| DumpExtent {
            bytenr,
            num_bytes: it.num_bytes,
            refs: it.refs,
            flags: it.flags,
            key: it.key,
            backrefs: it
                .backrefs
                .iter()
                .map(|(k, &count)| DumpBackref {
                    kind: match k.ref_type {
                        TREE_BLOCK_REF_KEY => "tree",
                        SHARED_BLOCK_REF_KEY => "shared_block",
                        EXTENT_DATA_REF_KEY => "data",
                        SHARED_DATA_REF_KEY => "shared_data",
                        _ => "other",
                    },
                    a: k.a,
                    objectid: k.b,
                    offset: k.c,
                    count,
                })
                .collect(),
        })
        .collect();
    extents.sort_by_key(|e| e.bytenr);
    let own = extents.partition_point(|e| e.bytenr < OWN_BLOCKS_BASE);
    let own_blocks = (extents.len() - own) as u64;
    extents.truncate(own);
    let (pinned_extents, pinned_bytes) = fs.extent_tree.pinned();
    FinalState {
        extents,
        own_blocks,
        pinned_extents,
        pinned_bytes,
    }
}

/// Everything measured in one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The policy's name.
    pub policy: String,
    /// The kernels the policy stands for, and whether it has the seed's gate.
    pub kernels: &'static str,
    /// Whether the policy has the seed's gate (§2.3).
    pub gated: bool,
    /// The engine that ran the replay.
    pub engine: Engine,
    /// CPUs (virtual) or threads (real).
    pub threads: usize,
    /// Tasks replayed, over every copy.
    pub tasks: usize,
    /// Transactions, each ending with a commit.
    pub transactions: usize,
    /// Add-API calls queued.
    pub adds: u64,
    /// Ref nodes run against the extent tree.
    pub refs_run: u64,
    /// Heads deleted by a runner (`run_delayed_ref_head`).
    pub heads_run: u64,
    /// Extent ops run on their own (`run_delayed_extent_op`, §2.4 step 6, §4.4).
    pub extent_ops_run: u64,
    /// `delayed_refs->lock`: acquisitions, contended, CPU seconds burnt spinning, waits.
    pub dr_lock: SpinSummary,
    /// The per-head spinlock (modern `head->lock`; in the v3.x model only taken under
    /// `dr_lock`).
    pub head_lock: SpinSummary,
    /// Blocking waits for a head's mutex (§2.4, §2.9).
    pub head_mutex_waits: WaitSummary,
    /// Contended acquisitions of the extent-tree lock: their waits (§2.7, §7.2).
    pub extent_tree_waits: WaitSummary,
    /// Extent-tree lock acquisitions (one per update, contended or not).
    pub extent_tree_acquisitions: u64,
    /// `--extent-tree btree`: the tree's size, where it came from, its shape at start and
    /// end and what walks did to it; `None` under `--extent-tree single`.
    pub extent_btree: Option<BtreeReport>,
    /// `--extent-tree btree`: delayed refs the extent tree queued on its own blocks (COWs
    /// and splits: `docs/extent-tree.md` "Self-feeding"), run like the others and counted in
    /// `refs_run`, not in `adds`.
    pub self_fed_refs: u64,
    /// `--extent-tree btree`: the recorded add calls of the extent tree's own blocks (root
    /// 2's tree refs) left out of the replay, the model queueing its own instead.
    pub recorded_self_fed_refs: u64,
    /// `--extent-tree btree`: `extent_tree_waits` by where the block was (root, node, leaf).
    pub extent_tree_waits_by_level: Option<[WaitSummary; 3]>,
    /// The seed gate's decisions (§2.3; zeros under ungated policies).
    pub gate: GateStats,
    /// Latency of each `btrfs_run_delayed_refs` call.
    pub run_calls: WaitSummary,
    /// Who made those calls.
    pub run_calls_by_caller: RunCallsByCaller,
    /// The kernel workers the policy started ([`crate::policy::WorkerKind::name`]), each a
    /// task of its own.
    pub workers: Vec<&'static str>,
    /// Ref nodes run, by caller.
    pub refs_run_by_caller: RunCallsByCaller,
    /// Heads and refs run per transaction (`--validate`).
    #[serde(skip)]
    pub per_txn: Vec<TxnCounts>,
    /// Modern: add calls that waited on a space-reservation ticket (§4.7).
    pub space_waits: u64,
    /// Per thread (real) or per CPU (virtual).
    pub per_thread_refs_run: Vec<u64>,
    /// Nodes dropped by insert-time cancellation (§1.4).
    pub insert_cancels: u64,
    /// Nodes dropped by run-time merging (§2.6, §4.4).
    pub run_merges: u64,
    /// Heads given back because their selected ref was held back by seq (§1.6, §2.4 step 4).
    pub seq_holdbacks: u64,
    /// Nodes walked under `delayed_refs->lock` to find work: `btrfs_find_ref_cluster` (§2.2)
    /// or the modern head scan of `btrfs_select_ref_head` (§4.4).
    pub nodes_walked: u64,
    /// `-EAGAIN` from the head lock dance: the head left the tree while a runner slept on its
    /// mutex (§2.4, §4.4).
    pub head_eagain: u64,
    /// The §7.4 check on the final extent tree (all zeros when `partial`).
    pub invariant: InvariantSummary,
    /// Cut short by [`Live::cancel`]: counts cover the part replayed, and no §7.4 verdict is
    /// given (`invariant` is all zeros).
    pub partial: bool,
    /// Virtual engine only.
    pub virtual_figures: Option<VirtualFigures>,
    /// The final extent tree, when `Params::keep_final_state` asked for it.
    pub final_state: Option<FinalState>,
    /// `Config::timeline`: what every CPU or thread did (not in the JSON report).
    #[serde(skip)]
    pub timeline: Option<Timeline>,
    /// Figures that depend on the host.
    pub host: HostFigures,
}

/// Runs `workload` under `policy` with the engine and CPU count of `cfg`, publishing
/// progress into `live` (which must have `cfg.cpus` slots).
///
/// ```
/// use refgate_replay::workload::{SynthParams, synthetic};
/// use refgate_replay::{Config, Engine, Params, by_name, live::Live, replay};
/// use std::sync::Arc;
///
/// let w = synthetic(&SynthParams { tasks: 4, transactions: 2, ..SynthParams::default() });
/// let cfg = |cpus| Config {
///     engine: Engine::Virtual,
///     cpus,
///     params: Params::default(),
///     sim_seed: 7,
///     pace: false,
///     timeline: false,
/// };
/// let pre = by_name("pre").unwrap();
/// let once = replay(&w, pre.as_ref(), &cfg(16), Arc::new(Live::new(16)))?;
/// let again = replay(&w, pre.as_ref(), &cfg(16), Arc::new(Live::new(16)))?;
/// // Virtual CPUs: the same answer twice, on any host.
/// let v = |r: &refgate_replay::Report| r.virtual_figures.as_ref().unwrap().virtual_seconds;
/// assert_eq!(v(&once), v(&again));
/// assert_eq!(once.dr_lock.contended, again.dr_lock.contended);
/// # Ok::<(), refgate_replay::ReplayError>(())
/// ```
pub fn replay(
    workload: &Workload,
    policy: &dyn Policy,
    cfg: &Config,
    live: Arc<Live>,
) -> Result<Report, ReplayError> {
    match cfg.engine {
        Engine::Threads => {
            if cfg.timeline {
                let cap = engine::TIMELINE_CAP / live.workers.len().max(1);
                live.workers.iter().for_each(|ws| ws.start_log(cap));
            }
            let mut r = run_live(workload, policy, cfg.cpus, &cfg.params, live.clone())?;
            if cfg.timeline {
                r.timeline = Some(engine::threads_timeline(&live));
            }
            Ok(r)
        }
        Engine::Virtual => {
            let (model, replaced) = model_workload(workload, &cfg.params);
            let out = vcpu::run(&model, policy, cfg, live)?;
            finish(&model, policy, out, replaced)
        }
    }
}

/// Merges the engine's counts, checks §7.4 on the final extent tree and builds the report.
fn finish(
    workload: &Workload,
    policy: &dyn Policy,
    out: Outcome,
    recorded_self_fed_refs: u64,
) -> Result<Report, ReplayError> {
    let (engine, cpus, fs) = (out.engine, out.cpus, &out.fs);
    // Cut short only if a cancel stopped a transaction from committing (a cancel after the
    // last commit changes nothing).
    let partial = out.commits_done < workload.transactions as u64;
    let mut total = ThreadMetrics::default();
    // The policy's own callers are in the report even when they ran nothing.
    for c in policy_callers(policy) {
        total.run_calls_by_caller.add_n(c, 0);
        total.refs_run_by_caller.add_n(c, 0);
    }
    for m in &out.per_worker {
        total.merge(m);
    }
    if !out.errors.is_empty() {
        return Err(model_error(policy, cpus, out.errors));
    }
    let invariant = verdict(workload, policy, cpus, fs, partial)?;
    let host = host_figures(&out, &total);
    let extent_btree = fs.extent_tree.btree_report();
    Ok(Report {
        policy: policy.name().into(),
        kernels: policy.kernels(),
        gated: policy.gated(),
        engine,
        threads: cpus,
        tasks: workload.task_count(),
        transactions: workload.transactions,
        adds: total.adds,
        refs_run: total.refs_run,
        heads_run: total.heads_run,
        extent_ops_run: total.extent_ops_run,
        dr_lock: total.dr_lock.summary(),
        head_lock: total.head_lock.summary(),
        head_mutex_waits: total.head_mutex.summary(),
        extent_tree_waits: total.extent_tree.summary(),
        extent_tree_acquisitions: total.extent_tree_acquisitions,
        extent_tree_waits_by_level: extent_btree.as_ref().map(|_| {
            total
                .extent_tree_levels
                .by_class
                .each_ref()
                .map(|w| w.summary())
        }),
        extent_btree,
        self_fed_refs: total.self_fed_refs,
        recorded_self_fed_refs,
        gate: total.gate,
        run_calls: total.run_calls.summary(),
        run_calls_by_caller: total.run_calls_by_caller,
        workers: policy.workers().iter().map(|k| k.name).collect(),
        refs_run_by_caller: total.refs_run_by_caller,
        per_txn: total.per_txn,
        space_waits: total.space_waits,
        per_thread_refs_run: out.per_cpu_refs,
        insert_cancels: total.insert_cancels,
        run_merges: total.run_merges,
        seq_holdbacks: total.seq_holdbacks,
        nodes_walked: total.nodes_walked,
        head_eagain: total.head_eagain,
        invariant,
        partial,
        virtual_figures: out.virtual_figures,
        final_state: fs.params.keep_final_state.then(|| final_state(fs)),
        timeline: out.timeline,
        host,
    })
}

/// The callers a policy names: [`Policy::callers`] and its workers'.
fn policy_callers(policy: &dyn Policy) -> impl Iterator<Item = Caller> + '_ {
    let workers = policy.workers().iter().map(|k| k.caller);
    policy.callers().iter().copied().chain(workers)
}

/// The §7.4 check on the final extent tree; no verdict for a run cut short.
fn verdict(
    workload: &Workload,
    policy: &dyn Policy,
    cpus: usize,
    fs: &FsModel,
    partial: bool,
) -> Result<InvariantSummary, InvariantViolation> {
    Ok(if partial {
        // The check compares the end state with the whole trace's net effect: meaningless
        // for a prefix, so a cancelled run gives no verdict rather than a false violation.
        InvariantSummary::default()
    } else {
        // The pinned totals reported are the per-extent pins the check accepted.
        let violation = |errors| InvariantViolation {
            policy: policy.name().into(),
            threads: cpus,
            errors,
        };
        let mut sum = check_extent_tree(workload, &fs.extent_tree).map_err(violation)?;
        sum.own_blocks_checked = fs.extent_tree.check_own_blocks().map_err(violation)?;
        sum
    })
}

/// The figures that depend on the host: wall time (pauses left out) and rates over it.
fn host_figures(out: &Outcome, total: &ThreadMetrics) -> HostFigures {
    let wall = out.wall_seconds.max(1e-9);
    let ops = (total.adds + total.refs_run) as f64;
    HostFigures {
        wall_seconds: wall,
        ops_per_second: ops / wall,
        refs_per_second: total.refs_run as f64 / wall,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        paused_seconds: out.paused_seconds,
    }
}

#[cfg(test)]
mod live_control_tests {
    //! The dashboard's hooks: `Live::cancel` gives a partial report without a false
    //! violation; `Live::pause` holds the workers; the live counters match the report.
    use super::*;
    use crate::live::ThreadState;
    use crate::live::WaitRole;
    use crate::policy::by_name;
    use crate::workload::{SynthParams, synthetic};
    use std::time::Instant;

    fn workload() -> Workload {
        synthetic(&SynthParams {
            transactions: 20,
            ..SynthParams::default()
        })
    }

    #[test]
    fn cancel_before_start_gives_a_partial_report() {
        let w = workload();
        let live = Arc::new(Live::new(4));
        live.cancel();
        let r = run_live(
            &w,
            by_name("seed").unwrap().as_ref(),
            4,
            &Params::default(),
            live.clone(),
        )
        .unwrap();
        assert!(r.partial);
        assert_eq!(
            r.invariant,
            InvariantSummary::default(),
            "no verdict on a prefix"
        );
        assert!(live.snapshot().ops_done < w.total_ops());
    }

    #[test]
    fn cancel_while_paused_stops_the_run() {
        let w = workload();
        let live = Arc::new(Live::new(4));
        live.pause(true);
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| {
                run_live(
                    &w,
                    by_name("modern").unwrap().as_ref(),
                    4,
                    &Params::default(),
                    live.clone(),
                )
            });
            // Every worker reaches its first operation boundary and holds there.
            let t0 = Instant::now();
            while !live
                .snapshot()
                .threads
                .iter()
                .all(|t| t.state == ThreadState::Paused)
            {
                assert!(
                    t0.elapsed().as_secs() < 20,
                    "workers did not pause: {:?}",
                    live.snapshot().threads
                );
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert_eq!(live.snapshot().ops_done, 0);
            live.cancel();
            h.join().unwrap()
        })
        .unwrap();
        assert!(r.partial);
        assert!(r.host.paused_seconds > 0.0);
        assert_eq!(r.refs_run, 0);
    }

    #[test]
    fn uncancelled_run_is_complete_and_live_counters_match_the_report() {
        let w = workload();
        let live = Arc::new(Live::new(4));
        let r = run_live(
            &w,
            by_name("pre").unwrap().as_ref(),
            4,
            &Params::default(),
            live.clone(),
        )
        .unwrap();
        assert!(!r.partial);
        assert!(r.invariant.extents_checked > 0);
        let s = live.snapshot();
        assert_eq!(s.run_calls.iter().sum::<u64>(), r.run_calls.count);
        let waits: u64 = s
            .threads
            .iter()
            .map(|t| t.waits[WaitRole::DelayedRefsLock as usize])
            .sum();
        assert_eq!(waits, r.dr_lock.wait.count);
        assert_eq!(
            s.waits[WaitRole::ExtentTree as usize].iter().sum::<u64>(),
            r.extent_tree_waits.count
        );
    }
}
