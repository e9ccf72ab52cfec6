//! The extent-tree oracle (spec §7.1): per extent its item (`refs`, flags) and keyed backrefs,
//! behind one lock standing for the extent root's node lock during a COW search (§2.7, §7.2).
//! Running a ref is the only writer.

use crate::error::ModelError;
use crate::exec;
use crate::head::ExtentOp;
use crate::live::{ThreadState, WaitRole, WorkerState};
use crate::metrics::ThreadMetrics;
use crate::params::ExtentLock;
use crate::refkey::{BackrefKey, RefAction};
use crate::vecmap::{U64Build, VecMap};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
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

pub struct ExtentTree {
    tree: Mutex<Tree>,
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
        ext_cost_ns: u64,
        virtual_cost_ns: u64,
        lock_kind: ExtentLock,
    ) -> Self {
        Self {
            tree: Mutex::new(Tree {
                items: initial
                    .into_iter()
                    .map(|(b, it)| (b, Item::from(&it)))
                    .collect(),
                ..Default::default()
            }),
            ext_cost_ns,
            virtual_cost_ns,
            lock_kind,
        }
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
    pub fn run_ref(
        &self,
        r: &RunRef,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> Result<(), ModelError> {
        if !r.key.is_data() && r.ref_mod != 1 {
            return Err(ModelError::TreeRefMod {
                bytenr: r.bytenr,
                ref_mod: r.ref_mod,
            });
        }
        let m64 = r.ref_mod as u64;
        self.with(m, ws, |t| match r.action {
            RefAction::Add if r.insert_reserved => {
                if t.items.contains_key(&r.bytenr) {
                    return Err(ModelError::ExtentExists { bytenr: r.bytenr });
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
                Ok(())
            }
            RefAction::Add => {
                let it = t
                    .items
                    .get_mut(&r.bytenr)
                    .ok_or(ModelError::ExtentMissing { bytenr: r.bytenr })?;
                it.refs += m64;
                *it.backrefs.get_or_insert_with(r.key, || 0) += m64;
                apply_op(it, r.extent_op);
                Ok(())
            }
            RefAction::Drop => {
                let it = t
                    .items
                    .get_mut(&r.bytenr)
                    .ok_or(ModelError::ExtentMissing { bytenr: r.bytenr })?;
                let have = it.backrefs.get(&r.key).copied().unwrap_or(0);
                if have < m64 || it.refs < m64 {
                    return Err(ModelError::BackrefUnderflow {
                        bytenr: r.bytenr,
                        key: r.key,
                        have,
                        drop: m64,
                    });
                }
                it.refs -= m64;
                if have == m64 {
                    it.backrefs.remove(&r.key);
                } else {
                    it.backrefs.insert(r.key, have - m64);
                }
                if it.refs == 0 {
                    if !it.backrefs.is_empty() {
                        return Err(ModelError::OrphanBackrefs { bytenr: r.bytenr });
                    }
                    t.items.remove(&r.bytenr);
                    t.life.entry(r.bytenr).or_default().frees += 1;
                } else {
                    apply_op(it, r.extent_op);
                }
                Ok(())
            }
        })
    }

    /// `run_delayed_extent_op` (§2.4 step 6): update flags/key of an existing item.
    pub fn run_extent_op(
        &self,
        bytenr: u64,
        op: ExtentOp,
        m: &mut ThreadMetrics,
        ws: &WorkerState,
    ) -> Result<(), ModelError> {
        self.with(m, ws, |t| {
            let it = t
                .items
                .get_mut(&bytenr)
                .ok_or(ModelError::ExtentMissing { bytenr })?;
            apply_op(it, Some(op));
            Ok(())
        })
    }

    /// Head run with `must_insert_reserved` and no refs left: `btrfs_pin_extent` (§2.7).
    pub fn pin(&self, bytenr: u64, num_bytes: u64, m: &mut ThreadMetrics, ws: &WorkerState) {
        self.with(m, ws, |t| {
            let l = t.life.entry(bytenr).or_default();
            l.pins += 1;
            l.pinned_bytes += num_bytes;
        })
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
