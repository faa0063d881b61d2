//! `siamese-cli eval` end to end with the baselines, whose figures are known.

use siamese_tests::{mirror_dir, run_cli, workspace_root};

fn data_args() -> Vec<String> {
    let data = workspace_root().join("target/test-data/omniglot");
    vec![
        "--data".into(),
        data.display().to_string(),
        "--mirror".into(),
        mirror_dir().display().to_string(),
        "--quiet".into(),
    ]
}

fn eval_json(extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec!["eval".into(), "--json".into()];
    args.extend(data_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = run_cli(&args);
    assert!(ok, "{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn hausdorff_on_lakes_runs_gives_the_published_error() {
    let r = eval_json(&["--method", "hausdorff", "--lake-runs"]);
    assert_eq!(r["method"], "modified-hausdorff");
    assert_eq!(r["trials"], 400);
    assert_eq!(r["correct"], 245);
    assert_eq!(r["protocol"]["kind"], "lake-runs");
    let (lo, hi) = (
        r["ci95_low"].as_f64().unwrap(),
        r["ci95_high"].as_f64().unwrap(),
    );
    assert!(lo < 0.6125 && 0.6125 < hi);
}

#[test]
fn koch_protocol_is_seeded_and_writes_a_sheet() {
    let tmp = tempfile::tempdir().unwrap();
    let sheet = tmp.path().join("trials.png");
    let a = eval_json(&[
        "--method",
        "pixel-nn",
        "--seed",
        "3",
        "--save-sheet",
        sheet.to_str().unwrap(),
    ]);
    let b = eval_json(&["--method", "pixel-nn", "--seed", "3"]);
    assert_eq!(a["correct"], b["correct"]);
    assert_eq!(a["trials"], 400);
    assert_eq!(a["seed"], 3);
    assert_eq!(a["per_alphabet"].as_array().unwrap().len(), 10);
    assert!(sheet.is_file());
    let v = eval_json(&[
        "--method", "pixel-nn", "--split", "val", "--way", "5", "--shots", "2", "--trials", "50",
    ]);
    assert_eq!(v["trials"], 50);
    assert_eq!(v["protocol"]["kind"], "tasks");
}

#[test]
fn eval_without_a_model_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["eval".into()];
    args.extend(data_args());
    args.push("--model".into());
    args.push(tmp.path().join("nope.safetensors").display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = run_cli(&args);
    assert!(!ok);
    assert!(err.contains("nope.safetensors"), "{err}");
}
