//! `metrics.jsonl`: one JSON object per line, `"kind": "train"` (every `log_every`
//! steps) or `"kind": "validation"`.
//!
//! ```text
//! {"kind":"train","step":25,"epoch":0,"loss":0.4213,"lr":0.0001,"pairs_per_s":61.2,"elapsed_s":412.3}
//! {"kind":"validation","step":25,"epoch":0,"accuracy":0.353,"ci95_low":0.304,"ci95_high":0.406,"correct":113,"trials":320,"ties":0,"best":true,"seconds":38.1}
//! ```
//!
//! `step` counts the steps completed; `loss` is the mean over the steps since the
//! previous train line. Lines are appended with one `write` each (a reader never sees
//! half a line); on resume the file is rewritten atomically without the lines after
//! the checkpoint's step, so a resumed run's file reads as an uninterrupted one's.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::run::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MetricLine {
    Train {
        step: u64,
        epoch: u64,
        /// Mean loss over the steps since the previous train line.
        loss: f64,
        /// The learning rate (conv1's for layer-wise SGD).
        lr: f64,
        /// conv1's momentum (SGD only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        momentum: Option<f64>,
        /// Pairs scored per second of step time (sampling, forward, backward, update).
        pairs_per_s: f64,
        /// Seconds since the start of the run (all invocations).
        elapsed_s: f64,
    },
    Validation {
        step: u64,
        epoch: u64,
        accuracy: f64,
        ci95_low: f64,
        ci95_high: f64,
        correct: usize,
        trials: usize,
        /// Trials whose best score was shared (counted wrong): many of them mean the
        /// features have collapsed or saturated.
        #[serde(default)]
        ties: usize,
        /// A new best (the `best` checkpoint was saved).
        best: bool,
        /// Seconds the validation took.
        seconds: f64,
    },
}

impl MetricLine {
    pub fn step(&self) -> u64 {
        match self {
            MetricLine::Train { step, .. } | MetricLine::Validation { step, .. } => *step,
        }
    }
}

/// `x` rounded to 3 decimals, for the figures of metrics and reports.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Reads every line of a metrics file (an absent file has none). A line that does not
/// parse is an error naming the file and the line number.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricLine>, TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io("reading", path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Resume {
                path: path.to_path_buf(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// The metrics file of a run, open for appending.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
    lines: Vec<MetricLine>,
}

impl MetricsLog {
    /// Opens `path`, keeping only the lines up to step `keep_up_to` (all of them for
    /// a fresh run, which has none): the file is rewritten atomically first if any
    /// line goes.
    pub fn open(path: &Path, keep_up_to: u64) -> Result<Self, TrainError> {
        let mut lines = read_metrics(path)?;
        let before = lines.len();
        lines.retain(|l| l.step() <= keep_up_to);
        if lines.len() != before || !path.exists() {
            let mut text = String::new();
            for l in &lines {
                text.push_str(&serde_json::to_string(l).expect("metric serialises"));
                text.push('\n');
            }
            write_atomic(path, text.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(TrainError::io("opening", path))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            lines,
        })
    }

    /// Appends a line (one `write`, flushed).
    pub fn append(&mut self, line: MetricLine) -> Result<(), TrainError> {
        let mut text = serde_json::to_string(&line).expect("metric serialises");
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(TrainError::io("appending to", &self.path))?;
        self.lines.push(line);
        Ok(())
    }

    /// Every line so far.
    pub fn lines(&self) -> &[MetricLine] {
        &self.lines
    }
}
