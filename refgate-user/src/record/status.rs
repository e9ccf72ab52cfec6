//! The recorder's live status: one [`RecordState`], fed every decoded event and a
//! once-a-second tick with the kernel-side counters, and three views of it — the record
//! dashboard ([`crate::dashboard::record::draw`]) on a terminal, the ANSI status block
//! ([`ansi_lines`]) or one plain line a second ([`plain_line`]) otherwise (`--no-tui`, pipes,
//! CI). [`Live`] holds the state and shows it through the view chosen at start.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use refgate_common::event::{Event, EventKind, LockRole, Stats};

use super::loader::ProbeStatus;
use crate::dashboard::{Key, Tui, push_bounded};

/// Seconds of history kept for the dashboard's sparklines.
const HISTORY: usize = 300;

#[derive(Default, Clone, Debug)]
pub struct ProbeRow {
    pub total: u64,
    /// Events in the last second.
    pub rate: u64,
    last: u64,
}

/// `perf lock contention` columns for one lock role.
#[derive(Default, Clone, Copy, Debug)]
pub struct RoleRow {
    pub contended: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// Everything the recorder shows while it records, whichever view shows it.
#[derive(Default)]
pub struct RecordState {
    pub output: String,
    pub attached: usize,
    pub probes: usize,
    pub elapsed: Duration,
    /// Events per probe (`Event::probe_name`), in name order.
    pub per_probe: BTreeMap<&'static str, ProbeRow>,
    /// All events per second, one sample a second.
    pub events_per_sec: VecDeque<u64>,
    pub lost: u64,
    pub contention_not_btrfs: u64,
    /// Ring-buffer records the decoder could not read.
    pub bad: u64,
    /// Contention by lock role, in [`LockRole::ALL`] order.
    pub roles: [RoleRow; 4],
    /// `add_delayed_ref_head` and `run_delayed_ref_head` events: their difference estimates
    /// the heads queued.
    pub head_adds: u64,
    pub head_runs: u64,
    pub queue: VecDeque<u64>,
    /// One-off messages, in order.
    pub notes: Vec<String>,
    /// Average in-kernel ns per program run so far, with `--probe-cost`.
    pub cost_ns: Option<f64>,
}

fn role_index(r: LockRole) -> usize {
    LockRole::ALL.iter().position(|x| *x == r).unwrap_or(3)
}

impl RecordState {
    pub fn new(output: &str, attached: usize, probes: usize) -> Self {
        Self {
            output: output.into(),
            attached,
            probes,
            ..Default::default()
        }
    }

    pub fn event(&mut self, e: &Event) {
        self.per_probe.entry(e.kind.probe_name()).or_default().total += 1;
        match e.kind {
            EventKind::Contention { role, wait_ns, .. } => {
                let r = &mut self.roles[role_index(role)];
                r.contended += 1;
                r.total_ns += wait_ns;
                r.max_ns = r.max_ns.max(wait_ns);
            }
            EventKind::AddRefHead(_) => self.head_adds += 1,
            EventKind::RunRefHead(_) => self.head_runs += 1,
            _ => {}
        }
    }

    /// Heads queued, estimated as head adds − heads run (adds that merged into a queued head
    /// make it an upper bound).
    pub fn queue_estimate(&self) -> u64 {
        self.head_adds.saturating_sub(self.head_runs)
    }

    /// Every event so far.
    pub fn total(&self) -> u64 {
        self.per_probe.values().map(|p| p.total).sum()
    }

    /// Every btrfs lock wait recorded so far, in ns.
    pub fn contention_wait_ns(&self) -> u64 {
        self.roles.iter().map(|r| r.total_ns).sum()
    }

    /// Once a second.
    pub fn tick(&mut self, stats: &Stats, elapsed: Duration) {
        let mut all = 0;
        for p in self.per_probe.values_mut() {
            p.rate = p.total - p.last;
            p.last = p.total;
            all += p.rate;
        }
        push_bounded(&mut self.events_per_sec, all, HISTORY);
        let q = self.queue_estimate();
        push_bounded(&mut self.queue, q, HISTORY);
        self.lost = stats.lost_events();
        self.contention_not_btrfs = stats.contention_not_btrfs;
        self.elapsed = elapsed;
    }
}

/// The first line of both line views: time, events, losses, filtered contention, probe cost.
fn headline(s: &RecordState) -> String {
    format!(
        "[{:>5.0}s] events {:>9}  lost {:>6}  contention filtered (not btrfs) {:>8}{}",
        s.elapsed.as_secs_f64(),
        s.total(),
        s.lost,
        s.contention_not_btrfs,
        s.cost_ns
            .map(|c| format!("  in-kernel {c:.0} ns/event"))
            .unwrap_or_default()
    )
}

/// The plain view: one line a second, the headline then each probe's rate.
pub fn plain_line(s: &RecordState) -> String {
    let rates: Vec<String> = s
        .per_probe
        .iter()
        .map(|(k, p)| {
            let short = k.rsplit(':').next().unwrap_or(k);
            format!("{short}={}/s", p.rate)
        })
        .collect();
    format!("{} {}", headline(s), rates.join(" "))
}

/// The ANSI view: the headline and one line per probe, redrawn in place.
pub fn ansi_lines(s: &RecordState) -> Vec<String> {
    let mut lines = vec![headline(s)];
    for (k, p) in &s.per_probe {
        lines.push(format!("  {k:<34} {:>8}/s {:>10} total", p.rate, p.total));
    }
    lines
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event of `kind` (task 1, CPU 0, time 0).
    pub(crate) fn ev(kind: EventKind) -> Event {
        Event {
            ts_ns: 0,
            cpu: 0,
            tid: 1,
            kind,
        }
    }

    /// A commit of generation 7 of the fs tree.
    pub(crate) fn commit() -> EventKind {
        EventKind::TransactionCommit {
            fs: Default::default(),
            generation: 7,
            root_objectid: 5,
        }
    }

    /// A recording into `trace.bin` with 9 of 10 probes attached that has seen three commits.
    pub(crate) fn after_three_commits() -> RecordState {
        let mut s = RecordState::new("trace.bin", 9, 10);
        for _ in 0..3 {
            s.event(&ev(commit()));
        }
        s
    }

    #[test]
    fn the_line_views_show_the_state() {
        let mut s = after_three_commits();
        let commit = commit();
        s.event(&ev(EventKind::Contention {
            role: LockRole::HeadMutex,
            lock_addr: 1,
            flags: 0,
            ret: 0,
            wait_ns: 2_500_000,
        }));
        let stats = Stats {
            lost_per_cpu: vec![2, 3],
            contention_not_btrfs: 11,
            ..Default::default()
        };
        s.tick(&stats, Duration::from_secs(1));
        s.event(&ev(commit));
        s.tick(&stats, Duration::from_secs(2));
        assert_eq!(s.total(), 5);
        assert_eq!(s.contention_wait_ns(), 2_500_000);
        let head =
            "[    2s] events         5  lost      5  contention filtered (not btrfs)       11";
        assert_eq!(
            plain_line(&s),
            format!("{head} btrfs_transaction_commit=1/s contention_begin/end=0/s")
        );
        s.cost_ns = Some(87.4);
        let lines = ansi_lines(&s);
        assert_eq!(lines[0], format!("{head}  in-kernel 87 ns/event"));
        assert_eq!(
            lines[1..],
            [
                "  btrfs:btrfs_transaction_commit            1/s          4 total",
                "  lock:contention_begin/end                 0/s          1 total",
            ]
        );
    }
}
