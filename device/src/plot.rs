//! `vcramctl plot`: the recorded timeline (CSV of [`Sample`]s) drawn over time with plotters,
//! as PNG (bitmap backend) or SVG: the ratio; physical use against the capacity and the
//! watermarks; the pressure level; discards per second.
//!
//! Text is drawn with a TrueType font loaded at run time (ab_glyph, no fontconfig): DejaVu Sans
//! from Debian's `fonts-dejavu-core`, or the file named by `VCRAM_PLOT_FONT`.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::timeline::Sample;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 1100;
const FONT: &str = "sans-serif";
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Read a CSV written by `vcramctl record`.
pub fn read_csv(path: &Path) -> Result<Vec<Sample>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut v = Vec::new();
    for (i, row) in r.deserialize::<Sample>().enumerate() {
        v.push(row.map_err(|e| format!("{}: row {}: {e}", path.display(), i + 2))?);
    }
    if v.is_empty() {
        return Err(format!(
            "{}: no samples (a header at most); record longer than one interval",
            path.display()
        ));
    }
    Ok(v)
}

fn load_font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let mut candidates: Vec<String> = Vec::new();
            if let Ok(f) = std::env::var("VCRAM_PLOT_FONT") {
                candidates.push(f);
            }
            candidates.extend(FONT_FILES.iter().map(|s| s.to_string()));
            for f in &candidates {
                if let Ok(bytes) = std::fs::read(f) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    return plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                        .map_err(|_| format!("{f}: not a TrueType font"));
                }
            }
            Err(format!(
                "no font to draw text with: none of {} exists (install fonts-dejavu-core, which \
                 scripts/setup does, or set VCRAM_PLOT_FONT to a .ttf file)",
                candidates.join(", ")
            ))
        })
        .clone()
}

/// Draw `samples` into `out`; the format follows the extension (.png or .svg).
pub fn plot(samples: &[Sample], out: &Path, title: &str) -> Result<(), String> {
    if samples.is_empty() {
        return Err("no samples to plot".into());
    }
    load_font()?;
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, samples, title)?;
            root.present()
                .map_err(|e| format!("cannot write {}: {e}", out.display()))
        }
        Some("svg") => {
            let root = SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, samples, title)?;
            root.present()
                .map_err(|e| format!("cannot write {}: {e}", out.display()))
        }
        _ => Err(format!(
            "{}: the output must end in .png or .svg",
            out.display()
        )),
    }
}

const MIB: f64 = (1u64 << 20) as f64;
/// The ratio's colour (purple; physical use is blue).
pub const RATIO: RGBColor = RGBColor(120, 0, 200);

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing failed: {e}")
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// How a y axis writes its labels: how many, and the text of a value.
type Labels<'f> = (usize, &'f dyn Fn(&f64) -> String);

/// The y axis of a panel: its range, and its labels (`None`: plain numbers, plotters' default
/// count).
struct YAxis<'f> {
    range: std::ops::Range<f64>,
    labels: Option<Labels<'f>>,
}

impl YAxis<'_> {
    fn plain(max: f64) -> Self {
        YAxis {
            range: 0.0..max,
            labels: None,
        }
    }
}

/// One panel over `0..t_end` seconds: its caption, and a mesh with the time axis.
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    t_end: f64,
    y: YAxis<'_>,
) -> Result<Chart<'a, DB>, String>
where
    DB::ErrorType: 'static,
{
    let mut c = ChartBuilder::on(area)
        .caption(caption, (FONT, 20).into_font())
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_end, y.range)
        .map_err(err)?;
    {
        let mut mesh = c.configure_mesh();
        mesh.x_desc("seconds").label_style((FONT, 16).into_font());
        if let Some((n, f)) = y.labels {
            mesh.y_labels(n).y_label_formatter(f);
        }
        mesh.draw().map_err(err)?;
    }
    Ok(c)
}

/// The legend's sample of a line.
fn key(color: RGBColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
}

fn legend<'a, DB: DrawingBackend + 'a>(
    c: &mut Chart<'a, DB>,
    at: SeriesLabelPosition,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    c.configure_series_labels()
        .label_font((FONT, 16).into_font())
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(at)
        .draw()
        .map_err(err)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &[Sample],
    title: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let t0 = s[0].unix_ms;
    let t = |x: &Sample| x.unix_ms.saturating_sub(t0) as f64 / 1000.0;
    let t_end = t(s.last().unwrap_or(&s[0])).max(1.0);
    let root = root.titled(title, (FONT, 26).into_font()).map_err(err)?;
    let panels = root.split_evenly((4, 1));

    // 1. compression ratio
    {
        let ymax = s.iter().map(|x| x.ratio).fold(1.0f64, f64::max) * 1.15;
        let ratio_label = |v: &f64| format!("{v:.1}x");
        let mut c = panel(
            &panels[0],
            "compression ratio (original / compressed)",
            t_end,
            YAxis {
                range: 0.0..ymax,
                labels: Some((10, &ratio_label)),
            },
        )?;
        // Only where the device holds compressed data: one line per such stretch.
        let runs = s
            .split(|x| x.compressed_bytes == 0)
            .filter(|r| !r.is_empty());
        for (i, run) in runs.enumerate() {
            let series = c
                .draw_series(LineSeries::new(
                    run.iter().map(|x| (t(x), x.ratio)),
                    RATIO.stroke_width(2),
                ))
                .map_err(err)?;
            if i == 0 {
                series.label("ratio").legend(key(RATIO, 2));
            }
        }
        legend(&mut c, SeriesLabelPosition::LowerRight)?;
    }

    // 2. physical use against the capacity and the watermarks
    {
        let cap = s.iter().map(|x| x.physical_capacity).max().unwrap_or(0) as f64 / MIB;
        let used_max = s.iter().map(|x| x.physical_used).max().unwrap_or(0) as f64 / MIB;
        let ymax = cap.max(used_max).max(1.0) * 1.08;
        let mut c = panel(
            &panels[1],
            "physical use (MiB) against the capacity and the watermarks",
            t_end,
            YAxis::plain(ymax),
        )?;
        let level = |x: &Sample, pct: u32| x.physical_capacity as f64 * pct as f64 / 100.0 / MIB;
        type Series<'a> = (&'a str, RGBColor, Box<dyn Fn(&Sample) -> f64>);
        let lines: [Series; 4] = [
            (
                "capacity",
                BLACK,
                Box::new(|x: &Sample| x.physical_capacity as f64 / MIB),
            ),
            (
                "high watermark",
                RED,
                Box::new(move |x: &Sample| level(x, x.high_watermark)),
            ),
            (
                "low watermark",
                RGBColor(230, 140, 0),
                Box::new(move |x: &Sample| level(x, x.low_watermark)),
            ),
            (
                "physical used",
                BLUE,
                Box::new(|x: &Sample| x.physical_used as f64 / MIB),
            ),
        ];
        // Before a frontend connects the device reports no capacity: nothing to draw there.
        let known: Vec<&Sample> = s.iter().filter(|x| x.physical_capacity > 0).collect();
        for (name, color, f) in lines {
            let w = if name == "physical used" { 2 } else { 1 };
            c.draw_series(LineSeries::new(
                known.iter().map(|x| (t(x), f(x))),
                color.stroke_width(w),
            ))
            .map_err(err)?
            .label(name)
            .legend(key(color, w));
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)?;
    }

    // 3. pressure level
    {
        let level_name = |v: &f64| {
            match v.round() as i64 {
                0 => "normal",
                1 => "low",
                2 => "high",
                _ => "",
            }
            .to_string()
        };
        let mut c = panel(
            &panels[2],
            "pressure level",
            t_end,
            YAxis {
                range: -0.2..2.3,
                labels: Some((3, &level_name)),
            },
        )?;
        // A step line: the level holds until the next sample.
        let mut pts = Vec::with_capacity(s.len() * 2);
        for (i, x) in s.iter().enumerate() {
            let y = x.pressure_level as f64;
            if i > 0 {
                pts.push((t(x), s[i - 1].pressure_level as f64));
            }
            pts.push((t(x), y));
        }
        c.draw_series(LineSeries::new(pts, RED.stroke_width(2)))
            .map_err(err)?;
    }

    // 4. discards per second (between consecutive samples of one session)
    {
        let mut pts = vec![(t(&s[0]), 0.0)];
        for w in s.windows(2) {
            let dt = (t(&w[1]) - t(&w[0])).max(1e-3);
            let d = if w[1].session == w[0].session {
                w[1].discard_pages.saturating_sub(w[0].discard_pages)
            } else {
                w[1].discard_pages
            };
            pts.push((t(&w[1]), d as f64 / dt));
        }
        let ymax = pts.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
        let mut c = panel(
            &panels[3],
            "discards (pages per second)",
            t_end,
            YAxis::plain(ymax),
        )?;
        c.draw_series(LineSeries::new(pts, GREEN.stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}
