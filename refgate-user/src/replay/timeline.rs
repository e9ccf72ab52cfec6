//! `refgate replay --timeline FILE`: the replay as Chrome trace-event JSON for Perfetto
//! (ui.perfetto.dev) and chrome://tracing — per virtual CPU (or real thread) a track of what
//! it did (running, spinning — per lock on virtual CPUs —, switching, sleeping per reason,
//! idle), a track of its `btrfs_run_delayed_refs` calls, and the queue depth as a counter.
//! Bounded: the engine keeps at most a million entries and the file says where it stopped.

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Result;
use refgate_replay::{Engine, Report, engine::vcpu::Timeline};
use serde_json::json;

/// Virtual ns → trace-event µs.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Writes `report`'s timeline (when the engine kept one) titled for the trace `name`.
pub fn write_report_timeline(path: &Path, name: &str, report: &Report) -> Result<()> {
    let Some(t) = report.timeline.as_ref() else {
        return Ok(());
    };
    let (unit, clock) = match report.engine {
        Engine::Virtual => (
            "CPU",
            "virtual ns (the replay's virtual time, not the host's)",
        ),
        Engine::Threads => (
            "thread",
            "host ns since the first thread's first state change",
        ),
    };
    let title = format!(
        "refgate replay of {name}: {} on {} {}s ({} engine)",
        report.policy,
        report.threads,
        unit,
        report.engine.name()
    );
    write(path, t, report.threads, &title, unit, clock)
}

/// Metadata: the process's title, and per CPU its track and its run-call track, in order.
fn track_names(cpus: usize, title: &str, unit: &str) -> Vec<serde_json::Value> {
    let mut v = vec![
        json!({"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": title}}),
    ];
    for c in 0..cpus {
        v.push(json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 2 * c, "args": {"name": format!("{unit} {c}")}}));
        v.push(json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 2 * c + 1, "args": {"name": format!("{unit} {c}: run calls")}}));
        v.push(json!({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": 2 * c, "args": {"sort_index": 2 * c}}));
        v.push(json!({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": 2 * c + 1, "args": {"sort_index": 2 * c + 1}}));
    }
    v
}

/// The timeline's slices (per CPU, by start), run calls and queue-depth counter.
fn entries(t: &Timeline) -> impl Iterator<Item = serde_json::Value> + '_ {
    let mut slices = t.slices.clone();
    slices.sort_by_key(|s| (s.0, s.1));
    let mut calls = t.run_calls.clone();
    calls.sort_by_key(|c| (c.0, c.1));
    let slices = slices.into_iter().map(|(cpu, start, dur, name)| {
        let cat = name.split(':').next().unwrap_or(name);
        json!({"ph": "X", "name": name, "cat": cat, "pid": 1, "tid": 2 * cpu, "ts": us(start), "dur": us(dur)})
    });
    let calls = calls.into_iter().map(|(cpu, start, dur)| {
        json!({"ph": "X", "name": "btrfs_run_delayed_refs", "cat": "run", "pid": 1, "tid": 2 * cpu + 1, "ts": us(start), "dur": us(dur)})
    });
    let queue = t.queue.iter().map(|&(ts, entries)| {
        use refgate_common::names::counter;
        json!({"ph": "C", "name": counter::QUEUE_DEPTH.label, "pid": 1, "tid": 0, "ts": us(ts), "args": {counter::NUM_ENTRIES.id: entries}})
    });
    slices.chain(calls).chain(queue)
}

fn write(
    path: &Path,
    t: &Timeline,
    cpus: usize,
    title: &str,
    unit: &str,
    clock: &str,
) -> Result<()> {
    // It names the trace's tasks' CPUs and timing: private like the trace, the invoking
    // user's under sudo (crate::owner); whole or not at all.
    crate::owner::write_private_atomically(path, "the timeline", |o| {
        let mut first = true;
        let mut put = |o: &mut BufWriter<std::fs::File>, v: serde_json::Value| -> Result<()> {
            if !first {
                o.write_all(b",\n")?;
            }
            first = false;
            serde_json::to_writer(&mut *o, &v)?;
            Ok(())
        };
        o.write_all(b"{\"traceEvents\": [\n")?;
        for v in track_names(cpus, title, unit).into_iter().chain(entries(t)) {
            put(o, v)?;
        }
        o.write_all(b"\n],\n\"displayTimeUnit\": \"ns\",\n\"otherData\": ")?;
        serde_json::to_writer(
            &mut *o,
            &json!({
                "title": title,
                "clock": clock,
                "truncated_at_ns": t.truncated_at,
                "cap_entries": t.cap,
            }),
        )?;
        o.write_all(b"}\n")?;
        Ok(())
    })?;
    if let Some(at) = t.truncated_at {
        eprintln!(
            "refgate: the timeline stops at {} (its {}-entry cap); the replay's figures cover the whole run",
            crate::units::ns(at),
            t.cap
        );
    }
    Ok(())
}
