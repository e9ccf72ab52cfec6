//! PRE: the 3.7.2/3.8.13 runner (spec §3) — every ending handle with updates runs refs while
//! more than 64 heads are ready; no admission control.

use super::Policy;
use crate::error::ModelError;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};
use crate::run_v3::{RunCount, run_delayed_refs};
use std::sync::atomic::Ordering;

pub struct Pre;

/// `__btrfs_end_transaction` of K3.8/K3.9 (§2.8), shared by PRE and SEED.
pub(crate) fn end_transaction_v3(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    loops: u32,
    gated: bool,
) -> Result<(), ModelError> {
    // `btrfs_delayed_refs_qgroup_accounting` early in the function (§1.6).
    fs.tree_mod.put(&mut h.seq_elem);
    for _ in 0..loops {
        let cur = std::mem::take(&mut h.delayed_ref_updates);
        // `num_heads_ready` is read without the spinlock (§2.8).
        if cur == 0 || fs.num_heads_ready_racy() <= fs.params.throttle_ready_heads {
            break;
        }
        run_delayed_refs(fs, w, h, RunCount::Nodes(cur), gated)?;
    }
    Ok(())
}

/// `btrfs_should_end_transaction` of K3.8 (§2.8): end if the commit is flushing; otherwise
/// run this handle's updates (throttled call) and carry on.
pub(crate) fn should_end_v3(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    gated: bool,
) -> Result<bool, ModelError> {
    if fs.root.flushing.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let updates = std::mem::take(&mut h.delayed_ref_updates);
    if updates > 0 {
        run_delayed_refs(fs, w, h, RunCount::Nodes(updates), gated)?;
    }
    Ok(false)
}

/// `btrfs_commit_transaction` before the "already committing" check (§2.8): run_most,
/// set `flushing`, run_most again — by every committer.
pub(crate) fn commit_pre_v3(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    gated: bool,
) -> Result<(), ModelError> {
    run_delayed_refs(fs, w, h, RunCount::Most, gated)?;
    fs.root.flushing.store(true, Ordering::Relaxed);
    run_delayed_refs(fs, w, h, RunCount::Most, gated)?;
    Ok(())
}

impl Policy for Pre {
    fn name(&self) -> &'static str {
        "pre"
    }
    fn era(&self) -> Era {
        Era::V3
    }
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        end_transaction_v3(fs, w, h, fs.params.end_trans_loops.unwrap_or(2), false)
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        should_end_v3(fs, w, h, false)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        commit_pre_v3(fs, w, h, false)
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs(fs, w, h, RunCount::All, false).map(|_| ())
    }
}
