//! `bench`: throughput measurements, printed as a table or one JSON line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use siamese_data::archive::DecodeSource;
use siamese_data::augment::{KochDistortion, augment_images_per_s};
use siamese_data::{Dataset, DatasetIndex, GrayImage, OmniglotSet};

use crate::data_source::DataSourceArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Decoding all 32,460 PNGs of both image sets (as training loads them, and file by
    /// file), and Koch's distortions.
    Data(BenchDataArgs),
    /// Training-step and embedding throughput of the network (compare ../shared/bench/torch_koch.py).
    Train(crate::bench_train::BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchDataArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Threads for decoding and distortions [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Minimum seconds to spend timing the distortions.
    #[arg(long, default_value_t = 3.0)]
    pub augment_seconds: f64,
    /// Images per distortion batch (a training batch of 128 pairs holds 256).
    #[arg(long, default_value_t = 256, value_parser = parse_positive)]
    pub augment_batch: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, got {s:?}")),
    }
}

#[derive(Debug, Serialize)]
struct DataBench {
    bench: &'static str,
    threads: usize,
    images: usize,
    scan_s: f64,
    /// Where the timed decode read the images: `"archive"` (the verified zips kept in
    /// the set folders, as `train` and `eval` load them) or `"files"` (one PNG at a
    /// time, when a set has no archive); `"mixed"` when one set has an archive and the
    /// other not.
    decode_source: &'static str,
    decode_s: f64,
    decode_images_per_s: f64,
    /// The same decode from the PNG files, one at a time, whatever `decode_source` is.
    decode_files_images_per_s: f64,
    augment_batch: usize,
    augment_images_per_s: f64,
}

pub fn run(cmd: &BenchCommand, progress: bool) -> Result<()> {
    match cmd {
        BenchCommand::Data(args) => bench_data(args, progress),
        BenchCommand::Train(args) => crate::bench_train::run(args),
    }
}

fn bench_data(args: &BenchDataArgs, progress: bool) -> Result<()> {
    let sets = [OmniglotSet::Background, OmniglotSet::Evaluation];
    args.source.ensure(&sets, progress)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the thread pool")?;
    let report = pool.install(|| -> Result<DataBench> {
        let scan_start = Instant::now();
        let indexes = sets
            .iter()
            .map(|s| DatasetIndex::scan(&args.source.data.join(s.folder())))
            .collect::<Result<Vec<_>, _>>()?;
        let scan_s = scan_start.elapsed().as_secs_f64();

        // One untimed pass of each path so that the timed ones read from the page
        // cache, as a repeated training run would.
        tracing::info!(
            "decoding both image sets the way training loads them and from the files \
             (one warm-up pass each, one timed)"
        );
        for idx in &indexes {
            drop(idx.clone().load()?);
            drop(idx.clone().load_files()?);
        }
        let files_start = Instant::now();
        for idx in &indexes {
            drop(idx.clone().load_files()?);
        }
        let files_s = files_start.elapsed().as_secs_f64();
        let decode_start = Instant::now();
        let loaded = indexes
            .into_iter()
            .map(|idx| idx.load_reporting())
            .collect::<Result<Vec<_>, _>>()?;
        let decode_s = decode_start.elapsed().as_secs_f64();
        let sources: Vec<DecodeSource> = loaded.iter().map(|(_, s)| *s).collect();
        let loaded: Vec<Dataset> = loaded.into_iter().map(|(d, _)| d).collect();
        let decode_source = if sources.iter().all(|&s| s == DecodeSource::Archive) {
            "archive"
        } else if sources.iter().all(|&s| s == DecodeSource::Files) {
            "files"
        } else {
            "mixed"
        };
        let images: Vec<&GrayImage> = loaded.iter().flat_map(|d| d.images()).collect();

        tracing::info!(
            "timing Koch's distortions in batches of {} for {:.1} s",
            args.augment_batch,
            args.augment_seconds
        );
        let background: Vec<&GrayImage> = loaded[0].images().iter().collect();
        let augment = augment_images_per_s(
            &background,
            &KochDistortion::default(),
            args.augment_batch,
            Duration::from_secs_f64(args.augment_seconds),
        );
        Ok(DataBench {
            bench: "data",
            threads: rayon::current_num_threads(),
            images: images.len(),
            scan_s,
            decode_source,
            decode_s,
            decode_images_per_s: images.len() as f64 / decode_s,
            decode_files_images_per_s: images.len() as f64 / files_s,
            augment_batch: args.augment_batch,
            augment_images_per_s: augment,
        })
    })?;
    print_report(&report, args.json)
}

fn print_report(report: &DataBench, json: bool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "threads               {}", report.threads)?;
        writeln!(out, "images decoded        {}", report.images)?;
        writeln!(out, "index scan            {:.3} s", report.scan_s)?;
        writeln!(out, "decode                {:.3} s", report.decode_s)?;
        writeln!(out, "decode source         {}", report.decode_source)?;
        writeln!(
            out,
            "decode_images_per_s   {:.0}",
            report.decode_images_per_s
        )?;
        writeln!(
            out,
            "  from the files      {:.0}",
            report.decode_files_images_per_s
        )?;
        writeln!(
            out,
            "augment_images_per_s  {:.0}",
            report.augment_images_per_s
        )?;
    }
    Ok(())
}
