//! `refgate replay` and `refgate compare` end to end on the bundled sample: the virtual
//! engine's figures are the same run after run (outside `host`), `compare` gives every
//! point, a CSV and plots that name what they show.
mod common;

use common::*;
use serde_json::Value;

/// The x of the SVG text element whose content is `label` (plotters writes the content on a
/// line of its own).
fn legend_x(svg: &str, label: &str) -> Option<u32> {
    let lines: Vec<&str> = svg.lines().collect();
    let i = lines.iter().position(|l| l.trim() == label)?;
    let tag = lines[i - 1];
    let x = tag.split("x=\"").nth(1)?.split('"').next()?;
    x.parse().ok()
}

/// Width, height and how many distinct colours a PNG has (a blank one has one or two).
fn png_stats(png: &[u8]) -> (u32, u32, usize) {
    let mut r = png::Decoder::new(png).read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let bpp = info.color_type.samples() * (info.bit_depth as usize).div_ceil(8);
    let mut colours: Vec<&[u8]> = buf[..info.buffer_size()].chunks(bpp.max(1)).collect();
    colours.sort_unstable();
    colours.dedup();
    (info.width, info.height, colours.len())
}

fn without_host(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("host");
    v
}

#[test]
fn virtual_replay_json_is_identical_twice_and_says_which_engine_ran() {
    let args = [
        "replay",
        "--json",
        "--policy",
        "seed",
        "--threads",
        "16",
        "--replicate",
        "2",
    ];
    let a = json_of(&args);
    assert_eq!(a["engine"], "virtual");
    assert_eq!(a["invariant_ok"], true);
    assert!(a["virtual_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(a["per_cpu_time"].as_array().unwrap().len(), 16);
    assert!(a["host"]["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        a.get("wall_seconds").is_none(),
        "host figures live in `host`"
    );
    let names: Vec<&str> = a["cost_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"run_ref") && names.contains(&"context_switch"));
    assert_eq!(without_host(a.clone()), without_host(json_of(&args)));
    // The threads engine says so too.
    let t = json_of(&["replay", "--json", "--engine", "threads", "--threads", "2"]);
    assert_eq!(t["engine"], "threads");
    // Both engines give every key; what only virtual time has is null under threads.
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&t), keys(&a));
    for k in [
        "virtual_seconds",
        "refs_per_virtual_second",
        "sim_seed",
        "per_cpu_time",
        "cost_model",
    ] {
        assert!(t[k].is_null(), "{k}: {}", t[k]);
    }
    assert!(t["locks"]["extent_tree"]["spin_cpu_seconds"].is_null());
    assert_eq!(t["schema"], "refgate.replay/1");
}

#[test]
fn cost_overrides_are_used_and_bad_ones_explained() {
    let v = json_of(&[
        "replay",
        "--json",
        "--threads",
        "4",
        "--cost",
        "run_ref=5000",
    ]);
    let run = v["cost_model"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "run_ref")
        .unwrap()
        .clone();
    assert_eq!(run["ns"], 5000);
    assert!(run["source"].as_str().unwrap().contains("--cost"));
    let o = refgate()
        .args(["replay", "--threads", "4", "--cost", "nope=3"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("unknown cost `nope`") && e.contains("run_ref"),
        "{e}"
    );
}

#[test]
fn compare_gives_every_point_a_csv_and_labelled_plots() {
    let d = tempfile::tempdir().unwrap();
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");
    let args = [
        "compare",
        trace,
        "--policies",
        "pre,seed",
        "--cpus",
        "1,4",
        "--json",
        "-o",
        d.path().to_str().unwrap(),
    ];
    let v = json_of(&args);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert_eq!(v["engine"], "virtual");
    // One workload for every point: replicated for the largest CPU count.
    assert_eq!(v["replicas"], 1);
    for p in points {
        assert_eq!(p["invariant_ok"], true);
        assert!(p["virtual_seconds"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(v, json_of(&args), "a sweep is deterministic");
    for stem in [
        "spin-total",
        "dr-spin",
        "extent-tree-wait",
        "makespan",
        "throughput",
        "run-call-p99",
        "gate-sleeps",
    ] {
        // plotters writes each text on its own line: fold them.
        let raw = std::fs::read_to_string(d.path().join(format!("{stem}.svg"))).unwrap();
        let svg = raw.replace('\n', " ");
        for needle in [
            "virtual CPUs",
            "> pre <",
            "> seed <",
            // The footer, in words.
            "Recorded on",
            "Costs charged per step",
            "queueing a ref",
            "B-tree of per-block",
            // Titled by the trace's file name, not its path.
            "— scratch-6.18.bin",
        ] {
            assert!(svg.contains(needle), "{stem}.svg lacks {needle:?}");
        }
        assert!(
            !svg.contains("/samples/scratch"),
            "{stem}.svg names the path"
        );
        // A caption says what the plot shows.
        let caption = ["Lower is better", "Higher is better", "put to sleep"];
        assert!(
            caption.iter().any(|c| svg.contains(c)),
            "{stem}.svg: no caption"
        );
        // The legend is right of the data: its labels start past the plot's right edge.
        for policy in ["pre", "seed"] {
            let x = legend_x(&raw, policy).unwrap_or_else(|| panic!("{stem}: no {policy} label"));
            assert!(
                x >= 960 - 150,
                "{stem}: the {policy} label is at x {x}, over the data"
            );
        }
        let png = std::fs::read(d.path().join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{stem}.png");
        let (w, h, colours) = png_stats(&png);
        assert_eq!((w, h), (960, 600), "{stem}.png");
        assert!(colours > 4, "{stem}.png is blank ({colours} colours)");
    }
    // The units follow each axis's range: run-call p99s of milliseconds read in ms.
    let svg = std::fs::read_to_string(d.path().join("run-call-p99.svg")).unwrap();
    let p99_max = points
        .iter()
        .map(|p| p["run_call_p99_ns"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let unit = if p99_max >= 1e9 {
        "virtual s)"
    } else if p99_max >= 1e6 {
        "virtual ms)"
    } else if p99_max >= 1e3 {
        "virtual µs)"
    } else {
        "virtual ns)"
    };
    assert!(
        svg.contains(unit),
        "run-call-p99.svg: {p99_max} ns, no {unit:?}"
    );
    let o = refgate()
        .args(["compare", "--policies", "modern", "--cpus", "2", "--csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&o.stdout);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("policy,cpus,virtual_seconds,")
    );
    assert!(lines.next().unwrap().starts_with("modern,2,"));
    assert_eq!(lines.next(), None);
}

/// `export --format workload` then `replay --workload`: the same refs, heads, hold-backs and
/// figures as replaying the trace itself (given the trace's calibrated run cost); and
/// `--dump-state` writes the final extent tree.
#[test]
fn exported_workload_replays_like_its_trace() {
    let d = tempfile::tempdir().unwrap();
    let wl = d.path().join("sample.workload.jsonl");
    let o = refgate()
        .args([
            "export",
            "samples/scratch-6.18.bin",
            "--format",
            "workload",
            "-o",
        ])
        .arg(&wl)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = json_of(&["replay", "--json", "--threads", "8", "--policy", "pre"]);
    let run_cost = trace["ext_cost_ns"].as_u64().unwrap();
    let dump = d.path().join("state.json");
    let replayed = json_of(&[
        "replay",
        "--json",
        "--threads",
        "8",
        "--policy",
        "pre",
        "--workload",
        wl.to_str().unwrap(),
        "--cost",
        &format!("run_ref={run_cost}"),
        "--dump-state",
        dump.to_str().unwrap(),
    ]);
    let strip = |mut v: Value| {
        for k in ["host", "conversion", "trace", "cost_model", "trace_damage"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert!(trace["seq_holdbacks"].as_u64().unwrap() > 0);
    assert_eq!(strip(trace.clone()), strip(replayed));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let extents = state["final_state"]["extents"].as_array().unwrap();
    assert_eq!(
        extents.len() as u64,
        trace["invariant"]["extents_live"].as_u64().unwrap()
    );
    assert_eq!(state["counts"]["refs_run"], trace["refs_run"]);
}

/// `--validate` on both samples: every recorded run event lands in a row (one filesystem
/// in these samples), the replay runs modern on the recorded CPU count, and the overall
/// error is computed over the rows.
#[test]
fn validate_compares_every_recorded_run_with_the_replay() {
    for trace in ["samples/scratch-6.18.bin", "samples/debian-6.1-kprobes.bin"] {
        let path = format!("{}/../{trace}", env!("CARGO_MANIFEST_DIR"));
        let inspect = json_of(&["inspect", &path, "--json"]);
        let v = json_of(&["replay", &path, "--validate", "--json"]);
        assert_eq!(v["policy"], "modern");
        assert_eq!(v["cpus"], inspect["cpu_count"]);
        let rows = v["validation"]["rows"].as_array().unwrap();
        let sum = |side: &str, q: &str| -> u64 {
            rows.iter().map(|r| r[side][q].as_u64().unwrap()).sum()
        };
        let kinds = &inspect["events_by_kind"];
        assert_eq!(
            sum("recorded", "heads_run"),
            kinds["btrfs:run_delayed_ref_head"]
        );
        assert_eq!(
            sum("recorded", "tree_refs_run"),
            kinds["btrfs:run_delayed_tree_ref"]
        );
        assert_eq!(
            sum("recorded", "data_refs_run"),
            kinds["btrfs:run_delayed_data_ref"]
        );
        let refs = sum("recorded", "tree_refs_run") + sum("recorded", "data_refs_run");
        let who = sum("recorded", "run_by_committer")
            + sum("recorded", "run_by_kernel_workers")
            + sum("recorded", "run_by_other_tasks");
        assert_eq!(who, refs, "{trace}: every run ref has a runner");
        assert_eq!(
            sum("replayed", "tree_refs_run") + sum("replayed", "data_refs_run"),
            v["refs_run"].as_u64().unwrap()
        );
        let e = v["validation"]["overall_relative_error"].as_f64().unwrap();
        assert!(e.is_finite() && e >= 0.0, "{e}");
    }
}

/// `--timeline`: Chrome trace-event JSON; per CPU the intervals follow each other without
/// overlap and add up to the makespan; run calls on their own tracks; the queue as a counter.
#[test]
fn timeline_covers_every_cpu_for_the_whole_replay() {
    let d = tempfile::tempdir().unwrap();
    let tl = d.path().join("tl.json");
    let r = json_of(&[
        "replay",
        "--json",
        "--threads",
        "4",
        "--policy",
        "seed",
        "--timeline",
        tl.to_str().unwrap(),
    ]);
    let makespan_us = r["virtual_seconds"].as_f64().unwrap() * 1e6;
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tl).unwrap()).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    assert!(t["otherData"]["truncated_at_ns"].is_null());
    let mut calls = 0;
    for cpu in 0..4u64 {
        let mut end = 0.0f64;
        let mut total = 0.0;
        for e in ev.iter().filter(|e| e["ph"] == "X" && e["tid"] == 2 * cpu) {
            let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
            assert!(dur > 0.0 && ts + 1e-6 >= end, "CPU {cpu}: {e} overlaps");
            end = ts + dur;
            total += dur;
        }
        assert!(
            (total - makespan_us).abs() < 1e-3 * makespan_us,
            "CPU {cpu}: {total} vs {makespan_us}"
        );
        calls += ev
            .iter()
            .filter(|e| e["tid"] == 2 * cpu + 1 && e["name"] == "btrfs_run_delayed_refs")
            .count();
    }
    assert_eq!(
        calls as u64,
        r["run_call_latency"]["count"].as_u64().unwrap()
    );
    assert!(
        ev.iter()
            .any(|e| e["ph"] == "C" && e["name"] == "queue depth")
    );
    // Real threads: a track per thread, in host time, every run call on it.
    let r = json_of(&[
        "replay",
        "--json",
        "--engine",
        "threads",
        "--threads",
        "2",
        "--timeline",
        tl.to_str().unwrap(),
    ]);
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tl).unwrap()).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    assert!(t["otherData"]["clock"].as_str().unwrap().contains("host"));
    let calls = ev
        .iter()
        .filter(|e| e["name"] == "btrfs_run_delayed_refs")
        .count();
    assert_eq!(
        calls as u64,
        r["run_call_latency"]["count"].as_u64().unwrap()
    );
    for tid in [0u64, 2] {
        let mut end = 0.0f64;
        for e in ev.iter().filter(|e| e["ph"] == "X" && e["tid"] == tid) {
            let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
            assert!(dur > 0.0 && ts + 1e-6 >= end, "thread {tid}: {e} overlaps");
            end = ts + dur;
        }
        assert!(end > 0.0, "thread {tid} has a track");
    }
}

/// The text report's gate line follows the policy's own gate, under seed-throttle too.
#[test]
fn seed_throttle_report_has_its_gate_line() {
    let o = refgate()
        .args([
            "replay",
            "--no-tui",
            "--threads",
            "4",
            "--policy",
            "seed-throttle",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("seed-throttle (3.11–3.13)"), "{out}");
    assert!(out.contains("seed gate  "), "{out}");
}

/// `--until T` cuts a virtual replay at T exactly: the report is partial, its clock stops at T
/// (not at the end of the whole run), it is the same every time, and the exit status is 3; a T
/// past the end changes nothing; real threads have no virtual clock to cut.
#[test]
fn until_cuts_the_virtual_clock_where_asked() {
    let full = json_of(&["replay", "--threads", "4", "--json", "--no-tui"]);
    let cut = |t: &str| {
        let o = refgate()
            .args([
                "replay",
                "--threads",
                "4",
                "--json",
                "--no-tui",
                "--until",
                t,
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (o.status.code(), without_host(v))
    };
    let (code, a) = cut("0.01");
    assert_eq!(code, Some(3));
    assert_eq!(a["partial"], true);
    assert_eq!(a["invariant_ok"], Value::Null);
    assert_eq!(a["virtual_seconds"].as_f64(), Some(0.01));
    assert!(a["refs_run"].as_u64() < full["refs_run"].as_u64(), "{a}");
    assert_eq!(cut("0.01"), (code, a));
    let (code, past) = cut("100");
    assert_eq!(code, Some(0));
    assert_eq!(past, without_host(full));
    let o = refgate()
        .args([
            "replay", "--engine", "threads", "--until", "0.01", "--no-tui",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--engine virtual"));
}

/// `compare --format markdown`: a table to paste, one row per point in the JSON's order, with
/// the JSON's figures (makespan in ms), under a line naming the trace by its file name.
#[test]
fn compare_writes_a_markdown_table_with_the_jsons_figures() {
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");
    let args = ["compare", trace, "--policies", "pre,seed", "--cpus", "1,4"];
    let json = json_of(&[&args[..], &["--json"]].concat());
    let o = refgate()
        .args(args)
        .args(["--format", "markdown"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let md = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert!(
        lines[0].starts_with("| policy | CPUs | makespan (ms)"),
        "{md}"
    );
    assert!(lines[1].starts_with("|---|---:|"), "{md}");
    let points = json["points"].as_array().unwrap();
    assert_eq!(lines.len(), 2 + points.len(), "{md}");
    for (row, p) in lines[2..].iter().zip(points) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells[0], p["policy"].as_str().unwrap(), "{row}");
        assert_eq!(cells[1], p["cpus"].to_string(), "{row}");
        let ms: f64 = cells[2].parse().unwrap();
        assert!(
            (ms - p["virtual_seconds"].as_f64().unwrap() * 1e3).abs() < 1e-3,
            "{row}"
        );
    }
    assert!(
        md.contains("of `scratch-6.18.bin`") && !md.contains("/samples/"),
        "{md}"
    );
}

/// `--extent-tree single` is the model before the B-tree: its figures on the bundled sample
/// are the ones main printed before the B-tree landed (measured with that build, 2026-12-04),
/// and the B-tree's differ; both hold the invariant. The B-tree reports its shape, where its
/// size came from, its waits per level and the refs it fed back on its own blocks.
#[test]
fn extent_tree_single_reproduces_the_figures_before_the_btree() {
    // (policy, CPUs, refs_run, virtual_seconds, delayed_refs->lock spin s, extent-tree spin s,
    // extent-tree waits), from the release before `--extent-tree`.
    let before = [
        (
            "seed",
            "32",
            31716,
            0.048751535,
            0.028839823,
            0.040025591,
            30234,
        ),
        (
            "pre",
            "2",
            16055,
            0.026390991,
            0.000925671,
            0.015978406,
            11832,
        ),
        ("modern", "8", 15934, 0.034654329, 0.001799655, 0.0, 84),
    ];
    for (policy, cpus, refs, vs, dr, et, etw) in before {
        let args = ["replay", "--json", "--policy", policy, "--threads", cpus];
        let single = json_of(&[&args[..], &["--extent-tree", "single"]].concat());
        assert_eq!(single["invariant_ok"], true);
        assert_eq!(single["extent_tree"]["model"], "single");
        assert!(single["extent_tree"]["btree"].is_null());
        let got = (
            single["refs_run"].as_u64().unwrap(),
            single["virtual_seconds"].as_f64().unwrap(),
            single["locks"]["delayed_refs_lock"]["spin_cpu_seconds"]
                .as_f64()
                .unwrap(),
            single["locks"]["extent_tree"]["spin_cpu_seconds"]
                .as_f64()
                .unwrap(),
            single["locks"]["extent_tree"]["contended"]
                .as_u64()
                .unwrap(),
        );
        assert_eq!(got, (refs, vs, dr, et, etw), "{policy} at {cpus} CPUs");
        let btree = json_of(&args);
        assert_eq!(btree["invariant_ok"], true);
        let t = &btree["extent_tree"];
        assert_eq!(t["model"], "btree");
        assert_eq!(t["btree"]["nodesize"], 16384, "the sample's header");
        assert_eq!(t["btree"]["size_source"], "initial_extents");
        assert!(t["btree"]["end"]["leaves"].as_u64().unwrap() > 1);
        assert!(t["self_fed_refs"].as_u64().unwrap() > 0);
        assert!(
            t["recorded_self_fed_refs"].as_u64().unwrap() > 0,
            "the sample holds root 2's refs"
        );
        assert!(btree["invariant"]["own_blocks_checked"].as_u64().unwrap() > 0);
        for level in ["root", "node", "leaf"] {
            assert!(t["waits_by_level"][level]["count"].is_u64(), "{level}");
        }
        assert_ne!(
            btree["virtual_seconds"], single["virtual_seconds"],
            "{policy}"
        );
    }
    // `--extent-items` sizes the tree and says so.
    let big = json_of(&[
        "replay",
        "--json",
        "--threads",
        "4",
        "--extent-items",
        "100000",
    ]);
    let b = &big["extent_tree"]["btree"];
    assert_eq!(b["size_source"], "option");
    assert_eq!(b["items"], 100000);
    assert_eq!(b["start"]["levels"], 3);
    assert_eq!(big["invariant_ok"], true);
}
