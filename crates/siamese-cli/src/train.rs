//! `train`: trains the network into a run folder (`runs/<name>/`), or resumes one.
//!
//! The configuration is resolved as: `--preset` (default `default`), then `--config
//! FILE` merged over it, then the flags below; the result is saved as the run's
//! `config.json` (`--print-config` shows it and exits). `--resume runs/<name>` reads
//! that file back and continues from the run's `last` checkpoint exactly; only the
//! budget (`--epochs`, `--max-steps`, `--max-minutes`, `--patience`), `--device`,
//! `--threads`, `--log-every` and `--eval-batch` may change then.
//!
//! Ctrl-C or SIGTERM stops after the current step (or validation) with a checkpoint;
//! a second Ctrl-C quits at once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_data::SplitName;
use siamese_data::sample::NegativeFrom;
use siamese_model::Arch;
use siamese_train::{
    Objective, OptimizerKind, PairSource, Preset, RunDir, TrainConfig, TrainData, TrainOptions,
    train,
};

use crate::data_source::DataSourceArgs;

/// Where runs go by default.
pub const DEFAULT_RUNS: &str = "runs";

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,

    // ---- run ----
    /// Starting configuration: default (about 30 minutes on a 2-core CPU), small (the
    /// default on the 35×35 koch35 tower: ~8× faster steps), paper (Koch et al.'s
    /// setup) or reference (the PyTorch reference's).
    #[arg(long, value_name = "NAME", help_heading = "Run")]
    pub preset: Option<Preset>,
    /// A configuration file (JSON, or TOML by extension) merged over the preset; may
    /// give only some fields.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Any setting by its path in the configuration (see --print-config), the value
    /// as JSON or a plain string, e.g. `--set train.adam.lr=3e-4`, `--set
    /// train.objective.episodes.way=30`; repeatable, applied after --config and
    /// before the other flags.
    #[arg(long = "set", value_name = "PATH=VALUE", help_heading = "Run")]
    pub settings: Vec<String>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", help_heading = "Run", conflicts_with_all = ["preset", "config", "name"])]
    pub resume: Option<PathBuf>,
    /// Name of the run folder [default: the UTC time].
    #[arg(long, help_heading = "Run")]
    pub name: Option<String>,
    /// Folder of the run folders and of the `latest` link.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNS, help_heading = "Run")]
    pub runs: PathBuf,
    /// Print the resolved configuration (JSON) and exit.
    #[arg(long, help_heading = "Run")]
    pub print_config: bool,
    /// Print the outcome as one JSON line.
    #[arg(long, help_heading = "Run")]
    pub json: bool,
    /// Batches made ahead of the steps on a background thread [default: 2 when the
    /// network is on a GPU, 0 on the CPU]. Changes no result.
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub prefetch: Option<usize>,

    // ---- data ----
    /// Split to train on: koch, koch-all-drawers, background-small1, background-small2.
    #[arg(long, help_heading = "Data")]
    pub split: Option<SplitName>,
    /// Negatives from the same alphabet or any alphabet.
    #[arg(long, value_name = "same-alphabet|any-alphabet", value_parser = parse_negatives, help_heading = "Data")]
    pub negatives: Option<NegativeFrom>,
    /// Pairs of the pairs objective: koch-set (Koch's fixed set) or online.
    #[arg(long, value_name = "koch-set|online", value_parser = parse_pairs, help_heading = "Data")]
    pub pairs: Option<PairSource>,
    /// Base pairs of Koch's set.
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub koch_pairs: Option<usize>,
    /// Distorted copies per base pair of Koch's set.
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub koch_copies: Option<usize>,
    /// K: characters per batch of the all-pairs objective.
    #[arg(long, value_name = "K", help_heading = "Data")]
    pub classes: Option<usize>,
    /// M: images per character in a batch of the all-pairs objective.
    #[arg(long, value_name = "M", help_heading = "Data")]
    pub images_per_class: Option<usize>,
    /// Apply Koch's distortions.
    #[arg(long, conflicts_with = "no_distort", help_heading = "Data")]
    pub distort: bool,
    /// Train on the undistorted images.
    #[arg(long, help_heading = "Data")]
    pub no_distort: bool,
    /// Validation trials (Koch: 320).
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub validation_trials: Option<usize>,
    /// Seed of the validation trials.
    #[arg(long, value_name = "SEED", help_heading = "Data")]
    pub validation_seed: Option<u64>,

    // ---- model ----
    /// Network: koch (105×105), koch35 (35×35), conv4 (batch-normalised, 28×28) or
    /// conv-bn-WIDTHxDEPTH (the conv4 family).
    #[arg(long, help_heading = "Model")]
    pub arch: Option<Arch>,
    /// Input side length [default: the architecture's].
    #[arg(long, value_name = "PIXELS", help_heading = "Model")]
    pub input_size: Option<usize>,
    /// Initialisation of a new network: paper (Koch et al.'s) or lecun (fully
    /// connected weights N(0, 1/fan_in), so the sigmoid layer starts unsaturated).
    #[arg(long, value_name = "SCHEME", help_heading = "Model")]
    pub init: Option<siamese_model::InitScheme>,

    // ---- training ----
    /// Objective: pairs (Koch's), all-pairs (every pair of a K×M batch) or episodes
    /// (20-way one-shot episodes, 5 queries, 4 rotations; other shapes through
    /// --config: `[train.objective.episodes]`).
    #[arg(long, value_parser = parse_objective, help_heading = "Training")]
    pub objective: Option<Objective>,
    /// Optimizer: sgd (Koch's layer-wise schedule), adam or adamw.
    #[arg(long, value_parser = parse_optimizer, help_heading = "Training")]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate: Adam's, or every layer's ηⱼ for SGD.
    #[arg(long, help_heading = "Training")]
    pub lr: Option<f64>,
    /// Factor applied to the learning rate(s) each epoch (Koch: 0.99).
    #[arg(long, value_name = "FACTOR", help_heading = "Training")]
    pub lr_decay: Option<f64>,
    /// SGD: every layer's final momentum μⱼ.
    #[arg(long, help_heading = "Training")]
    pub momentum: Option<f64>,
    /// SGD: every layer's L2 weight λⱼ.
    #[arg(long, value_name = "LAMBDA", help_heading = "Training")]
    pub l2: Option<f64>,
    /// SGD: one layer's learning rate, e.g. conv1=0.01 (repeatable; layers conv1..conv4, fc, head).
    #[arg(long, value_name = "LAYER=LR", help_heading = "Training")]
    pub layer_lr: Vec<String>,
    /// SGD: one layer's final momentum, e.g. fc=0.95 (repeatable).
    #[arg(long, value_name = "LAYER=MU", help_heading = "Training")]
    pub layer_momentum: Vec<String>,
    /// SGD: one layer's L2 weight, e.g. conv2=0.001 (repeatable).
    #[arg(long, value_name = "LAYER=LAMBDA", help_heading = "Training")]
    pub layer_l2: Vec<String>,
    /// SGD: momentum of the first epoch (Koch: 0.5).
    #[arg(long, help_heading = "Training")]
    pub momentum_start: Option<f64>,
    /// SGD: epochs for the momentum to rise linearly to μⱼ.
    #[arg(long, value_name = "EPOCHS", help_heading = "Training")]
    pub momentum_ramp_epochs: Option<u64>,
    /// Adam/AdamW: β₁.
    #[arg(long, help_heading = "Training")]
    pub beta1: Option<f64>,
    /// Adam/AdamW: β₂.
    #[arg(long, help_heading = "Training")]
    pub beta2: Option<f64>,
    /// Adam/AdamW: ε.
    #[arg(long, help_heading = "Training")]
    pub eps: Option<f64>,
    /// AdamW: decoupled weight decay.
    #[arg(long, help_heading = "Training")]
    pub weight_decay: Option<f64>,
    /// Pairs per step of the pairs objective (Koch: 128).
    #[arg(long, value_name = "PAIRS", help_heading = "Training")]
    pub batch: Option<usize>,
    /// At most this many epochs.
    #[arg(long, help_heading = "Training")]
    pub epochs: Option<u64>,
    /// Steps per epoch (for Koch's set: default one pass over it).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub steps_per_epoch: Option<u64>,
    /// Stop after this many steps in all.
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub max_steps: Option<u64>,
    /// Stop training after this many minutes (a final validation and checkpoint follow).
    #[arg(long, value_name = "MINUTES", help_heading = "Training")]
    pub max_minutes: Option<f64>,
    /// No time limit (overrides the preset's --max-minutes).
    #[arg(long, conflicts_with = "max_minutes", help_heading = "Training")]
    pub no_time_limit: bool,
    /// Validate every N steps [default: every epoch].
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub validate_every: Option<u64>,
    /// Also validate the initial network before the first step (a baseline).
    #[arg(long, help_heading = "Training")]
    pub validate_at_start: bool,
    /// Stop after this many validations without a new best (0: never).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub patience: Option<u64>,
    /// Also save the last checkpoint every N steps.
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub checkpoint_every: Option<u64>,
    /// A line of metrics.jsonl every N steps.
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub log_every: Option<u64>,
    /// Images per embedding batch of the validation.
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub eval_batch: Option<usize>,
    /// Seed of the initialisation, samplers and distortions.
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
    /// CPU threads [default: all cores].
    #[arg(long, help_heading = "Training")]
    pub threads: Option<usize>,
    /// Device: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, help_heading = "Training")]
    pub device: Option<String>,
}

fn parse_negatives(s: &str) -> Result<NegativeFrom, String> {
    match s {
        "same-alphabet" => Ok(NegativeFrom::SameAlphabet),
        "any-alphabet" => Ok(NegativeFrom::AnyAlphabet),
        _ => Err(format!("expected same-alphabet or any-alphabet, got {s:?}")),
    }
}

fn parse_pairs(s: &str) -> Result<PairSource, String> {
    match s {
        "koch-set" => Ok(PairSource::KochSet),
        "online" => Ok(PairSource::Online),
        _ => Err(format!("expected koch-set or online, got {s:?}")),
    }
}

fn parse_objective(s: &str) -> Result<Objective, String> {
    s.parse()
}

fn parse_optimizer(s: &str) -> Result<OptimizerKind, String> {
    s.parse()
}

impl TrainArgs {
    /// Applies the flags given to `c` (a resume then compares the result with the
    /// run's saved configuration: [`TrainConfig::fixed_changes`]).
    fn apply(&self, c: &mut TrainConfig) -> Result<()> {
        macro_rules! set {
            ($opt:expr, $field:expr) => {
                if let Some(v) = $opt.clone() {
                    $field = v;
                }
            };
        }
        // Data.
        set!(self.split, c.data.split);
        set!(self.negatives, c.data.negatives);
        set!(self.pairs, c.data.pairs);
        set!(self.koch_pairs, c.data.koch_base_pairs);
        set!(self.koch_copies, c.data.koch_distorted_copies);
        set!(self.classes, c.data.classes_per_batch);
        set!(self.images_per_class, c.data.images_per_class);
        if self.distort || self.no_distort {
            c.data.distort = self.distort;
        }
        set!(self.validation_trials, c.data.validation_trials);
        set!(self.validation_seed, c.data.validation_seed);
        // Model.
        if let Some(arch) = self.arch {
            c.model = siamese_model::ModelConfig::new(arch);
        }
        set!(self.input_size, c.model.input_size);
        set!(self.init, c.train.init);
        // Training.
        set!(self.objective, c.train.objective);
        set!(self.optimizer, c.train.optimizer);
        if let Some(lr) = self.lr {
            match c.train.optimizer {
                OptimizerKind::Sgd => c.train.sgd.layers.values_mut().for_each(|h| h.lr = lr),
                OptimizerKind::Adam | OptimizerKind::Adamw => c.train.adam.lr = lr,
            }
        }
        if let Some(d) = self.lr_decay {
            match c.train.optimizer {
                OptimizerKind::Sgd => c.train.sgd.lr_decay = d,
                OptimizerKind::Adam | OptimizerKind::Adamw => c.train.adam.lr_decay = d,
            }
        }
        if let Some(m) = self.momentum {
            c.train.sgd.layers.values_mut().for_each(|h| h.momentum = m);
        }
        if let Some(l2) = self.l2 {
            c.train
                .sgd
                .layers
                .values_mut()
                .for_each(|h| h.weight_decay = l2);
        }
        for (flag, list) in [
            ("--layer-lr", &self.layer_lr),
            ("--layer-momentum", &self.layer_momentum),
            ("--layer-l2", &self.layer_l2),
        ] {
            for item in list {
                let (layer, value) = item
                    .split_once('=')
                    .with_context(|| format!("{flag} {item:?}: expected LAYER=VALUE"))?;
                let value: f64 = value
                    .parse()
                    .with_context(|| format!("{flag} {item:?}: {value:?} is not a number"))?;
                let Some(h) = c.train.sgd.layers.get_mut(layer) else {
                    let known: Vec<&str> = c.train.sgd.layers.keys().map(String::as_str).collect();
                    bail!(
                        "{flag} {item:?}: unknown layer {layer:?} (known: {})",
                        known.join(", ")
                    );
                };
                match flag {
                    "--layer-lr" => h.lr = value,
                    "--layer-momentum" => h.momentum = value,
                    _ => h.weight_decay = value,
                }
            }
            if !list.is_empty() {}
        }
        set!(self.momentum_start, c.train.sgd.momentum_start);
        set!(self.momentum_ramp_epochs, c.train.sgd.momentum_ramp_epochs);
        set!(self.beta1, c.train.adam.beta1);
        set!(self.beta2, c.train.adam.beta2);
        set!(self.eps, c.train.adam.eps);
        set!(self.weight_decay, c.train.adam.weight_decay);
        set!(self.batch, c.train.batch_pairs);
        set!(self.epochs, c.train.epochs);
        if let Some(n) = self.steps_per_epoch {
            c.train.steps_per_epoch = Some(n);
        }
        if let Some(n) = self.max_steps {
            c.train.max_steps = Some(n);
        }
        if let Some(m) = self.max_minutes {
            c.train.max_minutes = Some(m);
        }
        if self.no_time_limit {
            c.train.max_minutes = None;
        }
        if let Some(n) = self.validate_every {
            c.train.validate_every = Some(n);
        }
        if self.validate_at_start {
            c.train.validate_at_start = true;
        }
        set!(self.patience, c.train.patience);
        if let Some(n) = self.checkpoint_every {
            c.train.checkpoint_every = Some(n);
        }
        set!(self.log_every, c.train.log_every);
        set!(self.eval_batch, c.train.eval_batch);
        set!(self.seed, c.train.seed);
        if let Some(n) = self.threads {
            c.train.threads = Some(n);
        }
        set!(self.device, c.train.device);
        Ok(())
    }

    /// The configuration and the run folder of this invocation (the folder is not
    /// created yet for a new run).
    fn resolve(&self) -> Result<(TrainConfig, Option<RunDir>)> {
        if let Some(dir) = &self.resume {
            let run = RunDir::open(dir)?;
            let saved = TrainConfig::load_json(&run.config_path())?;
            let mut config = saved.with_settings(&self.settings)?;
            self.apply(&mut config)?;
            let fixed = config.fixed_changes(&saved);
            if !fixed.is_empty() {
                bail!(
                    "--resume continues a run exactly with its saved configuration ({}); the \
                     flags change {}, which cannot change then (only {} can). Start a new run \
                     instead.",
                    run.config_path().display(),
                    fixed.join(", "),
                    TrainConfig::RESUMABLE.join(", ")
                );
            }
            config.validate()?;
            return Ok((config, Some(run)));
        }
        let preset = self.preset.unwrap_or_default();
        let mut config = match &self.config {
            Some(path) => {
                let config = TrainConfig::from_file_over(preset, path)?;
                if self.preset.is_some_and(|p| p != config.preset) {
                    bail!(
                        "{} starts from the {} preset, --preset says {}: give one of them",
                        path.display(),
                        config.preset.name(),
                        preset.name()
                    );
                }
                config
            }
            None => TrainConfig::preset(preset),
        };
        if !self.settings.is_empty() {
            config = config.with_settings(&self.settings)?;
        }
        self.apply(&mut config)?;
        config.validate().with_context(|| match &self.config {
            Some(path) => format!("the configuration from {} and the flags", path.display()),
            None => "the configuration from the preset and the flags".to_string(),
        })?;
        Ok((config, None))
    }
}

pub fn run(args: &TrainArgs, progress: bool) -> Result<()> {
    let (config, existing) = args.resolve()?;
    if args.print_config {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", config.to_json())?;
        return Ok(());
    }
    // The data first: a missing data set should fail before a run folder exists.
    args.source.ensure(&config.data.split.sets(), progress)?;
    tracing::info!(
        "loading the {} split from {}",
        config.data.split,
        args.source.data.display()
    );
    let data = TrainData::load(&config, &args.source.data).with_context(|| {
        format!(
            "loading the {} split from {}",
            config.data.split,
            args.source.data.display()
        )
    })?;
    let run = match existing {
        Some(run) => {
            run.update_latest()?;
            run
        }
        None => RunDir::create(&args.runs, args.name.as_deref())?,
    };
    tracing::info!("run folder {}", run.path().display());

    let stop = Arc::new(AtomicBool::new(false));
    install_stop_handler(stop.clone());
    let options = TrainOptions {
        progress,
        stop,
        observer: None,
        prefetch_batches: args.prefetch,
    };
    let outcome = train(&run, &config, &data, &options)?;

    let mut out = std::io::stdout().lock();
    let best_model = run.best_model();
    if args.json {
        let line = serde_json::json!({
            "run": run.path(),
            "reason": outcome.reason,
            "step": outcome.step,
            "epoch": outcome.epoch,
            "last_loss": outcome.last_loss,
            "best": outcome.best,
            "best_model": best_model.is_file().then_some(&best_model),
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "run       {}", run.path().display())?;
        writeln!(
            out,
            "stopped   {} at step {} (epoch {})",
            outcome.reason.describe(),
            outcome.step,
            outcome.epoch
        )?;
        match outcome.best {
            Some(b) => writeln!(
                out,
                "best      {:.2}% validation accuracy (95% CI {:.1}–{:.1}%) at step {}: {}",
                100.0 * b.accuracy,
                100.0 * b.ci95_low,
                100.0 * b.ci95_high,
                b.step,
                best_model.display()
            )?,
            None => writeln!(out, "best      none yet (no validation ran)")?,
        }
        if outcome.reason == siamese_train::StopReason::Interrupted {
            writeln!(
                out,
                "resume    siamese-cli train --resume {}",
                run.path().display()
            )?;
        }
    }
    Ok(())
}

/// Ctrl-C and SIGTERM set `stop` (the trainer checkpoints and returns after the
/// current step); a second one exits at once.
fn install_stop_handler(stop: Arc<AtomicBool>) {
    let result = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            tracing::warn!("second interrupt: quitting without a checkpoint");
            std::process::exit(130);
        }
        tracing::warn!(
            "interrupted: stopping after the current step with a checkpoint (again to quit at once)"
        );
    });
    if let Err(e) = result {
        tracing::warn!(
            "cannot catch Ctrl-C ({e}): an interrupt will lose the steps since the last checkpoint"
        );
    }
}
