//! `eval`: one-shot accuracy of the network or a baseline, with a 95% interval.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_data::lake::load_runs;
use siamese_data::mnist::{MNIST_DEFAULT_DIR, MNIST_DEFAULT_FIT, MNIST_SIDE, MnistSet};
use siamese_data::sample::TaskSpec;
use siamese_data::user_image::Fit;
use siamese_data::{OmniglotSet, Part, SplitName};
use siamese_eval::{
    EvalOptions, EvalReport, MNIST_TRIALS, ModifiedHausdorff, OneShotScorer, PixelNn, Protocol,
    TrialSet, adapt_batch_norm, evaluate, koch_trial_count, save_sheet,
};

use crate::data_source::DataSourceArgs;
use crate::model::{ModelArgs, Models, TtaPoses};

/// The Modified Hausdorff baseline's ink threshold on MNIST's grey digits.
const MNIST_INK_THRESHOLD: u8 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The trained network (needs a checkpoint).
    Siamese,
    /// Modified Hausdorff Distance on the inked pixels (Lake et al.'s baseline).
    Hausdorff,
    /// 1-nearest-neighbour on raw pixels (L2).
    PixelNn,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Siamese, Method::Hausdorff, Method::PixelNn];

    pub fn name(self) -> &'static str {
        match self {
            Method::Siamese => "siamese",
            Method::Hausdorff => "hausdorff",
            Method::PixelNn => "pixel-nn",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown method {s:?}: expected siamese, hausdorff or pixel-nn"))
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Method to evaluate.
    #[arg(long, default_value = "siamese")]
    pub method: Method,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Candidates per trial [default: 20; 10 with --mnist].
    #[arg(long)]
    pub way: Option<usize>,
    /// Examples per candidate class.
    #[arg(long, default_value_t = 1)]
    pub shots: usize,
    /// Number of trials [default: Koch's 400 on test, 320 on validation, 400 on MNIST].
    #[arg(long)]
    pub trials: Option<usize>,
    /// Which held-out part of the evaluation alphabets: test or val.
    #[arg(long, default_value = "test")]
    pub split: Part,
    /// Candidates from the query's alphabet (Koch's and Lake's protocol; the default).
    #[arg(long, conflicts_with = "any_alphabet")]
    pub within_alphabet: bool,
    /// Candidates from any alphabet (easier).
    #[arg(long)]
    pub any_alphabet: bool,
    /// Evaluate on Lake's 20 official runs instead [default DIR: <data>/all_runs].
    #[arg(long, value_name = "DIR", num_args = 0..=1, conflicts_with = "mnist")]
    pub lake_runs: Option<Option<PathBuf>>,
    /// Koch et al.'s cross-domain test instead: one-shot trials on the MNIST test set
    /// (10-way unless --way), the network trained on Omniglot only. DIR holds the
    /// uncompressed test files, fetched there when missing [default DIR: data/mnist].
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        conflicts_with_all = ["any_alphabet", "within_alphabet"]
    )]
    pub mnist: Option<Option<PathBuf>>,
    /// Local folder or HTTP(S) base URL holding t10k-images-idx3-ubyte.gz and
    /// t10k-labels-idx1-ubyte.gz, used when the MNIST test set is missing
    /// [default: the public copy].
    #[arg(long, value_name = "DIR|URL", env = siamese_data::mnist::MNIST_MIRROR_ENV)]
    pub mnist_mirror: Option<String>,
    /// How MNIST digits are fitted to the input (the network's; 28×28 for the
    /// baselines) [default: strokes].
    #[arg(long, requires = "mnist")]
    pub fit: Option<Fit>,
    /// Seed of the trial sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Test-time augmentation: embed each image as the mean of the tower's features
    /// of it and of four copies shifted by this many pixels (0: off). On by default:
    /// on the validation alphabets it raised the accuracy of every seed of the
    /// default preset (README, "Results"); it costs five embeddings per image (and
    /// pose).
    #[arg(long, value_name = "PIXELS", default_value_t = 1)]
    pub tta_shift: usize,
    /// Test-time poses: `trained` scores each pair in every pose the networks were
    /// trained to tell apart as classes of their own (the episodes' quarter turns
    /// and mirror images, read from the checkpoints; 8 for the default preset),
    /// query and candidate turned alike, and takes the mean logit; `none`: the
    /// images as they are. `trained` raised the validation accuracy of every seed of
    /// the default preset (README, "Results"); it costs an embedding per pose.
    #[arg(long, value_enum, default_value_t = TtaPoses::Trained)]
    pub tta_poses: TtaPoses,
    /// AdaBN: take batch norm's statistics from the images of the trials (all of
    /// them, without labels) instead of the training images. Outside Koch's
    /// protocol, which scores each trial on its own; the report's method says so.
    /// Batch-normalised towers only.
    #[arg(long)]
    pub adapt_bn: bool,
    /// Images per embedding batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Write a picture of a few trials (query, candidates, truth and choice marked).
    #[arg(long, value_name = "FILE.png")]
    pub save_sheet: Option<PathBuf>,
    /// Trials on the sheet.
    #[arg(long, default_value_t = 8)]
    pub sheet_rows: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs, progress: bool) -> Result<()> {
    if args.way.is_some_and(|w| w < 2) || args.shots == 0 || args.batch == 0 {
        bail!("--way must be at least 2, --shots and --batch at least 1");
    }
    if args.mnist.is_some() && args.way.is_some_and(|w| w > 10) {
        bail!("--way with --mnist: at most 10 (there are 10 digits)");
    }
    if args.mnist.is_some() && args.trials == Some(0) {
        bail!("--trials must be at least 1");
    }
    if args.adapt_bn && args.method != Method::Siamese {
        bail!("--adapt-bn adapts a network's batch norm: use it with --method siamese");
    }
    match args.method {
        Method::Siamese => {
            let models = Models::load(&args.model)?;
            let mut name = models.name();
            let views = models.views(args.tta_shift, args.tta_poses);
            if let Some(views) = views.describe() {
                name += &format!(" ({views})");
            }
            if args.adapt_bn {
                name += " (batch norm adapted to the trials' images)";
            }
            run_with(args, models.input_size(), progress, |set, options| {
                if !args.adapt_bn {
                    return finish(&models.scorer(&name, views)?, set, options, args);
                }
                let images: Vec<_> = set.images.iter().map(|i| i.image).collect();
                let adapted = Models {
                    nets: models
                        .nets
                        .iter()
                        .map(|net| adapt_batch_norm(net, &images, args.batch))
                        .collect::<Result<_, _>>()
                        .context("--adapt-bn")?,
                    paths: models.paths.clone(),
                    trained_poses: models.trained_poses.clone(),
                };
                tracing::info!(
                    "batch norm adapted to the {} images of the trials",
                    images.len()
                );
                finish(&adapted.scorer(&name, views)?, set, options, args)
            })
        }
        Method::Hausdorff => {
            // Omniglot's images are 1-bit, where any threshold gives the same points;
            // MNIST's digits are grey, and few pixels are pure ink: half ink is ink.
            let scorer = if args.mnist.is_some() {
                ModifiedHausdorff {
                    ink_threshold: MNIST_INK_THRESHOLD,
                }
            } else {
                ModifiedHausdorff::default()
            };
            run_with(args, MNIST_SIDE, progress, |set, options| {
                finish(&scorer, set, options, args)
            })
        }
        Method::PixelNn => run_with(args, MNIST_SIDE, progress, |set, options| {
            finish(&PixelNn, set, options, args)
        }),
    }
}

/// Builds the trial set that `args` asks for and reports what `score` makes of it.
/// `side`: the method's input side, which MNIST digits are fitted to.
fn run_with(
    args: &EvalArgs,
    side: usize,
    progress: bool,
    score: impl Fn(&TrialSet<'_>, &EvalOptions) -> Result<EvalReport>,
) -> Result<()> {
    let options = EvalOptions {
        embed_batch: args.batch,
        keep_trials: args.save_sheet.is_some(),
        ..EvalOptions::default()
    };
    let report = if let Some(dir) = &args.mnist {
        let dir = dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(MNIST_DEFAULT_DIR));
        args.source
            .ensure_mnist(&dir, args.mnist_mirror.as_deref(), progress)?;
        let raw = MnistSet::load(&dir).with_context(|| {
            format!(
                "loading the MNIST test set from {} (fetch it again with `cargo xtask \
                 fetch-mnist --dest {} --force`)",
                dir.display(),
                dir.display()
            )
        })?;
        let fit = args.fit.unwrap_or(MNIST_DEFAULT_FIT);
        let fitted = raw.map_images(|img| fit.apply(img, side));
        tracing::info!(
            "MNIST: {} digits from {}, fitted to {side}×{side} ({fit})",
            raw.len(),
            dir.display()
        );
        let set = TrialSet::mnist(
            &fitted,
            args.way.unwrap_or(10),
            args.shots,
            args.trials.unwrap_or(MNIST_TRIALS),
            args.seed,
            fit.name(),
            side,
        )?;
        score(&set, &options)?
    } else if let Some(dir) = &args.lake_runs {
        let dir = match dir {
            Some(dir) => dir.clone(),
            None => {
                args.source.ensure(&[OmniglotSet::AllRuns], progress)?;
                args.source.data.join(OmniglotSet::AllRuns.folder())
            }
        };
        let runs = load_runs(&dir)
            .with_context(|| format!("loading Lake's runs from {}", dir.display()))?;
        let set = TrialSet::lake(&runs)?.with_data_label(dir.display().to_string());
        score(&set, &options)?
    } else {
        let part = args.split;
        if part == Part::Train {
            bail!("--split: test or val (the train part is what a network learns from)");
        }
        // Every named split holds out the same evaluation parts.
        let split = SplitName::Koch;
        args.source.ensure(&[OmniglotSet::Evaluation], progress)?;
        let data = split
            .index(part, &args.source.data)
            .and_then(|idx| idx.load())
            .with_context(|| format!("loading the {part} part of the evaluation alphabets"))?;
        let trials = args.trials.unwrap_or_else(|| koch_trial_count(part));
        // `--within-alphabet` is the default, said explicitly; clap keeps it and
        // `--any-alphabet` apart.
        let within = args.within_alphabet || !args.any_alphabet;
        let way = args.way.unwrap_or(20);
        let set = if args.shots == 1 && within {
            TrialSet::koch(&data, way, trials, args.seed)?
        } else {
            let spec = TaskSpec {
                way,
                shots: args.shots,
                within_alphabet: within,
            };
            TrialSet::tasks(&data, spec, trials, args.seed)?
        };
        let set = set.with_data_label(format!("{split}/{part}"));
        score(&set, &options)?
    };
    print_report(&report, args.json)
}

fn finish<S: OneShotScorer>(
    scorer: &S,
    set: &TrialSet<'_>,
    options: &EvalOptions,
    args: &EvalArgs,
) -> Result<EvalReport> {
    let report = evaluate(scorer, set, options)?;
    if let Some(path) = &args.save_sheet {
        save_sheet(set, &report, args.sheet_rows, path)?;
        tracing::info!("wrote {}", path.display());
    }
    Ok(report)
}

fn print_report(r: &EvalReport, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        // The summary: the report leaves its picture data out of its JSON.
        serde_json::to_writer(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "method    {}", r.method)?;
    writeln!(out, "data      {}", r.data)?;
    writeln!(out, "protocol  {}", serde_json::to_string(&r.protocol)?)?;
    if let Some(seed) = r.seed {
        writeln!(out, "seed      {seed}")?;
    }
    writeln!(
        out,
        "accuracy  {:.2}% ({}/{}), 95% CI [{:.2}%, {:.2}%]; {} ties (counted wrong)",
        100.0 * r.accuracy,
        r.correct,
        r.trials,
        100.0 * r.ci95_low,
        100.0 * r.ci95_high,
        r.ties
    )?;
    if let Some(mean) = r.mean_run_error_percent {
        writeln!(out, "mean error over runs {mean:.2}%")?;
    }
    writeln!(
        out,
        "time      embed {:.2} s ({} images), score {:.2} s",
        r.timing.embed_seconds, r.timing.images_embedded, r.timing.score_seconds
    )?;
    let group = if matches!(r.protocol, Protocol::Mnist { .. }) {
        "query's digit"
    } else {
        "alphabet"
    };
    for (title, rows) in [(group, &r.per_alphabet), ("run", &r.per_run)] {
        if rows.is_empty() {
            continue;
        }
        writeln!(out, "\n{title:<36} {:>7} {:>9}", "correct", "accuracy")?;
        for g in rows.iter() {
            writeln!(
                out,
                "{:<36} {:>3}/{:<3} {:>8.1}%",
                g.name,
                g.correct,
                g.trials,
                100.0 * g.accuracy
            )?;
        }
    }
    Ok(())
}
