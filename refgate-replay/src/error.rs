//! Errors: a [`ModelError`] is what the kernel would BUG/abort on; a [`ReplayError`] is why a
//! replay gave no report — a workload it cannot run, a model error (or an engine failure), or
//! an end state that breaks the §7.4 invariant.

use crate::refkey::BackrefKey;

/// What the kernel would BUG or abort the transaction on, met by the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Running a ref or an extent op found no extent item to change (§2.7).
    #[error("extent {bytenr}: no extent item to add a ref to / drop from / update")]
    ExtentMissing {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// A `must_insert_reserved` ADD (`alloc_reserved_*`, §2.7) found the item already there.
    #[error("extent {bytenr}: must_insert_reserved but the extent item already exists")]
    ExtentExists {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// A DROP of more than the backref or the item's `refs` holds (`__btrfs_free_extent`'s
    /// BUG on underflow, §2.7).
    #[error("extent {bytenr}: dropping {drop} of backref {key:?} which has {have}")]
    BackrefUnderflow {
        /// The extent's `bytenr`.
        bytenr: u64,
        /// The backref dropped from.
        key: BackrefKey,
        /// The backref's count before the drop.
        have: u64,
        /// The count to drop (the ref's `ref_mod`).
        drop: u64,
    },
    /// A tree ref run with `ref_mod` ≠ 1 (§2.7 BUG; §4.4 `-EUCLEAN`).
    #[error("extent {bytenr}: tree ref run with ref_mod {ref_mod} (must be 1, §2.7)")]
    TreeRefMod {
        /// The extent's `bytenr`.
        bytenr: u64,
        /// The ref's `ref_mod`.
        ref_mod: u32,
    },
    /// A DROP took the item's `refs` to 0 while backrefs were left.
    #[error("extent {bytenr}: refs reached 0 with backrefs left")]
    OrphanBackrefs {
        /// The extent's `bytenr`.
        bytenr: u64,
    },
    /// An add's `is_data` differs from its existing head's (`update_existing_head_ref`, §1.4).
    #[error("head {bytenr}: is_data differs between adds (§1.4 BUG)")]
    IsDataMismatch {
        /// The head's `bytenr`.
        bytenr: u64,
    },
    /// Any other BUG or broken model invariant (the §1.5 counters, a run_all with nothing
    /// runnable, a queue left after run-all, …), in words.
    #[error("{0}")]
    Bug(String),
}

/// Why a replay did not give a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The workload cannot be replayed as given; nothing ran.
    #[error("invalid workload: {0}")]
    BadWorkload(String),
    /// The model hit what the kernel would BUG or abort on, or the engine failed (a task
    /// panicked, or no task could run again).
    #[error("model error ({policy}, {cpus} CPUs): {}", errors.join("; "))]
    Model {
        /// The policy replayed.
        policy: String,
        /// CPUs (virtual) or threads (real).
        cpus: usize,
        /// The errors met, one message each.
        errors: Vec<String>,
    },
    /// The replay ran to the end and its extent tree breaks the §7.4 invariant.
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
}

/// A workload (or the trace or file it comes from) that cannot be replayed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkloadError(pub String);

/// A bad option: an unknown cost or parameter name, or a value it cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub String);

/// A replay whose end state disagrees with the input (or whose model hit a kernel BUG).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("invariant violated (policy {policy}, {threads} threads): {}", errors.join("; "))]
pub struct InvariantViolation {
    /// The policy replayed.
    pub policy: String,
    /// CPUs (virtual) or threads (real).
    pub threads: usize,
    /// Each disagreement found, one message each.
    pub errors: Vec<String>,
}
