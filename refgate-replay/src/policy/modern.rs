//! MODERN: 6.7+ (spec §4.5–4.7) — no running at handle end; writers reserve
//! `delayed_refs_rsv` space and wait on tickets when it runs out; the async and preemptive
//! metadata reclaim workers run `FLUSH_DELAYED_REFS_NR` / `FLUSH_DELAYED_REFS`; one pre-flush
//! committer runs `0`, the exclusive commit `U64_MAX`.

// Only what a policy outside the crate has (the policy API, `context`).
use super::context::*;
use std::sync::atomic::Ordering;

/// The MODERN policy (6.7+, §4.5–4.7; see the module docs).
pub struct Modern;

impl Modern {
    /// `btrfs_async_reclaim_metadata_space`: flushes for waiting tickets.
    pub const ASYNC_RECLAIM: WorkerKind = WorkerKind {
        name: "async reclaim worker",
        caller: Caller::ASYNC_RECLAIM,
    };
    /// `btrfs_preempt_reclaim_metadata_space`: flushes before anyone has to wait.
    pub const PREEMPTIVE_RECLAIM: WorkerKind = WorkerKind {
        name: "preemptive reclaim worker",
        caller: Caller::PREEMPTIVE_RECLAIM,
    };
}

pub(super) static INFO: PolicyInfo = PolicyInfo {
    name: "modern",
    aliases: &[
        "6.7", "6.8", "6.9", "6.10", "6.11", "6.12", "6.13", "6.14", "6.15", "6.16", "6.17", "6.18",
    ],
    kernels: "6.7–6.18",
    about: "no running at handle end: space-reservation tickets, the async and preemptive \
            reclaim workers, one pre-flushing committer (§4.5–4.7)",
    headline: true,
    make: || Box::new(Modern),
};

impl Policy for Modern {
    fn info(&self) -> &'static PolicyInfo {
        &INFO
    }
    fn era(&self) -> Era {
        Era::Modern
    }
    fn end_transaction(
        &self,
        _fs: &FsModel,
        _w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // `__btrfs_end_transaction` runs no delayed refs since 5.0 (§4.7).
        h.delayed_ref_updates = 0;
        Ok(())
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        _w: &mut Worker,
        _h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        // Ends if FLUSHING is set or the reservation no longer fits (writers wait, §4.7).
        Ok(fs.root.flushing.load(Ordering::Relaxed) || fs.space.waiting() > 0)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // Exactly one committer pre-flushes (`test_and_set_bit(BTRFS_DELAYED_REFS_FLUSHING)`).
        if !fs.root.flushing.swap(true, Ordering::AcqRel) {
            run_delayed_refs_modern(fs, w, h, 0)?;
        }
        Ok(())
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // The workers' joined transactions have ended (num_writers): `exclusive_commit`
        // blocks their joins around this phase for every policy.
        run_delayed_refs_modern(fs, w, h, u64::MAX).map(|_| ())
    }
    fn run_explicit(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
        arg: u64,
    ) -> Result<u64, ModelError> {
        run_delayed_refs_modern(fs, w, h, arg)
    }
    fn workers(&self) -> &'static [WorkerKind] {
        &[Modern::ASYNC_RECLAIM, Modern::PREEMPTIVE_RECLAIM]
    }
    fn run_worker(&self, fs: &FsModel, w: &mut Worker, kind: WorkerKind) -> Result<(), ModelError> {
        loop {
            let flush = if kind == Modern::ASYNC_RECLAIM {
                fs.space.next_async_flush()
            } else {
                fs.space.next_preemptive_flush()
            };
            let Flush::Bytes(bytes) = flush else {
                return Ok(());
            };
            // `btrfs_join_transaction_nostart`: not while a commit is exclusive.
            if !fs.space.join() {
                fs.space.wait_commit();
                continue;
            }
            let mut h = TransHandle::default();
            let ran = run_delayed_refs_modern(fs, w, &mut h, bytes).and_then(|a| {
                if flushes_all_heads_next(kind, fs.space.waiting()) {
                    run_delayed_refs_modern(fs, w, &mut h, 0).map(|b| a + b)
                } else {
                    Ok(a)
                }
            });
            fs.space.leave();
            if ran? == 0 {
                // Nothing could run (every head is another runner's): let them work.
                cond_resched();
            }
        }
    }
}

/// Whether a reclaim worker, its `FLUSH_DELAYED_REFS_NR` step done, goes on to the next
/// flush state, `FLUSH_DELAYED_REFS` (all heads now, `min_bytes` 0): only the async worker
/// flushes for tickets, and only while some still wait (§4.7,
/// `btrfs_async_reclaim_metadata_space`; the preemptive worker stops after its ¼ step).
fn flushes_all_heads_next(kind: WorkerKind, tickets_waiting: u64) -> bool {
    kind == Modern::ASYNC_RECLAIM && tickets_waiting > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_async_worker_flushes_all_heads_and_only_for_waiting_tickets() {
        const ASYNC: WorkerKind = Modern::ASYNC_RECLAIM;
        const PREEMPTIVE: WorkerKind = Modern::PREEMPTIVE_RECLAIM;
        assert!(flushes_all_heads_next(ASYNC, 1));
        assert!(flushes_all_heads_next(ASYNC, 3));
        assert!(!flushes_all_heads_next(ASYNC, 0));
        assert!(!flushes_all_heads_next(PREEMPTIVE, 1));
        assert!(!flushes_all_heads_next(PREEMPTIVE, 0));
    }
}
