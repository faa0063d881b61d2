//! `cargo xtask bench data`: the project's data path against the Python reference's,
//! side by side in one run, as ratios.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Builds the release CLI, runs `siamese-cli bench data --json` and the Python
/// baseline (`xtask/scripts/torch_data.py`) on the same data, and prints one JSON
/// line with both and their ratios.
pub fn bench_data(root: &Path, data: &Path, python: Option<PathBuf>) -> Result<()> {
    let python = python.unwrap_or_else(|| root.join(".venv-torch/bin/python"));
    if !python.exists() {
        bail!(
            "{} not found: the Python baseline needs PIL and torchvision; set them up with \
             `python3 -m venv .venv-torch && .venv-torch/bin/pip install torch torchvision pillow` \
             or pass --python <PATH>",
            python.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(&cargo)
        .args(["build", "--release", "--quiet", "-p", "siamese-cli"])
        .current_dir(root))
    .context("building the release CLI")?;

    let cli = root.join("target/release/siamese-cli");
    let ours = json_line(
        Command::new(&cli)
            .args(["bench", "data", "--json", "--data"])
            .arg(data)
            .current_dir(root),
    )
    .context("running siamese-cli bench data")?;
    let theirs = json_line(
        Command::new(&python)
            .arg(root.join("xtask/scripts/torch_data.py"))
            .arg("--data")
            .arg(data)
            .current_dir(root),
    )
    .context("running the Python baseline")?;

    let ratio = |ours_key: &str, theirs_key: &str| -> Option<f64> {
        Some(ours.get(ours_key)?.as_f64()? / theirs.get(theirs_key)?.as_f64()?)
    };
    let report = json!({
        "bench": "data",
        "ours": ours,
        "python": theirs,
        // Our decode as training loads the data (`ours.decode_source` says from where)
        // and file by file, each against PIL's loop over the files.
        "decode_ratio": ratio("decode_images_per_s", "decode_images_per_s"),
        "decode_files_ratio": ratio("decode_files_images_per_s", "decode_images_per_s"),
        "augment_ratio": ratio("augment_images_per_s", "augment_images_per_s"),
    });
    println!("{report}");
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command that prints one JSON line on stdout (logs go to stderr).
fn json_line(cmd: &mut Command) -> Result<Value> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{cmd:?} printed no JSON line"))?;
    serde_json::from_str(line).with_context(|| format!("{cmd:?} printed invalid JSON: {line}"))
}
