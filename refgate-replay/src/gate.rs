//! The seed's admission gate (spec §2.3; K3.9 `btrfs_run_delayed_refs`): `procs_running_refs`,
//! `ref_seq`, `refs_newer`, the wait queue `delayed_refs->wait`, and the wake-all at runner
//! exit. Kept free of the rest of the model so loom can check it (tests/loom_gate.rs).

use crate::metrics::GateStats;
pub use crate::params::GateParams;
use crate::sync::{AtomicI32, Ordering, fence};
use crate::waitqueue::WaitQueue;

/// What a throttled caller does after the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateEntry {
    /// Won `procs_running_refs` 0 → 1: run refs, then call [`Gate::exit`].
    Run,
    /// Someone is running and `num_entries` is below the threshold: return 0 (§2.3 step 3).
    EarlyReturn,
    /// Woken and `refs_newer(seq0, quantum)`: enough was run meanwhile, return 0.
    Progress,
}

pub struct Gate {
    procs_running_refs: AtomicI32,
    ref_seq: AtomicI32,
    wait: WaitQueue,
    /// Only for demonstrating that the model check bites: skip the re-check after
    /// registering on the wait queue (reintroduces the lost wake-up the kernel avoids).
    recheck_after_register: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self {
            procs_running_refs: AtomicI32::new(0),
            ref_seq: AtomicI32::new(0),
            wait: WaitQueue::new(),
            recheck_after_register: true,
        }
    }

    #[doc(hidden)]
    pub fn without_recheck_for_tests() -> Self {
        Self {
            recheck_after_register: false,
            ..Self::new()
        }
    }

    pub fn procs_running_refs(&self) -> i32 {
        self.procs_running_refs.load(Ordering::Relaxed)
    }
    pub fn ref_seq(&self) -> i32 {
        self.ref_seq.load(Ordering::Relaxed)
    }
    pub fn sleepers(&self) -> u32 {
        self.wait.waiters()
    }

    /// run_all / run_most callers: `atomic_inc(procs_running_refs)`, never wait (§2.3).
    pub fn enter_bypass(&self, st: &mut GateStats) {
        self.procs_running_refs.fetch_add(1, Ordering::SeqCst);
        st.bypasses += 1;
    }

    fn try_claim(&self) -> bool {
        self.procs_running_refs
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The throttled path (§2.3 steps 1–3). `num_entries` is the racy lockless read the
    /// kernel does; `on_sleep(true/false)` brackets each sleep (for the live view).
    pub fn enter_throttled(
        &self,
        p: &GateParams,
        num_entries: &dyn Fn() -> u64,
        st: &mut GateStats,
        on_sleep: &mut dyn FnMut(bool),
    ) -> GateEntry {
        self.enter_throttled_when(
            p.progress_quantum,
            &|| num_entries() < p.entries_threshold,
            st,
            on_sleep,
        )
    }

    /// The same protocol with the "don't bother waiting" test as a predicate: K3.9/3.10
    /// use `num_entries < 16348`, K3.11–3.13 `flushing || !should_throttle()` (§4.1).
    pub fn enter_throttled_when(
        &self,
        progress_quantum: i32,
        give_up: &dyn Fn() -> bool,
        st: &mut GateStats,
        on_sleep: &mut dyn FnMut(bool),
    ) -> GateEntry {
        // Step 1: sampled once, on arrival.
        let seq0 = self.ref_seq.load(Ordering::SeqCst);
        loop {
            // Step 2 (`progress:`).
            if self.try_claim() {
                st.acquisitions += 1;
                return GateEntry::Run;
            }
            // Step 3: busy, and not enough queued to be worth waiting for.
            if give_up() {
                st.early_returns += 1;
                return GateEntry::EarlyReturn;
            }
            let seen = self.wait.prepare();
            // The re-check after registering closes the window in which the runner exits
            // (and finds nobody to wake) between our failed cmpxchg and our registration.
            if self.recheck_after_register && self.try_claim() {
                self.wait.cancel();
                st.acquisitions += 1;
                return GateEntry::Run;
            }
            st.sleeps += 1;
            on_sleep(true);
            self.wait.sleep(seen);
            on_sleep(false);
            st.wakeups += 1;
            if self.refs_newer(seq0, progress_quantum) {
                st.refs_newer_exits += 1;
                return GateEntry::Progress;
            }
        }
    }

    /// §2.1 step 6d: the runner accounts each cluster's nodes; no wake-up here (§2.3 step 5).
    pub fn add_progress(&self, nodes: u64) {
        self.ref_seq.fetch_add(nodes as i32, Ordering::SeqCst);
    }

    /// K3.9 `refs_newer`: true iff `ref_seq` left `[seq, seq + count)`; int arithmetic wraps
    /// as the kernel's does (built with `-fno-strict-overflow`).
    pub fn refs_newer(&self, seq: i32, count: i32) -> bool {
        let val = self.ref_seq.load(Ordering::SeqCst);
        val < seq || val >= seq.wrapping_add(count)
    }

    /// `out:` (§2.1 step 8): decrement, full barrier, wake all if anyone waits (§2.3 step 4).
    pub fn exit(&self, st: &mut GateStats) {
        self.procs_running_refs.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.wait.active() {
            st.wake_alls += 1;
            self.wait.wake_all();
        }
    }

    /// A new transaction's gate starts at zero (§1.1 initialisation).
    pub fn reset(&self) {
        debug_assert_eq!(self.procs_running_refs.load(Ordering::SeqCst), 0);
        self.ref_seq.store(0, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// §2.3 step 3: busy gate and few entries ⇒ immediate return, no sleep.
    #[test]
    fn spec_2_3_early_return_below_threshold() {
        let g = Gate::new();
        let mut st = GateStats::default();
        g.enter_bypass(&mut st);
        let e = g.enter_throttled(&GateParams::default(), &|| 16347, &mut st, &mut |_| {});
        assert_eq!(e, GateEntry::EarlyReturn);
        assert_eq!((st.early_returns, st.sleeps), (1, 0));
        g.exit(&mut st);
        let e = g.enter_throttled(&GateParams::default(), &|| 0, &mut st, &mut |_| {});
        assert_eq!(e, GateEntry::Run);
        assert_eq!(g.procs_running_refs(), 1);
    }

    /// A gate held by a bypassing runner (whose stats are returned) and a throttled caller
    /// with 20 000 entries queued, returned once it is asleep on the gate.
    fn runner_and_sleeper() -> (
        Arc<Gate>,
        GateStats,
        std::thread::JoinHandle<(GateEntry, GateStats)>,
    ) {
        let g = Arc::new(Gate::new());
        let mut st = GateStats::default();
        g.enter_bypass(&mut st);
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            let mut st = GateStats::default();
            let e = g2.enter_throttled(&GateParams::default(), &|| 20_000, &mut st, &mut |_| {});
            (e, st)
        });
        while g.sleepers() == 0 {
            std::thread::yield_now();
        }
        (g, st, t)
    }

    /// §2.3 step 3/4: a sleeper is woken only at runner exit and returns if ≥ 256 nodes ran.
    #[test]
    fn spec_2_3_sleep_wake_and_refs_newer() {
        let (g, mut st, t) = runner_and_sleeper();
        g.add_progress(300);
        // Progress alone wakes nobody (step 5).
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(g.sleepers(), 1);
        g.exit(&mut st);
        let (e, wst) = t.join().unwrap();
        assert_eq!(e, GateEntry::Progress);
        assert_eq!((wst.sleeps, wst.refs_newer_exits), (1, 1));
        assert_eq!(st.wake_alls, 1);
    }

    /// §2.3: without 256 nodes of progress the woken caller retries the cmpxchg and runs.
    #[test]
    fn spec_2_3_no_progress_retry_wins() {
        let (g, mut st, t) = runner_and_sleeper();
        g.add_progress(255);
        g.exit(&mut st);
        assert_eq!(t.join().unwrap().0, GateEntry::Run);
    }

    /// K3.9 `refs_newer` window arithmetic including int wrap-around.
    #[test]
    fn spec_2_3_refs_newer_window() {
        let g = Gate::new();
        assert!(!g.refs_newer(0, 256));
        g.add_progress(255);
        assert!(!g.refs_newer(0, 256));
        g.add_progress(1);
        assert!(g.refs_newer(0, 256));
        assert!(g.refs_newer(300, 256)); // val < seq
        // seq + count wraps negative: always "newer", as in the kernel.
        assert!(g.refs_newer(i32::MAX - 10, 256));
    }
}
