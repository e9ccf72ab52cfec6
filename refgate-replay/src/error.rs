//! Errors: a model error is what the kernel would BUG/abort on; the engine turns any of them
//! into an [`crate::invariant::InvariantViolation`].

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
