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

/// Path of the `siamese-cli` binary, built once per test process with the profile
/// and into the target folder of the test binary itself (`cargo test` → `debug`,
/// `cargo test --release` → `release`, `--profile NAME` → `NAME`), so that the
/// end-to-end tests always run the current code, built the way they were.
pub fn cli_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // A test binary lives in `<target>/<profile folder>/deps/`.
        let exe = std::env::current_exe().expect("the test binary's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in <target>/<profile>/deps");
        let target = profile_dir.parent().expect("<target>/<profile>");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile folder name");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "siamese-cli"]);
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build
            .env("CARGO_TARGET_DIR", target)
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo to build siamese-cli");
        assert!(status.success(), "building siamese-cli ({profile}) failed");
        profile_dir.join("siamese-cli")
    })
    .clone()
}

/// Where the test data comes from, said once per test process on stderr (the test
/// output shows it on failure, or with `--nocapture`).
fn say_source(what: &str, dir: &Path, how: &str) {
    eprintln!("test data: {what} from {} ({how})", dir.display());
}

/// `$<env>` if set, else `<workspace>/../shared/<shared>` if it holds `probe`, else
/// `None`.
fn local_mirror(env: &str, shared: &str, probe: &str) -> Option<(PathBuf, &'static str)> {
    if let Some(dir) = std::env::var_os(env).filter(|m| !m.is_empty()) {
        return Some((PathBuf::from(dir), "the mirror variable"));
    }
    let dir = workspace_root().join("../shared").join(shared);
    dir.join(probe)
        .is_file()
        .then_some((dir, "the shared mirror beside the checkout"))
}

/// A folder of the Omniglot zips for the tests: `$OMNIGLOT_MIRROR`, else
/// `<workspace>/../shared/omniglot`, else (a plain clone) the official zips downloaded
/// once into `<workspace>/target/test-data/omniglot-zips`, each checked against its
/// published size and md5. Panics with a clear message when none of these works.
pub fn mirror_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (dir, how) = local_mirror(MIRROR_ENV, "omniglot", "images_evaluation.zip")
            .unwrap_or_else(|| {
                (
                    download_omniglot_zips(),
                    "downloaded from the official URLs",
                )
            });
        assert!(
            dir.join("images_evaluation.zip").is_file(),
            "no Omniglot mirror at {}: set {MIRROR_ENV} to a folder holding the Omniglot \
             zips (images_background.zip, ...)",
            dir.display()
        );
        let dir = dir.canonicalize().unwrap_or(dir);
        say_source("Omniglot zips", &dir, how);
        dir
    })
    .clone()
}

/// One file to download into the test-data folder: its name there, its URL, and the
/// published size and md5 to check it against (if any).
struct TestDownload {
    name: String,
    url: String,
    checksum: Option<siamese_data::fetch::ArchiveChecksum>,
}

/// Downloads `files` into `<workspace>/target/test-data/<folder>` (those already
/// there are kept: each is renamed into place only once complete and verified);
/// `mirror_env` is the variable that would have named a local copy.
fn download_test_files(
    folder: &str,
    files: Vec<TestDownload>,
    mirror_env: &'static str,
) -> PathBuf {
    let dir = workspace_root().join("target/test-data").join(folder);
    std::fs::create_dir_all(&dir).expect("cannot create the test-data folder");
    for file in files {
        let to = dir.join(&file.name);
        if to.is_file() {
            continue;
        }
        let partial = dir.join(format!(".{}.part-{}", file.name, std::process::id()));
        let got = siamese_data::fetch::download_with_hint(
            &file.url,
            &partial,
            file.checksum.as_ref(),
            false,
            mirror_env,
        );
        if let Err(e) = got {
            panic!(
                "no local mirror ({mirror_env} unset, none in ../shared) and the download of \
                 {} failed: {e}",
                file.url
            );
        }
        std::fs::rename(&partial, &to).expect("cannot move a downloaded file into place");
    }
    dir
}

/// The official Omniglot zips, each checked against its published size and md5.
fn download_omniglot_zips() -> PathBuf {
    let files = OmniglotSet::ALL
        .into_iter()
        .map(|set| TestDownload {
            name: set.zip_name().to_owned(),
            url: format!("{}{}", siamese_data::OFFICIAL_BASE_URL, set.official_path()),
            checksum: Some(siamese_data::fetch::ArchiveChecksum::official(set)),
        })
        .collect();
    download_test_files("omniglot-zips", files, MIRROR_ENV)
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

/// A folder of the MNIST test set's files (`t10k-*.gz`) for the tests:
/// `$MNIST_MIRROR`, else `<workspace>/../shared/mnist`, else (a plain clone) the files
/// downloaded once from the public default into
/// `<workspace>/target/test-data/mnist-gz` (checked when they are read: the md5 of
/// the uncompressed bytes). Panics with a clear message when none of these works.
pub fn mnist_mirror_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(mnist_mirror_dir_uncached).clone()
}

fn mnist_mirror_dir_uncached() -> PathBuf {
    let probe = "t10k-images-idx3-ubyte.gz";
    let (dir, how) = local_mirror(MNIST_MIRROR_ENV, "mnist", probe).unwrap_or_else(|| {
        (
            download_mnist_gz(),
            "downloaded from the public default URL",
        )
    });
    say_source("MNIST", &dir, how);
    assert!(
        dir.join("t10k-images-idx3-ubyte.gz").is_file(),
        "no MNIST mirror at {}: set {MNIST_MIRROR_ENV} to a folder holding \
         t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// The MNIST test set's two compressed files from the public default (checked later,
/// by the md5 of the uncompressed bytes, wherever they are read).
fn download_mnist_gz() -> PathBuf {
    use siamese_data::mnist::{
        MNIST_DEFAULT_BASE_URL, MNIST_TEST_IMAGES_FILE, MNIST_TEST_LABELS_FILE,
    };
    let files = [MNIST_TEST_IMAGES_FILE, MNIST_TEST_LABELS_FILE]
        .into_iter()
        .map(|file| TestDownload {
            name: file.gz_name.to_owned(),
            url: format!("{MNIST_DEFAULT_BASE_URL}{}", file.gz_name),
            checksum: None,
        })
        .collect();
    download_test_files("mnist-gz", files, MNIST_MIRROR_ENV)
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
    run_cli_with_env(args, &[])
}

/// [`run_cli`] with these variables set in the binary's environment.
pub fn run_cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(cli_binary())
        .args(args)
        .envs(env.iter().copied())
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
