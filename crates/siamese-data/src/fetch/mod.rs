//! Download, verification and extraction of the Omniglot archives.
//!
//! [`fetch`] gets each requested set from a [`Source`] (the official repository, a local
//! mirror folder or another HTTP(S) base), checks it and installs it as
//! `<dest>/<set folder>`:
//!
//! * archives downloaded from the official URLs must have the published size and md5;
//! * every extracted set, whatever its source, must have the published file count and
//!   content digest (see [`crate::digest`]).
//!
//! Downloads go to a temporary file inside the destination and extraction to a
//! temporary folder beside the final one (`<dest>/.tmp-<folder>-<pid>-<n>`); the set is
//! renamed into place only once verified, with a `.verified` marker holding its digest
//! (the marker is neither a `.png` nor a `.txt`, so it does not count towards the
//! digest). An image set also gets, inside its folder, an uncompressed zip of its files
//! written while extracting, with a marker of its own ([`crate::archive`]), so that
//! loading can decode straight from it. On every
//! error the temporaries are removed, so the destination never holds a partial set. Concurrent fetches into the same destination are safe: the loser of
//! the final rename finds the set present and verified.

mod download;
mod error;
mod extract;
pub mod mnist;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use download::{ArchiveChecksum, Downloaded, download, download_with_hint};
pub use error::FetchError;
pub use extract::unsafe_entry_reason;

use crate::archive::{ARCHIVE_FILE, ARCHIVE_MARKER, marker_text};
use crate::digest::{SetDigest, digest_set};
use crate::sets::{OFFICIAL_BASE_URL, OmniglotSet};

/// Where [`fetch`] puts the sets unless told otherwise (relative to the current folder).
pub const DEFAULT_DEST: &str = "data/omniglot";

/// Name of the marker written into a set's folder once it has been verified; it holds
/// the set's content digest.
pub const VERIFIED_MARKER: &str = ".verified";

/// Where the archives come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// [`OFFICIAL_BASE_URL`] + [`OmniglotSet::official_path`]; archives are checked
    /// against the published md5 and size.
    Official,
    /// A local folder holding the zips under their names ([`OmniglotSet::zip_name`]).
    Dir(PathBuf),
    /// An HTTP(S) base URL holding the zips under their names.
    Url(String),
}

impl Source {
    /// Parses a `--mirror <DIR|URL>` value: `http://` or `https://` makes a [`Source::Url`],
    /// anything else a [`Source::Dir`].
    pub fn parse_mirror(mirror: &str) -> Source {
        let lower = mirror.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Source::Url(mirror.to_owned())
        } else {
            Source::Dir(PathBuf::from(mirror))
        }
    }

    /// `mirror` (a `--mirror` value, which the binaries default to their mirror
    /// variable) when given and not empty, else [`Source::Official`] (the data set's
    /// public default). The library reads no environment variable.
    pub fn resolve(mirror: Option<&str>) -> Source {
        match mirror {
            Some(m) if !m.is_empty() => Source::parse_mirror(m),
            _ => Source::Official,
        }
    }

    /// Where this source keeps the archive of `set`: a URL or a file path.
    pub fn location(&self, set: OmniglotSet) -> String {
        match self {
            Source::Official => format!("{OFFICIAL_BASE_URL}{}", set.official_path()),
            Source::Dir(dir) => dir.join(set.zip_name()).display().to_string(),
            Source::Url(base) => format!("{}/{}", base.trim_end_matches('/'), set.zip_name()),
        }
    }

    /// The checksum an archive from this source must match, if any (official only).
    pub fn archive_checksum(&self, set: OmniglotSet) -> Option<ArchiveChecksum> {
        matches!(self, Source::Official).then(|| ArchiveChecksum::official(set))
    }
}

impl Default for Source {
    /// [`Source::Official`].
    fn default() -> Self {
        Source::Official
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Official => write!(f, "the official repository ({OFFICIAL_BASE_URL})"),
            Source::Dir(dir) => write!(f, "the mirror folder {}", dir.display()),
            Source::Url(url) => write!(f, "the mirror {url}"),
        }
    }
}

/// What to fetch, from where, to where.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The folder that receives the set folders (default [`DEFAULT_DEST`]).
    pub dest: PathBuf,
    /// Where the archives come from (default: [`Source::Official`]).
    pub source: Source,
    /// The sets to fetch (default: [`OmniglotSet::STANDARD`]).
    pub sets: Vec<OmniglotSet>,
    /// Fetch and replace sets even when they are present and verified.
    pub force: bool,
    /// Draw progress bars on stderr (indicatif hides them when it is not a terminal).
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            dest: PathBuf::from(DEFAULT_DEST),
            source: Source::Official,
            sets: OmniglotSet::STANDARD.to_vec(),
            force: false,
            progress: true,
        }
    }
}

/// What [`fetch`] did for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    /// The set was already present and verified: nothing was done.
    AlreadyPresent,
    /// The set was fetched from `from` (a URL or file), verified and installed.
    Fetched {
        /// The archive's URL or path.
        from: String,
    },
}

/// The result of [`fetch`] for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    /// Which set.
    pub set: OmniglotSet,
    /// Where it is now (`<dest>/<folder>`).
    pub path: PathBuf,
    /// What was done.
    pub outcome: SetOutcome,
    /// Number of files verified.
    pub file_count: usize,
    /// Verified content digest.
    pub digest: String,
}

/// The result of [`fetch`]: one entry per requested set, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchReport {
    /// Per-set results.
    pub sets: Vec<SetReport>,
}

impl FetchReport {
    /// True when every set was already present and verified.
    pub fn nothing_done(&self) -> bool {
        self.sets
            .iter()
            .all(|s| s.outcome == SetOutcome::AlreadyPresent)
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.sets.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &s.outcome {
                SetOutcome::AlreadyPresent => write!(
                    f,
                    "{}: already present and verified ({} files), nothing to do",
                    s.path.display(),
                    s.file_count
                )?,
                SetOutcome::Fetched { from } => write!(
                    f,
                    "{}: fetched from {from} and verified ({} files)",
                    s.path.display(),
                    s.file_count
                )?,
            }
        }
        Ok(())
    }
}

/// Cheap check that `set` is installed in `dest`: its folder exists and holds a
/// [`VERIFIED_MARKER`] with the set's published digest. Files are not re-hashed.
pub fn is_present(dest: &Path, set: OmniglotSet) -> bool {
    let marker = dest.join(set.folder()).join(VERIFIED_MARKER);
    fs::read_to_string(marker).is_ok_and(|m| m.trim() == set.content_digest())
}

/// Fetches, verifies and installs the requested sets (see the [module](self) docs).
///
/// A set already present is re-verified by its content digest (cheap: about 0.2 s for
/// the 19,280 files of `images_background` on two cores with a warm cache) and left
/// alone when it matches, unless `force` is set; one that does not verify is fetched
/// again and replaced. Use [`is_present`] for an instant check that trusts the marker.
pub fn fetch(options: &FetchOptions) -> Result<FetchReport, FetchError> {
    let dest = &options.dest;
    fs::create_dir_all(dest).map_err(|e| FetchError::io("create", dest, e))?;
    remove_stale_temporaries(dest);
    let mut report = FetchReport::default();
    for &set in &options.sets {
        report.sets.push(fetch_set(options, set)?);
    }
    Ok(report)
}

/// Makes sure `sets` are present in `dest` (by the cheap [`is_present`] check). Missing
/// sets are fetched from `source` when `allow_download` is true, and are an error
/// ([`FetchError::NotPresent`], which says how to get them) otherwise.
pub fn ensure(
    dest: &Path,
    sets: &[OmniglotSet],
    source: &Source,
    allow_download: bool,
    progress: bool,
) -> Result<(), FetchError> {
    let missing: Vec<OmniglotSet> = sets
        .iter()
        .copied()
        .filter(|&s| !is_present(dest, s))
        .collect();
    let Some(&first) = missing.first() else {
        return Ok(());
    };
    if !allow_download {
        return Err(FetchError::NotPresent {
            set: first,
            dest: dest.to_path_buf(),
        });
    }
    tracing::info!(
        "data set not found in {}: fetching from {source}",
        dest.display()
    );
    fetch(&FetchOptions {
        dest: dest.to_path_buf(),
        source: source.clone(),
        sets: missing,
        force: false,
        progress,
    })?;
    Ok(())
}

fn fetch_set(options: &FetchOptions, set: OmniglotSet) -> Result<SetReport, FetchError> {
    let dest = &options.dest;
    let target = dest.join(set.folder());
    let report = |outcome, digest: SetDigest| SetReport {
        set,
        path: target.clone(),
        outcome,
        file_count: digest.file_count,
        digest: digest.digest,
    };

    // Whether a copy was there to begin with (forced, or not verifying): only then is an
    // existing folder replaced at install time, so that a set installed meanwhile by
    // another process is never pulled from under its readers.
    let replace = target.exists();
    if replace && !options.force {
        let found = digest_set(dest, set)?;
        if found.matches(set) {
            if !is_present(dest, set) {
                write_marker(&target, set)?;
            }
            tracing::info!(
                "{} is present and verified ({} files): nothing to do",
                target.display(),
                found.file_count
            );
            return Ok(report(SetOutcome::AlreadyPresent, found));
        }
        tracing::warn!(
            "{} exists but does not verify ({} files, digest {}): fetching it again",
            target.display(),
            found.file_count,
            found.digest
        );
    }

    let location = options.source.location(set);
    tracing::info!("fetching {set} from {location}");
    let n = next_id();
    let pid = std::process::id();

    // The archive: a file of the mirror folder, or a download into the destination.
    let mut _download_guard = None;
    let zip_path = match &options.source {
        Source::Dir(dir) => {
            let path = dir.join(set.zip_name());
            if !path.is_file() {
                return Err(FetchError::MissingInMirror {
                    dir: dir.clone(),
                    path,
                });
            }
            path
        }
        Source::Official | Source::Url(_) => {
            let part = dest.join(format!(".{}-{pid}-{n}.part", set.zip_name()));
            _download_guard = Some(RemoveOnDrop(part.clone()));
            let expected = options.source.archive_checksum(set);
            download(&location, &part, expected.as_ref(), options.progress)?;
            part
        }
    };

    let tmp = dest.join(format!(".tmp-{}-{pid}-{n}", set.folder()));
    let _tmp_guard = RemoveOnDrop(tmp.clone());
    // `extract` creates the folder, after checking every entry name. For an image set
    // it also writes the pack that loading decodes from (see `crate::archive`).
    let pack_path = tmp.join(ARCHIVE_FILE);
    let mut pack = if set.zip_has_top_folder() {
        fs::create_dir_all(&tmp).map_err(|e| FetchError::io("create", &tmp, e))?;
        let file =
            fs::File::create(&pack_path).map_err(|e| FetchError::io("create", &pack_path, e))?;
        Some(zip::ZipWriter::new(std::io::BufWriter::new(file)))
    } else {
        None
    };
    let pack_arg = pack.as_mut().map(|p| (p, pack_path.as_path()));
    extract::extract(&zip_path, &location, &tmp, set, options.progress, pack_arg)?;
    let found = digest_set(&tmp, set)?;
    if !found.matches(set) {
        return Err(FetchError::ContentMismatch {
            set,
            zip: location,
            expected: set.content_digest().to_owned(),
            actual: found.digest,
            expected_files: set.file_count(),
            actual_files: found.file_count,
        });
    }
    let staged = tmp.join(set.folder());
    write_marker(&staged, set)?;
    if let Some(pack) = pack {
        install_pack(pack, &pack_path, &staged, set)?;
    }

    // Install: move a previous (unverified or forced) copy aside, then rename.
    let _old_guard;
    if !replace && is_present(dest, set) {
        tracing::info!(
            "{} was installed by another process meanwhile",
            target.display()
        );
        return Ok(report(SetOutcome::AlreadyPresent, found));
    }
    if target.exists() {
        let old = dest.join(format!(".old-{}-{pid}-{n}", set.folder()));
        _old_guard = RemoveOnDrop(old.clone());
        fs::rename(&target, &old).map_err(|e| FetchError::io("move aside", &target, e))?;
    }
    match fs::rename(&staged, &target) {
        Ok(()) => {}
        // Another process installed the set in the meantime.
        Err(_) if is_present(dest, set) => {
            tracing::info!(
                "{} was installed by another process meanwhile",
                target.display()
            );
            return Ok(report(SetOutcome::AlreadyPresent, found));
        }
        Err(e) => return Err(FetchError::io("install", &target, e)),
    }
    tracing::info!(
        "{} fetched and verified ({} files)",
        target.display(),
        found.file_count
    );
    Ok(report(SetOutcome::Fetched { from: location }, found))
}

/// Finishes the pack [`extract`] wrote beside a verified image set, moves it into the
/// set's folder and writes its marker (see [`crate::archive`]).
fn install_pack(
    pack: extract::Pack,
    pack_path: &Path,
    staged: &Path,
    set: OmniglotSet,
) -> Result<(), FetchError> {
    let io_error = |e: std::io::Error| FetchError::io("write", pack_path, e);
    let writer = pack
        .finish()
        .map_err(|e| io_error(std::io::Error::other(e)))?;
    let file = writer.into_inner().map_err(|e| io_error(e.into_error()))?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    let kept = staged.join(ARCHIVE_FILE);
    fs::rename(pack_path, &kept).map_err(|e| FetchError::io("move", pack_path, e))?;
    let bytes = fs::read(&kept).map_err(|e| FetchError::io("read", &kept, e))?;
    let marker = marker_text(&bytes, set.folder()).map_err(|e| {
        io_error(std::io::Error::other(format!(
            "the pack just written is not a readable zip: {e}"
        )))
    })?;
    let path = staged.join(ARCHIVE_MARKER);
    fs::write(&path, marker).map_err(|e| FetchError::io("write", &path, e))
}

fn write_marker(folder: &Path, set: OmniglotSet) -> Result<(), FetchError> {
    let marker = folder.join(VERIFIED_MARKER);
    fs::write(&marker, format!("{}\n", set.content_digest()))
        .map_err(|e| FetchError::io("write", &marker, e))
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Removes a file or folder when dropped (best effort).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(&self.0);
            }
            Ok(_) => {
                let _ = fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

/// Removes temporaries (`.tmp-*`, `.old-*`, `.*.part`) left in `dest` by processes that
/// were killed. Only on systems with `/proc`, where a dead owner can be recognised.
fn remove_stale_temporaries(dest: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dest) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with('.') {
            continue;
        }
        let stem = name.strip_suffix(".part").unwrap_or(name);
        let mut parts = stem.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let ours = prefix.starts_with(".tmp-")
            || prefix.starts_with(".old-")
            || (name.ends_with(".part") && prefix.ends_with(".zip"));
        if !ours || n.parse::<u64>().is_err() {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!("removing stale temporary {}", entry.path().display());
            drop(RemoveOnDrop(entry.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_strings_are_parsed() {
        assert_eq!(
            Source::parse_mirror("https://example.org/og"),
            Source::Url("https://example.org/og".into())
        );
        assert_eq!(
            Source::parse_mirror("HTTP://example.org"),
            Source::Url("HTTP://example.org".into())
        );
        assert_eq!(
            Source::parse_mirror("../shared/omniglot"),
            Source::Dir("../shared/omniglot".into())
        );
        assert_eq!(
            Source::resolve(Some("/m")),
            Source::Dir(PathBuf::from("/m"))
        );
        // No mirror (or an empty one) is the official source, whatever the
        // environment says: only the binaries read it.
        assert_eq!(Source::resolve(None), Source::Official);
        assert_eq!(Source::resolve(Some("")), Source::Official);
    }

    #[test]
    fn locations() {
        let set = OmniglotSet::AllRuns;
        assert_eq!(
            Source::Official.location(set),
            format!("{OFFICIAL_BASE_URL}one-shot-classification/all_runs.zip")
        );
        assert_eq!(
            Source::Url("http://h/x/".into()).location(set),
            "http://h/x/all_runs.zip"
        );
        assert_eq!(Source::Dir("/m".into()).location(set), "/m/all_runs.zip");
        assert!(Source::Official.archive_checksum(set).is_some());
        assert!(
            Source::Url("http://h".into())
                .archive_checksum(set)
                .is_none()
        );
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("siamese-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // pid 0x7fffffff is never alive; our own pid is.
        let dead = dir.join(".tmp-all_runs-2147483647-0");
        let alive = dir.join(format!(".tmp-all_runs-{}-0", std::process::id()));
        let part = dir.join(".all_runs.zip-2147483647-3.part");
        let other = dir.join(".keep-me");
        fs::create_dir_all(&dead).unwrap();
        fs::create_dir_all(&alive).unwrap();
        fs::write(&part, b"x").unwrap();
        fs::write(&other, b"x").unwrap();
        remove_stale_temporaries(&dir);
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists());
            assert!(!part.exists());
        }
        assert!(alive.exists());
        assert!(other.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
