//! The tracepoint records refgate decodes, as named layouts: one struct per record class
//! whose fields are read from the tracefs `format` file by name at start-up, so that no field
//! offset is baked in for one kernel (docs/design.md "Recording"). Adding a field is one line in its
//! struct's [`tracepoint_layout!`] and its use in the decoder.
use std::{marker::PhantomData, path::Path};

use anyhow::Result;
use refgate_common::raw::RAW_DATA_LEN;

use super::tracefs::Layout as Format;

/// A value of a tracepoint field, as the kernel writes it (native endian).
pub trait Scalar: Sized {
    /// Its size in the record, which the `format` file must agree with.
    const SIZE: usize;
    fn from_ne(bytes: &[u8]) -> Self;
}

impl Scalar for u64 {
    const SIZE: usize = 8;
    fn from_ne(b: &[u8]) -> Self {
        u64::from_ne_bytes(b.try_into().expect("8 bytes"))
    }
}
impl Scalar for i32 {
    const SIZE: usize = 4;
    fn from_ne(b: &[u8]) -> Self {
        i32::from_ne_bytes(b.try_into().expect("4 bytes"))
    }
}
impl Scalar for u32 {
    const SIZE: usize = 4;
    fn from_ne(b: &[u8]) -> Self {
        u32::from_ne_bytes(b.try_into().expect("4 bytes"))
    }
}
impl Scalar for [u8; 16] {
    const SIZE: usize = 16;
    fn from_ne(b: &[u8]) -> Self {
        b.try_into().expect("16 bytes")
    }
}

/// One field of a tracepoint record: where it is (from tracefs) and what it holds.
#[derive(Debug)]
pub struct Field<T> {
    pub offset: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Field<T> {}

impl<T: Scalar> Field<T> {
    /// The field `name` of tracepoint `tp`, which must be `T`-sized and lie within the
    /// [`RAW_DATA_LEN`] bytes the eBPF side copies.
    pub fn find(format: &Format, tp: &str, name: &str) -> Result<Self> {
        let f = format.field(tp, name, T::SIZE, RAW_DATA_LEN)?;
        Ok(Field {
            offset: f.offset,
            _t: PhantomData,
        })
    }

    /// The field's value in a copied record (`RAW_DATA_LEN` bytes, so always in bounds).
    pub fn read(&self, record: &[u8]) -> T {
        T::from_ne(&record[self.offset..self.offset + T::SIZE])
    }
}

/// Declares a tracepoint layout: a struct of [`Field`]s, each found in the `format` file by
/// its own name (or by the name after `=`), and `from_format` to build it.
macro_rules! tracepoint_layout {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty $(= $tracefs:literal)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Field<$ty>, )*
        }

        impl $name {
            /// Finds every field by name in tracepoint `tp`'s `format`.
            pub fn from_format(format: &Format, tp: &str) -> Result<Self> {
                Ok($name {
                    $( $field: Field::find(
                        format,
                        tp,
                        tracepoint_layout!(@name $field $($tracefs)?),
                    )?, )*
                })
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $tracefs:literal) => { $tracefs };
}

tracepoint_layout! {
    /// `btrfs:add_delayed_tree_ref` and `btrfs:run_delayed_tree_ref` (spec §5.1).
    pub struct TreeRefLayout {
        fsid: [u8; 16],
        bytenr: u64,
        num_bytes: u64,
        action: i32,
        parent: u64,
        ref_root: u64,
        level: i32,
        ref_type: i32 = "type",
        seq: u64,
    }
}

tracepoint_layout! {
    /// `btrfs:add_delayed_data_ref` and `btrfs:run_delayed_data_ref` (spec §5.2).
    pub struct DataRefLayout {
        fsid: [u8; 16],
        bytenr: u64,
        num_bytes: u64,
        action: i32,
        parent: u64,
        ref_root: u64,
        owner: u64,
        offset: u64,
        ref_type: i32 = "type",
        seq: u64,
    }
}

tracepoint_layout! {
    /// `btrfs:add_delayed_ref_head` and `btrfs:run_delayed_ref_head` (spec §5.3).
    pub struct RefHeadLayout {
        fsid: [u8; 16],
        bytenr: u64,
        num_bytes: u64,
        action: i32,
        is_data: i32,
    }
}

tracepoint_layout! {
    /// `btrfs:btrfs_transaction_commit`.
    pub struct CommitLayout {
        fsid: [u8; 16],
        generation: u64,
        root_objectid: u64,
    }
}

tracepoint_layout! {
    /// `btrfs:btrfs_tree_lock`.
    pub struct TreeLockLayout {
        fsid: [u8; 16],
        block: u64,
        generation: u64,
        diff_ns: u64,
        /// Compared in the kernel as a whole 8-byte word: must be 8-byte aligned.
        owner: u64,
        is_log_tree: i32,
    }
}

tracepoint_layout! {
    /// `lock:contention_begin` (the eBPF side reads it; user space only passes offsets on).
    pub struct ContentionBeginLayout {
        lock_addr: u64,
        flags: u32,
    }
}

tracepoint_layout! {
    /// `lock:contention_end`.
    pub struct ContentionEndLayout {
        ret: i32,
    }
}

/// Every layout refgate reads, from this kernel's tracefs.
#[derive(Clone, Debug)]
pub struct Layouts {
    /// Where every btrfs record has its filesystem (they are checked to agree).
    pub fsid: Field<[u8; 16]>,
    pub tree: TreeRefLayout,
    pub data: DataRefLayout,
    pub head: RefHeadLayout,
    pub commit: CommitLayout,
    pub tree_lock: TreeLockLayout,
    /// (tracepoint name, end of its record's last field): how many bytes the eBPF program
    /// may load from the record (the kernel refuses a program that could read further).
    record_ends: Vec<(&'static str, u32)>,
    /// The lock tracepoints' fields, or why they cannot be read on this kernel (they came
    /// with Linux 5.19): recording then goes on without lock waits.
    pub lock: std::result::Result<LockLayout, String>,
}

/// Offsets of the `lock:contention_begin/end` fields the eBPF side reads, and where each
/// record ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockLayout {
    pub addr: u32,
    pub flags: u32,
    pub ret: u32,
    pub end_begin: u32,
    pub end_end: u32,
}

impl LockLayout {
    fn read(tracefs: &Path) -> Result<LockLayout> {
        let (b, e) = (
            Format::read(tracefs, "lock", "contention_begin")?,
            Format::read(tracefs, "lock", "contention_end")?,
        );
        let begin = ContentionBeginLayout::from_format(&b, "lock:contention_begin")?;
        let end = ContentionEndLayout::from_format(&e, "lock:contention_end")?;
        let l = LockLayout {
            addr: begin.lock_addr.offset as u32,
            flags: begin.flags.offset as u32,
            ret: end.ret.offset as u32,
            end_begin: b.end(),
            end_end: e.end(),
        };
        // The eBPF side reads them as an aligned word and aligned halves.
        if !l.addr.is_multiple_of(8) || !l.flags.is_multiple_of(4) || !l.ret.is_multiple_of(4) {
            anyhow::bail!("their fields are not aligned as refgate reads them: {l:?}");
        }
        Ok(l)
    }
}

impl Layouts {
    /// Reads every layout from tracefs and checks sizes and bounds against what refgate copies.
    pub fn read(tracefs: &Path) -> Result<Layouts> {
        let get = |tp: &str| Format::read(tracefs, "btrfs", tp);
        let t = get("add_delayed_tree_ref")?;
        let tree = TreeRefLayout::from_format(&t, "btrfs:add_delayed_tree_ref")?;
        let d = get("add_delayed_data_ref")?;
        let data = DataRefLayout::from_format(&d, "btrfs:add_delayed_data_ref")?;
        let h = get("add_delayed_ref_head")?;
        let head = RefHeadLayout::from_format(&h, "btrfs:add_delayed_ref_head")?;
        let mut record_ends = vec![
            ("add_delayed_tree_ref", t.end()),
            ("add_delayed_data_ref", d.end()),
            ("add_delayed_ref_head", h.end()),
        ];
        // The run-side records share the add-side classes (spec §5.1–5.3); make sure.
        for (tp, want) in [
            ("run_delayed_tree_ref", &t),
            ("run_delayed_data_ref", &d),
            ("run_delayed_ref_head", &h),
        ] {
            let l = get(tp)?;
            if l.fields != want.fields {
                anyhow::bail!(
                    "tracepoint btrfs:{tp} has a layout different from its add-side twin on this kernel; refgate does not know how to read it"
                );
            }
            record_ends.push((tp, l.end()));
        }
        let c = get("btrfs_transaction_commit")?;
        let commit = CommitLayout::from_format(&c, "btrfs:btrfs_transaction_commit")?;
        let k = get("btrfs_tree_lock")?;
        let tree_lock = TreeLockLayout::from_format(&k, "btrfs:btrfs_tree_lock")?;
        let fsid = tree.fsid;
        for other in [commit.fsid, tree_lock.fsid, head.fsid, data.fsid] {
            if other.offset != fsid.offset {
                anyhow::bail!("btrfs tracepoints disagree on where `fsid` is on this kernel");
            }
        }
        // The eBPF side compares these as whole 8-byte words of the record.
        let (fsid_at, owner_at) = (fsid.offset, tree_lock.owner.offset);
        if fsid_at % 8 != 0 || owner_at % 8 != 0 {
            anyhow::bail!(
                "on this kernel `fsid` (offset {fsid_at}) or btrfs_tree_lock's `owner` (offset \
                 {owner_at}) is not 8-byte aligned; refgate's filters cannot read it"
            );
        }
        let lock = LockLayout::read(tracefs).map_err(|e| {
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
            record_ends,
            lock,
        })
    }

    pub fn fsid_offset(&self) -> usize {
        self.fsid.offset
    }
    pub fn tree_lock_owner_offset(&self) -> usize {
        self.tree_lock.owner.offset
    }
    /// (btrfs tracepoint, end of its record's last field), for every btrfs tracepoint taken.
    pub fn record_ends(&self) -> &[(&'static str, u32)] {
        &self.record_ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, path::PathBuf};

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
    fn fields_are_found_by_their_tracefs_names() {
        let l = Layouts::read(&fixture()).unwrap();
        // From the 6.18 format files: `type` is read into ref_type, diff_ns is the wait.
        assert_eq!((l.data.bytenr.offset, l.data.seq.offset), (24, 88));
        assert_eq!(l.data.ref_type.offset, 80);
        assert_eq!(l.tree_lock.diff_ns.offset, 56);
        assert_eq!(l.tree_lock.is_log_tree.offset, 72);
        let mut rec = [0u8; RAW_DATA_LEN];
        rec[24..32].copy_from_slice(&0x1234_5678_9abc_u64.to_ne_bytes());
        rec[80..84].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(l.data.bytenr.read(&rec), 0x1234_5678_9abc);
        assert_eq!(l.data.ref_type.read(&rec), -2);
    }

    #[test]
    fn a_missing_or_resized_field_is_named() {
        let d = edited(|events| {
            let f = events.join("btrfs/add_delayed_data_ref/format");
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, text.replace("u64 owner;", "u64 root;")).unwrap();
        });
        let err = format!("{:#}", Layouts::read(d.path()).err().unwrap());
        assert!(
            err.contains("btrfs:add_delayed_data_ref has no field `owner`"),
            "{err}"
        );
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
