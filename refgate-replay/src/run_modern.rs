//! The 6.7+ runner (spec §4.4–§4.6): per-head `processing` claims from the shared cursor,
//! `btrfs_run_delayed_refs_for_head`, `cleanup_ref_head`, driven by `min_bytes`.

use crate::cost::Cost;
use crate::error::ModelError;
use crate::exec;
use crate::extent_tree::RunRef;
use crate::head::{HeadInner, LockedHead};
use crate::live::ThreadState;
use crate::refkey::Era;
use crate::root::{FsModel, HeadLock, TransHandle, Worker};
use crate::spinlock::SpinGuard;
use std::sync::atomic::Ordering;

/// `btrfs_select_ref_head` (§4.4): claim the first unclaimed head at/after the cursor
/// (wrapping once), then take its mutex. `Some(None)` is `-EAGAIN`.
pub fn btrfs_select_ref_head(fs: &FsModel, w: &mut Worker) -> Option<Option<LockedHead>> {
    let mut g = fs.lock_root(w);
    let mut start = g.c.run_delayed_start;
    let mut walked = 0u64;
    let head = loop {
        let found = g
            .heads
            .range(start..)
            .map(|(_, h)| h)
            .inspect(|_| walked += 1)
            .find(|h| !h.claimed())
            .cloned();
        match found {
            Some(h) => break h,
            None if start == 0 => return None,
            None => {
                start = 0;
                g.c.run_delayed_start = 0;
            }
        }
    };
    // Heads looked at under `delayed_refs->lock`, counted as 3.x's cluster walk is.
    w.m.nodes_walked += walked;
    fs.charge(Cost::WalkNode, walked);
    head.set_claimed(true);
    g.c.num_heads_ready -= 1;
    let num_bytes = fs.lock_head(&head, w).num_bytes;
    g.c.run_delayed_start = head.bytenr + num_bytes;
    fs.publish(&g.c);
    match fs.delayed_ref_lock(w, g, &head) {
        HeadLock::Locked(g, locked) => {
            drop(g);
            Some(Some(locked))
        }
        HeadLock::Gone(g) => {
            drop(g);
            Some(None)
        }
    }
}

/// `__btrfs_run_delayed_refs(trans, min_bytes)` (§4.5). Returns bytes of reservation released.
fn run_delayed_refs_once(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    min_bytes: u64,
) -> Result<u64, ModelError> {
    let (mut min_bytes, mut max_count) = (min_bytes, 0u64);
    if min_bytes == 0 {
        // Only the heads that exist now (racy snapshot, as in the kernel).
        max_count = fs.num_heads_ready_racy();
        min_bytes = u64::MAX;
    }
    let mut count = 0u64;
    let mut bytes = 0u64;
    while let Some(ran) = run_next_head(fs, w, h)? {
        count += 1;
        bytes += ran;
        if !((min_bytes != u64::MAX && bytes < min_bytes) || (max_count != 0 && count < max_count))
        {
            break;
        }
    }
    Ok(bytes)
}

/// One head of `__btrfs_run_delayed_refs`'s loop (§4.5): `btrfs_select_ref_head` ("select
/// again" on `-EAGAIN`), then `btrfs_run_delayed_refs_for_head` and `cleanup_ref_head` until
/// the head is deleted. Returns the reservation bytes released, or `None` when every head left
/// is claimed by another runner. For policies that drive the 6.x runner head by head (as 4.20's
/// split made possible): its refs count for the worker's `caller`, but it is not a
/// `btrfs_run_delayed_refs` call of its own (no `run_calls` entry).
pub fn run_next_head(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
) -> Result<Option<u64>, ModelError> {
    let head = loop {
        match btrfs_select_ref_head(fs, w) {
            None => return Ok(None),
            Some(None) => continue,
            Some(Some(l)) => break l,
        }
    };
    let mut bytes = 0u64;
    loop {
        let (ran, hi) = btrfs_run_delayed_refs_for_head(fs, w, h, &head)?;
        bytes += ran;
        match cleanup_ref_head(fs, w, &head, hi)? {
            // Return 1: loop again on the same head.
            Cleanup::Again => continue,
            // Its mutex goes with it.
            Cleanup::Deleted => return Ok(Some(bytes)),
        }
    }
}

/// `btrfs_run_delayed_refs_for_head` (§4.4): merge, then run the head's refs one by one
/// (ADDs first), each outside the head's spinlock; returns the reservation bytes released,
/// with the head's spinlock held for `cleanup_ref_head`.
fn btrfs_run_delayed_refs_for_head<'h>(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    head: &'h LockedHead,
) -> Result<(u64, SpinGuard<'h, HeadInner>), ModelError> {
    let era = Era::Modern;
    let mut bytes = 0u64;
    let mut hi = fs.lock_head(head, w);
    let fence = fs.tree_mod.lowest();
    loop {
        let dropped = hi.merge_delayed_refs(era, fence);
        if dropped > 0 {
            w.m.run_merges += dropped;
            h.dec_updates(dropped);
            fs.root.num_entries.fetch_sub(dropped, Ordering::Relaxed);
        }
        let Some(k) = hi.select_delayed_ref(era) else {
            return Ok((bytes, hi));
        };
        fs.charge(Cost::SelectRef, 1);
        // No tree-mod-log users in the modern model ⇒ nothing is held back by seq.
        let n = hi.erase_ref(&k);
        let give = hi.rsv_refs.min(1);
        hi.rsv_refs -= give;
        let must_insert = std::mem::take(&mut hi.must_insert_reserved);
        let op = hi.extent_op.take();
        let num_bytes = hi.num_bytes;
        drop(hi);
        fs.root.num_entries.fetch_sub(1, Ordering::Relaxed);
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
        bytes += fs.params.delayed_ref_bytes;
        // `btrfs_delayed_refs_rsv_release` for the ref just run (§4.7).
        fs.space.release(give * fs.params.delayed_ref_bytes);
        hi = fs.lock_head(head, w);
    }
}

/// What `cleanup_ref_head` did.
enum Cleanup {
    /// An extent op ran, or refs came back: run the same head again (return 1).
    Again,
    /// The head left the tree: the caller releases its mutex.
    Deleted,
}

/// `cleanup_ref_head` (§4.4), entered with the head's spinlock: run a remaining extent op,
/// else delete the head (`btrfs_delete_ref_head`) unless refs or an op reappeared meanwhile.
fn cleanup_ref_head(
    fs: &FsModel,
    w: &mut Worker,
    head: &LockedHead,
    mut hi: SpinGuard<'_, HeadInner>,
) -> Result<Cleanup, ModelError> {
    if hi.extent_op.is_some() && !hi.must_insert_reserved {
        let op = hi.extent_op.take().expect("checked");
        drop(hi);
        fs.run_extent_op(w, head.bytenr, op)?;
        return Ok(Cleanup::Again);
    }
    drop(hi);
    let mut g = fs.lock_root(w);
    let mut hi = fs.lock_head(head, w);
    if !hi.refs.is_empty() || (hi.extent_op.is_some() && !hi.must_insert_reserved) {
        // Refs or an op reappeared meanwhile.
        return Ok(Cleanup::Again);
    }
    // `btrfs_delete_ref_head`: processing ⇒ num_heads_ready was already taken.
    hi.extent_op = None;
    fs.charge(Cost::DeleteHead, 1);
    g.heads.remove(&head.bytenr);
    head.set_in_tree(false);
    g.c.num_heads -= 1;
    fs.root.num_entries.fetch_sub(1, Ordering::Relaxed);
    fs.publish(&g.c);
    let must_insert = std::mem::take(&mut hi.must_insert_reserved);
    let num_bytes = hi.num_bytes;
    // What merged or cancelled refs had reserved leaves with the head.
    let rest = std::mem::take(&mut hi.rsv_refs);
    drop(hi);
    drop(g);
    fs.space.release(rest * fs.params.delayed_ref_bytes);
    if must_insert {
        fs.extent_tree
            .pin(head.bytenr, num_bytes, &mut w.m, fs.ws(w.id));
    }
    w.m.head_run(fs.txn());
    Ok(Cleanup::Deleted)
}

/// K6.7+ `btrfs_run_delayed_refs(trans, min_bytes)` (§4.6): `u64::MAX` runs until the queue
/// is empty (polling with `cond_resched` while other tasks hold the remaining heads), `0`
/// runs the heads that exist now, `N` releases at least N bytes of reservation.
pub fn run_delayed_refs(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    min_bytes: u64,
) -> Result<u64, ModelError> {
    let t0 = exec::now_ns();
    let prev = w.set_state(ThreadState::RunningRefs);
    let r = (|| {
        if min_bytes != u64::MAX {
            return run_delayed_refs_once(fs, w, h, min_bytes);
        }
        let mut bytes = 0;
        loop {
            bytes += run_delayed_refs_once(fs, w, h, u64::MAX)?;
            let g = fs.lock_root(w);
            if g.heads.is_empty() {
                return Ok(bytes);
            }
            drop(g);
            exec::cond_resched();
        }
    })();
    w.m.run_calls.record(exec::now_ns() - t0);
    exec::run_call_done(t0, fs.ws(w.id), fs.num_entries_racy());
    w.m.run_calls_by_caller.add(w.caller);
    w.set_state(prev);
    r
}
