//! How the recorder shows its status while it records: the record dashboard on a terminal,
//! else status lines (the ANSI block redrawn in place, or plain lines for `--no-tui`, pipes
//! and CI). [`Live`] holds the [`RecordState`] and shows it through the view chosen at start.

use std::{
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use refgate_common::event::{Event, Stats};

use super::loader::ProbeStatus;
use super::status::{RecordState, ansi_lines, plain_line};
use crate::dashboard::{Key, Tui};

/// How the state is shown.
enum View {
    /// The dashboard: the terminal (restored when dropped).
    Dashboard(Tui),
    /// Status lines on stdout: the ANSI block redrawn in place (`ansi`), else plain lines.
    Lines { ansi: bool, lines_drawn: usize },
}

pub struct Live {
    state: RecordState,
    view: View,
}

impl Live {
    pub fn new(want_tui: bool, probes: &[ProbeStatus], output: &Path) -> Self {
        let attached = probes.iter().filter(|p| p.attached).count();
        let state = RecordState::new(&output.display().to_string(), attached, probes.len());
        let tui = if want_tui && std::io::stdout().is_terminal() {
            Tui::enter()
                .map_err(|e| eprintln!("refgate: no dashboard ({e}); plain progress lines instead"))
                .ok()
        } else {
            None
        };
        let view = match tui {
            Some(t) => View::Dashboard(t),
            None => {
                println!(
                    "refgate: recording with {} of {} probes attached (Ctrl-C to stop)",
                    state.attached, state.probes
                );
                View::Lines {
                    ansi: false,
                    lines_drawn: 0,
                }
            }
        };
        Live { state, view }
    }

    /// A one-off message: on the dashboard's footer (and printed when it closes), else
    /// printed above the status.
    pub fn note(&mut self, msg: &str) {
        self.state.notes.push(msg.to_string());
        if !self.is_tui() {
            println!("refgate: {msg}");
        }
    }

    pub fn is_tui(&self) -> bool {
        matches!(self.view, View::Dashboard(_))
    }

    /// Every ~250 ms with the dashboard: reads pending keys without blocking and redraws.
    /// Returns why to stop if `q` or Ctrl-C was pressed (raw mode turns Ctrl-C into a key, so
    /// it no longer raises SIGINT).
    pub fn ui_tick(&mut self) -> Option<&'static str> {
        let View::Dashboard(tui) = &mut self.view else {
            return None;
        };
        let mut stop = None;
        while let Ok(Some(k)) = crate::dashboard::next_key(Duration::ZERO) {
            if k == Key::Quit {
                stop = Some("stopped from the dashboard (q / Ctrl-C)");
            }
        }
        let state = &self.state;
        let _ = tui
            .terminal
            .draw(|f| crate::dashboard::record::draw(f, state));
        stop
    }

    pub fn event(&mut self, e: &Event) {
        self.state.event(e);
    }

    /// The probes' average in-kernel cost so far, shown from the next tick on.
    pub fn probe_cost(&mut self, ns_per_run: Option<f64>) {
        self.state.cost_ns = ns_per_run;
    }

    pub fn bad_record(&mut self) {
        self.state.bad += 1;
    }

    /// Once a second: updates the state and shows it.
    pub fn tick(&mut self, stats: &Stats, elapsed: Duration) {
        self.state.tick(stats, elapsed);
        match &mut self.view {
            View::Dashboard(_) => {
                self.ui_tick();
            }
            View::Lines {
                ansi: true,
                lines_drawn,
            } => {
                let lines = ansi_lines(&self.state);
                let mut out = std::io::stdout().lock();
                if *lines_drawn > 0 {
                    let _ = write!(out, "\x1b[{}A", *lines_drawn);
                }
                for l in &lines {
                    let _ = writeln!(out, "\x1b[2K{l}");
                }
                let _ = out.flush();
                *lines_drawn = lines.len();
            }
            View::Lines { ansi: false, .. } => println!("{}", plain_line(&self.state)),
        }
    }

    pub fn finish(&mut self, stats: &Stats, elapsed: Duration, why: &str, output: &Path) {
        // Leave the dashboard first, so the summary lands on the normal screen.
        let lines = View::Lines {
            ansi: false,
            lines_drawn: 0,
        };
        if let View::Dashboard(tui) = std::mem::replace(&mut self.view, lines) {
            drop(tui);
            for n in &self.state.notes {
                println!("refgate: {n}");
            }
        }
        let s = &self.state;
        println!(
            "refgate: stopped after {:.1}s: {why}. {} events written to {} ({} lost in the \
             ring buffer, {} contention events filtered as not btrfs, {} extent-tree-foreign \
             tree locks skipped{})",
            elapsed.as_secs_f64(),
            s.total(),
            output.display(),
            stats.lost_events(),
            stats.contention_not_btrfs,
            stats.tree_lock_not_extent,
            if s.bad > 0 {
                format!(", {} malformed ring-buffer records", s.bad)
            } else {
                String::new()
            }
        );
        for (k, p) in &s.per_probe {
            println!("  {k:<34} {:>10}", p.total);
        }
        let wait_ns = s.contention_wait_ns();
        if wait_ns > 0 {
            println!(
                "  total btrfs lock wait recorded: {:.3} ms",
                wait_ns as f64 / 1e6
            );
        }
    }
}
