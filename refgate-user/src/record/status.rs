//! The recorder's live status: the record dashboard ([`crate::dashboard::record`]) on a
//! terminal, or one plain line a second otherwise (`--no-tui`, pipes, CI).
use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use refgate_common::event::{Event, EventKind, Stats};

use super::loader::ProbeStatus;
use crate::dashboard::{Key, Tui, record::RecordApp};

pub struct Live {
    /// The dashboard: the terminal (restored when dropped) and its state.
    tui: Option<(Tui, RecordApp)>,
    redraw: bool,
    lines_drawn: usize,
    total: BTreeMap<&'static str, u64>,
    last: BTreeMap<&'static str, u64>,
    contention_wait_ns: u64,
    bad: u64,
    attached: usize,
    /// Average in-kernel ns per program run so far (`--probe-cost`).
    cost_ns: Option<f64>,
}

impl Live {
    pub fn new(want_tui: bool, probes: &[ProbeStatus], output: &Path) -> Self {
        let attached = probes.iter().filter(|p| p.attached).count();
        let tui = if want_tui && std::io::stdout().is_terminal() {
            match Tui::enter() {
                Ok(t) => Some((
                    t,
                    RecordApp::new(&output.display().to_string(), attached, probes.len()),
                )),
                Err(e) => {
                    eprintln!("refgate: no dashboard ({e}); plain progress lines instead");
                    None
                }
            }
        } else {
            None
        };
        let live = Live {
            redraw: false,
            tui,
            lines_drawn: 0,
            total: BTreeMap::new(),
            last: BTreeMap::new(),
            contention_wait_ns: 0,
            bad: 0,
            attached,
            cost_ns: None,
        };
        if live.tui.is_some() {
            return live;
        }
        println!(
            "refgate: recording with {} of {} probes attached (Ctrl-C to stop)",
            live.attached,
            probes.len()
        );
        live
    }

    /// A one-off message, printed above the status.
    pub fn note(&mut self, msg: &str) {
        match &mut self.tui {
            Some((_, app)) => app.notes.push(msg.to_string()),
            None => println!("refgate: {msg}"),
        }
    }

    pub fn is_tui(&self) -> bool {
        self.tui.is_some()
    }

    /// Every ~250 ms with the dashboard: reads pending keys without blocking and redraws.
    /// Returns why to stop if `q` or Ctrl-C was pressed (raw mode turns Ctrl-C into a key, so
    /// it no longer raises SIGINT).
    pub fn ui_tick(&mut self) -> Option<&'static str> {
        let (tui, app) = self.tui.as_mut()?;
        let mut stop = None;
        while let Ok(Some(k)) = crate::dashboard::next_key(Duration::ZERO) {
            if k == Key::Quit {
                stop = Some("stopped from the dashboard (q / Ctrl-C)");
            }
        }
        app.bad = self.bad;
        let _ = tui
            .terminal
            .draw(|f| crate::dashboard::record::draw(f, app));
        stop
    }

    pub fn event(&mut self, e: &Event) {
        if let Some((_, app)) = &mut self.tui {
            app.event(e);
        }
        *self.total.entry(e.kind.probe_name()).or_default() += 1;
        if let EventKind::Contention { wait_ns, .. } = e.kind {
            self.contention_wait_ns += wait_ns;
        }
    }

    /// The probes' average in-kernel cost so far, shown from the next tick on.
    pub fn probe_cost(&mut self, ns_per_run: Option<f64>) {
        self.cost_ns = ns_per_run;
        if let Some((_, app)) = &mut self.tui {
            app.cost_ns = ns_per_run;
        }
    }

    pub fn bad_record(&mut self) {
        self.bad += 1;
    }

    pub fn tick(&mut self, stats: &Stats, elapsed: Duration) {
        if let Some((_, app)) = &mut self.tui {
            app.tick(stats, elapsed);
            self.ui_tick();
            return;
        }
        let mut lines = vec![format!(
            "[{:>5.0}s] events {:>9}  lost {:>6}  contention filtered (not btrfs) {:>8}{}",
            elapsed.as_secs_f64(),
            self.total.values().sum::<u64>(),
            stats.lost_events(),
            stats.contention_not_btrfs,
            self.cost_ns
                .map(|c| format!("  in-kernel {c:.0} ns/event"))
                .unwrap_or_default()
        )];
        if self.redraw {
            for (k, v) in &self.total {
                let rate = v - self.last.get(k).copied().unwrap_or(0);
                lines.push(format!("  {k:<34} {rate:>8}/s {v:>10} total"));
            }
            let mut out = std::io::stdout().lock();
            if self.lines_drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.lines_drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            let _ = out.flush();
            self.lines_drawn = lines.len();
        } else {
            let rates: Vec<String> = self
                .total
                .iter()
                .map(|(k, v)| {
                    let short = k.rsplit(':').next().unwrap_or(k);
                    format!("{short}={}/s", v - self.last.get(k).copied().unwrap_or(0))
                })
                .collect();
            println!("{} {}", lines[0], rates.join(" "));
        }
        self.last = self.total.clone();
    }

    pub fn finish(&mut self, stats: &Stats, elapsed: Duration, why: &str, output: &Path) {
        // Leave the dashboard first, so the summary lands on the normal screen.
        if let Some((tui, app)) = self.tui.take() {
            drop(tui);
            for n in &app.notes {
                println!("refgate: {n}");
            }
        }
        let n: u64 = self.total.values().sum();
        println!(
            "refgate: stopped after {:.1}s: {why}. {n} events written to {} ({} lost in the \
             ring buffer, {} contention events filtered as not btrfs, {} extent-tree-foreign \
             tree locks skipped{})",
            elapsed.as_secs_f64(),
            output.display(),
            stats.lost_events(),
            stats.contention_not_btrfs,
            stats.tree_lock_not_extent,
            if self.bad > 0 {
                format!(", {} malformed ring-buffer records", self.bad)
            } else {
                String::new()
            }
        );
        for (k, v) in &self.total {
            println!("  {k:<34} {v:>10}");
        }
        if self.contention_wait_ns > 0 {
            println!(
                "  total btrfs lock wait recorded: {:.3} ms",
                self.contention_wait_ns as f64 / 1e6
            );
        }
    }
}
