//! `cargo xtask soak --minutes N` (root): `refgate record` (every btrfs, as by default) while
//! a loop btrfs is kept busy for N minutes, with `perf stat -a` counting the same tracepoints
//! system-wide over an enclosing window (so any other btrfs activity meanwhile is in both). The
//! recorder's RSS is sampled every 10 s; at the end its trace must hold exactly perf's count
//! of every delayed-ref event kind, with no event lost, and the RSS must stay flat (its last
//! sample within 10 % + 4 MiB of the one a minute in).
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use refgate_common::trace::{
    TraceReader,
    summary::{Summary, summarize},
};

/// The tracepoints compared with perf.
const KINDS: [&str; 7] = refgate_common::event::UNFILTERED_TRACEPOINTS;
const WRITERS: usize = 4;

/// A loop btrfs under `dir`, unmounted, detached and deleted on drop.
struct LoopBtrfs {
    dir: PathBuf,
    img: PathBuf,
    mnt: PathBuf,
}

impl LoopBtrfs {
    fn new(dir: &Path) -> Result<LoopBtrfs> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("mnt"))?;
        let fs = LoopBtrfs {
            dir: dir.to_path_buf(),
            img: dir.join("btrfs.img"),
            mnt: dir.join("mnt"),
        };
        fs::File::create(&fs.img)?.set_len(8 << 30)?;
        crate::sh(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&fs.img))?;
        crate::sh(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&fs.img)
                .arg(&fs.mnt),
        )?;
        Ok(fs)
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        if let Ok(o) = Command::new("losetup").arg("-j").arg(&self.img).output() {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(dev) = l.split(':').next() {
                    let _ = Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
        let _ = fs::remove_file(&self.img);
    }
}

/// Kills a child on drop unless it was waited for (an error path must not leave it running).
struct Reaped(Option<Child>);

impl Reaped {
    fn interrupt_and_wait(&mut self) -> Result<std::process::ExitStatus> {
        let c = self.0.as_mut().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let st = c.wait()?;
        self.0 = None;
        Ok(st)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One writer: small and large files created, some fsync'ed, renamed and deleted, in rounds.
fn writer(dir: PathBuf, w: usize, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) -> Result<()> {
    fs::create_dir_all(&dir)?;
    let big = vec![0x5au8 ^ w as u8; 192 << 10];
    let small = vec![0xa5u8 ^ w as u8; 1800];
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..200u64 {
            let p = dir.join(format!("f{i}"));
            let mut f = fs::File::create(&p)?;
            f.write_all(if i % 10 == 9 { &big } else { &small })?;
            if i % 50 == 0 {
                f.sync_all()?;
            }
            if i % 7 == 3 {
                fs::rename(&p, dir.join(format!("r{i}")))?;
            }
        }
        for i in 0..200u64 {
            let _ = fs::remove_file(dir.join(format!("f{i}")));
            if (i + round).is_multiple_of(2) {
                let _ = fs::remove_file(dir.join(format!("r{i}")));
            }
        }
        ops.fetch_add(400, Ordering::Relaxed);
        round += 1;
    }
    Ok(())
}

pub fn soak(root: &Path, refgate: &Path, minutes: f64) -> Result<()> {
    if !crate::is_root() {
        bail!("cargo xtask soak records with refgate and mounts a loop btrfs: run it as root");
    }
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        crate::sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }
    let work = root.join("target/soak");
    let fs = LoopBtrfs::new(&work)?;
    let trace = fs.dir.join("soak.bin");
    let perf_out = fs.dir.join("perf.txt");

    // perf first: its window encloses refgate's.
    let mut perf = start_perf(&perf_out)?;
    std::thread::sleep(Duration::from_millis(500));
    let (mut rec, pid, last_status) = start_record(refgate, &trace)?;

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (dir, stop, ops) = (fs.mnt.join(format!("w{w}")), stop.clone(), ops.clone());
            std::thread::spawn(move || writer(dir, w, stop, ops))
        })
        .collect();
    let samples = sample_rss(pid, &fs.mnt, &trace, &ops, minutes)?;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    crate::sh(Command::new("sync").arg("-f").arg(&fs.mnt))?;
    std::thread::sleep(Duration::from_millis(1500));
    let st = rec.interrupt_and_wait()?;
    if !st.success() {
        bail!("refgate record failed: {st}");
    }
    perf.interrupt_and_wait()?;
    let last_status = last_status.join().ok().flatten().unwrap_or_default();

    let perf_text = fs::read_to_string(&perf_out)?;
    let summary = summarize(TraceReader::open_path(&trace)?);
    let mismatch = compare_with_perf(&perf_text, &summary)?;
    let (warm, last) = print_totals(minutes, &ops, &summary, &last_status, &samples, &trace)?;
    let _ = fs::remove_file(&trace);
    if summary.lost_events > 0 || !summary.finished {
        bail!(
            "events were lost ({}) or the trace is not finished",
            summary.lost_events
        );
    }
    if mismatch {
        bail!("refgate's counts differ from perf's");
    }
    if last > warm + warm / 10 + 4096 {
        bail!("refgate's RSS grew from {warm} KiB to {last} KiB");
    }
    Ok(())
}

/// Every 10 s for `minutes`: syncs the filesystem, samples the recorder's RSS and prints a
/// row; the (seconds, KiB) samples.
fn sample_rss(
    pid: u32,
    mnt: &Path,
    trace: &Path,
    ops: &AtomicU64,
    minutes: f64,
) -> Result<Vec<(f64, u64)>> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    println!("| t (s) | refgate RSS (MiB) | file ops | trace (MiB) |");
    println!("|---:|---:|---:|---:|");
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(10).min(end - Instant::now()));
        let _ = Command::new("sync").arg("-f").arg(mnt).status();
        let t = started.elapsed().as_secs_f64();
        let rss = rss_kib(pid).context("refgate record exited during the soak")?;
        samples.push((t, rss));
        println!(
            "| {t:.0} | {:.1} | {} | {:.1} |",
            rss as f64 / 1024.0,
            ops.load(Ordering::Relaxed),
            fs::metadata(trace).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64
        );
    }
    Ok(samples)
}

/// Prints refgate's event counts beside `perf stat`'s (its `-x ,` output); true if any differ.
fn compare_with_perf(perf_text: &str, summary: &Summary) -> Result<bool> {
    println!();
    println!("| event | refgate | perf stat | equal |");
    println!("|---|---:|---:|---|");
    let mut mismatch = false;
    for k in KINDS {
        let perf_n: u64 = perf_text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.len() > 3 && f[2] == k).then(|| f[0].parse().unwrap_or(0))
            })
            .with_context(|| format!("{k} missing from perf's output:\n{perf_text}"))?;
        let ours = summary.events_by_kind.get(k).copied().unwrap_or(0);
        mismatch |= ours != perf_n;
        println!("| {k} | {ours} | {perf_n} | {} |", ours == perf_n);
    }
    Ok(mismatch)
}

/// `perf stat -a` counting [`KINDS`] into `out` (CSV) until interrupted.
fn start_perf(out: &Path) -> Result<Reaped> {
    Ok(Reaped(Some(
        Command::new("perf")
            .args(["stat", "-a", "-x", ",", "-o"])
            .arg(out)
            .args(KINDS.iter().flat_map(|k| ["-e", k]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf (linux-perf) is installed by `cargo xtask setup`")?,
    )))
}

/// Starts `refgate record` into `trace` and waits until it records: the process, its pid,
/// and a thread that returns its last status line (once a second, with the live lost count).
fn start_record(
    refgate: &Path,
    trace: &Path,
) -> Result<(Reaped, u32, std::thread::JoinHandle<Option<String>>)> {
    let mut child = Command::new(refgate)
        .args(["record", "--no-tui", "-o"])
        .arg(trace)
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let rec = Reaped(Some(child));
    if !lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("recording with"))
    {
        bail!("refgate record did not start");
    }
    // The status lines (once a second) carry the live lost count; keep the last.
    let last_status = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter(|l| l.starts_with('['))
            .last()
    });
    Ok((rec, pid, last_status))
}

/// Prints the run's totals and the recorder's RSS; returns its RSS (KiB) after the first
/// minute and at the end.
fn print_totals(
    minutes: f64,
    ops: &AtomicU64,
    summary: &Summary,
    last_status: &str,
    samples: &[(f64, u64)],
    trace: &Path,
) -> Result<(u64, u64)> {
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= 60.0)
        .or(samples.first())
        .map(|s| s.1)
        .unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let trace_mib = fs::metadata(trace)?.len() as f64 / (1 << 20) as f64;
    println!(
        "\n{minutes} min, {} file ops, {} events recorded ({trace_mib:.1} MiB trace), lost {} \
         (last status line: {}); refgate RSS at 1 min {:.1} MiB, at the end {:.1} MiB, max \
         {:.1} MiB",
        ops.load(Ordering::Relaxed),
        summary.events,
        summary.lost_events,
        last_status.trim(),
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0
    );
    Ok((warm, last))
}
