//! The runtime seam between the kernel model and the engine that runs it: the only place
//! where model code passes time, waits, wakes or reads the clock.
//!
//! Under the real-thread engine ([`crate::engine`]) these are what they say: busy loops,
//! `Instant`, `yield_now`, and the primitives' own blocking. Under the virtual-CPU engine
//! ([`crate::vcpu`]) the current task runs on a coroutine, and each call becomes a
//! scheduling point: time passes in virtual nanoseconds, a contended lock is handed over in
//! FIFO order, a sleeper gives its CPU to another task. Which engine is running is a
//! thread-local set by the virtual engine while it resumes a task, so the model code is the
//! same for both and the real-thread hot paths pay one thread-local read.

use crate::live::WaitRole;
use crate::vcpu::{Acct, Req, Sched, TaskCtx};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    /// The running virtual task, or null on a real thread.
    static CURRENT: Cell<*const TaskCtx> = const { Cell::new(std::ptr::null()) };
}

/// Set by the virtual engine around each task's run; null elsewhere.
pub(crate) fn set_current(t: *const TaskCtx) {
    CURRENT.with(|c| c.set(t));
}

#[inline]
fn current() -> Option<&'static TaskCtx> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: the pointer is set only by the virtual engine, to a TaskCtx on the running
    // coroutine's stack, and cleared before that coroutine is left for good.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// True while a virtual CPU runs the calling code.
#[inline]
pub fn in_virtual() -> bool {
    !CURRENT.with(|c| c.get()).is_null()
}

fn with_sched<R>(t: &TaskCtx, f: impl FnOnce(&mut Sched) -> R) -> R {
    f(&mut t.sched().borrow_mut())
}

/// Nanoseconds on the engine's clock: virtual time, or host time since first use.
pub fn now_ns() -> u64 {
    match current() {
        Some(t) => with_sched(t, |s| s.now),
        None => {
            static EPOCH: OnceLock<Instant> = OnceLock::new();
            EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
        }
    }
}

/// Busy-waits `ns` of host time (the real-thread engine's modelled costs).
pub(crate) fn burn(ns: u64) {
    if ns == 0 {
        return;
    }
    let t = Instant::now();
    while (t.elapsed().as_nanos() as u64) < ns {
        std::hint::spin_loop();
    }
}

/// Useful work on a virtual CPU (no-op on a real thread, where the work itself takes time).
#[inline]
pub(crate) fn work(ns: u64) {
    if let Some(t) = current() {
        t.busy(ns, Acct::Work);
    }
}

/// `cond_resched()` in a polling loop: on a real thread `yield_now`; on a virtual CPU a
/// trip through the scheduler (a context switch's worth of time), so that polling advances
/// virtual time and lets the tasks it waits for run.
pub(crate) fn cond_resched() {
    match current() {
        Some(t) => {
            let ns = with_sched(t, |s| s.cost(crate::cost::Cost::ContextSwitch));
            t.busy(ns, Acct::Switch);
        }
        None => std::thread::yield_now(),
    }
}

/// Time outside delayed-ref code between two of a task's operations (`--speed`). Long
/// gaps sleep (off CPU), short ones are work, as the real-thread engine does.
pub(crate) fn think(ns: u64) {
    const SLEEP_FROM_NS: u64 = 50_000;
    match current() {
        Some(t) if ns >= SLEEP_FROM_NS => t.suspend(Req::SleepFor(ns)),
        Some(t) => t.busy(ns, Acct::Work),
        None if ns >= SLEEP_FROM_NS => std::thread::sleep(std::time::Duration::from_nanos(ns)),
        None => burn(ns),
    }
}

/// Between two handles: let the next runnable task on this CPU run (virtual only; a real
/// thread interleaves its tasks itself).
pub(crate) fn yield_cpu() {
    if let Some(t) = current()
        && with_sched(t, |s| s.has_runnable(t.cpu))
    {
        t.suspend(Req::Yield);
    }
}

/// Virtual only: spin (burning this CPU) until whoever holds the lock at `addr` hands it
/// over with [`handover`]. Returns the virtual ns spent spinning.
pub(crate) fn spin_until_handed(addr: usize, role: WaitRole) -> u64 {
    let t = current().expect("virtual only");
    let t0 = with_sched(t, |s| {
        s.enqueue_waiter(addr, t.task, true);
        s.now
    });
    t.suspend(Req::Spin(role));
    with_sched(t, |s| s.now - t0)
}

/// At a spinlock's unlock: if a virtual task spins on the lock at `addr`, make it the
/// owner (FIFO, as the kernel's qspinlock queue hands over) and return true — the caller
/// then leaves the lock locked. False on a real thread or without waiters: unlock normally.
#[inline]
pub(crate) fn handover(addr: usize) -> bool {
    match current() {
        Some(t) => with_sched(t, |s| s.handover(addr)),
        None => false,
    }
}

/// Virtual only: a sleeping lock (mutex, the extent-tree lock) at `addr` is taken; sleep
/// off CPU until its holder releases it, then return so the caller tries again. A waiter
/// that was woken and lost the lock to a running task goes back at the head of the queue
/// (`front`), as the kernel's mutex hands off to a starved top waiter.
pub(crate) fn sleep_for_lock(addr: usize, front: bool) {
    let t = current().expect("virtual only");
    with_sched(t, |s| s.enqueue_waiter_at(addr, t.task, front));
    t.suspend(Req::Sleep);
}

/// After releasing the sleeping lock at `addr`: wake its first waiter, which then competes
/// for the lock when it runs (no handover: a running task may take the lock first, which
/// is what keeps a released mutex from convoying behind a wake-up's latency).
#[inline]
pub(crate) fn wake_one(addr: usize) {
    if let Some(t) = current() {
        with_sched(t, |s| s.wake_one(addr));
    }
}

/// Virtual only: sleep on the wait queue at `addr` until [`wake_all`] (the caller re-checks
/// its condition, as after any `schedule()`).
pub(crate) fn sleep_on(addr: usize) {
    let t = current().expect("virtual only");
    with_sched(t, |s| s.enqueue_waiter(addr, t.task, false));
    t.suspend(Req::Sleep);
}

/// A `btrfs_run_delayed_refs` call that began at `start` (engine clock) ends now: kept for
/// `--timeline` (virtual CPUs only).
pub(crate) fn run_call_done(start: u64, ws: &crate::live::WorkerState, num_entries: u64) {
    match current() {
        Some(t) => with_sched(t, |s| {
            let now = s.now;
            if let Some(tl) = &mut s.timeline {
                tl.run_call(t.cpu, start, now);
            }
        }),
        None => ws.log_run_call(start, now_ns(), num_entries),
    }
}

/// Wakes every virtual task asleep on `addr`; returns how many (0 on a real thread).
pub(crate) fn wake_all(addr: usize) -> usize {
    match current() {
        Some(t) => with_sched(t, |s| s.wake_all(addr)),
        None => 0,
    }
}
