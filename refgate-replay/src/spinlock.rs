//! A spinlock that behaves like one on an oversubscribed machine (docs/design.md "Kernel model and policies").
//!
//! The kernel's `delayed_refs->lock` holder cannot be preempted, so spinning is bounded by
//! the critical section. Here threads outnumber cores, so a pure spinlock would spin away
//! whole time slices of a preempted holder: we spin a bounded number of times, then yield,
//! and count only the spin bursts as burnt CPU.

use crate::exec;
use crate::live::{ThreadState, WaitRole, WorkerState};
use crate::metrics::SpinStats;
use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub struct SpinLock<T> {
    locked: AtomicBool,
    spin_limit: u32,
    /// Which lock this is, for the virtual CPUs' time split.
    role: WaitRole,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `data` to one thread at a time.
unsafe impl<T: Send> Send for SpinLock<T> {}
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub fn new(data: T, spin_limit: u32, role: WaitRole) -> Self {
        Self {
            locked: AtomicBool::new(false),
            spin_limit: spin_limit.max(1),
            role,
            data: UnsafeCell::new(data),
        }
    }

    #[inline]
    pub fn lock<'a>(&'a self, st: &mut SpinStats, state: &WorkerState) -> SpinGuard<'a, T> {
        st.acquisitions += 1;
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended(st, state);
        }
        SpinGuard { lock: self }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    #[cold]
    fn lock_contended(&self, st: &mut SpinStats, state: &WorkerState) {
        st.contended += 1;
        let prev = state.set(ThreadState::Spinning);
        if exec::in_virtual() {
            // A virtual CPU spins (burning its time) until the holder hands the lock over,
            // first come first served as the kernel's qspinlock queue does; no yielding.
            let spun = exec::spin_until_handed(self.addr(), self.role);
            st.spin_ns += spun;
            if prev == ThreadState::RunningRefs {
                st.runner_spin_ns += spun;
            }
            st.wait.record(spun);
            state.set(prev);
            return;
        }
        let start = Instant::now();
        let mut spin_ns = 0u64;
        loop {
            let burst = Instant::now();
            for _ in 0..self.spin_limit {
                // Test-and-test-and-set: spin on a shared read, as the kernel's qspinlock does.
                if !self.locked.load(Ordering::Relaxed)
                    && self
                        .locked
                        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    spin_ns += burst.elapsed().as_nanos() as u64;
                    st.spin_ns += spin_ns;
                    if prev == ThreadState::RunningRefs {
                        st.runner_spin_ns += spin_ns;
                    }
                    st.wait.record(start.elapsed().as_nanos() as u64);
                    state.set(prev);
                    return;
                }
                spin_loop();
            }
            spin_ns += burst.elapsed().as_nanos() as u64;
            // The holder is probably preempted (more threads than cores): let it run.
            st.yields += 1;
            std::thread::yield_now();
        }
    }

    /// The data, through exclusive access (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Racy peek for assertions in single-threaded tests.
    #[cfg(any(test, feature = "internals"))]
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock.
        unsafe { &*self.lock.data.get() }
    }
}
impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: we hold the lock.
        unsafe { &mut *self.lock.data.get() }
    }
}
impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // Under virtual CPUs a waiting task becomes the owner: the lock stays locked.
        if exec::handover(self.lock.addr()) {
            return;
        }
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn mutual_exclusion_and_contention_counted() {
        let l = Arc::new(SpinLock::new(0u64, 16, WaitRole::DelayedRefsLock));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut st = SpinStats::default();
                    let ws = WorkerState::default();
                    for _ in 0..20_000 {
                        let mut g = l.lock(&mut st, &ws);
                        let v = *g;
                        spin_loop();
                        *g = v + 1;
                    }
                    st
                })
            })
            .collect();
        let mut total = SpinStats::default();
        for h in hs {
            total.merge(&h.join().unwrap());
        }
        let ws = WorkerState::default();
        assert_eq!(*l.lock(&mut total, &ws), 80_000);
        assert_eq!(total.acquisitions, 80_001);
        assert!(total.contended <= total.acquisitions);
        assert_eq!(total.wait.count, total.contended);
    }
}
