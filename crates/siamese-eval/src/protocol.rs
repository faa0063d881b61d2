//! Trial sets: the one-shot protocols turned into lists of trials over a table of
//! distinct images.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;
use siamese_data::lake::LakeRun;
use siamese_data::mnist::{MnistSet, mnist_tasks};
use siamese_data::sample::{OneShotTask, TaskSpec, koch_tasks, sample_tasks};
use siamese_data::{Dataset, GrayImage, Part, seeded_rng};

use crate::EvalError;

/// Koch et al.'s number of test trials (10 alphabets × 2 runs × 20).
pub const KOCH_TEST_TRIALS: usize = 400;
/// Koch et al.'s number of validation trials, as they report it.
pub const KOCH_VALIDATION_TRIALS: usize = 320;
/// The number of classes of Koch's and Lake's tasks.
pub const KOCH_WAY: usize = 20;

/// Koch et al.'s number of MNIST trials (their Table 3).
pub const MNIST_TRIALS: usize = 400;

/// Koch's trial count for a part of a split: 320 for validation, 400 otherwise.
pub fn koch_trial_count(part: Part) -> usize {
    match part {
        Part::Validation => KOCH_VALIDATION_TRIALS,
        Part::Train | Part::Test => KOCH_TEST_TRIALS,
    }
}

/// Which protocol made a trial set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Protocol {
    /// Koch's within-alphabet construction ([`koch_tasks`]).
    Koch { way: usize },
    /// Independent N-way k-shot tasks ([`sample_tasks`]).
    Tasks {
        way: usize,
        shots: usize,
        within_alphabet: bool,
    },
    /// Lake et al.'s official runs.
    LakeRuns { runs: usize },
    /// N-way k-shot tasks over the MNIST digits (Koch et al.'s cross-domain test:
    /// 10-way one-shot), with the fitting that put the digits into the network's input.
    Mnist {
        way: usize,
        shots: usize,
        fit: String,
        side: usize,
    },
    /// A trial set built by hand.
    Custom { name: String },
}

/// Where an image of a trial set comes from, for drawing it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    /// The PNG file (synthetic for data sets built in memory).
    pub path: PathBuf,
    /// The image's position in the [`Dataset`] the trials were drawn from, if any.
    pub dataset_index: Option<usize>,
}

/// An image of a trial set.
#[derive(Debug, Clone)]
pub struct TrialImage<'a> {
    pub image: &'a GrayImage,
    pub source: ImageRef,
}

/// One classification: which of `classes` the query belongs to. All ids are
/// positions in [`TrialSet::images`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trial {
    pub query: usize,
    /// `classes[c]` holds the example images ("shots") of candidate class `c`.
    pub classes: Vec<Vec<usize>>,
    /// The query's class, a position in `classes`.
    pub answer: usize,
    /// Position in [`TrialSet::alphabets`] (the query's alphabet), if known.
    pub alphabet: Option<usize>,
    /// Position in [`TrialSet::runs`], for protocols made of runs.
    pub run: Option<usize>,
}

/// The distinct images of sampled tasks, each once, in order of first use.
#[derive(Default)]
struct ImageTable<'a> {
    ids: HashMap<usize, usize>,
    images: Vec<TrialImage<'a>>,
}

impl<'a> ImageTable<'a> {
    /// The table id of data set image `i`, adding it (from `image`) on first use.
    fn id(&mut self, i: usize, image: impl FnOnce() -> (&'a GrayImage, ImageRef)) -> usize {
        let images = &mut self.images;
        *self.ids.entry(i).or_insert_with(|| {
            let (image, source) = image();
            images.push(TrialImage { image, source });
            images.len() - 1
        })
    }
}

/// The trials of one protocol and the distinct images they use (each once).
#[derive(Debug, Clone)]
pub struct TrialSet<'a> {
    pub protocol: Protocol,
    /// What the trials were drawn from, e.g. `koch/test` (as reported).
    pub data: String,
    /// The seed of the sampler, if one was used.
    pub seed: Option<u64>,
    pub images: Vec<TrialImage<'a>>,
    pub alphabets: Vec<String>,
    pub runs: Vec<String>,
    pub trials: Vec<Trial>,
}

impl<'a> TrialSet<'a> {
    /// Koch et al.'s within-alphabet construction on a loaded part of a split
    /// ([`koch_tasks`] with `seeded_rng(seed)`): runs of `way` trials cycling through
    /// the alphabets. Use [`KOCH_WAY`] and [`koch_trial_count`] for Koch's setting.
    /// Each run of `way` trials is reported as a run.
    pub fn koch(
        dataset: &'a Dataset,
        way: usize,
        trials: usize,
        seed: u64,
    ) -> Result<Self, EvalError> {
        let tasks = koch_tasks(dataset.index(), way, trials, &mut seeded_rng(seed))?;
        let runs = tasks.len().div_ceil(way);
        let mut set = TrialSet::from_tasks(dataset, &tasks, Protocol::Koch { way })?;
        set.seed = Some(seed);
        set.runs = (0..runs)
            .map(|r| {
                let alphabet = set.trials[r * way]
                    .alphabet
                    .map(|a| set.alphabets[a].as_str());
                format!("run{:02} {}", r + 1, alphabet.unwrap_or_default())
            })
            .collect();
        for (i, t) in set.trials.iter_mut().enumerate() {
            t.run = Some(i / way);
        }
        Ok(set)
    }

    /// `trials` independent N-way k-shot tasks ([`sample_tasks`] with
    /// `seeded_rng(seed)`), within or across alphabets. A trial's alphabet is its
    /// query's.
    pub fn tasks(
        dataset: &'a Dataset,
        spec: TaskSpec,
        trials: usize,
        seed: u64,
    ) -> Result<Self, EvalError> {
        let tasks = sample_tasks(dataset.index(), spec, trials, &mut seeded_rng(seed))?;
        let protocol = Protocol::Tasks {
            way: spec.way,
            shots: spec.shots,
            within_alphabet: spec.within_alphabet,
        };
        let mut set = TrialSet::from_tasks(dataset, &tasks, protocol)?;
        set.seed = Some(seed);
        Ok(set)
    }

    /// Trials from sampled tasks over `dataset`; the images table holds the distinct
    /// images of the tasks in order of first use. Alphabets are those of the queries;
    /// no runs; no seed (set [`Self::seed`] yourself).
    pub fn from_tasks(
        dataset: &'a Dataset,
        tasks: &[OneShotTask],
        protocol: Protocol,
    ) -> Result<Self, EvalError> {
        let index = dataset.index();
        let mut table = ImageTable::default();
        let mut id_of = |i: usize| -> Result<usize, EvalError> {
            if i >= dataset.len() {
                return Err(EvalError::Invalid(format!(
                    "task image {i} is out of the data set's {} images",
                    dataset.len()
                )));
            }
            Ok(table.id(i, || {
                let source = ImageRef {
                    path: index.images()[i].path.clone(),
                    dataset_index: Some(i),
                };
                (dataset.image(i), source)
            }))
        };
        let mut alphabet_ids: HashMap<usize, usize> = HashMap::new();
        let mut alphabets = Vec::new();
        let mut trials = Vec::with_capacity(tasks.len());
        for task in tasks {
            let query = id_of(task.query)?;
            let classes = task
                .support
                .iter()
                .map(|shots| shots.iter().map(|&i| id_of(i)).collect())
                .collect::<Result<Vec<Vec<usize>>, _>>()?;
            let a = index.characters()[dataset.character_of(task.query)].alphabet;
            let alphabet = *alphabet_ids.entry(a).or_insert_with(|| {
                alphabets.push(index.alphabets()[a].name.clone());
                alphabets.len() - 1
            });
            trials.push(Trial {
                query,
                classes,
                answer: task.answer,
                alphabet: Some(alphabet),
                run: None,
            });
        }
        Ok(TrialSet {
            protocol,
            data: index.root().display().to_string(),
            seed: None,
            images: table.images,
            alphabets,
            runs: Vec::new(),
            trials,
        })
    }

    /// `trials` MNIST tasks ([`mnist_tasks`] with `seeded_rng(seed)`: every digit
    /// among the candidates when `way` is 10, the query's digit at a random position)
    /// over `set`, whose images are already fitted to the method's input (`fit` and
    /// `side` say how, as reported). Each trial's "alphabet" is its query's digit
    /// (`digit 0` … `digit 9`), so the report's per-alphabet table is per digit.
    pub fn mnist(
        set: &'a MnistSet,
        way: usize,
        shots: usize,
        trials: usize,
        seed: u64,
        fit: &str,
        side: usize,
    ) -> Result<Self, EvalError> {
        let tasks = mnist_tasks(set, way, shots, trials, &mut seeded_rng(seed))?;
        let mut table = ImageTable::default();
        let mut trial_list = Vec::with_capacity(tasks.len());
        let source = |i: usize| ImageRef {
            path: set.root.join(format!("t10k#{i:05}")),
            dataset_index: Some(i),
        };
        for task in &tasks {
            let query = table.id(task.query, || (&set.images[task.query], source(task.query)));
            let classes = task
                .support
                .iter()
                .map(|shots| {
                    shots
                        .iter()
                        .map(|&i| table.id(i, || (&set.images[i], source(i))))
                        .collect()
                })
                .collect();
            trial_list.push(Trial {
                query,
                classes,
                answer: task.answer,
                alphabet: Some(usize::from(set.labels[task.query])),
                run: None,
            });
        }
        Ok(TrialSet {
            protocol: Protocol::Mnist {
                way,
                shots,
                fit: fit.to_owned(),
                side,
            },
            data: set.root.display().to_string(),
            seed: Some(seed),
            images: table.images,
            alphabets: (0..10).map(|d| format!("digit {d}")).collect(),
            runs: Vec::new(),
            trials: trial_list,
        })
    }

    /// Lake et al.'s runs (`siamese_data::lake::load_runs`): each test item of a run
    /// is one trial against all the run's training images in their file order
    /// (`class01` … `class20`), as in `demo_classification.m`'s cost matrix. The
    /// alphabets of the runs are not recorded in the files, so trials have none.
    pub fn lake(runs: &'a [LakeRun]) -> Result<Self, EvalError> {
        if runs.is_empty() {
            return Err(EvalError::Invalid("no Lake runs".into()));
        }
        let mut images = Vec::new();
        let mut trials = Vec::new();
        let mut push = |image: &'a GrayImage, path: &PathBuf| {
            images.push(TrialImage {
                image,
                source: ImageRef {
                    path: path.clone(),
                    dataset_index: None,
                },
            });
            images.len() - 1
        };
        for (r, run) in runs.iter().enumerate() {
            let classes: Vec<Vec<usize>> = run
                .training
                .iter()
                .zip(&run.training_paths)
                .map(|(img, path)| vec![push(img, path)])
                .collect();
            for ((img, path), &answer) in run.test.iter().zip(&run.test_paths).zip(&run.answers) {
                trials.push(Trial {
                    query: push(img, path),
                    classes: classes.clone(),
                    answer,
                    alphabet: None,
                    run: Some(r),
                });
            }
        }
        let data = runs[0]
            .training_paths
            .first()
            .and_then(|p| p.ancestors().nth(3))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "all_runs".into());
        Ok(TrialSet {
            protocol: Protocol::LakeRuns { runs: runs.len() },
            data,
            seed: None,
            images,
            alphabets: Vec::new(),
            runs: runs.iter().map(|r| r.name.clone()).collect(),
            trials,
        })
    }

    /// Sets what the trials were drawn from, as reported (e.g. `koch/test`).
    pub fn with_data_label(mut self, data: impl Into<String>) -> Self {
        self.data = data.into();
        self
    }

    /// Checks that every id is in range, every trial has at least two classes, every
    /// class at least one shot, and the answer is one of the classes.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.trials.is_empty() {
            return Err(EvalError::Invalid("the trial set holds no trials".into()));
        }
        for (t, trial) in self.trials.iter().enumerate() {
            let bad = |reason: String| Err(EvalError::Invalid(format!("trial {t}: {reason}")));
            let n = self.images.len();
            if trial.classes.len() < 2 {
                return bad(format!(
                    "{} candidate classes (need 2)",
                    trial.classes.len()
                ));
            }
            if trial.answer >= trial.classes.len() {
                return bad(format!(
                    "answer {} of {} classes",
                    trial.answer,
                    trial.classes.len()
                ));
            }
            if trial.classes.iter().any(|c| c.is_empty()) {
                return bad("a class without examples".into());
            }
            if let Some(&i) = std::iter::once(&trial.query)
                .chain(trial.classes.iter().flatten())
                .find(|&&i| i >= n)
            {
                return bad(format!("image {i} is out of the {n} images"));
            }
            if trial.alphabet.is_some_and(|a| a >= self.alphabets.len()) {
                return bad("alphabet out of range".into());
            }
            if trial.run.is_some_and(|r| r >= self.runs.len()) {
                return bad("run out of range".into());
            }
        }
        Ok(())
    }
}
