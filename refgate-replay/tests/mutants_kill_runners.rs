//! Tests written to kill the mutants cargo-mutants left alive in the runners and policies
//! (`run_modern.rs`, `run_v3.rs`, `policy/*.rs`; shards after 8, see `MUTANTS.md`). Each
//! names the kernel behaviour it pins and the mutants it kills.

mod common;
use common::runner_params;
use common::{NB, fs, tree};
use refgate_replay::Params;
use refgate_replay::internals::root::{FsModel, TransHandle, Worker};
use refgate_replay::internals::run_modern;
use refgate_replay::live::Live;
use refgate_replay::metrics::Caller;
use refgate_replay::refkey::{AddAction, BackrefKey, Era, NodeKey, RefAction};
use refgate_replay::workload::Op;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// `n` new tree blocks, one head with one ADD_EXTENT each.
fn queue_blocks(fs: &FsModel, w: &mut Worker, n: u64) {
    let mut h = TransHandle::default();
    for i in 1..=n {
        fs.add_ref(w, &mut h, &tree(i * NB, AddAction::AddExtent, 0), None)
            .unwrap();
    }
}

/// §4.4 `btrfs_select_ref_head`: the walk from the cursor charges every head it looks at —
/// the second selection passes the claimed first head before it finds the second.
/// Kills: `replace += with *= in btrfs_select_ref_head` (nothing charged).
#[test]
fn modern_select_charges_every_head_it_walks() {
    let (fs, mut w) = fs(Era::Modern);
    queue_blocks(&fs, &mut w, 3);
    let before = w.m.nodes_walked;
    let first = run_modern::btrfs_select_ref_head(&fs, &mut w)
        .unwrap()
        .unwrap();
    assert_eq!((first.bytenr, w.m.nodes_walked - before), (NB, 1));
    // The cursor moved past the first head; reset it so the walk passes a claimed head.
    {
        let mut g = fs.root_lock_for_tests(&mut w);
        g.c.run_delayed_start = 0;
    }
    let second = run_modern::btrfs_select_ref_head(&fs, &mut w)
        .unwrap()
        .unwrap();
    assert_eq!((second.bytenr, w.m.nodes_walked - before), (2 * NB, 3));
}

/// §4.5/§4.6: `min_bytes = N` runs heads until at least N bytes of refs ran — one head of
/// one ref releases exactly `delayed_ref_bytes`, so N = that runs one head and N = that + 1
/// runs two (the loop goes on while `bytes < min_bytes`).
/// Kills: `replace && with || in run_delayed_refs_once` (runs everything),
/// `replace < with <= in run_delayed_refs_once` (one head too many).
#[test]
fn modern_min_bytes_stops_at_the_head_that_reaches_it() {
    let (fs, mut w) = fs(Era::Modern);
    queue_blocks(&fs, &mut w, 5);
    let per_ref = fs.params.delayed_ref_bytes;
    let mut h = TransHandle::default();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, per_ref).unwrap();
    assert_eq!((w.m.refs_run, fs.num_heads_ready_racy()), (1, 4));
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, per_ref + 1).unwrap();
    assert_eq!((w.m.refs_run, fs.num_heads_ready_racy()), (3, 2));
}

/// §4.6: `min_bytes = 0` runs as many heads as were ready at entry (a racy snapshot: heads
/// queued meanwhile by other CPUs wait). Lowering `num_heads_ready` before the call stands
/// for a snapshot taken before three of the five heads were queued.
/// Kills: `replace += with *= in run_delayed_refs_once` (the count never grows: every
/// head runs).
#[test]
fn modern_min_bytes_zero_runs_the_heads_ready_at_entry() {
    let (fs, mut w) = fs(Era::Modern);
    queue_blocks(&fs, &mut w, 5);
    {
        let mut g = fs.root_lock_for_tests(&mut w);
        g.c.num_heads_ready = 2;
        fs.publish(&g.c);
    }
    let mut h = TransHandle::default();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, 0).unwrap();
    assert_eq!(w.m.refs_run, 2);
    assert_eq!(fs.root_lock_for_tests(&mut w).heads.len(), 3);
}

/// §4.4 `btrfs_merge_delayed_refs` in the runner: a modern head holding an ADD and a DROP of
/// one backref under different seqs (a tree-mod-log user's, which the add path of the model
/// never hands out) merges them away at run time; the runner counts both nodes as merged
/// and takes them off `num_entries`, so the counters recount clean.
/// Kills: `replace > with ==` / `with <` in `btrfs_run_delayed_refs_for_head` (merge not
/// accounted), `replace += with -=` / `with *=` there (`run_merges` wrong).
#[test]
fn modern_run_time_merge_is_accounted() {
    let (fs, mut w) = fs(Era::Modern);
    let mut h = TransHandle::default();
    let key = BackrefKey::tree(0, 2);
    fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Add, 0), None)
        .unwrap();
    let head = fs.root_lock_for_tests(&mut w).heads[&NB].clone();
    {
        let mut hi = fs.head_lock_for_tests(&head, &mut w);
        hi.insert_ref(
            Era::Modern,
            NodeKey::new(Era::Modern, &key, 7),
            RefAction::Drop,
            0,
        );
        hi.ref_mod -= 1;
        hi.rsv_refs += 1;
    }
    fs.root.num_entries.fetch_add(1, Ordering::Relaxed);
    fs.check_counters(&mut w).unwrap();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, u64::MAX).unwrap();
    assert_eq!((w.m.run_merges, w.m.refs_run), (2, 0));
    assert_eq!(fs.num_entries_racy(), 0);
    fs.check_counters(&mut w).unwrap();
}

/// §4.7: running a ref releases one ref's worth of `delayed_refs_rsv` at once, the head's
/// remaining reservation goes when the head does — two heads of one ref each, one run, leave
/// exactly the other head's reservation reserved.
/// Kills: `replace -= with +=` / `with /=` in `btrfs_run_delayed_refs_for_head` (the head's
/// reservation released twice), `replace * with +` there (one byte more, or a ref's worth
/// when nothing was reserved).
#[test]
fn modern_running_a_ref_releases_its_reservation_once() {
    let (fs, mut w) = fs(Era::Modern);
    queue_blocks(&fs, &mut w, 2);
    let per_ref = fs.params.delayed_ref_bytes;
    assert_eq!(fs.space.reserved(), 2 * per_ref);
    let mut h = TransHandle::default();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, 1).unwrap();
    assert_eq!(w.m.refs_run, 1);
    assert_eq!(fs.space.reserved(), per_ref);
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, u64::MAX).unwrap();
    assert_eq!(fs.space.reserved(), 0);
}

/// §4.2 / §4.4 `btrfs_delete_ref_head`: a modern head leaving the tree takes one off
/// `num_heads` (3.x never decrements it), which `check_counters` recounts.
/// Kills: `replace -= with +=` / `with /=` in `cleanup_ref_head`.
#[test]
fn modern_deleting_a_head_decrements_num_heads() {
    let (fs, mut w) = fs(Era::Modern);
    queue_blocks(&fs, &mut w, 3);
    assert_eq!(fs.counters(&mut w).0.num_heads, 3);
    let mut h = TransHandle::default();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, 1).unwrap();
    assert_eq!(fs.counters(&mut w).0.num_heads, 2);
    fs.check_counters(&mut w).unwrap();
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, u64::MAX).unwrap();
    assert_eq!(fs.counters(&mut w).0.num_heads, 0);
    fs.check_counters(&mut w).unwrap();
}

/// A run call's recorded latency is its virtual duration: one explicit
/// `btrfs_run_delayed_refs` of everything (3.x count −1, 6.x U64_MAX) over three refs lasts
/// at least their three `run_ref` costs (1000 ns each here), and the task's run calls, one
/// after another on one CPU, last no longer than the replay.
/// Kills: `replace - with +` / `with /` in `run_modern::run_delayed_refs` and in
/// `run_v3::run_delayed_refs_with` (the recorded duration).
#[test]
fn run_call_latency_is_its_virtual_duration() {
    for policy in ["pre", "modern"] {
        let ops = vec![
            common::data_add(1 << 20),
            common::data_add(2 << 20),
            common::data_add(3 << 20),
            Op::RunDelayedRefs { arg: u64::MAX },
        ];
        let r = common::replay_virtual(policy, vec![common::one_txn_task(0, ops, true)], 32, 5000);
        assert_eq!(r.refs_run, 3, "{policy}");
        assert!(r.run_calls.max_ns >= 3000, "{policy}: {:?}", r.run_calls);
        let makespan = r.virtual_figures.as_ref().unwrap().virtual_seconds * 1e9;
        assert!(
            (r.run_calls.total_ns as f64) <= makespan,
            "{policy}: {:?} in {makespan} ns",
            r.run_calls
        );
    }
}

/// §2.2 `btrfs_find_ref_cluster(start)`: from a non-zero cursor the walk begins at the first
/// head after `start` (K3.8 searches `start + 1`), not at the first head of the tree.
/// Kills: `replace == with != in btrfs_find_ref_cluster`.
#[test]
fn v3_cluster_starts_after_the_cursor() {
    let (fs, mut w) = common::fs(Era::V3);
    queue_blocks(&fs, &mut w, 6);
    let mut g = fs.root_lock_for_tests(&mut w);
    let cluster =
        refgate_replay::internals::run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 3 * NB);
    let bytenrs: Vec<u64> = cluster.iter().map(|h| h.bytenr).collect();
    assert_eq!(bytenrs, [4 * NB, 5 * NB, 6 * NB]);
}

/// §4.7: a modern writer's `btrfs_should_end_transaction` says end once the commit set
/// FLUSHING or a writer waits on a reservation ticket (the space no longer fits), and
/// otherwise not — it runs nothing either way. A second thread stands for the writer whose
/// reservation does not fit a one-ref pool.
/// Kills: `replace <impl Policy for Modern>::should_end_transaction -> … with Ok(true)` /
/// `Ok(false)`, `replace || with &&`, `replace > with ==` / `<` / `>=` there.
#[test]
fn modern_should_end_transaction_on_flushing_or_waiting_tickets() {
    let p = refgate_replay::policy::by_name("modern").unwrap();
    let live = Arc::new(Live::new(2));
    let params = runner_params();
    let params = Params {
        metadata_pool_bytes: params.delayed_ref_bytes,
        ..params
    };
    let fs = Arc::new(FsModel::new(Era::Modern, params, vec![], live.clone()));
    let mut w = Worker::new(0, live.clone());
    let mut h = TransHandle::default();
    assert!(!p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
    // The pool's one ref is reserved: a second reservation waits on a ticket.
    fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::AddExtent, 0), None)
        .unwrap();
    assert!(!p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
    let writer = {
        let (fs, live) = (fs.clone(), live.clone());
        std::thread::spawn(move || {
            let mut w = Worker::new(1, live);
            fs.add_ref(
                &mut w,
                &mut TransHandle::default(),
                &tree(2 * NB, AddAction::AddExtent, 0),
                None,
            )
            .unwrap();
        })
    };
    while fs.space.waiting() == 0 {
        std::thread::yield_now();
    }
    assert!(p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
    // Running the first ref frees its reservation and grants the ticket.
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, u64::MAX).unwrap();
    writer.join().unwrap();
    assert_eq!(fs.space.waiting(), 0);
    assert!(!p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
    fs.root.flushing.store(true, Ordering::Relaxed);
    assert!(p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
    assert_eq!(w.m.run_calls.count, 1, "only the explicit run");
}

/// §2.1 step 6a: a throttled 3.x run goes on while at least 64 heads are ready
/// (`num_heads_ready < 64` stops it): 96 heads, clusters of 32 — after one cluster 64 are
/// ready, so a second runs and 32 remain.
/// Kills: `replace < with <= in run_loop`.
#[test]
fn v3_throttled_run_continues_at_exactly_64_ready_heads() {
    let (fs, mut w) = common::fs(Era::V3);
    queue_blocks(&fs, &mut w, 96);
    let mut h = TransHandle::default();
    refgate_replay::internals::run_v3::run_delayed_refs(
        &fs,
        &mut w,
        &mut h,
        refgate_replay::internals::run_v3::RunCount::Nodes(10_000),
        false,
    )
    .unwrap();
    assert_eq!(fs.counters(&mut w).0.num_heads_ready, 32);
}

/// §4.1 (3.11–3.13): with the gate busy, a throttled caller returns at once only when the
/// commit is FLUSHING or `should_throttle()` is false; while the queue still throttles it
/// sleeps until the runner leaves the gate. (A correct caller cannot finish before the
/// gate is released, so the 50 ms look cannot fail it; a caller that gives up finishes in
/// microseconds.)
/// Kills: `delete ! in enter_gate` (the 3.11 give-up).
#[test]
fn throttle_311_caller_sleeps_while_the_queue_still_throttles() {
    use refgate_replay::internals::run_v3::{Gating, RunCount};
    use refgate_replay::metrics::GateStats;
    let live = Arc::new(Live::new(2));
    let params = Params {
        throttle_311_ready_heads: 8,
        ..runner_params()
    };
    let fs = Arc::new(FsModel::new(Era::V3, params, vec![], live.clone()));
    let mut w = Worker::new(0, live.clone());
    queue_blocks(&fs, &mut w, 8);
    let mut runner = GateStats::default();
    fs.root.gate.enter_bypass(&mut runner);
    let caller = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let mut w = Worker::new(1, live);
            let mut h = TransHandle::default();
            refgate_replay::internals::run_v3::run_delayed_refs_with(
                &fs,
                &mut w,
                &mut h,
                RunCount::Nodes(1),
                Gating::Throttle311,
            )
            .unwrap();
            w.m.gate
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !caller.is_finished(),
        "gave up on a busy gate although the queue throttles"
    );
    fs.root.gate.exit(&mut runner);
    assert_eq!(caller.join().unwrap().sleeps, 1);
}

/// §2.1 step 3: run_most's budget is twice `num_entries` at entry, counted in nodes (refs
/// and heads) and checked per cluster; refs queued during the call can use what is left.
/// Two virtual CPUs, clusters of one head: task 0 queues 10 heads (20 entries: budget 40)
/// and calls run_most; while it runs them, task 1 queues 20 more heads further up. Task 0
/// runs its own 10 heads (20 nodes), then 10 of task 1's (the other 20 nodes), and stops;
/// the commit runs the last 10.
/// Kills: `replace * with +` (budget 22: one head of task 1's) / `with /` (budget 10: five
/// heads) in `run_delayed_refs_inner`.
#[test]
fn v3_run_most_budget_is_twice_the_entries_at_entry() {
    let mine: Vec<Op> = (1..=10).map(|i| common::data_add(i << 20)).collect();
    let theirs: Vec<Op> = (100..120).map(|i| common::data_add(i << 20)).collect();
    let mut ops1 = vec![Op::Think { ns: 1500 }];
    ops1.extend(theirs);
    assert_eq!(run_most_beside(mine, ops1), (30, 20, 10));
}

/// PRE on two virtual CPUs, clusters of one head: task 0 queues `mine`, calls run_most
/// (an explicit `btrfs_run_delayed_refs(0)`) and commits; task 1 runs `theirs` meanwhile.
/// Returns the refs run in all, by task 0's call, and by the commit.
fn run_most_beside(mine: Vec<Op>, theirs: Vec<Op>) -> (u64, u64, u64) {
    let mut ops0 = mine;
    ops0.push(Op::RunDelayedRefs { arg: 0 });
    let r = common::replay_virtual(
        "pre",
        vec![
            common::one_txn_task(0, ops0, true),
            common::one_txn_task(1, theirs, false),
        ],
        1,
        5000,
    );
    let by = &r.refs_run_by_caller;
    (r.refs_run, by.get(Caller::OTHER), by.get(Caller::COMMIT))
}

/// §2.1 step 6f: the stall detector breaks a throttled or run_most call only after two
/// wraps of the cursor *without progress in between*; a cluster that ran refs resets it.
/// Two virtual CPUs, clusters of one head, COW tree refs (no seq, so nothing is held back
/// by task 1's open handle, §1.6): task 0 queues 10 heads at 10–19 MiB and calls run_most;
/// task 1 queues 5 heads at 1–5 MiB at once, then (12 µs later) 3 more at 64–192 KiB, which
/// with these costs lands after task 0 has wrapped to the low heads once (stall count 1,
/// reset as they run) and before it is done with them. Task 0 wraps again for the last
/// ones and goes on: its one call runs all 18 heads (budget 40 nodes), the commit none;
/// without the reset the second wrap ends the call with two heads left to the commit.
/// Kills: `replace > with < in run_loop` (no reset: the second wrap ends the call).
#[test]
fn v3_progress_between_wraps_resets_the_stall_detector() {
    let cow = |b: u64| Op::AddRef {
        r: tree(b, AddAction::AddExtent, 0),
        extent_op: None,
    };
    let mine: Vec<Op> = (10..20).map(|i| cow(i << 20)).collect();
    let mut ops1 = vec![Op::Think { ns: 1500 }];
    ops1.extend((1..=5).map(|i| cow(i << 20)));
    ops1.push(Op::Think { ns: 12_000 });
    ops1.extend((1..=3).map(|i| cow(i << 16)));
    assert_eq!(run_most_beside(mine, ops1), (18, 18, 0));
}
