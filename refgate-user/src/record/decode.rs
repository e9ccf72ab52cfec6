//! Turning ring-buffer records into trace records: field offsets from tracefs `format` files,
//! small tables for tasks and filesystems, and the lock-role verdict for contention.
use std::{collections::HashMap, path::Path};

use anyhow::Result;
use refgate_common::{
    event::{DataRef, Event, EventKind, FsId, Record, RefHead, Task, TreeRef},
    raw::{RAW_DATA_LEN, RawContentionEvent, RawEvent, RawHeader, RawKind, RawRunCallEvent},
    trace::pointers::PointerIds,
};

use super::{roles::RoleNamer, tracefs::Layout};

/// Offsets of the fields refgate reads, per tracepoint.
#[derive(Clone, Debug)]
pub struct Layouts {
    fsid: usize,
    tree: [usize; 8],      // bytenr num_bytes action parent ref_root level type seq
    data: [usize; 9],      // bytenr num_bytes action parent ref_root owner offset type seq
    head: [usize; 4],      // bytenr num_bytes action is_data
    commit: [usize; 2],    // generation root_objectid
    tree_lock: [usize; 4], // block generation diff_ns owner is_log_tree
    tree_lock_log: usize,
    /// (tracepoint name, end of its record's last field): how many bytes the eBPF program
    /// may load from the record (the kernel refuses a program that could read further).
    record_ends: Vec<(&'static str, u32)>,
    /// The lock tracepoints' fields, or why they cannot be read on this kernel (they came
    /// with Linux 5.19): recording then goes on without lock waits.
    pub lock: std::result::Result<LockLayout, String>,
}

/// Offsets of the `lock:contention_begin/end` fields refgate reads, and where each record ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockLayout {
    pub addr: u32,
    pub flags: u32,
    pub ret: u32,
    pub end_begin: u32,
    pub end_end: u32,
}

impl Layouts {
    /// Reads every layout from tracefs and checks sizes and bounds against what refgate copies.
    pub fn read(tracefs: &Path) -> Result<Layouts> {
        let lim = RAW_DATA_LEN;
        let get = |cat: &str, tp: &str| Layout::read(tracefs, cat, tp);
        let f = |l: &Layout, tp: &str, name: &str, size: usize| {
            l.field(tp, name, size, lim).map(|f| f.offset)
        };
        let t = get("btrfs", "add_delayed_tree_ref")?;
        let tp = "btrfs:add_delayed_tree_ref";
        let tree = [
            f(&t, tp, "bytenr", 8)?,
            f(&t, tp, "num_bytes", 8)?,
            f(&t, tp, "action", 4)?,
            f(&t, tp, "parent", 8)?,
            f(&t, tp, "ref_root", 8)?,
            f(&t, tp, "level", 4)?,
            f(&t, tp, "type", 4)?,
            f(&t, tp, "seq", 8)?,
        ];
        let fsid = f(&t, tp, "fsid", 16)?;
        let d = get("btrfs", "add_delayed_data_ref")?;
        let tp = "btrfs:add_delayed_data_ref";
        let data = [
            f(&d, tp, "bytenr", 8)?,
            f(&d, tp, "num_bytes", 8)?,
            f(&d, tp, "action", 4)?,
            f(&d, tp, "parent", 8)?,
            f(&d, tp, "ref_root", 8)?,
            f(&d, tp, "owner", 8)?,
            f(&d, tp, "offset", 8)?,
            f(&d, tp, "type", 4)?,
            f(&d, tp, "seq", 8)?,
        ];
        let h = get("btrfs", "add_delayed_ref_head")?;
        let tp = "btrfs:add_delayed_ref_head";
        let head = [
            f(&h, tp, "bytenr", 8)?,
            f(&h, tp, "num_bytes", 8)?,
            f(&h, tp, "action", 4)?,
            f(&h, tp, "is_data", 4)?,
        ];
        let mut record_ends = vec![
            ("add_delayed_tree_ref", t.end()),
            ("add_delayed_data_ref", d.end()),
            ("add_delayed_ref_head", h.end()),
        ];
        // The run-side records share the add-side classes (spec §5.1–5.3); make sure.
        for (cat, tp, want) in [
            ("btrfs", "run_delayed_tree_ref", &t),
            ("btrfs", "run_delayed_data_ref", &d),
            ("btrfs", "run_delayed_ref_head", &h),
        ] {
            let l = get(cat, tp)?;
            if l.fields != want.fields {
                anyhow::bail!(
                    "tracepoint {cat}:{tp} has a layout different from its add-side twin on this kernel; refgate does not know how to read it"
                );
            }
            record_ends.push((tp, l.end()));
        }
        let c = get("btrfs", "btrfs_transaction_commit")?;
        let tp = "btrfs:btrfs_transaction_commit";
        let commit = [f(&c, tp, "generation", 8)?, f(&c, tp, "root_objectid", 8)?];
        let k = get("btrfs", "btrfs_tree_lock")?;
        let tp = "btrfs:btrfs_tree_lock";
        let tree_lock = [
            f(&k, tp, "block", 8)?,
            f(&k, tp, "generation", 8)?,
            f(&k, tp, "diff_ns", 8)?,
            f(&k, tp, "owner", 8)?,
        ];
        let tree_lock_log = f(&k, tp, "is_log_tree", 4)?;
        for (name, l) in [
            ("commit", &c),
            ("tree_lock", &k),
            ("head", &h),
            ("data", &d),
        ] {
            if l.field(name, "fsid", 16, lim)?.offset != fsid {
                anyhow::bail!("btrfs tracepoints disagree on where `fsid` is on this kernel");
            }
        }
        // The eBPF side compares these as whole 8-byte words of the record.
        let owner = tree_lock[3];
        if fsid % 8 != 0 || owner % 8 != 0 {
            anyhow::bail!(
                "on this kernel `fsid` (offset {fsid}) or btrfs_tree_lock's `owner` (offset \
                 {owner}) is not 8-byte aligned; refgate's filters cannot read it"
            );
        }
        let lock = (|| -> Result<LockLayout> {
            let (tb, te) = ("lock:contention_begin", "lock:contention_end");
            let (b, e) = (
                get("lock", "contention_begin")?,
                get("lock", "contention_end")?,
            );
            let l = LockLayout {
                addr: f(&b, tb, "lock_addr", 8)? as u32,
                flags: f(&b, tb, "flags", 4)? as u32,
                ret: f(&e, te, "ret", 4)? as u32,
                end_begin: b.end(),
                end_end: e.end(),
            };
            // The eBPF side reads them as an aligned word and aligned halves.
            if !l.addr.is_multiple_of(8) || !l.flags.is_multiple_of(4) || !l.ret.is_multiple_of(4) {
                anyhow::bail!("their fields are not aligned as refgate reads them: {l:?}");
            }
            Ok(l)
        })()
        .map_err(|e| {
            format!(
                "lock:contention_* cannot be read on this kernel (they came with Linux 5.19): \
                 {e:#}"
            )
        });
        record_ends.push(("btrfs_transaction_commit", c.end()));
        record_ends.push(("btrfs_tree_lock", k.end()));
        Ok(Layouts {
            fsid,
            tree,
            data,
            head,
            commit,
            tree_lock,
            tree_lock_log,
            record_ends,
            lock,
        })
    }

    pub fn fsid_offset(&self) -> usize {
        self.fsid
    }
    pub fn tree_lock_owner_offset(&self) -> usize {
        self.tree_lock[3]
    }
    /// (btrfs tracepoint, end of its record's last field), for every btrfs tracepoint taken.
    pub fn record_ends(&self) -> &[(&'static str, u32)] {
        &self.record_ends
    }
}

/// The task's name from its first record, or `None` if that record carries none.
///
/// The eBPF side sends the comm only when a CPU's previous record was another task's, so a
/// task's first record normally has it. The exception is nesting: a program interrupted
/// between its reservation and its comm check by another refgate program for the same task
/// (only possible under fentry/fexit, which do not share the tracepoints' per-CPU recursion
/// guard) leaves the earlier record without the name.
fn comm_in(comm: &[u8; 16]) -> Option<String> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(16);
    (end > 0).then(|| String::from_utf8_lossy(&comm[..end]).into_owned())
}

fn u64_at(d: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(d[off..off + 8].try_into().expect("8 bytes"))
}
fn i32_at(d: &[u8], off: usize) -> i32 {
    i32::from_ne_bytes(d[off..off + 4].try_into().expect("4 bytes"))
}

/// Stateful decoder: emits `Task`/`Filesystem` records the first time a task or fs appears.
pub struct Decoder {
    layouts: Layouts,
    roles: RoleNamer,
    tasks: HashMap<u32, ()>,
    filesystems: HashMap<[u8; 16], FsId>,
    /// Tasks whose first record had no comm: named from /proc (refgate's pid namespace) or "?".
    pub comm_fallbacks: u64,
    /// Replaces kernel pointers by per-trace identifiers; `None` keeps them raw
    /// (`--keep-kernel-pointers`).
    pub pointer_ids: Option<PointerIds>,
}

impl Decoder {
    pub fn new(layouts: Layouts, roles: RoleNamer) -> Self {
        Decoder {
            layouts,
            roles,
            tasks: HashMap::new(),
            filesystems: HashMap::new(),
            comm_fallbacks: 0,
            pointer_ids: Some(PointerIds::new()),
        }
    }

    fn fs(&mut self, d: &[u8], out: &mut Vec<Record>) -> FsId {
        let fsid: [u8; 16] = d[self.layouts.fsid..self.layouts.fsid + 16]
            .try_into()
            .expect("16");
        let next = self.filesystems.len() as FsId;
        *self.filesystems.entry(fsid).or_insert_with(|| {
            out.push(Record::Filesystem { id: next, fsid });
            next
        })
    }

    /// Appends the records for one ring-buffer record to `out`. A record too short for its
    /// kind, or of an unknown kind, is skipped (the caller counts the `false`).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<Record>) -> bool {
        /// Reads a `T` from the start of `bytes` if it is long enough.
        fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
            // SAFETY: length checked; the eBPF side writes repr(C) plain-old-data records in
            // which every bit pattern is valid.
            (bytes.len() >= std::mem::size_of::<T>())
                .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
        }
        let Some(hdr) = read::<RawHeader>(bytes) else {
            return false;
        };
        let Some(kind) = RawKind::from_u32(hdr.kind) else {
            return false;
        };
        let ev: RawEvent;
        let d: &[u8] = match kind {
            RawKind::Contention
            | RawKind::RunDelayedRefsCall
            | RawKind::TransHandleStart
            | RawKind::TransHandleEnd
            | RawKind::CommitTransactionCall => &[],
            _ => match read::<RawEvent>(bytes) {
                Some(e) => {
                    ev = e;
                    &ev.data
                }
                None => return false,
            },
        };
        let tid = hdr.pid_tgid as u32;
        if self.tasks.insert(tid, ()).is_none() {
            out.push(Record::Task(Task {
                tid,
                tgid: (hdr.pid_tgid >> 32) as u32,
                comm: comm_in(&hdr.comm).unwrap_or_else(|| {
                    self.comm_fallbacks += 1;
                    std::fs::read_to_string(format!("/proc/{tid}/comm"))
                        .map(|s| s.trim_end().to_string())
                        .unwrap_or_else(|_| "?".to_string())
                }),
            }));
        }
        // Every btrfs record carries the filesystem; the lock and call records do not.
        let fs = if d.is_empty() { 0 } else { self.fs(d, out) };
        let lay = &self.layouts;
        let mut ts_ns = hdr.ts_ns;
        let kind = match kind {
            RawKind::AddDelayedTreeRef | RawKind::RunDelayedTreeRef => {
                let t = lay.tree;
                let r = TreeRef {
                    fs,
                    bytenr: u64_at(d, t[0]),
                    num_bytes: u64_at(d, t[1]),
                    action: i32_at(d, t[2]) as u8,
                    parent: u64_at(d, t[3]),
                    ref_root: u64_at(d, t[4]),
                    level: i32_at(d, t[5]) as u8,
                    ref_type: i32_at(d, t[6]) as u8,
                    seq: u64_at(d, t[7]),
                };
                if kind == RawKind::AddDelayedTreeRef {
                    EventKind::AddTreeRef(r)
                } else {
                    EventKind::RunTreeRef(r)
                }
            }
            RawKind::AddDelayedDataRef | RawKind::RunDelayedDataRef => {
                let t = lay.data;
                let r = DataRef {
                    fs,
                    bytenr: u64_at(d, t[0]),
                    num_bytes: u64_at(d, t[1]),
                    action: i32_at(d, t[2]) as u8,
                    parent: u64_at(d, t[3]),
                    ref_root: u64_at(d, t[4]),
                    owner: u64_at(d, t[5]),
                    offset: u64_at(d, t[6]),
                    ref_type: i32_at(d, t[7]) as u8,
                    seq: u64_at(d, t[8]),
                };
                if kind == RawKind::AddDelayedDataRef {
                    EventKind::AddDataRef(r)
                } else {
                    EventKind::RunDataRef(r)
                }
            }
            RawKind::AddDelayedRefHead | RawKind::RunDelayedRefHead => {
                let t = lay.head;
                let r = RefHead {
                    fs,
                    bytenr: u64_at(d, t[0]),
                    num_bytes: u64_at(d, t[1]),
                    action: i32_at(d, t[2]) as u8,
                    is_data: i32_at(d, t[3]) != 0,
                };
                if kind == RawKind::AddDelayedRefHead {
                    EventKind::AddRefHead(r)
                } else {
                    EventKind::RunRefHead(r)
                }
            }
            RawKind::TransactionCommit => {
                let (generation, root_objectid) =
                    (u64_at(d, lay.commit[0]), u64_at(d, lay.commit[1]));
                EventKind::TransactionCommit {
                    fs,
                    generation,
                    root_objectid,
                }
            }
            RawKind::TreeLock => {
                let t = lay.tree_lock;
                let (block, generation, wait_ns, owner) = (
                    u64_at(d, t[0]),
                    u64_at(d, t[1]),
                    u64_at(d, t[2]),
                    u64_at(d, t[3]),
                );
                let is_log_tree = i32_at(d, lay.tree_lock_log) != 0;
                EventKind::TreeLock {
                    fs,
                    block,
                    generation,
                    wait_ns,
                    owner,
                    is_log_tree,
                }
            }
            RawKind::Contention => {
                let Some(RawContentionEvent { c, .. }) = read(bytes) else {
                    return false;
                };
                let n = (c.nframes as usize).min(c.stack.len());
                EventKind::Contention {
                    role: self.roles.role(c.flags, &c.stack[..n]),
                    lock_addr: c.lock_addr,
                    flags: c.flags,
                    ret: c.ret,
                    wait_ns: c.wait_ns,
                }
            }
            RawKind::RunDelayedRefsCall
            | RawKind::TransHandleStart
            | RawKind::TransHandleEnd
            | RawKind::CommitTransactionCall => {
                let Some(RawRunCallEvent { c, .. }) = read(bytes) else {
                    return false;
                };
                ts_ns = c.entry_ns;
                match kind {
                    RawKind::RunDelayedRefsCall => EventKind::RunDelayedRefsCall {
                        arg: c.arg,
                        ret: c.ret,
                        duration_ns: c.duration_ns,
                    },
                    RawKind::TransHandleStart => EventKind::TransHandleStart { handle: c.arg },
                    RawKind::TransHandleEnd => EventKind::TransHandleEnd { handle: c.arg },
                    _ => EventKind::CommitTransactionCall {
                        handle: c.arg,
                        ret: c.ret,
                        duration_ns: c.duration_ns,
                    },
                }
            }
        };
        let mut kind = kind;
        if let Some(ids) = &mut self.pointer_ids {
            ids.hide(&mut kind);
        }
        out.push(Record::Event(Event {
            ts_ns,
            cpu: hdr.cpu,
            tid,
            kind,
        }));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The `format` files of the ten tracepoints refgate takes, copied from this project's
    /// 6.18 machine.
    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracefs-6.18")
    }

    /// A copy of the fixture, changed by `edit(events_dir)`.
    fn edited(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for cat in ["btrfs", "lock"] {
            for tp in std::fs::read_dir(fixture().join("events").join(cat)).unwrap() {
                let tp = tp.unwrap();
                let to = d.path().join("events").join(cat).join(tp.file_name());
                std::fs::create_dir_all(&to).unwrap();
                std::fs::copy(tp.path().join("format"), to.join("format")).unwrap();
            }
        }
        edit(&d.path().join("events"));
        d
    }

    #[test]
    fn layouts_and_record_ends_from_format_files() {
        let l = Layouts::read(&fixture()).unwrap();
        let ends: HashMap<_, _> = l.record_ends().iter().copied().collect();
        // The end of the last field, which the kernel checks at attach time: btrfs_tree_lock
        // ends on the 4-byte is_log_tree at 72 (the struct itself is 80 bytes).
        assert_eq!(ends["btrfs_tree_lock"], 76);
        assert_eq!(ends["add_delayed_data_ref"], 96);
        assert_eq!(ends["run_delayed_data_ref"], 96);
        assert_eq!(ends["add_delayed_ref_head"], 48);
        assert_eq!(ends.len(), 8);
        assert_eq!((l.fsid_offset(), l.tree_lock_owner_offset()), (8, 64));
        let lock = l.lock.unwrap();
        assert_eq!((lock.addr, lock.flags, lock.ret), (8, 16, 16));
        assert_eq!((lock.end_begin, lock.end_end), (20, 20));
    }

    #[test]
    fn a_kernel_without_lock_tracepoints_records_without_them() {
        let d = edited(|events| std::fs::remove_dir_all(events.join("lock")).unwrap());
        let l = Layouts::read(d.path()).expect("the btrfs layouts alone are enough");
        let why = l.lock.unwrap_err();
        assert!(why.contains("5.19"), "{why}");
    }

    #[test]
    fn an_unaligned_owner_is_refused_with_a_reason() {
        let d = edited(|events| {
            let f = events.join("btrfs/btrfs_tree_lock/format");
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, text.replace("owner;\toffset:64;", "owner;\toffset:68;")).unwrap();
        });
        let err = format!("{:#}", Layouts::read(d.path()).err().unwrap());
        assert!(err.contains("not 8-byte aligned"), "{err}");
    }
}
