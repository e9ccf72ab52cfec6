//! `cargo xtask soak --replay --minutes N [--seed S]` (issue 26 item 6, "long replays hold
//! steady"): replays the bundled sample in this one process, in a loop, for N minutes. Each
//! round is a random point:
//!
//! - every built-in policy;
//! - both engines: virtual CPUs 1–256, or 16–64 real threads, which makes it a race hunt;
//! - both extent-tree models, random sim seeds, 1–3 copies.
//!
//! Every replay must end without error and with the §7.4 invariant holding. The process's RSS
//! must not grow: at the end it must be within 10 % + 8 MiB of the first sample taken after
//! a warm-up of a fifth of the run (at least 2 rounds), each sample taken after
//! `malloc_trim`, so that it measures what the rounds left behind. The seed is printed, so a failing
//! round can be replayed.
use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result, bail};
use refgate_common::trace::TraceReader;
use refgate_replay::{
    Config, Engine, Params, by_name,
    live::Live,
    params::ExtentTreeModel,
    trace_workload::{TraceOptions, workload_from_records},
};

const POLICIES: [&str; 4] = ["pre", "seed", "seed-throttle", "modern"];
const VIRTUAL_CPUS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
const THREADS: [usize; 3] = [16, 32, 64];

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// This process's resident set (KiB), from `/proc/self/status`, after handing freed heap
/// back to the kernel (`malloc_trim`): what a round leaves behind, not the high-water mark
/// of the largest round so far.
fn rss_kib() -> Result<u64> {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

pub fn soak(root: &std::path::Path, minutes: f64, seed: Option<u64>) -> Result<()> {
    // One malloc arena: glibc gives new threads arenas of their own (up to 8 per core),
    // which fill and stay as the real-thread rounds come and go; with one, `malloc_trim`
    // hands back all that is free and the RSS measures what the rounds kept.
    // SAFETY: mallopt changes allocator tuning only.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let sample = root.join("samples/scratch-6.18.bin");
    let records = TraceReader::open_path(&sample)
        .and_then(|mut r| r.read_all())
        .with_context(|| format!("reading {}", sample.display()))?;
    let (one, _) = workload_from_records(records, &TraceOptions::default())
        .map_err(|e| anyhow::anyhow!("converting the sample: {e}"))?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    eprintln!("xtask: soak --replay: {minutes} min, seed {seed} (--seed {seed} repeats it)");
    let mut rng = Rng(seed);
    let start = Instant::now();
    let total = std::time::Duration::from_secs_f64(minutes * 60.0);
    let warm_up = total / 5;
    let (mut rounds, mut refs) = (0u64, 0u64);
    let mut baseline: Option<u64> = None;
    let mut next_report = std::time::Duration::from_secs(30);
    while rounds < 2 || start.elapsed() < total {
        let policy = rng.pick(&POLICIES);
        let threads = rng.next().is_multiple_of(4);
        let cpus = if threads {
            rng.pick(&THREADS)
        } else {
            rng.pick(&VIRTUAL_CPUS)
        };
        let copies = 1 + (rng.next() % 3) as usize;
        let extent_tree = if rng.next().is_multiple_of(4) {
            ExtentTreeModel::Single
        } else {
            ExtentTreeModel::Btree
        };
        let sim_seed = rng.next();
        let what = format!(
            "round {rounds}: {policy}, {} {cpus}, ×{copies}, --extent-tree {extent_tree:?}, sim seed {sim_seed}",
            if threads { "threads" } else { "virtual CPUs" },
        );
        let w = one.replicate(copies, one.span());
        let cfg = Config {
            engine: if threads {
                Engine::Threads
            } else {
                Engine::Virtual
            },
            cpus,
            params: Params {
                extent_tree,
                ..Params::default()
            },
            sim_seed,
            pace: false,
            timeline: false,
        };
        let p = by_name(policy).context("a built-in policy")?;
        let r = refgate_replay::replay(&w, p.as_ref(), &cfg, Arc::new(Live::new(cpus)))
            .map_err(|e| anyhow::anyhow!("{what} (seed {seed}): {e}"))?;
        if r.invariant.extents_checked == 0 {
            bail!("{what} (seed {seed}): the invariant checked nothing");
        }
        rounds += 1;
        refs += r.refs_run;
        let rss = rss_kib()?;
        if start.elapsed() >= next_report {
            eprintln!(
                "xtask: soak --replay: {rounds} rounds, {:.0} s, RSS {} MiB",
                start.elapsed().as_secs_f64(),
                rss / 1024
            );
            next_report += std::time::Duration::from_secs(30);
        }
        if baseline.is_none() && start.elapsed() >= warm_up && rounds >= 2 {
            baseline = Some(rss);
            eprintln!(
                "xtask: soak --replay: RSS {} MiB after {rounds} rounds",
                rss / 1024
            );
        }
    }
    let end = rss_kib()?;
    let base = baseline.unwrap_or(end);
    eprintln!(
        "xtask: soak --replay: {rounds} replays, {refs} refs run, invariant held every time; RSS {} → {} MiB, {:.0} s",
        base / 1024,
        end / 1024,
        start.elapsed().as_secs_f64()
    );
    if end as f64 > base as f64 * 1.1 + 8192.0 {
        bail!(
            "RSS grew from {} to {} MiB over the soak (seed {seed})",
            base / 1024,
            end / 1024
        );
    }
    Ok(())
}
