//! A user's own character images, made to look like Omniglot's: any common format
//! (PNG, JPEG, BMP, GIF, TIFF, WebP) and size, converted to grayscale ink, with the
//! polarity normalised and the character fitted to the network's input size.
//!
//! - **Polarity**: the outermost ring of pixels is taken as paper. If it is mostly
//!   light, the ink is dark (ink = 255 − luminance); otherwise the image is light on
//!   dark and kept as is. Transparent pixels are paper.
//! - **Fitting** ([`Fit`], [`Fit::Auto`] by default): an image already of the target
//!   size is used unchanged (so Omniglot files give exactly what the data set loader
//!   gives). Otherwise the ink's bounding box is cropped, centred on a square canvas
//!   whose side is the box's longer side ÷ [`INK_EXTENT`] (so the character covers
//!   about as much of the canvas as an Omniglot character does), and resized to the
//!   target with a triangle filter ([`Fit::Character`]). [`Fit::AsIs`] resizes the
//!   whole image instead (Koch et al.'s treatment of MNIST: 28×28 upsampled to 35×35).

use std::path::Path;

use image::imageops::FilterType;

use crate::{DataError, GrayImage};

/// The share of the canvas side that the longer side of a fitted character's ink box
/// covers: the median over Omniglot's background set is 0.657 (10th–90th percentile
/// 0.49–0.80, measured on 3,000 random images).
pub const INK_EXTENT: f32 = 0.65;

/// How an image is fitted to a network's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Unchanged when it already has the input's size, else [`Fit::Character`].
    #[default]
    Auto,
    /// The whole image resized to the input by area ([`GrayImage::resize_area`]):
    /// unchanged at the input's size, upsampled or shrunk otherwise.
    AsIs,
    /// The ink's bounding box cropped, centred on a square canvas with the margin of
    /// an Omniglot character ([`INK_EXTENT`]) and resized to the input (triangle
    /// filter), whatever the image's size.
    Character,
    /// Redrawn like an Omniglot character: [`Fit::Character`] on Omniglot's 105×105
    /// canvas, binarised at half ink, thinned to a one-pixel skeleton (Zhang & Suen),
    /// drawn again with the median stroke width of Omniglot's images
    /// ([`OMNIGLOT_STROKE_RADIUS`]), and shrunk to the input as Omniglot's images are
    /// ([`GrayImage::shrink_to`]). For thick strokes (MNIST's).
    Strokes,
}

/// The side of Omniglot's images.
pub const OMNIGLOT_SIDE: usize = 105;

/// The radius of the disc that [`Fit::Strokes`] draws along a skeleton, chosen so that
/// the redrawn strokes are as wide as Omniglot's: the median over its background
/// images is 5.35 ink pixels per skeleton pixel at 105×105 (quartiles 5.19–5.57;
/// `examples/stroke_width.rs`), where MNIST's digits placed like characters have 9.0.
pub const OMNIGLOT_STROKE_RADIUS: f32 = 2.3;

impl Fit {
    /// Every fitting, in the order of the documentation.
    pub const ALL: [Fit; 4] = [Fit::Auto, Fit::AsIs, Fit::Character, Fit::Strokes];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fit::Auto => "auto",
            Fit::AsIs => "as-is",
            Fit::Character => "character",
            Fit::Strokes => "strokes",
        }
    }

    /// `img` (ink = 255) fitted to `size × size`.
    pub fn apply(self, img: &GrayImage, size: usize) -> GrayImage {
        match self {
            Fit::Auto => fit(img, size),
            Fit::AsIs => img
                .resize_area(size, size)
                .unwrap_or_else(|| GrayImage::blank(size, size)),
            Fit::Character => fit_character(img, size),
            Fit::Strokes => fit_strokes(img, size),
        }
    }
}

impl std::fmt::Display for Fit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fit {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, DataError> {
        Fit::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = Fit::ALL.iter().map(|f| f.name()).collect();
            DataError::Invalid(format!(
                "unknown fitting {s:?}: expected one of {}",
                names.join(", ")
            ))
        })
    }
}

/// Loads a user's image and prepares it as a `size × size` ink image ([`Fit::Auto`]).
pub fn load_user_image(path: &Path, size: usize) -> Result<GrayImage, DataError> {
    load_user_image_with(path, size, Fit::Auto)
}

/// Loads a user's image and prepares it as a `size × size` ink image with `fitting`.
pub fn load_user_image_with(
    path: &Path,
    size: usize,
    fitting: Fit,
) -> Result<GrayImage, DataError> {
    let decoded = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("{e} (supported: PNG, JPEG, BMP, GIF, TIFF, WebP)"),
        })?;
    let la = decoded.to_luma_alpha8();
    let (w, h) = (la.width() as usize, la.height() as usize);
    if w == 0 || h == 0 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "the image is empty".into(),
        });
    }
    // Luminance composited over white paper.
    let luma: Vec<u8> = la
        .pixels()
        .map(|p| {
            let [l, a] = p.0;
            (255 - ((255 - u32::from(l)) * u32::from(a) + 127) / 255) as u8
        })
        .collect();
    let dark_ink = border_is_light(&luma, w, h);
    let ink: Vec<u8> = luma
        .iter()
        .map(|&l| if dark_ink { 255 - l } else { l })
        .collect();
    let img = GrayImage::from_pixels(w, h, ink).expect("w × h pixels");
    Ok(fitting.apply(&img, size))
}

/// Whether most of the outermost ring of pixels is light.
fn border_is_light(luma: &[u8], w: usize, h: usize) -> bool {
    let mut light = 0usize;
    let mut total = 0usize;
    for y in 0..h {
        for x in 0..w {
            if y == 0 || y == h - 1 || x == 0 || x == w - 1 {
                total += 1;
                light += usize::from(luma[y * w + x] >= 128);
            }
        }
    }
    2 * light >= total
}

/// Fits an ink image to `size × size` ([`Fit::Auto`], see the module docs).
pub fn fit(img: &GrayImage, size: usize) -> GrayImage {
    if img.width() == size && img.height() == size {
        return img.clone();
    }
    fit_character(img, size)
}

/// Places the ink of an image like an Omniglot character on a `size × size` canvas
/// ([`Fit::Character`]); a blank image gives a blank canvas.
pub fn fit_character(img: &GrayImage, size: usize) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    // Ink box; faint noise (< 1/4 ink) does not count.
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if img.get(x, y) >= 64 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    if x0 == usize::MAX {
        return GrayImage::blank(size, size);
    }
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let side = ((bw.max(bh) as f32 / INK_EXTENT).ceil() as usize).max(1);
    let mut canvas = image::GrayImage::new(side as u32, side as u32);
    let (ox, oy) = ((side - bw) / 2, (side - bh) / 2);
    for y in 0..bh {
        for x in 0..bw {
            canvas.put_pixel(
                (ox + x) as u32,
                (oy + y) as u32,
                image::Luma([img.get(x0 + x, y0 + y)]),
            );
        }
    }
    let resized = image::imageops::resize(&canvas, size as u32, size as u32, FilterType::Triangle);
    GrayImage::from_pixels(size, size, resized.into_raw()).expect("size × size pixels")
}

/// [`Fit::Strokes`].
pub fn fit_strokes(img: &GrayImage, size: usize) -> GrayImage {
    let canvas = fit_character(img, OMNIGLOT_SIDE);
    let n = OMNIGLOT_SIDE;
    let mut ink: Vec<bool> = canvas.pixels().iter().map(|&p| p >= 128).collect();
    thin(&mut ink, n, n);
    let drawn = draw_discs(&ink, n, n, OMNIGLOT_STROKE_RADIUS);
    let drawn = GrayImage::from_pixels(n, n, drawn).expect("n × n pixels");
    if size <= n {
        drawn
            .shrink_to(size)
            .expect("a square image at least the input's size")
    } else {
        drawn
            .resize_area(size, size)
            .unwrap_or_else(|| GrayImage::blank(size, size))
    }
}

/// Thins a binary image (`true` = ink, row-major `w × h`) in place to a skeleton one
/// pixel wide, by Zhang & Suen's two-subiteration algorithm (1984). Pixels on the
/// border count their outside neighbours as paper.
pub fn thin(ink: &mut [bool], w: usize, h: usize) {
    let at = |ink: &[bool], x: isize, y: isize| -> bool {
        x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h && ink[y as usize * w + x as usize]
    };
    let mut remove = Vec::new();
    loop {
        let mut changed = false;
        for step in 0..2 {
            remove.clear();
            for y in 0..h as isize {
                for x in 0..w as isize {
                    if !at(ink, x, y) {
                        continue;
                    }
                    // P2..P9 clockwise from north.
                    let p = [
                        at(ink, x, y - 1),
                        at(ink, x + 1, y - 1),
                        at(ink, x + 1, y),
                        at(ink, x + 1, y + 1),
                        at(ink, x, y + 1),
                        at(ink, x - 1, y + 1),
                        at(ink, x - 1, y),
                        at(ink, x - 1, y - 1),
                    ];
                    let b = p.iter().filter(|&&v| v).count();
                    let a = (0..8).filter(|&i| !p[i] && p[(i + 1) % 8]).count();
                    let (n, e, s, wst) = (p[0], p[2], p[4], p[6]);
                    // Step 1: P2·P4·P6 = 0 and P4·P6·P8 = 0; step 2: P2·P4·P8 = 0 and
                    // P2·P6·P8 = 0.
                    let cond = if step == 0 {
                        !(e && s && (n || wst))
                    } else {
                        !(n && wst && (e || s))
                    };
                    if (2..=6).contains(&b) && a == 1 && cond {
                        remove.push(y as usize * w + x as usize);
                    }
                }
            }
            changed |= !remove.is_empty();
            for &i in &remove {
                ink[i] = false;
            }
        }
        if !changed {
            break;
        }
    }
}

/// Ink (255) wherever a pixel centre lies within `radius` of a `true` pixel's centre.
fn draw_discs(skeleton: &[bool], w: usize, h: usize, radius: f32) -> Vec<u8> {
    let r = radius.floor() as isize;
    let r2 = radius * radius;
    let mut out = vec![0u8; w * h];
    for (i, _) in skeleton.iter().enumerate().filter(|&(_, &v)| v) {
        let (cx, cy) = ((i % w) as isize, (i / w) as isize);
        for dy in -r..=r {
            for dx in -r..=r {
                let (x, y) = (cx + dx, cy + dy);
                if (dx * dx + dy * dy) as f32 <= r2
                    && x >= 0
                    && y >= 0
                    && (x as usize) < w
                    && (y as usize) < h
                {
                    out[y as usize * w + x as usize] = 255;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(img: image::DynamicImage, dir: &Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        img.save(&path).unwrap();
        path
    }

    /// A 300×200 picture of a thick bar, dark on light.
    fn bar(dark_on_light: bool) -> image::GrayImage {
        let (paper, ink) = if dark_on_light { (250, 10) } else { (5, 240) };
        image::GrayImage::from_fn(300, 200, |x, y| {
            if (100..200).contains(&x) && (80..120).contains(&y) {
                image::Luma([ink])
            } else {
                image::Luma([paper])
            }
        })
    }

    #[test]
    fn polarity_is_normalised_and_the_character_fitted() {
        let dir = tempfile::tempdir().unwrap();
        let a = save(bar(true).into(), dir.path(), "a.jpg");
        let b = save(bar(false).into(), dir.path(), "b.bmp");
        for path in [a, b] {
            let img = load_user_image(&path, 105).unwrap();
            assert_eq!((img.width(), img.height()), (105, 105));
            // Ink in the middle, paper in the corners, whatever the polarity.
            assert!(img.get(52, 52) > 200, "{}", path.display());
            assert!(img.get(2, 2) < 30, "{}", path.display());
            // The bar's 100 px width spans about 65% of the canvas.
            let row: Vec<u8> = (0..105).map(|x| img.get(x, 52)).collect();
            let inked = row.iter().filter(|&&v| v > 128).count();
            assert!((60..=75).contains(&inked), "{inked}");
        }
    }

    #[test]
    fn a_digit_file_is_fitted_like_the_digit_itself() {
        // A 28×28 MNIST-like digit: light strokes on black, inside a 20×20 box.
        let raw = GrayImage::from_pixels(
            28,
            28,
            (0..28 * 28)
                .map(|i: i32| {
                    let (x, y) = (i % 28, i / 28);
                    let ring = (x - 14).pow(2) + (y - 13).pow(2);
                    if (40..80).contains(&ring) { 250 } else { 0 }
                })
                .collect(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let png = image::GrayImage::from_raw(28, 28, raw.pixels().into_owned()).unwrap();
        let path = save(png.into(), dir.path(), "digit.png");
        for fit in Fit::ALL {
            for side in [28, 35] {
                let loaded = load_user_image_with(&path, side, fit).unwrap();
                assert_eq!(loaded, fit.apply(&raw, side), "{fit} {side}");
            }
        }
        // as-is keeps the 28×28 digit, and upsamples it whole to 35×35.
        assert_eq!(Fit::AsIs.apply(&raw, 28), raw);
        assert_eq!(Fit::Auto.apply(&raw, 28), raw);
        let up = Fit::AsIs.apply(&raw, 35);
        assert_eq!((up.width(), up.height()), (35, 35));
        // character re-centres the ink with an Omniglot character's margin.
        let c = Fit::Character.apply(&raw, 28);
        let inked: Vec<usize> = (0..28).filter(|&x| c.get(x, 14) > 64).collect();
        let span = inked.last().unwrap() - inked.first().unwrap() + 1;
        assert!((16..=20).contains(&span), "{span}");
    }

    #[test]
    fn thick_strokes_are_thinned_and_redrawn() {
        // A bar 9 pixels thick thins to a line one pixel thick.
        let (w, h) = (40, 20);
        let mut ink: Vec<bool> = (0..w * h)
            .map(|i| (5..35).contains(&(i % w)) && (6..15).contains(&(i / w)))
            .collect();
        thin(&mut ink, w, h);
        for x in 10..30 {
            let col: usize = (0..h).filter(|&y| ink[y * w + x]).count();
            assert_eq!(col, 1, "column {x}");
        }
        // Redrawn at Omniglot's width whatever the source's thickness: two rings
        // of different thickness give nearly the same ink.
        let ring = |thick: i32| {
            let pixels = (0..105 * 105)
                .map(|i: i32| {
                    let (x, y) = (i % 105 - 52, i / 105 - 52);
                    let d2 = x * x + y * y;
                    if (900..(30 + thick).pow(2)).contains(&d2) {
                        255
                    } else {
                        0
                    }
                })
                .collect();
            GrayImage::from_pixels(105, 105, pixels).unwrap()
        };
        let ink_of = |img: &GrayImage| img.pixels().iter().map(|&p| u64::from(p)).sum::<u64>();
        let (thin_ring, thick_ring) = (ring(3), ring(12));
        let a = ink_of(&fit_strokes(&thin_ring, 105));
        let b = ink_of(&fit_strokes(&thick_ring, 105));
        assert!(ink_of(&thick_ring) > 3 * ink_of(&thin_ring));
        assert!((a as f64 / b as f64 - 1.0).abs() < 0.35, "{a} {b}");
        let small = fit_strokes(&thick_ring, 28);
        assert_eq!((small.width(), small.height()), (28, 28));
        assert_eq!(
            fit_strokes(&GrayImage::blank(28, 28), 35),
            GrayImage::blank(35, 35)
        );
    }

    #[test]
    fn an_image_of_the_target_size_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let src = image::GrayImage::from_fn(105, 105, |x, y| {
            image::Luma([if (x + y) % 7 == 0 { 0 } else { 255 }])
        });
        let path = save(src.clone().into(), dir.path(), "c.png");
        let img = load_user_image(&path, 105).unwrap();
        for (p, q) in img.pixels().iter().zip(src.pixels()) {
            assert_eq!(*p, 255 - q.0[0]);
        }
    }

    #[test]
    fn transparent_background_is_paper_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let rgba = image::RgbaImage::from_fn(50, 50, |x, _| {
            if (20..30).contains(&x) {
                image::Rgba([0, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let path = save(rgba.into(), dir.path(), "t.png");
        let img = load_user_image(&path, 105).unwrap();
        assert!(img.get(52, 52) > 200 && img.get(2, 52) < 30);

        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not an image").unwrap();
        let err = load_user_image(&junk, 105).unwrap_err().to_string();
        assert!(err.contains("junk.png"), "{err}");
        let err = load_user_image(&dir.path().join("missing.png"), 105)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
