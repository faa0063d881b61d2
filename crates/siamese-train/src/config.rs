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
use siamese_data::batch::{BatchSpec, ClassBatchSpec, PairBatchSpec, PairSource};
use siamese_data::sample::{EpisodeSpec, NegativeFrom};
use siamese_eval::TestTimeViews;
use siamese_model::{Arch, InitScheme, ModelConfig};

use crate::TrainError;
use crate::average::WeightAverage;
use crate::schedule::{AdamSettings, LrSchedule, Optimizer, SgdSchedule};

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

/// The input side of the `default` and `long` presets. Measured on the 2-core
/// machine (README, "Results"): against 28×28 (Conv-4's own size), 32×32 costs 1.28×
/// per episode and scored higher at the same number of episodes (85.1% against 83.6%
/// validation after 3,000) and at the same time (95.0% against 93.0% on Lake's runs,
/// 85.0% against 78.5% on Koch's test split).
pub const DEFAULT_INPUT_SIZE: usize = 32;

/// The budget of the default preset: its episodes are as many as fit into 85% of it
/// on the machine it runs on ([`TrainingConfig::fit_steps_to_time`]).
pub const DEFAULT_MINUTES: f64 = 30.0;

/// The networks of the `long` preset: four default runs (seeds `seed` to `seed + 3`,
/// 30 minutes each) scored together. Four default networks averaged scored 98.0% on
/// Lake's runs where each alone scored 96.0–98.0% (mean 97.06%); one network trained
/// for 42,000 episodes (about two hours) scored 97.0%.
pub const LONG_MEMBERS: u32 = 4;

/// The starting points of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Sized for a 2-core CPU in about 30 minutes: the batch-normalised Conv-4 tower on
    /// 32×32 images, trained on 20-way one-shot episodes with Adam. See
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

/// The data stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The split whose train part is trained on (validation: its validation part).
    pub split: SplitName,
    /// Apply the distortions (online pairs, K×M batches, episodes, the distorted
    /// copies of Koch's set).
    pub distort: bool,
    /// The distribution of the distortions (default: Koch's).
    pub distortion: KochDistortion,
    /// Trials of the validation (Koch's 20-way within-alphabet construction on the
    /// split's validation part; Koch: 320).
    pub validation_trials: usize,
    /// Seed of the validation trials (the same trials at every validation).
    pub validation_seed: u64,
}

/// The objective a step minimises, with the shape of its batches.
///
/// In configuration files a one-key table: `{"pairs": {"batch_pairs": 128,
/// "negatives": "same-alphabet", "source": "online"}}`, `{"all-pairs":
/// {"classes_per_batch": 8, "images_per_class": 4, "negatives": "same-alphabet"}}`
/// or `{"episodes": {"way": 20, "queries": 5, ...}}`; fields left out take their
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Koch's cross-entropy on a batch of sampled pairs (L2 via the optimizer).
    Pairs(PairBatchSpec),
    /// Cross-entropy on every pair of a K×M batch, positives and negatives weighted
    /// to balance: each image is embedded once for its K·M − 1 pairs.
    AllPairs(ClassBatchSpec),
    /// N-way one-shot episodes scored by the head: softmax cross-entropy of each
    /// query's logits against the N supports (optionally plus the balanced binary
    /// cross-entropy on the same pairs).
    Episodes(EpisodeObjective),
}

impl Objective {
    pub const NAMES: [&'static str; 3] = ["pairs", "all-pairs", "episodes"];

    /// The name used on the command line and as the configuration's key.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Pairs(_) => "pairs",
            Objective::AllPairs(_) => "all-pairs",
            Objective::Episodes(_) => "episodes",
        }
    }

    /// The batches the objective is computed on.
    pub fn batch_spec(&self) -> BatchSpec {
        match *self {
            Objective::Pairs(p) => BatchSpec::Pairs(p),
            Objective::AllPairs(c) => BatchSpec::Classes(c),
            Objective::Episodes(e) => BatchSpec::Episodes(e.spec()),
        }
    }

    /// This objective as the one named `name`: itself when it is that one already,
    /// otherwise the named one with its default batches.
    pub fn switched_to(&self, name: &str) -> Result<Objective, String> {
        Ok(match name {
            n if n == self.name() => *self,
            "pairs" => Objective::Pairs(PairBatchSpec::default()),
            "all-pairs" => Objective::AllPairs(ClassBatchSpec::default()),
            "episodes" => Objective::Episodes(EpisodeObjective::default()),
            _ => {
                return Err(format!(
                    "unknown objective {name:?}: expected {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }
}

/// The episodes of [`Objective::Episodes`]: `way` classes, one support and `queries`
/// queries each; classes are (character, rotation by a multiple of 90°, optionally
/// mirrored).
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
    /// Each character's mirror image, in each rotation, is a class of its own too
    /// (twice the classes).
    pub mirror: bool,
    /// The fraction of episodes drawn from one alphabet and rotation (and mirroring),
    /// like the one-shot test; the rest from any alphabet.
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
            mirror: false,
            within_alphabet: 0.5,
            bce_weight: 0.0,
        }
    }
}

impl EpisodeObjective {
    /// The data crate's episode shape.
    pub fn spec(&self) -> EpisodeSpec {
        EpisodeSpec {
            way: self.way,
            queries: self.queries,
            rotations: self.rotations,
            mirror: self.mirror,
            within_alphabet: self.within_alphabet,
        }
    }
}

/// The training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// What a step minimises, on which batches.
    pub objective: Objective,
    /// The optimizer with its settings.
    pub optimizer: Optimizer,
    /// At most this many epochs (Koch: 200).
    pub epochs: u64,
    /// Steps per epoch; `null`: one pass over Koch's set (required for every other
    /// batch source).
    pub steps_per_epoch: Option<u64>,
    /// Stop after this many steps in all (`null`: no limit but `epochs`).
    pub max_steps: Option<u64>,
    /// Stop training after this many minutes of this invocation (a final validation
    /// and checkpoint follow); `null`: no limit.
    pub max_minutes: Option<f64>,
    /// With no `max_steps`: time a few steps on this machine before the run and set
    /// `max_steps` to the whole validation intervals that fit into 85% of
    /// `max_minutes` ([`crate::sizing`]), so that a schedule spanning `max_steps`
    /// ends in time on any machine. The count is written into the run's
    /// `config.json`. Configurations without it: `false`.
    #[serde(default)]
    pub fit_steps_to_time: bool,
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
    /// Average the weights over the steps (validation scores, and `best` keeps, the
    /// averaged network). Configurations without it: `none`.
    #[serde(default)]
    pub weight_average: WeightAverage,
    /// An ensemble: this many networks, trained one after another into `member-1/`,
    /// `member-2/`… of the run folder, each a run of these settings (its own time
    /// budget and timing) with the seed `seed + i`; the commands that score load
    /// them all and take the mean of their logits ([`crate::ensemble`]). 1: one
    /// network, in the run folder itself. Configurations without it: 1.
    #[serde(default = "one_member")]
    pub members: u32,
    /// Which weights the run's `best/` checkpoint keeps: `best-validation` (those of
    /// the validation with the highest accuracy) or `final` (those training ended
    /// with, averaged when the run averages; every validation is still run and
    /// recorded). Configurations without it: `best-validation`.
    #[serde(default)]
    pub keep: Keep,
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
    /// ([`Arch::CONV4`]) on Omniglot area-resampled to 32×32 ([`DEFAULT_INPUT_SIZE`]:
    /// a 2×2×64 embedding; at 28×28 it is 1×1×64), all 20 drawers of the
    /// background alphabets, trained on 20-way one-shot episodes with 5 queries per
    /// class (the characters × 4 rotations × their mirror images as classes, half the
    /// episodes within one alphabet), Adam at 10⁻³ annealed by half a cosine to 2% of
    /// it over as many episodes as fit into 85% of [`DEFAULT_MINUTES`] on this
    /// machine (timed before the run, [`crate::sizing`]; the count is saved in the
    /// run's configuration), an exponential moving average of the weights (decay
    /// 0.998) validated (Koch's 20-way within-alphabet trials on the validation
    /// alphabets) every 500 episodes, keeping the final (averaged) weights.
    pub fn default_preset() -> Self {
        let base = TrainConfig::koch_all_pairs();
        TrainConfig {
            preset: Preset::Default,
            data: DataConfig {
                split: SplitName::KochAllDrawers,
                distort: false,
                distortion: koch_distortion_at(DEFAULT_INPUT_SIZE),
                validation_trials: 1000,
                ..base.data
            },
            model: ModelConfig {
                arch: Arch::CONV4,
                input_size: DEFAULT_INPUT_SIZE,
            },
            train: TrainingConfig {
                objective: Objective::Episodes(EpisodeObjective {
                    mirror: true,
                    ..EpisodeObjective::default()
                }),
                optimizer: Optimizer::Adam(AdamSettings {
                    lr: 1e-3,
                    ..AdamSettings::default()
                }),
                // Over the run's max_steps, timed to fit the minutes (or given by
                // `--max-steps`, which the cosine then spans).
                lr_schedule: LrSchedule::Cosine {
                    steps: None,
                    min_factor: 0.02,
                    warmup: 0,
                },
                max_steps: None,
                max_minutes: Some(DEFAULT_MINUTES),
                fit_steps_to_time: true,
                weight_average: WeightAverage::Ema { decay: 0.998 },
                keep: Keep::Final,
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

    /// About two hours: an ensemble of [`LONG_MEMBERS`] runs of the default preset
    /// (each sized to its own 30 minutes), scored by the mean of their logits.
    pub fn long() -> Self {
        let d = TrainConfig::default_preset();
        TrainConfig {
            preset: Preset::Long,
            train: TrainingConfig {
                members: LONG_MEMBERS,
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
                distort: true,
                distortion: KochDistortion::PAPER,
                validation_trials: 320,
                validation_seed: 0,
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::AllPairs(ClassBatchSpec {
                    classes_per_batch: 8,
                    images_per_class: 4,
                    negatives: NegativeFrom::SameAlphabet,
                }),
                optimizer: Optimizer::Adam(AdamSettings {
                    lr: 1e-4,
                    ..AdamSettings::default()
                }),
                epochs: 200,
                steps_per_epoch: Some(50),
                max_steps: None,
                max_minutes: Some(30.0),
                fit_steps_to_time: false,
                validate_every: None,
                validate_at_start: false,
                patience: 10,
                checkpoint_every: None,
                log_every: 1,
                eval_batch: 64,
                init: InitScheme::Paper,
                lr_schedule: LrSchedule::Constant,
                weight_average: WeightAverage::None,
                calibrate: false,
                members: 1,
                keep: Keep::BestValidation,
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
                ..d.data
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::Pairs(PairBatchSpec {
                    batch_pairs: 128,
                    negatives: NegativeFrom::SameAlphabet,
                    source: PairSource::KochSet {
                        base_pairs: 150_000,
                        distorted_copies: 8,
                    },
                }),
                optimizer: Optimizer::Sgd(SgdSchedule::default()),
                epochs: 200,
                steps_per_epoch: None,
                max_steps: None,
                max_minutes: None,
                fit_steps_to_time: false,
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
                distort: true,
                distortion: KochDistortion::rotation_only(-15.0, 15.0),
                ..d.data
            },
            model: ModelConfig::new(Arch::Koch),
            train: TrainingConfig {
                objective: Objective::Pairs(PairBatchSpec {
                    batch_pairs: 128,
                    negatives: NegativeFrom::AnyAlphabet,
                    source: PairSource::Online,
                }),
                optimizer: Optimizer::Adam(AdamSettings::default()),
                epochs: 50,
                steps_per_epoch: Some(1000),
                max_steps: None,
                max_minutes: None,
                fit_steps_to_time: false,
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
        let mut overlay = overlay;
        if !overlay.is_object() {
            return Err(bad("expected a table of settings at the top level".into()));
        }
        upgrade_flat_layout(&mut overlay);
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
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        upgrade_flat_layout(&mut value);
        from_value(value).map_err(bad)
    }

    /// The configuration as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// Checks the values; the message names the field. (Combinations need no check:
    /// each objective and optimizer carries its own settings.)
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
        let at = format!("train.objective.{}", t.objective.name());
        let uses_koch_set = match t.objective {
            Objective::Pairs(p) => {
                if p.batch_pairs == 0 {
                    return bad(format!("{at}.batch_pairs must be at least 1"));
                }
                match p.source {
                    PairSource::KochSet { base_pairs: 0, .. } => {
                        return bad(format!(
                            "{at}.source.koch-set.base_pairs must be at least 1"
                        ));
                    }
                    PairSource::KochSet { .. } => true,
                    PairSource::Online => false,
                }
            }
            Objective::AllPairs(c) => {
                if c.classes_per_batch < 2 || c.images_per_class < 2 {
                    return bad(format!(
                        "{at}: classes_per_batch and images_per_class must be at least 2 (got \
                         {} × {})",
                        c.classes_per_batch, c.images_per_class
                    ));
                }
                false
            }
            Objective::Episodes(e) => {
                if e.way < 2 || e.queries < 1 {
                    return bad(format!(
                        "{at} needs way ≥ 2 and queries ≥ 1 (got way {}, queries {})",
                        e.way, e.queries
                    ));
                }
                if !(1..=4).contains(&e.rotations) {
                    return bad(format!(
                        "{at}.rotations must be 1 to 4 (got {})",
                        e.rotations
                    ));
                }
                if !(0.0..=1.0).contains(&e.within_alphabet) {
                    return bad(format!(
                        "{at}.within_alphabet must be in [0, 1] (got {})",
                        e.within_alphabet
                    ));
                }
                if !non_negative(e.bce_weight) {
                    return bad(format!("{at}.bce_weight must be ≥ 0"));
                }
                false
            }
        };
        match t.steps_per_epoch {
            None if !uses_koch_set => {
                return bad(format!(
                    "train.steps_per_epoch is required unless the pairs come from Koch's set \
                     (the {} objective here)",
                    t.objective.name()
                ));
            }
            Some(0) => return bad("train.steps_per_epoch must be at least 1".into()),
            _ => {}
        }
        if t.steps_sized_by_time() && t.max_minutes.is_none() {
            return bad(crate::sizing::NO_TIME_TO_FIT.into());
        }
        // A run sized by time has its max_steps before the first step.
        let run_steps = t.max_steps.or(t.steps_sized_by_time().then_some(u64::MAX));
        if let Err(e) = t.lr_schedule.validate(run_steps) {
            return bad(e);
        }
        if let Err(e) = t.weight_average.validate() {
            return bad(e);
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
        if t.members == 0 {
            return bad("train.members must be at least 1 (1: one network)".into());
        }
        let names: Vec<String> = self
            .model
            .param_specs()?
            .into_iter()
            .map(|spec| spec.name)
            .collect();
        t.optimizer.validate(&names)
    }
}

/// Koch's distortions for images shrunk from 105×105 to `side × side`: the
/// translations (±2 px at 105×105) scaled with the image, the rest unchanged.
fn one_member() -> u32 {
    1
}

/// [`TrainingConfig::keep`]: which weights a run's `best/` checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// The weights of the validation with the highest accuracy.
    #[default]
    BestValidation,
    /// The weights training ended with. With a schedule that anneals to the end and
    /// averaged weights, picking among validations on 1,000 trials mostly picks
    /// noise (see the README, "Keeping the final weights").
    Final,
}

fn koch_distortion_at(side: usize) -> KochDistortion {
    let shift = KochDistortion::PAPER.translate_x[1] * side as f64 / 105.0;
    KochDistortion {
        translate_x: [-shift, shift],
        translate_y: [-shift, shift],
        ..KochDistortion::PAPER
    }
}

/// Rewrites a configuration in the flat layout of earlier versions into the current
/// one, in place; anything else is left as it is.
///
/// The flat layout named the optimizer (`"optimizer": "adam"`) beside `train.sgd` and
/// `train.adam` tables, and kept the batch shapes of every objective side by side
/// (`train.batch_pairs`; `data.negatives`, `data.pairs`, `data.koch_base_pairs`,
/// `data.koch_distorted_copies`, `data.classes_per_batch`, `data.images_per_class`),
/// with `"objective": "pairs"` or `"all-pairs"` a plain name. Now the optimizer and
/// the objective each carry their own settings. A table is recognised as flat by its
/// optimizer being a plain name; its other fields are moved under the chosen
/// variant, and those of the variants not chosen are dropped.
fn upgrade_flat_layout(config: &mut serde_json::Value) {
    use serde_json::{Map, Value};
    let Some(root) = config.as_object_mut() else {
        return;
    };
    let Some(Value::Object(mut train)) = root.remove("train") else {
        return;
    };
    let Some(Value::String(optimizer)) = train.get("optimizer").cloned() else {
        root.insert("train".into(), Value::Object(train));
        return;
    };
    let mut data = match root.remove("data") {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    let sgd = train.remove("sgd");
    let mut adam = train.remove("adam");
    let settings = match optimizer.as_str() {
        "sgd" => sgd,
        "adam" => {
            // Plain Adam always had a zero decay (validation required it).
            if let Some(Value::Object(a)) = adam.as_mut() {
                a.remove("weight_decay");
            }
            adam
        }
        _ => adam,
    };
    let one_key = |key: &str, value: Value| Value::Object(Map::from_iter([(key.into(), value)]));
    train.insert(
        "optimizer".into(),
        one_key(&optimizer, settings.unwrap_or(Value::Object(Map::new()))),
    );

    let batch_pairs = train.remove("batch_pairs");
    let negatives = data.remove("negatives");
    let pairs = data.remove("pairs");
    let koch_set = Map::from_iter(
        [
            ("base_pairs", data.remove("koch_base_pairs")),
            ("distorted_copies", data.remove("koch_distorted_copies")),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    let classes = data.remove("classes_per_batch");
    let images = data.remove("images_per_class");
    if let Some(Value::String(objective)) = train.get("objective").cloned() {
        let mut fields = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                fields.insert(key.into(), v);
            }
        };
        match objective.as_str() {
            "pairs" => {
                put("batch_pairs", batch_pairs);
                put("negatives", negatives);
                let source = match pairs {
                    Some(Value::String(p)) if p == "koch-set" => {
                        Some(one_key("koch-set", Value::Object(koch_set)))
                    }
                    other => other,
                };
                put("source", source);
            }
            "all-pairs" => {
                put("classes_per_batch", classes);
                put("images_per_class", images);
                put("negatives", negatives);
            }
            _ => {}
        }
        train.insert(
            "objective".into(),
            one_key(&objective, Value::Object(fields)),
        );
    }
    root.insert("data".into(), Value::Object(data));
    root.insert("train".into(), Value::Object(train));
}

/// A configuration from JSON; an error names the field (`train.optimizer.adam.lr: invalid
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

impl TrainConfig {
    /// The configuration a checkpoint's network was trained with, from the
    /// provenance the trainer stores in it (`None` when it holds none, or one this
    /// version cannot read).
    pub fn from_provenance(provenance: &serde_json::Value) -> Option<TrainConfig> {
        let mut value = provenance.get("config")?.clone();
        upgrade_flat_layout(&mut value);
        from_value(value).ok().filter(|c| c.validate().is_ok())
    }

    /// The test-time poses this configuration's network learned to compare:
    /// the episodes' quarter turns and mirror images, each a class of its own in
    /// training ([`TestTimeViews`] without shifts); only the image as it is for the
    /// pair objectives.
    pub fn trained_poses(&self) -> TestTimeViews {
        match self.train.objective {
            Objective::Episodes(e) => TestTimeViews {
                turns: e.rotations,
                mirror: e.mirror,
                ..TestTimeViews::NONE
            },
            Objective::Pairs(_) | Objective::AllPairs(_) => TestTimeViews::NONE,
        }
    }

    /// `self` with `settings` applied, each `PATH=VALUE` (`train.optimizer.adam.lr=3e-4`,
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
                    "expected PATH=VALUE, e.g. train.optimizer.adam.lr=3e-4".into(),
                ));
            };
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(bad(setting, format!("{path:?} is not a dotted path")));
            }
            // A field of another optimizer or objective switches it first the way
            // `--optimizer` and `--objective` do, so that the settings the variants
            // share (Adam's learning rate for AdamW) carry over.
            let keys: Vec<&str> = path.split('.').collect();
            if let ["train", kind @ ("optimizer" | "objective"), name, _, ..] = keys[..] {
                let mut current: TrainConfig =
                    from_value(value.clone()).map_err(|e| bad(setting, e))?;
                let t = &mut current.train;
                if kind == "optimizer" {
                    t.optimizer = t.optimizer.switched_to(name).map_err(|e| bad(setting, e))?;
                } else {
                    t.objective = t.objective.switched_to(name).map_err(|e| bad(setting, e))?;
                }
                value = serde_json::to_value(&current).expect("config serialises");
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
        "train.fit_steps_to_time",
        "train.patience",
        "train.validate_at_start",
        "train.checkpoint_every",
        "train.log_every",
        "train.eval_batch",
        "train.keep",
        "train.threads",
        "train.device",
    ];

    /// The settings in which `self` differs from `saved` (a run's own configuration)
    /// that a resume may not change, as dotted paths (`train.optimizer.adam.lr`); empty when
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
        // A cosine without its own length spans the step limit, which then changes
        // every later step's learning rate.
        let spans_max_steps =
            |c: &TrainConfig| matches!(c.train.lr_schedule, LrSchedule::Cosine { steps: None, .. });
        if (spans_max_steps(self) || spans_max_steps(saved))
            && self.train.max_steps != saved.train.max_steps
        {
            changed.push("train.max_steps (the cosine schedule spans it)".into());
        }
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

/// Merges `overlay` into `base`: objects field by field (recursively), anything else
/// replaced.
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
    fn a_checkpoint_provenance_gives_the_poses_its_network_was_trained_with() {
        let provenance = |c: &TrainConfig| serde_json::json!({"best": {}, "config": c});
        let default = TrainConfig::default_preset();
        let read = TrainConfig::from_provenance(&provenance(&default)).unwrap();
        assert_eq!(read, default);
        let poses = read.trained_poses();
        assert_eq!((poses.shift, poses.turns, poses.mirror), (0, 4, true));
        let paper = TrainConfig::paper();
        let read = TrainConfig::from_provenance(&provenance(&paper)).unwrap();
        assert_eq!(read.trained_poses(), TestTimeViews::NONE);
        // Two turns without mirror images, as --set makes them.
        let two = default
            .with_settings(&[
                "train.objective.episodes.rotations=2".into(),
                "train.objective.episodes.mirror=false".into(),
            ])
            .unwrap();
        let poses = TrainConfig::from_provenance(&provenance(&two))
            .unwrap()
            .trained_poses();
        assert_eq!((poses.turns, poses.mirror), (2, false));
        // The flat layout of older runs still reads: episodes without mirror images.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let legacy: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("legacy-default.json")).unwrap(),
        )
        .unwrap();
        let old = TrainConfig::from_provenance(&serde_json::json!({ "config": legacy })).unwrap();
        assert_eq!(
            (old.trained_poses().turns, old.trained_poses().mirror),
            (4, false)
        );
        // No configuration, or one this version cannot read: none.
        assert_eq!(TrainConfig::from_provenance(&serde_json::Value::Null), None);
        let bad = serde_json::json!({"config": {"model": "nonsense"}});
        assert_eq!(TrainConfig::from_provenance(&bad), None);
        let mut invalid = provenance(&default);
        invalid["config"]["train"]["objective"]["episodes"]["rotations"] = 9.into();
        assert_eq!(TrainConfig::from_provenance(&invalid), None);
    }

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
        // The default (and so `long`) keeps its final averaged weights; the
        // faithful presets keep their best validation's.
        for p in Preset::ALL {
            let keep = TrainConfig::preset(p).train.keep;
            let expected = match p {
                Preset::Default | Preset::Long => Keep::Final,
                _ => Keep::BestValidation,
            };
            assert_eq!(keep, expected, "{}", p.name());
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
        assert_eq!(
            paper.train.optimizer,
            Optimizer::Sgd(SgdSchedule::default())
        );
        assert_eq!(
            paper.train.objective,
            Objective::Pairs(PairBatchSpec {
                batch_pairs: 128,
                negatives: NegativeFrom::SameAlphabet,
                source: PairSource::KochSet {
                    base_pairs: 150_000,
                    distorted_copies: 8
                }
            })
        );
        assert_eq!(paper.data.split, SplitName::Koch);
        assert_eq!((paper.train.epochs, paper.train.patience), (200, 20));
        let reference = TrainConfig::reference();
        assert_eq!(
            reference.train.optimizer,
            Optimizer::Adam(AdamSettings {
                lr: 6e-5,
                ..AdamSettings::default()
            })
        );
        assert_eq!(reference.data.split, SplitName::KochAllDrawers);
        assert!(matches!(
            reference.train.objective,
            Objective::Pairs(PairBatchSpec {
                source: PairSource::Online,
                negatives: NegativeFrom::AnyAlphabet,
                ..
            })
        ));
        let default = TrainConfig::default();
        assert_eq!(
            default.train.objective,
            Objective::Episodes(EpisodeObjective {
                mirror: true,
                ..EpisodeObjective::default()
            })
        );
        assert_eq!(default.model.arch, Arch::CONV4);
        assert_eq!(default.model.input_size, DEFAULT_INPUT_SIZE);
        assert_eq!(default.train.optimizer.name(), "adam");
        assert!(default.train.calibrate && !default.data.distort);
        // A cosine over the episodes that fit into the minutes, the weights averaged.
        assert_eq!(default.train.max_steps, None);
        assert!(default.train.steps_sized_by_time());
        assert_eq!(default.train.max_minutes, Some(DEFAULT_MINUTES));
        assert!(matches!(
            default.train.objective,
            Objective::Episodes(EpisodeObjective {
                mirror: true,
                rotations: 4,
                ..
            })
        ));
        assert!(matches!(
            default.train.lr_schedule,
            LrSchedule::Cosine { steps: None, .. }
        ));
        assert!(matches!(
            default.train.weight_average,
            WeightAverage::Ema { .. }
        ));
        default.validate().unwrap();
        // `long` is the default preset's recipe, LONG_MEMBERS times.
        let long = TrainConfig::long();
        assert_eq!(default.train.members, 1);
        assert_eq!(long.train.members, LONG_MEMBERS);
        let mut one = long.clone();
        one.train.members = 1;
        one.preset = Preset::Default;
        assert_eq!(one, default);
        // The earlier presets keep their recipe.
        assert!(!paper.train.calibrate && paper.train.lr_schedule == LrSchedule::Constant);
        assert_eq!(
            small.train.objective,
            Objective::AllPairs(ClassBatchSpec::default())
        );
        assert!(small.data.distort);
        assert_eq!(paper.train.init, InitScheme::Paper);
        // A configuration saved before `init` existed reads as the paper's scheme.
        let mut old: serde_json::Value = serde_json::from_str(&default.to_json()).unwrap();
        old["train"].as_object_mut().unwrap().remove("init");
        let old: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.train.init, InitScheme::Paper);
    }

    #[test]
    fn run_configurations_in_the_flat_layout_still_load() {
        // Each preset's config.json as `train --print-config` wrote it before the
        // objectives and optimizers carried their own settings.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for preset in Preset::ALL {
            let path = dir.join(format!("legacy-{}.json", preset.name()));
            // The presets as they were then: `default` and `long` on 28×28 images,
            // the learning rate halved every 6,000 (20,000) episodes, no step limit,
            // no weight averaging, no mirror images and no timing of the steps.
            let mut then = TrainConfig::preset(preset);
            if matches!(preset, Preset::Default | Preset::Long) {
                then.model.input_size = 28;
                then.data.distortion = koch_distortion_at(28);
                then.train.max_steps = None;
                then.train.weight_average = WeightAverage::None;
                then.train.objective = Objective::Episodes(EpisodeObjective::default());
                then.train.fit_steps_to_time = false;
                // `long` was one network for 120 minutes then.
                then.train.members = 1;
                then.train.keep = Keep::BestValidation;
                if preset == Preset::Long {
                    then.train.max_minutes = Some(120.0);
                }
                then.train.lr_schedule = LrSchedule::Step {
                    every: if preset == Preset::Long { 20_000 } else { 6000 },
                    factor: 0.5,
                    warmup: 0,
                };
            }
            let old = TrainConfig::load_json(&path).unwrap();
            assert_eq!(old, then, "{}", path.display());
            // As a --config file too: merged over its preset, which gives what the
            // file lacks (the weight averaging, the mirror images, the timing of the
            // steps and the members of an ensemble, newer than the file).
            let over = TrainConfig::from_file_over(Preset::Default, &path).unwrap();
            let now = TrainConfig::preset(preset).train;
            then.train.weight_average = now.weight_average;
            then.train.fit_steps_to_time = now.fit_steps_to_time;
            then.train.members = now.members;
            then.train.keep = now.keep;
            if let (Objective::Episodes(e), Objective::Episodes(n)) =
                (&mut then.train.objective, &now.objective)
            {
                e.mirror = n.mirror;
            }
            assert_eq!(over, then, "{}", path.display());
        }
        // AdamW's decay moves with it; a current configuration is left alone.
        let mut flat: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("legacy-default.json")).unwrap(),
        )
        .unwrap();
        flat["train"]["optimizer"] = "adamw".into();
        flat["train"]["adam"]["weight_decay"] = 0.05.into();
        upgrade_flat_layout(&mut flat);
        let c = from_value(flat.clone()).unwrap();
        assert!(
            matches!(c.train.optimizer, Optimizer::Adamw(w) if w.weight_decay == 0.05 && w.lr == 1e-3)
        );
        let before = flat.clone();
        upgrade_flat_layout(&mut flat);
        assert_eq!(flat, before);
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
        train.remove("weight_average");
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
            r#"{"train": {"optimizer": {"adam": {"lr": 0.002}}, "seed": 7,
                "objective": {"all-pairs": {"images_per_class": 5}}}}"#,
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &json).unwrap();
        let Optimizer::Adam(adam) = c.train.optimizer else {
            panic!("{:?}", c.train.optimizer)
        };
        assert_eq!((adam.lr, adam.beta1), (0.002, 0.9));
        assert_eq!(c.train.seed, 7);
        let Objective::AllPairs(classes) = c.train.objective else {
            panic!("{:?}", c.train.objective)
        };
        assert_eq!(
            (classes.classes_per_batch, classes.images_per_class),
            (8, 5)
        );

        let toml = dir.path().join("c.toml");
        std::fs::write(
            &toml,
            "preset = \"paper\"\n[train]\nepochs = 3\n[train.optimizer.sgd.layers.fc]\nlr = 0.01\nmomentum = 0.8\nweight_decay = 0.0\n",
        )
        .unwrap();
        let c = TrainConfig::from_file_over(Preset::Default, &toml).unwrap();
        assert_eq!(c.preset, Preset::Paper);
        assert_eq!(c.train.epochs, 3);
        let Optimizer::Sgd(sgd) = &c.train.optimizer else {
            panic!("{:?}", c.train.optimizer)
        };
        assert_eq!(sgd.layers["fc"].lr, 0.01);
        assert_eq!(sgd.layers["conv1"], SgdSchedule::default().layers["conv1"]);

        // --set: any field by its path; JSON values; a variant switched by its key.
        let set = |s: &[&str]| {
            let s: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            TrainConfig::default_preset().with_settings(&s)
        };
        let c = set(&[
            "train.optimizer.adam.lr=3e-4",
            "train.objective.episodes.way=30",
            r#"train.lr_schedule={"cosine": {"steps": 100, "min_factor": 0.1, "warmup": 0}}"#,
            "train.device=cpu",
        ])
        .unwrap();
        assert!(matches!(c.train.optimizer, Optimizer::Adam(a) if a.lr == 3e-4));
        assert!(matches!(c.train.objective, Objective::Episodes(e) if e.way == 30));
        assert!(matches!(
            c.train.lr_schedule,
            LrSchedule::Cosine {
                steps: Some(100),
                ..
            }
        ));
        // A variant switched by a field's path keeps the settings it shares with the
        // one before (the preset's learning rate), as `--optimizer` does; one switched
        // by a whole table takes its defaults for the fields not given.
        let c = set(&["train.optimizer.adamw.weight_decay=0.1"]).unwrap();
        assert!(
            matches!(c.train.optimizer, Optimizer::Adamw(w) if w.weight_decay == 0.1 && w.lr == 1e-3)
        );
        let c = set(&[r#"train.optimizer={"adamw": {"weight_decay": 0.1}}"#]).unwrap();
        assert!(
            matches!(c.train.optimizer, Optimizer::Adamw(w) if w.weight_decay == 0.1 && w.lr == 6e-5)
        );
        for wrong in [
            "train.optimizer.adam.lr",
            "train.optimizer.adam.nope=1",
            "train.optimizer.adam.lr=fast",
            "train.optimizer.adam.weight_decay=0.1",
            "train.optimizer.adamm.lr=0.1",
            "train.objective.episode.way=5",
            "=1",
        ] {
            let err = set(&[wrong]).unwrap_err().to_string();
            assert!(err.contains("--set"), "{wrong}: {err}");
        }
        let err = set(&["train.objective.episodes.way=1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("way"), "{err}");

        // A resume may change how long a run goes on, not what a step computes. (A
        // run of the default preset saves the step count it was sized to.)
        let mut saved = TrainConfig::default_preset();
        saved.train.max_steps = Some(10_500);
        let mut longer = saved.clone();
        longer.train.max_minutes = Some(60.0);
        longer.train.threads = Some(1);
        assert!(longer.fixed_changes(&saved).is_empty());
        let mut other = longer.clone();
        other.train.optimizer.set_lr(3e-4);
        other.data.validation_trials = 9;
        other.train.lr_schedule = LrSchedule::Constant;
        assert_eq!(
            other.fixed_changes(&saved),
            [
                "data.validation_trials",
                "train.lr_schedule",
                "train.optimizer.adam.lr"
            ]
        );
        // The default's cosine spans the step limit: raising it changes the schedule
        // unless the cosine has a length of its own.
        longer.train.max_steps = Some(21_000);
        assert_eq!(
            longer.fixed_changes(&saved),
            ["train.max_steps (the cosine schedule spans it)"]
        );
        let mut own_length = saved.clone();
        own_length.train.lr_schedule = LrSchedule::Cosine {
            steps: Some(10_500),
            min_factor: 0.02,
            warmup: 0,
        };
        let mut own_longer = own_length.clone();
        own_longer.train.max_steps = Some(21_000);
        assert!(own_longer.fixed_changes(&own_length).is_empty());

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
            LrSchedule::Cosine {
                steps: Some(900),
                ..
            }
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
                r#"{"train": {"objective": {"pairs": {"batch_pairs": 0}}, "steps_per_epoch": 3}}"#,
                "train.objective.pairs.batch_pairs",
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
        c.train.optimizer = c.train.optimizer.switched_to("adamw").unwrap();
        c.validate().unwrap();
        let mut c = TrainConfig::paper();
        let Optimizer::Sgd(sgd) = &mut c.train.optimizer else {
            panic!()
        };
        sgd.layers.remove("conv2");
        assert!(c.validate().unwrap_err().to_string().contains("conv2"));
        let mut c = TrainConfig::small();
        c.train.objective = Objective::AllPairs(ClassBatchSpec {
            images_per_class: 1,
            ..ClassBatchSpec::default()
        });
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("images_per_class")
        );
        // Only Koch's set may leave the epoch length to the set.
        let mut c = TrainConfig::default();
        c.train.steps_per_epoch = None;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("steps_per_epoch")
        );
        let mut c = TrainConfig::paper();
        assert_eq!(c.train.steps_per_epoch, None);
        c.train.objective = c.train.objective.switched_to("episodes").unwrap();
        assert!(c.validate().is_err());
    }
}
