//! Ref identity and the per-era key order of a head's refs (spec §1.2, §1.3, §4.3, §7.1).

use refgate_common::event::{
    self, DataRef, EXTENT_DATA_REF_KEY, SHARED_BLOCK_REF_KEY, SHARED_DATA_REF_KEY,
    TREE_BLOCK_REF_KEY, TreeRef,
};
use serde::{Deserialize, Serialize};

/// The action carried by a queued ref node. `ADD_DELAYED_EXTENT` never reaches a ref node
/// (§1.4: converted to ADD at add time), so two values suffice here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefAction {
    /// `BTRFS_ADD_DELAYED_REF` (1): adds a backref when run.
    Add,
    /// `BTRFS_DROP_DELAYED_REF` (2): drops a backref when run.
    Drop,
}

/// The action of an add-API call (§0.3); `AddExtent` additionally marks the head
/// `must_insert_reserved` (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddAction {
    /// `BTRFS_ADD_DELAYED_REF` (1).
    Add,
    /// `BTRFS_DROP_DELAYED_REF` (2).
    Drop,
    /// `BTRFS_ADD_DELAYED_EXTENT` (3): the first ref of a newly allocated extent.
    AddExtent,
}

impl AddAction {
    /// The action of a kernel action code (§0.3); `None` for `BTRFS_UPDATE_DELAYED_HEAD` (4),
    /// which queues no ref, and for any other value.
    pub fn from_kernel(a: event::Action) -> Option<Self> {
        match a {
            event::ADD_DELAYED_REF => Some(Self::Add),
            event::DROP_DELAYED_REF => Some(Self::Drop),
            event::ADD_DELAYED_EXTENT => Some(Self::AddExtent),
            _ => None,
        }
    }
    /// The kernel's action code (§0.3).
    pub fn to_kernel(self) -> event::Action {
        match self {
            Self::Add => event::ADD_DELAYED_REF,
            Self::Drop => event::DROP_DELAYED_REF,
            Self::AddExtent => event::ADD_DELAYED_EXTENT,
        }
    }
    /// The node action after the §1.4 conversion.
    pub fn node_action(self) -> RefAction {
        match self {
            Self::Drop => RefAction::Drop,
            Self::Add | Self::AddExtent => RefAction::Add,
        }
    }
    /// `count_mod` of `add_delayed_ref_head` (§1.4).
    pub fn count_mod(self) -> i64 {
        match self {
            Self::Drop => -1,
            Self::Add | Self::AddExtent => 1,
        }
    }
}

/// Backref identity: the fields the kernel compares, without `seq` (§1.3 step 5). For the
/// extent-tree oracle this is also the backref key (§2.7: SHARED_* are keyed by parent, the
/// others by root [, objectid, offset]). `level` is payload, never key (§1.3, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackrefKey {
    /// The backref type: `BTRFS_{TREE_BLOCK,EXTENT_DATA,SHARED_BLOCK,SHARED_DATA}_REF_KEY` (§0.3).
    pub ref_type: u8,
    /// TREE_BLOCK_REF / EXTENT_DATA_REF: root; SHARED_*: parent.
    pub a: u64,
    /// EXTENT_DATA_REF: objectid (inode); else 0.
    pub b: u64,
    /// EXTENT_DATA_REF: offset; else 0.
    pub c: u64,
}

impl BackrefKey {
    /// Type selection at add time (§1.2): SHARED_* iff `parent != 0`.
    pub fn tree(parent: u64, root: u64) -> Self {
        if parent != 0 {
            Self {
                ref_type: SHARED_BLOCK_REF_KEY,
                a: parent,
                b: 0,
                c: 0,
            }
        } else {
            Self {
                ref_type: TREE_BLOCK_REF_KEY,
                a: root,
                b: 0,
                c: 0,
            }
        }
    }
    /// Type selection at add time (§1.2): SHARED_DATA_REF iff `parent != 0`, else EXTENT_DATA_REF.
    pub fn data(parent: u64, root: u64, objectid: u64, offset: u64) -> Self {
        if parent != 0 {
            Self {
                ref_type: SHARED_DATA_REF_KEY,
                a: parent,
                b: 0,
                c: 0,
            }
        } else {
            Self {
                ref_type: EXTENT_DATA_REF_KEY,
                a: root,
                b: objectid,
                c: offset,
            }
        }
    }
    /// Whether this is a data backref (EXTENT_DATA_REF or SHARED_DATA_REF).
    pub fn is_data(&self) -> bool {
        self.ref_type == EXTENT_DATA_REF_KEY || self.ref_type == SHARED_DATA_REF_KEY
    }
}

/// Which kernel generation's data structures and orders to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Era {
    /// 3.7–3.10: one rbtree of heads and refs, `comp_entry` (§1.3).
    V3,
    /// 6.7+: heads in an xarray, per-head ref tree ordered by `comp_refs` (§4.3).
    Modern,
}

/// A ref's position in its head's ref tree. The derived order on the tuple *is* the kernel's
/// comparison for the era: v3.x compares `seq` before the type-specific fields (§1.3 step 4),
/// modern compares it last (§4.3). Built only through [`NodeKey::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(u8, u64, u64, u64, u64);

impl NodeKey {
    /// The key of a ref with backref `k` and `seq` in `era`'s order.
    pub fn new(era: Era, k: &BackrefKey, seq: u64) -> Self {
        match era {
            Era::V3 => NodeKey(k.ref_type, seq, k.a, k.b, k.c),
            Era::Modern => NodeKey(k.ref_type, k.a, k.b, k.c, seq),
        }
    }
    /// The backref key, `seq` left out (`era`: the one the key was built for).
    pub fn backref(&self, era: Era) -> BackrefKey {
        match era {
            Era::V3 => BackrefKey {
                ref_type: self.0,
                a: self.2,
                b: self.3,
                c: self.4,
            },
            Era::Modern => BackrefKey {
                ref_type: self.0,
                a: self.1,
                b: self.2,
                c: self.3,
            },
        }
    }
    /// The ref's tree-mod-log `seq` (§1.6; `era`: the one the key was built for).
    pub fn seq(&self, era: Era) -> u64 {
        match era {
            Era::V3 => self.1,
            Era::Modern => self.4,
        }
    }
}

/// What an add-API call's ref names besides its root (`btrfs_ref.tree_ref` / `.data_ref`,
/// §1.2, §4.3): kept as recorded, so the §7.4 check can key refs without [`BackrefKey`]'s
/// constructors (the §7.4 check (`invariant`)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefOwner {
    /// A tree block at `level` (payload, never key).
    Tree {
        /// The block's tree level (`btrfs_delayed_tree_ref::level`).
        level: u8,
    },
    /// File data of inode `objectid` at file `offset`.
    Data {
        /// The inode number (`btrfs_delayed_data_ref::objectid`, the "owner").
        objectid: u64,
        /// The file offset minus the extent offset (`btrfs_delayed_data_ref::offset`).
        offset: u64,
    },
}

/// One add-API call: `btrfs_add_delayed_tree_ref` / `_data_ref` (§1.4, §4.3), with the
/// fields of the kernel's `btrfs_ref`; its backref key is derived ([`RefSpec::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefSpec {
    /// The extent's start (`bytenr`, bytes).
    pub bytenr: u64,
    /// The extent's length (`num_bytes`, bytes).
    pub num_bytes: u64,
    /// The add-API call's action.
    pub action: AddAction,
    /// `parent`: non-zero selects a SHARED_* backref keyed by it (§1.2).
    pub parent: u64,
    /// The root the ref is accounted to (the key of TREE_BLOCK / EXTENT_DATA backrefs,
    /// payload for SHARED_*; decides `need_ref_seq`).
    pub ref_root: u64,
    /// Tree level (tree refs) or inode and file offset (data refs).
    pub owner: RefOwner,
    /// `for_cow` (§1.6): COW-induced refs get no seq even for fs trees.
    pub for_cow: bool,
}

impl RefSpec {
    /// A tree-block ref (not for COW).
    pub fn tree(bytenr: u64, num_bytes: u64, action: AddAction, parent: u64, root: u64) -> Self {
        Self {
            bytenr,
            num_bytes,
            action,
            parent,
            ref_root: root,
            owner: RefOwner::Tree { level: 0 },
            for_cow: false,
        }
    }
    /// A data ref of inode `objectid` at file `offset`.
    pub fn data(
        bytenr: u64,
        num_bytes: u64,
        action: AddAction,
        parent: u64,
        root: u64,
        objectid: u64,
        offset: u64,
    ) -> Self {
        Self {
            owner: RefOwner::Data { objectid, offset },
            ..Self::tree(bytenr, num_bytes, action, parent, root)
        }
    }
    /// Whether this is a data ref (`btrfs_add_delayed_data_ref`).
    pub fn is_data(&self) -> bool {
        matches!(self.owner, RefOwner::Data { .. })
    }
    /// Tree level (tree refs; payload only).
    pub fn level(&self) -> u8 {
        match self.owner {
            RefOwner::Tree { level } => level,
            RefOwner::Data { .. } => 0,
        }
    }
    /// The backref the model keys this ref by (§1.2 type selection).
    pub fn key(&self) -> BackrefKey {
        match self.owner {
            RefOwner::Tree { .. } => BackrefKey::tree(self.parent, self.ref_root),
            RefOwner::Data { objectid, offset } => {
                BackrefKey::data(self.parent, self.ref_root, objectid, offset)
            }
        }
    }
    /// `need_ref_seq(for_cow, rootid)` (§1.6): fs tree (5) or a subvolume (≥ 256, as s64).
    pub fn need_ref_seq(&self) -> bool {
        !self.for_cow && (self.ref_root == 5 || (self.ref_root as i64) >= 256)
    }

    /// From a decoded `add_delayed_tree_ref` event. A recorded `seq == 0` on an fs tree means
    /// the kernel saw `for_cow` (§1.6).
    pub fn from_tree_event(e: &TreeRef) -> Option<Self> {
        Some(Self {
            bytenr: e.bytenr,
            num_bytes: e.num_bytes,
            action: AddAction::from_kernel(e.action)?,
            parent: e.parent,
            ref_root: e.ref_root,
            owner: RefOwner::Tree { level: e.level },
            for_cow: e.seq == 0,
        })
    }
    /// From a decoded `add_delayed_data_ref` event (see [`RefSpec::from_tree_event`]).
    pub fn from_data_event(e: &DataRef) -> Option<Self> {
        Some(Self {
            bytenr: e.bytenr,
            num_bytes: e.num_bytes,
            action: AddAction::from_kernel(e.action)?,
            parent: e.parent,
            ref_root: e.ref_root,
            owner: RefOwner::Data {
                objectid: e.owner,
                offset: e.offset,
            },
            for_cow: e.seq == 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §1.3: v3.x orders refs by type, then seq, then the type-specific fields.
    #[test]
    fn spec_1_3_v3_order_type_then_seq_then_fields() {
        let t = BackrefKey::tree(0, 9);
        let d = BackrefKey::data(0, 5, 1, 0);
        let s = BackrefKey::tree(4096, 9);
        let mut keys = [
            NodeKey::new(Era::V3, &s, 1),
            NodeKey::new(Era::V3, &d, 0),
            NodeKey::new(Era::V3, &t, 7),
            NodeKey::new(Era::V3, &BackrefKey::tree(0, 1), 8),
        ];
        keys.sort();
        assert_eq!(keys[0].backref(Era::V3), t); // 176 with seq 7 before 176 seq 8 despite root 9 > 1
        assert_eq!(keys[1].backref(Era::V3), BackrefKey::tree(0, 1));
        assert_eq!(keys[2].backref(Era::V3), d);
        assert_eq!(keys[3].backref(Era::V3), s);
    }

    /// §4.3: modern `comp_refs` compares seq last.
    #[test]
    fn spec_4_3_modern_order_seq_last() {
        let a = NodeKey::new(Era::Modern, &BackrefKey::tree(0, 1), 9);
        let b = NodeKey::new(Era::Modern, &BackrefKey::tree(0, 2), 1);
        assert!(a < b);
        let a3 = NodeKey::new(Era::V3, &BackrefKey::tree(0, 1), 9);
        let b3 = NodeKey::new(Era::V3, &BackrefKey::tree(0, 2), 1);
        assert!(a3 > b3);
    }

    /// §1.2: SHARED_* iff parent != 0; level is not part of the key.
    #[test]
    fn spec_1_2_type_selection() {
        assert_eq!(BackrefKey::tree(0, 5).ref_type, TREE_BLOCK_REF_KEY);
        assert_eq!(BackrefKey::tree(1, 5).ref_type, SHARED_BLOCK_REF_KEY);
        assert_eq!(BackrefKey::data(0, 5, 1, 2).ref_type, EXTENT_DATA_REF_KEY);
        assert_eq!(BackrefKey::data(8, 5, 1, 2), BackrefKey::data(8, 6, 3, 4));
    }

    #[test]
    fn from_events() {
        let e = TreeRef {
            fs: 0,
            bytenr: 1 << 20,
            num_bytes: 16384,
            action: 3,
            parent: 0,
            ref_root: 5,
            level: 1,
            ref_type: TREE_BLOCK_REF_KEY,
            seq: 12,
        };
        let r = RefSpec::from_tree_event(&e).unwrap();
        assert_eq!(r.action, AddAction::AddExtent);
        assert!(r.need_ref_seq());
        assert!(RefSpec::from_tree_event(&TreeRef { action: 4, ..e }).is_none());
    }
}
