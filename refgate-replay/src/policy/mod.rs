//! Runner policies (spec §3, §2.3, §4.5–4.7, §7.3): *who* runs delayed refs and *when*. The
//! runner machinery itself is shared ([`crate::run_v3`], [`crate::run_modern`]).

mod modern;
mod pre;
mod seed;
mod seed_throttle;

pub use modern::Modern;
pub use pre::Pre;
pub use seed::Seed;
pub use seed_throttle::SeedThrottle;

use crate::error::ModelError;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};

/// The hooks the engine calls at the points where the kernel decides to run refs.
pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    /// Which data structures and orders the model follows under this policy.
    fn era(&self) -> Era;
    /// `__btrfs_end_transaction` (§2.8, §4.7).
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError>;
    /// `btrfs_should_end_transaction`, polled by long-running operations (§2.8, §4.7).
    fn should_end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<bool, ModelError>;
    /// The part of `btrfs_commit_transaction` every committer runs while other writers
    /// may still be active (§2.8 run_most ×2; §4.7 the single pre-flush).
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError>;
    /// The exclusive phase (all writers parked): run everything (§2.8 −1, §4.7 U64_MAX).
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError>;
}

/// Policy names accepted by [`by_name`].
pub const NAMES: [&str; 3] = ["pre", "seed", "modern"];

/// Optional variants, also accepted by [`by_name`] (not in [`NAMES`], so callers that
/// sweep the main three are unaffected).
pub const EXTRA_NAMES: [&str; 1] = ["seed-throttle"];

/// `pre` (3.7/3.8), `seed` (3.9/3.10), `modern` (6.7+), `seed-throttle` (3.11–3.13).
pub fn by_name(name: &str) -> Option<Box<dyn Policy>> {
    match name {
        "pre" => Some(Box::new(Pre)),
        "seed" => Some(Box::new(Seed)),
        "modern" => Some(Box::new(Modern)),
        "seed-throttle" => Some(Box::new(SeedThrottle)),
        _ => None,
    }
}
