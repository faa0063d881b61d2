//! Training of the siamese networks on Omniglot: Koch's layer-wise SGD schedule or
//! Adam / AdamW, on sampled pairs, on all pairs of K×M batches, or on N-way one-shot
//! episodes, with one-shot validation, early stopping, calibration of the head's
//! probability and resumable runs.
//!
//! * [`TrainConfig`]: one struct per stage ([`DataConfig`], the model's
//!   [`siamese_model::ModelConfig`], [`TrainingConfig`]), the presets ([`Preset`]:
//!   `default`, `long`, `paper`, `reference`, `small`) and configuration files (JSON
//!   or TOML merged over a preset);
//! * [`schedule`]: Koch's schedule (learning rates × 0.99 per epoch, momentum rising
//!   linearly from 0.5 to each layer's μⱼ), the chosen per-layer defaults, step and
//!   cosine schedules with warm-up ([`LrSchedule`]), and the optimizer of a run
//!   ([`schedule::RunOptimizer`] over [`optim`]);
//! * [`average`]: an exponential moving average of the weights, validated and kept
//!   as the best checkpoint in place of the raw weights;
//! * [`objective`]: Koch's cross-entropy on pairs, the balanced all-pairs
//!   objective, and the softmax cross-entropy of one-shot episodes;
//! * [`data`]: the data of a run and the sampler of its batches (the batches are
//!   made in [`siamese_data::batch`], each a function of the seed and the step
//!   number only, so resuming needs only the step);
//! * [`sizing`]: a run's step count fitted to its time budget on this machine;
//! * [`ensemble`]: several networks of one recipe trained into one run folder,
//!   validated, and scored, together;
//! * [`train`]: the loop, validating by 20-way within-alphabet one-shot accuracy
//!   (Koch's construction on the split's validation part), keeping the best
//!   checkpoint, stopping early, on a time budget, on Ctrl-C ([`TrainOptions::stop`])
//!   or on a non-finite loss;
//! * [`run`]: the run folder (`config.json`, `last/` and `best/` checkpoints,
//!   `metrics.jsonl`, `loss.png` and `validation.png`, the `latest` link), every file
//!   written atomically; [`metrics`] and [`plot`].
//!
//! The library prints nothing: it logs with `tracing` and shows an `indicatif`
//! progress bar when asked ([`TrainOptions::progress`]).

pub mod average;
pub mod config;
pub mod data;
pub mod ensemble;
mod error;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod sizing;
mod trainer;

pub use average::{WeightAverage, WeightEma};
pub use config::{
    DEFAULT_INPUT_SIZE, DEFAULT_MINUTES, DataConfig, EpisodeObjective, Keep, LONG_MEMBERS,
    Objective, Preset, TrainConfig, TrainingConfig,
};
pub use data::TrainData;
pub use ensemble::{ENSEMBLE_FILE, EnsembleRecord, MEMBER_PREFIX, MemberRecord};
pub use error::TrainError;
pub use run::{BestScore, RunDir, TrainState};
pub use schedule::{AdamSettings, AdamwSettings, LrSchedule, Optimizer, SgdSchedule};
pub use siamese_data::batch::{ClassBatchSpec, PairBatchSpec, PairSource};
pub use trainer::{
    EarlyStopping, StepObserver, StepReport, StopReason, TrainOptions, TrainOutcome, Verdict, train,
};
