//! `cargo xtask …`: the project's automation. `setup` installs what building and testing need
//! (idempotent, quick when everything is there); `run` and `test` are the README's two commands.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench_vcpu;
mod fuzz;
mod install;
mod soak;
mod vm;

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
    /// Re-record the bundled sample trace with `refgate record --scratch` (needs root).
    Sample,
    /// Boot Debian's stock 6.1 kernel under QEMU and test the kprobe path there (needs root).
    VmTest {
        /// Keep the guest's trace as the second bundled sample.
        #[arg(long)]
        keep: bool,
    },
    /// Replay the bundled samples end to end at 1 and 32 threads per policy; print a table.
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
    /// Record a busy loop btrfs for N minutes beside perf stat: RSS, lost events, counts (root).
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
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

/// Debian packages: mkfs.btrfs/btrfs (scratch filesystems), perf (live test's independent
/// count), tmux (dashboard test).
const DEB_PACKAGES: &[(&str, &str)] = &[
    ("btrfs-progs", "mkfs.btrfs"),
    ("linux-perf", "perf"),
    ("tmux", "tmux"),
    // cargo xtask vm-test
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("busybox-static", "busybox"),
    ("cpio", "cpio"),
    // cargo xtask bench-vcpu (max RSS)
    ("time", "/usr/bin/time"),
];
/// platform.md: 0.10.x loads rustc's own LLVM 22; 0.11+ needs a system LLVM 23.
const BPF_LINKER: &str = "bpf-linker@0.10.4";

fn root() -> PathBuf {
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

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).trim() == "0"
}

/// Everything: the Debian packages the tests and the recorder need, and the toolchain.
fn setup() -> Result<()> {
    setup_packages()?;
    setup_toolchain()
}

/// Debian packages (root installs them; otherwise a clear error naming them).
fn setup_packages() -> Result<()> {
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .filter(|(_, bin)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}: run `sudo apt-get install {}`",
                missing.join(" ")
            );
        }
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// What building the binary needs: nightly with rust-src and bpf-linker 0.10.x (the eBPF
/// object is built by refgate-user's build.rs). Replaying needs nothing more.
fn setup_toolchain() -> Result<()> {
    if !output(Command::new("rustup").args(["toolchain", "list"])).contains("nightly") {
        sh(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        sh(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !output(Command::new("bpf-linker").arg("--version")).contains("0.10.") {
        sh(Command::new("cargo").args(["install", BPF_LINKER, "--locked"]))?;
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn refgate() -> PathBuf {
    root().join("target/release/refgate")
}

fn build_release() -> Result<()> {
    sh(cargo().args(["build", "--release", "--locked", "-p", "refgate-user"]))
}

/// Three `record --scratch --probe-cost` runs (the workload's contention varies from run to
/// run), each run's per-program table, then the averages and their median.
fn bench_probes() -> Result<()> {
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

/// `refgate replay --json` for each sample × policy × {1, 32} threads, best wall time of 3.
fn bench_replay() -> Result<()> {
    println!(
        "| trace | policy | threads | replicas | refs run | prepare s | replay wall s | refs/s | spin CPU s | DR lock contended | invariant |"
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
                    v["spin_cpu_seconds"].as_f64().unwrap_or(0.0),
                    v["delayed_refs_lock"]["contended"],
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
        Cmd::Test => {
            setup()?;
            sh(cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "refgate-ebpf",
                "--locked",
            ]))?;
            // loom model of the seed gate's wait/wake protocol (own target dir: other cfg).
            sh(cargo()
                .args([
                    "test",
                    "--locked",
                    "--release",
                    "-p",
                    "refgate-replay",
                    "--test",
                    "loom_gate",
                ])
                .args(["--target-dir", "target/loom"])
                .env("RUSTFLAGS", "--cfg loom"))?;
            // A short fuzz run of every target (the long runs: `cargo xtask fuzz`).
            fuzz::fuzz(&root(), Some(30), None)?;
            // The kprobe path, on Debian's stock kernel under QEMU (root: it builds an initramfs
            // and the guest runs the recorder as root).
            if is_root() {
                build_release()?;
                vm::vm_test(&root(), &refgate(), false)
            } else {
                eprintln!("xtask: vm-test skipped: it needs root");
                Ok(())
            }
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
        Cmd::Soak { minutes } => {
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
