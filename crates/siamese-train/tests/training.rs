//! End-to-end runs of the trainer on a tiny synthetic problem: the koch35 tower on
//! 24×24 synthetic glyphs (its last feature map is then 1×1, so the whole network has
//! about 0.8M parameters and a checkpoint a few MB), a few steps each.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use siamese_data::augment::synthetic_glyph;
use siamese_data::sample::NegativeFrom;
use siamese_data::{Dataset, DatasetIndex, seeded_rng};
use siamese_model::{Arch, ModelConfig};
use siamese_train::metrics::{MetricLine, read_metrics};
use siamese_train::{
    AdamSettings, ClassBatchSpec, EpisodeObjective, Keep, LrSchedule, Objective, Optimizer,
    PairBatchSpec, PairSource, RunDir, SgdSchedule, StepReport, StopReason, TrainConfig, TrainData,
    TrainError, TrainOptions, TrainState, WeightAverage, train,
};

const SIDE: usize = 24;

fn glyphs(index: DatasetIndex, seed: u64) -> Dataset {
    let mut rng = seeded_rng(seed);
    let images = (0..index.images().len())
        .map(|_| synthetic_glyph(&mut rng, SIDE, SIDE))
        .collect();
    Dataset::from_parts(index, images).unwrap()
}

/// Train: 2 alphabets × 6 characters × 6 drawers; validation: one alphabet of 20
/// characters by 2 drawers (one 20-way run).
fn tiny_data() -> TrainData {
    let chars = vec![(1..=6).collect::<Vec<u8>>(); 6];
    let train = glyphs(DatasetIndex::synthetic(&[chars.clone(), chars]), 1);
    let validation = glyphs(DatasetIndex::synthetic(&[vec![vec![13, 14]; 20]]), 2);
    TrainData { train, validation }
}

fn tiny_config() -> TrainConfig {
    let mut c = TrainConfig::small();
    c.model = ModelConfig {
        arch: Arch::Koch35,
        input_size: SIDE,
    };
    c.train.objective = Objective::AllPairs(ClassBatchSpec {
        classes_per_batch: 3,
        images_per_class: 2,
        negatives: NegativeFrom::SameAlphabet,
    });
    c.data.validation_trials = 20;
    c.train.steps_per_epoch = Some(2);
    c.train.max_steps = Some(6);
    c.train.max_minutes = None;
    c.train.device = "cpu".into();
    c.train.log_every = 1;
    c
}

/// The paper's setup in miniature: SGD with Koch's schedule on a fixed pair set of
/// 8 × 3 entries, 5 pairs per step (so 5 steps per epoch, and passes over the set that
/// straddle steps).
fn tiny_paper_config() -> TrainConfig {
    let mut c = tiny_config();
    c.train.objective = Objective::Pairs(PairBatchSpec {
        batch_pairs: 5,
        negatives: NegativeFrom::SameAlphabet,
        source: PairSource::KochSet {
            base_pairs: 8,
            distorted_copies: 2,
        },
    });
    c.train.optimizer = Optimizer::Sgd(SgdSchedule {
        momentum_ramp_epochs: 2,
        lr_decay: 0.5,
        ..SgdSchedule::default()
    });
    c.train.steps_per_epoch = None;
    c.train.max_steps = Some(8);
    c
}

/// The default recipe in miniature: a batch-normalised tower (8 filters, 2 blocks)
/// trained on 3-way episodes with 2 queries, rotations and mirror images as classes, Koch's
/// distortions, the balanced BCE term, the learning rate halved every 2 steps, and
/// the calibration at the end.
fn tiny_episodes_config() -> TrainConfig {
    let mut c = tiny_config();
    c.model = ModelConfig {
        arch: Arch::ConvBn { width: 8, depth: 2 },
        input_size: SIDE,
    };
    c.data.distort = true;
    c.train.objective = Objective::Episodes(EpisodeObjective {
        way: 3,
        queries: 2,
        rotations: 4,
        mirror: true,
        within_alphabet: 0.5,
        bce_weight: 0.5,
    });
    c.train.optimizer = Optimizer::Adam(AdamSettings {
        lr: 1e-3,
        ..AdamSettings::default()
    });
    c.train.lr_schedule = LrSchedule::Step {
        every: 2,
        factor: 0.5,
        warmup: 1,
    };
    c.train.calibrate = true;
    c
}

fn options() -> TrainOptions {
    TrainOptions::default()
}

fn train_losses(run: &Path) -> Vec<(u64, f64)> {
    read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect()
}

fn state(dir: &Path) -> TrainState {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn resume_is_exact(config: TrainConfig, split_at: u64) {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let total = config.train.max_steps.unwrap();

    let straight = RunDir::create(root.path(), Some("straight")).unwrap();
    let out = train(&straight, &config, &data, &options()).unwrap();
    assert_eq!((out.reason, out.step), (StopReason::MaxSteps, total));

    let parts = RunDir::create(root.path(), Some("parts")).unwrap();
    let mut first = config.clone();
    first.train.max_steps = Some(split_at);
    let out = train(&parts, &first, &data, &options()).unwrap();
    assert_eq!((out.reason, out.step), (StopReason::MaxSteps, split_at));
    assert_eq!(state(&parts.last_dir()).step, split_at);
    // Resume from the folder, as `--resume` does, with the budget raised.
    let reopened = RunDir::open(parts.path()).unwrap();
    let mut resumed = TrainConfig::load_json(&reopened.config_path()).unwrap();
    assert_eq!(resumed, first);
    resumed.train.max_steps = Some(total);
    let out = train(&reopened, &resumed, &data, &options()).unwrap();
    assert_eq!((out.step, out.steps_this_call), (total, total - split_at));

    let a = train_losses(straight.path());
    let b = train_losses(parts.path());
    assert_eq!(a.len() as u64, total);
    let steps: Vec<u64> = b.iter().map(|l| l.0).collect();
    assert_eq!(steps, (1..=total).collect::<Vec<_>>());
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.to_bits(), y.to_bits(), "step {s}: {x} vs {y}");
    }
    assert!(a.iter().all(|l| l.1.is_finite() && l.1 > 0.0));
    assert_eq!(
        weights(&straight.last_dir().join("model.safetensors")),
        weights(&parts.last_dir().join("model.safetensors"))
    );
    assert_eq!(
        weights(&straight.last_dir().join("optimizer.safetensors")),
        weights(&parts.last_dir().join("optimizer.safetensors"))
    );
    let average = siamese_train::run::AVERAGE_FILE;
    let averages = config.train.weight_average != WeightAverage::None;
    assert_eq!(straight.last_dir().join(average).exists(), averages);
    if averages {
        assert_eq!(
            weights(&straight.last_dir().join(average)),
            weights(&parts.last_dir().join(average))
        );
    }
}

#[test]
fn all_pairs_with_adam_resumes_exactly() {
    resume_is_exact(tiny_config(), 3);
}

#[test]
fn episodes_on_a_batch_normalised_tower_resume_exactly() {
    // The running statistics are in the compared checkpoints.
    resume_is_exact(tiny_episodes_config(), 3);
}

/// The new tower trains a few steps, its best checkpoint holds the running
/// statistics and a calibrated head, and it evaluates in inference mode to the
/// validation accuracy the trainer recorded.
#[test]
fn a_batch_normalised_tower_trains_calibrates_and_evaluates() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let config = tiny_episodes_config();
    let run = RunDir::create(root.path(), Some("bn")).unwrap();
    let out = train(&run, &config, &data, &options()).unwrap();
    let best = out.best.expect("validated");
    let path = run.best_dir().join("model.safetensors");
    let info = siamese_model::read_checkpoint_info(&path).unwrap();
    let calibration = &info.provenance["calibration"];
    assert!(
        calibration["scale"].as_f64().unwrap() > 0.0,
        "{calibration}"
    );
    let names: Vec<String> = weights(&path).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"tower.block2.bn.running_var".to_string()),
        "{names:?}"
    );
    let (net, _) =
        siamese_model::SiameseNet::load(&path, Some(&config.model), &candle_core::Device::Cpu)
            .unwrap();
    // Trained statistics, not the initial ones.
    assert!(
        net.running_stats()
            .iter()
            .all(|s| s.var.iter().any(|&v| v != 1.0))
    );
    assert_eq!(evaluate_best(&path, &config, &data), best.accuracy);
}

/// A run sized by time times its steps first, writes the step count it chose into
/// its `config.json`, and then trains exactly what a run given that count trains.
#[test]
fn a_run_sized_by_time_records_its_steps_and_trains_like_a_fixed_run() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_episodes_config();
    config.train.lr_schedule = LrSchedule::Cosine {
        steps: None,
        min_factor: 0.1,
        warmup: 0,
    };
    config.train.max_steps = None;
    config.train.fit_steps_to_time = true;
    config.train.validate_every = Some(20);
    // 1.2 seconds: some hundreds of the tiny tower's steps, or at least one interval.
    config.train.max_minutes = Some(0.02);
    config.validate().unwrap();
    let sized = RunDir::create(root.path(), Some("sized")).unwrap();
    let out = train(&sized, &config, &data, &options()).unwrap();
    let saved = TrainConfig::load_json(&sized.config_path()).unwrap();
    let steps = saved
        .train
        .max_steps
        .expect("the chosen step count is saved");
    assert!(steps >= 20 && steps.is_multiple_of(20), "{steps}");
    assert!(saved.train.fit_steps_to_time);
    // The run stops at the count (unless the guard stopped a slow machine first).
    assert!(out.step <= steps);
    let mut fixed = config.clone();
    fixed.train.max_steps = Some(out.step);
    fixed.train.lr_schedule = LrSchedule::Cosine {
        steps: Some(steps),
        min_factor: 0.1,
        warmup: 0,
    };
    fixed.train.max_minutes = None;
    let again = RunDir::create(root.path(), Some("fixed")).unwrap();
    train(&again, &fixed, &data, &options()).unwrap();
    assert_eq!(train_losses(sized.path()), train_losses(again.path()));
    // Without a time to fit into, the configuration is refused and says why.
    config.train.max_minutes = None;
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("fit_steps_to_time") && err.contains("max_minutes"),
        "{err}"
    );
}

#[test]
fn weight_averaging_resumes_exactly() {
    let mut config = tiny_episodes_config();
    config.train.weight_average = WeightAverage::Ema { decay: 0.9 };
    resume_is_exact(config, 3);
}

/// The episodes run with averaged weights, no calibration, validated every
/// `validate_every` steps.
fn averaged_episodes_config(validate_every: u64) -> TrainConfig {
    let mut config = tiny_episodes_config();
    config.train.weight_average = WeightAverage::Ema { decay: 0.9 };
    config.train.calibrate = false;
    config.train.validate_every = Some(validate_every);
    config
}

/// With weight averaging, validation scores the averaged weights and `best` keeps
/// them: a best checkpoint from the last step is the `last` checkpoint's average, not
/// its raw weights, and evaluates to the recorded validation accuracy.
#[test]
fn best_keeps_the_averaged_weights() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let config = averaged_episodes_config(6);
    let run = RunDir::create(root.path(), Some("ema")).unwrap();
    let out = train(&run, &config, &data, &options()).unwrap();
    let best = out.best.expect("validated");
    assert_eq!(best.step, 6);
    let best_path = run.best_dir().join("model.safetensors");
    let average = weights(&run.last_dir().join(siamese_train::run::AVERAGE_FILE));
    assert_eq!(weights(&best_path), average);
    assert_ne!(weights(&run.last_dir().join("model.safetensors")), average);
    assert_eq!(evaluate_best(&best_path, &config, &data), best.accuracy);
}

/// `train.keep`: `best-validation` keeps the weights of the first validation with
/// the highest accuracy; `final` the (averaged) weights training ended with, which
/// are the `last` checkpoint's average and score what the last validation recorded.
#[test]
fn keep_final_keeps_the_weights_training_ended_with() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = averaged_episodes_config(1);
    config.train.max_steps = Some(8);
    config.data.validation_trials = 60;
    let mut kept = Vec::new();
    for keep in [Keep::BestValidation, Keep::Final] {
        config.train.keep = keep;
        let run = RunDir::create(root.path(), Some(&format!("{keep:?}"))).unwrap();
        let out = train(&run, &config, &data, &options()).unwrap();
        let validations: Vec<(u64, f64)> = read_metrics(&run.path().join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                MetricLine::Validation { step, accuracy, .. } => Some((step, accuracy)),
                _ => None,
            })
            .collect();
        assert_eq!(validations.len(), 8, "{keep:?}");
        let top = validations.iter().map(|v| v.1).fold(f64::MIN, f64::max);
        let first_top = validations.iter().find(|v| v.1 == top).unwrap().0;
        let best = out.best.expect("validated");
        assert_eq!(state(&run.last_dir()).best.unwrap().step, best.step);
        let best_path = run.best_dir().join("model.safetensors");
        match keep {
            Keep::BestValidation => assert_eq!((best.step, best.accuracy), (first_top, top)),
            Keep::Final => {
                assert_eq!((best.step, best.accuracy), validations[7]);
                let average = weights(&run.last_dir().join(siamese_train::run::AVERAGE_FILE));
                assert_eq!(weights(&best_path), average);
            }
        }
        assert_eq!(evaluate_best(&best_path, &config, &data), best.accuracy);
        kept.push((best.step, weights(&best_path)));
    }
    // This seed's best validation is not its last, so the two rules keep different
    // weights (the runs are otherwise identical).
    assert_ne!(kept[0].0, kept[1].0);
    assert_ne!(kept[0].1, kept[1].1);
}

/// Validation accuracy of the checkpoint at `path`, on the validation trials of
/// `config`, in inference mode.
fn evaluate_best(path: &Path, config: &TrainConfig, data: &TrainData) -> f64 {
    let (net, _) =
        siamese_model::SiameseNet::load(path, Some(&config.model), &candle_core::Device::Cpu)
            .unwrap();
    let trials = siamese_eval::TrialSet::koch(
        &data.validation,
        siamese_eval::KOCH_WAY,
        config.data.validation_trials,
        config.data.validation_seed,
    )
    .unwrap();
    siamese_eval::evaluate(
        &siamese_eval::siamese_scorer(&net, "best"),
        &trials,
        &siamese_eval::EvalOptions::default(),
    )
    .unwrap()
    .accuracy
}

#[test]
fn koch_set_with_layerwise_sgd_resumes_exactly() {
    // Split inside epoch 0; the run crosses into epoch 1 (new lr and momentum) and
    // into the second pass over the set.
    resume_is_exact(tiny_paper_config(), 4);
}

#[test]
fn a_run_folder_holds_everything() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.validate_at_start = true;
    let run = RunDir::create(root.path(), None).unwrap();
    let out = train(&run, &config, &data, &options()).unwrap();
    assert_eq!(out.step, 6);
    let dir = run.path();
    assert_eq!(
        TrainConfig::load_json(&dir.join("config.json")).unwrap(),
        config
    );
    // metrics.jsonl: every line parses; train lines for each step, a validation of the
    // initial network and one at the end of each 2-step epoch.
    let lines = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let vals: Vec<u64> = lines
        .iter()
        .filter(|l| matches!(l, MetricLine::Validation { .. }))
        .map(MetricLine::step)
        .collect();
    assert_eq!(vals, [0, 2, 4, 6]);
    for l in &lines {
        match l {
            MetricLine::Train {
                lr, pairs_per_s, ..
            } => {
                assert!(matches!(config.train.optimizer, Optimizer::Adam(a) if a.lr == *lr));
                assert!(*pairs_per_s > 0.0);
            }
            MetricLine::Validation {
                accuracy,
                ci95_low,
                ci95_high,
                trials,
                ..
            } => {
                assert_eq!(*trials, 20);
                assert!(ci95_low <= accuracy && accuracy <= ci95_high);
            }
        }
    }
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["kind"].is_string() && v["step"].is_u64(), "{line}");
    }
    // Checkpoints: best is a real copy on disk, with the state of its step.
    let best = out.best.unwrap();
    let best_state = state(&run.best_dir());
    assert_eq!(best_state.step, best.step);
    let saved = best_state.best.unwrap();
    assert_eq!((saved.step, saved.accuracy), (best.step, best.accuracy));
    assert_eq!(state(&run.last_dir()).step, 6);
    for ckpt in [run.best_dir(), run.last_dir()] {
        let info = siamese_model::read_checkpoint_info(ckpt.join("model.safetensors")).unwrap();
        assert_eq!(info.config, config.model);
        assert!(ckpt.join("optimizer.safetensors").is_file());
    }
    // The latest link, and the plots.
    assert_eq!(
        std::fs::canonicalize(root.path().join("latest")).unwrap(),
        std::fs::canonicalize(dir).unwrap()
    );
    for png in ["loss.png", "validation.png"] {
        let img = image::open(dir.join(png)).unwrap();
        assert!(img.width() > 100 && img.height() > 100);
    }
    // No temporary files left behind.
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "{name}");
    }
}

#[test]
fn stop_flag_checkpoints_and_resume_finishes() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.steps_per_epoch = Some(10);
    let run = RunDir::create(root.path(), Some("stopped")).unwrap();
    let mut opts = options();
    let stop = opts.stop.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    opts.observer = Some(Arc::new(move |r: &StepReport| {
        log.lock().unwrap().push(r.step);
        if r.step == 2 {
            stop.store(true, Ordering::SeqCst);
        }
    }));
    let out = train(&run, &config, &data, &opts).unwrap();
    assert_eq!((out.reason, out.step), (StopReason::Interrupted, 2));
    assert_eq!(*seen.lock().unwrap(), [1, 2]);
    assert_eq!(state(&run.last_dir()).step, 2);
    let out = train(&run, &config, &data, &options()).unwrap();
    assert_eq!((out.reason, out.step), (StopReason::MaxSteps, 6));
}

#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_paper_config();
    // An absurd learning rate: the first step is finite, the weights then explode.
    config.train.optimizer.set_lr(1e30);
    config.train.checkpoint_every = Some(1);
    config.train.max_steps = Some(8);
    let run = RunDir::create(root.path(), Some("nan")).unwrap();
    let err = train(&run, &config, &data, &options()).unwrap_err();
    let TrainError::NonFiniteLoss {
        step, last_good, ..
    } = &err
    else {
        panic!("expected a non-finite loss, got {err}");
    };
    let message = err.to_string();
    assert!(message.contains("training stopped"), "{message}");
    let last = last_good.clone().expect("a checkpoint was written before");
    assert!(message.contains(&last.display().to_string()), "{message}");
    let kept = state(&last);
    assert!(kept.step < *step, "{} vs {step}", kept.step);
    for (name, values) in weights(&last.join("model.safetensors")) {
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
    let losses = train_losses(run.path());
    assert!(losses.iter().all(|l| l.1.is_finite()));
}

#[test]
fn early_stopping_ends_a_run() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_config();
    config.train.validate_every = Some(1);
    config.train.patience = 1;
    config.train.max_steps = Some(40);
    let run = RunDir::create(root.path(), Some("patience")).unwrap();
    let out = train(&run, &config, &data, &options()).unwrap();
    assert_eq!(out.reason, StopReason::EarlyStopping);
    assert!(out.step < 40);
    // The last validation brought no new best; the best checkpoint is older.
    let lines = read_metrics(&run.metrics_path()).unwrap();
    let Some(MetricLine::Validation { best, step, .. }) = lines.last() else {
        panic!("the run ends with a validation");
    };
    assert!(!best);
    assert_eq!(*step, out.step);
    assert!(state(&run.best_dir()).step < out.step);
    assert_eq!(state(&run.last_dir()).validations_since_best, 1);
    // Resuming an early-stopped run stops at once.
    let again = train(&run, &config, &data, &options()).unwrap();
    assert_eq!(
        (again.reason, again.steps_this_call),
        (StopReason::EarlyStopping, 0)
    );
}

#[test]
fn data_is_shrunk_to_a_smaller_network_input() {
    let data = tiny_data();
    let fitted = data.clone().fit_to(SIDE / 2).unwrap();
    for (part, fitted) in [
        (&data.train, &fitted.train),
        (&data.validation, &fitted.validation),
    ] {
        assert_eq!(fitted.index().images(), part.index().images());
        let by_hand: Vec<_> = part.images().iter().map(|i| i.shrink(2).unwrap()).collect();
        assert_eq!(fitted.images(), &by_hand[..]);
        assert!(fitted.images().iter().all(|i| i.width() == SIDE / 2));
    }
    let same = data.clone().fit_to(SIDE).unwrap();
    assert_eq!(same.train.images(), data.train.images());
    // Not a whole factor: area resampling.
    let area = data.clone().fit_to(SIDE - 5).unwrap();
    assert!(area.train.images().iter().all(|i| i.width() == SIDE - 5));
    assert_eq!(
        area.train.images()[3],
        data.train.images()[3]
            .resize_area(SIDE - 5, SIDE - 5)
            .unwrap()
    );
    for bad in [2 * SIDE, 0] {
        let Err(TrainError::Config(msg)) = data.clone().fit_to(bad) else {
            panic!("input size {bad} accepted");
        };
        assert!(msg.contains("model.input_size"), "{msg}");
    }
}

#[test]
fn an_ensemble_trains_its_members_validates_them_together_and_resumes() {
    let data = tiny_data();
    let root = tempfile::tempdir().unwrap();
    let mut config = tiny_episodes_config();
    config.train.calibrate = false;
    config.train.max_steps = Some(4);
    config.train.seed = 5;
    config.train.members = 2;

    // Interrupted at the second member's second step.
    let run = RunDir::create(root.path(), Some("ensemble")).unwrap();
    let mut opts = options();
    let stop = opts.stop.clone();
    let calls = Arc::new(Mutex::new(0u64));
    let counted = calls.clone();
    opts.observer = Some(Arc::new(move |_: &StepReport| {
        let mut n = counted.lock().unwrap();
        *n += 1;
        if *n == 6 {
            stop.store(true, Ordering::SeqCst);
        }
    }));
    let out = train(&run, &config, &data, &opts).unwrap();
    assert_eq!(
        (out.reason, out.step, out.best),
        (StopReason::Interrupted, 6, None)
    );
    let steps: Vec<(StopReason, u64)> = out.members.iter().map(|m| (m.reason, m.step)).collect();
    assert_eq!(
        steps,
        [(StopReason::MaxSteps, 4), (StopReason::Interrupted, 2)]
    );
    assert!(!run.path().join(siamese_train::ENSEMBLE_FILE).exists());
    let err = RunDir::best_models_in(run.path()).unwrap_err();
    assert!(err.to_string().contains("member 2"), "{err}");

    // Resumed as `--resume` does: the first member is kept, the second finishes.
    let reopened = RunDir::open(run.path()).unwrap();
    let saved = TrainConfig::load_json(&reopened.config_path()).unwrap();
    assert_eq!(saved, config);
    let out = train(&reopened, &saved, &data, &options()).unwrap();
    assert_eq!(
        (out.reason, out.step, out.steps_this_call),
        (StopReason::MaxSteps, 8, 2)
    );
    let best = out.best.expect("the ensemble's validation");
    assert!((0.0..=1.0).contains(&best.accuracy));
    let record: siamese_train::EnsembleRecord = serde_json::from_str(
        &std::fs::read_to_string(run.path().join(siamese_train::ENSEMBLE_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(record.validation.accuracy, best.accuracy);
    assert_eq!(record.trials, config.data.validation_trials);
    assert_eq!(record.correct as f64 / record.trials as f64, best.accuracy);
    let seeds: Vec<u64> = record.members.iter().map(|m| m.seed).collect();
    assert_eq!(seeds, [5, 6]);
    let models = RunDir::best_models_in(run.path()).unwrap();
    assert_eq!(
        models,
        [1, 2].map(|i| RunDir::best_model_in(&run.path().join(format!("member-{i}"))))
    );

    // Each member is the run of one network with its seed, step for step.
    for (i, seed) in [(1, 5), (2, 6)] {
        let mut one = config.clone();
        one.train.members = 1;
        one.train.seed = seed;
        let alone = RunDir::create(root.path(), Some(&format!("alone-{seed}"))).unwrap();
        train(&alone, &one, &data, &options()).unwrap();
        let member = run.path().join(format!("member-{i}"));
        assert_eq!(
            train_losses(&member),
            train_losses(alone.path()),
            "member {i}"
        );
        assert_eq!(
            weights(&member.join("last/model.safetensors")),
            weights(&alone.last_dir().join("model.safetensors"))
        );
    }
}
