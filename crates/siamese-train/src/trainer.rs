//! The training loop: steps, validation, early stopping, checkpoints, metrics and
//! plots, resuming and stopping cleanly.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use siamese_data::Part;
use siamese_data::batch::{Batch, BatchSampler, Prefetch};
use siamese_data::sample::NegativeFrom;
use siamese_eval::{
    EvalOptions, EvalReport, KOCH_WAY, TrialSet, evaluate, fit_platt, pair_logits, siamese_scorer,
};
use siamese_model::{SiameseNet, select_device};
use tracing::{info, warn};

use crate::TrainError;
use crate::average::{WeightAverage, WeightEma};
use crate::config::{Keep, TrainConfig};
use crate::data::{TrainData, batch_sampler};
use crate::metrics::{MetricLine, MetricsLog, round3};
use crate::plot::draw_plots;
use crate::run::{BestScore, RunDir, TrainState, load_checkpoint, save_checkpoint};
use crate::schedule::RunOptimizer;
use crate::sizing::fit_steps_to_time;

/// A callback of [`TrainOptions::observer`].
pub type StepObserver = Arc<dyn Fn(&StepReport) + Send + Sync>;

/// What a step reports to [`TrainOptions::observer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps completed (this step is number `step`, counting from 1).
    pub step: u64,
    pub epoch: u64,
    pub loss: f32,
    pub pairs: usize,
}

/// How a run is driven (not part of its configuration).
#[derive(Clone, Default)]
pub struct TrainOptions {
    /// Show a progress bar (step, loss, pairs/s, ETA, best validation accuracy).
    pub progress: bool,
    /// Set it (e.g. from a Ctrl-C handler) to stop after the current step: a
    /// checkpoint is written and [`train`] returns [`StopReason::Interrupted`].
    pub stop: Arc<AtomicBool>,
    /// Called after every step.
    pub observer: Option<StepObserver>,
    /// Batches made ahead of the steps on a background thread: `None` (the default)
    /// for two when the network is on a GPU and none on the CPU (whose cores the step
    /// itself uses); `Some(0)` never. The batches, and so the run, are the same either
    /// way.
    pub prefetch_batches: Option<usize>,
}

/// Balanced validation pairs the head's calibration is fitted on.
const CALIBRATION_PAIRS: usize = 4000;

/// Batches made ahead on a GPU by default.
const DEFAULT_PREFETCH: usize = 2;

impl std::fmt::Debug for TrainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("progress", &self.progress)
            .field("stop", &self.stop)
            .field("observer", &self.observer.is_some())
            .field("prefetch_batches", &self.prefetch_batches)
            .finish()
    }
}

/// Why training stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// All `train.epochs` epochs were trained.
    Epochs,
    /// `train.max_steps` steps were trained.
    MaxSteps,
    /// `train.max_minutes` ran out.
    TimeLimit,
    /// `train.patience` validations in a row brought no new best.
    EarlyStopping,
    /// [`TrainOptions::stop`] was set (Ctrl-C, SIGTERM).
    Interrupted,
}

impl StopReason {
    const ALL: [StopReason; 5] = [
        StopReason::Epochs,
        StopReason::MaxSteps,
        StopReason::TimeLimit,
        StopReason::EarlyStopping,
        StopReason::Interrupted,
    ];

    /// The reason a checkpoint's `finished` field records (its `Debug` name).
    pub fn from_recorded(name: &str) -> Option<StopReason> {
        Self::ALL.into_iter().find(|r| format!("{r:?}") == name)
    }

    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Epochs => "all epochs trained",
            StopReason::MaxSteps => "the step limit was reached",
            StopReason::TimeLimit => "the time limit ran out",
            StopReason::EarlyStopping => {
                "early stopping (no better validation within the patience)"
            }
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub reason: StopReason,
    /// Steps completed in all.
    pub step: u64,
    /// The epoch of the next step.
    pub epoch: u64,
    pub best: Option<BestScore>,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Steps taken by this call.
    pub steps_this_call: u64,
    /// The last step's loss.
    pub last_loss: Option<f32>,
    /// For an ensemble ([`crate::ensemble`]): each member's outcome, in order (the
    /// ensemble's `best` is then its own validation); empty for one network.
    pub members: Vec<TrainOutcome>,
}

/// Koch's early stopping: stop after `patience` validations in a row without a new
/// best (strictly higher accuracy); a patience of 0 never stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStopping {
    pub patience: u64,
    pub best: Option<f64>,
    pub since_best: u64,
}

/// What [`EarlyStopping::observe`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    NewBest,
    NotBetter,
    Stop,
}

impl EarlyStopping {
    pub fn new(patience: u64) -> Self {
        EarlyStopping {
            patience,
            best: None,
            since_best: 0,
        }
    }

    pub fn observe(&mut self, accuracy: f64) -> Verdict {
        if self.best.is_none_or(|b| accuracy > b) {
            self.best = Some(accuracy);
            self.since_best = 0;
            return Verdict::NewBest;
        }
        self.since_best += 1;
        if self.should_stop() {
            Verdict::Stop
        } else {
            Verdict::NotBetter
        }
    }

    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.since_best >= self.patience
    }
}

/// Trains the network of `config` on `data` in the run folder `run`: from its `last`
/// checkpoint if it has one (a resumed run continues exactly, with the same losses
/// as an uninterrupted one), else from the seeded initialisation. Writes
/// `config.json`, `metrics.jsonl`, the plots and the checkpoints as it goes.
///
/// Returns why it stopped. A NaN or infinite loss is [`TrainError::NonFiniteLoss`],
/// after which the last checkpoint written (all finite) is left as it was.
pub fn train(
    run: &RunDir,
    config: &TrainConfig,
    data: &TrainData,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    config.validate()?;
    in_thread_pool(config.train.threads, || {
        if config.train.members > 1 {
            crate::ensemble::train_members(run, config, data, options)
        } else {
            train_one(run, config, data, options)
        }
    })
}

/// One network's run (sized by time first when the configuration asks for it), on
/// the calling thread pool.
pub(crate) fn train_one(
    run: &RunDir,
    config: &TrainConfig,
    data: &TrainData,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    // A run sized by time is timed on the threads it will train on.
    let config = fit_steps_to_time(config, data)?;
    Trainer::new(run, &config, data, options)?.run()
}

/// Runs `work` on a pool of `threads` threads (`None`: the global pool).
fn in_thread_pool<T: Send>(
    threads: Option<usize>,
    work: impl FnOnce() -> Result<T, TrainError> + Send,
) -> Result<T, TrainError> {
    match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| TrainError::Config(format!("train.threads = {n}: {e}")))?
            .install(work),
        None => work(),
    }
}

struct Trainer<'a> {
    run: &'a RunDir,
    config: &'a TrainConfig,
    data: &'a TrainData,
    options: &'a TrainOptions,
    device: Device,
    net: SiameseNet,
    /// The average of the weights, when the run keeps one.
    average: Option<WeightEma>,
    optimizer: RunOptimizer,
    /// Taken by [`Trainer::run`].
    sampler: Option<BatchSampler>,
    state: TrainState,
    stopping: EarlyStopping,
    metrics: MetricsLog,
    validation: TrialSet<'a>,
    steps_per_epoch: u64,
    total_steps: u64,
    /// Training seconds of earlier invocations.
    seconds_before: f64,
    started: Instant,
    /// The latest validation (of this invocation or, when resuming, the run's).
    last_validation: Option<BestScore>,
    bar: ProgressBar,
}

impl<'a> Trainer<'a> {
    fn new(
        run: &'a RunDir,
        config: &'a TrainConfig,
        data: &'a TrainData,
        options: &'a TrainOptions,
    ) -> Result<Self, TrainError> {
        let t = &config.train;
        let device = select_device(&t.device)?;
        data.check_size(config.model.input_size)?;
        crate::run::write_atomic(&run.config_path(), config.to_json().as_bytes())?;
        let sampler = batch_sampler(config, &data.train)?;
        let steps_per_epoch = t
            .steps_per_epoch
            .or(sampler.steps_per_pass())
            .ok_or_else(|| {
                TrainError::Config(
                    "train.steps_per_epoch is required unless the pairs come from Koch's set"
                        .into(),
                )
            })?;
        let mut total_steps = t.epochs.saturating_mul(steps_per_epoch);
        if let Some(m) = t.max_steps {
            total_steps = total_steps.min(m);
        }

        let (net, averaged, optimizer, state) = match run.checkpoint("last") {
            Some(dir) => {
                let ckpt = load_checkpoint(&dir, &config.model, &device)?;
                let mut optimizer = RunOptimizer::new(&t.optimizer, &ckpt.net, &ckpt.varmap)?;
                if !optimizer.resumes_from(&ckpt.state.optimizer) {
                    return Err(TrainError::Resume {
                        path: dir,
                        reason: format!(
                            "the checkpoint's optimizer is {}, the configuration's {}",
                            ckpt.state.optimizer,
                            optimizer.name()
                        ),
                    });
                }
                optimizer.load_state(&ckpt.optimizer)?;
                info!(
                    "resuming {} from step {} (epoch {})",
                    run.path().display(),
                    ckpt.state.step,
                    ckpt.state.epoch
                );
                (ckpt.net, ckpt.averaged, optimizer, ckpt.state)
            }
            None => {
                info!(
                    "initialising {} ({} parameters, seed {}, {} init)",
                    config.model,
                    config.model.num_params()?,
                    t.seed,
                    t.init
                );
                let (net, varmap) = SiameseNet::init_with(config.model, t.init, t.seed, &device)?;
                let optimizer = RunOptimizer::new(&t.optimizer, &net, &varmap)?;
                let state = TrainState {
                    step: 0,
                    epoch: 0,
                    best: None,
                    validations_since_best: 0,
                    train_seconds: 0.0,
                    optimizer: optimizer.name().into(),
                    optimizer_step: 0,
                    optimizer_hypers: serde_json::Value::Null,
                    finished: None,
                };
                (net, None, optimizer, state)
            }
        };
        let average = match t.weight_average {
            WeightAverage::None => None,
            WeightAverage::Ema { decay } => Some(match averaged {
                Some(avg) => WeightEma::new(decay, &avg)?,
                None => {
                    if state.step > 0 {
                        warn!(
                            "the checkpoint has no averaged weights: the average starts from \
                             the weights of step {}",
                            state.step
                        );
                    }
                    WeightEma::new(decay, &net)?
                }
            }),
        };
        let metrics = MetricsLog::open(&run.metrics_path(), state.step)?;
        let last_validation = metrics
            .lines()
            .iter()
            .filter_map(|l| match *l {
                MetricLine::Validation {
                    step,
                    epoch,
                    accuracy,
                    ci95_low,
                    ci95_high,
                    ..
                } => Some(BestScore {
                    step,
                    epoch,
                    accuracy,
                    ci95_low,
                    ci95_high,
                }),
                MetricLine::Train { .. } => None,
            })
            .next_back();
        let validation = TrialSet::koch(
            &data.validation,
            KOCH_WAY,
            config.data.validation_trials,
            config.data.validation_seed,
        )?
        .with_data_label(format!("{}/{}", config.data.split, Part::Validation));
        let stopping = EarlyStopping {
            patience: t.patience,
            best: state.best.map(|b| b.accuracy),
            since_best: state.validations_since_best,
        };
        let bar = if options.progress {
            let bar = ProgressBar::new(total_steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps (ETA {eta}) {msg}",
                )
                .expect("valid template"),
            );
            bar.set_position(state.step);
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        } else {
            ProgressBar::hidden()
        };
        Ok(Trainer {
            run,
            config,
            data,
            options,
            device,
            seconds_before: state.train_seconds,
            net,
            average,
            optimizer,
            sampler: Some(sampler),
            state,
            stopping,
            metrics,
            validation,
            steps_per_epoch,
            total_steps,
            started: Instant::now(),
            last_validation,
            bar,
        })
    }

    fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch
    }

    /// Runs the loop with the batches made one by one before each step, or ahead on a
    /// background thread (see [`TrainOptions::prefetch_batches`]).
    fn run(mut self) -> Result<TrainOutcome, TrainError> {
        let sampler = self.sampler.take().expect("run is called once");
        let ahead = self
            .options
            .prefetch_batches
            .unwrap_or(if self.device.is_cpu() {
                0
            } else {
                DEFAULT_PREFETCH
            });
        if ahead == 0 {
            return self.train_loop(Batches::Direct(Box::new(sampler)));
        }
        info!("making up to {ahead} batches ahead of the steps on a background thread");
        let train = &self.data.train;
        let steps = self.state.step..self.total_steps;
        std::thread::scope(|scope| {
            let prefetch = sampler.prefetch(scope, train, steps, ahead);
            self.train_loop(Batches::Ahead(prefetch))
        })
    }

    fn train_loop(mut self, mut batches: Batches) -> Result<TrainOutcome, TrainError> {
        let config = self.config;
        let t = &config.train;
        let limit = t.max_minutes.map(|m| Duration::from_secs_f64(m * 60.0));
        let first_step = self.state.step;
        info!(
            "training {} steps ({} per epoch){}, run folder {}",
            self.total_steps,
            self.steps_per_epoch,
            limit.map_or(String::new(), |l| format!(
                ", at most {:.1} minutes",
                l.as_secs_f64() / 60.0
            )),
            self.run.path().display()
        );
        // Sums since the last train line of the metrics.
        let (mut loss_sum, mut loss_n, mut pairs, mut step_time) = (0.0f64, 0u64, 0usize, 0.0f64);
        let mut last_loss = None;
        if t.validate_at_start && self.state.step == 0 && self.last_validation.is_none() {
            self.validate()?;
        }
        let reason = loop {
            if self.stopping.should_stop() {
                break StopReason::EarlyStopping;
            }
            if self.state.step >= self.total_steps {
                break if t.max_steps.is_some_and(|m| self.state.step >= m) {
                    StopReason::MaxSteps
                } else {
                    StopReason::Epochs
                };
            }
            if self.options.stop.load(Ordering::SeqCst) {
                break StopReason::Interrupted;
            }
            if limit.is_some_and(|l| self.started.elapsed() >= l) {
                break StopReason::TimeLimit;
            }

            let step = self.state.step;
            let epoch = self.epoch_of(step);
            let tick = Instant::now();
            self.optimizer
                .set_position(epoch, t.lr_schedule.factor(step, t.max_steps));
            let batch = batches.next(&self.data.train, step, &self.device)?;
            let n_pairs = batch.pair_count();
            let loss = t.objective.loss(&self.net, &batch)?;
            let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                self.bar.abandon();
                return Err(TrainError::NonFiniteLoss {
                    step: step + 1,
                    epoch,
                    loss: value,
                    last_good: self.run.checkpoint("last"),
                });
            }
            self.optimizer.backward_step(&loss)?;
            drop(loss);
            if let Some(average) = &mut self.average {
                average.update(&self.net, step + 1)?;
            }
            self.state.step = step + 1;
            self.state.epoch = self.epoch_of(self.state.step);
            last_loss = Some(value);
            let seconds = tick.elapsed().as_secs_f64();
            loss_sum += f64::from(value);
            loss_n += 1;
            pairs += n_pairs;
            step_time += seconds;
            if let Some(observer) = &self.options.observer {
                observer(&StepReport {
                    step: self.state.step,
                    epoch,
                    loss: value,
                    pairs: n_pairs,
                });
            }
            let pairs_per_s = n_pairs as f64 / seconds.max(1e-9);
            self.bar.set_position(self.state.step);
            let left = limit.map_or(String::new(), |l| {
                let s = l.saturating_sub(self.started.elapsed()).as_secs();
                format!(" · {}:{:02} left", s / 60, s % 60)
            });
            self.bar.set_message(format!(
                "loss {value:.4} · {pairs_per_s:.1} pairs/s · best {}{left}",
                self.best_text()
            ));
            if self.state.step.is_multiple_of(t.log_every) {
                self.metrics.append(MetricLine::Train {
                    step: self.state.step,
                    epoch,
                    loss: loss_sum / loss_n as f64,
                    lr: self.optimizer.learning_rate(),
                    momentum: self.optimizer.momentum(),
                    pairs_per_s: round3(pairs as f64 / step_time.max(1e-9)),
                    elapsed_s: round3(self.elapsed()),
                })?;
                (loss_sum, loss_n, pairs, step_time) = (0.0, 0, 0, 0.0);
            }
            let validate_now = match t.validate_every {
                Some(n) => self.state.step.is_multiple_of(n),
                None => self.state.step.is_multiple_of(self.steps_per_epoch),
            };
            if validate_now {
                self.validate()?;
                self.save_last()?;
                self.redraw();
            } else if t
                .checkpoint_every
                .is_some_and(|n| self.state.step.is_multiple_of(n))
            {
                self.save_last()?;
            }
        };

        let budget = matches!(
            reason,
            StopReason::Epochs | StopReason::MaxSteps | StopReason::TimeLimit
        );
        let validated_now = self
            .last_validation
            .is_some_and(|v| v.step == self.state.step);
        if budget && self.state.step > 0 && !validated_now {
            self.validate()?;
        }
        if t.keep == Keep::Final && reason != StopReason::Interrupted {
            self.keep_final()?;
        }
        self.state.finished = Some(format!("{reason:?}"));
        self.save_last()?;
        self.redraw();
        self.bar.finish_and_clear();
        if t.calibrate && reason != StopReason::Interrupted && self.state.best.is_some() {
            self.calibrate_best()?;
        }
        let best = self.state.best;
        info!(
            "stopped after step {} (epoch {}): {}; best validation accuracy {}; run folder {}",
            self.state.step,
            self.state.epoch,
            reason.describe(),
            self.best_text(),
            self.run.path().display()
        );
        if reason == StopReason::Interrupted {
            info!(
                "continue with: siamese-cli train --resume {}",
                self.run.path().display()
            );
        }
        Ok(TrainOutcome {
            reason,
            step: self.state.step,
            epoch: self.state.epoch,
            best,
            run_dir: self.run.path().to_path_buf(),
            steps_this_call: self.state.step - first_step,
            last_loss,
            members: Vec::new(),
        })
    }

    fn elapsed(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    fn best_text(&self) -> String {
        match self.state.best {
            Some(b) => format!("{:.1}% (step {})", 100.0 * b.accuracy, b.step),
            None => "–".into(),
        }
    }

    /// Evaluates on the validation trials; records, and saves `best` on a new best.
    fn validate(&mut self) -> Result<(), TrainError> {
        let start = Instant::now();
        let report = self.bar.suspend(|| self.evaluate())?;
        let seconds = start.elapsed().as_secs_f64();
        let verdict = self.stopping.observe(report.accuracy);
        self.state.validations_since_best = self.stopping.since_best;
        let new_best = verdict == Verdict::NewBest;
        let epoch = self.epoch_of(self.state.step.saturating_sub(1));
        let score = BestScore {
            step: self.state.step,
            epoch,
            accuracy: report.accuracy,
            ci95_low: report.ci95_low,
            ci95_high: report.ci95_high,
        };
        if new_best {
            self.state.best = Some(score);
        }
        self.last_validation = Some(score);
        self.metrics.append(MetricLine::Validation {
            step: self.state.step,
            epoch,
            accuracy: report.accuracy,
            ci95_low: report.ci95_low,
            ci95_high: report.ci95_high,
            correct: report.correct,
            trials: report.trials,
            ties: report.ties,
            best: new_best,
            seconds: round3(seconds),
        })?;
        self.bar.suspend(|| {
            info!(
                "step {} (epoch {epoch}): validation accuracy {:.2}% ({}/{}, 95% CI {:.1}–{:.1}%){} in {seconds:.1} s",
                self.state.step,
                100.0 * report.accuracy,
                report.correct,
                report.trials,
                100.0 * report.ci95_low,
                100.0 * report.ci95_high,
                if new_best { ", new best" } else { "" },
            )
        });
        if new_best {
            let best = self.scored_net()?;
            self.save(&self.run.best_dir(), &best, None)?;
        }
        Ok(())
    }

    /// `train.keep = final`: the weights training ended with (as the last validation
    /// scored them) become `best`, unless they are that already.
    fn keep_final(&mut self) -> Result<(), TrainError> {
        let Some(last) = self.last_validation.filter(|v| v.step == self.state.step) else {
            warn!("no validation of the final weights: `best` keeps the best validation's");
            return Ok(());
        };
        if self.state.best.is_some_and(|b| b.step == last.step) {
            return Ok(());
        }
        let net = self.scored_net()?;
        self.save(&self.run.best_dir(), &net, None)?;
        if let Some(best) = self.state.best {
            info!(
                "kept the final weights (step {}, validation accuracy {:.2}%) as `best`, as \
                 train.keep = final asks; the best validation was {:.2}% at step {}",
                last.step,
                100.0 * last.accuracy,
                100.0 * best.accuracy,
                best.step
            );
        }
        self.state.best = Some(last);
        Ok(())
    }

    /// The network validation scores and `best` keeps: the averaged one when the run
    /// averages, else the current weights (detached).
    fn scored_net(&self) -> Result<SiameseNet, TrainError> {
        match &self.average {
            Some(average) => average.net(&self.device),
            None => Ok(self.net.detach()),
        }
    }

    fn evaluate(&self) -> Result<EvalReport, TrainError> {
        let frozen = self.scored_net()?;
        let scorer = siamese_scorer(&frozen, "validation");
        let options = EvalOptions {
            embed_batch: self.config.train.eval_batch,
            keep_trials: false,
            ..EvalOptions::default()
        };
        Ok(evaluate(&scorer, &self.validation, &options)?)
    }

    /// Platt scaling of the `best` checkpoint's head on balanced pairs of the
    /// validation alphabets (see [`crate::config::TrainingConfig::calibrate`]),
    /// written into it with the fitted values in its provenance.
    fn calibrate_best(&self) -> Result<(), TrainError> {
        let path = self.run.best_model();
        let (net, info) = SiameseNet::load(&path, Some(&self.config.model), &self.device)?;
        let scorer = siamese_scorer(&net, "calibration");
        let options = EvalOptions {
            embed_batch: self.config.train.eval_batch,
            keep_trials: false,
            ..EvalOptions::default()
        };
        let (logits, same) = pair_logits(
            &scorer,
            &self.data.validation,
            CALIBRATION_PAIRS,
            NegativeFrom::SameAlphabet,
            self.config.data.validation_seed,
            &options,
        )?;
        let (scale, shift) = fit_platt(&logits, &same)?;
        let mut provenance = info.provenance;
        if let Some(map) = provenance.as_object_mut() {
            map.insert(
                "calibration".into(),
                serde_json::json!({
                    "scale": scale,
                    "shift": shift,
                    "pairs": CALIBRATION_PAIRS,
                    "data": format!("{}/{}", self.config.data.split, Part::Validation),
                    "negatives": NegativeFrom::SameAlphabet,
                }),
            );
        }
        net.with_head_affine(scale, shift)?
            .save(&path, &provenance)?;
        info!(
            "calibrated the best checkpoint's probabilities on {CALIBRATION_PAIRS} validation \
             pairs: logit × {scale:.4} {shift:+.4}"
        );
        Ok(())
    }

    /// Saves the current weights, with their average if the run keeps one, as `last`.
    fn save_last(&mut self) -> Result<(), TrainError> {
        let averaged = match &self.average {
            Some(average) => Some(average.net(&self.device)?),
            None => None,
        };
        self.save(&self.run.last_dir(), &self.net, averaged.as_ref())
    }

    /// Saves a checkpoint of the current state with the weights of `net` into `dir`,
    /// refusing non-finite weights (the previous checkpoint stays).
    fn save(
        &self,
        dir: &std::path::Path,
        net: &SiameseNet,
        averaged: Option<&SiameseNet>,
    ) -> Result<(), TrainError> {
        if !params_finite(net)? {
            return Err(TrainError::NonFiniteLoss {
                step: self.state.step,
                epoch: self.state.epoch,
                loss: f32::NAN,
                last_good: self.run.checkpoint("last"),
            });
        }
        let opt = self.optimizer.state()?;
        let mut state = self.state.clone();
        state.train_seconds = self.elapsed();
        state.optimizer_step = opt.step;
        state.optimizer_hypers = opt.hypers.clone();
        let provenance = serde_json::json!({
            "run": self.run.name(),
            "step": state.step,
            "epoch": state.epoch,
            "best": state.best,
            "config": self.config,
        });
        save_checkpoint(dir, net, averaged, &opt, &state, &provenance)
    }

    fn redraw(&self) {
        if let Err(e) = draw_plots(self.run.path(), self.metrics.lines()) {
            warn!("could not draw the plots: {e}");
        }
    }
}

/// Where the loop's batches come from.
enum Batches {
    /// Made by the sampler before each step.
    Direct(Box<BatchSampler>),
    /// Made ahead on a background thread.
    Ahead(Prefetch),
}

impl Batches {
    fn next(
        &mut self,
        train: &siamese_data::Dataset,
        step: u64,
        device: &Device,
    ) -> Result<Batch, TrainError> {
        Ok(match self {
            Batches::Direct(sampler) => sampler.batch(train, step, device)?,
            Batches::Ahead(prefetch) => prefetch.next(step)?.to_device(device)?,
        })
    }
}

/// Whether every parameter is finite (`x − x` is 0 for finite `x`, NaN otherwise).
fn params_finite(net: &SiameseNet) -> Result<bool, TrainError> {
    for (_, t) in net.named_tensors() {
        let z = t.detach().sub(&t.detach())?.sum_all()?.to_scalar::<f32>()?;
        if z != 0.0 {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_waits_for_the_patience() {
        let mut s = EarlyStopping::new(3);
        let seq = [0.10, 0.20, 0.15, 0.20, 0.25, 0.24, 0.25, 0.10];
        let verdicts: Vec<Verdict> = seq.iter().map(|&a| s.observe(a)).collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                NewBest, NewBest, NotBetter, NotBetter, NewBest, NotBetter, NotBetter, Stop
            ]
        );
        assert_eq!(s.best, Some(0.25));
        assert!(s.should_stop());
        // Patience 0 never stops.
        let mut never = EarlyStopping::new(0);
        for _ in 0..100 {
            assert_ne!(never.observe(0.0), Stop);
        }
    }

    /// Batches made ahead on a background thread train exactly like batches made
    /// before each step (and a run stopped early leaves no thread behind).
    #[test]
    fn prefetched_batches_train_identically() {
        use crate::config::{Objective, TrainConfig};
        use crate::metrics::read_metrics;
        use siamese_data::augment::synthetic_glyph;
        use siamese_data::batch::{PairBatchSpec, PairSource};
        use siamese_data::{Dataset, DatasetIndex, seeded_rng};
        use siamese_model::{Arch, ModelConfig};

        const SIDE: usize = 24;
        let glyphs = |index: DatasetIndex, seed: u64| {
            let mut rng = seeded_rng(seed);
            let images = (0..index.images().len())
                .map(|_| synthetic_glyph(&mut rng, SIDE, SIDE))
                .collect();
            Dataset::from_parts(index, images).unwrap()
        };
        let chars = vec![(1..=6).collect::<Vec<u8>>(); 6];
        let data = TrainData {
            train: glyphs(DatasetIndex::synthetic(&[chars.clone(), chars]), 1),
            validation: glyphs(DatasetIndex::synthetic(&[vec![vec![13, 14]; 20]]), 2),
        };
        let mut c = TrainConfig::default_preset();
        c.model = ModelConfig {
            arch: Arch::Koch35,
            input_size: SIDE,
        };
        c.train.objective = Objective::Pairs(PairBatchSpec {
            batch_pairs: 5,
            negatives: NegativeFrom::SameAlphabet,
            source: PairSource::KochSet {
                base_pairs: 8,
                distorted_copies: 2,
            },
        });
        c.data.validation_trials = 20;
        c.train.steps_per_epoch = Some(3);
        c.train.max_steps = Some(5);
        c.train.max_minutes = None;
        c.train.device = "cpu".into();
        c.train.log_every = 1;

        let root = tempfile::tempdir().unwrap();
        let losses = |name: &str, prefetch: Option<usize>| -> Vec<u64> {
            let run = RunDir::create(root.path(), Some(name)).unwrap();
            let options = TrainOptions {
                prefetch_batches: prefetch,
                ..TrainOptions::default()
            };
            let out = train(&run, &c, &data, &options).unwrap();
            assert_eq!(out.reason, StopReason::MaxSteps);
            read_metrics(&run.metrics_path())
                .unwrap()
                .into_iter()
                .filter_map(|l| match l {
                    MetricLine::Train { loss, .. } => Some(loss.to_bits()),
                    _ => None,
                })
                .collect()
        };
        let direct = losses("direct", None);
        assert_eq!(direct.len(), 5);
        assert_eq!(losses("ahead", Some(3)), direct);
        // Early stop (patience 1 after a validation every step): the thread stops too.
        c.train.max_steps = Some(50);
        c.train.validate_every = Some(1);
        c.train.patience = 1;
        let run = RunDir::create(root.path(), Some("early")).unwrap();
        let options = TrainOptions {
            prefetch_batches: Some(2),
            ..TrainOptions::default()
        };
        let out = train(&run, &c, &data, &options).unwrap();
        assert!(out.step < 50);
    }
}
