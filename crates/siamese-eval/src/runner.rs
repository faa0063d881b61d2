//! Running a method on a trial set: embed each distinct image once, score the
//! pairs in batches, judge each trial strictly, and summarise.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use siamese_data::GrayImage;
use tracing::{debug, info};

use crate::EvalError;
use crate::protocol::{ImageRef, Protocol, TrialSet};
use crate::scorer::{Embeddings, OneShotScorer};
use crate::stats::{Z95, wilson_interval};

/// How a class with several examples ("shots") is scored from its examples' scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShotReduce {
    /// The mean of the shots' scores (the default: every example counts).
    #[default]
    Mean,
    /// The best shot's score (nearest-neighbour over the examples).
    Max,
}

/// Batch sizes and the k-shot rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// At most this many images per [`OneShotScorer::embed`] call.
    pub embed_batch: usize,
    /// At most this many pairs per [`OneShotScorer::score_pairs`] call.
    pub pair_batch: usize,
    pub shot_reduce: ShotReduce,
    /// Keep a [`TrialRecord`] of each trial in the report.
    pub keep_trials: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            embed_batch: 128,
            pair_batch: 4096,
            shot_reduce: ShotReduce::Mean,
            keep_trials: true,
        }
    }
}

/// How one trial was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// The class with the strictly highest score; `None` when the highest score is
    /// shared (a tie) or any score is NaN.
    pub choice: Option<usize>,
    /// The answer's score is strictly greater than every other class's.
    pub correct: bool,
    pub tie: bool,
    pub nan: bool,
}

/// Judges one trial: correct only when the true class's score is strictly greater
/// than every other candidate's. A tie is never correct (a method that gives every
/// pair the same score gets 0%), and a NaN anywhere in the trial makes it wrong.
pub fn judge(scores: &[f64], answer: usize) -> Judgement {
    let nan = scores.iter().any(|s| s.is_nan());
    if nan || scores.is_empty() {
        return Judgement {
            choice: None,
            correct: false,
            tie: false,
            nan,
        };
    }
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut top = scores.iter().enumerate().filter(|&(_, &s)| s == best);
    let first = top.next().map(|(i, _)| i);
    let tie = top.next().is_some();
    let choice = if tie { None } else { first };
    Judgement {
        choice,
        correct: choice == Some(answer),
        tie,
        nan,
    }
}

/// Accuracy of a group of trials (an alphabet, a run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    pub name: String,
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// `100 × (1 − accuracy)`, as Lake et al. report runs.
    pub error_percent: f64,
}

impl GroupStats {
    fn new(name: String, trials: usize, correct: usize) -> Self {
        let accuracy = if trials == 0 {
            0.0
        } else {
            correct as f64 / trials as f64
        };
        GroupStats {
            name,
            trials,
            correct,
            accuracy,
            error_percent: 100.0 * (1.0 - accuracy),
        }
    }
}

/// Everything needed to draw a trial later. Image ids are positions in
/// [`EvalReport::images`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialRecord {
    pub query: usize,
    /// `candidates[c]`: the example images of class `c`.
    pub candidates: Vec<Vec<usize>>,
    /// The score of each class (after [`ShotReduce`]).
    pub scores: Vec<f64>,
    /// The class with the strictly highest score, `None` for a tie or NaN.
    pub choice: Option<usize>,
    /// The true class.
    pub answer: usize,
    pub correct: bool,
    pub alphabet: Option<String>,
    pub run: Option<String>,
}

/// Work done and where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Distinct images embedded (each exactly once).
    pub images_embedded: usize,
    pub embed_calls: usize,
    pub pairs_scored: usize,
    pub score_calls: usize,
    pub embed_seconds: f64,
    /// Scoring the pairs and judging the trials.
    pub score_seconds: f64,
}

/// The result of a method on a protocol. It serialises as the summary (what a
/// script reads); the per-trial picture data ([`EvalReport::images`],
/// [`EvalReport::records`]) stays in memory for drawing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub method: String,
    pub protocol: Protocol,
    /// What the trials were drawn from.
    pub data: String,
    pub seed: Option<u64>,
    pub shot_reduce: ShotReduce,
    pub trials: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub error_percent: f64,
    /// The 95% Wilson score interval of the accuracy.
    pub ci95_low: f64,
    pub ci95_high: f64,
    /// Trials whose highest score was shared (all wrong).
    pub ties: usize,
    /// Trials with a NaN score (all wrong).
    pub nan_trials: usize,
    /// By the query's alphabet, sorted by name; empty when alphabets are unknown
    /// (Lake's runs).
    pub per_alphabet: Vec<GroupStats>,
    /// By run, in run order (Lake's runs, Koch's runs); empty for independent tasks.
    pub per_run: Vec<GroupStats>,
    /// The mean of the runs' error percentages (Lake's summary), when there are runs.
    pub mean_run_error_percent: Option<f64>,
    pub timing: Timing,
    /// The images the records' ids refer to.
    #[serde(skip)]
    pub images: Vec<ImageRef>,
    /// One record per trial, in trial order (empty unless
    /// [`EvalOptions::keep_trials`]).
    #[serde(skip)]
    pub records: Vec<TrialRecord>,
}

/// Runs `scorer` on every trial of `set`.
///
/// 1. The distinct images used by the trials are embedded once each, in batches of
///    `embed_batch`, in id order, and the batches concatenated.
/// 2. Every (query, example) pair of every trial is scored from the embeddings, in
///    batches of `pair_batch` pairs.
/// 3. A class's score is the [`ShotReduce`] of its examples' scores, and each trial
///    is judged by [`judge`] (strictly: ties and NaN are wrong).
pub fn evaluate<S: OneShotScorer + ?Sized>(
    scorer: &S,
    set: &TrialSet<'_>,
    options: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    set.validate()?;
    let method = scorer.name();

    // Rows of the distinct images in use.
    let mut row_of = vec![usize::MAX; set.images.len()];
    for t in &set.trials {
        for &i in std::iter::once(&t.query).chain(t.classes.iter().flatten()) {
            row_of[i] = 0;
        }
    }
    let used: Vec<usize> = (0..set.images.len()).filter(|&i| row_of[i] == 0).collect();
    for (row, &i) in used.iter().enumerate() {
        row_of[i] = row;
    }
    info!(
        method,
        protocol = ?set.protocol,
        trials = set.trials.len(),
        images = used.len(),
        "evaluating"
    );

    let images: Vec<&GrayImage> = used.iter().map(|&i| set.images[i].image).collect();
    let row_of = &row_of;
    let pairs: Vec<(usize, usize)> = set
        .trials
        .iter()
        .flat_map(|t| {
            let q = row_of[t.query];
            t.classes.iter().flatten().map(move |&i| (q, row_of[i]))
        })
        .collect();
    let scored = score_image_pairs(scorer, &images, &pairs, options)?;
    let (embed_calls, embed_seconds) = (scored.embed_calls, scored.embed_seconds);
    let score_calls = scored.score_calls;
    let start = Instant::now();
    let pair_scores = scored.scores;

    let mut records = Vec::with_capacity(if options.keep_trials {
        set.trials.len()
    } else {
        0
    });
    let mut by_alphabet: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut by_run = vec![(0usize, 0usize); set.runs.len()];
    let (mut correct, mut ties, mut nan_trials) = (0, 0, 0);
    let mut next = pair_scores.iter().copied();
    for t in &set.trials {
        let scores: Vec<f64> = t
            .classes
            .iter()
            .map(|shots| {
                let s = next.by_ref().take(shots.len());
                reduce(s, shots.len(), options.shot_reduce)
            })
            .collect();
        let j = judge(&scores, t.answer);
        correct += usize::from(j.correct);
        ties += usize::from(j.tie);
        nan_trials += usize::from(j.nan);
        if let Some(a) = t.alphabet {
            let e = by_alphabet.entry(&set.alphabets[a]).or_default();
            e.0 += 1;
            e.1 += usize::from(j.correct);
        }
        if let Some(r) = t.run {
            by_run[r].0 += 1;
            by_run[r].1 += usize::from(j.correct);
        }
        if options.keep_trials {
            records.push(TrialRecord {
                query: t.query,
                candidates: t.classes.clone(),
                scores,
                choice: j.choice,
                answer: t.answer,
                correct: j.correct,
                alphabet: t.alphabet.map(|a| set.alphabets[a].clone()),
                run: t.run.map(|r| set.runs[r].clone()),
            });
        }
    }
    let score_seconds = scored.score_seconds + start.elapsed().as_secs_f64();

    let trials = set.trials.len();
    let (ci95_low, ci95_high) = wilson_interval(correct, trials, Z95)?;
    let accuracy = correct as f64 / trials as f64;
    let per_run: Vec<GroupStats> = set
        .runs
        .iter()
        .zip(&by_run)
        .filter(|(_, (n, _))| *n > 0)
        .map(|(name, &(n, c))| GroupStats::new(name.clone(), n, c))
        .collect();
    let mean_run_error_percent = (!per_run.is_empty())
        .then(|| per_run.iter().map(|r| r.error_percent).sum::<f64>() / per_run.len() as f64);
    let report = EvalReport {
        method,
        protocol: set.protocol.clone(),
        data: set.data.clone(),
        seed: set.seed,
        shot_reduce: options.shot_reduce,
        trials,
        correct,
        accuracy,
        error_percent: 100.0 * (1.0 - accuracy),
        ci95_low,
        ci95_high,
        ties,
        nan_trials,
        per_alphabet: by_alphabet
            .into_iter()
            .map(|(name, (n, c))| GroupStats::new(name.to_string(), n, c))
            .collect(),
        per_run,
        mean_run_error_percent,
        timing: Timing {
            images_embedded: used.len(),
            embed_calls,
            pairs_scored: pairs.len(),
            score_calls,
            embed_seconds,
            score_seconds,
        },
        images: set.images.iter().map(|i| i.source.clone()).collect(),
        records,
    };
    info!(
        method = report.method,
        correct,
        trials,
        accuracy,
        ci95_low,
        ci95_high,
        ties,
        nan_trials,
        embed_seconds,
        score_seconds,
        "evaluated"
    );
    Ok(report)
}

/// A class's score from its shots' scores; NaN if any is NaN.
fn reduce(scores: impl Iterator<Item = f64>, n: usize, how: ShotReduce) -> f64 {
    match how {
        ShotReduce::Mean => scores.sum::<f64>() / n as f64,
        ShotReduce::Max => scores.fold(f64::NEG_INFINITY, |m, s| {
            if s.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(s)
            }
        }),
    }
}

/// Pair scores and where the time went.
pub(crate) struct ScoredPairs {
    pub scores: Vec<f64>,
    pub embed_calls: usize,
    pub score_calls: usize,
    pub embed_seconds: f64,
    pub score_seconds: f64,
}

/// Embeds each of `images` once, in batches of `embed_batch`, then scores `pairs` of
/// indices into `images` from the embeddings, in batches of `pair_batch`. Checks that
/// the method returns as many rows and scores as asked.
pub(crate) fn score_image_pairs<S: OneShotScorer + ?Sized>(
    scorer: &S,
    images: &[&GrayImage],
    pairs: &[(usize, usize)],
    options: &EvalOptions,
) -> Result<ScoredPairs, EvalError> {
    if options.embed_batch == 0 || options.pair_batch == 0 {
        return Err(EvalError::Invalid("batch sizes must be positive".into()));
    }
    let method = scorer.name();
    let start = Instant::now();
    let mut parts = Vec::with_capacity(images.len().div_ceil(options.embed_batch));
    for chunk in images.chunks(options.embed_batch) {
        let part = scorer.embed(chunk)?;
        if part.rows() != chunk.len() {
            return Err(EvalError::method(
                &method,
                format!("embedding {} images gave {} rows", chunk.len(), part.rows()),
            ));
        }
        parts.push(part);
    }
    let embed_calls = parts.len();
    let embeddings = S::Embeddings::concat(parts)?;
    if embeddings.rows() != images.len() {
        return Err(EvalError::method(
            &method,
            format!(
                "{} embedded images joined into {} rows",
                images.len(),
                embeddings.rows()
            ),
        ));
    }
    let embed_seconds = start.elapsed().as_secs_f64();
    debug!(embed_seconds, embed_calls, "embedded");

    let start = Instant::now();
    let mut scores = Vec::with_capacity(pairs.len());
    let mut score_calls = 0;
    for chunk in pairs.chunks(options.pair_batch) {
        let s = scorer.score_pairs(&embeddings, chunk)?;
        if s.len() != chunk.len() {
            return Err(EvalError::method(
                &method,
                format!("scoring {} pairs gave {} scores", chunk.len(), s.len()),
            ));
        }
        scores.extend(s);
        score_calls += 1;
    }
    Ok(ScoredPairs {
        scores,
        embed_calls,
        score_calls,
        embed_seconds,
        score_seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_and_nan_are_never_correct() {
        assert_eq!(judge(&[1.0, 3.0, 2.0], 1).choice, Some(1));
        assert!(judge(&[1.0, 3.0, 2.0], 1).correct);
        assert!(!judge(&[1.0, 3.0, 2.0], 0).correct);
        let tie = judge(&[3.0, 3.0, 2.0], 0);
        assert!(!tie.correct && tie.tie && tie.choice.is_none());
        assert!(!judge(&[0.0; 20], 7).correct);
        assert!(!judge(&[f64::INFINITY, f64::INFINITY], 0).correct);
        let nan = judge(&[5.0, f64::NAN], 0);
        assert!(!nan.correct && nan.nan && !nan.tie);
        assert!(!judge(&[f64::NAN, 1.0], 0).correct);
        // -0.0 == 0.0: a tie.
        assert!(!judge(&[0.0, -0.0], 0).correct);
    }

    #[test]
    fn shot_reduction() {
        let s = [1.0, 3.0, 2.0];
        assert_eq!(reduce(s.into_iter(), 3, ShotReduce::Mean), 2.0);
        assert_eq!(reduce(s.into_iter(), 3, ShotReduce::Max), 3.0);
        assert!(reduce([1.0, f64::NAN].into_iter(), 2, ShotReduce::Max).is_nan());
        assert!(reduce([f64::NAN, 1.0].into_iter(), 2, ShotReduce::Max).is_nan());
        assert!(reduce([f64::NAN, 1.0].into_iter(), 2, ShotReduce::Mean).is_nan());
    }
}
