//! `compare` and `classify` on real Omniglot images through the CLI, with an untrained
//! (seeded) network: the wiring, the output formats and the errors. Accuracy of a
//! trained network is checked by the training end-to-end test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use siamese_model::{Device, ModelConfig, SiameseNet};
use siamese_tests::{mirror_dir, run_cli, workspace_root};

/// A seeded, untrained koch checkpoint, written once.
fn checkpoint() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = workspace_root().join("target/test-data/models");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("untrained-koch-seed7.safetensors");
        if !path.is_file() {
            let (net, _) = SiameseNet::init(ModelConfig::default(), 7, &Device::Cpu).unwrap();
            net.save(
                &path,
                &serde_json::json!({"note": "untrained, for CLI tests"}),
            )
            .unwrap();
        }
        path
    })
    .clone()
}

/// Real Omniglot images: (alphabet/character, file) from the extracted test data.
fn omniglot(rel: &str) -> PathBuf {
    let data = workspace_root().join("target/test-data/omniglot");
    let (ok, _, err) = run_cli(&[
        "data",
        "--data",
        data.to_str().unwrap(),
        "--mirror",
        mirror_dir().to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    data.join("images_evaluation").join(rel)
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn compare_is_symmetric_and_a_probability() {
    let model = checkpoint();
    let a = omniglot("Angelic/character01/0965_01.png");
    let b = omniglot("Angelic/character02/0966_01.png");
    let run = |x: &Path, y: &Path| {
        let (ok, out, err) = run_cli(&[
            "compare",
            x.to_str().unwrap(),
            y.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--json",
        ]);
        assert!(ok, "{err}");
        json_lines(&out).remove(0)
    };
    let ab = run(&a, &b);
    let ba = run(&b, &a);
    assert_eq!(ab["logit"], ba["logit"]);
    let p = ab["probability_same"].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0, "{p}");

    let (ok, _, err) = run_cli(&[
        "compare",
        a.to_str().unwrap(),
        "/no/such.png",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("/no/such.png"), "{err}");
}

#[test]
fn classify_ranks_the_support_classes() {
    let model = checkpoint();
    let tmp = tempfile::tempdir().unwrap();
    let support = tmp.path().join("support");
    std::fs::create_dir_all(support.join("gamma")).unwrap();
    std::fs::copy(
        omniglot("Angelic/character01/0965_01.png"),
        support.join("alpha.png"),
    )
    .unwrap();
    std::fs::copy(
        omniglot("Angelic/character02/0966_01.png"),
        support.join("beta.png"),
    )
    .unwrap();
    std::fs::copy(
        omniglot("Angelic/character03/0967_01.png"),
        support.join("gamma/a.png"),
    )
    .unwrap();
    std::fs::copy(
        omniglot("Angelic/character03/0967_02.png"),
        support.join("gamma/b.png"),
    )
    .unwrap();
    let q1 = omniglot("Angelic/character01/0965_05.png");
    let q2 = omniglot("Angelic/character03/0967_05.png");
    let (ok, out, err) = run_cli(&[
        "classify",
        "--support",
        support.to_str().unwrap(),
        "--query",
        q1.to_str().unwrap(),
        q2.to_str().unwrap(),
        "--top-k",
        "2",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0]["score"].as_f64() >= top[1]["score"].as_f64());
        for t in top {
            assert!(["alpha", "beta", "gamma"].contains(&t["label"].as_str().unwrap()));
        }
    }

    // One class is not a classification problem.
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(&q1, lonely.join("only.png")).unwrap();
    let (ok, _, err) = run_cli(&[
        "classify",
        "--support",
        lonely.to_str().unwrap(),
        "--query",
        q1.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("found 1 class"), "{err}");
}
