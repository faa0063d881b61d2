//! Fitting a run's length to its time budget ([`TrainingConfig::fit_steps_to_time`]):
//! a few steps of a throwaway copy of the run are timed on this machine, and
//! `train.max_steps` becomes the number of steps that fit into `train.max_minutes`.
//! A schedule that spans `max_steps` (the default preset's cosine) then ends within
//! the time on a slow machine and uses a fast one's whole budget. The number is
//! written into the run's `config.json`, so the run is reproduced, and resumed, with
//! it like any other.

use std::time::Instant;

use siamese_model::{SiameseNet, select_device};
use tracing::info;

use crate::TrainError;
use crate::config::{TrainConfig, TrainingConfig};
use crate::data::{TrainData, batch_sampler};
use crate::schedule::RunOptimizer;

/// Steps run before the timing starts (buffers, caches, the allocator's first pages).
const WARMUP_STEPS: u64 = 3;
/// Steps timed: 20 timed a 2-core machine's step within ±10% of its mean over the
/// whole run (74.5 ms against 70.0, 65.1 against 71); 50 reduce the sampling noise.
const TIMED_STEPS: u64 = 50;
/// Why a run to be sized by time cannot be (also [`TrainConfig::validate`]'s word).
pub(crate) const NO_TIME_TO_FIT: &str = "train.fit_steps_to_time needs train.max_minutes (the \
     time to fit the steps into): give a time limit, or a step count (train.max_steps, \
     --max-steps)";
/// Share of the time budget planned for the steps; the rest covers the validations,
/// checkpoints, the calibration, the timing's error and the machine's drift.
pub const BUDGET_SHARE: f64 = 0.85;

impl TrainingConfig {
    /// Whether this run's length is to be measured ([`crate::sizing`]): asked for,
    /// and no `max_steps` given (an explicit step count always wins).
    pub fn steps_sized_by_time(&self) -> bool {
        self.fit_steps_to_time && self.max_steps.is_none()
    }
}

/// The number of steps of `seconds_per_step` that fit into [`BUDGET_SHARE`] of
/// `minutes`, less the seconds already spent, rounded down to a multiple of
/// `interval` (the validation interval, so that the last step is validated), and at
/// least one interval.
pub fn steps_for_budget(
    seconds_per_step: f64,
    minutes: f64,
    spent_seconds: f64,
    interval: u64,
) -> u64 {
    let interval = interval.max(1);
    let seconds = (minutes * 60.0 * BUDGET_SHARE - spent_seconds).max(0.0);
    let steps = (seconds / seconds_per_step.max(1e-9)).floor();
    let intervals = (steps / interval as f64).floor().max(1.0);
    // A float far beyond any real run saturates rather than wrapping.
    (intervals as u64).saturating_mul(interval)
}

/// `config` with `train.max_steps` measured on this machine if
/// [`TrainingConfig::steps_sized_by_time`], else unchanged. The timed steps run on a
/// throwaway network and optimizer, so the run itself is the same as one given the
/// chosen `max_steps` from the start.
pub fn fit_steps_to_time(
    config: &TrainConfig,
    data: &TrainData,
) -> Result<TrainConfig, TrainError> {
    let t = &config.train;
    if !t.steps_sized_by_time() {
        return Ok(config.clone());
    }
    let minutes = t
        .max_minutes
        .ok_or_else(|| TrainError::Config(NO_TIME_TO_FIT.into()))?;
    let started = Instant::now();
    let device = select_device(&t.device)?;
    data.check_size(config.model.input_size)?;
    let (net, varmap) = SiameseNet::init_with(config.model, t.init, t.seed, &device)?;
    let mut optimizer = RunOptimizer::new(&t.optimizer, &net, &varmap)?;
    let mut sampler = batch_sampler(config, &data.train)?;
    let mut timed = 0.0;
    for step in 0..WARMUP_STEPS + TIMED_STEPS {
        let tick = Instant::now();
        optimizer.set_position(0, t.lr_schedule.factor(step, Some(u64::MAX)));
        let batch = sampler.batch(&data.train, step, &device)?;
        let loss = t.objective.loss(&net, &batch)?;
        // Read like the loop reads it (which also waits for a GPU's queued work).
        loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        optimizer.backward_step(&loss)?;
        if step >= WARMUP_STEPS {
            timed += tick.elapsed().as_secs_f64();
        }
    }
    let seconds_per_step = timed / TIMED_STEPS as f64;
    let interval = t.validate_every.or(t.steps_per_epoch).unwrap_or(1).max(1);
    let timing_seconds = started.elapsed().as_secs_f64();
    let steps = steps_for_budget(seconds_per_step, minutes, timing_seconds, interval);
    info!(
        "timed {TIMED_STEPS} steps at {:.1} ms each: {steps} steps fit into {:.0}% of the \
         {minutes} minutes (train.max_steps = {steps} in the run's config.json)",
        1000.0 * seconds_per_step,
        100.0 * BUDGET_SHARE,
    );
    let mut sized = config.clone();
    sized.train.max_steps = Some(steps);
    Ok(sized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_cut_into_whole_intervals() {
        // 30 minutes, 85% of them: 1,530 s; less 30 s spent: 1,500 s at 0.1 s a step
        // is 15,000 steps, a multiple of 500.
        assert_eq!(steps_for_budget(0.1, 30.0, 30.0, 500), 15_000);
        // 0.15 s a step: 10,000 steps; 0.14 s: 10,714, down to 10,500.
        assert_eq!(steps_for_budget(0.15, 30.0, 30.0, 500), 10_000);
        assert_eq!(steps_for_budget(0.14, 30.0, 30.0, 500), 10_500);
        // Too slow for even one interval: one interval all the same.
        assert_eq!(steps_for_budget(100.0, 1.0, 0.0, 500), 500);
        // A budget already spent.
        assert_eq!(steps_for_budget(0.1, 0.1, 100.0, 50), 50);
        // An interval of 0 counts as 1.
        assert_eq!(steps_for_budget(1.0, 1.0, 0.0, 0), 51);
    }
}
