//! Spec-conformance tests; each names the section of kernel-delayed-refs.md it checks.

mod common;
use common::runner_params;
use common::{NB, fs, fs_with, tree};
use refgate_common::event::{SHARED_BLOCK_REF_KEY, TREE_BLOCK_REF_KEY};
use refgate_replay::Params;
use refgate_replay::internals::extent_tree::ExtentItem;
use refgate_replay::internals::head::ExtentOp;
use refgate_replay::internals::root::{FsModel, TransHandle, Worker};
use refgate_replay::internals::run_modern;
use refgate_replay::internals::run_v3::{self, RunCount};
use refgate_replay::policy;
use refgate_replay::refkey::{AddAction, BackrefKey, Era, RefSpec};

fn item(key: BackrefKey, n: u64) -> ExtentItem {
    let mut it = ExtentItem {
        num_bytes: NB,
        refs: n,
        ..Default::default()
    };
    it.backrefs.insert(key, n);
    it
}

/// `fs.add_ref` of a ref without an extent op, which must succeed.
fn add(fs: &FsModel, w: &mut Worker, h: &mut TransHandle, r: &RefSpec) {
    fs.add_ref(w, h, r, None).unwrap();
}

/// run_all in either era's runner (v3 ungated `-1`, modern `U64_MAX`), on a fresh handle.
fn run_all(fs: &FsModel, w: &mut Worker, era: Era) {
    let mut r = TransHandle::default();
    match era {
        Era::V3 => run_v3::run_delayed_refs(fs, w, &mut r, RunCount::All, false).map(|_| ()),
        Era::Modern => run_modern::run_delayed_refs(fs, w, &mut r, u64::MAX).map(|_| ()),
    }
    .unwrap();
}

/// Queue `n` new tree blocks (ADD_EXTENT, one ref each) at bytenr 1..=n × NB.
fn queue_new_blocks(fs: &FsModel, w: &mut Worker, h: &mut TransHandle, n: u64) {
    for i in 1..=n {
        add_new_block(fs, w, h, i * NB);
    }
}

/// `BTRFS_BLOCK_FLAG_FULL_BACKREF` (`btrfs_tree.h`).
const FULL_BACKREF: u64 = 1 << 8;

/// A new tree block at `bytenr`: ADD_EXTENT with an extent op setting FULL_BACKREF.
fn add_new_block(fs: &FsModel, w: &mut Worker, h: &mut TransHandle, bytenr: u64) {
    let op = ExtentOp {
        flags: Some(FULL_BACKREF),
        key: None,
    };
    fs.add_ref(w, h, &tree(bytenr, AddAction::AddExtent, 0), Some(op))
        .unwrap();
}

#[test]
fn spec_1_4_counters_on_add_merge_cancel() {
    for era in [Era::V3, Era::Modern] {
        let (fs, mut w) = fs(era);
        let mut h = TransHandle::default();
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::AddExtent, 0));
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::Add, 7));
        add(&fs, &mut w, &mut h, &tree(2 * NB, AddAction::Drop, 7));
        let (c, heads) = fs.counters(&mut w);
        assert_eq!((heads, c.num_heads, c.num_heads_ready), (2, 2, 2));
        assert_eq!(fs.num_entries_racy(), 5);
        let heads_counted = if era == Era::V3 { 2 } else { 0 };
        assert_eq!(h.delayed_ref_updates, 3 + heads_counted);
        // Opposite action on the same key (seq 0): cancels at insertion.
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::Drop, 7));
        assert_eq!(fs.num_entries_racy(), 4);
        assert_eq!(h.delayed_ref_updates, 2 + heads_counted);
        assert_eq!(w.m.insert_cancels, 1);
        fs.check_counters(&mut w).unwrap();
    }
}

/// §1.6: v3.x fs-tree refs get a fresh seq each, so identical refs do not merge on insert;
/// COW refs (seq 0) do.
#[test]
fn spec_1_6_fs_tree_refs_never_merge_on_insert_v3() {
    let (fs, mut w) = fs(Era::V3);
    let mut h = TransHandle::default();
    let fsref = RefSpec {
        for_cow: false,
        ref_root: 5,
        ..tree(NB, AddAction::Add, 99)
    };
    add(&fs, &mut w, &mut h, &fsref);
    add(
        &fs,
        &mut w,
        &mut h,
        &RefSpec {
            action: AddAction::Drop,
            ..fsref
        },
    );
    assert_eq!(
        fs.num_entries_racy(),
        3,
        "head + two refs with distinct seqs"
    );
    assert_ne!(h.seq_elem, 0, "handle registered on tree_mod_seq_list");
    // Modern: seq is read, not bumped ⇒ the same pair cancels on insert (§4.3).
    let (fsm, mut wm) = fs_with(Era::Modern, runner_params(), vec![]);
    let mut hm = TransHandle::default();
    add(&fsm, &mut wm, &mut hm, &fsref);
    add(
        &fsm,
        &mut wm,
        &mut hm,
        &RefSpec {
            action: AddAction::Drop,
            ..fsref
        },
    );
    assert_eq!(fsm.num_entries_racy(), 1);
}

/// §1.6 / §2.4 step 4: while another handle with fs-tree refs is open, newer fs-tree refs
/// are held back; once it ends they run.
#[test]
fn spec_1_6_seq_holdback_until_oldest_handle_ends() {
    let k = BackrefKey::tree(0, 5);
    let (fs, mut w) = fs_with(Era::V3, runner_params(), vec![(NB, item(k, 1))]);
    let mut a = TransHandle::default();
    let mut b = TransHandle::default();
    let r = RefSpec {
        for_cow: false,
        ref_root: 5,
        ..tree(NB, AddAction::Add, 77)
    };
    add(&fs, &mut w, &mut a, &r);
    add(
        &fs,
        &mut w,
        &mut b,
        &RefSpec {
            bytenr: 2 * NB,
            action: AddAction::AddExtent,
            ..r
        },
    );
    let mut c = TransHandle::default();
    run_v3::run_delayed_refs(&fs, &mut w, &mut c, RunCount::Most, false).unwrap();
    assert!(w.m.seq_holdbacks > 0);
    assert_eq!(w.m.refs_run, 0);
    fs.check_counters(&mut w).unwrap();
    // A and B end: their elements go; run_all drains.
    fs.tree_mod.put(&mut a.seq_elem);
    fs.tree_mod.put(&mut b.seq_elem);
    run_v3::run_delayed_refs(&fs, &mut w, &mut c, RunCount::All, false).unwrap();
    assert_eq!(w.m.refs_run, 2);
    assert_eq!(fs.counters(&mut w).1, 0);
}

/// §2.2: clusters are ≤ 32 contiguous unclaimed heads from the shared cursor; claimed heads
/// end a non-empty cluster and are skipped by an empty one; the search wraps once.
#[test]
fn spec_2_2_cluster_contiguity_and_cursor() {
    let (fs, mut w) = fs(Era::V3);
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 100);
    let mut g = fs.root_lock_for_tests(&mut w);
    let c1 = run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 0);
    let b1: Vec<u64> = c1.iter().map(|h| h.bytenr).collect();
    assert_eq!(b1, (1..=32).map(|i| i * NB).collect::<Vec<_>>());
    assert_eq!(g.c.run_delayed_start, 32 * NB);
    assert_eq!(g.c.num_heads_ready, 68);
    // Unclaim 40..=50's neighbours: claim a middle block by hand to split the range.
    g.heads[&(40 * NB)].set_claimed(true);
    g.c.num_heads_ready -= 1;
    let cursor = g.c.run_delayed_start;
    let c2 = run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, cursor);
    let b2: Vec<u64> = c2.iter().map(|h| h.bytenr).collect();
    assert_eq!(
        b2,
        (33..=39).map(|i| i * NB).collect::<Vec<_>>(),
        "stops at a claimed head"
    );
    let c3 = run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 39 * NB);
    assert_eq!(
        c3.front().unwrap().bytenr,
        41 * NB,
        "skips a claimed head when empty"
    );
    assert_eq!(c3.len(), 32);
    // From beyond the last head: wraps to rb_first, whose heads are all claimed up to 39,
    // skipped, then 73.. are taken.
    let c4 = run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 100 * NB);
    assert_eq!(c4.front().unwrap().bytenr, 73 * NB);
    assert_eq!(c4.len(), 28);
    let c5 = run_v3::btrfs_find_ref_cluster(&fs, &mut w, &mut g, 0);
    assert!(c5.is_empty(), "nothing claimable");
}

/// §2.1 step 6a/6e: a throttled run drains whole clusters (count checked per cluster) and
/// stops below 64 ready heads; run_all empties the tree (§2.1 step 7).
#[test]
fn spec_2_1_count_per_cluster_and_64_ready_floor() {
    let (fs, mut w) = fs(Era::V3);
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 100);
    let mut r = TransHandle::default();
    // count = 1 still runs a whole 32-head cluster: 32 refs + 32 heads.
    let n = run_v3::run_delayed_refs(&fs, &mut w, &mut r, RunCount::Nodes(1), false).unwrap();
    assert_eq!(n, 64);
    assert_eq!(w.m.refs_run, 32);
    assert_eq!(fs.counters(&mut w).0.num_heads_ready, 68);
    // A big budget runs clusters while ≥ 64 heads are ready: one more cluster, then 36 < 64.
    run_v3::run_delayed_refs(&fs, &mut w, &mut r, RunCount::Nodes(10_000), false).unwrap();
    assert_eq!(fs.counters(&mut w).0.num_heads_ready, 36);
    fs.check_counters(&mut w).unwrap();
    run_v3::run_delayed_refs(&fs, &mut w, &mut r, RunCount::All, false).unwrap();
    assert_eq!(fs.counters(&mut w).1, 0);
    assert_eq!(fs.num_entries_racy(), 0);
    assert_eq!(fs.extent_tree.snapshot().len(), 100);
    // ADD_EXTENT with its extent op: §2.7 alloc_reserved_tree_block gives the item
    // TREE_BLOCK (2) OR-ed with the op's flags.
    assert!(
        fs.extent_tree
            .snapshot()
            .values()
            .all(|it| it.flags == FULL_BACKREF | 2 && it.refs == 1)
    );
}

/// §2.5 / §4.4 / §7.4 (ii): ADDs run before DROPs within a head, so dropping the last
/// existing backref while another is being added never deletes the item.
#[test]
fn spec_2_5_add_before_drop_keeps_item() {
    for era in [Era::V3, Era::Modern] {
        let k = BackrefKey::tree(0, 2);
        let (fs, mut w) = fs_with(era, runner_params(), vec![(NB, item(k, 1))]);
        let mut h = TransHandle::default();
        // The DROP sorts after the ADD in neither era's favour: TREE_BLOCK (176) < SHARED (182).
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::Drop, 0));
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::Add, 4096));
        run_all(&fs, &mut w, era);
        let snap = fs.extent_tree.snapshot();
        let it = &snap[&NB];
        assert_eq!(it.refs, 1);
        assert_eq!(
            it.backrefs.keys().next().unwrap().ref_type,
            SHARED_BLOCK_REF_KEY
        );
        assert!(!it.backrefs.keys().any(|k| k.ref_type == TREE_BLOCK_REF_KEY));
    }
}

/// §2.7: an extent allocated and freed in one transaction is pinned, never inserted; its
/// extent op is discarded (§2.4 step 6).
#[test]
fn spec_2_7_must_insert_reserved_netting_zero_is_pinned() {
    for era in [Era::V3, Era::Modern] {
        let (fs, mut w) = fs(era);
        let mut h = TransHandle::default();
        add_new_block(&fs, &mut w, &mut h, NB);
        add(&fs, &mut w, &mut h, &tree(NB, AddAction::Drop, 0));
        run_all(&fs, &mut w, era);
        assert!(fs.extent_tree.snapshot().is_empty());
        assert_eq!(fs.extent_tree.pinned(), (1, NB));
        assert_eq!(w.m.heads_run, 1);
        assert_eq!(w.m.refs_run, 0);
    }
}

/// §1.4: extent ops merge (flags OR'ed, key copied) into the existing head; run as a
/// head-only update (§2.4 step 6).
#[test]
fn spec_1_4_extent_op_merge_and_run() {
    let k = BackrefKey::tree(0, 2);
    let (fs, mut w) = fs_with(Era::V3, runner_params(), vec![(NB, item(k, 1))]);
    let mut h = TransHandle::default();
    fs.add_extent_op(
        &mut w,
        &mut h,
        NB,
        NB,
        false,
        ExtentOp {
            flags: Some(1),
            key: None,
        },
    )
    .unwrap();
    fs.add_extent_op(
        &mut w,
        &mut h,
        NB,
        NB,
        false,
        ExtentOp {
            flags: Some(4),
            key: Some(9),
        },
    )
    .unwrap();
    assert_eq!(fs.num_entries_racy(), 1);
    run_v3::run_delayed_refs(&fs, &mut w, &mut h, RunCount::All, false).unwrap();
    let it = &fs.extent_tree.snapshot()[&NB];
    assert_eq!((it.flags, it.key, it.refs), (5, Some(9), 1));
    assert_eq!(w.m.extent_ops_run, 1);
}

/// §2.3 step 3 through the runner: a throttled SEED caller returns at once, running
/// nothing, while someone else runs and fewer than 16348 entries are queued; run_all
/// callers bypass the gate.
#[test]
fn spec_2_3_gate_early_return_through_runner() {
    let (fs, mut w) = fs(Era::V3);
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 100);
    let mut st = Default::default();
    fs.root.gate.enter_bypass(&mut st);
    let n = run_v3::run_delayed_refs(&fs, &mut w, &mut h, RunCount::Nodes(100), true).unwrap();
    assert_eq!(n, 0);
    assert_eq!(w.m.gate.early_returns, 1);
    // A run_all caller is not gated: it increments and runs (§2.3).
    run_v3::run_delayed_refs(&fs, &mut w, &mut h, RunCount::All, true).unwrap();
    assert_eq!(w.m.gate.bypasses, 1);
    assert_eq!(fs.counters(&mut w).1, 0);
    assert_eq!(
        fs.root.gate.procs_running_refs(),
        1,
        "only our manual entry remains"
    );
    // ref_seq accounts every cluster's nodes (§2.1 step 6d).
    assert_eq!(fs.root.gate.ref_seq(), 200);
}

/// §4.4: modern selection claims one head at a time from the cursor (`bytenr + num_bytes`)
/// and `0` runs only the heads that existed at the call (§4.6).
#[test]
fn spec_4_4_modern_cursor_and_min_bytes_zero() {
    let (fs, mut w) = fs(Era::Modern);
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 10);
    let head = run_modern::btrfs_select_ref_head(&fs, &mut w)
        .unwrap()
        .unwrap();
    assert_eq!(head.bytenr, NB);
    assert!(head.claimed() && head.mutex_is_locked());
    let (c, _) = fs.counters(&mut w);
    assert_eq!((c.run_delayed_start, c.num_heads_ready), (2 * NB, 9));
    let next = run_modern::btrfs_select_ref_head(&fs, &mut w)
        .unwrap()
        .unwrap();
    assert_eq!(next.bytenr, 2 * NB, "processing heads are skipped");
    next.mutex_unlock();
    head.mutex_unlock();
    // Give them back so the counters are whole again.
    for hd in [&head, &next] {
        hd.set_claimed(false);
    }
    let mut g = fs.root_lock_for_tests(&mut w);
    g.c.num_heads_ready += 2;
    fs.publish(&g.c);
    drop(g);
    fs.check_counters(&mut w).unwrap();
    // min_bytes = 0 ⇒ max_count = num_heads_ready (10) heads.
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, 0).unwrap();
    assert_eq!(w.m.heads_run, 10);
    // min_bytes = N stops once N bytes of reservation were released.
    queue_new_blocks(&fs, &mut w, &mut h, 0);
    for i in 11..=20u64 {
        add(&fs, &mut w, &mut h, &tree(i * NB, AddAction::AddExtent, 0));
    }
    run_modern::run_delayed_refs(&fs, &mut w, &mut h, 3 * fs.params.delayed_ref_bytes).unwrap();
    assert_eq!(w.m.heads_run, 13);
}

/// §4.7: exactly one committer pre-flushes; handle ends run nothing.
#[test]
fn spec_4_7_modern_single_preflush_no_run_at_end() {
    let (fs, mut w) = fs(Era::Modern);
    let p = policy::by_name("modern").unwrap();
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 100);
    p.end_transaction(&fs, &mut w, &mut h).unwrap();
    assert_eq!(w.m.refs_run, 0);
    let mut c = TransHandle::default();
    p.commit_pre(&fs, &mut w, &mut c).unwrap();
    assert_eq!(w.m.refs_run, 100);
    queue_new_blocks_at(&fs, &mut w, &mut h, 200, 10);
    p.commit_pre(&fs, &mut w, &mut c).unwrap();
    assert_eq!(
        w.m.refs_run, 100,
        "FLUSHING already set: second committer does not pre-flush"
    );
    p.commit_exclusive(&fs, &mut w, &mut c).unwrap();
    assert_eq!(w.m.refs_run, 110);
}

fn queue_new_blocks_at(fs: &FsModel, w: &mut Worker, h: &mut TransHandle, from: u64, n: u64) {
    for i in from..from + n {
        add(fs, w, h, &tree(i * NB, AddAction::AddExtent, 0));
    }
}

/// §2.8 / §3: PRE runs at handle end only with updates and > 64 ready heads.
#[test]
fn spec_3_pre_handle_end_threshold() {
    let (fs, mut w) = fs(Era::V3);
    let p = policy::by_name("pre").unwrap();
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 64);
    p.end_transaction(&fs, &mut w, &mut h).unwrap();
    assert_eq!(w.m.refs_run, 0, "64 ready heads is not > 64");
    let mut h2 = TransHandle::default();
    queue_new_blocks_at(&fs, &mut w, &mut h2, 100, 1);
    p.end_transaction(&fs, &mut w, &mut h2).unwrap();
    assert_eq!(w.m.refs_run, 32, "one cluster for a budget of 2 nodes");
}

/// §7.4: the invariant checker itself flags a wrong oracle.
#[test]
fn spec_7_4_checker_detects_mismatch() {
    use refgate_replay::internals::invariant::check_extent_tree;
    use refgate_replay::workload::{SynthParams, synthetic};
    let wl = synthetic(&SynthParams {
        tasks: 2,
        transactions: 1,
        ..Default::default()
    });
    let p = policy::by_name("pre").unwrap();
    let params = Params {
        keep_final_state: true,
        ..runner_params()
    };
    let report = refgate_replay::run(&wl, p.as_ref(), 1, &params).unwrap();
    let flags: std::collections::HashMap<u64, u64> = report
        .final_state
        .unwrap()
        .extents
        .iter()
        .map(|e| (e.bytenr, e.flags))
        .collect();
    // Replay the expected state as items (flags as replayed), then perturb it.
    let mut items = std::collections::HashMap::new();
    for (b, keys) in wl.expected_backrefs() {
        let mut it = ExtentItem {
            flags: flags.get(&b).copied().unwrap_or(0),
            ..ExtentItem::default()
        };
        for (k, v) in keys.into_iter().filter(|(_, v)| *v > 0) {
            it.backrefs.insert(k, v as u64);
            it.refs += v as u64;
        }
        if it.refs > 0 {
            items.insert(b, it);
        }
    }
    check_extent_tree(&wl, &items).unwrap();
    let mut bytenrs: Vec<u64> = items.keys().copied().collect();
    bytenrs.sort_unstable();
    let mut wrong_flags = items.clone();
    wrong_flags.get_mut(&bytenrs[0]).unwrap().flags ^= 1 << 8;
    let errs = check_extent_tree(&wl, &wrong_flags).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains(&bytenrs[0].to_string()) && e.contains("flags")),
        "{errs:?}"
    );
    let b = bytenrs[1];
    *items
        .get_mut(&b)
        .unwrap()
        .backrefs
        .values_mut()
        .next()
        .unwrap() += 1;
    let errs = check_extent_tree(&wl, &items).unwrap_err();
    assert!(errs.iter().any(|e| e.contains(&b.to_string())), "{errs:?}");
}

/// §4.1 (3.11–3.13): throttled callers stop as soon as `should_throttle()` is false (here:
/// fewer than `throttle_311_ready_heads` ready heads), and a busy gate sends them away while
/// the commit is flushing.
#[test]
fn spec_4_1_throttle_311_stop_and_give_up() {
    use refgate_replay::internals::run_v3::Gating;
    let params = Params {
        throttle_311_ready_heads: 80,
        ..runner_params()
    };
    let (fs, mut w) = fs_with(Era::V3, params, vec![]);
    let mut h = TransHandle::default();
    queue_new_blocks(&fs, &mut w, &mut h, 100);
    let mut r = TransHandle::default();
    run_v3::run_delayed_refs_with(
        &fs,
        &mut w,
        &mut r,
        RunCount::Nodes(10_000),
        Gating::Throttle311,
    )
    .unwrap();
    // 100 → 68 ready after one cluster: below 80, so it stops (the 3.9 rule, < 64, would
    // have run a second cluster down to 36).
    assert_eq!(fs.counters(&mut w).0.num_heads_ready, 68);
    queue_new_blocks_at(&fs, &mut w, &mut h, 200, 100);
    let mut st = Default::default();
    fs.root.gate.enter_bypass(&mut st);
    fs.root
        .flushing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let n = run_v3::run_delayed_refs_with(
        &fs,
        &mut w,
        &mut r,
        RunCount::Nodes(10),
        Gating::Throttle311,
    )
    .unwrap();
    assert_eq!((n, w.m.gate.early_returns), (0, 1));
}
