//! Tests that kill mutants `cargo mutants` found surviving the other suites (issue 12 item 4;
//! see MUTANTS.md). Each test names the mutants it kills. Deterministic: threads are only used
//! where the model blocks, and are waited for by state, never by time; the one time check
//! (`real_thread_walk_cost_is_burnt_per_node`) is a lower bound that busy-work guarantees.

mod common;
use common::runner_params;
use common::{data_add, one_txn_task};
use refgate_replay::internals::gate::{Gate, GateEntry, GateParams};
use refgate_replay::metrics::GateStats;
use std::cell::Cell;
use std::sync::Arc;

// ---------------------------------------------------------------- gate.rs (§2.3)

/// The accessors report the gate's state: `procs_running_refs`, `ref_seq` and `sleepers`
/// start at 0 and follow bypasses and progress; `reset` puts `ref_seq` back to 0 (§1.1).
/// Kills: `procs_running_refs -> 0/1/-1`, `ref_seq -> 0/1/-1`, `sleepers -> 1`,
/// `Gate::reset -> ()`.
#[test]
fn gate_accessors_and_reset() {
    let g = Gate::new();
    let mut st = GateStats::default();
    assert_eq!(
        (g.procs_running_refs(), g.ref_seq(), g.sleepers()),
        (0, 0, 0)
    );
    g.enter_bypass(&mut st);
    g.enter_bypass(&mut st);
    assert_eq!(g.procs_running_refs(), 2);
    g.add_progress(300);
    assert_eq!(g.ref_seq(), 300);
    g.exit(&mut st);
    g.exit(&mut st);
    assert_eq!(g.procs_running_refs(), 0);
    // Nobody slept, so no wake-all was counted.
    assert_eq!((st.bypasses, st.wake_alls), (2, 0));
    g.reset();
    assert_eq!(g.ref_seq(), 0);
}

/// §2.3 step 3: exactly `entries_threshold` (16348) entries is *not* below the threshold, so
/// the caller goes on to the wait queue; the runner exits while the caller is between its
/// failed cmpxchg and its registration (here: inside the `num_entries` read), so the re-check
/// after registering wins the gate without sleeping.
/// Kills: `replace < with <= in Gate::enter_throttled`, `replace && with || in
/// Gate::enter_throttled_when` (Run without claiming), `replace += with *= in
/// Gate::enter_throttled_when` (the re-check's `acquisitions`).
#[test]
fn gate_threshold_is_strict_and_recheck_claims() {
    let g = Gate::new();
    let mut runner = GateStats::default();
    g.enter_bypass(&mut runner);
    let released = Cell::new(false);
    let num_entries = || {
        if !released.replace(true) {
            // The runner leaves the gate (nobody is on the queue yet: no wake-up).
            g.exit(&mut GateStats::default());
        }
        16348
    };
    let mut st = GateStats::default();
    let e = g.enter_throttled(&GateParams::default(), &num_entries, &mut st, &mut |_| {
        panic!("must not sleep")
    });
    assert_eq!(e, GateEntry::Run);
    assert_eq!(g.procs_running_refs(), 1);
    assert_eq!(g.sleepers(), 0);
    assert_eq!(
        (st.acquisitions, st.early_returns, st.sleeps, st.wakeups),
        (1, 0, 0, 0)
    );
}

/// The same window without the re-check (`Gate::without_recheck_for_tests`, the loom
/// negative test's gate): the caller registers and goes to sleep although the gate is free —
/// the lost wake-up the re-check closes. Single-threaded: just before sleeping (`on_sleep`)
/// a runner comes and goes, and its exit's wake-all lets the sleeper through; it then wins.
/// Kills: `replace Gate::without_recheck_for_tests -> Self with Default::default()`, `delete
/// field recheck_after_register ... in Gate::without_recheck_for_tests`, and the `wakeups`
/// `+= with *=` mutant in `Gate::enter_throttled_when`.
#[test]
fn gate_without_recheck_sleeps_on_a_free_gate() {
    let g = Gate::without_recheck_for_tests();
    let mut runner = GateStats::default();
    g.enter_bypass(&mut runner);
    let released = Cell::new(false);
    let give_up = || {
        if !released.replace(true) {
            g.exit(&mut GateStats::default());
        }
        false
    };
    let mut st = GateStats::default();
    let mut sleeps_seen = Vec::new();
    let e = g.enter_throttled_when(256, &give_up, &mut st, &mut |sleeping| {
        sleeps_seen.push(sleeping);
        if sleeping {
            // The gate is free and we are registered: a runner's exit wakes us.
            assert_eq!((g.procs_running_refs(), g.sleepers()), (0, 1));
            g.enter_bypass(&mut runner);
            g.exit(&mut runner);
        }
    });
    assert_eq!(e, GateEntry::Run);
    assert_eq!(sleeps_seen, vec![true, false]);
    assert_eq!(
        (st.sleeps, st.wakeups, st.acquisitions, st.refs_newer_exits),
        (1, 1, 1, 0)
    );
    assert_eq!(runner.wake_alls, 1);
    assert_eq!((g.procs_running_refs(), g.sleepers()), (1, 0));
}

// ---------------------------------------------------------------- head.rs (§1.4, §4.4)

use refgate_replay::internals::head::{ExtentOp, HeadInner, InsertOutcome};
use refgate_replay::refkey::{BackrefKey, Era, NodeKey, RefAction};

/// §1.4 `update_existing_head_ref`: flags are OR'ed (overlapping bits stay set), a key is
/// copied only when the new op has one.
/// Kills: `replace | with ^ in ExtentOp::merge_from` (1|4 = 1^4, so the spec test's values
/// could not tell), `replace | with &`, `ExtentOp::merge_from -> ()`.
#[test]
fn extent_op_merge_ors_overlapping_flags() {
    let mut op = ExtentOp {
        flags: Some(3),
        key: Some(7),
    };
    op.merge_from(&ExtentOp {
        flags: Some(6),
        key: None,
    });
    assert_eq!(
        op,
        ExtentOp {
            flags: Some(7),
            key: Some(7)
        }
    );
    let mut none = ExtentOp::default();
    none.merge_from(&ExtentOp {
        flags: Some(2),
        key: Some(1),
    });
    assert_eq!(
        none,
        ExtentOp {
            flags: Some(2),
            key: Some(1)
        }
    );
}

/// §4.2/§4.4: a `ref_add_list` entry left behind by a cancelled ADD must not select a later
/// node that reuses the same key (a DROP): nodes are told apart by their id.
/// Kills: `replace += with *= in HeadInner::insert_ref` (`next_id` stuck at 0) and `replace
/// match guard n.id == id with true in HeadInner::select_delayed_ref`.
#[test]
fn modern_stale_add_list_entry_does_not_select_a_reused_key() {
    let e = Era::Modern;
    let key = |root| NodeKey::new(e, &BackrefKey::data(0, root, 257, 0), 0);
    let mut h = HeadInner::new(4096, true);
    assert_eq!(
        h.insert_ref(e, key(7), RefAction::Add, 0),
        InsertOutcome::New
    );
    assert_eq!(
        h.insert_ref(e, key(7), RefAction::Drop, 0),
        InsertOutcome::Cancelled
    );
    // Same key, now a DROP node; then a real ADD.
    assert_eq!(
        h.insert_ref(e, key(7), RefAction::Drop, 0),
        InsertOutcome::New
    );
    assert_eq!(
        h.insert_ref(e, key(9), RefAction::Add, 0),
        InsertOutcome::New
    );
    let mut seen = vec![];
    while let Some(k) = h.select_delayed_ref(e) {
        let n = h.erase_ref(&k);
        seen.push((n.action, k.backref(e).a));
    }
    assert_eq!(seen, vec![(RefAction::Add, 9), (RefAction::Drop, 7)]);
}

/// A data ref node key of root `root` with tree-mod seq `seq`.
fn nk(e: Era, root: u64, seq: u64) -> NodeKey {
    NodeKey::new(e, &BackrefKey::data(0, root, 257, 0), seq)
}

/// A data head (`is_data`) or tree head holding, inserted in order, a data ref node of each
/// `(root, seq, action)`.
fn head_with(e: Era, is_data: bool, nodes: &[(u64, u64, RefAction)]) -> HeadInner {
    let mut h = HeadInner::new(4096, is_data);
    for &(root, seq, action) in nodes {
        h.insert_ref(e, nk(e, root, seq), action, 0);
    }
    h
}

/// (seq, action, ref_mod) of every node of `h`, in key order.
fn nodes(h: &HeadInner, e: Era) -> Vec<(u64, RefAction, u32)> {
    h.refs
        .iter()
        .map(|(k, n)| (k.seq(e), n.action, n.ref_mod))
        .collect()
}

/// §2.6 same action: the node met first in the descending walk (R, here seq 2) absorbs the
/// other (N, seq 1) — whichever has the larger ref_mod — and N is dropped. The survivor's seq
/// matters: it decides the §1.6 hold-back.
/// Also kills (the existing suite catches them too): `replace && with || in
/// HeadInner::merge_delayed_refs` (line 215), `replace != with ==` there, `replace += with *=`
/// / `-=` on the absorbed ref_mod (line 223).
#[test]
fn v3_merge_same_action_keeps_the_first_node() {
    let e = Era::V3;
    // seq 1 twice: merged at insertion (same key incl. seq) into ref_mod 2.
    let add = RefAction::Add;
    let mut h = head_with(e, true, &[(5, 2, add), (5, 1, add), (5, 1, add)]);
    assert_eq!(h.merge_delayed_refs(e, 0), 1);
    assert_eq!(nodes(&h, e), vec![(2, RefAction::Add, 3)]);
}

/// §2.6 fence: only nodes with `seq >= fence` are fenced; older ones still merge.
/// Kills: `replace >= with < in HeadInner::merge_delayed_refs` (line 185).
#[test]
fn v3_merge_below_the_fence() {
    let e = Era::V3;
    let (add, drop) = (RefAction::Add, RefAction::Drop);
    let mut h = head_with(e, true, &[(5, 1, add), (5, 2, add), (5, 9, drop)]);
    // Fence 9: the descending walk stops at once (seq 9 is fenced), nothing merges.
    assert_eq!(h.merge_delayed_refs(e, 9), 0);
    assert_eq!(h.refs.len(), 3);
    // Fence 5 (the oldest element moved on): seq 9 stays fenced, seq 2 and 1 merge.
    let mut h = head_with(e, true, &[(5, 1, add), (5, 2, add)]);
    assert_eq!(h.merge_delayed_refs(e, 5), 1);
    assert_eq!(nodes(&h, e), vec![(2, RefAction::Add, 2)]);
}

/// §4.4 modern merge: tree heads merge nodes equal but for seq, skipping fenced ones (the
/// walk goes on past them); data heads are never merged (since K3.14).
/// Kills: `delete ! in HeadInner::merge_delayed_refs` (modern filter, line 196) and the
/// modern data-head skip mutants (line 181).
#[test]
fn modern_merge_skips_fenced_nodes_and_data_heads() {
    let e = Era::Modern;
    let (add, drop) = (RefAction::Add, RefAction::Drop);
    let tree_head = || {
        head_with(
            e,
            false,
            &[(5, 1, add), (5, 3, drop), (5, 7, add), (6, 2, add)],
        )
    };
    // No fence: root 5's three nodes net to one ADD; root 6 untouched.
    let mut h = tree_head();
    let net = h.queued_net();
    assert_eq!(h.merge_delayed_refs(e, 0), 2);
    assert_eq!(h.refs.len(), 2);
    assert_eq!(h.queued_net(), net);
    // Fence 3: seq 3 and 7 are fenced and skipped, nothing left to pair with seq 1.
    let mut h = tree_head();
    assert_eq!(h.merge_delayed_refs(e, 3), 0);
    // Fence 7: seq 1 and 3 cancel, seq 7 stays.
    let mut h = tree_head();
    assert_eq!(h.merge_delayed_refs(e, 7), 2);
    assert_eq!(
        nodes(&h, e),
        vec![(7, RefAction::Add, 1), (2, RefAction::Add, 1)]
    );
    // A data head with the same nodes: not merged in the modern era, merged in 3.x.
    let mut d = head_with(e, true, &[(5, 1, add), (5, 3, add)]);
    assert_eq!(d.merge_delayed_refs(e, 0), 0);
    let mut d3 = head_with(Era::V3, true, &[(5, 1, add), (5, 3, add)]);
    assert_eq!(d3.merge_delayed_refs(Era::V3, 0), 1);
}

// ---------------------------------------------------------------- root.rs / head.rs: the head-lock dance

use refgate_replay::Params;
use refgate_replay::internals::root::{FsModel, TransHandle, Worker};
use refgate_replay::live::{Live, ThreadState};
use refgate_replay::refkey::AddAction;

use common::{NB, tree};

/// §2.4 step 1 / §2.9 `btrfs_delayed_ref_lock`: a head-mutex waiter that wakes to find its
/// head gone from the tree (`in_tree` 0) gets `-EAGAIN` and looks again — here
/// `btrfs_lookup_extent_info` finds the extent's new head and returns its `ref_mod`, not the
/// dead head's. The head is taken out by hand (as a runner's step 7 would) while the reader
/// sleeps on its mutex; the reader is waited for by its live state, not by time.
/// Kills: `replace DelayedRefHead::in_tree -> bool with true`, `replace
/// DelayedRefHead::set_in_tree with ()`, `delete ! in FsModel::delayed_ref_lock`, the
/// `head_eagain` `+=` mutants in `FsModel::delayed_ref_lock`.
#[test]
fn lookup_after_its_head_left_the_tree_sees_the_new_head() {
    for era in [Era::V3, Era::Modern] {
        let live = Arc::new(Live::new(2));
        let fs = FsModel::new(era, runner_params(), vec![], live.clone());
        let mut w0 = Worker::new(0, live.clone());
        let mut h = TransHandle::default();
        fs.add_ref(&mut w0, &mut h, &tree(NB, AddAction::AddExtent, 0), None)
            .unwrap();
        fs.add_ref(&mut w0, &mut h, &tree(NB, AddAction::Add, 7), None)
            .unwrap();
        let old = fs.root_lock_for_tests(&mut w0).heads[&NB].clone();
        assert!(old.mutex_trylock());
        let (ret, eagain) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut w1 = Worker::new(1, live.clone());
                let v = fs.lookup_extent_info(&mut w1, NB);
                (v, w1.m.head_eagain)
            });
            while live.workers[1].state() != ThreadState::WaitingOnHead {
                assert!(!reader.is_finished());
                std::thread::yield_now();
            }
            // The reader holds `old` and sleeps on its mutex: delete `old` (ref_mod 2) and
            // queue a new head for the same extent (ref_mod 1), then release the mutex.
            {
                let mut g = fs.root_lock_for_tests(&mut w0);
                g.heads.remove(&NB);
                old.set_in_tree(false);
            }
            fs.add_ref(&mut w0, &mut h, &tree(NB, AddAction::Add, 9), None)
                .unwrap();
            old.mutex_unlock();
            reader.join().unwrap()
        });
        assert_eq!((ret, eagain), (1, 1), "{era:?}");
    }
}

/// §2.4 step 1 / §4.4: when the head's mutex is free, `btrfs_delayed_ref_lock` takes it with
/// the trylock and keeps `delayed_refs->lock` held throughout — one DR-lock acquisition per
/// lookup, no head-mutex wait. (Falling back to the blocking path would drop and retake the
/// DR lock, opening a window for other tasks.)
/// Kills: `replace DelayedRefHead::mutex_trylock -> bool with false`, `replace
/// FsModel::lookup_extent_info -> i64 with 0` / `with 1` / `with -1`.
#[test]
fn free_head_mutex_is_taken_without_dropping_the_dr_lock() {
    for era in [Era::V3, Era::Modern] {
        let (fs, mut w) = common::fs(era);
        let mut h = TransHandle::default();
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::AddExtent, 0), None)
            .unwrap();
        let before = w.m.dr_lock.acquisitions;
        assert_eq!(fs.lookup_extent_info(&mut w, NB), 1);
        assert_eq!(w.m.dr_lock.acquisitions - before, 1, "{era:?}");
        assert_eq!((w.m.head_mutex.count, w.m.head_eagain), (0, 0));
        // The value is the head's pending ref_mod (§2.9); 0 without a head.
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Add, 7), None)
            .unwrap();
        assert_eq!(fs.lookup_extent_info(&mut w, NB), 2);
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Drop, 8), None)
            .unwrap();
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Drop, 9), None)
            .unwrap();
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Drop, 10), None)
            .unwrap();
        assert_eq!(fs.lookup_extent_info(&mut w, NB), -1);
        assert_eq!(fs.lookup_extent_info(&mut w, 2 * NB), 0);
    }
}

// ---------------------------------------------------------------- head.rs: the head mutex under virtual CPUs

use common::replay_virtual;
use refgate_replay::workload::{Handle, Op, Task, TaskTransaction, Workload};
use refgate_replay::{Config, Engine, Report, replay};

/// Two virtual CPUs under PRE: task 0 adds one ref at 1 MiB and commits (run_most holds the
/// head's mutex for select 50 + run 1000 + select 50 + delete 30); task 1 thinks 500 ns, then
/// `btrfs_lookup_extent_info`s that extent (§2.9): it finds the head, sleeps on its mutex
/// until the runner drops it, then finds the head gone (`-EAGAIN`) and no head left.
fn lookup_while_running() -> Report {
    replay_virtual(
        "pre",
        vec![
            one_txn_task(0, vec![data_add(1 << 20)], true),
            one_txn_task(
                1,
                vec![
                    Op::Think { ns: 500 },
                    Op::LookupExtentInfo { bytenr: 1 << 20 },
                ],
                false,
            ),
        ],
        32,
        5000,
    )
}

/// The sleeper really waits for the owner (mutual exclusion under virtual CPUs) and its wait
/// is recorded as the virtual time it slept.
/// Kills: `delete ! in DelayedRefHead::mutex_lock` (the virtual path's retry loop), `replace -
/// with + / with / in DelayedRefHead::mutex_lock` (the recorded wait).
#[test]
fn virtual_head_mutex_waiter_sleeps_until_the_owner_unlocks() {
    let r = lookup_while_running();
    assert_eq!((r.refs_run, r.heads_run), (1, 1));
    assert_eq!(r.head_eagain, 1);
    assert_eq!(r.head_mutex_waits.count, 1);
    // Task 0: add 0–100, walk 1 node 100–110, select 110–160, run 160–1160, select
    // 1160–1210, delete 1210–1240, unlock and wake task 1 (wake-up 5000: runs at 6240).
    // Task 1: think 0–500, DR lock + walk 1 node 500–510, trylock fails, sleeps 510–6240.
    assert_eq!(r.head_mutex_waits.total_ns, 6240 - 510);
}

/// Two head mutexes with a sleeper each (virtual CPUs, one head per cluster, wake-ups of
/// 100 ns): committers 0 and 2 each claim one head (1 MiB, 2 MiB) and hold its mutex while
/// their runs take turns on the extent-tree lock (~1000 ns apart); tasks 1 and 3 look the
/// extents up and sleep on the two mutexes, in either order. Each unlock must wake the
/// sleeper of *that* mutex (the scheduler's wait address is the mutex's own); a sleeper woken
/// for the wrong mutex finds its own still held and sleeps again, and the right one is woken
/// only by a later unlock.
/// Timeline: task 0 adds 0–100, task 2 adds 100–200; task 0 walks 200–210, selects, runs
/// 260–1260, deletes 1310–1340 and unlocks 1 MiB at 1340; task 2 claims 2 MiB, spins on the
/// extent-tree lock until 1260, runs 1260–2260 and unlocks at 2340. The sleepers (from 410 and
/// 510) are woken 100 ns after their own mutex's unlock: 1440 and 2440.
/// Kills: `replace DelayedRefHead::mutex_addr -> usize with 0` / `with 1`.
#[test]
fn virtual_head_mutex_wakes_its_own_sleeper() {
    for (t1, t3) in [(500, 400), (400, 500)] {
        let r = replay_virtual(
            "pre",
            vec![
                one_txn_task(0, vec![data_add(1 << 20)], true),
                one_txn_task(
                    1,
                    vec![
                        Op::Think { ns: t1 },
                        Op::LookupExtentInfo { bytenr: 1 << 20 },
                    ],
                    false,
                ),
                one_txn_task(2, vec![data_add(2 << 20)], true),
                one_txn_task(
                    3,
                    vec![
                        Op::Think { ns: t3 },
                        Op::LookupExtentInfo { bytenr: 2 << 20 },
                    ],
                    false,
                ),
            ],
            1,
            100,
        );
        assert_eq!((r.refs_run, r.heads_run), (2, 2));
        assert_eq!(r.head_eagain, 2, "{t1}/{t3}");
        assert_eq!(r.head_mutex_waits.count, 2);
        let (x_from, y_from) = (t1 + 10, t3 + 10);
        assert_eq!(
            r.head_mutex_waits.total_ns,
            (1440 - x_from) + (2440 - y_from),
            "{t1}/{t3}"
        );
    }
}

/// `mutex_is_locked` follows the head mutex (spec tests only ever ask while it is held).
/// Kills: `replace DelayedRefHead::mutex_is_locked -> bool with true`.
#[test]
fn head_mutex_is_locked_follows_the_mutex() {
    let head = refgate_replay::internals::head::DelayedRefHead::new(NB, NB, false, 100);
    assert!(!head.mutex_is_locked());
    assert!(head.mutex_trylock());
    assert!(head.mutex_is_locked());
    assert!(!head.mutex_trylock());
    head.mutex_unlock();
    assert!(!head.mutex_is_locked());
}

// ---------------------------------------------------------------- policy/mod.rs: what the report says

/// Each policy's name, kernel range and gate flag (reported in the JSON report and the
/// dashboard), and the reclaim workers' names (§3, §2.3, §4.1, §4.7).
/// Kills: `Policy::gated -> true` (the trait default, i.e. MODERN), `<impl Policy for
/// P>::{name, kernels} -> ""/"xyzzy"`, `<impl Policy for P>::gated -> true/false`, `replace
/// != with == in <impl Policy for P>::gated`, `WorkerKind::name -> ""/"xyzzy"`.
#[test]
fn policies_describe_themselves() {
    use refgate_replay::policy::{Modern, Policy, by_name};
    for (name, kernels, gated, era) in [
        ("pre", "3.7–3.8", false, Era::V3),
        ("seed", "3.9–3.10", true, Era::V3),
        ("seed-throttle", "3.11–3.13", true, Era::V3),
        ("modern", "6.7–6.18", false, Era::Modern),
    ] {
        let p = by_name(name).unwrap();
        assert_eq!(
            (p.name(), p.kernels(), p.gated(), p.era()),
            (name, kernels, gated, era)
        );
    }
    assert_eq!(Modern::ASYNC_RECLAIM.name(), "async reclaim worker");
    assert_eq!(
        Modern::PREEMPTIVE_RECLAIM.name(),
        "preemptive reclaim worker"
    );
    assert_eq!(
        Modern.workers(),
        [Modern::ASYNC_RECLAIM, Modern::PREEMPTIVE_RECLAIM]
    );
}

/// §2.8 K3.8 `btrfs_should_end_transaction`: while the commit is not flushing it runs the
/// handle's updates (a throttled call: below 64 ready heads it runs nothing, but it is a
/// call) and says "carry on"; a handle without updates makes no call; once `flushing` is
/// set it says "end" and leaves the updates alone.
/// Kills: `replace <impl Policy for P>::should_end_transaction -> Result<bool, ModelError>
/// with Ok(true)` and the `updates > 0` comparison mutants (`>=`, `==`, `<`).
#[test]
fn v3_should_end_transaction_runs_updates_until_flushing() {
    use std::sync::atomic::Ordering;
    for name in ["pre", "seed", "seed-throttle"] {
        let p = refgate_replay::policy::by_name(name).unwrap();
        let (fs, mut w) = common::fs(Era::V3);
        let mut h = TransHandle::default();
        // No updates: no run call.
        assert!(!p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
        assert_eq!(w.m.run_calls.count, 0, "{name}");
        fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::AddExtent, 0), None)
            .unwrap();
        assert_eq!(h.delayed_ref_updates, 2);
        assert!(!p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
        assert_eq!(
            (w.m.run_calls.count, h.delayed_ref_updates),
            (1, 0),
            "{name}"
        );
        fs.add_ref(&mut w, &mut h, &tree(2 * NB, AddAction::AddExtent, 0), None)
            .unwrap();
        fs.root.flushing.store(true, Ordering::Relaxed);
        assert!(p.should_end_transaction(&fs, &mut w, &mut h).unwrap());
        assert_eq!(
            (w.m.run_calls.count, h.delayed_ref_updates),
            (1, 2),
            "{name}"
        );
    }
}

/// §6: an explicit `btrfs_run_delayed_refs(arg)` in the policy's own terms. 3.x: `N` is a
/// throttled node budget (below 64 ready heads it runs nothing, §2.1 step 6a), `0` is run_most
/// and `-1` run_all, and the call returns the nodes run (refs and heads); 6.x: `min_bytes`,
/// returning the reservation bytes released (one `delayed_ref_bytes` per ref run).
/// Kills: `replace <impl Policy for P>::run_explicit -> Result<u64, ModelError> with Ok(0)` /
/// `Ok(1)`, `replace <impl Policy for Modern>::run_explicit ... with Ok(0)` / `Ok(1)`.
#[test]
fn run_explicit_runs_in_the_policys_terms() {
    for (name, arg) in [("pre", 0), ("seed", u64::MAX), ("seed-throttle", 0)] {
        let p = refgate_replay::policy::by_name(name).unwrap();
        let (fs, mut w) = common::fs(Era::V3);
        let mut h = TransHandle::default();
        for i in 1..=3 {
            fs.add_ref(&mut w, &mut h, &tree(i * NB, AddAction::AddExtent, 0), None)
                .unwrap();
        }
        // 3 ready heads: a throttled budget runs nothing.
        assert_eq!(p.run_explicit(&fs, &mut w, &mut h, 5).unwrap(), 0, "{name}");
        // 3 refs + 3 heads.
        assert_eq!(
            p.run_explicit(&fs, &mut w, &mut h, arg).unwrap(),
            6,
            "{name}"
        );
        assert_eq!(fs.num_entries_racy(), 0);
    }
    let p = refgate_replay::policy::by_name("modern").unwrap();
    let params = runner_params();
    let (fs, mut w) = common::fs_with(Era::Modern, params.clone(), vec![]);
    let mut h = TransHandle::default();
    for i in 1..=3 {
        fs.add_ref(&mut w, &mut h, &tree(i * NB, AddAction::AddExtent, 0), None)
            .unwrap();
    }
    assert_eq!(
        p.run_explicit(&fs, &mut w, &mut h, u64::MAX).unwrap(),
        3 * params.delayed_ref_bytes
    );
    assert_eq!(fs.num_entries_racy(), 0);
}

// ---------------------------------------------------------------- root.rs

/// §1.1 initialisation: a new transaction starts with an empty tree-mod-seq list (`lowest`
/// 0: nothing held back) and the counter back at 0.
/// Kills: `replace TreeModSeq::reset with ()`.
#[test]
fn start_transaction_resets_the_tree_mod_seq_list() {
    let (fs, mut w) = common::fs(Era::V3);
    let mut elem = 0;
    assert_eq!(fs.tree_mod.get_seq(&mut elem), 2);
    assert_eq!((elem, fs.tree_mod.lowest()), (1, 1));
    assert!(fs.tree_mod.hold_back(5));
    fs.start_transaction(&mut w).unwrap();
    assert_eq!(fs.tree_mod.lowest(), 0);
    assert!(!fs.tree_mod.hold_back(5));
    let mut elem = 0;
    assert_eq!(fs.tree_mod.get_seq(&mut elem), 2);
}

/// Per-transaction counts land in their own transaction (`FsModel::txn`): one task, three
/// committed transactions adding 1, 2 and 3 new extents.
/// Kills: `replace FsModel::txn -> usize with 0` / `with 1`.
#[test]
fn per_transaction_counts_follow_the_transaction() {
    let txn = |first: u64, n: u64| TaskTransaction {
        handles: vec![Handle {
            ops: (first..first + n).map(|i| data_add(i << 20)).collect(),
        }],
        commit: true,
    };
    let w = Workload {
        tasks: vec![Task {
            id: 0,
            transactions: vec![txn(1, 1), txn(2, 2), txn(4, 3)],
        }],
        initial: vec![],
        transactions: 3,
        ..Workload::default()
    };
    for name in ["pre", "modern"] {
        let p = refgate_replay::policy::by_name(name).unwrap();
        let r = refgate_replay::run(&w, p.as_ref(), 1, &runner_params()).unwrap();
        let per: Vec<(u64, u64)> = r
            .per_txn
            .iter()
            .map(|t| (t.heads_run, t.data_refs_run))
            .collect();
        assert_eq!(per, vec![(1, 1), (2, 2), (3, 3)], "{name}");
    }
}

/// The live state a runner publishes while it sleeps on the seed gate (through
/// `FsModel::ws`) is what `--timeline` names the sleep after: with the gate's constants
/// scaled down (as tests/vcpu.rs does) some handle ends sleep on it, and the timeline says
/// "sleeping: seed gate".
/// Kills: `replace FsModel::ws -> &WorkerState with Box::leak(Box::new(Default::default()))`.
#[test]
fn virtual_timeline_names_gate_sleeps() {
    let w = refgate_replay::workload::synthetic(&refgate_replay::SynthParams {
        tasks: 16,
        transactions: 3,
        ops_per_handle: 32,
        ..Default::default()
    });
    let cfg = Config {
        engine: Engine::Virtual,
        cpus: 8,
        params: Params {
            cluster_heads: 4,
            throttle_ready_heads: 4,
            gate_entries_threshold: 32,
            gate_progress_quantum: 8,
            ..runner_params()
        },
        sim_seed: 0,
        pace: false,
        timeline: true,
    };
    let r = replay(
        &w,
        refgate_replay::policy::by_name("seed").unwrap().as_ref(),
        &cfg,
        Arc::new(Live::new(8)),
    )
    .unwrap();
    assert!(r.gate.sleeps > 0, "{:?}", r.gate);
    let tl = r.timeline.expect("timeline requested");
    assert!(
        tl.slices.iter().any(|s| s.3 == "sleeping: seed gate"),
        "no gate sleep in the timeline"
    );
}

/// §7.2 `c_walk` on real threads: every node walked costs `Params::walk_cost_ns` of busy-work
/// (a lookup walks one). The only timing assertion in this file, and a one-sided one:
/// `exec::burn` spins until at least that long has passed, so the lower bound holds on any
/// machine, however loaded; it fails only if the busy-work is skipped.
/// Kills: `replace != with == in FsModel::charge`, `replace == with != in FsModel::charge`,
/// `replace * with +` / `with /` in `FsModel::charge` (the walk's n nodes at once).
#[test]
fn real_thread_walk_cost_is_burnt_per_node() {
    let params = Params {
        walk_cost_ns: 2_000_000,
        ..runner_params()
    };
    let (fs, mut w) = common::fs_with(Era::V3, params, vec![]);
    let t = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(fs.lookup_extent_info(&mut w, NB), 0);
    }
    assert!(t.elapsed() >= std::time::Duration::from_millis(6));
    // One cluster walk over 10 heads charges all its nodes at once: n × the cost.
    for i in 1..=10 {
        fs.add_ref(
            &mut w,
            &mut TransHandle::default(),
            &tree(i * NB, AddAction::AddExtent, 0),
            None,
        )
        .unwrap();
    }
    let before = w.m.nodes_walked;
    let t = std::time::Instant::now();
    let cluster = {
        let mut g = fs.root_lock_for_tests(&mut w);
        refgate_replay::internals::run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 0)
    };
    let walked = w.m.nodes_walked - before;
    assert_eq!((cluster.len(), walked), (10, 19)); // 10 heads + the refs of 9 of them
    assert!(t.elapsed() >= std::time::Duration::from_nanos(walked * 2_000_000));
}

/// §1.5 counter checks: `check_counters` accepts a consistent queue (a claimed head is not
/// ready) and reports each kind of drift: `num_heads_ready`, `num_entries`, a head in the
/// tree with `in_tree` 0.
/// Kills: `replace FsModel::check_counters -> Result<(), ModelError> with Ok(())` and the
/// recount mutants in it.
#[test]
fn check_counters_reports_each_drift() {
    use std::sync::atomic::Ordering;
    let (fs, mut w) = common::fs(Era::V3);
    let mut h = TransHandle::default();
    for i in 1..=3 {
        fs.add_ref(&mut w, &mut h, &tree(i * NB, AddAction::AddExtent, 0), None)
            .unwrap();
    }
    fs.add_ref(&mut w, &mut h, &tree(NB, AddAction::Add, 7), None)
        .unwrap();
    fs.check_counters(&mut w).unwrap();
    let err = |fs: &FsModel, w: &mut Worker| fs.check_counters(w).unwrap_err().to_string();
    // A claimed head is not ready: consistent once num_heads_ready follows.
    let head = fs.root_lock_for_tests(&mut w).heads[&NB].clone();
    head.set_claimed(true);
    assert!(err(&fs, &mut w).contains("num_heads_ready 3 != recomputed 2"));
    fs.root_lock_for_tests(&mut w).c.num_heads_ready = 2;
    fs.check_counters(&mut w).unwrap();
    // 3 heads + 4 refs = 7 entries.
    fs.root.num_entries.fetch_add(1, Ordering::Relaxed);
    assert!(err(&fs, &mut w).contains("num_entries 8 != recomputed 7"));
    fs.root.num_entries.fetch_sub(1, Ordering::Relaxed);
    fs.check_counters(&mut w).unwrap();
    head.set_in_tree(false);
    assert!(err(&fs, &mut w).contains("in_tree = 0"));
    head.set_in_tree(true);
    fs.check_counters(&mut w).unwrap();
}
