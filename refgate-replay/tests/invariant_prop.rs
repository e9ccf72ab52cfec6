//! §7.4, property-based: for random workloads, every policy and thread counts 1–32, the
//! replay ends with per-extent/per-backref counts equal to the input's net effect, an empty
//! queue after each commit's run-all and consistent counters (all checked by the engine;
//! any violation is an `Err`).

use proptest::prelude::*;
use refgate_replay::Params;
use refgate_replay::policy;
use refgate_replay::workload::{SynthParams, synthetic};

fn synth() -> impl Strategy<Value = SynthParams> {
    (
        any::<u64>(),
        1usize..6,
        1usize..4,
        1usize..5,
        1usize..24,
        1usize..40,
        0.0f64..1.0,
        0.0f64..0.6,
        0.0f64..0.1,
    )
        .prop_map(
            |(seed, tasks, transactions, handles, ops, shared, data, cancel, misc)| SynthParams {
                seed,
                tasks,
                transactions,
                handles_per_transaction: handles,
                ops_per_handle: ops,
                shared_extents: shared,
                data_fraction: data,
                cancel_prob: cancel,
                extent_op_prob: misc,
                lookup_prob: misc,
                should_end_prob: misc,
                ..Default::default()
            },
        )
}

/// Small constants so the thresholds (64 ready heads, 16348 entries, 4096 entries for the
/// modern flusher) are actually crossed by small workloads.
fn params(small: bool) -> Params {
    if small {
        Params {
            cluster_heads: 4,
            throttle_ready_heads: 2,
            gate_entries_threshold: 8,
            gate_progress_quantum: 4,
            metadata_pool_bytes: 16 * (256 << 10),
            throttle_311_ready_heads: 3,
            ..Params::default()
        }
    } else {
        Params::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Single thread, all policies, kernel and small constants.
    #[test]
    fn spec_7_4_invariant_single_thread(sp in synth(), small in any::<bool>()) {
        let w = synthetic(&sp);
        for name in policy::builtin().names() {
            let p = policy::by_name(name).unwrap();
            let r = refgate_replay::run(&w, p.as_ref(), 1, &params(small));
            prop_assert!(r.is_ok(), "{name}: {}", r.unwrap_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Real threads: 2, 4, 8 and 32 workers contending on the locks, all policies.
    #[test]
    fn spec_7_4_invariant_threads(sp in synth(), small in any::<bool>(), scale in 1usize..4) {
        let base = synthetic(&sp);
        let w = base.replicate(scale, base.span());
        for name in policy::builtin().names() {
            let p = policy::by_name(name).unwrap();
            for threads in [2, 4, 8, 32] {
                let r = refgate_replay::run(&w, p.as_ref(), threads, &params(small));
                prop_assert!(r.is_ok(), "{name}/{threads}: {}", r.unwrap_err());
            }
        }
    }
}
