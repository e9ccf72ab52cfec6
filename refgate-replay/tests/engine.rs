//! End-to-end: every policy and thread count replays synthetic workloads and passes the §7.4
//! invariant (checked inside `engine::run`).

use refgate_replay::policy::{self, NAMES};
use refgate_replay::workload::{SynthParams, synthetic};
use refgate_replay::{Params, engine};

#[test]
fn spec_7_4_all_policies_small_thread_counts() {
    let w = synthetic(&SynthParams {
        tasks: 6,
        transactions: 3,
        ..Default::default()
    });
    for name in NAMES {
        let p = policy::by_name(name).unwrap();
        for threads in [1, 2, 4, 8, 32] {
            let r = engine::run(&w, p.as_ref(), threads, &Params::default())
                .unwrap_or_else(|e| panic!("{name}/{threads}: {e}"));
            assert_eq!(r.adds, w.total_adds());
            assert!(r.refs_run > 0);
            assert_eq!(r.per_thread_refs_run.iter().sum::<u64>(), r.refs_run);
        }
    }
}
