//! `data`: what a split holds.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use siamese_data::index::Counts;
use siamese_data::{Part, SplitName};

use crate::data_source::DataSourceArgs;

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Split to describe: koch, koch-all-drawers, background-small1, background-small2.
    #[arg(long, default_value = "koch")]
    pub split: SplitName,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct PartSummary {
    part: Part,
    set: String,
    drawers: String,
    #[serde(flatten)]
    counts: Counts,
    alphabets_names: Vec<String>,
}

pub fn run(args: &DataArgs, progress: bool) -> Result<()> {
    args.source.ensure(&args.split.sets(), progress)?;
    let mut parts = Vec::new();
    for part in [Part::Train, Part::Validation, Part::Test] {
        let spec = args.split.spec(part);
        let index = args
            .split
            .index(part, &args.source.data)
            .with_context(|| format!("indexing the {part} part of split {}", args.split))?;
        parts.push(PartSummary {
            part,
            set: spec.set.folder().to_string(),
            drawers: format!("{}-{}", spec.drawers.start(), spec.drawers.end()),
            counts: index.counts(),
            alphabets_names: index.alphabets().iter().map(|a| a.name.clone()).collect(),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"split": args.split, "parts": parts}),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "split {}", args.split)?;
    writeln!(
        out,
        "{:<11} {:<26} {:>7} {:>9} {:>10} {:>7}",
        "part", "set", "drawers", "alphabets", "characters", "images"
    )?;
    for p in &parts {
        writeln!(
            out,
            "{:<11} {:<26} {:>7} {:>9} {:>10} {:>7}",
            p.part.to_string(),
            p.set,
            p.drawers,
            p.counts.alphabets,
            p.counts.characters,
            p.counts.images
        )?;
    }
    Ok(())
}

use std::io::Write;
