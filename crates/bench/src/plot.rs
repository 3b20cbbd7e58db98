//! `plot`: a bench-peers run's figures as two SVG charts, drawn with plotters' SVG backend
//! alone (the SVG names a sans-serif font and the viewer draws the text, so nothing here needs
//! a font or image library).
//!
//! - `throughput.svg`: records/s per workload, Weir beside its peer, on a log scale (the
//!   workloads span about 5,000 to 2,000,000 records/s, so linear bars would hide the fsync
//!   row), with Weir / peer written above each pair.
//! - `latency.svg`: p50, p99 and p99.9 per workload for both systems, in milliseconds on a log
//!   scale. Workloads without latency figures (`consume`) are left out and named in the note
//!   under the chart, which also says what latency at full speed measures.
//!
//! Throughput comes from the run's `summary.json`, latency from its per-run files (see
//! `results`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::results::{self, Peer, Percentiles, RunResults};

/// The throughput chart's file name.
const THROUGHPUT: &str = "throughput.svg";
/// The latency chart's file name.
const LATENCY: &str = "latency.svg";
/// Both charts' size, pixels.
const SIZE: (u32, u32) = (1100, 600);

/// Weir's colour in the throughput chart.
const WEIR: RGBColor = RGBColor(31, 119, 180);
/// JetStream's colour in the throughput chart.
const JETSTREAM: RGBColor = RGBColor(255, 127, 14);
/// The broker-alone figure's colour (the `client` row's peer).
const BROKER_ONLY: RGBColor = RGBColor(127, 127, 127);
/// Weir's p50, p99 and p99.9, light to dark.
const WEIR_SHADES: [RGBColor; 3] = [
    RGBColor(158, 202, 225),
    RGBColor(66, 146, 198),
    RGBColor(8, 69, 148),
];
/// JetStream's p50, p99 and p99.9, light to dark.
const JETSTREAM_SHADES: [RGBColor; 3] = [
    RGBColor(253, 208, 162),
    RGBColor(253, 141, 60),
    RGBColor(217, 72, 1),
];

/// The files `plot` wrote (printed as JSON).
#[derive(Debug, Serialize)]
pub(crate) struct Written {
    /// The throughput chart.
    throughput: PathBuf,
    /// The latency chart.
    latency: PathBuf,
}

/// Reads the bench-peers output directory `dir` and writes `throughput.svg` and `latency.svg`
/// into `out`. Nothing is written when the directory cannot be read.
pub(crate) fn plot(dir: &Path, out: &Path) -> anyhow::Result<Written> {
    let results = results::read(dir)?;
    let throughput_svg = throughput(&results)?;
    let latency_svg = latency(&results)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let written = Written {
        throughput: out.join(THROUGHPUT),
        latency: out.join(LATENCY),
    };
    for (path, svg) in [
        (&written.throughput, throughput_svg),
        (&written.latency, latency_svg),
    ] {
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(written)
}

/// The throughput chart: records/s per workload, Weir beside its peer, log scale.
fn throughput(results: &RunResults) -> anyhow::Result<String> {
    let workloads = &results.workloads;
    let (low, high) = log_bounds(
        workloads
            .iter()
            .flat_map(|w| [w.weir_records_per_sec, w.peer_records_per_sec]),
        // The top quarter for the ratios and the three-line legend.
        0.72,
    );
    let caption = format!(
        "Records/s per workload, Weir beside its peer: bench-peers {}, {}",
        results.name,
        runs_phrase(results)
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let plot_area = with_note(
            &root,
            &[
                "The number above each pair is Weir / peer. The client row's peer is Weir's \
                 broker alone (prebuilt batches): the client's share of the broker's speed."
                    .to_owned(),
            ],
        )?;
        let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
        let mut chart = workload_chart(
            &plot_area,
            &caption,
            &names,
            (low, high),
            short,
            "records/s (log scale)",
        )?;

        chart
            .draw_series(
                workloads
                    .iter()
                    .enumerate()
                    .map(|(i, w)| bar(i, (-0.4, -0.02), low, w.weir_records_per_sec, WEIR)),
            )?
            .label("Weir (weir-client)")
            .legend(swatch(WEIR));
        for (peer, colour) in [
            (Peer::Jetstream, JETSTREAM),
            (Peer::BrokerOnly, BROKER_ONLY),
        ] {
            if !workloads.iter().any(|w| w.peer == peer) {
                continue;
            }
            chart
                .draw_series(
                    workloads
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| w.peer == peer)
                        .map(|(i, w)| bar(i, (0.02, 0.4), low, w.peer_records_per_sec, colour)),
                )?
                .label(peer.label())
                .legend(swatch(colour));
        }
        let above = ("sans-serif", 15)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(workloads.iter().enumerate().map(|(i, w)| {
            let top = w.weir_records_per_sec.max(w.peer_records_per_sec);
            Text::new(
                format!("{:.2}×", w.weir_records_per_sec / w.peer_records_per_sec),
                (i as f64, top * 1.15),
                above.clone(),
            )
        }))?;
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// The latency chart: p50, p99 and p99.9 per workload for both systems, ms on a log scale.
fn latency(results: &RunResults) -> anyhow::Result<String> {
    let (shown, left_out): (Vec<_>, Vec<_>) = results
        .workloads
        .iter()
        .partition(|w| !(w.weir_latency.is_empty() && w.peer_latency.is_empty()));
    let values = shown
        .iter()
        .flat_map(|w| {
            levels(&w.weir_latency)
                .into_iter()
                .chain(levels(&w.peer_latency))
        })
        .flatten();
    // The top third for the six-line legend.
    let (low, high) = log_bounds(values, 0.62);
    let caption = format!(
        "Latency percentiles per workload: bench-peers {}, {}",
        results.name,
        runs_phrase(results)
    );
    let mut note = vec![
        "At full speed latency includes each client's queue (Weir's 1 MiB producer buffer, \
         JetStream's 256 acknowledgements outstanding);"
            .to_owned(),
        "rf3rate and e2e run at a fixed rate that both sustain and compare the systems' latency."
            .to_owned(),
    ];
    if !left_out.is_empty() {
        let names: Vec<&str> = left_out.iter().map(|w| w.name.as_str()).collect();
        if let Some(last) = note.last_mut() {
            last.push_str(&format!(" No latency figures: {}.", names.join(", ")));
        }
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let plot_area = with_note(&root, &note)?;
        let names: Vec<&str> = shown.iter().map(|w| w.name.as_str()).collect();
        let mut chart = workload_chart(
            &plot_area,
            &caption,
            &names,
            (low, high),
            grouped,
            "milliseconds (log scale)",
        )?;

        // Six bars per workload: Weir's three percentiles, then the peer's.
        let width = 0.8 / 6.0;
        let series = [
            ("Weir", false, WEIR_SHADES),
            ("NATS JetStream", true, JETSTREAM_SHADES),
        ];
        for (s, (system, is_peer, shades)) in series.into_iter().enumerate() {
            for (level, shade) in shades.into_iter().enumerate() {
                let slot = (s * 3 + level) as f64;
                let from = -0.4 + slot * width;
                let bars: Vec<_> = shown
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| {
                        let latency = if is_peer {
                            &w.peer_latency
                        } else {
                            &w.weir_latency
                        };
                        let value = levels(latency)[level]?;
                        Some(bar(i, (from, from + width * 0.9), low, value, shade))
                    })
                    .collect();
                if bars.is_empty() {
                    continue;
                }
                let label = format!("{system} {}", LEVELS[level]);
                chart.draw_series(bars)?.label(label).legend(swatch(shade));
            }
        }
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// The frame both charts share, drawn on `area`: `caption` on top, one slot per workload
/// (`names`) along x, a log scale from `low` to `high` along y with labels from `y_label` and
/// the description `y_desc`, and the mesh.
fn workload_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    names: &[&str],
    (low, high): (f64, f64),
    y_label: fn(f64) -> String,
    y_desc: &str,
) -> anyhow::Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<WorkloadAxis, LogCoord<f64>>>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(WorkloadAxis(names.len()), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| name_at(names, *x))
        .x_label_style(("sans-serif", 16))
        .y_label_formatter(&|y| y_label(*y))
        .y_label_style(("sans-serif", 14))
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

/// The series' legend, in the chart's upper right corner.
fn legend<'a, 'b>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<WorkloadAxis, LogCoord<f64>>>,
) -> anyhow::Result<()>
where
    'b: 'a,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The part of `root` above a `note` (one entry per line) written along its bottom edge.
fn with_note<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    note: &[String],
) -> anyhow::Result<DrawingArea<SVGBackend<'a>, Shift>> {
    const LINE: u32 = 20;
    let lines = note.len() as u32;
    let (chart, footer) = root.split_vertically(SIZE.1 - LINE * lines - 8);
    for (i, line) in note.iter().enumerate() {
        footer.draw(&Text::new(
            line.clone(),
            (16, 2 + LINE as i32 * i as i32),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
    }
    Ok(chart)
}

/// The x axis: one slot per workload, centred on 0, 1, ..., with a label at each centre (the
/// bars sit at fractions around it, which a segmented axis cannot place).
struct WorkloadAxis(usize);

impl Ranged for WorkloadAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let fraction = (value - range.start) / (range.end - range.start);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.0.max(1) as f64 - 0.5
    }
}

/// The workload name at x-axis position `x` (its slot's centre).
fn name_at(names: &[&str], x: f64) -> String {
    let slot = x.round();
    if slot < 0.0 {
        return String::new();
    }
    names
        .get(slot as usize)
        .map_or_else(String::new, |n| (*n).to_owned())
}

/// A bar in workload `slot`, spanning `offsets` around its centre, from the axis floor `low`
/// up to `value`.
fn bar(
    slot: usize,
    offsets: (f64, f64),
    low: f64,
    value: f64,
    colour: RGBColor,
) -> Rectangle<(f64, f64)> {
    let x = slot as f64;
    Rectangle::new(
        [(x + offsets.0, low), (x + offsets.1, value.max(low))],
        colour.filled(),
    )
}

/// A legend entry's coloured square.
fn swatch(colour: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled())
}

/// The latency levels a chart shows, in order.
const LEVELS: [&str; 3] = ["p50", "p99", "p99.9"];

/// The figures of `p` at [`LEVELS`].
fn levels(p: &Percentiles) -> [Option<f64>; 3] {
    [p.p50, p.p99, p.p999]
}

/// A log axis from the power of ten at or below the smallest positive value, so high that the
/// largest reaches `fill` of the axis's height (the rest is room for labels and the legend),
/// and at least a decade long; `1..10` when there are no positive values.
fn log_bounds(values: impl Iterator<Item = f64>, fill: f64) -> (f64, f64) {
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    if max == 0.0 {
        return (1.0, 10.0);
    }
    let low = min.log10().floor();
    let decades = ((max.log10() - low) / fill).max(1.0);
    (10f64.powi(low as i32), 10f64.powf(low + decades))
}

/// How many runs each figure is the median of, for a caption.
fn runs_phrase(results: &RunResults) -> String {
    let runs: Vec<usize> = results.workloads.iter().map(|w| w.runs).collect();
    match runs.first() {
        Some(&n) if runs.iter().all(|&r| r == n) => {
            format!("median of {n} run{}", if n == 1 { "" } else { "s" })
        }
        _ => "medians of each workload's runs".to_owned(),
    }
}

/// `v` in at most three significant digits, with k or M for thousands and millions
/// (2,000,000 → `2M`, 150,000 → `150k`, 0.25 → `0.25`): records/s.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", significant(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", significant(v / 1e3))
    } else {
        significant(v)
    }
}

/// `v` in at most three significant digits, thousands grouped (0.5 → `0.5`, 2,000 →
/// `2,000`): milliseconds.
fn grouped(v: f64) -> String {
    if v < 1e3 {
        return significant(v);
    }
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `v` rounded to three significant digits, without trailing zeros.
fn significant(v: f64) -> String {
    let decimals = if v > 0.0 {
        (2 - v.log10().floor() as i32).max(0) as usize
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of every `<text>` element of an SVG, which must be well-formed XML.
    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect()
    }

    #[test]
    fn plot_writes_well_formed_svgs_labelled_with_every_workload() {
        let dir = tempfile::tempdir().expect("temp dir");
        results::tests::write_sample(dir.path());
        let out = dir.path().join("plots");
        let written = plot(dir.path(), &out).expect("plotting the sample");
        assert_eq!(written.throughput, out.join("throughput.svg"));

        let throughput = texts(&std::fs::read_to_string(&written.throughput).expect("read"));
        for name in ["1kib", "consume", "client"] {
            assert!(
                throughput.iter().any(|t| t == name),
                "{name}: {throughput:?}"
            );
        }
        // Weir / peer above each pair, and a legend naming both peers.
        for label in [
            "5.00×",
            "3.00×",
            "0.78×",
            "NATS JetStream",
            "Weir (weir-client)",
        ] {
            assert!(
                throughput.iter().any(|t| t == label),
                "{label}: {throughput:?}"
            );
        }

        let latency = texts(&std::fs::read_to_string(&written.latency).expect("read"));
        for name in ["1kib", "client", "Weir p99.9", "NATS JetStream p50"] {
            assert!(latency.iter().any(|t| t == name), "{name}: {latency:?}");
        }
        // consume has no latency: no slot of its own, named in the note instead.
        assert!(!latency.iter().any(|t| t == "consume"), "{latency:?}");
        assert!(
            latency
                .iter()
                .any(|t| t.ends_with("No latency figures: consume.")),
            "{latency:?}"
        );
    }

    #[test]
    fn plot_of_a_malformed_run_dir_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("summary.json"), "{\"workloads\": 3}").expect("write");
        let err = plot(dir.path(), dir.path()).expect_err("a malformed summary is refused");
        assert!(
            format!("{err:#}").contains("is not a bench-peers summary"),
            "{err:#}"
        );
        assert!(!dir.path().join("throughput.svg").exists());
        assert!(!dir.path().join("latency.svg").exists());
    }

    #[test]
    fn a_run_without_latency_figures_still_gets_both_charts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let consume = r#"{"records_per_sec":1.0,"latency_ms":null}"#;
        for (name, text) in [
            (
                "summary.json",
                r#"{"workloads": {"consume": {"peer": "jetstream", "weir_records_per_sec": 9e5, "peer_records_per_sec": 3e5}}}"#,
            ),
            ("consume-weir.jsonl", consume),
            ("consume-jetstream.jsonl", consume),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let written = plot(dir.path(), dir.path()).expect("plotting");
        let throughput = texts(&std::fs::read_to_string(&written.throughput).expect("read"));
        assert!(throughput.iter().any(|t| t == "consume"), "{throughput:?}");
        let latency = texts(&std::fs::read_to_string(&written.latency).expect("read"));
        assert!(
            latency
                .iter()
                .any(|t| t.ends_with("No latency figures: consume.")),
            "{latency:?}"
        );
    }

    #[test]
    fn axis_labels_are_short_and_the_tallest_bar_leaves_room_above() {
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(150_000.0), "150k");
        assert_eq!(short(4_756.0), "4.76k");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(10.0), "10");
        assert_eq!(grouped(2_000.0), "2,000");
        assert_eq!(grouped(100_000.0), "100,000");
        assert_eq!(grouped(0.5), "0.5");
        // 10^3 up to 10^7, so that 10^6 is at three quarters of the height.
        let (low, high) = log_bounds([4_756.0, 1e6].into_iter(), 0.75);
        assert_eq!(low, 1e3);
        assert!((high.log10() - 7.0).abs() < 1e-9, "{high}");
        // At least a decade.
        assert_eq!(log_bounds([2.0, 3.0].into_iter(), 0.75), (1.0, 10.0));
        assert_eq!(log_bounds(std::iter::empty(), 0.75), (1.0, 10.0));
    }
}
