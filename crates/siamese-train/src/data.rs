//! The data of a run and the batch of each step.
//!
//! # Counter-based randomness
//! The batch of step `s` depends only on the configuration, the seed and `s`: its
//! sampler and distortions are seeded with [`step_seed`]`(seed, s, stream)`, and
//! Koch's fixed set is shuffled for pass `p` with `step_seed(seed, p, ..)`. Resuming a
//! run therefore needs nothing but the step number.
//!
//! # Batches ahead of the steps
//! [`Sampler::prefetch`] makes the batches of the coming steps on a background thread
//! (on the CPU, the distortions on the rayon pool) while the device runs the current
//! step; the trainer uses it when the network is on a GPU. The batches are the same,
//! in the same order, as [`Sampler::batch`] makes them one by one.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::Scope;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use siamese_data::augment::{KochDistortion, distort_batch};
use siamese_data::sample::{
    NegativeFrom, PairEntry, koch_pair_set, sample_class_batch, sample_episode, sample_pairs,
};
use siamese_data::tensor::{episode_tensor, pair_batch, pixels_to_tensor};
use siamese_data::{Dataset, GrayImage, Part, seeded_rng};

use crate::TrainError;
use crate::config::{DataConfig, Objective, PairSource, TrainConfig};

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

/// Streams of [`step_seed`].
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Drawing the pairs or classes of a step.
    Sample = 1,
    /// The distortions of a step's K×M batch.
    Distort = 2,
    /// The order of a pass over Koch's fixed set.
    Shuffle = 3,
    /// Building Koch's fixed set (once).
    KochSet = 4,
}

/// A 64-bit seed for `(seed, counter, stream)`: SplitMix64 over their combination.
pub fn step_seed(seed: u64, counter: u64, stream: Stream) -> u64 {
    let mut z = seed
        ^ splitmix(counter.wrapping_add(0x9E37_79B9_7F4A_7C15))
        ^ splitmix(stream as u64 ^ 0xD1B5_4A32_D192_ED03);
    z = splitmix(z);
    z
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step's batch.
#[derive(Debug)]
pub enum Batch {
    /// Pairs: left and right images `(b, 1, s, s)` and targets `(b,)`.
    Pairs {
        left: Tensor,
        right: Tensor,
        targets: Tensor,
    },
    /// K×M images `(K·M, 1, s, s)` and their class labels.
    Classes { images: Tensor, labels: Vec<usize> },
    /// An episode's images `(way·(1 + queries), 1, s, s)`: each class's support, then
    /// its queries ([`siamese_data::sample::Episode`]'s layout).
    Episode {
        images: Tensor,
        way: usize,
        queries: usize,
    },
}

impl Batch {
    /// The same batch on `device` (a copy unless it is there already).
    pub fn to_device(self, device: &Device) -> Result<Batch, TrainError> {
        Ok(match self {
            Batch::Pairs {
                left,
                right,
                targets,
            } => Batch::Pairs {
                left: left.to_device(device)?,
                right: right.to_device(device)?,
                targets: targets.to_device(device)?,
            },
            Batch::Classes { images, labels } => Batch::Classes {
                images: images.to_device(device)?,
                labels,
            },
            Batch::Episode {
                images,
                way,
                queries,
            } => Batch::Episode {
                images: images.to_device(device)?,
                way,
                queries,
            },
        })
    }

    /// The pairs the step's loss scores.
    pub fn pair_count(&self) -> usize {
        match self {
            Batch::Pairs { targets, .. } => targets.dims().first().copied().unwrap_or(0),
            Batch::Classes { labels, .. } => labels.len() * labels.len().saturating_sub(1) / 2,
            Batch::Episode { way, queries, .. } => way * queries * way,
        }
    }
}

/// Makes the batch of each step.
#[derive(Debug)]
pub struct Sampler {
    config: DataConfig,
    objective: Objective,
    batch_pairs: usize,
    seed: u64,
    distortion: KochDistortion,
    /// Koch's fixed set, when used.
    koch_set: Option<Vec<PairEntry>>,
    /// The order of the current pass over Koch's set.
    pass: Option<(u64, Vec<u32>)>,
    /// For same-alphabet K×M batches: per alphabet, its characters with at least M
    /// images (only alphabets with at least K of them).
    class_pools: Vec<Vec<usize>>,
}

impl Sampler {
    /// A sampler over `train`. Builds Koch's fixed set (seeded by the run's seed) when
    /// the configuration uses it.
    pub fn new(config: &TrainConfig, train: &Dataset) -> Result<Self, TrainError> {
        let d = &config.data;
        let koch_set = match (config.train.objective, d.pairs) {
            (Objective::Pairs, PairSource::KochSet) => {
                let mut rng = seeded_rng(step_seed(config.train.seed, 0, Stream::KochSet));
                Some(koch_pair_set(
                    train.index(),
                    d.koch_base_pairs,
                    d.koch_distorted_copies,
                    d.negatives,
                    &mut rng,
                )?)
            }
            _ => None,
        };
        let mut class_pools = Vec::new();
        if config.train.objective == Objective::AllPairs
            && d.negatives == NegativeFrom::SameAlphabet
        {
            let index = train.index();
            for alphabet in index.alphabets() {
                let chars: Vec<usize> = alphabet
                    .characters
                    .clone()
                    .filter(|&c| index.images_of(c).len() >= d.images_per_class)
                    .collect();
                if chars.len() >= d.classes_per_batch {
                    class_pools.push(chars);
                }
            }
            if class_pools.is_empty() {
                return Err(TrainError::Config(format!(
                    "no alphabet of the train part has {} characters with {} images each \
                     (data.classes_per_batch × data.images_per_class with same-alphabet negatives)",
                    d.classes_per_batch, d.images_per_class
                )));
            }
        }
        Ok(Sampler {
            config: d.clone(),
            objective: config.train.objective,
            batch_pairs: config.train.batch_pairs,
            seed: config.train.seed,
            distortion: if d.distort {
                d.distortion.clone()
            } else {
                KochDistortion::none()
            },
            koch_set,
            pass: None,
            class_pools,
        })
    }

    /// Entries of Koch's set, if used.
    pub fn koch_set_len(&self) -> Option<usize> {
        self.koch_set.as_ref().map(Vec::len)
    }

    /// The batch of step `step` (0-based), on `device`.
    pub fn batch(
        &mut self,
        train: &Dataset,
        step: u64,
        device: &Device,
    ) -> Result<Batch, TrainError> {
        match self.objective {
            Objective::Pairs => {
                let entries = self.pair_entries(train, step)?;
                let b = pair_batch(train, &entries, &self.distortion, device)?;
                Ok(Batch::Pairs {
                    left: b.left,
                    right: b.right,
                    targets: b.targets,
                })
            }
            Objective::AllPairs => self.class_batch(train, step, device),
            Objective::Episodes(e) => {
                let mut rng = seeded_rng(step_seed(self.seed, step, Stream::Sample));
                let episode = sample_episode(train.index(), &e.spec(), &mut rng)?;
                let distortion = self.config.distort.then(|| {
                    (
                        &self.distortion,
                        step_seed(self.seed, step, Stream::Distort),
                    )
                });
                Ok(Batch::Episode {
                    images: episode_tensor(train, &episode, distortion, device)?,
                    way: episode.way,
                    queries: episode.queries,
                })
            }
        }
    }

    /// Makes the batches of `steps`, in order and on the CPU, on a thread of `scope`, at
    /// most `depth` (≥ 1) ahead of the consumer; [`Prefetch::next`] takes them. The
    /// thread ends after the last step, after an error (which it passes on), or when
    /// the [`Prefetch`] is dropped.
    pub fn prefetch<'scope, 'env>(
        mut self,
        scope: &'scope Scope<'scope, 'env>,
        train: &'env Dataset,
        steps: Range<u64>,
        depth: usize,
    ) -> Prefetch {
        let (tx, rx): (SyncSender<_>, _) = sync_channel(depth.max(1));
        let first = steps.start;
        scope.spawn(move || {
            for step in steps {
                let batch = self.batch(train, step, &Device::Cpu);
                let failed = batch.is_err();
                // A send fails once the consumer is gone: nothing more to do.
                if tx.send((step, batch)).is_err() || failed {
                    break;
                }
            }
        });
        Prefetch { rx, next: first }
    }

    fn pair_entries(&mut self, train: &Dataset, step: u64) -> Result<Vec<PairEntry>, TrainError> {
        let b = self.batch_pairs;
        match &self.koch_set {
            Some(set) => {
                let len = set.len() as u64;
                let mut entries = Vec::with_capacity(b);
                for i in 0..b as u64 {
                    let g = step * b as u64 + i;
                    let (pass, pos) = (g / len, g % len);
                    if self.pass.as_ref().is_none_or(|(p, _)| *p != pass) {
                        let mut order: Vec<u32> = (0..len as u32).collect();
                        order.shuffle(&mut seeded_rng(step_seed(self.seed, pass, Stream::Shuffle)));
                        self.pass = Some((pass, order));
                    }
                    let order = &self.pass.as_ref().expect("set above").1;
                    entries.push(set[order[pos as usize] as usize]);
                }
                Ok(entries)
            }
            None => {
                let mut rng = seeded_rng(step_seed(self.seed, step, Stream::Sample));
                let pairs = sample_pairs(train.index(), b, self.config.negatives, &mut rng)?;
                Ok(pairs
                    .into_iter()
                    .map(|pair| PairEntry {
                        pair,
                        distortion_seed: self.config.distort.then(|| rng.random()),
                    })
                    .collect())
            }
        }
    }

    fn class_batch(
        &self,
        train: &Dataset,
        step: u64,
        device: &Device,
    ) -> Result<Batch, TrainError> {
        let (k, m) = (self.config.classes_per_batch, self.config.images_per_class);
        let mut rng = seeded_rng(step_seed(self.seed, step, Stream::Sample));
        let (images, labels) = if self.class_pools.is_empty() {
            let b = sample_class_batch(train.index(), k, m, &mut rng)?;
            (b.images, b.labels)
        } else {
            let pool = self
                .class_pools
                .choose(&mut rng)
                .expect("checked non-empty");
            let chars: Vec<usize> = pool.choose_multiple(&mut rng, k).copied().collect();
            let mut images = Vec::with_capacity(k * m);
            let mut labels = Vec::with_capacity(k * m);
            for (label, &c) in chars.iter().enumerate() {
                let all: Vec<usize> = train.index().images_of(c).collect();
                images.extend(all.choose_multiple(&mut rng, m).copied());
                labels.extend(std::iter::repeat_n(label, m));
            }
            (images, labels)
        };
        let imgs: Vec<&GrayImage> = images.iter().map(|&i| train.image(i)).collect();
        let (w, h) = (imgs[0].width(), imgs[0].height());
        let mut pixels = vec![0f32; imgs.len() * w * h];
        if self.config.distort {
            distort_batch(
                &imgs,
                &self.distortion,
                step_seed(self.seed, step, Stream::Distort),
                &mut pixels,
            );
        } else {
            for (img, out) in imgs.iter().zip(pixels.chunks_exact_mut(w * h)) {
                img.write_f32(out);
            }
        }
        Ok(Batch::Classes {
            images: pixels_to_tensor(pixels, imgs.len(), h, w, device)?,
            labels,
        })
    }
}

/// The receiving end of [`Sampler::prefetch`].
#[derive(Debug)]
pub struct Prefetch {
    rx: Receiver<(u64, Result<Batch, TrainError>)>,
    next: u64,
}

impl Prefetch {
    /// The batch of `step` (on the CPU), which must be the next step of the range.
    pub fn next(&mut self, step: u64) -> Result<Batch, TrainError> {
        if step != self.next {
            return Err(prefetch_error(format!(
                "step {step} asked for, the next prefetched step is {}",
                self.next
            )));
        }
        let (made, batch) = self.rx.recv().map_err(|_| {
            prefetch_error(format!(
                "the thread making the batches ended before step {step}"
            ))
        })?;
        debug_assert_eq!(made, step);
        self.next = step + 1;
        batch
    }
}

fn prefetch_error(msg: String) -> TrainError {
    TrainError::Tensor(candle_core::Error::Msg(format!("batch prefetch: {msg}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use siamese_data::DatasetIndex;
    use siamese_data::augment::synthetic_glyph;

    pub(crate) fn tiny_data(side: usize) -> Dataset {
        let chars = vec![(1..=6).collect::<Vec<u8>>(); 6];
        let index = DatasetIndex::synthetic(&[chars.clone(), chars]);
        let mut rng = seeded_rng(42);
        let images = (0..index.images().len())
            .map(|_| synthetic_glyph(&mut rng, side, side))
            .collect();
        Dataset::from_parts(index, images).unwrap()
    }

    /// Episodes that fit [`tiny_data`]: 3-way, 2 queries, rotations, distorted.
    fn small_episodes() -> Objective {
        Objective::Episodes(crate::config::EpisodeObjective {
            way: 3,
            queries: 2,
            rotations: 4,
            within_alphabet: 0.5,
            bce_weight: 0.5,
        })
    }

    /// A configuration with small sets and batches for `objective` and `pairs`.
    fn small_config(objective: Objective, pairs: PairSource) -> TrainConfig {
        let mut c = TrainConfig::default();
        c.train.objective = objective;
        c.data.pairs = pairs;
        c.data.koch_base_pairs = 10;
        c.data.koch_distorted_copies = 2;
        c.data.classes_per_batch = 3;
        c.data.images_per_class = 2;
        c.train.batch_pairs = 7;
        c.data.distort = true;
        c
    }

    #[test]
    fn batches_depend_only_on_the_step() {
        let data = tiny_data(20);
        for (objective, pairs) in [
            (Objective::AllPairs, PairSource::Online),
            (Objective::Pairs, PairSource::Online),
            (Objective::Pairs, PairSource::KochSet),
            (small_episodes(), PairSource::Online),
        ] {
            let c = small_config(objective, pairs);
            let values = |b: Batch| -> Vec<f32> {
                match b {
                    Batch::Pairs { left, right, .. } => Tensor::cat(&[left, right], 0)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                    Batch::Classes { images, .. } | Batch::Episode { images, .. } => {
                        images.flatten_all().unwrap().to_vec1().unwrap()
                    }
                }
            };
            let mut s1 = Sampler::new(&c, &data.clone()).unwrap();
            let a: Vec<Vec<f32>> = (0..6)
                .map(|s| values(s1.batch(&data, s, &Device::Cpu).unwrap()))
                .collect();
            // A fresh sampler asked for steps 3.. gives the same batches.
            let mut s2 = Sampler::new(&c, &data).unwrap();
            for (s, expected) in a.iter().enumerate().skip(3) {
                assert_eq!(
                    &values(s2.batch(&data, s as u64, &Device::Cpu).unwrap()),
                    expected
                );
            }
            assert_ne!(a[0], a[1]);
        }
    }

    #[test]
    fn prefetched_batches_are_the_sampler_batches() {
        let data = tiny_data(20);
        let values = |b: Batch| -> (Vec<f32>, Vec<f32>) {
            match b {
                Batch::Pairs {
                    left,
                    right,
                    targets,
                } => (
                    Tensor::cat(&[left, right], 0)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                    targets.to_vec1().unwrap(),
                ),
                Batch::Classes { images, labels } => (
                    images.flatten_all().unwrap().to_vec1().unwrap(),
                    labels.iter().map(|&l| l as f32).collect(),
                ),
                Batch::Episode {
                    images,
                    way,
                    queries,
                } => (
                    images.flatten_all().unwrap().to_vec1().unwrap(),
                    vec![way as f32, queries as f32],
                ),
            }
        };
        for (objective, pairs) in [
            (Objective::AllPairs, PairSource::Online),
            (Objective::Pairs, PairSource::KochSet),
            (small_episodes(), PairSource::Online),
        ] {
            let c = small_config(objective, pairs);
            let mut direct = Sampler::new(&c, &data).unwrap();
            let expected: Vec<_> = (2..9)
                .map(|s| values(direct.batch(&data, s, &Device::Cpu).unwrap()))
                .collect();
            std::thread::scope(|scope| {
                let sampler = Sampler::new(&c, &data).unwrap();
                let mut ahead = sampler.prefetch(scope, &data, 2..9, 2);
                assert!(ahead.next(3).is_err(), "out of order");
                for (s, e) in (2..9).zip(&expected) {
                    let b = ahead.next(s).unwrap().to_device(&Device::Cpu).unwrap();
                    assert_eq!(&values(b), e, "step {s}");
                }
                assert!(ahead.next(9).is_err(), "past the range");
                // Dropped early: the thread must end.
                let sampler = Sampler::new(&c, &data).unwrap();
                let mut early = sampler.prefetch(scope, &data, 0..1000, 1);
                early.next(0).unwrap();
            });
        }
    }

    #[test]
    fn step_seeds_differ() {
        let seeds: std::collections::HashSet<u64> = (0..1000)
            .flat_map(|s| {
                [
                    step_seed(0, s, Stream::Sample),
                    step_seed(0, s, Stream::Distort),
                ]
            })
            .collect();
        assert_eq!(seeds.len(), 2000);
        assert_ne!(
            step_seed(0, 5, Stream::Sample),
            step_seed(1, 5, Stream::Sample)
        );
    }
}
