//! Every JSON output against its JSON Schema in docs/schema/: replay (both engines, both
//! samples, a cut trace, a policy's own callers), inspect (both samples, a cut trace),
//! compare and validate. The schemas list every key as required and forbid others, so a key
//! renamed, dropped under one engine, or added without its schema fails here.

mod common;

use common::json_of;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sample(name: &str) -> String {
    root()
        .join("samples")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// Checks `v` against docs/schema/`kind`.schema.json, naming every error.
fn check(kind: &str, v: &Value, what: &str) {
    let path = root().join(format!("docs/schema/{kind}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["schema"], format!("refgate.{kind}/1"), "{what}");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
}

/// The first `n` bytes of a sample: a trace cut mid-frame.
fn cut_sample(dir: &Path, n: usize) -> String {
    let bytes = std::fs::read(sample("scratch-6.18.bin")).unwrap();
    let p = dir.join("cut.bin");
    std::fs::write(&p, &bytes[..n]).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn replay_json_matches_its_schema_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let cut = cut_sample(dir.path(), 300_000);
    for (trace, policy) in [
        (sample("scratch-6.18.bin"), "modern"),
        (sample("debian-6.1-kprobes.bin"), "pre"),
        (cut, "seed"),
    ] {
        for engine in ["virtual", "threads"] {
            let v = json_of(&[
                "replay",
                &trace,
                "--policy",
                policy,
                "--engine",
                engine,
                "--threads",
                "3",
                "--no-tui",
                "--json",
            ]);
            check("replay", &v, &format!("{trace} {policy} {engine}"));
        }
    }
}

#[test]
fn inspect_json_matches_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cut = cut_sample(dir.path(), 300_000);
    for trace in [
        sample("scratch-6.18.bin"),
        sample("debian-6.1-kprobes.bin"),
        cut,
    ] {
        let v = json_of(&["inspect", &trace, "--json"]);
        check("inspect", &v, &trace);
    }
}

#[test]
fn compare_and_validate_json_match_their_schemas() {
    let s = sample("scratch-6.18.bin");
    let v = json_of(&[
        "compare",
        &s,
        "--policies",
        "all",
        "--cpus",
        "1,3",
        "--json",
    ]);
    check("compare", &v, "compare");
    let v = json_of(&["replay", &s, "--validate", "--json"]);
    check("validate", &v, "validate");
}

/// The schema is a real check: a key the schema does not know, a missing one, and a wrong
/// type are each reported.
#[test]
fn the_schemas_reject_what_they_do_not_describe() {
    let path = root().join("docs/schema/replay.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let good = json_of(&["replay", "--threads", "2", "--no-tui", "--json"]);
    assert!(validator.is_valid(&good));
    let mut extra = good.clone();
    extra["threads"] = 2.into();
    assert!(!validator.is_valid(&extra), "an unknown key");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("virtual_seconds");
    assert!(!validator.is_valid(&missing), "a missing key");
    let mut wrong = good;
    wrong["locks"]["delayed_refs_lock"]["contended"] = "many".into();
    assert!(!validator.is_valid(&wrong), "a wrong type");
}
