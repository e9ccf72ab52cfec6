//! The decoded event model: what a trace holds, independent of how the kernel delivered it.
//!
//! Field names follow the kernel's tracepoints (kernel-delayed-refs.md §5). Enum variants are
//! only ever appended (postcard encodes the variant index).
use serde::{Deserialize, Serialize};

/// `BTRFS_ADD_DELAYED_REF` … `BTRFS_UPDATE_DELAYED_HEAD` (spec §0.3), kept as the kernel's
/// integer so that an unknown future value survives a round trip.
pub type Action = u8;
pub const ADD_DELAYED_REF: Action = 1;
pub const DROP_DELAYED_REF: Action = 2;
pub const ADD_DELAYED_EXTENT: Action = 3;
pub const UPDATE_DELAYED_HEAD: Action = 4;

/// Backref key types (spec §0.3).
pub type RefType = u8;
pub const TREE_BLOCK_REF_KEY: RefType = 176;
pub const EXTENT_DATA_REF_KEY: RefType = 178;
pub const SHARED_BLOCK_REF_KEY: RefType = 182;
pub const SHARED_DATA_REF_KEY: RefType = 184;

/// Index into the trace's filesystem table (see [`Record::Filesystem`]).
pub type FsId = u16;

/// `btrfs:add_delayed_tree_ref` / `run_delayed_tree_ref` (spec §5.1).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeRef {
    pub fs: FsId,
    pub bytenr: u64,
    pub num_bytes: u64,
    pub action: Action,
    pub parent: u64,
    pub ref_root: u64,
    pub level: u8,
    pub ref_type: RefType,
    pub seq: u64,
}

/// `btrfs:add_delayed_data_ref` / `run_delayed_data_ref` (spec §5.2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataRef {
    pub fs: FsId,
    pub bytenr: u64,
    pub num_bytes: u64,
    pub action: Action,
    pub parent: u64,
    pub ref_root: u64,
    /// Inode number (the kernel's `owner`).
    pub owner: u64,
    pub offset: u64,
    pub ref_type: RefType,
    pub seq: u64,
}

/// `btrfs:add_delayed_ref_head` / `run_delayed_ref_head` (spec §5.3). `action` is 0 on run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefHead {
    pub fs: FsId,
    pub bytenr: u64,
    pub num_bytes: u64,
    pub action: Action,
    pub is_data: bool,
}

/// What a contended lock was, judged from the kernel stack captured at `contention_begin`.
/// Serialized (JSON) as its [`crate::names::lock`] id; in the trace (postcard) by index.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockRole {
    /// `delayed_refs->lock` (or a head's spinlock) taken by delayed-ref add/select/cleanup code.
    #[serde(rename = "delayed_refs_lock")]
    DelayedRefRoot,
    /// A delayed ref head's `mutex` (runner, `btrfs_lookup_extent_info`, …).
    #[serde(rename = "head_mutex")]
    HeadMutex,
    /// An extent-buffer lock taken while running delayed refs (extent-tree update).
    #[serde(rename = "extent_tree")]
    ExtentTree,
    /// Any other lock contended with btrfs code on the stack.
    #[serde(rename = "other_btrfs")]
    OtherBtrfs,
}

impl LockRole {
    pub const ALL: [LockRole; 4] = [
        LockRole::DelayedRefRoot,
        LockRole::HeadMutex,
        LockRole::ExtentTree,
        LockRole::OtherBtrfs,
    ];
    /// Its names ([`crate::names::lock`]): `id` for JSON and exports, `label` for people.
    pub const fn name(self) -> crate::names::Name {
        use crate::names::lock;
        match self {
            LockRole::DelayedRefRoot => lock::DELAYED_REFS_LOCK,
            LockRole::HeadMutex => lock::HEAD_MUTEX,
            LockRole::ExtentTree => lock::EXTENT_TREE,
            LockRole::OtherBtrfs => lock::OTHER_BTRFS,
        }
    }
}

/// The kinds of event, each with its payload.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum EventKind {
    AddTreeRef(TreeRef),
    AddDataRef(DataRef),
    AddRefHead(RefHead),
    RunTreeRef(TreeRef),
    RunDataRef(DataRef),
    RunRefHead(RefHead),
    /// `btrfs:btrfs_transaction_commit` (spec §5.4).
    TransactionCommit {
        fs: FsId,
        generation: u64,
        root_objectid: u64,
    },
    /// `btrfs:btrfs_tree_lock` of the extent tree (owner 2), fired after acquisition (§5.5).
    TreeLock {
        fs: FsId,
        block: u64,
        generation: u64,
        /// `diff_ns`: time spent acquiring.
        wait_ns: u64,
        owner: u64,
        is_log_tree: bool,
    },
    /// A `lock:contention_begin` … `contention_end` interval of one task on one lock (§5.6).
    /// The event's timestamp is the *end* of the wait.
    Contention {
        role: LockRole,
        lock_addr: u64,
        flags: u32,
        ret: i32,
        wait_ns: u64,
    },
    /// One `btrfs_run_delayed_refs` call (kprobe + kretprobe). The event's timestamp is the
    /// *entry*. `arg` is interpreted per [`crate::trace::RunArg`] in the header.
    RunDelayedRefsCall {
        arg: u64,
        ret: i64,
        duration_ns: u64,
    },
    /// A transaction handle handed out: kretprobe on `start_transaction` (all of
    /// `btrfs_start_transaction`, `btrfs_join_transaction`, … go through it). `handle` is the
    /// `struct btrfs_trans_handle *`; a nested start returns the handle the task already holds.
    TransHandleStart {
        handle: u64,
    },
    /// kprobe on `__btrfs_end_transaction` (every `btrfs_end_transaction*` variant).
    TransHandleEnd {
        handle: u64,
    },
    /// kprobe + kretprobe on `btrfs_commit_transaction`; the timestamp is the entry.
    CommitTransactionCall {
        handle: u64,
        ret: i64,
        duration_ns: u64,
    },
}

/// The tracepoints refgate records unfiltered (every event, whatever filesystem), as the
/// kernel names them: what `perf stat -e` can count beside a recording to check it.
pub const UNFILTERED_TRACEPOINTS: [&str; 7] = [
    "btrfs:add_delayed_tree_ref",
    "btrfs:add_delayed_data_ref",
    "btrfs:add_delayed_ref_head",
    "btrfs:run_delayed_tree_ref",
    "btrfs:run_delayed_data_ref",
    "btrfs:run_delayed_ref_head",
    "btrfs:btrfs_transaction_commit",
];

impl EventKind {
    /// The name of the probe the event came from, as the kernel names it.
    pub fn probe_name(&self) -> &'static str {
        match self {
            EventKind::AddTreeRef(_) => "btrfs:add_delayed_tree_ref",
            EventKind::AddDataRef(_) => "btrfs:add_delayed_data_ref",
            EventKind::AddRefHead(_) => "btrfs:add_delayed_ref_head",
            EventKind::RunTreeRef(_) => "btrfs:run_delayed_tree_ref",
            EventKind::RunDataRef(_) => "btrfs:run_delayed_data_ref",
            EventKind::RunRefHead(_) => "btrfs:run_delayed_ref_head",
            EventKind::TransactionCommit { .. } => "btrfs:btrfs_transaction_commit",
            EventKind::TreeLock { .. } => "btrfs:btrfs_tree_lock",
            EventKind::Contention { .. } => "lock:contention_begin/end",
            EventKind::RunDelayedRefsCall { .. } => "kprobe:btrfs_run_delayed_refs",
            EventKind::TransHandleStart { .. } => "kretprobe:start_transaction",
            EventKind::TransHandleEnd { .. } => "kprobe:__btrfs_end_transaction",
            EventKind::CommitTransactionCall { .. } => "kprobe:btrfs_commit_transaction",
        }
    }
}

/// One event of one task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub cpu: u32,
    pub tid: u32,
    pub kind: EventKind,
}

/// A task seen in the trace; written once, before its first event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
}

/// Cumulative recorder statistics. Written periodically and at the end; the last one read
/// wins, so a cut file still reports what it can.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ring buffer reservation failures per CPU (index = CPU).
    pub lost_per_cpu: Vec<u64>,
    /// `contention_begin` events filtered in the kernel because no btrfs frame was on the stack.
    pub contention_not_btrfs: u64,
    /// `btrfs_tree_lock` events of trees other than the extent tree.
    pub tree_lock_not_extent: u64,
    /// Events of other filesystems dropped by `--mount`.
    pub other_fs: u64,
    /// Contention intervals dropped because the in-kernel interval map was full. (A wait
    /// begun before the probes attached has no stored begin and is not counted anywhere.)
    pub unpaired_contention: u64,
}

impl Stats {
    /// The total over CPUs; saturating, since a corrupt record may hold anything (found by
    /// the inspect_summary fuzz target: `fuzz/regressions/inspect_summary/`).
    pub fn lost_events(&self) -> u64 {
        self.lost_per_cpu
            .iter()
            .fold(0u64, |a, &v| a.saturating_add(v))
    }
}

/// Everything a trace file holds after its header. Variants are only ever appended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Record {
    Event(Event),
    Task(Task),
    /// A btrfs filesystem seen in the trace: its table index and its fsid.
    Filesystem {
        id: FsId,
        fsid: [u8; 16],
    },
    Stats(Stats),
}

#[cfg(test)]
mod name_tests {
    use super::*;
    use crate::names::{action, ref_type};

    /// The names table's codes are the kernel's.
    #[test]
    fn action_and_ref_type_names_follow_the_kernels_codes() {
        assert_eq!(action::of(ADD_DELAYED_REF), Some(action::ADD_DELAYED_REF));
        assert_eq!(action::of(DROP_DELAYED_REF), Some(action::DROP_DELAYED_REF));
        assert_eq!(
            action::of(ADD_DELAYED_EXTENT),
            Some(action::ADD_DELAYED_EXTENT)
        );
        assert_eq!(
            action::of(UPDATE_DELAYED_HEAD),
            Some(action::UPDATE_DELAYED_HEAD)
        );
        assert_eq!(action::of(0), Some(action::NONE));
        assert_eq!(action::of(5), None);
        assert_eq!(
            ref_type::of(TREE_BLOCK_REF_KEY),
            Some(ref_type::TREE_BLOCK_REF)
        );
        assert_eq!(
            ref_type::of(EXTENT_DATA_REF_KEY),
            Some(ref_type::EXTENT_DATA_REF)
        );
        assert_eq!(
            ref_type::of(SHARED_BLOCK_REF_KEY),
            Some(ref_type::SHARED_BLOCK_REF)
        );
        assert_eq!(
            ref_type::of(SHARED_DATA_REF_KEY),
            Some(ref_type::SHARED_DATA_REF)
        );
        assert_eq!(ref_type::of(0), None);
    }

    /// JSON spells every role as the names table's id (the trace stores the index).
    #[test]
    fn lock_roles_serialize_as_the_names_tables_ids() {
        for r in LockRole::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name().id, "{r:?}");
        }
    }
}
