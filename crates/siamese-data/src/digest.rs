//! Content digests of extracted sets.
//!
//! A content digest identifies what was extracted, independently of the zip container
//! it came from (the mirror re-packs the two large archives, so their zip checksums
//! differ from the official ones while every image is byte-identical). It is computed
//! as follows: list every file of the set that [`OmniglotSet::digest_includes`] as the
//! line `<path>\t<sha256 of the file's bytes, lowercase hex>\n`, where `<path>` is
//! relative to the extraction root, uses `/` as separator and starts with the set's own
//! folder (`images_background/Balinese/character01/0108_01.png`,
//! `all_runs/run01/class_labels.txt`); sort the lines bytewise, concatenate them and
//! take the sha256 of the result (lowercase hex). The expected values are embedded in
//! [`OmniglotSet::content_digest`] and [`OmniglotSet::file_count`].

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::DataError;
use crate::sets::OmniglotSet;

/// The content digest of an extracted set together with the number of files it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDigest {
    /// sha256 (lowercase hex) of the sorted listing, see the [module](self) docs.
    pub digest: String,
    /// Number of files that counted towards the digest.
    pub file_count: usize,
}

impl SetDigest {
    /// Whether this matches the published digest and file count of `set`.
    pub fn matches(&self, set: OmniglotSet) -> bool {
        self.digest == set.content_digest() && self.file_count == set.file_count()
    }
}

/// The content digest (lowercase hex) of `set` as extracted under `root`, the folder
/// that contains the set's folder (`root/images_background/...`).
///
/// Fails if the set's folder or one of its files cannot be read; a folder that exists
/// but holds other files simply yields another digest.
pub fn content_digest(root: &Path, set: OmniglotSet) -> Result<String, DataError> {
    digest_set(root, set).map(|d| d.digest)
}

/// Like [`content_digest`], and also says how many files were counted.
///
/// Files are hashed in parallel (rayon); the folder walk itself is sequential.
pub fn digest_set(root: &Path, set: OmniglotSet) -> Result<SetDigest, DataError> {
    let top = root.join(set.folder());
    let mut files = Vec::new();
    collect_files(&top, set.folder(), set, &mut files)?;
    let mut lines = files
        .par_iter()
        .map(|(path, rel)| {
            let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
            let hash = Sha256::digest(&bytes);
            Ok(format!("{rel}\t{}\n", hex::encode(hash)))
        })
        .collect::<Result<Vec<String>, DataError>>()?;
    lines.par_sort_unstable();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
    }
    Ok(SetDigest {
        digest: hex::encode(hasher.finalize()),
        file_count: lines.len(),
    })
}

/// Walks `dir` (whose path relative to the extraction root is `rel`) and collects the
/// files that count towards the digest of `set`, as (absolute path, relative path).
fn collect_files(
    dir: &Path,
    rel: &str,
    set: OmniglotSet,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    let entries = fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let mut file_type = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if file_type.is_symlink() {
            file_type = fs::metadata(&path)
                .map_err(|e| DataError::io(&path, e))?
                .file_type();
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let child_rel = format!("{rel}/{name}");
        if file_type.is_dir() {
            collect_files(&path, &child_rel, set, out)?;
        } else if file_type.is_file() && set.digest_includes(&name) {
            out.push((path, child_rel));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_a_tiny_tree_follows_the_published_recipe() {
        let root = std::env::temp_dir().join(format!("siamese-digest-test-{}", std::process::id()));
        let runs = root.join("all_runs/run01");
        fs::create_dir_all(runs.join("test")).unwrap();
        fs::write(runs.join("class_labels.txt"), b"labels").unwrap();
        fs::write(runs.join("test/item01.png"), b"png").unwrap();
        fs::write(runs.join("ignored.dat"), b"not counted").unwrap();
        fs::write(root.join("all_runs/.verified"), b"marker").unwrap();

        let got = digest_set(&root, OmniglotSet::AllRuns).unwrap();
        let hex_of = |b: &[u8]| hex::encode(Sha256::digest(b));
        let mut lines = [
            format!("all_runs/run01/class_labels.txt\t{}\n", hex_of(b"labels")),
            format!("all_runs/run01/test/item01.png\t{}\n", hex_of(b"png")),
        ];
        lines.sort();
        let expected = hex_of(lines.concat().as_bytes());
        assert_eq!(got.file_count, 2);
        assert_eq!(got.digest, expected);
        assert!(!got.matches(OmniglotSet::AllRuns));
        // Image sets count only PNGs.
        fs::rename(root.join("all_runs"), root.join("images_background")).unwrap();
        let images = digest_set(&root, OmniglotSet::Background).unwrap();
        assert_eq!(images.file_count, 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_set_folder_is_an_error_naming_it() {
        let err = content_digest(Path::new("/nonexistent/omniglot"), OmniglotSet::Evaluation)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/omniglot/images_evaluation")
        );
    }
}
