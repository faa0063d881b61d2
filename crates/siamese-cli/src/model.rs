//! `--model`: the networks a scoring command loads, one or an ensemble.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_data::GrayImage;
use siamese_eval::{Embeddings, OneShotScorer, TestTimeViews, ensemble_scorer};
use siamese_model::{SiameseNet, select_device};
use siamese_train::TrainConfig;

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
    /// Each network's trained poses ([`TrainConfig::trained_poses`]), from its
    /// checkpoint's provenance; none beyond the image itself when it has none.
    pub trained_poses: Vec<TestTimeViews>,
}

/// Which poses `eval` scores each pair in (`--tta-poses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TtaPoses {
    /// Every pose all the networks were trained to tell apart.
    Trained,
    /// The images as they are.
    None,
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
        let (nets, trained_poses) = paths
            .iter()
            .map(|path| {
                let (net, info) = SiameseNet::load(path, None, &device)
                    .with_context(|| format!("--model: loading {}", path.display()))?;
                tracing::info!("loaded {} ({})", path.display(), info.config);
                let poses = match TrainConfig::from_provenance(&info.provenance) {
                    Some(config) => config.trained_poses(),
                    None => {
                        tracing::info!(
                            "{}: no training configuration in the checkpoint, so no \
                             test-time poses beyond the image itself",
                            path.display()
                        );
                        TestTimeViews::NONE
                    }
                };
                Ok((net.detach(), poses))
            })
            .collect::<Result<(Vec<_>, Vec<_>)>>()?;
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
        Ok(Models {
            nets,
            paths,
            trained_poses,
        })
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

    /// The test-time views for `shift` pixels of shifts and `poses`: with
    /// [`TtaPoses::Trained`], the quarter turns and mirror images that every network
    /// was trained with.
    pub fn views(&self, shift: usize, poses: TtaPoses) -> TestTimeViews {
        let poses = match poses {
            TtaPoses::Trained => common_poses(&self.trained_poses),
            TtaPoses::None => TestTimeViews::NONE,
        };
        TestTimeViews { shift, ..poses }
    }

    /// The networks as one method, looking at `views` of each image.
    pub fn scorer(&self, name: &str, views: TestTimeViews) -> Result<impl OneShotScorer + '_> {
        Ok(ensemble_scorer(&self.nets, name, views)?)
    }
}

/// The poses that every network of `trained` learned: the fewest quarter turns, and
/// mirror images only when all were trained with them.
fn common_poses(trained: &[TestTimeViews]) -> TestTimeViews {
    if trained.is_empty() {
        return TestTimeViews::NONE;
    }
    TestTimeViews {
        turns: trained.iter().map(|p| p.turns).min().unwrap_or(1),
        mirror: trained.iter().all(|p| p.mirror),
        ..TestTimeViews::NONE
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ensemble_looks_at_the_poses_all_its_networks_learned() {
        let poses = |turns, mirror| TestTimeViews {
            turns,
            mirror,
            ..TestTimeViews::NONE
        };
        assert_eq!(common_poses(&[poses(4, true)]), poses(4, true));
        assert_eq!(
            common_poses(&[poses(4, true), poses(2, false)]),
            poses(2, false)
        );
        assert_eq!(
            common_poses(&[poses(3, true), poses(4, true)]),
            poses(3, true)
        );
        assert_eq!(common_poses(&[]), TestTimeViews::NONE);
    }
}
