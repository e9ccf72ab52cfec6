//! `refgate replay`: trace → workload → engine (N virtual CPUs or N threads × policy) →
//! report + §7.4 verdict.
use std::{
    io::{Cursor, IsTerminal},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use refgate_common::{event::Record, trace::TraceReader};
use refgate_replay::{
    Config, Engine, Params, Report, by_name,
    cost::{Cost, CostModel},
    live::{Live, WaitRole},
    trace_workload::{TraceConversion, TraceOptions, workload_from_records},
};
use serde_json::json;

/// The bundled sample, recorded on this project's 6.18 machine (`cargo xtask sample`).
pub static SAMPLE: &[u8] = include_bytes!("../../samples/scratch-6.18.bin");
pub const SAMPLE_NAME: &str = "bundled sample (samples/scratch-6.18.bin)";

#[derive(Default)]
pub struct ReplayArgs {
    pub trace: Option<PathBuf>,
    /// CPUs (virtual) or threads (real).
    pub threads: usize,
    pub engine: Engine,
    pub sim_seed: u64,
    /// `--cost NAME=NS` overrides.
    pub costs: Vec<String>,
    /// `--timeline FILE`: the virtual replay's timeline as Chrome trace-event JSON.
    pub timeline: Option<PathBuf>,
    /// `--validate`: compare with the recording instead of replaying freely.
    pub validate: bool,
    /// `--workload FILE`: replay a workload file instead of a trace.
    pub workload: Option<PathBuf>,
    /// `--dump-state FILE`: write the final extent tree and counters as JSON.
    pub dump_state: Option<PathBuf>,
    /// `--seq-rule`: which recorded refs get 3.x tree-mod seqs.
    pub seq_rule: refgate_replay::trace_workload::SeqRule,
    /// `--extent-lock`; `None`: the policy era's kind.
    pub extent_lock: Option<refgate_replay::params::ExtentLock>,
    pub policy: String,
    /// `None`: as fast as possible; `Some(f)`: recorded think-times divided by f.
    pub speed: Option<f64>,
    /// Copies of the workload over disjoint extents; `None`: enough for every thread.
    pub replicate: Option<usize>,
    pub handle_gap_us: u64,
    /// Busy-work per extent-tree update; `None`: calibrated from the trace.
    pub ext_cost_ns: Option<u64>,
    pub json: bool,
    pub plain: bool,
    /// Refuse a damaged trace instead of replaying what precedes the damage.
    pub strict: bool,
}

/// Where a damaged trace stops (`trace_damage` in `--json`): everything before it is replayed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceDamage {
    /// Byte offset of the damaged (or missing) frame.
    pub offset: u64,
    /// Why reading stopped, in a few words.
    pub reason: String,
    /// Records read before the damage; all of them are replayed.
    pub records_kept: u64,
    /// The full diagnosis, naming the file.
    pub message: String,
}

/// Reads every record before any damage. A damaged trace (cut, corrupt, or without its
/// end-of-trace frame after a crash) is replayed up to the damage, which the reports state;
/// `--strict` refuses it instead.
pub fn load(args: &ReplayArgs) -> Result<(String, Vec<Record>, Option<TraceDamage>)> {
    let (name, mut reader): (String, TraceReader<Box<dyn std::io::Read>>) = match &args.trace {
        Some(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open the trace {}", p.display()))?;
            let name = p.display().to_string();
            (
                name.clone(),
                TraceReader::open_named(
                    Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::Read>,
                    name,
                )?,
            )
        }
        None => (
            SAMPLE_NAME.to_string(),
            TraceReader::open_named(
                Box::new(Cursor::new(SAMPLE)) as Box<dyn std::io::Read>,
                SAMPLE_NAME.into(),
            )?,
        ),
    };
    let records: Vec<Record> = reader.by_ref().collect();
    let damage = reader.damage().map(|d| TraceDamage {
        offset: d.offset,
        reason: d.reason.short(),
        records_kept: records.len() as u64,
        message: d.to_error(&name).to_string(),
    });
    if let Some(d) = &damage {
        if args.strict {
            bail!(
                "{}. --strict: replay needs a complete trace. Without --strict, refgate replays \
                 the {} records before the damage and says so in its report; `refgate inspect` \
                 shows what is there.",
                d.message,
                d.records_kept
            );
        }
        if !records.iter().any(|r| matches!(r, Record::Event(_))) {
            bail!(
                "{}. Before the damage there is not a single event, so there is nothing to \
                 replay; re-record.",
                d.message
            );
        }
        eprintln!(
            "refgate: warning: {}. Replaying the {} records before the damage (--strict \
             refuses such a trace).",
            d.message, d.records_kept
        );
    }
    Ok((name, records, damage))
}

/// `trace_damage` for `--json`: `null` for a whole trace. `cut_transaction` is the (1-based)
/// transaction that was open at the damage: replayed up to it, then committed by the replay.
pub fn damage_json(damage: Option<&TraceDamage>, conv: &TraceConversion) -> serde_json::Value {
    match damage {
        None => serde_json::Value::Null,
        Some(d) => json!({
            "offset": d.offset,
            "reason": d.reason,
            "records_kept": d.records_kept,
            "message": d.message,
            "cut_transaction": conv.transactions,
            "cut_transaction_committed_by_replay": true,
        }),
    }
}

/// The text report with the damage stated right under its first line.
pub fn with_damage_text(
    report: String,
    damage: Option<&TraceDamage>,
    conv: &TraceConversion,
) -> String {
    let Some(d) = damage else { return report };
    let at = report.find('\n').map_or(report.len(), |i| i + 1);
    let mut o = report;
    o.insert_str(
        at,
        &format!(
            "  DAMAGED    the trace stops at byte offset {} ({}): replayed the {} records before \
             it; transaction {} of {} was open there, so it was replayed up to the cut and then \
             committed by the replay, and the §7.4 verdict covers what was replayed\n",
            d.offset, d.reason, d.records_kept, conv.transactions, conv.transactions
        ),
    );
    o
}

pub fn run(args: ReplayArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.validate {
        crate::validate::check_args(&args)?;
        return crate::validate::run(args);
    }
    let policy = policy_by_name(&args.policy)?;
    let prepare = Instant::now();
    let Prepared {
        name,
        conv,
        workload,
        copies,
        damage,
        params: overrides,
    } = prepare_workload(&args, args.threads)?;

    let live = Arc::new(Live::new(args.threads));
    let costs = cost_model(&args, &conv)?;
    // The per-node extent-tree cost is calibrated from the recorded run events (§7.5) unless
    // given; everything else keeps the kernel's values.
    let mut params = Params {
        ext_cost_ns: costs.get(Cost::RunRef),
        costs,
        extent_lock: args.extent_lock,
        keep_final_state: args.dump_state.is_some(),
        ..Params::default()
    };
    for (k, v) in &overrides {
        params
            .set(k, *v)
            .map_err(|e| anyhow::anyhow!("{name}: params line: {e}"))?;
    }
    // Reading and converting the trace must not dominate the replay (issue: speed); reported.
    let prep = Prep {
        seconds: prepare.elapsed().as_secs_f64(),
        ext_cost_ns: params.ext_cost_ns,
        copies,
    };
    let cfg = Config {
        engine: args.engine,
        cpus: args.threads,
        params,
        sim_seed: args.sim_seed,
        pace: args.speed.is_some(),
        timeline: args.timeline.is_some(),
    };
    let started = Instant::now();
    let tui = !(args.plain || args.json) && std::io::stdout().is_terminal();
    let report: Result<Report, String> = std::thread::scope(|s| {
        let engine = s.spawn(|| {
            refgate_replay::replay(&workload, policy.as_ref(), &cfg, live.clone())
                // The engine's only error is the model's verdict; a dashboard failure or a panic
                // below is not, and must not be reported as one.
                .map_err(|e| describe_error(&e))
        });
        let join = |engine: std::thread::ScopedJoinHandle<'_, Result<Report, String>>| {
            engine
                .join()
                .unwrap_or_else(|_| Err("the replay engine panicked".into()))
        };
        if tui {
            match dashboard_phase(
                &name,
                damage.as_ref(),
                policy.as_ref(),
                args.engine,
                &live,
                started,
                engine,
            ) {
                Ok(r) => return r,
                // The terminal failed under us: the engine was cancelled and joined.
                Err(e) => return Err(format!("the dashboard failed: {e}")),
            }
        }
        // Plain progress: at most one line a second, on stderr (stdout carries the report).
        let mut next = started + Duration::from_secs(1);
        while !engine.is_finished() {
            std::thread::sleep(
                Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())),
            );
            if Instant::now() < next || engine.is_finished() {
                continue;
            }
            // Advanced in JSON mode too: a deadline left in the past made this loop spin
            // (a busy core taken from the engine).
            next += Duration::from_secs(1);
            if !args.json {
                let snap = live.snapshot();
                let clock = if args.engine == Engine::Virtual {
                    format!(" (virtual {})", ns(snap.virtual_ns))
                } else {
                    String::new()
                };
                eprintln!(
                    "[{:>5.1}s{clock}] {:>5.1}% ops, {} refs run, queue {} entries / {} ready heads, transaction {}/{}",
                    started.elapsed().as_secs_f64(),
                    100.0 * snap.ops_done as f64 / snap.ops_total.max(1) as f64,
                    snap.refs_run,
                    snap.num_entries,
                    snap.num_heads_ready,
                    snap.transaction,
                    snap.transactions_total
                );
            }
        }
        join(engine)
    });
    let report = report.map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = &args.dump_state {
        write_dump(path, &report)?;
    }
    if let (Some(path), Some(t)) = (&args.timeline, report.timeline.as_ref()) {
        let (unit, clock) = match report.engine {
            Engine::Virtual => (
                "CPU",
                "virtual ns (the replay's virtual time, not the host's)",
            ),
            Engine::Threads => (
                "thread",
                "host ns since the first thread's first state change",
            ),
        };
        let title = format!(
            "refgate replay of {name}: {} on {} {}s ({} engine)",
            report.policy,
            report.threads,
            unit,
            report.engine.name()
        );
        crate::timeline::write(path, t, report.threads, &title, unit, clock)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&{
                let mut v = json_report(&name, &conv, &prep, &report);
                v["trace_damage"] = damage_json(damage.as_ref(), &conv);
                v
            })?
        );
    } else {
        let text = text_report(&name, &conv, &prep, &report);
        print!("{}", with_damage_text(text, damage.as_ref(), &conv));
    }
    Ok(())
}

/// Runs the dashboard on this thread while the engine runs; holds the final numbers until a
/// key is pressed (not after `q`). The terminal is restored before this returns.
#[allow(clippy::too_many_arguments)]
fn dashboard_phase(
    name: &str,
    damage: Option<&TraceDamage>,
    policy: &dyn refgate_replay::Policy,
    engine_kind: Engine,
    live: &Arc<Live>,
    started: Instant,
    engine: std::thread::ScopedJoinHandle<'_, Result<Report, String>>,
) -> std::io::Result<Result<Report, String>> {
    use crate::dashboard::{Tui, replay};
    let join = |engine: std::thread::ScopedJoinHandle<'_, Result<Report, String>>| {
        engine
            .join()
            .unwrap_or_else(|_| Err("the replay engine panicked".into()))
    };
    let short = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name);
    let short = if name == SAMPLE_NAME {
        "bundled sample".to_string()
    } else {
        short.to_string()
    };
    // The title says when the trace is damaged and how much of it is replayed.
    let short = match damage {
        Some(d) => format!(
            "{short} (DAMAGED at byte {}: {} records before it replayed)",
            d.offset, d.records_kept
        ),
        None => short,
    };
    let mut tui = match Tui::enter() {
        Ok(t) => t,
        Err(e) => {
            live.cancel();
            let _ = join(engine);
            return Err(e);
        }
    };
    let mut app = replay::ReplayApp::new(&short, policy, engine_kind, live);
    let ended = replay::run(&mut tui, &mut app, live, started, &|| engine.is_finished());
    let ended = match ended {
        Ok(e) => e,
        Err(e) => {
            live.cancel();
            drop(tui);
            let _ = join(engine);
            return Err(e);
        }
    };
    let report = join(engine);
    if ended == replay::Ended::Finished
        && let Ok(r) = &report
    {
        replay::hold(&mut tui, &mut app, live, r.clone())?;
    }
    drop(tui);
    Ok(report)
}

/// `--dump-state`: the final extent tree and the model's counts as JSON.
fn write_dump(path: &std::path::Path, r: &Report) -> Result<()> {
    let v = json!({
        "policy": r.policy,
        "kernels": r.kernels,
        "gated": r.gated,
        "engine": r.engine.name(),
        "cpus": r.threads,
        "final_state": r.final_state,
        "counts": {
            "adds": r.adds,
            "refs_run": r.refs_run,
            "heads_run": r.heads_run,
            "extent_ops_run": r.extent_ops_run,
            "insert_cancels": r.insert_cancels,
            "run_merges": r.run_merges,
            "seq_holdbacks": r.seq_holdbacks,
            "head_eagain": r.head_eagain,
            "space_waits": r.space_waits,
            "gate": r.gate,
            "run_calls_by_caller": r.run_calls_by_caller,
            "refs_run_by_caller": r.refs_run_by_caller,
        },
    });
    std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("cannot write the state dump {}", path.display()))
}

/// A replay's error for the user: what kind it is and what to make of it.
pub fn describe_error(e: &refgate_replay::ReplayError) -> String {
    use refgate_replay::ReplayError::*;
    match e {
        BadWorkload(why) => format!(
            "the workload cannot be replayed: {why}. A trace that loses events (see `refgate inspect`) or a hand-written workload that drops more than it adds gives this"
        ),
        Model { .. } => format!(
            "MODEL ERROR: {e}. The model hit what the kernel would BUG on, or the engine failed; please report it with the trace"
        ),
        Invariant(v) => format!("INVARIANT VIOLATED (docs/kernel-delayed-refs.md §7.4): {v}"),
    }
}

/// A policy from its CLI name, or an error listing the names.
pub fn policy_by_name(name: &str) -> Result<Box<dyn refgate_replay::Policy>> {
    by_name(name).with_context(|| {
        format!(
            "unknown policy `{name}`: choose pre (3.7/3.8), seed (3.9/3.10), modern (6.7+) or seed-throttle (3.11-3.13)"
        )
    })
}

/// A trace turned into the workload to replay.
pub struct Prepared {
    pub name: String,
    pub conv: TraceConversion,
    pub workload: refgate_replay::Workload,
    /// Replicas of the recorded workload in `workload`.
    pub copies: usize,
    /// Where the trace is damaged, if it is; the workload is what precedes the damage.
    pub damage: Option<TraceDamage>,
    /// A workload file's `params` lines.
    pub params: std::collections::BTreeMap<String, u64>,
}

/// Reads the trace and builds its workload, replicated over disjoint extents as
/// `args.replicate` says (`auto`: enough copies that each of `cpus` CPUs has a writer).
pub fn prepare_workload(args: &ReplayArgs, cpus: usize) -> Result<Prepared> {
    if let Some(path) = &args.workload {
        return prepare_workload_file(args, path, cpus);
    }
    let (name, records, damage) = load(args)?;
    let opts = TraceOptions {
        handle_gap_ns: args.handle_gap_us * 1000,
        speed: args.speed,
        seq_rule: args.seq_rule,
    };
    let (base, conv) = workload_from_records(records, &opts)
        .map_err(|e| anyhow::anyhow!("{name} cannot be replayed: {e}"))?;
    let tasks = base
        .tasks
        .iter()
        .filter(|t| t.transactions.iter().any(|tt| !tt.handles.is_empty()))
        .count();
    let (workload, copies) = replicated(base, tasks, args.replicate, cpus);
    Ok(Prepared {
        name,
        conv,
        workload,
        copies,
        damage,
        params: Default::default(),
    })
}

/// The workload as replayed and its number of copies: `--replicate N`, or by default enough
/// copies of its `tasks` writers to give every CPU one.
fn replicated(
    base: refgate_replay::Workload,
    tasks: usize,
    replicate: Option<usize>,
    cpus: usize,
) -> (refgate_replay::Workload, usize) {
    let copies = replicate
        .unwrap_or_else(|| cpus.div_ceil(tasks.max(1)))
        .max(1);
    if copies > 1 {
        (base.replicate(copies, base.span()), copies)
    } else {
        (base, copies)
    }
}

/// `--workload FILE`: the workload text format (`refgate-replay/src/workload_file.rs`).
fn prepare_workload_file(
    args: &ReplayArgs,
    path: &std::path::Path,
    cpus: usize,
) -> Result<Prepared> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the workload file {}", path.display()))?;
    let file = refgate_replay::workload_file::parse(&text, args.seq_rule).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a workload this replay can run: {e}. The format is described in \
             refgate-replay/src/workload_file.rs; `refgate export TRACE --format workload` \
             writes one from a trace.",
            path.display()
        )
    })?;
    let base = file.workload;
    let conv = TraceConversion {
        tasks: base.tasks.len(),
        transactions: base.transactions,
        handles: base
            .tasks
            .iter()
            .flat_map(|t| &t.transactions)
            .map(|tt| tt.handles.len())
            .sum(),
        ref_adds: base.total_adds(),
        initial_extents: base.initial.len(),
        handle_source: "workload file",
        seq_rule: args.seq_rule,
        ..TraceConversion::default()
    };
    let tasks = base.tasks.len();
    let (workload, copies) = replicated(base, tasks, args.replicate, cpus);
    Ok(Prepared {
        name: path.display().to_string(),
        conv,
        workload,
        copies,
        damage: None,
        params: file.params,
    })
}

/// The virtual engine's costs: defaults, the run cost calibrated from the trace when it has
/// run events, then `--ext-cost-ns` and `--cost` overrides.
pub fn cost_model(args: &ReplayArgs, conv: &TraceConversion) -> Result<CostModel> {
    let mut m = CostModel::defaults();
    if conv.run_cost_ns > 0 {
        m.set(
            Cost::RunRef,
            conv.run_cost_ns,
            format!(
                "calibrated from this trace: median gap between consecutive run events of one task ({} run events)",
                conv.recorded_run_events
            ),
        );
    }
    if let Some(ns) = args.ext_cost_ns {
        m.apply_overrides(&[format!("run_ref={ns}")])
            .map_err(|e| anyhow::anyhow!("--ext-cost-ns: {e}"))?;
    }
    m.apply_overrides(&args.costs)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m)
}

/// What happened before the engine started.
pub struct Prep {
    /// Reading the trace and building the workload.
    pub seconds: f64,
    /// The extent-tree cost used (calibrated or `--ext-cost-ns`).
    pub ext_cost_ns: u64,
    /// Replicas of the workload.
    pub copies: usize,
}

fn wait_json(w: &refgate_replay::metrics::WaitSummary) -> serde_json::Value {
    json!({"count": w.count, "total_ns": w.total_ns, "p50_ns": w.p50_ns, "p99_ns": w.p99_ns, "max_ns": w.max_ns})
}

/// The machine-readable report (`--json`). Under the virtual engine everything outside
/// `host` is the same for the same trace and arguments on any machine.
pub fn json_report(
    trace: &str,
    conv: &TraceConversion,
    prep: &Prep,
    r: &Report,
) -> serde_json::Value {
    let mut v = json!({
        "policy": r.policy,
        "engine": r.engine.name(),
        "threads": r.threads,
        "trace": trace,
        "replicas": prep.copies,
        "ext_cost_ns": prep.ext_cost_ns,
        "conversion": conv,
        "refs_run": r.refs_run,
        "heads_run": r.heads_run,
        "adds": r.adds,
        "partial": r.partial,
        // A run cut short by `q` gets no verdict (the check needs the whole trace).
        "invariant_ok": if r.partial { serde_json::Value::Null } else { true.into() },
        "invariant": r.invariant,
        "spin_cpu_seconds": r.dr_lock.spin_cpu_seconds,
        "spin_cpu_seconds_by_role": {
            "delayed_refs_lock": r.dr_lock.spin_cpu_seconds,
            "delayed_refs_lock_in_runners": r.dr_lock.runner_spin_cpu_seconds,
            "head_lock": r.head_lock.spin_cpu_seconds,
            "extent_tree": r.virtual_figures.as_ref().map(|v| {
                v.cpus.iter().map(|c| c.spin_extent_tree_ns).sum::<u64>() as f64 / 1e9
            }),
        },
        "lock_waits": {
            "delayed_refs_lock": wait_json(&r.dr_lock.wait),
            "head_lock": wait_json(&r.head_lock.wait),
            "head_mutex": wait_json(&r.head_mutex_waits),
            "extent_tree": wait_json(&r.extent_tree_waits),
        },
        "delayed_refs_lock": r.dr_lock,
        "gate": r.gate,
        "run_call_latency": wait_json(&r.run_calls),
        "run_calls_by_caller": r.run_calls_by_caller,
        "space_waits": r.space_waits,
        "seq_holdbacks": r.seq_holdbacks,
        "per_thread_refs_run": r.per_thread_refs_run,
        "host": {
            "wall_seconds": r.host.wall_seconds,
            "refs_per_second": r.host.refs_per_second,
            "ops_per_second": r.host.ops_per_second,
            "cores": r.host.cores,
            "paused_seconds": r.host.paused_seconds,
            "prepare_seconds": prep.seconds,
        },
    });
    if let Some(vf) = &r.virtual_figures {
        let o = v.as_object_mut().expect("object");
        o.insert("virtual_seconds".into(), vf.virtual_seconds.into());
        o.insert(
            "refs_per_virtual_second".into(),
            vf.refs_per_virtual_second.into(),
        );
        o.insert("cpus".into(), json!(vf.cpus));
        o.insert("cost_model".into(), json!(vf.cost_model.entries));
        o.insert("sim_seed".into(), vf.sim_seed.into());
    }
    v
}

fn ns(v: u64) -> String {
    refgate_common::trace::summary::fmt_ns(v)
}

/// The human report.
pub fn text_report(trace: &str, conv: &TraceConversion, prep: &Prep, r: &Report) -> String {
    let copies = prep.copies;
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "refgate replay of {trace}");
    let _ = writeln!(
        o,
        "  workload   {} tasks × {} replica(s), {} transactions, {} handles, {} ref adds + {} extent ops per replica ({} re-homed to keep per-extent order)",
        conv.tasks,
        copies,
        conv.transactions,
        conv.handles,
        conv.ref_adds,
        conv.extent_ops,
        conv.rehomed
    );
    let _ = writeln!(
        o,
        "  prepared   in {:.3} s (read + convert); handles from {}; {} fs-tree refs get a 3.x seq under pre/seed (--seq-rule {})",
        prep.seconds,
        conv.handle_source,
        conv.fs_tree_refs_with_seq,
        conv.seq_rule.name(),
    );
    let host = &r.host;
    match &r.virtual_figures {
        Some(v) => {
            let _ = writeln!(
                o,
                "  policy     {} ({}) on {} virtual CPUs (engine virtual, sim seed {}; the same figures on any host)",
                r.policy, r.kernels, r.threads, v.sim_seed
            );
            let _ = writeln!(
                o,
                "  result     {} refs run ({} heads) in {} of virtual time: {:.0} refs per virtual second (host: {:.3} s, {:.0} refs/s, {} cores)",
                r.refs_run,
                r.heads_run,
                ns((v.virtual_seconds * 1e9) as u64),
                v.refs_per_virtual_second,
                host.wall_seconds,
                host.refs_per_second,
                host.cores
            );
            cpu_split(&mut o, v);
            let _ = writeln!(o, "  costs      per step, in virtual ns (--cost NAME=NS):");
            for e in &v.cost_model.entries {
                let _ = writeln!(o, "    {:<15} {:>6} ns  {}", e.name, e.ns, e.source);
            }
        }
        None => {
            let _ = writeln!(
                o,
                "  policy     {} ({}) on {} real threads (engine threads; {} cores on this machine: with more threads than cores, contention figures measure this host's scheduler)",
                r.policy, r.kernels, r.threads, host.cores
            );
            let _ = writeln!(
                o,
                "  result     {} refs run ({} heads) in {:.3} s: {:.0} refs/s; extent-tree cost {} ns per node",
                r.refs_run, r.heads_run, host.wall_seconds, host.refs_per_second, prep.ext_cost_ns
            );
        }
    }
    if r.partial {
        let _ = writeln!(
            o,
            "  verdict    none: the run was cut short (q), so the §7.4 check, which needs the whole trace replayed, was skipped; the figures below cover the part replayed"
        );
    } else {
        let _ = writeln!(
            o,
            "  verdict    invariant holds (§7.4): {} extents, {} backrefs, {} flags checked; {} live, {} pinned ({} bytes)",
            r.invariant.extents_checked,
            r.invariant.backrefs_checked,
            r.invariant.flags_checked,
            r.invariant.extents_live,
            r.invariant.pinned,
            r.invariant.pinned_bytes
        );
    }
    if host.paused_seconds > 0.0 {
        let _ = writeln!(
            o,
            "  paused     {:.3} s (left out of the wall time)",
            host.paused_seconds
        );
    }
    let _ = writeln!(
        o,
        "\n  lock                    acquired  contended  spin CPU     waits       p50       p99       max"
    );
    for (label, s) in [
        (WaitRole::DelayedRefsLock.name(), &r.dr_lock),
        (WaitRole::HeadLock.name(), &r.head_lock),
    ] {
        let _ = writeln!(
            o,
            "  {label:<22} {:>9} {:>10} {:>8.4}s {:>9} {:>9} {:>9} {:>9}",
            s.acquisitions,
            s.contended,
            s.spin_cpu_seconds,
            s.wait.count,
            ns(s.wait.p50_ns),
            ns(s.wait.p99_ns),
            ns(s.wait.max_ns)
        );
    }
    for (label, w) in [
        (WaitRole::HeadMutex.name(), &r.head_mutex_waits),
        (WaitRole::ExtentTree.name(), &r.extent_tree_waits),
    ] {
        let _ = writeln!(
            o,
            "  {label:<22} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "",
            "",
            "",
            w.count,
            ns(w.p50_ns),
            ns(w.p99_ns),
            ns(w.max_ns)
        );
    }
    let g = &r.gate;
    if r.gated {
        let _ = writeln!(
            o,
            "\n  seed gate  {} acquisitions, {} bypasses (run_all/run_most), {} early returns, {} sleeps, {} wake-alls, {} wake-ups, {} refs_newer exits",
            g.acquisitions,
            g.bypasses,
            g.early_returns,
            g.sleeps,
            g.wake_alls,
            g.wakeups,
            g.refs_newer_exits
        );
    }
    let c = &r.run_calls;
    let _ = writeln!(
        o,
        "  run calls  {} btrfs_run_delayed_refs calls: p50 {}, p99 {}, max {}",
        c.count,
        ns(c.p50_ns),
        ns(c.p99_ns),
        ns(c.max_ns)
    );
    let by = &r.run_calls_by_caller;
    let _ = writeln!(
        o,
        "  callers    commit {}, handle end {}, async reclaim {}, preemptive reclaim {}, other {}{}",
        by.commit,
        by.handle_end,
        by.async_reclaim,
        by.preemptive_reclaim,
        by.other,
        if r.space_waits > 0 {
            format!("; {} adds waited on a space ticket", r.space_waits)
        } else {
            String::new()
        }
    );
    o
}

/// The virtual CPUs' time, summed over CPUs, as shares of N × makespan.
fn cpu_split(o: &mut String, v: &refgate_replay::engine::VirtualFigures) {
    use std::fmt::Write;
    let sum = |f: fn(&refgate_replay::vcpu::CpuTime) -> u64| v.cpus.iter().map(f).sum::<u64>();
    let total = sum(|c| c.total_ns()).max(1) as f64;
    let pct = |x: u64| 100.0 * x as f64 / total;
    let _ = writeln!(
        o,
        "  cpu time   work {:.1} %, spinning {:.1} % (delayed_refs->lock {}, head->lock {}, extent tree {}), switching {:.1} %, sleeping {:.1} %, idle {:.1} %",
        pct(sum(|c| c.work_ns)),
        pct(sum(|c| c.spin_ns())),
        ns(sum(|c| c.spin_delayed_refs_lock_ns)),
        ns(sum(|c| c.spin_head_lock_ns)),
        ns(sum(|c| c.spin_extent_tree_ns)),
        pct(sum(|c| c.switch_ns)),
        pct(sum(|c| c.sleeping_ns)),
        pct(sum(|c| c.idle_ns)),
    );
}
