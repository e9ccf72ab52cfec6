//! The in-block record encoding: [`Record`]s as compact, delta-encoded postcard values.
//!
//! Every frame's block starts from a fresh [`Delta`] state, so a block decodes on its own.
//! Within a block:
//! * timestamps are the signed difference from the previous event's (postcard zigzag varint);
//! * bytenrs are the signed difference from the previous bytenr, counted in 4 KiB units when
//!   the difference is a multiple of 4 KiB (the low bit of the code says which);
//! * sizes are counted in 4 KiB units when they are multiples of 4 KiB;
//! * tids and lock addresses are interned: the first use in a block spells the value out, later
//!   uses name its index in the block's table;
//! * `seq`, inode numbers and generations are differences from the previous value.
//!
//! [`Wire`]'s variants, like [`Record`]'s, are only ever appended.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::event::{
    DataRef, Event, EventKind, FsId, LockRole, Record, RefHead, RefType, Stats, Task, TreeRef,
};

/// Bytenrs and sizes are counted in these units when they divide evenly (the smallest btrfs
/// sector size).
const UNIT: u64 = 4096;

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct EvHead {
    /// `ts_ns` minus the previous event's `ts_ns` in this block (wrapping).
    dt: i64,
    cpu: u32,
    /// Index into the block's tid table, or `table.len() + tid` for a new tid.
    tid: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct WTree {
    fs: FsId,
    bytenr: u128,
    num_bytes: u128,
    action: u8,
    parent: u128,
    ref_root: u64,
    level: u8,
    ref_type: RefType,
    seq: i64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct WData {
    fs: FsId,
    bytenr: u128,
    num_bytes: u128,
    action: u8,
    parent: u128,
    ref_root: u64,
    owner: i64,
    offset: u128,
    ref_type: RefType,
    seq: i64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct WHead {
    fs: FsId,
    bytenr: u128,
    num_bytes: u128,
    action: u8,
    is_data: bool,
}

/// The records as they are stored. Variants are only ever appended.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Wire {
    AddTreeRef(EvHead, WTree),
    AddDataRef(EvHead, WData),
    AddRefHead(EvHead, WHead),
    RunTreeRef(EvHead, WTree),
    RunDataRef(EvHead, WData),
    RunRefHead(EvHead, WHead),
    TransactionCommit {
        h: EvHead,
        fs: FsId,
        generation: i64,
        root_objectid: u64,
    },
    TreeLock {
        h: EvHead,
        fs: FsId,
        block: u128,
        generation: i64,
        wait_ns: u64,
        owner: u64,
        is_log_tree: bool,
    },
    Contention {
        h: EvHead,
        role: LockRole,
        /// Index into the block's lock table, or `table.len() + addr` for a new address.
        lock: u128,
        flags: u32,
        ret: i32,
        wait_ns: u64,
    },
    RunDelayedRefsCall {
        h: EvHead,
        arg: u64,
        ret: i64,
        duration_ns: u64,
    },
    Task(Task),
    Filesystem {
        id: FsId,
        fsid: [u8; 16],
    },
    Stats(Stats),
    // Appended (kprobes on the transaction-handle functions).
    TransHandleStart {
        h: EvHead,
        handle: u64,
    },
    TransHandleEnd {
        h: EvHead,
        handle: u64,
    },
    CommitTransactionCall {
        h: EvHead,
        handle: u64,
        ret: i64,
        duration_ns: u64,
    },
}

/// A cheap hasher for the interning tables (keys are tids and kernel addresses, not
/// attacker-chosen strings; the tables live for one block).
#[derive(Default)]
struct MulHasher(u64);
impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64)
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MulHasher>>;

/// Encoder-side interning table.
struct Intern<K> {
    map: FastMap<K, u64>,
}
impl<K: Hash + Eq + Copy + Into<u128>> Intern<K> {
    fn new() -> Self {
        Intern {
            map: FastMap::default(),
        }
    }
    /// The code for `k`: its index if seen in this block, else `len + k` (and remember it).
    fn code(&mut self, k: K) -> u128 {
        let n = self.map.len() as u64;
        match self.map.get(&k) {
            Some(&i) => i as u128,
            None => {
                self.map.insert(k, n);
                n as u128 + k.into()
            }
        }
    }
    fn clear(&mut self) {
        self.map.clear()
    }
}

/// Decoder-side interning table.
fn unintern<K: Copy + TryFrom<u128>>(table: &mut Vec<K>, code: u128) -> Result<K, &'static str> {
    let n = table.len() as u128;
    if code < n {
        Ok(table[code as usize])
    } else {
        let k = K::try_from(code - n).map_err(|_| "interned value out of range")?;
        table.push(k);
        Ok(k)
    }
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn unzz(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Signed difference `x - prev`, in [`UNIT`]s when it divides evenly.
fn bn_code(prev: u64, x: u64) -> u128 {
    let d = x.wrapping_sub(prev) as i64;
    if d % UNIT as i64 == 0 {
        (zz(d / UNIT as i64) as u128) << 1
    } else {
        ((zz(d) as u128) << 1) | 1
    }
}
fn bn_decode(prev: u64, code: u128) -> Result<u64, &'static str> {
    let q = u64::try_from(code >> 1).map_err(|_| "bytenr difference out of range")?;
    let d = if code & 1 == 0 {
        unzz(q).wrapping_mul(UNIT as i64)
    } else {
        unzz(q)
    };
    Ok(prev.wrapping_add(d as u64))
}

fn size_code(x: u64) -> u128 {
    if x.is_multiple_of(UNIT) {
        ((x / UNIT) as u128) << 1
    } else {
        ((x as u128) << 1) | 1
    }
}
fn size_decode(code: u128) -> Result<u64, &'static str> {
    let q = u64::try_from(code >> 1).map_err(|_| "size out of range")?;
    if code & 1 == 0 {
        q.checked_mul(UNIT).ok_or("size out of range")
    } else {
        Ok(q)
    }
}

fn parent_code(bytenr: u64, parent: u64) -> u128 {
    if parent == 0 {
        0
    } else {
        1 + bn_code(bytenr, parent)
    }
}
fn parent_decode(bytenr: u64, code: u128) -> Result<u64, &'static str> {
    if code == 0 {
        Ok(0)
    } else {
        bn_decode(bytenr, code - 1)
    }
}

/// The previous values a block's deltas are taken from, the same on both sides; every block
/// starts from `Delta::default()`. (Bytenrs use [`bn_code`], the rest [`delta`]/[`undelta`].)
#[derive(Default)]
struct Delta {
    ts: u64,
    bytenr: u64,
    seq: u64,
    owner: u64,
    generation: u64,
}

/// `x` as the wrapping difference from `*prev`; `*prev` becomes `x`.
fn delta(prev: &mut u64, x: u64) -> i64 {
    let d = x.wrapping_sub(*prev) as i64;
    *prev = x;
    d
}

/// The inverse of [`delta`]: `*prev` plus `d` (wrapping), which becomes `*prev`.
fn undelta(prev: &mut u64, d: i64) -> u64 {
    *prev = prev.wrapping_add(d as u64);
    *prev
}

/// Per-block encoder state.
pub(crate) struct Encoder {
    d: Delta,
    tids: Intern<u32>,
    locks: Intern<u64>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder {
            d: Delta::default(),
            tids: Intern::new(),
            locks: Intern::new(),
        }
    }

    /// Start a new block.
    pub(crate) fn reset(&mut self) {
        self.d = Delta::default();
        self.tids.clear();
        self.locks.clear();
    }

    fn head(&mut self, e: &Event) -> EvHead {
        EvHead {
            dt: delta(&mut self.d.ts, e.ts_ns),
            cpu: e.cpu,
            tid: self.tids.code(e.tid) as u64,
        }
    }

    fn bytenr(&mut self, x: u64) -> u128 {
        let c = bn_code(self.d.bytenr, x);
        self.d.bytenr = x;
        c
    }

    fn tree(&mut self, r: &TreeRef) -> WTree {
        WTree {
            fs: r.fs,
            bytenr: self.bytenr(r.bytenr),
            num_bytes: size_code(r.num_bytes),
            action: r.action,
            parent: parent_code(r.bytenr, r.parent),
            ref_root: r.ref_root,
            level: r.level,
            ref_type: r.ref_type,
            seq: delta(&mut self.d.seq, r.seq),
        }
    }

    fn data(&mut self, r: &DataRef) -> WData {
        let owner = delta(&mut self.d.owner, r.owner);
        WData {
            fs: r.fs,
            bytenr: self.bytenr(r.bytenr),
            num_bytes: size_code(r.num_bytes),
            action: r.action,
            parent: parent_code(r.bytenr, r.parent),
            ref_root: r.ref_root,
            owner,
            offset: size_code(r.offset),
            ref_type: r.ref_type,
            seq: delta(&mut self.d.seq, r.seq),
        }
    }

    fn refhead(&mut self, r: &RefHead) -> WHead {
        WHead {
            fs: r.fs,
            bytenr: self.bytenr(r.bytenr),
            num_bytes: size_code(r.num_bytes),
            action: r.action,
            is_data: r.is_data,
        }
    }

    /// Append `rec`'s encoding to `out`.
    pub(crate) fn encode(&mut self, rec: &Record, out: &mut Vec<u8>) -> postcard::Result<()> {
        let w = match rec {
            Record::Event(e) => {
                let h = self.head(e);
                match &e.kind {
                    EventKind::AddTreeRef(r) => Wire::AddTreeRef(h, self.tree(r)),
                    EventKind::AddDataRef(r) => Wire::AddDataRef(h, self.data(r)),
                    EventKind::AddRefHead(r) => Wire::AddRefHead(h, self.refhead(r)),
                    EventKind::RunTreeRef(r) => Wire::RunTreeRef(h, self.tree(r)),
                    EventKind::RunDataRef(r) => Wire::RunDataRef(h, self.data(r)),
                    EventKind::RunRefHead(r) => Wire::RunRefHead(h, self.refhead(r)),
                    &EventKind::TransactionCommit {
                        fs,
                        generation,
                        root_objectid,
                    } => Wire::TransactionCommit {
                        h,
                        fs,
                        generation: delta(&mut self.d.generation, generation),
                        root_objectid,
                    },
                    &EventKind::TreeLock {
                        fs,
                        block,
                        generation,
                        wait_ns,
                        owner,
                        is_log_tree,
                    } => Wire::TreeLock {
                        h,
                        fs,
                        block: self.bytenr(block),
                        generation: delta(&mut self.d.generation, generation),
                        wait_ns,
                        owner,
                        is_log_tree,
                    },
                    &EventKind::Contention {
                        role,
                        lock_addr,
                        flags,
                        ret,
                        wait_ns,
                    } => Wire::Contention {
                        h,
                        role,
                        lock: self.locks.code(lock_addr),
                        flags,
                        ret,
                        wait_ns,
                    },
                    &EventKind::RunDelayedRefsCall {
                        arg,
                        ret,
                        duration_ns,
                    } => Wire::RunDelayedRefsCall {
                        h,
                        arg,
                        ret,
                        duration_ns,
                    },
                    &EventKind::TransHandleStart { handle } => Wire::TransHandleStart { h, handle },
                    &EventKind::TransHandleEnd { handle } => Wire::TransHandleEnd { h, handle },
                    &EventKind::CommitTransactionCall {
                        handle,
                        ret,
                        duration_ns,
                    } => Wire::CommitTransactionCall {
                        h,
                        handle,
                        ret,
                        duration_ns,
                    },
                }
            }
            Record::Task(t) => Wire::Task(t.clone()),
            &Record::Filesystem { id, fsid } => Wire::Filesystem { id, fsid },
            Record::Stats(s) => Wire::Stats(s.clone()),
        };
        let buf = std::mem::take(out);
        *out = postcard::to_extend(&w, buf)?;
        Ok(())
    }
}

/// Per-block decoder state.
pub(crate) struct Decoder {
    d: Delta,
    tids: Vec<u32>,
    locks: Vec<u64>,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder {
            d: Delta::default(),
            tids: Vec::new(),
            locks: Vec::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.d = Delta::default();
        self.tids.clear();
        self.locks.clear();
    }

    fn bytenr(&mut self, code: u128) -> Result<u64, &'static str> {
        self.d.bytenr = bn_decode(self.d.bytenr, code)?;
        Ok(self.d.bytenr)
    }

    fn tree(&mut self, w: WTree) -> Result<TreeRef, &'static str> {
        let bytenr = self.bytenr(w.bytenr)?;
        Ok(TreeRef {
            fs: w.fs,
            bytenr,
            num_bytes: size_decode(w.num_bytes)?,
            action: w.action,
            parent: parent_decode(bytenr, w.parent)?,
            ref_root: w.ref_root,
            level: w.level,
            ref_type: w.ref_type,
            seq: undelta(&mut self.d.seq, w.seq),
        })
    }

    fn data(&mut self, w: WData) -> Result<DataRef, &'static str> {
        let bytenr = self.bytenr(w.bytenr)?;
        let owner = undelta(&mut self.d.owner, w.owner);
        Ok(DataRef {
            fs: w.fs,
            bytenr,
            num_bytes: size_decode(w.num_bytes)?,
            action: w.action,
            parent: parent_decode(bytenr, w.parent)?,
            ref_root: w.ref_root,
            owner,
            offset: size_decode(w.offset)?,
            ref_type: w.ref_type,
            seq: undelta(&mut self.d.seq, w.seq),
        })
    }

    fn refhead(&mut self, w: WHead) -> Result<RefHead, &'static str> {
        Ok(RefHead {
            fs: w.fs,
            bytenr: self.bytenr(w.bytenr)?,
            num_bytes: size_decode(w.num_bytes)?,
            action: w.action,
            is_data: w.is_data,
        })
    }

    fn event(&mut self, h: EvHead, kind: EventKind) -> Result<Record, &'static str> {
        // `kind` is built first (it may update the bytenr state); the head's state is separate.
        let tid = unintern(&mut self.tids, h.tid as u128)?;
        Ok(Record::Event(Event {
            ts_ns: undelta(&mut self.d.ts, h.dt),
            cpu: h.cpu,
            tid,
            kind,
        }))
    }

    /// Decode one record from the front of `buf`; returns it and the rest of `buf`.
    pub(crate) fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<(Record, &'a [u8]), String> {
        let (w, rest) = postcard::take_from_bytes::<Wire>(buf).map_err(|e| e.to_string())?;
        let (h, kind) = match w {
            Wire::Task(t) => return Ok((Record::Task(t), rest)),
            Wire::Filesystem { id, fsid } => return Ok((Record::Filesystem { id, fsid }, rest)),
            Wire::Stats(s) => return Ok((Record::Stats(s), rest)),
            Wire::AddTreeRef(h, r) => (h, EventKind::AddTreeRef(self.tree(r)?)),
            Wire::AddDataRef(h, r) => (h, EventKind::AddDataRef(self.data(r)?)),
            Wire::AddRefHead(h, r) => (h, EventKind::AddRefHead(self.refhead(r)?)),
            Wire::RunTreeRef(h, r) => (h, EventKind::RunTreeRef(self.tree(r)?)),
            Wire::RunDataRef(h, r) => (h, EventKind::RunDataRef(self.data(r)?)),
            Wire::RunRefHead(h, r) => (h, EventKind::RunRefHead(self.refhead(r)?)),
            Wire::TransactionCommit {
                h,
                fs,
                generation,
                root_objectid,
            } => (
                h,
                EventKind::TransactionCommit {
                    fs,
                    generation: undelta(&mut self.d.generation, generation),
                    root_objectid,
                },
            ),
            Wire::TreeLock {
                h,
                fs,
                block,
                generation,
                wait_ns,
                owner,
                is_log_tree,
            } => (
                h,
                EventKind::TreeLock {
                    fs,
                    block: self.bytenr(block)?,
                    generation: undelta(&mut self.d.generation, generation),
                    wait_ns,
                    owner,
                    is_log_tree,
                },
            ),
            Wire::Contention {
                h,
                role,
                lock,
                flags,
                ret,
                wait_ns,
            } => (
                h,
                EventKind::Contention {
                    role,
                    lock_addr: unintern(&mut self.locks, lock)?,
                    flags,
                    ret,
                    wait_ns,
                },
            ),
            Wire::RunDelayedRefsCall {
                h,
                arg,
                ret,
                duration_ns,
            } => (
                h,
                EventKind::RunDelayedRefsCall {
                    arg,
                    ret,
                    duration_ns,
                },
            ),
            Wire::TransHandleStart { h, handle } => (h, EventKind::TransHandleStart { handle }),
            Wire::TransHandleEnd { h, handle } => (h, EventKind::TransHandleEnd { handle }),
            Wire::CommitTransactionCall {
                h,
                handle,
                ret,
                duration_ns,
            } => (
                h,
                EventKind::CommitTransactionCall {
                    handle,
                    ret,
                    duration_ns,
                },
            ),
        };
        Ok((self.event(h, kind)?, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_at_the_edges() {
        let vals = [
            0,
            1,
            4095,
            4096,
            8192,
            u64::MAX,
            u64::MAX - 4095,
            1 << 63,
            12345 << 12,
        ];
        for &p in &vals {
            for &x in &vals {
                assert_eq!(bn_decode(p, bn_code(p, x)), Ok(x), "{p} {x}");
                assert_eq!(parent_decode(p, parent_code(p, x)), Ok(x), "{p} {x}");
            }
            assert_eq!(size_decode(size_code(p)), Ok(p));
        }
        assert_eq!(size_code(16384), 8, "a 16 KiB node is a one-byte varint");
        assert!(
            bn_code(1 << 30, (1 << 30) + 16384) < 128,
            "the next node is one byte away"
        );
    }
}
