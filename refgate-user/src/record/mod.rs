//! `refgate record`: kernel probes → ring buffer → decoder → trace writer, with live counters.
mod cost;
pub mod decode;
pub mod kallsyms;
pub mod layouts;
pub mod loader;
mod progress;
pub mod roles;
pub mod scratch;
pub mod status;
pub mod tracefs;

use std::{
    fs::File,
    path::PathBuf,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use aya_log::EbpfLogger;
use refgate_common::{
    event::{Record, Stats},
    raw::counter,
    trace::{Pointers, ProbeInfo, ProbeKind, Provenance, RunArg, TraceHeader, TraceWriter},
};
use tokio::io::unix::AsyncFd;

use self::{
    decode::Decoder, kallsyms::Kallsyms, layouts::Layouts, loader::ProbeStatus, progress::Live,
    roles::RoleNamer, scratch::ScratchFs,
};

pub struct RecordArgs {
    pub output: PathBuf,
    pub mount: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub scratch: bool,
    /// `--scratch --cleanup`: only remove earlier scratch runs' leftovers.
    pub cleanup: bool,
    /// Scale of the `--scratch` workload (files per writer).
    pub scratch_files: usize,
    pub plain: bool,
    /// Turn on BPF run-time statistics and report the in-kernel cost per event.
    pub probe_cost: bool,
    /// Kernel stack frames per contended lock (1..=STACK_DEPTH).
    pub stack_frames: u32,
    /// Write raw kernel pointers instead of per-trace identifiers.
    pub keep_kernel_pointers: bool,
    pub command_line: Vec<String>,
}

/// Checks what recording needs before touching anything, so that the error is the real one.
fn preflight() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "refgate record needs root: it loads eBPF programs (CAP_BPF, CAP_PERFMON) and may \
             mount tracefs. Run it as `sudo refgate record …`. (Replaying and inspecting traces \
             needs no privileges.)"
        );
    }
    let fss = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("btrfs"))
    {
        bail!(
            "this kernel has no btrfs (not in /proc/filesystems). Load it with `modprobe btrfs` \
             (or use a kernel built with CONFIG_BTRFS_FS) and run refgate again."
        );
    }
    Ok(())
}

pub fn run(args: RecordArgs) -> Result<()> {
    preflight()?;
    if args.cleanup {
        let done = scratch::cleanup_leftovers();
        if done.is_empty() {
            println!("refgate: no leftovers of earlier scratch runs");
        }
        for line in done {
            println!("refgate: {line}");
        }
        return Ok(());
    }
    let tracefs = tracefs::ensure_mounted()?;
    let layouts = Layouts::read(&tracefs).context(
        "reading the btrfs tracepoint layouts from tracefs (btrfs must be built in or loaded; \
         refgate needs Linux 5.8 or newer)",
    )?;
    let ksyms = Kallsyms::load()?;
    let btrfs_text = ksyms
        .btrfs_text()
        .context("btrfs_run_delayed_refs is not in /proc/kallsyms: is btrfs loaded?")?;

    // The scratch filesystem exists before the probes, so its mkfs/mount is not recorded, and
    // its guard unmounts it on every exit path below (including errors and Ctrl-C).
    let scratch = if args.scratch {
        Some(ScratchFs::create()?)
    } else {
        None
    };
    let mount = scratch
        .as_ref()
        .map(|s| s.mountpoint().to_path_buf())
        .or(args.mount.clone());
    let fs_info = match &mount {
        Some(m) => Some(scratch::fs_info(m)?),
        None => None,
    };

    // Mode 0600 (the trace names the host, its tasks and command lines), and under sudo
    // owned by the user who asked for it.
    let file = crate::owner::create_private(&args.output)
        .with_context(|| format!("cannot create the trace file {}", args.output.display()))?;
    let target = Target {
        args: &args,
        layouts,
        ksyms,
        btrfs_text,
        scratch: scratch.as_ref(),
        fs_info,
    };
    let res = record_into(file, &target);
    if let Err(e) = &res {
        keep_or_remove(&args.output, e);
    }
    drop(scratch);
    res
}

/// After a failed recording: keeps whatever was recorded in `output`, but never leaves an
/// empty file that looks like a trace.
fn keep_or_remove(output: &std::path::Path, e: &anyhow::Error) {
    let len = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    if len == 0 || e.downcast_ref::<NothingRecorded>().is_some() {
        let _ = std::fs::remove_file(output);
    } else if e.downcast_ref::<WriteFailed>().is_some() {
        // The error itself says what the salvaged file holds.
    } else {
        eprintln!(
            "refgate: stopped by an error; the events recorded before it are kept in {} \
             (a complete, readable trace up to that point)",
            output.display()
        );
    }
}

/// Writing the trace failed (a full disk, an I/O error); the message says what the file,
/// cut back to its last whole frame, holds.
#[derive(Debug)]
struct WriteFailed(String);
impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for WriteFailed {}

/// Mount points of the btrfs filesystems mounted now (/proc/self/mounts).
fn btrfs_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "btrfs").then(|| point.replace("\\040", " "))
        })
        .collect()
}

/// An error before anything reached the file: the file is removed.
#[derive(Debug)]
struct NothingRecorded;
impl std::fmt::Display for NothingRecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nothing recorded")
    }
}

fn header(
    args: &RecordArgs,
    probes: &[ProbeStatus],
    fs_info: Option<scratch::FsInfo>,
) -> TraceHeader {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let kprobe = probes.iter().any(|p| p.kind == "kprobe" && p.attached);
    TraceHeader {
        run_arg: match (kprobe, kernel_version(&release)) {
            (false, _) | (_, None) => RunArg::Unknown,
            (true, Some(v)) if v >= (6, 7) => RunArg::MinBytes,
            (true, Some(_)) => RunArg::Count,
        },
        kernel_release: release,
        probes: probes
            .iter()
            .map(|p| ProbeInfo {
                name: p.name.clone(),
                kind: match p.kind {
                    "kprobe" => ProbeKind::Kprobe,
                    "kretprobe" => ProbeKind::Kretprobe,
                    "fentry" => ProbeKind::Fentry,
                    "fexit" => ProbeKind::Fexit,
                    _ => ProbeKind::Tracepoint,
                },
                attached: p.attached,
                note: p.note.clone(),
            })
            .collect(),
        clock: Default::default(),
        cpu_count: aya::util::nr_cpus().map(|n| n as u32).unwrap_or(0),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        start_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        provenance: Provenance {
            command_line: args.command_line.clone(),
            scratch: args.scratch,
            workload: if args.scratch {
                scratch::DESCRIPTION.to_string()
            } else {
                match &args.mount {
                    Some(m) => format!("whatever ran on {} while recording", m.display()),
                    None => "whatever ran on the host's btrfs filesystems while recording".into(),
                }
            },
        },
        nodesize: fs_info.map(|f| f.nodesize),
        pointers: if args.keep_kernel_pointers {
            Pointers::Raw
        } else {
            Pointers::Ids
        },
    }
}

/// `6.18.44-foo` → (6, 18).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

type Counters = PerCpuArray<MapData, u64>;

fn read_counters(arr: &Counters, ncpus: usize) -> Stats {
    let sum = |idx: u32| arr.get(&idx, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
    Stats {
        lost_per_cpu: arr
            .get(&counter::LOST, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_else(|_| vec![0; ncpus]),
        contention_not_btrfs: sum(counter::CONTENTION_NOT_BTRFS),
        tree_lock_not_extent: sum(counter::TREE_LOCK_NOT_EXTENT),
        other_fs: sum(counter::OTHER_FS),
        unpaired_contention: sum(counter::WAIT_MAP_FULL),
    }
}

/// What a recording works on, prepared by [`run`] before any probe is attached.
struct Target<'a> {
    args: &'a RecordArgs,
    layouts: Layouts,
    ksyms: Kallsyms,
    /// The btrfs text range (lock roles are judged by frames inside it).
    btrfs_text: (u64, u64),
    /// The `--scratch` filesystem, whose workload runs while recording.
    scratch: Option<&'a ScratchFs>,
    /// The one filesystem recorded (`--mount`, `--scratch`), or every btrfs.
    fs_info: Option<scratch::FsInfo>,
}

/// A recording under way: the attached probes, what reads them, and the trace being written.
struct Session {
    /// The loaded programs: dropping it detaches every probe.
    ebpf: Ebpf,
    /// BPF run-time statistics stay on while it is open (`--probe-cost`).
    _stats_fd: Option<std::os::fd::OwnedFd>,
    ring: AsyncFd<RingBuf<MapData>>,
    /// The eBPF programs' own diagnostics (aya-log), when available.
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    counters: Counters,
    sink: Sink,
    ncpus: usize,
    /// No `--mount` and no btrfs mounted at the start: say when one is mounted.
    waiting_for_btrfs: bool,
    /// The `--scratch` workload's thread.
    workload: Option<JoinHandle<Result<()>>>,
    started: Instant,
}

/// Where ring-buffer records go: decoded, counted on the live status, written to the trace.
struct Sink {
    decoder: Decoder,
    writer: TraceWriter<File>,
    live: Live,
    /// The records of one ring-buffer record (reused).
    out: Vec<Record>,
}

/// Records into `file`: attach, run until told to stop, tear down.
fn record_into(file: File, target: &Target) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _rt = rt.enter();
    let mut session = attach(file, target)?;
    let looped = rt.block_on(run_loop(&mut session, target.args));
    teardown(session, target, looped)
}

/// The live status, with the probe report and (when nothing can be recorded yet) why; and
/// whether no btrfs is mounted yet.
fn start_live(t: &Target, probes: &[ProbeStatus]) -> (Live, bool) {
    let args = t.args;
    let mut live = Live::new(!args.plain, probes, &args.output);
    // One line per cause; every probe at -v (and in `refgate inspect`).
    for line in loader::folded_report(probes) {
        live.note(&line);
    }
    for p in probes {
        match p.attached {
            true => log::info!("{} ({}) attached", p.name, p.kind),
            false => log::info!("{} ({}) not attached: {}", p.name, p.kind, p.note),
        }
    }
    // Without --mount, every btrfs is recorded, including one mounted later; with none
    // mounted now, say so rather than count zeros in silence.
    let waiting_for_btrfs =
        args.mount.is_none() && t.scratch.is_none() && btrfs_mounts().is_empty();
    if waiting_for_btrfs {
        live.note(
            "no btrfs filesystem is mounted, so there is nothing to record yet; refgate keeps \
             recording and picks up any btrfs mounted from now on. To try refgate on this host, \
             `sudo refgate record --scratch` makes a temporary loop btrfs with a workload.",
        );
    }
    (live, waiting_for_btrfs)
}

/// The ring-buffer decoder: kernel pointers hidden behind per-trace ids unless
/// `--keep-kernel-pointers` (said on the live status).
fn decoder(t: &Target, live: &mut Live) -> Decoder {
    let mut decoder = Decoder::new(
        t.layouts.clone(),
        RoleNamer::new(t.ksyms.clone(), t.btrfs_text),
    );
    if t.args.keep_kernel_pointers {
        decoder.pointer_ids = None;
        live.note(
            "--keep-kernel-pointers: the trace holds raw kernel addresses (lock addresses, \
             transaction handles), which help defeat KASLR; do not publish it",
        );
    }
    decoder
}

/// Loads and attaches the probes, starts the live status and the trace (header first), and
/// the `--scratch` workload. Errors before the header is written are [`NothingRecorded`].
fn attach(file: File, t: &Target) -> Result<Session> {
    let args = t.args;
    let cfg = loader::Config {
        layouts: &t.layouts,
        filter_fsid: t.fs_info.map(|f| f.fsid),
        btrfs_text: t.btrfs_text,
        ksyms: &t.ksyms,
        stack_frames: args.stack_frames,
        probe_floor: args.probe_cost,
    };
    let (mut ebpf, probes) =
        loader::load_and_attach(&cfg).map_err(|e| e.context(NothingRecorded))?;
    // BPF_ENABLE_STATS stays on while the fd is open (kernel ≥ 5.8). It costs two clock reads
    // per program run for every BPF program on the host, so it is opt-in.
    let stats_fd = if args.probe_cost {
        Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).context(
            "--probe-cost: BPF_ENABLE_STATS failed (kernel 5.8 or newer and root are needed)",
        )?)
    } else {
        None
    };
    let (mut live, waiting_for_btrfs) = start_live(t, &probes);
    let header = header(args, &probes, t.fs_info);
    // Unbuffered: the writer hands whole frames to the file, so after a write error the file
    // can be cut back to the last whole frame (`salvage`).
    let writer = TraceWriter::new(file, &header).map_err(|e| {
        anyhow::Error::new(e)
            .context(format!(
                "cannot write the trace header to {}",
                args.output.display()
            ))
            .context(NothingRecorded)
    })?;

    let logger = aya_log::EbpfLogger::init(&mut ebpf)
        .map_err(|e| log::warn!("eBPF diagnostics unavailable: {e}"))
        .ok();
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    let counters = Counters::try_from(ebpf.take_map("COUNTERS").context("COUNTERS map missing")?)?;
    let decoder = decoder(t, &mut live);
    let ring = watch(ring)?;
    let logger = logger.map(watch).transpose()?;
    let workload = t.scratch.map(|s| {
        let mnt = s.mountpoint().to_path_buf();
        let (files, stop) = (args.scratch_files, s.stop.clone());
        std::thread::spawn(move || scratch::run_workload(&mnt, files, stop))
    });
    Ok(Session {
        ebpf,
        _stats_fd: stats_fd,
        ring,
        logger,
        counters,
        sink: Sink {
            decoder,
            writer,
            live,
            out: Vec::with_capacity(64),
        },
        ncpus: header.cpu_count as usize,
        waiting_for_btrfs,
        workload,
        started: Instant::now(),
    })
}

/// Drains the ring buffer into the trace and updates the live status until Ctrl-C, SIGTERM,
/// `q`, `--duration` or the end of the scratch workload; returns which.
async fn run_loop(s: &mut Session, args: &RecordArgs) -> Result<&'static str> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The eBPF side submits without waking us (see `submit` there), so drain on a timer.
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The dashboard's keys and redraws (non-blocking; idle without a dashboard).
    let mut ui = tokio::time::interval(Duration::from_millis(250));
    ui.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Both listeners live across iterations: a `ctrl_c()` future made afresh in each `select!`
    // misses a SIGINT that arrives while the loop body runs (no listener exists then), and the
    // recording then ran on until a second Ctrl-C — under load, a hung test.
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            guard = s.ring.readable_mut() => {
                let mut guard = guard?;
                s.sink.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = poll.tick() => s.sink.drain(s.ring.get_mut())?,
            Some(()) = async {
                match s.logger.as_mut() {
                    Some(l) => {
                        let mut g = l.readable_mut().await.ok()?;
                        g.get_inner_mut().flush();
                        g.clear_ready();
                        Some(())
                    }
                    None => std::future::pending().await,
                }
            } => {}
            _ = tick.tick() => {
                if let Some(why) = s.second(args)? {
                    return Ok(why);
                }
            }
            _ = ui.tick(), if s.sink.live.is_tui() => {
                if let Some(why) = s.sink.live.ui_tick() {
                    return Ok(why);
                }
            }
            _ = sigint.recv() => return Ok("interrupted (Ctrl-C)"),
            _ = sigterm.recv() => return Ok("terminated (SIGTERM)"),
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => return Ok("--duration elapsed"),
        }
    }
}

impl Session {
    /// Once a second: the kernel-side counters into the trace and onto the live status, the
    /// probe cost, a btrfs mounted since the start; why to stop if the scratch workload ended.
    fn second(&mut self, args: &RecordArgs) -> Result<Option<&'static str>> {
        let stats = read_counters(&self.counters, self.ncpus);
        let live = &mut self.sink.live;
        self.sink.writer.write(&Record::Stats(stats.clone()))?;
        self.sink.writer.flush()?;
        if args.probe_cost {
            live.probe_cost(cost::average(&cost::sample(&self.ebpf).0).map(|a| a.0));
        }
        if self.waiting_for_btrfs {
            let m = btrfs_mounts();
            if !m.is_empty() {
                self.waiting_for_btrfs = false;
                live.note(&format!("btrfs mounted at {}: recording it", m.join(", ")));
            }
        }
        live.tick(&stats, self.started.elapsed());
        let finished = self.workload.as_ref().is_some_and(|w| w.is_finished());
        Ok(finished.then_some("the scratch workload finished"))
    }
}

/// Whatever ended the loop (including a write error): stops the workload, detaches every probe,
/// takes what is still in the ring buffer, closes the trace (or salvages it after a write
/// error), and prints the summary.
fn teardown(s: Session, t: &Target, looped: Result<&'static str>) -> Result<()> {
    let Session {
        ebpf,
        _stats_fd,
        mut ring,
        mut logger,
        counters,
        mut sink,
        ncpus,
        waiting_for_btrfs: _,
        workload,
        started,
    } = s;
    // Stop the workload and detach every probe (dropping the object closes programs and
    // links) before anything else.
    if let Some(s) = t.scratch {
        s.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if t.args.probe_cost && looped.is_ok() {
        cost::report(&ebpf);
    }
    drop(ebpf);
    // Then take what is still in the ring buffer, so that nothing recorded is lost at the
    // end, and close the trace.
    let closed = looped.and_then(|why| {
        sink.drain(ring.get_mut())?;
        if let Some(l) = logger.as_mut() {
            l.get_mut().flush();
        }
        let stats = read_counters(&counters, ncpus);
        sink.writer.write(&Record::Stats(stats.clone()))?;
        sink.writer.close()?;
        Ok((why, stats))
    });
    let workload_done = workload.map(|w| w.join());
    let Sink {
        decoder,
        writer,
        mut live,
        ..
    } = sink;
    let (why, stats) = match closed {
        Ok(c) => c,
        Err(e) if writer.failed() => {
            drop(live);
            return Err(salvage(writer, &e, &t.args.output));
        }
        Err(e) => return Err(e),
    };
    live.finish(&stats, started.elapsed(), why, &t.args.output);
    if decoder.comm_fallbacks > 0 {
        log::warn!(
            "{} task(s) had no name in their first record; named from /proc instead",
            decoder.comm_fallbacks
        );
    }
    match workload_done {
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => {
            return Err(e.context("the scratch workload failed (the trace is kept)"));
        }
        Some(Err(_)) => bail!("the scratch workload thread panicked (the trace is kept)"),
    }
    Ok(())
}

/// After a write error: cut the file back to its last whole frame, append the end frame if it
/// fits, and say exactly what the file holds.
fn salvage(
    writer: TraceWriter<File>,
    err: &anyhow::Error,
    path: &std::path::Path,
) -> anyhow::Error {
    let at = writer.bytes_written();
    let path = path.display();
    match writer.salvage() {
        Ok((_, s)) => {
            let end = if s.finished {
                "and its end-of-trace frame: it is a whole trace of what it holds"
            } else {
                "but no end-of-trace frame (there was no room even for its 9 bytes): readers \
                 call it unfinished, and read all of it"
            };
            anyhow::Error::new(WriteFailed(format!(
                "writing the trace {path} failed at byte offset {at} ({err:#}). Recording stopped and \
                 every probe was detached. The file was cut back to its last whole frame: {} \
                 bytes holding the header and {} records ({} events over the first {:.1} s of \
                 the recording), {end}; the {} records after them could not be written. \
                 `refgate inspect {path}` and `refgate replay {path}` read it. Free space (or \
                 record with -o on another filesystem) and record again for more.",
                s.bytes,
                s.kept.records,
                s.kept.events,
                s.kept.span_seconds(),
                s.lost_records,
            )))
        }
        Err(e2) => anyhow::Error::new(WriteFailed(format!(
            "writing the trace {path} failed at byte offset {at} ({err:#}), and cutting it back to \
             that byte failed too ({e2}). Recording stopped and every probe was detached. The \
             first {at} bytes hold whole frames; `refgate inspect {path}` reads them and says \
             where the damage starts."
        ))),
    }
}

/// Registers a ring buffer with tokio's reactor.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `inner`, so its fd stays open for as long as it is registered.
    unsafe { AsyncFd::register(inner) }
        .map_err(|e| anyhow::anyhow!("watching a ring buffer: {}", e.into_parts().1))
}

impl Sink {
    /// Reads every record currently in the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<()> {
        while let Some(item) = ring.next() {
            self.out.clear();
            let ok = self.decoder.decode(&item, &mut self.out);
            drop(item);
            if !ok {
                self.live.bad_record();
                continue;
            }
            for r in self.out.iter() {
                if let Record::Event(e) = r {
                    self.live.event(e);
                }
                self.writer.write(r)?;
            }
        }
        Ok(())
    }
}
