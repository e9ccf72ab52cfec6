//! SEED+THROTTLE: 3.11–3.13 (spec §4.1, §7.3) — the seed's gate with both thresholds replaced
//! by `btrfs_should_throttle_delayed_refs()` (stood in for by a `num_heads_ready` bound, see
//! `Params::throttle_311_ready_heads`), `flushing` making gated callers return at once, and
//! handle ends running `max(updates, 1)` only when throttled.

// Only what a policy outside the crate has (the policy API, `context`).
use super::context::*;

/// The SEED+THROTTLE policy (3.11–3.13, §4.1, §7.3; see the module docs).
pub struct SeedThrottle;

pub(super) static INFO: PolicyInfo = PolicyInfo {
    name: "seed-throttle",
    aliases: &["3.11", "3.12", "3.13"],
    kernels: "3.11–3.13",
    about: "the seed's gate with btrfs_should_throttle_delayed_refs() as its thresholds; handle \
            ends run refs only when throttled (§4.1)",
    headline: false,
    make: || Box::new(SeedThrottle),
};

impl V3Policy for SeedThrottle {
    const INFO: &'static PolicyInfo = &INFO;
    /// The K3.11 gate (§4.1): give up on `flushing || !should_throttle()`; throttled callers
    /// stop on `!should_throttle()`. Commit-time (run_most/run_all) calls bypass it as in 3.9.
    const GATING: Gating = Gating::Throttle311;
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // K3.11 (§4.1): one call of `max(cur, 1)`, only if throttled; no 64-ready-heads test.
        fs.tree_mod.put(&mut h.seq_elem);
        let cur = std::mem::take(&mut h.delayed_ref_updates);
        if should_throttle_311(fs) {
            run_delayed_refs_with(fs, w, h, RunCount::Nodes(cur.max(1)), Self::GATING)?;
        }
        Ok(())
    }
}
