//! Safe extraction of one archive into a (temporary) folder.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use zip::ZipArchive;

use super::FetchError;
use crate::sets::OmniglotSet;

/// Largest entry we accept (Omniglot's largest file is a few kB).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// Why an entry name is unsafe to extract, if it is: absolute paths, drive letters,
/// `..` components and NUL bytes are all refused (`\` counts as a separator too).
pub fn unsafe_entry_reason(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("NUL byte in the name");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Some("absolute path with a drive letter");
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Some("`..` path component");
    }
    None
}

/// The components of a safe entry name, without empty and `.` components.
fn components(name: &str) -> Vec<&str> {
    name.split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Where [`extract`] also copies every file it writes: an uncompressed zip (entries
/// named `<set folder>/<path in the set>`) for [`crate::archive`].
pub(crate) type Pack = zip::ZipWriter<std::io::BufWriter<File>>;

/// Extracts the archive at `zip_path` (named `zip_label` in errors) so that the set's
/// folder ends up at `root/<set folder>`. Every entry name is checked before anything
/// is written; entries of top-folder archives outside the set's folder are skipped.
/// Every file written is also added, stored, to `pack` when given (`pack_path` names
/// it in errors). Returns the number of files written.
pub(crate) fn extract(
    zip_path: &Path,
    zip_label: &str,
    root: &Path,
    set: OmniglotSet,
    progress: bool,
    mut pack: Option<(&mut Pack, &Path)>,
) -> Result<usize, FetchError> {
    let corrupt = |reason: String| FetchError::CorruptZip {
        zip: zip_label.to_owned(),
        reason,
    };
    let file = File::open(zip_path).map_err(|e| FetchError::io("open", zip_path, e))?;
    let mut archive = ZipArchive::new(BufReader::with_capacity(1 << 16, file))
        .map_err(|e| corrupt(e.to_string()))?;

    // Check every name before writing anything.
    for name in archive.file_names() {
        let name = name.map_err(|e| corrupt(e.to_string()))?;
        if let Some(reason) = unsafe_entry_reason(&name) {
            return Err(FetchError::UnsafeEntry {
                zip: zip_label.to_owned(),
                entry: name.into_owned(),
                reason,
            });
        }
    }

    let base = if set.zip_has_top_folder() {
        root.to_path_buf()
    } else {
        root.join(set.folder())
    };
    fs::create_dir_all(&base).map_err(|e| FetchError::io("create", &base, e))?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    made.insert(base.clone());

    let bar = entries_bar(archive.len() as u64, set, progress);
    let mut written = 0usize;
    let mut buf = Vec::new();
    for i in 0..archive.len() {
        bar.inc(1);
        let mut entry = archive.by_index(i).map_err(|e| corrupt(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| corrupt(e.to_string()))?
            .into_owned();
        if let Some(reason) = unsafe_entry_reason(&name) {
            return Err(FetchError::UnsafeEntry {
                zip: zip_label.to_owned(),
                entry: name,
                reason,
            });
        }
        if entry.is_symlink() {
            return Err(FetchError::UnsafeEntry {
                zip: zip_label.to_owned(),
                entry: name,
                reason: "symbolic link",
            });
        }
        let parts = components(&name);
        if parts.is_empty() {
            continue;
        }
        if set.zip_has_top_folder() && parts[0] != set.folder() {
            tracing::debug!("{zip_label}: skipping {name}, outside {}", set.folder());
            continue;
        }
        let path = parts.iter().fold(base.clone(), |p, c| p.join(c));
        if entry.is_dir() {
            if made.insert(path.clone()) {
                fs::create_dir_all(&path).map_err(|e| FetchError::io("create", &path, e))?;
            }
            continue;
        }
        if entry.size() > MAX_ENTRY_BYTES {
            return Err(corrupt(format!(
                "entry {name} claims {} bytes, more than any Omniglot file",
                entry.size()
            )));
        }
        buf.clear();
        (&mut entry)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| corrupt(format!("entry {name}: {e}")))?;
        if let Some(parent) = path.parent()
            && !made.contains(parent)
        {
            fs::create_dir_all(parent).map_err(|e| FetchError::io("create", parent, e))?;
            made.insert(parent.to_path_buf());
        }
        fs::write(&path, &buf).map_err(|e| FetchError::io("write", &path, e))?;
        if let Some((pack, pack_path)) = pack.as_mut() {
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            let pack_error = |e: std::io::Error| FetchError::io("write", *pack_path, e);
            let name = if set.zip_has_top_folder() {
                parts.join("/")
            } else {
                format!("{}/{}", set.folder(), parts.join("/"))
            };
            pack.start_file(name, stored)
                .map_err(|e| pack_error(std::io::Error::other(e)))?;
            std::io::Write::write_all(pack, &buf).map_err(pack_error)?;
        }
        written += 1;
    }
    bar.finish_and_clear();
    Ok(written)
}

fn entries_bar(len: u64, set: OmniglotSet, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} entries eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("extracting {}", set.folder()));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_checked() {
        assert_eq!(unsafe_entry_reason("images_background/a/b.png"), None);
        assert_eq!(unsafe_entry_reason("run01/"), None);
        assert!(unsafe_entry_reason("../evil.png").is_some());
        assert!(unsafe_entry_reason("a/../../evil.png").is_some());
        assert!(unsafe_entry_reason("a\\..\\evil.png").is_some());
        assert!(unsafe_entry_reason("/etc/passwd").is_some());
        assert!(unsafe_entry_reason("\\evil.png").is_some());
        assert!(unsafe_entry_reason("C:/evil.png").is_some());
        assert!(unsafe_entry_reason("a\0b").is_some());
        assert_eq!(components("./a//b/"), vec!["a", "b"]);
    }
}
