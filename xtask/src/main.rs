//! Build and CI automation for the workspace, run as `cargo xtask <command>`.
//!
//! * `cargo xtask fetch-omniglot [--dest DIR] [--mirror DIR|URL] [--minimal] [--force]
//!   [--quiet]`: download (or copy from a mirror), verify and extract the data set.
//! * `cargo xtask ci`: formatting check, clippy with warnings denied, and the tests.
//! * `cargo xtask bench data`: the data path against the Python reference's, side by
//!   side.

// A binary: its results belong on stdout (the print lint guards the libraries).
#![allow(clippy::print_stdout)]

mod bench;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use siamese_data::fetch::{DEFAULT_DEST, FetchOptions, Source, fetch};
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
        /// instead of the official repository. Defaults to $OMNIGLOT_MIRROR when set.
        #[arg(long, value_name = "DIR|URL")]
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
    /// Run the CI checks in the workspace root: fmt --check, clippy -D warnings, tests.
    Ci,
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
        Cmd::Ci => ci(),
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
