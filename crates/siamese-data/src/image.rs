//! In-memory grayscale images (ink = 255, background = 0) and the PNG decoder.

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
