//! The runtime seam between the kernel model and the engine that runs it: the only place
//! where model code passes time, waits, wakes or reads the clock.
//!
//! Under the real-thread engine ([`crate::engine`]) these are what they say: busy loops,
//! `Instant`, `yield_now`, and the primitives' own blocking. Under the virtual-CPU engine
//! ([`crate::engine::vcpu`]) the current task runs on a coroutine, and each call becomes a
//! scheduling point: time passes in virtual nanoseconds, a contended lock is handed over in
//! FIFO order, a sleeper gives its CPU to another task. The virtual engine installs its
//! [`Runtime`] as a thread-local while it resumes a task ([`set_current`]); this module
//! knows no engine, so the model code is the same for both and the real-thread hot paths
//! pay one thread-local read.

use crate::live::{WaitRole, WorkerState};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::Instant;

/// What a virtual runtime does at each of the model's scheduling points (the functions of
/// this module, which say what each means). Implemented by the virtual engine's running task;
/// on a real thread none is installed and the functions act on the host.
pub(crate) trait Runtime {
    /// The engine's clock, in virtual ns.
    fn now_ns(&self) -> u64;
    /// `ns` of useful work on this CPU.
    fn work(&self, ns: u64);
    /// One trip through the scheduler (`cond_resched`).
    fn cond_resched(&self);
    /// Time outside delayed-ref code (`--speed` think-times).
    fn think(&self, ns: u64);
    /// Let the next runnable task on this CPU run, if there is one.
    fn yield_cpu(&self);
    /// Spin until the lock at `addr` is handed over; the ns spent spinning.
    fn spin_until_handed(&self, addr: usize, role: WaitRole) -> u64;
    /// Let every spinner on the lock at `addr` stop spinning without the lock.
    fn release_spinners(&self, addr: usize);
    /// Hand the spinlock at `addr` to its first spinner, if any.
    fn handover(&self, addr: usize) -> bool;
    /// Sleep until the sleeping lock at `addr` is released (`front`: at the queue's head).
    fn sleep_for_lock(&self, addr: usize, front: bool);
    /// Wake the first sleeper on the lock at `addr`.
    fn wake_one(&self, addr: usize);
    /// Sleep on the wait queue at `addr`.
    fn sleep_on(&self, addr: usize);
    /// Wake every sleeper on `addr`; how many.
    fn wake_all(&self, addr: usize) -> usize;
    /// A `btrfs_run_delayed_refs` call that began at `start` ends now.
    fn run_call_done(&self, start: u64);
}

thread_local! {
    /// The running virtual task's runtime, or none on a real thread.
    static CURRENT: Cell<Option<NonNull<dyn Runtime>>> = const { Cell::new(None) };
}

/// Set by the virtual engine around each task's run (`None` when it leaves the task).
///
/// # Safety
/// `rt` must stay valid until the next `set_current` on this thread: the virtual engine
/// passes the running coroutine's context, on that coroutine's stack, and clears it before
/// the coroutine is left for good.
pub(crate) unsafe fn set_current(rt: Option<&dyn Runtime>) {
    // The lifetime is the caller's promise above, not the borrow's.
    let p = rt.map(NonNull::from);
    // SAFETY: only the trait object's lifetime bound changes (same layout).
    let p: Option<NonNull<dyn Runtime + 'static>> = unsafe { std::mem::transmute(p) };
    CURRENT.with(|c| c.set(p));
}

#[inline]
fn current() -> Option<&'static dyn Runtime> {
    // SAFETY: see `set_current`.
    CURRENT.with(|c| c.get()).map(|p| unsafe { p.as_ref() })
}

/// True while a virtual CPU runs the calling code.
#[inline]
pub fn in_virtual() -> bool {
    CURRENT.with(|c| c.get()).is_some()
}

/// Nanoseconds on the engine's clock: virtual time, or host time since first use.
pub fn now_ns() -> u64 {
    match current() {
        Some(t) => t.now_ns(),
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
        t.work(ns);
    }
}

/// `cond_resched()` in a polling loop: on a real thread `yield_now`; on a virtual CPU a
/// trip through the scheduler (a context switch's worth of time), so that polling advances
/// virtual time and lets the tasks it waits for run.
pub fn cond_resched() {
    match current() {
        Some(t) => t.cond_resched(),
        None => std::thread::yield_now(),
    }
}

/// Think-times from this long sleep (off CPU); shorter ones are work, on either engine.
pub(crate) const SLEEP_FROM_NS: u64 = 50_000;

/// Time outside delayed-ref code between two of a task's operations (`--speed`). Long
/// gaps sleep (off CPU), short ones are work, as the real-thread engine does.
pub(crate) fn think(ns: u64) {
    match current() {
        Some(t) => t.think(ns),
        None if ns >= SLEEP_FROM_NS => std::thread::sleep(std::time::Duration::from_nanos(ns)),
        None => burn(ns),
    }
}

/// Between two handles: let the next runnable task on this CPU run (virtual only; a real
/// thread interleaves its tasks itself).
pub(crate) fn yield_cpu() {
    if let Some(t) = current() {
        t.yield_cpu();
    }
}

/// Virtual only: spin (burning this CPU) until whoever holds the lock at `addr` hands it
/// over with [`handover`]. Returns the virtual ns spent spinning.
pub(crate) fn spin_until_handed(addr: usize, role: WaitRole) -> u64 {
    current()
        .expect("virtual only")
        .spin_until_handed(addr, role)
}

/// Every task spinning on the lock at `addr` ([`spin_until_handed`]) returns without being
/// handed it, to look at the lock again: a 3.x tree lock's holder switching it to blocking,
/// which sends its spinners to sleep. No-op on a real thread.
pub(crate) fn release_spinners(addr: usize) {
    if let Some(t) = current() {
        t.release_spinners(addr);
    }
}

/// At a spinlock's unlock: if a virtual task spins on the lock at `addr`, make it the
/// owner (FIFO, as the kernel's qspinlock queue hands over) and return true — the caller
/// then leaves the lock locked. False on a real thread or without waiters: unlock normally.
#[inline]
pub(crate) fn handover(addr: usize) -> bool {
    match current() {
        Some(t) => t.handover(addr),
        None => false,
    }
}

/// Virtual only: a sleeping lock (mutex, the extent-tree lock) at `addr` is taken; sleep
/// off CPU until its holder releases it, then return so the caller tries again. A waiter
/// that was woken and lost the lock to a running task goes back at the head of the queue
/// (`front`), as the kernel's mutex hands off to a starved top waiter.
pub(crate) fn sleep_for_lock(addr: usize, front: bool) {
    current().expect("virtual only").sleep_for_lock(addr, front);
}

/// After releasing the sleeping lock at `addr`: wake its first waiter, which then competes
/// for the lock when it runs (no handover: a running task may take the lock first, which
/// is what keeps a released mutex from convoying behind a wake-up's latency).
#[inline]
pub(crate) fn wake_one(addr: usize) {
    if let Some(t) = current() {
        t.wake_one(addr);
    }
}

/// Virtual only: sleep on the wait queue at `addr` until [`wake_all`] (the caller re-checks
/// its condition, as after any `schedule()`).
pub(crate) fn sleep_on(addr: usize) {
    current().expect("virtual only").sleep_on(addr);
}

/// A `btrfs_run_delayed_refs` call that began at `start` (engine clock) ends now: kept for
/// `--timeline` (virtual CPUs only).
pub(crate) fn run_call_done(start: u64, ws: &WorkerState, num_entries: u64) {
    match current() {
        Some(t) => t.run_call_done(start),
        None => ws.log_run_call(start, now_ns(), num_entries),
    }
}

/// Wakes every virtual task asleep on `addr`; returns how many (0 on a real thread).
pub(crate) fn wake_all(addr: usize) -> usize {
    match current() {
        Some(t) => t.wake_all(addr),
        None => 0,
    }
}
