//! Timelines computed by hand for walks of the extent tree's B-tree on virtual CPUs
//! (issue "extent tree", `docs/extent-tree.md`): the root's lock is held for a descent
//! step, not for the whole update, so runners on leaves far apart overlap and runners on
//! one leaf serialize on it; a split holds the parent for its copy.
//!
//! The tree has two levels and every walk costs 300 virtual ns in three equal shares (the
//! root's binary search, the leaf's, the leaf's update; a split one more), so each phase
//! below is 100 ns. Blocks count as COWed already (transaction `u64::MAX`): no restarts.

use super::harness::run_bodies;
use crate::btree::{Btree, Search, WalkCost};
use crate::exec;
use crate::live::Live;
use crate::metrics::ThreadMetrics;
use crate::params::ExtentLock;
use std::sync::atomic::Ordering;

fn tree(kind: ExtentLock) -> Btree {
    let keys: Vec<u64> = (0..10_000u64).map(|i| i * 1000).collect();
    let t = Btree::new(
        &keys,
        0,
        10_000,
        16384,
        kind,
        false,
        WalkCost {
            virtual_ns: 300,
            real_ns: 0,
        },
    );
    assert_eq!(t.start_shape().levels, 2);
    t
}

const INSERT: Search = Search::Insert {
    bytes: 78,
    keep_locks: false,
};
/// Keys in leaves far apart, and a second key in the first one's leaf.
const FAR_A: u64 = 1_000_500;
const FAR_B: u64 = 8_000_500;
const SAME_A: u64 = 1_000_700;

/// Walk `key` after `delay` ns, update the leaf, release; returns when it ended and the ns
/// it waited for block locks.
fn walker(t: &Btree, live: &Live, i: usize, delay: u64, key: u64, s: Search) -> (u64, u64) {
    exec::work(delay);
    let mut m = ThreadMetrics::default();
    let mut fed = Vec::new();
    let mut p = t.search_slot(key, s, u64::MAX, &mut m, &live.workers[i], &mut fed);
    t.charge_leaf_update();
    t.release_path(&mut p);
    (exec::now_ns(), m.extent_tree.total_ns)
}

fn two(kind: ExtentLock, a: (u64, Search), b: (u64, Search)) -> [(u64, u64); 2] {
    let t = tree(kind);
    let live = Live::new(2);
    let (r, _) = run_bodies(
        2,
        vec![
            Box::new(|| walker(&t, &live, 0, 0, a.0, a.1)),
            Box::new(|| walker(&t, &live, 1, 50, b.0, b.1)),
        ],
    );
    [r[0], r[1]]
}

#[test]
fn insertions_on_leaves_far_apart_share_only_the_root() {
    for kind in [ExtentLock::Spin, ExtentLock::Sleep] {
        // A: root 0–100 (write: ins_len > 0), leaf 100–200, root released at 200 (unlock_up
        // at the leaf), update 200–300. B from 50: waits for the root until 200, root
        // 200–300, its own leaf 300–400, update 400–500, in parallel with nothing of A's
        // but the root. One lock for the whole update would end B at 50 + 250 + 300 = 600.
        let [a, b] = two(kind, (FAR_A, INSERT), (FAR_B, INSERT));
        assert_eq!(a, (300, 0), "{kind:?}");
        let (end, waited) = b;
        // A sleeping waiter is woken, which costs a wake-up on its idle CPU.
        match kind {
            ExtentLock::Spin => assert_eq!((end, waited), (500, 150)),
            ExtentLock::Sleep => assert!(end > 500 && waited > 150, "{b:?}"),
        }
    }
}

#[test]
fn updates_on_leaves_far_apart_run_in_parallel() {
    // ins_len 0: the root is only read-locked, so B never waits: 50 + 300.
    let [a, b] = two(
        ExtentLock::Spin,
        (FAR_A, Search::Update),
        (FAR_B, Search::Update),
    );
    assert_eq!((a, b), ((300, 0), (350, 0)));
}

#[test]
fn updates_on_one_leaf_serialize_on_it() {
    // A holds the leaf 100–300; B reaches it at 150 and waits until 300, then 300–500.
    let [a, b] = two(
        ExtentLock::Spin,
        (FAR_A, Search::Update),
        (SAME_A, Search::Update),
    );
    assert_eq!((a, b), ((300, 0), (500, 150)));
}

#[test]
fn a_split_keeps_the_parent_locked_for_its_copy() {
    // A's leaf is full: A splits it after its leaf search (200–300) with the root still
    // held, releasing the root at 300, not 200. B (an update far away) passes the root
    // only when A lets it go: root 300–400, leaf 400–500, update 500–600.
    let t = tree(ExtentLock::Spin);
    let full = {
        let live = Live::new(1);
        let mut m = ThreadMetrics::default();
        let mut p = t.search_slot(
            FAR_A,
            Search::Update,
            u64::MAX,
            &mut m,
            &live.workers[0],
            &mut Vec::new(),
        );
        let leaf = p.leaf().clone();
        t.release_path(&mut p);
        leaf
    };
    full.used
        .store(t.geometry().leaf_data - 10, Ordering::Relaxed);
    let live = Live::new(2);
    let (r, _) = run_bodies(
        2,
        vec![
            Box::new(|| walker(&t, &live, 0, 0, FAR_A, INSERT)),
            Box::new(|| walker(&t, &live, 1, 50, FAR_B, Search::Update)),
        ],
    );
    assert_eq!(t.counts.leaf_splits.load(Ordering::Relaxed), 1);
    assert_eq!(r[0], (400, 0));
    assert_eq!(r[1], (600, 250));
}
