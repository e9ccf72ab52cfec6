//! `refgate compare -o DIR`: one plot per question, each policy a series against the CPU
//! count, as SVG (for the web and mailing lists that take attachments) and PNG (to paste).
//! Drawn with `plotters`; text uses the bundled DejaVu Sans, so no system fonts are needed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::{Point, Sweep};

/// The bundled font (DejaVu Sans, license in `assets/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// One plot: file stem, title, y-axis label, value of a point.
pub struct Metric {
    pub stem: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub value: fn(&Point) -> f64,
}

pub const METRICS: [Metric; 7] = [
    Metric {
        stem: "spin-total",
        title: "CPU burnt spinning on any lock",
        y_label: "spin CPU (ms, summed over CPUs)",
        value: |p| p.cpu_time.spin_ns() as f64 / 1e6,
    },
    Metric {
        stem: "dr-spin",
        title: "CPU burnt spinning on delayed_refs->lock",
        y_label: "spin CPU (ms, summed over CPUs)",
        value: |p| p.delayed_refs_lock_spin_cpu_seconds * 1e3,
    },
    Metric {
        stem: "extent-tree-wait",
        title: "Time waiting for the extent tree (spinning or asleep)",
        y_label: "extent-tree wait (ms, summed over tasks)",
        value: |p| p.extent_tree_wait_seconds * 1e3,
    },
    Metric {
        stem: "makespan",
        title: "Makespan: virtual time to replay the workload",
        y_label: "makespan (virtual ms)",
        value: |p| p.virtual_seconds * 1e3,
    },
    Metric {
        stem: "throughput",
        title: "Throughput",
        y_label: "refs run per virtual second",
        value: |p| p.refs_per_virtual_second,
    },
    Metric {
        stem: "run-call-p99",
        title: "btrfs_run_delayed_refs call latency, p99",
        y_label: "p99 latency (virtual µs)",
        value: |p| p.run_call_p99_ns as f64 / 1e3,
    },
    Metric {
        stem: "gate-sleeps",
        title: "Sleeps on the seed gate's wait queue",
        y_label: "sleeps",
        value: |p| p.gate_sleeps as f64,
    },
];

const COLORS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

const SIZE: (u32, u32) = (960, 600);

/// Writes every metric as `DIR/<stem>.svg` and `DIR/<stem>.png`; returns the files.
pub fn write_all(s: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the plot directory {}", dir.display()))?;
    // Registering twice (a second sweep in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let mut files = Vec::new();
    for m in &METRICS {
        let svg = dir.join(format!("{}.svg", m.stem));
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), s, m)
            .with_context(|| format!("cannot draw {}", svg.display()))?;
        let png = dir.join(format!("{}.png", m.stem));
        draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), s, m)
            .with_context(|| format!("cannot draw {}", png.display()))?;
        files.extend([svg, png]);
    }
    Ok(files)
}

/// The CPU counts of the sweep, as the x axis's ticks.
fn cpu_ticks(s: &Sweep) -> Vec<f64> {
    let mut v: Vec<f64> = s.points.iter().map(|p| p.cpus as f64).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// An axis label: SI-prefixed from 1000 up, else up to two decimals without trailing zeros.
fn axis_number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        return crate::units::si(v);
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The sweep's policies, in the order of their first point.
fn policies_in(s: &Sweep) -> Vec<&str> {
    let mut policies: Vec<&str> = Vec::new();
    for p in &s.points {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    policies
}

/// The two grey lines under a chart: where the trace came from and the cost model.
fn draw_footer<DB: DrawingBackend>(
    footer: &DrawingArea<DB, plotters::coord::Shift>,
    s: &Sweep,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    let costs: Vec<String> = s
        .cost_model
        .iter()
        .map(|c| format!("{} {}", c.name, c.ns))
        .collect();
    for (i, line) in [
        format!(
            "recorded on {}; {} tasks × {} replicas; engine {} (sim seed {}); extent tree: {}, {} locks",
            s.kernel, s.recorded_tasks, s.replicas, s.engine, s.sim_seed, s.extent_tree, s.extent_lock
        ),
        format!("cost model (virtual ns): {}", costs.join(", ")),
    ]
    .into_iter()
    .enumerate()
    {
        footer
            .draw(&Text::new(
                line,
                (14, 4 + 20 * i as i32),
                ("sans-serif", 13).into_font().color(&RGBColor(80, 80, 80)),
            ))
            .map_err(err)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    s: &Sweep,
    m: &Metric,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (body, footer) = root.split_vertically(SIZE.1 - 46);
    let policies = policies_in(s);
    let xs = s.points.iter().map(|p| p.cpus as f64);
    let (xmin, xmax) = xs.fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let ymax = s
        .points
        .iter()
        .map(|p| (m.value)(p))
        .fold(0f64, f64::max)
        .max(1e-9);
    let mut chart = ChartBuilder::on(&body)
        .caption(
            format!("{} — {}", m.title, s.trace_name()),
            ("sans-serif", 20).into_font(),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d(
            (xmin * 0.9..xmax * 1.1)
                .log_scale()
                .with_key_points(cpu_ticks(s)),
            0f64..ymax * 1.08,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("virtual CPUs")
        .y_desc(m.y_label)
        .x_label_formatter(&|x| format!("{}", x.round()))
        .y_label_formatter(&|y| axis_number(*y))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, policy) in policies.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.policy == *policy)
            .map(|p| (p.cpus as f64, (m.value)(p)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(*policy)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    draw_footer(&footer, s)?;
    root.present().map_err(err)?;
    Ok(())
}
