//! Helpers for the end-to-end tests in `tests/tests/`, which drive the `siamese-cli`
//! binary as a user would, and for the integration tests of the library crates: where
//! the offline Omniglot mirror is, and a copy of the data set extracted once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use siamese_data::fetch::mnist::{MnistFetchOptions, fetch_mnist, mnist_is_present};
use siamese_data::fetch::{FetchOptions, Source, fetch, is_present};
use siamese_data::mnist::MNIST_MIRROR_ENV;
use siamese_data::{MIRROR_ENV, OmniglotSet};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Path of the `siamese-cli` binary, built once per test process with the same
/// profile as the tests (`cargo build -p siamese-cli`), so that the end-to-end tests
/// always run the current code.
pub fn cli_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "siamese-cli"])
            .current_dir(&root)
            .status()
            .expect("cannot run cargo to build siamese-cli");
        assert!(status.success(), "building siamese-cli failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("siamese-cli")
    })
    .clone()
}

/// The offline mirror of the Omniglot zips: `$OMNIGLOT_MIRROR`, else
/// `<workspace>/../shared/omniglot`. Panics with a clear message when neither holds
/// the zips, since the data tests cannot run without them.
pub fn mirror_dir() -> PathBuf {
    let dir = std::env::var_os(MIRROR_ENV)
        .filter(|m| !m.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/omniglot"));
    assert!(
        dir.join("images_evaluation.zip").is_file(),
        "no Omniglot mirror at {}: set {MIRROR_ENV} to a folder holding the Omniglot zips \
         (images_background.zip, ...)",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// Every set, extracted from [`mirror_dir`] into `<workspace>/target/test-data/omniglot`
/// once (only the sets not already present and verified); returns that folder. Safe
/// when several test threads or binaries call it at once: each extracts to its own
/// temporary folder and the losers of the final rename find the set installed.
pub fn extracted_dataset() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dest = workspace_root().join("target/test-data/omniglot");
        let missing: Vec<OmniglotSet> = OmniglotSet::ALL
            .into_iter()
            .filter(|&s| !is_present(&dest, s))
            .collect();
        if !missing.is_empty() {
            let options = FetchOptions {
                dest: dest.clone(),
                source: Source::Dir(mirror_dir()),
                sets: missing,
                force: false,
                progress: false,
            };
            if let Err(e) = fetch(&options) {
                panic!(
                    "cannot extract the test data set into {}: {e}",
                    dest.display()
                );
            }
        }
        dest
    })
    .clone()
}

/// The offline mirror of the MNIST test set (`t10k-*.gz`): `$MNIST_MIRROR`, else
/// `<workspace>/../shared/mnist`. Panics with a clear message when neither holds them.
pub fn mnist_mirror_dir() -> PathBuf {
    let dir = std::env::var_os(MNIST_MIRROR_ENV)
        .filter(|m| !m.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/mnist"));
    assert!(
        dir.join("t10k-images-idx3-ubyte.gz").is_file(),
        "no MNIST mirror at {}: set {MNIST_MIRROR_ENV} to a folder holding \
         t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// The MNIST test set, fetched from [`mnist_mirror_dir`] into
/// `<workspace>/target/test-data/mnist` once; returns that folder.
pub fn mnist_dataset() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dest = workspace_root().join("target/test-data/mnist");
        if !mnist_is_present(&dest) {
            let options = MnistFetchOptions {
                dest: dest.clone(),
                source: Source::Dir(mnist_mirror_dir()),
                force: false,
                progress: false,
            };
            if let Err(e) = fetch_mnist(&options) {
                panic!("cannot fetch MNIST into {}: {e}", dest.display());
            }
        }
        dest
    })
    .clone()
}

/// Runs the CLI with `args` and no inherited mirror variable; returns (success,
/// stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cli_binary())
        .args(args)
        .env_remove("OMNIGLOT_MIRROR")
        .env_remove(MNIST_MIRROR_ENV)
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run siamese-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
