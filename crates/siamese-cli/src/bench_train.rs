//! `bench train`: training-step and embedding throughput of the siamese network,
//! side by side with the PyTorch reference `shared/bench/torch_koch.py` (same keys in
//! the JSON line, plus `peak_rss_mib`).
//!
//! Like the reference: a random batch `rand(2b, 1, s, s)` whose first `b` images are
//! the left and last `b` the right sides of the pairs, labels alternating 0, 1, ...;
//! one warm-up step, then `--steps` timed steps of forward, binary cross-entropy on
//! the logits, backward and an Adam update (lr 6·10⁻⁵); then one warm-up and
//! `--steps` timed embeddings of the same `2b` images without gradients.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use siamese_model::candle_core::{DType, Tensor};
use siamese_model::candle_nn::Optimizer;
use siamese_model::{
    Arch, BACKEND, ModelConfig, SiameseNet, bce_with_logits, device_kind, select_device,
};
use siamese_train::metrics::round3;
use siamese_train::optim::{Adam, AdamConfig};

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Network: koch (105×105 input), koch35 (35×35), conv4 (28×28) or conv-bn-WIDTHxDEPTH
    /// (the conv4 family), each at its own input size.
    #[arg(long, default_value = "koch")]
    pub arch: Arch,
    /// Pairs per training batch (twice as many images).
    #[arg(long, default_value_t = 32)]
    pub batch_pairs: usize,
    /// Timed training steps after one warm-up step (and as many timed embedding
    /// passes).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Device: auto, cpu, cuda, cuda:N, metal or metal:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads [default: candle's choice, the physical cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the network's initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct TrainBench {
    #[serde(rename = "impl")]
    implementation: String,
    threads: usize,
    batch_pairs: usize,
    train_pairs_per_s: f64,
    embed_images_per_s: f64,
    peak_rss_mib: Option<f64>,
}

pub fn run(args: &BenchTrainArgs) -> Result<()> {
    anyhow::ensure!(args.batch_pairs > 0, "--batch-pairs must be at least 1");
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = args.threads {
        pool = pool.num_threads(n);
    }
    let pool = pool.build().context("starting the thread pool")?;
    let report = pool.install(|| bench(args))?;
    print_report(&report, args.json)
}

fn bench(args: &BenchTrainArgs) -> Result<TrainBench> {
    let device = select_device(&args.device)?;
    let config = ModelConfig::new(args.arch);
    let b = args.batch_pairs;
    let s = config.input_size;
    tracing::info!(
        "initialising {config} ({} parameters)",
        config.num_params()?
    );
    let (net, varmap) = SiameseNet::init(config, args.seed, &device)?;
    // The training crate's Adam (PyTorch's, lr 6e-5), updating parameters in place.
    let mut opt = Adam::new(varmap.all_vars(), AdamConfig::default())?;
    let x = Tensor::rand(0f32, 1f32, (2 * b, 1, s, s), &device)?;
    let y: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
    let y = Tensor::from_vec(y, b, &device)?.to_dtype(DType::F32)?;

    let mut step = || -> Result<()> {
        let e = net.embed(&x)?;
        let logits = net.score(&e.narrow(0, 0, b)?, &e.narrow(0, b, b)?)?;
        opt.backward_step(&bce_with_logits(&logits, &y)?)?;
        Ok(())
    };
    tracing::info!("training: one warm-up step, then {} timed", args.steps);
    step()?;
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..args.steps {
        step()?;
    }
    device.synchronize()?;
    let train_s = start.elapsed().as_secs_f64();

    tracing::info!("embedding: one warm-up pass, then {} timed", args.steps);
    let frozen = net.detach();
    drop(frozen.embed(&x)?);
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..args.steps {
        drop(frozen.embed(&x)?);
    }
    device.synchronize()?;
    let embed_s = start.elapsed().as_secs_f64();

    Ok(TrainBench {
        implementation: format!("siamese-rs {BACKEND} {}", device_kind(&device)),
        threads: threads(args.threads),
        batch_pairs: b,
        train_pairs_per_s: round3((args.steps * b) as f64 / train_s),
        embed_images_per_s: round3((args.steps * 2 * b) as f64 / embed_s),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The CPU threads doing the work: the pool's size if given, else candle's own
/// choice (which its matrix products use).
fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| {
        rayon::current_num_threads().min(siamese_model::candle_core::utils::get_num_threads())
    })
}

/// Peak resident memory of this process (`VmHWM`), where Linux reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

fn print_report(report: &TrainBench, json: bool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "impl                 {}", report.implementation)?;
        writeln!(out, "threads              {}", report.threads)?;
        writeln!(out, "batch_pairs          {}", report.batch_pairs)?;
        writeln!(out, "train_pairs_per_s    {:.3}", report.train_pairs_per_s)?;
        writeln!(out, "embed_images_per_s   {:.3}", report.embed_images_per_s)?;
        match report.peak_rss_mib {
            Some(m) => writeln!(out, "peak_rss_mib         {m:.1}")?,
            None => writeln!(out, "peak_rss_mib         unknown")?,
        }
    }
    Ok(())
}
