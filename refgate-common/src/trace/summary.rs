//! What `refgate inspect` shows about a trace: its header, what it holds, and whether it is whole.
//!
//! [`summarize`] reads a trace once, in bounded memory apart from the per-task and per-head
//! tables (one entry per distinct tid and per distinct extent bytenr); [`render_text`] lays the
//! result out for a terminal. [`Summary`] serializes (serde) for `--json`; its top-level keys
//! include every [`TraceHeader`] field (`kernel_release`, `probes`, …), `events_by_kind`,
//! `lost_events` and `duration_seconds`.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read;

use serde::Serialize;

use super::{Damage, RunArg, TraceHeader, TraceReader};
use crate::event::{Event, EventKind, FsId, LockRole, Record, Stats};

/// How many tasks and heads the summary lists.
pub const TOP_TASKS: usize = 20;
pub const TOP_HEADS: usize = 10;

/// Counters of what the recorder filtered out (from the last [`Stats`] record).
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    pub contention_not_btrfs: u64,
    pub tree_lock_not_extent: u64,
    pub other_fs: u64,
    pub unpaired_contention: u64,
}

/// Events of one task.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskCount {
    pub tid: u32,
    /// From the trace's `Task` record, if it has one for this tid.
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub events: u64,
}

/// Add and run events of one delayed-ref head (extent).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct HeadCount {
    pub fs: FsId,
    pub bytenr: u64,
    /// `add_delayed_{tree,data}_ref` and `add_delayed_ref_head` events.
    pub adds: u64,
    /// `run_delayed_{tree,data}_ref` and `run_delayed_ref_head` events.
    pub runs: u64,
}

/// Contention of one lock role, in `perf lock contention` columns.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ContentionRow {
    /// The role's id ([`crate::names::lock`]), e.g. `delayed_refs_lock`.
    pub role: LockRole,
    /// The role's label, e.g. `delayed_refs->lock`.
    pub label: &'static str,
    pub contended: u64,
    pub total_wait_ns: u64,
    pub max_wait_ns: u64,
    pub avg_wait_ns: u64,
}

/// The `schema` of `refgate inspect --json` (docs/schema/inspect.schema.json).
pub const SCHEMA: &str = "refgate.inspect/1";

/// One filesystem of the trace: its table index (`fs` of events) and fsid.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct FsEntry {
    /// The index events name it by.
    pub fs: FsId,
    /// Its fsid, 32 hex digits.
    pub fsid: String,
}

/// Everything `refgate inspect` reports.
#[derive(Serialize, Clone, Debug)]
pub struct Summary {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The file's name as the reader knows it (the path for `open_path`).
    pub name: String,
    pub format_version: u16,
    /// The header's fields at the top level; `start_unix_ns` as a decimal string (it is
    /// above 2^53, where JSON readers such as jq and JavaScript round).
    #[serde(flatten, serialize_with = "header_json")]
    pub header: TraceHeader,
    /// Records read (events, tasks, filesystems, statistics).
    pub records: u64,
    pub events: u64,
    /// Earliest and latest event timestamp (CLOCK_MONOTONIC ns), if any event.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// From the earliest to the latest event.
    pub duration_seconds: f64,
    /// Probe name as the kernel names it ([`EventKind::probe_name`]) → events.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Events lost in the ring buffer (last `Stats` record; 0 if none).
    pub lost_events: u64,
    pub lost_per_cpu: Vec<u64>,
    /// Whether the trace has a `Stats` record at all (without one, `lost_events` is unknown).
    pub has_stats: bool,
    pub filtered: Filtered,
    /// Filesystems in the trace: table index and fsid (hex).
    pub filesystems: Vec<FsEntry>,
    /// Distinct tids with events.
    pub task_count: u64,
    /// The [`TOP_TASKS`] tasks with most events, most first.
    pub tasks: Vec<TaskCount>,
    /// Distinct heads (fs, bytenr) with add or run events.
    pub head_count: u64,
    /// The [`TOP_HEADS`] heads with most add+run events, most first.
    pub busiest_heads: Vec<HeadCount>,
    /// One row per [`LockRole`], in [`LockRole::ALL`] order.
    pub contention: Vec<ContentionRow>,
    /// Whether the trace ends with its end-of-trace frame.
    pub finished: bool,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<Damage>,
    /// `damage` as a sentence naming the file.
    pub damage_message: Option<String>,
}

/// [`TraceHeader`] as every JSON output writes it (`inspect --json`, the exports' metadata):
/// enums as snake_case strings, `start_unix_ns` as a decimal string.
pub struct HeaderJson<'a>(pub &'a TraceHeader);

impl Serialize for HeaderJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        header_json(self.0, s)
    }
}

/// [`TraceHeader`] as `inspect --json` writes it (see [`Summary::header`]).
fn header_json<S: serde::Serializer>(h: &TraceHeader, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct View<'a> {
        kernel_release: &'a str,
        probes: &'a [super::ProbeInfo],
        clock: super::Clock,
        cpu_count: u32,
        tool_version: &'a str,
        hostname: &'a str,
        start_unix_ns: String,
        provenance: &'a super::Provenance,
        run_arg: RunArg,
        nodesize: Option<u32>,
        pointers: super::Pointers,
    }
    // Destructured, so that a field added to the header cannot be left out here.
    let TraceHeader {
        kernel_release,
        probes,
        clock,
        cpu_count,
        tool_version,
        hostname,
        start_unix_ns,
        provenance,
        run_arg,
        nodesize,
        pointers,
    } = h;
    View {
        kernel_release,
        probes,
        clock: *clock,
        cpu_count: *cpu_count,
        tool_version,
        hostname,
        start_unix_ns: start_unix_ns.to_string(),
        provenance,
        run_arg: *run_arg,
        nodesize: *nodesize,
        pointers: *pointers,
    }
    .serialize(s)
}

/// What [`summarize`] counts while it reads.
#[derive(Default)]
struct Tally {
    records: u64,
    events: u64,
    first: Option<u64>,
    last: Option<u64>,
    by_kind: BTreeMap<&'static str, u64>,
    stats: Option<Stats>,
    filesystems: Vec<(FsId, String)>,
    tasks: HashMap<u32, (u32, String)>,
    per_tid: HashMap<u32, u64>,
    /// Per head: (add events, run events).
    heads: HashMap<(FsId, u64), (u64, u64)>,
    /// Per [`LockRole`]: (contended, total wait ns, max wait ns).
    cont: [(u64, u64, u64); LockRole::ALL.len()],
}

impl Tally {
    fn add(&mut self, rec: Record) {
        self.records += 1;
        match rec {
            Record::Event(e) => self.add_event(&e),
            Record::Task(t) => {
                self.tasks.insert(t.tid, (t.tgid, t.comm));
            }
            Record::Filesystem { id, fsid } => {
                self.filesystems
                    .push((id, fsid.iter().map(|b| format!("{b:02x}")).collect()));
            }
            Record::Stats(s) => self.stats = Some(s),
        }
    }

    fn add_event(&mut self, e: &Event) {
        self.events += 1;
        self.first = Some(self.first.map_or(e.ts_ns, |f| f.min(e.ts_ns)));
        self.last = Some(self.last.map_or(e.ts_ns, |l| l.max(e.ts_ns)));
        *self.by_kind.entry(e.kind.probe_name()).or_default() += 1;
        *self.per_tid.entry(e.tid).or_default() += 1;
        let (head, is_add) = match &e.kind {
            EventKind::AddTreeRef(r) => (Some((r.fs, r.bytenr)), true),
            EventKind::AddDataRef(r) => (Some((r.fs, r.bytenr)), true),
            EventKind::AddRefHead(r) => (Some((r.fs, r.bytenr)), true),
            EventKind::RunTreeRef(r) => (Some((r.fs, r.bytenr)), false),
            EventKind::RunDataRef(r) => (Some((r.fs, r.bytenr)), false),
            EventKind::RunRefHead(r) => (Some((r.fs, r.bytenr)), false),
            EventKind::Contention { role, wait_ns, .. } => {
                let c = &mut self.cont[*role as usize];
                c.0 += 1;
                c.1 = c.1.saturating_add(*wait_ns);
                c.2 = c.2.max(*wait_ns);
                (None, false)
            }
            _ => (None, false),
        };
        if let Some(k) = head {
            let h = self.heads.entry(k).or_default();
            if is_add {
                h.0 += 1;
            } else {
                h.1 += 1;
            }
        }
    }

    /// The [`TOP_TASKS`] tasks with most events, most first.
    fn top_tasks(&self) -> Vec<TaskCount> {
        let mut list: Vec<TaskCount> = self
            .per_tid
            .iter()
            .map(|(&tid, &n)| {
                let t = self.tasks.get(&tid);
                TaskCount {
                    tid,
                    tgid: t.map(|t| t.0),
                    comm: t.map(|t| t.1.clone()),
                    events: n,
                }
            })
            .collect();
        list.sort_by(|a, b| b.events.cmp(&a.events).then(a.tid.cmp(&b.tid)));
        list.truncate(TOP_TASKS);
        list
    }

    /// The [`TOP_HEADS`] heads with most add+run events, most first.
    fn top_heads(&self) -> Vec<HeadCount> {
        let mut list: Vec<HeadCount> = self
            .heads
            .iter()
            .map(|(&(fs, bytenr), &(adds, runs))| HeadCount {
                fs,
                bytenr,
                adds,
                runs,
            })
            .collect();
        list.sort_by(|a, b| {
            (b.adds + b.runs)
                .cmp(&(a.adds + a.runs))
                .then((a.fs, a.bytenr).cmp(&(b.fs, b.bytenr)))
        });
        list.truncate(TOP_HEADS);
        list
    }

    /// One row per [`LockRole`], in [`LockRole::ALL`] order.
    fn contention(&self) -> Vec<ContentionRow> {
        LockRole::ALL
            .iter()
            .map(|&role| {
                let (n, total, max) = self.cont[role as usize];
                ContentionRow {
                    role,
                    label: role.name().label,
                    contended: n,
                    total_wait_ns: total,
                    max_wait_ns: max,
                    avg_wait_ns: total.checked_div(n).unwrap_or(0),
                }
            })
            .collect()
    }
}

/// Read `reader` to its end (or its damage) and summarize what it holds.
pub fn summarize<R: Read>(mut reader: TraceReader<R>) -> Summary {
    let mut t = Tally::default();
    for rec in reader.by_ref() {
        t.add(rec);
    }
    let (tasks, busiest_heads, contention) = (t.top_tasks(), t.top_heads(), t.contention());
    let stats_known = t.stats.is_some();
    let stats = t.stats.unwrap_or_default();
    let duration_ns = match (t.first, t.last) {
        (Some(f), Some(l)) => l - f,
        _ => 0,
    };
    Summary {
        schema: SCHEMA,
        name: reader.name().to_string(),
        format_version: reader.format_version(),
        header: reader.header().clone(),
        records: t.records,
        events: t.events,
        first_ts_ns: t.first,
        last_ts_ns: t.last,
        duration_seconds: duration_ns as f64 / 1e9,
        events_by_kind: t.by_kind,
        lost_events: stats.lost_events(),
        lost_per_cpu: stats.lost_per_cpu.clone(),
        has_stats: stats_known,
        filtered: Filtered {
            contention_not_btrfs: stats.contention_not_btrfs,
            tree_lock_not_extent: stats.tree_lock_not_extent,
            other_fs: stats.other_fs,
            unpaired_contention: stats.unpaired_contention,
        },
        filesystems: t
            .filesystems
            .into_iter()
            .map(|(fs, fsid)| FsEntry { fs, fsid })
            .collect(),
        task_count: t.per_tid.len() as u64,
        tasks,
        head_count: t.heads.len() as u64,
        busiest_heads,
        contention,
        finished: reader.finished(),
        damage: reader.damage().cloned(),
        damage_message: reader.damage_error().map(|e| e.to_string()),
    }
}

/// A duration the way `perf lock contention` prints it.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.2} us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

/// An integer with thousands separators.
fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Column alignment.
#[derive(Clone, Copy)]
enum Al {
    L,
    R,
}

/// Lay out `rows` under `head` with two-space gutters, indented by two spaces.
fn table(out: &mut String, head: &[(&str, Al)], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|(h, _)| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.enumerate() {
            let pad = w[i] - c.chars().count();
            s.push(' ');
            match head[i].1 {
                Al::L => {
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', pad));
                }
                Al::R => {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(c);
                }
            }
            s.push(' ');
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut head.iter().map(|(h, _)| *h));
    for r in rows {
        line(out, &mut r.iter().map(String::as_str));
    }
}

/// The summary for humans: aligned columns, one section per table.
pub fn render_text(s: &Summary) -> String {
    let mut o = String::new();
    header_lines(&mut o, s);
    content_lines(&mut o, s);
    probe_tables(&mut o, s);
    task_and_lock_tables(&mut o, s);
    o
}

/// The header: the file, the recorder and its host, how it was run.
fn header_lines(o: &mut String, s: &Summary) {
    let h = &s.header;
    let _ = writeln!(o, "trace      {} (format v{})", s.name, s.format_version);
    let _ = writeln!(
        o,
        "recorded   by refgate {} on {}, kernel {}, {} CPUs, clock {}, started at unix {:.3} s",
        or_unknown(&h.tool_version),
        or_unknown(&h.hostname),
        or_unknown(&h.kernel_release),
        h.cpu_count,
        h.clock.name(),
        h.start_unix_ns as f64 / 1e9,
    );
    let p = &h.provenance;
    let _ = writeln!(
        o,
        "command    {}",
        if p.command_line.is_empty() {
            "(not recorded)".to_string()
        } else {
            p.command_line.join(" ")
        }
    );
    let _ = writeln!(
        o,
        "workload   {}{}",
        if p.scratch {
            "refgate --scratch workload; "
        } else {
            ""
        },
        or_unknown(&p.workload)
    );
    let _ = writeln!(
        o,
        "run arg    btrfs_run_delayed_refs' 2nd argument is {}; nodesize {}",
        match h.run_arg {
            RunArg::Unknown => "unknown",
            RunArg::Count => "a count of refs (kernel <= 6.6)",
            RunArg::MinBytes => "min_bytes (kernel >= 6.7)",
        },
        h.nodesize.map_or("unknown".to_string(), |v| v.to_string())
    );
    let _ = writeln!(o, "pointers   {}", h.pointers.describe());
}

/// What the trace holds, what was lost or filtered, and whether it is whole.
fn content_lines(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "content    {} events in {:.3} s, {} records, {} tasks, {} heads, {} filesystem(s)",
        n(s.events),
        s.duration_seconds,
        n(s.records),
        n(s.task_count),
        n(s.head_count),
        s.filesystems.len()
    );
    let _ = writeln!(
        o,
        "lost       {}",
        if s.has_stats {
            format!(
                "{} events (ring buffer full){}",
                n(s.lost_events),
                if s.lost_events > 0 {
                    format!(
                        "; per CPU: {}",
                        s.lost_per_cpu
                            .iter()
                            .map(|&v| n(v))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                } else {
                    String::new()
                }
            )
        } else {
            "unknown (the trace has no statistics record)".to_string()
        }
    );
    let f = &s.filtered;
    let _ = writeln!(
        o,
        "filtered   {} contentions without btrfs on the stack, {} tree locks of other trees, \
         {} events of other filesystems, {} unpaired contentions",
        n(f.contention_not_btrfs),
        n(f.tree_lock_not_extent),
        n(f.other_fs),
        n(f.unpaired_contention)
    );
    let _ = writeln!(
        o,
        "state      {}",
        match &s.damage_message {
            None if s.finished => "complete".to_string(),
            None => "no end-of-trace frame".to_string(),
            Some(m) => format!("DAMAGED: {m}"),
        }
    );
}

/// The probes (attached or not, why) and the events each produced.
fn probe_tables(o: &mut String, s: &Summary) {
    let h = &s.header;

    o.push_str("\nProbes\n");
    let rows: Vec<Vec<String>> = h
        .probes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.name().label.to_string(),
                if p.attached { "yes" } else { "no" }.to_string(),
                p.note.clone(),
            ]
        })
        .collect();
    table(
        o,
        &[
            ("probe", Al::L),
            ("kind", Al::L),
            ("attached", Al::L),
            ("note", Al::L),
        ],
        &rows,
    );

    o.push_str("\nEvents by probe\n");
    let rows: Vec<Vec<String>> = s
        .events_by_kind
        .iter()
        .map(|(k, &v)| {
            vec![
                k.to_string(),
                n(v),
                format!("{:.1} %", 100.0 * v as f64 / s.events.max(1) as f64),
            ]
        })
        .collect();
    table(
        o,
        &[("probe", Al::L), ("events", Al::R), ("share", Al::R)],
        &rows,
    );
}

/// The busiest tasks and heads, and the lock contention by role.
fn task_and_lock_tables(o: &mut String, s: &Summary) {
    task_and_head_tables(o, s);
    contention_table(o, s);
}

/// The busiest tasks and the busiest heads.
fn task_and_head_tables(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "\nTasks (top {} by events)", TOP_TASKS);
    let rows: Vec<Vec<String>> = s
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.tid.to_string(),
                t.tgid.map_or("?".into(), |v| v.to_string()),
                t.comm.clone().unwrap_or_else(|| "?".into()),
                n(t.events),
            ]
        })
        .collect();
    table(
        o,
        &[
            ("tid", Al::R),
            ("tgid", Al::R),
            ("comm", Al::L),
            ("events", Al::R),
        ],
        &rows,
    );

    let _ = writeln!(o, "\nBusiest heads (top {} by add+run events)", TOP_HEADS);
    let rows: Vec<Vec<String>> = s
        .busiest_heads
        .iter()
        .map(|hd| {
            vec![
                hd.bytenr.to_string(),
                hd.fs.to_string(),
                n(hd.adds),
                n(hd.runs),
                n(hd.adds + hd.runs),
            ]
        })
        .collect();
    table(
        o,
        &[
            ("bytenr", Al::R),
            ("fs", Al::R),
            ("adds", Al::R),
            ("runs", Al::R),
            ("total", Al::R),
        ],
        &rows,
    );
}

/// The lock contention the recorder attributed to btrfs, by lock role.
fn contention_table(o: &mut String, s: &Summary) {
    o.push_str("\nLock contention (lock:contention_begin/end, by lock role)\n");
    let rows: Vec<Vec<String>> = s
        .contention
        .iter()
        .map(|c| {
            vec![
                n(c.contended),
                fmt_ns(c.total_wait_ns),
                fmt_ns(c.max_wait_ns),
                fmt_ns(c.avg_wait_ns),
                c.label.to_string(),
            ]
        })
        .collect();
    table(
        o,
        &[
            ("contended", Al::R),
            ("total wait", Al::R),
            ("max wait", Al::R),
            ("avg wait", Al::R),
            ("type", Al::L),
        ],
        &rows,
    );
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "(unknown)" } else { s }
}
