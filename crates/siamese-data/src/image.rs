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
///
/// Grayscale images of up to 8 bits (Omniglot's are 1-bit) are unpacked here from the
/// raw rows: the `png` crate's generic expansion costs about four times the rest of
/// the decoding for such small images.
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<GrayImage, DataError> {
    let bad = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let header = decoder.read_header_info().map_err(|e| bad(e.to_string()))?;
    let raw_gray = header.color_type == png::ColorType::Grayscale
        && header.bit_depth as u8 <= 8
        && !header.interlaced;
    if !raw_gray {
        decoder.set_transformations(png::Transformations::normalize_to_color8());
    }
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let buf = &buf[..frame.buffer_size()];
    let pixels: Vec<u8> = match frame.color_type {
        png::ColorType::Grayscale if raw_gray => {
            unpack_gray(buf, frame.line_size, width, frame.bit_depth as u8)
        }
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

/// Unpacks raw grayscale rows of `depth` ∈ {1, 2, 4, 8} bits into inverted 8-bit ink.
fn unpack_gray(buf: &[u8], line_size: usize, width: usize, depth: u8) -> Vec<u8> {
    let rows = buf.chunks_exact(line_size);
    let mut out = Vec::with_capacity(width * rows.len());
    if depth == 1 {
        for row in rows {
            let start = out.len();
            for &byte in row {
                out.extend_from_slice(&ONE_BIT_INK[usize::from(byte)]);
            }
            out.truncate(start + width);
        }
        return out;
    }
    let per_byte = 8 / usize::from(depth);
    let max = (1u16 << depth) - 1;
    for row in rows {
        for x in 0..width {
            let byte = row[x / per_byte];
            let shift = 8 - usize::from(depth) * (x % per_byte + 1);
            let value = u16::from(byte >> shift) & max;
            out.push(255 - (value * 255 / max) as u8);
        }
    }
    out
}

/// Ink of the eight pixels of a 1-bit byte (most significant bit first; 1 = white).
static ONE_BIT_INK: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut bit = 0;
        while bit < 8 {
            table[byte][bit] = if byte & (0x80 >> bit) == 0 { 255 } else { 0 };
            bit += 1;
        }
        byte += 1;
    }
    table
};

/// Reads and decodes one PNG file.
pub fn load_png(path: &Path) -> Result<GrayImage, DataError> {
    READ_BUFFER.with_borrow_mut(|buf| {
        let len = read_png_file(path, buf).map_err(|e| DataError::io(path, e))?;
        decode_png(&buf[..len], path)
    })
}

thread_local! {
    /// Each loader thread reuses one buffer for the file bytes.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads a PNG file into `buf` (grown as needed, never shrunk) and returns its length.
/// Omniglot's files are ~400 bytes and syscalls dominate reading them, so this skips
/// `std::fs::read`'s size query and stops as soon as the bytes end with the IEND chunk
/// (a complete PNG) instead of reading once more to see the end of the file. Anything
/// else is read to its end as usual.
fn read_png_file(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    let mut file = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        if buf.len() - len < 4096 {
            buf.resize((2 * buf.len()).max(64 * 1024), 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                len += n;
                if buf[..len].ends_with(&IEND) {
                    return Ok(len);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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

    fn encode(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
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
        let bytes = encode(
            8,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &[0b1011_0000],
        );
        let img = decode_png(&bytes, Path::new("t.png")).unwrap();
        assert_eq!(img.pixels(), &[0, 255, 0, 0, 255, 255, 255, 255]);
    }

    #[test]
    fn low_bit_depths_match_the_generic_expansion() {
        // 11 pixels wide so that rows end inside a byte.
        let rows: Vec<u8> = (0..3 * 6).map(|i| (i * 37 % 256) as u8).collect();
        for (depth, stride) in [
            (png::BitDepth::One, 2),
            (png::BitDepth::Two, 3),
            (png::BitDepth::Four, 6),
        ] {
            let data: Vec<u8> = rows.chunks(6).flat_map(|r| r[..stride].to_vec()).collect();
            let bytes = encode(11, 3, png::ColorType::Grayscale, depth, &data);
            let fast = decode_png(&bytes, Path::new("t.png")).unwrap();
            let mut d = png::Decoder::new(std::io::Cursor::new(&bytes[..]));
            d.set_transformations(png::Transformations::normalize_to_color8());
            let mut r = d.read_info().unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            let f = r.next_frame(&mut buf).unwrap();
            let expected: Vec<u8> = buf[..f.buffer_size()].iter().map(|&g| 255 - g).collect();
            assert_eq!(fast.pixels(), &expected[..], "{depth:?}");
        }
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
