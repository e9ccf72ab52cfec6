//! Helpers shared by the integration tests (`mod common;` in each; not every test uses all).
#![allow(dead_code)]

use refgate_replay::Params;
use refgate_replay::cost::{Cost, CostModel};
use refgate_replay::internals::extent_tree::ExtentItem;
use refgate_replay::internals::root::{FsModel, Worker};
use refgate_replay::live::Live;
use refgate_replay::refkey::{AddAction, Era, RefSpec};
use refgate_replay::workload::{Handle, Op, Task, TaskTransaction, Workload};
use refgate_replay::{Config, Engine, Report, replay};
use std::sync::Arc;

/// The model's defaults with the extent tree as one lock and no self-fed refs
/// (`--extent-tree single`): what the runner tests' hand-computed counts and timelines
/// assume. The B-tree's own rules and timelines are tested in the crate (`btree::tests`,
/// `engine::vcpu::btree_timeline`), its invariant by `invariant_prop` and the CLI tests.
pub fn runner_params() -> Params {
    Params {
        extent_tree: refgate_replay::params::ExtentTreeModel::Single,
        ..Params::default()
    }
}

/// The spec's seed constants, scaled down so a small workload crosses the gate threshold.
pub fn small_constants() -> Params {
    Params {
        cluster_heads: 4,
        throttle_ready_heads: 4,
        gate_entries_threshold: 32,
        gate_progress_quantum: 8,
        metadata_pool_bytes: 64 * (256 << 10),
        ..runner_params()
    }
}

/// A tree block's size in the model tests.
pub const NB: u64 = 16384;

/// A model of one CPU with `initial` extent items, and its worker.
pub fn fs_with(era: Era, params: Params, initial: Vec<(u64, ExtentItem)>) -> (FsModel, Worker) {
    let live = Arc::new(Live::new(1));
    (
        FsModel::new(era, params, initial, live.clone()),
        Worker::new(0, live),
    )
}

/// [`fs_with`] with the default parameters and an empty extent tree.
pub fn fs(era: Era) -> (FsModel, Worker) {
    fs_with(era, runner_params(), vec![])
}

/// A COW tree ref owned by the extent tree (root 2): never gets a seq, in either era (§1.6).
pub fn tree(bytenr: u64, action: AddAction, parent: u64) -> RefSpec {
    RefSpec {
        for_cow: true,
        ..RefSpec::tree(bytenr, NB, action, parent, 2)
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

/// Replays `tasks` (one transaction) under `policy` on one virtual CPU per task, with the
/// hand-set costs of tests/vcpu.rs (but a wake-up of `wakeup_ns`) and `cluster_heads` heads
/// per cluster.
pub fn replay_virtual(
    policy: &str,
    tasks: Vec<Task>,
    cluster_heads: usize,
    wakeup_ns: u64,
) -> Report {
    let cpus = tasks.len();
    let w = Workload {
        tasks,
        initial: vec![],
        transactions: 1,
        ..Workload::default()
    };
    let costs = hand_costs(wakeup_ns);
    let cfg = Config {
        engine: Engine::Virtual,
        cpus,
        params: Params {
            costs,
            cluster_heads,
            ..runner_params()
        },
        sim_seed: 0,
        pace: false,
        timeline: false,
    };
    replay(
        &w,
        refgate_replay::policy::by_name(policy).unwrap().as_ref(),
        &cfg,
        Arc::new(Live::new(cpus)),
    )
    .unwrap()
}

/// The hand-set costs the virtual-CPU tests work their timelines out with (tests/vcpu.rs),
/// with a wake-up of `wakeup_ns`.
pub fn hand_costs(wakeup_ns: u64) -> CostModel {
    let mut costs = CostModel::defaults();
    for (c, ns) in [
        (Cost::AddRef, 100),
        (Cost::WalkNode, 10),
        (Cost::SelectRef, 50),
        (Cost::RunRef, 1000),
        (Cost::DeleteHead, 30),
        (Cost::ContextSwitch, 2000),
        (Cost::Wakeup, wakeup_ns),
    ] {
        costs.set(c, ns, "test");
    }
    costs
}
