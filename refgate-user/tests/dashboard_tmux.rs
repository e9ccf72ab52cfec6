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
            .args(["capture-pane", "-p", "-t", &self.0])
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
    assert!(out.contains("REFGATE-EXIT=0"), "{out}");
    assert!(
        out.contains("verdict    none: the run was cut short (q)"),
        "{out}"
    );
    assert!(out.contains("paused "), "{out}");
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
