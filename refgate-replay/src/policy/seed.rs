//! SEED: 3.9/3.10 (spec §2.3, §3) — PRE plus the `procs_running_refs` gate, `ref_seq`
//! accounting and wake-all at runner exit. run_all/run_most callers bypass the gate.

use super::Policy;
use super::pre::{commit_pre_v3, end_transaction_v3, should_end_v3};
use crate::error::ModelError;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};
use crate::run_v3::{RunCount, run_delayed_refs};

pub struct Seed;

impl Policy for Seed {
    fn name(&self) -> &'static str {
        "seed"
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
        // K3.9 loops `while (count < 1)` (§2.8).
        end_transaction_v3(fs, w, h, fs.params.end_trans_loops.unwrap_or(1), true)
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        should_end_v3(fs, w, h, true)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        commit_pre_v3(fs, w, h, true)
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs(fs, w, h, RunCount::All, true).map(|_| ())
    }
}
