//! The replay engine: N real threads drive a [`Workload`] through a [`Policy`] over the
//! kernel model, then the §7.4 invariant is checked.
//!
//! Task → thread mapping: task index `i` runs on thread `i % threads`. A thread with
//! several tasks interleaves them round-robin, one whole handle at a time (a thread has at
//! most one open handle). With more threads than tasks the extra threads only take part in
//! the commits' barriers; use [`Workload::replicate`] to give every thread a writer's worth
//! of work on disjoint extents.
//!
//! Transactions: each transaction ends with a commit. Every committing task runs the
//! policy's concurrent commit phase (while other threads may still be adding); then all
//! threads meet at a barrier (the kernel's wait for `num_writers == 1`), the committer of
//! the first committing task runs the exclusive phase (run everything), the queue must be
//! empty, and a fresh transaction starts for everyone.

use crate::error::ModelError;
use crate::invariant::{InvariantSummary, InvariantViolation, check_extent_tree};
use crate::live::{Live, ThreadState, WaitRole};
use crate::metrics::{GateStats, SpinSummary, ThreadMetrics, WaitSummary};
use crate::params::Params;
use crate::policy::Policy;
use crate::root::{FsModel, TransHandle, Worker};
use crate::workload::{Handle, Op, Task, Workload};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything measured in one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub policy: String,
    pub threads: usize,
    /// `std::thread::available_parallelism()` of the machine that ran the replay.
    pub cores: usize,
    pub tasks: usize,
    pub transactions: usize,
    pub wall_seconds: f64,
    /// Add-API calls queued.
    pub adds: u64,
    /// Ref nodes run against the extent tree.
    pub refs_run: u64,
    pub heads_run: u64,
    pub extent_ops_run: u64,
    /// (adds + refs run) per wall second.
    pub ops_per_sec: f64,
    pub refs_per_sec: f64,
    /// `delayed_refs->lock`: acquisitions, contended, CPU seconds burnt spinning, waits.
    pub dr_lock: SpinSummary,
    pub head_lock: SpinSummary,
    pub head_mutex_waits: WaitSummary,
    pub extent_tree_waits: WaitSummary,
    pub extent_tree_acquisitions: u64,
    pub gate: GateStats,
    /// Latency of each `btrfs_run_delayed_refs` call.
    pub run_calls: WaitSummary,
    pub per_thread_refs_run: Vec<u64>,
    pub insert_cancels: u64,
    pub run_merges: u64,
    pub seq_holdbacks: u64,
    pub nodes_walked: u64,
    pub head_eagain: u64,
    pub invariant: InvariantSummary,
    /// Cut short by [`Live::cancel`]: counts cover the part replayed, and no §7.4 verdict is
    /// given (`invariant` is all zeros).
    pub partial: bool,
    /// Time held by [`Live::pause`], left out of `wall_seconds`.
    pub paused_seconds: f64,
}

/// A barrier that an error or a panic can open for everyone.
struct Barrier {
    n: usize,
    st: Mutex<(usize, u64)>,
    cv: Condvar,
    aborted: AtomicBool,
}

impl Barrier {
    fn new(n: usize) -> Self {
        Self {
            n,
            st: Mutex::new((0, 0)),
            cv: Condvar::new(),
            aborted: AtomicBool::new(false),
        }
    }
    /// False if the run was aborted.
    fn wait(&self) -> bool {
        let mut g = self.st.lock();
        if self.aborted.load(Ordering::SeqCst) {
            return false;
        }
        let gen_ = g.1;
        g.0 += 1;
        if g.0 == self.n {
            g.0 = 0;
            g.1 += 1;
            self.cv.notify_all();
            return true;
        }
        while g.1 == gen_ && !self.aborted.load(Ordering::SeqCst) {
            self.cv.wait(&mut g);
        }
        !self.aborted.load(Ordering::SeqCst)
    }
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        let _g = self.st.lock();
        self.cv.notify_all();
    }
}

struct Ctx<'a> {
    fs: FsModel,
    policy: &'a dyn Policy,
    workload: &'a Workload,
    threads: usize,
    barrier: Barrier,
    errors: Mutex<Vec<String>>,
    /// Thread that runs the exclusive commit of each transaction.
    committer: Vec<usize>,
}

impl Ctx<'_> {
    fn fail(&self, e: impl std::fmt::Display) {
        self.errors.lock().push(e.to_string());
        self.barrier.abort();
    }
}

struct AbortOnPanic<'a>(&'a Barrier);
impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// What a worker last published into its [`Live`] slot, so that it publishes only changes.
#[derive(Default)]
struct Published {
    run_calls: (u64, u64),
    waits: [(u64, u64); 4],
    spin_ns: u64,
}

/// Publishes the worker's wait and run-call counters for the dashboard, between operations
/// (the kernel model itself is not touched). The live histograms get each operation's new
/// samples; when one operation had several of a kind (rare: a run call per add at most, and
/// a contended wait is a few per run call), each is counted at their mean.
fn publish(live: &Live, w: &Worker, p: &mut Published) {
    let m = &w.m;
    let hist = |h: &crate::live::Log2Hist, last: &mut (u64, u64), now: (u64, u64)| {
        if now.0 > last.0 {
            let n = now.0 - last.0;
            h.record_n(now.1.saturating_sub(last.1) / n, n);
            *last = now;
            true
        } else {
            false
        }
    };
    hist(
        &live.run_calls,
        &mut p.run_calls,
        (m.run_calls.count, m.run_calls.total_ns),
    );
    let waits = [
        (m.dr_lock.wait.count, m.dr_lock.wait.total_ns),
        (m.head_lock.wait.count, m.head_lock.wait.total_ns),
        (m.head_mutex.count, m.head_mutex.total_ns),
        (m.extent_tree.count, m.extent_tree.total_ns),
    ];
    for (role, now) in WaitRole::ALL.into_iter().zip(waits) {
        if hist(&live.waits[role as usize], &mut p.waits[role as usize], now) {
            w.ws().publish_waits(role, now.0, now.1);
        }
    }
    let spin = m.dr_lock.spin_ns + m.head_lock.spin_ns;
    if spin != p.spin_ns {
        p.spin_ns = spin;
        w.ws().publish_spin_ns(spin);
    }
}

/// Between operations: holds while paused; false once the run is cancelled.
#[inline]
fn may_continue(live: &Live, w: &Worker) -> bool {
    if live.is_paused() {
        let prev = w.set_state(ThreadState::Paused);
        while live.is_paused() && !live.is_cancelled() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        w.set_state(prev);
    }
    !live.is_cancelled()
}

fn think(ns: u64) {
    if ns >= 50_000 {
        std::thread::sleep(std::time::Duration::from_nanos(ns));
    } else {
        crate::extent_tree::burn(ns);
    }
}

fn run_handle(
    ctx: &Ctx,
    w: &mut Worker,
    p: &mut Published,
    handle: &Handle,
) -> Result<(), ModelError> {
    let fs = &ctx.fs;
    let mut h = TransHandle::default();
    for op in &handle.ops {
        if !may_continue(&fs.live, w) {
            break;
        }
        w.set_state(ThreadState::Adding);
        match op {
            Op::AddRef { r, extent_op } => fs.add_ref(w, &mut h, r, *extent_op)?,
            Op::AddExtentOp {
                bytenr,
                num_bytes,
                is_data,
                op,
            } => fs.add_extent_op(w, &mut h, *bytenr, *num_bytes, *is_data, *op)?,
            Op::LookupExtentInfo { bytenr } => {
                fs.lookup_extent_info(w, *bytenr);
            }
            Op::ShouldEnd => {
                if ctx.policy.should_end_transaction(fs, w, &mut h)? {
                    ctx.policy.end_transaction(fs, w, &mut h)?;
                    h = TransHandle::default();
                }
            }
            Op::Think { ns } => {
                w.set_state(ThreadState::Idle);
                think(*ns);
            }
        }
        w.ws().add_ops_done(1);
        publish(&fs.live, w, p);
    }
    ctx.policy.end_transaction(fs, w, &mut h)?;
    publish(&fs.live, w, p);
    w.set_state(ThreadState::Idle);
    Ok(())
}

fn run_share(
    ctx: &Ctx,
    w: &mut Worker,
    p: &mut Published,
    mine: &[&Task],
    t: usize,
) -> Result<(), ModelError> {
    let mut next = vec![0usize; mine.len()];
    loop {
        let mut any = false;
        for (i, task) in mine.iter().enumerate() {
            let tt = &task.transactions[t];
            if next[i] < tt.handles.len() && !ctx.fs.live.is_cancelled() {
                run_handle(ctx, w, p, &tt.handles[next[i]])?;
                next[i] += 1;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    for task in mine {
        if task.transactions[t].commit && !ctx.fs.live.is_cancelled() {
            w.set_state(ThreadState::Committing);
            let mut h = TransHandle::default();
            ctx.policy.commit_pre(&ctx.fs, w, &mut h)?;
            publish(&ctx.fs.live, w, p);
        }
    }
    Ok(())
}

fn exclusive_commit(ctx: &Ctx, w: &mut Worker) -> Result<(), ModelError> {
    let fs = &ctx.fs;
    if fs.params.check_counters {
        fs.check_counters(w).map_err(ModelError::Bug)?;
    }
    let mut h = TransHandle::default();
    ctx.policy.commit_exclusive(fs, w, &mut h)?;
    let (c, heads) = fs.counters(w);
    let entries = fs.num_entries_racy();
    if heads != 0 || entries != 0 || c.num_heads_ready != 0 {
        return Err(ModelError::Bug(format!(
            "queue not empty after run-all: {heads} heads, num_entries {entries}, num_heads_ready {}",
            c.num_heads_ready
        )));
    }
    if fs.params.check_counters {
        fs.check_counters(w).map_err(ModelError::Bug)?;
    }
    fs.start_transaction(w)?;
    fs.live.transaction.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn worker(ctx: &Ctx, id: usize) -> ThreadMetrics {
    let _guard = AbortOnPanic(&ctx.barrier);
    let mut w = Worker::new(id, ctx.fs.live.clone());
    let mine: Vec<&Task> = ctx
        .workload
        .tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % ctx.threads == id)
        .map(|(_, t)| t)
        .collect();
    let mut p = Published::default();
    for t in 0..ctx.workload.transactions {
        if let Err(e) = run_share(ctx, &mut w, &mut p, &mine, t) {
            ctx.fail(format!("transaction {t}: {e}"));
        }
        if ctx.fs.live.is_cancelled() {
            // Cancelled (not an error): open the barrier so every worker stops here too.
            ctx.barrier.abort();
            break;
        }
        w.set_state(ThreadState::AtBarrier);
        if !ctx.barrier.wait() {
            break;
        }
        if ctx.committer[t] == id {
            w.set_state(ThreadState::Committing);
            if let Err(e) = exclusive_commit(ctx, &mut w) {
                ctx.fail(format!("commit of transaction {t}: {e}"));
            }
            publish(&ctx.fs.live, &w, &mut p);
            w.set_state(ThreadState::AtBarrier);
        }
        if !ctx.barrier.wait() {
            break;
        }
    }
    w.set_state(ThreadState::Done);
    w.m
}

/// Replay `workload` with `threads` threads under `policy`. Errors if the model hits a
/// kernel BUG or the §7.4 invariant fails.
pub fn run(
    workload: &Workload,
    policy: &dyn Policy,
    threads: usize,
    params: &Params,
) -> Result<Report, InvariantViolation> {
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
pub fn run_live(
    workload: &Workload,
    policy: &dyn Policy,
    threads: usize,
    params: &Params,
    live: Arc<Live>,
) -> Result<Report, InvariantViolation> {
    let threads = threads.max(1);
    let violation = |errors: Vec<String>| InvariantViolation {
        policy: policy.name().into(),
        threads,
        errors,
    };
    if live.workers.len() != threads {
        return Err(violation(vec![format!(
            "live view has {} slots for {threads} threads",
            live.workers.len()
        )]));
    }
    workload
        .validate()
        .map_err(|e| violation(vec![format!("invalid workload: {e}")]))?;
    live.ops_total
        .store(workload.total_ops(), Ordering::Relaxed);
    live.transactions_total
        .store(workload.transactions as u64, Ordering::Relaxed);
    let committer = (0..workload.transactions)
        .map(|t| {
            workload
                .tasks
                .iter()
                .position(|task| task.transactions[t].commit)
                .unwrap_or(0)
                % threads
        })
        .collect();
    let ctx = Ctx {
        fs: FsModel::new(
            policy.era(),
            params.clone(),
            workload.initial.iter().cloned(),
            live.clone(),
        ),
        policy,
        workload,
        threads,
        barrier: Barrier::new(threads),
        errors: Mutex::new(Vec::new()),
        committer,
    };
    let commits_before = live.transaction.load(Ordering::Relaxed);
    let paused_before = live.paused_seconds();
    let t0 = Instant::now();
    let per_thread: Vec<Result<ThreadMetrics, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                let ctx = &ctx;
                s.spawn(move || worker(ctx, i))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join().map_err(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                    format!("worker panicked: {}", msg.unwrap_or_default())
                })
            })
            .collect()
    });
    let paused_seconds = live.paused_seconds() - paused_before;
    let wall = (t0.elapsed().as_secs_f64() - paused_seconds).max(1e-9);
    // Cut short only if a cancel stopped a transaction from committing (a cancel after the
    // last commit changes nothing).
    let partial =
        live.transaction.load(Ordering::Relaxed) - commits_before < workload.transactions as u64;
    let mut errors = ctx.errors.lock().clone();
    let mut total = ThreadMetrics::default();
    let mut per_thread_refs_run = Vec::new();
    for r in &per_thread {
        match r {
            Ok(m) => {
                total.merge(m);
                per_thread_refs_run.push(m.refs_run);
            }
            Err(e) => errors.push(e.clone()),
        }
    }
    if !errors.is_empty() {
        return Err(violation(errors));
    }
    let invariant = if partial {
        // The check compares the end state with the whole trace's net effect: meaningless
        // for a prefix, so a cancelled run gives no verdict rather than a false violation.
        InvariantSummary::default()
    } else {
        let invariant =
            check_extent_tree(workload, &ctx.fs.extent_tree.snapshot()).map_err(&violation)?;
        InvariantSummary {
            pinned: ctx.fs.extent_tree.pinned().0,
            ..invariant
        }
    };
    let ops = (total.adds + total.refs_run) as f64;
    Ok(Report {
        policy: policy.name().into(),
        threads,
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        tasks: workload.tasks.len(),
        transactions: workload.transactions,
        wall_seconds: wall,
        adds: total.adds,
        refs_run: total.refs_run,
        heads_run: total.heads_run,
        extent_ops_run: total.extent_ops_run,
        ops_per_sec: ops / wall,
        refs_per_sec: total.refs_run as f64 / wall,
        dr_lock: total.dr_lock.summary(),
        head_lock: total.head_lock.summary(),
        head_mutex_waits: total.head_mutex.summary(),
        extent_tree_waits: total.extent_tree.summary(),
        extent_tree_acquisitions: total.extent_tree_acquisitions,
        gate: total.gate,
        run_calls: total.run_calls.summary(),
        per_thread_refs_run,
        insert_cancels: total.insert_cancels,
        run_merges: total.run_merges,
        seq_holdbacks: total.seq_holdbacks,
        nodes_walked: total.nodes_walked,
        head_eagain: total.head_eagain,
        invariant,
        partial,
        paused_seconds,
    })
}

#[cfg(test)]
mod live_control_tests {
    //! The dashboard's hooks: `Live::cancel` gives a partial report without a false
    //! violation; `Live::pause` holds the workers; the live counters match the report.
    use super::*;
    use crate::policy::by_name;
    use crate::workload::{SynthParams, synthetic};

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
        assert!(r.paused_seconds > 0.0);
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
