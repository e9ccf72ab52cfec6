//! Model benchmark: single-thread throughput and 1–32 threads per policy on one fixed
//! synthetic workload. Plain `Instant` timing (reported by the engine). Run with
//! `cargo bench -p refgate-replay --bench model` (add `-- --quick` for a short run).
//! Results go to stdout as a Markdown table; BENCHMARKS.md holds a committed copy.

use refgate_replay::policy::{self, NAMES};
use refgate_replay::workload::{SynthParams, synthetic};
use refgate_replay::{Params, engine};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let single_only = std::env::args().any(|a| a == "--single");
    let reps = if quick { 1 } else { 3 };
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
    let params = Params::default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "workload: seed {}, {} tasks, {} transactions, {} ops ({} add-API calls); machine: {cores} cores; best of {reps}\n",
        sp.seed,
        sp.tasks,
        sp.transactions,
        w.total_ops(),
        w.total_adds()
    );
    println!(
        "| policy | threads | wall ms | ops/s (adds+runs) | refs run/s | DR acq | DR contended | DR spin CPU ms | head-mutex waits | extent-tree waits (p99 µs) | gate acq/early/sleeps/wakeups/refs_newer | run calls | run p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in NAMES {
        let p = policy::by_name(name).unwrap();
        let counts: &[usize] = if single_only {
            &[1]
        } else {
            &[1, 2, 4, 8, 16, 32]
        };
        for &threads in counts {
            let mut best: Option<engine::Report> = None;
            for _ in 0..reps {
                let r = engine::run(&w, p.as_ref(), threads, &params).expect("invariant holds");
                if best
                    .as_ref()
                    .is_none_or(|b| r.wall_seconds < b.wall_seconds)
                {
                    best = Some(r);
                }
            }
            let r = best.unwrap();
            let g = r.gate;
            println!(
                "| {name} | {threads} | {:.1} | {:.2} M | {:.2} M | {} | {} | {:.2} | {} | {} ({:.1}) | {}/{}/{}/{}/{} | {} | {:.1} |",
                r.wall_seconds * 1e3,
                r.ops_per_sec / 1e6,
                r.refs_per_sec / 1e6,
                r.dr_lock.acquisitions,
                r.dr_lock.contended,
                r.dr_lock.spin_cpu_seconds * 1e3,
                r.head_mutex_waits.count,
                r.extent_tree_waits.count,
                r.extent_tree_waits.p99_ns as f64 / 1e3,
                g.acquisitions,
                g.early_returns,
                g.sleeps,
                g.wakeups,
                g.refs_newer_exits,
                r.run_calls.count,
                r.run_calls.p99_ns as f64 / 1e3,
            );
        }
    }
}
