//! Fetching the MNIST test set: the two `.gz` files from a mirror folder, an HTTP(S)
//! base or [`MNIST_DEFAULT_BASE_URL`], decompressed, checked (the IDX header against
//! the length, then the md5 of the uncompressed bytes) and installed atomically as
//! `<dest>/t10k-images-idx3-ubyte` and `<dest>/t10k-labels-idx1-ubyte`.
//!
//! Only the uncompressed bytes are checked: the gzip wrappers differ between copies
//! (file name and time stamp in the header), the digits do not. Each file is written
//! to a temporary file in the destination and renamed into place once verified; the
//! `.verified` marker (the md5s) is written last. On any error the temporaries are
//! removed, so the destination never holds a partial or unverified file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::{FetchError, RemoveOnDrop, Source, VERIFIED_MARKER, download_with_hint, next_id};
use crate::mnist::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, MNIST_DEFAULT_BASE_URL, MNIST_DEFAULT_DIR,
    MNIST_MIRROR_ENV, MNIST_TEST_FILES, MnistFile, check_idx_header,
};

/// What to fetch from where.
#[derive(Debug, Clone)]
pub struct MnistFetchOptions {
    /// The folder that receives the files (default [`MNIST_DEFAULT_DIR`]).
    pub dest: PathBuf,
    /// Where the `.gz` files come from; [`Source::Official`] is
    /// [`MNIST_DEFAULT_BASE_URL`].
    pub source: Source,
    /// Fetch again even when the files are present and verified.
    pub force: bool,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for MnistFetchOptions {
    fn default() -> Self {
        MnistFetchOptions {
            dest: PathBuf::from(MNIST_DEFAULT_DIR),
            source: mnist_source(None),
            force: false,
            progress: true,
        }
    }
}

/// `mirror` (a `--mirror` value, which the binaries default to `$MNIST_MIRROR`) when
/// given and not empty, else the public default URL.
pub fn mnist_source(mirror: Option<&str>) -> Source {
    Source::resolve(mirror)
}

/// Where `source` keeps the compressed `file`.
pub fn mnist_location(source: &Source, file: &MnistFile) -> String {
    match source {
        Source::Official => format!("{MNIST_DEFAULT_BASE_URL}{}", file.gz_name),
        Source::Dir(dir) => dir.join(file.gz_name).display().to_string(),
        Source::Url(base) => format!("{}/{}", base.trim_end_matches('/'), file.gz_name),
    }
}

/// What [`fetch_mnist`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MnistOutcome {
    /// Both files were present and verified: nothing was done.
    AlreadyPresent,
    /// The files were fetched from these locations, verified and installed.
    Fetched { from: Vec<String> },
}

/// The text of the `.verified` marker: the md5 of each file.
fn marker_text() -> String {
    MNIST_TEST_FILES
        .iter()
        .map(|f| format!("{}  {}\n", f.md5, f.name))
        .collect()
}

/// Cheap check that the test set is installed in `dest`: both files have their size
/// and the marker written after verification is there. Files are not re-hashed.
pub fn mnist_is_present(dest: &Path) -> bool {
    let marker_ok =
        fs::read_to_string(dest.join(VERIFIED_MARKER)).is_ok_and(|m| m == marker_text());
    marker_ok
        && MNIST_TEST_FILES.iter().all(|f| {
            fs::metadata(dest.join(f.name)).is_ok_and(|m| m.is_file() && m.len() == f.size)
        })
}

/// Makes sure the test set is in `dest` ([`mnist_is_present`]); fetches it from
/// `source` when missing and `allow_download`, else fails with
/// [`FetchError::MnistNotPresent`], which says how to get it.
pub fn ensure_mnist(
    dest: &Path,
    source: &Source,
    allow_download: bool,
    progress: bool,
) -> Result<(), FetchError> {
    if mnist_is_present(dest) {
        return Ok(());
    }
    if !allow_download {
        return Err(FetchError::MnistNotPresent {
            dest: dest.to_path_buf(),
        });
    }
    tracing::info!(
        "the MNIST test set is not in {}: fetching it from {}",
        dest.display(),
        mnist_location(source, &MNIST_TEST_FILES[0]).trim_end_matches(MNIST_TEST_FILES[0].gz_name)
    );
    fetch_mnist(&MnistFetchOptions {
        dest: dest.to_path_buf(),
        source: source.clone(),
        force: false,
        progress,
    })?;
    Ok(())
}

/// Fetches, verifies and installs the MNIST test set (see the [module](self) docs).
/// Files already present are re-hashed (a few milliseconds) and left alone when they
/// verify, unless `force`.
pub fn fetch_mnist(options: &MnistFetchOptions) -> Result<MnistOutcome, FetchError> {
    let dest = &options.dest;
    fs::create_dir_all(dest).map_err(|e| FetchError::io("create", dest, e))?;
    super::remove_stale_temporaries(dest);
    if !options.force && MNIST_TEST_FILES.iter().all(|f| installed_ok(dest, f)) {
        write_marker(dest)?;
        tracing::info!(
            "the MNIST test set in {} is present and verified: nothing to do",
            dest.display()
        );
        return Ok(MnistOutcome::AlreadyPresent);
    }
    // A marker from before stays only if the files it vouches for do: drop it first.
    let marker = dest.join(VERIFIED_MARKER);
    if marker.exists() {
        fs::remove_file(&marker).map_err(|e| FetchError::io("remove", &marker, e))?;
    }
    let pid = std::process::id();
    // Both files are verified into temporaries before either is installed.
    let mut staged = Vec::new();
    let mut from = Vec::new();
    for file in &MNIST_TEST_FILES {
        let location = mnist_location(&options.source, file);
        tracing::info!("fetching {} from {location}", file.name);
        let n = next_id();
        let mut _download_guard = None;
        let gz_path = match &options.source {
            Source::Dir(dir) => {
                let path = dir.join(file.gz_name);
                if !path.is_file() {
                    return Err(FetchError::MnistMissingInMirror {
                        dir: dir.clone(),
                        path,
                    });
                }
                path
            }
            Source::Official | Source::Url(_) => {
                let part = dest.join(format!(".tmp-{}-{pid}-{n}", file.gz_name));
                _download_guard = Some(RemoveOnDrop(part.clone()));
                download_with_hint(&location, &part, None, options.progress, MNIST_MIRROR_ENV)?;
                part
            }
        };
        let bytes = gunzip(&gz_path, &location)?;
        verify_bytes(&bytes, file, &location)?;
        let tmp = dest.join(format!(".tmp-{}-{pid}-{n}", file.name));
        let guard = RemoveOnDrop(tmp.clone());
        write_synced(&tmp, &bytes)?;
        staged.push((guard, file));
        from.push(location);
    }
    for (guard, file) in &staged {
        let target = dest.join(file.name);
        fs::rename(&guard.0, &target).map_err(|e| FetchError::io("install", &target, e))?;
    }
    write_marker(dest)?;
    tracing::info!(
        "the MNIST test set fetched and verified into {}",
        dest.display()
    );
    Ok(MnistOutcome::Fetched { from })
}

/// Whether `dest` holds `file` with its size and md5.
fn installed_ok(dest: &Path, file: &MnistFile) -> bool {
    let path = dest.join(file.name);
    if !fs::metadata(&path).is_ok_and(|m| m.len() == file.size) {
        return false;
    }
    fs::read(&path).is_ok_and(|b| hex::encode(Md5::digest(&b)) == file.md5)
}

/// Decompresses a whole gzip file into memory; `label` names it in errors.
fn gunzip(path: &Path, label: &str) -> Result<Vec<u8>, FetchError> {
    let file = fs::File::open(path).map_err(|e| FetchError::io("open", path, e))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut out)
        .map_err(|e| FetchError::CorruptGzip {
            file: label.to_owned(),
            reason: match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    format!(
                        "it ends early, after {} bytes of data (truncated)",
                        out.len()
                    )
                }
                _ => e.to_string(),
            },
        })?;
    Ok(out)
}

/// The IDX header against the length, then the size and md5 of the bytes.
fn verify_bytes(bytes: &[u8], file: &MnistFile, label: &str) -> Result<(), FetchError> {
    let (magic, dims) = if file.name.contains("images") {
        (IDX_IMAGES_MAGIC, 3)
    } else {
        (IDX_LABELS_MAGIC, 1)
    };
    check_idx_header(bytes, magic, dims, Path::new(label))?;
    if bytes.len() as u64 != file.size {
        return Err(FetchError::SizeMismatch {
            file: format!("{label} (uncompressed)"),
            expected: file.size,
            actual: bytes.len() as u64,
        });
    }
    let md5 = hex::encode(Md5::digest(bytes));
    if md5 != file.md5 {
        return Err(FetchError::ChecksumMismatch {
            file: format!("{label} (uncompressed)"),
            expected: file.md5.to_owned(),
            actual: md5,
        });
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let mut f = fs::File::create(path).map_err(|e| FetchError::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FetchError::io("write", path, e))
}

/// Writes the marker atomically (temporary file, then rename).
fn write_marker(dest: &Path) -> Result<(), FetchError> {
    let marker = dest.join(VERIFIED_MARKER);
    if fs::read_to_string(&marker).is_ok_and(|m| m == marker_text()) {
        return Ok(());
    }
    let tmp = dest.join(format!(
        ".tmp-verified-{}-{}",
        std::process::id(),
        next_id()
    ));
    let guard = RemoveOnDrop(tmp.clone());
    write_synced(&tmp, marker_text().as_bytes())?;
    fs::rename(&guard.0, &marker).map_err(|e| FetchError::io("write", &marker, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_sources() {
        let f = &MNIST_TEST_FILES[1];
        assert_eq!(
            mnist_location(&Source::Official, f),
            format!("{MNIST_DEFAULT_BASE_URL}t10k-labels-idx1-ubyte.gz")
        );
        assert_eq!(
            mnist_location(&Source::Url("http://h/m/".into()), f),
            "http://h/m/t10k-labels-idx1-ubyte.gz"
        );
        assert_eq!(mnist_source(Some("/m")), Source::Dir("/m".into()));
    }
}
