//! `plot`: the learning curves of several runs in one picture.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use siamese_train::metrics::read_metrics;
use siamese_train::plot::draw_curves;
use siamese_train::{MEMBER_PREFIX, RunDir};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folders (each with its metrics.jsonl); one curve each, labelled by the
    /// folder's name (an ensemble's folder: one per member).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, short, value_name = "FILE.png", default_value = "curves.png")]
    pub out: PathBuf,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for given in &args.runs {
        // An ensemble's folder: one curve per member.
        let members = RunDir::member_dirs_in(given);
        let dirs = if given.join("metrics.jsonl").is_file() || members.is_empty() {
            vec![given.clone()]
        } else {
            members
        };
        for dir in dirs {
            let metrics = dir.join("metrics.jsonl");
            if !metrics.is_file() {
                bail!(
                    "{} has no metrics.jsonl: give run folders such as runs/NAME",
                    dir.display()
                );
            }
            let lines = read_metrics(&metrics)?;
            let label = label_of(&dir);
            runs.push((label, lines));
        }
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

/// A curve's label: the run folder's name, with its ensemble's for a member
/// (`long-s0/member-2`).
fn label_of(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let own = name(&dir).unwrap_or_else(|| dir.display().to_string());
    match dir.parent().and_then(name) {
        Some(parent) if own.starts_with(MEMBER_PREFIX) => format!("{parent}/{own}"),
        _ => own,
    }
}
