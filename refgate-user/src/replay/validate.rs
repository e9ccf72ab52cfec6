//! `refgate replay TRACE --validate`: the recorded kernel against the model on the same
//! workload. The replay runs `modern` (the recorded kernels are 6.x) on as many virtual CPUs
//! as the recorded machine had, with the recorded think-times (`--speed 1`), the trace as
//! recorded (no copies), and `delayed_ref_bytes` from the recorded nodesize when the trace
//! has it; then per transaction: heads run, tree and data refs run, refs merged away, and who
//! ran them (`refgate_replay::validate`).

use std::sync::Arc;

use anyhow::Result;
use refgate_replay::{
    Config, Engine, Params, by_name,
    cost::Cost,
    live::Live,
    trace_workload::{TraceOptions, workload_from_records},
    validate::{self, Validation},
};
use serde_json::json;

use super::{
    ReplayArgs,
    prepare::{self, cost_model},
    report::describe_error,
};

pub fn run(args: &ReplayArgs) -> Result<()> {
    let prepare::Loaded {
        name,
        records,
        header,
        ..
    } = prepare::load(&args.input)?;
    let (cpus, nodesize) = (header.cpu_count.max(1), header.nodesize);
    let opts = TraceOptions {
        handle_gap_ns: args.input.handle_gap_us * 1000,
        speed: Some(1.0),
        seq_rule: args.input.seq_rule,
    };
    let (w, conv) = workload_from_records(records.clone(), &opts)
        .map_err(|e| anyhow::anyhow!("{name} cannot be replayed: {e}"))?;
    let costs = cost_model(&args.model.costs, args.ext_cost_ns, &conv)?;
    let mut params = Params {
        ext_cost_ns: costs.get(Cost::RunRef),
        costs,
        ..Params::default()
    };
    args.model.apply_extent_tree(&mut params, nodesize);
    if let Some(n) = nodesize {
        // btrfs_calc_delayed_ref_bytes(1) = nodesize × BTRFS_MAX_LEVEL × 2 (§4.6).
        params.delayed_ref_bytes = u64::from(n) * 8 * 2;
    }
    let cfg = Config {
        engine: Engine::Virtual,
        cpus: cpus as usize,
        params,
        sim_seed: args.model.sim_seed,
        pace: false,
        timeline: false,
    };
    let policy = by_name("modern").expect("modern exists");
    let r = refgate_replay::replay(
        &w,
        policy.as_ref(),
        &cfg,
        Arc::new(Live::new(cpus as usize)),
    )
    .map_err(|e| anyhow::anyhow!("{}", describe_error(&e)))?;
    let rec = validate::recorded(&records, conv.filesystem);
    let rep = validate::replayed(&w, &r.per_txn);
    let v = validate::compare(&rec, &rep);
    if args.json {
        let out = json!({
            "schema": SCHEMA,
            "trace": name,
            "policy": "modern",
            "engine": "virtual",
            "cpus": cpus,
            "speed": 1.0,
            "validation": v,
            "refs_run": r.refs_run,
            "invariant_ok": !r.partial,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", text(&name, cpus, &v));
    }
    Ok(())
}

/// The `schema` of `refgate replay --validate --json` (docs/schema/validate.schema.json).
pub const SCHEMA: &str = "refgate.validate/1";

fn text(name: &str, cpus: u32, v: &Validation) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "refgate replay --validate of {name}: modern on {cpus} virtual CPUs at recorded speed, recorded / replayed"
    );
    let _ = writeln!(
        o,
        "{:<12} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "transaction",
        "heads",
        "tree refs",
        "data refs",
        "merged away",
        "by committer",
        "by workers",
        "by others"
    );
    for r in &v.rows {
        let t = if r.transactions.len() == 1 {
            r.transactions[0].to_string()
        } else {
            format!("{} small", r.transactions.len())
        };
        let c = |a: u64, b: u64| format!("{a}/{b}");
        let (a, b) = (&r.recorded, &r.replayed);
        let _ = writeln!(
            o,
            "{:<12} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
            t,
            c(a.heads_run, b.heads_run),
            c(a.tree_refs_run, b.tree_refs_run),
            c(a.data_refs_run, b.data_refs_run),
            c(a.merged_away, b.merged_away),
            c(a.run_by_committer, b.run_by_committer),
            c(a.run_by_kernel_workers, b.run_by_kernel_workers),
            c(a.run_by_other_tasks, b.run_by_other_tasks),
        );
    }
    let _ = writeln!(
        o,
        "overall relative error {:.1} % (Σ|replayed − recorded| ÷ Σ recorded; transactions under {} recorded refs pooled)",
        100.0 * v.overall_relative_error,
        validate::POOL_BELOW
    );
    o
}
