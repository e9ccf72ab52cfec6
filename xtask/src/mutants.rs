//! `cargo xtask mutants [--shard K/N] [--quick]`: cargo-mutants over the delayed-ref runner
//! (issue 12 item 4): the policies, the seed gate, both runners, heads and the root. The
//! results and what became of every surviving mutant are in `refgate-replay/MUTANTS.md`.
//!
//! The whole run takes hours on two cores (each timeout costs [`TIMEOUT_S`]), so it is done
//! in shards across sessions. `--quick` is CI's short form: a fixed handful of mutants of
//! the gate and the 3.x policies, all of which the tests are known to catch; it fails if one
//! survives (cargo-mutants exits non-zero for a missed mutant or a timeout).
use std::process::Command;

use anyhow::{Result, bail};

use crate::{cargo, output, root, sh};

/// The version MUTANTS.md's results were obtained with.
const VERSION: &str = "27.1.0";

/// Seconds a mutant's tests may take (the unmutated set takes 3–10 s here).
const TIMEOUT_S: &str = "40";

/// The files issue 12 names, and the extent tree's B-tree and block locks (issue "extent
/// tree": mutations of the lock-release and self-feeding rules must fail a test).
const FILES: [&str; 8] = [
    "refgate-replay/src/policy/*.rs",
    "refgate-replay/src/gate.rs",
    "refgate-replay/src/run_v3.rs",
    "refgate-replay/src/run_modern.rs",
    "refgate-replay/src/head.rs",
    "refgate-replay/src/root.rs",
    "refgate-replay/src/btree.rs",
    "refgate-replay/src/tree_lock.rs",
];

/// The tests each mutant is run against: the model's unit, spec, scenario, engine,
/// virtual-CPU, property and mutant-killing tests (the CLI and live tests add nothing for
/// these files).
const TESTS: [&str; 15] = [
    "--lib",
    "--test",
    "spec",
    "--test",
    "scenarios",
    "--test",
    "engine",
    "--test",
    "vcpu",
    "--test",
    "invariant_prop",
    "--test",
    "mutants_kill",
    "--test",
    "mutants_kill_runners",
];

/// CI's short form: mutants the tests are known to catch without a timeout — among them
/// the two issue 12 named as surviving every test then (the gate's early return `<` turned
/// into `<=`, merges ignoring the seq fence) — over two files (cargo-mutants' `--re` matches
/// the whole mutant name, path included).
const QUICK_FILES: [&str; 2] = ["refgate-replay/src/gate.rs", "refgate-replay/src/head.rs"];
const QUICK_RE: &str = "Gate::(refs_newer|reset|procs_running_refs)|replace < with <= in Gate::enter_throttled$|replace >= with < in HeadInner::merge_delayed_refs";

/// cargo-mutants at [`VERSION`], installed when missing (like cargo-fuzz).
fn setup() -> Result<()> {
    if !output(Command::new("cargo").args(["mutants", "--version"])).contains(VERSION) {
        sh(Command::new("cargo").args([
            "install",
            "cargo-mutants",
            "--locked",
            "--version",
            VERSION,
        ]))?;
    }
    Ok(())
}

pub fn mutants(shard: Option<String>, quick: bool) -> Result<()> {
    setup()?;
    let mut c = cargo();
    // A private target dir: cargo-mutants builds copies of the tree whose path crates share
    // fingerprints with the checkout's, so a build elsewhere in it could pick up a mutant.
    c.env("CARGO_TARGET_DIR", root().join("target/mutants"))
        .args(["mutants", "--package", "refgate-replay", "--no-shuffle"])
        .args(["--gitignore", "true", "--jobs", "1", "--timeout", TIMEOUT_S])
        .args(["--build-timeout", "900"]);
    let out = if quick {
        for f in QUICK_FILES {
            c.args(["-f", f]);
        }
        c.args(["--re", QUICK_RE]);
        "target/mutants-out/quick".to_string()
    } else {
        for f in FILES {
            c.args(["-f", f]);
        }
        if let Some(s) = &shard {
            c.args(["--shard", s]);
        }
        format!(
            "target/mutants-out/{}",
            shard.as_deref().unwrap_or("all").replace('/', "-of-")
        )
    };
    // cargo-mutants creates its output directory but not that directory's parent.
    let out = root().join(out);
    std::fs::create_dir_all(out.parent().expect("under target/"))?;
    c.arg("--output").arg(&out).arg("--").args(TESTS);
    sh(&mut c)?;
    eprintln!(
        "xtask: mutants: outcomes in {}/mutants.out (caught.txt, missed.txt, timeout.txt)",
        out.display()
    );
    if quick {
        // cargo-mutants succeeds when its filters match nothing: a quick run that tested no
        // mutant would pass without checking anything.
        let caught =
            std::fs::read_to_string(out.join("mutants.out/caught.txt")).unwrap_or_default();
        let n = caught.lines().filter(|l| !l.trim().is_empty()).count();
        if n == 0 {
            bail!(
                "the quick mutation run tested no mutant: QUICK_FILES/QUICK_RE in xtask/src/mutants.rs \
                 no longer match the code (a file moved or a function was renamed?)"
            );
        }
        eprintln!("xtask: mutants: the quick run's {n} mutants were all caught");
    }
    Ok(())
}
