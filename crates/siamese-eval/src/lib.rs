//! One-shot evaluation of a siamese network (or a baseline) on Omniglot: Koch's
//! within-alphabet construction, generic N-way k-shot tasks and Lake's 20 official
//! runs, with 95% Wilson confidence intervals and honest judging.
//!
//! # Pieces
//! - [`OneShotScorer`]: a method is an embedding of images plus a score of
//!   (query, candidate) pairs of embeddings, **higher = more similar** (distances are
//!   negated). [`CandleScorer`] plugs in a network (tower + head) given as two candle
//!   functions; [`ModifiedHausdorff`] (Lake et al.'s baseline) and [`PixelNn`] (L2 on
//!   raw pixels) are plain implementations.
//! - [`TrialSet`]: the trials of a protocol ([`TrialSet::koch`],
//!   [`TrialSet::tasks`], [`TrialSet::lake`], [`TrialSet::mnist`]) over a table of
//!   distinct images.
//! - [`evaluate`]: embeds **each distinct image once** (in batches), scores all pairs
//!   from the cached embeddings (in batches), and judges each trial: correct only
//!   when the true class's score is strictly greater than every other candidate's,
//!   so ties and NaN scores are wrong. It returns an [`EvalReport`] (serde
//!   `Serialize`) with the accuracy, its [`wilson_interval`], per-alphabet and per-run
//!   tables, timing, and a [`TrialRecord`] of each trial for drawing it later
//!   ([`save_sheet`]).
//!
//! The siamese network plugs in through [`siamese_scorer`] (a [`CandleScorer`] over
//! its tower and head); any other method implements [`OneShotScorer`].
//!
//! # Example
//! ```no_run
//! use siamese_data::{Part, SplitName};
//! use siamese_eval::{EvalOptions, ModifiedHausdorff, TrialSet, evaluate, koch_trial_count, KOCH_WAY};
//!
//! let root = std::path::Path::new("data/omniglot");
//! let test = SplitName::Koch.index(Part::Test, root)?.load()?;
//! let trials = TrialSet::koch(&test, KOCH_WAY, koch_trial_count(Part::Test), 0)?
//!     .with_data_label("koch/test");
//! let report = evaluate(&ModifiedHausdorff::default(), &trials, &EvalOptions::default())?;
//! println!("{}/{} ({:.3}–{:.3})", report.correct, report.trials, report.ci95_low, report.ci95_high);
//! # Ok::<(), siamese_eval::EvalError>(())
//! ```

mod baselines;
mod error;
mod protocol;
mod runner;
mod scorer;
mod sheet;
mod siamese;
mod stats;
mod verify;

pub use baselines::{
    ModifiedHausdorff, PixelNn, PixelVector, PointSet, l2_distance, modified_hausdorff_distance,
};
pub use error::EvalError;
pub use protocol::{
    ImageRef, KOCH_TEST_TRIALS, KOCH_VALIDATION_TRIALS, KOCH_WAY, MNIST_TRIALS, Protocol, Trial,
    TrialImage, TrialSet, koch_trial_count,
};
pub use runner::{
    EvalOptions, EvalReport, GroupStats, Judgement, ShotReduce, Timing, TrialRecord, evaluate,
    judge,
};
pub use scorer::{CandleScorer, Embeddings, OneShotScorer};
pub use sheet::{draw_sheet, pick_trials, save_sheet};
pub use siamese::{
    TestTimeViews, adapt_batch_norm, ensemble_scorer, siamese_scorer, siamese_scorer_with_views,
};
pub use stats::{Z95, wilson_interval};
pub use verify::{
    ThresholdAccuracy, VerifyReport, accuracy_at, best_threshold, fit_platt, pair_logits, sigmoid,
    verify,
};
