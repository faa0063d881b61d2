//! PNG plots of a run: `loss.png` (training loss by step) and `validation.png`
//! (validation accuracy by step, with its 95% interval), redrawn as training goes.
//!
//! Text is drawn with a TrueType font found at run time (the caller's
//! [`prefer_font_file`], which `siamese-cli` takes from `$SIAMESE_PLOT_FONT`, else
//! DejaVu Sans or Liberation Sans in the usual Linux folders, else Arial on macOS and
//! Windows). Without one the plots are drawn without text. A plot that fails is a
//! warning, never the end of training (the trainer logs [`draw_plots`]'s error).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::MetricLine;
use crate::run::write_atomic;

/// What the drawing functions draw on: an RGB buffer of [`SIZE`].
type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const FONT: &str = "sans-serif";

/// Candidate font files, in order of preference.
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// A TrueType font file to try before the usual system fonts (set once, before the
/// first plot).
static PREFERRED_FONT: OnceLock<PathBuf> = OnceLock::new();

/// Makes the plots try the TrueType font `path` first (before the first plot is
/// drawn; later calls and calls after a plot change nothing).
pub fn prefer_font_file(path: PathBuf) {
    let _ = PREFERRED_FONT.set(path);
}

/// Registers a font for the plots' text, once per process; whether one was found.
pub fn text_available() -> bool {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let preferred = PREFERRED_FONT.get().cloned();
            let candidates = preferred
                .into_iter()
                .chain(FONT_FILES.iter().map(PathBuf::from));
            for path in candidates {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    tracing::debug!("plots use the font {}", path.display());
                    return Some(path);
                }
            }
            tracing::warn!(
                "no TrueType font found for the plots' text (set SIAMESE_PLOT_FONT to a .ttf file); \
                 plots are drawn without text"
            );
            None
        })
        .is_some()
}

/// Draws `loss.png` and `validation.png` into `dir` from `lines` (each written to a
/// temporary file and renamed). Returns the files written.
pub fn draw_plots(dir: &Path, lines: &[MetricLine]) -> Result<Vec<PathBuf>, String> {
    let text = text_available();
    let mut written = Vec::new();
    let loss: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|l| match l {
            MetricLine::Train { step, loss, .. } if loss.is_finite() => Some((*step as f64, *loss)),
            _ => None,
        })
        .collect();
    if !loss.is_empty() {
        let path = dir.join("loss.png");
        atomic_png(&path, |root| draw_loss(root, &loss, text))?;
        written.push(path);
    }
    let val: Vec<(f64, f64, f64, f64)> = lines
        .iter()
        .filter_map(|l| match l {
            MetricLine::Validation {
                step,
                accuracy,
                ci95_low,
                ci95_high,
                ..
            } => Some((*step as f64, *accuracy, *ci95_low, *ci95_high)),
            _ => None,
        })
        .collect();
    if !val.is_empty() {
        let path = dir.join("validation.png");
        atomic_png(&path, |root| draw_validation(root, &val, text))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws into an RGB buffer, encodes it as PNG and writes it into place atomically
/// (see [`write_atomic`]).
fn atomic_png(
    path: &Path,
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(&root).map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    let image = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| failed(&"buffer size"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| failed(&e))?;
    write_atomic(path, png.get_ref()).map_err(|e| failed(&e))
}

const SIZE: (u32, u32) = (900, 540);

/// x range with a little room; never empty.
fn x_range(points: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = points.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if hi > lo {
        lo..hi
    } else {
        (lo - 1.0)..(lo + 1.0)
    }
}

fn draw_loss(
    root: &Canvas<'_>,
    points: &[(f64, f64)],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let xs = x_range(points.iter().map(|p| p.0));
    let y_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.05;
    let mut builder = ChartBuilder::on(root);
    builder.margin(15);
    if text {
        builder
            .caption("training loss", (FONT, 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(xs, 0.0..y_max)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .label_style((FONT, 14))
            .draw()?;
    } else {
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()?;
    }
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        RGBColor(150, 170, 220).stroke_width(1),
    ))?;
    // A moving average (window of ~2% of the points) on top of the raw losses.
    let w = (points.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let slice = &points[lo..=i];
            (
                points[i].0,
                slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
            )
        })
        .collect();
    chart.draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))?;
    Ok(())
}

fn draw_validation(
    root: &Canvas<'_>,
    points: &[(f64, f64, f64, f64)],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let xs = x_range(points.iter().map(|p| p.0));
    let mut builder = ChartBuilder::on(root);
    builder.margin(15);
    if text {
        builder
            .caption(
                "validation: 20-way one-shot accuracy (95% interval)",
                (FONT, 22),
            )
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(xs, 0.0..1.0)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("accuracy")
            .label_style((FONT, 14))
            .draw()?;
    } else {
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()?;
    }
    // Chance level of a 20-way trial.
    let (x0, x1) = (chart.x_range().start, chart.x_range().end);
    chart.draw_series(LineSeries::new(
        [(x0, 0.05), (x1, 0.05)],
        RGBColor(200, 200, 200),
    ))?;
    let band = RGBColor(255, 140, 0).mix(0.25);
    for &(x, _, lo, hi) in points {
        chart.draw_series(LineSeries::new([(x, lo), (x, hi)], band.stroke_width(3)))?;
    }
    chart.draw_series(LineSeries::new(
        points.iter().map(|p| (p.0, p.1)),
        RGBColor(220, 90, 0).stroke_width(2),
    ))?;
    chart.draw_series(
        points
            .iter()
            .map(|p| Circle::new((p.0, p.1), 3, RGBColor(220, 90, 0).filled())),
    )?;
    Ok(())
}

/// Validation accuracy against minutes of training, one point per validation: the
/// training time of a validation is that of the last train line at or before its
/// step (`elapsed_s`, which counts every invocation of a resumed run).
pub fn validation_by_minutes(lines: &[MetricLine]) -> Vec<(f64, f64)> {
    let mut seconds = 0.0;
    let mut points = Vec::new();
    for line in lines {
        match line {
            MetricLine::Train { elapsed_s, .. } => seconds = *elapsed_s,
            MetricLine::Validation { accuracy, .. } => points.push((seconds / 60.0, *accuracy)),
        }
    }
    points
}

/// Draws the learning curves of several runs into one PNG at `path` (written
/// atomically): validation accuracy against minutes of training, one coloured line
/// per `(label, metrics)` run, the y axis from the lowest accuracy shown.
pub fn draw_curves(path: &Path, runs: &[(String, Vec<MetricLine>)]) -> Result<(), String> {
    let text = text_available();
    let curves: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(label, lines)| (label.as_str(), validation_by_minutes(lines)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if curves.is_empty() {
        return Err("no validation lines in the runs' metrics".into());
    }
    atomic_png(path, |root| {
        root.fill(&WHITE)?;
        let all = curves.iter().flat_map(|(_, p)| p.iter());
        let xs = x_range(all.clone().map(|p| p.0));
        let y_min = all.map(|p| p.1).fold(1.0f64, f64::min);
        let y_lo = ((y_min * 10.0).floor() / 10.0).clamp(0.0, 0.9);
        let mut builder = ChartBuilder::on(root);
        builder.margin(15);
        if text {
            builder
                .caption("validation: 20-way one-shot accuracy", (FONT, 22))
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(xs, y_lo..1.0)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("minutes of training")
                .y_desc("accuracy")
                .label_style((FONT, 14))
                .draw()?;
        } else {
            chart.configure_mesh().x_labels(0).y_labels(0).draw()?;
        }
        for (i, (label, points)) in curves.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let series = chart.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?;
            if text {
                series
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_are_placed_at_the_training_time_of_their_step() {
        let train = |step: u64, elapsed_s: f64| MetricLine::Train {
            step,
            epoch: 0,
            loss: 0.5,
            lr: 1e-3,
            momentum: None,
            pairs_per_s: 1.0,
            elapsed_s,
        };
        let val = |step: u64, accuracy: f64| MetricLine::Validation {
            step,
            epoch: 0,
            accuracy,
            ci95_low: 0.0,
            ci95_high: 1.0,
            correct: 1,
            trials: 2,
            ties: 0,
            best: false,
            seconds: 0.1,
        };
        let lines = [
            val(0, 0.1),
            train(10, 60.0),
            val(10, 0.5),
            train(20, 150.0),
            val(20, 0.7),
        ];
        assert_eq!(
            validation_by_minutes(&lines),
            [(0.0, 0.1), (1.0, 0.5), (2.5, 0.7)]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        draw_curves(&path, &[("a".into(), lines.to_vec())]).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), SIZE);
        assert!(draw_curves(&path, &[("b".into(), vec![train(1, 1.0)])]).is_err());
    }

    #[test]
    fn plots_are_written_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        for s in 1..=40u64 {
            lines.push(MetricLine::Train {
                step: s,
                epoch: s / 10,
                loss: 1.0 / s as f64,
                lr: 1e-4,
                momentum: None,
                pairs_per_s: 10.0,
                elapsed_s: s as f64,
            });
            if s % 10 == 0 {
                lines.push(MetricLine::Validation {
                    step: s,
                    epoch: s / 10,
                    accuracy: 0.1 * (s / 10) as f64,
                    ci95_low: 0.05,
                    ci95_high: 0.5,
                    correct: 1,
                    trials: 20,
                    ties: 0,
                    best: true,
                    seconds: 1.0,
                });
            }
        }
        let written = draw_plots(dir.path(), &lines).unwrap();
        assert_eq!(written.len(), 2);
        for p in written {
            let img = image::open(&p).unwrap();
            assert_eq!((img.width(), img.height()), SIZE);
        }
        if !text_available() {
            eprintln!("warning: no font found, the plots were drawn without text");
        }
        // A single point draws too.
        draw_plots(dir.path(), &lines[..1]).unwrap();
    }
}
