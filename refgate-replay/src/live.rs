//! A cheap live view of a running replay for a dashboard: relaxed atomics written by the
//! worker that owns them, read by anyone, never locked (docs/design.md "Dashboard").

use refgate_common::names::Name;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

/// What a worker thread is doing right now. Serialized as its name's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ThreadState {
    /// Outside delayed-ref code: thinking ([`crate::workload::Op::Think`]), between handles,
    /// or not started.
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
    /// In `btrfs_commit_transaction` (either phase).
    Committing = 8,
    /// Finished: no operation left.
    Done = 9,
    /// Held between operations by [`Live::pause`].
    Paused = 10,
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
            10 => Paused,
            _ => Idle,
        }
    }
    /// Its names ([`refgate_common::names::task_state`]): `id` for JSON, `label` for the
    /// dashboard.
    pub const fn name(self) -> Name {
        use ThreadState::*;
        use refgate_common::names::task_state as n;
        match self {
            Idle => n::IDLE,
            Adding => n::ADDING,
            RunningRefs => n::RUNNING_REFS,
            Spinning => n::SPINNING,
            SleepingOnGate => n::SLEEPING_ON_GATE,
            WaitingOnHead => n::WAITING_ON_HEAD,
            WaitingExtentTree => n::WAITING_EXTENT_TREE,
            AtBarrier => n::AT_BARRIER,
            Committing => n::COMMITTING,
            Done => n::DONE,
            Paused => n::PAUSED,
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
    /// Waits per [`WaitRole`]: count and total ns, published by the engine between operations.
    waits: [AtomicU64; 4],
    wait_ns: [AtomicU64; 4],
    /// `delayed_refs->lock` + head spinlock: CPU ns burnt spinning.
    spin_ns: AtomicU64,
    /// Virtual CPUs only: this CPU's time so far as work, spinning, switching, sleeping,
    /// idle ([`crate::metrics::CpuTime`]), published by the scheduler.
    cpu_time: [AtomicU64; 5],
    /// Real threads with `--timeline`: every state change and run call of this worker.
    log: std::sync::OnceLock<parking_lot::Mutex<ThreadLog>>,
}

/// What a real thread did, for `--timeline` (engine clock ns).
#[derive(Debug, Default)]
pub struct ThreadLog {
    /// (ns, state) at each change.
    pub states: Vec<(u64, ThreadState)>,
    /// (start ns, end ns) of each `btrfs_run_delayed_refs` call.
    pub run_calls: Vec<(u64, u64)>,
    /// (ns, num_entries) at the end of each run call.
    pub queue: Vec<(u64, u64)>,
    /// Entries it may keep.
    pub cap: usize,
    /// When the log reached `cap` (engine clock ns); nothing later is kept.
    pub truncated_at: Option<u64>,
}

impl ThreadLog {
    fn room(&mut self, now: u64) -> bool {
        let n = self.states.len() + self.run_calls.len() + self.queue.len();
        if n >= self.cap && self.truncated_at.is_none() {
            self.truncated_at = Some(now);
        }
        self.truncated_at.is_none()
    }
}

impl WorkerState {
    /// Sets the state, returning the previous one (to restore after a wait).
    #[inline]
    pub fn set(&self, s: ThreadState) -> ThreadState {
        if let Some(log) = self.log.get() {
            let now = crate::exec::now_ns();
            let mut l = log.lock();
            if l.room(now) {
                l.states.push((now, s));
            }
        }
        ThreadState::from_u8(self.state.swap(s as u8, Ordering::Relaxed))
    }
    /// Real threads with `--timeline`: keep this worker's state changes and run calls.
    pub fn start_log(&self, cap: usize) {
        let _ = self.log.set(parking_lot::Mutex::new(ThreadLog {
            cap,
            ..ThreadLog::default()
        }));
    }
    /// A run call ended (real threads with `--timeline`).
    pub fn log_run_call(&self, start: u64, end: u64, num_entries: u64) {
        if let Some(log) = self.log.get() {
            let mut l = log.lock();
            if l.room(end) {
                l.run_calls.push((start, end));
                l.queue.push((end, num_entries));
            }
        }
    }
    /// The log kept since [`WorkerState::start_log`].
    pub fn take_log(&self) -> Option<ThreadLog> {
        self.log.get().map(|l| std::mem::take(&mut *l.lock()))
    }
    /// The current state.
    #[inline]
    pub fn state(&self) -> ThreadState {
        ThreadState::from_u8(self.state.load(Ordering::Relaxed))
    }
    /// Single writer: a load and a store, no locked instruction.
    #[inline]
    pub fn add_refs_run(&self, n: u64) {
        self.refs_run
            .store(self.refs_run.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    /// Counts `n` workload operations done (single writer, as [`WorkerState::add_refs_run`]).
    #[inline]
    pub fn add_ops_done(&self, n: u64) {
        self.ops_done
            .store(self.ops_done.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    /// Ref nodes run so far in this slot.
    pub fn refs_run(&self) -> u64 {
        self.refs_run.load(Ordering::Relaxed)
    }
    /// Workload operations done so far in this slot.
    pub fn ops_done(&self) -> u64 {
        self.ops_done.load(Ordering::Relaxed)
    }
    /// Single writer (the engine, between operations, on the slot's one thread): new waits.
    #[inline]
    pub fn add_waits(&self, role: WaitRole, count: u64, total_ns: u64) {
        let (c, n) = (&self.waits[role as usize], &self.wait_ns[role as usize]);
        c.store(c.load(Ordering::Relaxed) + count, Ordering::Relaxed);
        n.store(n.load(Ordering::Relaxed) + total_ns, Ordering::Relaxed);
    }
    /// Adds `ns` of CPU burnt spinning on `delayed_refs->lock` and head spinlocks (single
    /// writer).
    #[inline]
    pub fn add_spin_ns(&self, ns: u64) {
        self.spin_ns
            .store(self.spin_ns.load(Ordering::Relaxed) + ns, Ordering::Relaxed);
    }
    /// The virtual scheduler's split of this CPU's time so far.
    pub fn publish_cpu_time(&self, t: &crate::metrics::CpuTime) {
        let v = [
            t.work_ns,
            t.spin_ns(),
            t.switch_ns,
            t.sleeping_ns,
            t.idle_ns,
        ];
        for (a, v) in self.cpu_time.iter().zip(v) {
            a.store(v, Ordering::Relaxed);
        }
    }
}

/// What a worker waited on, for the dashboard's lock panel. Serialized as its name's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum WaitRole {
    /// Contended acquisitions of `delayed_refs->lock`.
    DelayedRefsLock = 0,
    /// Contended acquisitions of a head's spinlock.
    HeadLock = 1,
    /// Blocking waits for a head's mutex (§2.4 step 1, §2.9, §4.4).
    HeadMutex = 2,
    /// Contended acquisitions of the extent-tree lock (§2.7).
    ExtentTree = 3,
}

impl WaitRole {
    /// Every role, in index order.
    pub const ALL: [WaitRole; 4] = [
        WaitRole::DelayedRefsLock,
        WaitRole::HeadLock,
        WaitRole::HeadMutex,
        WaitRole::ExtentTree,
    ];
    /// Its names ([`refgate_common::names::lock`]).
    pub const fn name(self) -> Name {
        use refgate_common::names::lock;
        match self {
            WaitRole::DelayedRefsLock => lock::DELAYED_REFS_LOCK,
            WaitRole::HeadLock => lock::HEAD_LOCK,
            WaitRole::HeadMutex => lock::HEAD_MUTEX,
            WaitRole::ExtentTree => lock::EXTENT_TREE,
        }
    }
}

/// Buckets of [`Log2Hist`]: bucket `i > 0` holds values in `[2^(i-1), 2^i)` ns, bucket 0 holds 0.
pub const LOG2_BUCKETS: usize = 48;

/// A lock-free log2 histogram of nanoseconds: relaxed `fetch_add`s, readable any time.
#[derive(Debug)]
pub struct Log2Hist([AtomicU64; LOG2_BUCKETS]);

impl Default for Log2Hist {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Log2Hist {
    /// The bucket holding `ns`.
    #[inline]
    pub fn bucket(ns: u64) -> usize {
        ((u64::BITS - ns.leading_zeros()) as usize).min(LOG2_BUCKETS - 1)
    }
    /// Records `n` samples of `ns`.
    #[inline]
    pub fn record_n(&self, ns: u64, n: u64) {
        self.0[Self::bucket(ns)].fetch_add(n, Ordering::Relaxed);
    }
    /// The bucket counts now.
    pub fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// The upper bound (ns) of the bucket holding quantile `q` of a [`Log2Hist`] snapshot.
pub fn log2_quantile(buckets: &[u64], q: f64) -> u64 {
    let n: u64 = buckets.iter().sum();
    if n == 0 {
        return 0;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (i, c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return if i == 0 { 0 } else { (1u64 << i.min(63)) - 1 };
        }
    }
    0
}

/// Queue-depth mirrors, stored by whoever holds `delayed_refs->lock` after changing them.
/// Also the lockless reads the kernel itself does (§2.8: `num_heads_ready` read without the
/// spinlock; §2.3: `num_entries` read without it).
#[derive(Default, Debug)]
pub struct QueueMirror {
    /// `num_entries`: heads and refs queued (§1.1).
    pub num_entries: AtomicU64,
    /// `num_heads_ready`: heads not claimed by a runner (§1.1, §4.2).
    pub num_heads_ready: AtomicU64,
    /// `num_heads`: bumped per new head; only the modern runner decrements it (§1.1 item 4,
    /// §4.2).
    pub num_heads: AtomicU64,
}

/// Everything a dashboard may poll during [`crate::run_live`].
#[derive(Debug)]
pub struct Live {
    /// One slot per worker: a real thread, or a virtual CPU.
    pub workers: Vec<WorkerState>,
    /// Operations the workload will execute ([`crate::workload::Workload::total_ops`]).
    pub ops_total: AtomicU64,
    /// The current transaction (0-based), bumped by each exclusive commit.
    pub transaction: AtomicU64,
    /// Transactions in the workload.
    pub transactions_total: AtomicU64,
    /// The queue's counters as last published under `delayed_refs->lock`.
    pub queue: QueueMirror,
    /// `procs_running_refs` (seed policy; 0 otherwise).
    pub procs_running_refs: std::sync::atomic::AtomicI32,
    /// Tasks asleep on the seed gate's wait queue (the gated 3.x policies, §2.3; 0 otherwise).
    pub gate_sleepers: std::sync::atomic::AtomicU32,
    /// Latency of each `btrfs_run_delayed_refs` call, bumped by the engine between operations.
    pub run_calls: Log2Hist,
    /// Waits per [`WaitRole`] (see [`crate::engine`] for how they are attributed).
    pub waits: [Log2Hist; 4],
    /// Workers hold between operations while set ([`Live::pause`]).
    paused: AtomicBool,
    /// Workers stop issuing operations once set ([`Live::cancel`]); the report is then partial.
    cancelled: AtomicBool,
    /// Virtual engine: the virtual clock (ns), published by the scheduler.
    virtual_ns: AtomicU64,
    /// Virtual engine: cut the run at this virtual instant (ns; `u64::MAX`: no cut).
    cut_at_ns: AtomicU64,
    /// Set by the virtual engine: the run has a virtual clock (so [`Live::stop_here`] cuts it).
    virtual_clock: AtomicBool,
    /// Time spent paused (ns), and when the current pause began (ns since `epoch`, 0 = none).
    paused_ns: AtomicU64,
    pause_began: AtomicU64,
    epoch: Instant,
}

impl Live {
    /// A live view with `threads` worker slots (threads, or virtual CPUs).
    pub fn new(threads: usize) -> Self {
        Self {
            workers: (0..threads).map(|_| WorkerState::default()).collect(),
            ops_total: AtomicU64::new(0),
            transaction: AtomicU64::new(0),
            transactions_total: AtomicU64::new(0),
            queue: QueueMirror::default(),
            procs_running_refs: Default::default(),
            gate_sleepers: Default::default(),
            run_calls: Log2Hist::default(),
            waits: Default::default(),
            paused: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            virtual_ns: AtomicU64::new(0),
            cut_at_ns: AtomicU64::new(u64::MAX),
            virtual_clock: AtomicBool::new(false),
            paused_ns: AtomicU64::new(0),
            pause_began: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Virtual engine: stop the replay at virtual instant `ns` as a cancel there would (`q` on
    /// the dashboard at that instant): the clock stops at `ns`, the report is partial.
    pub fn cut_at(&self, ns: u64) {
        self.cut_at_ns.store(ns, Ordering::SeqCst);
    }
    /// The instant set by [`Live::cut_at`], if any.
    pub fn cut_at_ns(&self) -> Option<u64> {
        let ns = self.cut_at_ns.load(Ordering::Relaxed);
        (ns != u64::MAX).then_some(ns)
    }

    /// Publishes the virtual clock (ns).
    pub fn set_virtual_ns(&self, ns: u64) {
        self.virtual_clock.store(true, Ordering::Relaxed);
        self.virtual_ns.store(ns, Ordering::Relaxed);
    }

    /// `q` on a dashboard: stop the replay where it is. Under the virtual engine that is a cut
    /// at the virtual instant the scheduler is at when it next looks ([`Live::cut_at`]: the
    /// events of that instant run, the clock stops there), so that `--until` at the reported
    /// instant gives the same partial report; on real threads, a [`Live::cancel`].
    pub fn stop_here(&self) {
        if self.virtual_clock.load(Ordering::Relaxed) {
            // Any instant not after the scheduler's: it cuts at its own clock, not before.
            self.cut_at(self.virtual_ns.load(Ordering::Relaxed));
            self.pause(false);
        } else {
            self.cancel();
        }
    }

    /// Holds (`true`) or releases (`false`) every worker at its next operation boundary.
    /// Called by one controller (the dashboard); the time paused is left out of the report's
    /// wall time.
    pub fn pause(&self, on: bool) {
        let now = (self.epoch.elapsed().as_nanos() as u64).max(1);
        if on && !self.paused.swap(true, Ordering::SeqCst) {
            self.pause_began.store(now, Ordering::SeqCst);
        } else if !on && self.paused.swap(false, Ordering::SeqCst) {
            let began = self.pause_began.swap(0, Ordering::SeqCst);
            self.paused_ns
                .fetch_add(now.saturating_sub(began), Ordering::SeqCst);
        }
    }
    /// Whether [`Live::pause`] holds the workers.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
    /// Asks the workers to stop issuing operations; [`crate::run_live`] then returns a
    /// partial report. Also ends a pause.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.pause(false);
    }
    /// Whether [`Live::cancel`] was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    /// Total time paused so far, including a pause in progress.
    pub fn paused_seconds(&self) -> f64 {
        let began = self.pause_began.load(Ordering::SeqCst);
        let cur = if began > 0 {
            (self.epoch.elapsed().as_nanos() as u64).saturating_sub(began)
        } else {
            0
        };
        (self.paused_ns.load(Ordering::SeqCst) + cur) as f64 / 1e9
    }

    /// Reads every value once (each relaxed: not one consistent instant).
    pub fn snapshot(&self) -> LiveSnapshot {
        let threads: Vec<_> = self
            .workers
            .iter()
            .map(|w| ThreadSnapshot {
                state: w.state(),
                refs_run: w.refs_run(),
                ops_done: w.ops_done(),
                waits: std::array::from_fn(|i| w.waits[i].load(Ordering::Relaxed)),
                wait_ns: std::array::from_fn(|i| w.wait_ns[i].load(Ordering::Relaxed)),
                spin_ns: w.spin_ns.load(Ordering::Relaxed),
                cpu_time: std::array::from_fn(|i| w.cpu_time[i].load(Ordering::Relaxed)),
            })
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
            run_calls: self.run_calls.snapshot(),
            waits: std::array::from_fn(|i| self.waits[i].snapshot()),
            virtual_ns: self.virtual_ns.load(Ordering::Relaxed),
            paused: self.is_paused(),
            cancelled: self.is_cancelled(),
            threads,
        }
    }
}

/// One worker slot of a [`LiveSnapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct ThreadSnapshot {
    /// What the worker is doing.
    pub state: ThreadState,
    /// Ref nodes run.
    pub refs_run: u64,
    /// Workload operations done.
    pub ops_done: u64,
    /// Per [`WaitRole`]: waits and total ns waited.
    pub waits: [u64; 4],
    /// Per [`WaitRole`]: total ns waited.
    pub wait_ns: [u64; 4],
    /// CPU ns burnt spinning on `delayed_refs->lock` and head spinlocks.
    pub spin_ns: u64,
    /// Virtual CPUs: ns of work, spinning, switching, sleeping, idle so far (zeros under
    /// real threads).
    pub cpu_time: [u64; 5],
}

impl ThreadSnapshot {
    /// Time this worker spent waiting on locks, head mutexes and the extent tree.
    pub fn waiting_ns(&self) -> u64 {
        self.wait_ns.iter().sum()
    }
}

/// [`Live`] as read by [`Live::snapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct LiveSnapshot {
    /// Workload operations done, over every slot.
    pub ops_done: u64,
    /// Operations the workload will execute.
    pub ops_total: u64,
    /// Ref nodes run, over every slot.
    pub refs_run: u64,
    /// `num_entries`: heads and refs queued (§1.1).
    pub num_entries: u64,
    /// `num_heads_ready`: heads not claimed by a runner (§1.1, §4.2).
    pub num_heads_ready: u64,
    /// The current transaction (0-based).
    pub transaction: u64,
    /// Transactions in the workload.
    pub transactions_total: u64,
    /// `procs_running_refs` (the gated 3.x policies, §2.3; 0 otherwise).
    pub procs_running_refs: i32,
    /// Tasks asleep on the seed gate's wait queue (§2.3).
    pub gate_sleepers: u32,
    /// [`Live::run_calls`] buckets.
    pub run_calls: Vec<u64>,
    /// [`Live::waits`] buckets per [`WaitRole`].
    pub waits: [Vec<u64>; 4],
    /// Virtual engine: the virtual clock (ns); 0 under real threads.
    pub virtual_ns: u64,
    /// Whether [`Live::pause`] holds the workers.
    pub paused: bool,
    /// Whether [`Live::cancel`] was called.
    pub cancelled: bool,
    /// Per worker slot.
    pub threads: Vec<ThreadSnapshot>,
}

#[cfg(test)]
mod name_tests {
    use super::*;

    /// JSON spells every state and role as the names table's id.
    #[test]
    fn serialized_as_the_names_tables_ids() {
        for v in 0..=10u8 {
            let s = ThreadState::from_u8(v);
            assert_eq!(serde_json::to_value(s).unwrap(), s.name().id, "{s:?}");
        }
        for r in WaitRole::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name().id, "{r:?}");
        }
    }
}
