//! The virtual CPUs' scheduler: a virtual clock, one event queue, N CPUs each with the
//! tasks mapped to it, FIFO wait lists keyed by the address of what is waited on, and the
//! per-CPU split of time into work / spinning / switching / sleeping / idle.
//!
//! Scheduling rules (kept simple, and stated in docs/replay.md, "Engines"):
//! - a task runs on its CPU until it sleeps, yields at a handle boundary, or ends: no
//!   preemption (the kernel would preempt after a time slice; the model's sections are
//!   far shorter than one, except a committer's run-all);
//! - a spinning task keeps its CPU (spinlock waiters cannot be preempted in the kernel);
//! - a woken task runs after a wake-up's cost if its CPU is free, else when its CPU's
//!   current task next gives the CPU up; switching tasks costs a context switch;
//! - events at the same virtual instant are ordered by a hash of `--sim-seed` and the
//!   event's sequence number: deterministic for a given seed.

use crate::cost::{Cost, CostModel};
use crate::live::{Live, WaitRole};
pub use crate::metrics::CpuTime;
use crate::vecmap::U64Build;
use refgate_common::names::task_state;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

pub(crate) type TaskId = u32;

/// What a CPU's time is being spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acct {
    Work = 0,
    SpinDr = 1,
    SpinHead = 2,
    SpinExtent = 3,
    Switch = 4,
    Sleep = 5,
    Idle = 6,
}

impl Acct {
    pub(crate) fn spin(role: WaitRole) -> Acct {
        match role {
            WaitRole::DelayedRefsLock => Acct::SpinDr,
            WaitRole::ExtentTree => Acct::SpinExtent,
            _ => Acct::SpinHead,
        }
    }
}

/// What a task asks of the scheduler when it suspends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Req {
    /// Busy on its CPU for this long, counted as this kind of time.
    Busy(u64, Acct),
    /// Spinning on a lock until handed it (already queued as a waiter).
    Spin(WaitRole),
    /// Off CPU until woken (already queued as a waiter).
    Sleep,
    /// Off CPU for this long (a timer wakes it).
    SleepFor(u64),
    /// Give the CPU to the next runnable task on it, and queue behind it.
    Yield,
}

/// Charging time to a CPU's account (the accounts are the scheduler's own).
trait Charge {
    fn add(&mut self, a: Acct, ns: u64);
}

impl Charge for CpuTime {
    fn add(&mut self, a: Acct, ns: u64) {
        match a {
            Acct::Work => self.work_ns += ns,
            Acct::SpinDr => self.spin_delayed_refs_lock_ns += ns,
            Acct::SpinHead => self.spin_head_lock_ns += ns,
            Acct::SpinExtent => self.spin_extent_tree_ns += ns,
            Acct::Switch => self.switch_ns += ns,
            Acct::Sleep => self.sleeping_ns += ns,
            Acct::Idle => self.idle_ns += ns,
        }
    }
}

struct Cpu {
    current: Option<TaskId>,
    runq: VecDeque<TaskId>,
    acct: Acct,
    since: u64,
    time: CpuTime,
    /// Tasks mapped here that have not finished.
    live_tasks: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Event {
    /// Resume the CPU's current task.
    Cpu(u32),
    /// A sleeping task's timer expired.
    Timer(TaskId),
}

struct TaskSlot {
    cpu: u32,
    /// Queued on a lock as a spinner (keeps its CPU) rather than a sleeper.
    spinning: bool,
    /// What it waits on (for the deadlock report), 0 when not waiting.
    waiting_on: usize,
}

pub(crate) struct Sched {
    pub(crate) now: u64,
    /// The run was cut (cancelled, or `Live::cut_at` reached): the clock no longer moves.
    pub(crate) frozen: bool,
    /// A pending cut (`Live::cut_at`, mirrored here by the driver; `u64::MAX`: none).
    pub(crate) cut_at: u64,
    cpus: Vec<Cpu>,
    tasks: Vec<TaskSlot>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    /// FIFO waiters per waited-on address. Emptied queues stay (their buffers are reused:
    /// a contended acquisition then allocates nothing).
    waiters: HashMap<usize, VecDeque<TaskId>, U64Build>,
    costs: [u64; 7],
    /// `--timeline`: the CPUs' states and the run calls as they happen.
    pub(crate) timeline: Option<Timeline>,
    seed: u64,
    seq: u64,
}

/// What `--timeline` keeps: per CPU, intervals of one kind of time; per CPU, the
/// `btrfs_run_delayed_refs` calls; the queue depth over time. Bounded: once `cap` entries
/// are kept, recording stops and `truncated_at` says when.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// (cpu, start ns, duration ns, what).
    pub slices: Vec<(u32, u64, u64, &'static str)>,
    /// (cpu, start ns, duration ns).
    pub run_calls: Vec<(u32, u64, u64)>,
    /// (ns, num_entries).
    pub queue: Vec<(u64, u64)>,
    /// Entries it may keep: slices, run calls and queue samples together.
    pub cap: usize,
    /// When recording stopped (ns), if it did.
    pub truncated_at: Option<u64>,
    /// Per CPU, what its task sleeps on (the live state's name when it went to sleep).
    pub(crate) sleep_reason: Vec<&'static str>,
}

impl Timeline {
    /// An empty timeline for `cpus` CPUs that keeps at most `cap` entries.
    pub fn new(cpus: usize, cap: usize) -> Self {
        Self {
            cap,
            sleep_reason: vec![""; cpus],
            ..Self::default()
        }
    }
    fn full(&mut self, now: u64) -> bool {
        let n = self.slices.len() + self.run_calls.len() + self.queue.len();
        if n >= self.cap && self.truncated_at.is_none() {
            self.truncated_at = Some(now);
        }
        self.truncated_at.is_some()
    }
    fn slice(&mut self, cpu: u32, start: u64, dur: u64, a: Acct, reason: &'static str) {
        if self.full(start) {
            return;
        }
        let name = match a {
            Acct::Work => "running",
            Acct::SpinDr => "spinning: delayed_refs->lock",
            Acct::SpinHead => "spinning: head->lock",
            Acct::SpinExtent => "spinning: extent tree",
            Acct::Switch => "switching",
            Acct::Sleep => match reason {
                r if r == task_state::SLEEPING_ON_GATE.label => "sleeping: seed gate",
                r if r == task_state::WAITING_ON_HEAD.label => "sleeping: head->mutex",
                r if r == task_state::WAITING_EXTENT_TREE.label => "sleeping: extent tree",
                r if r == task_state::AT_BARRIER.label => "sleeping: commit barrier",
                _ => "sleeping",
            },
            Acct::Idle => "idle",
        };
        // Adjacent intervals of the same kind become one.
        if let Some(last) = self.slices.iter_mut().rev().find(|s| s.0 == cpu)
            && last.3 == name
            && last.1 + last.2 == start
        {
            last.2 += dur;
            return;
        }
        self.slices.push((cpu, start, dur, name));
    }
    pub(crate) fn run_call(&mut self, cpu: u32, start: u64, end: u64) {
        if !self.full(start) {
            self.run_calls.push((cpu, start, end - start));
        }
    }
    pub(crate) fn queue_depth(&mut self, now: u64, entries: u64) {
        if self
            .queue
            .last()
            .is_some_and(|&(t, e)| e == entries || now < t + 1_000)
        {
            return;
        }
        if !self.full(now) {
            self.queue.push((now, entries));
        }
    }
}

/// SplitMix64: a fixed, well-mixed hash for tie-breaking.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Sched {
    /// `task_cpus[i]` is the CPU task `i` is pinned to.
    pub(crate) fn new(cpus: usize, task_cpus: &[u32], costs: &CostModel, seed: u64) -> Self {
        let mut s = Self {
            now: 0,
            frozen: false,
            cut_at: u64::MAX,
            cpus: (0..cpus)
                .map(|_| Cpu {
                    current: None,
                    runq: VecDeque::new(),
                    acct: Acct::Idle,
                    since: 0,
                    time: CpuTime::default(),
                    live_tasks: 0,
                })
                .collect(),
            tasks: task_cpus
                .iter()
                .map(|&cpu| TaskSlot {
                    cpu,
                    spinning: false,
                    waiting_on: 0,
                })
                .collect(),
            events: BinaryHeap::new(),
            waiters: HashMap::default(),
            costs: costs.table(),
            timeline: None,
            seed,
            seq: 0,
        };
        // Every task starts runnable on its CPU, in task order; the first of each CPU runs
        // at time 0.
        for (t, &cpu) in task_cpus.iter().enumerate() {
            let c = &mut s.cpus[cpu as usize];
            c.live_tasks += 1;
            if c.current.is_none() {
                c.current = Some(t as TaskId);
                c.acct = Acct::Work;
                s.push(0, Event::Cpu(cpu));
            } else {
                c.runq.push_back(t as TaskId);
            }
        }
        s
    }

    pub(crate) fn cost(&self, c: Cost) -> u64 {
        self.costs[c as usize]
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        let tie = mix(self.seed ^ mix(self.seq));
        self.events.push(Reverse((at, tie, ev)));
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        let Reverse((at, _, ev)) = self.events.pop()?;
        debug_assert!(at >= self.now);
        // Once the run is cut (cancelled), the clock stays where the cut was: what is still
        // in flight ends there, so the report's virtual time is the replayed part's.
        if !self.frozen {
            self.now = at;
        }
        Some(ev)
    }

    /// Stops the clock at `at` (not before now): the run is cut there ([`Self::frozen`]).
    pub(crate) fn freeze(&mut self, at: u64) {
        if !self.frozen {
            self.now = self.now.max(at);
            self.frozen = true;
        }
    }

    /// The time of the next event, if any.
    pub(crate) fn next_event_at(&self) -> Option<u64> {
        self.events.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Starts counting the CPU's time as `a` from now.
    pub(crate) fn set_acct(&mut self, cpu: u32, a: Acct) {
        let now = self.now;
        let c = &mut self.cpus[cpu as usize];
        let (was, since) = (c.acct, c.since);
        c.time.add(was, now - since);
        c.since = now;
        c.acct = a;
        if let Some(t) = &mut self.timeline
            && now > since
        {
            let reason = t.sleep_reason.get(cpu as usize).copied().unwrap_or("");
            t.slice(cpu, since, now - since, was, reason);
        }
    }

    pub(crate) fn current(&self, cpu: u32) -> Option<TaskId> {
        self.cpus[cpu as usize].current
    }

    pub(crate) fn has_runnable(&self, cpu: u32) -> bool {
        !self.cpus[cpu as usize].runq.is_empty()
    }

    /// A running task's busy period, done in place when nothing else can happen before it
    /// ends: the clock moves on without a trip through the scheduler (true). False: the
    /// caller must suspend with [`Req::Busy`].
    pub(crate) fn busy_inline(&mut self, cpu: u32, ns: u64, a: Acct) -> bool {
        let end = if self.frozen { self.now } else { self.now + ns };
        // Past a pending cut the clock must go through the scheduler, which stops it there.
        if self.next_event_at().is_some_and(|at| at <= end) || end > self.cut_at {
            return false;
        }
        self.set_acct(cpu, a);
        self.now = end;
        self.set_acct(cpu, Acct::Work);
        true
    }

    /// The CPU's current task suspended with `req`.
    pub(crate) fn suspended(&mut self, cpu: u32, task: TaskId, req: Req) {
        match req {
            Req::Busy(ns, a) => {
                self.set_acct(cpu, a);
                self.push(self.now + ns, Event::Cpu(cpu));
            }
            Req::Spin(role) => self.set_acct(cpu, Acct::spin(role)),
            Req::Sleep => self.switch_next(cpu),
            Req::SleepFor(ns) => {
                self.push(self.now + ns, Event::Timer(task));
                self.switch_next(cpu);
            }
            Req::Yield => {
                self.cpus[cpu as usize].runq.push_back(task);
                self.switch_next(cpu);
            }
        }
    }

    /// The CPU's current task finished.
    pub(crate) fn finished(&mut self, cpu: u32) {
        self.cpus[cpu as usize].live_tasks -= 1;
        self.switch_next(cpu);
    }

    /// The current task left the CPU: switch to the next runnable task, or go quiet.
    fn switch_next(&mut self, cpu: u32) {
        let c = &mut self.cpus[cpu as usize];
        match c.runq.pop_front() {
            Some(t) => {
                c.current = Some(t);
                self.set_acct(cpu, Acct::Switch);
                self.push(self.now + self.cost(Cost::ContextSwitch), Event::Cpu(cpu));
            }
            None => {
                c.current = None;
                let quiet = if c.live_tasks > 0 {
                    Acct::Sleep
                } else {
                    Acct::Idle
                };
                self.set_acct(cpu, quiet);
            }
        }
    }

    /// Makes a sleeping task runnable on its CPU.
    pub(crate) fn wake(&mut self, t: TaskId) {
        self.tasks[t as usize].waiting_on = 0;
        let cpu = self.tasks[t as usize].cpu;
        let c = &mut self.cpus[cpu as usize];
        if c.current.is_none() {
            c.current = Some(t);
            self.set_acct(cpu, Acct::Switch);
            self.push(self.now + self.cost(Cost::Wakeup), Event::Cpu(cpu));
        } else {
            c.runq.push_back(t);
        }
    }

    pub(crate) fn enqueue_waiter(&mut self, addr: usize, t: TaskId, spinning: bool) {
        let slot = &mut self.tasks[t as usize];
        slot.spinning = spinning;
        slot.waiting_on = addr;
        self.waiters.entry(addr).or_default().push_back(t);
    }

    /// A sleeper on a sleeping lock, at the back of its queue or (a woken waiter that lost
    /// the race) at the front.
    pub(crate) fn enqueue_waiter_at(&mut self, addr: usize, t: TaskId, front: bool) {
        let slot = &mut self.tasks[t as usize];
        slot.spinning = false;
        slot.waiting_on = addr;
        let q = self.waiters.entry(addr).or_default();
        if front {
            q.push_front(t);
        } else {
            q.push_back(t);
        }
    }

    /// Wakes the first sleeper on `addr`, if any.
    pub(crate) fn wake_one(&mut self, addr: usize) {
        let Some(q) = self.waiters.get_mut(&addr) else {
            return;
        };
        if let Some(t) = q.pop_front() {
            self.wake(t);
        }
    }

    /// Gives the lock at `addr` to its first waiter, if any (see [`crate::exec::handover`]).
    pub(crate) fn handover(&mut self, addr: usize) -> bool {
        let Some(q) = self.waiters.get_mut(&addr) else {
            return false;
        };
        let Some(t) = q.pop_front() else {
            return false;
        };
        self.proceed(t);
        true
    }

    /// A waiter taken off its queue goes on: a spinner, still on its CPU, now; a sleeper
    /// when woken.
    fn proceed(&mut self, t: TaskId) {
        let slot = &mut self.tasks[t as usize];
        slot.waiting_on = 0;
        if slot.spinning {
            slot.spinning = false;
            let cpu = slot.cpu;
            self.push(self.now, Event::Cpu(cpu));
        } else {
            self.wake(t);
        }
    }

    /// Every waiter on `addr` goes on without being given anything (see
    /// [`crate::exec::release_spinners`]).
    pub(crate) fn release_all(&mut self, addr: usize) {
        let Some(q) = self.waiters.get_mut(&addr) else {
            return;
        };
        let waiters: Vec<TaskId> = q.drain(..).collect();
        for t in waiters {
            self.proceed(t);
        }
    }

    pub(crate) fn wake_all(&mut self, addr: usize) -> usize {
        let Some(q) = self.waiters.get_mut(&addr) else {
            return 0;
        };
        let woken: Vec<TaskId> = q.drain(..).collect();
        for &t in &woken {
            self.wake(t);
        }
        woken.len()
    }

    /// Tasks still waiting when nothing is left to happen, with what they wait on.
    pub(crate) fn stuck(&self) -> Vec<(TaskId, usize)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.waiting_on != 0)
            .map(|(t, s)| (t as TaskId, s.waiting_on))
            .collect()
    }

    /// Closes every CPU's books at the current time (the makespan).
    pub(crate) fn close(&mut self) -> Vec<CpuTime> {
        for cpu in 0..self.cpus.len() as u32 {
            let a = self.cpus[cpu as usize].acct;
            self.set_acct(cpu, a);
        }
        self.cpus.iter().map(|c| c.time).collect()
    }

    /// Publishes the clock and each CPU's split so far for a dashboard.
    pub(crate) fn publish(&self, live: &Live) {
        live.set_virtual_ns(self.now);
        for (c, ws) in self.cpus.iter().zip(&live.workers) {
            let mut t = c.time;
            t.add(c.acct, self.now - c.since);
            ws.publish_cpu_time(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tie_break_depends_on_the_seed_only() {
        let costs = CostModel::defaults();
        let order = |seed| {
            let mut s = Sched::new(8, &[0, 1, 2, 3, 4, 5, 6, 7], &costs, seed);
            std::iter::from_fn(|| s.pop()).collect::<Vec<_>>()
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
        assert_eq!(order(1).len(), 8);
    }

    #[test]
    fn spin_handover_is_fifo_and_time_is_split() {
        let costs = CostModel::defaults();
        let mut s = Sched::new(3, &[0, 1, 2], &costs, 0);
        while s.pop().is_some() {}
        // Tasks 1 and 2 spin (in that order) on a lock task 0 holds for 100 ns.
        s.enqueue_waiter(7, 1, true);
        s.suspended(1, 1, Req::Spin(WaitRole::DelayedRefsLock));
        s.enqueue_waiter(7, 2, true);
        s.suspended(2, 2, Req::Spin(WaitRole::DelayedRefsLock));
        s.suspended(0, 0, Req::Busy(100, Acct::Work));
        assert_eq!(s.pop(), Some(Event::Cpu(0)));
        assert!(s.handover(7));
        assert_eq!(s.pop(), Some(Event::Cpu(1)));
        s.set_acct(1, Acct::Work);
        assert_eq!(s.now, 100);
        let t = s.close();
        assert_eq!(t[0].work_ns, 100);
        assert_eq!(t[1].spin_delayed_refs_lock_ns, 100);
        assert_eq!(t[2].spin_delayed_refs_lock_ns, 100);
        assert_eq!(s.stuck(), vec![(2, 7)]);
    }
}
