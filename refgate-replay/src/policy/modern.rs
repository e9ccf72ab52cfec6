//! MODERN: 6.7+ (spec §4.5–4.7) — no running at handle end; one pre-flush committer with `0`,
//! the exclusive commit with `U64_MAX`, and a single space flusher with `min_bytes`.

use super::Policy;
use crate::error::ModelError;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};
use crate::run_modern::run_delayed_refs;
use std::sync::atomic::Ordering;

pub struct Modern;

impl Modern {
    /// The preemptive reclaim worker stand-in (§4.7): when the queued refs' reservation
    /// outgrows the threshold, one task at a time runs `FLUSH_DELAYED_REFS_NR` with a
    /// quarter of the reserved bytes.
    fn maybe_flush_space(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        let entries = fs.num_entries_racy();
        if entries < fs.params.modern_flush_entries {
            return Ok(());
        }
        if fs.space_flusher_busy.swap(true, Ordering::Acquire) {
            return Ok(());
        }
        let reserved = entries * fs.params.delayed_ref_bytes;
        let r = run_delayed_refs(fs, w, h, (reserved / 4).max(1));
        fs.space_flusher_busy.store(false, Ordering::Release);
        r.map(|_| ())
    }
}

impl Policy for Modern {
    fn name(&self) -> &'static str {
        "modern"
    }
    fn era(&self) -> Era {
        Era::Modern
    }
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // `__btrfs_end_transaction` runs no delayed refs since 5.0; the space flusher is what
        // a reservation made by this task would have kicked.
        h.delayed_ref_updates = 0;
        self.maybe_flush_space(fs, w, h)
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        _w: &mut Worker,
        _h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        // Ends if FLUSHING is set or the delayed-refs reservation looks too big (§4.7).
        Ok(fs.root.flushing.load(Ordering::Relaxed)
            || fs.num_entries_racy() >= fs.params.modern_flush_entries)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // Exactly one committer pre-flushes (`test_and_set_bit(BTRFS_DELAYED_REFS_FLUSHING)`).
        if !fs.root.flushing.swap(true, Ordering::AcqRel) {
            run_delayed_refs(fs, w, h, 0)?;
        }
        Ok(())
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs(fs, w, h, u64::MAX).map(|_| ())
    }
}
