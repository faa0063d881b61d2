//! A user's whole path through the CLI on a fresh data folder: fetch from the mirror
//! (done by `train` itself), a few training steps of the default preset (the
//! batch-normalised tower on one-shot episodes, then its calibration),
//! `eval --lake-runs` on the trained checkpoint, and `classify` on real Omniglot
//! images.

use siamese_tests::{mirror_dir, run_cli};

#[test]
fn fetch_train_eval_classify() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("omniglot");
    let runs = tmp.path().join("runs");
    let (data_s, runs_s) = (data.to_str().unwrap(), runs.to_str().unwrap());
    let mirror = mirror_dir();

    let (ok, out, err) = run_cli(&[
        "train",
        "--data",
        data_s,
        "--mirror",
        mirror.to_str().unwrap(),
        "--runs",
        runs_s,
        "--name",
        "e2e",
        "--max-steps",
        "2",
        "--validation-trials",
        "20",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "train failed: {err}");
    assert!(
        err.contains("fetching from"),
        "train should say it fetched: {err}"
    );
    let outcome: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    eprintln!("train: {outcome}");
    let run = runs.join("e2e");
    assert!(run.join("best/model.safetensors").is_file());
    assert!(run.join("metrics.jsonl").is_file());

    let (ok, out, err) = run_cli(&[
        "eval",
        "--lake-runs",
        "--data",
        data_s,
        "--mirror",
        mirror.to_str().unwrap(),
        "--model",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "eval failed: {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!("eval: {}/{}", report["correct"], report["trials"]);
    assert_eq!(report["trials"], 400);
    assert_eq!(report["protocol"]["kind"], "lake-runs");
    // Shift averaging is on by default, and the report says so.
    let method = report["method"].as_str().unwrap();
    assert!(
        method.ends_with("(mean features over ±1 px shifts)"),
        "{method}"
    );
    let acc = report["accuracy"].as_f64().unwrap();
    assert!(
        report["ci95_low"].as_f64().unwrap() <= acc && acc <= report["ci95_high"].as_f64().unwrap()
    );

    let support = tmp.path().join("support");
    std::fs::create_dir_all(&support).unwrap();
    let run01 = data.join("all_runs/run01");
    for c in ["class01", "class02", "class03"] {
        std::fs::copy(
            run01.join(format!("training/{c}.png")),
            support.join(format!("{c}.png")),
        )
        .unwrap();
    }
    let (ok, out, err) = run_cli(&[
        "classify",
        "--support",
        support.to_str().unwrap(),
        "--query",
        run01.join("test/item01.png").to_str().unwrap(),
        "--model",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "classify failed: {err}");
    let ranked: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ranked["top"].as_array().unwrap().len(), 3);
}
