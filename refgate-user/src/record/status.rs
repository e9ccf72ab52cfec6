//! The recorder's live status: events per second per probe and lost events, redrawn in place
//! on a terminal, or one plain line a second otherwise (`--no-tui`, pipes, CI).
use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::Path,
    time::Duration,
};

use refgate_common::event::{Event, EventKind, Stats};

use super::loader::ProbeStatus;

pub struct Live {
    redraw: bool,
    lines_drawn: usize,
    total: BTreeMap<&'static str, u64>,
    last: BTreeMap<&'static str, u64>,
    contention_wait_ns: u64,
    bad: u64,
    attached: usize,
}

impl Live {
    pub fn new(want_tui: bool, probes: &[ProbeStatus]) -> Self {
        let live = Live {
            redraw: want_tui && std::io::stdout().is_terminal(),
            lines_drawn: 0,
            total: BTreeMap::new(),
            last: BTreeMap::new(),
            contention_wait_ns: 0,
            bad: 0,
            attached: probes.iter().filter(|p| p.attached).count(),
        };
        println!(
            "refgate: recording with {} of {} probes attached (Ctrl-C to stop)",
            live.attached,
            probes.len()
        );
        live
    }

    /// A one-off message, printed above the status.
    pub fn note(&mut self, msg: &str) {
        println!("refgate: {msg}");
    }

    pub fn event(&mut self, e: &Event) {
        *self.total.entry(e.kind.probe_name()).or_default() += 1;
        if let EventKind::Contention { wait_ns, .. } = e.kind {
            self.contention_wait_ns += wait_ns;
        }
    }

    pub fn bad_record(&mut self) {
        self.bad += 1;
    }

    pub fn tick(&mut self, stats: &Stats, elapsed: Duration) {
        let mut lines = vec![format!(
            "[{:>5.0}s] events {:>9}  lost {:>6}  contention filtered (not btrfs) {:>8}",
            elapsed.as_secs_f64(),
            self.total.values().sum::<u64>(),
            stats.lost_events(),
            stats.contention_not_btrfs
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
            if self.bad > 0 { format!(", {} malformed ring-buffer records", self.bad) } else { String::new() }
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
