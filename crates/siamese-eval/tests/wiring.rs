//! The runner's wiring and honesty on a synthetic data set whose images encode their
//! labels: ties are never correct, an oracle gets everything right, each image is
//! embedded once, and the tables add up.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use siamese_data::GrayImage;
use siamese_data::sample::TaskSpec;
use siamese_eval::{
    CandleScorer, EvalError, EvalOptions, OneShotScorer, PixelNn, ShotReduce, TrialSet, evaluate,
};

/// The same score for every pair.
struct Constant;

impl OneShotScorer for Constant {
    type Embeddings = Vec<()>;
    fn name(&self) -> String {
        "constant".into()
    }
    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<()>, EvalError> {
        Ok(vec![(); images.len()])
    }
    fn score_pairs(&self, _: &Vec<()>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        Ok(vec![0.5; pairs.len()])
    }
}

/// Reads the character from the image: 1 for the same character, 0 otherwise.
struct Oracle;

impl OneShotScorer for Oracle {
    type Embeddings = Vec<u8>;
    fn name(&self) -> String {
        "oracle".into()
    }
    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<u8>, EvalError> {
        Ok(images.iter().map(|i| i.pixels()[0]).collect())
    }
    fn score_pairs(&self, e: &Vec<u8>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        Ok(pairs
            .iter()
            .map(|&(a, b)| f64::from(u8::from(e[a] == e[b])))
            .collect())
    }
}

/// A deterministic, mediocre scorer: right sometimes, wrong sometimes.
struct Hashy;

impl OneShotScorer for Hashy {
    type Embeddings = Vec<(u64, u64)>;
    fn name(&self) -> String {
        "hashy".into()
    }
    fn embed(&self, images: &[&GrayImage]) -> Result<Self::Embeddings, EvalError> {
        Ok(images
            .iter()
            .map(|i| (u64::from(i.pixels()[0]), u64::from(i.pixels()[1])))
            .collect())
    }
    fn score_pairs(
        &self,
        e: &Self::Embeddings,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError> {
        Ok(pairs
            .iter()
            .map(|&(a, b)| {
                let ((ca, da), (cb, db)) = (e[a], e[b]);
                let noise = (ca * 31 + cb * 17 + db * 7 + da * 3) % 101;
                noise as f64 / 10.0 + if ca == cb { 5.0 } else { 0.0 }
            })
            .collect())
    }
}

/// The oracle, counting which images it embeds and how it is called.
#[derive(Default)]
struct Counting {
    embedded: Mutex<Vec<*const GrayImage>>,
    embed_calls: Mutex<Vec<usize>>,
    score_calls: Mutex<Vec<usize>>,
}

impl OneShotScorer for Counting {
    type Embeddings = Vec<u8>;
    fn name(&self) -> String {
        "counting".into()
    }
    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<u8>, EvalError> {
        self.embedded
            .lock()
            .unwrap()
            .extend(images.iter().map(|&i| i as *const GrayImage));
        self.embed_calls.lock().unwrap().push(images.len());
        Oracle.embed(images)
    }
    fn score_pairs(&self, e: &Vec<u8>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        self.score_calls.lock().unwrap().push(pairs.len());
        Oracle.score_pairs(e, pairs)
    }
}

/// Always NaN.
struct Broken;

impl OneShotScorer for Broken {
    type Embeddings = Vec<()>;
    fn name(&self) -> String {
        "broken".into()
    }
    fn embed(&self, images: &[&GrayImage]) -> Result<Vec<()>, EvalError> {
        Ok(vec![(); images.len()])
    }
    fn score_pairs(&self, _: &Vec<()>, pairs: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
        Ok(vec![f64::NAN; pairs.len()])
    }
}

fn options() -> EvalOptions {
    EvalOptions::default()
}

#[test]
fn a_constant_scorer_gets_nothing_right() {
    let data = common::labelled_dataset(3, 25);
    let set = TrialSet::koch(&data, 20, 130, 0).unwrap();
    let r = evaluate(&Constant, &set, &options()).unwrap();
    assert_eq!((r.correct, r.trials, r.ties), (0, 130, 130));
    assert_eq!(r.accuracy, 0.0);
    assert_eq!(r.ci95_low, 0.0);
    assert!(r.records.iter().all(|t| t.choice.is_none() && !t.correct));

    let r = evaluate(&Broken, &set, &options()).unwrap();
    assert_eq!((r.correct, r.nan_trials, r.ties), (0, 130, 0));
}

#[test]
fn an_oracle_gets_everything_right() {
    let data = common::labelled_dataset(3, 25);
    let koch = TrialSet::koch(&data, 20, 130, 1).unwrap();
    let r = evaluate(&Oracle, &koch, &options()).unwrap();
    assert_eq!((r.correct, r.trials, r.ties), (130, 130, 0));
    assert_eq!(r.ci95_high, 1.0);
    for shot_reduce in [ShotReduce::Mean, ShotReduce::Max] {
        for within_alphabet in [true, false] {
            let spec = TaskSpec {
                way: 5,
                shots: 3,
                within_alphabet,
            };
            let set = TrialSet::tasks(&data, spec, 200, 2).unwrap();
            let opts = EvalOptions {
                shot_reduce,
                ..options()
            };
            let r = evaluate(&Oracle, &set, &opts).unwrap();
            assert_eq!(r.correct, 200, "{shot_reduce:?} {within_alphabet}");
            assert_eq!(r.timing.pairs_scored, 200 * 5 * 3);
        }
    }
    // The records say which image is which: the chosen candidate shows the query's
    // character, and the answer's position is spread over the classes.
    let mut answers = HashSet::new();
    for t in &r.records {
        let query = r.images[t.query].dataset_index.unwrap();
        let chosen = r.images[t.candidates[t.choice.unwrap()][0]]
            .dataset_index
            .unwrap();
        assert_eq!(data.character_of(query), data.character_of(chosen));
        answers.insert(t.answer);
    }
    assert_eq!(answers.len(), 20);
}

#[test]
fn each_distinct_image_is_embedded_once() {
    let data = common::labelled_dataset(3, 25);
    for (set, at_most) in [
        // Koch's runs share their 20 candidates: at most 40 images per run of 20
        // trials (fewer when runs of an alphabet reuse an image).
        (TrialSet::koch(&data, 20, 130, 3).unwrap(), 6 * 40 + 30),
        (
            TrialSet::tasks(
                &data,
                TaskSpec {
                    way: 5,
                    shots: 2,
                    within_alphabet: true,
                },
                300,
                4,
            )
            .unwrap(),
            300 * 11,
        ),
    ] {
        let distinct: HashSet<usize> = set
            .trials
            .iter()
            .flat_map(|t| std::iter::once(t.query).chain(t.classes.iter().flatten().copied()))
            .map(|id| set.images[id].source.dataset_index.unwrap())
            .collect();
        assert!(distinct.len() <= at_most);
        // Images do recur across trials, so embedding per trial would repeat them.
        let uses: usize = set
            .trials
            .iter()
            .map(|t| 1 + t.classes.iter().flatten().count())
            .sum();
        assert!(uses > distinct.len());
        let scorer = Counting::default();
        let opts = EvalOptions {
            embed_batch: 7,
            pair_batch: 50,
            ..options()
        };
        let r = evaluate(&scorer, &set, &opts).unwrap();
        assert_eq!(r.correct, r.trials);
        let embedded = scorer.embedded.lock().unwrap();
        let mut times: HashMap<*const GrayImage, usize> = HashMap::new();
        for &p in embedded.iter() {
            *times.entry(p).or_default() += 1;
        }
        assert_eq!(embedded.len(), distinct.len());
        assert!(times.values().all(|&n| n == 1));
        let expected: HashSet<*const GrayImage> = distinct
            .iter()
            .map(|&i| data.image(i) as *const GrayImage)
            .collect();
        assert_eq!(times.keys().copied().collect::<HashSet<_>>(), expected);
        assert_eq!(r.timing.images_embedded, distinct.len());

        let calls = scorer.embed_calls.lock().unwrap();
        assert_eq!(calls.len(), distinct.len().div_ceil(7));
        assert!(calls.iter().all(|&n| n <= 7));
        let score_calls = scorer.score_calls.lock().unwrap();
        assert!(score_calls.iter().all(|&n| n <= 50));
        assert_eq!(score_calls.iter().sum::<usize>(), r.timing.pairs_scored);
    }
}

#[test]
fn tables_add_up_to_the_totals() {
    let data = common::labelled_dataset(4, 25);
    let set = TrialSet::koch(&data, 20, 330, 5).unwrap();
    let r = evaluate(&Hashy, &set, &options()).unwrap();
    assert!(0 < r.correct && r.correct < r.trials, "{}", r.correct);
    assert_eq!(r.per_alphabet.len(), 4);
    assert_eq!(
        r.per_alphabet.iter().map(|a| a.trials).sum::<usize>(),
        r.trials
    );
    assert_eq!(
        r.per_alphabet.iter().map(|a| a.correct).sum::<usize>(),
        r.correct
    );
    // 330 trials = 16 full runs and one of 10.
    assert_eq!(r.per_run.len(), 17);
    assert_eq!(r.per_run.iter().map(|a| a.trials).sum::<usize>(), r.trials);
    assert_eq!(
        r.per_run.iter().map(|a| a.correct).sum::<usize>(),
        r.correct
    );
    assert_eq!(r.per_run[16].trials, 10);
    assert_eq!(r.records.iter().filter(|t| t.correct).count(), r.correct);
    assert!(r.ci95_low < r.accuracy && r.accuracy < r.ci95_high);

    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["method"], "hashy");
    assert_eq!(json["protocol"]["kind"], "koch");
    assert_eq!(json["seed"], 5);
    // The JSON is the summary: the picture data stays in memory.
    assert_eq!(r.records.len(), 330);
    assert!(json.get("records").is_none() && json.get("images").is_none());
    assert_eq!(json["trials"], 330);

    // Same seed, same trials, same report (but for timing).
    let again = evaluate(
        &Hashy,
        &TrialSet::koch(&data, 20, 330, 5).unwrap(),
        &options(),
    )
    .unwrap();
    assert_eq!(again.records, r.records);
    let other = TrialSet::koch(&data, 20, 330, 6).unwrap();
    assert_ne!(other.trials, set.trials);
}

#[test]
fn broken_trial_sets_and_methods_are_errors() {
    let data = common::labelled_dataset(2, 25);
    let mut set = TrialSet::koch(&data, 20, 20, 0).unwrap();
    set.trials[3].answer = 20;
    assert!(evaluate(&Oracle, &set, &options()).is_err());
    let mut empty = TrialSet::koch(&data, 20, 20, 0).unwrap();
    empty.trials.clear();
    assert!(evaluate(&Oracle, &empty, &options()).is_err());

    struct Short;
    impl OneShotScorer for Short {
        type Embeddings = Vec<u8>;
        fn name(&self) -> String {
            "short".into()
        }
        fn embed(&self, images: &[&GrayImage]) -> Result<Vec<u8>, EvalError> {
            Ok(vec![0; images.len() - 1])
        }
        fn score_pairs(&self, _: &Vec<u8>, p: &[(usize, usize)]) -> Result<Vec<f64>, EvalError> {
            Ok(vec![0.0; p.len()])
        }
    }
    let set = TrialSet::koch(&data, 20, 20, 0).unwrap();
    let err = evaluate(&Short, &set, &options()).unwrap_err();
    assert!(err.to_string().contains("short"), "{err}");
}

#[test]
fn a_candle_network_plugs_in() {
    // "Tower" = flatten, "head" = minus squared distance: the ranking of pixel-nn.
    let data = common::labelled_dataset(3, 25);
    let set = TrialSet::tasks(
        &data,
        TaskSpec {
            way: 5,
            shots: 1,
            within_alphabet: true,
        },
        100,
        7,
    )
    .unwrap();
    let net = CandleScorer::new(
        "toy",
        Device::Cpu,
        |x: &Tensor| x.flatten_from(1),
        |a: &Tensor, b: &Tensor| (a - b)?.sqr()?.sum(1)?.neg(),
    );
    let opts = EvalOptions {
        embed_batch: 16,
        pair_batch: 64,
        ..options()
    };
    let r = evaluate(&net, &set, &opts).unwrap();
    let p = evaluate(&PixelNn, &set, &opts).unwrap();
    assert_eq!(r.method, "toy");
    let choices =
        |r: &siamese_eval::EvalReport| r.records.iter().map(|t| t.choice).collect::<Vec<_>>();
    assert_eq!(choices(&r), choices(&p));
    assert_eq!(r.correct, p.correct);

    let bad = CandleScorer::new(
        "bad",
        Device::Cpu,
        |x: &Tensor| x.flatten_from(1),
        |a: &Tensor, _: &Tensor| a.sum_all(),
    );
    assert!(evaluate(&bad, &set, &opts).is_err());
}

#[test]
fn a_network_with_a_smaller_input_sees_the_images_shrunk() {
    let data = common::labelled_dataset(3, 25);
    let spec = TaskSpec {
        way: 5,
        shots: 1,
        within_alphabet: true,
    };
    let set = TrialSet::tasks(&data, spec, 100, 7).unwrap();
    let opts = options();
    let toy = |name: &'static str, side: usize| {
        CandleScorer::new(
            name,
            Device::Cpu,
            move |x: &Tensor| {
                // The tower only ever sees the network's input size.
                assert_eq!(&x.dims()[1..], &[1, side, side]);
                x.flatten_from(1)
            },
            |a: &Tensor, b: &Tensor| (a - b)?.sqr()?.sum(1)?.neg(),
        )
    };
    let choices =
        |r: &siamese_eval::EvalReport| r.records.iter().map(|t| t.choice).collect::<Vec<_>>();
    // 4×4 to 2×2 by block means, to 3×3 by area resampling: the same trials as on
    // the data shrunk beforehand.
    for side in [2, 3] {
        let shrinking =
            evaluate(&toy("shrinking", side).with_input_size(side), &set, &opts).unwrap();
        let shrunk = data.shrink_to(side).unwrap();
        let set_shrunk = TrialSet::tasks(&shrunk, spec, 100, 7).unwrap();
        let beforehand = evaluate(&toy("beforehand", side), &set_shrunk, &opts).unwrap();
        assert_eq!(choices(&shrinking), choices(&beforehand));
        assert_eq!(shrinking.correct, beforehand.correct);
    }
    // 4×4 images are not enlarged to 5×5: an error, naming the sizes.
    let err = evaluate(&toy("larger", 5).with_input_size(5), &set, &opts).unwrap_err();
    assert!(err.to_string().contains("4×4"), "{err}");
}
