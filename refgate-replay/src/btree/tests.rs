//! The B-tree's shape and `btrfs_search_slot`'s lock rule on one real thread: which levels a
//! finished walk still holds, splits, and what COWs feed back. The timelines of walks on
//! virtual CPUs are in `engine::vcpu::btree_timeline`.

use super::*;
use crate::live::Live;

/// A tree of `items` items keyed 0, 1000, 2000, … in blocks of `nodesize`.
fn tree(items: u64, nodesize: u32) -> Btree {
    let keys: Vec<u64> = (0..items).map(|i| i * 1000).collect();
    Btree::new(
        &keys,
        0,
        items,
        nodesize,
        ExtentLock::Spin,
        false,
        WalkCost {
            virtual_ns: 0,
            real_ns: 0,
        },
    )
}

/// Walks to `key` in transaction `txn`; the levels the path holds write-locked afterwards
/// and what the walk fed back.
fn walk(t: &Btree, key: u64, search: Search, txn: u64) -> (Vec<usize>, Vec<OwnRef>) {
    let live = Live::new(1);
    let mut m = ThreadMetrics::default();
    let mut fed = Vec::new();
    let mut p = t.search_slot(key, search, txn, &mut m, &live.workers[0], &mut fed);
    let held = p.write_locked();
    t.release_path(&mut p);
    (held, fed)
}

const INSERT: Search = Search::Insert {
    bytes: 78,
    keep_locks: false,
};

#[test]
fn geometry_is_the_kernels_for_16k_nodes() {
    // (16384 - 101) bytes of items; (16384 - 101) / 33 key pointers (`ctree.h`).
    assert_eq!(
        Geometry::new(16384),
        Geometry {
            leaf_data: 16283,
            node_ptrs: 493
        }
    );
}

#[test]
fn the_height_grows_with_the_item_count() {
    // 16 KiB leaves two-thirds full of 78-byte items: 139 items a leaf; nodes of 328.
    assert_eq!(tree(100, 16384).start_shape().levels, 1);
    let two = tree(10_000, 16384);
    assert_eq!(two.start_shape().levels, 2);
    assert_eq!(two.start_shape().leaves, 10_000u64.div_ceil(139));
    assert_eq!(tree(100_000, 16384).start_shape().levels, 3);
    assert_eq!(tree(100_000_000, 16384).start_shape().levels, 4);
}

#[test]
fn an_update_keeps_only_the_leaf() {
    // ins_len 0: write_lock_level 0, the nodes are only read-locked.
    let t = tree(10_000, 16384);
    assert_eq!(walk(&t, 5_000_500, Search::Update, u64::MAX).0, vec![0]);
}

#[test]
fn an_insertion_releases_the_parent_once_the_leaf_is_locked() {
    let t = tree(10_000, 16384);
    // Not at a leaf's slot 0: unlock_up at level 0 releases level 1.
    assert_eq!(walk(&t, 5_000_500, INSERT, u64::MAX).0, vec![0]);
}

#[test]
fn an_insertion_at_slot_0_keeps_the_parent() {
    // A new first key changes the leaf's key in its parent (`fixup_low_keys`).
    let t = tree(10_000, 16384);
    let first = t.shape.read().levels[0][5].first_key;
    assert_eq!(walk(&t, first, INSERT, u64::MAX).0, vec![0, 1]);
}

#[test]
fn a_deletion_keeps_level_1() {
    // ins_len < 0: lowest_unlock 2, so level 1 stays for a possible merge; level 2 goes.
    let t = tree(100_000, 16384);
    assert_eq!(t.start_shape().levels, 3);
    assert_eq!(walk(&t, 50_000_500, Search::Delete, u64::MAX).0, vec![0, 1]);
}

#[test]
fn keep_locks_keeps_the_parent_at_a_last_slot() {
    // `lookup_inline_extent_backref(insert = 1)`: keep_locks, and the key in the leaf's
    // last slot keeps level 1.
    let t = tree(10_000, 16384);
    let keep = Search::Insert {
        bytes: 29,
        keep_locks: true,
    };
    assert_eq!(walk(&t, 5_000_500, keep, u64::MAX).0, vec![0]);
    let next = t.shape.read().levels[0][6].first_key;
    assert_eq!(walk(&t, next - 1, keep, u64::MAX).0, vec![0, 1]);
}

#[test]
fn a_full_leaf_splits_under_its_parent_and_feeds_the_new_block_back() {
    let t = tree(10_000, 16384);
    let leaf = t.shape.read().levels[0][5].clone();
    leaf.used
        .store(t.geometry.leaf_data - 10, Ordering::Relaxed);
    let before = t.shape().leaves;
    let (_, fed) = walk(&t, leaf.first_key + 500, INSERT, u64::MAX);
    assert_eq!(t.shape().leaves, before + 1);
    assert_eq!(t.counts.leaf_splits.load(Ordering::Relaxed), 1);
    // The parent gained a key pointer.
    let root = t.shape.read().root().clone();
    assert_eq!(root.nr.load(Ordering::Relaxed) as u64, before + 1);
    // The new leaf is an allocation (`btrfs_alloc_tree_block`), born COWed.
    assert_eq!(fed.len(), 1);
    assert!(fed[0].alloc && fed[0].level == 0 && fed[0].bytenr >= OWN_BLOCKS_BASE);
}

#[test]
fn a_full_root_splits_into_a_new_root() {
    let t = tree(50, 16384);
    assert_eq!(t.start_shape().levels, 1);
    let leaf = t.shape.read().levels[0][0].clone();
    leaf.used.store(t.geometry.leaf_data, Ordering::Relaxed);
    let (_, fed) = walk(&t, 25_500, INSERT, u64::MAX);
    assert_eq!(t.shape().levels, 2);
    assert_eq!(t.counts.root_splits.load(Ordering::Relaxed), 1);
    // The new leaf and the new root.
    assert_eq!(fed.iter().filter(|f| f.alloc).count(), 2);
}

#[test]
fn each_block_is_cowed_once_per_transaction() {
    let t = tree(10_000, 16384);
    // First walk of transaction 1: root and leaf are COWed, each an allocation and a free.
    let (_, fed) = walk(&t, 5_000_500, INSERT, 1);
    assert_eq!(fed.len(), 4);
    assert_eq!(fed.iter().filter(|f| f.alloc).count(), 2);
    assert_eq!(t.counts.cow_blocks.load(Ordering::Relaxed), 2);
    // The same path again in the same transaction: nothing more.
    assert!(walk(&t, 5_000_600, INSERT, 1).1.is_empty());
    // Another leaf: only it.
    assert_eq!(walk(&t, 1_000_500, INSERT, 1).1.len(), 2);
    // A new transaction COWs them again, the freed address being the last one.
    let (_, fed2) = walk(&t, 5_000_500, INSERT, 2);
    assert_eq!(fed2.len(), 4);
    let freed: Vec<u64> = fed2.iter().filter(|f| !f.alloc).map(|f| f.bytenr).collect();
    let allocated: Vec<u64> = fed.iter().filter(|f| f.alloc).map(|f| f.bytenr).collect();
    for b in &freed {
        assert!(allocated.contains(b), "{freed:?} ⊄ {allocated:?}");
    }
    // Every block's address is unique.
    let mut all: Vec<u64> = t.blocks().into_iter().map(|(b, _)| b).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
}
