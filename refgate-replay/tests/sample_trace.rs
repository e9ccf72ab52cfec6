//! The bundled sample (a real `refgate record --scratch` on 6.18) replays under every policy
//! at 1, 8 and 32 threads with the §7.4 invariant holding (issue: replay of recorded traces).
use refgate_common::trace::TraceReader;
use refgate_replay::{
    Config, Engine, Params, by_name,
    live::Live,
    trace_workload::{SeqRule, TraceOptions, workload_from_records},
};
use std::sync::Arc;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");
/// Recorded by `cargo xtask vm-test --keep` on Debian's 6.1 kernel, with kprobes.
const VM_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../samples/debian-6.1-kprobes.bin"
);

#[test]
fn sample_replays_under_every_policy() {
    replays(SAMPLE, "gap heuristic");
}

#[test]
fn kprobe_sample_replays_with_recorded_handles() {
    replays(VM_SAMPLE, "kprobes");
}

fn replays(path: &str, handle_source: &str) {
    let mut reader = TraceReader::open_path(path).expect("bundled sample");
    let records = reader.read_all().expect("sample is intact");
    let (w, conv) = workload_from_records(records, &TraceOptions::default()).expect("converts");
    assert!(conv.ref_adds > 1_000, "{conv:?}");
    assert_eq!(conv.handle_source, handle_source, "{conv:?}");
    assert!(conv.transactions > 2, "{conv:?}");
    assert_eq!(w.total_adds(), conv.ref_adds + conv.extent_ops);
    for policy in ["pre", "seed", "modern"] {
        for threads in [1, 8, 32] {
            let p = by_name(policy).unwrap();
            let r = refgate_replay::run(&w, p.as_ref(), threads, &Params::default())
                .unwrap_or_else(|e| panic!("{policy} × {threads}: {e}"));
            assert!(r.refs_run > 0);
        }
    }
}

/// §1.6 on 6.x traces: with the default rule (data refs are file operations) a 3.x replay
/// gives fs-tree refs seqs and, with 8 CPUs, holds refs back; with the recorded seqs (0 on
/// 6.x) nothing is held back.
#[test]
fn samples_hold_back_refs_under_pre_with_3x_seqs() {
    for path in [SAMPLE, VM_SAMPLE] {
        let records = TraceReader::open_path(path).unwrap().read_all().unwrap();
        let holdbacks = |rule: SeqRule| {
            let opts = TraceOptions {
                seq_rule: rule,
                ..TraceOptions::default()
            };
            let (w, conv) = workload_from_records(records.clone(), &opts).unwrap();
            let cfg = Config {
                engine: Engine::Virtual,
                cpus: 8,
                params: Params::default(),
                sim_seed: 0,
                pace: false,
                timeline: false,
            };
            let r = refgate_replay::replay(
                &w,
                by_name("pre").unwrap().as_ref(),
                &cfg,
                Arc::new(Live::new(8)),
            )
            .unwrap();
            (conv.fs_tree_refs_with_seq, r.seq_holdbacks)
        };
        let (with_seq, held) = holdbacks(SeqRule::Data);
        assert!(
            with_seq > 100 && held > 0,
            "{path}: {with_seq} refs with seq, {held} hold-backs"
        );
        assert_eq!(holdbacks(SeqRule::Recorded), (0, 0), "{path}");
    }
}
