//! Lake et al.'s 20 official one-shot runs (`all_runs/run01` … `run20`).
//!
//! Each run folder holds `training/classNN.png` (one example of each of 20 characters
//! of one alphabet), `test/itemNN.png` (20 queries, another drawer's version of each
//! character) and `class_labels.txt`, one line per query: `<test path> <training path>`.
//! Any folder in this format can be loaded, with any number of classes and queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::DataError;
use crate::image::{GrayImage, load_png};
use crate::index::sorted_entries;

/// One run: candidates (one per class), queries, and the true class of each query.
#[derive(Debug, Clone)]
pub struct LakeRun {
    /// Folder name, e.g. `run01`.
    pub name: String,
    pub training_paths: Vec<PathBuf>,
    pub training: Vec<GrayImage>,
    pub test_paths: Vec<PathBuf>,
    pub test: Vec<GrayImage>,
    /// `answers[q]` is the index in `training` of the class of `test[q]`.
    pub answers: Vec<usize>,
}

/// Loads every `run*` folder of `dir`, in sorted order.
pub fn load_runs(dir: &Path) -> Result<Vec<LakeRun>, DataError> {
    let runs: Vec<_> = sorted_entries(dir)?
        .into_iter()
        .filter(|(name, path)| name.starts_with("run") && path.is_dir())
        .collect();
    if runs.is_empty() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            reason: "no run* folders: expected Lake's all_runs layout (run01/class_labels.txt, training/, test/)".into(),
        });
    }
    runs.par_iter()
        .map(|(name, path)| load_run(name, path))
        .collect()
}

fn load_run(name: &str, dir: &Path) -> Result<LakeRun, DataError> {
    let pngs = |sub: &str| -> Result<Vec<PathBuf>, DataError> {
        let files: Vec<_> = sorted_entries(&dir.join(sub))?
            .into_iter()
            .filter(|(n, _)| n.ends_with(".png"))
            .map(|(_, p)| p)
            .collect();
        if files.is_empty() {
            return Err(DataError::Layout {
                path: dir.join(sub),
                reason: "holds no PNG images".into(),
            });
        }
        Ok(files)
    };
    let training_paths = pngs("training")?;
    let test_paths = pngs("test")?;
    let labels_path = dir.join("class_labels.txt");
    let text = std::fs::read_to_string(&labels_path).map_err(|e| DataError::io(&labels_path, e))?;

    let position = |paths: &[PathBuf]| -> HashMap<String, usize> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| (file_name(p), i))
            .collect()
    };
    let training_pos = position(&training_paths);
    let test_pos = position(&test_paths);
    let mut answers = vec![None; test_paths.len()];
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Layout {
            path: labels_path.clone(),
            reason: format!("line {}: {reason}", line_no + 1),
        };
        let mut fields = line.split_whitespace();
        let (Some(test), Some(train), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `<test image> <training image>`".into()));
        };
        let q = *test_pos
            .get(&file_name(Path::new(test)))
            .ok_or_else(|| bad(format!("{test} is not in test/")))?;
        let c = *training_pos
            .get(&file_name(Path::new(train)))
            .ok_or_else(|| bad(format!("{train} is not in training/")))?;
        if answers[q].replace(c).is_some() {
            return Err(bad(format!("{test} is labelled twice")));
        }
    }
    let answers = answers
        .into_iter()
        .zip(&test_paths)
        .map(|(a, p)| {
            a.ok_or_else(|| DataError::Layout {
                path: labels_path.clone(),
                reason: format!("no label for {}", p.display()),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let load_all = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| load_png(p))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(LakeRun {
        name: name.to_string(),
        training: load_all(&training_paths)?,
        test: load_all(&test_paths)?,
        training_paths,
        test_paths,
        answers,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
