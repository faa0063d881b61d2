//! `compare`, `classify` and `verify`: the trained network on a user's own images
//! and on balanced pairs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use siamese_data::sample::NegativeFrom;
use siamese_data::user_image::{Fit, load_user_image_with};
use siamese_data::{GrayImage, OmniglotSet, Part, SplitName};
use siamese_eval::{EvalOptions, OneShotScorer, TestTimeViews, sigmoid, verify};

use crate::data_source::DataSourceArgs;
use crate::model::{ModelArgs, Models, embed_all};

/// Images per embedding batch.
const EMBED_BATCH: usize = 128;
/// Pairs per call of the head (bounds the gathered features' memory).
const PAIR_BATCH: usize = 16_384;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// First image (any common format and size).
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the images are fitted to the network's input (auto: unchanged at its
    /// size, else placed like an Omniglot character).
    #[arg(long, default_value = "auto")]
    pub fit: Fit,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Folder with one example per class: an image file (label = file name without
    /// extension) or a subfolder of images (label = folder name; all its images are
    /// examples, and the class score is their mean).
    #[arg(long, value_name = "DIR")]
    pub support: PathBuf,
    /// Images to classify.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub query: Vec<PathBuf>,
    /// How many labels to print per query.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the images are fitted to the network's input (auto: unchanged at its
    /// size, else placed like an Omniglot character; for MNIST digits, `strokes` is
    /// what `eval --mnist` does by default).
    #[arg(long, default_value = "auto")]
    pub fit: Fit,
    /// Print one JSON object per query, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Balanced same/different pairs drawn from each of the validation and test parts.
    #[arg(long, default_value_t = 10_000)]
    pub pairs: usize,
    /// Draw negatives from any alphabet instead of the same alphabet.
    #[arg(long)]
    pub any_alphabet: bool,
    /// Seed of the pair sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let models = Models::load(&args.model)?;
    let size = models.input_size();
    let a = load_user_image_with(&args.a, size, args.fit)?;
    let b = load_user_image_with(&args.b, size, args.fit)?;
    let scorer = models.scorer(&models.name(), TestTimeViews::NONE)?;
    let features = scorer.embed(&[&a, &b])?;
    let logit = scorer.score_pairs(&features, &[(0, 1)])?[0] as f32;
    let p = sigmoid(f64::from(logit));
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "a": args.a, "b": args.b, "logit": logit, "probability_same": p,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "p(same) = {p:.4}  (logit {logit:.3})")?;
    }
    Ok(())
}

/// One class of a support folder.
struct SupportClass {
    label: String,
    examples: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Ranked {
    label: String,
    /// Mean logit over the class's examples.
    score: f64,
    probability: f64,
}

pub fn classify(args: &ClassifyArgs) -> Result<()> {
    let classes = read_support(&args.support)?;
    let models = Models::load(&args.model)?;
    let size = models.input_size();
    let load = |p: &PathBuf| {
        load_user_image_with(p, size, args.fit)
            .with_context(|| format!("--query/--support image {}", p.display()))
    };
    let examples: Vec<GrayImage> = classes
        .iter()
        .flat_map(|c| c.examples.iter())
        .map(load)
        .collect::<Result<_>>()?;
    let queries: Vec<GrayImage> = args.query.iter().map(load).collect::<Result<_>>()?;
    let scorer = models.scorer(&models.name(), TestTimeViews::NONE)?;
    // Examples first, then queries, in one embedding; every (query, example) pair
    // through the head, row by query.
    let ne = examples.len();
    let images: Vec<&GrayImage> = examples.iter().chain(&queries).collect();
    let features = embed_all(&scorer, &images, EMBED_BATCH)?;
    let pairs: Vec<(usize, usize)> = (0..queries.len())
        .flat_map(|q| (0..ne).map(move |e| (ne + q, e)))
        .collect();
    let mut logits: Vec<f32> = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(PAIR_BATCH) {
        logits.extend(
            scorer
                .score_pairs(&features, chunk)?
                .into_iter()
                .map(|s| s as f32),
        );
    }

    let mut out = std::io::stdout().lock();
    for (q, path) in args.query.iter().enumerate() {
        let row = &logits[q * ne..(q + 1) * ne];
        let mut start = 0;
        let mut ranked: Vec<Ranked> = classes
            .iter()
            .map(|c| {
                let scores = &row[start..start + c.examples.len()];
                start += c.examples.len();
                let score = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len() as f64;
                Ranked {
                    label: c.label.clone(),
                    score,
                    probability: sigmoid(score),
                }
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        ranked.truncate(args.top_k.max(1));
        if args.json {
            let v = serde_json::json!({"query": path, "top": ranked});
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "{}", path.display())?;
            for (i, r) in ranked.iter().enumerate() {
                writeln!(
                    out,
                    "  {}. {:<24} p = {:.4}  (logit {:.3})",
                    i + 1,
                    r.label,
                    r.probability,
                    r.score
                )?;
            }
        }
    }
    Ok(())
}

pub fn run_verify(args: &VerifyArgs, progress: bool) -> Result<()> {
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    args.source.ensure(&[OmniglotSet::Evaluation], progress)?;
    let load = |part: Part| {
        SplitName::Koch
            .index(part, &args.source.data)
            .and_then(|idx| idx.load())
            .with_context(|| format!("loading the {part} part of the evaluation alphabets"))
    };
    let (val, test) = (load(Part::Validation)?, load(Part::Test)?);
    let models = Models::load(&args.model)?;
    let negatives = if args.any_alphabet {
        NegativeFrom::AnyAlphabet
    } else {
        NegativeFrom::SameAlphabet
    };
    let scorer = models.scorer(&models.name(), TestTimeViews::NONE)?;
    let r = verify(
        &scorer,
        &val,
        &test,
        args.pairs,
        negatives,
        args.seed,
        &EvalOptions::default(),
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
        return Ok(());
    }
    writeln!(out, "method  {}", r.method)?;
    writeln!(
        out,
        "pairs   {} test, {} validation ({:?} negatives, seed {})",
        r.at_half.pairs, r.validation.pairs, r.negatives, r.seed
    )?;
    for (what, a) in [
        ("test at p > 0.5", &r.at_half),
        (
            "test at the validation threshold",
            &r.at_validation_threshold,
        ),
        ("validation at that threshold", &r.validation),
    ] {
        writeln!(
            out,
            "{what:<34} threshold {:.4}: {:.2}% ({}/{}), 95% CI [{:.2}%, {:.2}%]",
            a.threshold,
            100.0 * a.accuracy,
            a.correct,
            a.pairs,
            100.0 * a.ci95_low,
            100.0 * a.ci95_high
        )?;
    }
    Ok(())
}

/// The classes of a support folder, sorted by label.
fn read_support(dir: &Path) -> Result<Vec<SupportClass>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--support {}: cannot read the folder", dir.display()))?;
    let mut classes = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let mut examples: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            examples.sort();
            if examples.is_empty() {
                bail!(
                    "--support: the class folder {} holds no images",
                    path.display()
                );
            }
            classes.push(SupportClass {
                label: name,
                examples,
            });
        } else if is_image(&path) {
            let label = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name);
            classes.push(SupportClass {
                label,
                examples: vec![path],
            });
        }
    }
    classes.sort_by(|a, b| a.label.cmp(&b.label));
    if classes.len() < 2 {
        bail!(
            "--support {}: found {} class(es); put one image per class (or one subfolder of images per class) in it",
            dir.display(),
            classes.len()
        );
    }
    if let Some(w) = classes.windows(2).find(|w| w[0].label == w[1].label) {
        bail!(
            "--support {}: the label {:?} appears twice",
            dir.display(),
            w[0].label
        );
    }
    Ok(classes)
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path.extension().is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().to_str(),
                Some("png" | "jpg" | "jpeg" | "bmp" | "gif" | "tif" | "tiff" | "webp")
            )
        })
}
