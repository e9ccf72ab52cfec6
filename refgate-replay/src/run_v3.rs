//! The 3.7–3.10 runner (spec §2): `btrfs_run_delayed_refs` with the shared cursor and
//! 32-head clusters, `run_clustered_refs`, and (when gated) the seed's admission gate.

use crate::cost::Cost;
use crate::error::ModelError;
use crate::exec;
use crate::extent_tree::RunRef;
use crate::gate::GateEntry;
use crate::head::{DelayedRefHead, ExtentOp, LockedHead};
use crate::live::ThreadState;
use crate::refkey::Era;
use crate::root::{FsModel, HeadLock, RootInner, TransHandle, Worker};
use crate::spinlock::SpinGuard;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The `count` argument of K3.6–K3.13 `btrfs_run_delayed_refs` (§6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunCount {
    /// `(unsigned long)-1`: until the tree is empty.
    All,
    /// `0`: budget `2 × num_entries`, ignores the 64-ready-heads floor.
    Most,
    /// A positive node budget, checked per cluster; subject to the gate when gated.
    Nodes(u64),
}

/// Which admission rules a v3.x runner follows (§2.3, §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gating {
    /// 3.7/3.8: no gate; throttled callers stop below 64 ready heads.
    None,
    /// 3.9/3.10: the gate with `num_entries < 16348` and the 64-ready-heads floor.
    Seed,
    /// 3.11–3.13: the gate with `flushing || !should_throttle()` as the give-up test and
    /// `!should_throttle()` as the throttled callers' stop condition.
    Throttle311,
}

/// K3.11 `btrfs_should_throttle_delayed_refs` stand-in (see `Params::throttle_311_ready_heads`).
pub fn should_throttle_311(fs: &FsModel) -> bool {
    fs.num_heads_ready_racy() >= fs.params.throttle_311_ready_heads
}

/// `btrfs_find_ref_cluster` (§2.2), lock held. Claims up to `cluster_heads` contiguous
/// unclaimed heads starting after `start`, advancing the shared cursor.
pub fn btrfs_find_ref_cluster(
    fs: &FsModel,
    w: &mut Worker,
    g: &mut RootInner,
    start: u64,
) -> VecDeque<Arc<DelayedRefHead>> {
    let max = fs.params.cluster_heads.max(1);
    let mut cluster = VecDeque::new();
    let mut walked = 0u64;
    let mut from = start;
    loop {
        let RootInner { heads, c } = &mut *g;
        let range = if from == 0 {
            heads.range(..)
        } else {
            heads.range(from + 1..)
        };
        let mut first = true;
        for (&bytenr, head) in range {
            // Every ref node before a head is walked over too (one rbtree for both), except
            // those of the head we landed on by search.
            if !first {
                walked += head.lock.lock(&mut w.m.head_lock, fs.ws(w.id)).refs.len() as u64;
            }
            first = false;
            walked += 1;
            if !head.claimed() {
                head.set_claimed(true);
                c.run_delayed_start = bytenr;
                c.num_heads_ready -= 1;
                cluster.push_back(head.clone());
                if cluster.len() == max {
                    break;
                }
            } else if !cluster.is_empty() {
                // Keep the cluster contiguous.
                break;
            }
        }
        if cluster.is_empty() && from != 0 {
            from = 0;
            continue;
        }
        break;
    }
    w.m.nodes_walked += walked;
    fs.charge(Cost::WalkNode, walked);
    fs.publish(&g.c);
    cluster
}

/// What one pass over a cluster's locked head did (§2.4).
enum HeadStep {
    /// Its extent op ran (`goto next`): the head stays locked and is visited again.
    ExtentOp(LockedHead),
    /// One ref node ran; the head stays locked for the next.
    RefRun(LockedHead),
    /// The head itself ran and left the tree (its mutex released).
    HeadRun,
    /// Its next ref is held back by a tree-mod seq: the head goes back (§1.6).
    HeldBack,
}

type Locked<'a> = SpinGuard<'a, RootInner>;

/// `run_clustered_refs` (§2.4): lock held on entry and exit; returns nodes run.
fn run_clustered_refs<'a>(
    fs: &'a FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    mut g: Locked<'a>,
    mut cluster: VecDeque<Arc<DelayedRefHead>>,
) -> Result<(u64, Locked<'a>), ModelError> {
    let mut count = 0u64;
    let mut locked: Option<LockedHead> = None;
    loop {
        let head = match locked.take() {
            Some(l) => l,
            None => {
                let Some(hd) = cluster.front().cloned() else {
                    break;
                };
                // Step 1.
                match fs.delayed_ref_lock(w, g, &hd) {
                    HeadLock::Locked(ng, l) => {
                        g = ng;
                        l
                    }
                    HeadLock::Gone(ng) => {
                        // Whoever removed it unlinked it from our cluster (§2.4 step 1).
                        g = ng;
                        cluster.pop_front();
                        count += 1;
                        continue;
                    }
                }
            }
        };
        let (step, ng) = run_cluster_head(fs, w, h, g, head)?;
        g = ng;
        match step {
            HeadStep::ExtentOp(l) => locked = Some(l),
            HeadStep::RefRun(l) => {
                locked = Some(l);
                count += 1;
            }
            HeadStep::HeadRun => {
                cluster.pop_front();
                count += 1;
            }
            HeadStep::HeldBack => {
                cluster.pop_front();
            }
        }
    }
    Ok((count, g))
}

/// Steps 2–8 of §2.4 on the cluster's locked head: merge, select, hold back or run the
/// selected ref, or the head itself when no ref is left. Lock held on entry and exit.
fn run_cluster_head<'a>(
    fs: &'a FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    mut g: Locked<'a>,
    head: LockedHead,
) -> Result<(HeadStep, Locked<'a>), ModelError> {
    let era = Era::V3;
    let mut hi = fs.lock_head(&head, w);
    // Step 2: run-time merge, fenced by the oldest tree-mod-seq element (§2.6).
    let fence = if fs.params.seq_holdback {
        fs.tree_mod.lowest()
    } else {
        0
    };
    let dropped = hi.merge_delayed_refs(era, fence);
    if dropped > 0 {
        fs.root.num_entries.fetch_sub(dropped, Ordering::Relaxed);
        h.dec_updates(dropped);
        w.m.run_merges += dropped;
    }
    // Step 3.
    let sel = hi.select_delayed_ref(era);
    fs.charge(Cost::SelectRef, 1);
    // Step 4: seq hold-back gives the head back (§1.6).
    if let Some(k) = sel
        && fs.params.seq_holdback
        && k.seq(era) != 0
        && fs.tree_mod.hold_back(k.seq(era))
    {
        drop(hi);
        head.set_claimed(false);
        drop(head);
        g.c.num_heads_ready += 1;
        fs.publish(&g.c);
        w.m.seq_holdbacks += 1;
        drop(g);
        return Ok((HeadStep::HeldBack, fs.lock_root(w)));
    }
    // Step 5.
    let must_insert = std::mem::take(&mut hi.must_insert_reserved);
    let op = hi.extent_op.take();
    let Some(k) = sel else {
        // Step 6: the head itself; an op on a head inserted with its extent is dropped.
        let num_bytes = hi.num_bytes;
        drop(hi);
        return match op.filter(|_| !must_insert) {
            Some(op) => run_head_extent_op(fs, w, g, head, op),
            None => Ok((
                HeadStep::HeadRun,
                erase_head(fs, w, g, head, must_insert, num_bytes),
            )),
        };
    };
    // Step 7: erase the ref and correct the head's ref_mod.
    let n = hi.erase_ref(&k);
    let num_bytes = hi.num_bytes;
    drop(hi);
    fs.root.num_entries.fetch_sub(1, Ordering::Relaxed);
    fs.publish(&g.c);
    drop(g);
    // Step 8.
    let rr = RunRef {
        bytenr: head.bytenr,
        num_bytes,
        key: k.backref(era),
        action: n.action,
        ref_mod: n.ref_mod,
        insert_reserved: must_insert,
        extent_op: op,
    };
    fs.run_one_delayed_ref(w, &rr)?;
    Ok((HeadStep::RefRun(head), fs.lock_root(w)))
}

/// §2.4 step 6: `run_delayed_extent_op` on the head, outside `delayed_refs->lock`; the head
/// stays locked and is revisited (`goto next`, not counted).
fn run_head_extent_op<'a>(
    fs: &'a FsModel,
    w: &mut Worker,
    g: Locked<'a>,
    head: LockedHead,
    op: ExtentOp,
) -> Result<(HeadStep, Locked<'a>), ModelError> {
    drop(g);
    fs.run_extent_op(w, head.bytenr, op)?;
    Ok((HeadStep::ExtentOp(head), fs.lock_root(w)))
}

/// §2.4 step 7 for a head with no refs left: erase it (`num_heads` is not decremented,
/// §1.1 item 4), pin an extent allocated and freed in this transaction (§2.7), release the
/// mutex. Returns with `delayed_refs->lock` retaken.
fn erase_head<'a>(
    fs: &'a FsModel,
    w: &mut Worker,
    mut g: Locked<'a>,
    head: LockedHead,
    must_insert: bool,
    num_bytes: u64,
) -> Locked<'a> {
    fs.charge(Cost::DeleteHead, 1);
    g.heads.remove(&head.bytenr);
    head.set_in_tree(false);
    head.set_claimed(false);
    fs.root.num_entries.fetch_sub(1, Ordering::Relaxed);
    fs.publish(&g.c);
    drop(g);
    if must_insert {
        fs.extent_tree
            .pin(head.bytenr, num_bytes, &mut w.m, fs.ws(w.id));
    }
    drop(head);
    w.m.head_run(fs.txn());
    fs.lock_root(w)
}

/// K3.6–K3.10 `btrfs_run_delayed_refs(trans, root, count)` (§2.1). `gated` adds the seed's
/// admission gate and accounting (§2.3). Returns the nodes this call ran.
pub fn run_delayed_refs(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    count: RunCount,
    gated: bool,
) -> Result<u64, ModelError> {
    run_delayed_refs_with(
        fs,
        w,
        h,
        count,
        if gated { Gating::Seed } else { Gating::None },
    )
}

/// [`run_delayed_refs`] with an explicit [`Gating`] (3.11–3.13 variant included).
pub fn run_delayed_refs_with(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    count: RunCount,
    gating: Gating,
) -> Result<u64, ModelError> {
    let t0 = exec::now_ns();
    let prev = w.set_state(ThreadState::RunningRefs);
    let r = run_delayed_refs_inner(fs, w, h, count, gating);
    w.m.run_calls.record(exec::now_ns() - t0);
    exec::run_call_done(t0, fs.ws(w.id), fs.num_entries_racy());
    w.m.run_calls_by_caller.add(w.caller);
    w.set_state(prev);
    r
}

fn run_delayed_refs_inner(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    count: RunCount,
    gating: Gating,
) -> Result<u64, ModelError> {
    let gated = gating != Gating::None;
    // Step 2: `btrfs_delayed_refs_qgroup_accounting` releases our seq element (§1.6).
    fs.tree_mod.put(&mut h.seq_elem);
    // Step 3.
    let run_all = count == RunCount::All;
    let run_most = matches!(count, RunCount::Most | RunCount::Nodes(0));
    let mut count = match count {
        RunCount::All => u64::MAX,
        RunCount::Most | RunCount::Nodes(0) => fs.num_entries_racy() * 2,
        RunCount::Nodes(n) => n,
    };
    let gate = &fs.root.gate;
    // Step 4: the gate (K3.9).
    if gated && !enter_gate(fs, w, gating, run_all || run_most) {
        return Ok(0);
    }
    let res = run_loop(fs, w, h, &mut count, run_all, run_most, gating);
    match res {
        Ok((total, g)) => {
            // Step 8 (`out:`): decrement, barrier, wake all, with the lock held.
            if gated {
                gate.exit(&mut w.m.gate);
                fs.live.procs_running_refs.store(
                    gate.procs_running_refs(),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            drop(g);
            Ok(total)
        }
        Err(e) => {
            // K3.9's error path does not wake; we do (as K3.11 does) so that an aborted
            // replay cannot strand sleepers.
            if gated {
                gate.exit(&mut w.m.gate);
            }
            Err(e)
        }
    }
}

/// §2.1 step 4 / §2.3: run_all and run_most callers bypass the gate (but count in
/// `procs_running_refs`); throttled callers take it, return early, or sleep and maybe retry.
/// False: the caller returns without running (early return, or enough progress meanwhile).
fn enter_gate(fs: &FsModel, w: &mut Worker, gating: Gating, bypass: bool) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let gate = &fs.root.gate;
    if bypass {
        gate.enter_bypass(&mut w.m.gate);
    } else {
        let (live, ws) = (&fs.live, fs.ws(w.id));
        // K3.9/3.10: `num_entries < 16348`; K3.11–3.13: `flushing || !should_throttle()`.
        let seed_give_up = || fs.num_entries_racy() < fs.params.gate_entries_threshold;
        let throttle_give_up = || fs.root.flushing.load(Relaxed) || !should_throttle_311(fs);
        let give_up: &dyn Fn() -> bool = if gating == Gating::Throttle311 {
            &throttle_give_up
        } else {
            &seed_give_up
        };
        let e = gate.enter_throttled_when(
            fs.params.gate_progress_quantum,
            give_up,
            &mut w.m.gate,
            &mut |sleeping| {
                ws.set(if sleeping {
                    ThreadState::SleepingOnGate
                } else {
                    ThreadState::RunningRefs
                });
                live.gate_sleepers.store(gate.sleepers(), Relaxed);
            },
        );
        if e != GateEntry::Run {
            return false;
        }
    }
    fs.live
        .procs_running_refs
        .store(gate.procs_running_refs(), Relaxed);
    true
}

type Out<'a> = (u64, SpinGuard<'a, RootInner>);

fn run_loop<'a>(
    fs: &'a FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    count: &mut u64,
    run_all: bool,
    run_most: bool,
    gating: Gating,
) -> Result<Out<'a>, ModelError> {
    let gated = gating != Gating::None;
    let mut total = 0u64;
    loop {
        // Step 5 (`again:`).
        let mut loops = 0;
        let mut g = fs.lock_root(w);
        loop {
            // Step 6a.
            if !run_all && !run_most {
                let stop = match gating {
                    Gating::Throttle311 => !should_throttle_311(fs),
                    _ => g.c.num_heads_ready < fs.params.throttle_ready_heads,
                };
                if stop {
                    break;
                }
            }
            // Step 6b.
            let delayed_start = g.c.run_delayed_start;
            let start = g.c.run_delayed_start;
            let cluster = btrfs_find_ref_cluster(fs, w, &mut g, start);
            if cluster.is_empty() {
                break;
            }
            // Step 6c.
            let (ret, ng) = run_clustered_refs(fs, w, h, g, cluster)?;
            g = ng;
            total += ret;
            // Step 6d.
            if gated {
                fs.root.gate.add_progress(ret);
            }
            // Step 6e.
            *count -= ret.min(*count);
            if *count == 0 {
                break;
            }
            // Step 6f: stall detection.
            if delayed_start >= g.c.run_delayed_start {
                if loops == 0 {
                    loops = 1;
                } else {
                    if run_all {
                        return Err(ModelError::Bug(
                            "run_all found no runnable refs (§2.1 BUG_ON(run_all))".into(),
                        ));
                    }
                    break;
                }
            }
            if ret > 0 {
                loops = 0;
            }
        }
        if !run_all {
            return Ok((total, g));
        }
        // Step 7: run_all returns only on an empty tree, waiting on the first head's owner.
        if g.heads.is_empty() {
            return Ok((total, g));
        }
        let head = g.heads.values().next().cloned().expect("non-empty");
        drop(g);
        head.mutex_lock(&mut w.m.head_mutex, fs.ws(w.id));
        head.mutex_unlock();
        exec::cond_resched();
    }
}
