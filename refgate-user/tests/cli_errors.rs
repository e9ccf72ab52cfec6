//! The CLI's error paths: a clear message, a non-zero exit, never a panic.
mod common;

use std::process::Output;

use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails_with(o: Output, needle: &str) {
    let e = stderr(&o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {e}"
    );
    assert!(e.contains(needle), "stderr lacks {needle:?}: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
}

#[test]
fn inspect_rejects_bad_files() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        refgate().arg("inspect").arg(&empty).output().unwrap(),
        "empty",
    );
    let foreign = d.path().join("foreign.bin");
    std::fs::write(&foreign, b"PERFILE2 this is perf.data, not a refgate trace").unwrap();
    fails_with(
        refgate().arg("inspect").arg(&foreign).output().unwrap(),
        "not a refgate trace",
    );
    fails_with(
        refgate()
            .arg("inspect")
            .arg(d.path().join("missing.bin"))
            .output()
            .unwrap(),
        "missing.bin",
    );
}

#[test]
fn record_rejects_a_mount_that_is_not_btrfs() {
    if !is_root() {
        eprintln!("skipped: needs root to get past the privilege check");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("t.bin");
    let o = refgate()
        .args(["record", "--no-tui", "--duration", "1", "--mount"])
        .arg(d.path())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    fails_with(o, "not a btrfs");
    assert!(
        !out.exists(),
        "no trace file is left behind when nothing was recorded"
    );
}

#[test]
fn record_without_root_says_so() {
    if !is_root() {
        // Already unprivileged: the check is direct.
        fails_with(
            refgate()
                .args(["record", "--duration", "1"])
                .output()
                .unwrap(),
            "needs root",
        );
        return;
    }
    // Drop to nobody with util-linux's setpriv.
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_refgate"))
        .args(["record", "--duration", "1", "-o", "/tmp/refgate-nobody.bin"])
        .output()
        .unwrap();
    fails_with(o, "needs root");
}

#[test]
fn replay_rejects_a_cut_trace_and_a_bad_policy() {
    let d = tempfile::tempdir().unwrap();
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/scratch-6.18.bin"
    ))
    .unwrap();
    let cut = d.path().join("cut.bin");
    std::fs::write(&cut, &sample[..sample.len() / 2]).unwrap();
    fails_with(
        refgate()
            .args(["replay", "--no-tui"])
            .arg(&cut)
            .output()
            .unwrap(),
        "Replay needs a complete trace",
    );
    fails_with(
        refgate()
            .args(["replay", "--no-tui", "--policy", "nope"])
            .output()
            .unwrap(),
        "unknown policy",
    );
    let empty = d.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        refgate()
            .args(["replay", "--no-tui"])
            .arg(&empty)
            .output()
            .unwrap(),
        "empty",
    );
}
