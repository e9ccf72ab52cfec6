//! Every input in `fuzz/regressions/TARGET/` (crashes the fuzzers found, kept once fixed) runs
//! through the same code as the fuzz target, under plain `cargo test`; so do the bundled samples
//! and cuts of them.
#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::Path;

type Body = fn(&[u8]);
const TARGETS: [(&str, Body); 3] = [
    ("trace_reader", bodies::trace_reader),
    ("inspect_summary", bodies::inspect_summary),
    ("trace_workload", bodies::trace_workload),
];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn fuzz_regression_inputs_stay_fixed() {
    let mut ran = 0;
    for (target, body) in TARGETS {
        let dir = root().join("fuzz/regressions").join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            eprintln!("{target}: {}", e.path().display());
            body(&data);
            ran += 1;
        }
    }
    eprintln!("{ran} regression inputs");
}

#[test]
fn fuzz_bodies_hold_on_the_samples_and_their_cuts() {
    for s in ["scratch-6.18.bin", "debian-6.1-kprobes.bin"] {
        let data = std::fs::read(root().join("samples").join(s)).unwrap();
        for (_, body) in TARGETS {
            body(&data);
            for cut in [10, 18, 100, 4096, data.len() / 3, data.len() - 1] {
                body(&data[..cut]);
            }
        }
    }
}
