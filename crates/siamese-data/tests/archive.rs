//! Loading an image set from the archive the fetcher writes into its folder gives
//! exactly what loading the extracted files gives; an archive that does not match its
//! marker or the folder is not used.

mod common;

use std::fs;
use std::path::Path;

use siamese_data::archive::{ARCHIVE_FILE, ARCHIVE_MARKER, DecodeSource};
use siamese_data::fetch::{FetchOptions, Source, fetch};
use siamese_data::image::{decode_png, decode_png_generic};
use siamese_data::index::DatasetIndex;
use siamese_data::{Dataset, OmniglotSet};

const SMALL: OmniglotSet = OmniglotSet::BackgroundSmall1;

/// Fetches the small background split from the mirror into a fresh folder.
fn fetched_small_set() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let options = FetchOptions {
        dest: tmp.path().to_path_buf(),
        source: Source::Dir(common::mirror_dir()),
        sets: vec![SMALL],
        force: false,
        progress: false,
    };
    fetch(&options).unwrap();
    let root = tmp.path().join(SMALL.folder());
    (tmp, root)
}

fn load(root: &Path) -> (Dataset, DecodeSource) {
    DatasetIndex::scan(root).unwrap().load_reporting().unwrap()
}

fn assert_same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.index(), b.index());
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        assert_eq!(
            a.image(i),
            b.image(i),
            "{}",
            a.index().images()[i].path.display()
        );
    }
}

#[test]
fn the_archive_gives_the_same_images_in_the_same_order_as_the_files() {
    let (_tmp, root) = fetched_small_set();
    assert!(root.join(ARCHIVE_FILE).is_file());
    assert!(root.join(ARCHIVE_MARKER).is_file());
    // Every file of the set, stored uncompressed, under the set's folder name.
    let mut zip = zip::ZipArchive::new(fs::File::open(root.join(ARCHIVE_FILE)).unwrap()).unwrap();
    assert_eq!(zip.len(), SMALL.file_count());
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        assert!(
            entry
                .name()
                .unwrap()
                .starts_with("images_background_small1/")
        );
    }
    let (from_archive, source) = load(&root);
    assert_eq!(source, DecodeSource::Archive);
    let from_files = DatasetIndex::scan(&root).unwrap().load_files().unwrap();
    assert_eq!(from_archive.len(), SMALL.file_count());
    assert_same(&from_archive, &from_files);
    // Loading from the archive puts the images into one shared block of memory.
    assert!(from_archive.images().iter().all(|i| i.is_shared()));

    // A selection (as the splits make) is served from the archive too.
    let part = DatasetIndex::scan(&root)
        .unwrap()
        .select(&siamese_data::index::AlphabetSelection::Last(2), 3..=7)
        .unwrap();
    let (a, source) = part.clone().load_reporting().unwrap();
    assert_eq!(source, DecodeSource::Archive);
    assert_same(&a, &part.load_files().unwrap());

    // The shared test data set (fetched by whichever version of the fetcher made
    // it, so with or without an archive) holds the same images.
    let extracted = common::extracted_dataset().join(SMALL.folder());
    let (shared, _) = load(&extracted);
    assert_eq!(shared.images(), from_archive.images());
}

#[test]
fn an_archive_that_does_not_match_is_not_used() {
    let (_tmp, root) = fetched_small_set();
    let want = DatasetIndex::scan(&root).unwrap().load_files().unwrap();
    let zip = root.join(ARCHIVE_FILE);
    let marker = root.join(ARCHIVE_MARKER);
    let good_zip = fs::read(&zip).unwrap();
    let good_marker = fs::read_to_string(&marker).unwrap();

    // A marker for another archive.
    fs::write(&marker, good_marker.replacen(char::is_numeric, "9", 1)).unwrap();
    let (got, source) = load(&root);
    assert_eq!(source, DecodeSource::Files);
    assert_same(&got, &want);
    fs::write(&marker, &good_marker).unwrap();
    assert_eq!(load(&root).1, DecodeSource::Archive);

    // Damaged entry data (same size, same central directory): caught by the CRC-32,
    // and the files are read instead.
    // The first PNG's local header comes before any central directory entry; its data
    // follows the name and the extra field.
    let mut damaged = good_zip.clone();
    let name_end = damaged.windows(4).position(|w| w == b".png").unwrap() + 4;
    let header = damaged[..name_end]
        .windows(4)
        .rposition(|w| w == b"PK\x03\x04")
        .unwrap();
    let u16_at = |i: usize| usize::from(u16::from_le_bytes([damaged[i], damaged[i + 1]]));
    let data = header + 30 + u16_at(header + 26) + u16_at(header + 28);
    assert_eq!(data - u16_at(header + 28), name_end);
    for b in &mut damaged[data + 10..data + 30] {
        *b ^= 0x5a;
    }
    fs::write(&zip, &damaged).unwrap();
    let (got, source) = load(&root);
    assert_eq!(source, DecodeSource::Files);
    assert_same(&got, &want);
    fs::write(&zip, &good_zip).unwrap();

    // An image in the folder that the archive lacks.
    let extra = root.join("Balinese/character01/9999_21.png");
    fs::copy(&want.index().images()[0].path, &extra).unwrap();
    let (got, source) = load(&root);
    assert_eq!(source, DecodeSource::Files);
    assert_eq!(got.len(), want.len() + 1);
    fs::remove_file(&extra).unwrap();

    // No archive at all.
    fs::remove_file(&zip).unwrap();
    let (got, source) = load(&root);
    assert_eq!(source, DecodeSource::Files);
    assert_same(&got, &want);
}

/// The direct PNG path gives what the `png` crate gives, on every Omniglot image.
#[test]
fn every_omniglot_png_decodes_as_with_the_png_crate() {
    let root = common::extracted_dataset();
    let mut checked = 0;
    for set in [OmniglotSet::Background, OmniglotSet::Evaluation] {
        let index = DatasetIndex::scan(&root.join(set.folder())).unwrap();
        // As a load decodes them too: from the archive (which the fetcher writes),
        // straight into their place in a shared block.
        let loaded = index.clone().load().unwrap();
        for (entry, in_block) in index.images().iter().zip(loaded.images()) {
            let bytes = fs::read(&entry.path).unwrap();
            let fast = decode_png(&bytes, &entry.path).unwrap();
            let generic = decode_png_generic(&bytes, &entry.path).unwrap();
            assert_eq!(fast, generic, "{}", entry.path.display());
            assert_eq!(in_block, &generic, "{}", entry.path.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 32_460);
}
