//! The real-thread engine: N OS threads drive the workload (what the race tests and loom
//! exercise).
//!
//! Task → thread mapping: task index `i` runs on thread `i % threads`. A thread with
//! several tasks interleaves them round-robin, one whole handle at a time (a thread has at
//! most one open handle). With more threads than tasks the extra threads only take part in
//! the commits' barriers; use [`Workload::replicate`] to give every thread a writer's worth
//! of work on disjoint extents.

use super::{
    Engine, Outcome, Published, commit_pre, committers, exclusive_commit, panic_message, preflight,
    publish, run_handle,
};
use crate::error::{FailedIn, ModelError, ReplayError, RunFailure};
use crate::live::{Live, ThreadState};
use crate::metrics::ThreadMetrics;
use crate::params::Params;
use crate::policy::{Policy, WorkerKind};
use crate::root::{FsModel, Worker};
use crate::workload::{TaskView, Workload};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    errors: Mutex<Vec<RunFailure>>,
    /// Thread that runs the exclusive commit of each transaction.
    committer: Vec<usize>,
}

impl Ctx<'_> {
    fn fail(&self, at: FailedIn, error: ModelError) {
        self.errors.lock().push(RunFailure::Model { at, error });
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

/// One thread's tasks through transaction `t`, round-robin one turn each: a turn is a
/// task's next handle, or its commit once its handles are done (the order one virtual CPU
/// gives the same tasks, see [`crate::engine::vcpu`]).
fn run_share(
    ctx: &Ctx,
    w: &mut Worker,
    p: &mut Published,
    mine: &[TaskView],
    t: usize,
) -> Result<(), ModelError> {
    let mut next = vec![0usize; mine.len()];
    let mut committed = vec![false; mine.len()];
    loop {
        let mut any = false;
        for (i, task) in mine.iter().enumerate() {
            let tt = &task.task.transactions[t];
            if ctx.fs.live.is_cancelled() {
                return Ok(());
            }
            if next[i] < tt.handles.len() {
                run_handle(&ctx.fs, ctx.policy, w, p, task, &tt.handles[next[i]])?;
                next[i] += 1;
                any = true;
            } else if tt.commit && !committed[i] {
                committed[i] = true;
                commit_pre(&ctx.fs, ctx.policy, w, p)?;
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
    }
}

fn worker(ctx: &Ctx, id: usize) -> ThreadMetrics {
    let _guard = AbortOnPanic(&ctx.barrier);
    let mut w = Worker::new(id, ctx.fs.live.clone());
    let mine: Vec<TaskView> = (0..ctx.workload.task_count())
        .filter(|i| i % ctx.threads == id)
        .map(|i| ctx.workload.task(i))
        .collect();
    let mut p = Published::default();
    for t in 0..ctx.workload.transactions {
        if let Err(e) = run_share(ctx, &mut w, &mut p, &mine, t) {
            ctx.fail(FailedIn::Transaction(t), e);
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
            if let Err(e) = exclusive_commit(&ctx.fs, ctx.policy, &mut w) {
                ctx.fail(FailedIn::Commit(t), e);
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

/// A kernel worker thread (§4.7), until the workload's threads are done.
fn kernel_worker(ctx: &Ctx, kind: WorkerKind, slot: usize) -> ThreadMetrics {
    let _guard = AbortOnPanic(&ctx.barrier);
    let mut w = Worker::new(slot, ctx.fs.live.clone());
    w.caller = kind.caller;
    if let Err(e) = ctx.policy.run_worker(&ctx.fs, &mut w, kind) {
        ctx.fail(FailedIn::Worker(kind.name()), e);
        // The workload's threads may wait on tickets this worker would have served.
        ctx.fs.space.shutdown();
    }
    w.m
}

/// Replays `workload` with `threads` real threads under `policy`, publishing progress into
/// `live` (which must have `threads` worker slots); the report is built on top
/// (`crate::report`).
pub(crate) fn run_live(
    workload: &Workload,
    policy: &dyn Policy,
    threads: usize,
    params: &Params,
    live: Arc<Live>,
) -> Result<Outcome, ReplayError> {
    let threads = threads.max(1);
    preflight(workload, policy, threads, &live)?;
    let ctx = Ctx::new(workload, policy, threads, params, &live);
    let commits_before = live.transaction.load(Ordering::Relaxed);
    let paused_before = live.paused_seconds();
    let t0 = Instant::now();
    let per_thread = run_threads(&ctx);
    let paused_seconds = live.paused_seconds() - paused_before;
    let mut errors = ctx.errors.lock().clone();
    let mut per_worker = Vec::new();
    for r in per_thread {
        match r {
            Ok(m) => per_worker.push(m),
            Err(e) => errors.push(e),
        }
    }
    let out = Outcome {
        per_cpu_refs: per_slot_refs(&per_worker, threads),
        per_worker,
        errors,
        wall_seconds: t0.elapsed().as_secs_f64() - paused_seconds,
        paused_seconds,
        commits_done: live.transaction.load(Ordering::Relaxed) - commits_before,
        virtual_figures: None,
        timeline: None,
        engine: Engine::Threads,
        cpus: threads,
        fs: ctx.fs,
    };
    Ok(out)
}

impl<'a> Ctx<'a> {
    /// A fresh model of `workload` for `threads` threads; each transaction's exclusive
    /// commit runs on the thread of its committing task.
    fn new(
        workload: &'a Workload,
        policy: &'a dyn Policy,
        threads: usize,
        params: &Params,
        live: &Arc<Live>,
    ) -> Self {
        let committer = committers(workload)
            .into_iter()
            .map(|task| task % threads)
            .collect();
        Ctx {
            fs: FsModel::new(
                policy.era(),
                Params {
                    extent_key_end: params.extent_key_end.or_else(|| Some(workload.key_end())),
                    ..params.clone()
                },
                workload.initial_extents(),
                live.clone(),
            ),
            policy,
            workload,
            threads,
            barrier: Barrier::new(threads),
            errors: Mutex::new(Vec::new()),
            committer,
        }
    }
}

/// A thread's counts, or what it panicked with.
fn joined(
    h: Result<std::thread::ScopedJoinHandle<'_, ThreadMetrics>, RunFailure>,
) -> Result<ThreadMetrics, RunFailure> {
    h?.join().map_err(|p| RunFailure::ThreadPanicked {
        message: panic_message(&*p),
    })
}

/// Starts one of the replay's threads. If the system refuses (its thread or memory limits),
/// the others are stopped, as a failed thread stops them, and the failure says so.
fn spawn<'s, 'e: 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    ctx: &'e Ctx,
    f: impl FnOnce() -> ThreadMetrics + Send + 's,
) -> Result<std::thread::ScopedJoinHandle<'s, ThreadMetrics>, RunFailure> {
    std::thread::Builder::new().spawn_scoped(s, f).map_err(|e| {
        ctx.barrier.abort();
        ctx.fs.space.shutdown();
        RunFailure::Spawn(e.to_string())
    })
}

/// Runs the workload's threads and the kernel's workers to the end: the threads' results
/// first, then the workers'. The workers are stopped (space shut down) once the threads
/// are done.
fn run_threads(ctx: &Ctx) -> Vec<Result<ThreadMetrics, RunFailure>> {
    std::thread::scope(|s| {
        // The kernel's own workers (§4.7), one thread each, sharing the threads' live slots.
        let kernel: Vec<_> = ctx
            .policy
            .workers()
            .iter()
            .enumerate()
            .map(|(k, &kind)| spawn(s, ctx, move || kernel_worker(ctx, kind, k % ctx.threads)))
            .collect();
        let hs: Vec<_> = (0..ctx.threads)
            .map(|i| spawn(s, ctx, move || worker(ctx, i)))
            .collect();
        let mut out: Vec<_> = hs.into_iter().map(joined).collect();
        ctx.fs.space.shutdown();
        out.extend(kernel.into_iter().map(joined));
        out
    })
}

/// Refs run per live slot: threads first, then the kernel's workers, each counted in the
/// slot it shared.
fn per_slot_refs(per_worker: &[ThreadMetrics], threads: usize) -> Vec<u64> {
    let mut per_cpu_refs = vec![0; threads];
    for (i, m) in per_worker.iter().enumerate() {
        let slot = if i < threads {
            i
        } else {
            (i - threads) % threads
        };
        per_cpu_refs[slot] += m.refs_run;
    }
    per_cpu_refs
}
