//! The `refgate replay` dashboard: [`ReplayApp`] is updated from [`LiveSnapshot`]s (a few
//! relaxed loads per worker, no lock the workers take) and drawn by the pure [`draw`].
use std::{
    collections::VecDeque,
    io,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    layout::{Constraint, Direction, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Bar, BarChart, BarGroup, Block, Borders, Cell, Gauge, Paragraph, Row, Sparkline, Table,
    },
};
use refgate_replay::{
    Engine, Policy, Report,
    live::{Live, LiveSnapshot, ThreadSnapshot, ThreadState, WaitRole, log2_quantile},
    metrics::WaitSummary,
};

use super::{Key, Tui, next_key};
use crate::history::push_bounded;
use crate::units::{ns, si};

/// Samples kept for the sparklines (at 5 a second: the last 40 s).
const HISTORY: usize = 200;
/// Time between frames.
pub const FRAME: Duration = Duration::from_millis(200);

pub struct ReplayApp {
    pub trace: String,
    pub policy: String,
    /// The policy has the seed's gate (from the policy itself, not its name).
    pub gated: bool,
    pub engine: Engine,
    /// CPUs (virtual) or threads (real).
    pub threads: usize,
    /// Wall time since the replay started, and how much of it was paused.
    pub elapsed: Duration,
    pub paused_seconds: f64,
    pub snap: LiveSnapshot,
    /// Refs run per second (per virtual second under virtual CPUs), one sample per update.
    pub throughput: VecDeque<u64>,
    pub entries: VecDeque<u64>,
    pub ready: VecDeque<u64>,
    /// The previous update's clock (ns: wall, or virtual) and refs run.
    last: Option<(u64, u64)>,
    /// `q` was pressed: waiting for the workers to stop.
    pub stopping: bool,
    /// The engine's report once it returned: the panels then show its exact numbers.
    pub report: Option<Report>,
    /// The virtual time the replay cannot end before: its longest task's think-times (the
    /// recorded gaps at `--speed`), 0 without them. With it the ETA follows the virtual clock,
    /// which a paced replay's ops do not: they come in bursts between long sleeps.
    pub virtual_floor_ns: u64,
}

impl ReplayApp {
    pub fn new(trace: &str, policy: &dyn Policy, engine: Engine, live: &Live) -> Self {
        Self {
            trace: trace.into(),
            policy: policy.name().into(),
            gated: policy.gated(),
            engine,
            threads: live.workers.len(),
            elapsed: Duration::ZERO,
            paused_seconds: 0.0,
            snap: live.snapshot(),
            throughput: VecDeque::with_capacity(HISTORY),
            entries: VecDeque::with_capacity(HISTORY),
            ready: VecDeque::with_capacity(HISTORY),
            last: None,
            stopping: false,
            report: None,
            virtual_floor_ns: 0,
        }
    }

    pub fn update(&mut self, snap: LiveSnapshot, elapsed: Duration, paused_seconds: f64) {
        // Throughput on the engine's own clock: virtual time under virtual CPUs.
        let clock = match self.engine {
            Engine::Virtual => snap.virtual_ns,
            Engine::Threads => elapsed.as_nanos() as u64,
        };
        if let Some((t, refs)) = self.last {
            let dt = clock.saturating_sub(t) as f64 / 1e9;
            if dt > 0.0 {
                push_bounded(
                    &mut self.throughput,
                    (snap.refs_run.saturating_sub(refs) as f64 / dt) as u64,
                    HISTORY,
                );
            }
        }
        self.last = Some((clock, snap.refs_run));
        push_bounded(&mut self.entries, snap.num_entries, HISTORY);
        push_bounded(&mut self.ready, snap.num_heads_ready, HISTORY);
        self.elapsed = elapsed;
        self.paused_seconds = paused_seconds;
        self.snap = snap;
    }

    pub fn fraction(&self) -> f64 {
        (self.snap.ops_done as f64 / self.snap.ops_total.max(1) as f64).clamp(0.0, 1.0)
    }

    /// How far the replay is, 0–1. On real threads: the ops done. Under virtual CPUs: the
    /// virtual clock against the run's expected virtual length, the larger of what the ops
    /// rate so far extrapolates to and the longest task's think-times (a run cannot end before
    /// them, and a paced replay's ops come in bursts between its long sleeps).
    pub fn progress(&self) -> f64 {
        let ops = self.fraction();
        let v = self.snap.virtual_ns as f64;
        match self.engine {
            Engine::Threads => ops,
            Engine::Virtual if v == 0.0 || ops == 0.0 => 0.0,
            Engine::Virtual => {
                let end = (v / ops).max(self.virtual_floor_ns as f64);
                (v / end).clamp(0.0, 1.0)
            }
        }
    }

    /// Remaining wall time at the rate of progress so far (paused time left out).
    pub fn eta(&self) -> Option<Duration> {
        let active = self.elapsed.as_secs_f64() - self.paused_seconds;
        let p = self.progress();
        let unfinished = self.snap.ops_done < self.snap.ops_total;
        (p > 0.0 && active > 0.0 && unfinished)
            .then(|| Duration::from_secs_f64(active * (1.0 - p) / p))
    }

    fn refs_per_sec(&self) -> f64 {
        match &self.report {
            Some(r) => match &r.virtual_figures {
                Some(v) => v.refs_per_virtual_second,
                None => r.host.refs_per_second,
            },
            None => self.throughput.back().copied().unwrap_or(0) as f64,
        }
    }

    /// "refs/s" on the engine's clock.
    fn rate_unit(&self) -> &'static str {
        match self.engine {
            Engine::Virtual => "refs per virtual s",
            Engine::Threads => "refs/s",
        }
    }

    /// The policy has the seed's cmpxchg gate (§2.3, §4.1).
    fn gated(&self) -> bool {
        self.gated
    }

    fn cpu_noun(&self) -> &'static str {
        match self.engine {
            Engine::Virtual => "virtual CPUs",
            Engine::Threads => "threads",
        }
    }
}

fn panel(title: impl Into<String>) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" {} ", title.into()),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

fn state_style(s: ThreadState) -> Style {
    let c = match s {
        ThreadState::RunningRefs => Color::Green,
        ThreadState::Spinning => Color::Red,
        ThreadState::SleepingOnGate => Color::Magenta,
        ThreadState::WaitingOnHead | ThreadState::WaitingExtentTree => Color::Yellow,
        ThreadState::Adding | ThreadState::Committing => Color::Cyan,
        ThreadState::Paused => Color::Blue,
        _ => Color::DarkGray,
    };
    Style::default().fg(c)
}

/// Lower bound of a log2 bucket, short enough for a bar label (`64n`, `16µ`, `2m`).
fn bucket_label(i: usize) -> String {
    let v = if i == 0 { 0 } else { 1u64 << (i - 1) };
    match v {
        0..1_000 => format!("{v}n"),
        1_000..1_000_000 => format!("{}µ", v / 1_000),
        1_000_000..1_000_000_000 => format!("{}m", v / 1_000_000),
        _ => format!("{}s", v / 1_000_000_000),
    }
}

pub fn draw(f: &mut Frame, app: &ReplayApp) {
    // Short terminals give the thread table more of their rows.
    let (charts, panels) = if f.area().height < 36 { (5, 7) } else { (8, 9) };
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Length(charts),
            Constraint::Length(panels),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(f.area());
    draw_progress(f, rows[0], app);
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[1]);
    draw_throughput(f, mid[0], app);
    draw_queue(f, mid[1], app);
    let panels = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([
            Constraint::Percentage(44),
            Constraint::Percentage(22),
            Constraint::Percentage(34),
        ])
        .split(rows[2]);
    draw_locks(f, panels[0], app);
    draw_gate(f, panels[1], app);
    draw_latency(f, panels[2], app);
    draw_threads(f, rows[3], app);
    draw_footer(f, rows[4], app);
}

fn draw_progress(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let s = &app.snap;
    let clock = match app.engine {
        Engine::Virtual => format!(
            "virtual {} · host {:.1}s",
            ns(s.virtual_ns),
            app.elapsed.as_secs_f64()
        ),
        Engine::Threads => format!("{:.1}s", app.elapsed.as_secs_f64()),
    };
    let mut label = format!(
        "{:.1}% · {}/{} ops · transaction {}/{} · {} refs run · {} {} · {clock}",
        100.0 * app.fraction(),
        s.ops_done,
        s.ops_total,
        s.transaction,
        s.transactions_total,
        s.refs_run,
        si(app.refs_per_sec()),
        app.rate_unit(),
    );
    match (&app.report, app.eta()) {
        (Some(r), _) if r.partial => label.push_str(" · stopped early (partial)"),
        (Some(_), _) => label.push_str(" · done"),
        (None, Some(eta)) => label.push_str(&format!(" · ETA {:.1}s", eta.as_secs_f64())),
        (None, None) => {}
    }
    let title = format!(
        "refgate replay · {} · policy {} · {} {}{}",
        app.trace,
        app.policy,
        app.threads,
        app.cpu_noun(),
        if s.paused { " · PAUSED" } else { "" }
    );
    let g = Gauge::default()
        .block(panel(title))
        .gauge_style(Style::default().fg(Color::Green).bg(Color::Black))
        .ratio(app.fraction())
        .label(label);
    f.render_widget(g, area);
}

fn draw_throughput(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let data: Vec<u64> = app.throughput.iter().copied().collect();
    let max = data.iter().copied().max().unwrap_or(0);
    let w = area.width.saturating_sub(2) as usize;
    let tail = &data[data.len().saturating_sub(w)..];
    let sp = Sparkline::default()
        .block(panel(format!(
            "Throughput: {} (now {}, peak {})",
            app.rate_unit(),
            si(app.refs_per_sec()),
            si(max as f64)
        )))
        .data(tail)
        .style(Style::default().fg(Color::Green));
    f.render_widget(sp, area);
}

fn draw_queue(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let s = &app.snap;
    let block = panel(format!(
        "Queue depth: {} entries, {} ready heads",
        s.num_entries, s.num_heads_ready
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let halves = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Min(1),
        ])
        .split(inner);
    let w = inner.width as usize;
    let tail = |h: &VecDeque<u64>| -> Vec<u64> {
        h.iter().skip(h.len().saturating_sub(w)).copied().collect()
    };
    let (e, r) = (tail(&app.entries), tail(&app.ready));
    f.render_widget(
        Paragraph::new(format!(
            "num_entries (peak {})",
            e.iter().max().unwrap_or(&0)
        )),
        halves[0],
    );
    f.render_widget(
        Sparkline::default()
            .data(&e)
            .style(Style::default().fg(Color::Cyan)),
        halves[1],
    );
    f.render_widget(
        Paragraph::new(format!(
            "num_heads_ready (peak {})",
            r.iter().max().unwrap_or(&0)
        )),
        halves[2],
    );
    f.render_widget(
        Sparkline::default()
            .data(&r)
            .style(Style::default().fg(Color::Yellow)),
        halves[3],
    );
}

/// The lock table from the finished run's report: exact percentiles, and the spin CPU.
fn final_lock_rows(r: &Report) -> (&'static str, Vec<Row<'static>>, f64) {
    let exact: [(&str, WaitSummary); 4] = [
        (WaitRole::DelayedRefsLock.name().label, r.dr_lock.wait),
        (WaitRole::HeadLock.name().label, r.head_lock.wait),
        (WaitRole::HeadMutex.name().label, r.head_mutex_waits),
        (WaitRole::ExtentTree.name().label, r.extent_tree_waits),
    ];
    let rows = exact
        .into_iter()
        .map(|(name, w)| {
            Row::new([
                name.to_string(),
                w.count.to_string(),
                ns(w.total_ns),
                ns(w.p50_ns),
                ns(w.p99_ns),
                ns(w.max_ns),
            ])
        })
        .collect();
    (
        "Locks: contended waits (final)",
        rows,
        r.dr_lock.spin_cpu_seconds + r.head_lock.spin_cpu_seconds,
    )
}

/// The lock table while the run goes on: percentiles as log2-bucket bounds, no max.
fn live_lock_rows(s: &LiveSnapshot) -> (&'static str, Vec<Row<'static>>, f64) {
    let rows = WaitRole::ALL
        .into_iter()
        .map(|role| {
            let i = role as usize;
            let count: u64 = s.threads.iter().map(|t| t.waits[i]).sum();
            let total: u64 = s.threads.iter().map(|t| t.wait_ns[i]).sum();
            Row::new([
                role.name().label.to_string(),
                count.to_string(),
                ns(total),
                format!("≤{}", ns(log2_quantile(&s.waits[i], 0.5))),
                format!("≤{}", ns(log2_quantile(&s.waits[i], 0.99))),
                "-".into(),
            ])
        })
        .collect();
    let spin: u64 = s.threads.iter().map(|t| t.spin_ns).sum();
    (
        "Locks: contended waits (live, log2 buckets)",
        rows,
        spin as f64 / 1e9,
    )
}

fn draw_locks(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let header = Row::new(["role", "waits", "total wait", "p50", "p99", "max"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let (title, rows, spin_s) = match &app.report {
        Some(r) => final_lock_rows(r),
        None => live_lock_rows(&app.snap),
    };
    let block = panel(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let parts = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(1), Constraint::Length(1)])
        .split(inner);
    let t = Table::new(
        rows,
        [
            Constraint::Length(19),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(header);
    f.render_widget(t, parts[0]);
    f.render_widget(
        Paragraph::new(format!(
            "spin CPU {spin_s:.4} s (delayed_refs->lock + head->lock)"
        )),
        parts[1],
    );
}

fn draw_gate(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let s = &app.snap;
    let lines: Vec<Line> = if !app.gated() {
        vec![
            Line::from("no gate under"),
            Line::from(format!("policy `{}`", app.policy)),
            Line::from("(the cmpxchg gate of"),
            Line::from(" §2.3 is `seed`, `seed-throttle`)"),
        ]
    } else {
        let asleep = s
            .threads
            .iter()
            .filter(|t| t.state == ThreadState::SleepingOnGate)
            .count();
        let mut l = vec![
            Line::from(format!("procs_running_refs {}", s.procs_running_refs)),
            Line::from(format!(
                "sleepers now       {}",
                s.gate_sleepers.max(asleep as u32)
            )),
        ];
        if let Some(r) = &app.report {
            let g = &r.gate;
            l.extend([
                Line::from(format!("acquisitions  {}", g.acquisitions)),
                Line::from(format!("bypasses      {}", g.bypasses)),
                Line::from(format!("early returns {}", g.early_returns)),
                Line::from(format!("sleeps {} wake-ups {}", g.sleeps, g.wakeups)),
                Line::from(format!("refs_newer exits {}", g.refs_newer_exits)),
            ]);
        } else {
            l.push(Line::from("(totals at the end)"));
        }
        l
    };
    let title = if app.gated() { "Seed gate" } else { "Gate" };
    f.render_widget(Paragraph::new(lines).block(panel(title)), area);
}

fn draw_latency(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let b = &app.snap.run_calls;
    let n: u64 = b.iter().sum();
    let title = match &app.report {
        Some(r) => format!(
            "Run calls: {} (p50 {}, p99 {})",
            r.run_calls.count,
            ns(r.run_calls.p50_ns),
            ns(r.run_calls.p99_ns)
        ),
        None => format!("Run-call latency: {n} calls"),
    };
    let block = panel(title);
    let inner = block.inner(area);
    let (Some(first), Some(last)) = (
        b.iter().position(|&c| c > 0),
        b.iter().rposition(|&c| c > 0),
    ) else {
        f.render_widget(
            Paragraph::new("no btrfs_run_delayed_refs calls yet").block(block),
            area,
        );
        return;
    };
    let fit = (inner.width as usize / 5).max(1);
    let group = (last - first + 1).div_ceil(fit);
    let bars: Vec<Bar> = (first..=last)
        .step_by(group)
        .map(|i| {
            let v: u64 = b[i..(i + group).min(b.len())].iter().sum();
            Bar::default()
                .value(v)
                .label(Line::from(bucket_label(i)))
                .text_value(si(v as f64))
        })
        .collect();
    let chart = BarChart::default()
        .block(block)
        .data(BarGroup::default().bars(&bars))
        .bar_width(4)
        .bar_gap(1)
        .bar_style(Style::default().fg(Color::Magenta));
    f.render_widget(chart, area);
}

fn draw_threads(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let s = &app.snap;
    let virt = app.engine == Engine::Virtual;
    let noun = if virt { "CPUs" } else { "Threads" };
    let block = panel(format!("{noun}: {}", state_counts(&s.threads)));
    let room = block.inner(area).height.saturating_sub(1) as usize;
    let last = if virt {
        "time: work █ spin ▓ switch ▒ sleep ░ idle ·"
    } else {
        ""
    };
    let header = Row::new([
        if virt { "cpu" } else { "thread" },
        "state",
        "refs run",
        "ops",
        "time waiting",
        "spinning",
        last,
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let bar_width = area.width.saturating_sub(75).clamp(10, 60) as usize;
    let shown = if s.threads.len() > room {
        room.saturating_sub(1)
    } else {
        s.threads.len()
    };
    let mut rows: Vec<Row> = s
        .threads
        .iter()
        .take(shown)
        .enumerate()
        .map(|(i, t)| thread_row(i, t, virt.then_some(bar_width)))
        .collect();
    if shown < s.threads.len() {
        rows.push(Row::new([
            String::new(),
            format!("+{} more", s.threads.len() - shown),
        ]));
    }
    let t = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(20),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(13),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(block);
    f.render_widget(t, area);
}

/// "3 running, 1 spinning, …": how many threads or CPUs are in each state, in the order
/// the states first appear.
fn state_counts(threads: &[ThreadSnapshot]) -> String {
    let mut counts: Vec<(ThreadState, usize)> = Vec::new();
    for t in threads {
        match counts.iter_mut().find(|(st, _)| *st == t.state) {
            Some(c) => c.1 += 1,
            None => counts.push((t.state, 1)),
        }
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(st, n)| format!("{n} {}", st.name().label))
        .collect();
    summary.join(", ")
}

/// Thread or CPU `i`'s row; `bar_width` for a virtual CPU's time-split bar.
fn thread_row(i: usize, t: &ThreadSnapshot, bar_width: Option<usize>) -> Row<'static> {
    Row::new([
        Cell::from(format!("{i:>3}")),
        Cell::from(t.state.name().label).style(state_style(t.state)),
        Cell::from(t.refs_run.to_string()),
        Cell::from(t.ops_done.to_string()),
        Cell::from(ns(t.waiting_ns())),
        Cell::from(ns(t.spin_ns)),
        Cell::from(bar_width.map_or_else(Line::default, |w| split_bar(t, w))),
    ])
}

/// A virtual CPU's time so far as a bar of `width` cells: work, spinning, switching,
/// sleeping, idle, each in proportion (largest remainders get the leftover cells).
fn split_bar(t: &ThreadSnapshot, width: usize) -> Line<'static> {
    const PARTS: [(char, Color); 5] = [
        ('█', Color::Green),
        ('▓', Color::Red),
        ('▒', Color::Magenta),
        ('░', Color::Yellow),
        ('·', Color::DarkGray),
    ];
    let total: u64 = t.cpu_time.iter().sum();
    if total == 0 {
        return Line::default();
    }
    let exact: Vec<f64> = t
        .cpu_time
        .iter()
        .map(|&v| v as f64 * width as f64 / total as f64)
        .collect();
    let mut cells: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..5).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let short = width.saturating_sub(cells.iter().sum());
    for &i in order.iter().take(short) {
        cells[i] += 1;
    }
    Line::from(
        PARTS
            .iter()
            .zip(cells)
            .filter(|(_, n)| *n > 0)
            .map(|((c, col), n)| Span::styled(c.to_string().repeat(n), Style::default().fg(*col)))
            .collect::<Vec<_>>(),
    )
}

fn draw_footer(f: &mut Frame, area: Rect, app: &ReplayApp) {
    let text = match (&app.report, app.stopping, app.snap.paused) {
        (Some(_), _, _) => "finished: press any key to leave and print the report".to_string(),
        (None, true, _) => "stopping: workers finish their current operation…".to_string(),
        (None, false, true) => "PAUSED · p resume · q quit (partial report)".to_string(),
        (None, false, false) => "q quit (partial report) · p pause".to_string(),
    };
    f.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// How the live phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The engine returned by itself.
    Finished,
    /// `q`/Ctrl-C: the run was cancelled.
    Quit,
}

/// Redraws every [`FRAME`] until `finished()`, handling `q` (cancel) and `p` (pause).
pub fn run(
    tui: &mut Tui,
    app: &mut ReplayApp,
    live: &Live,
    started: Instant,
    finished: &dyn Fn() -> bool,
) -> io::Result<Ended> {
    loop {
        app.update(live.snapshot(), started.elapsed(), live.paused_seconds());
        tui.terminal.draw(|f| draw(f, app))?;
        if finished() {
            return Ok(if app.stopping {
                Ended::Quit
            } else {
                Ended::Finished
            });
        }
        let next = Instant::now() + FRAME;
        while let Some(k) = next_key(next.saturating_duration_since(Instant::now()))? {
            match k {
                Key::Quit => {
                    live.stop_here();
                    app.stopping = true;
                }
                Key::Pause if !app.stopping => live.pause(!live.is_paused()),
                _ => {}
            }
            if Instant::now() >= next {
                break;
            }
        }
    }
}

/// Shows the final numbers until a key is pressed.
pub fn hold(tui: &mut Tui, app: &mut ReplayApp, live: &Live, report: Report) -> io::Result<()> {
    app.update(live.snapshot(), app.elapsed, live.paused_seconds());
    app.report = Some(report);
    loop {
        tui.terminal.draw(|f| draw(f, app))?;
        if next_key(Duration::from_secs(1))?.is_some() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::buffer_text;
    use ratatui::{Terminal, backend::TestBackend};
    use refgate_replay::live::Live;
    use std::sync::atomic::Ordering;

    /// A fixed mid-run state: 4 threads in different states, a queue, run calls, waits.
    fn app(policy: &str) -> ReplayApp {
        let live = Live::new(4);
        live.ops_total.store(1000, Ordering::Relaxed);
        live.transactions_total.store(9, Ordering::Relaxed);
        live.transaction.store(3, Ordering::Relaxed);
        live.queue.num_entries.store(1234, Ordering::Relaxed);
        live.queue.num_heads_ready.store(56, Ordering::Relaxed);
        for (i, st) in [
            ThreadState::RunningRefs,
            ThreadState::Spinning,
            ThreadState::SleepingOnGate,
            ThreadState::WaitingOnHead,
        ]
        .into_iter()
        .enumerate()
        {
            let w = &live.workers[i];
            w.set(st);
            w.add_ops_done(100);
            w.add_refs_run(10 * (i as u64 + 1));
            w.add_waits(WaitRole::DelayedRefsLock, 3, 3_000);
        }
        live.workers[3].add_waits(WaitRole::HeadMutex, 2, 2_000_000);
        live.run_calls.record_n(700, 5); // bucket [512, 1024)
        live.run_calls.record_n(3_000_000, 1);
        live.waits[WaitRole::DelayedRefsLock as usize].record_n(1_000, 12);
        let p = refgate_replay::by_name(policy).unwrap();
        let mut a = ReplayApp::new("sample.bin", p.as_ref(), Engine::Threads, &live);
        a.update(live.snapshot(), Duration::from_secs(1), 0.0);
        for w in &live.workers {
            w.add_refs_run(100);
            w.add_ops_done(100);
        }
        a.update(live.snapshot(), Duration::from_secs(2), 0.0);
        a
    }

    /// A scripted paced virtual replay, fed with an injected clock: 10 s of wall and virtual
    /// time, the longest task thinking 9.5 s, and the ops in a burst — 90 % in the first
    /// second, the rest spread over the sleeps. From 10 % of the run on, the ETA puts the end
    /// within 20 % of 10 s; the ops fraction alone would put it at about 1.1 s.
    #[test]
    fn the_eta_follows_the_virtual_clock_not_the_bursts_of_ops() {
        let live = Live::new(2);
        let total = 10_000u64;
        live.ops_total.store(total, Ordering::Relaxed);
        let p = refgate_replay::by_name("seed").unwrap();
        let mut a = ReplayApp::new("t.bin", p.as_ref(), Engine::Virtual, &live);
        a.virtual_floor_ns = 9_500_000_000;
        let mut done = 0u64;
        for tenth in 1..100u64 {
            let t = tenth as f64 / 10.0; // wall = virtual seconds (paced)
            let want = if t <= 1.0 {
                (0.9 * total as f64 * t) as u64
            } else {
                (0.9 * total as f64 + 0.1 * total as f64 * (t - 1.0) / 9.0) as u64
            };
            live.workers[0].add_ops_done(want - done);
            done = want;
            live.set_virtual_ns((t * 1e9) as u64);
            a.update(live.snapshot(), Duration::from_secs_f64(t), 0.0);
            if t >= 1.0 {
                let end = t + a.eta().expect("mid-run").as_secs_f64();
                assert!(
                    (8.0..=12.0).contains(&end),
                    "at {t} s the ETA ends at {end} s"
                );
            }
        }
        // Real threads have no virtual clock: the ops fraction is the progress.
        let mut th = ReplayApp::new("t.bin", p.as_ref(), Engine::Threads, &live);
        th.update(live.snapshot(), Duration::from_secs(5), 0.0);
        assert!((th.progress() - th.fraction()).abs() < 1e-12);
    }

    fn render(app: &ReplayApp, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        buffer_text(t.backend().buffer())
    }

    #[test]
    fn live_state_shows_every_panel() {
        let a = app("seed");
        let s = render(&a, 160, 48);
        for needle in [
            "refgate replay · sample.bin · policy seed · 4 threads",
            "80.0% · 800/1000 ops · transaction 3/9 · 500 refs run",
            "ETA 0.5s",
            "Throughput: refs/s (now 400",
            "Queue depth: 1234 entries, 56 ready heads",
            "Locks: contended waits (live",
            "delayed_refs->lock",
            "Seed gate",
            "procs_running_refs",
            "Run-call latency: 6 calls",
            "512n",
            "running refs",
            "spinning",
            "sleeping on gate",
            "waiting on head",
            "q quit (partial report) · p pause",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        // The thread table: thread 3 waited 2 ms on a head mutex plus 3 µs on the lock.
        assert!(
            s.lines()
                .any(|l| l.contains("waiting on head") && l.contains("2.00 ms")),
            "{s}"
        );
        // 4 × 3 delayed_refs->lock waits, total 12 µs.
        assert!(
            s.lines()
                .any(|l| l.contains("delayed_refs->lock") && l.contains("12")),
            "{s}"
        );
    }

    #[test]
    fn other_policies_say_there_is_no_gate_and_small_terminals_fit() {
        let a = app("modern");
        let s = render(&a, 80, 24);
        assert!(
            s.contains("no gate under") && s.contains("policy `modern`"),
            "{s}"
        );
        // 24 rows still hold a row per thread (the charts shrink)…
        assert!(s.lines().any(|l| l.contains("waiting on head")), "{s}");
        assert!(!s.contains("more"), "{s}");
        // …22 do not: the table says how many are hidden.
        let s = render(&a, 80, 22);
        assert!(s.contains("+2 more"), "{s}");
    }

    /// The gate panel follows the policy's own gate (a bug once said "no gate" under
    /// seed-throttle, whose name is not "seed").
    #[test]
    fn seed_throttle_shows_its_gate() {
        let a = app("seed-throttle");
        let s = render(&a, 160, 48);
        assert!(
            s.contains("Seed gate") && s.contains("procs_running_refs"),
            "{s}"
        );
        assert!(!s.contains("no gate under"), "{s}");
    }

    #[test]
    fn paused_and_stopping_footers() {
        let mut a = app("pre");
        a.snap.paused = true;
        assert!(render(&a, 120, 40).contains("PAUSED · p resume"));
        a.stopping = true;
        assert!(render(&a, 120, 40).contains("stopping"));
    }

    #[test]
    fn final_state_shows_the_report_numbers() {
        let mut a = app("seed");
        let w = refgate_replay::workload::synthetic(&Default::default());
        let r = refgate_replay::run(
            &w,
            refgate_replay::by_name("seed").unwrap().as_ref(),
            2,
            &Default::default(),
        )
        .unwrap();
        let calls = r.run_calls.count;
        let acq = r.gate.acquisitions;
        a.report = Some(r);
        let s = render(&a, 160, 48);
        assert!(s.contains("press any key"), "{s}");
        assert!(s.contains("(final)"), "{s}");
        assert!(s.contains(&format!("Run calls: {calls} (p50")), "{s}");
        assert!(s.contains(&format!("acquisitions  {acq}")), "{s}");
        assert!(s.contains("· done"), "{s}");
    }
}
