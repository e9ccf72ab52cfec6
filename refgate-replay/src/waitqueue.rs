//! A kernel-style wait queue for the model's sleeps (the seed gate's `delayed_refs->wait`,
//! space-reservation tickets, reclaim workers): prepare, re-check, sleep, wake all. Built on
//! `crate::sync` so loom can check its protocol, and on [`crate::exec`] so a virtual CPU's
//! task sleeps in the scheduler instead of blocking the host thread.

use crate::sync::{AtomicU32, Condvar, Mutex, Ordering, fence};

/// A kernel wait queue (`wait_queue_head_t`), e.g. `delayed_refs->wait`. A wake-up is a generation bump under the queue lock, so a sleeper
/// that registered before the bump cannot miss it; `waiters` is the lockless
/// `waitqueue_active()` test the waker does after its full barrier.
pub(crate) struct WaitQueue {
    waiters: AtomicU32,
    generation: Mutex<u64>,
    cv: Condvar,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        Self {
            waiters: AtomicU32::new(0),
            generation: Mutex::new(0),
            cv: Condvar::new(),
        }
    }

    /// `prepare_to_wait`: on the queue before the caller's re-check (§2.3 step 3).
    pub(crate) fn prepare(&self) -> u64 {
        let g = self.generation.lock().unwrap();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // `set_current_state`'s full barrier: pairs with the waker's `smp_mb()` between its
        // decrement and `waitqueue_active()` (Dekker: one of the two must see the other).
        fence(Ordering::SeqCst);
        *g
    }

    /// `finish_wait` without sleeping.
    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// `schedule()` until a wake-up newer than `seen`, then `finish_wait`.
    pub(crate) fn sleep(&self, seen: u64) {
        if crate::exec::in_virtual() {
            // A virtual task must not block the host thread: sleep in the scheduler (the
            // queue lock is never held across a switch).
            while *self.generation.lock().unwrap() == seen {
                crate::exec::sleep_on(self.addr());
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let mut g = self.generation.lock().unwrap();
        while *g == seen {
            g = self.cv.wait(g).unwrap();
        }
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleepers registered now (lockless).
    pub(crate) fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    pub(crate) fn active(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn wake_all(&self) {
        let mut g = self.generation.lock().unwrap();
        *g = g.wrapping_add(1);
        self.cv.notify_all();
        drop(g);
        crate::exec::wake_all(self.addr());
    }
}

impl WaitQueue {
    /// `wait_event(wq, cond)`: sleeps until `cond()` holds, re-checking it after
    /// registering (so a wake-up between the check and the sleep is not lost).
    pub(crate) fn wait_until(&self, cond: impl Fn() -> bool) {
        loop {
            let seen = self.prepare();
            if cond() {
                self.cancel();
                return;
            }
            self.sleep(seen);
        }
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}
