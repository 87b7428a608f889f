//! The benchmark's plots: SVG drawn from what one `scripts/bench` run measured, written to
//! [`DIR`] beside `BENCHMARKS.md` and embedded in it. Drawing is pure (figures in, SVG text
//! out), so each plot is unit-tested without running anything.

use std::time::Duration;

use anyhow::Context as _;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Where the plots go, relative to the repository's root (beside `BENCHMARKS.md`).
pub const DIR: &str = "benchmarks";

/// The staleness distribution per cache mode (main part).
pub const STALENESS_CDF: &str = "staleness-cdf.svg";
/// Throughput per cache mode (main part).
pub const THROUGHPUT: &str = "throughput.svg";
/// SQS and SNS calls per task against fleet size (fleet part).
pub const FLEET_CALLS: &str = "fleet-calls.svg";
/// The staleness distribution per fleet size (fleet part).
pub const FLEET_STALENESS_CDF: &str = "fleet-staleness-cdf.svg";

/// The staleness-over-time plot of the fault row named `slug` (faults part).
#[must_use]
pub fn fault_file(slug: &str) -> String {
    format!("fault-{slug}.svg")
}

/// Every plot's size in pixels.
pub const SIZE: (u32, u32) = (820, 480);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const BOUND_COLOR: RGBColor = RGBColor(214, 39, 40);

/// One named series of durations, e.g. the staleness of every write of one mode.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// Legend text.
    pub label: String,
    /// The measurements, sorted ascending.
    pub sorted: Vec<Duration>,
}

/// One bar: a mode's figure, with the rounds it is the median of.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The category under the bar.
    pub label: String,
    /// The bar's height.
    pub value: f64,
    /// Each measurement behind it, drawn as dots on the bar.
    pub rounds: Vec<f64>,
}

/// One named line through `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Draws on an SVG of [`SIZE`] and returns its text.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// The frame every plot shares: its title, margins and room for the axes' labels.
fn frame<'a, 'b>(root: &'a DrawingArea<SVGBackend<'b>, Shift>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 19))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(72);
    builder
}

/// The grid every plot shares: bold lines only (a light line between every two labels makes the
/// SVG ten times larger and the plot no easier to read), readable labels.
fn mesh<'a, 'b, X: Ranged, Y: Ranged>(
    mesh: &'b mut MeshStyle<'a, 'b, X, Y, SVGBackend<'a>>,
) -> &'b mut MeshStyle<'a, 'b, X, Y, SVGBackend<'a>> {
    mesh.light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
}

/// A tick label: whole numbers without decimals, others with one.
fn tick(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// The decade at or below `value` and the one at or above it: a log axis that starts and ends
/// on labelled ticks.
fn decades(low: f64, high: f64) -> (f64, f64) {
    let low = 10f64.powf(low.max(f64::MIN_POSITIVE).log10().floor());
    let high = 10f64.powf(high.max(low).log10().ceil());
    if high > low { (low, high) } else { (low, low * 10.0) }
}

/// The cumulative distribution of each series on a log time axis: how many of the writes were
/// served by every task within x milliseconds.
///
/// # Errors
/// When a series is empty or drawing fails.
pub fn cdf(title: &str, x_desc: &str, series: &[Distribution]) -> anyhow::Result<String> {
    let all = series.iter().flat_map(|one| one.sorted.iter().copied());
    let low = all
        .clone()
        .map(millis)
        .filter(|ms| *ms > 0.0)
        .fold(f64::INFINITY, f64::min);
    let high = all.map(millis).fold(0.0, f64::max);
    anyhow::ensure!(low.is_finite() && high > 0.0, "{title}: nothing to plot");
    let (low, high) = decades(low, high);
    svg(|root| {
        let mut chart = frame(root, title).build_cartesian_2d((low..high).log_scale(), 0f64..100f64)?;
        mesh(&mut chart.configure_mesh())
            .x_desc(x_desc)
            .y_desc("% of writes")
            .x_label_formatter(&|ms| {
                if *ms >= 1_000.0 {
                    format!("{} s", ms / 1_000.0)
                } else {
                    format!("{ms} ms")
                }
            })
            .y_label_formatter(&|percent| format!("{percent:.0} %"))
            .draw()?;
        for (index, one) in series.iter().enumerate() {
            let count = one.sorted.len() as f64;
            let points = one
                .sorted
                .iter()
                .enumerate()
                .map(|(rank, value)| (millis(*value).max(low), (rank + 1) as f64 / count * 100.0));
            draw_line(&mut chart, points, &one.label, index, 0)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

/// Bars on a log axis (figures that differ by orders of magnitude), each with its rounds as dots
/// and its value written above it.
///
/// # Errors
/// When there are no bars, a value is not positive, or drawing fails.
pub fn bars(title: &str, y_desc: &str, bars: &[Bar]) -> anyhow::Result<String> {
    anyhow::ensure!(!bars.is_empty(), "{title}: nothing to plot");
    let values = bars
        .iter()
        .flat_map(|bar| std::iter::once(bar.value).chain(bar.rounds.iter().copied()));
    let low = values.clone().fold(f64::INFINITY, f64::min);
    anyhow::ensure!(low > 0.0, "{title}: a bar is not positive");
    let (low, high) = decades(low / 2.0, values.fold(0.0, f64::max) * 2.0);
    let count = u32::try_from(bars.len()).context("too many bars")?;
    svg(|root| {
        let mut chart = frame(root, title)
            // An integer range is inclusive: `0..count - 1` is `count` slots.
            .build_cartesian_2d((0..count - 1).into_segmented(), (low..high).log_scale())?;
        mesh(&mut chart.configure_mesh())
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&|y| tick(*y))
            .x_label_formatter(&|segment| match segment {
                SegmentValue::CenterOf(index) | SegmentValue::Exact(index) => bars
                    .get(*index as usize)
                    .map(|bar| bar.label.clone())
                    .unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        for (index, bar) in (0..count).zip(bars) {
            let fill = color(index as usize).mix(0.75).filled();
            let right = if index + 1 == count {
                SegmentValue::Last
            } else {
                SegmentValue::Exact(index + 1)
            };
            let mut rectangle = Rectangle::new([(SegmentValue::Exact(index), low), (right, bar.value)], fill);
            rectangle.set_margin(0, 0, 40, 40);
            chart.draw_series(std::iter::once(rectangle))?;
            chart.draw_series(
                bar.rounds
                    .iter()
                    .map(|round| Circle::new((SegmentValue::CenterOf(index), *round), 4, BLACK.filled())),
            )?;
            let above = bar.rounds.iter().copied().fold(bar.value, f64::max) * 1.3;
            chart.draw_series(std::iter::once(Text::new(
                format!("{:.0}", bar.value),
                (SegmentValue::CenterOf(index), above),
                ("sans-serif", 16)
                    .into_font()
                    .into_text_style(root)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
        Ok(())
    })
}

/// Lines through points with markers, on linear axes from zero, and optionally a dashed
/// horizontal goal.
///
/// # Errors
/// When there are no points or drawing fails.
pub fn lines(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
    goal: Option<(&str, f64)>,
) -> anyhow::Result<String> {
    let points = lines.iter().flat_map(|line| line.points.iter().copied());
    anyhow::ensure!(points.clone().next().is_some(), "{title}: nothing to plot");
    let x_high = points.clone().map(|(x, _)| x).fold(0.0, f64::max) * 1.08;
    let y_high = points.map(|(_, y)| y).chain(goal.map(|(_, y)| y)).fold(0.0, f64::max) * 1.15;
    svg(|root| {
        let mut chart = frame(root, title).build_cartesian_2d(0f64..x_high.max(1.0), 0f64..y_high.max(1.0))?;
        mesh(&mut chart.configure_mesh())
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| tick(*y))
            .draw()?;
        for (index, line) in lines.iter().enumerate() {
            draw_line(&mut chart, line.points.iter().copied(), &line.label, index, 4)?;
        }
        if let Some((label, y)) = goal {
            horizontal(&mut chart, label, y, x_high)?;
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        Ok(())
    })
}

/// The `index`th series: a line through `points` (with markers of `point_size`, if any), in the
/// legend as `label`.
fn draw_line<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    points: impl IntoIterator<Item = (X::ValueType, Y::ValueType)>,
    label: &str,
    index: usize,
    point_size: u32,
) -> anyhow::Result<()>
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let style = color(index).stroke_width(2);
    chart
        .draw_series(LineSeries::new(points, style).point_size(point_size))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    Ok(())
}

/// The legend, framed, where it hides the least.
fn legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// A dashed red line across the chart at `y`, in the legend as `label`.
fn horizontal<'a>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    label: &str,
    y: f64,
    x_high: f64,
) -> anyhow::Result<()> {
    let style = BOUND_COLOR.stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new([(0.0, y), (x_high, y)], 10, 6, style))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    Ok(())
}

/// Staleness served over time during a fault: for each reader, the worst staleness it served in
/// each time slot (zero once it serves the new value), with the bound `B` drawn across.
///
/// `series`: per reader, `(time since the fault's first change, worst staleness in that slot)`.
///
/// # Errors
/// When there is nothing to plot or drawing fails.
pub fn timeline(
    title: &str,
    bound: Duration,
    series: &[(String, Vec<(Duration, Duration)>)],
) -> anyhow::Result<String> {
    let lines: Vec<Line> = series
        .iter()
        .map(|(label, points)| Line {
            label: label.clone(),
            points: points
                .iter()
                .map(|(at, stale)| (at.as_secs_f64(), millis(*stale)))
                .collect(),
        })
        .collect();
    anyhow::ensure!(
        lines.iter().any(|line| !line.points.is_empty()),
        "{title}: nothing to plot"
    );
    let x_high = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|(x, _)| *x))
        .fold(bound.as_secs_f64(), f64::max)
        * 1.08;
    let y_high = millis(bound) * 1.2;
    svg(|root| {
        let mut chart = frame(root, title).build_cartesian_2d(0f64..x_high, 0f64..y_high)?;
        mesh(&mut chart.configure_mesh())
            .x_desc("seconds since the renames began (the fault in place)")
            .y_desc("staleness served (ms)")
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (index, line) in lines.iter().enumerate() {
            draw_line(&mut chart, line.points.iter().copied(), &line.label, index, 0)?;
        }
        horizontal(
            &mut chart,
            &format!("B = {} ms", bound.as_millis()),
            millis(bound),
            x_high,
        )?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines drawn in the `index`th series' colour (its curve and its legend mark).
    fn in_color(svg: &str, index: usize) -> usize {
        let RGBColor(red, green, blue) = color(index);
        svg.matches(&format!("stroke=\"#{red:02X}{green:02X}{blue:02X}\""))
            .count()
    }

    /// Whether `svg` has a text element reading `text` (plotters puts it on a line of its own).
    fn has_text(svg: &str, text: &str) -> bool {
        svg.split("<text").skip(1).any(|element| {
            element
                .split_once('>')
                .and_then(|(_, rest)| rest.split_once("</text>"))
                .is_some_and(|(content, _)| content.trim() == text)
        })
    }

    #[test]
    fn a_cdf_draws_one_line_per_series_with_its_label() {
        let series = [
            Distribution {
                label: "event".to_owned(),
                sorted: (1..=100).map(Duration::from_millis).collect(),
            },
            Distribution {
                label: "ttl".to_owned(),
                sorted: (1_900..2_100).map(Duration::from_millis).collect(),
            },
        ];
        let svg = cdf("staleness", "write ack → served", &series).expect("plot");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(has_text(&svg, "event") && has_text(&svg, "ttl"), "{svg}");
        // Each curve and its legend mark.
        assert_eq!(
            (in_color(&svg, 0), in_color(&svg, 1), in_color(&svg, 2)),
            (2, 2, 0),
            "{svg}"
        );
        // The axis spans whole decades around the data: 1 ms to 10 s.
        assert!(has_text(&svg, "1 ms") && has_text(&svg, "10 s"), "{svg}");
    }

    #[test]
    fn nothing_to_plot_is_an_error_not_an_empty_picture() {
        assert!(cdf("t", "x", &[]).is_err());
        assert!(bars("t", "y", &[]).is_err());
        assert!(lines("t", ("x", "y"), &[], None).is_err());
        assert!(timeline("t", Duration::from_secs(3), &[]).is_err());
        let zero = Bar {
            label: "off".to_owned(),
            value: 0.0,
            rounds: vec![],
        };
        assert!(bars("t", "y", &[zero]).is_err());
    }

    #[test]
    fn bars_write_each_value_and_dot_each_round() {
        let svg = bars(
            "throughput",
            "req/s",
            &[
                Bar {
                    label: "event".to_owned(),
                    value: 80_000.0,
                    rounds: vec![79_000.0, 80_000.0, 81_000.0],
                },
                Bar {
                    label: "off".to_owned(),
                    value: 96.0,
                    rounds: vec![96.0],
                },
            ],
        )
        .expect("plot");
        assert!(has_text(&svg, "80000") && has_text(&svg, "96"), "{svg}");
        assert!(has_text(&svg, "event") && has_text(&svg, "off"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
    }

    #[test]
    fn the_bound_is_drawn_across_a_timeline_and_named_in_its_legend() {
        let reader = |label: &str| {
            (
                label.to_owned(),
                (0..30u64)
                    .map(|slot| {
                        let at = Duration::from_millis(slot * 100);
                        (at, if slot < 17 { at } else { Duration::ZERO })
                    })
                    .collect(),
            )
        };
        let svg = timeline(
            "relay hung",
            Duration::from_secs(3),
            &[reader("task 0"), reader("task 1")],
        )
        .expect("plot");
        assert!(has_text(&svg, "B = 3000 ms"), "{svg}");
        assert!(has_text(&svg, "task 0") && has_text(&svg, "task 1"), "{svg}");
        // The y axis reaches past B, so the line is inside the picture.
        assert!(has_text(&svg, "3500"), "{svg}");
    }

    #[test]
    fn lines_draw_the_goal_dashed() {
        let line = Line {
            label: "management calls".to_owned(),
            points: vec![(2.0, 60.0), (10.0, 48.0), (30.0, 52.0)],
        };
        let svg = lines("calls", ("tasks", "per hour"), &[line], Some(("goal ≤ 100", 100.0))).expect("plot");
        assert!(
            has_text(&svg, "goal ≤ 100") && has_text(&svg, "management calls"),
            "{svg}"
        );
        // The dashes are separate segments, in the bound's colour.
        let RGBColor(red, green, blue) = BOUND_COLOR;
        assert!(
            svg.matches(&format!("stroke=\"#{red:02X}{green:02X}{blue:02X}\""))
                .count()
                > 5,
            "{svg}"
        );
    }
}
