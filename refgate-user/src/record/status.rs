//! The recorder's live status: one [`RecordState`], fed every decoded event and a
//! once-a-second tick with the kernel-side counters, and its text views — the ANSI status
//! block ([`ansi_lines`]) and one plain line a second ([`plain_line`]). The record dashboard
//! (`crate::dashboard::record`) draws the same state; `super::progress::Live` picks the
//! view at start.
use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use refgate_common::event::{Event, EventKind, LockRole, Stats};

use crate::history::push_bounded;

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
