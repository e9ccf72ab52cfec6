//! Errors: a [`ModelError`] is what the kernel would BUG/abort on; a [`ReplayError`] is why a
//! replay gave no report — a workload it cannot run, a model error (or an engine failure), or
//! an end state that breaks the §7.4 invariant.

use crate::refkey::BackrefKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("extent {bytenr}: no extent item to add a ref to / drop from / update")]
    ExtentMissing { bytenr: u64 },
    #[error("extent {bytenr}: must_insert_reserved but the extent item already exists")]
    ExtentExists { bytenr: u64 },
    #[error("extent {bytenr}: dropping {drop} of backref {key:?} which has {have}")]
    BackrefUnderflow {
        bytenr: u64,
        key: BackrefKey,
        have: u64,
        drop: u64,
    },
    #[error("extent {bytenr}: tree ref run with ref_mod {ref_mod} (must be 1, §2.7)")]
    TreeRefMod { bytenr: u64, ref_mod: u32 },
    #[error("extent {bytenr}: refs reached 0 with backrefs left")]
    OrphanBackrefs { bytenr: u64 },
    #[error("head {bytenr}: is_data differs between adds (§1.4 BUG)")]
    IsDataMismatch { bytenr: u64 },
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
        policy: String,
        cpus: usize,
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
    pub policy: String,
    pub threads: usize,
    pub errors: Vec<String>,
}
