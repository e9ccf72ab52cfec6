//! The `trace.bin` file format: the contract between `refgate record` and `refgate replay`.
//!
//! # Layout
//!
//! ```text
//! offset 0   magic        8 bytes  "\x89REFGATE"
//! offset 8   version      u16 LE   FORMAT_VERSION (a reader rejects newer versions)
//! offset 10  header frame          frame whose payload is the postcard-encoded TraceHeader
//!            block frame …         frames whose payload is a block of records
//!            end frame             written by TraceWriter::finish
//!
//! frame   = len: u32 LE | crc: u32 LE | payload: len bytes
//!           crc = CRC32 (crc32fast, IEEE) of the 4 length bytes followed by the payload
//! payload = kind: u8 | …
//!           kind 0: records, stored:     the encoded records
//!           kind 1: records, LZ4 block:  raw length (postcard varint u32) | LZ4 block
//!           kind 2: end of trace         (nothing follows; no frame may follow)
//! ```
//!
//! A block holds many records, each a postcard value (see `wire.rs`) delta-encoded against the
//! previous record *of the same block*: timestamps as signed differences, bytenrs as signed
//! differences in 4 KiB units, tids and lock addresses interned per block. Every block starts
//! afresh, so a damaged frame costs only itself and what follows it. The writer ends a block when
//! it reaches [`BLOCK_TARGET`] bytes of encoded records or when [`TraceWriter::flush`] is called
//! (the recorder calls it about once a second), so memory is bounded and a crash loses at most
//! the unflushed tail.
//!
//! The reader checks every frame's length and CRC before decoding it and yields every record of
//! every intact frame; where it stops early it says exactly where and why ([`Damage`]). It never
//! panics, whatever the input (see `tests/trace_bad_input.rs`).
//!
//! # Compatibility
//!
//! Enum variants ([`crate::event::Record`], [`crate::event::EventKind`], the wire enum, the
//! header's enums) are only ever appended, and fields only ever appended to the end of
//! [`TraceHeader`]: postcard encodes a variant as its index and a struct as its fields in order,
//! and a reader ignores header bytes past the fields it knows. Anything else bumps
//! [`FORMAT_VERSION`], and a reader refuses a version newer than its own with an error saying to
//! upgrade.
//!
//! # Size and speed
//!
//! Measured by `cargo bench -p refgate-common --features std --bench trace` on a synthetic
//! two-million-event stream shaped like a small-file btrfs workload (mix, machine and method in
//! `refgate-common/BENCHMARKS.md`), one core of the 2-core development machine:
//!
//! | blocks                         | bytes/event | encode         | decode         |
//! |--------------------------------|------------:|---------------:|---------------:|
//! | delta-encoded postcard, stored |       14.63 | 18.9 M events/s | 13.0 M events/s |
//! | the same, LZ4 (what we write)  |        9.80 | 12.0 M events/s | 12.7 M events/s |
//!
//! against about 97 bytes per event for `perf record` of the same tracepoints. The delta
//! encoding alone meets the 16-bytes/event target, but narrowly; LZ4 (`lz4_flex`, pure Rust, its
//! checked decoder never panics) takes a third off for a third of the encode speed, still more
//! than twice the 5 M events/s target, so the writer compresses every block, and stores it as
//! is when LZ4 would not make it smaller (tiny blocks). zstd might compress harder but needs a C
//! build (zstd-sys); it was not measured, since LZ4 already meets both targets.
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::Record;

pub mod pointers;
pub mod summary;
mod wire;

/// First bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"\x89REFGATE";
/// The format version this code writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// The oldest format version this code reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// The writer ends a block once its encoded records reach this many bytes.
pub const BLOCK_TARGET: usize = 64 * 1024;
/// No frame is larger than this; a larger length field means corruption.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;
/// Zero bytes a reader appends to a header payload so that header fields added after the file
/// was written read as their defaults (one byte each suffices).
const HEADER_PAD: usize = 16;
/// Bytes before the header frame's payload: magic, version, frame length and CRC.
const PREFIX_LEN: u64 = 8 + 2 + 8;

const KIND_STORED: u8 = 0;
const KIND_LZ4: u8 = 1;
const KIND_END: u8 = 2;

/// Which clock `Event::ts_ns` counts. Variants are only ever appended. JSON: `"monotonic"`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`).
    #[default]
    Monotonic,
}

impl Clock {
    /// The clock's POSIX name, e.g. `CLOCK_MONOTONIC`.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Monotonic => "CLOCK_MONOTONIC",
        }
    }
}

/// How a probe is attached. Variants are only ever appended. JSON: its
/// [`crate::names::probe_kind`] id.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Tracepoint,
    Kprobe,
    Kretprobe,
    Fentry,
    Fexit,
    RawTracepoint,
}

impl ProbeKind {
    /// Its names ([`crate::names::probe_kind`]).
    pub const fn name(self) -> crate::names::Name {
        use crate::names::probe_kind as k;
        match self {
            ProbeKind::Tracepoint => k::TRACEPOINT,
            ProbeKind::Kprobe => k::KPROBE,
            ProbeKind::Kretprobe => k::KRETPROBE,
            ProbeKind::Fentry => k::FENTRY,
            ProbeKind::Fexit => k::FEXIT,
            ProbeKind::RawTracepoint => k::RAW_TRACEPOINT,
        }
    }
}

/// One probe the recorder tried to attach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProbeInfo {
    /// As the kernel names it, e.g. `btrfs:add_delayed_tree_ref`, `btrfs_run_delayed_refs`.
    pub name: String,
    pub kind: ProbeKind,
    pub attached: bool,
    /// Why it is not attached (empty when it is), e.g. "CONFIG_KPROBES is not set".
    pub note: String,
}

/// What the second argument of `btrfs_run_delayed_refs` means on the recorded kernel
/// (kernel-delayed-refs.md §6). Variants are only ever appended. JSON: `"unknown"`,
/// `"count"`, `"min_bytes"`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunArg {
    /// Not known (e.g. the kprobe was not attached).
    #[default]
    Unknown,
    /// `unsigned long count`: number of refs/heads to run (kernels up to 6.6).
    Count,
    /// `u64 min_bytes` (kernels from 6.7).
    MinBytes,
}

/// How the trace came to be: it is a recording, not a synthesis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The recorder's command line, one argument per element.
    pub command_line: Vec<String>,
    /// Whether the workload was refgate's own `--scratch` workload on a scratch filesystem.
    pub scratch: bool,
    /// Free text: what ran while recording.
    pub workload: String,
}

/// Everything known about a recording before its first record. Fields are only ever appended.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeader {
    /// `uname -r` of the recorded kernel.
    pub kernel_release: String,
    /// Every probe the recorder tried, attached or not.
    pub probes: Vec<ProbeInfo>,
    pub clock: Clock,
    /// Possible CPUs on the recorded machine (the index range of `Event::cpu`).
    pub cpu_count: u32,
    /// Version of the refgate that recorded.
    pub tool_version: String,
    pub hostname: String,
    /// Wall-clock start of the recording, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    pub provenance: Provenance,
    /// Meaning of `RunDelayedRefsCall::arg`.
    pub run_arg: RunArg,
    /// The filesystem's nodesize, if known.
    pub nodesize: Option<u32>,
    /// What `lock_addr` and the transaction `handle`s hold. Absent from traces recorded before
    /// refgate hid kernel pointers, which read as [`Pointers::Raw`] (they hold raw addresses).
    pub pointers: Pointers,
}

/// What the pointer-valued fields of events (`Contention::lock_addr`, the transaction
/// `handle`s) hold. Variants are only ever appended; variant 0 is what a header without this
/// field reads as. JSON: `"raw"`, `"ids"`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pointers {
    /// Raw kernel addresses: `refgate record --keep-kernel-pointers`, and every trace recorded
    /// before refgate replaced them. They help defeat KASLR: do not publish such a trace.
    #[default]
    Raw,
    /// Opaque per-trace identifiers, numbered in order of first appearance (1, 2, …), one
    /// series for locks and one for handles (0 stays 0). The replay needs identity only.
    Ids,
}

impl Pointers {
    /// A line for `inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            Pointers::Raw => {
                "RAW KERNEL ADDRESSES (lock addresses, transaction handles): they help defeat \
                 KASLR, do not publish this trace (`refgate record` without \
                 --keep-kernel-pointers writes identifiers instead)"
            }
            Pointers::Ids => {
                "lock addresses and transaction handles are per-trace identifiers (1, 2, … in \
                 order of first appearance), not kernel addresses"
            }
        }
    }
}

/// Why a trace could not be opened or read to its end. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The OS refused to open or read the file. The message names the cause; it is not also
    /// the error's `source`, so `{:#}` does not print it twice.
    #[error("cannot read {name}: {cause}")]
    Io { name: String, cause: io::Error },
    #[error(
        "{name} is a directory, not a trace: give the path of a trace file (`refgate record` \
         writes trace.bin by default, e.g. {name}/trace.bin)"
    )]
    IsDirectory { name: String },
    #[error(
        "{name} is empty: the recording produced nothing; re-run `refgate record` and check its \
         messages for why it stopped before writing the trace header"
    )]
    Empty { name: String },
    #[error(
        "{name} is not a refgate trace (it starts with {found}, not the refgate magic \
         \"\\x89REFGATE\"); pass a file written by `refgate record`"
    )]
    Foreign { name: String, found: String },
    #[error(
        "{name} was written by a newer refgate (format v{found}); this refgate reads up to \
         v{supported}; upgrade refgate to read it"
    )]
    NewerVersion {
        name: String,
        found: u16,
        supported: u16,
    },
    #[error(
        "{name} claims trace format v{found}, which no refgate wrote (this refgate reads \
         v{oldest} to v{supported}); the file is corrupt or not from `refgate record`"
    )]
    UnsupportedVersion {
        name: String,
        found: u16,
        oldest: u16,
        supported: u16,
    },
    #[error(
        "{name} is cut inside its header: it has {len} bytes, the header needs {needed}; the \
         recorder stopped before it wrote anything usable; re-run `refgate record`"
    )]
    CutHeader { name: String, len: u64, needed: u64 },
    #[error(
        "{name} has a corrupt header ({detail}); nothing in it can be trusted; re-run \
         `refgate record`"
    )]
    BadHeader { name: String, detail: String },
    #[error(
        "{name} is corrupt at byte offset {offset}: the frame there fails its checksum (CRC32 \
         stored {stored:#010x}, computed {computed:#010x}); every record before that offset is \
         intact and readable, the rest is lost; re-record if the tail matters"
    )]
    CrcMismatch {
        name: String,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{name} is corrupt at byte offset {offset}: a frame length of {len} bytes is impossible \
         (at most {max}); every record before that offset is intact and readable, the rest is \
         lost; re-record if the tail matters"
    )]
    BadFrameLength {
        name: String,
        offset: u64,
        len: u32,
        max: u32,
    },
    #[error(
        "{name} is cut at byte offset {offset}: the frame starting there needs {needed} bytes \
         but the file ends after {available} (the recorder was stopped or crashed mid-write); \
         every record before that offset is intact and readable"
    )]
    CutFrame {
        name: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error(
        "{name} has an undecodable record in the frame at byte offset {offset} (record {record} \
         of that frame: {detail}); the frame's checksum is good, so it was written by an \
         incompatible or faulty refgate; every record before it is intact and readable"
    )]
    Undecodable {
        name: String,
        offset: u64,
        record: u64,
        detail: String,
    },
    #[error(
        "{name} ends at byte offset {offset} without its end-of-trace frame: the recorder was \
         stopped before it finished, so up to its last second of events is missing; every \
         record before that offset is intact and readable"
    )]
    Unfinished { name: String, offset: u64 },
    #[error(
        "{name} has data after its end-of-trace frame, at byte offset {offset}; it was appended \
         to or overwritten in place; every record before that offset is intact and readable"
    )]
    TrailingData { name: String, offset: u64 },
}

/// Where and why a [`TraceReader`] stopped before the end of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// Byte offset in the file of the frame (or missing frame) where reading stopped. Every
    /// record stored before this offset has been yielded.
    pub offset: u64,
    pub reason: DamageReason,
}

/// Why reading stopped. Variants are only ever appended. JSON: an object whose `kind` is the
/// variant in snake_case (`"cut_frame"`, …) beside its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DamageReason {
    /// The file ends inside the frame that starts at the offset.
    CutFrame { needed: u64, available: u64 },
    /// The frame's CRC32 does not match its contents.
    CrcMismatch { stored: u32, computed: u32 },
    /// The frame's length field is impossible.
    BadFrameLength { len: u32 },
    /// The frame is intact but a record in it (0-based index) cannot be decoded.
    Undecodable { record: u64, detail: String },
    /// The file ends at a frame boundary, but without the end-of-trace frame.
    Unfinished,
    /// Bytes follow the end-of-trace frame.
    TrailingData,
    /// The operating system reported an error reading the file.
    Io { detail: String },
}

impl DamageReason {
    /// A short phrase for reports and titles, e.g. "cut inside a frame".
    pub fn short(&self) -> String {
        match self {
            DamageReason::CutFrame { needed, available } => {
                format!("cut inside a frame ({available} of its {needed} bytes present)")
            }
            DamageReason::CrcMismatch { .. } => "a frame fails its CRC32 checksum".into(),
            DamageReason::BadFrameLength { len } => format!("impossible frame length {len}"),
            DamageReason::Undecodable { record, detail } => {
                format!("record {record} of a frame is undecodable ({detail})")
            }
            DamageReason::Unfinished => {
                "no end-of-trace frame (the recorder was stopped before it finished)".into()
            }
            DamageReason::TrailingData => "data after the end-of-trace frame".into(),
            DamageReason::Io { detail } => format!("read error: {detail}"),
        }
    }
}

impl Damage {
    /// The error a caller that needs the whole trace should report.
    pub fn to_error(&self, name: &str) -> TraceError {
        let name = name.to_string();
        let offset = self.offset;
        match self.reason.clone() {
            DamageReason::CutFrame { needed, available } => TraceError::CutFrame {
                name,
                offset,
                needed,
                available,
            },
            DamageReason::CrcMismatch { stored, computed } => TraceError::CrcMismatch {
                name,
                offset,
                stored,
                computed,
            },
            DamageReason::BadFrameLength { len } => TraceError::BadFrameLength {
                name,
                offset,
                len,
                max: MAX_FRAME,
            },
            DamageReason::Undecodable { record, detail } => TraceError::Undecodable {
                name,
                offset,
                record,
                detail,
            },
            DamageReason::Unfinished => TraceError::Unfinished { name, offset },
            DamageReason::TrailingData => TraceError::TrailingData { name, offset },
            DamageReason::Io { detail } => TraceError::Io {
                name,
                cause: io::Error::other(format!("at byte offset {offset}: {detail}")),
            },
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_error("the trace"))
    }
}

fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn write_frame<W: Write>(w: &mut W, payload: &[u8]) -> io::Result<u64> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "trace frame of {} bytes exceeds the format's limit of {MAX_FRAME}",
                    payload.len()
                ),
            )
        })?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&frame_crc(len, payload).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    Ok(8 + payload.len() as u64)
}

/// Streaming trace writer with bounded memory (one block of at most about [`BLOCK_TARGET`]
/// bytes, plus one record).
///
/// Every frame goes to `W` with two `write_all` calls and nothing is buffered between frames,
/// so with an unbuffered `W` (a `File`) [`bytes_written`](TraceWriter::bytes_written) is the
/// file offset where the last whole frame ends. After a write error (a full disk),
/// [`salvage`](TraceWriter::salvage) cuts the file back to that offset and appends the
/// end-of-trace frame if there is room.
pub struct TraceWriter<W: Write> {
    w: W,
    enc: wire::Encoder,
    /// The current block's payload: kind byte, then the encoded records.
    block: Vec<u8>,
    /// Scratch space for compression.
    packed: Vec<u8>,
    bytes_written: u64,
    records: u64,
    /// What the whole frames written so far hold.
    kept: Kept,
    /// The same for the current block.
    pending: Kept,
    /// A write to `W` failed: what follows `bytes_written` in `W` is undefined.
    failed: bool,
    /// The end-of-trace frame is written.
    closed: bool,
}

/// What a part of a trace holds: records, events, and the events' time span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub records: u64,
    pub events: u64,
    /// Smallest and largest event timestamp (ns), if any event.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
}

impl Kept {
    fn add(&mut self, rec: &Record) {
        self.records += 1;
        if let Record::Event(e) = rec {
            self.events += 1;
            self.first_ts_ns = Some(self.first_ts_ns.map_or(e.ts_ns, |t| t.min(e.ts_ns)));
            self.last_ts_ns = Some(self.last_ts_ns.map_or(e.ts_ns, |t| t.max(e.ts_ns)));
        }
    }
    fn merge(&mut self, o: &Kept) {
        self.records += o.records;
        self.events += o.events;
        self.first_ts_ns = match (self.first_ts_ns, o.first_ts_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ts_ns = match (self.last_ts_ns, o.last_ts_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    /// Seconds from the first to the last event.
    pub fn span_seconds(&self) -> f64 {
        match (self.first_ts_ns, self.last_ts_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        }
    }
}

/// Cutting a writer's output back to a length ([`TraceWriter::salvage`]).
pub trait Truncate {
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
}

impl Truncate for File {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// What a salvaged trace holds ([`TraceWriter::salvage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salvaged {
    /// The file's length now: it ends with a whole frame.
    pub bytes: u64,
    /// What its frames hold.
    pub kept: Kept,
    /// Records that had been handed to the writer but are not in the file.
    pub lost_records: u64,
    /// Whether the end-of-trace frame fitted.
    pub finished: bool,
}

impl<W: Write> TraceWriter<W> {
    /// Write the file prefix and `header` to `w`.
    pub fn new(mut w: W, header: &TraceHeader) -> io::Result<Self> {
        w.write_all(&MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let payload = postcard::to_stdvec(header).map_err(io::Error::other)?;
        let n = write_frame(&mut w, &payload)?;
        let mut block = Vec::with_capacity(BLOCK_TARGET + 1024);
        block.push(KIND_STORED);
        Ok(TraceWriter {
            w,
            enc: wire::Encoder::new(),
            block,
            packed: Vec::new(),
            bytes_written: 10 + n,
            records: 0,
            kept: Kept::default(),
            pending: Kept::default(),
            failed: false,
            closed: false,
        })
    }

    /// Append one record. It reaches `W` when its block fills up or at the next [`flush`].
    ///
    /// [`flush`]: TraceWriter::flush
    pub fn write(&mut self, rec: &Record) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::other("the trace is already closed"));
        }
        self.enc
            .encode(rec, &mut self.block)
            .map_err(io::Error::other)?;
        self.records += 1;
        self.pending.add(rec);
        if self.block.len() >= BLOCK_TARGET {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> io::Result<()> {
        if self.failed {
            // What follows `bytes_written` is undefined: nothing more may be appended.
            return Err(io::Error::other(
                "an earlier write to the trace failed; only salvage() is possible",
            ));
        }
        if self.block.len() <= 1 {
            return Ok(());
        }
        let raw = &self.block[1..];
        if raw.len() > MAX_FRAME as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "trace block of {} bytes exceeds the format's limit of {MAX_FRAME} (a single \
                     record is too large)",
                    raw.len()
                ),
            ));
        }
        self.packed.clear();
        self.packed.push(KIND_LZ4);
        let mut packed = std::mem::take(&mut self.packed);
        packed = postcard::to_extend(&(raw.len() as u32), packed).map_err(io::Error::other)?;
        let at = packed.len();
        packed.resize(at + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
        let n = lz4_flex::block::compress_into(raw, &mut packed[at..]).map_err(io::Error::other)?;
        packed.truncate(at + n);
        let frame: &[u8] = if packed.len() < self.block.len() {
            &packed
        } else {
            &self.block
        };
        let written = write_frame(&mut self.w, frame);
        self.packed = packed;
        self.bytes_written += written.inspect_err(|_| self.failed = true)?;
        self.block.truncate(1);
        self.enc.reset();
        let p = std::mem::take(&mut self.pending);
        self.kept.merge(&p);
        Ok(())
    }

    /// End the current block (if any record is pending) and flush `W`: after this returns, a
    /// crash loses nothing written so far.
    pub fn flush(&mut self) -> io::Result<()> {
        self.end_block()?;
        self.w.flush()
    }

    /// Flush, write the end-of-trace frame and return `W`.
    pub fn finish(mut self) -> io::Result<W> {
        self.close()?;
        Ok(self.w)
    }

    /// Flush and write the end-of-trace frame; no record may follow. Unlike
    /// [`finish`](TraceWriter::finish) the writer stays, for [`salvage`](TraceWriter::salvage)
    /// should this fail.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.end_block()?;
        self.bytes_written +=
            write_frame(&mut self.w, &[KIND_END]).inspect_err(|_| self.failed = true)?;
        self.w.flush().inspect_err(|_| self.failed = true)?;
        self.closed = true;
        Ok(())
    }

    /// Whether a write to `W` failed (then only [`salvage`](TraceWriter::salvage) is useful).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// What the whole frames written so far hold.
    pub fn kept(&self) -> Kept {
        self.kept
    }

    /// Bytes handed to `W` so far (pending records not included).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Records written so far (including pending ones).
    pub fn records_written(&self) -> u64 {
        self.records
    }
}

impl<W: Write + Seek + Truncate> TraceWriter<W> {
    /// After a write error: cut `W` back to the end of its last whole frame (it was at offset 0
    /// when the writer was made) and append the end-of-trace frame if there is room, so that
    /// the file is a whole trace of everything in its frames; otherwise it ends at a frame
    /// boundary, which readers report as unfinished, and nothing in it is damaged. Records
    /// of the unwritten block are lost. Fails only if `W` cannot even be cut back.
    pub fn salvage(mut self) -> io::Result<(W, Salvaged)> {
        let at = self.bytes_written;
        let lost_records = self.records - self.kept.records;
        let mut finished = self.closed && !self.failed;
        if !finished {
            self.w.truncate_to(at)?;
            self.w.seek(SeekFrom::Start(at))?;
            let end = write_frame(&mut self.w, &[KIND_END]).and_then(|n| {
                self.w.flush()?;
                Ok(n)
            });
            match end {
                Ok(n) => {
                    self.bytes_written += n;
                    finished = true;
                }
                // No room for 9 bytes: the file ends after its last whole frame.
                Err(_) => self.w.truncate_to(at)?,
            }
        }
        let s = Salvaged {
            bytes: self.bytes_written,
            kept: self.kept,
            lost_records,
            finished,
        };
        Ok((self.w, s))
    }
}

/// Read until `buf` is full or end of file; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read exactly `len` bytes into `buf` (growing it as data arrives, so a corrupt length does
/// not allocate up front); returns the bytes read.
fn read_payload<R: Read>(r: &mut R, len: u32, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let mut take = r.take(len as u64);
    loop {
        match take.read_to_end(buf) {
            Ok(_) => return Ok(buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Streaming trace reader. Iterate it for the records in order; afterwards [`damage`] says
/// whether and where it stopped early.
///
/// [`damage`]: TraceReader::damage
pub struct TraceReader<R: Read> {
    r: R,
    name: String,
    header: TraceHeader,
    version: u16,
    /// File offset of the next frame.
    offset: u64,
    /// Offset of the frame the current block came from.
    frame_offset: u64,
    /// The current block's records (decompressed), and the read position in it.
    block: Vec<u8>,
    pos: usize,
    record_in_frame: u64,
    frame_buf: Vec<u8>,
    dec: wire::Decoder,
    damage: Option<Damage>,
    done: bool,
    finished: bool,
}

impl TraceReader<BufReader<File>> {
    /// Open the trace at `path`; errors name the file.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let f = open_trace_file(path)?;
        TraceReader::open_named(BufReader::with_capacity(256 * 1024, f), name)
    }
}

/// Opens the trace file at `path` for reading: a directory, or a file the OS will not open,
/// is the error a reader gives (named by the path as given). For callers that read it through
/// a reader of their own; [`TraceReader::open_path`] uses it.
pub fn open_trace_file(path: &Path) -> Result<File, TraceError> {
    let name = || path.display().to_string();
    if path.is_dir() {
        return Err(TraceError::IsDirectory { name: name() });
    }
    File::open(path).map_err(|cause| TraceError::Io {
        name: name(),
        cause,
    })
}

/// Checks the `n` bytes of the prefix read (magic, format version, header length and CRC
/// follow): the format version, or why this is not a trace refgate can read.
fn check_prefix(prefix: &[u8], name: &str) -> Result<u16, TraceError> {
    let name = name.to_string();
    let n = prefix.len();
    if n == 0 {
        return Err(TraceError::Empty { name });
    }
    let magic_len = n.min(MAGIC.len());
    if prefix[..magic_len] != MAGIC[..magic_len] {
        return Err(TraceError::Foreign {
            name,
            found: show_bytes(&prefix[..magic_len]),
        });
    }
    if n < 10 {
        return Err(TraceError::CutHeader {
            name,
            len: n as u64,
            needed: PREFIX_LEN,
        });
    }
    let version = u16::from_le_bytes([prefix[8], prefix[9]]);
    if version > FORMAT_VERSION {
        return Err(TraceError::NewerVersion {
            name,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version < OLDEST_FORMAT_VERSION {
        return Err(TraceError::UnsupportedVersion {
            name,
            found: version,
            oldest: OLDEST_FORMAT_VERSION,
            supported: FORMAT_VERSION,
        });
    }
    if n < PREFIX_LEN as usize {
        return Err(TraceError::CutHeader {
            name,
            len: n as u64,
            needed: PREFIX_LEN,
        });
    }
    Ok(version)
}

/// Reads the header frame that the (checked) `prefix` announces: the header and its length.
fn read_header<R: Read>(
    r: &mut R,
    prefix: &[u8; PREFIX_LEN as usize],
    name: &str,
) -> Result<(TraceHeader, u32), TraceError> {
    let name = name.to_string();
    let len = u32::from_le_bytes(prefix[10..14].try_into().unwrap());
    let stored = u32::from_le_bytes(prefix[14..18].try_into().unwrap());
    if len > MAX_FRAME {
        return Err(TraceError::BadHeader {
            name,
            detail: format!("header length {len} is impossible"),
        });
    }
    let mut payload = Vec::new();
    let got = read_payload(r, len, &mut payload).map_err(|cause| TraceError::Io {
        name: name.clone(),
        cause,
    })?;
    if got < len as usize {
        return Err(TraceError::CutHeader {
            name,
            len: PREFIX_LEN + got as u64,
            needed: PREFIX_LEN + len as u64,
        });
    }
    let computed = frame_crc(len, &payload);
    if computed != stored {
        return Err(TraceError::BadHeader {
            name,
            detail: format!("CRC32 stored {stored:#010x}, computed {computed:#010x}"),
        });
    }
    // Trailing bytes are fields appended by a later writer of the same version. Fields
    // appended after a writer was released are missing from its files: zero bytes read as
    // their defaults (variant 0, `None`, `false`, 0, empty), which every appended field
    // must be encoded as.
    payload.extend_from_slice(&[0u8; HEADER_PAD]);
    let (header, _) =
        postcard::take_from_bytes::<TraceHeader>(&payload).map_err(|e| TraceError::BadHeader {
            name,
            detail: format!("undecodable: {e}"),
        })?;
    Ok((header, len))
}

impl<R: Read> TraceReader<R> {
    /// Read and check the prefix and header of the trace in `r` (called "the trace" in errors).
    pub fn open(r: R) -> Result<Self, TraceError> {
        Self::open_named(r, "the trace".to_string())
    }

    /// Like [`open`](TraceReader::open), naming the trace `name` in errors.
    pub fn open_named(mut r: R, name: String) -> Result<Self, TraceError> {
        let mut prefix = [0u8; PREFIX_LEN as usize];
        let n = read_full(&mut r, &mut prefix).map_err(|cause| TraceError::Io {
            name: name.clone(),
            cause,
        })?;
        let version = check_prefix(&prefix[..n], &name)?;
        let (header, len) = read_header(&mut r, &prefix, &name)?;
        let offset = PREFIX_LEN + len as u64;
        Ok(TraceReader {
            r,
            name,
            header,
            version,
            offset,
            frame_offset: offset,
            block: Vec::new(),
            pos: 0,
            record_in_frame: 0,
            frame_buf: Vec::new(),
            dec: wire::Decoder::new(),
            damage: None,
            done: false,
            finished: false,
        })
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The format version of the file.
    pub fn format_version(&self) -> u16 {
        self.version
    }

    /// The name used in errors (the path for [`TraceReader::open_path`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where and why reading stopped early, once the iterator has returned `None`. `None` for a
    /// complete trace (and while records remain).
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// [`damage`](TraceReader::damage) as an error naming the file.
    pub fn damage_error(&self) -> Option<TraceError> {
        self.damage.as_ref().map(|d| d.to_error(&self.name))
    }

    /// Whether the end-of-trace frame has been read (the recorder finished cleanly).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Read all remaining records, or fail with the damage if the trace is not whole.
    pub fn read_all(&mut self) -> Result<Vec<Record>, TraceError> {
        let v: Vec<Record> = self.by_ref().collect();
        match self.damage_error() {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    fn stop(&mut self, offset: u64, reason: DamageReason) {
        self.damage = Some(Damage { offset, reason });
        self.done = true;
    }

    /// Read the next frame into `self.block`. Returns false when there is nothing more.
    fn next_frame(&mut self) -> bool {
        loop {
            let at = self.offset;
            let len = match self.read_frame() {
                Ok(Some(len)) => len,
                Ok(None) => {
                    self.done = true;
                    return false;
                }
                Err(reason) => {
                    self.stop(at, reason);
                    return false;
                }
            };
            self.offset = at + 8 + len as u64;
            self.frame_offset = at;
            match self.open_frame(len) {
                Ok(true) => return true,
                // The end-of-trace frame: only the clean end may follow.
                Ok(false) => continue,
                Err(reason) => {
                    self.stop(at, reason);
                    return false;
                }
            }
        }
    }

    /// Reads the frame at `self.offset` (length, CRC32, payload) into `self.frame_buf` and
    /// checks it: its payload length, `None` at the clean end (nothing after the end-of-trace
    /// frame), or why the trace stops here.
    fn read_frame(&mut self) -> Result<Option<u32>, DamageReason> {
        let io = |e: std::io::Error| DamageReason::Io {
            detail: e.to_string(),
        };
        let mut head = [0u8; 8];
        let n = read_full(&mut self.r, &mut head).map_err(io)?;
        if self.finished {
            return if n > 0 {
                Err(DamageReason::TrailingData)
            } else {
                Ok(None)
            };
        }
        if n == 0 {
            return Err(DamageReason::Unfinished);
        }
        if n < 8 {
            return Err(DamageReason::CutFrame {
                needed: 8,
                available: n as u64,
            });
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap());
        let stored = u32::from_le_bytes(head[4..].try_into().unwrap());
        if len > MAX_FRAME || len == 0 {
            return Err(DamageReason::BadFrameLength { len });
        }
        let got = read_payload(&mut self.r, len, &mut self.frame_buf).map_err(io)?;
        if got < len as usize {
            return Err(DamageReason::CutFrame {
                needed: 8 + len as u64,
                available: 8 + got as u64,
            });
        }
        let computed = frame_crc(len, &self.frame_buf);
        if computed != stored {
            return Err(DamageReason::CrcMismatch { stored, computed });
        }
        Ok(Some(len))
    }

    /// Opens the checked frame in `self.frame_buf` (payload `len` bytes): true when its
    /// records are in `self.block` (stored or LZ4-packed), false for the end-of-trace frame.
    fn open_frame(&mut self, len: u32) -> Result<bool, DamageReason> {
        self.record_in_frame = 0;
        self.dec.reset();
        self.block.clear();
        self.pos = 0;
        let undecodable = |detail: String| DamageReason::Undecodable { record: 0, detail };
        match self.frame_buf[0] {
            KIND_STORED => {
                std::mem::swap(&mut self.block, &mut self.frame_buf);
                self.pos = 1;
                Ok(true)
            }
            KIND_LZ4 => match unpack_lz4(&self.frame_buf[1..], &mut self.block) {
                Ok(()) => {
                    self.pos = 1;
                    Ok(true)
                }
                Err(detail) => {
                    self.block.clear();
                    Err(undecodable(detail))
                }
            },
            KIND_END if len != 1 => Err(undecodable("malformed end-of-trace frame".into())),
            KIND_END => {
                self.finished = true;
                Ok(false)
            }
            k => Err(undecodable(format!("unknown frame kind {k}"))),
        }
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if self.pos < self.block.len() {
                return match self.dec.decode(&self.block[self.pos..]) {
                    Ok((rec, rest)) => {
                        self.pos = self.block.len() - rest.len();
                        self.record_in_frame += 1;
                        Some(rec)
                    }
                    Err(detail) => {
                        self.pos = self.block.len();
                        let (at, record) = (self.frame_offset, self.record_in_frame);
                        self.stop(at, DamageReason::Undecodable { record, detail });
                        None
                    }
                };
            }
            if self.done || !self.next_frame() {
                return None;
            }
        }
    }
}

/// Decompress an LZ4 block payload (raw length, then the LZ4 block) into `out[1..]`.
fn unpack_lz4(payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (raw_len, packed) = postcard::take_from_bytes::<u32>(payload)
        .map_err(|e| format!("LZ4 block without a valid length: {e}"))?;
    if raw_len > MAX_FRAME {
        return Err(format!("LZ4 block claims an impossible {raw_len} bytes"));
    }
    out.clear();
    out.resize(1 + raw_len as usize, KIND_STORED);
    match lz4_flex::block::decompress_into(packed, &mut out[1..]) {
        Ok(n) if n == raw_len as usize => Ok(()),
        Ok(n) => Err(format!(
            "LZ4 block decompresses to {n} bytes, not the {raw_len} it claims"
        )),
        Err(e) => Err(format!("LZ4 block does not decompress: {e}")),
    }
}

fn show_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod name_tests {
    use super::ProbeKind::*;

    /// JSON spells every probe kind as the names table's id (the trace stores the index).
    #[test]
    fn probe_kinds_serialize_as_the_names_tables_ids() {
        for k in [Tracepoint, Kprobe, Kretprobe, Fentry, Fexit, RawTracepoint] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name().id, "{k:?}");
        }
    }
}
