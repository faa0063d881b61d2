//! The `siamese-cli` binary: parses arguments and wires the library crates together.
//! All the work happens in `siamese-data`, `siamese-model`, `siamese-train` and
//! `siamese-eval`.

mod bench;
mod bench_train;
mod data_source;
mod eval;
mod info;
mod model;
mod plot;
mod predict;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// One-shot image recognition with siamese networks (Koch et al., 2015) on Omniglot.
#[derive(Debug, Parser)]
#[command(name = "siamese-cli", version, propagate_version = true)]
struct Cli {
    /// Print only warnings and errors (no progress bars).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output (-v: debug, -vv: trace).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Allow TF32 in CUDA's f32 matrix products (and so in the convolutions, which
    /// run as matrix products): faster on Ampere and later GPUs, with products rounded
    /// to 10 mantissa bits. Ignored, with a warning, without CUDA.
    #[arg(long, global = true)]
    tf32: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what a split holds: alphabets, characters and images of each part.
    Data(info::DataArgs),
    /// One-shot accuracy of the network or a baseline, with a 95% interval.
    Eval(eval::EvalArgs),
    /// Binary same/different accuracy on balanced pairs of the evaluation alphabets.
    Verify(predict::VerifyArgs),
    /// The probability that two images show the same character.
    Compare(predict::CompareArgs),
    /// Rank the classes of a support folder (one example each) for each query image.
    Classify(predict::ClassifyArgs),
    /// Train the network into runs/<name>/ (or continue one with --resume).
    Train(Box<train::TrainArgs>),
    /// Draw the learning curves of runs (validation accuracy against minutes) into one
    /// PNG.
    Plot(plot::PlotArgs),
    /// Measure throughput (one JSON line with --json).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long candle's elementwise thread pool spins before it sleeps (its default is
/// 25,000 spins). Its spinning workers compete with rayon's for the cores between the
/// many small ops of a training step; 100 made a Conv-4 episode step ~8% faster on 2
/// cores. `CANDLE_BARRIER_POOL_SPIN_LIMIT` in the environment still wins.
const CANDLE_SPIN_LIMIT: &str = "100";

fn main() -> std::process::ExitCode {
    const SPIN_ENV: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(SPIN_ENV).is_none() {
        // SAFETY: no other thread exists yet (nothing has started candle's or rayon's
        // pools), so nothing reads the environment concurrently.
        unsafe { std::env::set_var(SPIN_ENV, CANDLE_SPIN_LIMIT) };
    }
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    read_environment();
    if cli.tf32 {
        allow_tf32();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Data(args) => info::run(&args, progress),
        Command::Eval(args) => eval::run(&args, progress),
        Command::Train(args) => train::run(&args, progress),
        Command::Verify(args) => predict::run_verify(&args, progress),
        Command::Compare(args) => predict::compare(&args),
        Command::Classify(args) => predict::classify(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Bench(cmd) => bench::run(&cmd, progress),
    }
}

/// The settings that come from the environment (the libraries read none): the
/// plots' font and, for measurements, the convolution algorithm and the stock ops.
fn read_environment() {
    if let Some(font) = std::env::var_os("SIAMESE_PLOT_FONT").filter(|v| !v.is_empty()) {
        siamese_train::plot::prefer_font_file(font.into());
    }
    if let Ok(value) = std::env::var("SIAMESE_CONV_ALGO") {
        match value.parse::<siamese_model::cpu_ops::ConvAlgo>() {
            Ok(algo) => siamese_model::cpu_ops::set_conv_algo(algo),
            Err(e) => tracing::warn!("SIAMESE_CONV_ALGO: {e}; using auto"),
        }
    }
    match std::env::var("SIAMESE_CPU_OPS").as_deref() {
        Ok("stock") => {
            siamese_model::cpu_ops::use_stock_ops(true);
            tracing::info!("SIAMESE_CPU_OPS=stock: candle's stock operations, as on a GPU");
        }
        Ok("fused") | Ok("") | Err(_) => {}
        Ok(other) => {
            tracing::warn!("SIAMESE_CPU_OPS={other}: expected stock or fused; using fused")
        }
    }
}

/// `--tf32`: candle's switch for reduced-precision (TF32) f32 GEMMs on CUDA, which is
/// process-wide.
fn allow_tf32() {
    if cfg!(feature = "cuda") {
        siamese_model::candle_core::cuda::set_gemm_reduced_precision_f32(true);
        tracing::info!("TF32 allowed in CUDA's f32 matrix products (--tf32)");
    } else {
        tracing::warn!("--tf32 ignored: this binary was built without CUDA (`--features cuda`)");
    }
}

/// Logs go to stderr so that stdout carries only results (tables, JSON).
fn init_logging(quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("SIAMESE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
