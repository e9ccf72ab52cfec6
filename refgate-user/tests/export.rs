//! `refgate export` on the bundled samples, checked against `refgate inspect --json`: the Chrome
//! trace against the trace-event format (phases, pid/tid, per-track time order, durations) and
//! its per-probe counts, the JSONL line count, the Parquet row count and per-probe counts read
//! back with the parquet crate; and the error paths (empty, foreign, cut trace).
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::refgate;
use serde_json::Value;

const SAMPLES: [&str; 2] = ["scratch-6.18.bin", "debian-6.1-kprobes.bin"];

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples")
        .join(name)
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "refgate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn inspect(trace: &Path) -> Value {
    let o = ok(refgate()
        .arg("inspect")
        .arg(trace)
        .arg("--json")
        .output()
        .unwrap());
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `events_by_kind` of `refgate inspect --json`.
fn inspect_counts(v: &Value) -> BTreeMap<String, u64> {
    v["events_by_kind"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn export(trace: &Path, format: &str, out: &Path) {
    ok(refgate()
        .arg("export")
        .arg(trace)
        .args(["--format", format, "-o"])
        .arg(out)
        .output()
        .unwrap());
}

const ADD_PROBES: [&str; 3] = [
    "btrfs:add_delayed_tree_ref",
    "btrfs:add_delayed_data_ref",
    "btrfs:add_delayed_ref_head",
];

/// Checks `v` against the trace-event format as refgate uses it; returns the recorded events'
/// counts per probe (`args.probe`) and per event name.
fn check_chrome(v: &Value) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let evs = v["traceEvents"].as_array().expect("traceEvents array");
    let mut by_probe = BTreeMap::new();
    let mut by_name = BTreeMap::new();
    let mut last_ts: HashMap<(u64, String), f64> = HashMap::new();
    let mut named_threads = std::collections::HashSet::new();
    let mut named_processes = std::collections::HashSet::new();
    let mut tracks = std::collections::HashSet::new();
    let mut counters = 0u64;
    for e in evs {
        let name = e["name"].as_str().expect("name");
        let ph = e["ph"].as_str().expect("ph");
        let pid = e["pid"].as_u64().expect("pid");
        match ph {
            "M" => {
                assert!(e["args"]["name"].is_string(), "{e}");
                match name {
                    "process_name" => {
                        named_processes.insert(pid);
                    }
                    "thread_name" => {
                        named_threads.insert((pid, e["tid"].as_u64().expect("tid")));
                    }
                    _ => panic!("unexpected metadata {e}"),
                }
                continue;
            }
            "i" | "X" => {
                let tid = e["tid"].as_u64().expect("tid");
                let cat = e["cat"].as_str().expect("cat");
                assert!(cat == "btrfs" || cat == "lock", "{e}");
                if ph == "X" {
                    let dur = e["dur"].as_f64().expect("an X event has dur");
                    assert!(dur >= 0.0, "{e}");
                } else {
                    assert_eq!(e["s"], "t", "{e}");
                    assert!(e.get("dur").is_none(), "{e}");
                }
                let probe = e["args"]["probe"].as_str().expect("args.probe");
                *by_probe.entry(probe.to_string()).or_default() += 1;
                *by_name.entry(name.to_string()).or_default() += 1;
                tracks.insert((pid, tid));
                let ts = e["ts"].as_f64().expect("ts");
                let track = (pid, format!("thread {tid}"));
                let prev = last_ts.insert(track, ts).unwrap_or(f64::MIN);
                assert!(ts >= prev, "ts goes back on a track: {prev} then {e}");
            }
            "C" => {
                counters += 1;
                assert_eq!(name, "queue depth");
                assert!(e["args"]["num_heads"].is_u64(), "{e}");
                let ts = e["ts"].as_f64().expect("ts");
                let prev = last_ts
                    .insert((pid, format!("counter {name}")), ts)
                    .unwrap_or(f64::MIN);
                assert!(ts >= prev, "counter goes back: {prev} then {e}");
            }
            _ => panic!("unexpected phase {ph}: {e}"),
        }
    }
    for (pid, tid) in &tracks {
        assert!(named_processes.contains(pid), "process {pid} has no name");
        assert!(
            named_threads.contains(&(*pid, *tid)),
            "thread {tid} has no name"
        );
    }
    let heads = by_probe.get("btrfs:add_delayed_ref_head").unwrap_or(&0)
        + by_probe.get("btrfs:run_delayed_ref_head").unwrap_or(&0);
    assert_eq!(counters, heads, "one queue-depth point per head event");
    (by_probe, by_name)
}

#[test]
fn chrome_trace_is_well_formed_and_matches_inspect() {
    let d = tempfile::tempdir().unwrap();
    for s in SAMPLES {
        let trace = sample(s);
        let want = inspect_counts(&inspect(&trace));
        let out = d.path().join(format!("{s}.json"));
        export(&trace, "chrome", &out);
        let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let (by_probe, by_name) = check_chrome(&v);
        assert_eq!(by_probe, want, "{s}: events per probe");
        for probe in ADD_PROBES {
            let name = probe.trim_start_matches("btrfs:");
            assert_eq!(
                by_name.get(name),
                want.get(probe),
                "{s}: {name} events named after their probe"
            );
        }
        assert_eq!(
            v["otherData"]["header"]["kernel_release"],
            inspect(&trace)["kernel_release"]
        );
    }
}

#[test]
fn jsonl_has_one_line_per_event() {
    let d = tempfile::tempdir().unwrap();
    for s in SAMPLES {
        let trace = sample(s);
        let summary = inspect(&trace);
        let out = d.path().join(format!("{s}.jsonl"));
        export(&trace, "jsonl", &out);
        let text = std::fs::read_to_string(&out).unwrap();
        let mut by_probe: BTreeMap<String, u64> = BTreeMap::new();
        let mut lines = 0;
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["ts_ns"].is_u64() && v["tid"].is_u64() && v["kind"].is_string());
            *by_probe
                .entry(v["probe"].as_str().unwrap().to_string())
                .or_default() += 1;
            lines += 1;
        }
        assert_eq!(lines, summary["events"].as_u64().unwrap(), "{s}");
        assert_eq!(by_probe, inspect_counts(&summary), "{s}");
    }
}

#[test]
fn jsonl_to_stdout() {
    let trace = sample(SAMPLES[1]);
    let o = ok(refgate()
        .arg("export")
        .arg(&trace)
        .args(["--format", "jsonl", "-o", "-"])
        .output()
        .unwrap());
    let lines = o
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines as u64, inspect(&trace)["events"].as_u64().unwrap());
}

#[test]
fn parquet_reads_back_with_one_row_per_event() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    use parquet::schema::parser::parse_message_type;
    let d = tempfile::tempdir().unwrap();
    for s in SAMPLES {
        let trace = sample(s);
        let summary = inspect(&trace);
        // The format follows from the extension.
        let out = d.path().join(format!("{s}.parquet"));
        ok(refgate()
            .arg("export")
            .arg(&trace)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap());
        let reader = SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(
            meta.num_rows() as u64,
            summary["events"].as_u64().unwrap(),
            "{s}"
        );
        let projection =
            parse_message_type("message refgate_event { REQUIRED BYTE_ARRAY probe (STRING); }")
                .unwrap();
        let mut by_probe: BTreeMap<String, u64> = BTreeMap::new();
        for row in reader.get_row_iter(Some(projection)).unwrap() {
            let row = row.unwrap();
            *by_probe
                .entry(row.get_string(0).unwrap().clone())
                .or_default() += 1;
        }
        assert_eq!(by_probe, inspect_counts(&summary), "{s}");
    }
}

#[test]
fn default_output_name_comes_from_the_trace() {
    let d = tempfile::tempdir().unwrap();
    ok(refgate()
        .current_dir(d.path())
        .arg("export")
        .arg(sample(SAMPLES[1]))
        .output()
        .unwrap());
    assert!(d.path().join("debian-6.1-kprobes.json").is_file());
}

fn fails_with(o: Output, needle: &str) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected failure; stderr: {e}");
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    e
}

#[test]
fn bad_traces_are_refused_with_a_reason_and_leave_no_output() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.json");
    let run = |trace: &Path, extra: &[&str]| {
        refgate()
            .arg("export")
            .arg(trace)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let empty = d.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(run(&empty, &[]), "is empty");
    let foreign = d.path().join("foreign.bin");
    std::fs::write(&foreign, b"PERFILE2 this is perf.data").unwrap();
    fails_with(run(&foreign, &[]), "not a refgate trace");
    fails_with(run(&d.path().join("missing.bin"), &[]), "missing.bin");

    // Cut in the middle: refused, then exported up to the cut with --partial.
    let full = std::fs::read(sample(SAMPLES[0])).unwrap();
    let cut = d.path().join("cut.bin");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    for format in ["chrome", "jsonl", "parquet"] {
        let e = fails_with(run(&cut, &["--format", format]), "--partial");
        assert!(e.contains("byte offset"), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "one paragraph: {e}");
        assert!(!out.exists(), "no output left behind");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            3,
            "no temporary file left behind"
        );
    }
    let o = ok(run(&cut, &["--format", "jsonl", "--partial"]));
    let warn = String::from_utf8_lossy(&o.stderr);
    assert!(
        warn.contains("warning") && warn.contains("byte offset"),
        "{warn}"
    );
    let lines = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    let whole = inspect(&sample(SAMPLES[0]))["events"].as_u64().unwrap();
    assert!(lines > 0 && lines < whole, "{lines} of {whole}");

    // The output must not be the trace.
    let copy = d.path().join("t.json");
    std::fs::copy(sample(SAMPLES[1]), &copy).unwrap();
    let o = refgate()
        .arg("export")
        .arg(&copy)
        .arg("-o")
        .arg(&copy)
        .output()
        .unwrap();
    fails_with(o, "is the trace itself");
}

#[test]
fn completions_for_each_shell() {
    for (shell, needle) in [
        ("bash", "_refgate()"),
        ("zsh", "#compdef refgate"),
        ("fish", "complete -c refgate"),
    ] {
        let o = ok(refgate().args(["completions", shell]).output().unwrap());
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains(needle), "{shell}: {needle} missing");
        assert!(text.contains("export"), "{shell}: subcommands missing");
        // `--policy` completes to the registry's names, `--engine` to the engines.
        for value in ["seed-throttle", "modern", "threads"] {
            assert!(text.contains(value), "{shell}: value {value} missing");
        }
    }
    let o = refgate().args(["completions", "tcsh"]).output().unwrap();
    assert!(!o.status.success());
}
