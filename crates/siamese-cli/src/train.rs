//! `train`: trains the network into a run folder (`runs/<name>/`), or resumes one.
//!
//! The configuration is resolved as: `--preset` (default `default`), then `--config
//! FILE` merged over it, then `--set PATH=VALUE` for any setting, then the few common
//! flags below; the result is saved as the run's `config.json` (`--print-config`
//! shows it and exits). `--resume runs/<name>` reads that file back and continues
//! from the run's `last` checkpoint exactly; only what changes no step's result may
//! change then ([`TrainConfig::RESUMABLE`]: the budget, the device, threads, logging).
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
use siamese_model::Arch;
use siamese_train::{Keep, Preset, RunDir, TrainConfig, TrainData, TrainOptions, train};

use crate::data_source::DataSourceArgs;

/// Where runs go by default.
pub const DEFAULT_RUNS: &str = "runs";

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,

    // ---- run ----
    /// Starting configuration: default (about 30 minutes on a 2-core CPU), long (an
    /// ensemble of four default networks, about 2 hours), small (Koch's recipe on the 35×35 koch35 tower),
    /// paper (Koch et al.'s setup) or reference (the PyTorch reference's).
    #[arg(long, value_name = "NAME", help_heading = "Run")]
    pub preset: Option<Preset>,
    /// A configuration file (JSON, or TOML by extension) merged over the preset; may
    /// give only some fields.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Any setting by its path in the configuration (see --print-config), the value
    /// as JSON or a plain string, e.g. `--set train.optimizer.adam.lr=3e-4`, `--set
    /// train.objective.episodes.way=30`, `--set train.log_every=50`; a field of
    /// another variant switches it, keeping the settings they share like --optimizer
    /// (`--set train.optimizer.adamw.weight_decay=0.01` keeps the learning rate).
    /// Repeatable, applied after --config and before the flags below.
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
    /// Apply Koch's distortions.
    #[arg(long, conflicts_with = "no_distort", help_heading = "Data")]
    pub distort: bool,
    /// Train on the undistorted images.
    #[arg(long, help_heading = "Data")]
    pub no_distort: bool,
    /// Validation trials (Koch: 320).
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub validation_trials: Option<usize>,

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
    /// (N-way one-shot episodes), with its default batches unless the configuration
    /// has it already (shapes through --set, e.g. `train.objective.episodes.way=30`).
    #[arg(long, value_name = "NAME", help_heading = "Training")]
    pub objective: Option<String>,
    /// Optimizer: sgd (Koch's layer-wise schedule), adam or adamw, with its default
    /// settings unless the configuration has it already (Adam and AdamW keep the
    /// settings they share).
    #[arg(long, value_name = "NAME", help_heading = "Training")]
    pub optimizer: Option<String>,
    /// Learning rate: Adam's, or every layer's ηⱼ for SGD.
    #[arg(long, help_heading = "Training")]
    pub lr: Option<f64>,
    /// At most this many epochs.
    #[arg(long, help_heading = "Training")]
    pub epochs: Option<u64>,
    /// Stop after this many steps in all, per network of an ensemble (`default` and
    /// each of `long`'s: as many as fit into 85% of its 30 minutes on this machine,
    /// timed before the run; their cosine learning-rate schedule spans this limit,
    /// so it stretches with it).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub max_steps: Option<u64>,
    /// Stop training after this many minutes, per network of an ensemble (a final
    /// validation and checkpoint follow).
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
    /// Seed of the initialisation, samplers and distortions (of an ensemble's first
    /// network; the others take the next seeds).
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
    /// Train an ensemble of this many networks one after another (seeds `--seed`,
    /// `--seed`+1…, each with the whole configuration, time limit included), scored
    /// together by `eval` and the other commands (1: one network).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub members: Option<u32>,
    /// CPU threads [default: all cores].
    #[arg(long, help_heading = "Training")]
    pub threads: Option<usize>,
    /// Device: auto, cpu, cuda[:N], metal[:N].
    #[arg(long, help_heading = "Training")]
    pub device: Option<String>,
}

impl TrainArgs {
    /// Applies the flags given to `c` (a resume then compares the result with the
    /// run's saved configuration: [`TrainConfig::fixed_changes`]).
    fn apply(&self, c: &mut TrainConfig) -> Result<()> {
        fn set<T: Clone>(flag: &Option<T>, field: &mut T) {
            if let Some(v) = flag {
                *field = v.clone();
            }
        }
        fn set_some<T: Clone>(flag: &Option<T>, field: &mut Option<T>) {
            if flag.is_some() {
                *field = flag.clone();
            }
        }
        // Data.
        set(&self.split, &mut c.data.split);
        if self.distort || self.no_distort {
            c.data.distort = self.distort;
        }
        set(&self.validation_trials, &mut c.data.validation_trials);
        // Model.
        if let Some(arch) = self.arch {
            c.model = siamese_model::ModelConfig::new(arch);
        }
        set(&self.input_size, &mut c.model.input_size);
        set(&self.init, &mut c.train.init);
        // Training.
        let t = &mut c.train;
        if let Some(name) = &self.objective {
            t.objective = t
                .objective
                .switched_to(name)
                .map_err(|e| anyhow::anyhow!("--objective: {e}"))?;
        }
        if let Some(name) = &self.optimizer {
            t.optimizer = t
                .optimizer
                .switched_to(name)
                .map_err(|e| anyhow::anyhow!("--optimizer: {e}"))?;
        }
        if let Some(lr) = self.lr {
            t.optimizer.set_lr(lr);
        }
        set(&self.epochs, &mut t.epochs);
        set_some(&self.max_steps, &mut t.max_steps);
        set_some(&self.max_minutes, &mut t.max_minutes);
        if self.no_time_limit {
            t.max_minutes = None;
        }
        set_some(&self.validate_every, &mut t.validate_every);
        t.validate_at_start |= self.validate_at_start;
        set(&self.patience, &mut t.patience);
        set(&self.seed, &mut t.seed);
        set(&self.members, &mut t.members);
        set_some(&self.threads, &mut t.threads);
        set(&self.device, &mut t.device);
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
    let best_models = RunDir::best_models_in(run.path()).unwrap_or_default();
    if args.json {
        let members: Vec<_> = outcome
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "run": m.run_dir, "reason": m.reason, "step": m.step, "best": m.best,
                })
            })
            .collect();
        let line = serde_json::json!({
            "run": run.path(),
            "reason": outcome.reason,
            "step": outcome.step,
            "epoch": outcome.epoch,
            "last_loss": outcome.last_loss,
            "best": outcome.best,
            "best_model": best_models.iter().find(|p| p.is_file()),
            "best_models": best_models.iter().filter(|p| p.is_file()).collect::<Vec<_>>(),
            "members": members,
        });
        writeln!(out, "{line}")?;
        return Ok(());
    }
    writeln!(out, "run       {}", run.path().display())?;
    for (i, m) in outcome.members.iter().enumerate() {
        let best = m.best.map_or("no validation".into(), |b| {
            format!("{:.2}% validation at step {}", 100.0 * b.accuracy, b.step)
        });
        writeln!(
            out,
            "member {} {}: {} at step {}; best {best}",
            i + 1,
            m.run_dir.display(),
            m.reason.describe(),
            m.step
        )?;
    }
    let what = if outcome.members.is_empty() {
        format!("at step {} (epoch {})", outcome.step, outcome.epoch)
    } else {
        format!("after {} steps in all", outcome.step)
    };
    writeln!(out, "stopped   {} {what}", outcome.reason.describe())?;
    let models: Vec<String> = best_models
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    match outcome.best {
        Some(b) if outcome.members.is_empty() => writeln!(
            out,
            "best      {:.2}% validation accuracy (95% CI {:.1}–{:.1}%) at step {}{}: {}",
            100.0 * b.accuracy,
            100.0 * b.ci95_low,
            100.0 * b.ci95_high,
            b.step,
            match config.train.keep {
                Keep::Final => " (the final weights: train.keep = final)",
                Keep::BestValidation => "",
            },
            models.join(", ")
        )?,
        Some(b) => writeln!(
            out,
            "ensemble  {:.2}% validation accuracy (95% CI {:.1}–{:.1}%) of the {} members' \
             best checkpoints together: {}",
            100.0 * b.accuracy,
            100.0 * b.ci95_low,
            100.0 * b.ci95_high,
            outcome.members.len(),
            models.join(", ")
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
