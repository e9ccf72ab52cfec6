//! A replay that cannot give a report says which kind of failure it was: a workload it
//! cannot run, or what the kernel would BUG on (typed `ReplayError`, not a string).

use refgate_replay::engine::{Config, Engine};
use refgate_replay::error::{LineError, ModelError, RunFailure, WorkloadError};
use refgate_replay::live::Live;
use refgate_replay::trace_workload::SeqRule;
use refgate_replay::{Params, ReplayError, by_name, replay, workload_file};
use std::sync::Arc;

fn run(text: &str, policy: &str, engine: Engine) -> Result<refgate_replay::Report, ReplayError> {
    let w = workload_file::parse(text, SeqRule::Data).map(|f| f.workload);
    let w = match w {
        Ok(w) => w,
        // The parser validates too; take the workload unvalidated to reach the engine.
        Err(e) => return Err(ReplayError::BadWorkload(e)),
    };
    let cfg = Config {
        engine,
        cpus: 2,
        params: Params::default(),
        sim_seed: 0,
        pace: false,
        timeline: false,
    };
    replay(
        &w,
        by_name(policy).unwrap().as_ref(),
        &cfg,
        Arc::new(Live::new(2)),
    )
}

#[test]
fn a_drop_with_nothing_to_drop_is_a_bad_workload() {
    let text = r#"{"op":"add","task":0,"txn":0,"action":"add","kind":"data","bytenr":1048576,"num_bytes":4096,"root":5,"owner":257,"offset":0}
{"op":"commit","task":0,"txn":0}"#;
    // A valid file, then its ADD turned into a DROP of a backref nobody added.
    let mut w = workload_file::parse(text, SeqRule::Data).unwrap().workload;
    if let refgate_replay::workload::Op::AddRef { r, .. } =
        &mut w.tasks[0].transactions[0].handles[0].ops[0]
    {
        r.action = refgate_replay::refkey::AddAction::Drop;
    }
    let cfg = Config {
        engine: Engine::Virtual,
        cpus: 1,
        params: Params::default(),
        sim_seed: 0,
        pace: false,
        timeline: false,
    };
    let e = replay(
        &w,
        by_name("pre").unwrap().as_ref(),
        &cfg,
        Arc::new(Live::new(1)),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ReplayError::BadWorkload(WorkloadError::NegativeNet { net: -1, .. })
        ),
        "{e}"
    );
    assert!(
        run(
            text.replace("\"add\",\"kind", "\"drop\",\"kind").as_str(),
            "pre",
            Engine::Virtual
        )
        .is_err()
    );
}

/// §2.7: a tree ref must run with ref_mod 1; two identical COW tree refs merge on insert
/// (§1.4 warns) and the run is what the kernel BUGs on.
#[test]
fn a_tree_ref_run_twice_over_is_a_model_error() {
    let add = r#"{"op":"add","task":0,"txn":0,"action":"add","kind":"tree","bytenr":2097152,"num_bytes":16384,"root":5,"for_cow":true}"#;
    let text = format!(
        "{{\"op\":\"extent\",\"bytenr\":2097152,\"num_bytes\":16384,\"backrefs\":[{{\"kind\":\"tree\",\"root\":7,\"count\":1}}]}}\n{add}\n{add}\n{{\"op\":\"commit\",\"task\":0,\"txn\":0}}"
    );
    for engine in [Engine::Virtual, Engine::Threads] {
        for policy in ["pre", "modern"] {
            let e = run(&text, policy, engine).unwrap_err();
            match &e {
                ReplayError::Model { errors, .. } => {
                    assert!(
                        errors.iter().any(|f| matches!(
                            f,
                            RunFailure::Model {
                                error: ModelError::TreeRefMod { ref_mod: 2, .. },
                                ..
                            }
                        )),
                        "{e}"
                    )
                }
                other => panic!("{policy}/{engine:?}: expected a model error, got {other}"),
            }
        }
    }
}

#[test]
fn a_bad_workload_file_line_says_which_line_and_what_kind_of_fault() {
    let parse = |text: &str| {
        workload_file::parse(text, SeqRule::Data)
            .map(|_| ())
            .unwrap_err()
    };
    let e = parse(
        "# a comment\n{\"op\":\"add\",\"task\":0,\"txn\":0,\"action\":\"add\",\"kind\":\"nope\",\"bytenr\":4096,\"num_bytes\":4096,\"root\":5}",
    );
    assert_eq!(
        e,
        WorkloadError::Line {
            line: 2,
            error: LineError::Kind("nope".into())
        }
    );
    assert_eq!(
        e.to_string(),
        "line 2: kind `nope`: expected `tree` or `data`"
    );
    let e = parse("{\"op\":\"run\",\"task\":0,\"txn\":0,\"arg\":\"most\"}");
    assert!(
        matches!(e, WorkloadError::Line { line: 1, error: LineError::RunArg(ref w) } if w == "most"),
        "{e}"
    );
    assert!(matches!(
        parse("not json"),
        WorkloadError::Line {
            line: 1,
            error: LineError::Json(_)
        }
    ));
    assert_eq!(parse("# nothing\n"), WorkloadError::NoOperations);
}

/// Numbers past what a workload file may hold are refused while parsing, naming the line, the
/// field and the bound, before anything is allocated for them (issue: limits): a
/// `transactions` of 10^11 used to abort allocating 3.2 TB.
#[test]
fn workload_files_past_the_bounds_are_refused_before_allocating() {
    use refgate_replay::error::{LineError, WorkloadError};
    use refgate_replay::trace_workload::SeqRule;
    use refgate_replay::workload_file::{MAX_TASK_TRANSACTIONS, MAX_TRANSACTIONS, parse};
    let e = parse(
        r#"{"op":"workload","transactions":100000000000}"#,
        SeqRule::Data,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            WorkloadError::Line {
                line: 1,
                error: LineError::TooLarge {
                    field: "transactions",
                    ..
                }
            }
        ),
        "{e}"
    );
    let huge_txn = format!(r#"{{"op":"commit","task":0,"txn":{}}}"#, u64::MAX);
    let e = parse(&huge_txn, SeqRule::Data).unwrap_err();
    assert!(
        e.to_string()
            .contains("`txn` 18446744073709551615: at most 999999"),
        "{e}"
    );
    let at_bound = format!(r#"{{"op":"commit","task":0,"txn":{MAX_TRANSACTIONS}}}"#);
    assert!(parse(&at_bound, SeqRule::Data).is_err());
    // Many tasks each padded to many transactions.
    let mut text = format!("{{\"op\":\"workload\",\"transactions\":{MAX_TRANSACTIONS}}}\n");
    for task in 0..(MAX_TASK_TRANSACTIONS / MAX_TRANSACTIONS + 1) {
        text.push_str(&format!("{{\"op\":\"task\",\"task\":{task}}}\n"));
    }
    let e = parse(&text, SeqRule::Data).unwrap_err();
    assert!(matches!(e, WorkloadError::TooBig { tasks: 11, .. }), "{e}");
}
