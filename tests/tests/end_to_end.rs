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
    // Shift averaging and the poses the network was trained with (the default
    // preset's 4 quarter turns and mirror images, read from the checkpoint) are on
    // by default, and the report says so.
    let method = report["method"].as_str().unwrap();
    assert!(
        method.ends_with(
            "(mean features over ±1 px shifts; mean logit over 8 poses: 4 quarter turns \
             and their mirror images)"
        ),
        "{method}"
    );
    let (ok, out, err) = run_cli(&[
        "eval",
        "--lake-runs",
        "--data",
        data_s,
        "--model",
        run.to_str().unwrap(),
        "--tta-poses",
        "none",
        "--tta-shift",
        "0",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "eval --tta-poses none failed: {err}");
    let plain: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        plain["method"]
            .as_str()
            .unwrap()
            .ends_with("model.safetensors"),
        "{}",
        plain["method"]
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

#[test]
fn an_ensemble_run_trains_and_scores_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = siamese_tests::extracted_dataset();
    let runs = tmp.path().join("runs");
    let data_s = data.to_str().unwrap();
    let (ok, out, err) = run_cli(&[
        "train",
        "--data",
        data_s,
        "--no-download",
        "--runs",
        runs.to_str().unwrap(),
        "--name",
        "ens",
        "--members",
        "2",
        "--seed",
        "3",
        "--max-steps",
        "2",
        "--validation-trials",
        "20",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "train failed: {err}");
    let outcome: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let run = runs.join("ens");
    let members = outcome["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(outcome["step"], 4);
    assert_eq!(outcome["best_models"].as_array().unwrap().len(), 2);
    assert!(outcome["best"]["accuracy"].as_f64().is_some(), "{outcome}");
    for (i, seed) in [(1, 3), (2, 4)] {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join(format!("member-{i}/config.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(config["train"]["seed"], seed);
        assert_eq!(config["train"]["members"], 1);
    }

    // The run folder scores as its members given one by one.
    let eval = |models: &[&std::path::Path]| -> serde_json::Value {
        let mut args = vec![
            "eval", "--data", data_s, "--split", "val", "--trials", "40", "--json",
        ];
        for m in models {
            args.extend(["--model", m.to_str().unwrap()]);
        }
        let (ok, out, err) = run_cli(&args);
        assert!(ok, "eval failed: {err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let whole = eval(&[&run]);
    let (m1, m2) = (run.join("member-1"), run.join("member-2"));
    let parts = eval(&[&m1, &m2]);
    assert!(
        whole["method"]
            .as_str()
            .unwrap()
            .starts_with("ensemble of 2"),
        "{}",
        whole["method"]
    );
    assert_eq!(whole["correct"], parts["correct"]);
    assert_eq!(whole["trials"], 40);

    let image = |rel: &str| data.join("images_evaluation").join(rel);
    let (ok, out, err) = run_cli(&[
        "compare",
        image("Angelic/character01/0965_01.png").to_str().unwrap(),
        image("Angelic/character02/0966_01.png").to_str().unwrap(),
        "--model",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "compare failed: {err}");
    let p = serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["probability_same"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&p));

    // An ensemble whose last member did not finish is not scored as if it had.
    let state = m2.join("last/state.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    s["finished"] = "Interrupted".into();
    std::fs::write(&state, s.to_string()).unwrap();
    let (ok, _, err) = run_cli(&["eval", "--data", data_s, "--model", run.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("member 2 has not finished") && err.contains("--resume"),
        "{err}"
    );
}
