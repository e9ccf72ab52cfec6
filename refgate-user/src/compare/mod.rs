//! `refgate compare`: one workload replayed on the virtual-CPU engine under every
//! (policy, CPU count) point, as a table, JSON or CSV, and plots (`-o DIR`).
//!
//! Every point replays the same workload: replicated once, as much as the largest CPU
//! count needs, so that points differ only in policy and CPUs. Points are independent and
//! deterministic, so they run in parallel on all host cores and the figures do not depend
//! on how many there are.

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use crate::units::ms;
use anyhow::{Result, bail};
use refgate_replay::{
    Config, Engine, Params, Report,
    cost::{Cost, CostEntry},
    live::Live,
    metrics::CpuTime,
    params::{ExtentLock, ExtentTreeModel},
};
use serde::Serialize;

use crate::{
    args::{self, ModelArgs, TraceInput},
    replay::{
        prepare::{SAMPLE, cost_model, prepare_workload},
        report::describe_error,
    },
};

mod plots;

/// `refgate compare`'s options.
#[derive(clap::Args, Clone, Debug)]
#[command(allow_negative_numbers = true)]
pub struct CompareArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// Policies to compare, comma-separated, by name or kernel version; `all` for every one
    /// (`refgate policies` lists them).
    #[arg(long, value_delimiter = ',', default_value = args::default_policies(),
          value_parser = args::policies_parser(), value_name = "NAME,NAME,…|all")]
    pub policies: Vec<String>,
    /// Virtual CPU counts, comma-separated.
    #[arg(long, value_name = "N,N,…", default_value = "1,2,4,8,16,32,64",
          value_parser = args::parse_counts, value_hint = clap::ValueHint::Other)]
    pub cpus: args::Counts,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Write SVG and PNG plots into this directory.
    #[arg(short = 'o', long = "out", value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub out_dir: Option<PathBuf>,
    /// One JSON object with a `points` list instead of the table (`--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// CSV instead of the table (`--format csv`).
    #[arg(long, conflicts_with_all = ["json", "format"])]
    pub csv: bool,
    /// What stdout gets: the aligned `table` (default), `json`, `csv`, or a `markdown` table
    /// to paste into a post or an issue.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
}

/// `refgate compare --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object (docs/schema/compare.schema.json).
    Json,
    /// One row per point, with a header row.
    Csv,
    /// A GitHub-flavoured Markdown table: policy, CPUs and the main figures, in ms.
    Markdown,
}

/// One (policy, CPUs) point's answers.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub policy: String,
    pub cpus: usize,
    /// Makespan.
    pub virtual_seconds: f64,
    pub refs_per_virtual_second: f64,
    pub refs_run: u64,
    /// CPU burnt spinning on `delayed_refs->lock`, summed over CPUs.
    pub delayed_refs_lock_spin_cpu_seconds: f64,
    /// The same as a share of all CPU time (CPUs × makespan).
    pub delayed_refs_lock_spin_share: f64,
    /// Of `delayed_refs_lock_spin_cpu_seconds`, spun inside `btrfs_run_delayed_refs` (the runners).
    pub delayed_refs_lock_spin_cpu_seconds_in_runners: f64,
    /// CPU burnt spinning on the extent tree's lock (3.x spinning tree locks).
    pub extent_tree_spin_cpu_seconds: f64,
    pub head_lock_spin_cpu_seconds: f64,
    pub extent_tree_wait_seconds: f64,
    pub extent_tree_waits: u64,
    pub head_mutex_wait_seconds: f64,
    pub run_calls: u64,
    pub run_call_p99_ns: u64,
    pub gate_sleeps: u64,
    pub gate_early_returns: u64,
    pub seq_holdbacks: u64,
    /// Summed over CPUs.
    pub cpu_time: CpuTime,
    pub invariant_ok: bool,
}

impl Point {
    fn from_report(policy: &str, r: &Report) -> Self {
        let v = r.virtual_figures.as_ref().expect("virtual engine");
        let mut t = CpuTime::default();
        for c in &v.cpus {
            t.work_ns += c.work_ns;
            t.spin_delayed_refs_lock_ns += c.spin_delayed_refs_lock_ns;
            t.spin_head_lock_ns += c.spin_head_lock_ns;
            t.spin_extent_tree_ns += c.spin_extent_tree_ns;
            t.switch_ns += c.switch_ns;
            t.sleeping_ns += c.sleeping_ns;
            t.idle_ns += c.idle_ns;
            t.refs_run += c.refs_run;
        }
        Point {
            policy: policy.into(),
            cpus: r.threads,
            virtual_seconds: v.virtual_seconds,
            refs_per_virtual_second: v.refs_per_virtual_second,
            refs_run: r.refs_run,
            delayed_refs_lock_spin_cpu_seconds: r.dr_lock.spin_cpu_seconds,
            delayed_refs_lock_spin_share: t.spin_delayed_refs_lock_ns as f64
                / t.total_ns().max(1) as f64,
            delayed_refs_lock_spin_cpu_seconds_in_runners: r.dr_lock.runner_spin_cpu_seconds,
            extent_tree_spin_cpu_seconds: t.spin_extent_tree_ns as f64 / 1e9,
            head_lock_spin_cpu_seconds: r.head_lock.spin_cpu_seconds,
            extent_tree_wait_seconds: r.extent_tree_waits.total_ns as f64 / 1e9,
            extent_tree_waits: r.extent_tree_waits.count,
            head_mutex_wait_seconds: r.head_mutex_waits.total_ns as f64 / 1e9,
            run_calls: r.run_calls.count,
            run_call_p99_ns: r.run_calls.p99_ns,
            gate_sleeps: r.gate.sleeps,
            gate_early_returns: r.gate.early_returns,
            seq_holdbacks: r.seq_holdbacks,
            cpu_time: t,
            invariant_ok: !r.partial,
        }
    }
}

/// What a sweep was run on, for the table's header and the plots' titles.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// [`SCHEMA`].
    pub schema: &'static str,
    pub trace: String,
    pub kernel: String,
    pub engine: &'static str,
    /// Tasks in the recorded workload, and the copies replayed at every point.
    pub recorded_tasks: usize,
    pub replicas: usize,
    pub cost_model: Vec<CostEntry>,
    pub sim_seed: u64,
    /// `spin`, `sleep`, or `era` (3.x policies spin, modern sleeps).
    pub extent_lock: &'static str,
    /// `btree` or `single` (`--extent-tree`, docs/extent-tree.md).
    pub extent_tree: &'static str,
    pub points: Vec<Point>,
}

impl Sweep {
    /// The trace as titles and pasted tables name it: its file name (a post or a plot does
    /// not need the author's directories); the embedded sample by what it is.
    pub fn trace_name(&self) -> String {
        let path = std::path::Path::new(&self.trace);
        match path.file_name() {
            Some(n) if path.is_file() => n.to_string_lossy().into_owned(),
            _ => self.trace.clone(),
        }
    }
}

/// The `schema` of `refgate compare --json` (docs/schema/compare.schema.json).
pub const SCHEMA: &str = "refgate.compare/1";

fn kernel_of(trace: &Option<PathBuf>) -> String {
    let header = match trace {
        Some(p) => refgate_common::trace::TraceReader::open_path(p)
            .map(|r| r.header().kernel_release.clone()),
        None => refgate_common::trace::TraceReader::open(std::io::Cursor::new(SAMPLE))
            .map(|r| r.header().kernel_release.clone()),
    };
    header.unwrap_or_else(|_| "unknown kernel".into())
}

pub fn run(args: CompareArgs) -> Result<()> {
    if args.cpus.0.is_empty() || args.policies.is_empty() {
        bail!("compare needs at least one policy (--policies) and one CPU count (--cpus)");
    }
    let policies: Vec<_> = args::expand_policies(&args.policies)
        .into_iter()
        .map(|p| {
            let b = crate::registry::make(&p);
            (p, b)
        })
        .collect();
    let max_cpus = *args.cpus.0.iter().max().expect("non-empty");
    let prepared = prepare_workload(&args.input, None, None, max_cpus)?;
    // The largest point decides (with `--replicate auto` the workload is replicated for the
    // largest CPU count, and every point replays it).
    // Points run side by side, one per host core: each holds its own tasks and refs, so the
    // check is of all those in flight at once.
    let w = &prepared.workload;
    let at_once = points_at_once(policies.len() * args.cpus.0.len()) as u64;
    crate::replay::limits::check(
        &format!(
            "every point (the workload is replicated ×{} for the {max_cpus}-CPU one; {at_once} \
             points run at once)",
            prepared.copies
        ),
        (
            w.task_count() as u64 * at_once,
            w.total_adds().saturating_mul(at_once),
        ),
        prepared.copies,
        true,
        "--cpus",
    )?;
    let costs = cost_model(&args.model.costs, None, &prepared.conv)?;
    let mut params = Params {
        ext_cost_ns: costs.get(Cost::RunRef),
        costs: costs.clone(),
        extent_lock: args.model.extent_lock,
        ..Params::default()
    };
    args.model.apply_extent_tree(&mut params, prepared.nodesize);
    let points: Vec<(usize, usize)> = (0..policies.len())
        .flat_map(|p| args.cpus.0.iter().map(move |&c| (p, c)))
        .collect();
    let out = run_points(
        &points,
        &policies,
        &prepared.workload,
        &params,
        args.model.sim_seed,
    )?;
    let sweep = Sweep {
        schema: SCHEMA,
        trace: prepared.name.clone(),
        kernel: kernel_of(&args.input.trace),
        engine: Engine::Virtual.name(),
        recorded_tasks: prepared.conv.tasks,
        replicas: prepared.copies,
        cost_model: costs.entries.clone(),
        sim_seed: args.model.sim_seed,
        extent_lock: match args.model.extent_lock {
            Some(ExtentLock::Spin) => "spin",
            Some(ExtentLock::Sleep) => "sleep",
            None => "era",
        },
        extent_tree: match args.model.extent_tree {
            ExtentTreeModel::Btree => "btree",
            ExtentTreeModel::Single => "single",
        },
        points: out,
    };
    write_sweep(&sweep, &args)
}

/// The sweep on stdout (JSON, CSV or the table) and, with `-o DIR`, its plots.
fn write_sweep(sweep: &Sweep, args: &CompareArgs) -> Result<()> {
    let format = match (args.json, args.csv) {
        (true, _) => OutputFormat::Json,
        (_, true) => OutputFormat::Csv,
        _ => args.format.unwrap_or(OutputFormat::Table),
    };
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(sweep)?),
        OutputFormat::Csv => print!("{}", csv(sweep)),
        OutputFormat::Markdown => print!("{}", markdown(sweep)),
        OutputFormat::Table => print!("{}", table(sweep)),
    }
    if let Some(dir) = &args.out_dir {
        let files = plots::write_all(sweep, dir)?;
        crate::owner::give_paths_to_invoking_user(&files);
        eprintln!(
            "refgate compare: wrote {} plots into {}",
            files.len(),
            dir.display()
        );
    }
    Ok(())
}

/// Replays every (policy index, CPUs) point on the virtual engine, spread over the host's
/// cores (each point is deterministic, so the order they run in does not matter); the
/// points' figures in `points` order.
/// How many of `points` run at once: one per host core.
fn points_at_once(points: usize) -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(points)
        .max(1)
}

fn run_points(
    points: &[(usize, usize)],
    policies: &[(String, Box<dyn refgate_replay::policy::Policy>)],
    workload: &refgate_replay::workload::Workload,
    params: &Params,
    sim_seed: u64,
) -> Result<Vec<Point>> {
    let results: Mutex<Vec<Option<Result<Point, String>>>> = Mutex::new(vec![None; points.len()]);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let workers = points_at_once(points.len());
    let tty = std::io::stderr().is_terminal();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(p, cpus)) = points.get(i) else {
                        return;
                    };
                    let (name, policy) = &policies[p];
                    let cfg = Config {
                        engine: Engine::Virtual,
                        cpus,
                        params: params.clone(),
                        sim_seed,
                        pace: false,
                        timeline: false,
                    };
                    let r = refgate_replay::replay(
                        workload,
                        policy.as_ref(),
                        &cfg,
                        Arc::new(Live::new(cpus)),
                    )
                    .map(|r| Point::from_report(name, &r))
                    .map_err(|e| format!("{name} on {cpus} CPUs: {}", describe_error(&e)));
                    results.lock().expect("no panics hold it")[i] = Some(r);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(n, points.len(), started, tty);
                }
            });
        }
    });
    if tty {
        eprintln!();
    }
    let mut out = Vec::new();
    for r in results.into_inner().expect("no panics hold it") {
        match r.expect("every point ran") {
            Ok(p) => out.push(p),
            Err(e) => bail!("{e}"),
        }
    }
    Ok(out)
}

/// Points done and an ETA, on one line (terminal) or a line per point.
fn progress(done: usize, total: usize, started: Instant, tty: bool) {
    let el = started.elapsed().as_secs_f64();
    let eta = el / done as f64 * (total - done) as f64;
    if tty {
        eprint!("\rrefgate compare: {done}/{total} points, {el:.1} s, ETA {eta:.1} s   ");
    } else {
        eprintln!("refgate compare: {done}/{total} points, {el:.1} s, ETA {eta:.1} s");
    }
}

/// The text table: one row per point.
pub fn table(s: &Sweep) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "refgate compare: {} (recorded on {}), {} tasks × {} replicas on every point, engine {}, sim seed {}, extent tree {} with {} locks",
        s.trace,
        s.kernel,
        s.recorded_tasks,
        s.replicas,
        s.engine,
        s.sim_seed,
        s.extent_tree,
        s.extent_lock
    );
    let costs: Vec<String> = s
        .cost_model
        .iter()
        .map(|c| format!("{}={}", c.name, c.ns))
        .collect();
    let _ = writeln!(o, "costs (ns): {}\n", costs.join(" "));
    // As wide as the longest name (a policy from outside the crate may be longer).
    let w = s.points.iter().map(|p| p.policy.len()).fold(13, usize::max);
    let _ = writeln!(
        o,
        "{:<w$} {:>5} {:>12} {:>12} {:>13} {:>7} {:>13} {:>13} {:>13} {:>12} {:>12} {:>7} {:>7}",
        "policy",
        "cpus",
        "makespan ms",
        "refs/vsec",
        "DR spin ms",
        "DR %",
        "  in runners",
        "ext spin ms",
        "ext wait ms",
        "mutex ms",
        "run p99 µs",
        "sleeps",
        "early"
    );
    for p in &s.points {
        let _ = writeln!(
            o,
            "{:<w$} {:>5} {:>12} {:>12.0} {:>13} {:>6.2}% {:>13} {:>13} {:>13} {:>12} {:>12.1} {:>7} {:>7}",
            p.policy,
            p.cpus,
            ms(p.virtual_seconds),
            p.refs_per_virtual_second,
            ms(p.delayed_refs_lock_spin_cpu_seconds),
            100.0 * p.delayed_refs_lock_spin_share,
            ms(p.delayed_refs_lock_spin_cpu_seconds_in_runners),
            ms(p.extent_tree_spin_cpu_seconds),
            ms(p.extent_tree_wait_seconds),
            ms(p.head_mutex_wait_seconds),
            p.run_call_p99_ns as f64 / 1e3,
            p.gate_sleeps,
            p.gate_early_returns
        );
    }
    o
}

/// A Markdown table of the main figures, one row per point, under a line saying what was
/// swept (the trace by file name: a post does not need the author's directories).
pub fn markdown(s: &Sweep) -> String {
    use std::fmt::Write;
    let name = s.trace_name();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "`refgate compare` of `{name}` (recorded on {}): {} tasks × {} replicas, virtual CPUs, sim seed {}\n",
        s.kernel, s.recorded_tasks, s.replicas, s.sim_seed
    );
    let _ = writeln!(
        o,
        "| policy | CPUs | makespan (ms) | refs per virtual s | delayed_refs->lock spin (ms) | share of CPU time | extent-tree wait (ms) | head->mutex wait (ms) | run call p99 (µs) | gate sleeps |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &s.points {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {} | {:.2} % | {} | {} | {:.1} | {} |",
            p.policy,
            p.cpus,
            ms(p.virtual_seconds),
            p.refs_per_virtual_second,
            ms(p.delayed_refs_lock_spin_cpu_seconds),
            100.0 * p.delayed_refs_lock_spin_share,
            ms(p.extent_tree_wait_seconds),
            ms(p.head_mutex_wait_seconds),
            p.run_call_p99_ns as f64 / 1e3,
            p.gate_sleeps
        );
    }
    o
}

/// CSV with a header row; one row per point.
pub fn csv(s: &Sweep) -> String {
    let mut o = String::from(
        "policy,cpus,virtual_seconds,refs_per_virtual_second,refs_run,delayed_refs_lock_spin_cpu_seconds,delayed_refs_lock_spin_share,delayed_refs_lock_spin_cpu_seconds_in_runners,extent_tree_spin_cpu_seconds,head_lock_spin_cpu_seconds,extent_tree_wait_seconds,extent_tree_waits,head_mutex_wait_seconds,run_calls,run_call_p99_ns,gate_sleeps,gate_early_returns,seq_holdbacks\n",
    );
    for p in &s.points {
        o.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.policy,
            p.cpus,
            p.virtual_seconds,
            p.refs_per_virtual_second,
            p.refs_run,
            p.delayed_refs_lock_spin_cpu_seconds,
            p.delayed_refs_lock_spin_share,
            p.delayed_refs_lock_spin_cpu_seconds_in_runners,
            p.extent_tree_spin_cpu_seconds,
            p.head_lock_spin_cpu_seconds,
            p.extent_tree_wait_seconds,
            p.extent_tree_waits,
            p.head_mutex_wait_seconds,
            p.run_calls,
            p.run_call_p99_ns,
            p.gate_sleeps,
            p.gate_early_returns,
            p.seq_holdbacks
        ));
    }
    o
}
