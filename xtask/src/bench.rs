//! `cargo xtask bench-probes` and `bench-replay`: the recorder's in-kernel cost per event and
//! the replay of the bundled samples per policy; both print Markdown tables for docs/benchmarks.md.
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{SAMPLE, refgate, root};

/// Three `record --scratch --probe-cost` runs (the workload's contention varies from run to
/// run), each run's per-program table, then the averages and their median.
pub fn bench_probes() -> Result<()> {
    const RUNS: usize = 3;
    let out = std::env::temp_dir().join("refgate-bench-probes.bin");
    let mut averages = Vec::new();
    for run in 1..=RUNS {
        let o = Command::new(refgate())
            .args(["record", "--scratch", "--no-tui", "--probe-cost", "-o"])
            .arg(&out)
            .output()
            .context("running refgate record")?;
        let text = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            bail!(
                "refgate record failed:\n{text}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        println!("run {run}:");
        for l in text.lines().filter(|l| l.starts_with("  ")) {
            println!("{l}");
        }
        let avg = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("all refgate programs: "))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .context("no average in refgate's --probe-cost report")?;
        averages.push(avg);
    }
    let _ = std::fs::remove_file(out);
    let mut sorted = averages.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "ns per event averaged over all refgate programs, {RUNS} runs: {averages:?}; median {:.1}",
        sorted[RUNS / 2]
    );
    Ok(())
}

/// `refgate replay --json` (virtual-CPU engine) for each sample × policy × {1, 32} CPUs, best
/// host wall time of 3.
pub fn bench_replay() -> Result<()> {
    println!(
        "| trace | policy | virtual CPUs | replicas | refs run | prepare s | replay wall s | refs/s | spin CPU s | DR lock contended | invariant |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for trace in [SAMPLE, "samples/debian-6.1-kprobes.bin"] {
        for policy in ["pre", "seed", "modern"] {
            for threads in ["1", "32"] {
                let mut best: Option<serde_json::Value> = None;
                for _ in 0..3 {
                    let out = Command::new(refgate())
                        .args([
                            "replay",
                            trace,
                            "--json",
                            "--no-tui",
                            "--policy",
                            policy,
                            "--threads",
                            threads,
                        ])
                        .current_dir(root())
                        .output()?;
                    if !out.status.success() {
                        bail!("replay failed: {}", String::from_utf8_lossy(&out.stderr));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                    let w = |v: &serde_json::Value| {
                        v["host"]["wall_seconds"].as_f64().unwrap_or(f64::MAX)
                    };
                    if best.as_ref().is_none_or(|b| w(&v) < w(b)) {
                        best = Some(v);
                    }
                }
                let v = best.expect("3 runs");
                println!(
                    "| {trace} | {policy} | {threads} | {} | {} | {:.3} | {:.3} | {:.0} | {:.4} | {} | {} |",
                    v["replicas"],
                    v["refs_run"],
                    v["host"]["prepare_seconds"].as_f64().unwrap_or(0.0),
                    v["host"]["wall_seconds"].as_f64().unwrap_or(0.0),
                    v["host"]["refs_per_second"].as_f64().unwrap_or(0.0),
                    v["locks"]["delayed_refs_lock"]["spin_cpu_seconds"]
                        .as_f64()
                        .unwrap_or(0.0),
                    v["locks"]["delayed_refs_lock"]["contended"],
                    if v["invariant_ok"] == true {
                        "holds"
                    } else {
                        "VIOLATED"
                    }
                );
            }
        }
    }
    Ok(())
}
