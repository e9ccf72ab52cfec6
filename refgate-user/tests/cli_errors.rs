//! The CLI's error paths: a clear message, a non-zero exit, never a panic.
mod common;

use std::process::Output;

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails_with(o: Output, needle: &str) {
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {e}"
    );
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
}

#[test]
fn inspect_rejects_bad_files() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        refgate().arg("inspect").arg(&empty).output().unwrap(),
        "empty",
    );
    let foreign = d.path().join("foreign.bin");
    std::fs::write(&foreign, b"PERFILE2 this is perf.data, not a refgate trace").unwrap();
    fails_with(
        refgate().arg("inspect").arg(&foreign).output().unwrap(),
        "not a refgate trace",
    );
    fails_with(
        refgate()
            .arg("inspect")
            .arg(d.path().join("missing.bin"))
            .output()
            .unwrap(),
        "missing.bin",
    );
}

#[test]
fn record_rejects_a_mount_that_is_not_btrfs() {
    if !is_root() {
        eprintln!("skipped: needs root to get past the privilege check");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("t.bin");
    let o = refgate()
        .args(["record", "--no-tui", "--duration", "1", "--mount"])
        .arg(d.path())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    fails_with(o, "not a btrfs");
    assert!(
        !out.exists(),
        "no trace file is left behind when nothing was recorded"
    );
}

#[test]
fn record_without_root_says_so() {
    if !is_root() {
        // Already unprivileged: the check is direct.
        fails_with(
            refgate()
                .args(["record", "--duration", "1"])
                .output()
                .unwrap(),
            "needs root",
        );
        return;
    }
    // Drop to nobody with util-linux's setpriv.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_refgate"))
        .args(["record", "--duration", "1", "-o", "/tmp/refgate-nobody.bin"])
        .output()
        .unwrap();
    fails_with(o, "needs root");
}

#[test]
fn replay_strict_rejects_a_cut_trace_and_an_empty_one() {
    let d = tempfile::tempdir().unwrap();
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/scratch-6.18.bin"
    ))
    .unwrap();
    let cut = d.path().join("cut.bin");
    std::fs::write(&cut, &sample[..sample.len() / 2]).unwrap();
    fails_with(
        refgate()
            .args(["replay", "--no-tui", "--strict"])
            .arg(&cut)
            .output()
            .unwrap(),
        "--strict: replay needs a complete trace",
    );
    let empty = d.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        refgate()
            .args(["replay", "--no-tui"])
            .arg(&empty)
            .output()
            .unwrap(),
        "empty",
    );
}

/// Every usage error is clap's: exit status 2, the offending option named, and for a closed
/// set the values it takes (from the policy registry for `--policy`).
#[test]
fn usage_errors_exit_2_and_name_the_choices() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["replay", "--policy", "nope"],
            &["--policy", "pre", "seed", "modern", "seed-throttle"],
        ),
        (
            &["compare", "--policies", "pre,nope"],
            &["--policies", "modern"],
        ),
        (
            &["replay", "--engine", "gpu"],
            &["--engine", "virtual", "threads"],
        ),
        (&["replay", "--cpus", "0"], &["--threads", "from 1 to 8192"]),
        (
            &["replay", "--seq-rule", "some"],
            &["--seq-rule", "data", "recorded"],
        ),
        (
            &["replay", "--extent-lock", "mutex"],
            &["--extent-lock", "spin", "sleep"],
        ),
        (&["replay", "--speed", "0"], &["--speed", "max"]),
        (
            &["replay", "--replicate", "0"],
            &["--replicate", "at least 1"],
        ),
        (&["compare", "--cpus", "1,0"], &["--cpus", "from 1 to 8192"]),
        (
            &["replay", "--validate", "--workload", "w.jsonl"],
            &["--validate", "--workload"],
        ),
    ];
    for (args, needles) in cases {
        let o = refgate().args(*args).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        for n in *needles {
            assert!(e.contains(n), "{args:?}: stderr lacks {n:?}: {e}");
        }
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
}

/// A kernel version names its era's policy; `refgate policies` lists every one.
#[test]
fn policies_are_listed_and_kernel_versions_are_aliases() {
    let o = refgate().args(["policies", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "refgate.policies/1");
    let names: Vec<_> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["pre", "seed", "seed-throttle", "modern"]);
    let o = refgate()
        .args([
            "replay",
            "--no-tui",
            "--json",
            "--threads",
            "2",
            "--policy",
            "3.10",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["policy"], "seed");
}

/// Without --strict a damaged trace (here: cut mid-frame, and one without its end frame, as
/// `kill -9` leaves it) is replayed up to the damage, and every report says so.
#[test]
fn replay_of_a_damaged_trace_replays_what_precedes_the_damage() {
    use refgate_common::trace::{TraceReader, TraceWriter};
    let d = tempfile::tempdir().unwrap();
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/scratch-6.18.bin"
    ))
    .unwrap();
    let cut = d.path().join("cut.bin");
    std::fs::write(&cut, &sample[..sample.len() / 2]).unwrap();
    // Unfinished: every frame whole, no end-of-trace frame (what a crash after a flush leaves).
    let unfinished = d.path().join("unfinished.bin");
    {
        let mut r = TraceReader::open(&sample[..]).unwrap();
        let header = r.header().clone();
        let records: Vec<_> = r.by_ref().collect();
        let mut w = TraceWriter::new(std::fs::File::create(&unfinished).unwrap(), &header).unwrap();
        for rec in &records[..records.len() * 2 / 3] {
            w.write(rec).unwrap();
        }
        w.flush().unwrap();
        // Dropped without finish().
    }
    for (path, reason) in [
        (&cut, "cut inside a frame"),
        (&unfinished, "no end-of-trace frame"),
    ] {
        let o = refgate()
            .args(["replay", "--no-tui", "--json", "--threads", "4"])
            .arg(path)
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(o.status.success(), "{}: {e}", path.display());
        assert!(
            e.contains("Replaying the") && !e.contains("panicked"),
            "{e}"
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let dmg = &v["trace_damage"];
        assert!(dmg["offset"].as_u64().unwrap() > 0, "{dmg}");
        assert!(dmg["records_kept"].as_u64().unwrap() > 1000, "{dmg}");
        assert!(dmg["reason"].as_str().unwrap().contains(reason), "{dmg}");
        assert_eq!(dmg["cut_transaction_committed_by_replay"], true);
        assert_eq!(
            v["invariant_ok"], true,
            "the invariant holds for what was replayed"
        );
        // The text report states it under its first line.
        let o = refgate()
            .args(["replay", "--no-tui", "--threads", "4"])
            .arg(path)
            .output()
            .unwrap();
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        let second = text.lines().nth(1).unwrap_or("");
        assert!(
            second.contains("DAMAGED") && second.contains("committed by the replay"),
            "{text}"
        );
        assert!(text.contains("verdict    invariant holds"), "{text}");
    }
    // A whole trace has `trace_damage: null`.
    let o = refgate()
        .args(["replay", "--no-tui", "--json", "--threads", "2"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["trace_damage"].is_null(), "{}", v["trace_damage"]);
}

/// One cause, printed once, in the user's terms: a directory given as a trace, an output in a
/// missing directory (named, not our temporary file), every bad item of a list, and negative
/// numbers refused by the option's own check rather than taken for options.
#[test]
fn errors_name_the_cause_once_in_the_users_terms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["replay", d, "--no-tui"],
        vec!["inspect", d],
        vec!["export", d],
    ] {
        let o = refgate().args(&args).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert_eq!(e.matches("is a directory").count(), 1, "{args:?}: {e}");
        assert!(e.contains(&format!("{d}/trace.bin")), "{args:?}: {e}");
        assert!(!e.contains("os error"), "{args:?}: {e}");
    }
    let o = refgate()
        .args(["replay", &format!("{d}/missing.bin"), "--no-tui"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(e.matches("No such file").count(), 1, "{e}");

    let out = format!("{d}/no/such/dir/x.parquet");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");
    let o = refgate()
        .args(["export", sample, "-o", &out])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(&out) && e.contains(&format!("{d}/no/such/dir does not exist")),
        "{e}"
    );
    assert!(!e.contains("x.parquet.tmp"), "our temporary name: {e}");

    let o = refgate()
        .args(["compare", "--cpus", "0,abc,3,-2"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("`0`, `abc`, `-2` are not CPU counts from 1 to 8192"),
        "{e}"
    );

    for args in [["replay", "--speed", "-1"], ["replay", "--threads", "-3"]] {
        let o = refgate().args(args).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(&format!("invalid value '{}'", args[2])), "{e}");
        assert!(
            !e.contains("-- -"),
            "clap's advice would make the number the trace: {e}"
        );
    }
}

/// Numbers that would exhaust the machine are refused before any work, naming what to lower:
/// a CPU count past x86-64's CONFIG_NR_CPUS ceiling by the parser, a replica count too big
/// for memory or for vm.max_map_count by the estimate (issue: limits).
#[test]
fn replays_the_machine_cannot_hold_are_refused_up_front() {
    let o = refgate()
        .args(["replay", "--threads", "100000000", "--no-tui"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("CPUs from 1 to 8192"), "{e}");
    for args in [
        vec!["replay", "--replicate", "1000000", "--no-tui"],
        vec!["compare", "--cpus", "1,8192", "--replicate", "1000000"],
    ] {
        let o = refgate().args(&args).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains("lower --replicate (now 1000000)"),
            "{args:?}: {e}"
        );
        assert!(
            !e.contains("MODEL ERROR") && !e.contains("please report"),
            "{e}"
        );
    }
}

/// Every numeric option's bounds, at and past them: past them a usage error (2) or an option
/// error (1) naming the option and the range, never a panic; at them a replay that runs
/// (issue: limits — `--ext-cost-ns 18446744073709551615` and `--cost NAME=2^64-1` used to
/// overflow the virtual clock, `--speed 1e-300` to panic the engine).
#[test]
fn numeric_options_are_bounded_at_both_ends() {
    for (args, code, needle) in [
        (vec!["--threads", "0"], 2, "from 1 to 8192"),
        (vec!["--threads", "8193"], 2, "from 1 to 8192"),
        (vec!["--ext-cost-ns", "0"], 2, "1..=1000000000"),
        (vec!["--ext-cost-ns", "1000000001"], 2, "1..=1000000000"),
        (
            vec!["--ext-cost-ns", "18446744073709551615"],
            2,
            "1..=1000000000",
        ),
        (vec!["--cost", "add_ref=0"], 1, "at least 1"),
        (
            vec!["--cost", "add_ref=1000000001"],
            1,
            "at most 1000000000",
        ),
        (
            vec!["--cost", "run_ref=18446744073709551615"],
            1,
            "at most 1000000000",
        ),
        (vec!["--speed", "0"], 2, "0.000001 to 1000000"),
        (vec!["--speed", "1e-300"], 2, "0.000001 to 1000000"),
        (vec!["--speed", "1e7"], 2, "0.000001 to 1000000"),
        (vec!["--speed", "nan"], 2, "0.000001 to 1000000"),
        (vec!["--handle-gap-us", "3600000001"], 2, "0..=3600000000"),
        (vec!["--replicate", "0"], 2, "at least 1"),
        (vec!["--sim-seed", "18446744073709551616"], 2, "--sim-seed"),
        (
            vec!["--until", "0"],
            2,
            "positive number of virtual seconds",
        ),
        (vec!["--extent-items", "0"], 2, "1..=100000000"),
        (vec!["--extent-items", "100000001"], 2, "1..=100000000"),
        (vec!["--extent-items", "-1"], 2, "--extent-items"),
        (vec!["--extent-tree", "bplus"], 2, "btree, single"),
    ] {
        let o = refgate()
            .args(["replay", "--no-tui"])
            .args(&args)
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
    // At the bounds, a replay runs.
    for args in [
        vec!["--ext-cost-ns", "1000000000"],
        vec!["--cost", "context_switch=1000000000"],
        vec!["--sim-seed", "18446744073709551615"],
        vec!["--speed", "1000000"],
        vec!["--handle-gap-us", "3600000000"],
        vec!["--extent-items", "100000000"],
    ] {
        let o = refgate()
            .args(["replay", "--no-tui", "--json", "--threads", "2"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
}

/// Under an address-space limit (`ulimit -v`, issue 26 item 3), a sweep the limit cannot hold
/// is refused up front, in well under a second, naming the limit, the need and the option to
/// lower, and not after the points before it ran: compare runs a point per core, and the check
/// counts them all. (It used to run for 13 s and fail at the 8192-CPU point.)
#[test]
fn compare_under_an_address_space_limit_is_refused_up_front() {
    use std::os::unix::process::CommandExt;
    let mut cmd = refgate();
    cmd.args(["compare", "--cpus", "1,8192", "--format", "json"]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = std::time::Instant::now();
    let o = cmd.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        t.elapsed().as_secs_f64() < 3.0,
        "took {:?}: {e}",
        t.elapsed()
    );
    assert!(
        e.contains("RLIMIT_AS") && e.contains("--cpus") && e.contains("points run at once"),
        "{e}"
    );
    assert!(!e.contains("panicked") && !e.contains("report it"), "{e}");
}
