//! `refgate replay`: trace → workload ([`prepare`]) → engine (N virtual CPUs or N threads ×
//! policy) → report ([`report`]) + §7.4 verdict; `--dump-state` ([`dump`]), `--timeline`
//! ([`timeline`]) and `--validate` ([`validate`]) beside it.

mod dump;
pub(crate) mod limits;
pub mod prepare;
pub mod report;
mod timeline;
mod validate;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use refgate_replay::{Config, Engine, Params, Report, cost::Cost, live::Live};

use crate::args::{ModelArgs, Speed, TraceInput, parse_cpus, parse_speed, policy_parser};
use clap::ValueHint;
use prepare::{Prepared, SAMPLE_NAME, TraceDamage, cost_model, prepare_workload};
use report::{Prep, damage_json, describe_error, json_report, text_report, with_damage_text};

/// `refgate replay`'s options. Negative numbers are values (`--speed -1` is refused by
/// `--speed`'s own check, not taken for an option).
#[derive(clap::Args, Clone, Debug, Default)]
#[command(allow_negative_numbers = true)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub input: TraceInput,
    /// Replay this workload file (JSON lines; `refgate export --format workload` writes
    /// one) instead of a trace.
    #[arg(long, conflicts_with = "trace", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub workload: Option<PathBuf>,
    /// Write the final extent tree (per extent: refs, flags, backrefs) and the model's
    /// counts as JSON to this file.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub dump_state: Option<PathBuf>,
    /// Write the replay's timeline (per CPU: running, spinning, sleeping; run calls; queue
    /// depth) as Chrome trace-event JSON for Perfetto.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub timeline: Option<PathBuf>,
    /// Compare with the recording: replay under modern on the recorded CPU count at
    /// recorded speed and print, per transaction, recorded vs replayed heads and refs
    /// run, refs merged away and who ran them.
    #[arg(long, conflicts_with = "workload")]
    pub validate: bool,
    /// CPUs: virtual CPUs with `--engine virtual`, real threads with `--engine threads`.
    #[arg(short, long, visible_alias = "cpus", default_value = "32", value_parser = parse_cpus,
          value_name = "N", value_hint = ValueHint::Other)]
    pub threads: usize,
    /// `virtual`: N CPUs in deterministic virtual time, the same answer on any host;
    /// `threads`: N real threads (real races; contention figures then depend on the host).
    #[arg(long, value_enum, default_value_t = Engine::Virtual)]
    pub engine: Engine,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Runner policy, by name or kernel version (`refgate policies` lists them).
    #[arg(short, long, default_value = "seed", value_parser = policy_parser(), value_name = "NAME")]
    pub policy: String,
    /// `max` (as fast as possible) or a factor applied to recorded think-times (1 = real time).
    #[arg(long, default_value = "max", value_parser = parse_speed, value_name = "max|FACTOR",
          value_hint = ValueHint::Other)]
    pub speed: Speed,
    /// Cost of one extent-tree update in ns (default: calibrated from the trace's run
    /// events); the same as `--cost run_ref=NS`, and the threads engine's busy-work.
    #[arg(long, value_name = "NS", value_hint = ValueHint::Other,
          value_parser = clap::value_parser!(u64).range(1..=refgate_replay::cost::MAX_COST_NS))]
    pub ext_cost_ns: Option<u64>,
    /// Stop the replay at this virtual instant (seconds) and report the part replayed, as `q`
    /// on the dashboard at that instant would (virtual engine only).
    #[arg(long, value_parser = parse_until, value_name = "SECONDS", value_hint = ValueHint::Other,
          conflicts_with = "validate")]
    pub until: Option<u64>,
    /// One JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Plain progress lines instead of the dashboard.
    #[arg(long)]
    pub no_tui: bool,
}

/// What the engine thread hands back: the report, or the error as the user reads it.
type EngineResult = Result<Report, String>;

pub fn run(args: ReplayArgs) -> Result<()> {
    if args.until.is_some() && args.engine == Engine::Threads {
        bail!(
            "--until cuts the replay at a virtual instant, and real threads have no virtual \
             clock: use it with --engine virtual (the default)"
        );
    }
    if args.validate {
        return validate::run(&args);
    }
    let policy = crate::registry::make(&args.policy);
    let prepare = Instant::now();
    let prepared = prepare_workload(
        &args.input,
        args.workload.as_deref(),
        args.speed.0,
        args.threads,
    )?;
    let w = &prepared.workload;
    limits::check(
        "this replay",
        (w.task_count() as u64, w.total_adds()),
        prepared.copies,
        args.engine == Engine::Virtual,
        "--threads",
    )?;
    let params = params_for(&args, &prepared)?;
    // Reading and converting the trace must not dominate the replay (issue: speed); reported.
    let prep = Prep {
        seconds: prepare.elapsed().as_secs_f64(),
        ext_cost_ns: params.ext_cost_ns,
        copies: prepared.copies,
    };
    let cfg = Config {
        engine: args.engine,
        cpus: args.threads,
        params,
        sim_seed: args.model.sim_seed,
        pace: args.speed.0.is_some(),
        timeline: args.timeline.is_some(),
    };
    let report =
        run_engine(&args, &prepared, policy.as_ref(), &cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_outputs(&args, &prepared, &prep, &report)
}

/// The model's parameters: the cost model (calibrated from the trace, then overridden), the
/// extent lock, and a workload file's `params` lines.
fn params_for(args: &ReplayArgs, prepared: &Prepared) -> Result<Params> {
    let costs = cost_model(&args.model.costs, args.ext_cost_ns, &prepared.conv)?;
    // The per-node extent-tree cost is calibrated from the recorded run events (§7.5) unless
    // given; everything else keeps the kernel's values.
    let mut params = Params {
        ext_cost_ns: costs.get(Cost::RunRef),
        costs,
        extent_lock: args.model.extent_lock,
        keep_final_state: args.dump_state.is_some(),
        ..Params::default()
    };
    args.model.apply_extent_tree(&mut params, prepared.nodesize);
    for (k, v) in &prepared.params {
        params
            .set(k, *v)
            .map_err(|e| anyhow::anyhow!("{}: params line: {e}", prepared.name))?;
    }
    Ok(params)
}

/// Runs the engine on a thread of its own while this one shows the dashboard (on a terminal)
/// or plain progress lines.
fn run_engine(
    args: &ReplayArgs,
    prepared: &Prepared,
    policy: &dyn refgate_replay::Policy,
    cfg: &Config,
) -> EngineResult {
    let live = Arc::new(Live::new(args.threads));
    if let Some(ns) = args.until {
        live.cut_at(ns);
    }
    let started = Instant::now();
    let tui = !(args.no_tui || args.json) && std::io::stdout().is_terminal();
    std::thread::scope(|s| {
        let engine = s.spawn(|| {
            refgate_replay::replay(&prepared.workload, policy, cfg, live.clone())
                // The engine's only error is the model's verdict; a dashboard failure or a panic
                // below is not, and must not be reported as one.
                .map_err(|e| describe_error(&e))
        });
        if tui {
            let shown = Shown {
                name: &prepared.name,
                damage: prepared.damage.as_ref(),
                policy,
                engine_kind: args.engine,
                virtual_floor_ns: think_floor_ns(&prepared.workload),
            };
            return dashboard_phase(&shown, &live, started, engine)
                // The terminal failed under us: the engine was cancelled and joined.
                .unwrap_or_else(|e| Err(format!("the dashboard failed: {e}")));
        }
        while !engine.is_finished() {
            progress_tick(args, &live, started, &engine);
        }
        join(engine)
    })
}

/// The engine's result, or its panic as an error.
fn join(engine: std::thread::ScopedJoinHandle<'_, EngineResult>) -> EngineResult {
    engine
        .join()
        .unwrap_or_else(|_| Err("the replay engine panicked".into()))
}

/// Plain progress: waits up to a second for the engine, then prints one line on stderr
/// (stdout carries the report); nothing in JSON mode.
fn progress_tick(
    args: &ReplayArgs,
    live: &Live,
    started: Instant,
    engine: &std::thread::ScopedJoinHandle<'_, EngineResult>,
) {
    // Sleeping in short steps until the next whole second: a deadline left in the past made
    // an earlier loop spin (a busy core taken from the engine).
    let elapsed = started.elapsed();
    let next = started + Duration::from_secs(elapsed.as_secs() + 1);
    while Instant::now() < next {
        if engine.is_finished() {
            return;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())),
        );
    }
    if args.json || engine.is_finished() {
        return;
    }
    let snap = live.snapshot();
    let clock = if args.engine == Engine::Virtual {
        format!(" (virtual {})", crate::units::ns(snap.virtual_ns))
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

/// The state dump, the timeline and the report, as asked.
fn write_outputs(
    args: &ReplayArgs,
    prepared: &Prepared,
    prep: &Prep,
    report: &Report,
) -> Result<()> {
    let (name, conv, damage) = (&prepared.name, &prepared.conv, prepared.damage.as_ref());
    if let Some(path) = &args.dump_state {
        dump::write_dump(path, report)?;
    }
    if let Some(path) = &args.timeline {
        timeline::write_report_timeline(path, name, report)?;
    }
    if args.json {
        let mut v = json_report(name, conv, prep, report);
        v["trace_damage"] = damage_json(damage, conv);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let text = text_report(name, conv, prep, report);
        print!("{}", with_damage_text(text, damage, conv));
    }
    if report.partial {
        // A cut run is not a complete one: scripts see it in the exit status.
        return Err(crate::Partial.into());
    }
    Ok(())
}

/// `--until SECONDS`: a positive virtual instant, in ns.
fn parse_until(s: &str) -> Result<u64, String> {
    match s.trim_end_matches('s').parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok((v * 1e9).round() as u64),
        _ => Err("takes a positive number of virtual seconds (below 10^9)".into()),
    }
}

/// What the dashboard's title and header show.
struct Shown<'a> {
    name: &'a str,
    damage: Option<&'a TraceDamage>,
    policy: &'a dyn refgate_replay::Policy,
    engine_kind: Engine,
    /// The longest task's think-times (ns): the ETA's floor of the virtual length.
    virtual_floor_ns: u64,
}

/// The longest task's think-times (ns): a virtual replay cannot end before it.
fn think_floor_ns(w: &refgate_replay::Workload) -> u64 {
    use refgate_replay::workload::Op;
    w.tasks
        .iter()
        .map(|t| {
            t.transactions
                .iter()
                .flat_map(|tt| &tt.handles)
                .flat_map(|h| &h.ops)
                .map(|o| match o {
                    Op::Think { ns } => *ns,
                    _ => 0,
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Runs the dashboard on this thread while the engine runs; holds the final numbers until a
/// key is pressed (not after `q`). The terminal is restored before this returns.
fn dashboard_phase(
    shown: &Shown<'_>,
    live: &Arc<Live>,
    started: Instant,
    engine: std::thread::ScopedJoinHandle<'_, EngineResult>,
) -> std::io::Result<EngineResult> {
    use crate::dashboard::{Tui, replay};
    let name = shown.name;
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
    let short = match shown.damage {
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
    let mut app = replay::ReplayApp::new(&short, shown.policy, shown.engine_kind, live);
    app.virtual_floor_ns = shown.virtual_floor_ns;
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
