//! `plot`: the learning curves of several runs in one picture.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_train::metrics::read_metrics;
use siamese_train::plot::draw_curves;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folders (each with its metrics.jsonl); one curve each, labelled by the
    /// folder's name.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, short, value_name = "FILE.png", default_value = "curves.png")]
    pub out: PathBuf,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for dir in &args.runs {
        let metrics = dir.join("metrics.jsonl");
        if !metrics.is_file() {
            bail!(
                "{} has no metrics.jsonl: give run folders such as runs/NAME",
                dir.display()
            );
        }
        let lines = read_metrics(&metrics)?;
        let label = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.clone())
            .file_name()
            .map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
        runs.push((label, lines));
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder {}", parent.display()))?;
    }
    draw_curves(&args.out, &runs)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("plotting the runs into {}", args.out.display()))?;
    writeln!(std::io::stdout(), "{}", args.out.display())?;
    Ok(())
}
