//! `refgate export --format chrome`: the recording as Chrome trace-event JSON
//! (`{"traceEvents": [...]}`, the "JSON Object Format" of the Trace Event Format), which Perfetto
//! (ui.perfetto.dev) and chrome://tracing open.
//!
//! One trace event per recorded event, on the track of the task that recorded it:
//!
//! | recorded event | `ph` | `name` | `cat` | time |
//! |---|---|---|---|---|
//! | `add_delayed_*`, `run_delayed_*`, `btrfs_transaction_commit`, `start_transaction`, `__btrfs_end_transaction` | `i` (thread scope) | the probe's name | `btrfs` | `ts` = the event |
//! | `lock:contention_begin/end` | `X` | the lock's role (`delayed_refs->lock`, `head->mutex`, `extent tree`, `other btrfs`) | `lock` | from `ts − wait_ns` for `wait_ns` |
//! | `btrfs_tree_lock` (extent tree) | `X` | `btrfs_tree_lock` | `lock` | from `ts − diff_ns` for `diff_ns` |
//! | `btrfs_run_delayed_refs`, `btrfs_commit_transaction` calls (kprobes) | `X` | the function | `btrfs` | from the entry for `duration_ns` |
//!
//! Lock waits are named by role, not by probe, because Perfetto and chrome://tracing group and
//! colour slices by name: a track then reads "head->mutex for 50 µs". Every event's `args` hold
//! its probe as `refgate inspect` names it (`probe`), the exact recorded `ts_ns`, the CPU and
//! the decoded fields (those of [`super::Row`]), so counts per probe can be checked against
//! `refgate inspect --json`.
//!
//! Besides those: `M` events naming each process (`process_name`) and each task's thread
//! (`thread_name`, the recorded `comm`), and a `C` counter per filesystem, `queue depth`:
//! `num_heads`, heads added minus heads run so far (`add_delayed_ref_head` − `run_delayed_ref_head`, at 0 at
//! least), the estimate `refgate record`'s dashboard shows, one point per head event.
//!
//! `pid` is the filesystem (its table index + 1; 1 for a trace of one filesystem); an event
//! without a filesystem field (lock waits, the kprobes) goes to its task's most recent
//! filesystem. `tid` is the recorded task id. `ts` and `dur` are microseconds as floating point
//! (ns / 1000, exact to the ns), on the recorded CLOCK_MONOTONIC, so they line up with a `perf`
//! trace of the same machine. Within each track (`pid`, `tid`) events come sorted by start
//! time, longer slices first at equal starts, so enclosing slices precede what they enclose.
//!
//! The whole trace is held in memory to sort it (about 100 bytes per event); JSON of this kind
//! is meant for traces Perfetto can open, not for hours of recording (use `jsonl`/`parquet`).
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use anyhow::{Context, Result};
use refgate_common::event::{Event, EventKind, FsId};
use serde::Serialize;

use super::{Exported, Fields, Source, short_name};

/// One entry of `traceEvents`.
#[derive(Serialize)]
struct TraceEvent<'a, A: Serialize> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u32>,
    /// Scope of an instant event (`t`: thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    args: A,
}

/// `args` of a recorded event.
#[derive(Serialize)]
struct EventArgs<'a> {
    probe: &'static str,
    ts_ns: u64,
    cpu: u32,
    #[serde(flatten)]
    fields: &'a Fields,
}

#[derive(Serialize)]
struct NameArgs<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct DepthArgs {
    /// [`refgate_common::names::counter::NUM_HEADS`]'s id, as the replay timeline's counter
    /// names its quantity by the kernel's field.
    num_heads: u64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The filesystem field of an event, if its kind has one.
fn event_fs(kind: &EventKind) -> Option<FsId> {
    use EventKind::*;
    match kind {
        AddTreeRef(r) | RunTreeRef(r) => Some(r.fs),
        AddDataRef(r) | RunDataRef(r) => Some(r.fs),
        AddRefHead(r) | RunRefHead(r) => Some(r.fs),
        TransactionCommit { fs, .. } | TreeLock { fs, .. } => Some(*fs),
        Contention { .. }
        | RunDelayedRefsCall { .. }
        | TransHandleStart { .. }
        | TransHandleEnd { .. }
        | CommitTransactionCall { .. } => None,
    }
}

/// Start and duration (ns) of an event that is an interval; `None` for an instant.
fn interval(e: &Event) -> Option<(u64, u64)> {
    match e.kind {
        // Recorded at the end of the wait.
        EventKind::Contention { wait_ns, .. } | EventKind::TreeLock { wait_ns, .. } => {
            Some((e.ts_ns.saturating_sub(wait_ns), wait_ns))
        }
        // Recorded at the entry.
        EventKind::RunDelayedRefsCall { duration_ns, .. }
        | EventKind::CommitTransactionCall { duration_ns, .. } => Some((e.ts_ns, duration_ns)),
        _ => None,
    }
}

fn name_and_cat(kind: &EventKind) -> (&'static str, &'static str) {
    match kind {
        EventKind::Contention { role, .. } => (role.name().label, "lock"),
        EventKind::TreeLock { .. } => (short_name(kind.probe_name()), "lock"),
        _ => (short_name(kind.probe_name()), "btrfs"),
    }
}

/// Writes `,\n` between entries.
struct Entries<W: Write> {
    out: W,
    n: u64,
}

impl<W: Write> Entries<W> {
    fn push<A: Serialize>(&mut self, e: &TraceEvent<'_, A>) -> Result<()> {
        if self.n > 0 {
            self.out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut self.out, e)?;
        self.n += 1;
        Ok(())
    }
}

pub fn write<R: Read, W: Write>(src: &mut Source<R>, out: W) -> Result<Exported> {
    write_inner(src, out).context("cannot write the Chrome trace")
}

fn write_inner<R: Read, W: Write>(src: &mut Source<R>, mut out: W) -> Result<Exported> {
    let events = read_events(src);
    out.write_all(b"{\"traceEvents\":[\n")?;
    let mut w = Entries { out, n: 0 };
    write_names(&mut w, src, &events)?;
    write_slices(&mut w, &events)?;
    write_queue_depths(&mut w, &events)?;
    let entries = w.n;
    let mut out = w.out;
    out.write_all(b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":")?;
    serde_json::to_writer(&mut out, &src.metadata_json())?;
    out.write_all(b"}\n")?;
    out.flush()?;
    Ok(Exported {
        events: events.len() as u64,
        entries,
    })
}

/// Every event with its process: its filesystem's id + 1 (events without one take their
/// task's last filesystem, else the first recorded one).
fn read_events<R: Read>(src: &mut Source<R>) -> Vec<(u32, Event)> {
    let mut events: Vec<(u32, Event)> = Vec::new();
    let mut task_fs: HashMap<u32, FsId> = HashMap::new();
    while let Some(e) = src.next_event() {
        let fs = match event_fs(&e.kind) {
            Some(fs) => {
                task_fs.insert(e.tid, fs);
                Some(fs)
            }
            None => task_fs
                .get(&e.tid)
                .copied()
                .or_else(|| src.filesystems.first().map(|f| f.0)),
        };
        events.push((fs.map_or(1, |f| u32::from(f) + 1), e));
    }
    events
}

/// Metadata entries: process (filesystem) and thread (task) names.
fn write_names<R: Read, W: Write>(
    w: &mut Entries<W>,
    src: &Source<R>,
    events: &[(u32, Event)],
) -> Result<()> {
    let pids: BTreeSet<u32> = events.iter().map(|(p, _)| *p).collect();
    let host = &src.header().hostname;
    for &pid in &pids {
        let fs = (pid - 1) as FsId;
        let name = match src.fsid(fs) {
            Some(fsid) => format!("btrfs {} on {host}", &fsid[..8.min(fsid.len())]),
            None => format!("btrfs on {host}"),
        };
        w.push(&TraceEvent {
            name: "process_name",
            cat: None,
            ph: "M",
            ts: None,
            dur: None,
            pid,
            tid: None,
            s: None,
            args: NameArgs { name: &name },
        })?;
    }
    let threads: BTreeSet<(u32, u32)> = events.iter().map(|(p, e)| (*p, e.tid)).collect();
    for &(pid, tid) in &threads {
        let comm = src.tasks.get(&tid).map(|t| t.comm.as_str());
        let name = comm.map_or_else(|| format!("tid {tid}"), str::to_string);
        w.push(&TraceEvent {
            name: "thread_name",
            cat: None,
            ph: "M",
            ts: None,
            dur: None,
            pid,
            tid: Some(tid),
            s: None,
            args: NameArgs { name: &name },
        })?;
    }
    Ok(())
}

/// The recorded events, track by track: slices (`X`) for intervals, instants otherwise.
fn write_slices<W: Write>(w: &mut Entries<W>, events: &[(u32, Event)]) -> Result<()> {
    // Per track, by start time; at equal starts the longer slice first (it encloses).
    let mut order: Vec<(u32, u32, u64, Reverse<u64>, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, (pid, e))| {
            let (start, dur) = interval(e).unwrap_or((e.ts_ns, 0));
            (*pid, e.tid, start, Reverse(dur), i)
        })
        .collect();
    order.sort_unstable();

    for &(pid, tid, start, Reverse(dur), i) in &order {
        let e = &events[i].1;
        let (name, cat) = name_and_cat(&e.kind);
        let fields = Fields::of(&e.kind);
        let is_slice = interval(e).is_some();
        w.push(&TraceEvent {
            name,
            cat: Some(cat),
            ph: if is_slice { "X" } else { "i" },
            ts: Some(us(start)),
            dur: is_slice.then(|| us(dur)),
            pid,
            tid: Some(tid),
            s: (!is_slice).then_some("t"),
            args: EventArgs {
                probe: e.kind.probe_name(),
                ts_ns: e.ts_ns,
                cpu: e.cpu,
                fields: &fields,
            },
        })?;
    }
    Ok(())
}

/// A `queue depth` counter per filesystem (heads added minus heads run), in time order.
fn write_queue_depths<W: Write>(w: &mut Entries<W>, events: &[(u32, Event)]) -> Result<()> {
    let mut heads: BTreeMap<u32, Vec<(u64, usize, bool)>> = BTreeMap::new();
    for (i, (pid, e)) in events.iter().enumerate() {
        match e.kind {
            EventKind::AddRefHead(_) => heads.entry(*pid).or_default().push((e.ts_ns, i, true)),
            EventKind::RunRefHead(_) => heads.entry(*pid).or_default().push((e.ts_ns, i, false)),
            _ => {}
        }
    }
    for (pid, mut list) in heads {
        list.sort_unstable();
        let (mut adds, mut runs) = (0u64, 0u64);
        for (ts, _, is_add) in list {
            if is_add {
                adds += 1;
            } else {
                runs += 1;
            }
            w.push(&TraceEvent {
                name: refgate_common::names::counter::QUEUE_DEPTH.label,
                cat: Some("btrfs"),
                ph: "C",
                ts: Some(us(ts)),
                dur: None,
                pid,
                tid: None,
                s: None,
                args: DepthArgs {
                    num_heads: adds.saturating_sub(runs),
                },
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{SMALL_EVENTS, export_small};
    use serde_json::Value;

    fn find<'a>(evs: &'a [Value], name: &str) -> &'a Value {
        evs.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn slices_instants_counters_and_names() {
        let (r, out) = export_small(Format::Chrome, true, false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let evs = v["traceEvents"].as_array().unwrap();
        assert_eq!(r.events, SMALL_EVENTS);
        assert_eq!(r.entries as usize, evs.len());
        let phase = |p: &str| evs.iter().filter(|e| e["ph"] == p).count();
        // 1 process, 2 threads; 14 events of which 4 are slices; 3 head events.
        assert_eq!(phase("M"), 3);
        assert_eq!(phase("X"), 4);
        assert_eq!(phase("i"), 10);
        assert_eq!(phase("C"), 3);

        let c = find(evs, "head->mutex");
        assert_eq!(
            (c["ph"].as_str(), c["cat"].as_str()),
            (Some("X"), Some("lock"))
        );
        assert_eq!(c["ts"].as_f64(), Some(2050.0));
        assert_eq!(c["dur"].as_f64(), Some(50.0));
        assert_eq!(c["args"]["probe"], "lock:contention_begin/end");
        assert_eq!(c["args"]["ts_ns"], 2_100_000);
        assert_eq!(c["pid"], 1, "a lock wait goes to its task's filesystem");
        let t = find(evs, "btrfs_tree_lock");
        assert_eq!(
            (t["ts"].as_f64(), t["dur"].as_f64()),
            (Some(2280.0), Some(20.0))
        );
        let call = find(evs, "btrfs_run_delayed_refs");
        assert_eq!(
            (call["ts"].as_f64(), call["dur"].as_f64()),
            (Some(2000.0), Some(500.0))
        );
        let commit = find(evs, "btrfs_commit_transaction");
        assert_eq!(commit["args"]["ret"], -28);
        let add = find(evs, "add_delayed_tree_ref");
        assert_eq!(
            (add["ph"].as_str(), add["s"].as_str()),
            (Some("i"), Some("t"))
        );
        assert_eq!(add["ts"].as_f64(), Some(1001.0));
        assert_eq!(add["tid"], 100);

        let depth: Vec<u64> = evs
            .iter()
            .filter(|e| e["ph"] == "C")
            .map(|e| e["args"]["num_heads"].as_u64().unwrap())
            .collect();
        assert_eq!(depth, [1, 2, 1]);
        let thread = |tid: u64| {
            evs.iter()
                .find(|e| e["name"] == "thread_name" && e["tid"] == tid)
                .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        };
        assert_eq!(thread(100).as_deref(), Some("writer"));
        assert_eq!(thread(200).as_deref(), Some("btrfs-transaction"));
        let process = find(evs, "process_name");
        assert_eq!(process["args"]["name"], "btrfs abababab on testhost");
        assert_eq!(v["otherData"]["header"]["kernel_release"], "6.1.0-test");

        // The run call encloses the waits inside it and comes first on its track.
        let on_200: Vec<&str> = evs
            .iter()
            .filter(|e| e["tid"] == 200 && e["ph"] != "M")
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &on_200[..3],
            [
                "btrfs_run_delayed_refs",
                "head->mutex",
                "run_delayed_ref_head"
            ]
        );
    }
}
