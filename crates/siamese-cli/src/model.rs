//! `--model`: the networks a scoring command loads, one or an ensemble.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_data::GrayImage;
use siamese_eval::{Embeddings, OneShotScorer, ensemble_scorer};
use siamese_model::{SiameseNet, select_device};

/// Where the scoring commands look for a model when `--model` is not given.
pub const DEFAULT_RUN: &str = "runs/latest";

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint file, or a run folder (its best checkpoint; every member's for an
    /// ensemble run such as the `long` preset's) [default: runs/latest]. Repeat it for
    /// an ensemble: each image is embedded by every network and a pair's score is the
    /// mean of their logits.
    #[arg(long, value_name = "PATH")]
    pub model: Vec<PathBuf>,
    /// Device for the networks: auto, cpu, cuda[:N], metal.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// The loaded networks of a `--model` list, for scoring (no gradients).
pub struct Models {
    pub nets: Vec<SiameseNet>,
    pub paths: Vec<PathBuf>,
}

impl Models {
    pub fn load(args: &ModelArgs) -> Result<Models> {
        let mut paths = Vec::new();
        if args.model.is_empty() {
            paths.extend(resolve_model_paths(None)?);
        }
        for given in &args.model {
            paths.extend(resolve_model_paths(Some(given))?);
        }
        let device = select_device(&args.device)?;
        let nets = paths
            .iter()
            .map(|path| {
                let (net, info) = SiameseNet::load(path, None, &device)
                    .with_context(|| format!("--model: loading {}", path.display()))?;
                tracing::info!("loaded {} ({})", path.display(), info.config);
                Ok(net.detach())
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(other) = nets
            .iter()
            .position(|n| n.config().input_size != nets[0].config().input_size)
        {
            bail!(
                "--model: {} takes {2}×{2} images, {} takes {3}×{3}: the networks of an \
                 ensemble must take the same input size",
                paths[0].display(),
                paths[other].display(),
                nets[0].config().input_size,
                nets[other].config().input_size
            );
        }
        Ok(Models { nets, paths })
    }

    /// The networks' input side.
    pub fn input_size(&self) -> usize {
        self.nets[0].config().input_size
    }

    /// The method's name in reports: the checkpoint, or the ensemble's.
    pub fn name(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        match paths.as_slice() {
            [one] => format!("siamese {one}"),
            many => format!(
                "ensemble of {} (mean logit): {}",
                many.len(),
                many.join(", ")
            ),
        }
    }

    /// The networks as one method, with `shift` pixels of test-time shifts (0: none).
    pub fn scorer(&self, name: &str, shift: usize) -> Result<impl OneShotScorer + '_> {
        Ok(ensemble_scorer(&self.nets, name, shift)?)
    }
}

/// The embeddings of `images` by `scorer`, in batches of `batch`.
pub fn embed_all<S: OneShotScorer>(
    scorer: &S,
    images: &[&GrayImage],
    batch: usize,
) -> Result<S::Embeddings> {
    let parts = images
        .chunks(batch.max(1))
        .map(|chunk| scorer.embed(chunk))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(S::Embeddings::concat(parts)?)
}

/// The checkpoints a `--model` value names: a file as is, a run folder's best
/// checkpoint, or each member's for an ensemble run.
pub fn resolve_model_paths(model: Option<&Path>) -> Result<Vec<PathBuf>> {
    let given = model.unwrap_or(Path::new(DEFAULT_RUN));
    let paths = if given.is_dir() {
        siamese_train::RunDir::best_models_in(given)?
    } else {
        vec![given.to_path_buf()]
    };
    for path in &paths {
        if path.is_file() {
            continue;
        }
        if model.is_none() {
            bail!(
                "no model: {} does not exist. Train one with `siamese-cli train`, or pass \
                 --model <checkpoint or run folder>, or use --method hausdorff|pixel-nn",
                path.display()
            );
        }
        bail!(
            "--model {}: {} is not a checkpoint file",
            given.display(),
            path.display()
        );
    }
    Ok(paths)
}
