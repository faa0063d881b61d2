//! The errors of fetching: each names the file or URL concerned and says what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::mnist::MNIST_MIRROR_ENV;
use crate::sets::{MIRROR_ENV, OmniglotSet};

/// Why a fetch failed. Every variant names the file, folder or URL concerned, and the
/// messages say what to do about it. After any of these, the destination holds no
/// partial set (temporary folders and downloads are removed).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source could not be reached at all (no network, DNS failure, refused
    /// connection, timeout).
    #[error(
        "cannot reach {url}: {reason}. Without internet access, point to a local copy of \
         the files with `--mirror <DIR|URL>` or the {mirror_env} environment variable"
    )]
    Unreachable {
        url: String,
        reason: String,
        /// The variable that names a mirror of this data set.
        mirror_env: &'static str,
    },

    /// The server answered with an error status.
    #[error(
        "{url} answered HTTP status {status}; check the URL, or use another source with \
         `--mirror <DIR|URL>` or {mirror_env}"
    )]
    HttpStatus {
        url: String,
        status: u16,
        /// The variable that names a mirror of this data set.
        mirror_env: &'static str,
    },

    /// The connection broke while the body was being received.
    #[error(
        "the download of {url} failed after {received} bytes: {reason}; try again, or use \
             `--mirror <DIR|URL>`"
    )]
    Download {
        url: String,
        received: u64,
        reason: String,
    },

    /// A folder mirror lacks the archive (or the folder does not exist).
    #[error(
        "{path} not found in the mirror folder {dir}: it must hold the Omniglot zips under \
         their official names (e.g. images_background.zip); check --mirror or {MIRROR_ENV}"
    )]
    MissingInMirror { dir: PathBuf, path: PathBuf },

    /// The md5 of an official archive differs from the published one.
    #[error(
        "checksum mismatch for {file}: expected md5 {expected}, got {actual}; the download is \
         corrupt or the file was changed, try again (or use `--mirror <DIR|URL>`)"
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },

    /// The size of an official archive differs from the published one.
    #[error(
        "size mismatch for {file}: expected {expected} bytes, got {actual}; the download is \
         incomplete or the file was changed, try again (or use `--mirror <DIR|URL>`)"
    )]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    /// A folder mirror lacks a file of the MNIST test set.
    #[error(
        "{path} not found in the mirror folder {dir}: it must hold the MNIST test set as \
         t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz; check --mirror or \
         {MNIST_MIRROR_ENV}"
    )]
    MnistMissingInMirror { dir: PathBuf, path: PathBuf },

    /// A gzip file cannot be decompressed (truncated, corrupt, not gzip).
    #[error("{file} is not a complete gzip file: {reason}; fetch it again or use another mirror")]
    CorruptGzip { file: String, reason: String },

    /// The MNIST test set is not in the destination and downloading was not allowed.
    #[error(
        "the MNIST test set is not in {dest}; get it with `cargo xtask fetch-mnist --dest \
         {dest}` (add `--mirror <DIR|URL>` without internet access)",
        dest = dest.display()
    )]
    MnistNotPresent { dest: PathBuf },

    /// The archive cannot be read as a zip (truncated, corrupt, unsupported).
    #[error("{zip} is truncated or corrupt: {reason}; fetch it again or use another mirror")]
    CorruptZip { zip: String, reason: String },

    /// The archive has an entry that would be written outside the extraction folder.
    #[error(
        "{zip} contains the unsafe entry {entry:?} ({reason}); refusing to extract anything \
         from it"
    )]
    UnsafeEntry {
        zip: String,
        entry: String,
        reason: &'static str,
    },

    /// What was extracted is not the published set.
    #[error(
        "the content of {set} extracted from {zip} does not match: expected {expected_files} \
         files with content digest {expected}, got {actual_files} files with digest {actual}; \
         the archive is not the official one (or is damaged), use another mirror"
    )]
    ContentMismatch {
        set: OmniglotSet,
        zip: String,
        expected: String,
        actual: String,
        expected_files: usize,
        actual_files: usize,
    },

    /// The set is not in the destination and downloading was not allowed.
    #[error(
        "the Omniglot set {set} is not in {dest}; get it with `cargo xtask fetch-omniglot \
         --dest {dest}` (add `--mirror <DIR|URL>` without internet access)",
        dest = dest.display()
    )]
    NotPresent { set: OmniglotSet, dest: PathBuf },

    /// Any other error of the data crate while verifying.
    #[error(transparent)]
    Data(crate::DataError),

    /// A file system operation failed (`op` says which, e.g. "create" or "write").
    /// The io error is part of the message rather than a `source()`, so that error
    /// chains do not print it twice.
    #[error("cannot {op} {path}: {cause}{hint}", path = path.display(), hint = IoHint(cause.kind()))]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
}

impl FetchError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Self {
        FetchError::Io {
            op,
            path: path.into(),
            cause,
        }
    }
}

impl From<crate::DataError> for FetchError {
    fn from(e: crate::DataError) -> Self {
        match e {
            crate::DataError::Io { path, source } => FetchError::io("read", path, source),
            other => FetchError::Data(other),
        }
    }
}

/// Advice for the io errors a user can do something about.
struct IoHint(io::ErrorKind);

impl fmt::Display for IoHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                f.write_str(" (the disk is full: free some space or choose another --dest)")
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                f.write_str(" (permission denied: choose a writable --dest)")
            }
            _ => Ok(()),
        }
    }
}
