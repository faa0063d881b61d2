//! `train` flags that need no data set: the resolved configuration.

use siamese_tests::run_cli;

#[test]
fn print_config_resolves_presets_and_flags() {
    let config = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["train", "--print-config"];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = run_cli(&all);
        assert!(ok, "train {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).expect("one JSON document on stdout")
    };
    let default = config(&[]);
    assert_eq!(default["train"]["init"], "paper");
    let lecun = config(&["--init", "lecun", "--preset", "paper"]);
    assert_eq!(lecun["train"]["init"], "lecun");
    assert!(lecun["train"]["optimizer"]["sgd"]["layers"].is_object());
    // The optimizer and objective flags switch variants; --set reaches any field.
    let adamw = config(&[
        "--optimizer",
        "adamw",
        "--lr",
        "0.002",
        "--set",
        "train.objective.episodes.way=30",
        "--input-size",
        "28",
    ]);
    assert_eq!(adamw["train"]["optimizer"]["adamw"]["lr"], 0.002);
    assert_eq!(adamw["train"]["optimizer"]["adamw"]["weight_decay"], 0.01);
    assert_eq!(adamw["train"]["objective"]["episodes"]["way"], 30);
    assert_eq!(adamw["model"]["input_size"], 28);
    assert_eq!(default["model"]["input_size"], 32);
    // The default fits its episodes to its minutes; a step count fixes them.
    assert_eq!(default["train"]["fit_steps_to_time"], true);
    assert!(default["train"]["max_steps"].is_null());
    assert_eq!(default["train"]["max_minutes"], 30.0);
    assert_eq!(default["train"]["objective"]["episodes"]["mirror"], true);
    // `long` is four default networks; --members makes any recipe an ensemble.
    assert_eq!(default["train"]["members"], 1);
    let long = config(&["--preset", "long"]);
    assert_eq!(long["train"]["members"], 4);
    assert_eq!(long["train"]["max_minutes"], 30.0);
    assert_eq!(config(&["--members", "3"])["train"]["members"], 3);
    let (ok, _, stderr) = run_cli(&["train", "--print-config", "--members", "0"]);
    assert!(!ok && stderr.contains("train.members"), "{stderr}");
    let fixed = config(&["--max-steps", "900", "--no-time-limit"]);
    assert_eq!(fixed["train"]["max_steps"], 900);
    let (ok, _, stderr) = run_cli(&["train", "--print-config", "--no-time-limit"]);
    assert!(!ok);
    assert!(
        stderr.contains("fit_steps_to_time") && stderr.contains("--max-steps"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_cli(&["train", "--print-config", "--optimizer", "rmsprop"]);
    assert!(!ok);
    assert!(
        stderr.contains("--optimizer") && stderr.contains("adamw"),
        "{stderr}"
    );

    let (ok, _, stderr) = run_cli(&["train", "--print-config", "--init", "xavier"]);
    assert!(!ok);
    assert!(
        stderr.contains("--init") && stderr.contains("expected paper or lecun"),
        "{stderr}"
    );
}

#[test]
fn plot_draws_the_curves_of_run_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("my-run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("metrics.jsonl"),
        concat!(
            r#"{"kind":"train","step":10,"epoch":0,"loss":0.5,"lr":0.001,"pairs_per_s":1.0,"elapsed_s":60.0}"#,
            "\n",
            r#"{"kind":"validation","step":10,"epoch":0,"accuracy":0.8,"ci95_low":0.7,"ci95_high":0.9,"correct":8,"trials":10,"ties":0,"best":true,"seconds":0.1}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("new/folder/curves.png");
    let (ok, stdout, stderr) = run_cli(&[
        "plot",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("curves.png"), "{stdout}");
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);
    // An ensemble's folder draws its members; an empty member folder is named.
    let ensemble = tmp.path().join("ens");
    for member in ["member-1", "member-2"] {
        std::fs::create_dir_all(ensemble.join(member)).unwrap();
        std::fs::copy(
            run.join("metrics.jsonl"),
            ensemble.join(member).join("metrics.jsonl"),
        )
        .unwrap();
    }
    let (ok, _, stderr) = run_cli(&[
        "plot",
        ensemble.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    std::fs::create_dir_all(ensemble.join("member-3")).unwrap();
    let (ok, _, stderr) = run_cli(&[
        "plot",
        ensemble.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("member-3"), "{stderr}");
    let missing = tmp.path().join("no-such-run");
    let (ok, _, stderr) = run_cli(&["plot", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("no-such-run") && stderr.contains("metrics.jsonl"),
        "{stderr}"
    );
}
