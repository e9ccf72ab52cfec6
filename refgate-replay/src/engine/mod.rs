//! Replay engines: a [`Workload`] driven through a [`Policy`] over the kernel model, then the
//! §7.4 invariant checked. Two engines run the same model code (see the `exec` seam):
//!
//! - [`Engine::Virtual`] ([`crate::engine::vcpu`], the default): N virtual CPUs in deterministic
//!   virtual time, with costs from a [`crate::cost::CostModel`]; the same answer on any host.
//! - [`Engine::Threads`] ([`threads`]): N real threads; exercises real races (with loom and
//!   the invariant), but its contention figures measure the host's scheduler when threads
//!   outnumber cores.
//!
//! Transactions: each transaction ends with a commit. Every committing task runs the
//! policy's concurrent commit phase (while others may still be adding); then everyone
//! meets at a barrier (the kernel's wait for `num_writers == 1`), the first committing task
//! runs the exclusive phase (run everything), the queue must be empty, and a fresh
//! transaction starts for everyone.

pub mod threads;
pub mod vcpu;

use crate::cost::CostModel;
use crate::engine::vcpu::{CpuTime, Timeline};
use crate::error::ModelError;
use crate::error::{ReplayError, RunFailure};
use crate::live::{Live, ThreadState, WaitRole};
use crate::metrics::{Caller, ThreadMetrics};
use crate::params::Params;
use crate::policy::Policy;
use crate::root::{FsModel, TransHandle, Worker};
use crate::workload::{Handle, Op, TaskView, Workload};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// Which engine runs a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Engine {
    /// N virtual CPUs in virtual time ([`crate::engine::vcpu`]).
    #[default]
    Virtual,
    /// N real threads ([`threads`]).
    Threads,
}

impl Engine {
    /// The engine's name (`--engine`, reports).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Virtual => "virtual",
            Engine::Threads => "threads",
        }
    }
}

/// How to run one replay.
#[derive(Clone, Debug)]
pub struct Config {
    /// The engine to run.
    pub engine: Engine,
    /// CPUs (virtual) or threads (real).
    pub cpus: usize,
    /// The model's parameters; `params.costs` is what the virtual engine charges.
    pub params: Params,
    /// Tie-breaking among virtual CPUs ready at the same instant.
    pub sim_seed: u64,
    /// Virtual engine: keep the virtual clock no faster than the wall clock, so that a
    /// replay with recorded think-times (`--speed`) can be watched. Changes no figure.
    pub pace: bool,
    /// Virtual engine: keep a timeline of every CPU's states and run calls (`--timeline`).
    pub timeline: bool,
}

/// The virtual engine's own figures.
#[derive(Clone, Debug, Serialize)]
pub struct VirtualFigures {
    /// Makespan: the virtual time at which the last task finished.
    pub virtual_seconds: f64,
    /// Ref nodes run per virtual second (0 for an empty run).
    pub refs_per_virtual_second: f64,
    /// Per virtual CPU: work / spinning / switching / sleeping / idle.
    pub cpus: Vec<CpuTime>,
    /// The costs charged ([`Config::params`]' `costs`).
    pub cost_model: CostModel,
    /// The tie-breaking seed used ([`Config::sim_seed`]).
    pub sim_seed: u64,
}

/// Entries a `--timeline` keeps at most, for either engine (about 100 MB of JSON).
pub const TIMELINE_CAP: usize = 1_000_000;

/// A real-thread replay's timeline from the workers' logs: each state held until the next
/// change is one interval of its thread's track (times from the first change).
pub(crate) fn threads_timeline(live: &Live) -> Timeline {
    use crate::live::ThreadState::*;
    let logs: Vec<_> = live.workers.iter().filter_map(|w| w.take_log()).collect();
    let t0 = logs
        .iter()
        .filter_map(|l| l.states.first().map(|s| s.0))
        .min()
        .unwrap_or(0);
    let mut t = Timeline::new(logs.len(), TIMELINE_CAP);
    for (i, l) in logs.iter().enumerate() {
        let cpu = i as u32;
        for pair in l.states.windows(2) {
            let ((start, s), (end, _)) = (pair[0], pair[1]);
            let name = match s {
                Adding | RunningRefs | Committing => "running",
                Spinning => "spinning",
                SleepingOnGate => "sleeping: seed gate",
                WaitingOnHead => "sleeping: head->mutex",
                WaitingExtentTree => "sleeping: extent tree",
                AtBarrier => "sleeping: commit barrier",
                Paused => "paused",
                Idle | Done => "idle",
            };
            if end > start {
                t.slices.push((cpu, start - t0, end - start, name));
            }
        }
        t.run_calls
            .extend(l.run_calls.iter().map(|&(s, e)| (cpu, s - t0, e - s)));
        t.queue.extend(l.queue.iter().map(|&(ts, n)| (ts - t0, n)));
        if let Some(at) = l.truncated_at {
            t.truncated_at = Some(t.truncated_at.map_or(at - t0, |x: u64| x.min(at - t0)));
        }
    }
    t.queue.sort_unstable();
    t
}

/// What an engine hands back for the report (built on top, `crate::report`).
pub(crate) struct Outcome {
    pub engine: Engine,
    /// CPUs (virtual) or threads (real).
    pub cpus: usize,
    /// The model at the end of the run: its extent tree is checked (§7.4) and dumped.
    pub fs: FsModel,
    pub per_worker: Vec<ThreadMetrics>,
    /// Refs run per thread or per CPU.
    pub per_cpu_refs: Vec<u64>,
    pub errors: Vec<RunFailure>,
    pub wall_seconds: f64,
    pub paused_seconds: f64,
    pub commits_done: u64,
    pub virtual_figures: Option<VirtualFigures>,
    pub timeline: Option<Timeline>,
}

/// Checks that a run can start: `live` sized for `cpus`, a valid workload.
pub(crate) fn preflight(
    workload: &Workload,
    policy: &dyn Policy,
    cpus: usize,
    live: &Live,
) -> Result<(), ReplayError> {
    if live.workers.len() != cpus {
        return Err(model_error(
            policy,
            cpus,
            vec![RunFailure::LiveSlots {
                slots: live.workers.len(),
                cpus,
            }],
        ));
    }
    workload.validate()?;
    live.ops_total
        .store(workload.total_ops(), Ordering::Relaxed);
    live.transactions_total
        .store(workload.transactions as u64, Ordering::Relaxed);
    Ok(())
}

pub(crate) fn model_error(
    policy: &dyn Policy,
    cpus: usize,
    errors: Vec<RunFailure>,
) -> ReplayError {
    ReplayError::Model {
        policy: policy.name().into(),
        cpus,
        errors,
    }
}

/// What a panic was raised with (`panic!`'s formatted `String` or a literal `&str`), for the
/// [`RunFailure`] either engine reports.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The index of the task that runs transaction `t`'s exclusive commit: the first that
/// commits it (task 0 if none does).
pub(crate) fn committers(workload: &Workload) -> Vec<usize> {
    (0..workload.transactions)
        .map(|t| {
            // Copy 0's tasks come first (`Workload::task`).
            workload
                .tasks
                .iter()
                .position(|task| task.transactions[t].commit)
                .unwrap_or(0)
        })
        .collect()
}

/// What a worker last published into its [`Live`] slot, so that it publishes only changes.
#[derive(Default)]
pub(crate) struct Published {
    run_calls: (u64, u64),
    waits: [(u64, u64); 4],
    spin_ns: u64,
}

/// Publishes the worker's wait and run-call counters for the dashboard, between operations
/// (the kernel model itself is not touched). The live histograms get each operation's new
/// samples; when one operation had several of a kind (rare: a run call per add at most, and
/// a contended wait is a few per run call), each is counted at their mean. Slot totals are
/// added as deltas: under the virtual engine several tasks share one CPU's slot.
pub(crate) fn publish(live: &Live, w: &Worker, p: &mut Published) {
    let m = &w.m;
    // The new samples since the last call, as (count, ns), recorded into `h`.
    let delta = |h: &crate::live::Log2Hist, last: &mut (u64, u64), now: (u64, u64)| {
        let d = (now.0 - last.0, now.1.saturating_sub(last.1));
        if let Some(mean) = d.1.checked_div(d.0) {
            h.record_n(mean, d.0);
        }
        *last = now;
        d
    };
    delta(
        &live.run_calls,
        &mut p.run_calls,
        (m.run_calls.count, m.run_calls.total_ns),
    );
    let waits = [
        (m.dr_lock.wait.count, m.dr_lock.wait.total_ns),
        (m.head_lock.wait.count, m.head_lock.wait.total_ns),
        (m.head_mutex.count, m.head_mutex.total_ns),
        (m.extent_tree.count, m.extent_tree.total_ns),
    ];
    for (role, now) in WaitRole::ALL.into_iter().zip(waits) {
        let d = delta(&live.waits[role as usize], &mut p.waits[role as usize], now);
        if d.0 > 0 {
            w.ws().add_waits(role, d.0, d.1);
        }
    }
    let spin = m.dr_lock.spin_ns + m.head_lock.spin_ns;
    if spin != p.spin_ns {
        w.ws().add_spin_ns(spin - p.spin_ns);
        p.spin_ns = spin;
    }
}

/// Between operations: holds while paused; false once the run is cancelled.
#[inline]
pub(crate) fn may_continue(live: &Live, w: &Worker) -> bool {
    if live.is_paused() {
        let prev = w.set_state(ThreadState::Paused);
        while live.is_paused() && !live.is_cancelled() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        w.set_state(prev);
    }
    !live.is_cancelled()
}

/// One handle of one task, from its first op to `btrfs_end_transaction`; `task` shifts
/// the ops to its copy's extents.
pub(crate) fn run_handle(
    fs: &FsModel,
    policy: &dyn Policy,
    w: &mut Worker,
    p: &mut Published,
    task: &TaskView,
    handle: &Handle,
) -> Result<(), ModelError> {
    let mut h = TransHandle::default();
    policy.start_transaction(fs, w, &mut h)?;
    for op in &handle.ops {
        let op = &task.op(op);
        if !may_continue(&fs.live, w) {
            break;
        }
        w.set_state(ThreadState::Adding);
        match op {
            Op::AddRef { r, extent_op } => fs.add_ref(w, &mut h, r, *extent_op)?,
            Op::AddExtentOp {
                bytenr,
                num_bytes,
                is_data,
                op,
            } => fs.add_extent_op(w, &mut h, *bytenr, *num_bytes, *is_data, *op)?,
            Op::LookupExtentInfo { bytenr } => {
                fs.lookup_extent_info(w, *bytenr);
            }
            Op::ShouldEnd => {
                w.caller = Caller::OTHER;
                if policy.should_end_transaction(fs, w, &mut h)? {
                    w.caller = Caller::HANDLE_END;
                    policy.end_transaction(fs, w, &mut h)?;
                    h = TransHandle::default();
                    policy.start_transaction(fs, w, &mut h)?;
                }
            }
            Op::Think { ns } => {
                w.set_state(ThreadState::Idle);
                crate::exec::think(*ns);
            }
            Op::RunDelayedRefs { arg } => {
                w.caller = Caller::OTHER;
                policy.run_explicit(fs, w, &mut h, *arg)?;
            }
        }
        w.ws().add_ops_done(1);
        publish(&fs.live, w, p);
    }
    w.caller = Caller::HANDLE_END;
    policy.end_transaction(fs, w, &mut h)?;
    publish(&fs.live, w, p);
    w.set_state(ThreadState::Idle);
    Ok(())
}

/// A committing task's concurrent phase (§2.8 run_most ×2; §4.7 the single pre-flush).
pub(crate) fn commit_pre(
    fs: &FsModel,
    policy: &dyn Policy,
    w: &mut Worker,
    p: &mut Published,
) -> Result<(), ModelError> {
    w.set_state(ThreadState::Committing);
    w.caller = Caller::COMMIT;
    let mut h = TransHandle::default();
    policy.commit_pre(fs, w, &mut h)?;
    publish(&fs.live, w, p);
    Ok(())
}

/// The exclusive phase of a commit, with every other task parked: run everything, check
/// the queue is empty and the counters agree (§1.5), start a new transaction.
pub(crate) fn exclusive_commit(
    fs: &FsModel,
    policy: &dyn Policy,
    w: &mut Worker,
) -> Result<(), ModelError> {
    // The reclaim workers (modern, §4.6) are not tasks the commit parks: their joined
    // transactions end before the phase goes on (the kernel's wait for num_writers == 1), and
    // before the check, which is only meaningful with no runner mid-flight (a worker between
    // erasing a ref and decrementing num_entries failed it spuriously at 16 real threads).
    // Without workers this only sets and clears a flag.
    fs.space.block_joins();
    let checked = match fs.params.check_counters {
        true => fs.check_counters(w),
        false => Ok(()),
    };
    let mut h = TransHandle::default();
    w.caller = Caller::COMMIT;
    let ran = checked.and_then(|()| policy.commit_exclusive(fs, w, &mut h));
    fs.space.unblock_joins();
    ran?;
    let (c, heads) = fs.counters(w);
    let entries = fs.num_entries_racy();
    if heads != 0 || entries != 0 || c.num_heads_ready != 0 {
        return Err(ModelError::Bug(format!(
            "queue not empty after run-all: {heads} heads, num_entries {entries}, num_heads_ready {}",
            c.num_heads_ready
        )));
    }
    if fs.params.check_counters {
        fs.check_counters(w)?;
    }
    fs.start_transaction(w)?;
    fs.live.transaction.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::panic_message;
    use std::panic::catch_unwind;

    #[test]
    fn a_panic_message_is_read_from_a_formatted_or_a_literal_payload() {
        let n = 3;
        let formatted = catch_unwind(|| panic!("task {n} broke")).unwrap_err();
        assert_eq!(panic_message(&*formatted), "task 3 broke");
        let literal = catch_unwind(|| panic!("broke")).unwrap_err();
        assert_eq!(panic_message(&*literal), "broke");
        let other = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(&*other), "");
    }
}
