//! A cheap live view of a running replay for a dashboard: relaxed atomics written by the
//! worker that owns them, read by anyone, never locked (design.md "Dashboard").

use serde::Serialize;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What a worker thread is doing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum ThreadState {
    Idle = 0,
    /// Queueing delayed refs (add API).
    Adding = 1,
    /// Inside `run_delayed_refs` doing work.
    RunningRefs = 2,
    /// Spinning on a spinlock.
    Spinning = 3,
    /// Asleep on the seed gate's wait queue (§2.3).
    SleepingOnGate = 4,
    /// Blocked on a head mutex (§2.4).
    WaitingOnHead = 5,
    /// Blocked on the extent-tree lock (§2.7).
    WaitingExtentTree = 6,
    /// At a transaction barrier (waiting for the commit or for the other writers).
    AtBarrier = 7,
    Committing = 8,
    Done = 9,
}

impl ThreadState {
    fn from_u8(v: u8) -> Self {
        use ThreadState::*;
        match v {
            1 => Adding,
            2 => RunningRefs,
            3 => Spinning,
            4 => SleepingOnGate,
            5 => WaitingOnHead,
            6 => WaitingExtentTree,
            7 => AtBarrier,
            8 => Committing,
            9 => Done,
            _ => Idle,
        }
    }
    pub fn name(self) -> &'static str {
        use ThreadState::*;
        match self {
            Idle => "idle",
            Adding => "adding refs",
            RunningRefs => "running refs",
            Spinning => "spinning",
            SleepingOnGate => "sleeping on gate",
            WaitingOnHead => "waiting on head",
            WaitingExtentTree => "waiting extent tree",
            AtBarrier => "at barrier",
            Committing => "committing",
            Done => "done",
        }
    }
}

/// One worker's live slot, padded so workers do not share cache lines.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct WorkerState {
    state: AtomicU8,
    refs_run: AtomicU64,
    ops_done: AtomicU64,
}

impl WorkerState {
    /// Sets the state, returning the previous one (to restore after a wait).
    #[inline]
    pub fn set(&self, s: ThreadState) -> ThreadState {
        ThreadState::from_u8(self.state.swap(s as u8, Ordering::Relaxed))
    }
    #[inline]
    pub fn state(&self) -> ThreadState {
        ThreadState::from_u8(self.state.load(Ordering::Relaxed))
    }
    /// Single writer: a load and a store, no locked instruction.
    #[inline]
    pub fn add_refs_run(&self, n: u64) {
        self.refs_run.store(self.refs_run.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    #[inline]
    pub fn add_ops_done(&self, n: u64) {
        self.ops_done.store(self.ops_done.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    pub fn refs_run(&self) -> u64 {
        self.refs_run.load(Ordering::Relaxed)
    }
    pub fn ops_done(&self) -> u64 {
        self.ops_done.load(Ordering::Relaxed)
    }
}

/// Queue-depth mirrors, stored by whoever holds `delayed_refs->lock` after changing them.
/// Also the lockless reads the kernel itself does (§2.8: `num_heads_ready` read without the
/// spinlock; §2.3: `num_entries` read without it).
#[derive(Default, Debug)]
pub struct QueueMirror {
    pub num_entries: AtomicU64,
    pub num_heads_ready: AtomicU64,
    pub num_heads: AtomicU64,
}

/// Everything a dashboard may poll during [`crate::engine::run_live`].
#[derive(Debug)]
pub struct Live {
    pub workers: Vec<WorkerState>,
    pub ops_total: AtomicU64,
    pub transaction: AtomicU64,
    pub transactions_total: AtomicU64,
    pub queue: QueueMirror,
    /// `procs_running_refs` (seed policy; 0 otherwise).
    pub procs_running_refs: std::sync::atomic::AtomicI32,
    pub gate_sleepers: std::sync::atomic::AtomicU32,
}

impl Live {
    pub fn new(threads: usize) -> Self {
        Self {
            workers: (0..threads).map(|_| WorkerState::default()).collect(),
            ops_total: AtomicU64::new(0),
            transaction: AtomicU64::new(0),
            transactions_total: AtomicU64::new(0),
            queue: QueueMirror::default(),
            procs_running_refs: Default::default(),
            gate_sleepers: Default::default(),
        }
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        let threads: Vec<_> = self
            .workers
            .iter()
            .map(|w| ThreadSnapshot { state: w.state(), refs_run: w.refs_run(), ops_done: w.ops_done() })
            .collect();
        LiveSnapshot {
            ops_done: threads.iter().map(|t| t.ops_done).sum(),
            ops_total: self.ops_total.load(Ordering::Relaxed),
            refs_run: threads.iter().map(|t| t.refs_run).sum(),
            num_entries: self.queue.num_entries.load(Ordering::Relaxed),
            num_heads_ready: self.queue.num_heads_ready.load(Ordering::Relaxed),
            transaction: self.transaction.load(Ordering::Relaxed),
            transactions_total: self.transactions_total.load(Ordering::Relaxed),
            procs_running_refs: self.procs_running_refs.load(Ordering::Relaxed),
            gate_sleepers: self.gate_sleepers.load(Ordering::Relaxed),
            threads,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadSnapshot {
    pub state: ThreadState,
    pub refs_run: u64,
    pub ops_done: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveSnapshot {
    pub ops_done: u64,
    pub ops_total: u64,
    pub refs_run: u64,
    pub num_entries: u64,
    pub num_heads_ready: u64,
    pub transaction: u64,
    pub transactions_total: u64,
    pub procs_running_refs: i32,
    pub gate_sleepers: u32,
    pub threads: Vec<ThreadSnapshot>,
}
