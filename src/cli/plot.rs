//! `crema plot LOG... -o curves.png`: training curves from Caffe's or crema's logs, as a PNG
//! with two panels: loss against iterations (training loss as a solid line in a lighter shade,
//! test losses dashed with markers) and test accuracy against iterations. Each log gets one
//! colour, and the legend names its file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::logparse::{parse_log_file, MetricKind, ParsedLog, Point};
use crate::util::glog::fmt_g_prec;

/// The picture's size in pixels.
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 1000;

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE-DejaVu.txt`); plotters draws text
/// with it so that the binary needs no system fonts.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// One colour per log (the "tab10" palette without its grey).
const PALETTE: [(u8, u8, u8); 9] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
];

/// The colour of the `i`-th log (its test curves; its training loss is drawn in `tint` of it).
pub fn log_colour(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

/// A lighter shade of a log's colour for its training loss, a noisy line that would otherwise
/// hide the test curves drawn over it.
pub fn tint((r, g, b): (u8, u8, u8)) -> (u8, u8, u8) {
    let t = |c: u8| (c as f64 + (255.0 - c as f64) * 0.4).round() as u8;
    (t(r), t(g), t(b))
}

/// How the loss axis is scaled: `Auto` takes a log scale when every loss is positive and the
/// largest is at least 20 times the smallest (a first test loss of 80 next to training losses
/// of 1 would flatten everything else on a linear axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossScale {
    Auto,
    Linear,
    Log,
}

impl std::str::FromStr for LossScale {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LossScale::Auto),
            "linear" => Ok(LossScale::Linear),
            "log" => Ok(LossScale::Log),
            _ => bail!("loss scale must be auto, linear or log, not '{s}'"),
        }
    }
}

pub struct PlotArgs {
    pub logs: Vec<PathBuf>,
    pub output: PathBuf,
    pub title: Option<String>,
    pub loss_scale: LossScale,
}

/// One curve as drawn: its legend label, colour, and the pixel of each finite point.
#[derive(Debug, Clone)]
pub struct DrawnSeries {
    pub label: String,
    pub colour: (u8, u8, u8),
    pub pixels: Vec<(i32, i32)>,
}

/// One panel: the pixel rectangle of its plotting area (inside the axes: `x0..x1`, `y0..y1`,
/// absolute in the picture) and its curves.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub area: (i32, i32, i32, i32),
    pub log_scale: bool,
    pub series: Vec<DrawnSeries>,
}

/// What was drawn: the loss panel, then the accuracy panel.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub width: u32,
    pub height: u32,
    pub panels: Vec<Panel>,
}

/// Parses every log (any that has no recognisable line is an error naming it) and draws them.
pub fn run_plot(args: &PlotArgs) -> Result<Rendered> {
    if args.logs.is_empty() {
        bail!("no log files given");
    }
    let mut logs = Vec::with_capacity(args.logs.len());
    for path in &args.logs {
        logs.push(parse_log_file(path)?);
    }
    let names = display_names(&args.logs);
    let named: Vec<(String, ParsedLog)> = names.into_iter().zip(logs).collect();
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| "Training curves".to_string());
    render(&named, &args.output, &title, args.loss_scale)
}

/// Each log's name in the legend: its file name, or the path as given where two logs share a
/// file name.
pub fn display_names(paths: &[PathBuf]) -> Vec<String> {
    let file_name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    paths
        .iter()
        .map(|p| {
            let name = file_name(p);
            if paths.iter().filter(|q| file_name(q) == name).count() > 1 {
                p.display().to_string()
            } else {
                name
            }
        })
        .collect()
}

fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded font could not be loaded"))
    }
}

fn draw_err<E: std::fmt::Display>(output: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{}: drawing failed: {e}", output.display())
}

/// One curve to draw, before drawing.
struct Curve {
    label: String,
    colour: (u8, u8, u8),
    /// 0 for a training curve (solid, no markers); k > 0 for the k-th test curve of its log
    /// (dashed, with markers that differ between a log's test curves).
    test_index: usize,
    points: Vec<(f64, f64)>,
}

/// The points to draw, by iteration: NaN and infinite values are left out, and so are values
/// beyond 1e300 (Caffe's floats stop at 3.4e38; such a number is garbage, and would overflow
/// the axis arithmetic).
fn finite_sorted(points: &[Point]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.value.abs() <= 1e300)
        .map(|p| (p.iter as f64, p.value))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The curves of one panel: the training loss (loss panel only, in the log's tint) and every
/// test output of the panel's kind (in the log's colour), for every log.
fn curves(logs: &[(String, ParsedLog)], kind: MetricKind) -> Vec<Curve> {
    let mut out = Vec::new();
    for (i, (name, log)) in logs.iter().enumerate() {
        let colour = log_colour(i);
        if kind == MetricKind::Loss && !log.train_loss.is_empty() {
            out.push(Curve {
                label: format!("{name}: train loss"),
                colour: tint(colour),
                test_index: 0,
                points: finite_sorted(&log.train_loss),
            });
        }
        let several_nets = log.test_outputs.iter().any(|s| s.net != 0);
        for (k, s) in log.test_series(kind).enumerate() {
            let net = if several_nets {
                format!(" (test net #{})", s.net)
            } else {
                String::new()
            };
            out.push(Curve {
                label: format!("{name}: test {}{net}", s.name),
                colour,
                test_index: k + 1,
                points: finite_sorted(&s.points),
            });
        }
    }
    out
}

/// The range `lo..hi` with a margin, never empty.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi <= lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * 0.05;
    (lo - d, hi + d)
}

fn min_max<'a>(values: impl Iterator<Item = &'a f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, &v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Draws the two panels into `output` (PNG or JPEG, by its extension).
pub fn render(
    logs: &[(String, ParsedLog)],
    output: &Path,
    title: &str,
    scale: LossScale,
) -> Result<Rendered> {
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        bail!(
            "{}: the output must be a .png (or .jpg) file",
            output.display()
        );
    }
    register_font()?;
    let loss = curves(logs, MetricKind::Loss);
    let acc = curves(logs, MetricKind::Accuracy);

    // One iteration axis for both panels, so that they line up.
    let all_x: Vec<f64> = loss
        .iter()
        .chain(&acc)
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .collect();
    let (x0, x1) = match min_max(all_x.iter()) {
        Some((lo, hi)) if hi > lo => (lo, hi),
        Some((lo, _)) => (lo - 1.0, lo + 1.0),
        None => (0.0, 1.0),
    };

    let err = draw_err(output);
    let root = BitMapBackend::new(output, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let body = root.titled(title, (FAMILY, 28)).map_err(&err)?;
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2);

    let loss_values: Vec<f64> = loss
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .collect();
    let log_scale = match (scale, min_max(loss_values.iter())) {
        (LossScale::Log, Some((lo, _))) => lo > 0.0,
        (LossScale::Auto, Some((lo, hi))) => lo > 0.0 && hi / lo >= 20.0,
        _ => false,
    };
    let loss_panel = if log_scale {
        let (lo, hi) = min_max(loss_values.iter()).unwrap();
        // A margin of 5% of the range either way in log space (a factor of 2 for one value).
        let f = if hi / lo > 1.0 + 1e-9 {
            (hi / lo).powf(0.05)
        } else {
            2.0
        };
        let (lo, hi) = (lo / f, hi * f);
        draw_panel(
            &top,
            "Loss",
            "loss (log scale)",
            (x0, x1),
            (lo..hi).log_scale(),
            true,
            &loss,
            SeriesLabelPosition::UpperRight,
            &err,
        )?
    } else {
        let (lo, hi) = min_max(loss_values.iter())
            .map(|(a, b)| padded(a, b))
            .unwrap_or((0.0, 1.0));
        draw_panel(
            &top,
            "Loss",
            "loss",
            (x0, x1),
            lo..hi,
            false,
            &loss,
            SeriesLabelPosition::UpperRight,
            &err,
        )?
    };
    let acc_values: Vec<f64> = acc
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .collect();
    let (lo, hi) = match min_max(acc_values.iter()) {
        Some((lo, hi)) if lo >= 0.0 && hi <= 1.0 => (0.0, 1.0),
        Some((lo, hi)) => padded(lo, hi),
        None => (0.0, 1.0),
    };
    let acc_panel = draw_panel(
        &bottom,
        "Test accuracy",
        "accuracy",
        (x0, x1),
        lo..hi,
        false,
        &acc,
        SeriesLabelPosition::LowerRight,
        &err,
    )?;
    root.present().map_err(&err)?;
    Ok(Rendered {
        width: WIDTH,
        height: HEIGHT,
        panels: vec![loss_panel, acc_panel],
    })
}

#[allow(clippy::too_many_arguments)]
fn draw_panel<'a, Y, F>(
    area: &DrawingArea<BitMapBackend<'a>, Shift>,
    caption: &str,
    y_desc: &str,
    (x0, x1): (f64, f64),
    y_spec: Y,
    log_axis: bool,
    curves: &[Curve],
    legend_at: SeriesLabelPosition,
    err: &F,
) -> Result<Panel>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    F: Fn(DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>) -> anyhow::Error,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y_spec)
        .map_err(err)?;
    // plotters labels a log axis at its powers of 10 (and, over less than a decade or two, at
    // some values between them, which can collide with the powers). Over a decade or more this
    // labels exactly 1x, 2x and 5x each power of 10 instead.
    let r = chart.y_range();
    let (lo, hi) = (r.start.min(r.end), r.start.max(r.end));
    let decades = log_axis && lo > 0.0 && hi / lo >= 10.0;
    // Over more than four decades the powers of 10 are enough.
    let minor_labels = decades && hi / lo <= 1e4;
    let y_fmt = move |y: &f64| {
        let power_of_ten = (y.log10() - y.log10().round()).abs() < 1e-9;
        if decades && !power_of_ten {
            String::new()
        } else {
            fmt_g_prec(*y, 4)
        }
    };
    chart
        .configure_mesh()
        .x_desc("iterations")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(err)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let base = area.get_base_pixel();
    if minor_labels {
        let style =
            TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for k in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
            for m in [2.0, 5.0] {
                let v = m * 10f64.powi(k);
                if v > lo && v < hi {
                    let (_, py) = chart.backend_coord(&(x0, v));
                    let at = (xr.start - 10 - base.0, py - base.1);
                    area.draw(&Text::new(fmt_g_prec(v, 4), at, &style))
                        .map_err(err)?;
                    let tick = vec![
                        (xr.start - 5 - base.0, py - base.1),
                        (xr.start - base.0, py - base.1),
                    ];
                    area.draw(&PathElement::new(tick, BLACK)).map_err(err)?;
                }
            }
        }
    }
    let mut panel = Panel {
        title: caption.to_string(),
        area: (xr.start, yr.start, xr.end, yr.end),
        log_scale: log_axis,
        series: Vec::new(),
    };
    if curves.iter().all(|c| c.points.is_empty()) {
        let what = if caption == "Loss" {
            "no loss values"
        } else {
            "no accuracy outputs"
        };
        let centre = (
            (xr.start + xr.end) / 2 - base.0,
            (yr.start + yr.end) / 2 - base.1,
        );
        let style = TextStyle::from((FAMILY, 18).into_font())
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(
            format!("({what} in these logs)"),
            centre,
            &style,
        ))
        .map_err(err)?;
        return Ok(panel);
    }
    for c in curves {
        let colour = RGBColor(c.colour.0, c.colour.1, c.colour.2);
        let pts = c.points.clone();
        let anno =
            if c.test_index == 0 {
                chart
                    .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(err)?
            } else {
                chart
                    .draw_series(DashedLineSeries::new(
                        pts.clone(),
                        8,
                        5,
                        colour.stroke_width(2),
                    ))
                    .map_err(err)?;
                // Markers tell a log's test curves apart: circles, triangles, squares, diamonds.
                let shape = marker_shape((c.test_index - 1) % 4);
                chart
                    .draw_series(pts.iter().map(|&p| {
                        EmptyElement::at(p) + Polygon::new(shape.clone(), colour.filled())
                    }))
                    .map_err(err)?
            };
        let test = c.test_index > 0;
        let marker = c.test_index.saturating_sub(1) % 4;
        // The legend's sample: a solid line for training, a dashed line with the curve's
        // marker for a test curve (the same element type either way, since plotters' dynamic
        // elements would need a 'static backend).
        let line = colour.stroke_width(2);
        type Points = Vec<(i32, i32)>;
        let (first, second, shape): (Points, Points, Points) = if test {
            (
                vec![(0, 0), (6, 0)],
                vec![(14, 0), (20, 0)],
                marker_shape(marker)
                    .into_iter()
                    .map(|(a, b)| (a + 10, b))
                    .collect(),
            )
        } else {
            // A training curve's "marker" is a dot on its own line.
            (
                vec![(0, 0), (20, 0)],
                vec![(0, 0), (20, 0)],
                vec![(9, -1), (11, -1), (11, 1), (9, 1)],
            )
        };
        anno.label(c.label.clone()).legend(move |p| {
            EmptyElement::at(p)
                + PathElement::new(first.clone(), line)
                + PathElement::new(second.clone(), line)
                + Polygon::new(shape.clone(), colour.filled())
        });
        panel.series.push(DrawnSeries {
            label: c.label.clone(),
            colour: c.colour,
            pixels: c.points.iter().map(|p| chart.backend_coord(p)).collect(),
        });
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .margin(10)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(err)?;
    Ok(panel)
}

/// A marker's outline around (0, 0), in pixels: 0 circle, 1 triangle, 2 square, 3 diamond.
fn marker_shape(kind: usize) -> Vec<(i32, i32)> {
    match kind {
        0 => (0..16)
            .map(|i| {
                let a = i as f64 * std::f64::consts::TAU / 16.0;
                (
                    (4.5 * a.cos()).round() as i32,
                    (4.5 * a.sin()).round() as i32,
                )
            })
            .collect(),
        1 => vec![(0, -5), (5, 4), (-5, 4)],
        2 => vec![(-4, -4), (4, -4), (4, 4), (-4, 4)],
        _ => vec![(0, -5), (5, 0), (0, 5), (-5, 0)],
    }
}
