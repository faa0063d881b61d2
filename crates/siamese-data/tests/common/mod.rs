//! Helpers shared by the data crate's integration tests: where the offline mirror of
//! the Omniglot zips is, and a copy of the data set extracted once for all tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use siamese_data::fetch::{FetchOptions, Source, fetch, is_present};
use siamese_data::{MIRROR_ENV, OmniglotSet};

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The folder holding the Omniglot zips: `OMNIGLOT_MIRROR` when set (and a folder),
/// else `<workspace>/../shared/omniglot`. Panics with a clear message when neither
/// exists, since the data tests cannot run without it.
pub fn mirror_dir() -> PathBuf {
    if let Some(m) = std::env::var_os(MIRROR_ENV).filter(|m| !m.is_empty()) {
        let dir = PathBuf::from(m);
        assert!(
            dir.is_dir(),
            "{MIRROR_ENV}={} is not a folder; the data tests need a folder holding the \
             Omniglot zips (images_background.zip, ...)",
            dir.display()
        );
        return dir;
    }
    let dir = workspace_root().join("../shared/omniglot");
    assert!(
        dir.is_dir(),
        "no Omniglot mirror: set {MIRROR_ENV} to a folder holding the Omniglot zips \
         (images_background.zip, ...), or put them in {}",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// The sets every data test may rely on.
pub const TEST_SETS: [OmniglotSet; 5] = [
    OmniglotSet::Background,
    OmniglotSet::Evaluation,
    OmniglotSet::AllRuns,
    OmniglotSet::BackgroundSmall1,
    OmniglotSet::BackgroundSmall2,
];

/// The standard sets and the two small background splits, extracted from
/// [`mirror_dir`] into `<workspace>/target/test-data/omniglot` (once, and only when not
/// already present and verified); returns that folder. Safe when several test threads
/// or binaries call it at once: each extracts to its own temporary folder and the
/// losers of the final rename find the set already installed.
pub fn extracted_dataset() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dest = workspace_root().join("target/test-data/omniglot");
        let missing: Vec<OmniglotSet> = TEST_SETS
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
