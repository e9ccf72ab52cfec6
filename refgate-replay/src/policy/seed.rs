//! SEED: 3.9/3.10 (spec §2.3, §3) — PRE plus the `procs_running_refs` gate, `ref_seq`
//! accounting and wake-all at runner exit. run_all/run_most callers bypass the gate.

// Only what a policy outside the crate has (the policy API, `context`).
use super::context::*;

/// The SEED policy (3.9–3.10, §2.3, §3; see the module docs).
pub struct Seed;

pub(super) static INFO: PolicyInfo = PolicyInfo {
    name: "seed",
    aliases: &["3.9", "3.10"],
    kernels: "3.9–3.10",
    about: "the seed commit's cmpxchg gate on procs_running_refs and wait queue: one throttled \
            runner at a time, the others return or sleep (§2.3)",
    headline: true,
    make: || Box::new(Seed),
};

impl V3Policy for Seed {
    const INFO: &'static PolicyInfo = &INFO;
    /// The §2.3 gate: give up below 16348 entries; throttled callers stop below 64 ready heads.
    const GATING: Gating = Gating::Seed;
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // K3.9 loops `while (count < 1)` (§2.8).
        end_transaction_v3(
            fs,
            w,
            h,
            fs.params.end_trans_loops.unwrap_or(1),
            Self::GATING,
        )
    }
}
