//! The data of a run, and the sampler of its batches.
//!
//! The batches themselves, and their counter-based seeds, are made in
//! [`siamese_data::batch`]: the batch of step `s` depends only on the configuration,
//! the seed and `s`, so resuming a run needs nothing but the step number.

use std::path::Path;

use siamese_data::batch::BatchSampler;
use siamese_data::{Dataset, GrayImage, Part};

use crate::TrainError;
use crate::config::TrainConfig;

/// The images a run trains and validates on.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// The split's train part.
    pub train: Dataset,
    /// The split's validation part.
    pub validation: Dataset,
}

impl TrainData {
    /// Loads the split's train and validation parts from `root` (e.g.
    /// `data/omniglot`), which must hold the split's sets, and fits them to the
    /// network's input ([`TrainData::fit_to`]).
    pub fn load(config: &TrainConfig, root: &Path) -> Result<Self, TrainError> {
        let split = config.data.split;
        let train = split.index(Part::Train, root)?.load()?;
        let validation = split.index(Part::Validation, root)?.load()?;
        TrainData { train, validation }.fit_to(config.model.input_size)
    }

    /// The data shrunk to the network's input side: by block means when the images'
    /// side is a whole multiple of it (105×105 Omniglot for the 35×35 `koch35` tower:
    /// by 3), by area resampling otherwise (105 → 28 for the batch-normalised
    /// towers); as it is when the sides already agree; an error for a larger side.
    /// Koch's distortions then act on the shrunk images, so their translations are in
    /// the shrunk pixels.
    pub fn fit_to(self, input_size: usize) -> Result<Self, TrainError> {
        let Some(side) = self.train.images().first().map(GrayImage::width) else {
            return Ok(self);
        };
        if side == input_size {
            return Ok(self);
        }
        let fit = |data: &Dataset| {
            data.shrink_to(input_size).map_err(|e| {
                TrainError::Config(format!(
                    "the network takes {input_size}×{input_size} images (model.input_size), \
                     and {e}: choose an input size no larger than the images' side"
                ))
            })
        };
        let fitted = TrainData {
            train: fit(&self.train)?,
            validation: fit(&self.validation)?,
        };
        tracing::info!(
            "shrank the {side}×{side} images to the network's {input_size}×{input_size}"
        );
        Ok(fitted)
    }

    /// Checks that the images fit the network's input.
    pub fn check_size(&self, input_size: usize) -> Result<(), TrainError> {
        for (part, data) in [("train", &self.train), ("validation", &self.validation)] {
            if let Some(img) = data.images().first()
                && (img.width(), img.height()) != (input_size, input_size)
            {
                return Err(TrainError::Config(format!(
                    "the {part} images are {}×{}, the network takes {input_size}×{input_size} \
                     (model.input_size)",
                    img.width(),
                    img.height()
                )));
            }
        }
        Ok(())
    }
}

/// The sampler of `config`'s batches over `train` (its objective's batches, distorted
/// when `data.distort`, seeded by `train.seed`); an error names the objective when
/// the data cannot give its batches.
pub fn batch_sampler(config: &TrainConfig, train: &Dataset) -> Result<BatchSampler, TrainError> {
    let d = &config.data;
    let objective = &config.train.objective;
    BatchSampler::new(
        objective.batch_spec(),
        d.distort.then(|| d.distortion.clone()),
        config.train.seed,
        train,
    )
    .map_err(|e| TrainError::Config(format!("train.objective.{}: {e}", objective.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EpisodeObjective, Objective};
    use siamese_data::DatasetIndex;
    use siamese_data::augment::synthetic_glyph;
    use siamese_data::seeded_rng;

    #[test]
    fn a_batch_the_data_cannot_give_names_the_objective() {
        let chars = vec![(1..=6).collect::<Vec<u8>>(); 6];
        let index = DatasetIndex::synthetic(&[chars]);
        let mut rng = seeded_rng(42);
        let images = (0..index.images().len())
            .map(|_| synthetic_glyph(&mut rng, 20, 20))
            .collect();
        let train = Dataset::from_parts(index, images).unwrap();
        let mut c = TrainConfig::default();
        let err = batch_sampler(&c, &train).unwrap_err().to_string();
        assert!(
            err.contains("train.objective.episodes") && err.contains("20-way"),
            "{err}"
        );
        c.train.objective = Objective::Episodes(EpisodeObjective {
            way: 3,
            queries: 2,
            ..EpisodeObjective::default()
        });
        batch_sampler(&c, &train).unwrap();
    }
}
