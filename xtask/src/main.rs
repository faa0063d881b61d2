//! Build and CI automation for the workspace, run as `cargo xtask <command>`.
//!
//! * `cargo xtask fetch-omniglot [--dest DIR] [--mirror DIR|URL] [--minimal] [--force]
//!   [--quiet]`: download (or copy from a mirror), verify and extract the data set.
//! * `cargo xtask fetch-mnist [--dest DIR] [--mirror DIR|URL] [--force] [--quiet]`:
//!   the MNIST test set (for the cross-domain test), decompressed and verified.
//! * `cargo xtask ci`: formatting check, clippy with warnings denied, and the tests.
//! * `cargo xtask bench data`: the data path against the Python reference's, side by
//!   side.
//! * `cargo xtask cuda-toolkit`: a CUDA 13.0 toolkit from PyPI wheels plus link-time
//!   stubs, in `.cuda-toolkit/`, for building with CUDA on a machine without one.
//! * `cargo xtask build [--cuda] [--cudnn]`: the release CLI; with `--cuda` in
//!   `target/cuda` with candle's CUDA backend.
//! * `cargo xtask device-bundle`: a folder (`bundle/gpu`) holding what a run on a
//!   lent GPU machine needs: the compressed CUDA binary, the Omniglot zips, the
//!   PyTorch baseline and a run script.
//! * `cargo xtask ci --cuda`: the CI checks, then clippy and the build with CUDA (for
//!   manual use; CI itself has no CUDA).

// A binary: its results belong on stdout (the print lint guards the libraries).
#![allow(clippy::print_stdout)]

mod bench;
mod bundle;
mod cuda;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use siamese_data::fetch::mnist::{MnistFetchOptions, MnistOutcome, fetch_mnist, mnist_source};
use siamese_data::fetch::{DEFAULT_DEST, FetchOptions, Source, fetch};
use siamese_data::mnist::{MNIST_DEFAULT_DIR, MNIST_MIRROR_ENV};
use siamese_data::{MIRROR_ENV, OmniglotSet};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build and CI automation for the workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Download, verify and extract Omniglot (background, evaluation and the 20 runs).
    FetchOmniglot {
        /// Folder that receives the set folders (relative to the current folder).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_DEST)]
        dest: PathBuf,
        /// Local folder or HTTP(S) base URL holding the zips under their official names,
        /// instead of the official repository.
        #[arg(long, value_name = "DIR|URL", env = MIRROR_ENV)]
        mirror: Option<String>,
        /// Also fetch the two small background splits (images_background_small1/2).
        #[arg(long)]
        minimal: bool,
        /// Fetch and replace sets even when they are present and verified.
        #[arg(long)]
        force: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Download (or copy from a mirror), decompress and verify the MNIST test set
    /// (t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) for `siamese-cli eval --mnist`.
    FetchMnist {
        /// Folder that receives the two uncompressed files.
        #[arg(long, value_name = "DIR", default_value = MNIST_DEFAULT_DIR)]
        dest: PathBuf,
        /// Local folder or HTTP(S) base URL holding t10k-images-idx3-ubyte.gz and
        /// t10k-labels-idx1-ubyte.gz [default: the public copy].
        #[arg(long, value_name = "DIR|URL", env = MNIST_MIRROR_ENV)]
        mirror: Option<String>,
        /// Fetch and replace the files even when they are present and verified.
        #[arg(long)]
        force: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the CI checks in the workspace root: fmt --check, clippy -D warnings, tests.
    Ci {
        /// Then also clippy and the release build with CUDA (in target/cuda; a clean
        /// build takes about 18 minutes on 2 cores) and a start of the binary. Needs
        /// nvcc, or the toolkit of `cargo xtask cuda-toolkit`. CI itself never does this.
        #[arg(long)]
        cuda: bool,
    },
    /// Prepare a CUDA 13.0 toolkit (PyPI wheels, link-time stubs) in .cuda-toolkit/ and
    /// print its environment as `export` lines. Not needed with a real CUDA install.
    CudaToolkit {
        /// Python whose pip downloads the wheels.
        #[arg(long, value_name = "PATH", default_value = "python3")]
        python: String,
        /// Unpack the wheels and make the stubs again even if present.
        #[arg(long)]
        force: bool,
    },
    /// Build the release CLI (with --cuda: with candle's CUDA backend, in target/cuda).
    Build {
        /// With CUDA: uses the toolkit of `cargo xtask cuda-toolkit` if prepared, else
        /// the machine's nvcc.
        #[arg(long)]
        cuda: bool,
        /// Also cuDNN's convolutions (implies --cuda; needs libcudnn 9 where it runs).
        #[arg(long)]
        cudnn: bool,
        /// A CUDA toolkit folder (holding bin/nvcc) to build with.
        #[arg(long, value_name = "DIR")]
        toolkit: Option<PathBuf>,
        /// GPU compute capability to compile the kernels for [default: $CUDA_COMPUTE_CAP,
        /// else 90 (Hopper) with the prepared toolkit, else nvidia-smi's answer].
        #[arg(long, value_name = "N")]
        compute_cap: Option<String>,
    },
    /// Write bundle/gpu: what a run on a lent GPU machine carries (the xz'd CUDA binary,
    /// the Omniglot zips, the PyTorch baseline, run.sh), checked to fit the carry limit.
    DeviceBundle(bundle::BundleArgs),
    /// Benchmarks against the Python reference, measured side by side.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Decoding and distortions: `siamese-cli bench data` against PIL and torchvision.
    Data {
        /// The extracted data set (relative to the workspace root).
        #[arg(long, value_name = "DIR", default_value = DEFAULT_DEST)]
        data: PathBuf,
        /// Python with PIL and torchvision [default: .venv-torch/bin/python].
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain on one line, without anyhow's backtrace noise.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Cmd::FetchOmniglot {
            dest,
            mirror,
            minimal,
            force,
            quiet,
        } => fetch_omniglot(dest, mirror.as_deref(), minimal, force, quiet),
        Cmd::FetchMnist {
            dest,
            mirror,
            force,
            quiet,
        } => fetch_mnist_cmd(dest, mirror.as_deref(), force, quiet),
        Cmd::Ci { cuda } => {
            ci()?;
            if cuda {
                ci_cuda()?;
            }
            Ok(())
        }
        Cmd::CudaToolkit { python, force } => {
            cuda::prepare_toolkit(&workspace_root(), &python, force)
        }
        Cmd::Build {
            cuda,
            cudnn,
            toolkit,
            compute_cap,
        } => {
            let root = workspace_root();
            if cuda || cudnn {
                let options = cuda::BuildOptions {
                    cudnn,
                    toolkit,
                    compute_cap,
                };
                cuda::build(&root, &options).map(drop)
            } else {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "--release", "-p", "siamese-cli"])
                    .current_dir(&root)
                    .status()
                    .context("cannot run cargo")?;
                if !status.success() {
                    bail!("cargo build --release -p siamese-cli failed ({status})");
                }
                Ok(())
            }
        }

        Cmd::DeviceBundle(args) => bundle::device_bundle(&workspace_root(), &args),
        Cmd::Bench(BenchCmd::Data { data, python }) => {
            bench::bench_data(&workspace_root(), &data, python)
        }
    }
}

fn fetch_omniglot(
    dest: PathBuf,
    mirror: Option<&str>,
    minimal: bool,
    force: bool,
    quiet: bool,
) -> Result<()> {
    let sets = if minimal {
        OmniglotSet::ALL.to_vec()
    } else {
        OmniglotSet::STANDARD.to_vec()
    };
    let source = Source::resolve(mirror);
    tracing::info!(
        "fetching {} set(s) into {} from {source}",
        sets.len(),
        dest.display()
    );
    let start = Instant::now();
    let options = FetchOptions {
        dest: dest.clone(),
        source,
        sets,
        force,
        progress: !quiet,
    };
    let report = fetch(&options)
        .with_context(|| format!("cannot fetch Omniglot into {}", dest.display()))?;
    if report.nothing_done() {
        tracing::info!(
            "all {} set(s) already present and verified in {}: nothing to do ({:.1} s)",
            report.sets.len(),
            dest.display(),
            start.elapsed().as_secs_f64()
        );
    } else {
        tracing::info!("done in {:.1} s:\n{report}", start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn fetch_mnist_cmd(dest: PathBuf, mirror: Option<&str>, force: bool, quiet: bool) -> Result<()> {
    let source = mnist_source(mirror);
    let start = Instant::now();
    let options = MnistFetchOptions {
        dest: dest.clone(),
        source,
        force,
        progress: !quiet,
    };
    let outcome = fetch_mnist(&options)
        .with_context(|| format!("cannot fetch the MNIST test set into {}", dest.display()))?;
    let secs = start.elapsed().as_secs_f64();
    match outcome {
        MnistOutcome::AlreadyPresent => tracing::info!(
            "the MNIST test set is already present and verified in {}: nothing to do ({secs:.1} s)",
            dest.display()
        ),
        MnistOutcome::Fetched { from } => tracing::info!(
            "the MNIST test set fetched from {} and verified into {} ({secs:.1} s)",
            from.join(" and "),
            dest.display()
        ),
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn ci() -> Result<()> {
    let root = workspace_root();
    let mut mirror_env: Option<PathBuf> = None;
    if std::env::var_os(MIRROR_ENV).is_none_or(|v| v.is_empty()) {
        let shared = root.join("../shared/omniglot");
        if shared.is_dir() {
            let shared = shared.canonicalize().unwrap_or(shared);
            tracing::info!("{MIRROR_ENV} not set: using {}", shared.display());
            mirror_env = Some(shared);
        }
    }
    let mut mnist_env: Option<PathBuf> = None;
    if std::env::var_os(MNIST_MIRROR_ENV).is_none_or(|v| v.is_empty()) {
        let shared = root.join("../shared/mnist");
        if shared.is_dir() {
            let shared = shared.canonicalize().unwrap_or(shared);
            tracing::info!("{MNIST_MIRROR_ENV} not set: using {}", shared.display());
            mnist_env = Some(shared);
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let steps: [(&str, &[&str]); 3] = [
        ("format check", &["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("tests", &["test", "--workspace"]),
    ];
    let start = Instant::now();
    for (i, (name, args)) in steps.iter().enumerate() {
        tracing::info!(
            "ci step {}/{}: {name}: cargo {}",
            i + 1,
            steps.len(),
            args.join(" ")
        );
        let step_start = Instant::now();
        let mut cmd = Command::new(&cargo);
        cmd.args(*args).current_dir(&root);
        if let Some(m) = &mirror_env {
            cmd.env(MIRROR_ENV, m);
        }
        if let Some(m) = &mnist_env {
            cmd.env(MNIST_MIRROR_ENV, m);
        }
        let status = cmd
            .status()
            .with_context(|| format!("ci step `{name}`: cannot run cargo"))?;
        if !status.success() {
            bail!(
                "ci step `{name}` failed ({status}): cargo {}",
                args.join(" ")
            );
        }
        tracing::info!(
            "ci step {name} passed in {:.1} s",
            step_start.elapsed().as_secs_f64()
        );
    }
    tracing::info!("ci passed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The CUDA part of `cargo xtask ci --cuda`: clippy with the `cuda` feature (release
/// profile, so that it shares candle's kernel build with the binary), the release
/// build, and a start of the binary with `--device auto` (which must fall back to the
/// CPU where no GPU answers).
fn ci_cuda() -> Result<()> {
    let root = workspace_root();
    let toolkit = cuda::choose_toolkit(&root, None, cuda::system_has_nvcc())?;
    let env = cuda::build_env(&toolkit, std::env::var("CUDA_COMPUTE_CAP").ok().as_deref());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let clippy = [
        "clippy",
        "--release",
        "--locked",
        "-p",
        "siamese-cli",
        "-p",
        "siamese-model",
        "-p",
        "siamese-train",
        "--all-targets",
        "--features",
        "siamese-model/cuda",
        "--target-dir",
        cuda::CUDA_TARGET_DIR,
        "--",
        "-D",
        "warnings",
    ];
    tracing::info!("ci --cuda: cargo {}", clippy.join(" "));
    let status = Command::new(&cargo)
        .args(clippy)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&root)
        .status()
        .context("cannot run cargo clippy")?;
    if !status.success() {
        bail!("ci --cuda: clippy with the cuda feature failed ({status})");
    }
    let options = cuda::BuildOptions {
        cudnn: false,
        toolkit: None,
        compute_cap: None,
    };
    let binary = cuda::build(&root, &options)?;
    let mut cmd = Command::new(&binary);
    cmd.args([
        "bench",
        "train",
        "--device",
        "auto",
        "--arch",
        "koch35",
        "--batch-pairs",
        "2",
        "--steps",
        "1",
        "--json",
    ]);
    if let cuda::Toolkit::Prepared(home) = &toolkit
        && !Path::new("/usr/local/nvidia").exists()
        && !Path::new("/usr/local/cuda/lib64").exists()
    {
        cmd.env("LD_LIBRARY_PATH", cuda::stub_library_path(home));
    }
    tracing::info!("ci --cuda: {:?}", cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "ci --cuda: {} --device auto bench train failed ({}): {}",
            binary.display(),
            out.status,
            stderr.trim()
        );
    }
    tracing::info!(
        "ci --cuda passed: {}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        stderr
            .lines()
            .find(|l| l.contains("device auto"))
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default()
    );
    Ok(())
}
