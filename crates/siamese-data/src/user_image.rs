//! A user's own character images, made to look like Omniglot's: any common format
//! (PNG, JPEG, BMP, GIF, TIFF, WebP) and size, converted to grayscale ink, with the
//! polarity normalised and the character fitted to the network's input size.
//!
//! - **Polarity**: the outermost ring of pixels is taken as paper. If it is mostly
//!   light, the ink is dark (ink = 255 − luminance); otherwise the image is light on
//!   dark and kept as is. Transparent pixels are paper.
//! - **Fitting**: an image already of the target size is used unchanged (so Omniglot
//!   files give exactly what the data set loader gives). Otherwise the ink's bounding
//!   box is cropped, centred on a square canvas whose side is the box's longer side
//!   ÷ [`INK_EXTENT`] (so the character covers about as much of the canvas as an
//!   Omniglot character does), and resized to the target with a triangle filter.

use std::path::Path;

use image::imageops::FilterType;

use crate::{DataError, GrayImage};

/// The share of the canvas side that the longer side of a fitted character's ink box
/// covers: the median over Omniglot's background set is 0.657 (10th–90th percentile
/// 0.49–0.80, measured on 3,000 random images).
pub const INK_EXTENT: f32 = 0.65;

/// Loads a user's image and prepares it as a `size × size` ink image.
pub fn load_user_image(path: &Path, size: usize) -> Result<GrayImage, DataError> {
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
    Ok(fit(&img, size))
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

/// Fits an ink image to `size × size` (see the module docs).
pub fn fit(img: &GrayImage, size: usize) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    if w == size && h == size {
        return img.clone();
    }
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
