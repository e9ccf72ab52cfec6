//! The probes' in-kernel cost from BPF run-time statistics (`record --probe-cost`): live on
//! the status line and the dashboard, and per program at the end.
//!
//! The kernel keeps `run_time_ns` and `run_cnt` per program while statistics are enabled
//! (`BPF_ENABLE_STATS`). The empty `probe_floor` program is the measurement's own floor and is
//! kept out of refgate's totals.

/// Name of the empty calibration program (refgate-ebpf).
const FLOOR: &str = "probe_floor";

/// Run time and run count of one program so far.
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub ns: u128,
}

impl ProgramCost {
    pub fn per_run(&self) -> f64 {
        self.ns as f64 / self.runs.max(1) as f64
    }
}

/// Every program that ran, and the floor program's cost per run if it ran.
pub fn sample(ebpf: &aya::Ebpf) -> (Vec<ProgramCost>, Option<f64>) {
    let mut programs = Vec::new();
    let mut floor = None;
    for (name, prog) in ebpf.programs() {
        let Ok(info) = prog.info() else { continue };
        let c = ProgramCost {
            name: name.to_string(),
            runs: info.run_count(),
            ns: info.run_time().as_nanos(),
        };
        if c.runs == 0 {
            continue;
        }
        if name == FLOOR {
            floor = Some(c.per_run());
        } else {
            programs.push(c);
        }
    }
    (programs, floor)
}

/// Average ns per run over all of refgate's programs (the "per event" figure).
pub fn average(programs: &[ProgramCost]) -> Option<(f64, u64)> {
    let runs: u64 = programs.iter().map(|p| p.runs).sum();
    let ns: u128 = programs.iter().map(|p| p.ns).sum();
    (runs > 0).then(|| (ns as f64 / runs as f64, runs))
}

/// Prints the per-program table, the average and the floor.
pub fn report(ebpf: &aya::Ebpf) {
    let (programs, floor) = sample(ebpf);
    println!("refgate: in-kernel cost (BPF run-time statistics)");
    println!(
        "  {:<28} {:>10} {:>12} {:>9}",
        "program", "runs", "run time", "ns/run"
    );
    for p in &programs {
        println!(
            "  {:<28} {:>10} {:>10.3}ms {:>9.1}",
            p.name,
            p.runs,
            p.ns as f64 / 1e6,
            p.per_run()
        );
    }
    if let Some((avg, runs)) = average(&programs) {
        println!("  all refgate programs: {avg:.1} ns per event on average ({runs} runs)");
    }
    if let Some(f) = floor {
        let (cat, name) = super::loader::PROBE_FLOOR_TRACEPOINT;
        println!(
            "  measurement floor: an empty program on {cat}:{name} costs {f:.1} ns per run here"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_weights_by_runs() {
        let p = |name: &str, runs, ns| ProgramCost {
            name: name.into(),
            runs,
            ns,
        };
        // 100 runs at 50 ns and 10 runs at 1050 ns: (5000 + 10500) / 110.
        let (avg, runs) = average(&[p("a", 100, 5_000), p("b", 10, 10_500)]).unwrap();
        assert_eq!(runs, 110);
        assert!((avg - 140.909).abs() < 0.01, "{avg}");
        assert!(average(&[]).is_none());
    }
}
