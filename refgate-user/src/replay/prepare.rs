//! Trace or workload file → the workload a replay runs: reading the trace (and what to do
//! when it is damaged), converting it, replicating it, and the cost model it calibrates.
//! Shared by `replay`, `replay --validate` and `compare`.

use std::{io::Cursor, path::Path};

use anyhow::{Context, Result, bail};
use refgate_common::{event::Record, trace::TraceReader};
use refgate_replay::{
    cost::{Cost, CostModel},
    trace_workload::{TraceConversion, TraceOptions, workload_from_records},
};

use crate::args::TraceInput;

/// The bundled sample, recorded on this project's 6.18 machine (`cargo xtask sample`).
pub static SAMPLE: &[u8] = include_bytes!("../../../samples/scratch-6.18.bin");
pub const SAMPLE_NAME: &str = "bundled sample (samples/scratch-6.18.bin)";

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

/// A trace read by [`load`]: its name, every record before any damage, the damage, and its
/// header (the recorded CPU count and nodesize, read once with the records).
pub struct Loaded {
    pub name: String,
    pub records: Vec<Record>,
    pub damage: Option<TraceDamage>,
    pub header: refgate_common::trace::TraceHeader,
}

/// Reads every record before any damage. A damaged trace (cut, corrupt, or without its
/// end-of-trace frame after a crash) is replayed up to the damage, which the reports state;
/// `--strict` refuses it instead.
pub fn load(input: &TraceInput) -> Result<Loaded> {
    let (name, mut reader): (String, TraceReader<Box<dyn std::io::Read>>) = match &input.trace {
        Some(p) => {
            let f = refgate_common::trace::open_trace_file(p)?;
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
        if input.strict {
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
    Ok(Loaded {
        name,
        records,
        damage,
        header: reader.header().clone(),
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
    /// The trace header's nodesize (`None` for a workload file, which records none).
    pub nodesize: Option<u32>,
}

/// Reads the trace (or `workload_file`) and builds its workload, replicated over disjoint
/// extents as `input.replicate` says (`auto`: enough copies that each of `cpus` CPUs has a
/// writer); `speed` scales recorded think-times (`None`: none kept).
pub fn prepare_workload(
    input: &TraceInput,
    workload_file: Option<&Path>,
    speed: Option<f64>,
    cpus: usize,
) -> Result<Prepared> {
    if let Some(path) = workload_file {
        return prepare_workload_file(input, path, cpus);
    }
    let Loaded {
        name,
        records,
        damage,
        header,
    } = load(input)?;
    let opts = TraceOptions {
        handle_gap_ns: input.handle_gap_us * 1000,
        speed,
        seq_rule: input.seq_rule,
    };
    let (base, conv) = workload_from_records(records, &opts)
        .map_err(|e| anyhow::anyhow!("{name} cannot be replayed: {e}"))?;
    let tasks = base
        .tasks
        .iter()
        .filter(|t| t.transactions.iter().any(|tt| !tt.handles.is_empty()))
        .count();
    let (workload, copies) = replicated(base, tasks, input.replicate.0, cpus);
    Ok(Prepared {
        name,
        conv,
        workload,
        copies,
        damage,
        params: Default::default(),
        nodesize: header.nodesize,
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
fn prepare_workload_file(input: &TraceInput, path: &Path, cpus: usize) -> Result<Prepared> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the workload file {}", path.display()))?;
    let file = refgate_replay::workload_file::parse(&text, input.seq_rule).map_err(|e| {
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
        seq_rule: input.seq_rule,
        ..TraceConversion::default()
    };
    let tasks = base.tasks.len();
    let (workload, copies) = replicated(base, tasks, input.replicate.0, cpus);
    Ok(Prepared {
        name: path.display().to_string(),
        conv,
        workload,
        copies,
        damage: None,
        params: file.params,
        nodesize: None,
    })
}

/// The virtual engine's costs: defaults, the run cost calibrated from the trace when it has
/// run events, then `--ext-cost-ns` and `--cost` overrides.
pub fn cost_model(
    costs: &[String],
    ext_cost_ns: Option<u64>,
    conv: &TraceConversion,
) -> Result<CostModel> {
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
    if let Some(ns) = ext_cost_ns {
        m.apply_overrides(&[format!("run_ref={ns}")])
            .map_err(|e| anyhow::anyhow!("--ext-cost-ns: {e}"))?;
    }
    m.apply_overrides(costs)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(m)
}
