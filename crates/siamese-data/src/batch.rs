//! The batch of every training step, for every objective: pairs (online or Koch's
//! fixed set), K×M class batches and one-shot episodes, sampled and turned into
//! tensors in one place, with one kind of error.
//!
//! # Counter-based randomness
//! The batch of step `s` depends only on the [`BatchSpec`], the distortion, the seed
//! and `s`: its sampler and distortions are seeded with [`step_seed`]`(seed, s,
//! stream)`, and Koch's fixed set is shuffled for pass `p` with `step_seed(seed, p,
//! ..)`. Resuming a run therefore needs nothing but the step number.
//!
//! # Batches ahead of the steps
//! [`BatchSampler::prefetch`] makes the batches of the coming steps on a background
//! thread (on the CPU, the distortions on the rayon pool) while the device runs the
//! current step. The batches are the same, in the same order, as
//! [`BatchSampler::batch`] makes them one by one.

use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::Scope;

use candle_core::{Device, Tensor};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::augment::{KochDistortion, distort_batch};
use crate::sample::{
    ClassPools, EpisodeSpec, NegativeFrom, PairEntry, koch_pair_set, sample_episode, sample_pairs,
};
use crate::tensor::{PairBatch, episode_tensor, pair_batch, pixels_to_tensor};
use crate::{DataError, Dataset, GrayImage, seeded_rng};

/// Streams of [`step_seed`].
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Drawing the pairs or classes of a step.
    Sample = 1,
    /// The distortions of a step's K×M batch or episode.
    Distort = 2,
    /// The order of a pass over Koch's fixed set.
    Shuffle = 3,
    /// Building Koch's fixed set (once).
    KochSet = 4,
}

/// A 64-bit seed for `(seed, counter, stream)`: SplitMix64 over their combination.
pub fn step_seed(seed: u64, counter: u64, stream: Stream) -> u64 {
    splitmix(
        seed ^ splitmix(counter.wrapping_add(0x9E37_79B9_7F4A_7C15))
            ^ splitmix(stream as u64 ^ 0xD1B5_4A32_D192_ED03),
    )
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the pairs of pair batches come from.
///
/// In configuration files `"online"`, or
/// `{"koch-set": {"base_pairs": 150000, "distorted_copies": 8}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PairSource {
    /// Fresh balanced pairs every step ([`sample_pairs`]), each image distorted when
    /// the sampler has a distortion.
    #[default]
    Online,
    /// Koch's fixed training set ([`koch_pair_set`]): `base_pairs` pairs with equal
    /// counts per alphabet, each plus `distorted_copies` distorted copies (30k, 90k or
    /// 150k and 8 in the paper); one pass over it in a fresh random order after
    /// another.
    KochSet {
        base_pairs: usize,
        distorted_copies: usize,
    },
}

/// Batches of same/different pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairBatchSpec {
    /// Pairs per batch (Koch: 128).
    pub batch_pairs: usize,
    /// The second image of a different pair: same alphabet (Koch's) or any.
    pub negatives: NegativeFrom,
    pub source: PairSource,
}

impl Default for PairBatchSpec {
    fn default() -> Self {
        PairBatchSpec {
            batch_pairs: 128,
            negatives: NegativeFrom::SameAlphabet,
            source: PairSource::Online,
        }
    }
}

/// K×M batches: K characters, M images of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassBatchSpec {
    /// K, at least 2.
    pub classes_per_batch: usize,
    /// M, at least 2.
    pub images_per_class: usize,
    /// `same-alphabet`: the K characters of a batch from one alphabet.
    pub negatives: NegativeFrom,
}

impl Default for ClassBatchSpec {
    fn default() -> Self {
        ClassBatchSpec {
            classes_per_batch: 8,
            images_per_class: 4,
            negatives: NegativeFrom::SameAlphabet,
        }
    }
}

/// What a step trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSpec {
    Pairs(PairBatchSpec),
    Classes(ClassBatchSpec),
    Episodes(EpisodeSpec),
}

/// One step's batch, on a device. Images are `(n, 1, s, s)`, ink = 1.0.
#[derive(Debug)]
pub enum Batch {
    /// Pairs: left and right images and targets (1.0 same, 0.0 different).
    Pairs(PairBatch),
    /// K×M images, each class's M together, and their class labels (0..K).
    Classes { images: Tensor, labels: Vec<usize> },
    /// An episode's images `(way·(1 + queries), 1, s, s)`: each class's support, then
    /// its queries ([`crate::sample::Episode`]'s layout).
    Episode {
        images: Tensor,
        way: usize,
        queries: usize,
    },
}

impl Batch {
    /// The same batch on `device` (a copy unless it is there already).
    pub fn to_device(self, device: &Device) -> Result<Batch, DataError> {
        Ok(match self {
            Batch::Pairs(p) => Batch::Pairs(PairBatch {
                left: p.left.to_device(device)?,
                right: p.right.to_device(device)?,
                targets: p.targets.to_device(device)?,
            }),
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

    /// The pairs a step's loss scores: the batch's pairs, every pair of a K×M batch,
    /// or each query against every support of an episode.
    pub fn pair_count(&self) -> usize {
        match self {
            Batch::Pairs(p) => p.targets.dims().first().copied().unwrap_or(0),
            Batch::Classes { labels, .. } => labels.len() * labels.len().saturating_sub(1) / 2,
            Batch::Episode { way, queries, .. } => way * queries * way,
        }
    }
}

/// Makes the batch of each step of a run.
#[derive(Debug)]
pub struct BatchSampler {
    spec: BatchSpec,
    seed: u64,
    /// Whether to distort (online pairs, K×M batches, episodes); Koch's set's copies
    /// are warped by `distortion` either way, the identity when it is off.
    distort: bool,
    distortion: KochDistortion,
    /// Koch's fixed set, when used.
    koch_set: Option<Vec<PairEntry>>,
    /// The order of the current pass over Koch's set.
    pass: Option<(u64, Vec<u32>)>,
    /// The characters of K×M batches.
    class_pools: Option<ClassPools>,
}

impl BatchSampler {
    /// A sampler of `spec`'s batches over `train`, distorted by `distortion` when it
    /// is given. Builds Koch's fixed set (seeded by `seed`) when the spec uses it;
    /// checks up front that the data can give the batches.
    pub fn new(
        spec: BatchSpec,
        distortion: Option<KochDistortion>,
        seed: u64,
        train: &Dataset,
    ) -> Result<Self, DataError> {
        if let Some(d) = &distortion {
            d.validate()
                .map_err(|e| DataError::Invalid(e.to_string()))?;
        }
        let index = train.index();
        let (mut koch_set, mut class_pools) = (None, None);
        match spec {
            BatchSpec::Pairs(p) => {
                if p.batch_pairs == 0 {
                    return Err(DataError::Invalid(
                        "a pair batch needs at least 1 pair".into(),
                    ));
                }
                if let PairSource::KochSet {
                    base_pairs,
                    distorted_copies,
                } = p.source
                {
                    if base_pairs == 0 {
                        return Err(DataError::Invalid(
                            "Koch's set needs at least 1 base pair".into(),
                        ));
                    }
                    let mut rng = seeded_rng(step_seed(seed, 0, Stream::KochSet));
                    koch_set = Some(koch_pair_set(
                        index,
                        base_pairs,
                        distorted_copies,
                        p.negatives,
                        &mut rng,
                    )?);
                }
            }
            BatchSpec::Classes(c) => {
                class_pools = Some(ClassPools::new(
                    index,
                    c.classes_per_batch,
                    c.images_per_class,
                    c.negatives,
                )?);
            }
            // Checked by drawing one (the draw is thrown away: no state moves).
            BatchSpec::Episodes(e) => {
                sample_episode(index, &e, &mut seeded_rng(seed))?;
            }
        }
        Ok(BatchSampler {
            spec,
            seed,
            distort: distortion.is_some(),
            distortion: distortion.unwrap_or_else(KochDistortion::none),
            koch_set,
            pass: None,
            class_pools,
        })
    }

    /// Steps in one pass over Koch's fixed set, when the sampler uses it.
    pub fn steps_per_pass(&self) -> Option<u64> {
        let (Some(set), BatchSpec::Pairs(p)) = (&self.koch_set, self.spec) else {
            return None;
        };
        Some(set.len().div_ceil(p.batch_pairs) as u64)
    }

    /// The batch of step `step` (0-based), on `device`.
    pub fn batch(
        &mut self,
        train: &Dataset,
        step: u64,
        device: &Device,
    ) -> Result<Batch, DataError> {
        match self.spec {
            BatchSpec::Pairs(p) => {
                let entries = self.pair_entries(train, &p, step)?;
                Ok(Batch::Pairs(pair_batch(
                    train,
                    &entries,
                    &self.distortion,
                    device,
                )?))
            }
            BatchSpec::Classes(_) => self.class_batch(train, step, device),
            BatchSpec::Episodes(e) => {
                let mut rng = seeded_rng(step_seed(self.seed, step, Stream::Sample));
                let episode = sample_episode(train.index(), &e, &mut rng)?;
                let distortion = self.distort.then(|| {
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

    fn pair_entries(
        &mut self,
        train: &Dataset,
        spec: &PairBatchSpec,
        step: u64,
    ) -> Result<Vec<PairEntry>, DataError> {
        let b = spec.batch_pairs;
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
                let pairs = sample_pairs(train.index(), b, spec.negatives, &mut rng)?;
                Ok(pairs
                    .into_iter()
                    .map(|pair| PairEntry {
                        pair,
                        distortion_seed: self.distort.then(|| rng.random()),
                    })
                    .collect())
            }
        }
    }

    fn class_batch(&self, train: &Dataset, step: u64, device: &Device) -> Result<Batch, DataError> {
        let pools = self.class_pools.as_ref().expect("made for class batches");
        let mut rng = seeded_rng(step_seed(self.seed, step, Stream::Sample));
        let drawn = pools.draw(train.index(), &mut rng);
        let imgs: Vec<&GrayImage> = drawn.images.iter().map(|&i| train.image(i)).collect();
        let (w, h) = (imgs[0].width(), imgs[0].height());
        let mut pixels = vec![0f32; imgs.len() * w * h];
        if self.distort {
            distort_batch(
                &imgs,
                &self.distortion,
                step_seed(self.seed, step, Stream::Distort),
                &mut pixels,
            )?;
        } else {
            for (img, out) in imgs.iter().zip(pixels.chunks_exact_mut(w * h)) {
                img.write_f32(out);
            }
        }
        Ok(Batch::Classes {
            images: pixels_to_tensor(pixels, imgs.len(), h, w, device)?,
            labels: drawn.labels,
        })
    }
}

/// The receiving end of [`BatchSampler::prefetch`].
#[derive(Debug)]
pub struct Prefetch {
    rx: Receiver<(u64, Result<Batch, DataError>)>,
    next: u64,
}

impl Prefetch {
    /// The batch of `step` (on the CPU), which must be the next step of the range.
    pub fn next(&mut self, step: u64) -> Result<Batch, DataError> {
        if step != self.next {
            return Err(DataError::Invalid(format!(
                "batch prefetch: step {step} asked for, the next prefetched step is {}",
                self.next
            )));
        }
        let (made, batch) = self.rx.recv().map_err(|_| {
            DataError::Invalid(format!(
                "batch prefetch: the thread making the batches ended before step {step}"
            ))
        })?;
        debug_assert_eq!(made, step);
        self.next = step + 1;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DatasetIndex;
    use crate::augment::synthetic_glyph;

    fn tiny_data(side: usize) -> Dataset {
        let chars = vec![(1..=6).collect::<Vec<u8>>(); 6];
        let index = DatasetIndex::synthetic(&[chars.clone(), chars]);
        let mut rng = seeded_rng(42);
        let images = (0..index.images().len())
            .map(|_| synthetic_glyph(&mut rng, side, side))
            .collect();
        Dataset::from_parts(index, images).unwrap()
    }

    /// Small batches of every kind that fit [`tiny_data`].
    fn small_specs() -> [BatchSpec; 4] {
        let pairs = PairBatchSpec {
            batch_pairs: 7,
            ..PairBatchSpec::default()
        };
        [
            BatchSpec::Classes(ClassBatchSpec {
                classes_per_batch: 3,
                images_per_class: 2,
                negatives: NegativeFrom::SameAlphabet,
            }),
            BatchSpec::Pairs(pairs),
            BatchSpec::Pairs(PairBatchSpec {
                source: PairSource::KochSet {
                    base_pairs: 10,
                    distorted_copies: 2,
                },
                ..pairs
            }),
            BatchSpec::Episodes(EpisodeSpec {
                way: 3,
                queries: 2,
                rotations: 4,
                mirror: false,
                within_alphabet: 0.5,
            }),
        ]
    }

    fn sampler(spec: BatchSpec, data: &Dataset) -> BatchSampler {
        BatchSampler::new(spec, Some(KochDistortion::PAPER), 0, data).unwrap()
    }

    /// A batch's values and labels, to compare batches.
    fn values(b: Batch) -> (Vec<f32>, Vec<f32>) {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        match b {
            Batch::Pairs(p) => (
                [flat(&p.left), flat(&p.right)].concat(),
                p.targets.to_vec1().unwrap(),
            ),
            Batch::Classes { images, labels } => {
                (flat(&images), labels.iter().map(|&l| l as f32).collect())
            }
            Batch::Episode {
                images,
                way,
                queries,
            } => (flat(&images), vec![way as f32, queries as f32]),
        }
    }

    #[test]
    fn batches_depend_only_on_the_step() {
        let data = tiny_data(20);
        for spec in small_specs() {
            let mut s1 = sampler(spec, &data);
            let a: Vec<_> = (0..6)
                .map(|s| values(s1.batch(&data, s, &Device::Cpu).unwrap()))
                .collect();
            // A fresh sampler asked for steps 3.. gives the same batches.
            let mut s2 = sampler(spec, &data);
            for (s, expected) in a.iter().enumerate().skip(3) {
                let b = s2.batch(&data, s as u64, &Device::Cpu).unwrap();
                assert_eq!(&values(b), expected, "{spec:?}");
            }
            assert_ne!(a[0], a[1]);
        }
    }

    #[test]
    fn prefetched_batches_are_the_sampler_batches() {
        let data = tiny_data(20);
        for spec in small_specs() {
            let mut direct = sampler(spec, &data);
            let expected: Vec<_> = (2..9)
                .map(|s| values(direct.batch(&data, s, &Device::Cpu).unwrap()))
                .collect();
            std::thread::scope(|scope| {
                let mut ahead = sampler(spec, &data).prefetch(scope, &data, 2..9, 2);
                assert!(ahead.next(3).is_err(), "out of order");
                for (s, e) in (2..9).zip(&expected) {
                    let b = ahead.next(s).unwrap().to_device(&Device::Cpu).unwrap();
                    assert_eq!(&values(b), e, "step {s}");
                }
                assert!(ahead.next(9).is_err(), "past the range");
                // Dropped early: the thread must end.
                let mut early = sampler(spec, &data).prefetch(scope, &data, 0..1000, 1);
                early.next(0).unwrap();
            });
        }
    }

    #[test]
    fn impossible_batches_are_errors_up_front() {
        let data = tiny_data(20);
        let cases = [
            BatchSpec::Classes(ClassBatchSpec {
                classes_per_batch: 7,
                ..ClassBatchSpec::default()
            }),
            BatchSpec::Pairs(PairBatchSpec {
                batch_pairs: 0,
                ..PairBatchSpec::default()
            }),
            BatchSpec::Episodes(EpisodeSpec {
                way: 40,
                queries: 1,
                rotations: 1,
                mirror: false,
                within_alphabet: 0.0,
            }),
        ];
        for spec in cases {
            assert!(BatchSampler::new(spec, None, 0, &data).is_err(), "{spec:?}");
        }
        let bad = KochDistortion {
            p_include: 2.0,
            ..KochDistortion::PAPER
        };
        let err = BatchSampler::new(small_specs()[0], Some(bad), 0, &data).unwrap_err();
        assert!(err.to_string().contains("p_include"), "{err}");
    }

    #[test]
    fn koch_set_passes_cover_the_set() {
        let data = tiny_data(20);
        let s = sampler(small_specs()[2], &data);
        // 10 base pairs × 3 copies = 30 entries, 7 per batch.
        assert_eq!(s.steps_per_pass(), Some(5));
        assert_eq!(sampler(small_specs()[1], &data).steps_per_pass(), None);
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
