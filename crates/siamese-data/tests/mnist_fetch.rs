//! Fetching the MNIST test set: from the offline mirror folder and over HTTP, and every
//! failure mode (missing file, bad checksum, truncated gzip, an IDX header that does
//! not match its file), none of which may leave anything behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use siamese_data::fetch::mnist::{
    MnistFetchOptions, MnistOutcome, ensure_mnist, fetch_mnist, mnist_is_present,
};
use siamese_data::fetch::{FetchError, Source};
use siamese_data::mnist::{
    MNIST_TEST_FILES, MNIST_TEST_IMAGES_FILE, MNIST_TEST_LABELS_FILE, MnistSet,
};
use siamese_tests::mnist_mirror_dir;

fn options(dest: &Path, source: Source) -> MnistFetchOptions {
    MnistFetchOptions {
        dest: dest.to_path_buf(),
        source,
        force: false,
        progress: false,
    }
}

/// Everything in `dir` (names, sorted); empty when it does not exist.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(path).unwrap()),
        &mut out,
    )
    .unwrap();
    out
}

/// A mirror folder holding the real labels and, as the image file, `images` gzipped.
fn mirror_with_images(images: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        mnist_mirror_dir().join(MNIST_TEST_LABELS_FILE.gz_name),
        dir.path().join(MNIST_TEST_LABELS_FILE.gz_name),
    )
    .unwrap();
    fs::write(
        dir.path().join(MNIST_TEST_IMAGES_FILE.gz_name),
        gzip(images),
    )
    .unwrap();
    dir
}

fn real_images() -> Vec<u8> {
    gunzip(&mnist_mirror_dir().join(MNIST_TEST_IMAGES_FILE.gz_name))
}

#[test]
fn folder_mirror_fetch_verifies_loads_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("mnist");
    let opts = options(&dest, Source::Dir(mnist_mirror_dir()));
    match fetch_mnist(&opts).unwrap() {
        MnistOutcome::Fetched { from } => assert_eq!(from.len(), 2),
        other => panic!("{other:?}"),
    }
    assert!(mnist_is_present(&dest));
    assert_eq!(
        listing(&dest),
        [
            ".verified",
            MNIST_TEST_IMAGES_FILE.name,
            MNIST_TEST_LABELS_FILE.name
        ]
    );
    for f in &MNIST_TEST_FILES {
        assert_eq!(fs::metadata(dest.join(f.name)).unwrap().len(), f.size);
    }
    let set = MnistSet::load(&dest).unwrap();
    assert_eq!(set.len(), 10_000);
    assert_eq!(
        set.class_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // MNIST is white on black: the ink convention already; corners are background.
    assert!(
        set.images
            .iter()
            .all(|i| i.get(0, 0) == 0 && i.get(27, 27) == 0)
    );
    assert_eq!(fetch_mnist(&opts).unwrap(), MnistOutcome::AlreadyPresent);
    // A damaged file is noticed and fetched again.
    let labels = dest.join(MNIST_TEST_LABELS_FILE.name);
    let mut bytes = fs::read(&labels).unwrap();
    bytes[100] ^= 1;
    fs::write(&labels, &bytes).unwrap();
    assert!(matches!(
        fetch_mnist(&opts).unwrap(),
        MnistOutcome::Fetched { .. }
    ));
    assert!(mnist_is_present(&dest));
    // ensure: present, nothing to do; absent without download, a clear error.
    ensure_mnist(&dest, &Source::Dir("/nowhere".into()), false, false).unwrap();
    let empty = tmp.path().join("empty");
    let err = ensure_mnist(&empty, &Source::Official, false, false).unwrap_err();
    assert!(matches!(err, FetchError::MnistNotPresent { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cargo xtask fetch-mnist") && msg.contains("empty"),
        "{msg}"
    );
}

#[test]
fn checksum_failure_leaves_nothing_behind() {
    // A valid IDX file of the right size whose pixels differ from MNIST's.
    let mut images = real_images();
    images[5_000] ^= 0x40;
    let mirror = mirror_with_images(&images);
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(mirror.path().into()))).unwrap_err();
    assert!(
        matches!(err, FetchError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains(MNIST_TEST_IMAGES_FILE.md5),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn truncated_gzip_is_named_and_leaves_nothing() {
    let mirror = mirror_with_images(b"");
    let gz = fs::read(mnist_mirror_dir().join(MNIST_TEST_IMAGES_FILE.gz_name)).unwrap();
    let path = mirror.path().join(MNIST_TEST_IMAGES_FILE.gz_name);
    fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(mirror.path().into()))).unwrap_err();
    assert!(matches!(err, FetchError::CorruptGzip { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn a_header_that_does_not_match_the_file_is_refused() {
    let images = real_images();
    let tmp = tempfile::tempdir().unwrap();
    // Counts that promise more images than the file holds.
    let mut wrong = images.clone();
    wrong[4..8].copy_from_slice(&10_001u32.to_be_bytes());
    let mirror = mirror_with_images(&wrong);
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(mirror.path().into()))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("10001 × 28 × 28"),
        "{msg}"
    );
    // Dimensions of 32 × 28: the same count, another length.
    let mut wrong = images.clone();
    wrong[8..12].copy_from_slice(&32u32.to_be_bytes());
    let mirror = mirror_with_images(&wrong);
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(mirror.path().into()))).unwrap_err();
    assert!(err.to_string().contains("10000 × 32 × 28"), "{err}");
    // The file cut short after decompression (a valid gzip of fewer bytes).
    let mirror = mirror_with_images(&images[..images.len() - 784]);
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(mirror.path().into()))).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn a_mirror_without_the_files_says_what_it_needs() {
    let empty = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_mnist(&options(tmp.path(), Source::Dir(empty.path().into()))).unwrap_err();
    assert!(
        matches!(err, FetchError::MnistMissingInMirror { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("MNIST_MIRROR"),
        "{msg}"
    );
    assert!(listing(tmp.path()).is_empty());
}

/// A loopback server: `/good/<file>` serves the mirror's files, anything else 404.
fn serve_mirror() -> String {
    let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let mirror: PathBuf = mnist_mirror_dir();
    std::thread::spawn(move || {
        while let Ok(request) = server.recv() {
            let name = request.url().trim_start_matches("/good/").to_owned();
            let file = mirror.join(&name);
            let ok = request.url().starts_with("/good/") && !name.contains('/') && file.is_file();
            let _ = if ok {
                request.respond(tiny_http::Response::from_data(fs::read(&file).unwrap()))
            } else {
                request.respond(tiny_http::Response::from_string("no").with_status_code(404))
            };
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn http_fetch_and_http_errors() {
    let base = serve_mirror();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    let opts = options(&dest, Source::Url(format!("{base}/good/")));
    assert!(matches!(
        fetch_mnist(&opts).unwrap(),
        MnistOutcome::Fetched { .. }
    ));
    assert!(mnist_is_present(&dest));
    assert_eq!(
        listing(&dest),
        [
            ".verified",
            MNIST_TEST_IMAGES_FILE.name,
            MNIST_TEST_LABELS_FILE.name
        ]
    );

    let other = tmp.path().join("n");
    let err = fetch_mnist(&options(&other, Source::Url(format!("{base}/nowhere")))).unwrap_err();
    assert!(
        matches!(err, FetchError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("/nowhere/t10k-images-idx3-ubyte.gz") && msg.contains("MNIST_MIRROR"));
    assert!(listing(&other).is_empty(), "{:?}", listing(&other));
}
