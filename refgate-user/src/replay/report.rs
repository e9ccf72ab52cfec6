//! A replay's report: the text a person reads, the `--json` object a script reads (outside
//! `host`, the same for the same trace and arguments on any machine under the virtual
//! engine), the damage of a cut trace stated in both, and a replay error for the user.

use refgate_replay::{Report, live::WaitRole, trace_workload::TraceConversion};

use crate::units::ns;
use serde_json::json;

use super::prepare::TraceDamage;

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

/// A replay's error for the user: what kind it is and what to make of it.
pub fn describe_error(e: &refgate_replay::ReplayError) -> String {
    use refgate_replay::ReplayError::*;
    match e {
        BadWorkload(why) => format!(
            "the workload cannot be replayed: {why}. A trace that loses events (see `refgate inspect`) or a hand-written workload that drops more than it adds gives this"
        ),
        // The machine ran out (memory, mappings, threads): the replay's size, not the model.
        Model { errors, .. } if errors.iter().all(|f| f.is_resource()) => format!(
            "OUT OF RESOURCES: {e}. The machine could not give the replay what it needs: lower --replicate or --threads, or raise the limit it hit (vm.max_map_count, the memory limit, ulimit -u)"
        ),
        Model { .. } => format!(
            "MODEL ERROR: {e}. The model hit what the kernel would BUG on, or the engine failed; please report it with the trace"
        ),
        Invariant(v) => format!("INVARIANT VIOLATED (docs/kernel-delayed-refs.md §7.4): {v}"),
    }
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

/// The `schema` of `refgate replay --json` (docs/schema/replay.schema.json).
pub const SCHEMA: &str = "refgate.replay/1";

fn wait_json(w: &refgate_replay::metrics::WaitSummary) -> serde_json::Value {
    json!({"count": w.count, "total_ns": w.total_ns, "p50_ns": w.p50_ns, "p99_ns": w.p99_ns, "max_ns": w.max_ns})
}

/// One lock of the report's `locks`, in the same shape for every lock: what does not apply
/// to a lock (spinning on a mutex, yields under the virtual engine) is `null`.
fn lock_json(
    acquisitions: Option<u64>,
    spin: Option<&refgate_replay::metrics::SpinSummary>,
    spin_cpu_seconds: Option<f64>,
    wait: &refgate_replay::metrics::WaitSummary,
) -> serde_json::Value {
    json!({
        "acquisitions": acquisitions,
        "contended": wait.count,
        "spin_cpu_seconds": spin_cpu_seconds,
        "spin_cpu_seconds_in_runners": spin.map(|s| s.runner_spin_cpu_seconds),
        "yields": spin.map(|s| s.yields),
        "wait": wait_json(wait),
    })
}

/// `locks`: one entry per modelled lock, keyed by its id in the names table.
fn locks_json(r: &Report) -> serde_json::Value {
    use refgate_common::names::lock;
    let ext_spin = r
        .virtual_figures
        .as_ref()
        .map(|v| v.cpus.iter().map(|c| c.spin_extent_tree_ns).sum::<u64>() as f64 / 1e9);
    let spin = |s: &refgate_replay::metrics::SpinSummary| {
        lock_json(
            Some(s.acquisitions),
            Some(s),
            Some(s.spin_cpu_seconds),
            &s.wait,
        )
    };
    let mut m = serde_json::Map::new();
    m.insert(lock::DELAYED_REFS_LOCK.id.into(), spin(&r.dr_lock));
    m.insert(lock::HEAD_LOCK.id.into(), spin(&r.head_lock));
    m.insert(
        lock::HEAD_MUTEX.id.into(),
        lock_json(None, None, None, &r.head_mutex_waits),
    );
    m.insert(
        lock::EXTENT_TREE.id.into(),
        lock_json(
            Some(r.extent_tree_acquisitions),
            None,
            ext_spin,
            &r.extent_tree_waits,
        ),
    );
    m.into()
}

/// `extent_tree`: the model, and under `btree` the tree's size, shape and the block-lock
/// waits by level (`null` under `single`).
fn extent_tree_json(r: &Report) -> serde_json::Value {
    json!({
        "model": if r.extent_btree.is_some() { "btree" } else { "single" },
        "btree": r.extent_btree,
        "self_fed_refs": r.extent_btree.as_ref().map(|_| r.self_fed_refs),
        "recorded_self_fed_refs": r.extent_btree.as_ref().map(|_| r.recorded_self_fed_refs),
        "waits_by_level": r.extent_tree_waits_by_level.as_ref().map(|[root, node, leaf]| json!({
            "root": wait_json(root),
            "node": wait_json(node),
            "leaf": wait_json(leaf),
        })),
    })
}

/// The machine-readable report (`--json`, [`SCHEMA`]). Under the virtual engine everything
/// outside `host` is the same for the same trace and arguments on any machine; every key is
/// there under both engines, `null` where it does not apply.
pub fn json_report(
    trace: &str,
    conv: &TraceConversion,
    prep: &Prep,
    r: &Report,
) -> serde_json::Value {
    let vf = r.virtual_figures.as_ref();
    json!({
        "schema": SCHEMA,
        "policy": r.policy,
        "kernels": r.kernels,
        "gated": r.gated,
        "engine": r.engine.name(),
        // Virtual CPUs, or real threads under `--engine threads`.
        "cpus": r.threads,
        "trace": trace,
        "replicas": prep.copies,
        "ext_cost_ns": prep.ext_cost_ns,
        "conversion": conv,
        "trace_damage": null,
        "tasks": r.tasks,
        "transactions": r.transactions,
        "adds": r.adds,
        "refs_run": r.refs_run,
        "heads_run": r.heads_run,
        "extent_ops_run": r.extent_ops_run,
        "partial": r.partial,
        // A run cut short by `q` gets no verdict (the check needs the whole trace).
        "invariant_ok": if r.partial { serde_json::Value::Null } else { true.into() },
        "invariant": r.invariant,
        "locks": locks_json(r),
        "extent_tree": extent_tree_json(r),
        "gate": r.gate,
        "run_call_latency": wait_json(&r.run_calls),
        "run_calls_by_caller": r.run_calls_by_caller,
        "refs_run_by_caller": r.refs_run_by_caller,
        "workers": r.workers,
        "space_waits": r.space_waits,
        "seq_holdbacks": r.seq_holdbacks,
        "per_cpu_refs_run": r.per_thread_refs_run,
        "virtual_seconds": vf.map(|v| v.virtual_seconds),
        "refs_per_virtual_second": vf.map(|v| v.refs_per_virtual_second),
        "sim_seed": vf.map(|v| v.sim_seed),
        "per_cpu_time": vf.map(|v| json!(v.cpus)),
        "cost_model": vf.map(|v| json!(v.cost_model.entries)),
        "host": {
            "wall_seconds": r.host.wall_seconds,
            "refs_per_second": r.host.refs_per_second,
            "ops_per_second": r.host.ops_per_second,
            "cores": r.host.cores,
            "paused_seconds": r.host.paused_seconds,
            "prepare_seconds": prep.seconds,
        },
    })
}

/// The human report.
pub fn text_report(trace: &str, conv: &TraceConversion, prep: &Prep, r: &Report) -> String {
    let mut o = String::new();
    workload_lines(&mut o, trace, conv, prep);
    engine_lines(&mut o, prep, r);
    verdict_lines(&mut o, r);
    lock_table(&mut o, r);
    extent_tree_lines(&mut o, r);
    run_call_lines(&mut o, r);
    o
}

/// The B-tree's size, where it came from, how it grew, and where its waits were.
fn extent_tree_lines(o: &mut String, r: &Report) {
    use std::fmt::Write;
    let (Some(b), Some([root, node, leaf])) = (&r.extent_btree, &r.extent_tree_waits_by_level)
    else {
        let _ = writeln!(
            o,
            "  extent tree one lock for the whole tree and update (--extent-tree single)"
        );
        return;
    };
    let source = match b.size_source {
        "option" => "--extent-items",
        _ => "the trace's initial extents",
    };
    let _ = writeln!(
        o,
        "  extent tree B-tree of {} items ({source}), {} B blocks: {} levels, {} leaves at start, {} levels, {} leaves at end; {} leaf and {} node splits, {} blocks COWed, {} walks restarted",
        b.items,
        b.nodesize,
        b.start.levels,
        b.start.leaves,
        b.end.levels,
        b.end.leaves,
        b.leaf_splits,
        b.node_splits,
        b.cow_blocks,
        b.restarts
    );
    let _ = writeln!(
        o,
        "              {} refs fed back on its own blocks (the trace's {} of root 2 left out); block-lock waits: root {} (p99 {}), nodes {} (p99 {}), leaves {} (p99 {})",
        r.self_fed_refs,
        r.recorded_self_fed_refs,
        root.count,
        ns(root.p99_ns),
        node.count,
        ns(node.p99_ns),
        leaf.count,
        ns(leaf.p99_ns)
    );
}

/// What was replayed and how it was prepared.
fn workload_lines(o: &mut String, trace: &str, conv: &TraceConversion, prep: &Prep) {
    use std::fmt::Write;
    let copies = prep.copies;
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
}

/// The policy, the engine and the headline result (virtual: with the CPU split and costs).
fn engine_lines(o: &mut String, prep: &Prep, r: &Report) {
    use std::fmt::Write;
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
            cpu_split(o, v);
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
}

/// The §7.4 verdict, and the time the dashboard held the run paused.
fn verdict_lines(o: &mut String, r: &Report) {
    use std::fmt::Write;
    if r.partial {
        // Where a virtual run was cut, exactly: `--until` that instant gives this report.
        let at = r.virtual_figures.as_ref().map_or(String::new(), |v| {
            let ns = (v.virtual_seconds * 1e9).round() as u64;
            format!(
                " at virtual {ns} ns (--until {:.9} replays this cut)",
                ns as f64 / 1e9
            )
        });
        let _ = writeln!(
            o,
            "  verdict    none: the run was cut short (q or --until){at}, so the §7.4 check, which needs the whole trace replayed, was skipped; the figures below cover the part replayed"
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
    if r.host.paused_seconds > 0.0 {
        let _ = writeln!(
            o,
            "  paused     {:.3} s (left out of the wall time)",
            r.host.paused_seconds
        );
    }
}

/// Spinlocks (acquisitions, contention, spin CPU, waits) and sleeping waits, one row each.
fn lock_table(o: &mut String, r: &Report) {
    use std::fmt::Write;
    let _ = writeln!(
        o,
        "\n  lock                    acquired  contended  spin CPU     waits       p50       p99       max"
    );
    for (label, s) in [
        (WaitRole::DelayedRefsLock.name().label, &r.dr_lock),
        (WaitRole::HeadLock.name().label, &r.head_lock),
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
        (WaitRole::HeadMutex.name().label, &r.head_mutex_waits),
        (WaitRole::ExtentTree.name().label, &r.extent_tree_waits),
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
}

/// The seed gate's figures (gated policies) and the `btrfs_run_delayed_refs` calls.
fn run_call_lines(o: &mut String, r: &Report) {
    use std::fmt::Write;
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
    let callers: Vec<String> = r
        .run_calls_by_caller
        .iter()
        .map(|(c, n)| format!("{} {n}", c.label()))
        .collect();
    let _ = writeln!(
        o,
        "  callers    {}{}",
        callers.join(", "),
        if r.space_waits > 0 {
            format!("; {} adds waited on a space ticket", r.space_waits)
        } else {
            String::new()
        }
    );
    if !r.workers.is_empty() {
        let _ = writeln!(o, "  workers    {}", r.workers.join(", "));
    }
}

/// The virtual CPUs' time, summed over CPUs, as shares of N × makespan.
fn cpu_split(o: &mut String, v: &refgate_replay::engine::VirtualFigures) {
    use std::fmt::Write;
    let sum = |f: fn(&refgate_replay::metrics::CpuTime) -> u64| v.cpus.iter().map(f).sum::<u64>();
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

#[cfg(test)]
mod tests {
    use super::describe_error;
    use refgate_replay::ReplayError;
    use refgate_replay::error::{FailedIn, ModelError, RunFailure};

    /// Running out of stacks or threads is the machine's limit, not a model bug: it says what
    /// to lower and does not ask for a report; a model failure among them still does.
    #[test]
    fn resource_failures_are_not_called_model_bugs() {
        let model = |errors| ReplayError::Model {
            policy: "seed".into(),
            cpus: 4,
            errors,
        };
        let stack = RunFailure::Stack("Cannot allocate memory (os error 12)".into());
        let spawn = RunFailure::Spawn("Resource temporarily unavailable".into());
        let m = describe_error(&model(vec![stack.clone(), spawn]));
        assert!(
            m.starts_with("OUT OF RESOURCES") && m.contains("lower --replicate"),
            "{m}"
        );
        assert!(!m.contains("please report"), "{m}");
        let bug = RunFailure::Model {
            at: FailedIn::Transaction(0),
            error: ModelError::Bug("x".into()),
        };
        let m = describe_error(&model(vec![stack, bug]));
        assert!(
            m.starts_with("MODEL ERROR") && m.contains("please report"),
            "{m}"
        );
    }
}
