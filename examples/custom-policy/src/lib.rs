//! Two runner patches one might want to try on a recorded workload before sending them,
//! written with nothing but `refgate_replay`'s public policy API (docs/writing-a-policy.md):
//!
//! - [`SeedBatched`] (`seed-batched`): the 3.9 seed gate, but `__btrfs_end_transaction` runs a
//!   handle's refs only once the queue is long — a 3.x patch that changes one hook and takes
//!   the rest of 3.9 from [`V3Policy`]; its runs are counted for a caller of its own.
//! - [`ModernEagerPreempt`] (`modern-eager-preempt`): 6.x, with the preemptive reclaim worker
//!   flushing half the reservation where the kernel's flushes a quarter — a 6.x patch that
//!   replaces one of the kernel's workers with its own and delegates everything else to
//!   [`Modern`].

use refgate_replay::policy::context::*;
use refgate_replay::policy::{Modern, Registry};

/// The queue length (`delayed_refs->num_entries`) from which [`SeedBatched`]'s handle ends
/// run refs. Below it a handle leaves its refs to a later handle or to the commit.
pub const BATCH_ENTRIES: u64 = 1024;

/// The runs [`SeedBatched`]'s handle ends make.
pub const BATCHED_HANDLE_END: Caller = Caller::task("batched_handle_end");

/// The seed gate with a batching rule at handle end (see the crate docs).
pub struct SeedBatched;

/// [`SeedBatched`]'s registry entry.
pub static SEED_BATCHED: PolicyInfo = PolicyInfo {
    name: "seed-batched",
    aliases: &[],
    kernels: "3.9 + patch",
    about: "the seed gate, but a handle end runs its refs only once 1024 entries are queued",
    headline: false,
    make: || Box::new(SeedBatched),
};

impl V3Policy for SeedBatched {
    const INFO: &'static PolicyInfo = &SEED_BATCHED;
    const GATING: Gating = Gating::Seed;
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        if fs.num_entries_racy() < BATCH_ENTRIES {
            // The handle's tree-mod seq goes back as in every 3.x handle end (§1.6); its
            // updates stay queued for whoever runs next.
            fs.tree_mod.put(&mut h.seq_elem);
            h.delayed_ref_updates = 0;
            return Ok(());
        }
        w.caller = BATCHED_HANDLE_END;
        // 3.9's `while (count < 1)` loop (§2.8), through the seed gate.
        end_transaction_v3(fs, w, h, 1, Self::GATING)
    }
}

/// [`ModernEagerPreempt`]'s preemptive worker.
pub const EAGER_PREEMPT: WorkerKind = WorkerKind {
    name: "eager preemptive reclaim worker",
    caller: Caller::kernel_worker("eager_preemptive_reclaim"),
};

/// 6.x with an eager preemptive reclaim worker (see the crate docs).
pub struct ModernEagerPreempt;

/// [`ModernEagerPreempt`]'s registry entry.
pub static MODERN_EAGER_PREEMPT: PolicyInfo = PolicyInfo {
    name: "modern-eager-preempt",
    aliases: &[],
    kernels: "6.18 + patch",
    about: "modern, but preemptive reclaim flushes half the reservation instead of a quarter",
    headline: false,
    make: || Box::new(ModernEagerPreempt),
};

impl Policy for ModernEagerPreempt {
    fn info(&self) -> &'static PolicyInfo {
        &MODERN_EAGER_PREEMPT
    }
    fn era(&self) -> Era {
        Modern.era()
    }
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.end_transaction(fs, w, h)
    }
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError> {
        Modern.should_end_transaction(fs, w, h)
    }
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.commit_pre(fs, w, h)
    }
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Modern.commit_exclusive(fs, w, h)
    }
    fn run_explicit(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
        arg: u64,
    ) -> Result<u64, ModelError> {
        Modern.run_explicit(fs, w, h, arg)
    }
    fn workers(&self) -> &'static [WorkerKind] {
        &[Modern::ASYNC_RECLAIM, EAGER_PREEMPT]
    }
    fn run_worker(&self, fs: &FsModel, w: &mut Worker, kind: WorkerKind) -> Result<(), ModelError> {
        if kind != EAGER_PREEMPT {
            return Modern.run_worker(fs, w, kind);
        }
        // The kernel's preemptive worker (`btrfs_preempt_reclaim_metadata_space`) asks for a
        // quarter of the reservation; this patch asks for twice that.
        while let Flush::Bytes(quarter) = fs.space.next_preemptive_flush() {
            // `btrfs_join_transaction_nostart`: not while a commit is exclusive.
            if !fs.space.join() {
                fs.space.wait_commit();
                continue;
            }
            let mut h = TransHandle::default();
            let ran = run_delayed_refs_modern(fs, w, &mut h, quarter.saturating_mul(2));
            fs.space.leave();
            if ran? == 0 {
                // Every head is another runner's: let them work.
                cond_resched();
            }
        }
        Ok(())
    }
}

/// The built-in policies plus this crate's two.
pub fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register(&SEED_BATCHED).expect("a name of its own");
    r.register(&MODERN_EAGER_PREEMPT)
        .expect("a name of its own");
    r
}
