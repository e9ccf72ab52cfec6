//! `refgate`: record btrfs delayed-ref contention with eBPF, replay it on a userspace model of
//! the kernel's delayed-ref runner, and inspect traces.
mod inspect;
mod record;

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
        /// Files per writer thread in the --scratch workload.
        #[arg(long, default_value_t = 1500)]
        scratch_files: usize,
        /// Plain progress lines instead of the live status.
        #[arg(long)]
        no_tui: bool,
        /// Measure the probes' in-kernel cost per event (BPF run-time statistics).
        #[arg(long)]
        probe_cost: bool,
    },
    /// Summarise a trace: header, event counts, tasks, busiest heads, lock contention.
    Inspect {
        trace: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim_end_matches('s').parse().map_err(|_| format!("not a number of seconds: {s}"))?;
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
            scratch_files,
            no_tui,
            probe_cost,
        } => record::run(record::RecordArgs {
            output,
            mount,
            duration,
            scratch,
            scratch_files,
            plain: no_tui,
            probe_cost,
            command_line: std::env::args().collect(),
        }),
        Command::Inspect { trace, json } => inspect::run(&trace, json),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
