//! Helpers shared by the integration tests (`mod common;` in each; not every test uses all).
#![allow(dead_code)]

use refgate_replay::Params;
use refgate_replay::refkey::{AddAction, RefSpec};
use refgate_replay::workload::{Handle, Op, Task, TaskTransaction};

/// The spec's seed constants, scaled down so a small workload crosses the gate threshold.
pub fn small_constants() -> Params {
    Params {
        cluster_heads: 4,
        throttle_ready_heads: 4,
        gate_entries_threshold: 32,
        gate_progress_quantum: 8,
        metadata_pool_bytes: 64 * (256 << 10),
        ..Params::default()
    }
}

/// A data ref at `bytenr` (a new extent).
pub fn data_add(bytenr: u64) -> Op {
    Op::AddRef {
        r: RefSpec::data(bytenr, 4096, AddAction::AddExtent, 0, 5, 257, bytenr),
        extent_op: None,
    }
}

/// A task of one transaction holding one handle with `ops`; `commit`: it commits at the end.
pub fn one_txn_task(id: u32, ops: Vec<Op>, commit: bool) -> Task {
    Task {
        id,
        transactions: vec![TaskTransaction {
            handles: vec![Handle { ops }],
            commit,
        }],
    }
}
