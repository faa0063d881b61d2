//! Seeded samplers: same/different pairs, Koch's fixed training sets, K×M class
//! batches, and N-way k-shot one-shot tasks (including Koch's within-alphabet
//! construction).
//!
//! Every sampler draws from the `rng` it is given and from nothing else, so a seed
//! reproduces its output exactly. All indices are positions in
//! [`DatasetIndex::images`] (and so in [`crate::Dataset::images`]).

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::index::DatasetIndex;

/// Where the second image of a "different" pair comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeFrom {
    /// Another character of the same alphabet: the hard negatives of the one-shot
    /// tasks, and Koch's choice.
    #[default]
    SameAlphabet,
    /// Any other character.
    AnyAlphabet,
}

/// Two images and whether they show the same character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub same: bool,
}

/// A pair of a fixed training set, with the seed of its distortions (`None` for the
/// undistorted original).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairEntry {
    pub pair: Pair,
    pub distortion_seed: Option<u64>,
}

/// Draws `n` pairs, alternately same and different (so ⌈n/2⌉ same), in random
/// order. Same pairs are two distinct images of a character drawn uniformly among
/// those with at least two images.
pub fn sample_pairs(
    index: &DatasetIndex,
    n: usize,
    negatives: NegativeFrom,
    rng: &mut impl Rng,
) -> Result<Vec<Pair>, DataError> {
    let chars = PairPool::new(index, (0..index.characters().len()).collect(), negatives)?;
    let mut pairs: Vec<Pair> = (0..n).map(|i| chars.draw(index, i % 2 == 0, rng)).collect();
    pairs.shuffle(rng);
    Ok(pairs)
}

/// Koch et al.'s fixed training set: `base_pairs` pairs with (as near as integers
/// allow) the same count from every alphabet, half same and half different within
/// each alphabet, then `distorted_copies` more copies of each pair, each copy with its
/// own distortion seed. Copy 0 of each pair is undistorted; the result holds
/// `base_pairs × (1 + distorted_copies)` entries, grouped by pair. Koch used 30k,
/// 90k and 150k base pairs with 8 distorted copies.
pub fn koch_pair_set(
    index: &DatasetIndex,
    base_pairs: usize,
    distorted_copies: usize,
    negatives: NegativeFrom,
    rng: &mut impl Rng,
) -> Result<Vec<PairEntry>, DataError> {
    let alphabets = index.alphabets();
    let mut entries = Vec::with_capacity(base_pairs * (1 + distorted_copies));
    for (a, alphabet) in alphabets.iter().enumerate() {
        let share = base_pairs / alphabets.len() + usize::from(a < base_pairs % alphabets.len());
        let pool = PairPool::new(index, alphabet.characters.clone().collect(), negatives)?;
        for i in 0..share {
            let pair = pool.draw(index, i % 2 == 0, rng);
            entries.push(PairEntry {
                pair,
                distortion_seed: None,
            });
            for _ in 0..distorted_copies {
                entries.push(PairEntry {
                    pair,
                    distortion_seed: Some(rng.random()),
                });
            }
        }
    }
    Ok(entries)
}

/// Characters to draw pairs from, with what each needs checked up front.
struct PairPool {
    /// Characters with at least two images (for same pairs).
    positives: Vec<usize>,
    /// All characters of the pool (first images of different pairs).
    all: Vec<usize>,
    negatives: NegativeFrom,
    /// For `SameAlphabet`: the characters of each alphabet.
    by_alphabet: Vec<Vec<usize>>,
}

impl PairPool {
    fn new(
        index: &DatasetIndex,
        characters: Vec<usize>,
        negatives: NegativeFrom,
    ) -> Result<Self, DataError> {
        let positives: Vec<usize> = characters
            .iter()
            .copied()
            .filter(|&c| index.images_of(c).len() >= 2)
            .collect();
        if positives.is_empty() {
            return Err(DataError::Invalid(format!(
                "cannot draw same pairs from {}: no character has two images",
                index.root().display()
            )));
        }
        let mut by_alphabet = vec![Vec::new(); index.alphabets().len()];
        for &c in &characters {
            by_alphabet[index.characters()[c].alphabet].push(c);
        }
        let all: Vec<usize> = match negatives {
            // Only characters with a sibling in their alphabet can start a different pair.
            NegativeFrom::SameAlphabet => characters
                .iter()
                .copied()
                .filter(|&c| by_alphabet[index.characters()[c].alphabet].len() >= 2)
                .collect(),
            NegativeFrom::AnyAlphabet if characters.len() >= 2 => characters,
            NegativeFrom::AnyAlphabet => Vec::new(),
        };
        if all.is_empty() {
            return Err(DataError::Invalid(format!(
                "cannot draw different pairs ({negatives:?}) from {}: too few characters",
                index.root().display()
            )));
        }
        Ok(PairPool {
            positives,
            all,
            negatives,
            by_alphabet,
        })
    }

    fn draw(&self, index: &DatasetIndex, same: bool, rng: &mut impl Rng) -> Pair {
        if same {
            let c = *self.positives.choose(rng).expect("checked non-empty");
            let r = index.images_of(c);
            let i = rng.random_range(0..r.len());
            let j = (i + rng.random_range(1..r.len())) % r.len();
            return Pair {
                a: r.start + i,
                b: r.start + j,
                same: true,
            };
        }
        let c1 = *self.all.choose(rng).expect("checked non-empty");
        let siblings: &[usize] = match self.negatives {
            NegativeFrom::SameAlphabet => &self.by_alphabet[index.characters()[c1].alphabet],
            NegativeFrom::AnyAlphabet => &self.all,
        };
        let c2 = loop {
            let c = *siblings.choose(rng).expect("checked ≥ 2");
            if c != c1 {
                break c;
            }
        };
        Pair {
            a: rng.random_range(index.images_of(c1)),
            b: rng.random_range(index.images_of(c2)),
            same: false,
        }
    }
}

/// A batch of `k` characters × `m` images each, for objectives that score every pair
/// in a batch. `images[i]` shows class `labels[i]` (0..k); classes are contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassBatch {
    pub images: Vec<usize>,
    pub labels: Vec<usize>,
    /// The character of each class.
    pub characters: Vec<usize>,
}

/// The characters K×M class batches are drawn from: those with at least `m` images,
/// in one pool (any alphabet) or in one pool per alphabet that has `k` of them
/// (same-alphabet batches: the hard negatives of the one-shot tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPools {
    k: usize,
    m: usize,
    negatives: NegativeFrom,
    pools: Vec<Vec<usize>>,
}

impl ClassPools {
    /// The pools of `index` for batches of `k` characters × `m` images; an error when
    /// no batch can be drawn.
    pub fn new(
        index: &DatasetIndex,
        k: usize,
        m: usize,
        negatives: NegativeFrom,
    ) -> Result<Self, DataError> {
        let root = index.root().display();
        if k == 0 || m == 0 {
            return Err(DataError::Invalid(format!(
                "cannot draw {k} characters × {m} images from {root}: both must be at least 1"
            )));
        }
        let eligible = |c: &usize| index.images_of(*c).len() >= m;
        let pools: Vec<Vec<usize>> = match negatives {
            NegativeFrom::AnyAlphabet => {
                let all: Vec<usize> = (0..index.characters().len()).filter(eligible).collect();
                if all.len() < k {
                    return Err(DataError::Invalid(format!(
                        "cannot draw {k} characters × {m} images: {} characters of {root} \
                         have {m} images",
                        all.len()
                    )));
                }
                vec![all]
            }
            NegativeFrom::SameAlphabet => {
                let pools: Vec<Vec<usize>> = index
                    .alphabets()
                    .iter()
                    .map(|a| a.characters.clone().filter(eligible).collect::<Vec<_>>())
                    .filter(|chars| chars.len() >= k)
                    .collect();
                if pools.is_empty() {
                    return Err(DataError::Invalid(format!(
                        "no alphabet of {root} has {k} characters with {m} images each \
                         (a same-alphabet batch of {k} characters × {m} images)"
                    )));
                }
                pools
            }
        };
        Ok(ClassPools {
            k,
            m,
            negatives,
            pools,
        })
    }

    /// Draws `k` distinct characters of one pool (for same-alphabet batches, the
    /// alphabet uniformly first) and `m` distinct images of each.
    pub fn draw(&self, index: &DatasetIndex, rng: &mut impl Rng) -> ClassBatch {
        let pool = match self.negatives {
            NegativeFrom::SameAlphabet => self.pools.choose(rng).expect("checked non-empty"),
            NegativeFrom::AnyAlphabet => &self.pools[0],
        };
        let characters: Vec<usize> = pool.choose_multiple(rng, self.k).copied().collect();
        let mut images = Vec::with_capacity(self.k * self.m);
        let mut labels = Vec::with_capacity(self.k * self.m);
        for (label, &c) in characters.iter().enumerate() {
            let range: Vec<usize> = index.images_of(c).collect();
            images.extend(range.choose_multiple(rng, self.m).copied());
            labels.extend(std::iter::repeat_n(label, self.m));
        }
        ClassBatch {
            images,
            labels,
            characters,
        }
    }
}

/// Draws `k` distinct characters among those with at least `m` images, and `m`
/// distinct images of each ([`ClassPools`] over any alphabet).
pub fn sample_class_batch(
    index: &DatasetIndex,
    k: usize,
    m: usize,
    rng: &mut impl Rng,
) -> Result<ClassBatch, DataError> {
    Ok(ClassPools::new(index, k, m, NegativeFrom::AnyAlphabet)?.draw(index, rng))
}

/// The shape of an N-way k-shot task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub way: usize,
    pub shots: usize,
    /// Candidates all from the query's alphabet (harder, and Lake's and Koch's
    /// protocol) or from anywhere.
    pub within_alphabet: bool,
}

/// One classification trial: a query image and `way` candidate classes with `shots`
/// examples each; the answer is the position of the query's class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneShotTask {
    pub query: usize,
    /// `support[class]` holds that class's `shots` example images.
    pub support: Vec<Vec<usize>>,
    /// The character of each class.
    pub characters: Vec<usize>,
    /// Position of the query's class in `support`, uniformly random.
    pub answer: usize,
}

/// Draws `trials` independent N-way k-shot tasks. For each: an alphabet (when
/// within-alphabet, uniformly among those with enough characters), `way` distinct
/// characters with at least `shots + 1` images, `shots` examples per class, and a
/// query that is another image of the class at a uniformly random position.
pub fn sample_tasks(
    index: &DatasetIndex,
    spec: TaskSpec,
    trials: usize,
    rng: &mut impl Rng,
) -> Result<Vec<OneShotTask>, DataError> {
    if spec.way < 2 || spec.shots == 0 {
        return Err(DataError::Invalid(format!(
            "a task needs at least 2 classes and 1 shot (got {}-way {}-shot)",
            spec.way, spec.shots
        )));
    }
    let eligible = |chars: &mut dyn Iterator<Item = usize>| -> Vec<usize> {
        chars
            .filter(|&c| index.images_of(c).len() > spec.shots)
            .collect()
    };
    let pools: Vec<Vec<usize>> = if spec.within_alphabet {
        index
            .alphabets()
            .iter()
            .map(|a| eligible(&mut a.characters.clone()))
            .filter(|p| p.len() >= spec.way)
            .collect()
    } else {
        vec![eligible(&mut (0..index.characters().len()))]
            .into_iter()
            .filter(|p| p.len() >= spec.way)
            .collect()
    };
    if pools.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}-way {}-shot tasks need {} characters with {} images{}; {} has none that fit",
            spec.way,
            spec.shots,
            spec.way,
            spec.shots + 1,
            if spec.within_alphabet {
                " in one alphabet"
            } else {
                ""
            },
            index.root().display()
        )));
    }
    let mut tasks = Vec::with_capacity(trials);
    for _ in 0..trials {
        let pool = pools.choose(rng).expect("checked non-empty");
        let characters: Vec<usize> = pool.choose_multiple(rng, spec.way).copied().collect();
        let answer = rng.random_range(0..spec.way);
        let images_of = |c: usize| index.images_of(c).collect::<Vec<usize>>();
        let (support, query) = draw_support(&characters, answer, spec.shots, images_of, rng);
        tasks.push(OneShotTask {
            query,
            support,
            characters,
            answer,
        });
    }
    Ok(tasks)
}

/// The support of a task over `classes` whose true class is `classes[answer]`:
/// `shots` distinct images of each class (drawn from `images_of(class)`, in class
/// order), and one more of the answer's class, which is the query (so never one of
/// its own supports). Returns the support and the query.
pub(crate) fn draw_support<R: Rng + ?Sized>(
    classes: &[usize],
    answer: usize,
    shots: usize,
    images_of: impl Fn(usize) -> Vec<usize>,
    rng: &mut R,
) -> (Vec<Vec<usize>>, usize) {
    let mut query = 0;
    let support = classes
        .iter()
        .enumerate()
        .map(|(i, &class)| {
            let take = shots + usize::from(i == answer);
            let mut chosen: Vec<usize> = images_of(class)
                .choose_multiple(rng, take)
                .copied()
                .collect();
            if i == answer {
                query = chosen.pop().expect("took shots + 1");
            }
            chosen
        })
        .collect();
    (support, query)
}

/// Koch et al.'s (and Lake et al.'s) within-alphabet construction: a run takes one
/// alphabet, `way` of its characters and two distinct drawers; each of the first
/// drawer's `way` images is classified against the second drawer's `way` images,
/// giving `way` trials per run. Runs cycle through the alphabets in order (run r uses
/// alphabet r mod count) with fresh characters and drawers each time, until `trials`
/// trials are made (the last run is cut short if `trials` is not a multiple of
/// `way`). Koch: 320 validation trials, 400 test trials (10 alphabets × 2 runs × 20).
///
/// The candidate order of a run is a random permutation, so the true class's position
/// is uniformly random and each position is the answer once per run.
pub fn koch_tasks(
    index: &DatasetIndex,
    way: usize,
    trials: usize,
    rng: &mut impl Rng,
) -> Result<Vec<OneShotTask>, DataError> {
    if way < 2 {
        return Err(DataError::Invalid(format!(
            "a task needs at least 2 classes (got {way})"
        )));
    }
    let mut tasks = Vec::with_capacity(trials);
    let mut run = 0;
    while tasks.len() < trials {
        let alphabet = &index.alphabets()[run % index.alphabets().len()];
        run += 1;
        let mut drawers: Vec<u8> = alphabet
            .characters
            .clone()
            .flat_map(|c| index.images_of(c).map(|i| index.images()[i].drawer))
            .collect();
        drawers.sort_unstable();
        drawers.dedup();
        if drawers.len() < 2 {
            return Err(DataError::Invalid(format!(
                "alphabet {} has fewer than two drawers",
                alphabet.name
            )));
        }
        let picked: Vec<u8> = drawers.choose_multiple(rng, 2).copied().collect();
        let (query_drawer, support_drawer) = (picked[0], picked[1]);
        let both: Vec<(usize, usize, usize)> = alphabet
            .characters
            .clone()
            .filter_map(|c| {
                Some((
                    c,
                    index.image_by(c, query_drawer)?,
                    index.image_by(c, support_drawer)?,
                ))
            })
            .collect();
        if both.len() < way {
            return Err(DataError::Invalid(format!(
                "alphabet {} has {} characters drawn by both drawers {query_drawer} and {support_drawer}; a {way}-way run needs {way}",
                alphabet.name,
                both.len()
            )));
        }
        // `choose_multiple` returns its picks in random order: that order is the
        // candidates' positions.
        let chosen: Vec<(usize, usize, usize)> = both.choose_multiple(rng, way).copied().collect();
        let characters: Vec<usize> = chosen.iter().map(|t| t.0).collect();
        let support: Vec<Vec<usize>> = chosen.iter().map(|t| vec![t.2]).collect();
        let mut order: Vec<usize> = (0..way).collect();
        order.shuffle(rng);
        for answer in order {
            if tasks.len() == trials {
                break;
            }
            tasks.push(OneShotTask {
                query: chosen[answer].1,
                support: support.clone(),
                characters: characters.clone(),
                answer,
            });
        }
    }
    Ok(tasks)
}

/// The shape of a training episode: `way` classes, one support and `queries` queries
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeSpec {
    /// Classes per episode, at least 2.
    pub way: usize,
    /// Query images per class besides its support, at least 1.
    pub queries: usize,
    /// Each character turned by 0 to `rotations - 1` quarter turns is that many
    /// classes (Vinyals et al.'s augmentation): 1 (no rotation) to 4.
    pub rotations: u8,
    /// Each character's mirror image (left to right), in each of its rotations, is a
    /// class of its own too: twice the classes.
    #[serde(default)]
    pub mirror: bool,
    /// The probability, in [0, 1], that an episode's classes share one alphabet and one
    /// rotation (and mirroring) (the hard negatives of the evaluation tasks) rather
    /// than being drawn from anywhere.
    pub within_alphabet: f64,
}

/// An episode: class c's support is `images[c * (1 + queries)]`, its queries follow
/// it; `rotations[i]` ([`GrayImage::turned`](crate::GrayImage::turned)) applies to
/// `images[i]` (each (character, rotation, mirroring) is its own class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub images: Vec<usize>,
    /// Counter-clockwise quarter turns of each image (0 to 3), plus 4 where the image
    /// is mirrored left to right first; the same within a class.
    pub rotations: Vec<u8>,
    pub way: usize,
    pub queries: usize,
    /// The character of each class.
    pub characters: Vec<usize>,
}

/// Draws one episode. A character can be a class if it has at least `1 + queries`
/// images; classes are (character, rotation, mirroring) with the rotation in
/// `0..spec.rotations` and mirroring only if `spec.mirror`. With probability
/// `within_alphabet` (one draw per episode) all classes come from one (alphabet,
/// rotation, mirroring) group, uniform among the groups whose
/// alphabet has `way` such characters; otherwise they are `way` distinct classes
/// uniform among all. Each class gets `1 + queries` distinct images of its character
/// in random order, the first its support.
pub fn sample_episode(
    index: &DatasetIndex,
    spec: &EpisodeSpec,
    rng: &mut impl Rng,
) -> Result<Episode, DataError> {
    let EpisodeSpec {
        way,
        queries,
        rotations,
        mirror,
        within_alphabet,
    } = *spec;
    let root = index.root().display();
    if way < 2 || queries == 0 {
        return Err(DataError::Invalid(format!(
            "an episode needs at least 2 classes and 1 query each (got {way}-way with \
             {queries} queries) for {root}"
        )));
    }
    if !(1..=4).contains(&rotations) {
        return Err(DataError::Invalid(format!(
            "episode rotations must be 1 (none) to 4 quarter turns, got {rotations}"
        )));
    }
    if !(0.0..=1.0).contains(&within_alphabet) {
        return Err(DataError::Invalid(format!(
            "episode within_alphabet is a probability in [0, 1], got {within_alphabet}"
        )));
    }
    let per_class = 1 + queries;
    let eligible = |c: &usize| index.images_of(*c).len() >= per_class;
    // Eligible characters per alphabet (alphabets hold contiguous characters).
    let counts: Vec<usize> = index
        .alphabets()
        .iter()
        .map(|a| a.characters.clone().filter(eligible).count())
        .collect();
    let total: usize = counts.iter().sum();
    let rot = usize::from(rotations);
    // Transforms per character: the rotations, each also mirrored if asked.
    let transforms = rot * if mirror { 2 } else { 1 };
    if total * transforms < way {
        return Err(DataError::Invalid(format!(
            "a {way}-way episode needs {way} classes of characters with {per_class} \
             images; {root} has {total} such characters × {transforms} rotations and \
             mirror images"
        )));
    }
    // The code of rotation `r` (0..rot), mirrored or not (see `Episode::rotations`);
    // the mirror is drawn only when asked, so runs without it draw what they did.
    let transform = |r: usize, mirrored: bool| (r + if mirrored { 4 } else { 0 }) as u8;
    let groups: Vec<usize> = (0..counts.len()).filter(|&a| counts[a] >= way).collect();
    if within_alphabet > 0.0 && groups.is_empty() {
        return Err(DataError::Invalid(format!(
            "a within-alphabet {way}-way episode needs an alphabet with {way} characters \
             of {per_class} images; the most any alphabet of {root} has is {}",
            counts.iter().max().copied().unwrap_or(0)
        )));
    }
    let mut characters = Vec::with_capacity(way);
    let mut class_rotations = Vec::with_capacity(way);
    if rng.random::<f64>() < within_alphabet {
        let alphabet = &index.alphabets()[*groups.choose(rng).expect("checked non-empty")];
        let rotation = usize::from(rng.random_range(0..rotations));
        let mirrored = mirror && rng.random::<bool>();
        let pool: Vec<usize> = alphabet.characters.clone().filter(eligible).collect();
        characters.extend(pool.choose_multiple(rng, way).copied());
        class_rotations.resize(way, transform(rotation, mirrored));
    } else {
        let pool: Vec<usize> = (0..index.characters().len()).filter(eligible).collect();
        for class in rand::seq::index::sample(rng, total * transforms, way) {
            characters.push(pool[class / transforms]);
            let t = class % transforms;
            class_rotations.push(transform(t % rot, t >= rot));
        }
    }
    let mut images = Vec::with_capacity(way * per_class);
    let mut image_rotations = Vec::with_capacity(way * per_class);
    for (&c, &rotation) in characters.iter().zip(&class_rotations) {
        let range = index.images_of(c);
        let picks = rand::seq::index::sample(rng, range.len(), per_class);
        images.extend(picks.iter().map(|i| range.start + i));
        image_rotations.extend(std::iter::repeat_n(rotation, per_class));
    }
    Ok(Episode {
        images,
        rotations: image_rotations,
        way,
        queries,
        characters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// 3 alphabets × 25 characters × 20 drawers.
    fn omniglot_like() -> DatasetIndex {
        let chars = vec![(1..=20).collect::<Vec<u8>>(); 25];
        DatasetIndex::synthetic(&[chars.clone(), chars.clone(), chars])
    }

    #[test]
    fn pairs_are_balanced_and_correct() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for negatives in [NegativeFrom::SameAlphabet, NegativeFrom::AnyAlphabet] {
            let pairs = sample_pairs(&idx, 1001, negatives, &mut rng).unwrap();
            assert_eq!(pairs.iter().filter(|p| p.same).count(), 501);
            let mut cross = 0;
            for p in &pairs {
                let (ca, cb) = (idx.images()[p.a].character, idx.images()[p.b].character);
                assert_eq!(p.same, ca == cb);
                assert_ne!(p.a, p.b);
                let (aa, ab) = (idx.characters()[ca].alphabet, idx.characters()[cb].alphabet);
                cross += usize::from(aa != ab);
            }
            match negatives {
                NegativeFrom::SameAlphabet => assert_eq!(cross, 0),
                // 2/3 of any-alphabet negatives cross alphabets.
                NegativeFrom::AnyAlphabet => assert!(cross > 250, "{cross}"),
            }
        }
    }

    #[test]
    fn samplers_are_reproducible() {
        let idx = omniglot_like();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (
                sample_pairs(&idx, 50, NegativeFrom::SameAlphabet, &mut rng).unwrap(),
                sample_tasks(
                    &idx,
                    TaskSpec {
                        way: 5,
                        shots: 2,
                        within_alphabet: true,
                    },
                    10,
                    &mut rng,
                )
                .unwrap(),
            )
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn koch_pair_set_has_equal_counts_per_alphabet() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let set = koch_pair_set(&idx, 300, 8, NegativeFrom::SameAlphabet, &mut rng).unwrap();
        assert_eq!(set.len(), 300 * 9);
        let mut per_alphabet = [0usize; 3];
        let mut seeds = std::collections::HashSet::new();
        for chunk in set.chunks(9) {
            assert_eq!(chunk[0].distortion_seed, None);
            assert!(chunk.iter().all(|e| e.pair == chunk[0].pair));
            for e in &chunk[1..] {
                assert!(seeds.insert(e.distortion_seed.unwrap()));
            }
            let c = idx.images()[chunk[0].pair.a].character;
            per_alphabet[idx.characters()[c].alphabet] += 1;
        }
        assert_eq!(per_alphabet, [100, 100, 100]);
        let same = set.iter().filter(|e| e.pair.same).count();
        assert_eq!(same, set.len() / 2);
    }

    #[test]
    fn class_batches_hold_k_characters_of_m_images() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let b = sample_class_batch(&idx, 8, 4, &mut rng).unwrap();
        assert_eq!(b.images.len(), 32);
        let mut distinct = b.images.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 32);
        for (&i, &l) in b.images.iter().zip(&b.labels) {
            assert_eq!(idx.images()[i].character, b.characters[l]);
        }
        assert!(sample_class_batch(&idx, 8, 21, &mut rng).is_err());
        // Same-alphabet batches: every character of a batch from one alphabet, and
        // every alphabet drawn.
        let pools = ClassPools::new(&idx, 8, 4, NegativeFrom::SameAlphabet).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..60 {
            let b = pools.draw(&idx, &mut rng);
            let alphabet = |c: usize| idx.characters()[c].alphabet;
            assert!(
                b.characters
                    .iter()
                    .all(|&c| alphabet(c) == alphabet(b.characters[0]))
            );
            seen.insert(alphabet(b.characters[0]));
        }
        assert_eq!(seen.len(), 3);
        let err = ClassPools::new(&idx, 26, 4, NegativeFrom::SameAlphabet).unwrap_err();
        assert!(err.to_string().contains("no alphabet"), "{err}");
        assert!(ClassPools::new(&idx, 0, 4, NegativeFrom::AnyAlphabet).is_err());
    }

    #[test]
    fn tasks_are_honest() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let spec = TaskSpec {
            way: 20,
            shots: 1,
            within_alphabet: true,
        };
        let tasks = sample_tasks(&idx, spec, 2000, &mut rng).unwrap();
        let mut answer_hist = [0usize; 20];
        for t in &tasks {
            answer_hist[t.answer] += 1;
            assert_eq!(idx.images()[t.query].character, t.characters[t.answer]);
            let alphabet = idx.characters()[t.characters[0]].alphabet;
            for (class, s) in t.support.iter().enumerate() {
                assert_eq!(s.len(), 1);
                assert!(!s.contains(&t.query));
                assert_eq!(idx.images()[s[0]].character, t.characters[class]);
                assert_eq!(idx.characters()[t.characters[class]].alphabet, alphabet);
            }
        }
        // Each position is the answer about 100 times; all within 5σ (σ ≈ 9.7).
        assert!(
            answer_hist.iter().all(|&n| (52..=148).contains(&n)),
            "{answer_hist:?}"
        );
        let too_wide = TaskSpec {
            way: 26,
            shots: 1,
            within_alphabet: true,
        };
        assert!(sample_tasks(&idx, too_wide, 1, &mut rng).is_err());
        let across = TaskSpec {
            way: 26,
            shots: 1,
            within_alphabet: false,
        };
        assert_eq!(sample_tasks(&idx, across, 3, &mut rng).unwrap().len(), 3);
    }

    #[test]
    fn koch_tasks_follow_the_construction() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let tasks = koch_tasks(&idx, 20, 130, &mut rng).unwrap();
        assert_eq!(tasks.len(), 130);
        for (r, run) in tasks.chunks(20).enumerate() {
            let query_drawer = idx.images()[run[0].query].drawer;
            let support_drawer = idx.images()[run[0].support[0][0]].drawer;
            assert_ne!(query_drawer, support_drawer);
            let mut answers: Vec<usize> = run.iter().map(|t| t.answer).collect();
            answers.sort_unstable();
            if run.len() == 20 {
                assert_eq!(answers, (0..20).collect::<Vec<_>>());
            }
            for t in run {
                assert_eq!(t.support, run[0].support);
                assert_eq!(idx.images()[t.query].drawer, query_drawer);
                assert_eq!(idx.images()[t.query].character, t.characters[t.answer]);
                let alphabet = idx.characters()[t.characters[0]].alphabet;
                assert_eq!(alphabet, r % 3);
            }
        }
        assert!(koch_tasks(&idx, 26, 1, &mut rng).is_err());
    }

    fn spec(way: usize, queries: usize, rotations: u8, within_alphabet: f64) -> EpisodeSpec {
        EpisodeSpec {
            way,
            queries,
            rotations,
            mirror: false,
            within_alphabet,
        }
    }

    /// The (character, rotation) of each class, checking the layout on the way.
    fn classes(idx: &DatasetIndex, e: &Episode) -> Vec<(usize, u8)> {
        let per_class = 1 + e.queries;
        assert_eq!(e.images.len(), e.way * per_class);
        assert_eq!(e.rotations.len(), e.images.len());
        assert_eq!(e.characters.len(), e.way);
        // An image can serve two classes of its character, turned differently, but
        // not one twice.
        let mut seen: Vec<(usize, u8)> =
            e.images.iter().copied().zip(e.rotations.clone()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), e.images.len(), "an image twice: {e:?}");
        (0..e.way)
            .map(|c| {
                let block = c * per_class..(c + 1) * per_class;
                let support = e.images[block.start];
                assert_eq!(idx.images()[support].character, e.characters[c]);
                for i in block.clone() {
                    assert_eq!(idx.images()[e.images[i]].character, e.characters[c]);
                    assert_eq!(e.rotations[i], e.rotations[block.start]);
                }
                (e.characters[c], e.rotations[block.start])
            })
            .collect()
    }

    #[test]
    fn episodes_are_laid_out_by_class() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        for s in [
            spec(5, 3, 4, 0.5),
            spec(20, 1, 1, 1.0),
            spec(60, 19, 2, 0.0),
        ] {
            for _ in 0..50 {
                let e = sample_episode(&idx, &s, &mut rng).unwrap();
                assert_eq!((e.way, e.queries), (s.way, s.queries));
                let mut classes = classes(&idx, &e);
                assert!(classes.iter().all(|&(_, r)| r < s.rotations));
                classes.sort_unstable();
                classes.dedup();
                assert_eq!(classes.len(), s.way, "a class twice: {e:?}");
            }
        }
    }

    #[test]
    fn within_alphabet_episodes_share_an_alphabet_and_a_rotation() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut groups = std::collections::HashSet::new();
        for _ in 0..200 {
            let e = sample_episode(&idx, &spec(5, 2, 4, 1.0), &mut rng).unwrap();
            let classes = classes(&idx, &e);
            let alphabet = idx.characters()[classes[0].0].alphabet;
            for &(c, r) in &classes {
                assert_eq!(idx.characters()[c].alphabet, alphabet);
                assert_eq!(r, classes[0].1);
            }
            groups.insert((alphabet, classes[0].1));
        }
        // All 3 alphabets × 4 rotations turn up.
        assert_eq!(groups.len(), 12);
    }

    #[test]
    fn episodes_across_alphabets_mix_rotations() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (mut mixed, mut one_group) = (0, 0);
        let mut rotation_hist = [0usize; 4];
        for _ in 0..200 {
            let e = sample_episode(&idx, &spec(5, 1, 4, 0.0), &mut rng).unwrap();
            let classes = classes(&idx, &e);
            for &(_, r) in &classes {
                rotation_hist[usize::from(r)] += 1;
            }
            let rotations: std::collections::HashSet<u8> =
                classes.iter().map(|&(_, r)| r).collect();
            mixed += usize::from(rotations.len() > 1);
            let alphabets: std::collections::HashSet<usize> = classes
                .iter()
                .map(|&(c, _)| idx.characters()[c].alphabet)
                .collect();
            one_group += usize::from(rotations.len() == 1 && alphabets.len() == 1);
        }
        // P(five classes share a rotation) ≈ 4⁻⁴ and an alphabet too ≈ 3⁻⁴ of that.
        assert!(mixed > 190, "{mixed}");
        assert!(one_group <= 1, "{one_group}");
        // 1000 classes, each rotation ~250 (σ ≈ 14).
        assert!(
            rotation_hist.iter().all(|&n| (180..=320).contains(&n)),
            "{rotation_hist:?}"
        );
    }

    #[test]
    fn mirror_images_are_classes_of_their_own() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let mirrored = EpisodeSpec {
            mirror: true,
            ..spec(5, 1, 2, 0.0)
        };
        let mut hist = [0usize; 8];
        for _ in 0..200 {
            let e = sample_episode(&idx, &mirrored, &mut rng).unwrap();
            for (_, r) in classes(&idx, &e) {
                hist[usize::from(r)] += 1;
            }
        }
        // Two rotations, each plain (0, 1) and mirrored (4, 5): 1000 classes, ~250 each.
        for (code, &n) in hist.iter().enumerate() {
            let expected = matches!(code, 0 | 1 | 4 | 5);
            assert_eq!(n > 0, expected, "{hist:?}");
            assert!(!expected || (180..=320).contains(&n), "{hist:?}");
        }
        // Within an alphabet, the whole episode shares the mirroring and the rotation.
        let within = EpisodeSpec {
            mirror: true,
            ..spec(5, 2, 4, 1.0)
        };
        let mut groups = std::collections::HashSet::new();
        for _ in 0..300 {
            let e = sample_episode(&idx, &within, &mut rng).unwrap();
            let classes = classes(&idx, &e);
            assert!(classes.iter().all(|&(_, r)| r == classes[0].1));
            groups.insert(classes[0].1);
        }
        assert_eq!(groups.len(), 8, "{groups:?}");
        // Without mirroring no mirror code appears.
        let e = sample_episode(&idx, &spec(5, 2, 4, 0.5), &mut rng).unwrap();
        assert!(e.rotations.iter().all(|&r| r < 4));
    }

    #[test]
    fn within_alphabet_is_a_probability_per_episode() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let within = (0..1000)
            .filter(|_| {
                let e = sample_episode(&idx, &spec(5, 1, 4, 0.3), &mut rng).unwrap();
                let classes = classes(&idx, &e);
                let a = idx.characters()[classes[0].0].alphabet;
                classes
                    .iter()
                    .all(|&(c, r)| idx.characters()[c].alphabet == a && r == classes[0].1)
            })
            .count();
        // ~300 (σ ≈ 14.5).
        assert!((230..=370).contains(&within), "{within}");
    }

    #[test]
    fn episodes_are_reproducible() {
        let idx = omniglot_like();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..5)
                .map(|_| sample_episode(&idx, &spec(10, 2, 4, 0.5), &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(21), draw(21));
        assert_ne!(draw(21), draw(22));
    }

    #[test]
    fn episodes_use_only_characters_with_enough_images() {
        // Alphabet 0: two characters of 3 images and two of 1; alphabet 1: three of 3.
        let idx = DatasetIndex::synthetic(&[
            vec![vec![1, 2, 3], vec![1], vec![1, 2, 3], vec![2]],
            vec![vec![1, 2, 3]; 3],
        ]);
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        for _ in 0..100 {
            let e = sample_episode(&idx, &spec(3, 2, 1, 0.5), &mut rng).unwrap();
            for (c, _) in classes(&idx, &e) {
                assert_eq!(idx.images_of(c).len(), 3);
            }
            // Only alphabet 1 has three such characters.
            let e = sample_episode(&idx, &spec(3, 2, 1, 1.0), &mut rng).unwrap();
            let mut characters = e.characters.clone();
            characters.sort_unstable();
            assert_eq!(characters, [4, 5, 6]);
        }
    }

    #[test]
    fn impossible_episodes_are_errors() {
        let idx = omniglot_like();
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let bad = |s: EpisodeSpec, rng: &mut ChaCha8Rng| match sample_episode(&idx, &s, rng) {
            Err(DataError::Invalid(msg)) => msg,
            other => panic!("{s:?} gave {other:?}"),
        };
        bad(spec(1, 1, 1, 0.0), &mut rng);
        bad(spec(5, 0, 1, 0.0), &mut rng);
        bad(spec(5, 1, 0, 0.0), &mut rng);
        bad(spec(5, 1, 5, 0.0), &mut rng);
        for within in [-0.1, 1.1, f64::NAN] {
            bad(spec(5, 1, 1, within), &mut rng);
        }
        // 20 images a character: 19 queries fit, 20 do not.
        assert!(sample_episode(&idx, &spec(5, 19, 1, 0.5), &mut rng).is_ok());
        let msg = bad(spec(5, 20, 1, 0.0), &mut rng);
        assert!(
            msg.contains("<memory>") && msg.contains("21 images"),
            "{msg}"
        );
        // 75 characters × 2 rotations are 150 classes.
        assert!(sample_episode(&idx, &spec(150, 1, 2, 0.0), &mut rng).is_ok());
        let msg = bad(spec(151, 1, 2, 0.0), &mut rng);
        assert!(msg.contains("<memory>") && msg.contains("75"), "{msg}");
        // 26 classes fit across alphabets but no alphabet has 26 characters.
        assert!(sample_episode(&idx, &spec(26, 1, 1, 0.0), &mut rng).is_ok());
        let msg = bad(spec(26, 1, 1, 0.01), &mut rng);
        assert!(msg.contains("<memory>") && msg.contains("25"), "{msg}");
    }
}
