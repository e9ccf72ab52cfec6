//! Turning ring-buffer records into trace records: fields read by name through the tracepoint
//! layouts ([`super::layouts`]), small tables for tasks and filesystems, and the lock-role
//! verdict for contention.
use std::collections::HashMap;

use refgate_common::{
    event::{DataRef, Event, EventKind, FsId, Record, RefHead, Task, TreeRef},
    raw::{RawContentionEvent, RawEvent, RawHeader, RawKind, RawRunCallEvent},
    trace::pointers::PointerIds,
};

use super::{layouts::Layouts, roles::RoleNamer};

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
        let fsid = self.layouts.fsid.read(d);
        let next = self.filesystems.len() as FsId;
        *self.filesystems.entry(fsid).or_insert_with(|| {
            out.push(Record::Filesystem { id: next, fsid });
            next
        })
    }

    /// Appends the records for one ring-buffer record to `out`. A record too short for its
    /// kind, or of an unknown kind, is skipped (the caller counts the `false`).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<Record>) -> bool {
        let Some(hdr) = read::<RawHeader>(bytes) else {
            return false;
        };
        let Some(kind) = RawKind::from_u32(hdr.kind) else {
            return false;
        };
        let tid = hdr.pid_tgid as u32;
        let decoded = if kind.is_btrfs_tracepoint() {
            let Some(ev) = read::<RawEvent>(bytes) else {
                return false;
            };
            self.note_task(&hdr, out);
            // Every btrfs record carries the filesystem; the lock and call records do not.
            let fs = self.fs(&ev.data, out);
            Some((self.btrfs_event(kind, fs, &ev.data), hdr.ts_ns))
        } else {
            self.note_task(&hdr, out);
            self.probe_event(kind, hdr.ts_ns, bytes)
        };
        let Some((mut kind, ts_ns)) = decoded else {
            return false;
        };
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

    /// A task's first record also records the task (its comm, else `/proc/<tid>/comm`).
    fn note_task(&mut self, hdr: &RawHeader, out: &mut Vec<Record>) {
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
    }

    /// A btrfs tracepoint's event from its copied record `d` (fields at the tracefs offsets).
    fn btrfs_event(&self, kind: RawKind, fs: FsId, d: &[u8]) -> EventKind {
        let lay = &self.layouts;
        match kind {
            RawKind::AddDelayedTreeRef | RawKind::RunDelayedTreeRef => {
                let l = &lay.tree;
                let r = TreeRef {
                    fs,
                    bytenr: l.bytenr.read(d),
                    num_bytes: l.num_bytes.read(d),
                    action: l.action.read(d) as u8,
                    parent: l.parent.read(d),
                    ref_root: l.ref_root.read(d),
                    level: l.level.read(d) as u8,
                    ref_type: l.ref_type.read(d) as u8,
                    seq: l.seq.read(d),
                };
                if kind == RawKind::AddDelayedTreeRef {
                    EventKind::AddTreeRef(r)
                } else {
                    EventKind::RunTreeRef(r)
                }
            }
            RawKind::AddDelayedDataRef | RawKind::RunDelayedDataRef => {
                let l = &lay.data;
                let r = DataRef {
                    fs,
                    bytenr: l.bytenr.read(d),
                    num_bytes: l.num_bytes.read(d),
                    action: l.action.read(d) as u8,
                    parent: l.parent.read(d),
                    ref_root: l.ref_root.read(d),
                    owner: l.owner.read(d),
                    offset: l.offset.read(d),
                    ref_type: l.ref_type.read(d) as u8,
                    seq: l.seq.read(d),
                };
                if kind == RawKind::AddDelayedDataRef {
                    EventKind::AddDataRef(r)
                } else {
                    EventKind::RunDataRef(r)
                }
            }
            RawKind::AddDelayedRefHead | RawKind::RunDelayedRefHead => {
                let l = &lay.head;
                let r = RefHead {
                    fs,
                    bytenr: l.bytenr.read(d),
                    num_bytes: l.num_bytes.read(d),
                    action: l.action.read(d) as u8,
                    is_data: l.is_data.read(d) != 0,
                };
                if kind == RawKind::AddDelayedRefHead {
                    EventKind::AddRefHead(r)
                } else {
                    EventKind::RunRefHead(r)
                }
            }
            RawKind::TransactionCommit => EventKind::TransactionCommit {
                fs,
                generation: lay.commit.generation.read(d),
                root_objectid: lay.commit.root_objectid.read(d),
            },
            RawKind::TreeLock => {
                let l = &lay.tree_lock;
                EventKind::TreeLock {
                    fs,
                    block: l.block.read(d),
                    generation: l.generation.read(d),
                    wait_ns: l.diff_ns.read(d),
                    owner: l.owner.read(d),
                    is_log_tree: l.is_log_tree.read(d) != 0,
                }
            }
            _ => unreachable!("not a btrfs tracepoint: {kind:?}"),
        }
    }

    /// A lock-contention or probe-call event and its timestamp (a call's is its entry), or
    /// `None` if `bytes` is too short for it.
    fn probe_event(&mut self, kind: RawKind, ts_ns: u64, bytes: &[u8]) -> Option<(EventKind, u64)> {
        let mut ts_ns = ts_ns;
        let kind = match kind {
            RawKind::Contention => {
                let RawContentionEvent { c, .. } = read(bytes)?;
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
                let RawRunCallEvent { c, .. } = read(bytes)?;
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
            _ => unreachable!("a btrfs tracepoint: {kind:?}"),
        };
        Some((kind, ts_ns))
    }
}

/// Reads a `T` from the start of `bytes` if it is long enough.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    // SAFETY: length checked; the eBPF side writes repr(C) plain-old-data records in which
    // every bit pattern is valid.
    (bytes.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}
