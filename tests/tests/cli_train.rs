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
    assert_eq!(lecun["train"]["optimizer"], "sgd");

    let (ok, _, stderr) = run_cli(&["train", "--print-config", "--init", "xavier"]);
    assert!(!ok);
    assert!(
        stderr.contains("--init") && stderr.contains("expected paper or lecun"),
        "{stderr}"
    );
}
