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

#[test]
fn a_sheet_shows_the_truth_and_the_wrong_choices() {
    let runs = runs();
    let set = TrialSet::lake(&runs).unwrap();
    let r = evaluate(&ModifiedHausdorff::default(), &set, &EvalOptions::default()).unwrap();
    let picked = siamese_eval::pick_trials(&r, 6);
    assert_eq!(picked.len(), 6);
    assert_eq!(picked.iter().filter(|&&i| !r.records[i].correct).count(), 3);

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sheet.png");
    siamese_eval::save_sheet(&set, &r, 6, &path).unwrap();
    let sheet = image::open(&path).unwrap().to_rgb8();
    // 6 rows of 105 px images, a query and 20 candidates each.
    assert!(sheet.height() > 6 * 105 && sheet.width() > 21 * 105);
    let count = |rgb: [u8; 3]| sheet.pixels().filter(|p| p.0 == rgb).count();
    let frame = 111 * 111 - 105 * 105; // pixels of one 3-px frame ring
    assert_eq!(count([30, 160, 60]), 6 * frame, "one truth frame per row");
    assert_eq!(
        count([210, 40, 40]),
        3 * frame,
        "one wrong-choice frame per wrong row"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary left"
    );
    let empty = evaluate(
        &PixelNn,
        &set,
        &EvalOptions {
            keep_trials: false,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    assert!(siamese_eval::draw_sheet(&set, &empty, 6).is_err());
}
