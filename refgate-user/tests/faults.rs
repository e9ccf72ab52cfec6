//! Faults around a recording (root, loop-mounted btrfs): what a crashed recorder, a full disk,
//! a killed `--scratch` run or `sudo` leave behind, and what refgate makes of it.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use common::*;

/// The tests here record system-wide: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `refgate record --no-tui ARGS` and waits until its probes are attached.
fn start_recording(args: &[&str], trace: &Path) -> (Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = refgate()
        .args(["record", "--no-tui", "-o"])
        .arg(trace)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("recording with"));
    assert!(ready, "refgate record did not start");
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect());
    (child, drain)
}

/// `kill -9` mid-recording: the trace lacks its end frame (and may end in half a frame), and
/// `replay` still replays everything before that, saying so.
#[test]
fn kill_9_then_replay() {
    let _s = serial();
    if !is_root() {
        eprintln!("skipped: recording needs root");
        return;
    }
    ensure_tracefs();
    let fs = LoopBtrfs::new();
    let trace = fs.dir.path().join("killed.bin");
    let (mut child, drain) = start_recording(&["--mount", fs.mnt.to_str().unwrap()], &trace);
    workload(&fs.mnt, 4, 200);
    fs.syncfs();
    // The recorder flushes once a second: let it flush what the workload made.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drain.join().unwrap();

    let o = refgate()
        .args(["replay", "--no-tui", "--json", "--threads", "4"])
        .arg(&trace)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "replay of a killed recording: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["trace_damage"]["records_kept"].as_u64().unwrap() > 100,
        "{}",
        v["trace_damage"]
    );
    assert_eq!(v["invariant_ok"], true, "{v}");
    assert!(v["refs_run"].as_u64().unwrap() > 0);
    let o = refgate()
        .args(["replay", "--no-tui", "--strict"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!o.status.success(), "--strict refuses a killed recording");
}
