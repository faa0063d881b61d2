//! Lake et al.'s 20 official runs on the real data: the Modified Hausdorff baseline
//! reproduces the authors' figure exactly, and pixel nearest neighbour is far worse.

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use siamese_data::OmniglotSet;
use siamese_data::lake::{LakeRun, load_runs};
use siamese_eval::{
    CandleScorer, EvalOptions, EvalReport, ModifiedHausdorff, PixelNn, TrialSet, evaluate,
};

fn runs() -> Vec<LakeRun> {
    let root = common::extracted_dataset();
    load_runs(&root.join(OmniglotSet::AllRuns.folder())).unwrap()
}

fn summary(r: &EvalReport) -> String {
    format!(
        "{} on {}: {}/{} correct, error {:.2}% (mean of runs {:.2}%), 95% CI [{:.4}, {:.4}], {} ties, embed {:.3}s, score {:.3}s",
        r.method,
        r.data,
        r.correct,
        r.trials,
        r.error_percent,
        r.mean_run_error_percent.unwrap_or(f64::NAN),
        r.ci95_low,
        r.ci95_high,
        r.ties,
        r.timing.embed_seconds,
        r.timing.score_seconds
    )
}

#[test]
fn modified_hausdorff_reproduces_lakes_38_75_percent_error() {
    let runs = runs();
    assert_eq!(runs.len(), 20);
    let set = TrialSet::lake(&runs).unwrap();
    assert_eq!(set.trials.len(), 400);
    let start = Instant::now();
    let r = evaluate(&ModifiedHausdorff::default(), &set, &EvalOptions::default()).unwrap();
    eprintln!(
        "{} (total {:.3}s)",
        summary(&r),
        start.elapsed().as_secs_f64()
    );
    for run in &r.per_run {
        eprintln!("  {} error {:.1}%", run.name, run.error_percent);
    }
    assert_eq!(r.correct, 245);
    assert_eq!(r.ties, 0);
    assert!((r.error_percent - 38.75).abs() < 1e-9);
    assert!((r.mean_run_error_percent.unwrap() - 38.75).abs() < 1e-9);
    assert_eq!(r.per_run.len(), 20);
    assert_eq!(r.per_run.iter().map(|x| x.correct).sum::<usize>(), 245);
    assert!(r.per_alphabet.is_empty());
    assert_eq!(r.timing.images_embedded, 800);
}

#[test]
fn pixel_nearest_neighbour_is_above_chance_and_below_mhd() {
    let runs = runs();
    let set = TrialSet::lake(&runs).unwrap();
    let r = evaluate(&PixelNn, &set, &EvalOptions::default()).unwrap();
    eprintln!("{}", summary(&r));
    // Chance is 5% (20 of 400); the MHD gets 245.
    assert!(r.correct > 40 && r.correct < 245, "{}", r.correct);
    let again = evaluate(&PixelNn, &set, &EvalOptions::default()).unwrap();
    assert_eq!(again.records, r.records);

    // The same ranking through the candle adapter (tower = flatten, head = −‖a−b‖²).
    let net = CandleScorer::new(
        "flat-l2",
        Device::Cpu,
        |x: &Tensor| x.flatten_from(1),
        |a: &Tensor, b: &Tensor| (a - b)?.sqr()?.sum(1)?.neg(),
    );
    let opts = EvalOptions {
        embed_batch: 100,
        pair_batch: 400,
        ..EvalOptions::default()
    };
    let c = evaluate(&net, &set, &opts).unwrap();
    eprintln!("{}", summary(&c));
    assert_eq!(c.correct, r.correct);
    assert_eq!(c.ties, r.ties);
}
