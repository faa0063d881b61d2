//! The index of an image set (alphabet → character → drawer) and loading it into
//! memory.
//!
//! An Omniglot image set is laid out as `<set>/<alphabet>/<characterNN>/NNNN_DD.png`,
//! where `DD` (01–20) numbers the person who drew it. Alphabets and characters are
//! kept in bytewise-sorted order of their folder names, so "the first ten alphabets"
//! means the same thing on every machine.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::DataError;
use crate::archive::{ArchiveLoadError, DecodeSource, SetArchive};
use crate::image::{GrayImage, load_png};

/// An alphabet and the range of its characters in [`DatasetIndex::characters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alphabet {
    pub name: String,
    pub characters: Range<usize>,
}

/// A character and the range of its images in [`DatasetIndex::images`], which are
/// sorted by drawer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Character {
    /// Folder name, e.g. `character07`.
    pub name: String,
    pub alphabet: usize,
    pub images: Range<usize>,
}

/// One image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    pub path: PathBuf,
    pub character: usize,
    /// The `DD` of `NNNN_DD.png`: who drew it (1–20 in Omniglot).
    pub drawer: u8,
}

/// Sizes of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub alphabets: usize,
    pub characters: usize,
    pub images: usize,
}

/// Which part of a set to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlphabetSelection {
    All,
    /// The first `n` alphabets in sorted order.
    First(usize),
    /// The last `n` alphabets in sorted order.
    Last(usize),
    /// Alphabets by name.
    Named(Vec<String>),
}

/// The structure of an image set: alphabets, characters and image files, each
/// contiguous and sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetIndex {
    root: PathBuf,
    alphabets: Vec<Alphabet>,
    characters: Vec<Character>,
    images: Vec<ImageEntry>,
}

impl DatasetIndex {
    /// Scans a set folder such as `data/omniglot/images_background`. Only `.png` files
    /// count; any other file or a PNG whose name is not `NNNN_DD.png` is an error that
    /// names it, as is an empty set.
    pub fn scan(root: &Path) -> Result<Self, DataError> {
        let mut index = DatasetIndex {
            root: root.to_path_buf(),
            alphabets: Vec::new(),
            characters: Vec::new(),
            images: Vec::new(),
        };
        for (alphabet_name, alphabet_dir) in sorted_subdirs(root)? {
            let alphabet = index.alphabets.len();
            let first_char = index.characters.len();
            for (char_name, char_dir) in sorted_subdirs(&alphabet_dir)? {
                let character = index.characters.len();
                let first_image = index.images.len();
                let mut files = sorted_entries(&char_dir)?;
                files.retain(|(name, path)| name.ends_with(".png") && path.is_file());
                for (name, path) in files {
                    let drawer = parse_drawer(&name).ok_or_else(|| DataError::Layout {
                        path: path.clone(),
                        reason: "expected an image named NNNN_DD.png (DD = drawer)".into(),
                    })?;
                    index.images.push(ImageEntry {
                        path,
                        character,
                        drawer,
                    });
                }
                let images = &mut index.images[first_image..];
                images.sort_by_key(|e| e.drawer);
                if images.is_empty() {
                    return Err(DataError::Layout {
                        path: char_dir,
                        reason: "character folder holds no PNG images".into(),
                    });
                }
                index.characters.push(Character {
                    name: char_name,
                    alphabet,
                    images: first_image..index.images.len(),
                });
            }
            index.alphabets.push(Alphabet {
                name: alphabet_name,
                characters: first_char..index.characters.len(),
            });
        }
        if index.images.is_empty() {
            return Err(DataError::Layout {
                path: root.to_path_buf(),
                reason: "no images found: expected <alphabet>/<character>/NNNN_DD.png".into(),
            });
        }
        Ok(index)
    }

    /// The set folder this index was scanned from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn alphabets(&self) -> &[Alphabet] {
        &self.alphabets
    }

    pub fn characters(&self) -> &[Character] {
        &self.characters
    }

    pub fn images(&self) -> &[ImageEntry] {
        &self.images
    }

    pub fn counts(&self) -> Counts {
        Counts {
            alphabets: self.alphabets.len(),
            characters: self.characters.len(),
            images: self.images.len(),
        }
    }

    /// The alphabet of a character.
    pub fn alphabet_of(&self, character: usize) -> &Alphabet {
        &self.alphabets[self.characters[character].alphabet]
    }

    /// Indices (into [`Self::images`]) of a character's images, sorted by drawer.
    pub fn images_of(&self, character: usize) -> Range<usize> {
        self.characters[character].images.clone()
    }

    /// The image of `character` drawn by `drawer`, if any.
    pub fn image_by(&self, character: usize, drawer: u8) -> Option<usize> {
        self.images_of(character)
            .find(|&i| self.images[i].drawer == drawer)
    }

    /// The drawers that appear anywhere in the index, sorted.
    pub fn drawers(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for e in &self.images {
            seen[usize::from(e.drawer)] = true;
        }
        (0..=255u8).filter(|&d| seen[usize::from(d)]).collect()
    }

    /// A new index holding the selected alphabets and, of them, only the images drawn
    /// by the given drawers. Characters left without images are dropped. An empty
    /// result is an error naming what was asked for.
    pub fn select(
        &self,
        alphabets: &AlphabetSelection,
        drawers: RangeInclusive<u8>,
    ) -> Result<Self, DataError> {
        let n = self.alphabets.len();
        let keep_alphabet: Vec<bool> = match alphabets {
            AlphabetSelection::All => vec![true; n],
            AlphabetSelection::First(k) => (0..n).map(|i| i < *k).collect(),
            AlphabetSelection::Last(k) => (0..n).map(|i| i + k >= n).collect(),
            AlphabetSelection::Named(names) => {
                if let Some(missing) = names
                    .iter()
                    .find(|name| !self.alphabets.iter().any(|a| &a.name == *name))
                {
                    return Err(DataError::Invalid(format!(
                        "alphabet {missing:?} is not in {}",
                        self.root.display()
                    )));
                }
                self.alphabets
                    .iter()
                    .map(|a| names.contains(&a.name))
                    .collect()
            }
        };
        let mut out = DatasetIndex {
            root: self.root.clone(),
            alphabets: Vec::new(),
            characters: Vec::new(),
            images: Vec::new(),
        };
        for (a, alphabet) in self.alphabets.iter().enumerate() {
            if !keep_alphabet[a] {
                continue;
            }
            let new_alphabet = out.alphabets.len();
            let first_char = out.characters.len();
            for c in alphabet.characters.clone() {
                let first_image = out.images.len();
                let character = out.characters.len();
                out.images.extend(
                    self.images[self.characters[c].images.clone()]
                        .iter()
                        .filter(|e| drawers.contains(&e.drawer))
                        .map(|e| ImageEntry {
                            character,
                            ..e.clone()
                        }),
                );
                if out.images.len() > first_image {
                    out.characters.push(Character {
                        name: self.characters[c].name.clone(),
                        alphabet: new_alphabet,
                        images: first_image..out.images.len(),
                    });
                }
            }
            if out.characters.len() > first_char {
                out.alphabets.push(Alphabet {
                    name: alphabet.name.clone(),
                    characters: first_char..out.characters.len(),
                });
            }
        }
        if out.images.is_empty() {
            return Err(DataError::Invalid(format!(
                "no images of {} match alphabets {alphabets:?} and drawers {}–{}",
                self.root.display(),
                drawers.start(),
                drawers.end()
            )));
        }
        Ok(out)
    }

    /// Decodes every image of the index into memory, in parallel: from the set's
    /// verified archive when its folder holds one (see [`crate::archive`]; the
    /// fetcher keeps it), else file by file. Both give the same images.
    pub fn load(self) -> Result<Dataset, DataError> {
        self.load_reporting().map(|(data, _)| data)
    }

    /// [`Self::load`], also saying where the images came from.
    pub fn load_reporting(self) -> Result<(Dataset, DecodeSource), DataError> {
        let why = match SetArchive::open(&self.root) {
            Ok(None) => None,
            Ok(Some(archive)) => match archive.decode(&self.root, &self.images) {
                Ok(pixels) => {
                    let data = Dataset {
                        index: self,
                        pixels,
                    };
                    return Ok((data, DecodeSource::Archive));
                }
                Err(ArchiveLoadError::Image(e)) => return Err(e),
                Err(ArchiveLoadError::Unusable(why)) => Some(why),
            },
            Err(why) => Some(why),
        };
        if let Some(why) = why {
            tracing::warn!("{why}: reading the image files instead");
        }
        self.load_files().map(|data| (data, DecodeSource::Files))
    }

    /// Decodes every image of the index from its own file (never from the archive),
    /// in parallel.
    pub fn load_files(self) -> Result<Dataset, DataError> {
        // Each file read and decoded in one go (reading them all first, to size a
        // shared block as the archive path does, measured ~10% slower).
        let pixels = self
            .images
            .par_iter()
            .map(|e| load_png(&e.path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dataset {
            index: self,
            pixels,
        })
    }
}

/// An index with all its images decoded (ink = 255), in the order of
/// [`DatasetIndex::images`].
#[derive(Debug, Clone)]
pub struct Dataset {
    index: DatasetIndex,
    pixels: Vec<GrayImage>,
}

impl Dataset {
    /// A data set assembled in memory (for tests and synthetic data): `images[i]`
    /// belongs to `index.images()[i]`.
    pub fn from_parts(index: DatasetIndex, pixels: Vec<GrayImage>) -> Result<Self, DataError> {
        if index.images.len() != pixels.len() {
            return Err(DataError::Invalid(format!(
                "{} index entries but {} images",
                index.images.len(),
                pixels.len()
            )));
        }
        Ok(Dataset { index, pixels })
    }

    pub fn index(&self) -> &DatasetIndex {
        &self.index
    }

    /// The decoded image with the given index.
    pub fn image(&self, i: usize) -> &GrayImage {
        &self.pixels[i]
    }

    pub fn images(&self) -> &[GrayImage] {
        &self.pixels
    }

    pub fn len(&self) -> usize {
        self.pixels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The character an image shows.
    pub fn character_of(&self, i: usize) -> usize {
        self.index.images[i].character
    }

    /// The same data set with every image shrunk to `side × side`
    /// ([`GrayImage::shrink_to`]: block means for a whole factor, area resampling
    /// otherwise), in parallel; an error names the first image that cannot be (not
    /// square, or smaller than `side`).
    pub fn shrink_to(&self, side: usize) -> Result<Dataset, DataError> {
        let pixels = self
            .pixels
            .par_iter()
            .zip(&self.index.images)
            .map(|(image, entry)| {
                image.shrink_to(side).ok_or_else(|| {
                    DataError::Invalid(format!(
                        "{} is {}×{}, which does not shrink to {side}×{side} (it must be \
                         square and at least {side} pixels wide)",
                        entry.path.display(),
                        image.width(),
                        image.height()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dataset {
            index: self.index.clone(),
            pixels,
        })
    }
}

impl DatasetIndex {
    /// An index built in memory: `characters[a]` lists, for alphabet `a`, each
    /// character's images as (drawer) values; paths are synthetic. For tests of
    /// samplers without files.
    pub fn synthetic(alphabets: &[Vec<Vec<u8>>]) -> Self {
        let mut index = DatasetIndex {
            root: PathBuf::from("<memory>"),
            alphabets: Vec::new(),
            characters: Vec::new(),
            images: Vec::new(),
        };
        for (a, chars) in alphabets.iter().enumerate() {
            let first_char = index.characters.len();
            for (c, drawers) in chars.iter().enumerate() {
                let character = index.characters.len();
                let first_image = index.images.len();
                for &drawer in drawers {
                    index.images.push(ImageEntry {
                        path: PathBuf::from(format!(
                            "a{a:02}/character{:02}/{drawer:02}.png",
                            c + 1
                        )),
                        character,
                        drawer,
                    });
                }
                index.characters.push(Character {
                    name: format!("character{:02}", c + 1),
                    alphabet: a,
                    images: first_image..index.images.len(),
                });
            }
            index.alphabets.push(Alphabet {
                name: format!("alphabet{a:02}"),
                characters: first_char..index.characters.len(),
            });
        }
        index
    }
}

/// `NNNN_DD.png` → `DD`.
fn parse_drawer(file_name: &str) -> Option<u8> {
    let stem = file_name.strip_suffix(".png")?;
    let (number, drawer) = stem.rsplit_once('_')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if drawer.is_empty() || !drawer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    drawer.parse().ok()
}

/// Entries of a folder as (file name, path), sorted bytewise by name. Names that are
/// not UTF-8 are an error naming the path.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| DataError::Layout {
                path: path.clone(),
                reason: "file name is not valid UTF-8".into(),
            })?;
        if name.starts_with('.') {
            continue;
        }
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut entries = sorted_entries(dir)?;
    entries.retain(|(_, path)| path.is_dir());
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawer_is_parsed_from_file_name() {
        assert_eq!(parse_drawer("0965_01.png"), Some(1));
        assert_eq!(parse_drawer("0965_20.png"), Some(20));
        assert_eq!(parse_drawer("0965.png"), None);
        assert_eq!(parse_drawer("abc_01.png"), None);
        assert_eq!(parse_drawer("0965_xx.png"), None);
    }

    #[test]
    fn select_keeps_alphabets_and_drawers() {
        let idx = DatasetIndex::synthetic(&[
            vec![vec![1, 2, 3], vec![1, 3]],
            vec![vec![2]],
            vec![vec![1, 2], vec![3]],
        ]);
        assert_eq!(idx.counts().images, 9);
        let last = idx.select(&AlphabetSelection::Last(2), 2..=3).unwrap();
        assert_eq!(
            last.counts(),
            Counts {
                alphabets: 2,
                characters: 3,
                images: 3
            }
        );
        assert_eq!(last.alphabets()[0].name, "alphabet01");
        for (i, e) in last.images().iter().enumerate() {
            assert!(last.images_of(e.character).contains(&i));
            assert!((2..=3).contains(&e.drawer));
        }
        let first = idx.select(&AlphabetSelection::First(1), 1..=1).unwrap();
        assert_eq!(first.counts().images, 2);
        assert!(idx.select(&AlphabetSelection::First(1), 5..=9).is_err());
        assert!(
            idx.select(&AlphabetSelection::Named(vec!["nope".into()]), 1..=20)
                .is_err()
        );
    }
}
