//! Raw ring-buffer records (eBPF → user space). Fixed `#[repr(C)]` layout, no pointers.
//!
//! The btrfs tracepoint programs do not parse the kernel's tracepoint record: they copy its
//! first [`RAW_DATA_LEN`] bytes verbatim (up to the record's end; word 0, the `common_*`
//! fields, stays 0), and user space decodes the fields with the offsets it read from tracefs
//! `format` files at start-up (docs/design.md, "Recording"). That keeps the in-kernel work to a few
//! direct loads per event and keeps kernel-version knowledge out of the eBPF object.

/// Bytes of the tracepoint record copied per btrfs event. The largest record we take,
/// `add_delayed_data_ref`, is 96 bytes on 6.x (kernel-delayed-refs.md §5.2).
pub const RAW_DATA_LEN: usize = 104;
/// Kernel stack frames kept for a contended lock (platform.md: ~20 frames are needed to see
/// the delayed-ref caller behind an extent-tree search; 8 are too few).
pub const STACK_DEPTH: usize = 20;

/// What produced a [`RawEvent`]. Values are only ever appended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawKind {
    AddDelayedTreeRef = 1,
    AddDelayedDataRef = 2,
    AddDelayedRefHead = 3,
    RunDelayedTreeRef = 4,
    RunDelayedDataRef = 5,
    RunDelayedRefHead = 6,
    TransactionCommit = 7,
    TreeLock = 8,
    /// A paired `lock:contention_begin`/`end` interval of a btrfs task (payload: [`RawContention`]).
    Contention = 9,
    /// kprobe + kretprobe on `btrfs_run_delayed_refs` (payload: [`RawRunCall`]).
    RunDelayedRefsCall = 10,
    /// kretprobe on `start_transaction` (payload: [`RawRunCall`], `arg` = handle).
    TransHandleStart = 11,
    /// kprobe on `__btrfs_end_transaction` (payload: [`RawRunCall`], `arg` = handle).
    TransHandleEnd = 12,
    /// kprobe + kretprobe on `btrfs_commit_transaction` (payload: [`RawRunCall`]).
    CommitTransactionCall = 13,
}

impl RawKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::AddDelayedTreeRef,
            2 => Self::AddDelayedDataRef,
            3 => Self::AddDelayedRefHead,
            4 => Self::RunDelayedTreeRef,
            5 => Self::RunDelayedDataRef,
            6 => Self::RunDelayedRefHead,
            7 => Self::TransactionCommit,
            8 => Self::TreeLock,
            9 => Self::Contention,
            10 => Self::RunDelayedRefsCall,
            11 => Self::TransHandleStart,
            12 => Self::TransHandleEnd,
            13 => Self::CommitTransactionCall,
            _ => return None,
        })
    }

    /// True for the btrfs tracepoints, whose record ([`RawEvent`]) carries a copy of the
    /// kernel's tracepoint data; the others carry their own payload.
    pub const fn is_btrfs_tracepoint(self) -> bool {
        match self {
            Self::AddDelayedTreeRef
            | Self::AddDelayedDataRef
            | Self::AddDelayedRefHead
            | Self::RunDelayedTreeRef
            | Self::RunDelayedDataRef
            | Self::RunDelayedRefHead
            | Self::TransactionCommit
            | Self::TreeLock => true,
            Self::Contention
            | Self::RunDelayedRefsCall
            | Self::TransHandleStart
            | Self::TransHandleEnd
            | Self::CommitTransactionCall => false,
        }
    }
}

/// The common start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high half, tid in the low half.
    pub pid_tgid: u64,
    pub cpu: u32,
    /// A [`RawKind`] value; it says which record type follows.
    pub kind: u32,
    /// `bpf_get_current_comm()`.
    pub comm: [u8; 16],
}

/// A btrfs tracepoint record: header + the tracepoint's raw bytes from offset 0. Records are
/// kept small: every byte costs ring-buffer bandwidth and cache misses in the kernel.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEvent {
    pub hdr: RawHeader,
    pub data: [u8; RAW_DATA_LEN],
}

/// [`RawKind::Contention`] record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawContentionEvent {
    pub hdr: RawHeader,
    pub c: RawContention,
}

/// [`RawKind::RunDelayedRefsCall`] record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawRunCallEvent {
    pub hdr: RawHeader,
    pub c: RawRunCall,
}

/// Payload of [`RawKind::Contention`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawContention {
    pub lock_addr: u64,
    /// `LCB_F_*` flags of the first `contention_begin`.
    pub flags: u32,
    /// `ret` of `contention_end` (0 acquired, negative errno otherwise).
    pub ret: i32,
    pub begin_ns: u64,
    pub wait_ns: u64,
    /// Number of valid entries in `stack`.
    pub nframes: u32,
    pub _pad: u32,
    /// Kernel return addresses, innermost first.
    pub stack: [u64; STACK_DEPTH],
}

/// Payload of [`RawKind::RunDelayedRefsCall`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawRunCall {
    /// Second argument: `unsigned long count` (≤ 6.6) or `u64 min_bytes` (6.7+), §6.
    pub arg: u64,
    pub ret: i64,
    pub entry_ns: u64,
    pub duration_ns: u64,
}

/// Value of the in-kernel map that holds an open contention interval, keyed by [`WaitKey`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WaitStart {
    pub begin_ns: u64,
    pub flags: u32,
    pub nframes: u32,
    pub stack: [u64; STACK_DEPTH],
}

/// (task, lock) key of an open contention interval (spec §5.6 pairing rule).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WaitKey {
    pub lock_addr: u64,
    pub tid: u32,
    pub _pad: u32,
}

/// Indices of the per-CPU counters array `COUNTERS`.
pub mod counter {
    /// Ring buffer reservation failures (lost events).
    pub const LOST: u32 = 0;
    /// `contention_begin` events whose stack had no btrfs frame (filtered in the kernel).
    pub const CONTENTION_NOT_BTRFS: u32 = 1;
    /// `btrfs_tree_lock` events for trees other than the extent tree (owner != 2).
    pub const TREE_LOCK_NOT_EXTENT: u32 = 2;
    /// btrfs events of a filesystem other than the `--mount` one.
    pub const OTHER_FS: u32 = 3;
    /// Open contention intervals that could not be stored (map full).
    pub const WAIT_MAP_FULL: u32 = 4;
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::RawContentionEvent {}
    unsafe impl aya::Pod for super::RawRunCallEvent {}
    unsafe impl aya::Pod for super::WaitStart {}
    unsafe impl aya::Pod for super::WaitKey {}
}
