//! The extent tree as the kernel locks it (issue "extent tree"; `docs/extent-tree.md`): a
//! B-tree of blocks, each with its own lock, walked root to leaf by `btrfs_search_slot`
//! (`fs/btrfs/ctree.c`) with its lock coupling. The items themselves stay in the oracle
//! ([`crate::extent_tree`]); a block here knows only how many items (leaf) or key pointers
//! (node) it holds and how many bytes a leaf's items take, which is what decides splits and
//! which locks a walk keeps.
//!
//! A level is a vector of blocks sorted by first key; a block covers the keys from its first
//! key to the next block's. A node's children are the blocks of the level below whose first
//! keys fall in its range, so finding a child is a binary search of that level. Structure
//! changes (splits) are made by a walker holding the locks the kernel requires for them and
//! published under `shape`'s guard, which is the model's bookkeeping, never held across a
//! scheduling point, and never modelled as a lock.

use crate::exec;
use crate::live::WorkerState;
use crate::metrics::ThreadMetrics;
use crate::params::ExtentLock;
use crate::refkey::BackrefKey;
use crate::tree_lock::TreeLock;
use parking_lot::RwLock;
use refgate_common::event::TREE_BLOCK_REF_KEY;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `BTRFS_MAX_LEVEL` (`ctree.h`).
pub const MAX_LEVEL: usize = 8;
/// `sizeof(struct btrfs_header)` (`btrfs_tree.h`): 32 csum + 16 fsid + 8 bytenr + 8 flags
/// + 16 chunk uuid + 8 generation + 8 owner + 4 nritems + 1 level.
pub const HEADER_SIZE: u32 = 101;
/// `sizeof(struct btrfs_key_ptr)`: a 17-byte key, 8 blockptr, 8 generation.
pub const KEY_PTR_SIZE: u32 = 33;
/// `sizeof(struct btrfs_item)`: a 17-byte key, 4 offset, 4 size.
pub const ITEM_SIZE: u32 = 25;

/// Where the model's own tree blocks live: far above any extent a trace names (logical
/// addresses of real filesystems stay below 2^50), so that the §7.4 check can tell them
/// apart (`invariant`).
pub const OWN_BLOCKS_BASE: u64 = 1 << 62;

/// `BTRFS_EXTENT_TREE_OBJECTID`: the root that owns the extent tree's blocks.
pub const EXTENT_TREE_OBJECTID: u64 = 2;

/// The backref of an extent-tree block: a TREE_BLOCK_REF of root 2 (never shared: the extent
/// root is not a reloc root).
pub fn own_block_backref() -> BackrefKey {
    BackrefKey::tree(0, EXTENT_TREE_OBJECTID)
}

/// Whether `k` is an extent-tree block's backref ([`own_block_backref`]).
pub fn is_own_block_backref(k: &BackrefKey) -> bool {
    k.ref_type == TREE_BLOCK_REF_KEY && k.a == EXTENT_TREE_OBJECTID
}

/// A delayed ref the extent tree queues on itself (the seed commit's "recursive nature of
/// using the extent allocation tree to allocate extents to the extent allocation tree"): a
/// COW's new block (`btrfs_alloc_tree_block`: `BTRFS_ADD_DELAYED_EXTENT` of a TREE_BLOCK_REF
/// of root 2, with an extent op setting its key) and its old one (`btrfs_free_tree_block`:
/// `BTRFS_DROP_DELAYED_REF`), and a split's new block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnRef {
    /// The block's extent.
    pub bytenr: u64,
    /// Its level in the tree.
    pub level: u8,
    /// Its first key (the extent op's key; the model's keys are bytenrs).
    pub first_key: u64,
    /// An allocation (`true`) or a free.
    pub alloc: bool,
}

/// A walk's intent, which decides its `ins_len` (`btrfs_search_slot`'s argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// An insertion of this many bytes, item header included (`ins_len > 0`): new items
    /// (`btrfs_insert_empty_item` from `alloc_reserved_*`) and inline backrefs
    /// (`lookup_inline_extent_backref` with `insert`, from `__btrfs_inc_extent_ref`).
    Insert { bytes: u32, keep_locks: bool },
    /// An update in place (`ins_len == 0`): `run_delayed_extent_op`.
    Update,
    /// A deletion (`ins_len < 0`): `__btrfs_free_extent`'s lookup.
    Delete,
}

impl Search {
    fn ins_len(self) -> i64 {
        match self {
            Search::Insert { bytes, .. } => bytes as i64,
            Search::Update => 0,
            Search::Delete => -1,
        }
    }
}

/// Which part of the tree a wait was on: the report's per-level split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelClass {
    /// The root block, whatever its level.
    Root = 0,
    /// A node below the root.
    Node = 1,
    /// A leaf (level 0) that is not the root.
    Leaf = 2,
}

/// Block geometry from the nodesize (`ctree.h` `BTRFS_LEAF_DATA_SIZE`,
/// `BTRFS_NODEPTRS_PER_BLOCK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of items a leaf holds: nodesize minus the header.
    pub leaf_data: u32,
    /// Key pointers a node holds.
    pub node_ptrs: u32,
}

impl Geometry {
    /// The geometry of blocks of `nodesize` bytes.
    pub fn new(nodesize: u32) -> Self {
        let body = nodesize.saturating_sub(HEADER_SIZE).max(4 * KEY_PTR_SIZE);
        Self {
            leaf_data: body,
            node_ptrs: body / KEY_PTR_SIZE,
        }
    }
}

/// How the tree was sized and how it looks: the report's `extent_tree` shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShapeReport {
    /// Levels (1: the root is a leaf).
    pub levels: u32,
    /// Leaves.
    pub leaves: u64,
    /// Nodes above the leaves.
    pub nodes: u64,
}

/// One block: its place, its fill and its lock.
pub(crate) struct Block {
    level: usize,
    first_key: u64,
    /// Where the block is now (a COW moves it): one of the model's own extents.
    bytenr: AtomicU64,
    /// Items (leaf) or key pointers (node).
    nr: AtomicU32,
    /// Leaf: bytes of items, headers included.
    pub(crate) used: AtomicU32,
    /// The transaction that last COWed it (`should_cow_block`: `btrfs_header_generation ==
    /// trans->transid` means already COWed); `u64::MAX`: never.
    cowed_txn: AtomicU64,
    pub(crate) lock: TreeLock,
}

impl Block {
    fn new(level: usize, first_key: u64, nr: u32, used: u32, bytenr: u64) -> Arc<Self> {
        Arc::new(Self {
            level,
            first_key,
            bytenr: AtomicU64::new(bytenr),
            nr: AtomicU32::new(nr),
            used: AtomicU32::new(used),
            cowed_txn: AtomicU64::new(u64::MAX),
            lock: TreeLock::new(),
        })
    }
}

/// The blocks, level by level (`levels[0]`: the leaves; the last level: the root alone).
struct Shape {
    levels: Vec<Vec<Arc<Block>>>,
}

impl Shape {
    fn root(&self) -> &Arc<Block> {
        &self.levels.last().expect("a tree has a root")[0]
    }
    /// The index in `level` of the block holding `key`.
    fn find(&self, level: usize, key: u64) -> usize {
        let l = &self.levels[level];
        l.partition_point(|b| b.first_key <= key).saturating_sub(1)
    }
    /// The index range in `level - 1` of `level[i]`'s children.
    fn children(&self, level: usize, i: usize) -> std::ops::Range<usize> {
        let below = &self.levels[level - 1];
        let lo = below.partition_point(|b| b.first_key < self.levels[level][i].first_key);
        let hi = match self.levels[level].get(i + 1) {
            Some(next) => below.partition_point(|b| b.first_key < next.first_key),
            None => below.len(),
        };
        lo..hi
    }
    fn report(&self) -> ShapeReport {
        ShapeReport {
            levels: self.levels.len() as u32,
            leaves: self.levels[0].len() as u64,
            nodes: self.levels[1..].iter().map(|l| l.len() as u64).sum(),
        }
    }
}

/// Counts of what walks did to the tree (the report's `extent_tree`).
#[derive(Debug, Default)]
pub(crate) struct TreeCounts {
    pub leaf_splits: AtomicU64,
    pub node_splits: AtomicU64,
    pub root_splits: AtomicU64,
    pub cow_blocks: AtomicU64,
    /// Walks restarted (`goto again` in `btrfs_search_slot`) to take a higher level's
    /// write lock.
    pub restarts: AtomicU64,
}

/// What a path holds at one level (`path->locks[level]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    None,
    /// Read-locked: modelled as a pass (`tree_lock`), so nothing to release.
    Read,
    Write,
}

/// `struct btrfs_path`: the blocks a walk visited, their slots and what it holds.
pub(crate) struct Path {
    nodes: [Option<Arc<Block>>; MAX_LEVEL],
    slots: [u32; MAX_LEVEL],
    locks: [Held; MAX_LEVEL],
}

impl Path {
    fn new() -> Self {
        Self {
            nodes: Default::default(),
            slots: [0; MAX_LEVEL],
            locks: [Held::None; MAX_LEVEL],
        }
    }
    /// The leaf the walk ended on.
    pub(crate) fn leaf(&self) -> &Arc<Block> {
        self.nodes[0]
            .as_ref()
            .expect("a finished walk holds its leaf")
    }
    /// Levels it holds write-locked (tests).
    #[cfg(test)]
    fn write_locked(&self) -> Vec<usize> {
        (0..MAX_LEVEL)
            .filter(|&l| self.locks[l] == Held::Write)
            .collect()
    }
}

/// What the walker charges per level and for the leaf's update.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkCost {
    /// Virtual ns for one run of the whole update (`Cost::RunRef`), spread over the levels.
    pub virtual_ns: u64,
    /// The same on a real thread (`Params::ext_cost_ns`, busy-work).
    pub real_ns: u64,
}

/// The B-tree.
pub(crate) struct Btree {
    shape: RwLock<Shape>,
    geometry: Geometry,
    lock_kind: ExtentLock,
    /// 3.x: a holder that COWs a block switches it to blocking first, and any COW search
    /// at a node's slot 0 needs the parent write-locked.
    v3: bool,
    cost: WalkCost,
    /// The largest key inserted so far plus one: the last leaf's upper bound when it splits.
    key_end: AtomicU64,
    /// The next of the model's own block addresses ([`OWN_BLOCKS_BASE`] up).
    next_own: AtomicU64,
    nodesize: u64,
    pub(crate) counts: TreeCounts,
    start: ShapeReport,
}

/// Bytes the average background item takes in a leaf: a data extent item with one inline
/// `EXTENT_DATA_REF` (`docs/extent-tree.md` "Size").
pub const BACKGROUND_ITEM_BYTES: u32 = ITEM_SIZE + 24 + 29;

impl Btree {
    /// A tree of `items` extent items with the sorted initial keys `keys` (the leaves' first
    /// keys are their quantiles), leaves filled to about two thirds (the occupancy of a
    /// B-tree under random insertion, ≈ ln 2, `docs/extent-tree.md` "Size").
    ///
    /// With fewer initial keys than leaves (`--extent-items` above what the trace names),
    /// the leaves are spread evenly over the addresses up to `key_end` instead: where the
    /// extents the trace does not name lie is unknown, and the kernel spreads allocations
    /// over the whole device.
    pub(crate) fn new(
        keys: &[u64],
        key_end: u64,
        items: u64,
        nodesize: u32,
        lock_kind: ExtentLock,
        v3: bool,
        cost: WalkCost,
    ) -> Self {
        let geometry = Geometry::new(nodesize);
        let per_leaf = (geometry.leaf_data * 2 / 3 / BACKGROUND_ITEM_BYTES).max(1) as u64;
        let nleaves = items.div_ceil(per_leaf).max(1);
        let span = key_end.max(keys.last().map_or(0, |k| k + 1)).max(nleaves);
        let mut leaves = Vec::with_capacity(nleaves as usize);
        let mut first = u64::MAX;
        for i in 0..nleaves {
            let key = if i == 0 {
                0
            } else if (keys.len() as u64) < nleaves {
                ((i as u128 * span as u128) / nleaves as u128) as u64
            } else {
                keys[((i as u128 * keys.len() as u128) / nleaves as u128) as usize]
            };
            if key == first {
                continue; // several leaves would start at one key: fewer, fuller leaves
            }
            first = key;
            leaves.push(key);
        }
        let nleaves = leaves.len() as u64;
        let next_own = AtomicU64::new(OWN_BLOCKS_BASE);
        let alloc = || next_own.fetch_add(u64::from(nodesize.max(1)), Ordering::Relaxed);
        let mut levels = vec![
            leaves
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let nr = items / nleaves + u64::from((i as u64) < items % nleaves);
                    Block::new(0, k, nr as u32, nr as u32 * BACKGROUND_ITEM_BYTES, alloc())
                })
                .collect::<Vec<_>>(),
        ];
        // Nodes two thirds full too, until one block holds the level.
        let per_node = (geometry.node_ptrs * 2 / 3).max(2) as usize;
        while levels.last().expect("leaves").len() > 1 {
            let below = levels.last().expect("a level");
            let level = levels.len();
            // As many nodes as two-thirds fill needs, the children spread evenly over them.
            let n = below.len().div_ceil(per_node);
            let next: Vec<_> = (0..n)
                .map(|j| {
                    let (lo, hi) = (j * below.len() / n, (j + 1) * below.len() / n);
                    Block::new(level, below[lo].first_key, (hi - lo) as u32, 0, alloc())
                })
                .collect();
            levels.push(next);
        }
        let shape = Shape { levels };
        let start = shape.report();
        Self {
            next_own,
            nodesize: u64::from(nodesize.max(1)),
            key_end: AtomicU64::new(span),
            shape: RwLock::new(shape),
            geometry,
            lock_kind,
            v3,
            cost,
            counts: TreeCounts::default(),
            start,
        }
    }

    /// `btrfs_alloc_tree_block`'s address for a new block: the next of the model's own.
    fn alloc_block(&self) -> u64 {
        self.next_own.fetch_add(self.nodesize, Ordering::Relaxed)
    }

    /// Every block now: its address and level (the §7.4 check of the model's own extents).
    pub(crate) fn blocks(&self) -> Vec<(u64, u8)> {
        self.shape
            .read()
            .levels
            .iter()
            .flatten()
            .map(|b| (b.bytenr.load(Ordering::Relaxed), b.level as u8))
            .collect()
    }

    /// The block size (bytes).
    pub(crate) fn nodesize(&self) -> u64 {
        self.nodesize
    }

    /// The shape before the first walk.
    pub(crate) fn start_shape(&self) -> &ShapeReport {
        &self.start
    }

    /// The shape now.
    pub(crate) fn shape(&self) -> ShapeReport {
        self.shape.read().report()
    }

    /// The geometry of its blocks (tests).
    #[cfg(test)]
    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// One level's share of an update's cost: the update is a binary search per level
    /// descended plus the leaf's item update, in equal shares (`docs/extent-tree.md`
    /// "Costs"; the costs issue replaces this with per-level costs).
    fn charge_share(&self, levels: usize) {
        let parts = levels as u64 + 1;
        if exec::in_virtual() {
            exec::work(self.cost.virtual_ns / parts);
        } else {
            exec::burn(self.cost.real_ns / parts);
        }
    }

    fn class(&self, level: usize, height: usize) -> LevelClass {
        if level + 1 == height {
            LevelClass::Root
        } else if level == 0 {
            LevelClass::Leaf
        } else {
            LevelClass::Node
        }
    }

    /// Locks `b` for the walk holding `p`: if it is taken, 3.x first switches the path's
    /// locks to blocking (`btrfs_set_path_blocking` when the try-lock fails: a holder must
    /// not sleep on spinning locks) and back after (`btrfs_clear_path_blocking`).
    fn take(
        &self,
        p: &Path,
        b: &Block,
        write: bool,
        height: usize,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> Held {
        let waited = if b.lock.try_lock() {
            None
        } else {
            if self.v3 {
                self.set_path_blocking(p, true);
            }
            let ns = b.lock.lock_slow(self.lock_kind, ws);
            if self.v3 {
                self.set_path_blocking(p, false);
            }
            Some(ns)
        };
        if !write {
            // A read lock is a pass (`tree_lock`).
            b.lock.unlock(self.lock_kind);
        }
        if let Some(ns) = waited {
            m.extent_tree.record(ns);
            m.extent_tree_levels.by_class[self.class(b.level, height) as usize].record(ns);
        }
        if write { Held::Write } else { Held::Read }
    }

    /// `btrfs_set_path_blocking` / `btrfs_clear_path_blocking` of the write locks `p` holds.
    fn set_path_blocking(&self, p: &Path, blocking: bool) {
        for l in 0..MAX_LEVEL {
            if p.locks[l] == Held::Write {
                let lock = &p.nodes[l].as_ref().expect("held").lock;
                if blocking {
                    lock.set_blocking();
                } else {
                    lock.clear_blocking();
                }
            }
        }
    }

    /// `btrfs_release_path`.
    pub(crate) fn release_path(&self, p: &mut Path) {
        for l in 0..MAX_LEVEL {
            self.unlock_level(p, l);
            p.nodes[l] = None;
        }
    }

    fn unlock_level(&self, p: &mut Path, l: usize) {
        if p.locks[l] == Held::Write {
            p.nodes[l]
                .as_ref()
                .expect("a held level has its block")
                .lock
                .unlock(self.lock_kind);
        }
        p.locks[l] = Held::None;
    }

    /// `unlock_up` (`fs/btrfs/ctree.c`): after `level` is settled, release the levels above
    /// it the walk no longer needs. A level stays locked while the slot below it is 0 (a
    /// key change would reach it through `fixup_low_keys`) or, with `keep_locks`, the last
    /// one; levels under `lowest_unlock` always stay.
    /// Each level it unlocks between `min_write_lock_level` and `write_lock_level` lowers the
    /// latter below it (`wll`).
    fn unlock_up(
        &self,
        p: &mut Path,
        level: usize,
        lowest_unlock: usize,
        keep_locks: bool,
        wll: (usize, &mut usize),
    ) {
        let (min_write_lock_level, write_lock_level) = wll;
        let mut skip_level = level;
        let mut no_skips = false;
        for i in level..MAX_LEVEL {
            let Some(t) = p.nodes[i].as_ref() else { break };
            if p.locks[i] == Held::None {
                break;
            }
            if !no_skips && p.slots[i] == 0 {
                skip_level = i + 1;
                continue;
            }
            if !no_skips && keep_locks {
                let nr = t.nr.load(Ordering::Relaxed);
                if nr < 1 || p.slots[i] >= nr - 1 {
                    skip_level = i + 1;
                    continue;
                }
            }
            if skip_level < i && i >= lowest_unlock {
                no_skips = true;
            }
            if i >= lowest_unlock && i > skip_level {
                self.unlock_level(p, i);
                if i > min_write_lock_level && i <= *write_lock_level {
                    *write_lock_level = i - 1;
                }
            }
        }
    }

    /// `btrfs_lock_root_node` / `btrfs_read_lock_root_node` into `p`, retrying while the
    /// root changed under us (a root split). Returns the root and the tree's height.
    fn lock_root(
        &self,
        p: &mut Path,
        write_lock_level: usize,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> (Arc<Block>, usize) {
        loop {
            let (root, height) = {
                let s = self.shape.read();
                (s.root().clone(), s.levels.len())
            };
            let held = self.take(p, &root, root.level <= write_lock_level, height, m, ws);
            p.nodes[root.level] = Some(root.clone());
            p.locks[root.level] = held;
            if Arc::ptr_eq(self.shape.read().root(), &root) {
                return (root, height);
            }
            self.release_path(p);
        }
    }

    /// `key`'s slot in `b` (`bin_search`): a node's child index; a leaf's, where the key
    /// falls among its items taken as spread evenly over its range, 0 only at its first key.
    fn slot_in(&self, b: &Block, key: u64) -> u32 {
        let s = self.shape.read();
        let i = s.find(b.level, key);
        if b.level > 0 {
            return (s.find(b.level - 1, key) - s.children(b.level, i).start) as u32;
        }
        if key == b.first_key {
            return 0;
        }
        let hi = self.key_hi(&s, 0, i);
        let nr = b.nr.load(Ordering::Relaxed) as u128;
        let at = (key.saturating_sub(b.first_key) as u128 * nr)
            / (hi.saturating_sub(b.first_key).max(1) as u128);
        (at as u32).max(1)
    }

    /// `btrfs_search_slot(trans, extent_root, key, path, ins_len, cow = 1)` for `key`:
    /// returns with the leaf write-locked (and whatever levels above `unlock_up` kept),
    /// after splitting what an insertion needs split. `txn`: the running transaction.
    pub(crate) fn search_slot(
        &self,
        key: u64,
        search: Search,
        txn: u64,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
        fed: &mut Vec<OwnRef>,
    ) -> Path {
        let ins_len = search.ins_len();
        let keep_locks = matches!(
            search,
            Search::Insert {
                keep_locks: true,
                ..
            }
        );
        // "when we are removing items, we might have to go up to level two for things
        // like key updates": write_lock_level 2 for deletions, 1 for insertions, 0 else.
        let mut write_lock_level = match ins_len {
            // `keep_locks` with cow: `write_lock_level = BTRFS_MAX_LEVEL`.
            _ if keep_locks => MAX_LEVEL,
            n if n < 0 => 2,
            n if n > 0 => 1,
            _ => 0,
        };
        let min_write_lock_level = write_lock_level;
        let lowest_unlock = if ins_len < 0 { 2 } else { 1 };
        let mut p = Path::new();
        'again: loop {
            let (mut b, height) = self.lock_root(&mut p, write_lock_level, m, ws);
            loop {
                let level = b.level;
                if b.cowed_txn.load(Ordering::Relaxed) != txn {
                    // COW needs this level and its parent, if any, write-locked (the 3.10+
                    // form; 3.6 asked for `level + 1` even at the root, and whether 3.9 had
                    // the one or the other is not settled: `docs/extent-tree.md`).
                    if level > write_lock_level
                        || (level + 1 > write_lock_level && level + 1 < height)
                    {
                        write_lock_level = level + 1;
                        self.counts.restarts.fetch_add(1, Ordering::Relaxed);
                        self.release_path(&mut p);
                        continue 'again;
                    }
                    self.cow_block(&b, txn, fed);
                }
                self.charge_share(height);
                let slot = self.slot_in(&b, key);
                p.slots[level] = slot;
                if level == 0 {
                    if ins_len > 0 && self.leaf_free(&b) < ins_len as u32 {
                        // A one-key range has nothing to split at: the leaf overfills.
                        // A split costs a share (copying half the leaf), parent held.
                        if self.split_leaf(&b, key, txn, fed) {
                            self.charge_share(height);
                        }
                    }
                    self.unlock_up(
                        &mut p,
                        0,
                        lowest_unlock,
                        keep_locks,
                        (min_write_lock_level, &mut write_lock_level),
                    );
                    return p;
                }
                // `setup_nodes_for_search`: split a nearly full node before descending
                // (its parent must be write-locked); a nearly empty one would be balanced
                // (`balance_level`, not performed: locks only, `docs/extent-tree.md`).
                let nr = b.nr.load(Ordering::Relaxed);
                let needs_split = ins_len > 0 && nr >= self.geometry.node_ptrs - 3;
                // The root is never balanced (`balance_level` returns for it unless it
                // has one child, which the model never leaves it with).
                let needs_balance =
                    ins_len < 0 && nr < self.geometry.node_ptrs / 2 && level + 1 < height;
                if (needs_split || needs_balance) && write_lock_level < level + 1 {
                    write_lock_level = level + 1;
                    self.counts.restarts.fetch_add(1, Ordering::Relaxed);
                    self.release_path(&mut p);
                    continue 'again;
                }
                if needs_split && self.split_node(&b, txn, fed) {
                    self.charge_share(height);
                }
                // "slot 0 is special, if we change the key we have to update the parent
                // pointer which means we must have a write lock on the parent".
                // (3.x: any COW search; from about 3.15 only those that insert or delete.)
                if slot == 0 && (self.v3 || ins_len != 0) && write_lock_level < level + 1 {
                    write_lock_level = level + 1;
                    self.counts.restarts.fetch_add(1, Ordering::Relaxed);
                    self.release_path(&mut p);
                    continue 'again;
                }
                self.unlock_up(
                    &mut p,
                    level,
                    lowest_unlock,
                    keep_locks,
                    (min_write_lock_level, &mut write_lock_level),
                );
                let child = {
                    let s = self.shape.read();
                    s.levels[level - 1][s.find(level - 1, key)].clone()
                };
                let held = self.take(&p, &child, level - 1 <= write_lock_level, height, m, ws);
                p.nodes[level - 1] = Some(child.clone());
                p.locks[level - 1] = held;
                b = child;
            }
        }
    }

    /// `btrfs_cow_block` of a block the walker write-holds: the first change of a block in a
    /// transaction copies it. The copy takes no time of its own here (the calibrated
    /// `run_ref` is an average update, COWs included), so 3.x's switch to blocking around it
    /// is not modelled.
    /// The copy is a new block (`btrfs_alloc_tree_block`) and the old one is freed
    /// (`btrfs_free_tree_block`): both queue delayed refs of the extent tree's own, pushed on
    /// `fed` for the runner to queue (`docs/extent-tree.md` "Self-feeding").
    fn cow_block(&self, b: &Block, txn: u64, fed: &mut Vec<OwnRef>) {
        b.cowed_txn.store(txn, Ordering::Relaxed);
        self.counts.cow_blocks.fetch_add(1, Ordering::Relaxed);
        let new = self.alloc_block();
        let old = b.bytenr.swap(new, Ordering::Relaxed);
        let r = |bytenr, alloc| OwnRef {
            bytenr,
            level: b.level as u8,
            first_key: b.first_key,
            alloc,
        };
        fed.push(r(new, true));
        fed.push(r(old, false));
    }

    /// A block a split creates: allocated, so already COWed in this transaction.
    fn split_block(
        &self,
        level: usize,
        first_key: u64,
        nr: u32,
        used: u32,
        txn: u64,
        fed: &mut Vec<OwnRef>,
    ) -> Arc<Block> {
        let b = Block::new(level, first_key, nr, used, self.alloc_block());
        b.cowed_txn.store(txn, Ordering::Relaxed);
        fed.push(OwnRef {
            bytenr: b.bytenr.load(Ordering::Relaxed),
            level: level as u8,
            first_key,
            alloc: true,
        });
        b
    }

    fn leaf_free(&self, b: &Block) -> u32 {
        self.geometry
            .leaf_data
            .saturating_sub(b.used.load(Ordering::Relaxed))
    }

    /// The level's upper key bound of `level[i]` (exclusive).
    fn key_hi(&self, s: &Shape, level: usize, i: usize) -> u64 {
        match s.levels[level].get(i + 1) {
            Some(n) => n.first_key,
            None => self
                .key_end
                .load(Ordering::Relaxed)
                .max(s.levels[level][i].first_key + 1),
        }
    }

    /// `split_leaf` with the leaf and its parent write-held: a new leaf takes the upper half
    /// of the key range and of the items (the kernel splits at the middle slot; items are
    /// taken as spread evenly over a leaf's range). False when the range has one key.
    fn split_leaf(&self, b: &Arc<Block>, key: u64, txn: u64, fed: &mut Vec<OwnRef>) -> bool {
        let mut s = self.shape.write();
        let i = s.find(0, b.first_key);
        let hi = self.key_hi(&s, 0, i).max(key + 1);
        let mid = b.first_key + (hi - b.first_key) / 2;
        if mid == b.first_key {
            return false;
        }
        let nr = b.nr.load(Ordering::Relaxed);
        let used = b.used.load(Ordering::Relaxed);
        let moved = nr / 2;
        let moved_bytes = used / 2;
        b.nr.store(nr - moved, Ordering::Relaxed);
        b.used.store(used - moved_bytes, Ordering::Relaxed);
        let new = self.split_block(0, mid, moved, moved_bytes, txn, fed);
        s.levels[0].insert(i + 1, new);
        self.counts.leaf_splits.fetch_add(1, Ordering::Relaxed);
        self.grow_parent(&mut s, 1, mid, txn, fed);
        true
    }

    /// `split_node` (`push_nodes_for_insert` failing) with the node and its parent
    /// write-held; a root split is `insert_new_root`.
    fn split_node(&self, b: &Arc<Block>, txn: u64, fed: &mut Vec<OwnRef>) -> bool {
        let mut s = self.shape.write();
        let level = b.level;
        let i = s.find(level, b.first_key);
        let kids = s.children(level, i);
        if kids.len() < 2 {
            return false;
        }
        let mid_kid = kids.start + kids.len() / 2;
        let mid = s.levels[level - 1][mid_kid].first_key;
        let moved = (kids.end - mid_kid) as u32;
        b.nr.fetch_sub(moved, Ordering::Relaxed);
        let new = self.split_block(level, mid, moved, 0, txn, fed);
        s.levels[level].insert(i + 1, new);
        self.counts.node_splits.fetch_add(1, Ordering::Relaxed);
        self.grow_parent(&mut s, level + 1, mid, txn, fed);
        true
    }

    /// A key pointer added at `level` for a block split off at `first_key`; a split root
    /// gets a new root above it (`insert_new_root`).
    fn grow_parent(
        &self,
        s: &mut Shape,
        level: usize,
        first_key: u64,
        txn: u64,
        fed: &mut Vec<OwnRef>,
    ) {
        if level == s.levels.len() {
            let nr = s.levels[level - 1].len() as u32;
            let root = self.split_block(level, 0, nr, 0, txn, fed);
            s.levels.push(vec![root]);
            self.counts.root_splits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let p = s.find(level, first_key);
        s.levels[level][p].nr.fetch_add(1, Ordering::Relaxed);
    }

    /// After the leaf's update: its item count and bytes change by `items` and `bytes`.
    pub(crate) fn leaf_changed(&self, p: &Path, key: u64, items: i32, bytes: i32) {
        let b = p.leaf();
        b.nr.store(
            b.nr.load(Ordering::Relaxed).saturating_add_signed(items),
            Ordering::Relaxed,
        );
        b.used.store(
            b.used.load(Ordering::Relaxed).saturating_add_signed(bytes),
            Ordering::Relaxed,
        );
        self.key_end.fetch_max(key + 1, Ordering::Relaxed);
    }

    /// The leaf's update, with the leaf write-held: its share of the cost.
    pub(crate) fn charge_leaf_update(&self) {
        let height = self.shape.read().levels.len();
        self.charge_share(height);
    }
}

#[cfg(test)]
mod tests;
