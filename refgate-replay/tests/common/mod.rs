//! Helpers shared by the integration tests (`mod common;` in each; not every test uses all).
#![allow(dead_code)]

use refgate_replay::Params;
use refgate_replay::refkey::{AddAction, BackrefKey, RefSpec};
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
        r: RefSpec {
            bytenr,
            num_bytes: 4096,
            action: AddAction::AddExtent,
            key: BackrefKey::data(0, 5, 257, bytenr),
            ref_root: 5,
            level: 0,
            for_cow: false,
        },
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
