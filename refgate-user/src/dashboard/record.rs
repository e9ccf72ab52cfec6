//! The `refgate record` dashboard: [`draw`] is a pure view of the recorder's one live state,
//! [`RecordState`] (fed every decoded event and a once-a-second tick with the kernel-side
//! counters), beside its ANSI and plain line views in [`crate::record::status`].
use std::collections::VecDeque;

use ratatui::{
    Frame,
    layout::{Constraint, Direction, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Span,
    widgets::{Block, Borders, Paragraph, Row, Sparkline, Table},
};
use refgate_common::event::LockRole;

use crate::record::status::RecordState;
use crate::units::{ns, si};

fn panel(title: impl Into<String>) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" {} ", title.into()),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

fn tail(h: &VecDeque<u64>, w: u16) -> Vec<u64> {
    h.iter()
        .skip(h.len().saturating_sub(w.saturating_sub(2) as usize))
        .copied()
        .collect()
}

pub fn draw(f: &mut Frame, app: &RecordState) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Length(7),
            Constraint::Min(6),
            Constraint::Length(8),
            Constraint::Length(1),
        ])
        .split(f.area());
    draw_head(f, rows[0], app);
    draw_sparklines(f, rows[1], app);
    draw_probes(f, rows[2], app);
    draw_contention(f, rows[3], app);
    let note = app
        .notes
        .last()
        .map(|n| format!(" · {n}"))
        .unwrap_or_default();
    f.render_widget(
        Paragraph::new(format!(
            "q / Ctrl-C stop recording (the trace is kept){note}"
        ))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        rows[4],
    );
}

/// The headline: elapsed time, events, losses (red when any), what was filtered.
fn draw_head(f: &mut Frame, area: Rect, app: &RecordState) {
    let head = format!(
        "{:.0}s · {} events · lost {} · contention filtered (not btrfs) {} · malformed {}{}",
        app.elapsed.as_secs_f64(),
        app.total(),
        app.lost,
        app.contention_not_btrfs,
        app.bad,
        app.cost_ns
            .map(|c| format!(" · in-kernel {c:.0} ns/event"))
            .unwrap_or_default()
    );
    let lost_style = if app.lost > 0 {
        Style::default().fg(Color::Red)
    } else {
        Style::default()
    };
    f.render_widget(
        Paragraph::new(head).style(lost_style).block(panel(format!(
            "refgate record → {} · {} of {} probes attached",
            app.output, app.attached, app.probes
        ))),
        area,
    );
}

/// Events per second and the queue depth estimate, side by side.
fn draw_sparklines(f: &mut Frame, area: Rect, app: &RecordState) {
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    let ev = tail(&app.events_per_sec, mid[0].width);
    f.render_widget(
        Sparkline::default()
            .block(panel(format!(
                "Events/s (now {})",
                si(app.events_per_sec.back().copied().unwrap_or(0) as f64)
            )))
            .data(&ev)
            .style(Style::default().fg(Color::Green)),
        mid[0],
    );
    let q = tail(&app.queue, mid[1].width);
    f.render_widget(
        Sparkline::default()
            .block(panel(format!(
                "Queue depth ≈ {} heads (head adds − heads run)",
                app.queue_estimate()
            )))
            .data(&q)
            .style(Style::default().fg(Color::Cyan)),
        mid[1],
    );
}

fn draw_probes(f: &mut Frame, area: Rect, app: &RecordState) {
    let header = Row::new(["probe", "events/s", "total"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = app
        .per_probe
        .iter()
        .map(|(k, p)| Row::new([k.to_string(), p.rate.to_string(), p.total.to_string()]))
        .collect();
    let t = Table::new(
        rows,
        [
            Constraint::Length(36),
            Constraint::Length(10),
            Constraint::Length(12),
        ],
    )
    .header(header)
    .block(panel("Events per probe"));
    f.render_widget(t, area);
}

fn draw_contention(f: &mut Frame, area: Rect, app: &RecordState) {
    // perf lock contention's columns, by lock role, busiest first.
    let header = Row::new(["contended", "total wait", "max wait", "avg wait", "type"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(app.roles[i].total_ns));
    let rows: Vec<Row> = order
        .into_iter()
        .filter(|&i| app.roles[i].contended > 0)
        .map(|i| {
            let r = app.roles[i];
            Row::new([
                r.contended.to_string(),
                ns(r.total_ns),
                ns(r.max_ns),
                ns(r.total_ns / r.contended.max(1)),
                LockRole::ALL[i].name().label.to_string(),
            ])
        })
        .collect();
    let title = if rows.is_empty() {
        "Top contended locks (none yet)"
    } else {
        "Top contended locks"
    };
    let t = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(20),
        ],
    )
    .header(header)
    .block(panel(title));
    f.render_widget(t, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::buffer_text;
    use crate::record::status::tests::{after_three_commits, commit, ev};
    use ratatui::{Terminal, backend::TestBackend};
    use refgate_common::event::{EventKind, Stats};
    use std::time::Duration;

    fn contention(role: LockRole, wait_ns: u64) -> EventKind {
        EventKind::Contention {
            role,
            lock_addr: 0xffff,
            flags: 0,
            ret: 0,
            wait_ns,
        }
    }

    #[test]
    fn fixed_state_renders_rates_contention_and_queue() {
        let mut app = after_three_commits();
        let commit = commit();
        app.event(&ev(contention(LockRole::HeadMutex, 1_000)));
        app.event(&ev(contention(LockRole::HeadMutex, 3_000)));
        app.event(&ev(contention(LockRole::ExtentTree, 10_000_000)));
        let stats = Stats {
            lost_per_cpu: vec![2, 3],
            contention_not_btrfs: 11,
            ..Default::default()
        };
        app.tick(&stats, Duration::from_secs(1));
        app.event(&ev(commit));
        app.tick(&stats, Duration::from_secs(2));
        app.cost_ns = Some(87.4);
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, &app)).unwrap();
        let s = buffer_text(t.backend().buffer());
        for needle in [
            "refgate record → trace.bin · 9 of 10 probes attached",
            "2s · 7 events · lost 5 · contention filtered (not btrfs) 11 · malformed 0 · in-kernel 87 ns/event",
            "Events/s (now 1)",
            "Queue depth ≈ 0 heads",
            "Events per probe",
            "Top contended locks",
            "q / Ctrl-C stop recording",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in\n{s}");
        }
        // One row per role, busiest (by total wait) first, perf's columns.
        let et = s
            .lines()
            .position(|l| l.contains("extent tree"))
            .expect("extent tree row");
        let hm = s
            .lines()
            .position(|l| l.contains("head->mutex"))
            .expect("head->mutex row");
        assert!(et < hm, "rows are sorted by total wait:\n{s}");
        let row = s.lines().nth(hm).unwrap();
        assert!(
            row.starts_with("│2 ")
                && row.contains("4.00 us")
                && row.contains("3.00 us")
                && row.contains("2.00 us"),
            "{row}"
        );
        assert!(
            !s.contains("delayed_refs->lock"),
            "roles without contention are left out:\n{s}"
        );
        // The commit probe: 1 in the last second, 4 in all.
        let probe = s
            .lines()
            .find(|l| l.contains(commit_name()))
            .expect("probe row");
        assert!(probe.contains(" 1 ") && probe.contains(" 4 "), "{probe}");
    }

    fn commit_name() -> &'static str {
        EventKind::TransactionCommit {
            fs: Default::default(),
            generation: 0,
            root_objectid: 0,
        }
        .probe_name()
    }
}
