//! The path a GPU takes, checked on the CPU: with `SIAMESE_CPU_OPS=stock` every layer
//! runs candle's stock operations (as on CUDA or Metal) instead of the fused CPU
//! kernels. A few steps of the default preset must train alike either way.

use siamese_tests::{extracted_dataset, run_cli_with_env};

/// The losses of steps 1..=3 of the default preset (seed 5) and its validation
/// accuracy, in a fresh run folder.
fn train(ops: &str, runs: &std::path::Path) -> (Vec<f64>, f64) {
    let data = extracted_dataset();
    let (ok, out, err) = run_cli_with_env(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--no-download",
            "--runs",
            runs.to_str().unwrap(),
            "--name",
            ops,
            "--max-steps",
            "3",
            "--set",
            "train.log_every=1",
            "--validation-trials",
            "60",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--json",
        ],
        &[("SIAMESE_CPU_OPS", ops)],
    );
    assert!(ok, "train with {ops} ops failed: {err}");
    if ops == "stock" {
        assert!(err.contains("stock operations"), "{err}");
    }
    let outcome: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let metrics = std::fs::read_to_string(runs.join(ops).join("metrics.jsonl")).unwrap();
    let losses = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    (losses, outcome["best"]["accuracy"].as_f64().unwrap())
}

#[test]
fn stock_ops_train_like_the_fused_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let (fused, fused_acc) = train("fused", tmp.path());
    let (stock, stock_acc) = train("stock", tmp.path());
    eprintln!("losses: fused {fused:?}, stock {stock:?}");
    assert_eq!((fused.len(), stock.len()), (3, 3));
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-9);
    // Step 1 scores the same network on the same episode: only the order of float
    // sums differs (the stock batch norm reduces in f32). Later steps follow Adam,
    // which amplifies that noise on near-zero gradients, so they only stay close;
    // a wrong gradient would move them apart by far more.
    assert!(
        rel(fused[0], stock[0]) < 2e-4,
        "step 1: {fused:?} against {stock:?}"
    );
    for step in 1..3 {
        assert!(
            rel(fused[step], stock[step]) < 2e-2,
            "step {}: {fused:?} against {stock:?}",
            step + 1
        );
    }
    let trials = |a: f64| (a * 60.0).round();
    assert!(
        (trials(fused_acc) - trials(stock_acc)).abs() <= 2.0,
        "validation: fused {fused_acc} against stock {stock_acc}"
    );
}
