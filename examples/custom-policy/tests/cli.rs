//! The example's binary is the whole refgate CLI with its two policies beside the built-in
//! ones: listed, completed, replayed on both engines and compared, the §7.4 invariant holding,
//! with their own caller and worker names in the JSON.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_refgate-custom-policy"))
}

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples/scratch-6.18.bin")
}

/// Runs it, requires success, returns stdout.
fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn replay_json(policy: &str, engine: &str) -> Value {
    let s = sample();
    let out = run(&[
        "replay",
        s.to_str().unwrap(),
        "--policy",
        policy,
        "--engine",
        engine,
        "--threads",
        "4",
        "--no-tui",
        "--json",
    ]);
    serde_json::from_str(&out).expect("one JSON object")
}

#[test]
fn the_new_policies_are_listed_beside_the_builtin_ones_and_completed() {
    let list: Value = serde_json::from_str(&run(&["policies", "--json"])).unwrap();
    assert_eq!(list["schema"], "refgate.policies/1");
    let names: Vec<&str> = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pre",
            "seed",
            "seed-throttle",
            "modern",
            "seed-batched",
            "modern-eager-preempt"
        ]
    );
    let text = run(&["policies"]);
    assert!(
        text.contains("seed-batched         3.9 + patch  the seed gate"),
        "{text}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for p in ["seed-batched", "modern-eager-preempt"] {
            assert!(script.contains(p), "{shell} completion lacks {p}");
        }
    }
    let dir =
        std::env::temp_dir().join(format!("refgate-custom-policy-man-{}", std::process::id()));
    run(&["manpage", "--dir", dir.to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.join("refgate-replay.1")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(page.contains(r"seed\-batched: 3.9 + patch"), "{page}");
    // An unknown name still lists every choice, the new ones included.
    let out = bin()
        .args(["replay", "--policy", "nope", "x.bin"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("modern-eager-preempt"),
        "{err}"
    );
}

/// The 3.x patch: its handle ends are counted for its own caller, the built-in `handle_end`
/// stays (as a key) at zero, and the invariant holds on both engines.
#[test]
fn seed_batched_replays_with_its_own_caller_on_both_engines() {
    for engine in ["virtual", "threads"] {
        let r = replay_json("seed-batched", engine);
        assert_eq!(r["policy"], "seed-batched");
        assert_eq!(r["invariant_ok"], true, "{engine}");
        let by = &r["run_calls_by_caller"];
        assert!(
            by["batched_handle_end"].as_u64().unwrap() > 0,
            "{engine}: {by}"
        );
        assert_eq!(by["handle_end"], 0, "{engine}: {by}");
        assert!(
            r["refs_run_by_caller"]["batched_handle_end"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert_eq!(r["workers"], serde_json::json!([]));
    }
}

/// The 6.x patch: its own worker runs (under its own caller name), the kernel's preemptive
/// worker it replaced never does, and the invariant holds on both engines.
#[test]
fn modern_eager_preempt_runs_its_own_worker_on_both_engines() {
    for engine in ["virtual", "threads"] {
        let r = replay_json("modern-eager-preempt", engine);
        assert_eq!(r["invariant_ok"], true, "{engine}");
        assert_eq!(
            r["workers"],
            serde_json::json!(["async reclaim worker", "eager preemptive reclaim worker"])
        );
        let by = &r["run_calls_by_caller"];
        assert!(
            by["eager_preemptive_reclaim"].as_u64().unwrap() > 0,
            "{engine}: {by}"
        );
        assert_eq!(by["preemptive_reclaim"], 0, "{engine}: {by}");
    }
}

/// `compare` sweeps them with a built-in policy; every point's replay checked §7.4 (compare
/// fails on a violation), and the table names each.
#[test]
fn compare_sweeps_the_new_policies() {
    let s = sample();
    let out = run(&[
        "compare",
        s.to_str().unwrap(),
        "--policies",
        "seed,seed-batched,modern-eager-preempt",
        "--cpus",
        "2,4",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let points: Vec<(&str, u64)> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["policy"].as_str().unwrap(), p["cpus"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        points,
        [
            ("seed", 2),
            ("seed", 4),
            ("seed-batched", 2),
            ("seed-batched", 4),
            ("modern-eager-preempt", 2),
            ("modern-eager-preempt", 4)
        ]
    );
}
