//! `refgate compare -o DIR`: one plot per question, each policy a series against the CPU
//! count, as SVG (for the web and mailing lists that take attachments) and PNG (to paste).
//! Drawn with `plotters`; text uses the bundled DejaVu Sans, so no system fonts are needed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::{Point, Sweep};

/// The bundled font (DejaVu Sans, license in `assets/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// What a plot's values are, which decides the unit its axis is labelled in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Seconds: the axis shows ns, µs, ms or s, whichever reads best for its range.
    Seconds,
    /// A plain number (counts, rates): SI-prefixed from 10 000 up.
    Number,
}

/// One plot: file stem, title, the caption saying what it shows, the y-axis label (with `{}`
/// where the unit goes for [`Quantity::Seconds`]), and the value of a point.
pub struct Metric {
    pub stem: &'static str,
    pub title: &'static str,
    pub caption: &'static str,
    pub y_label: &'static str,
    pub quantity: Quantity,
    pub value: fn(&Point) -> f64,
}

pub const METRICS: [Metric; 7] = [
    Metric {
        stem: "spin-total",
        title: "CPU burnt spinning on any lock",
        caption: "Lower is better: CPU time spent spinning on a lock instead of working, summed over all CPUs.",
        y_label: "spin CPU ({}, summed over CPUs)",
        quantity: Quantity::Seconds,
        value: |p| p.cpu_time.spin_ns() as f64 / 1e9,
    },
    Metric {
        stem: "dr-spin",
        title: "CPU burnt spinning on delayed_refs->lock",
        caption: "Lower is better: the spinning on the delayed-ref queue's spinlock alone, summed over all CPUs.",
        y_label: "spin CPU ({}, summed over CPUs)",
        quantity: Quantity::Seconds,
        value: |p| p.delayed_refs_lock_spin_cpu_seconds,
    },
    Metric {
        stem: "extent-tree-wait",
        title: "Time waiting for the extent tree (spinning or asleep)",
        caption: "Lower is better: time tasks waited for extent-tree block locks, spinning or asleep, summed over tasks.",
        y_label: "extent-tree wait ({}, summed over tasks)",
        quantity: Quantity::Seconds,
        value: |p| p.extent_tree_wait_seconds,
    },
    Metric {
        stem: "makespan",
        title: "Makespan: virtual time to replay the workload",
        caption: "Lower is better: how long the whole workload took, its last commit included.",
        y_label: "makespan (virtual {})",
        quantity: Quantity::Seconds,
        value: |p| p.virtual_seconds,
    },
    Metric {
        stem: "throughput",
        title: "Throughput",
        caption: "Higher is better: delayed refs run per second of virtual time.",
        y_label: "refs run per virtual second",
        quantity: Quantity::Number,
        value: |p| p.refs_per_virtual_second,
    },
    Metric {
        stem: "run-call-p99",
        title: "btrfs_run_delayed_refs call latency, p99",
        caption: "Lower is better: 99 % of btrfs_run_delayed_refs calls returned within this time.",
        y_label: "p99 latency (virtual {})",
        quantity: Quantity::Seconds,
        value: |p| p.run_call_p99_ns as f64 / 1e9,
    },
    Metric {
        stem: "gate-sleeps",
        title: "Sleeps on the seed gate's wait queue",
        caption: "Callers the 3.9 gate put to sleep until the running refs made progress (seed only).",
        y_label: "sleeps",
        quantity: Quantity::Number,
        value: |p| p.gate_sleeps as f64,
    },
];

/// The unit a time axis whose largest value is `max_s` seconds reads best in, and its
/// factor from seconds.
fn time_unit(max_s: f64) -> (&'static str, f64) {
    if max_s >= 1.0 {
        ("s", 1.0)
    } else if max_s >= 1e-3 {
        ("ms", 1e3)
    } else if max_s >= 1e-6 {
        ("µs", 1e6)
    } else {
        ("ns", 1e9)
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

const SIZE: (u32, u32) = (960, 600);
/// The legend's column, right of the chart.
const LEGEND_WIDTH: u32 = 150;

/// Writes every metric as `DIR/<stem>.svg` and `DIR/<stem>.png`; returns the files.
pub fn write_all(s: &Sweep, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the plot directory {}", dir.display()))?;
    // Registering twice (a second sweep in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let mut files = Vec::new();
    for m in &METRICS {
        // Drawn in memory and written by us, so that a write's error (a full disk) is the
        // `io::Error` itself, not plotters' rendering of it.
        let svg = dir.join(format!("{}.svg", m.stem));
        let mut text = String::new();
        draw(
            SVGBackend::with_string(&mut text, SIZE).into_drawing_area(),
            s,
            m,
        )
        .with_context(|| format!("cannot draw {}", svg.display()))?;
        write_plot(&svg, text.as_bytes())?;
        let png = dir.join(format!("{}.png", m.stem));
        let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
        draw(
            BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(),
            s,
            m,
        )
        .with_context(|| format!("cannot draw {}", png.display()))?;
        write_plot(&png, &encode_png(&rgb)?)?;
        files.extend([svg, png]);
    }
    Ok(files)
}

/// Writes one plot file; a failed write leaves no partial file behind.
fn write_plot(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| {
        let _ = std::fs::remove_file(path);
        anyhow::Error::new(e).context(format!("cannot write the plot {}", path.display()))
    })
}

/// An RGB buffer of [`SIZE`] as a PNG file's bytes.
fn encode_png(rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut w = enc.write_header().context("cannot encode a PNG plot")?;
    w.write_image_data(rgb)
        .context("cannot encode a PNG plot")?;
    w.finish().context("cannot encode a PNG plot")?;
    Ok(out)
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

/// A cost's name in words, for the footer.
fn cost_words(name: &str) -> &str {
    match name {
        "add_ref" => "queueing a ref",
        "walk_node" => "walking a queue node",
        "select_ref" => "selecting a ref",
        "run_ref" => "running a ref (extent-tree update)",
        "delete_head" => "deleting a head",
        "context_switch" => "a context switch",
        "wakeup" => "a wake-up",
        other => other,
    }
}

/// The grey lines under a chart, in words: where the trace came from, how the tree was
/// locked, and what each step costs; wrapped to the plot's width.
fn footer_lines(s: &Sweep) -> Vec<String> {
    let costs: Vec<String> = s
        .cost_model
        .iter()
        .map(|c| format!("{} {} ns", cost_words(c.name), c.ns))
        .collect();
    let locks = match s.extent_lock {
        "spin" => "spinning (3.x kind) under every policy",
        "sleep" => "sleeping (5.11+ rw_semaphore) under every policy",
        _ => "spinning under the 3.x policies and sleeping under modern, as each era's kernel",
    };
    let tree = match s.extent_tree {
        "single" => "one lock for the whole extent tree",
        _ => "the extent tree as a B-tree of per-block locks",
    };
    let text = [
        format!(
            "Recorded on {}; {} tasks × {} replicas at every point; {} engine, sim seed {}; {tree}, its locks {locks}.",
            s.kernel, s.recorded_tasks, s.replicas, s.engine, s.sim_seed
        ),
        format!(
            "Costs charged per step (virtual time): {}.",
            costs.join(", ")
        ),
    ];
    text.iter().flat_map(|t| wrap(t, FOOTER_CHARS)).collect()
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// Characters of the footer's 13-px text that fit the plot's width.
const FOOTER_CHARS: usize = 145;

fn draw_footer<DB: DrawingBackend>(
    footer: &DrawingArea<DB, plotters::coord::Shift>,
    lines: &[String],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    for (i, line) in lines.iter().enumerate() {
        footer
            .draw(&Text::new(
                line.as_str(),
                (14, 4 + 18 * i as i32),
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
    let lines = footer_lines(s);
    let (top, rest) = root.split_vertically(64);
    let (body, footer) = rest.split_vertically(SIZE.1 - 64 - 10 - 18 * lines.len() as u32);
    // The legend has a column of its own, right of the data, so it never covers a point.
    let (plot, legend) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    top.draw(&Text::new(
        format!("{} — {}", m.title, s.trace_name()),
        (14, 10),
        ("sans-serif", 20).into_font(),
    ))
    .map_err(err)?;
    top.draw(&Text::new(
        m.caption,
        (14, 38),
        ("sans-serif", 14).into_font().color(&RGBColor(60, 60, 60)),
    ))
    .map_err(err)?;
    let policies = policies_in(s);
    let xs = s.points.iter().map(|p| p.cpus as f64);
    let (xmin, xmax) = xs.fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let raw_max = s.points.iter().map(|p| (m.value)(p)).fold(0f64, f64::max);
    let (unit, scale) = match m.quantity {
        Quantity::Seconds => time_unit(raw_max),
        Quantity::Number => ("", 1.0),
    };
    let y_label = m.y_label.replace("{}", unit);
    let ymax = (raw_max * scale).max(1e-9);
    let mut chart = ChartBuilder::on(&plot)
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
        .y_desc(y_label)
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
            .map(|p| (p.cpus as f64, (m.value)(p) * scale))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
        let y = 30 + 26 * i as i32;
        legend
            .draw(&PathElement::new(
                vec![(8, y), (32, y)],
                color.stroke_width(2),
            ))
            .map_err(err)?;
        legend
            .draw(&Circle::new((20, y), 4, color.filled()))
            .map_err(err)?;
        legend
            .draw(&Text::new(
                policy.to_string(),
                (40, y - 8),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(err)?;
    }
    draw_footer(&footer, &lines)?;
    root.present().map_err(err)?;
    Ok(())
}
