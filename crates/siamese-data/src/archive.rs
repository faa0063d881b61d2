//! Decoding an image set straight from one archive file instead of 32,460 small ones.
//!
//! Reading Omniglot's small PNGs one file at a time costs a good part of loading in the
//! kernel (path look-up, open, read and close of each ~250-byte file). So while the
//! fetcher extracts an image set it also writes every extracted file, uncompressed
//! ("stored"), into a zip kept inside the set's folder ([`ARCHIVE_FILE`]), and installs
//! it with the set once the extracted files have matched the set's content digest,
//! together with a marker ([`ARCHIVE_MARKER`]) that pins it down: its size, the CRC-32
//! of its central directory (which lists every entry's name, size and CRC-32), and the
//! name of its top folder. Like the set's own `.verified` marker this guards against a
//! changed or damaged file, not against forgery. (The published zips are not used as
//! they are: their entries are deflated, and inflating a ~250-byte entry costs about
//! as much as the file read it saves.) [`crate::DatasetIndex::load`] reads the archive
//! once and checks and decodes its entries in parallel.
//!
//! The folder stays the reference: the index is always scanned from it, and the
//! archive is used only when the marker matches, every image of the index has an
//! entry, and every entry has its recorded size and CRC-32. Otherwise the images are
//! read from the files, with a warning saying why. Both paths give the same images in
//! the same order (a test checks it on real sets). Deflated entries are read too, so a
//! zip made by other tools works as well.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::DataError;
use crate::image::{GrayImage, decode_png_into, png_layout};
use crate::index::ImageEntry;
use crate::packed::decode_packed;

/// The archive kept inside a set's folder (hidden, so the index ignores it).
pub const ARCHIVE_FILE: &str = ".archive.zip";

/// The marker beside [`ARCHIVE_FILE`]: `<size> <CRC-32 of the central directory, hex>
/// <top folder>`.
pub const ARCHIVE_MARKER: &str = ".archive.verified";

/// Where the images of a load came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeSource {
    /// The set's archive ([`ARCHIVE_FILE`]).
    Archive,
    /// One PNG file at a time.
    Files,
}

impl DecodeSource {
    /// `"archive"` or `"files"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeSource::Archive => "archive",
            DecodeSource::Files => "files",
        }
    }
}

/// A problem with a zip archive (its layout or an entry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZipLayoutError(String);

fn layout(reason: impl Into<String>) -> ZipLayoutError {
    ZipLayoutError(reason.into())
}

/// One file of the archive, as its central directory describes it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    local_header: usize,
    compressed: usize,
    size: usize,
    crc32: u32,
    /// 0 = stored, 8 = deflated.
    method: u16,
}

/// The central directory of a zip: its byte range and its file entries by name.
struct CentralDirectory {
    range: std::ops::Range<usize>,
    entries: Vec<(String, Entry)>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ZipLayoutError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| layout("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ZipLayoutError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| layout("truncated"))
}

/// Parses the end-of-central-directory record and the central directory. Zip64,
/// multi-disk and encrypted archives are not supported (Omniglot's are none of
/// these).
fn central_directory(zip: &[u8]) -> Result<CentralDirectory, ZipLayoutError> {
    const EOCD: u32 = 0x0605_4b50;
    const CENTRAL: u32 = 0x0201_4b50;
    let lowest = zip.len().saturating_sub(22 + usize::from(u16::MAX));
    let eocd = (lowest..=zip.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(zip, i) == Ok(EOCD))
        .ok_or_else(|| layout("no end-of-central-directory record"))?;
    if u16_at(zip, eocd + 4)? != 0 || u16_at(zip, eocd + 6)? != 0 {
        return Err(layout("multi-disk archives are not supported"));
    }
    let count = u16_at(zip, eocd + 10)?;
    let size = u32_at(zip, eocd + 12)? as usize;
    let offset = u32_at(zip, eocd + 16)? as usize;
    if count == u16::MAX || offset == u32::MAX as usize {
        return Err(layout("zip64 archives are not supported"));
    }
    let range = offset..offset + size;
    if range.end > eocd {
        return Err(layout("central directory out of bounds"));
    }
    let mut entries = Vec::with_capacity(usize::from(count));
    let mut at = offset;
    for _ in 0..count {
        if u32_at(zip, at)? != CENTRAL {
            return Err(layout("bad central directory entry"));
        }
        let flags = u16_at(zip, at + 8)?;
        let method = u16_at(zip, at + 10)?;
        let crc32 = u32_at(zip, at + 16)?;
        let compressed = u32_at(zip, at + 20)? as usize;
        let size = u32_at(zip, at + 24)? as usize;
        let name_len = usize::from(u16_at(zip, at + 28)?);
        let extra_len = usize::from(u16_at(zip, at + 30)?);
        let comment_len = usize::from(u16_at(zip, at + 32)?);
        let local_header = u32_at(zip, at + 42)? as usize;
        let name = zip
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| layout("truncated central directory"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| layout("entry name is not UTF-8"))?
            .to_owned();
        if flags & 1 != 0 {
            return Err(layout(format!("entry {name} is encrypted")));
        }
        entries.push((
            name,
            Entry {
                local_header,
                compressed,
                size,
                crc32,
                method,
            },
        ));
        at += 46 + name_len + extra_len + comment_len;
    }
    if at != range.end {
        return Err(layout("central directory size does not match its entries"));
    }
    Ok(CentralDirectory { range, entries })
}

/// The marker of a verified archive: its size, the CRC-32 of its central directory
/// and the top folder whose files make up the set.
#[cfg(feature = "fetch")]
pub(crate) fn marker_text(zip: &[u8], top_folder: &str) -> Result<String, ZipLayoutError> {
    let cd = central_directory(zip)?;
    Ok(format!(
        "{} {:08x} {top_folder}\n",
        zip.len(),
        crc32(&zip[cd.range])
    ))
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A set's verified archive, read into memory, with the entries of its top folder
/// by their path relative to the set folder (`Alphabet/character01/0709_01.png`).
pub(crate) struct SetArchive {
    path: PathBuf,
    bytes: Vec<u8>,
    entries: HashMap<String, Entry>,
}

impl SetArchive {
    /// The archive of the set folder `root`, if it has one with a marker and the
    /// archive matches that marker. `Ok(None)` when there is none; a mismatch is an
    /// error saying why (the caller falls back to the files).
    pub(crate) fn open(root: &Path) -> Result<Option<SetArchive>, String> {
        let marker_path = root.join(ARCHIVE_MARKER);
        let path = root.join(ARCHIVE_FILE);
        let Ok(marker) = fs::read_to_string(&marker_path) else {
            return Ok(None);
        };
        let mut fields = marker.split_whitespace();
        let (Some(size), Some(digest), Some(top), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("{} is malformed", marker_path.display()));
        };
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if size.parse() != Ok(bytes.len()) {
            return Err(format!(
                "{} has {} bytes, its marker says {size}",
                path.display(),
                bytes.len()
            ));
        }
        let cd = central_directory(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if format!("{:08x}", crc32(&bytes[cd.range.clone()])) != digest {
            return Err(format!(
                "the central directory of {} does not match its marker",
                path.display()
            ));
        }
        let prefix = format!("{top}/");
        let entries = cd
            .entries
            .into_iter()
            .filter_map(|(name, e)| {
                let rel = name.strip_prefix(&prefix)?;
                (!rel.is_empty() && !rel.ends_with('/')).then(|| (rel.to_owned(), e))
            })
            .collect();
        Ok(Some(SetArchive {
            path,
            bytes,
            entries,
        }))
    }

    /// Decodes `images` (entries of an index scanned from `root`) from the archive,
    /// in parallel, in their order. An error says why the archive cannot serve them
    /// (a missing entry, a bad CRC-32, ...); decoding errors of valid entries are
    /// errors of the image as usual.
    pub(crate) fn decode(
        &self,
        root: &Path,
        images: &[ImageEntry],
    ) -> Result<Vec<GrayImage>, ArchiveLoadError> {
        let entries = images
            .iter()
            .map(|image| {
                let direct = root
                    .to_str()
                    .and_then(|root| image.path.to_str()?.strip_prefix(root)?.strip_prefix('/'));
                direct
                    .and_then(|rel| self.entries.get(rel).copied())
                    .or_else(|| {
                        let rel = relative_name(root, &image.path)?;
                        self.entries.get(&rel).copied()
                    })
                    .ok_or_else(|| {
                        ArchiveLoadError::Unusable(format!(
                            "{} has no entry for {}",
                            self.path.display(),
                            image.path.display()
                        ))
                    })
            })
            .collect::<Result<Vec<Entry>, _>>()?;
        decode_packed(
            images.len(),
            // Stored entries are the PNG itself; its header says the size.
            |i| match entries[i].method {
                0 => self.entry_data(&entries[i]).ok().and_then(png_layout),
                _ => None,
            },
            |i, slot| {
                ENTRY_SCRATCH.with_borrow_mut(|scratch| {
                    let image = &images[i];
                    let bytes = self.entry_bytes(&entries[i], scratch).map_err(|reason| {
                        ArchiveLoadError::Unusable(format!(
                            "{}, entry for {}: {reason}",
                            self.path.display(),
                            image.path.display()
                        ))
                    })?;
                    decode_png_into(bytes, &image.path, slot).map_err(ArchiveLoadError::Image)
                })
            },
        )
    }

    /// The raw (possibly deflated) data of one entry, found through its local header.
    fn entry_data(&self, e: &Entry) -> Result<&[u8], String> {
        const LOCAL: u32 = 0x0403_4b50;
        let zip = &self.bytes[..];
        let at = e.local_header;
        if u32_at(zip, at).map_err(|e| e.0)? != LOCAL {
            return Err("bad local header".into());
        }
        let name_len = usize::from(u16_at(zip, at + 26).map_err(|e| e.0)?);
        let extra_len = usize::from(u16_at(zip, at + 28).map_err(|e| e.0)?);
        let start = at + 30 + name_len + extra_len;
        zip.get(start..start + e.compressed)
            .ok_or_else(|| "entry data out of bounds".into())
    }

    /// The checked contents of one entry, inflated into `scratch` when deflated.
    fn entry_bytes<'a>(
        &'a self,
        e: &Entry,
        scratch: &'a mut EntryScratch,
    ) -> Result<&'a [u8], String> {
        let data = self.entry_data(e)?;
        let bytes: &[u8] = match e.method {
            0 => data,
            8 => {
                let EntryScratch { out, inflater } = scratch;
                out.clear();
                out.resize(e.size, 0);
                let inflater = inflater.get_or_insert_with(|| flate2::Decompress::new(false));
                inflater.reset(false);
                let status = inflater
                    .decompress(data, out, flate2::FlushDecompress::Finish)
                    .map_err(|err| format!("cannot inflate: {err}"))?;
                if status != flate2::Status::StreamEnd || inflater.total_out() != e.size as u64 {
                    return Err("inflates to another size than recorded".into());
                }
                out
            }
            other => return Err(format!("unsupported compression method {other}")),
        };
        if bytes.len() != e.size {
            return Err("size differs from the recorded one".into());
        }
        if crc32(bytes) != e.crc32 {
            return Err("CRC-32 mismatch".into());
        }
        Ok(bytes)
    }
}

/// Why [`SetArchive::decode`] failed.
pub(crate) enum ArchiveLoadError {
    /// The archive cannot serve the index (fall back to the files).
    Unusable(String),
    /// An image failed to decode.
    Image(DataError),
}

/// `path` relative to `root`, with `/` separators, if it lies under `root`.
fn relative_name(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut name = String::new();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return None;
        };
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(part.to_str()?);
    }
    Some(name)
}

/// Per-thread buffers for inflating entries.
#[derive(Default)]
struct EntryScratch {
    out: Vec<u8>,
    inflater: Option<flate2::Decompress>,
}

thread_local! {
    static ENTRY_SCRATCH: std::cell::RefCell<EntryScratch> =
        std::cell::RefCell::new(EntryScratch::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_use_slashes_and_stay_under_the_root() {
        let root = Path::new("/data/images_background");
        assert_eq!(
            relative_name(root, &root.join("Braille/character01/0001_01.png")).as_deref(),
            Some("Braille/character01/0001_01.png")
        );
        assert_eq!(relative_name(root, Path::new("/elsewhere/x.png")), None);
    }

    #[test]
    fn garbage_is_not_a_zip() {
        assert!(central_directory(b"not a zip at all, not even close").is_err());
        assert!(central_directory(b"").is_err());
    }
}
