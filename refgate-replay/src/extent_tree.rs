//! The extent-tree oracle (spec §7.1): per extent its item (`refs`, flags) and keyed backrefs,
//! and how an update reaches it (§2.7, §7.2): a walk of the B-tree's locked blocks
//! ([`crate::btree`], `--extent-tree btree`) or one lock for the whole tree held for the
//! whole update (`--extent-tree single`). Running a ref is the only writer.

use crate::btree::{
    Btree, ITEM_SIZE, OWN_BLOCKS_BASE, OwnRef, Search, ShapeReport, WalkCost, own_block_backref,
};
use crate::error::ModelError;
use crate::exec;
use crate::head::ExtentOp;
use crate::live::Live;
use crate::live::{ThreadState, WaitRole, WorkerState};
use crate::metrics::ThreadMetrics;
use crate::params::{ExtentLock, ExtentTreeModel};
use crate::refkey::{BackrefKey, RefAction};
use crate::vecmap::{U64Build, VecMap};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// An extent item of the extent tree (§7.1): the on-disk `refs`, flags, key and keyed backrefs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtentItem {
    /// The extent's length (bytes).
    pub num_bytes: u64,
    /// The on-disk reference count (`btrfs_extent_item::refs`): the sum of `backrefs`' counts.
    pub refs: u64,
    /// `btrfs_extent_item::flags`: `BTRFS_EXTENT_FLAG_*` bits OR-ed with extent ops' flags.
    pub flags: u64,
    /// The tree block's key, if any (a `btrfs_disk_key` in the kernel, a u64 here): the
    /// initial one, or the last extent op's with `update_key`.
    pub key: Option<u64>,
    /// Each backref's count, by key (§7.1).
    pub backrefs: BTreeMap<BackrefKey, u64>,
}

/// The oracle's own item: backrefs in a sorted `Vec` (few per extent; no node allocation).
#[derive(Clone, Debug, Default)]
struct Item {
    num_bytes: u64,
    refs: u64,
    flags: u64,
    key: Option<u64>,
    backrefs: VecMap<BackrefKey, u64>,
}

impl From<&ExtentItem> for Item {
    fn from(it: &ExtentItem) -> Self {
        Item {
            num_bytes: it.num_bytes,
            refs: it.refs,
            flags: it.flags,
            key: it.key,
            backrefs: it.backrefs.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

impl From<&Item> for ExtentItem {
    fn from(it: &Item) -> Self {
        ExtentItem {
            num_bytes: it.num_bytes,
            refs: it.refs,
            flags: it.flags,
            key: it.key,
            backrefs: it.backrefs.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

/// `BTRFS_EXTENT_FLAG_DATA` / `BTRFS_EXTENT_FLAG_TREE_BLOCK` (`ctree.h` / `btrfs_tree.h`):
/// the flag `alloc_reserved_file_extent` / `alloc_reserved_tree_block` gives a new item,
/// OR-ed with the head's extent op (§2.7).
pub const EXTENT_FLAG_DATA: u64 = 1 << 0;
pub const EXTENT_FLAG_TREE_BLOCK: u64 = 1 << 1;

/// One extent's allocation history in a replay: what §7.4 checks besides the final item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtentLife {
    /// Items inserted by a `must_insert_reserved` ADD (`alloc_reserved_*`, §2.7).
    pub inserts: u64,
    /// Items deleted when their refs reached 0 (`__btrfs_free_extent`, §2.7).
    pub frees: u64,
    /// `must_insert_reserved` heads run with no ref left: `btrfs_pin_extent`, no item (§2.7).
    pub pins: u64,
    pub pinned_bytes: u64,
}

#[derive(Default, Debug)]
struct Tree {
    items: HashMap<u64, Item, U64Build>,
    /// Extents that were inserted, freed or pinned (others only changed counts).
    life: HashMap<u64, ExtentLife, U64Build>,
}

/// One ref node's effect (§2.7 `run_one_delayed_ref`).
#[derive(Clone, Copy, Debug)]
pub struct RunRef {
    pub bytenr: u64,
    pub num_bytes: u64,
    pub key: BackrefKey,
    pub action: RefAction,
    pub ref_mod: u32,
    pub insert_reserved: bool,
    pub extent_op: Option<ExtentOp>,
}

/// How the extent tree is built and locked: what [`ExtentTree::new`] takes.
#[derive(Clone, Debug)]
pub struct TreeConfig {
    /// B-tree or one lock.
    pub model: ExtentTreeModel,
    /// Busy-work per update on a real thread (§7.2 `c_ext`).
    pub ext_cost_ns: u64,
    /// The same cost in virtual time ([`crate::cost::Cost::RunRef`]).
    pub virtual_cost_ns: u64,
    /// How a virtual task waits for a lock.
    pub lock_kind: ExtentLock,
    /// The B-tree's block size.
    pub nodesize: u32,
    /// Items before the first transaction (`None`: the initial extents').
    pub extent_items: Option<u64>,
    /// One past the highest address the replay names (`Params::extent_key_end`).
    pub key_end: Option<u64>,
    /// 3.x: COW switches a block's lock to blocking, and metadata extent items are not
    /// skinny (`SKINNY_METADATA` came with 3.10).
    pub v3: bool,
}

/// The B-tree's size and shape, for the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BtreeReport {
    /// Block size (bytes).
    pub nodesize: u32,
    /// Extent items the tree was sized for.
    pub items: u64,
    /// Where that count came from: `initial_extents` or `option`.
    pub size_source: &'static str,
    /// The shape before the first walk.
    pub start: ShapeReport,
    /// The shape after the last.
    pub end: ShapeReport,
    /// Leaves split by insertions.
    pub leaf_splits: u64,
    /// Nodes split (a root split included).
    pub node_splits: u64,
    /// Roots split (the tree grew a level).
    pub root_splits: u64,
    /// Blocks COWed: the first change of a block in a transaction.
    pub cow_blocks: u64,
    /// Walks restarted to take a higher level's write lock.
    pub restarts: u64,
}

pub struct ExtentTree {
    tree: Mutex<Tree>,
    /// `--extent-tree btree`: the blocks an update walks; `None`: one lock (`tree`'s).
    btree: Option<Btree>,
    /// The B-tree's sizing, for the report.
    sized: (u64, &'static str),
    /// 3.x metadata items carry `btrfs_tree_block_info`.
    v3: bool,
    /// The running transaction (COW once per block per transaction).
    live: Arc<Live>,
    /// Busy-work per update while holding the lock (the COW search cost, §7.2 `c_ext`), on a
    /// real thread.
    ext_cost_ns: u64,
    /// The same cost in virtual time ([`crate::cost::Cost::RunRef`]).
    virtual_cost_ns: u64,
    /// How a virtual task waits for the lock.
    lock_kind: ExtentLock,
}

impl ExtentTree {
    pub fn new(
        initial: impl IntoIterator<Item = (u64, ExtentItem)>,
        cfg: &TreeConfig,
        live: Arc<Live>,
    ) -> Self {
        let mut items: HashMap<u64, Item, U64Build> = initial
            .into_iter()
            .map(|(b, it)| (b, Item::from(&it)))
            .collect();
        let (count, source) = match cfg.extent_items {
            Some(n) => (n, "option"),
            None => (items.len() as u64, "initial_extents"),
        };
        let btree = (cfg.model == ExtentTreeModel::Btree).then(|| {
            let mut keys: Vec<u64> = items.keys().copied().collect();
            keys.sort_unstable();
            Btree::new(
                &keys,
                cfg.key_end.unwrap_or(0),
                count,
                cfg.nodesize,
                cfg.lock_kind,
                cfg.v3,
                WalkCost {
                    virtual_ns: cfg.virtual_cost_ns,
                    real_ns: cfg.ext_cost_ns,
                },
            )
        });
        if let Some(bt) = &btree {
            // The tree's own blocks are extents too: a TREE_BLOCK_REF of root 2 each.
            for (bytenr, _level) in bt.blocks() {
                let mut it = Item {
                    num_bytes: bt.nodesize(),
                    refs: 1,
                    flags: EXTENT_FLAG_TREE_BLOCK,
                    ..Default::default()
                };
                it.backrefs.insert(own_block_backref(), 1);
                items.insert(bytenr, it);
            }
        }
        Self {
            tree: Mutex::new(Tree {
                items,
                ..Default::default()
            }),
            btree,
            sized: (count, source),
            v3: cfg.v3,
            live,
            ext_cost_ns: cfg.ext_cost_ns,
            virtual_cost_ns: cfg.virtual_cost_ns,
            lock_kind: cfg.lock_kind,
        }
    }

    /// The B-tree's size, shape and counts (`None` under `--extent-tree single`).
    pub fn btree_report(&self) -> Option<BtreeReport> {
        let b = self.btree.as_ref()?;
        let c = &b.counts;
        Some(BtreeReport {
            nodesize: b.nodesize() as u32,
            items: self.sized.0,
            size_source: self.sized.1,
            start: b.start_shape().clone(),
            end: b.shape(),
            leaf_splits: c.leaf_splits.load(Ordering::Relaxed),
            node_splits: c.node_splits.load(Ordering::Relaxed),
            root_splits: c.root_splits.load(Ordering::Relaxed),
            cow_blocks: c.cow_blocks.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
        })
    }

    /// One update of the item at `bytenr`: under the single lock, or at the end of a B-tree
    /// walk with the leaf write-held. `f` returns the update's result and how many items
    /// and bytes the leaf gained (negative: lost).
    ///
    /// Also returns the delayed refs the walk's COWs and splits queue on the extent tree's
    /// own blocks, for the caller to queue through the add path once the tree's locks are
    /// released (the kernel queues them during the walk, with the path locked; the add's
    /// `delayed_refs->lock` time is therefore not under the tree's locks here).
    fn update<R>(
        &self,
        bytenr: u64,
        search: Search,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
        f: impl FnOnce(&mut Tree) -> (R, i32, i32),
    ) -> (R, Vec<OwnRef>) {
        let Some(bt) = &self.btree else {
            return (self.with(m, ws, |t| f(t).0), Vec::new());
        };
        m.extent_tree_acquisitions += 1;
        let txn = self.live.transaction.load(Ordering::Relaxed);
        let mut fed = Vec::new();
        let mut path = bt.search_slot(bytenr, search, txn, m, ws, &mut fed);
        bt.charge_leaf_update();
        let (r, items, bytes) = f(&mut self.tree.lock());
        bt.leaf_changed(&path, bytenr, items, bytes);
        bt.release_path(&mut path);
        (r, fed)
    }

    /// §7.4 for the model's own extents (`docs/extent-tree.md` "Self-feeding"): every block
    /// of the tree has its item, with one TREE_BLOCK_REF of root 2, and every block it
    /// replaced (COWed away) has none. Returns how many were checked.
    pub fn check_own_blocks(&self) -> Result<u64, Vec<String>> {
        let Some(bt) = &self.btree else {
            return Ok(0);
        };
        let live: HashMap<u64, u8, U64Build> = bt.blocks().into_iter().collect();
        let t = self.tree.lock();
        let mut errs = Vec::new();
        let want = own_block_backref();
        let mut checked = 0;
        for &b in live.keys() {
            checked += 1;
            match t.items.get(&b) {
                None => errs.push(format!("own block {b}: in the tree but has no extent item")),
                Some(it) if it.refs != 1 || it.backrefs.get(&want) != Some(&1) => {
                    errs.push(format!(
                        "own block {b}: refs {}, expected one TREE_BLOCK_REF of root 2",
                        it.refs
                    ))
                }
                Some(_) => {}
            }
        }
        let mut gone: Vec<u64> = t
            .items
            .keys()
            .chain(t.life.keys())
            .copied()
            .filter(|&b| b >= OWN_BLOCKS_BASE && !live.contains_key(&b))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for b in gone {
            checked += 1;
            if t.items.contains_key(&b) {
                errs.push(format!(
                    "own block {b}: COWed away but its extent item is still there"
                ));
            }
        }
        errs.sort();
        errs.truncate(20);
        if errs.is_empty() {
            Ok(checked)
        } else {
            Err(errs)
        }
    }

    /// Bytes of an extent item with one inline backref of `key`'s type (item header
    /// included): `btrfs_extent_item` (24), 3.x tree blocks' `btrfs_tree_block_info` (18),
    /// the inline ref.
    fn item_bytes(&self, key: &BackrefKey) -> u32 {
        let tree_info = if key.is_data() || !self.v3 { 0 } else { 18 };
        ITEM_SIZE + 24 + tree_info + inline_ref_bytes(key)
    }

    fn with<R>(
        &self,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
        f: impl FnOnce(&mut Tree) -> R,
    ) -> R {
        m.extent_tree_acquisitions += 1;
        let virt = exec::in_virtual();
        let addr = self.tree.data_ptr() as usize;
        let spin = self.lock_kind == ExtentLock::Spin;
        let mut g = match self.tree.try_lock() {
            Some(g) => g,
            None if virt && spin => {
                // Spin on this CPU until the holder hands the lock over (FIFO).
                let prev = ws.set(ThreadState::WaitingExtentTree);
                m.extent_tree
                    .record(exec::spin_until_handed(addr, WaitRole::ExtentTree));
                ws.set(prev);
                // SAFETY: the handover made this task the owner; the lock stayed locked.
                unsafe { self.tree.make_guard_unchecked() }
            }
            None if virt => {
                // Sleep until the holder releases the lock, then compete for it.
                let prev = ws.set(ThreadState::WaitingExtentTree);
                let t0 = exec::now_ns();
                let mut front = false;
                let g = loop {
                    exec::sleep_for_lock(addr, front);
                    front = true;
                    if let Some(g) = self.tree.try_lock() {
                        break g;
                    }
                };
                m.extent_tree.record(exec::now_ns() - t0);
                ws.set(prev);
                g
            }
            None => {
                let prev = ws.set(ThreadState::WaitingExtentTree);
                let t = Instant::now();
                let g = self.tree.lock();
                m.extent_tree.record(t.elapsed().as_nanos() as u64);
                ws.set(prev);
                g
            }
        };
        if virt {
            exec::work(self.virtual_cost_ns);
        } else {
            exec::burn(self.ext_cost_ns);
        }
        let r = f(&mut g);
        if virt && spin {
            if exec::handover(addr) {
                // A spinning waiter owns it now: leave it locked.
                std::mem::forget(g);
            }
        } else {
            drop(g);
            if virt {
                exec::wake_one(addr);
            }
        }
        r
    }

    /// Tree/data ref node (§2.7): alloc_reserved_*, `__btrfs_inc_extent_ref`,
    /// `__btrfs_free_extent`.
    /// Returns the refs the extent tree queued on its own blocks meanwhile ([`OwnRef`]).
    pub fn run_ref(
        &self,
        r: &RunRef,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> Result<Vec<OwnRef>, ModelError> {
        if !r.key.is_data() && r.ref_mod != 1 {
            return Err(ModelError::TreeRefMod {
                bytenr: r.bytenr,
                ref_mod: r.ref_mod,
            });
        }
        let m64 = r.ref_mod as u64;
        let inline = inline_ref_bytes(&r.key) as i32;
        let item_bytes = self.item_bytes(&r.key);
        let search = match r.action {
            // `alloc_reserved_*`: `btrfs_insert_empty_item` of the item.
            RefAction::Add if r.insert_reserved => Search::Insert {
                bytes: item_bytes,
                keep_locks: false,
            },
            // `__btrfs_inc_extent_ref`: `lookup_inline_extent_backref(insert = 1)`, which
            // searches with room for one more inline ref and `keep_locks`.
            RefAction::Add => Search::Insert {
                bytes: inline as u32,
                keep_locks: true,
            },
            // `__btrfs_free_extent`: `lookup_extent_backref`, `ins_len = -1`.
            RefAction::Drop => Search::Delete,
        };
        let item_bytes = item_bytes as i32;
        let (res, fed) = self.update(r.bytenr, search, m, ws, |t| match r.action {
            RefAction::Add if r.insert_reserved => {
                if t.items.contains_key(&r.bytenr) {
                    return (Err(ModelError::ExtentExists { bytenr: r.bytenr }), 0, 0);
                }
                let mut it = Item {
                    num_bytes: r.num_bytes,
                    refs: m64,
                    flags: if r.key.is_data() {
                        EXTENT_FLAG_DATA
                    } else {
                        EXTENT_FLAG_TREE_BLOCK
                    },
                    ..Default::default()
                };
                it.backrefs.insert(r.key, m64);
                if let Some(op) = r.extent_op {
                    it.flags |= op.flags.unwrap_or(0);
                    it.key = op.key;
                }
                t.items.insert(r.bytenr, it);
                t.life.entry(r.bytenr).or_default().inserts += 1;
                (Ok(()), 1, item_bytes)
            }
            RefAction::Add => {
                let Some(it) = t.items.get_mut(&r.bytenr) else {
                    return (Err(ModelError::ExtentMissing { bytenr: r.bytenr }), 0, 0);
                };
                it.refs += m64;
                let mut grew = 0;
                *it.backrefs.get_or_insert_with(r.key, || {
                    grew = inline;
                    0
                }) += m64;
                apply_op(it, r.extent_op);
                (Ok(()), 0, grew)
            }
            RefAction::Drop => drop_ref(t, r, m64, inline, item_bytes),
        });
        res.map(|()| fed)
    }

    /// `run_delayed_extent_op` (§2.4 step 6): update flags/key of an existing item.
    pub fn run_extent_op(
        &self,
        bytenr: u64,
        op: ExtentOp,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> Result<Vec<OwnRef>, ModelError> {
        // `btrfs_search_slot(.., ins_len = 0, cow = 1)`.
        let (res, fed) = self.update(bytenr, Search::Update, m, ws, |t| {
            let Some(it) = t.items.get_mut(&bytenr) else {
                return (Err(ModelError::ExtentMissing { bytenr }), 0, 0);
            };
            apply_op(it, Some(op));
            (Ok(()), 0, 0)
        });
        res.map(|()| fed)
    }

    /// Head run with `must_insert_reserved` and no refs left: `btrfs_pin_extent` (§2.7).
    /// `btrfs_pin_extent` marks the range in the pinned-extents tree and the block group's
    /// counters: no extent-tree search, so the B-tree model takes no block lock for it (the
    /// single-lock model took its lock, and keeps doing so to reproduce its figures).
    pub fn pin(&self, bytenr: u64, num_bytes: u64, m: &mut ThreadMetrics, ws: &WorkerState) {
        let pin = |t: &mut Tree| {
            let l = t.life.entry(bytenr).or_default();
            l.pins += 1;
            l.pinned_bytes += num_bytes;
        };
        if self.btree.is_some() {
            pin(&mut self.tree.lock());
        } else {
            self.with(m, ws, pin);
        }
    }

    /// One extent's allocation history (all zero if it was never inserted, freed or pinned).
    pub fn life(&self, bytenr: u64) -> ExtentLife {
        self.tree
            .lock()
            .life
            .get(&bytenr)
            .copied()
            .unwrap_or_default()
    }

    /// Extents with an allocation history.
    pub fn life_bytenrs(&self) -> Vec<u64> {
        self.tree.lock().life.keys().copied().collect()
    }

    /// Extents with an item.
    pub fn bytenrs(&self) -> Vec<u64> {
        self.tree.lock().items.keys().copied().collect()
    }

    /// One extent's item, if it has one.
    pub fn get(&self, bytenr: u64) -> Option<ExtentItem> {
        self.tree.lock().items.get(&bytenr).map(ExtentItem::from)
    }

    pub fn snapshot(&self) -> HashMap<u64, ExtentItem> {
        self.tree
            .lock()
            .items
            .iter()
            .map(|(b, it)| (*b, ExtentItem::from(it)))
            .collect()
    }
    /// Extents allocated and freed inside a transaction (pinned, never inserted, §2.7) and
    /// their bytes: the sum of every extent's pins.
    pub fn pinned(&self) -> (u64, u64) {
        let t = self.tree.lock();
        t.life
            .values()
            .fold((0, 0), |(n, b), l| (n + l.pins, b + l.pinned_bytes))
    }
}

/// `__btrfs_free_extent` on the oracle: drop `m64` of `r.key`'s backref, deleting the item
/// at 0 refs. Returns the result and the leaf's change in items and bytes.
fn drop_ref(
    t: &mut Tree,
    r: &RunRef,
    m64: u64,
    inline: i32,
    item_bytes: i32,
) -> (Result<(), ModelError>, i32, i32) {
    let Some(it) = t.items.get_mut(&r.bytenr) else {
        return (Err(ModelError::ExtentMissing { bytenr: r.bytenr }), 0, 0);
    };
    let have = it.backrefs.get(&r.key).copied().unwrap_or(0);
    if have < m64 || it.refs < m64 {
        let e = ModelError::BackrefUnderflow {
            bytenr: r.bytenr,
            key: r.key,
            have,
            drop: m64,
        };
        return (Err(e), 0, 0);
    }
    it.refs -= m64;
    let mut shrank = 0;
    if have == m64 {
        it.backrefs.remove(&r.key);
        shrank = inline;
    } else {
        it.backrefs.insert(r.key, have - m64);
    }
    if it.refs == 0 {
        if !it.backrefs.is_empty() {
            return (Err(ModelError::OrphanBackrefs { bytenr: r.bytenr }), 0, 0);
        }
        t.items.remove(&r.bytenr);
        t.life.entry(r.bytenr).or_default().frees += 1;
        return (Ok(()), -1, -item_bytes);
    }
    apply_op(it, r.extent_op);
    (Ok(()), 0, -shrank)
}

/// Bytes of one inline backref (`btrfs_extent_inline_ref_size`): the type byte plus an
/// offset (TREE_BLOCK_REF's root, SHARED_BLOCK_REF's parent) or the `btrfs_extent_data_ref`
/// (28) or the parent and a `btrfs_shared_data_ref` count (8 + 4) in its place.
fn inline_ref_bytes(key: &BackrefKey) -> u32 {
    use refgate_common::event::{EXTENT_DATA_REF_KEY, SHARED_DATA_REF_KEY};
    match key.ref_type {
        EXTENT_DATA_REF_KEY => 1 + 28,
        SHARED_DATA_REF_KEY => 1 + 8 + 4,
        _ => 1 + 8,
    }
}

fn apply_op(it: &mut Item, op: Option<ExtentOp>) {
    if let Some(op) = op {
        if let Some(f) = op.flags {
            it.flags |= f;
        }
        if op.key.is_some() {
            it.key = op.key;
        }
    }
}
