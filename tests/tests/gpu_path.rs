//! The path a GPU takes, checked on the CPU: with `SIAMESE_CPU_OPS=stock` every layer
//! runs candle's stock operations (as on CUDA or Metal) instead of the fused CPU
//! kernels. A few steps of the default preset must train to the same loss and score
//! the same validation trials either way.

use siamese_tests::{extracted_dataset, run_cli_with_env};

/// `train --json` of the default preset for a few steps in a fresh run folder.
fn train(ops: &str, runs: &std::path::Path) -> serde_json::Value {
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
            "4",
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
    serde_json::from_str(out.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn stock_ops_train_like_the_fused_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    let fused = train("fused", tmp.path());
    let stock = train("stock", tmp.path());
    eprintln!("fused: {fused}\nstock: {stock}");
    let loss = |o: &serde_json::Value| o["last_loss"].as_f64().unwrap();
    assert!(
        (loss(&fused) - loss(&stock)).abs() < 1e-3 * loss(&fused).abs().max(1.0),
        "last loss: fused {} against stock {}",
        loss(&fused),
        loss(&stock)
    );
    let correct = |o: &serde_json::Value| (o["best"]["accuracy"].as_f64().unwrap() * 60.0).round();
    assert!(
        (correct(&fused) - correct(&stock)).abs() <= 1.0,
        "validation: fused {} against stock {} of 60",
        correct(&fused),
        correct(&stock)
    );
}
