//! Model benchmark: single-thread throughput and 1–32 threads per policy on one fixed
//! synthetic workload (the same 32 tasks at every thread count: task i runs on thread
//! i % threads). Plain `Instant` timing, as reported by the engine (wall time of the worker
//! threads; workload validation and the §7.4 check are outside it).
//!
//! `cargo bench -p refgate-replay --bench model` (flags after `--`: `--quick` for one
//! repetition of a shorter workload, `--single` for the 1-thread rows only). Prints Markdown;
//! BENCHMARKS.md holds a committed copy.

use refgate_replay::Params;
use refgate_replay::policy;
use refgate_replay::workload::{SynthParams, Workload, synthetic};

fn table(title: &str, w: &Workload, params: &Params, counts: &[usize], reps: usize) {
    println!("### {title}\n");
    println!(
        "| policy | threads | wall ms | ops/s (adds+runs) | refs run/s | DR acq | DR contended | DR spin CPU ms | seq hold-backs | head-mutex waits | extent-tree waits (p99 µs) | gate acq/early/sleeps/wakeups/refs_newer | run calls | run p50/p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in policy::builtin().headline_names() {
        let p = policy::by_name(name).unwrap();
        for &threads in counts {
            let mut best: Option<refgate_replay::Report> = None;
            for _ in 0..reps {
                let r =
                    refgate_replay::run(w, p.as_ref(), threads, params).expect("invariant holds");
                if best
                    .as_ref()
                    .is_none_or(|b| r.host.wall_seconds < b.host.wall_seconds)
                {
                    best = Some(r);
                }
            }
            let r = best.unwrap();
            let g = r.gate;
            println!(
                "| {name} | {threads} | {:.1} | {:.2} M | {:.2} M | {} | {} | {:.2} | {} | {} | {} ({:.1}) | {}/{}/{}/{}/{} | {} | {:.1}/{:.1} |",
                r.host.wall_seconds * 1e3,
                r.host.ops_per_second / 1e6,
                r.host.refs_per_second / 1e6,
                r.dr_lock.acquisitions,
                r.dr_lock.contended,
                r.dr_lock.spin_cpu_seconds * 1e3,
                r.seq_holdbacks,
                r.head_mutex_waits.count,
                r.extent_tree_waits.count,
                r.extent_tree_waits.p99_ns as f64 / 1e3,
                g.acquisitions,
                g.early_returns,
                g.sleeps,
                g.wakeups,
                g.refs_newer_exits,
                r.run_calls.count,
                r.run_calls.p50_ns as f64 / 1e3,
                r.run_calls.p99_ns as f64 / 1e3,
            );
        }
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let single_only = args.iter().any(|a| a == "--single");
    let reps = if quick { 1 } else { 3 };
    let counts: &[usize] = if single_only {
        &[1]
    } else {
        &[1, 2, 4, 8, 16, 32]
    };
    let sp = SynthParams {
        seed: 42,
        tasks: 32,
        transactions: if quick { 4 } else { 8 },
        handles_per_transaction: 16,
        ops_per_handle: 32,
        shared_extents: 4096,
        ..Default::default()
    };
    let w = synthetic(&sp);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "workload: synthetic seed {}, {} tasks, {} transactions × {} handles × {} ops, {} shared extents: {} ops ({} add-API calls); machine: {cores} cores; best of {reps}\n",
        sp.seed,
        sp.tasks,
        sp.transactions,
        sp.handles_per_transaction,
        sp.ops_per_handle,
        sp.shared_extents,
        w.total_ops(),
        w.total_adds()
    );
    table(
        "Model speed (no modelled costs)",
        &w,
        &Params::default(),
        counts,
        reps,
    );
    if single_only {
        return;
    }
    let costed = Params {
        ext_cost_ns: 2_000,
        walk_cost_ns: 20,
        ..Params::default()
    };
    let sp2 = SynthParams {
        transactions: if quick { 2 } else { 4 },
        ..sp
    };
    let w2 = synthetic(&sp2);
    table(
        &format!(
            "With modelled costs: 2 µs per extent-tree update under its lock, 20 ns per node walked under delayed_refs->lock ({} transactions, {} add-API calls)",
            sp2.transactions,
            w2.total_adds()
        ),
        &w2,
        &costed,
        counts,
        reps,
    );
}
