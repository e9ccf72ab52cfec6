//! Hand-written scenarios (`tests/scenarios/*.jsonl`, the workload text format): each file
//! is a small workload with comments citing the kernel behaviour it checks, and `expect`
//! lines giving the outcome derived from the kernel source (docs/kernel-delayed-refs.md).
//! They test the model from the outside: through the workload format and the report.
//!
//! An `expect` line: `policies` (default all three), `cpus` (default 1), `params` and
//! `costs` overrides, then what must hold: `extents` (items that must exist, with the
//! fields given), `absent` (bytenrs with no item), `equals` and `at_least` (paths into the
//! replay's report, e.g. `refs_run`, `gate.sleeps`, `refs_run_by_caller.other`,
//! `final_state.pinned_extents`).

mod common;
use common::runner_params;
use refgate_replay::cost::{Cost, CostModel};
use refgate_replay::live::Live;
use refgate_replay::trace_workload::SeqRule;
use refgate_replay::{Config, Engine, replay};
use refgate_replay::{Params, by_name, workload_file};
use serde_json::Value;
use std::sync::Arc;

fn lookup<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

#[allow(
    clippy::too_many_lines,
    reason = "test code: one check per expectation key, in the file format's order"
)]
fn run_expect(name: &str, file: &workload_file::WorkloadFile, e: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let policies: Vec<String> = match e.get("policies") {
        Some(p) => p
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        None => vec!["pre".into(), "seed".into(), "modern".into()],
    };
    let cpus = e.get("cpus").and_then(Value::as_u64).unwrap_or(1) as usize;
    for policy in policies {
        let mut params = Params {
            keep_final_state: true,
            ..runner_params()
        };
        for (k, v) in &file.params {
            params.set(k, *v).unwrap();
        }
        if let Some(p) = e.get("params").and_then(Value::as_object) {
            for (k, v) in p {
                params.set(k, v.as_u64().unwrap()).unwrap();
            }
        }
        let mut costs = CostModel::defaults();
        if let Some(c) = e.get("costs").and_then(Value::as_object) {
            for (k, v) in c {
                costs.set(Cost::from_name(k).unwrap(), v.as_u64().unwrap(), "scenario");
            }
        }
        params.ext_cost_ns = costs.get(Cost::RunRef);
        params.costs = costs;
        let cfg = Config {
            engine: Engine::Virtual,
            cpus,
            params,
            sim_seed: 0,
            pace: false,
            timeline: false,
        };
        let at = format!("{name} [{policy} × {cpus} CPUs]");
        let r = match replay(
            &file.workload,
            by_name(&policy).unwrap().as_ref(),
            &cfg,
            Arc::new(Live::new(cpus)),
        ) {
            Ok(r) => r,
            Err(err) => {
                errs.push(format!("{at}: {err}"));
                continue;
            }
        };
        let report = serde_json::to_value(&r).unwrap();
        let state = &report["final_state"];
        for x in e
            .get("extents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let b = x["bytenr"].as_u64().unwrap();
            let Some(item) = state["extents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["bytenr"] == b)
            else {
                errs.push(format!("{at}: extent {b} missing; state {state}"));
                continue;
            };
            for (k, want) in x.as_object().unwrap() {
                if item[k] != *want {
                    errs.push(format!(
                        "{at}: extent {b}: {k} = {}, expected {want}",
                        item[k]
                    ));
                }
            }
        }
        for b in e
            .get("absent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if state["extents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["bytenr"] == *b)
            {
                errs.push(format!("{at}: extent {b} present, expected none"));
            }
        }
        for (key, cmp) in [("equals", "=="), ("at_least", ">=")] {
            for (path, want) in e.get(key).and_then(Value::as_object).into_iter().flatten() {
                let got = lookup(&report, path);
                let ok = match cmp {
                    "==" => got == want,
                    _ => got.as_f64().unwrap_or(f64::NAN) >= want.as_f64().unwrap(),
                };
                if !ok {
                    errs.push(format!("{at}: {path} = {got}, expected {cmp} {want}"));
                }
            }
        }
    }
    errs
}

#[test]
fn scenarios_end_as_the_kernel_source_says() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "at least ten scenarios: {files:?}");
    let mut errs = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let file =
            workload_file::parse(&text, SeqRule::Data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!file.expectations.is_empty(), "{name} has no expect line");
        for e in &file.expectations {
            errs.extend(run_expect(&name, &file, e));
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// The format round-trips: a workload written and read back is the same workload.
#[test]
fn workload_text_round_trip() {
    let w = refgate_replay::workload::synthetic(&refgate_replay::workload::SynthParams {
        tasks: 5,
        transactions: 3,
        ..Default::default()
    });
    let text = workload_file::to_text(&w);
    let back = workload_file::parse(&text, SeqRule::Recorded)
        .unwrap()
        .workload;
    assert_eq!(back, w);
}
