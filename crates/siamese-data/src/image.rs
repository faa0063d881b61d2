//! In-memory grayscale images (ink = 255, background = 0) and the PNG decoder.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use crate::DataError;
use crate::packed::{Decoded, PixelBlock, Slot};

/// A grayscale image, row-major: 255 is full ink, 0 is background.
///
/// Its pixels are kept in one of two forms: a byte per pixel, or, for binary images
/// (decoded from 1-bit PNGs such as Omniglot's, or made by [`GrayImage::to_binary`]),
/// a bit per pixel. The 32,460 Omniglot images take 48 MB that way instead of 358 MB,
/// and a load has that much less memory to fault in. Either way [`GrayImage::pixels`]
/// gives the bytes, and equality compares pixels, not forms.
///
/// The pixels are the image's own or, for images loaded together, part of one block
/// shared with the others (see [`crate::packed`]); cloning such an image is cheap, and
/// writing to it first copies its pixels.
#[derive(Clone)]
pub struct GrayImage {
    layout: Layout,
    bytes: Bytes,
}

/// An image's size and form in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// A bit per pixel: rows of `width.div_ceil(8)` bytes, the most significant bit
    /// first, 1 = ink, and the unused low bits of a row's last byte 0 (so that equal
    /// images have equal bytes). Otherwise a byte per pixel.
    pub(crate) binary: bool,
}

impl Layout {
    /// Bytes per row.
    pub(crate) fn row_bytes(self) -> usize {
        if self.binary {
            self.width.div_ceil(8)
        } else {
            self.width
        }
    }

    /// Bytes of the whole image; `None` when that overflows.
    pub(crate) fn checked_len(self) -> Option<usize> {
        self.row_bytes().checked_mul(self.height)
    }

    fn len(self) -> usize {
        self.row_bytes() * self.height
    }
}

#[derive(Clone)]
enum Bytes {
    Own(Vec<u8>),
    /// The layout's length of bytes of the block from `start`.
    InBlock {
        block: Arc<PixelBlock>,
        start: usize,
    },
}

impl GrayImage {
    /// An image of the given size with no ink.
    pub fn blank(width: usize, height: usize) -> Self {
        GrayImage {
            layout: Layout {
                width,
                height,
                binary: false,
            },
            bytes: Bytes::Own(vec![0; width * height]),
        }
    }

    /// Wraps row-major pixels; `None` when their count is not `width * height`.
    pub fn from_pixels(width: usize, height: usize, pixels: Vec<u8>) -> Option<Self> {
        (pixels.len() == width * height).then_some(GrayImage {
            layout: Layout {
                width,
                height,
                binary: false,
            },
            bytes: Bytes::Own(pixels),
        })
    }

    /// The same image kept a bit per pixel, if every pixel is 0 or 255.
    pub fn to_binary(&self) -> Option<GrayImage> {
        if self.is_binary() {
            return Some(self.clone());
        }
        let Layout { width, height, .. } = self.layout;
        let layout = Layout {
            width,
            height,
            binary: true,
        };
        let mut bits = vec![0u8; layout.len()];
        for (out, row) in bits
            .chunks_exact_mut(layout.row_bytes().max(1))
            .zip(self.bytes().chunks_exact(width.max(1)))
        {
            for (x, &p) in row.iter().enumerate() {
                match p {
                    0 => {}
                    255 => out[x / 8] |= 0x80 >> (x % 8),
                    _ => return None,
                }
            }
        }
        Some(GrayImage {
            layout,
            bytes: Bytes::Own(bits),
        })
    }

    /// Wraps a bit per pixel: rows of `width.div_ceil(8)` bytes, the most significant
    /// bit first, 1 = ink (the unused low bits of a row's last byte are ignored).
    /// `None` when there are not that many bytes.
    pub fn from_bits(width: usize, height: usize, mut bits: Vec<u8>) -> Option<Self> {
        let layout = Layout {
            width,
            height,
            binary: true,
        };
        if bits.len() != layout.checked_len()? {
            return None;
        }
        for row in bits.chunks_exact_mut(layout.row_bytes().max(1)) {
            clear_unused_bits(row, width);
        }
        Some(GrayImage {
            layout,
            bytes: Bytes::Own(bits),
        })
    }

    /// The image whose pixels, in `layout`, are in `block` from `start`.
    pub(crate) fn in_block(layout: Layout, block: Arc<PixelBlock>, start: usize) -> Self {
        assert!(
            start + layout.len() <= block.as_slice().len(),
            "image beyond the end of its block"
        );
        GrayImage {
            layout,
            bytes: Bytes::InBlock { block, start },
        }
    }

    /// Whether the pixels are part of a block shared with other images.
    pub fn is_shared(&self) -> bool {
        matches!(self.bytes, Bytes::InBlock { .. })
    }

    /// Whether the pixels are kept a bit each (every pixel is then 0 or 255).
    pub fn is_binary(&self) -> bool {
        self.layout.binary
    }

    pub fn width(&self) -> usize {
        self.layout.width
    }

    pub fn height(&self) -> usize {
        self.layout.height
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The pixels as kept, in [`Self::layout`].
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Own(p) => p,
            Bytes::InBlock { block, start } => {
                &block.as_slice()[*start..*start + self.layout.len()]
            }
        }
    }

    /// Row-major pixels, a byte each, 255 = ink: borrowed when the image keeps them
    /// so, unpacked when it keeps them a bit each.
    pub fn pixels(&self) -> Cow<'_, [u8]> {
        if !self.is_binary() {
            return Cow::Borrowed(self.bytes());
        }
        let width = self.width();
        let mut out = vec![0u8; width * self.height()];
        for (row, bits) in out
            .chunks_exact_mut(width.max(1))
            .zip(self.bytes().chunks_exact(self.layout.row_bytes().max(1)))
        {
            unpack_bits(bits, row);
        }
        Cow::Owned(out)
    }

    /// Row-major pixels to write to, a byte each (copied first if they are shared or
    /// kept a bit each).
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        if self.is_shared() || self.is_binary() {
            let pixels = self.pixels().into_owned();
            self.layout.binary = false;
            self.bytes = Bytes::Own(pixels);
        }
        match &mut self.bytes {
            Bytes::Own(p) => p,
            Bytes::InBlock { .. } => unreachable!("made the image's own above"),
        }
    }

    /// Pixel at column `x`, row `y`.
    pub fn get(&self, x: usize, y: usize) -> u8 {
        let bytes = self.bytes();
        if self.is_binary() {
            let byte = bytes[y * self.layout.row_bytes() + x / 8];
            if byte & (0x80 >> (x % 8)) != 0 {
                255
            } else {
                0
            }
        } else {
            bytes[y * self.width() + x]
        }
    }

    /// Writes the image as floats (ink = 1.0) into `out`, which must hold
    /// `width * height` values.
    pub fn write_f32(&self, out: &mut [f32]) {
        if !self.is_binary() {
            for (o, &p) in out.iter_mut().zip(self.bytes()) {
                *o = ink_f32(p);
            }
            return;
        }
        let width = self.width().max(1);
        let full = ink_f32(255);
        for (row, bits) in out
            .chunks_exact_mut(width)
            .zip(self.bytes().chunks_exact(self.layout.row_bytes().max(1)))
        {
            for (o, &byte) in row.chunks_mut(8).zip(bits) {
                for (bit, o) in o.iter_mut().enumerate() {
                    *o = if byte & (0x80 >> bit) != 0 { full } else { 0.0 };
                }
            }
        }
    }

    /// The image shrunk by a whole `factor` on both sides: each pixel the mean of a
    /// `factor × factor` block, rounded (Omniglot's 105×105 by 3 gives the 35×35
    /// images of Koch et al.'s §5.3). `None` unless `factor` is at least 1 and divides
    /// both sides.
    pub fn shrink(&self, factor: usize) -> Option<GrayImage> {
        let (w, h) = (self.width(), self.height());
        if factor == 0 || !w.is_multiple_of(factor) || !h.is_multiple_of(factor) {
            return None;
        }
        if factor == 1 {
            return Some(self.clone());
        }
        let (sw, sh) = (w / factor, h / factor);
        let area = (factor * factor) as u64;
        let pixels = self.pixels();
        let mut sums = vec![0u64; sw];
        let mut out = Vec::with_capacity(sw * sh);
        for block_rows in pixels.chunks_exact(w * factor) {
            sums.fill(0);
            for row in block_rows.chunks_exact(w) {
                for (sum, block) in sums.iter_mut().zip(row.chunks_exact(factor)) {
                    *sum += block.iter().map(|&p| u64::from(p)).sum::<u64>();
                }
            }
            out.extend(sums.iter().map(|&sum| ((sum + area / 2) / area) as u8));
        }
        GrayImage::from_pixels(sw, sh, out)
    }

    /// The square image shrunk to `side × side`: by [`GrayImage::shrink`] when `side`
    /// divides its side (so those results are unchanged), else by
    /// [`GrayImage::resize_area`] (Omniglot's 105×105 to 28×28, say). `None` unless
    /// the image is square and `1 ≤ side ≤` its side.
    pub fn shrink_to(&self, side: usize) -> Option<GrayImage> {
        let w = self.width();
        if side == 0 || w != self.height() || side > w {
            return None;
        }
        if w.is_multiple_of(side) {
            self.shrink(w / side)
        } else {
            self.resize_area(side, side)
        }
    }

    /// The image resampled to `width × height` by area (box) averaging: each output
    /// pixel is the mean of the source pixels under its footprint, each weighted by
    /// the fraction of it covered (so partly covered edge pixels count in part),
    /// rounded to the nearest (halves up). Exact: the weights are whole numbers and
    /// the sums integers, so a whole-factor shrink gives [`GrayImage::shrink`]'s
    /// pixels and total ink is kept up to rounding. Works both ways (upscaling
    /// repeats pixels, blending where a footprint straddles two). Separable: rows,
    /// then columns. `None` for a zero size or an empty image.
    pub fn resize_area(&self, width: usize, height: usize) -> Option<GrayImage> {
        let (sw, sh) = (self.width(), self.height());
        if width == 0 || height == 0 || sw == 0 || sh == 0 {
            return None;
        }
        if (width, height) == (sw, sh) {
            return Some(self.clone());
        }
        let (wx, wy) = (AreaWeights::new(sw, width), AreaWeights::new(sh, height));
        let pixels = self.pixels();
        // Horizontal pass: each source row to `width` sums, in units of 1/`width` of
        // a source pixel (so at most 255 × `sw`).
        let mut rows = vec![0u64; width * sh];
        for (sums, row) in rows.chunks_exact_mut(width).zip(pixels.chunks_exact(sw)) {
            for (x, sum) in sums.iter_mut().enumerate() {
                let (start, weights) = wx.of(x);
                *sum = weights
                    .iter()
                    .zip(&row[start..])
                    .map(|(&w, &p)| w * u64::from(p))
                    .sum();
            }
        }
        // Vertical pass; the full weight of an output pixel is `sw × sh`.
        let denom = (sw as u64) * (sh as u64);
        let mut out = Vec::with_capacity(width * height);
        let mut acc = vec![0u64; width];
        for y in 0..height {
            let (start, weights) = wy.of(y);
            acc.fill(0);
            for (&w, sums) in weights
                .iter()
                .zip(rows[start * width..].chunks_exact(width))
            {
                for (a, &s) in acc.iter_mut().zip(sums) {
                    *a += w * s;
                }
            }
            out.extend(acc.iter().map(|&a| ((2 * a + denom) / (2 * denom)) as u8));
        }
        GrayImage::from_pixels(width, height, out)
    }

    /// The image as an episode class sees it ([`crate::sample::Episode::rotations`]):
    /// mirrored left to right if `code` ≥ 4, then turned `code % 4` quarter turns
    /// counter-clockwise ([`rotate90`](Self::rotate90)).
    pub fn turned(&self, code: u8) -> GrayImage {
        if code & 4 == 0 {
            return self.rotate90(code);
        }
        let (w, h) = (self.width(), self.height());
        let mut out = Vec::with_capacity(w * h);
        for row in self.pixels().chunks_exact(w.max(1)).take(h) {
            out.extend(row.iter().rev());
        }
        let mirrored = GrayImage::from_pixels(w, h, out).expect("same pixel count");
        let mirrored = if self.is_binary() {
            mirrored.to_binary().expect("the pixels of a binary image")
        } else {
            mirrored
        };
        mirrored.rotate90(code)
    }

    /// The image turned `quarter_turns` × 90° counter-clockwise (taken modulo 4); an
    /// odd count swaps width and height. A binary image stays binary.
    pub fn rotate90(&self, quarter_turns: u8) -> GrayImage {
        let turns = quarter_turns % 4;
        if turns == 0 {
            return self.clone();
        }
        let (w, h) = (self.width(), self.height());
        let src = self.pixels();
        let (ow, oh) = if turns == 2 { (w, h) } else { (h, w) };
        let mut out = vec![0u8; w * h];
        for (y, row) in out.chunks_exact_mut(ow.max(1)).enumerate().take(oh) {
            for (x, o) in row.iter_mut().enumerate() {
                let (sx, sy) = match turns {
                    1 => (w - 1 - y, x),
                    2 => (w - 1 - x, h - 1 - y),
                    _ => (y, h - 1 - x),
                };
                *o = src[sy * w + sx];
            }
        }
        let rotated = GrayImage::from_pixels(ow, oh, out).expect("same pixel count");
        if self.is_binary() {
            rotated.to_binary().expect("the pixels of a binary image")
        } else {
            rotated
        }
    }
}

/// The weights of area resampling along one axis, `from` source pixels to `to`.
/// Measured in units of 1/`to` of a source pixel, source pixel `i` spans
/// `[i·to, (i+1)·to)` and output pixel `j` spans `[j·from, (j+1)·from)`: the weight of
/// `i` in `j` is their overlap, a whole number, and each output's weights sum to
/// `from`.
struct AreaWeights {
    /// Output `j`'s weights are `weights[spans[j].1..spans[j + 1].1]`, for the source
    /// pixels from `spans[j].0` on.
    spans: Vec<(usize, usize)>,
    weights: Vec<u64>,
}

impl AreaWeights {
    fn new(from: usize, to: usize) -> Self {
        let mut spans = Vec::with_capacity(to + 1);
        let mut weights = Vec::with_capacity(from + 2 * to);
        for j in 0..to {
            let (lo, hi) = (j * from, (j + 1) * from);
            let first = lo / to;
            spans.push((first, weights.len()));
            for i in first..hi.div_ceil(to) {
                let overlap = hi.min((i + 1) * to) - lo.max(i * to);
                weights.push(overlap as u64);
            }
        }
        spans.push((from, weights.len()));
        AreaWeights { spans, weights }
    }

    /// The first source pixel and the weights of output pixel `j`.
    fn of(&self, j: usize) -> (usize, &[u64]) {
        let (start, at) = self.spans[j];
        (start, &self.weights[at..self.spans[j + 1].1])
    }
}

/// The float ink of a byte: 255 is 1.0.
fn ink_f32(p: u8) -> f32 {
    f32::from(p) * (1.0 / 255.0)
}

impl PartialEq for GrayImage {
    fn eq(&self, other: &Self) -> bool {
        if self.layout == other.layout {
            // One form: equal pixels are equal bytes (unused bits are kept 0).
            return self.bytes() == other.bytes();
        }
        (self.width(), self.height()) == (other.width(), other.height())
            && self.pixels() == other.pixels()
    }
}

impl Eq for GrayImage {}

impl std::fmt::Debug for GrayImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrayImage")
            .field("width", &self.width())
            .field("height", &self.height())
            .field("binary", &self.is_binary())
            .field("pixels", &self.pixels())
            .finish()
    }
}

/// Unpacks bits (most significant first, 1 = ink) into a byte per pixel of `out`.
pub(crate) fn unpack_bits(bits: &[u8], out: &mut [u8]) {
    let (whole, tail) = out.as_chunks_mut::<8>();
    let n = whole.len();
    for (dst, &byte) in whole.iter_mut().zip(bits) {
        *dst = BIT_INK[usize::from(byte)];
    }
    if let Some(&byte) = bits.get(n) {
        for (t, &ink) in tail.iter_mut().zip(&BIT_INK[usize::from(byte)]) {
            *t = ink;
        }
    }
}

/// `BIT_INK[b]` is the ink of the eight pixels of the bit byte `b` (most significant
/// bit first; 1 = ink).
static BIT_INK: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut bit = 0;
        while bit < 8 {
            table[byte][bit] = if byte & (0x80 >> bit) != 0 { 255 } else { 0 };
            bit += 1;
        }
        byte += 1;
    }
    table
};

/// The layout [`decode_png`] will give the image of a PNG, going by its header, if
/// `bytes` start like a PNG: its size, and binary for 1-bit grayscale.
pub(crate) fn png_layout(bytes: &[u8]) -> Option<Layout> {
    let rest = bytes.strip_prefix(&PNG_SIGNATURE)?;
    if rest.get(4..8)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
    let height = u32::from_be_bytes(rest.get(12..16)?.try_into().ok()?);
    let (depth, color) = (*rest.get(16)?, *rest.get(17)?);
    Some(Layout {
        width: width as usize,
        height: height as usize,
        binary: is_binary_png(depth, color),
    })
}

/// Whether a PNG of this bit depth and colour type decodes to a binary image: 1-bit
/// grayscale.
fn is_binary_png(depth: u8, color: u8) -> bool {
    depth == 1 && color == 0
}

/// Decodes a PNG (any colour type and bit depth) into ink values: the luminance is
/// inverted, so Omniglot's black strokes on white become 255 on 0. Transparent pixels
/// count as paper. A 1-bit grayscale PNG gives a binary image (a bit per pixel).
///
/// Plain grayscale PNGs of up to 8 bits (Omniglot's are 1-bit, ~250 bytes) take a
/// direct path: the chunks are walked and checked (CRC) here, the image data is
/// inflated in one call with a reused per-thread zlib-rs state, and the rows are
/// unfiltered and unpacked in place. The `png` crate's streaming decoder costs several
/// times that for such small files (its set-up and Huffman tables dominate). Anything
/// that path does not take, or that does not decode cleanly on it, goes through the
/// `png` crate, so the result (or the error) is always the crate's.
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<GrayImage, DataError> {
    if let Some(image) = decode_plain_gray(bytes) {
        return Ok(image);
    }
    decode_png_generic(bytes, path)
}

/// [`decode_png`] straight into `slot` when the image has the slot's size and takes
/// the direct path (no allocation, no copy); else as a new image.
pub(crate) fn decode_png_into(
    bytes: &[u8],
    path: &Path,
    slot: Option<Slot<'_>>,
) -> Result<Decoded, DataError> {
    match plain_gray(bytes, slot) {
        Some(decoded) => Ok(decoded),
        None => decode_png_generic(bytes, path).map(Decoded::Image),
    }
}

/// [`decode_png`] through the `png` crate only.
pub fn decode_png_generic(bytes: &[u8], path: &Path) -> Result<GrayImage, DataError> {
    let bad = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let header = decoder.read_header_info().map_err(|e| bad(e.to_string()))?;
    let raw_gray = header.color_type == png::ColorType::Grayscale
        && header.bit_depth as u8 <= 8
        && !header.interlaced;
    let binary = is_binary_png(header.bit_depth as u8, header.color_type as u8);
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
    let image = GrayImage::from_pixels(width, height, pixels)
        .ok_or_else(|| bad("pixel count does not match the header".into()))?;
    // 1-bit pixels are 0 or 255 whatever the transformations made of them.
    Ok(match binary {
        true => image.to_binary().unwrap_or(image),
        false => image,
    })
}

/// A 1-bit PNG row (1 = white) as ink bits (1 = ink), the unused low bits of the
/// last byte cleared; `out` has `width.div_ceil(8)` bytes.
fn ink_bits_from_png_row(row: &[u8], width: usize, out: &mut [u8]) {
    for (o, &b) in out.iter_mut().zip(row) {
        *o = !b;
    }
    clear_unused_bits(out, width);
}

/// Clears the bits past `width` pixels in the last byte of a row of bits.
fn clear_unused_bits(row: &mut [u8], width: usize) {
    if !width.is_multiple_of(8)
        && let Some(last) = row.last_mut()
    {
        *last &= 0xff << (8 - width % 8);
    }
}

/// Unpacks raw grayscale rows of `depth` ∈ {1, 2, 4, 8} bits into inverted 8-bit ink.
fn unpack_gray(buf: &[u8], line_size: usize, width: usize, depth: u8) -> Vec<u8> {
    let rows = buf.chunks_exact(line_size);
    let mut out = vec![0; width * rows.len()];
    for (dst, row) in out.chunks_exact_mut(width.max(1)).zip(rows) {
        unpack_gray_row(row, depth, dst);
    }
    out
}

/// Unpacks one raw grayscale row (`depth` ∈ {1, 2, 4, 8} bits, most significant
/// first) into inverted 8-bit ink, one byte per pixel of `out`.
fn unpack_gray_row(row: &[u8], depth: u8, out: &mut [u8]) {
    let per_byte = 8 / usize::from(depth);
    let max = (1u16 << depth) - 1;
    for (x, o) in out.iter_mut().enumerate() {
        let byte = row[x / per_byte];
        let shift = 8 - usize::from(depth) * (x % per_byte + 1);
        let value = u16::from(byte >> shift) & max;
        *o = 255 - (value * 255 / max) as u8;
    }
}

/// The largest width or height the direct path takes (larger images are left to the
/// `png` crate, which bounds its own allocations).
const PLAIN_MAX_SIDE: usize = 1 << 14;

/// The PNG signature.
const PNG_SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

/// The direct path of [`decode_png`]: a non-interlaced grayscale PNG of 1, 2, 4 or 8
/// bits whose chunks are IHDR, ancillary chunks (skipped, as the `png` crate does
/// without transformations), consecutive IDATs and an empty IEND ending the file, each
/// with a correct CRC, and whose zlib stream (checked by its Adler-32) inflates to
/// exactly the rows the header announces, each with a valid filter type. `None` for
/// anything else. 1-bit images stay a bit per pixel.
fn decode_plain_gray(bytes: &[u8]) -> Option<GrayImage> {
    match plain_gray(bytes, None)? {
        Decoded::Image(image) => Some(image),
        Decoded::InSlot => None,
    }
}

/// [`decode_plain_gray`], writing into `slot` when the image has its size.
fn plain_gray(bytes: &[u8], slot: Option<Slot<'_>>) -> Option<Decoded> {
    let mut rest = bytes.strip_prefix(&PNG_SIGNATURE)?;
    let (kind, ihdr) = next_chunk(&mut rest)?;
    if kind != *b"IHDR" || ihdr.len() != 13 {
        return None;
    }
    let width = u32::from_be_bytes(ihdr[0..4].try_into().ok()?) as usize;
    let height = u32::from_be_bytes(ihdr[4..8].try_into().ok()?) as usize;
    let (depth, color, compression, filter, interlace) =
        (ihdr[8], ihdr[9], ihdr[10], ihdr[11], ihdr[12]);
    if !matches!(depth, 1 | 2 | 4 | 8)
        || color != 0
        || compression != 0
        || filter != 0
        || interlace != 0
        || !(1..=PLAIN_MAX_SIDE).contains(&width)
        || !(1..=PLAIN_MAX_SIDE).contains(&height)
    {
        return None;
    }
    PLAIN_SCRATCH.with_borrow_mut(|scratch| {
        let PlainScratch {
            idat,
            raw,
            inflater,
        } = scratch;
        // The image data: one IDAT chunk in place, or several joined.
        let mut single: Option<&[u8]> = None;
        idat.clear();
        let mut idat_done = false;
        loop {
            let (kind, data) = next_chunk(&mut rest)?;
            match &kind {
                b"IDAT" => {
                    if idat_done {
                        return None;
                    }
                    match single.take() {
                        None if idat.is_empty() => single = Some(data),
                        Some(first) => {
                            idat.extend_from_slice(first);
                            idat.extend_from_slice(data);
                        }
                        None => idat.extend_from_slice(data),
                    }
                }
                b"IEND" if data.is_empty() && rest.is_empty() => break,
                // Ancillary chunks (lower-case first letter) do not change the pixels
                // of a grayscale image decoded without transformations.
                _ if kind[0].is_ascii_lowercase() => {
                    idat_done |= single.is_some() || !idat.is_empty();
                }
                _ => return None,
            }
        }
        let data = single.unwrap_or(&idat[..]);
        let line = (width * usize::from(depth)).div_ceil(8);
        let stride = line + 1;
        raw.clear();
        raw.resize(stride * height, 0);
        let inflater = inflater.get_or_insert_with(|| flate2::Decompress::new(true));
        inflater.reset(true);
        let status = inflater
            .decompress(data, raw, flate2::FlushDecompress::Finish)
            .ok()?;
        if status != flate2::Status::StreamEnd || inflater.total_out() != raw.len() as u64 {
            return None;
        }
        let layout = Layout {
            width,
            height,
            binary: depth == 1,
        };
        let mut own = Vec::new();
        let (pixels, in_slot) = match slot {
            Some(Slot {
                pixels,
                layout: slot_layout,
            }) if slot_layout == layout => (pixels, true),
            _ => {
                own.resize(layout.len(), 0);
                (&mut own[..], false)
            }
        };
        let mut prev: &[u8] = &[];
        for (row, out) in raw
            .chunks_exact_mut(stride)
            .zip(pixels.chunks_exact_mut(layout.row_bytes()))
        {
            let (filter, row) = row.split_first_mut()?;
            unfilter_row(*filter, row, prev)?;
            if layout.binary {
                ink_bits_from_png_row(row, width, out);
            } else {
                unpack_gray_row(row, depth, out);
            }
            prev = row;
        }
        Some(if in_slot {
            Decoded::InSlot
        } else {
            Decoded::Image(GrayImage {
                layout,
                bytes: Bytes::Own(own),
            })
        })
    })
}

/// Splits the next chunk off `rest` as (type, data) after checking its CRC.
fn next_chunk<'a>(rest: &mut &'a [u8]) -> Option<([u8; 4], &'a [u8])> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let body = rest.get(4..8 + len)?;
    let crc = u32::from_be_bytes(rest.get(8 + len..12 + len)?.try_into().ok()?);
    if crc32fast::hash(body) != crc {
        return None;
    }
    *rest = &rest[12 + len..];
    let (kind, data) = body.split_at(4);
    Some((kind.try_into().ok()?, data))
}

/// Reverses a PNG row filter (one byte per pixel, i.e. grayscale of at most 8 bits)
/// in place; `prev` is the previous unfiltered row, empty for the first. `None` for
/// an unknown filter type.
fn unfilter_row(filter: u8, row: &mut [u8], prev: &[u8]) -> Option<()> {
    let up = |i: usize| prev.get(i).copied().unwrap_or(0);
    match filter {
        0 => {}
        1 => {
            for i in 1..row.len() {
                row[i] = row[i].wrapping_add(row[i - 1]);
            }
        }
        2 => {
            for (i, p) in row.iter_mut().enumerate() {
                *p = p.wrapping_add(up(i));
            }
        }
        3 => {
            for i in 0..row.len() {
                let left = if i > 0 { u16::from(row[i - 1]) } else { 0 };
                row[i] = row[i].wrapping_add(((left + u16::from(up(i))) / 2) as u8);
            }
        }
        4 => {
            for i in 0..row.len() {
                let (left, upleft) = if i > 0 {
                    (row[i - 1], up(i - 1))
                } else {
                    (0, 0)
                };
                row[i] = row[i].wrapping_add(paeth(left, up(i), upleft));
            }
        }
        _ => return None,
    }
    Some(())
}

/// The Paeth predictor of the PNG specification.
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let p = ia + ib - ic;
    let (pa, pb, pc) = ((p - ia).abs(), (p - ib).abs(), (p - ic).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Per-thread buffers of the direct path.
#[derive(Default)]
struct PlainScratch {
    /// The joined data of several IDAT chunks.
    idat: Vec<u8>,
    /// The inflated, filtered rows.
    raw: Vec<u8>,
    /// A zlib inflater, reset for each image.
    inflater: Option<flate2::Decompress>,
}

thread_local! {
    static PLAIN_SCRATCH: std::cell::RefCell<PlainScratch> =
        std::cell::RefCell::new(PlainScratch::default());
}

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
        assert_eq!(img.pixels()[..], [0, 255, 0, 0, 255, 255, 255, 255]);
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

    fn encode_filtered(
        width: u32,
        height: u32,
        depth: png::BitDepth,
        filter: png::Filter,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(depth);
        enc.set_filter(filter);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    /// A chunk with its length and CRC.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out
    }

    /// The chunks of a PNG as (type, data).
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut rest = &png[8..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (kind, data) = next_chunk(&mut rest).unwrap();
            out.push((kind, data.to_vec()));
        }
        out
    }

    fn assemble(parts: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut out = PNG_SIGNATURE.to_vec();
        for (kind, data) in parts {
            out.extend(chunk(kind, data));
        }
        out
    }

    #[test]
    fn direct_path_matches_the_png_crate() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let mut taken = 0;
        for (depth, bits) in [
            (png::BitDepth::One, 1),
            (png::BitDepth::Two, 2),
            (png::BitDepth::Four, 4),
            (png::BitDepth::Eight, 8),
        ] {
            for filter in [
                png::Filter::NoFilter,
                png::Filter::Sub,
                png::Filter::Up,
                png::Filter::Avg,
                png::Filter::Paeth,
                png::Filter::Adaptive,
            ] {
                for width in [1u32, 3, 8, 11, 17, 105] {
                    let height = rng.random_range(1..=9u32);
                    let line = (width as usize * bits).div_ceil(8);
                    let data: Vec<u8> = (0..line * height as usize).map(|_| rng.random()).collect();
                    let bytes = encode_filtered(width, height, depth, filter, &data);
                    let direct = decode_plain_gray(&bytes).expect("a plain grayscale PNG");
                    let generic = decode_png_generic(&bytes, Path::new("t.png")).unwrap();
                    assert_eq!(direct, generic, "{depth:?} {filter:?} {width}x{height}");
                    taken += 1;
                }
            }
        }
        assert_eq!(taken, 4 * 6 * 6);
    }

    #[test]
    fn split_image_data_and_ancillary_chunks_are_handled() {
        let data: Vec<u8> = (0..14 * 30).map(|i| (i * 7 % 251) as u8).collect();
        let bytes = encode_filtered(105, 30, png::BitDepth::One, png::Filter::Paeth, &data);
        let want = decode_png_generic(&bytes, Path::new("t.png")).unwrap();
        let parts = chunks(&bytes);
        let idat = parts.iter().position(|(k, _)| k == b"IDAT").unwrap();
        let mut split = parts.clone();
        let (kind, whole) = split.remove(idat);
        let third = whole.len() / 3;
        for (i, piece) in [
            &whole[..third],
            &whole[third..2 * third],
            &whole[2 * third..],
        ]
        .into_iter()
        .enumerate()
        {
            split.insert(idat + i, (kind, piece.to_vec()));
        }
        split.insert(idat, (*b"tEXt", b"Comment\0hello".to_vec()));
        split.insert(
            split.len() - 1,
            (*b"tIME", vec![7, 223, 10, 20, 18, 49, 29]),
        );
        let bytes = assemble(&split);
        assert_eq!(decode_plain_gray(&bytes).as_ref(), Some(&want));
        assert_eq!(decode_png(&bytes, Path::new("t.png")).unwrap(), want);

        // An ancillary chunk between two IDATs is not valid PNG: left to the crate.
        let mut interleaved = split.clone();
        let second = interleaved.iter().rposition(|(k, _)| k == b"IDAT").unwrap();
        interleaved.insert(second, (*b"tEXt", b"a\0b".to_vec()));
        assert!(decode_plain_gray(&assemble(&interleaved)).is_none());
    }

    #[test]
    fn damaged_files_are_left_to_the_png_crate() {
        let data: Vec<u8> = (0..14 * 20).map(|i| (i * 13 % 256) as u8).collect();
        let good = encode_filtered(105, 20, png::BitDepth::One, png::Filter::NoFilter, &data);
        assert!(decode_plain_gray(&good).is_some());
        let idat = good.windows(4).position(|w| w == b"IDAT").unwrap();
        // A flipped bit in the image data: the chunk CRC no longer matches.
        let mut bad_crc = good.clone();
        bad_crc[idat + 6] ^= 0x10;
        assert!(decode_plain_gray(&bad_crc).is_none());
        assert_eq!(
            decode_png(&bad_crc, Path::new("t.png")).is_err(),
            decode_png_generic(&bad_crc, Path::new("t.png")).is_err()
        );
        // Truncated: no IEND.
        let truncated = &good[..good.len() - 12];
        assert!(decode_plain_gray(truncated).is_none());
        // Data after IEND.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        assert!(decode_plain_gray(&trailing).is_none());
        // Other colour types and interlacing take the generic path.
        let rgb = encode(2, 1, png::ColorType::Rgb, png::BitDepth::Eight, &[0; 6]);
        assert!(decode_plain_gray(&rgb).is_none());
        assert_eq!(
            decode_png(&rgb, Path::new("t.png")).unwrap().pixels()[..],
            [255, 255]
        );
    }

    /// Random pixels, each 0 or 255.
    fn binary_pixels(rng: &mut impl rand::Rng, w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|_| if rng.random_bool(0.3) { 255 } else { 0 })
            .collect()
    }

    #[test]
    fn binary_images_give_the_pixels_they_were_made_from() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for (w, h) in [(1, 1), (7, 3), (8, 2), (9, 4), (16, 1), (17, 5), (105, 105)] {
            let pixels = binary_pixels(&mut rng, w, h);
            let bytes = GrayImage::from_pixels(w, h, pixels.clone()).unwrap();
            let bits = bytes.to_binary().unwrap();
            assert!(bits.is_binary());
            assert_eq!(bits.bytes().len(), w.div_ceil(8) * h);
            assert_eq!(*bits.pixels(), pixels[..], "{w}x{h}");
            assert_eq!(bits, bytes);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(bits.get(x, y), pixels[y * w + x]);
                }
            }
            let (mut from_bits, mut from_bytes) = (vec![f32::NAN; w * h], vec![0.5; w * h]);
            bits.write_f32(&mut from_bits);
            bytes.write_f32(&mut from_bytes);
            assert_eq!(from_bits, from_bytes);
            // The same bits with the unused ones set are the same image.
            let mut raw = bits.bytes().to_vec();
            if w % 8 != 0 {
                for row in raw.chunks_exact_mut(w.div_ceil(8)) {
                    *row.last_mut().unwrap() |= 0xff >> (w % 8);
                }
            }
            assert_eq!(GrayImage::from_bits(w, h, raw).unwrap(), bits);
            // Writing unpacks to a byte per pixel.
            let mut edited = bits.clone();
            edited.pixels_mut()[0] = 17;
            assert!(!edited.is_binary());
            assert_eq!(edited.get(0, 0), 17);
            assert_ne!(edited, bits);
        }
        assert!(GrayImage::from_bits(9, 2, vec![0; 3]).is_none());
        let grey = GrayImage::from_pixels(2, 1, vec![255, 128]).unwrap();
        assert!(grey.to_binary().is_none());
        assert_ne!(
            GrayImage::from_pixels(2, 1, vec![255, 0]).unwrap(),
            GrayImage::from_pixels(1, 2, vec![255, 0])
                .unwrap()
                .to_binary()
                .unwrap()
        );
    }

    #[test]
    fn one_bit_pngs_decode_to_binary_images_on_both_paths() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (w, h) in [(1, 1), (11, 3), (105, 105)] {
            let pixels = binary_pixels(&mut rng, w, h);
            let want = GrayImage::from_pixels(w, h, pixels).unwrap();
            // PNG rows: 1 = white.
            let mut rows = vec![0u8; w.div_ceil(8) * h];
            for y in 0..h {
                for x in 0..w {
                    if want.get(x, y) == 0 {
                        rows[y * w.div_ceil(8) + x / 8] |= 0x80 >> (x % 8);
                    }
                }
            }
            let png = encode(
                w as u32,
                h as u32,
                png::ColorType::Grayscale,
                png::BitDepth::One,
                &rows,
            );
            let layout = png_layout(&png).unwrap();
            assert_eq!((layout.width, layout.height, layout.binary), (w, h, true));
            for got in [
                decode_png(&png, Path::new("t.png")).unwrap(),
                decode_png_generic(&png, Path::new("t.png")).unwrap(),
            ] {
                assert!(got.is_binary());
                assert_eq!(got.layout(), layout);
                assert_eq!(got, want);
            }
        }
        // Deeper grayscale stays a byte per pixel.
        let two_bit = encode(3, 1, png::ColorType::Grayscale, png::BitDepth::Two, &[0]);
        assert!(!png_layout(&two_bit).unwrap().binary);
        assert!(
            !decode_png(&two_bit, Path::new("t.png"))
                .unwrap()
                .is_binary()
        );
    }

    #[test]
    fn shrinking_averages_blocks() {
        // 6×3 by 3: two blocks, 9 and 3 inked pixels of 9.
        let mut pixels = vec![0u8; 18];
        for x in 0..3 {
            for y in 0..3 {
                pixels[y * 6 + x] = 255;
            }
            pixels[6 + 3 + x] = 255;
        }
        let image = GrayImage::from_pixels(6, 3, pixels).unwrap();
        let want = GrayImage::from_pixels(2, 1, vec![255, 85]).unwrap();
        assert_eq!(image.shrink(3), Some(want.clone()));
        assert_eq!(image.to_binary().unwrap().shrink(3), Some(want));
        assert_eq!(image.shrink(1), Some(image.clone()));
        // Rounded to the nearest: one pixel of 255 in 2×2 is 63.75.
        let one = GrayImage::from_pixels(2, 2, vec![255, 0, 0, 0]).unwrap();
        assert_eq!(one.shrink(2).unwrap().pixels()[..], [64]);
        assert!(image.shrink(0).is_none() && image.shrink(2).is_none());
        assert!(image.shrink(4).is_none());
        // To a side: square images whose side it divides.
        let square = GrayImage::from_pixels(6, 6, (0..36).collect()).unwrap();
        assert_eq!(square.shrink_to(2), square.shrink(3));
        assert_eq!(square.shrink_to(6), Some(square.clone()));
        // Other sides no larger than the image's are resampled by area.
        assert_eq!(square.shrink_to(4), square.resize_area(4, 4));
        assert_eq!(square.shrink_to(4).unwrap().width(), 4);
        for side in [0, 7, 12] {
            assert!(square.shrink_to(side).is_none(), "{side}");
        }
        assert!(image.shrink_to(1).is_none(), "not square");
    }

    #[test]
    fn area_resampling_weighs_partly_covered_pixels() {
        // 5×5 → 2×2: output 0 covers source [0, 2.5): pixels 0 and 1 whole, 2 half;
        // output 1 covers [2.5, 5): 2 half, 3 and 4 whole. With p(x, y) = 10(5y + x),
        // the mean x under output 0 is (0 + 1 + 2·0.5)/2.5 = 0.8 and under output 1
        // (2·0.5 + 3 + 4)/2.5 = 3.2 (likewise y), and the mean of p is 10(5ȳ + x̄).
        let five = GrayImage::from_pixels(5, 5, (0..25).map(|i| 10 * i as u8).collect()).unwrap();
        let want = [
            10.0 * (5.0 * 0.8 + 0.8),
            10.0 * (5.0 * 0.8 + 3.2),
            10.0 * (5.0 * 3.2 + 0.8),
            10.0 * (5.0 * 3.2 + 3.2),
        ];
        let want: Vec<u8> = want.iter().map(|&v: &f64| v.round() as u8).collect();
        assert_eq!(want, [48, 72, 168, 192]);
        assert_eq!(five.resize_area(2, 2).unwrap().pixels()[..], want[..]);

        // 4×4 → 3×3: each output spans 4/3 source pixels; in thirds of a pixel the
        // weights are [3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 1, 3] on each axis, 16 in all.
        let mut pixels = vec![0u8; 16];
        pixels[0] = 255; // (0, 0)
        pixels[2] = 8; // (2, 0)
        pixels[5] = 255; // (1, 1)
        pixels[15] = 90; // (3, 3)
        let four = GrayImage::from_pixels(4, 4, pixels).unwrap();
        let want = [
            // (0,0): 255·3·3 + 255·1·1; (1,0): 255·2·1 + 8·2·3; (2,0): 8·1·3 = 1.5, a
            // half, rounded up.
            (255.0 * 9.0 + 255.0) / 16.0,
            (255.0 * 2.0 + 8.0 * 6.0) / 16.0,
            8.0 * 3.0 / 16.0,
            // (0,1): 255·1·2; (1,1): 255·2·2.
            255.0 * 2.0 / 16.0,
            255.0 * 4.0 / 16.0,
            0.0,
            0.0,
            0.0,
            // (2,2): 90·3·3.
            90.0 * 9.0 / 16.0,
        ];
        let want: Vec<u8> = want.iter().map(|&v: &f64| v.round() as u8).collect();
        assert_eq!(want, [159, 35, 2, 32, 64, 0, 0, 0, 51]);
        assert_eq!(four.resize_area(3, 3).unwrap().pixels()[..], want[..]);
        // The bit-per-pixel form resamples the same.
        let binary =
            GrayImage::from_pixels(4, 4, (0..16).map(|i| [0, 255][i % 3 % 2]).collect()).unwrap();
        assert_eq!(
            binary.to_binary().unwrap().resize_area(3, 3),
            binary.resize_area(3, 3)
        );

        // Upscaling 2×1 → 3×1: the middle output straddles both pixels equally.
        let two = GrayImage::from_pixels(2, 1, vec![0, 255]).unwrap();
        assert_eq!(two.resize_area(3, 1).unwrap().pixels()[..], [0, 128, 255]);
        let dot = GrayImage::from_pixels(1, 1, vec![77]).unwrap();
        assert_eq!(dot.resize_area(3, 2).unwrap().pixels()[..], [77; 6]);
        // Non-square targets.
        assert_eq!(
            five.resize_area(5, 1).unwrap().pixels()[..],
            [100, 110, 120, 130, 140]
        );

        assert!(five.resize_area(0, 2).is_none() && five.resize_area(2, 0).is_none());
        assert!(GrayImage::blank(0, 3).resize_area(2, 2).is_none());
        assert_eq!(five.resize_area(5, 5), Some(five.clone()));
    }

    #[test]
    fn area_resampling_by_a_whole_factor_is_shrink() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (w, h, factor) in [(12, 9, 3), (12, 12, 2), (8, 4, 4), (105, 105, 3)] {
            let image =
                GrayImage::from_pixels(w, h, (0..w * h).map(|_| rng.random()).collect()).unwrap();
            let area = image.resize_area(w / factor, h / factor).unwrap();
            assert_eq!(Some(area), image.shrink(factor), "{w}x{h} by {factor}");
        }
    }

    #[test]
    fn area_resampling_keeps_constants_and_ink() {
        use rand::{Rng, SeedableRng};
        for value in [0, 1, 200, 255] {
            let flat = GrayImage::from_pixels(105, 105, vec![value; 105 * 105]).unwrap();
            let small = flat.shrink_to(28).unwrap();
            assert_eq!((small.width(), small.height()), (28, 28));
            assert!(small.pixels().iter().all(|&p| p == value), "{value}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let image =
            GrayImage::from_pixels(105, 105, (0..105 * 105).map(|_| rng.random()).collect())
                .unwrap();
        let small = image.shrink_to(28).unwrap();
        let sum = |im: &GrayImage| im.pixels().iter().map(|&p| f64::from(p)).sum::<f64>();
        // Area resampling keeps the mean exactly before rounding, which moves each of
        // the 784 outputs by at most 1/2.
        let exact = sum(&image) * (28.0 * 28.0) / (105.0 * 105.0);
        let err = (sum(&small) - exact).abs();
        assert!(err <= 0.5 * 784.0, "{err}");
        // A blob of ink moves, but keeps its mass (here exactly: 15·15 pixels of 255
        // at a multiple of 3.75 are 4·4 whole outputs).
        let mut blob = vec![0u8; 105 * 105];
        for y in 15..30 {
            blob[y * 105 + 15..y * 105 + 30].fill(255);
        }
        let blob = GrayImage::from_pixels(105, 105, blob)
            .unwrap()
            .shrink_to(28)
            .unwrap();
        assert_eq!(sum(&blob), 16.0 * 255.0);
    }

    #[test]
    fn rotations_turn_counter_clockwise() {
        // 2 wide, 3 high:  1 2 / 3 4 / 5 6.
        let image = GrayImage::from_pixels(2, 3, vec![1, 2, 3, 4, 5, 6]).unwrap();
        // A quarter turn left: the right column becomes the top row.
        let once = image.rotate90(1);
        assert_eq!((once.width(), once.height()), (3, 2));
        assert_eq!(once.pixels()[..], [2, 4, 6, 1, 3, 5]);
        let twice = image.rotate90(2);
        assert_eq!((twice.width(), twice.height()), (2, 3));
        assert_eq!(twice.pixels()[..], [6, 5, 4, 3, 2, 1]);
        let thrice = image.rotate90(3);
        assert_eq!((thrice.width(), thrice.height()), (3, 2));
        assert_eq!(thrice.pixels()[..], [5, 3, 1, 6, 4, 2]);
        assert_eq!(once.rotate90(1), twice);
        assert_eq!(twice.rotate90(1), thrice);
        assert_eq!(thrice.rotate90(1), image);
        assert_eq!(image.rotate90(0), image);
        assert_eq!(image.rotate90(4), image);
        assert_eq!(image.rotate90(6), twice);
        // Mirrored: left and right swap, then the same turns.
        let mirror = image.turned(4);
        for y in 0..image.height() {
            for x in 0..image.width() {
                assert_eq!(
                    mirror.pixels()[y * image.width() + x],
                    image.pixels()[y * image.width() + image.width() - 1 - x]
                );
            }
        }
        assert_eq!(mirror.turned(4), image);
        assert_eq!(image.turned(5), mirror.rotate90(1));
        assert_eq!(image.turned(3), thrice);
    }

    #[test]
    fn binary_images_rotate_like_their_bytes() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (w, h) in [(11, 5), (8, 9), (105, 105), (1, 17)] {
            let bytes = GrayImage::from_pixels(w, h, binary_pixels(&mut rng, w, h)).unwrap();
            let bits = bytes.to_binary().unwrap();
            let mut turned = bits.clone();
            for turns in 0..4u8 {
                let got = bits.rotate90(turns);
                assert!(got.is_binary());
                assert_eq!(got, bytes.rotate90(turns), "{w}x{h} {turns}");
                assert_eq!(got, turned, "{w}x{h} {turns}");
                turned = turned.rotate90(1);
            }
            assert_eq!(turned, bits);
        }
    }

    #[test]
    fn rgba_transparent_is_paper() {
        let data = [0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255];
        let bytes = encode(3, 1, png::ColorType::Rgba, png::BitDepth::Eight, &data);
        let img = decode_png(&bytes, Path::new("t.png")).unwrap();
        assert_eq!(img.pixels()[..], [255, 0, 0]);
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
