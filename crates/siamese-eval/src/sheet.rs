//! A picture of a few trials: each row shows the query, then the candidates, with
//! the true class framed in green and a wrong choice framed in red (a correct choice
//! is the green one; a tie or NaN leaves no choice).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::EvalError;
use crate::protocol::TrialSet;
use crate::runner::EvalReport;

const FRAME: u32 = 3;
const GAP: u32 = 6;
const QUERY_GAP: u32 = 24;
const TRUTH: Rgb<u8> = Rgb([30, 160, 60]);
const WRONG: Rgb<u8> = Rgb([210, 40, 40]);
const QUERY: Rgb<u8> = Rgb([40, 90, 200]);
const PAPER: Rgb<u8> = Rgb([255, 255, 255]);
const MARGIN_COLOUR: Rgb<u8> = Rgb([235, 235, 235]);

/// Which trials a sheet shows: up to `rows`, half of them (or more, if correct ones
/// run out) the first wrong trials, the rest the first correct ones, in trial order.
pub fn pick_trials(report: &EvalReport, rows: usize) -> Vec<usize> {
    let wrong: Vec<usize> = (0..report.records.len())
        .filter(|&i| !report.records[i].correct)
        .collect();
    let right: Vec<usize> = (0..report.records.len())
        .filter(|&i| report.records[i].correct)
        .collect();
    let n_wrong = rows.div_ceil(2).min(wrong.len());
    let n_right = (rows - n_wrong).min(right.len());
    let n_wrong = (rows - n_right).min(wrong.len());
    let mut picked: Vec<usize> = wrong[..n_wrong]
        .iter()
        .chain(&right[..n_right])
        .copied()
        .collect();
    picked.sort_unstable();
    picked
}

/// Draws the trials [`pick_trials`] chooses. Each class shows its first example. The
/// report must come from [`crate::evaluate`] on `set` with `keep_trials`.
pub fn draw_sheet(
    set: &TrialSet<'_>,
    report: &EvalReport,
    rows: usize,
) -> Result<RgbImage, EvalError> {
    if report.records.is_empty() {
        return Err(EvalError::Invalid(
            "the report keeps no trials to draw (evaluate with keep_trials)".into(),
        ));
    }
    let picked = pick_trials(report, rows);
    let first = set
        .images
        .first()
        .ok_or_else(|| EvalError::Invalid("no images".into()))?;
    let (w, h) = (first.image.width() as u32, first.image.height() as u32);
    let cell_w = w + 2 * FRAME;
    let cell_h = h + 2 * FRAME;
    let way = picked
        .iter()
        .map(|&i| report.records[i].candidates.len())
        .max()
        .unwrap_or(0) as u32;
    let width = GAP + cell_w + QUERY_GAP + way * (cell_w + GAP);
    let height = GAP + picked.len() as u32 * (cell_h + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, MARGIN_COLOUR);
    for (row, &t) in picked.iter().enumerate() {
        let record = &report.records[t];
        let y = GAP + row as u32 * (cell_h + GAP);
        paste(&mut sheet, set, record.query, GAP, y, Some(QUERY))?;
        for (c, examples) in record.candidates.iter().enumerate() {
            let x = GAP + cell_w + QUERY_GAP + c as u32 * (cell_w + GAP);
            let frame = if c == record.answer {
                Some(TRUTH)
            } else if record.choice == Some(c) {
                Some(WRONG)
            } else {
                None
            };
            let id = *examples.first().ok_or_else(|| {
                EvalError::Invalid(format!("trial {t}: a class without examples"))
            })?;
            paste(&mut sheet, set, id, x, y, frame)?;
        }
    }
    Ok(sheet)
}

/// Draws a sheet and writes it as a PNG, atomically (a temporary file beside `path`,
/// then a rename).
pub fn save_sheet(
    set: &TrialSet<'_>,
    report: &EvalReport,
    rows: usize,
    path: &Path,
) -> Result<(), EvalError> {
    let sheet = draw_sheet(set, report, rows)?;
    let failed = |e: &dyn std::fmt::Display| {
        EvalError::Invalid(format!("cannot write {}: {e}", path.display()))
    };
    if path.file_name().is_none() {
        return Err(EvalError::Invalid(format!(
            "{} is not a file name",
            path.display()
        )));
    }
    let mut png = std::io::Cursor::new(Vec::new());
    sheet
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| failed(&e))?;
    // The atomic-write-file crate, like every file this workspace writes: the old
    // sheet or the new one, never part of one.
    let write = || -> std::io::Result<()> {
        let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
        std::io::Write::write_all(&mut file, png.get_ref())?;
        file.commit()
    };
    write().map_err(|e| failed(&e))?;
    Ok(())
}

/// Copies image `id` of the set into the sheet at (x, y), ink dark on white paper,
/// inside a frame of `frame` colour (or plain paper).
fn paste(
    sheet: &mut RgbImage,
    set: &TrialSet<'_>,
    id: usize,
    x: u32,
    y: u32,
    frame: Option<Rgb<u8>>,
) -> Result<(), EvalError> {
    let img = set
        .images
        .get(id)
        .ok_or_else(|| EvalError::Invalid(format!("image id {id} is not in the trial set")))?
        .image;
    let (w, h) = (img.width() as u32, img.height() as u32);
    let border = frame.unwrap_or(PAPER);
    for dy in 0..h + 2 * FRAME {
        for dx in 0..w + 2 * FRAME {
            let inside = (FRAME..FRAME + w).contains(&dx) && (FRAME..FRAME + h).contains(&dy);
            let colour = if inside {
                let ink = img.get((dx - FRAME) as usize, (dy - FRAME) as usize);
                let v = 255 - ink;
                Rgb([v, v, v])
            } else {
                border
            };
            if x + dx < sheet.width() && y + dy < sheet.height() {
                sheet.put_pixel(x + dx, y + dy, colour);
            }
        }
    }
    Ok(())
}
