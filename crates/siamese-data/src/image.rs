//! In-memory grayscale images (ink = 255, background = 0) and the PNG decoder.

use std::path::Path;

use crate::DataError;

/// A grayscale image, row-major, one byte per pixel: 255 is full ink, 0 is background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl GrayImage {
    /// An image of the given size with no ink.
    pub fn blank(width: usize, height: usize) -> Self {
        GrayImage {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    /// Wraps row-major pixels; `None` when their count is not `width * height`.
    pub fn from_pixels(width: usize, height: usize, pixels: Vec<u8>) -> Option<Self> {
        (pixels.len() == width * height).then_some(GrayImage {
            width,
            height,
            pixels,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major pixels, 255 = ink.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }

    /// Pixel at column `x`, row `y`.
    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    /// Writes the image as floats (ink = 1.0) into `out`, which must hold
    /// `width * height` values.
    pub fn write_f32(&self, out: &mut [f32]) {
        for (o, &p) in out.iter_mut().zip(&self.pixels) {
            *o = f32::from(p) * (1.0 / 255.0);
        }
    }
}

/// Decodes a PNG (any colour type and bit depth) into ink values: the luminance is
/// inverted, so Omniglot's black strokes on white become 255 on 0. Transparent pixels
/// count as paper.
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<GrayImage, DataError> {
    let bad = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let buf = &buf[..frame.buffer_size()];
    let pixels: Vec<u8> = match frame.color_type {
        png::ColorType::Grayscale => buf.iter().map(|&g| 255 - g).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .map(|p| ink_from(u32::from(p[0]), p[1]))
            .collect(),
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .map(|p| ink_from(luma(p[0], p[1], p[2]), 255))
            .collect(),
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .map(|p| ink_from(luma(p[0], p[1], p[2]), p[3]))
            .collect(),
        png::ColorType::Indexed => return Err(bad("palette was not expanded".into())),
    };
    GrayImage::from_pixels(width, height, pixels)
        .ok_or_else(|| bad("pixel count does not match the header".into()))
}

/// Reads and decodes one PNG file.
pub fn load_png(path: &Path) -> Result<GrayImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_png(&bytes, path)
}

/// ITU-R BT.601 luma, in 0..=255.
fn luma(r: u8, g: u8, b: u8) -> u32 {
    (299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000
}

/// Ink of a pixel of luminance `gray` composited over white paper with opacity `alpha`.
fn ink_from(gray: u32, alpha: u8) -> u8 {
    let ink = (255 - gray) * u32::from(alpha);
    ((ink + 127) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn one_bit_png_is_inverted_to_ink() {
        // 8x1 image, bits 1011_0000: white, black, white, white, black...
        let bytes = encode(8, 1, png::ColorType::Grayscale, png::BitDepth::One, &[0b1011_0000]);
        let img = decode_png(&bytes, Path::new("t.png")).unwrap();
        assert_eq!(img.pixels(), &[0, 255, 0, 0, 255, 255, 255, 255]);
    }

    #[test]
    fn rgba_transparent_is_paper() {
        let data = [0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255];
        let bytes = encode(3, 1, png::ColorType::Rgba, png::BitDepth::Eight, &data);
        let img = decode_png(&bytes, Path::new("t.png")).unwrap();
        assert_eq!(img.pixels(), &[255, 0, 0]);
    }

    #[test]
    fn garbage_names_the_file() {
        let err = decode_png(b"not a png", Path::new("dir/x.png")).unwrap_err();
        assert!(err.to_string().contains("dir/x.png"), "{err}");
    }

    #[test]
    fn float_conversion_maps_ink_to_one() {
        let img = GrayImage::from_pixels(2, 1, vec![255, 0]).unwrap();
        let mut out = [9.0f32; 2];
        img.write_f32(&mut out);
        assert_eq!(out, [1.0, 0.0]);
    }
}
