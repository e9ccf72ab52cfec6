//! PRE: the 3.7.2/3.8.13 runner (spec §3) — every ending handle with updates runs refs while
//! more than 64 heads are ready; no admission control.

// Only what a policy outside the crate has (the policy API, `context`).
use super::context::*;

/// The PRE policy (3.7–3.8, §3; see the module docs).
pub struct Pre;

pub(super) static INFO: PolicyInfo = PolicyInfo {
    name: "pre",
    aliases: &["3.7", "3.8"],
    kernels: "3.7–3.8",
    about: "no admission control: every ending handle with updates runs refs while more than \
            64 heads are ready (§3)",
    headline: true,
    make: || Box::new(Pre),
};

/// `__btrfs_end_transaction` of K3.8/K3.9 (§2.8), shared by PRE and SEED: put the handle's
/// tree-mod seq back, then up to `loops` times run the handle's updates while more than
/// `throttle_ready_heads` heads are ready.
pub fn end_transaction_v3(
    fs: &FsModel,
    w: &mut Worker,
    h: &mut TransHandle,
    loops: u32,
    gating: Gating,
) -> Result<(), ModelError> {
    // `btrfs_delayed_refs_qgroup_accounting` early in the function (§1.6).
    fs.tree_mod.put(&mut h.seq_elem);
    for _ in 0..loops {
        let cur = std::mem::take(&mut h.delayed_ref_updates);
        // `num_heads_ready` is read without the spinlock (§2.8).
        if cur == 0 || fs.num_heads_ready_racy() <= fs.params.throttle_ready_heads {
            break;
        }
        run_delayed_refs_with(fs, w, h, RunCount::Nodes(cur), gating)?;
    }
    Ok(())
}

impl V3Policy for Pre {
    const INFO: &'static PolicyInfo = &INFO;
    /// No gate (§3).
    const GATING: Gating = Gating::None;
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        // K3.8 loops `while (count < 2)` (§2.8).
        end_transaction_v3(
            fs,
            w,
            h,
            fs.params.end_trans_loops.unwrap_or(2),
            Self::GATING,
        )
    }
}
