//! `refgate export`: a recorded trace in the formats other tools read.
//!
//! * `--format chrome` ([`chrome`]): Chrome trace-event JSON for Perfetto and chrome://tracing —
//!   one track per recorded task, lock waits and calls as slices, a queue-depth counter.
//! * `--format jsonl` ([`jsonl`]): one flat JSON object per event ([`Row`]), for `jq`, pandas or
//!   DuckDB's `read_json`.
//! * `--format parquet` ([`parquet`]): the same rows as one Parquet table, for DuckDB, Spark or
//!   Trino over the traces of many hosts.
//!
//! Every format has one entry per recorded event: `refgate inspect`'s `events_by_kind` counts
//! are the exported counts (the tests check it on both bundled samples). Events are named after
//! their probe as [`EventKind::probe_name`] names it, and lock roles as [`LockRole::name`] does.
//!
//! A damaged trace (cut, corrupt, or without its end-of-trace frame) is refused with the
//! reader's diagnosis unless `--partial` is given, which exports the records before the damage
//! and warns. Files are written under a temporary name and renamed at the end, so a failed
//! export leaves no half-written output behind; `-o -` streams to stdout, where a damaged
//! trace's error comes after the events before the damage, as with any streaming tool.
pub mod chrome;
pub mod jsonl;
pub mod parquet;
pub mod workload;

use std::collections::HashMap;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use refgate_common::event::{Event, EventKind, FsId, Record, Stats};
use refgate_common::trace::{TraceHeader, TraceReader};
use serde::{Serialize, Serializer};

/// What `refgate export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Chrome trace-event JSON (`{"traceEvents": [...]}`) for Perfetto and chrome://tracing.
    Chrome,
    /// One JSON object per event, one per line.
    Jsonl,
    /// One Parquet table, one row per event (Snappy-compressed).
    Parquet,
    /// The replay's workload built from the trace, in the workload text format.
    Workload,
}

impl Format {
    /// The extension of the default output file.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Chrome => "json",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Workload => "workload.jsonl",
        }
    }

    /// The format an output file's extension implies, if any.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Chrome),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Format::Chrome => {
                "Chrome trace-event JSON; open it in Perfetto (ui.perfetto.dev) or chrome://tracing"
            }
            Format::Jsonl => "JSON lines, one object per event",
            Format::Parquet => "Parquet, one row per event",
            Format::Workload => {
                "the replay's workload, JSON lines (refgate replay --workload FILE)"
            }
        }
    }
}

pub struct ExportArgs {
    pub trace: PathBuf,
    /// `None`: from the output's extension, else chrome.
    pub format: Option<Format>,
    /// `None`: the trace's file name with the format's extension, in the current directory;
    /// `-`: stdout.
    pub output: Option<PathBuf>,
    /// Export the records before the damage of a damaged trace instead of refusing it.
    pub partial: bool,
}

/// What an exporter wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Recorded events exported (one trace entry or row each).
    pub events: u64,
    /// Entries written in total (chrome adds metadata and counter events).
    pub entries: u64,
}

/// Where the output goes.
enum Sink {
    Stdout,
    /// Written to `tmp`, renamed to `path` when the export succeeds.
    File {
        path: PathBuf,
        tmp: PathBuf,
    },
}

pub fn run(args: ExportArgs) -> Result<()> {
    let format = args
        .format
        .or_else(|| args.output.as_deref().and_then(Format::from_extension))
        .unwrap_or(Format::Chrome);
    let reader = TraceReader::open_path(&args.trace)?;
    let sink = sink_for(&args, format)?;
    let result = export_to(&sink, reader, format, args.partial);
    let exported = match result {
        Ok(r) => r,
        Err(e) => {
            if let Sink::File { tmp, .. } = &sink {
                let _ = std::fs::remove_file(tmp);
            }
            // `refgate export … -o - | head`: the reader went away, which is not an error.
            if matches!(sink, Sink::Stdout) && is_broken_pipe(&e) {
                return Ok(());
            }
            return Err(e);
        }
    };
    if let Sink::File { path, .. } = &sink {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "refgate: wrote {} events to {} ({}, {})",
            exported.events,
            path.display(),
            crate::units::bytes(size),
            format.describe()
        );
    }
    Ok(())
}

/// Where the export goes: stdout (`-o -`; never Parquet to a terminal), the file named, or
/// the trace's name with the format's extension in the current directory.
fn sink_for(args: &ExportArgs, format: Format) -> Result<Sink> {
    Ok(match &args.output {
        Some(p) if p.as_os_str() == "-" => {
            if format == Format::Parquet && io::stdout().is_terminal() {
                bail!(
                    "refusing to write Parquet (binary) to a terminal; pass `-o FILE`, or pipe \
                     stdout into a file or a program"
                );
            }
            Sink::Stdout
        }
        Some(p) => file_sink(p.clone(), &args.trace)?,
        None => {
            // `scratch-6.18.bin` → `scratch-6.18.json`: only the last extension goes.
            let mut name = args
                .trace
                .file_stem()
                .map_or_else(|| "trace".into(), |s| s.to_os_string());
            name.push(".");
            name.push(format.extension());
            file_sink(PathBuf::from(name), &args.trace)?
        }
    })
}

/// Exports into `sink`: a file is written beside its final name and renamed on success.
fn export_to<R: Read>(
    sink: &Sink,
    reader: TraceReader<R>,
    format: Format,
    partial: bool,
) -> Result<Exported> {
    match sink {
        Sink::Stdout => {
            let out = BufWriter::with_capacity(256 * 1024, io::stdout());
            export(reader, format, out, partial)
        }
        // The temporary name is ours; an error names the user's path (and the directory
        // when that is what is missing).
        // Private (0600) like the trace: an export names the same host, tasks and command
        // lines; under sudo it belongs to the user who asked for it, as the trace does.
        Sink::File { path, tmp } => crate::owner::create_private(tmp)
            .map_err(|e| create_error(path, e))
            .and_then(|f| {
                export(
                    reader,
                    format,
                    BufWriter::with_capacity(256 * 1024, f),
                    partial,
                )
            })
            .and_then(|r| {
                std::fs::rename(tmp, path).with_context(|| {
                    format!("cannot rename {} to {}", tmp.display(), path.display())
                })?;
                Ok(r)
            })
            // A failed export (a full disk) leaves nothing behind, its temporary file included.
            .inspect_err(|_| {
                let _ = std::fs::remove_file(tmp);
            }),
    }
}

/// Why the output `path` cannot be created, in the user's terms.
fn create_error(path: &Path, e: io::Error) -> anyhow::Error {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(d) if e.kind() == io::ErrorKind::NotFound && !d.exists() => anyhow::anyhow!(
            "cannot create {}: the directory {} does not exist (create it, or pass another \
             path with `-o`)",
            path.display(),
            d.display()
        ),
        _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
    }
}

fn file_sink(path: PathBuf, trace: &Path) -> Result<Sink> {
    if let (Ok(a), Ok(b)) = (path.canonicalize(), trace.canonicalize())
        && a == b
    {
        bail!(
            "the output {} is the trace itself; pass another name with `-o`",
            path.display()
        );
    }
    let tmp = crate::owner::temp_beside(&path)
        .with_context(|| format!("{} is not a file name", path.display()))?;
    Ok(Sink::File { path, tmp })
}

/// Export everything `reader` holds to `out` in `format`. A damaged trace is an error unless
/// `partial`, in which case the records before the damage are exported and a warning printed.
pub fn export<R: Read, W: Write + Send>(
    reader: TraceReader<R>,
    format: Format,
    out: W,
    partial: bool,
) -> Result<Exported> {
    let mut src = Source::new(reader);
    let exported = match format {
        Format::Chrome => chrome::write(&mut src, out)?,
        Format::Jsonl => jsonl::write(&mut src, out)?,
        Format::Parquet => parquet::write(&mut src, out)?,
        Format::Workload => workload::write(&mut src, out)?,
    };
    if let Some(e) = src.reader.damage_error() {
        if !partial {
            bail!(
                "{e}. Nothing was exported; `--partial` exports the {} events before the damage.",
                exported.events
            );
        }
        eprintln!(
            "refgate: warning: {e}. Exported the {} events before the damage (--partial).",
            exported.events
        );
    }
    Ok(exported)
}

/// Whether `e` comes from writing into a closed pipe (serde_json and parquet keep the
/// `io::Error` in their error chain or behind `io_error_kind`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = Some(io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().map(io::Error::kind) == pipe
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == pipe
    })
}

/// A recorded task as the trace names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub tgid: u32,
    pub comm: String,
}

/// The trace's records, with the tables that the events refer to (tasks, filesystems) kept up
/// to date as they are read: a `Task` or `Filesystem` record comes before the first event that
/// needs it.
pub struct Source<R: Read> {
    pub reader: TraceReader<R>,
    /// tid → the first `Task` record of that tid.
    pub tasks: HashMap<u32, TaskInfo>,
    /// Filesystem table index → fsid (32 hex digits), in the order they were seen.
    pub filesystems: Vec<(FsId, String)>,
    /// The last `Stats` record read.
    pub stats: Option<Stats>,
}

impl<R: Read> Source<R> {
    pub fn new(reader: TraceReader<R>) -> Self {
        Source {
            reader,
            tasks: HashMap::new(),
            filesystems: Vec::new(),
            stats: None,
        }
    }

    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }

    /// The next event, after taking in the records before it; `None` at the end of the
    /// trace or at its damage.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.reader.next()? {
                Record::Event(e) => return Some(e),
                Record::Task(t) => {
                    self.tasks.entry(t.tid).or_insert(TaskInfo {
                        tgid: t.tgid,
                        comm: t.comm,
                    });
                }
                Record::Filesystem { id, fsid } => {
                    let hex: String = fsid.iter().map(|b| format!("{b:02x}")).collect();
                    match self.filesystems.iter_mut().find(|(i, _)| *i == id) {
                        Some(f) => f.1 = hex,
                        None => self.filesystems.push((id, hex)),
                    }
                }
                Record::Stats(s) => self.stats = Some(s),
            }
        }
    }

    pub fn fsid(&self, fs: FsId) -> Option<&str> {
        self.filesystems
            .iter()
            .find(|(i, _)| *i == fs)
            .map(|(_, h)| h.as_str())
    }

    /// Header, filesystems and statistics as one JSON object (for the outputs' metadata),
    /// spelt as `inspect --json` spells them.
    pub fn metadata_json(&self) -> serde_json::Value {
        let filesystems: Vec<_> = self
            .filesystems
            .iter()
            .map(|(fs, fsid)| serde_json::json!({"fs": fs, "fsid": fsid}))
            .collect();
        serde_json::json!({
            "schema": METADATA_SCHEMA,
            "trace": self.reader.name(),
            "format_version": self.reader.format_version(),
            "header": refgate_common::trace::summary::HeaderJson(self.header()),
            "filesystems": filesystems,
            "stats": self.stats,
            "exported_by": format!("refgate {}", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// `action`'s id; an unknown code has none (the code column still holds it).
fn action_name(c: u8) -> Option<&'static str> {
    refgate_common::names::action::of(c).map(|n| n.id)
}

/// `ref_type`'s id; an unknown code has none.
fn ref_type_name(c: u8) -> Option<&'static str> {
    refgate_common::names::ref_type::of(c).map(|n| n.id)
}

/// The `schema` of the exports' metadata (Chrome `otherData`, Parquet key-value `refgate`).
pub const METADATA_SCHEMA: &str = "refgate.export-metadata/1";

/// A probe's name without its subsystem: `btrfs:add_delayed_tree_ref` → `add_delayed_tree_ref`,
/// `kprobe:btrfs_run_delayed_refs` → `btrfs_run_delayed_refs`.
pub fn short_name(probe: &'static str) -> &'static str {
    probe.split_once(':').map_or(probe, |(_, n)| n)
}

/// A `lock_addr` or `handle`, written as hex: a per-trace identifier (`"0x2a"`), or a kernel
/// address (`"0xffff888103a4c2d8"`) in a trace recorded with `--keep-kernel-pointers`, which as
/// a JSON number would exceed the 2^53 that doubles (jq 1.6, JavaScript) hold exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex(pub u64);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:#x}", self.0))
    }
}

/// The decoded fields of one event's payload, named as the kernel's tracepoints name them
/// (`refgate_common::event`). Fields an event kind does not have are `None` (left out of JSON,
/// null in Parquet). Two kinds share a column where the kernel's field means the same:
/// `generation` (commit, tree lock), `wait_ns` (contention, tree lock), `duration_ns` and
/// `ret` (the two call kprobes; contention's `ret` too), `owner` (the data ref's inode, the
/// tree lock's tree: the kernel calls both `owner`).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytenr: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_bytes: Option<u64>,
    /// `BTRFS_ADD_DELAYED_REF` (1) … `BTRFS_UPDATE_DELAYED_HEAD` (4); 0 on a head's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<u8>,
    /// `action` as its id in the names table (`add_delayed_ref`, …, `none` on a head's run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_root: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<u64>,
    /// The data ref's `offset` (the tracepoint's name; `data_offset` here because `OFFSET` is
    /// a reserved word in SQL, where the Parquet export is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_offset: Option<u64>,
    /// The backref key type's code (176 `BTRFS_TREE_BLOCK_REF_KEY`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_type: Option<u8>,
    /// `ref_type` as its id in the names table (`tree_block_ref`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_type_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_data: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_objectid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_log_tree: Option<bool>,
    /// The lock's role: its id in the names table (`delayed_refs_lock`, `head_mutex`,
    /// `extent_tree`, `other_btrfs`), on every row with a `wait_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_addr: Option<Hex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
    /// `btrfs_run_delayed_refs`' second argument; the trace header's `run_arg` says whether it
    /// is a count (≤ 6.6) or `min_bytes` (≥ 6.7). Absent (null) when it means "run
    /// everything" (−1 or `U64_MAX`): then `run_all` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<u64>,
    /// Whether the call ran everything (`arg` −1 / `U64_MAX`, which JSON and SQL would show
    /// as 18446744073709551615 or −1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// The `struct btrfs_trans_handle *`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<Hex>,
}

impl Fields {
    /// A tree ref's fields (`add_delayed_tree_ref`, `run_delayed_tree_ref`).
    fn tree_ref(r: &refgate_common::event::TreeRef) -> Fields {
        Fields {
            fs: Some(r.fs),
            bytenr: Some(r.bytenr),
            num_bytes: Some(r.num_bytes),
            action: Some(r.action),
            action_name: action_name(r.action),
            parent: Some(r.parent),
            ref_root: Some(r.ref_root),
            level: Some(r.level),
            ref_type: Some(r.ref_type),
            ref_type_name: ref_type_name(r.ref_type),
            seq: Some(r.seq),
            ..Fields::default()
        }
    }

    /// A data ref's fields (`add_delayed_data_ref`, `run_delayed_data_ref`).
    fn data_ref(r: &refgate_common::event::DataRef) -> Fields {
        Fields {
            fs: Some(r.fs),
            bytenr: Some(r.bytenr),
            num_bytes: Some(r.num_bytes),
            action: Some(r.action),
            action_name: action_name(r.action),
            parent: Some(r.parent),
            ref_root: Some(r.ref_root),
            owner: Some(r.owner),
            data_offset: Some(r.offset),
            ref_type: Some(r.ref_type),
            ref_type_name: ref_type_name(r.ref_type),
            seq: Some(r.seq),
            ..Fields::default()
        }
    }

    pub fn of(kind: &EventKind) -> Fields {
        use EventKind::*;
        match *kind {
            AddTreeRef(r) | RunTreeRef(r) => Fields::tree_ref(&r),
            AddDataRef(r) | RunDataRef(r) => Fields::data_ref(&r),
            AddRefHead(r) | RunRefHead(r) => Fields {
                fs: Some(r.fs),
                bytenr: Some(r.bytenr),
                num_bytes: Some(r.num_bytes),
                action: Some(r.action),
                action_name: action_name(r.action),
                is_data: Some(r.is_data),
                ..Fields::default()
            },
            TransactionCommit {
                fs,
                generation,
                root_objectid,
            } => Fields {
                fs: Some(fs),
                generation: Some(generation),
                root_objectid: Some(root_objectid),
                ..Fields::default()
            },
            TreeLock {
                fs,
                block,
                generation,
                wait_ns,
                owner,
                is_log_tree,
            } => Fields {
                fs: Some(fs),
                block: Some(block),
                generation: Some(generation),
                wait_ns: Some(wait_ns),
                // Only extent-tree blocks' waits are recorded (the others are filtered).
                role: Some(refgate_common::names::lock::EXTENT_TREE.id),
                owner: Some(owner),
                is_log_tree: Some(is_log_tree),
                ..Fields::default()
            },
            Contention {
                role,
                lock_addr,
                flags,
                ret,
                wait_ns,
            } => Fields {
                role: Some(role.name().id),
                lock_addr: Some(Hex(lock_addr)),
                flags: Some(flags),
                ret: Some(ret as i64),
                wait_ns: Some(wait_ns),
                ..Fields::default()
            },
            RunDelayedRefsCall {
                arg,
                ret,
                duration_ns,
            } => Fields {
                arg: (arg != u64::MAX).then_some(arg),
                run_all: Some(arg == u64::MAX),
                ret: Some(ret),
                duration_ns: Some(duration_ns),
                ..Fields::default()
            },
            TransHandleStart { handle } | TransHandleEnd { handle } => Fields {
                handle: Some(Hex(handle)),
                ..Fields::default()
            },
            CommitTransactionCall {
                handle,
                ret,
                duration_ns,
            } => Fields {
                handle: Some(Hex(handle)),
                ret: Some(ret),
                duration_ns: Some(duration_ns),
                ..Fields::default()
            },
        }
    }
}

/// One event as a flat record: what a JSONL line holds and a Parquet row is made of.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Row<'a> {
    /// CLOCK_MONOTONIC ns. For a lock contention it is the *end* of the wait, for the call
    /// kprobes the *entry* (as recorded; `refgate_common::event`).
    pub ts_ns: u64,
    pub cpu: u32,
    pub tid: u32,
    /// From the trace's task table; absent if the trace has no `Task` record for the tid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
    /// The probe's name without its subsystem, e.g. `add_delayed_tree_ref`.
    pub kind: &'static str,
    /// The probe as `refgate inspect` names it, e.g. `btrfs:add_delayed_tree_ref`.
    pub probe: &'static str,
    #[serde(flatten)]
    pub fields: Fields,
}

impl<'a> Row<'a> {
    pub fn new(e: &Event, task: Option<&'a TaskInfo>) -> Row<'a> {
        let probe = e.kind.probe_name();
        Row {
            ts_ns: e.ts_ns,
            cpu: e.cpu,
            tid: e.tid,
            tgid: task.map(|t| t.tgid),
            comm: task.map(|t| t.comm.as_str()),
            kind: short_name(probe),
            probe,
            fields: Fields::of(&e.kind),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {

    /// Codes come with their names, "run everything" is `run_all` and no magic number, and
    /// every row with a wait names its lock.
    #[test]
    fn fields_label_codes_and_say_run_all_in_one_way() {
        let call = |arg| {
            Fields::of(&EventKind::RunDelayedRefsCall {
                arg,
                ret: 0,
                duration_ns: 1,
            })
        };
        let all = call(u64::MAX);
        assert_eq!((all.arg, all.run_all), (None, Some(true)));
        let some = call(32);
        assert_eq!((some.arg, some.run_all), (Some(32), Some(false)));
        let d = Fields::of(&EventKind::AddDataRef(DataRef {
            fs: 0,
            bytenr: 1 << 20,
            num_bytes: 4096,
            action: DROP_DELAYED_REF,
            parent: 0,
            ref_root: 5,
            owner: 257,
            offset: 8192,
            ref_type: EXTENT_DATA_REF_KEY,
            seq: 0,
        }));
        assert_eq!(d.data_offset, Some(8192));
        assert_eq!(d.action_name, Some("drop_delayed_ref"));
        assert_eq!(d.ref_type_name, Some("extent_data_ref"));
        let t = Fields::of(&EventKind::TreeLock {
            fs: 0,
            block: 1 << 20,
            generation: 7,
            wait_ns: 100,
            owner: 2,
            is_log_tree: false,
        });
        assert_eq!(t.role, Some("extent_tree"));
    }
    use super::*;
    use refgate_common::event::*;
    use refgate_common::trace::{TraceHeader, TraceWriter};

    pub fn ev(ts_ns: u64, tid: u32, kind: EventKind) -> Record {
        Record::Event(Event {
            ts_ns,
            cpu: tid % 2,
            tid,
            kind,
        })
    }

    pub fn head(fs: FsId, bytenr: u64) -> RefHead {
        RefHead {
            fs,
            bytenr,
            num_bytes: 4096,
            action: ADD_DELAYED_EXTENT,
            is_data: false,
        }
    }

    /// A small trace with every event kind, two tasks and one filesystem; `finish`: whether it
    /// has its end-of-trace frame.
    #[allow(
        clippy::too_many_lines,
        reason = "test fixture: one record of every kind, spelled out"
    )]
    pub fn small_trace(finish: bool) -> Vec<u8> {
        let tree = TreeRef {
            fs: 0,
            bytenr: 1 << 20,
            num_bytes: 16384,
            action: ADD_DELAYED_REF,
            parent: 0,
            ref_root: 5,
            level: 0,
            ref_type: TREE_BLOCK_REF_KEY,
            seq: 0,
        };
        let data = DataRef {
            fs: 0,
            bytenr: 2 << 20,
            num_bytes: 4096,
            action: ADD_DELAYED_REF,
            parent: 0,
            ref_root: 5,
            owner: 257,
            offset: 0,
            ref_type: EXTENT_DATA_REF_KEY,
            seq: 0,
        };
        let recs = vec![
            Record::Filesystem {
                id: 0,
                fsid: [0xab; 16],
            },
            Record::Task(Task {
                tid: 100,
                tgid: 100,
                comm: "writer".into(),
            }),
            Record::Task(Task {
                tid: 200,
                tgid: 200,
                comm: "btrfs-transaction".into(),
            }),
            ev(
                1_000_000,
                100,
                EventKind::TransHandleStart {
                    handle: u64::MAX - 7,
                },
            ),
            ev(1_001_000, 100, EventKind::AddTreeRef(tree)),
            ev(1_002_000, 100, EventKind::AddDataRef(data)),
            ev(1_003_000, 100, EventKind::AddRefHead(head(0, 1 << 20))),
            ev(1_004_000, 100, EventKind::AddRefHead(head(0, 2 << 20))),
            ev(
                1_005_000,
                100,
                EventKind::TransHandleEnd {
                    handle: u64::MAX - 7,
                },
            ),
            // A run call from 2.0 ms to 2.5 ms with a contended lock (ts = end of the wait)
            // and an extent-tree lock wait inside it.
            ev(
                2_000_000,
                200,
                EventKind::RunDelayedRefsCall {
                    arg: 0,
                    ret: 0,
                    duration_ns: 500_000,
                },
            ),
            ev(
                2_100_000,
                200,
                EventKind::Contention {
                    role: LockRole::HeadMutex,
                    lock_addr: 0xffff_8881_0000_1000,
                    flags: 2,
                    ret: 0,
                    wait_ns: 50_000,
                },
            ),
            ev(2_200_000, 200, EventKind::RunRefHead(head(0, 1 << 20))),
            ev(
                2_300_000,
                200,
                EventKind::TreeLock {
                    fs: 0,
                    block: 30 << 20,
                    generation: 9,
                    wait_ns: 20_000,
                    owner: 2,
                    is_log_tree: false,
                },
            ),
            ev(2_310_000, 200, EventKind::RunTreeRef(tree)),
            ev(2_320_000, 200, EventKind::RunDataRef(data)),
            ev(
                3_000_000,
                200,
                EventKind::CommitTransactionCall {
                    handle: u64::MAX - 7,
                    ret: -28,
                    duration_ns: 100_000,
                },
            ),
            ev(
                3_050_000,
                200,
                EventKind::TransactionCommit {
                    fs: 0,
                    generation: 9,
                    root_objectid: 1,
                },
            ),
            Record::Stats(Stats {
                lost_per_cpu: vec![0, 0],
                ..Stats::default()
            }),
        ];
        let header = TraceHeader {
            kernel_release: "6.1.0-test".into(),
            hostname: "testhost".into(),
            cpu_count: 2,
            ..TraceHeader::default()
        };
        let mut out = Vec::new();
        let mut w = TraceWriter::new(&mut out, &header).unwrap();
        for r in &recs {
            w.write(r).unwrap();
        }
        if finish {
            w.finish().unwrap();
        } else {
            // What a recorder that was killed after its last flush leaves behind.
            w.flush().unwrap();
            drop(w);
        }
        out
    }

    /// Events in [`small_trace`].
    pub const SMALL_EVENTS: u64 = 14;

    pub fn export_small(
        format: Format,
        finish: bool,
        partial: bool,
    ) -> Result<(Exported, Vec<u8>)> {
        let bytes = small_trace(finish);
        let reader = TraceReader::open(std::io::Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        let r = export(reader, format, &mut out, partial)?;
        Ok((r, out))
    }

    #[test]
    fn fields_cover_each_kind() {
        let bytes = small_trace(true);
        let mut src = Source::new(TraceReader::open(std::io::Cursor::new(bytes)).unwrap());
        let mut rows = Vec::new();
        while let Some(e) = src.next_event() {
            let row = serde_json::to_value(Row::new(&e, src.tasks.get(&e.tid))).unwrap();
            rows.push(row);
        }
        assert_eq!(rows.len() as u64, SMALL_EVENTS);
        let by_kind = |k: &str| rows.iter().find(|r| r["kind"] == k).unwrap().clone();
        let c = by_kind("contention_begin/end");
        assert_eq!(c["role"], "head_mutex");
        assert_eq!(c["lock_addr"], "0xffff888100001000");
        assert_eq!(c["probe"], "lock:contention_begin/end");
        assert_eq!(c["comm"], "btrfs-transaction");
        assert!(c.get("bytenr").is_none(), "no fields of other kinds: {c}");
        let d = by_kind("add_delayed_data_ref");
        assert_eq!(d["owner"], 257);
        assert_eq!(d["ref_type"], EXTENT_DATA_REF_KEY);
        assert_eq!(d["tgid"], 100);
        let k = by_kind("btrfs_commit_transaction");
        assert_eq!(k["ret"], -28);
        assert_eq!(k["handle"], "0xfffffffffffffff8");
        assert_eq!(src.fsid(0), Some("abababababababababababababababab"));
    }

    #[test]
    fn damaged_trace_is_refused_unless_partial() {
        for format in [Format::Chrome, Format::Jsonl, Format::Parquet] {
            let e = export_small(format, false, false).unwrap_err().to_string();
            assert!(e.contains("without its end-of-trace frame"), "{e}");
            assert!(e.contains("--partial"), "{e}");
            let (r, out) = export_small(format, false, true).unwrap();
            assert_eq!(r.events, SMALL_EVENTS);
            assert!(!out.is_empty());
        }
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            Format::from_extension(Path::new("a.json")),
            Some(Format::Chrome)
        );
        assert_eq!(
            Format::from_extension(Path::new("a.ndjson")),
            Some(Format::Jsonl)
        );
        assert_eq!(
            Format::from_extension(Path::new("x/a.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_extension(Path::new("a.bin")), None);
        assert_eq!(Format::from_extension(Path::new("-")), None);
    }
}
