//! `cargo xtask …`: the project's automation. `setup` installs what building and testing need
//! (idempotent, quick when everything is there); `run` and `test` are the README's two commands.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_vcpu;
mod fuzz;
mod install;
mod layers;
mod mutants;
mod public_api;
mod setup;
mod soak;
mod soak_replay;
mod test;
mod vm;

use bench::{bench_probes, bench_replay};
use setup::{setup, setup_toolchain};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, nightly rust-src, bpf-linker 0.10.x.
    Setup,
    /// Set up, build, and run the main job on the bundled sample (extra args go to refgate).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test: unit, property, live-kernel (as root), loom.
    Test,
    /// Check that refgate-replay's modules import only from their layer or below (lib.rs).
    Layers,
    /// Compare refgate-replay's public API with refgate-replay/public-api.txt (nightly rustdoc).
    PublicApi {
        /// Rewrite the list from the code instead (then commit it).
        #[arg(long)]
        bless: bool,
    },
    /// Re-record the bundled sample trace with `refgate record --scratch` (needs root).
    Sample,
    /// Boot Debian's stock 6.1 kernel under QEMU and test the kprobe path there (needs root).
    VmTest {
        /// Keep the guest's trace as the second bundled sample.
        #[arg(long)]
        keep: bool,
    },
    /// Replay the bundled samples end to end on 1 and 32 virtual CPUs per policy; print a table.
    BenchReplay,
    /// Measure the probes' in-kernel cost per event on the --scratch workload (needs root).
    BenchProbes,
    /// The virtual-CPU engine's speed, CPU-count scale and memory on the bundled sample.
    BenchVcpu,
    /// Fuzz the trace reader, inspect's summary and trace → workload (cargo fuzz, nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long)]
        time: Option<u64>,
        /// Executions per target (with --time: whichever comes first).
        #[arg(long)]
        runs: Option<u64>,
    },
    /// cargo-mutants over the delayed-ref runner (hours; see refgate-replay/MUTANTS.md).
    Mutants {
        /// One shard, `K/N` (cargo-mutants' `--shard`).
        #[arg(long)]
        shard: Option<String>,
        /// CI's short form: a fixed dozen mutants the tests must catch.
        #[arg(long)]
        quick: bool,
    },
    /// Record a busy loop btrfs for N minutes beside perf stat: RSS, lost events, counts (root);
    /// with `--replay`, replay the bundled sample in a loop of random points instead
    /// (policies, both engines, 1–256 CPUs, both extent-tree models): the invariant every
    /// time, RSS flat.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Replays instead of recording (no root needed).
        #[arg(long)]
        replay: bool,
        /// `--replay`'s random seed (default: from the clock; printed either way).
        #[arg(long, requires = "replay")]
        seed: Option<u64>,
    },
    /// Build and install refgate, its shell completions and man pages under a prefix.
    Install {
        /// Installation prefix: binary to PREFIX/bin, completions and man pages under
        /// PREFIX/share.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
}

/// The sample trace the README's first command replays.
pub const SAMPLE: &str = "samples/scratch-6.18.bin";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub(crate) fn is_root() -> bool {
    output(Command::new("id").arg("-u")).trim() == "0"
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn refgate() -> PathBuf {
    root().join("target/release/refgate")
}

pub(crate) fn build_release() -> Result<()> {
    sh(cargo().args(["build", "--release", "--locked", "-p", "refgate-user"]))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup(),
        Cmd::Run { args } => {
            setup_toolchain()?;
            build_release()?;
            // The main job: replay of the bundled sample (embedded in the binary) on 32 threads.
            let args = if args.is_empty() {
                vec![
                    "replay".to_string(),
                    "--threads".to_string(),
                    "32".to_string(),
                ]
            } else {
                args
            };
            sh(Command::new(refgate()).args(args))
        }
        Cmd::Test => test::run(),
        Cmd::Layers => layers::check(&root()),
        Cmd::PublicApi { bless } => {
            setup_toolchain()?;
            public_api::check(&root(), bless)
        }
        Cmd::Sample => {
            setup()?;
            build_release()?;
            std::fs::create_dir_all(root().join("samples"))?;
            sh(Command::new(refgate())
                .args(["record", "--scratch", "--no-tui", "-o"])
                .arg(root().join(SAMPLE)))?;
            sh(Command::new(refgate())
                .arg("inspect")
                .arg(root().join(SAMPLE)))
        }
        Cmd::VmTest { keep } => {
            setup()?;
            build_release()?;
            vm::vm_test(&root(), &refgate(), keep)
        }
        Cmd::BenchReplay => {
            build_release()?;
            bench_replay()
        }
        Cmd::Install { prefix } => install::run(&prefix, &refgate(), || {
            setup_toolchain()?;
            build_release()
        }),
        Cmd::Fuzz { time, runs } => {
            setup_toolchain()?;
            fuzz::fuzz(&root(), time.or(runs.is_none().then_some(60)), runs)
        }
        Cmd::Mutants { shard, quick } => mutants::mutants(shard, quick),
        Cmd::Soak {
            minutes,
            replay: true,
            seed,
        } => soak_replay::soak(&root(), minutes, seed),
        Cmd::Soak { minutes, .. } => {
            setup()?;
            build_release()?;
            soak::soak(&root(), &refgate(), minutes)
        }
        Cmd::BenchVcpu => {
            build_release()?;
            bench_vcpu::run(&refgate())
        }
        Cmd::BenchProbes => {
            setup()?;
            build_release()?;
            bench_probes()
        }
    }
}
