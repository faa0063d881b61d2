//! The MNIST test set (LeCun, Cortes & Burges), for Koch et al.'s cross-domain
//! experiment (2015, Table 3): 10-way one-shot classification of digits by a network
//! trained only on Omniglot.
//!
//! Only the 10,000-image test set is used. The fetcher ([`crate::fetch::mnist`])
//! installs its two files **uncompressed** in `data/mnist/` (the md5s of the
//! uncompressed bytes are what is checked: gzip wrappers differ between copies), and
//! [`MnistSet::load`] reads them. With the `candle-datasets` feature the files are
//! read by `candle_datasets::vision::mnist` after the IDX headers have been checked
//! here; without it by [`parse_idx_images`] and [`parse_idx_labels`]. Both give the
//! same pixels (tested).
//!
//! # Pixel convention
//! MNIST's bytes are already ink (0 = background, 255 = full ink), white digits on
//! black: the crate's convention, so they are taken as they are. A digit is centred
//! by its centre of mass in a 20×20 box inside the 28×28 image (a 4-pixel margin),
//! with strokes 2–3 pixels wide: several times thicker, relative to the image, than
//! Omniglot's strokes once shrunk to 28×28. See [`crate::user_image::Fit`] for how
//! digits are fitted to a network's input.

use std::path::{Path, PathBuf};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::sample::OneShotTask;
use crate::{DataError, GrayImage};

/// The default folder of the test set (relative to the current folder).
pub const MNIST_DEFAULT_DIR: &str = "data/mnist";
/// Environment variable naming a folder or HTTP(S) base that holds the `.gz` files.
pub const MNIST_MIRROR_ENV: &str = "MNIST_MIRROR";
/// Where the files are fetched from by default: the public copy that torchvision
/// downloads first (the original site often refuses downloads).
pub const MNIST_DEFAULT_BASE_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";

/// How digits are fitted to a network's input unless told otherwise: redrawn with
/// Omniglot's stroke width. MNIST's strokes are 1.7 times as wide as Omniglot's (9.0
/// against 5.35 ink pixels per skeleton pixel at 105×105); on a trial set kept apart
/// from the reported one (seed 101, 1,000 trials) the default preset's three networks
/// scored 64.4% (mean) with the digit as is, 66.9% placed like a character and 73.4%
/// with the strokes redrawn (see the README's MNIST section).
pub const MNIST_DEFAULT_FIT: crate::user_image::Fit = crate::user_image::Fit::Strokes;

/// Number of digit classes.
pub const MNIST_CLASSES: usize = 10;
/// Side of an MNIST image.
pub const MNIST_SIDE: usize = 28;
/// Images in the test set.
pub const MNIST_TEST_IMAGES: usize = 10_000;

/// The IDX magic number of an image file (unsigned bytes, 3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// The IDX magic number of a label file (unsigned bytes, 1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// One file of the test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistFile {
    /// Name of the uncompressed file in the data folder.
    pub name: &'static str,
    /// Name of the compressed file in a mirror or at the base URL.
    pub gz_name: &'static str,
    /// Size of the uncompressed file.
    pub size: u64,
    /// md5 of the uncompressed bytes, lowercase hex.
    pub md5: &'static str,
}

/// The test images.
pub const MNIST_TEST_IMAGES_FILE: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    gz_name: "t10k-images-idx3-ubyte.gz",
    size: 16 + (MNIST_TEST_IMAGES * MNIST_SIDE * MNIST_SIDE) as u64,
    md5: "2646ac647ad5339dbf082846283269ea",
};

/// The test labels.
pub const MNIST_TEST_LABELS_FILE: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    gz_name: "t10k-labels-idx1-ubyte.gz",
    size: 8 + MNIST_TEST_IMAGES as u64,
    md5: "27ae3e4e09519cfbb04c329615203637",
};

/// Both files, images first.
pub const MNIST_TEST_FILES: [MnistFile; 2] = [MNIST_TEST_IMAGES_FILE, MNIST_TEST_LABELS_FILE];

/// Images of an IDX file: `count` images of `rows × cols` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

fn layout(path: &Path, reason: String) -> DataError {
    DataError::Layout {
        path: path.to_path_buf(),
        reason,
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks an IDX header (`magic`, then `dims` big-endian counts) against the length of
/// `bytes`, which must be exactly header + product of the counts. Returns the counts.
/// `path` names the file in errors.
pub fn check_idx_header(
    bytes: &[u8],
    magic: u32,
    dims: usize,
    path: &Path,
) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * dims;
    let what = if magic == IDX_IMAGES_MAGIC {
        "an IDX image file"
    } else {
        "an IDX label file"
    };
    if bytes.len() >= 4 && be_u32(bytes, 0) != magic {
        return Err(layout(
            path,
            format!(
                "magic number {:#010x}, expected {magic:#010x} for {what}: this is not the \
                 right file (or it is still gzip-compressed)",
                be_u32(bytes, 0)
            ),
        ));
    }
    if bytes.len() < header {
        return Err(layout(
            path,
            format!(
                "{} bytes is too short for {what} (its header alone is {header} bytes): the \
                 file is truncated; fetch it again",
                bytes.len()
            ),
        ));
    }
    let counts: Vec<usize> = (0..dims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    let body = counts
        .iter()
        .try_fold(1usize, |acc, &c| acc.checked_mul(c))
        .ok_or_else(|| layout(path, format!("the header's counts {counts:?} overflow")))?;
    let actual = bytes.len() - header;
    if actual != body {
        let shape = counts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" × ");
        let why = if actual < body {
            "the file is truncated"
        } else {
            "the file has bytes past its data"
        };
        return Err(layout(
            path,
            format!(
                "the header announces {shape} = {body} bytes of data but the file holds \
                 {actual}: {why}; fetch it again"
            ),
        ));
    }
    Ok(counts)
}

/// Parses an IDX image file (magic 2051: count, rows, columns, then the pixels),
/// checking the header's counts against the file's length.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    let counts = check_idx_header(bytes, IDX_IMAGES_MAGIC, 3, path)?;
    let (count, rows, cols) = (counts[0], counts[1], counts[2]);
    if count > 0 && (rows == 0 || cols == 0) {
        return Err(layout(path, format!("images of {rows} × {cols} pixels")));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes[16..].to_vec(),
    })
}

/// Parses an IDX label file (magic 2049: count, then one byte per label), checking the
/// count against the file's length and that every label is a digit (0–9).
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    check_idx_header(bytes, IDX_LABELS_MAGIC, 1, path)?;
    let labels = bytes[8..].to_vec();
    check_labels(&labels, path)?;
    Ok(labels)
}

fn check_labels(labels: &[u8], path: &Path) -> Result<(), DataError> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= MNIST_CLASSES)
    {
        return Err(layout(path, format!("label {i} is {l}, not a digit 0–9")));
    }
    Ok(())
}

/// Digit images and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistSet {
    /// Where the set was read from (as reported).
    pub root: PathBuf,
    pub images: Vec<GrayImage>,
    pub labels: Vec<u8>,
}

impl MnistSet {
    /// A set from images and labels (digits 0–9), e.g. for tests.
    pub fn new(
        root: impl Into<PathBuf>,
        images: Vec<GrayImage>,
        labels: Vec<u8>,
    ) -> Result<Self, DataError> {
        let root = root.into();
        if images.len() != labels.len() {
            return Err(layout(
                &root,
                format!("{} images but {} labels", images.len(), labels.len()),
            ));
        }
        check_labels(&labels, &root)?;
        Ok(MnistSet {
            root,
            images,
            labels,
        })
    }

    /// Builds the set from the bytes of an image file and a label file (uncompressed
    /// IDX), checking both headers and that they agree.
    pub fn from_idx(
        root: &Path,
        image_bytes: &[u8],
        label_bytes: &[u8],
    ) -> Result<Self, DataError> {
        let images_path = root.join(MNIST_TEST_IMAGES_FILE.name);
        let labels_path = root.join(MNIST_TEST_LABELS_FILE.name);
        let images = parse_idx_images(image_bytes, &images_path)?;
        let labels = parse_idx_labels(label_bytes, &labels_path)?;
        Self::from_parts(root, images, labels)
    }

    fn from_parts(root: &Path, images: IdxImages, labels: Vec<u8>) -> Result<Self, DataError> {
        if images.count != labels.len() {
            return Err(layout(
                root,
                format!(
                    "{} holds {} images but {} holds {} labels",
                    MNIST_TEST_IMAGES_FILE.name,
                    images.count,
                    MNIST_TEST_LABELS_FILE.name,
                    labels.len()
                ),
            ));
        }
        let size = images.rows * images.cols;
        let images = images
            .pixels
            .chunks_exact(size.max(1))
            .take(images.count)
            .map(|p| GrayImage::from_pixels(images.cols, images.rows, p.to_vec()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| layout(root, "image sizes do not add up".into()))?;
        Self::new(root, images, labels)
    }

    /// Reads the test set from `dir` (the uncompressed files of
    /// [`MNIST_TEST_FILES`], as the fetcher installs them). The headers are checked
    /// against the files' lengths; with the `candle-datasets` feature the pixels and
    /// labels are then read by `candle_datasets::vision::mnist`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let read = |file: &MnistFile| {
            let path = dir.join(file.name);
            std::fs::read(&path).map_err(|e| DataError::io(path, e))
        };
        let image_bytes = read(&MNIST_TEST_IMAGES_FILE)?;
        let label_bytes = read(&MNIST_TEST_LABELS_FILE)?;
        let set = Self::from_idx(dir, &image_bytes, &label_bytes)?;
        #[cfg(feature = "candle-datasets")]
        let set = {
            drop(set);
            Self::load_with_candle_datasets(dir)?
        };
        Ok(set)
    }

    /// Reads the test set through `candle_datasets::vision::mnist::load_dir`. That
    /// function reads the training files too, which this project never fetches: it is
    /// pointed at a temporary folder in which the training names link to the test
    /// files (so the test set is read twice, ~8 MB). candle-datasets checks the magic
    /// numbers but not the lengths: [`Self::load`] checks the headers first.
    #[cfg(feature = "candle-datasets")]
    pub fn load_with_candle_datasets(dir: &Path) -> Result<Self, DataError> {
        use candle_core::DType;
        let staging = TempDir::new()?;
        for (train, test) in [
            ("train-images-idx3-ubyte", MNIST_TEST_IMAGES_FILE.name),
            ("train-labels-idx1-ubyte", MNIST_TEST_LABELS_FILE.name),
            (MNIST_TEST_IMAGES_FILE.name, MNIST_TEST_IMAGES_FILE.name),
            (MNIST_TEST_LABELS_FILE.name, MNIST_TEST_LABELS_FILE.name),
        ] {
            let target = std::path::absolute(dir.join(test)).map_err(|e| DataError::io(dir, e))?;
            link_or_copy(&target, &staging.path.join(train))?;
        }
        let data = candle_datasets::vision::mnist::load_dir(&staging.path).map_err(|e| {
            layout(
                dir,
                format!("candle-datasets cannot read the MNIST files: {e}"),
            )
        })?;
        // f32 in [0, 1] (byte / 255) back to bytes: exact for every byte value.
        let pixels: Vec<u8> = (data.test_images * 255.0)?
            .round()?
            .clamp(0.0, 255.0)?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1()?;
        let labels: Vec<u8> = data.test_labels.to_dtype(DType::U8)?.to_vec1()?;
        let count = labels.len();
        let images = IdxImages {
            count,
            rows: MNIST_SIDE,
            cols: MNIST_SIDE,
            pixels,
        };
        if images.pixels.len() != count * MNIST_SIDE * MNIST_SIDE {
            return Err(layout(
                dir,
                "candle-datasets read images that are not 28 × 28".into(),
            ));
        }
        check_labels(&labels, dir)?;
        Self::from_parts(dir, images, labels)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The indices of each digit's images, in file order.
    pub fn by_digit(&self) -> Vec<Vec<usize>> {
        let mut by = vec![Vec::new(); MNIST_CLASSES];
        for (i, &l) in self.labels.iter().enumerate() {
            by[usize::from(l)].push(i);
        }
        by
    }

    /// How many images of each digit.
    pub fn class_counts(&self) -> [usize; MNIST_CLASSES] {
        let mut counts = [0; MNIST_CLASSES];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The same set with every image mapped by `f` (e.g. fitted to a network's input).
    pub fn map_images(&self, f: impl Fn(&GrayImage) -> GrayImage + Sync + Send) -> Self {
        use rayon::prelude::*;
        MnistSet {
            root: self.root.clone(),
            images: self.images.par_iter().map(f).collect(),
            labels: self.labels.clone(),
        }
    }
}

/// A temporary folder removed on drop.
#[cfg(feature = "candle-datasets")]
struct TempDir {
    path: PathBuf,
}

#[cfg(feature = "candle-datasets")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(feature = "candle-datasets")]
impl TempDir {
    fn new() -> Result<TempDir, DataError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("siamese-mnist-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(TempDir { path })
    }
}

#[cfg(feature = "candle-datasets")]
fn link_or_copy(target: &Path, link: &Path) -> Result<(), DataError> {
    #[cfg(unix)]
    if std::os::unix::fs::symlink(target, link).is_ok() {
        return Ok(());
    }
    std::fs::copy(target, link)
        .map(drop)
        .map_err(|e| DataError::io(target, e))
}

/// Draws `trials` `way`-way `shots`-shot tasks over the digits of `set`: for each, the
/// query's digit uniformly at random, `way − 1` other digits (all ten when `way` is
/// 10), `shots` distinct support images of each, and a query that is another image of
/// its digit; the candidates in a uniformly random order, so the true class sits at a
/// random position. [`OneShotTask::characters`] holds the digits. Reproducible for a
/// given `rng` state.
pub fn mnist_tasks(
    set: &MnistSet,
    way: usize,
    shots: usize,
    trials: usize,
    rng: &mut impl Rng,
) -> Result<Vec<OneShotTask>, DataError> {
    if !(2..=MNIST_CLASSES).contains(&way) || shots == 0 {
        return Err(DataError::Invalid(format!(
            "MNIST tasks need 2 to {MNIST_CLASSES} classes and at least 1 shot (got \
             {way}-way {shots}-shot)"
        )));
    }
    let by_digit = set.by_digit();
    if let Some((d, imgs)) = by_digit
        .iter()
        .enumerate()
        .find(|(_, imgs)| imgs.len() <= shots)
    {
        return Err(DataError::Invalid(format!(
            "{}: digit {d} has {} images; {shots}-shot tasks need {}",
            set.root.display(),
            imgs.len(),
            shots + 1
        )));
    }
    let digits: Vec<usize> = (0..MNIST_CLASSES).collect();
    let mut tasks = Vec::with_capacity(trials);
    for _ in 0..trials {
        let query_digit = rng.random_range(0..MNIST_CLASSES);
        let others: Vec<usize> = digits
            .iter()
            .copied()
            .filter(|&d| d != query_digit)
            .collect();
        let mut classes: Vec<usize> = others.choose_multiple(rng, way - 1).copied().collect();
        classes.push(query_digit);
        classes.shuffle(rng);
        let answer = classes
            .iter()
            .position(|&d| d == query_digit)
            .expect("the query's digit is a candidate");
        let images_of = |d: usize| by_digit[d].clone();
        let (support, query) = crate::sample::draw_support(&classes, answer, shots, images_of, rng);
        tasks.push(OneShotTask {
            query,
            support,
            characters: classes,
            answer,
        });
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded_rng;

    /// An IDX image file of `count` images of `rows × cols` pixels, pixel value
    /// `(image + offset) % 256`.
    pub(crate) fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IDX_IMAGES_MAGIC, count, rows, cols] {
            b.extend(v.to_be_bytes());
        }
        for i in 0..(count * rows * cols) {
            b.push((i % 251) as u8);
        }
        b
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IDX_LABELS_MAGIC, labels.len() as u32] {
            b.extend(v.to_be_bytes());
        }
        b.extend(labels);
        b
    }

    #[test]
    fn idx_files_are_parsed_and_their_headers_checked() {
        let p = Path::new("x/t10k-images-idx3-ubyte");
        let bytes = idx_images(3, 4, 5);
        let imgs = parse_idx_images(&bytes, p).unwrap();
        assert_eq!((imgs.count, imgs.rows, imgs.cols), (3, 4, 5));
        assert_eq!(imgs.pixels, bytes[16..]);

        // Truncated: one byte short, and shorter than the header.
        let err = parse_idx_images(&bytes[..bytes.len() - 1], p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"),
            "{err}"
        );
        let err = parse_idx_images(&bytes[..10], p).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        // Trailing bytes.
        let mut long = bytes.clone();
        long.push(0);
        let err = parse_idx_images(&long, p).unwrap_err().to_string();
        assert!(err.contains("past its data"), "{err}");
        // A header whose counts do not match the file.
        let mut wrong = bytes.clone();
        wrong[4..8].copy_from_slice(&4u32.to_be_bytes());
        let err = parse_idx_images(&wrong, p).unwrap_err().to_string();
        assert!(
            err.contains("4 × 4 × 5 = 80 bytes") && err.contains("60"),
            "{err}"
        );
        // Wrong magic (a label file, a gzip file).
        let err = parse_idx_images(&idx_labels(&[1, 2]), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic number"), "{err}");
        let err = parse_idx_images(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gzip"), "{err}");

        let lp = Path::new("x/labels");
        assert_eq!(
            parse_idx_labels(&idx_labels(&[0, 9, 3]), lp).unwrap(),
            [0, 9, 3]
        );
        let err = parse_idx_labels(&idx_labels(&[0, 10]), lp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 1 is 10"), "{err}");
        let full = idx_labels(&[1, 2, 3]);
        let err = parse_idx_labels(&full[..full.len() - 1], lp)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");

        // Images and labels must agree.
        let err = MnistSet::from_idx(Path::new("x"), &bytes, &idx_labels(&[1, 2]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 images but") && err.contains("2 labels"),
            "{err}"
        );
        let set = MnistSet::from_idx(Path::new("x"), &bytes, &idx_labels(&[1, 2, 1])).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.images[1].width(), 5);
        assert_eq!(set.images[1].height(), 4);
        assert_eq!(set.images[1].get(0, 0), 20);
        assert_eq!(set.by_digit()[1], vec![0, 2]);
    }

    #[test]
    fn load_reads_files_written_here() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MNIST_TEST_IMAGES_FILE.name),
            idx_images(4, 28, 28),
        )
        .unwrap();
        let labels = idx_labels(&[7, 0, 7, 3]);
        std::fs::write(dir.path().join(MNIST_TEST_LABELS_FILE.name), &labels).unwrap();
        let set = MnistSet::load(dir.path()).unwrap();
        assert_eq!(set.labels, [7, 0, 7, 3]);
        assert_eq!(set.images[3].get(1, 0), ((3 * 784 + 1) % 251) as u8);
        // Truncated image file: named in the error.
        let bytes = idx_images(4, 28, 28);
        std::fs::write(
            dir.path().join(MNIST_TEST_IMAGES_FILE.name),
            &bytes[..bytes.len() - 100],
        )
        .unwrap();
        let err = MnistSet::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(MNIST_TEST_IMAGES_FILE.name) && err.contains("truncated"),
            "{err}"
        );
        let err = MnistSet::load(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }

    /// With the feature, candle-datasets reads exactly the digits the IDX parser
    /// reads (run: `cargo test --release -p siamese-data --features candle-datasets
    /// --lib mnist`).
    #[cfg(feature = "candle-datasets")]
    #[test]
    fn candle_datasets_reads_the_same_digits() {
        let dir = tempfile::tempdir().unwrap();
        let images = idx_images(6, 28, 28);
        let labels = idx_labels(&[5, 0, 9, 1, 1, 3]);
        std::fs::write(dir.path().join(MNIST_TEST_IMAGES_FILE.name), &images).unwrap();
        std::fs::write(dir.path().join(MNIST_TEST_LABELS_FILE.name), &labels).unwrap();
        let ours = MnistSet::from_idx(dir.path(), &images, &labels).unwrap();
        let theirs = MnistSet::load_with_candle_datasets(dir.path()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(MnistSet::load(dir.path()).unwrap(), ours);
    }

    /// A set with `per` images of each digit, each image's pixel (0, 0) its index.
    fn toy_set(per: usize) -> MnistSet {
        let labels: Vec<u8> = (0..10 * per).map(|i| (i % 10) as u8).collect();
        let images = (0..labels.len())
            .map(|i| {
                let mut p = vec![0u8; 4];
                p[0] = i as u8;
                GrayImage::from_pixels(2, 2, p).unwrap()
            })
            .collect();
        MnistSet::new("toy", images, labels).unwrap()
    }

    #[test]
    fn tasks_hold_every_digit_once_and_the_query_among_them() {
        let set = toy_set(5);
        let tasks = mnist_tasks(&set, 10, 1, 300, &mut seeded_rng(7)).unwrap();
        let mut answers = [0usize; 10];
        for t in &tasks {
            let mut digits = t.characters.clone();
            digits.sort_unstable();
            assert_eq!(digits, (0..10).collect::<Vec<_>>());
            assert_eq!(t.support.len(), 10);
            for (c, shots) in t.support.iter().enumerate() {
                assert_eq!(shots.len(), 1);
                assert_eq!(usize::from(set.labels[shots[0]]), t.characters[c]);
            }
            let qd = usize::from(set.labels[t.query]);
            assert_eq!(t.characters[t.answer], qd);
            assert_ne!(
                t.support[t.answer][0], t.query,
                "the query is not its own support"
            );
            answers[t.answer] += 1;
        }
        // The true class sits at every position.
        assert!(answers.iter().all(|&n| n > 10), "{answers:?}");
        // Seeded: same seed, same tasks; another seed, others.
        assert_eq!(
            tasks,
            mnist_tasks(&set, 10, 1, 300, &mut seeded_rng(7)).unwrap()
        );
        assert_ne!(
            tasks,
            mnist_tasks(&set, 10, 1, 300, &mut seeded_rng(8)).unwrap()
        );
        // Fewer ways and more shots.
        for t in mnist_tasks(&set, 4, 3, 50, &mut seeded_rng(1)).unwrap() {
            assert_eq!(t.support.len(), 4);
            assert!(t.support.iter().all(|s| s.len() == 3));
            assert!(!t.support[t.answer].contains(&t.query));
        }
        assert!(mnist_tasks(&set, 11, 1, 5, &mut seeded_rng(1)).is_err());
        assert!(mnist_tasks(&set, 10, 5, 5, &mut seeded_rng(1)).is_err());
    }
}
