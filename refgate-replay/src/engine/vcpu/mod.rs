//! The virtual-CPU engine: N CPUs in deterministic virtual time on one host thread, running
//! the same model code as the real-thread engine.
//!
//! Each recorded task is a stackful coroutine (corosensei) pinned to CPU `i mod N`. The
//! model reaches the scheduler only through the `exec` seam: a cost charged is virtual time
//! passing on the task's CPU, a contended spinlock is spun on (CPU burnt) until the holder
//! hands it over in FIFO order, a head mutex, the extent-tree lock, the seed gate's wait
//! queue and the commit barrier put the task to sleep so that its CPU can switch to
//! another task or go idle. Nothing depends on the host's speed or core count: the same
//! trace, arguments and `--sim-seed` give the same report on any machine.

#[cfg(test)]
mod btree_timeline;
#[cfg(test)]
pub(crate) mod harness;
mod runtime;
mod sched;

pub(crate) use sched::{Acct, Req, Sched};
pub use sched::{CpuTime, Timeline};

use crate::engine::{
    Config, Engine, Outcome, Published, VirtualFigures, commit_pre, committers, exclusive_commit,
    panic_message, preflight, publish, run_handle,
};
use crate::error::{FailedIn, RunFailure};
use crate::exec;
use crate::live::{Live, ThreadState};
use crate::metrics::ThreadMetrics;
use crate::policy::{Policy, WorkerKind};
use crate::root::{FsModel, Worker};
use crate::workload::Workload;
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use sched::{Event, TaskId};
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

/// Each task's coroutine stack (reserved, touched lazily; the model's call depth is small).
const STACK_BYTES: usize = 256 * 1024;
/// Scheduler events between two publications of the clock for a dashboard.
const PUBLISH_EVERY: u32 = 4096;

/// The running task as [`crate::exec`] sees it: its yielder, the scheduler, who it is.
pub(crate) struct TaskCtx {
    yielder: *const Yielder<(), Req>,
    sched: *const RefCell<Sched>,
    pub(crate) task: TaskId,
    pub(crate) cpu: u32,
}

impl TaskCtx {
    /// Runs `f` as task `task` on `cpu` of the scheduler at `sched`, inside the coroutine
    /// of `yielder`, with the task's context installed for `exec` meanwhile.
    pub(crate) fn run<R>(
        yielder: &Yielder<(), Req>,
        sched: *const RefCell<Sched>,
        task: TaskId,
        cpu: u32,
        f: impl FnOnce() -> R,
    ) -> R {
        let ctx = TaskCtx {
            yielder,
            sched,
            task,
            cpu,
        };
        // SAFETY: `ctx` lives until `f` returns, and is uninstalled before then.
        unsafe { exec::set_current(Some(&ctx)) };
        let r = f();
        // SAFETY: uninstalling before `ctx` goes.
        unsafe { exec::set_current(None) };
        r
    }

    pub(crate) fn sched(&self) -> &RefCell<Sched> {
        // SAFETY: the scheduler outlives every coroutine (see `Tasks` and `build_tasks`).
        unsafe { &*self.sched }
    }

    /// Hands control to the scheduler until it resumes this task.
    pub(crate) fn suspend(&self, req: Req) {
        // SAFETY: the yielder belongs to the coroutine running this code.
        unsafe { &*self.yielder }.suspend(req);
        // SAFETY: `self` lives on this coroutine's stack, which outlives its run.
        unsafe { exec::set_current(Some(self)) };
    }

    /// `ns` of this CPU's time spent as `a`.
    pub(crate) fn busy(&self, ns: u64, a: Acct) {
        if ns == 0 {
            return;
        }
        let inline = self.sched().borrow_mut().busy_inline(self.cpu, ns, a);
        if !inline {
            self.suspend(Req::Busy(ns, a));
        }
    }
}

/// The transaction barrier among virtual tasks (the kernel's wait for `num_writers == 1`).
struct VBarrier {
    n: usize,
    arrived: Cell<usize>,
    generation: Cell<u64>,
}

impl VBarrier {
    fn addr(&self) -> usize {
        self as *const Self as usize
    }
    /// False once the run is cancelled.
    fn wait(&self, live: &Live) -> bool {
        if live.is_cancelled() {
            return false;
        }
        let g = self.generation.get();
        self.arrived.set(self.arrived.get() + 1);
        if self.arrived.get() == self.n {
            self.arrived.set(0);
            self.generation.set(g + 1);
            exec::wake_all(self.addr());
            return true;
        }
        while self.generation.get() == g {
            exec::sleep_on(self.addr());
            if live.is_cancelled() {
                return false;
            }
        }
        true
    }
}

/// What the tasks share.
struct Env<'a> {
    fs: &'a FsModel,
    policy: &'a dyn Policy,
    workload: &'a Workload,
    barrier: &'a VBarrier,
    committer: &'a [usize],
    /// Each CPU's counts: tasks hand theirs over between operations (`flush`), so that
    /// thousands of tasks do not each hold a set of histograms.
    cpu_metrics: &'a RefCell<Vec<ThreadMetrics>>,
    /// Workload tasks still running; the last one out stops the kernel's workers.
    running: &'a Cell<usize>,
}

struct TaskEnd {
    err: Option<RunFailure>,
}

/// Moves a task's counts into its CPU's and starts it afresh (no borrow of them is live
/// between operations; the live view's deltas restart with them).
fn flush(env: &Env, cpu: u32, w: &mut Worker, p: &mut Published) {
    env.cpu_metrics.borrow_mut()[cpu as usize].merge(&std::mem::take(&mut w.m));
    *p = Published::default();
}

/// One task's whole life: its handles of each transaction (giving its CPU to the next task
/// between handles), its commit, the barriers.
fn task_body(env: &Env, i: usize, cpu: u32) -> TaskEnd {
    let fs = env.fs;
    let mut w = Worker::new(cpu as usize, fs.live.clone());
    let mut p = Published::default();
    let view = env.workload.task(i);
    let task = view.task;
    let model = |at, error| RunFailure::Model { at, error };
    let mut run = || -> Result<(), RunFailure> {
        for t in 0..env.workload.transactions {
            let tt = &task.transactions[t];
            for h in &tt.handles {
                if fs.live.is_cancelled() {
                    break;
                }
                run_handle(fs, env.policy, &mut w, &mut p, &view, h)
                    .map_err(|e| model(FailedIn::Transaction(t), e))?;
                exec::yield_cpu();
            }
            if tt.commit && !fs.live.is_cancelled() {
                commit_pre(fs, env.policy, &mut w, &mut p)
                    .map_err(|e| model(FailedIn::Transaction(t), e))?;
            }
            flush(env, cpu, &mut w, &mut p);
            w.set_state(ThreadState::AtBarrier);
            if !env.barrier.wait(&fs.live) {
                break;
            }
            if env.committer[t] == i {
                w.set_state(ThreadState::Committing);
                exclusive_commit(fs, env.policy, &mut w)
                    .map_err(|e| model(FailedIn::Commit(t), e))?;
                publish(&fs.live, &w, &mut p);
                flush(env, cpu, &mut w, &mut p);
                w.set_state(ThreadState::AtBarrier);
            }
            if !env.barrier.wait(&fs.live) {
                break;
            }
        }
        Ok(())
    };
    let err = run().err();
    flush(env, cpu, &mut w, &mut p);
    w.set_state(ThreadState::Done);
    env.running.set(env.running.get() - 1);
    if env.running.get() == 0 {
        fs.space.shutdown();
    }
    TaskEnd { err }
}

/// A kernel worker's task (§4.7): it runs until the workload's tasks are done.
fn worker_body(env: &Env, kind: WorkerKind, cpu: u32) -> TaskEnd {
    let mut w = Worker::new(cpu as usize, env.fs.live.clone());
    w.caller = kind.caller;
    let err = env
        .policy
        .run_worker(env.fs, &mut w, kind)
        .err()
        .map(|error| RunFailure::Model {
            at: FailedIn::Worker(kind.name()),
            error,
        });
    env.cpu_metrics.borrow_mut()[cpu as usize].merge(&w.m);
    TaskEnd { err }
}

type Task = Coroutine<(), Req, TaskEnd>;

/// The dashboard's pause: every CPU shows as paused while the scheduler holds.
fn hold_while_paused(live: &Live) {
    if !live.is_paused() || live.is_cancelled() {
        return;
    }
    let prev: Vec<ThreadState> = live
        .workers
        .iter()
        .map(|w| w.set(ThreadState::Paused))
        .collect();
    while live.is_paused() && !live.is_cancelled() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for (w, s) in live.workers.iter().zip(prev) {
        w.set(s);
    }
}

/// Sleeps until the wall clock (pauses left out) catches up with the next event's virtual
/// time. Only the host waits: the virtual figures do not change.
fn pace(sched: &Sched, live: &Live, t0: Instant, paused_before: f64) {
    let Some(next) = sched.next_event_at() else {
        return;
    };
    let wall = t0.elapsed().as_secs_f64() - (live.paused_seconds() - paused_before);
    let ahead = next as f64 / 1e9 - wall;
    if ahead > 0.002 {
        std::thread::sleep(std::time::Duration::from_secs_f64(ahead.min(0.05)));
    }
}

/// The tasks' coroutines, indexed by [`TaskId`]. They borrow the [`Env`] and the scheduler
/// for `'a`; the `Drop` impl makes the borrow checker keep both alive until the coroutines
/// are dropped (an unfinished one is unwound then, and its unwinding still uses them).
struct Tasks<'a> {
    coroutines: Vec<Task>,
    _borrows: std::marker::PhantomData<&'a ()>,
}

impl Drop for Tasks<'_> {
    fn drop(&mut self) {
        self.coroutines.clear();
    }
}

/// One coroutine per entry of `task_cpus`: the workload's tasks, then the kernel's
/// `workers`, each on its CPU.
fn build_tasks<'a>(
    env: &'a Env<'a>,
    sched: &'a RefCell<Sched>,
    task_cpus: &[u32],
    workers: &'static [WorkerKind],
) -> Result<Tasks<'a>, RunFailure> {
    let sched_ptr = sched as *const RefCell<Sched>;
    let mut coroutines: Vec<Task> = Vec::with_capacity(task_cpus.len());
    for (i, &cpu) in task_cpus.iter().enumerate() {
        let stack = DefaultStack::new(STACK_BYTES).map_err(|e| RunFailure::Stack(e.to_string()))?;
        let body = move |y: &Yielder<(), Req>, ()| {
            TaskCtx::run(y, sched_ptr, i as TaskId, cpu, || {
                match i.checked_sub(env.workload.task_count()) {
                    None => task_body(env, i, cpu),
                    Some(k) => worker_body(env, workers[k], cpu),
                }
            })
        };
        // SAFETY: the body borrows `env` (and through it `fs`, `barrier`, `committer`) and
        // `sched` for `'a`; the coroutine goes into the returned `Tasks<'a>`, whose `Drop`
        // impl keeps them borrowed until every coroutine is dropped.
        coroutines.push(unsafe { Coroutine::with_stack_unchecked(stack, body) });
    }
    Ok(Tasks {
        coroutines,
        _borrows: std::marker::PhantomData,
    })
}

/// The host clock and the dashboard's counters when the replay started.
struct RunStart {
    commits_before: u64,
    paused_before: f64,
    t0: Instant,
}

impl RunStart {
    fn now(live: &Live) -> Self {
        RunStart {
            commits_before: live.transaction.load(std::sync::atomic::Ordering::Relaxed),
            paused_before: live.paused_seconds(),
            t0: Instant::now(),
        }
    }
}

/// The scheduler loop's next step.
enum Next {
    /// Resume the task current on this CPU.
    Resume(u32),
    /// A timer fired or cancelled tasks were released: look again.
    Again,
    /// Nothing can run any more.
    Done,
}

/// Pops the scheduler's next event: a timer wakes its task; with no event left, a cancelled
/// run releases the tasks parked at the barrier so that they end.
fn next_step(sched: &RefCell<Sched>, live: &Live, barrier: &VBarrier) -> Next {
    cut_if_due(&mut sched.borrow_mut(), live);
    let ev = sched.borrow_mut().pop();
    match ev {
        Some(Event::Timer(t)) => {
            sched.borrow_mut().wake(t);
            Next::Again
        }
        Some(Event::Cpu(cpu)) => Next::Resume(cpu),
        None if live.is_cancelled() && sched.borrow_mut().wake_all(barrier.addr()) > 0 => {
            Next::Again
        }
        None => Next::Done,
    }
}

/// A cut of the run ([`Live::cut_at`]: `--until T`, or `q` through [`Live::stop_here`]) stops
/// the clock before the first event after the cut's instant — or after now, if the scheduler
/// is past it already: the events of that instant all run first, so a cut at T is the same
/// whoever asked for it, and `--until` at a `q`'s reported instant gives its report. A plain
/// cancel stops the clock where it is.
fn cut_if_due(s: &mut Sched, live: &Live) {
    if s.frozen {
        return;
    }
    let cut = live.cut_at_ns();
    s.cut_at = cut.unwrap_or(u64::MAX);
    if let Some(at) = cut {
        let at = at.max(s.now);
        if s.next_event_at().is_some_and(|next| next > at) {
            live.cancel();
            s.freeze(at);
        }
    } else if live.is_cancelled() {
        let now = s.now;
        s.freeze(now);
    }
}

/// The queue depth at the current virtual time, for the `--timeline`'s counter.
fn record_queue_depth(sched: &RefCell<Sched>, live: &Live) {
    let mut s = sched.borrow_mut();
    let now = s.now;
    if let Some(tl) = &mut s.timeline {
        tl.queue_depth(
            now,
            live.queue
                .num_entries
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}

/// Resumes the task current on `cpu` until it suspends or ends; `Ok(false)` when the run
/// must stop because the task failed, `Err` when it panicked.
fn resume_on(
    cpu: u32,
    sched: &RefCell<Sched>,
    tasks: &mut Tasks,
    live: &Live,
    ends: &mut [Option<TaskEnd>],
) -> Result<bool, RunFailure> {
    let t = sched.borrow().current(cpu).expect("a CPU event has a task");
    sched.borrow_mut().set_acct(cpu, Acct::Work);
    let r = catch_unwind(AssertUnwindSafe(|| tasks.coroutines[t as usize].resume(())));
    // SAFETY: uninstalling (the coroutine is suspended or done).
    unsafe { exec::set_current(None) };
    match r {
        Ok(CoroutineResult::Yield(req)) => {
            let mut s = sched.borrow_mut();
            if let Some(tl) = &mut s.timeline {
                // What the task goes to sleep on, for the CPU's next interval.
                tl.sleep_reason[cpu as usize] = live.workers[cpu as usize].state().name().label;
            }
            s.suspended(cpu, t, req);
            Ok(true)
        }
        Ok(CoroutineResult::Return(end)) => {
            sched.borrow_mut().finished(cpu);
            let failed = end.err.is_some();
            ends[t as usize] = Some(end);
            Ok(!failed)
        }
        Err(p) => Err(RunFailure::TaskPanicked {
            task: t as usize,
            message: panic_message(&*p),
        }),
    }
}

/// The scheduler loop: runs events in virtual-time order until none is left or a task
/// fails (a panic's message is returned), publishing the clock for a dashboard (and
/// holding while it pauses) every `PUBLISH_EVERY` events, or every event when pacing to
/// the wall clock.
fn schedule(
    sched: &RefCell<Sched>,
    tasks: &mut Tasks,
    barrier: &VBarrier,
    live: &Live,
    cfg: &Config,
    start: &RunStart,
    ends: &mut [Option<TaskEnd>],
) -> Option<RunFailure> {
    let mut since_publish = 0u32;
    loop {
        since_publish += 1;
        if since_publish >= PUBLISH_EVERY || cfg.pace {
            since_publish = 0;
            sched.borrow().publish(live);
            hold_while_paused(live);
        }
        if cfg.pace {
            pace(&sched.borrow(), live, start.t0, start.paused_before);
        }
        record_queue_depth(sched, live);
        let cpu = match next_step(sched, live, barrier) {
            Next::Resume(cpu) => cpu,
            Next::Again => continue,
            Next::Done => return None,
        };
        match resume_on(cpu, sched, tasks, live, ends) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(panicked) => return Some(panicked),
        }
    }
}

/// The tasks' own errors, and a deadlock if some never finished (and nothing else explains
/// it).
fn end_errors(ends: &[Option<TaskEnd>], sched: &Sched, live: &Live, errors: &mut Vec<RunFailure>) {
    for e in ends.iter().flatten() {
        errors.extend(e.err.clone());
    }
    let unfinished = ends.iter().filter(|e| e.is_none()).count();
    if errors.is_empty() && unfinished > 0 && !live.is_cancelled() {
        let stuck = sched.stuck();
        errors.push(RunFailure::Deadlock {
            tasks: unfinished,
            waiting: format!("{stuck:?}"),
        });
    }
}

/// The end-of-run accounting: the makespan, each CPU's time split and refs run, the
/// timeline, and the final clock published.
fn outcome(
    fs: FsModel,
    mut sched: Sched,
    per_worker: Vec<ThreadMetrics>,
    errors: Vec<RunFailure>,
    live: &Live,
    cfg: &Config,
    start: &RunStart,
) -> Outcome {
    let makespan = sched.now;
    let mut cpu_time = sched.close();
    let timeline = sched.timeline.take();
    for (t, m) in cpu_time.iter_mut().zip(&per_worker) {
        t.refs_run = m.refs_run;
    }
    sched.publish(live);
    let refs: u64 = cpu_time.iter().map(|c| c.refs_run).sum();
    let paused_seconds = live.paused_seconds() - start.paused_before;
    let virtual_seconds = makespan as f64 / 1e9;
    Outcome {
        per_cpu_refs: cpu_time.iter().map(|c| c.refs_run).collect(),
        per_worker,
        errors,
        wall_seconds: start.t0.elapsed().as_secs_f64() - paused_seconds,
        paused_seconds,
        commits_done: live.transaction.load(std::sync::atomic::Ordering::Relaxed)
            - start.commits_before,
        virtual_figures: Some(VirtualFigures {
            virtual_seconds,
            refs_per_virtual_second: if makespan > 0 {
                refs as f64 / virtual_seconds
            } else {
                0.0
            },
            cpus: cpu_time,
            cost_model: cfg.params.costs.clone(),
            sim_seed: cfg.sim_seed,
        }),
        timeline,
        engine: Engine::Virtual,
        cpus: cfg.cpus.max(1),
        fs,
    }
}

/// The scheduler, with a `--timeline` if asked for.
fn new_sched(cpus: usize, task_cpus: &[u32], cfg: &Config) -> Sched {
    let mut s = Sched::new(cpus, task_cpus, &cfg.params.costs, cfg.sim_seed);
    if cfg.timeline {
        s.timeline = Some(Timeline::new(cpus, crate::engine::TIMELINE_CAP));
    }
    s
}

/// Replays `workload` under `policy` on `cfg.cpus` virtual CPUs.
pub(crate) fn run(
    workload: &Workload,
    policy: &dyn Policy,
    cfg: &Config,
    live: Arc<Live>,
) -> Result<Outcome, crate::error::ReplayError> {
    let cpus = cfg.cpus.max(1);
    preflight(workload, policy, cpus, &live)?;
    let mut params = cfg.params.clone();
    params
        .extent_key_end
        .get_or_insert_with(|| workload.key_end());
    let fs = FsModel::new(
        policy.era(),
        params,
        workload.initial_extents(),
        live.clone(),
    );
    // The workload's tasks, then the kernel's workers, each pinned to CPU i mod N.
    let workers = policy.workers();
    let task_cpus: Vec<u32> = (0..workload.task_count() + workers.len())
        .map(|i| (i % cpus) as u32)
        .collect();
    let sched = RefCell::new(new_sched(cpus, &task_cpus, cfg));
    let barrier = VBarrier {
        n: workload.task_count(),
        arrived: Cell::new(0),
        generation: Cell::new(0),
    };
    let committer = committers(workload);
    let cpu_metrics = RefCell::new(vec![ThreadMetrics::default(); cpus]);
    let running = Cell::new(workload.task_count());
    if workload.task_count() == 0 {
        fs.space.shutdown();
    }
    let env = Env {
        fs: &fs,
        policy,
        workload,
        barrier: &barrier,
        committer: &committer,
        cpu_metrics: &cpu_metrics,
        running: &running,
    };
    let start = RunStart::now(&live);
    let mut ends: Vec<Option<TaskEnd>> = (0..task_cpus.len()).map(|_| None).collect();
    let mut tasks = build_tasks(&env, &sched, &task_cpus, workers)
        .map_err(|e| crate::engine::model_error(policy, cpus, vec![e]))?;
    let panicked = schedule(&sched, &mut tasks, &barrier, &live, cfg, &start, &mut ends);
    // Tasks that did not finish (an error stopped the run, or a deadlock) are unwound
    // here, with no task current.
    drop(tasks);
    let sched = sched.into_inner();
    let mut errors: Vec<RunFailure> = panicked.into_iter().collect();
    end_errors(&ends, &sched, &live, &mut errors);
    Ok(outcome(
        fs,
        sched,
        cpu_metrics.into_inner(),
        errors,
        &live,
        cfg,
        &start,
    ))
}
