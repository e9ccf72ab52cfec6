//! SEED+THROTTLE: 3.11–3.13 (spec §4.1, §7.3) — the seed's gate with both thresholds replaced
//! by `btrfs_should_throttle_delayed_refs()` (stood in for by a `num_heads_ready` bound, see
//! `Params::throttle_311_ready_heads`), `flushing` making gated callers return at once, and
//! handle ends running `max(updates, 1)` only when throttled.

use super::Policy;
use super::pre::commit_pre_v3;
use crate::error::ModelError;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};
use crate::run_v3::{Gating, RunCount, run_delayed_refs_with, should_throttle_311};
use std::sync::atomic::Ordering;

pub struct SeedThrottle;

impl Policy for SeedThrottle {
    fn name(&self) -> &'static str {
        "seed-throttle"
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
        fs.tree_mod.put(&mut h.seq_elem);
        let cur = std::mem::take(&mut h.delayed_ref_updates);
        if should_throttle_311(fs) {
            run_delayed_refs_with(fs, w, h, RunCount::Nodes(cur.max(1)), Gating::Throttle311)?;
        }
        Ok(())
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        if fs.root.flushing.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let updates = std::mem::take(&mut h.delayed_ref_updates);
        if updates > 0 {
            run_delayed_refs_with(fs, w, h, RunCount::Nodes(updates), Gating::Throttle311)?;
        }
        Ok(false)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // run_most callers bypass the gate in every gated era; same calls as 3.9.
        commit_pre_v3(fs, w, h, true)
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs_with(fs, w, h, RunCount::All, Gating::Throttle311).map(|_| ())
    }
}
