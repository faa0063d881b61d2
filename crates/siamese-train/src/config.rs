//! The configuration of a training run: one struct per stage (data, model, training),
//! the presets, and reading configuration files.
//!
//! A configuration is resolved as: a [`Preset`], then a configuration file merged
//! over it (JSON or TOML; a file may give only some fields, nested tables are merged
//! field by field, unknown fields are errors), then command-line flags. The resolved
//! configuration is saved as `config.json` in the run folder.

use std::path::Path;

use serde::{Deserialize, Serialize};
use siamese_data::SplitName;
use siamese_data::augment::KochDistortion;
use siamese_data::sample::NegativeFrom;
use siamese_model::{Arch, InitScheme, ModelConfig};

use crate::TrainError;
use crate::schedule::{AdamSettings, LrSchedule, OptimizerKind, SgdSchedule};

/// A whole run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The preset this configuration started from (for the record).
    pub preset: Preset,
    pub data: DataConfig,
    /// The network (`{"arch": "koch", "input_size": 105}`).
    pub model: ModelConfig,
    pub train: TrainingConfig,
}

/// The starting points of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Sized for a 2-core CPU in about 30 minutes: the batch-normalised Conv-4 tower on
    /// 28×28 images, trained on 20-way one-shot episodes with Adam. See
    /// [`TrainConfig::default_preset`].
    #[default]
    Default,
    /// Koch et al.'s setup: 150k pairs × 8 distortions, drawers 1–12, layer-wise SGD
    /// with Koch's schedule, batch 128, validation each epoch, patience 20, at most
    /// 200 epochs.
    Paper,
    /// The PyTorch reference's setup: Adam 6·10⁻⁵, all 20 drawers, online balanced
    /// pairs, batch 128.
    Reference,
    /// Koch's all-pairs recipe on the 35×35 `koch35` tower (Omniglot shrunk by 3).
    /// See [`TrainConfig::small`].
    Small,
    /// The default recipe for about 2 hours. See [`TrainConfig::long`].
    Long,
}

impl Preset {
    pub const ALL: [Preset; 5] = [
        Preset::Default,
        Preset::Long,
        Preset::Paper,
        Preset::Reference,
        Preset::Small,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Default => "default",
            Preset::Long => "long",
            Preset::Paper => "paper",
            Preset::Reference => "reference",
            Preset::Small => "small",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown preset {s:?}: expected default, long, paper, reference or small")
            })
    }
}

/// Where the pairs of the `pairs` objective come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairSource {
    /// Koch's fixed training set ([`siamese_data::sample::koch_pair_set`]): `base_pairs`
    /// pairs with equal counts per alphabet, each plus `distorted_copies` distorted
    /// copies; an epoch is one pass over it in a fresh random order.
    KochSet,
    /// Fresh balanced pairs every step ([`siamese_data::sample::sample_pairs`]), each
    /// image distorted (when `distort`).
    Online,
}

/// The data stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The split whose train part is trained on (validation: its validation part).
    pub split: SplitName,
    /// Negatives (different pairs) from the same alphabet or any alphabet. For K×M
    /// batches, `same-alphabet` draws the K characters of a batch from one alphabet.
    pub negatives: NegativeFrom,
    /// Pairs of the `pairs` objective.
    pub pairs: PairSource,
    /// Base pairs of Koch's set (30k, 90k or 150k in the paper).
    pub koch_base_pairs: usize,
    /// Distorted copies of each base pair (8 in the paper).
    pub koch_distorted_copies: usize,
    /// K: characters per batch of the `all-pairs` objective.
    pub classes_per_batch: usize,
    /// M: images per character in a K×M batch.
    pub images_per_class: usize,
    /// Apply the distortions (online pairs, K×M batches, the distorted copies of
    /// Koch's set).
    pub distort: bool,
    /// The distribution of the distortions (default: Koch's).
    pub distortion: KochDistortion,
    /// Trials of the validation (Koch's 20-way within-alphabet construction on the
    /// split's validation part; Koch: 320).
    pub validation_trials: usize,
    /// Seed of the validation trials (the same trials at every validation).
    pub validation_seed: u64,
}

/// The objective a step minimises.
///
/// In configuration files `"pairs"`, `"all-pairs"`, or a table for the episodes:
/// `{"episodes": {"way": 20, "queries": 5, ...}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Koch's cross-entropy on a batch of sampled pairs (L2 via the optimizer).
    Pairs,
    /// Cross-entropy on every pair of a K×M batch, positives and negatives weighted
    /// to balance: each image is embedded once for its K·M − 1 pairs.
    AllPairs,
    /// N-way one-shot episodes scored by the head: softmax cross-entropy of each
    /// query's logits against the N supports (optionally plus the balanced binary
    /// cross-entropy on the same pairs).
    Episodes(EpisodeObjective),
}

impl Objective {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Pairs => "pairs",
            Objective::AllPairs => "all-pairs",
            Objective::Episodes(_) => "episodes",
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pairs" => Ok(Objective::Pairs),
            "all-pairs" => Ok(Objective::AllPairs),
            "episodes" => Ok(Objective::Episodes(EpisodeObjective::default())),
            _ => Err(format!(
                "unknown objective {s:?}: expected pairs, all-pairs or episodes"
            )),
        }
    }
}

/// The episodes of [`Objective::Episodes`]: `way` classes, one support and `queries`
/// queries each; classes are (character, rotation by a multiple of 90°).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodeObjective {
    /// N: classes per episode (the test's 20).
    pub way: usize,
    /// Queries per class.
    pub queries: usize,
    /// 1 to 4: each character rotated by 0°, 90°, ... is a class of its own (4
    /// quadruples the classes; 1 turns rotations off).
    pub rotations: u8,
    /// The fraction of episodes drawn from one alphabet and rotation, like the
    /// one-shot test; the rest from any alphabet.
    pub within_alphabet: f64,
    /// Weight of the balanced binary cross-entropy on the episode's query–support
    /// pairs, added to the softmax cross-entropy (0: none). It keeps the head's
    /// sigmoid a calibrated "same character" probability.
    pub bce_weight: f64,
}

impl Default for EpisodeObjective {
    fn default() -> Self {
        EpisodeObjective {
            way: 20,
            queries: 5,
            rotations: 4,
            within_alphabet: 0.5,
            bce_weight: 0.0,
        }
    }
}

impl EpisodeObjective {
    /// The data crate's episode shape.
    pub fn spec(&self) -> siamese_data::sample::EpisodeSpec {
        siamese_data::sample::EpisodeSpec {
            way: self.way,
            queries: self.queries,
            rotations: self.rotations,
            within_alphabet: self.within_alphabet,
        }
    }
}

/// The training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub objective: Objective,
    pub optimizer: OptimizerKind,
    /// Koch's layer-wise SGD (used when `optimizer` is `sgd`).
    pub sgd: SgdSchedule,
    /// Adam / AdamW (used when `optimizer` is `adam` or `adamw`).
    pub adam: AdamSettings,
    /// Pairs per step of the `pairs` objective (Koch: 128).
    pub batch_pairs: usize,
    /// At most this many epochs (Koch: 200).
    pub epochs: u64,
    /// Steps per epoch; `null`: one pass over Koch's set (required for online pairs
    /// and K×M batches).
    pub steps_per_epoch: Option<u64>,
    /// Stop after this many steps in all (`null`: no limit but `epochs`).
    pub max_steps: Option<u64>,
    /// Stop training after this many minutes of this invocation (a final validation
    /// and checkpoint follow); `null`: no limit.
    pub max_minutes: Option<f64>,
    /// Validate every this many steps; `null`: at the end of every epoch.
    pub validate_every: Option<u64>,
    /// Also validate the initial network before the first step (a baseline line in
    /// the metrics; not done when resuming).
    #[serde(default)]
    pub validate_at_start: bool,
    /// Stop after this many validations in a row without a new best (Koch: 20
    /// epochs); 0: never stop early.
    pub patience: u64,
    /// Also save the `last` checkpoint every this many steps (it is always saved at
    /// each validation and when training stops); `null`: only then.
    pub checkpoint_every: Option<u64>,
    /// Write a line of `metrics.jsonl` every this many steps (mean loss over them).
    pub log_every: u64,
    /// Images per embedding batch of the validation.
    pub eval_batch: usize,
    /// How the network's parameters are drawn before the first step: `paper`
    /// (Koch et al.'s, whose fully connected weights saturate the sigmoid layer) or
    /// `lecun` (those weights N(0, 1/fan_in)). Configurations without it: `paper`.
    #[serde(default)]
    pub init: InitScheme,
    /// At the end of training, fit Platt scaling of the head's logit on balanced
    /// same/different pairs of the validation alphabets and write it into the `best`
    /// checkpoint, so that `compare`'s probability and `verify`'s p > 0.5 mean what
    /// they say (the softmax of the episodes objective leaves the head's offset free).
    /// Rankings, and so one-shot accuracy, are unchanged. Configurations without it:
    /// `false`.
    #[serde(default)]
    pub calibrate: bool,
    /// A learning-rate multiplier by step over the optimizer's per-epoch schedule
    /// (step decay, cosine, warm-up). Configurations without it: `constant`.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Seed of the initialisation, the samplers and the distortions.
    pub seed: u64,
    /// CPU threads (`null`: all cores).
    pub threads: Option<usize>,
    /// `auto`, `cpu`, `cuda[:N]` or `metal[:N]`.
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::default_preset()
    }
}

impl TrainConfig {
    /// The configuration of a preset.
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Default => TrainConfig::default_preset(),
            Preset::Long => TrainConfig::long(),
            Preset::Paper => TrainConfig::paper(),
            Preset::Reference => TrainConfig::reference(),
            Preset::Small => TrainConfig::small(),
        }
    }

    /// The default preset: the best recipe measured so far within 30 minutes of wall
    /// time on a 2-core CPU (README, "Results"). The batch-normalised Conv-4 tower
    /// ([`Arch::CONV4`]) on Omniglot area-resampled to 28×28, all 20 drawers of the
    /// background alphabets, trained on 20-way one-shot episodes with 5 queries per
    /// class ([`EpisodeObjective::default`]: the characters × 4 rotations as classes,
    /// half the episodes within one alphabet), Adam at 10⁻³ halved every 6,000
    /// episodes, a validation (Koch's 20-way within-alphabet trials on the validation
    /// alphabets) every 500 episodes keeping the best, a 30-minute budget.
    pub fn default_preset() -> Self {
        let base = TrainConfig::koch_all_pairs();
        TrainConfig {
            preset: Preset::Default,
            data: DataConfig {
                split: SplitName::KochAllDrawers,
                distort: false,
                distortion: koch_distortion_at(28),
                validation_trials: 1000,
                ..base.data
            },
            model: ModelConfig::new(Arch::CONV4),
            train: TrainingConfig {
                objective: Objective::Episodes(EpisodeObjective::default()),
                optimizer: OptimizerKind::Adam,
                adam: AdamSettings {
                    lr: 1e-3,
                    ..AdamSettings::default()
                },
                lr_schedule: LrSchedule::Step {
                    every: 6000,
                    factor: 0.5,
                    warmup: 0,
                },
                calibrate: true,
                epochs: 1000,
                steps_per_epoch: Some(500),
                patience: 0,
                log_every: 20,
                eval_batch: 256,
                ..base.train
            },
        }
    }

    /// The default recipe for about two hours: a 120-minute budget and the learning
    /// rate halved every 20,000 episodes.
    pub fn long() -> Self {
        let d = TrainConfig::default_preset();
        TrainConfig {
            preset: Preset::Long,
            train: TrainingConfig {
                max_minutes: Some(120.0),
                lr_schedule: LrSchedule::Step {
                    every: 20_000,
                    factor: 0.5,
                    warmup: 0,
                },
                ..d.train
            },
            ..d
        }
    }

    /// The recipe of the earlier default preset, the base of `small`, `paper` and
    /// `reference`: the paper's network, the all-pairs objective on batches of 8
    /// characters × 4 images (32 images, 496 scored pairs, 48 of them positive) drawn
    /// within one alphabet (hard negatives, like the one-shot trials), Koch's
    /// distortions, Adam at 10⁻⁴ (above the reference's 6·10⁻⁵: far fewer steps, and
    /// every step averages ~500 pair gradients), epochs of 50 steps each followed by a
    /// 320-trial validation, a 30-minute budget and a patience of 10 validations.
    fn koch_all_pairs() -> Self {
        TrainConfig {
            preset: Preset::Default,
            data: DataConfig {
                split: SplitName::Koch,
                negatives: NegativeFrom::SameAlphabet,
                pairs: PairSource::Online,
                koch_base_pairs: 150_000,
                koch_distorted_copies: 8,
                classes_per_batch: 8,
                images_per_class: 4,
                distort: true,
                distortion: KochDistortion::PAPER,
                validation_trials: 320,
                validation_seed: 0,
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::AllPairs,
                optimizer: OptimizerKind::Adam,
                sgd: SgdSchedule::default(),
                adam: AdamSettings {
                    lr: 1e-4,
                    ..AdamSettings::default()
                },
                batch_pairs: 128,
                epochs: 200,
                steps_per_epoch: Some(50),
                max_steps: None,
                max_minutes: Some(30.0),
                validate_every: None,
                validate_at_start: false,
                patience: 10,
                checkpoint_every: None,
                log_every: 1,
                eval_batch: 64,
                init: InitScheme::Paper,
                lr_schedule: LrSchedule::Constant,
                calibrate: false,
                seed: 0,
                threads: None,
                device: "auto".into(),
            },
        }
    }

    /// The earlier default recipe on the `koch35` tower: the images shrunk by 3 to 35×35, the
    /// distortions' translations by 3 too (±2/3 px, the paper's ±2 px at 105×105), and
    /// a patience of 40 validations (they take well under a second at this size, and
    /// accuracy still climbs slowly after 3,000 steps).
    pub fn small() -> Self {
        let d = TrainConfig::koch_all_pairs();
        TrainConfig {
            preset: Preset::Small,
            data: DataConfig {
                distortion: koch_distortion_at(35),
                ..d.data
            },
            model: ModelConfig::new(Arch::Koch35),
            train: TrainingConfig {
                patience: 40,
                ..d.train
            },
        }
    }

    /// Koch et al.'s setup (see [`Preset::Paper`]).
    pub fn paper() -> Self {
        let d = TrainConfig::koch_all_pairs();
        TrainConfig {
            preset: Preset::Paper,
            data: DataConfig {
                split: SplitName::Koch,
                negatives: NegativeFrom::SameAlphabet,
                pairs: PairSource::KochSet,
                koch_base_pairs: 150_000,
                koch_distorted_copies: 8,
                ..d.data
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::Pairs,
                optimizer: OptimizerKind::Sgd,
                sgd: SgdSchedule::default(),
                adam: AdamSettings::default(),
                batch_pairs: 128,
                epochs: 200,
                steps_per_epoch: None,
                max_steps: None,
                max_minutes: None,
                validate_every: None,
                patience: 20,
                checkpoint_every: Some(1000),
                log_every: 10,
                eval_batch: 128,
                ..d.train
            },
        }
    }

    /// The PyTorch reference's setup (see [`Preset::Reference`]): Adam 6·10⁻⁵, batch
    /// 128 online pairs, negatives from any alphabet, all 20 drawers; its
    /// augmentation (torchvision `RandomAffine(15)`: a rotation in [−15°, 15°] only)
    /// expressed as a Koch distortion; 50,000 steps (as 50 epochs of 1,000), a
    /// validation every 100 steps (as the reference's `test_every`), no early stop.
    pub fn reference() -> Self {
        let d = TrainConfig::koch_all_pairs();
        TrainConfig {
            preset: Preset::Reference,
            data: DataConfig {
                split: SplitName::KochAllDrawers,
                negatives: NegativeFrom::AnyAlphabet,
                pairs: PairSource::Online,
                distort: true,
                distortion: KochDistortion::rotation_only(-15.0, 15.0),
                ..d.data
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::Pairs,
                optimizer: OptimizerKind::Adam,
                adam: AdamSettings::default(),
                batch_pairs: 128,
                epochs: 50,
                steps_per_epoch: Some(1000),
                max_steps: None,
                max_minutes: None,
                validate_every: Some(100),
                patience: 0,
                checkpoint_every: Some(1000),
                log_every: 10,
                eval_batch: 128,
                ..d.train
            },
        }
    }

    /// `preset` with the configuration file at `path` merged over it (JSON, or TOML
    /// for a `.toml` file). Errors name the file.
    pub fn from_file_over(preset: Preset, path: &Path) -> Result<Self, TrainError> {
        let bad = |reason: String| TrainError::ConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let overlay: serde_json::Value = if is_toml {
            let value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            serde_json::to_value(value).map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?
        };
        if !overlay.is_object() {
            return Err(bad("expected a table of settings at the top level".into()));
        }
        // A file may name its preset; flags and the file then apply over it.
        let preset = match overlay.get("preset").and_then(|p| p.as_str()) {
            Some(name) => name.parse().map_err(bad)?,
            None => preset,
        };
        let mut base =
            serde_json::to_value(TrainConfig::preset(preset)).expect("config serialises");
        merge(&mut base, overlay);
        let config = from_value(base).map_err(bad)?;
        config.validate().map_err(|e| bad(e.to_string()))?;
        Ok(config)
    }

    /// Reads a complete configuration (a run's `config.json`).
    pub fn load_json(path: &Path) -> Result<Self, TrainError> {
        let bad = |reason: String| TrainError::ConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        from_value(value).map_err(bad)
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Checks that the values fit together; the message names the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        let d = &self.data;
        let t = &self.train;
        if let Err(e) = d.distortion.validate() {
            return bad(format!("data.distortion: {e}"));
        }
        if d.validation_trials == 0 {
            return bad("data.validation_trials must be at least 1".into());
        }
        match t.objective {
            Objective::Pairs => {
                if t.batch_pairs == 0 {
                    return bad("train.batch_pairs must be at least 1".into());
                }
                if d.pairs == PairSource::KochSet && d.koch_base_pairs == 0 {
                    return bad("data.koch_base_pairs must be at least 1".into());
                }
                if d.pairs == PairSource::Online && t.steps_per_epoch.is_none() {
                    return bad(
                        "train.steps_per_epoch is required with online pairs (data.pairs = \"online\")"
                            .into(),
                    );
                }
            }
            Objective::Episodes(e) => {
                if e.way < 2 || e.queries < 1 {
                    return bad(format!(
                        "train.objective.episodes needs way ≥ 2 and queries ≥ 1 (got way {}, \
                         queries {})",
                        e.way, e.queries
                    ));
                }
                if !(1..=4).contains(&e.rotations) {
                    return bad(format!(
                        "train.objective.episodes.rotations must be 1 to 4 (got {})",
                        e.rotations
                    ));
                }
                if !(0.0..=1.0).contains(&e.within_alphabet) {
                    return bad(format!(
                        "train.objective.episodes.within_alphabet must be in [0, 1] (got {})",
                        e.within_alphabet
                    ));
                }
                if !non_negative(e.bce_weight) {
                    return bad("train.objective.episodes.bce_weight must be ≥ 0".into());
                }
                if t.steps_per_epoch.is_none() {
                    return bad(
                        "train.steps_per_epoch is required with the episodes objective".into(),
                    );
                }
            }
            Objective::AllPairs => {
                if d.classes_per_batch < 2 || d.images_per_class < 2 {
                    return bad(format!(
                        "the all-pairs objective needs data.classes_per_batch and \
                         data.images_per_class of at least 2 (got {} × {})",
                        d.classes_per_batch, d.images_per_class
                    ));
                }
                if t.steps_per_epoch.is_none() {
                    return bad(
                        "train.steps_per_epoch is required with the all-pairs objective".into(),
                    );
                }
            }
        }
        if let Err(e) = t.lr_schedule.validate() {
            return bad(e);
        }
        if t.steps_per_epoch == Some(0) {
            return bad("train.steps_per_epoch must be at least 1".into());
        }
        if t.epochs == 0 {
            return bad("train.epochs must be at least 1".into());
        }
        if t.validate_every == Some(0) || t.checkpoint_every == Some(0) || t.log_every == 0 {
            return bad("train.validate_every, train.checkpoint_every and train.log_every must be at least 1".into());
        }
        if t.max_minutes.is_some_and(|m| !positive(m)) {
            return bad("train.max_minutes must be positive".into());
        }
        if t.eval_batch == 0 {
            return bad("train.eval_batch must be at least 1".into());
        }
        if t.threads == Some(0) {
            return bad("train.threads must be at least 1".into());
        }
        match t.optimizer {
            OptimizerKind::Sgd => {
                let s = &t.sgd;
                if !positive(s.lr_decay) || !(0.0..1.0).contains(&s.momentum_start) {
                    return bad(
                        "train.sgd: lr_decay must be positive and momentum_start in [0, 1)".into(),
                    );
                }
                for (name, h) in &s.layers {
                    if !non_negative(h.lr)
                        || !(0.0..1.0).contains(&h.momentum)
                        || !non_negative(h.weight_decay)
                    {
                        return bad(format!(
                            "train.sgd.layers.{name}: lr and weight_decay must be finite and \
                             non-negative, momentum in [0, 1) (got {h:?})"
                        ));
                    }
                }
                let specs = self.model.param_specs()?;
                for spec in &specs {
                    s.layer(&spec.name)?;
                }
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let a = &t.adam;
                if !positive(a.lr) || !positive(a.lr_decay) {
                    return bad("train.adam.lr and train.adam.lr_decay must be positive".into());
                }
                if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
                    return bad("train.adam.beta1 and beta2 must be in [0, 1)".into());
                }
                if t.optimizer == OptimizerKind::Adam && a.weight_decay != 0.0 {
                    return bad(
                        "train.adam.weight_decay is AdamW's decoupled decay: use optimizer \"adamw\" \
                         (or set it to 0)"
                            .into(),
                    );
                }
            }
        }
        self.model.param_specs()?;
        Ok(())
    }
}

/// Koch's distortions for images shrunk from 105×105 to `side × side`: the
/// translations (±2 px at 105×105) scaled with the image, the rest unchanged.
fn koch_distortion_at(side: usize) -> KochDistortion {
    let shift = KochDistortion::PAPER.translate_x[1] * side as f64 / 105.0;
    KochDistortion {
        translate_x: [-shift, shift],
        translate_y: [-shift, shift],
        ..KochDistortion::PAPER
    }
}

/// A configuration from JSON; an error names the field (`train.adam.lr: invalid
/// type...`).
fn from_value(value: serde_json::Value) -> Result<TrainConfig, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn non_negative(x: f64) -> bool {
    x >= 0.0 && x.is_finite()
}

/// Merges `overlay` into `base`: objects field by field (recursively), anything else
/// replaced.
impl TrainConfig {
    /// `self` with `settings` applied, each `PATH=VALUE` (`train.adam.lr=3e-4`,
    /// `train.objective.episodes.way=30`, `train.lr_schedule={"cosine": {...}}`): the
    /// value is read as JSON, else taken as a string; it is merged over the
    /// configuration like a file's table ([`TrainConfig::from_file_over`]), so one
    /// key can switch an enum to another variant. The result is checked.
    pub fn with_settings(&self, settings: &[String]) -> Result<Self, TrainError> {
        let bad = |setting: &str, reason: String| {
            TrainError::Config(format!("--set {setting}: {reason}"))
        };
        let mut value = serde_json::to_value(self).expect("config serialises");
        for setting in settings {
            let Some((path, raw)) = setting.split_once('=') else {
                return Err(bad(
                    setting,
                    "expected PATH=VALUE, e.g. train.adam.lr=3e-4".into(),
                ));
            };
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(bad(setting, format!("{path:?} is not a dotted path")));
            }
            let leaf = serde_json::from_str(raw.trim())
                .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
            let overlay = path.rsplit('.').fold(leaf, |inner, key| {
                serde_json::Value::Object(serde_json::Map::from_iter([(key.to_string(), inner)]))
            });
            merge(&mut value, overlay);
        }
        let joined = settings.join(" ");
        let config: TrainConfig = from_value(value).map_err(|e| bad(&joined, e))?;
        config.validate()?;
        Ok(config)
    }

    /// The settings (dotted paths into the configuration) that a resumed run may
    /// change: they change no step's result, only how long the run goes on, where
    /// it runs and what it logs.
    pub const RESUMABLE: &'static [&'static str] = &[
        "train.epochs",
        "train.max_steps",
        "train.max_minutes",
        "train.patience",
        "train.validate_at_start",
        "train.checkpoint_every",
        "train.log_every",
        "train.eval_batch",
        "train.threads",
        "train.device",
    ];

    /// The settings in which `self` differs from `saved` (a run's own configuration)
    /// that a resume may not change, as dotted paths (`train.adam.lr`); empty when
    /// `self` may continue the run of `saved` exactly.
    pub fn fixed_changes(&self, saved: &TrainConfig) -> Vec<String> {
        let value = |c: &TrainConfig| serde_json::to_value(c).expect("config serialises");
        let mut changed = Vec::new();
        json_differences(&value(self), &value(saved), "", &mut changed);
        changed.retain(|path| {
            !Self::RESUMABLE
                .iter()
                .any(|r| path == r || path.starts_with(&format!("{r}.")))
        });
        changed
    }
}

/// The dotted paths at which `a` and `b` differ: the deepest common object key, or
/// the object itself when their keys differ (another variant of an enum).
fn json_differences(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(x), Object(y)) if x.len() == y.len() && x.keys().all(|k| y.contains_key(k)) => {
            for (k, va) in x {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                json_differences(va, &y[k], &path, out);
            }
        }
        _ if a != b => out.push(at.to_string()),
        _ => {}
    }
}

fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    use serde_json::Value::Object;
    match (base, overlay) {
        // An enum variant with fields is a one-key map (`{"step": {...}}`): a
        // different variant replaces it rather than merging into a two-key map.
        (Object(b), Object(o))
            if b.len() == 1 && o.len() == 1 && o.keys().all(|k| !b.contains_key(k)) =>
        {
            *b = o;
        }
        (Object(b), Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip() {
        for p in Preset::ALL {
            let c = TrainConfig::preset(p);
            c.validate().unwrap();
            assert_eq!(c.preset, p);
            let back: TrainConfig = serde_json::from_str(&c.to_json()).unwrap();
            assert_eq!(back, c);
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        let small = TrainConfig::small();
        assert_eq!(small.model, ModelConfig::new(Arch::Koch35));
        assert_eq!(small.model.input_size, 35);
        assert_eq!(small.data.distortion.translate_y, [-2.0 / 3.0, 2.0 / 3.0]);
        assert_eq!(
            (small.train.clone(), small.data.split),
            (
                TrainingConfig {
                    patience: 40,
                    ..TrainConfig::koch_all_pairs().train
                },
                SplitName::Koch
            )
        );
        let paper = TrainConfig::paper();
        assert_eq!(paper.train.optimizer, OptimizerKind::Sgd);
        assert_eq!(paper.data.koch_base_pairs, 150_000);
        assert_eq!(paper.data.koch_distorted_copies, 8);
        assert_eq!(paper.data.split, SplitName::Koch);
        assert_eq!(paper.train.batch_pairs, 128);
        assert_eq!((paper.train.epochs, paper.train.patience), (200, 20));
        let reference = TrainConfig::reference();
        assert_eq!(reference.train.adam.lr, 6e-5);
        assert_eq!(reference.data.split, SplitName::KochAllDrawers);
        assert_eq!(reference.data.pairs, PairSource::Online);
        let default = TrainConfig::default();
        assert_eq!(
            default.train.objective,
            Objective::Episodes(EpisodeObjective::default())
        );
        assert_eq!(default.model, ModelConfig::new(Arch::CONV4));
        assert_eq!(default.model.input_size, 28);
        assert_eq!(default.train.optimizer, OptimizerKind::Adam);
        assert!(default.train.calibrate && !default.data.distort);
        let long = TrainConfig::long();
        assert_eq!(long.train.max_minutes, Some(120.0));
        assert_eq!(
            (long.model, long.data),
            (default.model, default.data.clone())
        );
        // The earlier presets keep their recipe.
        assert_eq!(paper.train.objective, Objective::Pairs);
        assert!(!paper.train.calibrate && paper.train.lr_schedule == LrSchedule::Constant);
        assert_eq!(small.train.objective, Objective::AllPairs);
        assert!(small.data.distort);
        assert_eq!(paper.train.init, InitScheme::Paper);
        // A configuration saved before `init` existed reads as the paper's scheme.
        let mut old: serde_json::Value = serde_json::from_str(&default.to_json()).unwrap();
        old["train"].as_object_mut().unwrap().remove("init");
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.train.init, InitScheme::Paper);
    }

    #[test]
    fn configurations_of_earlier_versions_still_load() {
        // A run's config.json from before the episodes objective, the schedules and
        // the calibration (the earlier default preset's, as it was written).
        let mut old: serde_json::Value =
            serde_json::from_str(&TrainConfig::koch_all_pairs().to_json()).unwrap();
        let train = old["train"].as_object_mut().unwrap();
        train.remove("lr_schedule");
        train.remove("calibrate");
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old, TrainConfig::koch_all_pairs());
        assert_eq!(old.model.arch, Arch::Koch);
        // The episodes objective is a table; a wrong field is named.
        let e: Objective =
            serde_json::from_str(r#"{"episodes": {"way": 5, "queries": 1}}"#).unwrap();
        assert_eq!(
            e,
            Objective::Episodes(EpisodeObjective {
                way: 5,
                queries: 1,
                ..EpisodeObjective::default()
            })
        );
        assert!(serde_json::from_str::<Objective>(r#"{"episodes": {"wya": 5}}"#).is_err());
        let mut c = TrainConfig::default();
        c.train.objective = Objective::Episodes(EpisodeObjective {
            rotations: 5,
            ..EpisodeObjective::default()
        });
        assert!(c.validate().unwrap_err().to_string().contains("rotations"));
    }

    #[test]
    fn files_merge_over_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("c.json");
        std::fs::write(
            &json,
            r#"{"train": {"adam": {"lr": 0.001}, "seed": 7}, "data": {"images_per_class": 5}}"#,
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &json).unwrap();
        assert_eq!(c.train.adam.lr, 0.001);
        assert_eq!(c.train.adam.beta1, 0.9);
        assert_eq!(c.train.seed, 7);
        assert_eq!(c.data.images_per_class, 5);
        assert_eq!(c.data.classes_per_batch, 8);

        let toml = dir.path().join("c.toml");
        std::fs::write(
            &toml,
            "preset = \"paper\"\n[train]\nepochs = 3\n[train.sgd.layers.fc]\nlr = 0.01\nmomentum = 0.8\nweight_decay = 0.0\n",
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &toml).unwrap();
        assert_eq!(c.preset, Preset::Paper);
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.sgd.layers["fc"].lr, 0.01);
        assert_eq!(
            c.train.sgd.layers["conv1"],
            SgdSchedule::default().layers["conv1"]
        );

        // --set: any field by its path; JSON values; a variant switched by its key.
        let set = |s: &[&str]| {
            let s: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            TrainConfig::default_preset().with_settings(&s)
        };
        let c = set(&[
            "train.adam.lr=3e-4",
            "train.objective.episodes.way=30",
            r#"train.lr_schedule={"cosine": {"steps": 100, "min_factor": 0.1, "warmup": 0}}"#,
            "train.device=cpu",
        ])
        .unwrap();
        assert_eq!(c.train.adam.lr, 3e-4);
        assert!(matches!(c.train.objective, Objective::Episodes(e) if e.way == 30));
        assert!(matches!(
            c.train.lr_schedule,
            LrSchedule::Cosine { steps: 100, .. }
        ));
        for wrong in [
            "train.adam.lr",
            "train.adam.nope=1",
            "train.adam.lr=fast",
            "=1",
        ] {
            let err = set(&[wrong]).unwrap_err().to_string();
            assert!(err.contains("--set"), "{wrong}: {err}");
        }
        let err = set(&["train.objective.episodes.way=1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("way"), "{err}");

        // A resume may change how long a run goes on, not what a step computes.
        let saved = TrainConfig::default_preset();
        let mut longer = saved.clone();
        longer.train.max_minutes = Some(60.0);
        longer.train.threads = Some(1);
        assert!(longer.fixed_changes(&saved).is_empty());
        let mut other = longer.clone();
        other.train.adam.lr = 3e-4;
        other.data.validation_trials = 9;
        other.train.lr_schedule = LrSchedule::Constant;
        assert_eq!(
            other.fixed_changes(&saved),
            [
                "data.validation_trials",
                "train.adam.lr",
                "train.lr_schedule"
            ]
        );

        // Another variant of an enum with fields replaces the preset's; the same
        // variant merges field by field.
        let cosine = dir.path().join("cosine.json");
        std::fs::write(
            &cosine,
            r#"{"train": {"lr_schedule": {"cosine": {"steps": 900, "min_factor": 0.1, "warmup": 0}}}}"#,
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &cosine).unwrap();
        assert!(matches!(
            c.train.lr_schedule,
            LrSchedule::Cosine { steps: 900, .. }
        ));
        let way = dir.path().join("way.json");
        std::fs::write(
            &way,
            r#"{"train": {"objective": {"episodes": {"way": 5}}}}"#,
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &way).unwrap();
        let Objective::Episodes(episodes) = c.train.objective else {
            panic!("{:?}", c.train.objective)
        };
        assert_eq!((episodes.way, episodes.queries), (5, 5));

        // A whole saved config reads back as itself.
        let full = dir.path().join("config.json");
        std::fs::write(&full, TrainConfig::reference().to_json()).unwrap();
        assert_eq!(
            TrainConfig::load_json(&full).unwrap(),
            TrainConfig::reference()
        );
        assert_eq!(
            TrainConfig::from_file_over(Preset::Default, &full).unwrap(),
            TrainConfig::reference()
        );
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "typo.json",
                r#"{"train": {"lerning_rate": 1}}"#,
                "lerning_rate",
            ),
            ("syntax.json", r#"{"train": "#, "not valid JSON"),
            (
                "type.json",
                r#"{"train": {"epochs": "many"}}"#,
                "invalid type",
            ),
            (
                "value.json",
                r#"{"train": {"batch_pairs": 0, "objective": "pairs", "steps_per_epoch": 3}}"#,
                "batch_pairs",
            ),
            ("enum.toml", "[train]\noptimizer = \"rmsprop\"\n", "rmsprop"),
            ("array.json", "[1, 2]", "top level"),
        ];
        for (name, text, needle) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = TrainConfig::from_file_over(Preset::Default, &path)
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(err.contains(needle), "{name}: {err}");
        }
        let missing = dir.path().join("missing.json");
        let err = TrainConfig::from_file_over(Preset::Default, &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = TrainConfig::default();
        c.train.adam.weight_decay = 0.01;
        assert!(c.validate().unwrap_err().to_string().contains("adamw"));
        c.train.optimizer = OptimizerKind::Adamw;
        c.validate().unwrap();
        let mut c = TrainConfig::paper();
        c.train.sgd.layers.remove("conv2");
        assert!(c.validate().unwrap_err().to_string().contains("conv2"));
        let mut c = TrainConfig::small();
        c.data.images_per_class = 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("images_per_class")
        );
    }
}
