//! Helpers shared by the evaluation crate's integration tests: the real Omniglot data
//! (extracted once from the mirror, as the data crate's tests do) and a synthetic
//! data set whose images encode their labels.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use siamese_data::fetch::{FetchOptions, Source, fetch, is_present};
use siamese_data::index::DatasetIndex;
use siamese_data::{Dataset, GrayImage, MIRROR_ENV, OmniglotSet};

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The folder holding the Omniglot zips: `OMNIGLOT_MIRROR` when set (and a folder),
/// else `<workspace>/../shared/omniglot`.
pub fn mirror_dir() -> PathBuf {
    if let Some(m) = std::env::var_os(MIRROR_ENV).filter(|m| !m.is_empty()) {
        let dir = PathBuf::from(m);
        assert!(
            dir.is_dir(),
            "{MIRROR_ENV}={} is not a folder; the evaluation tests need a folder holding \
             the Omniglot zips (images_background.zip, ...)",
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

/// The sets the evaluation tests use.
pub const TEST_SETS: [OmniglotSet; 2] = [OmniglotSet::Evaluation, OmniglotSet::AllRuns];

/// [`TEST_SETS`] extracted from [`mirror_dir`] into
/// `<workspace>/target/test-data/omniglot` (shared with the data crate's tests; only
/// what is missing is extracted); returns that folder.
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

/// `alphabets` alphabets × `characters` characters × drawers 1–20, as 4×4 images
/// whose first pixel is the character (mod 256), second the drawer, third the
/// alphabet: a scorer can "know the answer" from the pixels.
pub fn labelled_dataset(alphabets: usize, characters: usize) -> Dataset {
    let chars = vec![(1..=20).collect::<Vec<u8>>(); characters];
    let index = DatasetIndex::synthetic(&vec![chars; alphabets]);
    let pixels = index
        .images()
        .iter()
        .map(|e| {
            let mut px = vec![0u8; 16];
            px[0] = (e.character % 256) as u8;
            px[1] = e.drawer;
            px[2] = index.characters()[e.character].alphabet as u8;
            GrayImage::from_pixels(4, 4, px).unwrap()
        })
        .collect();
    Dataset::from_parts(index, pixels).unwrap()
}
