//! `refgate`: record btrfs delayed-ref contention with eBPF, replay it on a userspace model of
//! the kernel's delayed-ref runner, and inspect traces.
//!
//! The library is the whole CLI behind one entry point, [`main_with`], which takes the
//! policy registry: the `refgate` binary passes the built-in one, and a crate that adds a
//! runner policy of its own passes the built-in registry plus its policy and gets every
//! subcommand — `replay`, `compare`, `policies`, completions, man pages — with that policy
//! beside the built-in ones (`examples/custom-policy`, docs/writing-a-policy.md):
//!
//! ```no_run
//! use refgate_replay::policy::{PolicyInfo, Registry, Seed};
//!
//! // A real one implements `Policy` (or `V3Policy`) for a type of its own.
//! static MINE: PolicyInfo = PolicyInfo {
//!     name: "mine",
//!     aliases: &[],
//!     kernels: "3.9 + my patch",
//!     about: "what my patch changes",
//!     headline: false,
//!     make: || Box::new(Seed),
//! };
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::builtin();
//!     registry.register(&MINE).expect("a name of its own");
//!     refgate_user::main_with(registry)
//! }
//! ```

// `json!` of the replay report has more keys than the default limit of 128 expands.
#![recursion_limit = "256"]
mod args;
mod compare;
mod completions;
mod dashboard;
mod examples;
mod export;
mod history;
mod inspect;
mod owner;
mod policies;
mod record;
mod registry;
mod replay;
mod units;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueHint};

#[derive(Parser)]
#[command(
    name = "refgate",
    version,
    about = "Record btrfs delayed-ref contention with eBPF and replay it on a model of the \
             kernel's delayed-ref runner",
    long_about = None,
    // `help` as a subcommand would get a man page of its own; `--help` says the same.
    disable_help_subcommand = true,
    after_long_help = examples::REFGATE
)]
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
    #[command(after_long_help = examples::RECORD)]
    Record {
        /// Trace file to write.
        #[arg(short, long, default_value = "trace.bin", value_name = "FILE", value_hint = ValueHint::FilePath)]
        output: PathBuf,
        /// Record only this btrfs filesystem (its mount point); default: every btrfs.
        #[arg(long, conflicts_with = "scratch", value_name = "DIR", value_hint = ValueHint::DirPath)]
        mount: Option<PathBuf>,
        /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
        #[arg(long, value_parser = parse_secs, value_name = "SECONDS", value_hint = ValueHint::Other)]
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
        #[arg(long, default_value_t = 1500, value_name = "N", value_hint = ValueHint::Other)]
        scratch_files: usize,
        /// Plain progress lines instead of the live status.
        #[arg(long)]
        no_tui: bool,
        /// Measure the probes' in-kernel cost per event (BPF run-time statistics).
        #[arg(long)]
        probe_cost: bool,
        /// Kernel stack frames taken per contended lock, 1-20: fewer are cheaper, but a
        /// delayed-ref run behind an extent-tree search needs ~16 to be seen.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=20),
              value_name = "N", value_hint = ValueHint::Other)]
        stack_frames: u32,
        /// Write raw kernel addresses (lock addresses, transaction handles) instead of
        /// per-trace identifiers; they help defeat KASLR, so such a trace must not be published.
        #[arg(long)]
        keep_kernel_pointers: bool,
    },
    /// Replay a trace on the userspace delayed-ref model: N virtual CPUs (default) or N real
    /// threads.
    #[command(after_long_help = examples::REPLAY)]
    Replay(replay::ReplayArgs),
    /// Sweep policies × virtual CPU counts over one workload: a table (or JSON/CSV) and plots.
    #[command(after_long_help = examples::COMPARE)]
    Compare(compare::CompareArgs),
    /// List the runner policies: name, kernels modelled, what each does, and the kernel
    /// versions accepted as its aliases.
    #[command(after_long_help = examples::POLICIES)]
    Policies {
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Summarise a trace: header, event counts, tasks, busiest heads, lock contention.
    #[command(after_long_help = examples::INSPECT)]
    Inspect {
        /// The trace file to summarise (`refgate record` writes trace.bin).
        #[arg(value_name = "TRACE", value_hint = ValueHint::FilePath)]
        trace: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert a trace: Chrome trace-event JSON (Perfetto, chrome://tracing), JSON lines, or
    /// Parquet (DuckDB, Spark, Trino); one entry per recorded event.
    #[command(after_long_help = examples::EXPORT)]
    Export {
        /// The trace file to convert.
        #[arg(value_name = "TRACE", value_hint = ValueHint::FilePath)]
        trace: PathBuf,
        /// chrome, jsonl or parquet (default: from the output's extension, else chrome).
        #[arg(short, long, value_enum)]
        format: Option<export::Format>,
        /// Output file, `-` for stdout (default: the trace's name with the format's
        /// extension, in the current directory).
        #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        output: Option<PathBuf>,
        /// Export the records before the damage of a cut or corrupt trace (with a warning)
        /// instead of refusing it.
        #[arg(long)]
        partial: bool,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    #[command(after_long_help = examples::COMPLETIONS)]
    Completions {
        /// The shell to print the script for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write it and one page per subcommand into a directory.
    #[command(after_long_help = examples::MANPAGE)]
    Manpage {
        /// Write refgate.1 and refgate-SUBCOMMAND.1 here instead of printing refgate.1.
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
}

/// A replay cut short (`q` on the dashboard, `--until`): its report was printed and is
/// partial; the process exits with [`Partial::EXIT_CODE`], not 0.
#[derive(Debug)]
pub struct Partial;

impl Partial {
    /// The exit status of a partial replay: 3 (1 is an error, 2 a usage error).
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the replay was cut short (`q` or --until): the report above covers the part \
             replayed and has no verdict; exit status 3",
        )
    }
}

impl std::error::Error for Partial {}

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

/// Runs the `refgate` command line (`std::env::args`) with the policies of `registry`: the
/// `--policy`/`--policies` choices, `refgate policies`, completions, man pages and every
/// replay look policies up there. Call it once, first thing in `main`.
pub fn main_with(registry: refgate_replay::policy::Registry) -> ExitCode {
    registry::install(registry);
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
        Command::Compare(args) => compare::run(args),
        Command::Policies { json } => policies::run(json),
        Command::Replay(args) => replay::run(args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Partial>() => {
            eprintln!("refgate: {e}");
            ExitCode::from(Partial::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("refgate: error: {e:#}");
            if let Some(hint) = resource_hint(&e) {
                eprintln!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do about an error a resource ran out for, named by its cause in the chain (issue
/// 26 item 2): a full disk or quota is not a bug, and says so.
fn resource_hint(e: &anyhow::Error) -> Option<&'static str> {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    let kind = e.chain().find_map(|c| {
        c.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind())
            .filter(|k| matches!(k, StorageFull | QuotaExceeded))
            // Parquet's writer keeps only the message of the io::Error.
            .or_else(|| {
                let s = c.to_string();
                s.contains("No space left on device").then_some(StorageFull)
            })
    })?;
    Some(match kind {
        QuotaExceeded => {
            "Your disk quota on the filesystem written to is used up: free some of it, or write \
             the output elsewhere (-o PATH). Nothing partial was left behind."
        }
        _ => {
            "The filesystem written to is full: free space on it, or write the output to \
             another filesystem (-o PATH). Nothing partial was left behind."
        }
    })
}
