//! The bundled sample (a real `refgate record --scratch` on 6.18) replays under every policy
//! at 1, 8 and 32 threads with the §7.4 invariant holding (issue: replay of recorded traces).
use refgate_common::trace::TraceReader;
use refgate_replay::{
    Params, by_name,
    trace_workload::{TraceOptions, workload_from_records},
};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/scratch-6.18.bin");

#[test]
fn sample_replays_under_every_policy() {
    let mut reader = TraceReader::open_path(SAMPLE).expect("bundled sample");
    let records = reader.read_all().expect("sample is intact");
    let (w, conv) = workload_from_records(records, &TraceOptions::default()).expect("converts");
    assert!(conv.ref_adds > 10_000, "{conv:?}");
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
