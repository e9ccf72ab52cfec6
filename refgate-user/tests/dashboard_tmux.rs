//! The replay dashboard on a real terminal: the binary runs in a detached tmux pane, the pane
//! is captured while it draws, keys are sent, and after it exits the pane must hold the text
//! report on the normal screen (the alternate screen left, nothing of the dashboard behind).
use std::{
    process::Command,
    time::{Duration, Instant},
};

/// Kills the tmux session however the test ends.
struct Session(String);

impl Session {
    fn start(cmd: &str) -> Option<Session> {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipped: tmux is not installed (cargo xtask setup installs it)");
            return None;
        }
        let name = format!("refgate-dash-{}-{}", std::process::id(), rand_suffix());
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "48",
                "-s",
                &name,
                cmd,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux new-session");
        assert!(st.success(), "tmux new-session failed");
        Some(Session(name))
    }
    fn capture(&self) -> String {
        let o = Command::new("tmux")
            // -J: wrapped lines joined, so a long report line reads as one.
            .args(["capture-pane", "-p", "-J", "-t", &self.0])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn keys(&self, k: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.0, k])
            .status()
            .expect("send-keys");
    }
    /// Polls the pane until `pred` holds, failing with the last capture after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.capture();
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for {what}; pane:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

const PANELS: [&str; 6] = [
    "Throughput",
    "Queue depth",
    "Locks: contended waits",
    "Seed gate",
    "Run-call latency",
    "Threads:",
];

fn dashboard_drawn(s: &str) -> bool {
    PANELS.iter().all(|p| s.contains(p))
}

/// Nothing of the dashboard is left on the normal screen.
fn restored(s: &str) {
    for p in PANELS {
        assert!(
            !s.contains(p),
            "dashboard panel {p:?} left on the screen after exit:\n{s}"
        );
    }
    assert!(
        !s.contains('┌') && !s.contains('│'),
        "box drawing left on the screen:\n{s}"
    );
}

#[test]
fn replay_dashboard_runs_to_the_end_then_prints_the_report() {
    // --speed 1 honours the recorded think-times: the sample takes a few seconds.
    let cmd = format!(
        "{} replay --engine threads --threads 8 --policy seed --speed 1; echo REFGATE-EXIT=$?; sleep 20",
        env!("CARGO_BIN_EXE_refgate")
    );
    let Some(s) = Session::start(&cmd) else {
        return;
    };
    s.wait_for("the live dashboard", Duration::from_secs(10), |p| {
        dashboard_drawn(p) && p.contains("q quit")
    });
    let fin = s.wait_for("the final numbers", Duration::from_secs(15), |p| {
        p.contains("press any key")
    });
    assert!(
        fin.contains("100.0%") && fin.contains("transaction 9/9"),
        "{fin}"
    );
    assert!(fin.contains("(final)"), "{fin}");
    // It holds the final numbers until a key: still there a moment later.
    std::thread::sleep(Duration::from_millis(600));
    assert!(s.capture().contains("press any key"));
    s.keys("x");
    let out = s.wait_for("the exit", Duration::from_secs(10), |p| {
        p.contains("REFGATE-EXIT=")
    });
    assert!(out.contains("REFGATE-EXIT=0"), "{out}");
    assert!(out.contains("refgate replay of bundled sample"), "{out}");
    assert!(out.contains("verdict    invariant holds (§7.4)"), "{out}");
    restored(&out);
}

#[test]
fn replay_dashboard_pause_and_quit_give_a_partial_report() {
    // --speed 0.25: about 15 s of recorded think-times, so q surely lands mid-run.
    let cmd = format!(
        "{} replay --engine threads --threads 4 --policy modern --speed 0.25; echo REFGATE-EXIT=$?; sleep 20",
        env!("CARGO_BIN_EXE_refgate")
    );
    let Some(s) = Session::start(&cmd) else {
        return;
    };
    s.wait_for("the live dashboard", Duration::from_secs(10), |p| {
        p.contains("Throughput") && p.contains("Threads:") && p.contains("policy modern")
    });
    s.keys("p");
    s.wait_for("the pause", Duration::from_secs(5), |p| {
        p.contains("PAUSED") && p.contains("4 paused")
    });
    s.keys("q");
    let out = s.wait_for("the exit", Duration::from_secs(10), |p| {
        p.contains("REFGATE-EXIT=")
    });
    // A cut run is not a complete one: exit status 3.
    assert!(out.contains("REFGATE-EXIT=3"), "{out}");
    assert!(
        out.contains("verdict    none: the run was cut short (q or --until)"),
        "{out}"
    );
    assert!(out.contains("paused "), "{out}");
    restored(&out);
}

/// The number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `q` on a virtual replay stops its clock where it is: the partial report's figures are those
/// of the part replayed — the same as a replay cut there with `--json --until` without the
/// dashboard — not of a clock that ran on to the end.
#[test]
fn quitting_a_virtual_replay_early_reports_the_part_replayed() {
    let bin = env!("CARGO_BIN_EXE_refgate");
    // --speed 0.05: the virtual clock paced to 20× slower than recorded, so q lands mid-run.
    let cmd = format!(
        "{bin} replay --threads 8 --policy seed --speed 0.05; echo REFGATE-EXIT=$?; sleep 20"
    );
    let started = Instant::now();
    let Some(s) = Session::start(&cmd) else {
        return;
    };
    s.wait_for("the live dashboard", Duration::from_secs(10), |p| {
        p.contains("8 virtual CPUs") && p.contains("q quit")
    });
    std::thread::sleep(Duration::from_millis(1500));
    s.keys("q");
    let pressed = started.elapsed();
    let out = s.wait_for("the exit", Duration::from_secs(10), |p| {
        p.contains("REFGATE-EXIT=")
    });
    assert!(out.contains("REFGATE-EXIT=3"), "{out}");
    let at_ns = number_after(&out, "cut short (q or --until) at virtual ").expect("the cut");
    let refs = number_after(&out, "  result     ").expect("refs run");
    let heads = number_after(&out, " refs run (").expect("heads run");
    // Paced, the virtual clock runs no faster than the wall clock: a cut past the time q was
    // pressed (plus the quit's own second) is a clock that ran on after q.
    let bound = (pressed + Duration::from_secs(1)).as_nanos() as u64;
    assert!(
        at_ns <= bound,
        "the clock ran on after q: cut at {at_ns} ns, q at {pressed:?}"
    );
    let until = format!("{:.9}", at_ns as f64 / 1e9);
    let cut = Command::new(bin)
        .args([
            "replay",
            "--threads",
            "8",
            "--policy",
            "seed",
            "--json",
            "--no-tui",
        ])
        .args(["--speed", "0.05", "--until", &until])
        .output()
        .unwrap();
    assert_eq!(cut.status.code(), Some(3));
    let cut: serde_json::Value = serde_json::from_slice(&cut.stdout).unwrap();
    assert_eq!(
        (
            (cut["virtual_seconds"].as_f64().unwrap() * 1e9).round() as u64,
            cut["refs_run"].as_u64().unwrap(),
            cut["heads_run"].as_u64().unwrap()
        ),
        (at_ns, refs, heads),
        "{out}"
    );
    restored(&out);
}

#[test]
fn virtual_replay_dashboard_shows_virtual_time_and_the_cpu_split() {
    // The default engine. --speed 1: recorded think-times, and the virtual clock paced to the
    // wall clock, so the live phase lasts a few seconds.
    let cmd = format!(
        "{} replay --threads 8 --policy seed --speed 1; echo REFGATE-EXIT=$?; sleep 20",
        env!("CARGO_BIN_EXE_refgate")
    );
    let Some(s) = Session::start(&cmd) else {
        return;
    };
    let live = s.wait_for("the live dashboard", Duration::from_secs(10), |p| {
        p.contains("8 virtual CPUs") && p.contains("CPUs:") && p.contains("q quit")
    });
    assert!(live.contains("time: work █ spin ▓"), "{live}");
    assert!(live.contains("refs per virtual s"), "{live}");
    assert!(live.contains("virtual "), "{live}");
    let fin = s.wait_for("the final numbers", Duration::from_secs(40), |p| {
        p.contains("press any key")
    });
    assert!(
        fin.contains("transaction 9/9") && fin.contains('█'),
        "{fin}"
    );
    s.keys("x");
    let out = s.wait_for("the exit", Duration::from_secs(10), |p| {
        p.contains("REFGATE-EXIT=")
    });
    assert!(out.contains("REFGATE-EXIT=0"), "{out}");
    assert!(out.contains("seed (3.9–3.10) on 8 virtual CPUs"), "{out}");
    assert!(out.contains("verdict    invariant holds (§7.4)"), "{out}");
    assert!(out.contains("cpu time   work"), "{out}");
    restored(&out);
}

#[test]
fn replay_dashboard_title_says_the_trace_is_damaged() {
    let d = tempfile::tempdir().unwrap();
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/scratch-6.18.bin"
    ))
    .unwrap();
    let cut = d.path().join("cut.bin");
    std::fs::write(&cut, &sample[..sample.len() / 2]).unwrap();
    let cmd = format!(
        "{} replay --threads 4 --policy seed {}; echo REFGATE-EXIT=$?; sleep 20",
        env!("CARGO_BIN_EXE_refgate"),
        cut.display()
    );
    let Some(s) = Session::start(&cmd) else {
        return;
    };
    let fin = s.wait_for("the final numbers", Duration::from_secs(30), |p| {
        p.contains("press any key")
    });
    assert!(
        fin.contains("cut.bin (DAMAGED at byte") && fin.contains("records before it replayed"),
        "{fin}"
    );
    s.keys("x");
    let out = s.wait_for("the exit", Duration::from_secs(10), |p| {
        p.contains("REFGATE-EXIT=")
    });
    assert!(out.contains("REFGATE-EXIT=0"), "{out}");
    assert!(
        out.contains("DAMAGED    the trace stops at byte offset"),
        "{out}"
    );
    restored(&out);
}
