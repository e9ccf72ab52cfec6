//! `refgate`: record btrfs delayed-ref contention with eBPF, replay it on a userspace model of
//! the kernel's delayed-ref runner, and inspect traces.
mod compare;
mod completions;
mod dashboard;
mod export;
mod inspect;
mod owner;
mod plots;
mod record;
mod replay;
mod timeline;
mod validate;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "refgate", version, about, long_about = None)]
struct Cli {
    /// More diagnostics (-v: info, -vv: debug), including the eBPF programs' own.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record delayed-ref and lock-contention events from the running kernel (needs root).
    Record {
        /// Trace file to write.
        #[arg(short, long, default_value = "trace.bin")]
        output: PathBuf,
        /// Record only this btrfs filesystem (its mount point); default: every btrfs.
        #[arg(long, conflicts_with = "scratch")]
        mount: Option<PathBuf>,
        /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
        #[arg(long, value_parser = parse_secs)]
        duration: Option<Duration>,
        /// Make a temporary loopback btrfs, run a built-in workload on it, record it, tear it down.
        #[arg(long)]
        scratch: bool,
        /// With --scratch: only remove what earlier scratch runs whose process is gone (killed)
        /// left behind (mounts, loop devices, images), then exit. A --scratch run does this
        /// at its start anyway.
        #[arg(long, requires = "scratch")]
        cleanup: bool,
        /// Files per writer thread in the --scratch workload.
        #[arg(long, default_value_t = 1500)]
        scratch_files: usize,
        /// Plain progress lines instead of the live status.
        #[arg(long)]
        no_tui: bool,
        /// Measure the probes' in-kernel cost per event (BPF run-time statistics).
        #[arg(long)]
        probe_cost: bool,
        /// Kernel stack frames taken per contended lock, 1-20: fewer are cheaper, but a
        /// delayed-ref run behind an extent-tree search needs ~16 to be seen.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=20))]
        stack_frames: u32,
        /// Write raw kernel addresses (lock addresses, transaction handles) instead of
        /// per-trace identifiers; they help defeat KASLR, so such a trace must not be published.
        #[arg(long)]
        keep_kernel_pointers: bool,
    },
    /// Replay a trace on the userspace delayed-ref model: N virtual CPUs (default) or N real
    /// threads.
    Replay {
        /// Trace to replay (default: the bundled sample, recorded on btrfs).
        trace: Option<PathBuf>,
        /// Replay this workload file (JSON lines; `refgate export --format workload` writes
        /// one) instead of a trace.
        #[arg(long, conflicts_with = "trace")]
        workload: Option<PathBuf>,
        /// Write the final extent tree (per extent: refs, flags, backrefs) and the model's
        /// counts as JSON to this file.
        #[arg(long)]
        dump_state: Option<PathBuf>,
        /// Write the virtual replay's timeline (per CPU: running, spinning, sleeping; run
        /// calls; queue depth) as Chrome trace-event JSON for Perfetto.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Compare with the recording: replay under modern on the recorded CPU count at
        /// recorded speed and print, per transaction, recorded vs replayed heads and refs
        /// run, refs merged away and who ran them.
        #[arg(long)]
        validate: bool,
        /// CPUs: virtual CPUs with `--engine virtual`, real threads with `--engine threads`.
        #[arg(short, long, visible_alias = "cpus", default_value_t = 32)]
        threads: usize,
        /// `virtual`: N CPUs in deterministic virtual time, the same answer on any host;
        /// `threads`: N real threads (real races; contention figures then depend on the host).
        #[arg(long, default_value = "virtual", value_parser = parse_engine)]
        engine: Engine,
        /// Virtual engine: tie-breaking among CPUs ready at the same virtual instant.
        #[arg(long, default_value_t = 0)]
        sim_seed: u64,
        /// Which recorded refs get 3.x tree-mod seqs under pre/seed (§1.6): `data` (data refs
        /// are file operations, tree refs COW), `all`, or `recorded` (the trace's own seq).
        #[arg(long, default_value = "data", value_parser = parse_seq_rule)]
        seq_rule: SeqRule,
        /// Virtual engine: how tasks wait for the extent tree's lock: `spin` (3.x btrfs
        /// tree locks) or `sleep` (5.11+ rwsems); default: the policy's era.
        #[arg(long, value_parser = parse_extent_lock)]
        extent_lock: Option<ExtentLock>,
        /// Virtual engine: override a cost of the cost model, NAME=NS (repeatable); the
        /// report lists the names, values and where each came from.
        #[arg(long = "cost", value_name = "NAME=NS")]
        costs: Vec<String>,
        /// Runner policy: pre (3.7/3.8), seed (3.9/3.10 cmpxchg gate), modern (6.7+), seed-throttle (3.11-3.13).
        #[arg(short, long, default_value = "seed")]
        policy: String,
        /// `max` (as fast as possible) or a factor applied to recorded think-times (1 = real time).
        #[arg(long, default_value = "max", value_parser = parse_speed)]
        speed: Speed,
        /// Copies of the workload over disjoint extents (`auto`: enough for every thread).
        #[arg(long, default_value = "auto", value_parser = parse_replicate)]
        replicate: Replicate,
        /// A task's adds further apart than this start a new transaction handle (no kprobes).
        #[arg(long, default_value_t = 1000)]
        handle_gap_us: u64,
        /// Cost of one extent-tree update in ns (default: calibrated from the trace's run
        /// events); the same as `--cost run_ref=NS`, and the threads engine's busy-work.
        #[arg(long)]
        ext_cost_ns: Option<u64>,
        /// One JSON object instead of the text report.
        #[arg(long)]
        json: bool,
        /// Plain progress lines instead of the dashboard.
        #[arg(long)]
        no_tui: bool,
        /// Refuse a damaged trace (cut, corrupt, or unfinished after a crash) instead of
        /// replaying what precedes the damage.
        #[arg(long)]
        strict: bool,
    },
    /// Sweep policies × virtual CPU counts over one workload: a table (or JSON/CSV) and plots.
    Compare {
        /// Trace to replay (default: the bundled sample, recorded on btrfs).
        trace: Option<PathBuf>,
        /// Policies to compare, comma-separated.
        #[arg(long, default_value = "pre,seed,modern", value_delimiter = ',')]
        policies: Vec<String>,
        /// Virtual CPU counts, comma-separated.
        #[arg(long, default_value = "1,2,4,8,16,32,64", value_parser = compare::parse_cpus)]
        cpus: std::vec::Vec<usize>,
        /// Copies of the workload over disjoint extents (`auto`: enough for the largest CPU
        /// count); the same workload replays at every point.
        #[arg(long, default_value = "auto", value_parser = parse_replicate)]
        replicate: Replicate,
        /// A task's adds further apart than this start a new transaction handle (no kprobes).
        #[arg(long, default_value_t = 1000)]
        handle_gap_us: u64,
        /// Override a cost of the cost model, NAME=NS (repeatable).
        #[arg(long = "cost", value_name = "NAME=NS")]
        costs: Vec<String>,
        /// Tie-breaking among virtual CPUs ready at the same instant.
        #[arg(long, default_value_t = 0)]
        sim_seed: u64,
        /// Which recorded refs get 3.x tree-mod seqs under pre/seed (§1.6): `data` (data refs
        /// are file operations, tree refs COW), `all`, or `recorded` (the trace's own seq).
        #[arg(long, default_value = "data", value_parser = parse_seq_rule)]
        seq_rule: SeqRule,
        /// How tasks wait for the extent tree's lock: `spin` (3.x) or `sleep` (5.11+);
        /// default: each policy's era.
        #[arg(long, value_parser = parse_extent_lock)]
        extent_lock: Option<ExtentLock>,
        /// Write SVG and PNG plots into this directory.
        #[arg(short = 'o', long = "out")]
        out_dir: Option<PathBuf>,
        /// One JSON object with a `points` list instead of the table.
        #[arg(long)]
        json: bool,
        /// CSV instead of the table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Summarise a trace: header, event counts, tasks, busiest heads, lock contention.
    Inspect {
        trace: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert a trace: Chrome trace-event JSON (Perfetto, chrome://tracing), JSON lines, or
    /// Parquet (DuckDB, Spark, Trino); one entry per recorded event.
    Export {
        trace: PathBuf,
        /// chrome, jsonl or parquet (default: from the output's extension, else chrome).
        #[arg(short, long, value_enum)]
        format: Option<export::Format>,
        /// Output file, `-` for stdout (default: the trace's name with the format's
        /// extension, in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Export the records before the damage of a cut or corrupt trace (with a warning)
        /// instead of refusing it.
        #[arg(long)]
        partial: bool,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write it and one page per subcommand into a directory.
    Manpage {
        /// Write refgate.1 and refgate-SUBCOMMAND.1 here instead of printing refgate.1.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

use refgate_replay::{Engine, params::ExtentLock, trace_workload::SeqRule};

fn parse_seq_rule(s: &str) -> Result<SeqRule, String> {
    SeqRule::from_name(s).ok_or_else(|| format!("--seq-rule takes data, all or recorded, not {s}"))
}

fn parse_extent_lock(s: &str) -> Result<ExtentLock, String> {
    match s {
        "spin" => Ok(ExtentLock::Spin),
        "sleep" => Ok(ExtentLock::Sleep),
        _ => Err(format!("--extent-lock takes `spin` or `sleep`, not {s}")),
    }
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    Engine::from_name(s).ok_or_else(|| format!("--engine takes `virtual` or `threads`, not {s}"))
}

#[derive(Clone, Copy)]
struct Speed(Option<f64>);
#[derive(Clone, Copy)]
struct Replicate(Option<usize>);

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed(None));
    }
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed(Some(f))),
        _ => Err(format!("--speed takes `max` or a positive factor, not {s}")),
    }
}

fn parse_replicate(s: &str) -> Result<Replicate, String> {
    if s == "auto" {
        return Ok(Replicate(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Replicate(Some(n))),
        _ => Err(format!(
            "--replicate takes `auto` or a positive count, not {s}"
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("duration must be positive: {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let res = match cli.command {
        Command::Record {
            output,
            mount,
            duration,
            scratch,
            cleanup,
            scratch_files,
            no_tui,
            probe_cost,
            stack_frames,
            keep_kernel_pointers,
        } => record::run(record::RecordArgs {
            output,
            mount,
            duration,
            scratch,
            cleanup,
            scratch_files,
            plain: no_tui,
            probe_cost,
            stack_frames,
            keep_kernel_pointers,
            command_line: std::env::args().collect(),
        }),
        Command::Inspect { trace, json } => inspect::run(&trace, json),
        Command::Export {
            trace,
            format,
            output,
            partial,
        } => export::run(export::ExportArgs {
            trace,
            format,
            output,
            partial,
        }),
        Command::Completions { shell } => completions::completions(shell),
        Command::Manpage { dir } => completions::manpage(dir.as_deref()),
        Command::Compare {
            trace,
            policies,
            cpus,
            replicate,
            handle_gap_us,
            costs,
            sim_seed,
            seq_rule,
            extent_lock,
            out_dir,
            json,
            csv,
        } => compare::run(compare::CompareArgs {
            trace,
            policies,
            cpus,
            replicate: replicate.0,
            handle_gap_us,
            costs,
            sim_seed,
            seq_rule,
            extent_lock,
            out_dir,
            json,
            csv,
        }),
        Command::Replay {
            trace,
            workload,
            dump_state,
            timeline,
            validate,
            threads,
            engine,
            sim_seed,
            seq_rule,
            extent_lock,
            costs,
            policy,
            speed,
            replicate,
            handle_gap_us,
            ext_cost_ns,
            json,
            no_tui,
            strict,
        } => replay::run(replay::ReplayArgs {
            trace,
            workload,
            dump_state,
            timeline,
            validate,
            threads,
            engine,
            sim_seed,
            seq_rule,
            extent_lock,
            costs,
            policy,
            speed: speed.0,
            replicate: replicate.0,
            handle_gap_us,
            ext_cost_ns,
            json,
            plain: no_tui,
            strict,
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
