//! `refgate inspect`'s summary of a trace.
#![cfg(feature = "std")]
mod common;

use common::*;
use refgate_common::event::*;
use refgate_common::trace::summary::{render_text, summarize};
use refgate_common::trace::*;

fn ev(ts_ns: u64, tid: u32, kind: EventKind) -> Record {
    Record::Event(Event {
        ts_ns,
        cpu: tid % 2,
        tid,
        kind,
    })
}

fn head(bytenr: u64) -> RefHead {
    RefHead {
        fs: 0,
        bytenr,
        num_bytes: 16384,
        action: ADD_DELAYED_REF,
        is_data: false,
    }
}

fn tree(bytenr: u64) -> TreeRef {
    TreeRef {
        fs: 0,
        bytenr,
        num_bytes: 16384,
        action: ADD_DELAYED_REF,
        parent: 0,
        ref_root: 5,
        level: 0,
        ref_type: TREE_BLOCK_REF_KEY,
        seq: 0,
    }
}

fn contention(role: LockRole, wait_ns: u64) -> EventKind {
    EventKind::Contention {
        role,
        lock_addr: 0xffff_0000_1000,
        flags: 0,
        ret: 0,
        wait_ns,
    }
}

fn sample() -> Vec<Record> {
    let a = 1 << 30;
    let b = (1 << 30) + 16384;
    vec![
        Record::Filesystem {
            id: 0,
            fsid: [0xab; 16],
        },
        Record::Task(Task {
            tid: 10,
            tgid: 9,
            comm: "writer".into(),
        }),
        Record::Task(Task {
            tid: 20,
            tgid: 20,
            comm: "kworker/u8:2".into(),
        }),
        ev(1_000_000_000, 10, EventKind::AddRefHead(head(a))),
        ev(1_000_001_000, 10, EventKind::AddTreeRef(tree(a))),
        ev(1_000_002_000, 10, EventKind::AddRefHead(head(b))),
        ev(1_000_003_000, 20, EventKind::RunRefHead(head(a))),
        ev(1_000_004_000, 20, EventKind::RunTreeRef(tree(a))),
        ev(1_000_005_000, 20, contention(LockRole::HeadMutex, 1_000)),
        ev(1_000_006_000, 10, contention(LockRole::HeadMutex, 3_000)),
        ev(1_000_007_000, 30, contention(LockRole::DelayedRefRoot, 500)),
        Record::Stats(Stats {
            lost_per_cpu: vec![1, 1],
            other_fs: 99,
            ..Default::default()
        }),
        ev(
            3_500_000_000,
            30,
            EventKind::RunDelayedRefsCall {
                arg: 0,
                ret: 0,
                duration_ns: 10,
            },
        ),
        Record::Stats(Stats {
            lost_per_cpu: vec![2, 5],
            other_fs: 100,
            ..Default::default()
        }),
    ]
}

#[test]
fn summary_counts_what_the_trace_holds() {
    let (bytes, _) = write_trace(&sample(), &[], true);
    let s = summarize(TraceReader::open(&bytes[..]).unwrap());
    assert_eq!(s.events, 9);
    assert_eq!(s.records, 14);
    assert!(
        (s.duration_seconds - 2.5).abs() < 1e-9,
        "{}",
        s.duration_seconds
    );
    assert_eq!(s.events_by_kind["btrfs:add_delayed_ref_head"], 2);
    assert_eq!(s.events_by_kind["lock:contention_begin/end"], 3);
    assert_eq!(s.events_by_kind["kprobe:btrfs_run_delayed_refs"], 1);
    assert_eq!(s.lost_events, 7, "the last Stats record wins");
    assert_eq!(s.filtered.other_fs, 100);
    assert_eq!(s.tasks[0].tid, 10);
    assert_eq!(s.tasks[0].events, 4);
    assert_eq!(s.tasks[0].comm.as_deref(), Some("writer"));
    let t30 = s.tasks.iter().find(|t| t.tid == 30).unwrap();
    assert_eq!((t30.comm.as_deref(), t30.events), (None, 2));
    assert_eq!(s.busiest_heads[0].bytenr, 1 << 30);
    assert_eq!((s.busiest_heads[0].adds, s.busiest_heads[0].runs), (2, 2));
    assert_eq!(s.head_count, 2);
    let hm = s
        .contention
        .iter()
        .find(|c| c.role == LockRole::HeadMutex)
        .unwrap();
    assert_eq!(
        (
            hm.contended,
            hm.total_wait_ns,
            hm.max_wait_ns,
            hm.avg_wait_ns
        ),
        (2, 4_000, 3_000, 2_000)
    );
    let et = s
        .contention
        .iter()
        .find(|c| c.role == LockRole::ExtentTree)
        .unwrap();
    assert_eq!((et.contended, et.avg_wait_ns), (0, 0));
    assert!(s.finished && s.damage.is_none());
    assert_eq!(
        s.filesystems,
        vec![refgate_common::trace::summary::FsEntry {
            fs: 0,
            fsid: "ab".repeat(16)
        }]
    );
}

#[test]
fn summary_json_has_the_promised_keys() {
    let (bytes, _) = write_trace(&sample(), &[], true);
    let s = summarize(TraceReader::open(&bytes[..]).unwrap());
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["kernel_release"], "6.18.44-test");
    assert_eq!(v["probes"].as_array().unwrap().len(), 2);
    assert_eq!(v["probes"][1]["attached"], false);
    assert_eq!(v["events_by_kind"]["btrfs:run_delayed_tree_ref"], 1);
    assert_eq!(v["lost_events"], 7);
    assert!(v["duration_seconds"].is_f64());
    // Enums as the documented snake_case strings, not Rust's debug names; the start time,
    // above 2^53, as a string; filesystems as objects.
    assert_eq!(v["schema"], "refgate.inspect/1");
    assert_eq!(v["run_arg"], "min_bytes");
    assert_eq!(v["clock"], "monotonic");
    assert!(
        v["pointers"] == "ids" || v["pointers"] == "raw",
        "{}",
        v["pointers"]
    );
    assert!(v["probes"].as_array().unwrap().iter().all(|p| {
        p["kind"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_')
    }));
    assert_eq!(v["start_unix_ns"], s.header.start_unix_ns.to_string());
    assert_eq!(v["filesystems"][0]["fs"], 0);
    assert_eq!(v["contention"][0]["role"], "delayed_refs_lock");
    assert_eq!(v["contention"][0]["label"], "delayed_refs->lock");
    assert_eq!(v["provenance"]["scratch"], true);
    assert!(v["damage"].is_null());
}

#[test]
fn summary_reports_damage_and_keeps_what_came_before() {
    let recs = sample();
    let (bytes, marks) = write_trace(&recs, &[6], true);
    let cut = &bytes[..marks[1].0 as usize + 5];
    let s = summarize(TraceReader::open(cut).unwrap());
    assert_eq!(s.records, 7);
    assert_eq!(s.events, 4);
    assert!(!s.has_stats);
    let d = s.damage.as_ref().unwrap();
    assert_eq!(d.offset, marks[1].0);
    assert!(
        s.damage_message
            .as_ref()
            .unwrap()
            .contains("cut at byte offset")
    );
    let text = render_text(&s);
    assert!(text.contains("DAMAGED"), "{text}");
    assert!(
        text.contains("unknown (the trace has no statistics record)"),
        "{text}"
    );
}

#[test]
fn text_rendering_aligns_columns() {
    let (bytes, _) = write_trace(&sample(), &[], true);
    let text = render_text(&summarize(TraceReader::open(&bytes[..]).unwrap()));
    assert!(text.contains("kernel 6.18.44-test"), "{text}");
    assert!(text.contains("state      complete"), "{text}");
    // The contention table: header and rows end their right-aligned columns at the same place.
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Lock contention"))
        .skip(1)
        .take(5)
        .collect();
    assert!(
        lines[0].contains("contended") && lines[0].contains("avg wait"),
        "{text}"
    );
    let col_end = |l: &str, word: &str| l.find(word).map(|i| i + word.len());
    let end = col_end(lines[0], "avg wait").unwrap();
    let head_mutex = lines.iter().find(|l| l.contains("head->mutex")).unwrap();
    assert_eq!(col_end(head_mutex, "2.00 us"), Some(end), "{text}");
    assert!(head_mutex.trim_start().starts_with('2'), "{head_mutex}");
    assert!(text.contains("btrfs:add_delayed_ref_head"));
    assert!(text.contains("CONFIG_KPROBES is not set"));
}

#[test]
#[ignore = "prints the rendering for a human to look at"]
fn show_text() {
    let (bytes, _) = write_trace(&sample(), &[], true);
    println!(
        "{}",
        render_text(&summarize(TraceReader::open(&bytes[..]).unwrap()))
    );
}
