//! The model's parameters: the kernel's constants as defaults (spec §0.3), plus the knobs
//! the spec's modelling advice asks for (§7.2 costs).

use crate::cost::CostModel;
use crate::error::OptionError;
use crate::refkey::Era;
use serde::Serialize;

/// How a task waits for the extent tree's lock under virtual CPUs (§2.7, §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExtentLock {
    /// Spins on its CPU, FIFO, until handed the lock: btrfs tree locks up to 5.10 were
    /// btrfs's own rwlocks, spinning while the holder keeps them spinning (they go
    /// blocking only around I/O and COW allocation, which the model does not have).
    Spin,
    /// Sleeps until the holder releases it, then competes: the `rw_semaphore` tree locks
    /// of 5.11+ (their optimistic spinning is not modelled).
    Sleep,
}

impl ExtentLock {
    /// The kernel's kind for an era: 3.x spinning, modern sleeping.
    pub fn for_era(era: Era) -> Self {
        match era {
            Era::V3 => ExtentLock::Spin,
            Era::Modern => ExtentLock::Sleep,
        }
    }
}

/// How the extent tree is locked (issue "extent tree"; `docs/extent-tree.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExtentTreeModel {
    /// A B-tree of locked blocks walked root to leaf with the kernel's lock coupling
    /// (`btrfs_search_slot`, `unlock_up`): the root's lock is held for a descent step, the
    /// leaf's for the item update.
    #[default]
    Btree,
    /// One lock for the whole tree held for the whole update: the model before the B-tree,
    /// kept so that its figures can be reproduced.
    Single,
}

/// The model's parameters: the kernel's constants (§0.3) as defaults, and the §7.2 knobs.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Heads per `btrfs_find_ref_cluster` (§2.2).
    pub cluster_heads: usize,
    /// Throttled runners stop below this many ready heads; handle ends run only above it
    /// (§2.1 step 6a, §2.8).
    pub throttle_ready_heads: u64,
    /// `num_entries < 16348` (§2.3).
    pub gate_entries_threshold: u64,
    /// `refs_newer(seq, 256)` (§2.3).
    pub gate_progress_quantum: i32,
    /// `__btrfs_end_transaction` runs refs up to this many times (K3.8: 2, K3.9: 1; §2.8).
    /// `None`: the policy's kernel value.
    pub end_trans_loops: Option<u32>,
    /// SEED+THROTTLE (3.11–3.13): `btrfs_should_throttle_delayed_refs()` is a space
    /// heuristic the model does not have; it is stood in for by `num_heads_ready ≥ this`
    /// (§7.3 allows "a function of `num_heads_ready`").
    pub throttle_311_ready_heads: u64,
    /// Spin iterations before yielding on a contended spinlock.
    pub spin_limit: u32,
    /// Model the v3.x tree-mod-seq hold-back of fs-tree refs (§1.6).
    pub seq_holdback: bool,
    /// Busy-work per node walked by `btrfs_find_ref_cluster` under the lock (§7.2 `c_walk`).
    pub walk_cost_ns: u64,
    /// Busy-work per extent-tree update under its lock (§7.2 `c_ext`).
    pub ext_cost_ns: u64,
    /// `btrfs_calc_delayed_ref_bytes(1)` = nodesize × BTRFS_MAX_LEVEL × 2 (§4.6).
    pub delayed_ref_bytes: u64,
    /// Modern: the metadata space that delayed-ref reservations come from (§4.7; see
    /// `space`). The trace does not record the filesystem's size, so this is a
    /// stated default: 512 MiB, the cap of the global block reserve (`SZ_512M` in
    /// `btrfs_update_global_block_rsv`), i.e. 2048 queued refs of 256 KiB.
    pub metadata_pool_bytes: u64,
    /// Check the §1.5 counters before and after every commit's run-all.
    pub check_counters: bool,
    /// What the virtual-CPU engine charges for each step ([`crate::cost`]).
    pub costs: CostModel,
    /// Virtual CPUs: how the extent-tree lock is waited for; `None`: the era's kind
    /// ([`ExtentLock::for_era`]).
    pub extent_lock: Option<ExtentLock>,
    /// How the extent tree is locked.
    pub extent_tree: ExtentTreeModel,
    /// The B-tree's block size (the trace header's `nodesize`; mkfs's default 16 KiB).
    pub nodesize: u32,
    /// Extent items in the B-tree before the first transaction; `None`: the workload's
    /// initial extents (see `docs/extent-tree.md` "Size").
    pub extent_items: Option<u64>,
    /// One past the highest extent address of the replay: the range the B-tree's leaves
    /// are spread over when `extent_items` is more than the initial extents name. `None`:
    /// the engines set it from the workload ([`crate::workload::Workload::key_end`]).
    pub extent_key_end: Option<u64>,
    /// Keep the final extent tree in the report (`--dump-state`).
    pub keep_final_state: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            cluster_heads: 32,
            throttle_ready_heads: 64,
            gate_entries_threshold: 16348,
            gate_progress_quantum: 256,
            end_trans_loops: None,
            throttle_311_ready_heads: 4096,
            spin_limit: 64,
            seq_holdback: true,
            walk_cost_ns: 0,
            ext_cost_ns: 0,
            delayed_ref_bytes: 16384 * 8 * 2,
            metadata_pool_bytes: 512 << 20,
            check_counters: true,
            costs: CostModel::defaults(),
            extent_lock: None,
            extent_tree: ExtentTreeModel::Btree,
            nodesize: 16384,
            extent_items: None,
            extent_key_end: None,
            keep_final_state: false,
        }
    }
}

impl Params {
    /// Sets a numeric parameter by name (a workload file's `params` line).
    pub fn set(&mut self, name: &str, v: u64) -> Result<(), OptionError> {
        // The largest value each takes: past it a count wraps (`gate_progress_quantum` is
        // the kernel's `int`) or the model's byte and head arithmetic would overflow.
        let (name, max): (&'static str, u64) = match name {
            "cluster_heads" => ("cluster_heads", 1 << 20),
            "throttle_ready_heads" => ("throttle_ready_heads", 1 << 40),
            "gate_entries_threshold" => ("gate_entries_threshold", 1 << 40),
            "gate_progress_quantum" => ("gate_progress_quantum", i32::MAX as u64),
            "end_trans_loops" => ("end_trans_loops", 1 << 16),
            "throttle_311_ready_heads" => ("throttle_311_ready_heads", 1 << 40),
            "delayed_ref_bytes" => ("delayed_ref_bytes", 1 << 30),
            "metadata_pool_bytes" => ("metadata_pool_bytes", 1 << 50),
            _ => {
                return Err(OptionError::UnknownParameter {
                    name: name.to_string(),
                    known: "cluster_heads, throttle_ready_heads, gate_entries_threshold, gate_progress_quantum, end_trans_loops, throttle_311_ready_heads, delayed_ref_bytes, metadata_pool_bytes",
                });
            }
        };
        if v > max {
            return Err(OptionError::ParameterRange {
                name,
                value: v,
                max,
            });
        }
        match name {
            "cluster_heads" => self.cluster_heads = v as usize,
            "throttle_ready_heads" => self.throttle_ready_heads = v,
            "gate_entries_threshold" => self.gate_entries_threshold = v,
            "gate_progress_quantum" => self.gate_progress_quantum = v as i32,
            "end_trans_loops" => self.end_trans_loops = Some(v as u32),
            "throttle_311_ready_heads" => self.throttle_311_ready_heads = v,
            "delayed_ref_bytes" => self.delayed_ref_bytes = v,
            _ => self.metadata_pool_bytes = v,
        }
        Ok(())
    }

    /// The seed gate's constants ([`GateParams`]) from these parameters.
    pub fn gate(&self) -> GateParams {
        GateParams {
            entries_threshold: self.gate_entries_threshold,
            progress_quantum: self.gate_progress_quantum,
        }
    }
}

/// The gate's constants (§0.3), parameters with the kernel's values as defaults.
#[derive(Clone, Copy, Debug)]
pub struct GateParams {
    /// `num_entries < 16348` ⇒ don't wait.
    pub entries_threshold: u64,
    /// `refs_newer(seq, 256)`.
    pub progress_quantum: i32,
}

impl Default for GateParams {
    fn default() -> Self {
        Self {
            entries_threshold: 16348,
            progress_quantum: 256,
        }
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// Each parameter takes its largest value and refuses one more, by name.
    #[test]
    fn parameters_are_bounded() {
        let mut p = Params::default();
        for (name, max) in [
            ("cluster_heads", 1u64 << 20),
            ("gate_progress_quantum", i32::MAX as u64),
            ("end_trans_loops", 1 << 16),
            ("delayed_ref_bytes", 1 << 30),
            ("metadata_pool_bytes", 1 << 50),
        ] {
            p.set(name, max).unwrap();
            let e = p.set(name, max + 1).unwrap_err();
            assert_eq!(
                e,
                OptionError::ParameterRange {
                    name,
                    value: max + 1,
                    max
                }
            );
        }
        assert_eq!(p.gate_progress_quantum, i32::MAX);
    }
}
