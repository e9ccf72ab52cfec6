//! refgate's eBPF programs. Nothing else lives here: the decoding, pairing with tracefs
//! `format` offsets and every decision that needs kernel-version knowledge happen in user space.
//!
//! * One tracepoint program per btrfs delayed-ref tracepoint: it loads the raw tracepoint record
//!   (direct context loads, bounded by the record length the loader read from tracefs) and
//!   copies it into the ring buffer after the cheap filters (filesystem, extent-tree owner).
//! * `lock:contention_begin/end`: a begin whose kernel stack holds a btrfs frame opens an
//!   interval keyed by (task, lock) (kernel-delayed-refs.md §5.6 pairing rule); the matching end
//!   emits one record with the wait time and the stack, so user space can name the lock's role.
//!   Contention with no btrfs frame on the stack is only counted.
//! * kprobe/kretprobe on `btrfs_run_delayed_refs`, attached only where the kernel has kprobes.
//!
//! Lost events are never silent: every failed ring-buffer reservation bumps a per-CPU counter.
#![no_std]
#![no_main]

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use aya_log_ebpf::warn;
use refgate_common::raw::{
    RAW_DATA_LEN, RawContentionEvent, RawEvent, RawHeader, RawKind, RawRunCallEvent, STACK_DEPTH,
    WaitKey, WaitStart, counter,
};

// ---- configuration, written by the loader before the programs are loaded ----
// Offsets come from tracefs `format` files (never baked in, docs/design.md "Recording").

/// 1 when `--mount` restricts recording to one filesystem.
#[unsafe(no_mangle)]
static FILTER_FSID_ON: u8 = 0;
#[unsafe(no_mangle)]
static FILTER_FSID_LO: u64 = 0;
#[unsafe(no_mangle)]
static FILTER_FSID_HI: u64 = 0;
/// Offset of `fsid` in every btrfs record we take (8 on 4.19+ kernels; a multiple of 8).
#[unsafe(no_mangle)]
static FSID_OFF: u32 = 8;
/// Offset of `owner` in `btrfs_tree_lock` (a multiple of 8).
#[unsafe(no_mangle)]
static TREE_LOCK_OWNER_OFF: u32 = 64;
/// Offsets of `lock_addr`, `flags` (begin) and `ret` (end) in the lock records, and where each
/// record ends (tracefs `format`).
#[unsafe(no_mangle)]
static LOCK_ADDR_OFF: u32 = 8;
#[unsafe(no_mangle)]
static LOCK_FLAGS_OFF: u32 = 16;
#[unsafe(no_mangle)]
static LOCK_RET_OFF: u32 = 16;
#[unsafe(no_mangle)]
static END_CONTENTION_BEGIN: u32 = 0;
#[unsafe(no_mangle)]
static END_CONTENTION_END: u32 = 0;
/// Kernel stack frames taken at `contention_begin` (at most [`STACK_DEPTH`]).
#[unsafe(no_mangle)]
static STACK_FRAMES: u32 = STACK_DEPTH as u32;
/// Kernel text range of btrfs (built in: the contiguous fs/btrfs text; module: btrfs.ko),
/// from /proc/kallsyms. A contended lock is btrfs's if a return address on the stack is in it.
#[unsafe(no_mangle)]
static BTRFS_TEXT_LO: u64 = 0;
#[unsafe(no_mangle)]
static BTRFS_TEXT_HI: u64 = 0;

/// BTRFS_EXTENT_TREE_OBJECTID: only extent-tree block locks matter here (spec §5.5).
const EXTENT_TREE_OBJECTID: u64 = 2;

#[inline(always)]
fn cfg<T: Copy>(v: &T) -> T {
    // Globals are patched at load time; a volatile read stops the compiler folding the default.
    unsafe { core::ptr::read_volatile(v) }
}

// ---- maps ----
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Open contention intervals of btrfs tasks.
/// Preallocated: an insert then takes an element off a per-CPU free list instead of allocating
/// (16384 elements of ~240 bytes with the hash overhead ≈ 4 MiB of kernel memory while
/// recording).
#[map]
static WAITS: HashMap<WaitKey, WaitStart> = HashMap::with_max_entries(16384, 0);

/// The task (tid + 1) of this CPU's previous record: the comm is sent when it changes.
#[map]
static LAST_TID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for the stack of a `contention_begin` (too big for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<WaitStart> = PerCpuArray::with_max_entries(1, 0);

/// Entry time and argument of an in-flight probed call, keyed by `(function << 32) | tid`.
#[map]
static CALLS: HashMap<u64, [u64; 2]> = HashMap::with_max_entries(8192, 0);
const FN_RUN_DELAYED_REFS: u64 = 1;
const FN_COMMIT: u64 = 2;
const FN_RUN_DELAYED_REFS_FENTRY: u64 = 3;

#[inline(always)]
fn bump(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// Bytes waiting in the ring buffer above which a submit wakes the reader.
const WAKEUP_BYTES: u64 = 2 * 1024 * 1024;

/// Reserves a ring-buffer record of type `T` (which starts with a [`RawHeader`]) and fills the
/// header; counts a loss on failure.
#[inline(always)]
fn begin_record<T: 'static>(kind: RawKind) -> Option<RingBufEntry<T>> {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        bump(counter::LOST);
        return None;
    };
    let hdr = entry.as_mut_ptr() as *mut RawHeader;
    let pid_tgid = bpf_get_current_pid_tgid();
    // The comm goes out once per task, not per event (user space keeps the first one it sees):
    // only when this CPU's previous record was another task's. +1 so that tid 0 (an
    // interrupt on the idle task) differs from the map's initial 0.
    let tid1 = (pid_tgid as u32).wrapping_add(1);
    let comm = match LAST_TID.get_ptr_mut(0) {
        Some(last) if unsafe { *last } == tid1 => [0; 16],
        Some(last) => {
            unsafe { *last = tid1 };
            bpf_get_current_comm().unwrap_or([0; 16])
        }
        None => bpf_get_current_comm().unwrap_or([0; 16]),
    };
    unsafe {
        (*hdr).ts_ns = bpf_ktime_get_ns();
        (*hdr).pid_tgid = pid_tgid;
        (*hdr).cpu = bpf_get_smp_processor_id();
        (*hdr).kind = kind as u32;
        (*hdr).comm = comm;
    }
    Some(entry)
}

/// Submits without waking the reader (which drains on a short timer) unless the buffer is
/// filling up. The default adaptive wake-up sends a self-IPI (irq_work) for the first record
/// after the reader caught up — i.e. for most bursts — which cost ~1-2 µs per burst here.
#[inline(always)]
fn submit<T>(entry: RingBufEntry<T>) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// What a tracepoint program returns. Non-zero lets the kernel pass the event on to the other
/// perf events of the same tracepoint (`perf_trace_run_bpf_submit` drops it for everyone on 0):
/// refgate must not blind `perf` or other tracers running beside it.
const PASS: u32 = 1;

/// Words of a btrfs tracepoint record refgate keeps (`RAW_DATA_LEN` bytes).
const RAW_WORDS: usize = RAW_DATA_LEN / 8;

/// Loads the tracepoint record's first `end` bytes as words, zero-filling the rest.
///
/// `end` is the end of the record's last field, written by the loader from the tracefs
/// `format` file into a read-only global. These are direct context loads at constant offsets:
/// the verifier folds the read-only `end` into a constant, drops the branches past it, and so
/// records a maximum context offset within the record, which the kernel checks at attach time
/// (a program that could read past the record is refused with EACCES). A direct load costs a
/// nanosecond; the `bpf_probe_read_kernel` it replaces cost 20-50 ns per event here. Word 0
/// (the `common_*` fields) is not readable by tracepoint programs and not needed: it stays 0.
#[inline(always)]
fn load_record(ctx: &TracePointContext, end: u32) -> [u64; RAW_WORDS] {
    let src = ctx.as_ptr() as *const u8;
    macro_rules! words {
        ($($k:literal)*) => { [0, $(
            if ($k + 1) * 8 <= end {
                unsafe { core::ptr::read_volatile(src.add($k * 8) as *const u64) }
            } else if $k * 8 + 4 <= end {
                // A record may end on a 4-byte field (btrfs_tree_lock's is_log_tree).
                unsafe { core::ptr::read_volatile(src.add($k * 8) as *const u32) as u64 }
            } else {
                0
            },
        )*] };
    }
    words!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// The record word at byte offset `off` (a load-time multiple of 8), 0 past the copy.
#[inline(always)]
fn word_at(buf: &[u64; RAW_WORDS], off: u32) -> u64 {
    buf.get(off as usize / 8).copied().unwrap_or(0)
}

/// The 4-byte field at byte offset `off` (a load-time multiple of 4) of a loaded record.
/// Little-endian: the low half of a word is its first four bytes (bpfel, the only target
/// refgate-ebpf is built for).
#[inline(always)]
fn u32_at(buf: &[u64; RAW_WORDS], off: u32) -> u32 {
    (word_at(buf, off & !7) >> ((off & 4) * 8)) as u32
}

/// Common path of the btrfs tracepoints: load the record, filter, then copy it verbatim.
#[inline(always)]
fn btrfs_event(ctx: &TracePointContext, kind: RawKind, end: u32) {
    let buf = load_record(ctx, end);
    if cfg(&FILTER_FSID_ON) != 0 {
        let off = cfg(&FSID_OFF);
        if word_at(&buf, off) != cfg(&FILTER_FSID_LO)
            || word_at(&buf, off + 8) != cfg(&FILTER_FSID_HI)
        {
            bump(counter::OTHER_FS);
            return;
        }
    }
    // Most btrfs_tree_lock events are of other trees (spec §5.5): counted, not recorded.
    if kind as u32 == RawKind::TreeLock as u32
        && word_at(&buf, cfg(&TREE_LOCK_OWNER_OFF)) != EXTENT_TREE_OBJECTID
    {
        bump(counter::TREE_LOCK_NOT_EXTENT);
        return;
    }
    let Some(mut entry) = begin_record::<RawEvent>(kind) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // `data` sits at offset 40 of an 8-aligned record, so it can be written as words.
    unsafe { *(core::ptr::addr_of_mut!((*ev).data) as *mut [u64; RAW_WORDS]) = buf };
    submit(entry);
}

/// Defines a tracepoint program by hand rather than with `#[tracepoint]`: aya-ebpf 0.2's
/// macro discards the function's value and always returns 0, which would hide every event of
/// the tracepoint from `perf` and other tracers (see [`PASS`]).
macro_rules! tracepoint_program {
    ($name:ident, $section:literal, $body:expr) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(ctx: *mut core::ffi::c_void) -> u32 {
            let ctx = TracePointContext::new(ctx);
            $body(&ctx);
            PASS
        }
    };
}

/// One btrfs tracepoint program and the global (`$end`) that holds its record's length.
macro_rules! btrfs_tracepoint {
    ($name:ident, $kind:expr, $end:ident) => {
        /// End of the tracepoint record's last field (tracefs `format`), set by the loader.
        #[unsafe(no_mangle)]
        static $end: u32 = 0;
        tracepoint_program!($name, "tracepoint", |ctx| btrfs_event(
            ctx,
            $kind,
            cfg(&$end)
        ));
    };
}

btrfs_tracepoint!(
    add_delayed_tree_ref,
    RawKind::AddDelayedTreeRef,
    END_ADD_DELAYED_TREE_REF
);
btrfs_tracepoint!(
    add_delayed_data_ref,
    RawKind::AddDelayedDataRef,
    END_ADD_DELAYED_DATA_REF
);
btrfs_tracepoint!(
    add_delayed_ref_head,
    RawKind::AddDelayedRefHead,
    END_ADD_DELAYED_REF_HEAD
);
btrfs_tracepoint!(
    run_delayed_tree_ref,
    RawKind::RunDelayedTreeRef,
    END_RUN_DELAYED_TREE_REF
);
btrfs_tracepoint!(
    run_delayed_data_ref,
    RawKind::RunDelayedDataRef,
    END_RUN_DELAYED_DATA_REF
);
btrfs_tracepoint!(
    run_delayed_ref_head,
    RawKind::RunDelayedRefHead,
    END_RUN_DELAYED_REF_HEAD
);
btrfs_tracepoint!(
    btrfs_transaction_commit,
    RawKind::TransactionCommit,
    END_BTRFS_TRANSACTION_COMMIT
);
btrfs_tracepoint!(btrfs_tree_lock, RawKind::TreeLock, END_BTRFS_TREE_LOCK);

// An empty program, attached beside `btrfs_tree_lock` only by `record --probe-cost`: its run
// time is the floor of BPF run-time statistics on this machine (the two clock reads around
// every run, and the call), which every refgate program pays too.
tracepoint_program!(probe_floor, "tracepoint", |_ctx| ());

tracepoint_program!(contention_begin, "tracepoint", contention_begin_inner);

#[inline(always)]
fn contention_begin_inner(ctx: &TracePointContext) {
    let rec = load_record(ctx, cfg(&END_CONTENTION_BEGIN));
    let key = WaitKey {
        lock_addr: word_at(&rec, cfg(&LOCK_ADDR_OFF)),
        tid: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    };
    // A mutex emits several begins before one end; the first opens the interval (§5.6).
    if unsafe { WAITS.get(&key) }.is_some() {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let frames = cfg(&STACK_FRAMES).min(STACK_DEPTH as u32);
    // bpf_get_stack zero-fills only up to the size it is given: with fewer frames than
    // STACK_DEPTH the tail keeps the previous walk's addresses unless cleared here.
    if frames < STACK_DEPTH as u32 {
        scratch.stack = [0; STACK_DEPTH];
    }
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            scratch.stack.as_mut_ptr().cast(),
            8 * frames,
            0,
        )
    };
    if n <= 0 {
        bump(counter::CONTENTION_NOT_BTRFS);
        return;
    }
    let (lo, hi) = (cfg(&BTRFS_TEXT_LO), cfg(&BTRFS_TEXT_HI));
    // Unwritten slots are zero, so scanning every slot is exact, and a constant trip count is
    // what the verifier can follow.
    let btrfs = scratch.stack.iter().any(|&ip| ip >= lo && ip < hi);
    if !btrfs {
        bump(counter::CONTENTION_NOT_BTRFS);
        return;
    }
    scratch.begin_ns = unsafe { bpf_ktime_get_ns() };
    scratch.flags = u32_at(&rec, cfg(&LOCK_FLAGS_OFF));
    scratch.nframes = (n as u32 / 8).min(STACK_DEPTH as u32);
    if WAITS.insert(&key, &*scratch, 0).is_err() {
        bump(counter::WAIT_MAP_FULL);
        warn!(
            ctx,
            "refgate: contention interval map full, interval dropped"
        );
    }
}

tracepoint_program!(contention_end, "tracepoint", contention_end_inner);

#[inline(always)]
fn contention_end_inner(ctx: &TracePointContext) {
    let rec = load_record(ctx, cfg(&END_CONTENTION_END));
    let lock_addr = word_at(&rec, cfg(&LOCK_ADDR_OFF));
    let key = WaitKey {
        lock_addr,
        tid: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    };
    // Non-btrfs intervals were never stored: the common case is this cheap miss.
    let Some(start) = (unsafe { WAITS.get(&key) }) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(mut entry) = begin_record::<RawContentionEvent>(RawKind::Contention) {
        let c = unsafe { &mut (*entry.as_mut_ptr()).c };
        c.lock_addr = lock_addr;
        c.flags = start.flags;
        c.ret = u32_at(&rec, cfg(&LOCK_RET_OFF)) as i32;
        c.begin_ns = start.begin_ns;
        c.wait_ns = now.wrapping_sub(start.begin_ns);
        c.nframes = start.nframes;
        c._pad = 0;
        c.stack = start.stack;
        submit(entry);
    }
    let _ = WAITS.remove(&key);
}

/// Remembers a call's entry time and argument until its return.
#[inline(always)]
fn call_entry(func: u64, arg: u64) {
    let key = (func << 32) | (bpf_get_current_pid_tgid() & 0xffff_ffff);
    let _ = CALLS.insert(&key, &[unsafe { bpf_ktime_get_ns() }, arg], 0);
}

/// Emits one record for a call that returns `ret`, if its entry was seen.
#[inline(always)]
fn call_exit(func: u64, kind: RawKind, ret: i64) {
    let key = (func << 32) | (bpf_get_current_pid_tgid() & 0xffff_ffff);
    let Some(&[entry_ns, arg]) = (unsafe { CALLS.get(&key) }) else {
        return;
    };
    emit_call(
        kind,
        arg,
        ret,
        entry_ns,
        unsafe { bpf_ktime_get_ns() }.wrapping_sub(entry_ns),
    );
    let _ = CALLS.remove(&key);
}

#[inline(always)]
fn emit_call(kind: RawKind, arg: u64, ret: i64, entry_ns: u64, duration_ns: u64) {
    if let Some(mut entry) = begin_record::<RawRunCallEvent>(kind) {
        let c = unsafe { &mut (*entry.as_mut_ptr()).c };
        c.arg = arg;
        c.ret = ret;
        c.entry_ns = entry_ns;
        c.duration_ns = duration_ns;
        submit(entry);
    }
}

#[kprobe]
pub fn btrfs_run_delayed_refs(ctx: ProbeContext) -> u32 {
    // Second argument: `unsigned long count` (≤ 6.6) or `u64 min_bytes` (6.7+), spec §6.
    call_entry(FN_RUN_DELAYED_REFS, ctx.arg(1).unwrap_or(0));
    0
}

#[kretprobe]
pub fn btrfs_run_delayed_refs_ret(ctx: RetProbeContext) -> u32 {
    call_exit(
        FN_RUN_DELAYED_REFS,
        RawKind::RunDelayedRefsCall,
        ctx.ret::<i32>() as i64,
    );
    0
}

/// fentry/fexit twin of the kprobe pair, for kernels with BTF trampolines but no kprobes
/// (btrfs built in: aya 0.14 resolves the target in vmlinux BTF only).
#[fentry(function = "btrfs_run_delayed_refs")]
pub fn fentry_run_delayed_refs(ctx: FEntryContext) -> u32 {
    call_entry(FN_RUN_DELAYED_REFS_FENTRY, ctx.arg(1));
    0
}

#[fexit(function = "btrfs_run_delayed_refs")]
pub fn fexit_run_delayed_refs(ctx: FExitContext) -> u32 {
    let ret: i32 = ctx.arg(2);
    call_exit(
        FN_RUN_DELAYED_REFS_FENTRY,
        RawKind::RunDelayedRefsCall,
        ret as i64,
    );
    0
}

#[kprobe]
pub fn btrfs_commit_transaction(ctx: ProbeContext) -> u32 {
    call_entry(FN_COMMIT, ctx.arg(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn btrfs_commit_transaction_ret(ctx: RetProbeContext) -> u32 {
    call_exit(
        FN_COMMIT,
        RawKind::CommitTransactionCall,
        ctx.ret::<i32>() as i64,
    );
    0
}

/// `start_transaction` returns the handle, or an ERR_PTR.
#[kretprobe]
pub fn start_transaction_ret(ctx: RetProbeContext) -> u32 {
    let handle: u64 = ctx.ret();
    if handle as i64 >= -4095 && (handle as i64) < 0 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    emit_call(RawKind::TransHandleStart, handle, 0, now, 0);
    0
}

#[kprobe]
pub fn btrfs_end_transaction_entry(ctx: ProbeContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    emit_call(RawKind::TransHandleEnd, ctx.arg(0).unwrap_or(0), 0, now, 0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
