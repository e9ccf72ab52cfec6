//! Kernel pointers out of traces: `lock_addr` of a contended lock and the
//! `struct btrfs_trans_handle *` of a handle are kernel heap addresses, which the kernel hides
//! from unprivileged users (`kptr_restrict`) because they help defeat KASLR. The replay needs
//! only their identity, so the recorder writes per-trace identifiers instead: 1, 2, … in order
//! of first appearance, one series for locks and one for handles; 0 (NULL) stays 0. The map
//! lives only in the recorder's memory and is never written.
use std::collections::HashMap;
use std::io::{Read, Write};

use super::{Damage, Pointers, TraceReader, TraceWriter};
use crate::event::{EventKind, Record};

/// Replaces kernel pointers by identifiers, consistently over one trace.
#[derive(Default)]
pub struct PointerIds {
    locks: HashMap<u64, u64>,
    handles: HashMap<u64, u64>,
}

fn id(map: &mut HashMap<u64, u64>, p: &mut u64) {
    if *p != 0 {
        let next = map.len() as u64 + 1;
        *p = *map.entry(*p).or_insert(next);
    }
}

impl PointerIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites the pointer-valued fields of `kind` in place.
    pub fn hide(&mut self, kind: &mut EventKind) {
        match kind {
            EventKind::Contention { lock_addr, .. } => id(&mut self.locks, lock_addr),
            EventKind::TransHandleStart { handle }
            | EventKind::TransHandleEnd { handle }
            | EventKind::CommitTransactionCall { handle, .. } => id(&mut self.handles, handle),
            _ => {}
        }
    }

    /// Distinct locks and handles seen.
    pub fn counts(&self) -> (usize, usize) {
        (self.locks.len(), self.handles.len())
    }
}

/// Copies the trace in `reader` to `w` with every kernel pointer replaced by an identifier and
/// the header saying so ([`Pointers::Ids`]); a trace that already has identifiers is copied
/// unchanged. Everything before any damage is copied (the copy is then whole); the damage is
/// returned.
pub fn hide_pointers<R: Read, W: Write>(
    mut reader: TraceReader<R>,
    w: W,
) -> std::io::Result<(W, Option<Damage>)> {
    let mut header = reader.header().clone();
    let hide = header.pointers == Pointers::Raw;
    header.pointers = Pointers::Ids;
    let mut out = TraceWriter::new(w, &header)?;
    let mut ids = PointerIds::new();
    for mut rec in reader.by_ref() {
        if let (true, Record::Event(e)) = (hide, &mut rec) {
            ids.hide(&mut e.kind);
        }
        out.write(&rec)?;
    }
    Ok((out.finish()?, reader.damage().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LockRole;

    #[test]
    fn first_seen_is_one_and_identity_is_kept() {
        let mut ids = PointerIds::new();
        let mut got = Vec::new();
        for a in [
            0xffff_8881_0000_1000u64,
            0xffff_8881_0000_2000,
            0xffff_8881_0000_1000,
            0,
        ] {
            let mut k = EventKind::Contention {
                role: LockRole::OtherBtrfs,
                lock_addr: a,
                flags: 1,
                ret: 0,
                wait_ns: 5,
            };
            ids.hide(&mut k);
            if let EventKind::Contention { lock_addr, .. } = k {
                got.push(lock_addr);
            }
        }
        assert_eq!(got, [1, 2, 1, 0]);
        let mut h = EventKind::TransHandleStart {
            handle: 0xffff_8881_0000_1000,
        };
        ids.hide(&mut h);
        assert_eq!(h, EventKind::TransHandleStart { handle: 1 }, "own series");
    }
}
