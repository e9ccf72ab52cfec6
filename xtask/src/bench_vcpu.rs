//! `cargo xtask bench-vcpu`: the virtual-CPU engine's speed and scale on the bundled sample
//! (issue "virtual CPUs": ≥ 1 M refs run per host second at 32 virtual CPUs, policy seed;
//! 1 to 1024 CPUs; 8 M refs within 2 GB). Prints Markdown for BENCHMARKS.md. Max RSS comes
//! from GNU time (`/usr/bin/time`, Debian's `time`).

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// One `refgate replay --json` run: its JSON and the process's max RSS in KiB.
fn replay(refgate: &Path, args: &[&str]) -> Result<(serde_json::Value, u64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss %M"])
        .arg(refgate)
        .args(["replay", "--json", "--no-tui"])
        .args(args)
        .output()
        .context("running /usr/bin/time refgate replay (apt-get install time)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("refgate replay {args:?} failed:\n{err}");
    }
    let rss = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss "))
        .and_then(|v| v.trim().parse().ok())
        .context("no max RSS from /usr/bin/time")?;
    Ok((serde_json::from_slice(&out.stdout)?, rss))
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(0.0)
}

pub fn run(refgate: &Path) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; release build; bundled sample (samples/scratch-6.18.bin)\n");
    println!(
        "| what | policy | virtual CPUs | replicas | refs run | engine host s | refs / host s | total wall s | max RSS MB | bytes / ref |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rows: [(&str, &str, &str, &str, usize); 7] = [
        ("speed (best of 3)", "seed", "32", "32", 3),
        ("scale", "seed", "1", "32", 1),
        ("scale", "seed", "256", "32", 1),
        ("scale", "seed", "1024", "32", 1),
        ("scale", "pre", "1024", "32", 1),
        ("memory (8 M refs)", "seed", "64", "500", 1),
        ("memory (8 M refs)", "pre", "64", "500", 1),
    ];
    for (what, policy, cpus, replicas, reps) in rows {
        let mut best: Option<(serde_json::Value, u64, f64)> = None;
        for _ in 0..reps {
            let t0 = std::time::Instant::now();
            let (v, rss) = replay(
                refgate,
                &[
                    "--policy",
                    policy,
                    "--threads",
                    cpus,
                    "--replicate",
                    replicas,
                ],
            )?;
            let wall = t0.elapsed().as_secs_f64();
            if v["invariant_ok"] != true {
                bail!("invariant not confirmed: {v}");
            }
            if best.as_ref().is_none_or(|b| {
                f(&v, &["host", "wall_seconds"]) < f(&b.0, &["host", "wall_seconds"])
            }) {
                best = Some((v, rss, wall));
            }
        }
        let (v, rss, wall) = best.expect("at least one run");
        let refs = v["refs_run"].as_u64().unwrap_or(0);
        println!(
            "| {what} | {policy} | {cpus} | {replicas} | {refs} | {:.3} | {:.0} | {wall:.2} | {:.0} | {:.0} |",
            f(&v, &["host", "wall_seconds"]),
            f(&v, &["host", "refs_per_second"]),
            rss as f64 / 1024.0,
            rss as f64 * 1024.0 / refs.max(1) as f64,
        );
    }
    Ok(())
}
