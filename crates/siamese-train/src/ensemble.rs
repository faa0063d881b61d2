//! Ensembles ([`crate::TrainingConfig::members`]): several networks of one recipe,
//! trained one after another with different seeds, that score together by the mean
//! of their logits. Averaging independently trained networks cancels part of each
//! one's errors: four default networks averaged scored 98.0% on Lake's runs where
//! each alone scored 96.0–98.0% (README, "Results").
//!
//! The run folder of an ensemble holds its `config.json`, one ordinary run folder
//! per member (`member-1/`, `member-2/`…, each with its own `config.json`,
//! checkpoints, metrics and plots) and, once every member is trained,
//! `ensemble.json`: each member's outcome and the ensemble's own validation accuracy
//! (the same trials each member validated on). Resuming trains the members that are
//! not finished, in order; finished ones are kept as they are.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use siamese_eval::{EvalOptions, KOCH_WAY, TestTimeViews, TrialSet, ensemble_scorer, evaluate};
use siamese_model::{SiameseNet, select_device};
use tracing::info;

use crate::TrainError;
use crate::config::TrainConfig;
use crate::data::TrainData;
use crate::run::{BestScore, RunDir, TrainState, write_atomic};
use crate::trainer::{StopReason, TrainOptions, TrainOutcome, train_one};

/// The start of a member's folder name: `member-1`, `member-2`…
pub const MEMBER_PREFIX: &str = "member-";

/// The file of an ensemble's run folder that records its members and its validation.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

impl TrainConfig {
    /// The configuration of member `i` (from 0) of this configuration's ensemble: the
    /// same settings as one network, with the seed `seed + i`.
    pub fn member(&self, i: u32) -> TrainConfig {
        let mut member = self.clone();
        member.train.members = 1;
        member.train.seed = self.train.seed.wrapping_add(u64::from(i));
        member
    }
}

impl RunDir {
    /// The run folder of member `i` (from 0) of this ensemble run, `member-{i+1}`,
    /// created if missing.
    pub fn member(&self, i: u32) -> Result<RunDir, TrainError> {
        let path = self.path().join(format!("{MEMBER_PREFIX}{}", i + 1));
        std::fs::create_dir_all(&path).map_err(TrainError::io("creating", &path))?;
        Ok(RunDir::at(path))
    }

    /// The member folders of the ensemble run folder `dir` that exist, in order
    /// (empty for another folder).
    pub fn member_dirs_in(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut members: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let n = name.strip_prefix(MEMBER_PREFIX)?.parse().ok()?;
                Some((n, p))
            })
            .collect();
        members.sort();
        members.into_iter().map(|(_, p)| p).collect()
    }

    /// The checkpoints that score for the run folder `dir`: its `best` network, or
    /// for an ensemble run each member's, in order. An ensemble with a member that
    /// has not finished training is an error that says what to do.
    pub fn best_models_in(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
        let own = RunDir::best_model_in(dir);
        let config = dir.join("config.json");
        if own.is_file() || !config.is_file() {
            return Ok(vec![own]);
        }
        let members = TrainConfig::load_json(&config)?.train.members;
        if members <= 1 {
            return Ok(vec![own]);
        }
        let folders: Vec<PathBuf> = (1..=members)
            .map(|i| dir.join(format!("{MEMBER_PREFIX}{i}")))
            .collect();
        let unfinished = folders
            .iter()
            .position(|f| !matches!(finished(&RunDir::at(f.clone())), Ok(Some(_))));
        let paths: Vec<PathBuf> = folders.iter().map(|f| RunDir::best_model_in(f)).collect();
        let missing = paths.iter().position(|p| !p.is_file());
        if let Some(i) = unfinished.or(missing) {
            return Err(TrainError::Config(format!(
                "{} is an ensemble of {members} networks whose member {} has not finished \
                 training: finish it with `siamese-cli train --resume {}`, or pass the \
                 finished members' folders one by one ({}/{MEMBER_PREFIX}1 …)",
                dir.display(),
                i + 1,
                dir.display(),
                dir.display()
            )));
        }
        Ok(paths)
    }
}

/// What `ensemble.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleRecord {
    /// Each member's folder (relative to the run folder), stop reason, steps and best
    /// validation.
    pub members: Vec<MemberRecord>,
    /// The ensemble's accuracy on the validation trials, with its 95% interval.
    pub validation: BestScore,
    /// Correct validation trials of the ensemble, of `trials`.
    pub correct: usize,
    pub trials: usize,
}

/// One member in [`EnsembleRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub folder: String,
    pub seed: u64,
    pub reason: StopReason,
    pub steps: u64,
    pub best: Option<BestScore>,
}

/// Trains the members of `config`'s ensemble into `run`, then validates the
/// ensemble. Returns the ensemble's outcome: the last member's stop reason (an
/// interrupted member stops the ensemble there), the members' steps in all, and the
/// ensemble's validation as its best score.
pub(crate) fn train_members(
    run: &RunDir,
    config: &TrainConfig,
    data: &TrainData,
    options: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    write_atomic(&run.config_path(), config.to_json().as_bytes())?;
    let count = config.train.members;
    let mut outcomes = Vec::with_capacity(count as usize);
    for i in 0..count {
        let dir = run.member(i)?;
        let member = member_config(&dir, config.member(i))?;
        if let Some(done) = finished(&dir)? {
            info!(
                "member {}/{count} ({}) finished already ({}): kept",
                i + 1,
                dir.path().display(),
                done.reason.describe()
            );
            outcomes.push(done);
            continue;
        }
        info!(
            "training member {}/{count} (seed {}) into {}",
            i + 1,
            member.train.seed,
            dir.path().display()
        );
        let outcome = train_one(&dir, &member, data, options)?;
        let interrupted = outcome.reason == StopReason::Interrupted;
        outcomes.push(outcome);
        if interrupted {
            info!(
                "continue the ensemble with: siamese-cli train --resume {}",
                run.path().display()
            );
            return Ok(ensemble_outcome(run, outcomes, None));
        }
    }
    let record = validate_ensemble(run, config, data, &outcomes)?;
    let json = serde_json::to_string_pretty(&record).expect("the record serialises");
    write_atomic(&run.path().join(ENSEMBLE_FILE), json.as_bytes())?;
    Ok(ensemble_outcome(run, outcomes, Some(record.validation)))
}

/// The member's configuration: `derived` from the ensemble's, with the step count
/// its earlier invocation fitted to the time (when it was sized by time). A member
/// whose saved configuration differs otherwise cannot continue.
fn member_config(dir: &RunDir, derived: TrainConfig) -> Result<TrainConfig, TrainError> {
    if !dir.config_path().is_file() {
        return Ok(derived);
    }
    let saved = TrainConfig::load_json(&dir.config_path())?;
    let mut member = derived;
    if member.train.steps_sized_by_time() {
        member.train.max_steps = saved.train.max_steps;
    }
    let fixed = member.fixed_changes(&saved);
    if !fixed.is_empty() {
        return Err(TrainError::Resume {
            path: dir.path().to_path_buf(),
            reason: format!(
                "this member's configuration differs from the ensemble's in {}: start a new \
                 run instead",
                fixed.join(", ")
            ),
        });
    }
    Ok(member)
}

/// The outcome of a member that finished (not interrupted), from its `last`
/// checkpoint; `None` when it has not started or not finished.
fn finished(dir: &RunDir) -> Result<Option<TrainOutcome>, TrainError> {
    let Some(last) = dir.checkpoint("last") else {
        return Ok(None);
    };
    let path = last.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(TrainError::io("reading", &path))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Resume {
        path: path.clone(),
        reason: format!("not a checkpoint state: {e}"),
    })?;
    let reason = state
        .finished
        .as_deref()
        .and_then(StopReason::from_recorded);
    Ok(match reason {
        Some(reason) if reason != StopReason::Interrupted => Some(TrainOutcome {
            reason,
            step: state.step,
            epoch: state.epoch,
            best: state.best,
            run_dir: dir.path().to_path_buf(),
            steps_this_call: 0,
            last_loss: None,
            members: Vec::new(),
        }),
        _ => None,
    })
}

/// Scores the members' best networks together on the validation trials the members
/// were validated on.
fn validate_ensemble(
    run: &RunDir,
    config: &TrainConfig,
    data: &TrainData,
    outcomes: &[TrainOutcome],
) -> Result<EnsembleRecord, TrainError> {
    let device = select_device(&config.train.device)?;
    let nets = outcomes
        .iter()
        .map(|o| {
            let path = RunDir::best_model_in(&o.run_dir);
            SiameseNet::load(&path, Some(&config.model), &device).map(|(net, _)| net.detach())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let trials = TrialSet::koch(
        &data.validation,
        KOCH_WAY,
        config.data.validation_trials,
        config.data.validation_seed,
    )?;
    let options = EvalOptions {
        embed_batch: config.train.eval_batch,
        keep_trials: false,
        ..EvalOptions::default()
    };
    let scorer = ensemble_scorer(&nets, "ensemble validation", TestTimeViews::NONE)?;
    let report = evaluate(&scorer, &trials, &options)?;
    let steps = outcomes.iter().map(|o| o.step).sum();
    info!(
        "ensemble of {}: validation accuracy {:.2}% ({}/{}, 95% CI {:.1}–{:.1}%)",
        nets.len(),
        100.0 * report.accuracy,
        report.correct,
        report.trials,
        100.0 * report.ci95_low,
        100.0 * report.ci95_high
    );
    let members = outcomes
        .iter()
        .zip(0u32..)
        .map(|(o, i)| MemberRecord {
            folder: o
                .run_dir
                .strip_prefix(run.path())
                .unwrap_or(&o.run_dir)
                .display()
                .to_string(),
            seed: config.member(i).train.seed,
            reason: o.reason,
            steps: o.step,
            best: o.best,
        })
        .collect();
    Ok(EnsembleRecord {
        members,
        validation: BestScore {
            step: steps,
            epoch: 0,
            accuracy: report.accuracy,
            ci95_low: report.ci95_low,
            ci95_high: report.ci95_high,
        },
        correct: report.correct,
        trials: report.trials,
    })
}

fn ensemble_outcome(
    run: &RunDir,
    members: Vec<TrainOutcome>,
    best: Option<BestScore>,
) -> TrainOutcome {
    let last = members.last();
    TrainOutcome {
        reason: last.map_or(StopReason::MaxSteps, |o| o.reason),
        step: members.iter().map(|o| o.step).sum(),
        epoch: last.map_or(0, |o| o.epoch),
        best,
        run_dir: run.path().to_path_buf(),
        steps_this_call: members.iter().map(|o| o.steps_this_call).sum(),
        last_loss: last.and_then(|o| o.last_loss),
        members,
    }
}
