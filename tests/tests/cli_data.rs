//! The CLI's data handling: a missing data set is fetched from the mirror (and the
//! CLI says so), or is a clear error with `--no-download`; bad flags are clear errors.

use siamese_tests::{mirror_dir, run_cli};

#[test]
fn missing_data_is_fetched_once_or_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("omniglot");
    let data = data.to_str().unwrap();
    let mirror = mirror_dir();
    let mirror = mirror.to_str().unwrap();

    let (ok, _, err) = run_cli(&["data", "--data", data, "--no-download"]);
    assert!(!ok);
    assert!(err.contains("cargo xtask fetch-omniglot"), "{err}");
    assert!(err.contains("--mirror"), "{err}");
    assert!(!tmp.path().join("omniglot/images_background").exists());

    let args = [
        "data",
        "--data",
        data,
        "--mirror",
        mirror,
        "--split",
        "background-small1",
        "--json",
    ];
    let (ok, out, err) = run_cli(&args);
    assert!(ok, "{err}");
    assert!(err.contains("fetching from"), "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let parts = summary["parts"].as_array().unwrap();
    assert_eq!(parts[0]["images"], 2720);
    assert_eq!(parts[1]["alphabets"], 10);
    assert_eq!(parts[2]["drawers"], "17-20");

    // Present and verified now: no second fetch.
    let (ok, out2, err) = run_cli(&args);
    assert!(ok, "{err}");
    assert!(!err.contains("fetching from"), "{err}");
    assert_eq!(out, out2);
}

#[test]
fn bad_flags_are_clear_errors() {
    let (ok, _, err) = run_cli(&["data", "--split", "kock"]);
    assert!(!ok);
    assert!(err.contains("koch-all-drawers"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("omniglot");
    let missing = tmp.path().join("no-such-mirror");
    let (ok, _, err) = run_cli(&[
        "data",
        "--data",
        data.to_str().unwrap(),
        "--mirror",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("no-such-mirror"), "{err}");
    assert!(!data.join("images_background").exists());
}
