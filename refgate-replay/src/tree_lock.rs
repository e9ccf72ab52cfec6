//! One extent-tree block's lock (`extent_buffer` locking, `fs/btrfs/locking.c`), as both
//! engines take it. Lock coupling releases locks out of order, so this is a raw lock with
//! explicit `lock`/`unlock`, not a guard.
//!
//! Kinds (`docs/extent-tree.md` "Locks"):
//! - 3.x (`ExtentLock::Spin`, `fs/btrfs/locking.c` of 3.6–3.10): `btrfs_tree_lock` spins on
//!   the block's `rwlock_t` while its holder is spinning, and sleeps on `write_lock_wq` while
//!   the holder has switched the lock to blocking (`btrfs_set_lock_blocking`), which a holder
//!   does before it may sleep: `btrfs_search_slot` sets the whole path blocking before it
//!   waits for a child whose try-lock failed. Spinners here are handed the lock in FIFO order
//!   at its unlock, and sent to look again (and sleep) when the holder turns blocking.
//! - 5.11+ (`ExtentLock::Sleep`): an `rw_semaphore` (`down_write_nested`); waiters sleep.
//!   Its optimistic spinning on a running owner is not modelled.
//!
//! Read locks (`btrfs_tree_read_lock`) are modelled as a pass: a reader waits while a writer
//! holds the block, then holds nothing; writers never wait for readers. Writers of the
//! levels readers cross (a COW once per block per transaction, a split) are rare, so what
//! this leaves out is a writer's wait behind a reader's binary search.

use crate::exec;
use crate::live::{ThreadState, WaitRole, WorkerState};
use crate::params::ExtentLock;
use parking_lot::lock_api::RawMutex as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

pub(crate) struct TreeLock {
    raw: parking_lot::RawMutex,
    /// The holder switched the lock to blocking (3.x `btrfs_set_lock_blocking`).
    blocking: AtomicBool,
    /// Set by an unlock that hands the still-locked lock to a spinner: the first spinner to
    /// come back from its spin and take this owns the lock.
    handoff: AtomicBool,
    /// Tasks in [`TreeLock::lock_slow`]: an unlock with none skips the scheduler's queues
    /// (most unlocks; the virtual engine's hot path).
    waiters: AtomicU32,
}

impl TreeLock {
    pub(crate) fn new() -> Self {
        Self {
            raw: parking_lot::RawMutex::INIT,
            blocking: AtomicBool::new(false),
            handoff: AtomicBool::new(false),
            waiters: AtomicU32::new(0),
        }
    }

    /// The address spinners queue on (FIFO handover).
    fn spin_addr(&self) -> usize {
        &self.raw as *const _ as usize
    }

    /// The address sleepers queue on: a byte of its own, so that the two queues differ.
    fn sleep_addr(&self) -> usize {
        &self.blocking as *const _ as usize
    }

    /// The uncontended `btrfs_tree_lock` (`btrfs_try_tree_write_lock`).
    pub(crate) fn try_lock(&self) -> bool {
        self.raw.try_lock()
    }

    /// The contended `btrfs_tree_lock`: the ns waited.
    pub(crate) fn lock_slow(&self, kind: ExtentLock, ws: &WorkerState) -> u64 {
        let prev = ws.set(ThreadState::WaitingExtentTree);
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let waited = if exec::in_virtual() {
            let t0 = exec::now_ns();
            let mut front = false;
            while !self.raw.try_lock() {
                match kind {
                    // `wait_event(eb->write_lock_wq, blocking_writers == 0)`, then spin.
                    ExtentLock::Spin if self.blocking.load(Ordering::Acquire) => {
                        exec::sleep_on(self.sleep_addr());
                    }
                    ExtentLock::Spin => {
                        exec::spin_until_handed(self.spin_addr(), WaitRole::ExtentTree);
                        if self.handoff.swap(false, Ordering::AcqRel) {
                            break; // handed over: ours, still locked
                        }
                    }
                    ExtentLock::Sleep => {
                        exec::sleep_for_lock(self.sleep_addr(), front);
                        front = true;
                    }
                }
            }
            exec::now_ns() - t0
        } else {
            let t = Instant::now();
            self.raw.lock();
            t.elapsed().as_nanos() as u64
        };
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        ws.set(prev);
        waited
    }

    /// 3.x `btrfs_set_lock_blocking` by the holder: spinners and newcomers sleep.
    pub(crate) fn set_blocking(&self) {
        self.blocking.store(true, Ordering::Release);
        if self.waiters.load(Ordering::Acquire) != 0 {
            exec::release_spinners(self.spin_addr());
        }
    }

    /// 3.x `btrfs_clear_lock_blocking` by the holder: the sleepers wake and spin.
    pub(crate) fn clear_blocking(&self) {
        if self.blocking.swap(false, Ordering::AcqRel) {
            exec::wake_all(self.sleep_addr());
        }
    }

    /// `btrfs_tree_unlock` by the holder.
    pub(crate) fn unlock(&self, kind: ExtentLock) {
        self.blocking.store(false, Ordering::Release);
        if self.waiters.load(Ordering::Acquire) == 0 {
            // SAFETY: the caller holds the lock (callers pair lock and unlock).
            unsafe { self.raw.unlock() };
            return;
        }
        match kind {
            ExtentLock::Spin => {
                self.handoff.store(true, Ordering::Release);
                if !exec::handover(self.spin_addr()) {
                    self.handoff.store(false, Ordering::Release);
                    // SAFETY: the caller holds the lock (callers pair lock and unlock).
                    unsafe { self.raw.unlock() };
                }
                // `wake_up(&eb->write_lock_wq)`: whoever slept looks again.
                exec::wake_all(self.sleep_addr());
            }
            ExtentLock::Sleep => {
                // SAFETY: as above.
                unsafe { self.raw.unlock() };
                exec::wake_one(self.sleep_addr());
            }
        }
    }
}
