//! The virtual-CPU engine (issue "virtual CPUs"): the same model under a deterministic
//! scheduler. Checks: a hand-computed two-CPU timeline, determinism, 1 virtual CPU against
//! 1 real thread, the §7.4 invariant at 1–128 CPUs for every policy, and the seed gate's
//! sleeps and wake-ups once the queue crosses its threshold.

mod common;
use common::runner_params;
use common::{data_add, one_txn_task, small_constants};
use proptest::prelude::*;
use refgate_replay::Params;
use refgate_replay::live::Live;
use refgate_replay::metrics::Caller;
use refgate_replay::policy;
use refgate_replay::workload::{Op, SynthParams, Workload, synthetic};
use refgate_replay::{Config, Engine, Report, replay};
use std::sync::Arc;

fn virt(w: &Workload, policy: &str, cpus: usize, params: &Params, seed: u64) -> Report {
    let cfg = Config {
        engine: Engine::Virtual,
        cpus,
        params: params.clone(),
        sim_seed: seed,
        pace: false,
        timeline: false,
    };
    replay(
        w,
        policy::by_name(policy).unwrap().as_ref(),
        &cfg,
        Arc::new(Live::new(cpus)),
    )
    .unwrap_or_else(|e| panic!("{policy}/{cpus} virtual CPUs: {e}"))
}

/// The report without its host-dependent part, as JSON.
fn deterministic_part(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("host");
    v
}

fn hand_costs() -> Params {
    Params {
        costs: common::hand_costs(5000),
        ..runner_params()
    }
}

/// Two CPUs, hand-set costs, the timeline worked out by hand from the model's code:
/// task 0 (CPU 0) adds at 0 and holds `delayed_refs->lock` until 100; task 1 (CPU 1) thinks
/// 10 ns and spins 10–100; task 0's commit (run_most) then spins 100–200 while task 1 adds;
/// task 0 walks 3 nodes (200–230), runs two heads of one ref each (select 50 + run 1000 +
/// select 50 + delete 30, twice: 230–2490); task 1 sleeps at the barrier from 200 and is
/// woken at 2490 (wake-up 5000 → runs at 7490, ends); task 0 sleeps at the second barrier
/// from 2490 and is woken at 7490 (→ 12490, ends).
#[test]
fn two_cpus_hand_computed_spin_and_sleep() {
    let w = Workload {
        tasks: vec![
            one_txn_task(0, vec![data_add(1 << 20)], true),
            one_txn_task(1, vec![Op::Think { ns: 10 }, data_add(2 << 20)], false),
        ],
        initial: vec![],
        transactions: 1,
        ..Workload::default()
    };
    for seed in [0, 1, 2] {
        let r = virt(&w, "pre", 2, &hand_costs(), seed);
        let v = r.virtual_figures.as_ref().unwrap();
        assert_eq!(r.refs_run, 2);
        assert_eq!(r.heads_run, 2);
        assert_eq!(r.dr_lock.contended, 2);
        assert_eq!(r.dr_lock.wait.total_ns, 190, "90 + 100 ns spinning");
        assert_eq!(r.dr_lock.spin_cpu_seconds, 190e-9);
        assert_eq!(v.virtual_seconds, 12_490e-9);
        let (c0, c1) = (&v.cpus[0], &v.cpus[1]);
        assert_eq!(
            (
                c0.work_ns,
                c0.spin_delayed_refs_lock_ns,
                c0.sleeping_ns,
                c0.switch_ns,
                c0.idle_ns
            ),
            (2390, 100, 5000, 5000, 0)
        );
        assert_eq!(
            (
                c1.work_ns,
                c1.spin_delayed_refs_lock_ns,
                c1.sleeping_ns,
                c1.switch_ns,
                c1.idle_ns
            ),
            (110, 90, 2290, 5000, 5000)
        );
        assert_eq!((c0.refs_run, c1.refs_run), (2, 0));
    }
}

#[test]
fn same_replay_twice_gives_the_same_report() {
    let w = synthetic(&SynthParams {
        tasks: 24,
        transactions: 3,
        ..Default::default()
    });
    for name in policy::builtin().headline_names() {
        let a = deterministic_part(&virt(&w, name, 16, &runner_params(), 7));
        let b = deterministic_part(&virt(&w, name, 16, &runner_params(), 7));
        assert_eq!(a, b, "{name}");
    }
}

/// With one CPU there is no concurrency: within a transaction the virtual engine runs the
/// tasks round-robin one handle (or commit) at a time, as one real thread does, so both run
/// the same refs and heads. Across transactions the order after the commit's barrier
/// differs (the virtual CPU resumes the woken tasks in wake-up order, the thread starts
/// over from its first task), so longer workloads end in the same extent tree, with pinned
/// extents (which depend on how ADD_EXTENT and DROP meet in a run) allowed to differ.
#[test]
fn one_virtual_cpu_matches_one_real_thread() {
    for (seed, transactions) in [(1, 1), (2, 1), (3, 1), (4, 3)] {
        let w = synthetic(&SynthParams {
            seed,
            tasks: 6,
            transactions,
            ..Default::default()
        });
        let keep = Params {
            keep_final_state: true,
            ..runner_params()
        };
        for name in policy::builtin().names() {
            let v = virt(&w, name, 1, &keep, 0);
            let p = policy::by_name(name).unwrap();
            let t = refgate_replay::run(&w, p.as_ref(), 1, &keep).unwrap();
            // The same final extent tree, item by item (refs, flags, key, backrefs).
            let tree = |r: &Report| r.final_state.as_ref().unwrap().extents.clone();
            assert_eq!(tree(&v), tree(&t), "{name}, seed {seed}");
            assert!(!tree(&v).is_empty());
            if transactions == 1 {
                let counts = |r: &Report| {
                    (
                        r.refs_run,
                        r.heads_run,
                        r.extent_ops_run,
                        r.invariant.pinned,
                        r.run_merges,
                        r.insert_cancels,
                        r.seq_holdbacks,
                    )
                };
                assert_eq!(counts(&v), counts(&t), "{name}, seed {seed}");
            }
        }
    }
}

#[test]
fn seed_gate_sleeps_and_wakes_once_past_the_threshold() {
    let w = synthetic(&SynthParams {
        tasks: 16,
        transactions: 3,
        ops_per_handle: 32,
        ..Default::default()
    });
    // Above the threshold (32 entries): busy gate ⇒ sleep until the runner's wake-all.
    let r = virt(&w, "seed", 8, &small_constants(), 0);
    assert!(r.gate.sleeps > 0, "{:?}", r.gate);
    assert_eq!(r.gate.wakeups, r.gate.sleeps, "{:?}", r.gate);
    assert!(r.gate.wake_alls > 0, "{:?}", r.gate);
    // Never above it: busy gate ⇒ early return, nobody sleeps.
    let below = Params {
        gate_entries_threshold: u64::MAX,
        ..small_constants()
    };
    let b = virt(&w, "seed", 8, &below, 0);
    assert_eq!(b.gate.sleeps, 0, "{:?}", b.gate);
    assert!(b.gate.early_returns > 0, "{:?}", b.gate);
}

#[test]
fn many_cpus_run_including_more_cpus_than_tasks() {
    let w = synthetic(&SynthParams {
        tasks: 40,
        transactions: 2,
        ..Default::default()
    });
    for cpus in [1, 32, 256, 1024] {
        let r = virt(&w, "seed", cpus, &runner_params(), 0);
        assert_eq!(r.adds, w.total_adds());
        assert_eq!(r.virtual_figures.as_ref().unwrap().cpus.len(), cpus);
        let idle = r
            .virtual_figures
            .unwrap()
            .cpus
            .iter()
            .filter(|c| c.work_ns == 0)
            .count();
        assert_eq!(idle, cpus.saturating_sub(40));
    }
}

/// §4.7 on virtual CPUs: tickets, both reclaim workers as tasks of their own, no runs at
/// handle end; a pool larger than the whole queue leaves the writers unblocked and the
/// async worker idle.
#[test]
fn spec_4_7_modern_reclaim_workers_virtual() {
    let w = synthetic(&SynthParams {
        tasks: 12,
        transactions: 3,
        ops_per_handle: 32,
        ..Default::default()
    });
    let small = Params {
        metadata_pool_bytes: 8 * (256 << 10),
        ..runner_params()
    };
    let r = virt(&w, "modern", 4, &small, 0);
    let by = &r.run_calls_by_caller;
    assert!(r.space_waits > 0, "{r:?}");
    assert!(
        by.get(Caller::ASYNC_RECLAIM) > 0 && by.get(Caller::PREEMPTIVE_RECLAIM) > 0,
        "{by:?}"
    );
    assert_eq!(
        (by.get(Caller::HANDLE_END), by.get(Caller::OTHER)),
        (0, 0),
        "{by:?}"
    );
    let huge = Params {
        metadata_pool_bytes: 1 << 40,
        ..runner_params()
    };
    let big = virt(&w, "modern", 4, &huge, 0);
    assert_eq!(big.space_waits, 0);
    assert_eq!(big.run_calls_by_caller.get(Caller::ASYNC_RECLAIM), 0);
    assert_eq!(
        big.run_calls_by_caller.get(Caller::COMMIT),
        big.run_calls.count - big.run_calls_by_caller.get(Caller::PREEMPTIVE_RECLAIM)
    );
}

fn synth() -> impl Strategy<Value = SynthParams> {
    (
        any::<u64>(),
        1usize..10,
        1usize..4,
        1usize..5,
        1usize..24,
        1usize..40,
        0.0f64..0.6,
    )
        .prop_map(
            |(seed, tasks, transactions, handles, ops, shared, cancel)| SynthParams {
                seed,
                tasks,
                transactions,
                handles_per_transaction: handles,
                ops_per_handle: ops,
                shared_extents: shared,
                cancel_prob: cancel,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// §7.4 after every virtual replay: every policy, 1–128 CPUs, kernel and small constants.
    #[test]
    fn spec_7_4_virtual_any_cpus(p in synth(), cpus in prop::sample::select(vec![1usize, 2, 3, 8, 32, 128]), small in any::<bool>(), seed in any::<u64>()) {
        let w = synthetic(&p);
        let params = if small { small_constants() } else { runner_params() };
        for name in policy::builtin().names() {
            let cfg = Config { engine: Engine::Virtual, cpus, params: params.clone(), sim_seed: seed, pace: false, timeline: false };
            let r = replay(&w, policy::by_name(name).unwrap().as_ref(), &cfg, Arc::new(Live::new(cpus)));
            prop_assert!(r.is_ok(), "{name}/{cpus}: {}", r.unwrap_err());
            let r = r.unwrap();
            prop_assert_eq!(r.adds, w.total_adds());
            let v = r.virtual_figures.unwrap();
            let makespan = (v.virtual_seconds * 1e9).round() as u64;
            for c in &v.cpus {
                prop_assert_eq!(c.total_ns(), makespan);
            }
        }
    }
}
