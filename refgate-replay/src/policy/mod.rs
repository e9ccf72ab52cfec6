//! Runner policies (spec §3, §2.3, §4.5–4.7, §7.3): *who* runs delayed refs and *when*. The
//! runner machinery itself is shared (`run_v3`, `run_modern`; see [`context`]).
//!
//! # Writing a policy
//!
//! A policy implements [`Policy`]'s hooks with what [`context`] exports, declares itself in
//! a [`PolicyInfo`], and joins a [`Registry`] (the built-in one is [`builtin`]):
//!
//! ```
//! use refgate_replay::policy::context::*;
//! use refgate_replay::policy::{Policy, PolicyInfo, Registry};
//! use refgate_replay::workload::{SynthParams, synthetic};
//! use refgate_replay::{Params, run};
//!
//! /// A 3.x kernel whose writers never run delayed refs: only the commit drains the queue.
//! struct CommitOnly;
//!
//! static COMMIT_ONLY: PolicyInfo = PolicyInfo {
//!     name: "commit-only",
//!     aliases: &[],
//!     kernels: "none (an experiment)",
//!     about: "writers never run refs; btrfs_commit_transaction runs them all",
//!     headline: false,
//!     make: || Box::new(CommitOnly),
//! };
//!
//! impl Policy for CommitOnly {
//!     fn info(&self) -> &'static PolicyInfo {
//!         &COMMIT_ONLY
//!     }
//!     fn era(&self) -> Era {
//!         Era::V3
//!     }
//!     fn end_transaction(&self, fs: &FsModel, _: &mut Worker, h: &mut TransHandle) -> Result<(), ModelError> {
//!         // As every 3.x `__btrfs_end_transaction` does, the handle's tree-mod seq goes back
//!         // (refs queued behind it are held back until then, §1.6); nothing is run here.
//!         fs.tree_mod.put(&mut h.seq_elem);
//!         h.delayed_ref_updates = 0;
//!         Ok(())
//!     }
//!     fn should_end_transaction(&self, _: &FsModel, _: &mut Worker, _: &mut TransHandle) -> Result<bool, ModelError> {
//!         Ok(false)
//!     }
//!     fn commit_pre(&self, _: &FsModel, _: &mut Worker, _: &mut TransHandle) -> Result<(), ModelError> {
//!         Ok(())
//!     }
//!     fn commit_exclusive(&self, fs: &FsModel, w: &mut Worker, h: &mut TransHandle) -> Result<(), ModelError> {
//!         run_delayed_refs_with(fs, w, h, RunCount::All, Gating::None).map(|_| ())
//!     }
//!     fn run_explicit(&self, fs: &FsModel, w: &mut Worker, h: &mut TransHandle, arg: u64) -> Result<u64, ModelError> {
//!         let count = match arg {
//!             u64::MAX => RunCount::All,
//!             0 => RunCount::Most,
//!             n => RunCount::Nodes(n),
//!         };
//!         run_delayed_refs_with(fs, w, h, count, Gating::None)
//!     }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register(&COMMIT_ONLY).expect("a new name");
//! let policy = (registry.lookup("commit-only").unwrap().make)();
//! let w = synthetic(&SynthParams { tasks: 4, transactions: 2, ..SynthParams::default() });
//! let r = run(&w, policy.as_ref(), 4, &Params::default()).expect("the §7.4 invariant holds");
//! assert_eq!(r.run_calls_by_caller.get(Caller::HANDLE_END), 0, "no writer ran refs");
//! ```

mod modern;
mod pre;
mod registry;
mod seed;
mod seed_throttle;

pub use registry::{PolicyInfo, Registry, RegistryError, builtin};

/// What a policy's hooks receive and call, for policies written outside this crate: the
/// filesystem model, the calling task and its handle, the era, and each era's runner
/// (`btrfs_run_delayed_refs` of K3.6–K3.13 with its gating, and of K6.x).
pub mod context {
    pub use super::pre::end_transaction_v3;
    pub use super::{Policy, PolicyInfo, V3Policy, WorkerKind};
    pub use crate::error::ModelError;
    pub use crate::exec::cond_resched;
    pub use crate::metrics::{Caller, CallerKind};
    pub use crate::refkey::Era;
    pub use crate::root::{FsModel, TransHandle, Worker};
    pub use crate::run_modern::{run_delayed_refs as run_delayed_refs_modern, run_next_head};
    pub use crate::run_v3::{
        Gating, RunCount, run_delayed_refs as run_delayed_refs_v3, run_delayed_refs_with,
        should_throttle_311,
    };
    pub use crate::space::Flush;
}

pub use modern::Modern;
pub use pre::Pre;
pub use seed::Seed;
pub use seed_throttle::SeedThrottle;

use crate::error::ModelError;
use crate::metrics::Caller;
use crate::refkey::Era;
use crate::root::{FsModel, TransHandle, Worker};
use crate::run_v3::{Gating, RunCount, run_delayed_refs_with};
use std::sync::atomic::Ordering;

/// The hooks the engine calls at the points where the kernel decides to run refs.
pub trait Policy: Send + Sync {
    /// Its registry entry (name, kernels, description), declared once beside it.
    fn info(&self) -> &'static PolicyInfo;
    /// The canonical name ([`PolicyInfo::name`]).
    fn name(&self) -> &'static str {
        self.info().name
    }
    /// The kernel releases it stands for ([`PolicyInfo::kernels`]).
    fn kernels(&self) -> &'static str {
        self.info().kernels
    }
    /// Whether its `btrfs_run_delayed_refs` has the seed's cmpxchg gate (§2.3, §4.1).
    fn gated(&self) -> bool {
        false
    }
    /// Which data structures and orders the model follows under this policy.
    fn era(&self) -> Era;
    /// `start_transaction`, before a handle's first op (and again for the handle a task
    /// starts after `btrfs_should_end_transaction` ended one). No built-in policy does
    /// anything here yet; 6.x reserves `trans->delayed_rsv` at this point.
    fn start_transaction(
        &self,
        _fs: &FsModel,
        _w: &mut Worker,
        _h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        Ok(())
    }
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
    /// An explicit `btrfs_run_delayed_refs(arg)` in this kernel's terms (§6): 3.x `count`
    /// (`u64::MAX` = −1, 0 = run_most, N nodes), 6.x `min_bytes`. Returns what it ran.
    fn run_explicit(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
        arg: u64,
    ) -> Result<u64, ModelError>;
    /// The callers of its own its hooks set as [`Worker::caller`] (beyond the built-in
    /// [`Caller::BUILTIN`] the engine sets): listed in the report, zero or not.
    fn callers(&self) -> &'static [Caller] {
        &[]
    }
    /// Background tasks this kernel runs delayed refs from (6.x: the metadata reclaim
    /// workers, §4.7). The engine runs each as a task of its own.
    fn workers(&self) -> &'static [WorkerKind] {
        &[]
    }
    /// A background task's life: flush when asked, until `fs.space` shuts down.
    fn run_worker(
        &self,
        _fs: &FsModel,
        _w: &mut Worker,
        _kind: WorkerKind,
    ) -> Result<(), ModelError> {
        Ok(())
    }
}

/// A kernel worker a policy starts (the 6.x reclaim workers, §4.7; a patch's own kthread or
/// workqueue item): an open vocabulary, declared by the policy in [`Policy::workers`]. The
/// engine runs each as a task of its own (on a virtual CPU, or a thread under
/// `--engine threads`) and counts its runs for [`WorkerKind::caller`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerKind {
    /// As error messages give it, e.g. "async reclaim worker".
    pub name: &'static str,
    /// Who its `btrfs_run_delayed_refs` calls are counted for: the engine sets it as the
    /// worker's [`Worker::caller`] before [`Policy::run_worker`].
    pub caller: Caller,
}

impl WorkerKind {
    /// The worker's name, as error messages give it.
    pub fn name(self) -> &'static str {
        self.name
    }
}

/// The K3.7–K3.13 policies (PRE, SEED, SEED+THROTTLE; §3): the same v3 runner and the same
/// commit and `should_end_transaction` calls, differing in their [`Gating`] (§2.3, §4.1) and in
/// `__btrfs_end_transaction` (§2.8 vs §4.1). Every `V3Policy` is a [`Policy`]: a 3.x patch
/// that changes only the handle end implements this and gets the rest of 3.8's hooks.
pub trait V3Policy: Send + Sync {
    /// Its registry entry.
    const INFO: &'static PolicyInfo;
    /// The admission rules of this kernel's `btrfs_run_delayed_refs`.
    const GATING: Gating;
    /// `__btrfs_end_transaction`: the one hook whose body differs between the v3 kernels.
    fn end_transaction(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError>;
}

impl<P: V3Policy> Policy for P {
    fn info(&self) -> &'static PolicyInfo {
        P::INFO
    }
    fn gated(&self) -> bool {
        P::GATING != Gating::None
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
        V3Policy::end_transaction(self, fs, w, h)
    }
    /// `btrfs_should_end_transaction` of K3.8 (§2.8): end if the commit is flushing; otherwise
    /// run this handle's updates (throttled call, so gated) and carry on.
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
            run_delayed_refs_with(fs, w, h, RunCount::Nodes(updates), P::GATING)?;
        }
        Ok(false)
    }
    /// `btrfs_commit_transaction` before the "already committing" check (§2.8): run_most,
    /// set `flushing`, run_most again — by every committer. run_most callers bypass the gate
    /// in every gated era (§2.3), so only `GATING != None` matters here.
    fn commit_pre(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs_with(fs, w, h, RunCount::Most, P::GATING)?;
        fs.root.flushing.store(true, Ordering::Relaxed);
        run_delayed_refs_with(fs, w, h, RunCount::Most, P::GATING)?;
        Ok(())
    }
    fn run_explicit(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
        arg: u64,
    ) -> Result<u64, ModelError> {
        let count = match arg {
            u64::MAX => RunCount::All,
            0 => RunCount::Most,
            n => RunCount::Nodes(n),
        };
        run_delayed_refs_with(fs, w, h, count, P::GATING)
    }
    /// run_all (§2.8 −1), again bypassing the gate but counted in `procs_running_refs`.
    fn commit_exclusive(
        &self,
        fs: &FsModel,
        w: &mut Worker,
        h: &mut TransHandle,
    ) -> Result<(), ModelError> {
        run_delayed_refs_with(fs, w, h, RunCount::All, P::GATING).map(|_| ())
    }
}

/// The built-in policy with this name or alias ([`Registry::get`] on [`builtin`]).
pub fn by_name(name: &str) -> Option<Box<dyn Policy>> {
    builtin().get(name).map(|i| (i.make)())
}
