//! `cargo xtask fuzz [--time SECS] [--runs N]`: the `cargo fuzz` targets in `fuzz/` (trace
//! reader, inspect's summary, trace → workload), seeded with small cuts of the bundled
//! samples, inputs capped at [`MAX_LEN`] bytes so that one execution takes microseconds.
//! A crash fails the run and names the input to keep in `fuzz/regressions/TARGET/` once fixed
//! (`refgate-user/tests/fuzz_regressions.rs` replays those under `cargo test`).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use refgate_common::{
    event::{EventKind, Record},
    trace::{TraceReader, TraceWriter},
};

pub const TARGETS: [&str; 3] = ["trace_reader", "inspect_summary", "trace_workload"];
/// libFuzzer's `-max_len`: a few frames of a trace.
pub const MAX_LEN: usize = 4096;

/// cargo-fuzz, installed like bpf-linker when missing.
fn setup() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        crate::sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Writes the seeds: windows of each sample's records (around its transaction commits, where
/// the workload conversion has most to do, and at its start) re-encoded with a flush every few
/// records, so each seed is a header and a few small frames; whole, unfinished and cut.
fn seeds(root: &Path, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    for sample in [crate::SAMPLE, "samples/debian-6.1-kprobes.bin"] {
        let path = root.join(sample);
        let mut r = TraceReader::open_path(&path)?;
        let mut header = r.header().clone();
        // The command line and workload text are long and say nothing to the reader's code.
        header.provenance.workload.truncate(40);
        let records: Vec<Record> = r.by_ref().collect();
        let mut starts: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                matches!(r, Record::Event(e) if matches!(e.kind, EventKind::TransactionCommit { .. }))
            })
            .map(|(i, _)| i.saturating_sub(12))
            .collect();
        starts.extend([0, records.len() / 2]);
        for (k, &start) in starts.iter().enumerate().take(24) {
            let window = &records[start..(start + 40).min(records.len())];
            let mut w = TraceWriter::new(Vec::new(), &header)?;
            for (i, rec) in window.iter().enumerate() {
                w.write(rec)?;
                if i % 8 == 7 {
                    w.flush()?;
                }
            }
            w.flush()?;
            let unfinished = w.bytes_written() as usize;
            let whole = w.finish()?;
            let stem = Path::new(sample).file_stem().unwrap().to_string_lossy();
            for (tag, bytes) in [
                ("whole", &whole[..]),
                ("unfinished", &whole[..unfinished]),
                ("cut", &whole[..unfinished * 2 / 3]),
            ] {
                let bytes = &bytes[..bytes.len().min(MAX_LEN)];
                std::fs::write(dir.join(format!("{stem}-{k}-{tag}")), bytes)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// One target's result.
struct Outcome {
    target: &'static str,
    execs: u64,
    seconds: f64,
    peak_rss_mb: u64,
}

/// Runs every target for `time` seconds or `runs` executions (whichever is given; both: the
/// first reached). Fails on the first crash.
pub fn fuzz(root: &Path, time: Option<u64>, runs: Option<u64>) -> Result<()> {
    setup()?;
    let seed_dir = root.join("target/fuzz-seeds");
    let _ = std::fs::remove_dir_all(&seed_dir);
    let n = seeds(root, &seed_dir)?;
    eprintln!(
        "xtask: {n} seeds from the bundled samples in {}",
        seed_dir.display()
    );
    let mut done = Vec::new();
    for target in TARGETS {
        done.push(fuzz_one(root, target, &seed_dir, time, runs)?);
    }
    println!("| target | executions | wall s | executions/s | peak RSS MB | result |");
    println!("|---|---:|---:|---:|---:|---|");
    for o in &done {
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | clean |",
            o.target,
            o.execs,
            o.seconds,
            o.execs as f64 / o.seconds.max(0.001),
            o.peak_rss_mb
        );
    }
    Ok(())
}

/// One `cargo fuzz run` of `target` over its corpus and the seeds; fails on a crash with
/// the log's tail and how to reproduce it.
fn fuzz_one(
    root: &Path,
    target: &'static str,
    seed_dir: &Path,
    time: Option<u64>,
    runs: Option<u64>,
) -> Result<Outcome> {
    let corpus: PathBuf = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz"])
        // Safe Rust: panics, overflow and logic assertions are what there is to find;
        // without a sanitizer an execution is several times faster.
        .args(["--sanitizer", "none", "--debug-assertions", target])
        .arg(&corpus)
        .arg(seed_dir)
        .arg("--")
        .arg(format!("-max_len={MAX_LEN}"))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"]);
    if let Some(t) = time {
        cmd.arg(format!("-max_total_time={t}"));
    }
    if let Some(r) = runs {
        cmd.arg(format!("-runs={r}"));
    }
    eprintln!("xtask: {cmd:?}");
    let t0 = std::time::Instant::now();
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .context("running cargo fuzz")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed:\n{}\n\nThe input is in fuzz/artifacts/{target}/. \
             Reproduce with `cargo +nightly fuzz run --fuzz-dir fuzz {target} FILE`; once \
             fixed, copy it to fuzz/regressions/{target}/ (cargo test replays it).",
            tail.join("\n")
        );
    }
    Ok(Outcome {
        target,
        execs: stat("number_of_executed_units").unwrap_or(0),
        // Includes the build when it was needed; the run itself is at most --time.
        seconds: t0.elapsed().as_secs_f64(),
        peak_rss_mb: stat("peak_rss_mb").unwrap_or(0),
    })
}
