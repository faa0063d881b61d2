//! Koch et al.'s (2015) affine distortions, drawn exactly from the paper's distribution
//! and applied fast.
//!
//! # The distribution
//! Koch, Zemel and Salakhutdinov, *Siamese Neural Networks for One-shot Image
//! Recognition* (2015), §4.1, augment each training image with a random affine
//! transform `T = (θ, ρx, ρy, sx, sy, tx, ty)`: rotation `θ ∈ [−10°, 10°]`, shears
//! `ρx, ρy ∈ [−0.3, 0.3]`, scales `sx, sy ∈ [0.8, 1.2]` and translations
//! `tx, ty ∈ [−2, 2]` pixels, where "each of these components is included with
//! probability 0.5". We read that as **four independent components** (rotation `θ`;
//! shear `(ρx, ρy)`; scale `(sx, sy)`; translation `(tx, ty)`), each included
//! independently with probability 0.5, its values then uniform within their ranges,
//! and the identity otherwise. [`KochDistortion::default`] is that distribution;
//! every range and the inclusion probability are configurable.
//!
//! # The transform
//! An [`AffineParams`] acts **about the image centre** `c = ((w − 1)/2, (h − 1)/2)`
//! (pixel centres at integer coordinates, `x` to the right, `y` down). A source point
//! `p` goes to
//!
//! ```text
//! p' = R(θ) · Sh(ρx, ρy) · S(sx, sy) · (p − c) + c + (tx, ty)
//! ```
//!
//! that is: scale first, then shear, then rotate, then translate
//! (`translate ∘ rotate ∘ shear ∘ scale`), with
//! `S = [[sx, 0], [0, sy]]`, `Sh = [[1, ρx], [ρy, 1]]` and
//! `R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]]`, so that a positive `θ` turns the
//! character counter-clockwise *as seen on screen* (the convention of torchvision's
//! `RandomAffine`). Positive `tx` moves ink right, positive `ty` moves it down.
//!
//! # The warp
//! Output pixels are computed by inverse mapping with bilinear sampling, reading zero
//! (no ink) outside the source. The fast path is exact with respect to that naive
//! definition (to float rounding, ~1e-7): identity parameters are a plain
//! `u8 → f32` conversion; otherwise only the part of each output row whose preimage
//! meets the source's ink bounding box (grown by the bilinear footprint) is sampled,
//! from a zero-padded copy of that box so the inner loop has no edge cases, and the
//! rest of the row is zero-filled. On x86-64 CPUs with AVX2 (detected at run time)
//! the rows' spans are computed four at a time and their samples eight at a time,
//! with one gather per eight 2×2 footprints; elsewhere, samples whose footprint holds
//! no ink (most of them: strokes are thin) are 0.0 after one look-up in a map of
//! inked footprints. Both give the same bits: every sample is the same sequence of
//! IEEE operations.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::image::unpack_bits;
use crate::{DataError, GrayImage};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// One affine distortion, in the paper's parameterisation; see the [module
/// documentation](self) for the composition order and conventions.
///
/// `Default` is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AffineParams {
    /// Rotation `θ` in degrees; positive is counter-clockwise on screen.
    pub rotation_deg: f64,
    /// Horizontal shear `ρx`: `x' = x + ρx · y` (before rotation).
    pub shear_x: f64,
    /// Vertical shear `ρy`: `y' = ρy · x + y` (before rotation).
    pub shear_y: f64,
    /// Horizontal scale `sx` (1 = unchanged).
    pub scale_x: f64,
    /// Vertical scale `sy` (1 = unchanged).
    pub scale_y: f64,
    /// Horizontal translation `tx` in pixels; positive moves ink right.
    pub translate_x: f64,
    /// Vertical translation `ty` in pixels; positive moves ink down.
    pub translate_y: f64,
}

impl Default for AffineParams {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl AffineParams {
    /// The transform that changes nothing.
    pub const IDENTITY: AffineParams = AffineParams {
        rotation_deg: 0.0,
        shear_x: 0.0,
        shear_y: 0.0,
        scale_x: 1.0,
        scale_y: 1.0,
        translate_x: 0.0,
        translate_y: 0.0,
    };

    /// A pure translation by `(tx, ty)` pixels.
    pub fn translation(tx: f64, ty: f64) -> Self {
        AffineParams {
            translate_x: tx,
            translate_y: ty,
            ..Self::IDENTITY
        }
    }

    /// A pure rotation by `deg` degrees (counter-clockwise on screen).
    pub fn rotation(deg: f64) -> Self {
        AffineParams {
            rotation_deg: deg,
            ..Self::IDENTITY
        }
    }

    /// Whether every component is exactly the identity's (the warp is then a copy).
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// The linear part `A = R(θ) · Sh(ρx, ρy) · S(sx, sy)`, row-major.
    pub fn linear(&self) -> [[f64; 2]; 2] {
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let r = [[cos, sin], [-sin, cos]];
        let sh = [[1.0, self.shear_x], [self.shear_y, 1.0]];
        let s = [[self.scale_x, 0.0], [0.0, self.scale_y]];
        mul2(&mul2(&r, &sh), &s)
    }

    /// The forward 2×3 matrix for a `width × height` image: source pixel coordinates
    /// `(x, y)` map to `(m[0][0]·x + m[0][1]·y + m[0][2], m[1][0]·x + m[1][1]·y +
    /// m[1][2])` in the output. It includes the centring about
    /// `((width − 1)/2, (height − 1)/2)`.
    pub fn matrix(&self, width: usize, height: usize) -> [[f64; 3]; 2] {
        let a = self.linear();
        let (cx, cy) = centre(width, height);
        // p' = A (p − c) + c + t  ⇒  offset = c + t − A c.
        [
            [
                a[0][0],
                a[0][1],
                cx + self.translate_x - (a[0][0] * cx + a[0][1] * cy),
            ],
            [
                a[1][0],
                a[1][1],
                cy + self.translate_y - (a[1][0] * cx + a[1][1] * cy),
            ],
        ]
    }

    /// The inverse 2×3 matrix (output pixel → source pixel), which the warp uses;
    /// `None` when the transform is singular or not finite.
    pub fn inverse_matrix(&self, width: usize, height: usize) -> Option<[[f64; 3]; 2]> {
        let a = self.linear();
        let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
        if !det.is_finite() || det.abs() < 1e-12 {
            return None;
        }
        let inv = [
            [a[1][1] / det, -a[0][1] / det],
            [-a[1][0] / det, a[0][0] / det],
        ];
        let (cx, cy) = centre(width, height);
        // p = A⁻¹ (p' − c − t) + c  ⇒  offset = c − A⁻¹ (c + t).
        let (qx, qy) = (cx + self.translate_x, cy + self.translate_y);
        let m = [
            [inv[0][0], inv[0][1], cx - (inv[0][0] * qx + inv[0][1] * qy)],
            [inv[1][0], inv[1][1], cy - (inv[1][0] * qx + inv[1][1] * qy)],
        ];
        m.iter().flatten().all(|v| v.is_finite()).then_some(m)
    }
}

fn mul2(a: &[[f64; 2]; 2], b: &[[f64; 2]; 2]) -> [[f64; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

fn centre(width: usize, height: usize) -> (f64, f64) {
    ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0)
}

/// A configuration that [`KochDistortion::validate`] rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid Koch distortion: {0}")]
pub struct InvalidDistortion(String);

/// The distribution of Koch et al.'s distortions: four components (rotation, shear,
/// scale, translation), each included independently with probability
/// [`p_include`](Self::p_include) and then uniform over its ranges (`[min, max]`).
///
/// `Default` is the paper's: p = 0.5, θ ∈ [−10°, 10°], ρ ∈ [−0.3, 0.3],
/// s ∈ [0.8, 1.2], t ∈ [−2, 2] px. Missing fields in a serialised config take these
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KochDistortion {
    /// Probability with which each of the four components is included.
    pub p_include: f64,
    /// Range of the rotation `θ`, degrees.
    pub rotation_deg: [f64; 2],
    /// Range of the horizontal shear `ρx`.
    pub shear_x: [f64; 2],
    /// Range of the vertical shear `ρy`.
    pub shear_y: [f64; 2],
    /// Range of the horizontal scale `sx`.
    pub scale_x: [f64; 2],
    /// Range of the vertical scale `sy`.
    pub scale_y: [f64; 2],
    /// Range of the horizontal translation `tx`, pixels.
    pub translate_x: [f64; 2],
    /// Range of the vertical translation `ty`, pixels.
    pub translate_y: [f64; 2],
}

impl Default for KochDistortion {
    fn default() -> Self {
        Self::PAPER
    }
}

impl KochDistortion {
    /// Koch et al. (2015), §4.1.
    pub const PAPER: KochDistortion = KochDistortion {
        p_include: 0.5,
        rotation_deg: [-10.0, 10.0],
        shear_x: [-0.3, 0.3],
        shear_y: [-0.3, 0.3],
        scale_x: [0.8, 1.2],
        scale_y: [0.8, 1.2],
        translate_x: [-2.0, 2.0],
        translate_y: [-2.0, 2.0],
    };

    /// The paper's ranges with no component ever included: every draw is the identity.
    pub fn none() -> Self {
        KochDistortion {
            p_include: 0.0,
            ..Self::PAPER
        }
    }

    /// Rotation only, always applied, uniform in `[min_deg, max_deg]` (torchvision's
    /// `RandomAffine(degrees)` is `rotation_only(-degrees, degrees)`).
    pub fn rotation_only(min_deg: f64, max_deg: f64) -> Self {
        KochDistortion {
            p_include: 1.0,
            rotation_deg: [min_deg, max_deg],
            shear_x: [0.0, 0.0],
            shear_y: [0.0, 0.0],
            scale_x: [1.0, 1.0],
            scale_y: [1.0, 1.0],
            translate_x: [0.0, 0.0],
            translate_y: [0.0, 0.0],
        }
    }

    /// Checks that the probability is in `[0, 1]` and every range is finite with
    /// `min <= max`. [`sample`](Self::sample) panics on configurations this rejects.
    pub fn validate(&self) -> Result<(), InvalidDistortion> {
        if !(0.0..=1.0).contains(&self.p_include) {
            return Err(InvalidDistortion(format!(
                "p_include = {} is not in [0, 1]",
                self.p_include
            )));
        }
        for (name, [lo, hi]) in [
            ("rotation_deg", self.rotation_deg),
            ("shear_x", self.shear_x),
            ("shear_y", self.shear_y),
            ("scale_x", self.scale_x),
            ("scale_y", self.scale_y),
            ("translate_x", self.translate_x),
            ("translate_y", self.translate_y),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(InvalidDistortion(format!(
                    "{name} = [{lo}, {hi}] is not a finite range with min <= max"
                )));
            }
        }
        Ok(())
    }

    /// Draws one transform. The draws are, in this order: include rotation?, `θ`;
    /// include shear?, `ρx`, `ρy`; include scale?, `sx`, `sy`; include translation?,
    /// `tx`, `ty` (values drawn only for included components).
    ///
    /// # Panics
    /// If the configuration is invalid (see [`validate`](Self::validate)).
    pub fn sample(&self, rng: &mut impl Rng) -> AffineParams {
        let mut t = AffineParams::IDENTITY;
        let p = self.p_include;
        if rng.random_bool(p) {
            t.rotation_deg = uniform(rng, self.rotation_deg);
        }
        if rng.random_bool(p) {
            t.shear_x = uniform(rng, self.shear_x);
            t.shear_y = uniform(rng, self.shear_y);
        }
        if rng.random_bool(p) {
            t.scale_x = uniform(rng, self.scale_x);
            t.scale_y = uniform(rng, self.scale_y);
        }
        if rng.random_bool(p) {
            t.translate_x = uniform(rng, self.translate_x);
            t.translate_y = uniform(rng, self.translate_y);
        }
        t
    }
}

fn uniform(rng: &mut impl Rng, [lo, hi]: [f64; 2]) -> f64 {
    assert!(
        lo.is_finite() && hi.is_finite() && lo <= hi,
        "invalid range [{lo}, {hi}]"
    );
    if lo == hi {
        lo
    } else {
        rng.random_range(lo..=hi)
    }
}

/// The random stream of image `index` of a batch drawn with `seed`: ChaCha8 seeded
/// from `seed`, on stream `index`. Streams are independent, and a batch's result does
/// not depend on how its images are spread over threads.
pub fn image_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// The transforms [`distort_batch`] applies to a batch of `n` images with `seed`.
pub fn sample_batch_params(distortion: &KochDistortion, seed: u64, n: usize) -> Vec<AffineParams> {
    (0..n)
        .map(|i| distortion.sample(&mut image_rng(seed, i as u64)))
        .collect()
}

/// Draws a transform from `distortion` and warps `src` with it into `out` (same size,
/// ink = 1.0); returns the transform.
pub fn distort_into(
    src: &GrayImage,
    distortion: &KochDistortion,
    rng: &mut impl Rng,
    out: &mut [f32],
) -> AffineParams {
    let params = distortion.sample(rng);
    warp_into(src, &params, out);
    params
}

/// Distorts every image of a batch in parallel (rayon), each with its own transform
/// drawn from [`image_rng`]`(seed, i)`. `out` holds the images one after the other,
/// row-major, ink = 1.0: `images.len() × height × width` values. The result depends
/// only on the images, `distortion` and `seed`, never on the number of threads.
///
/// An error, not a panic, if the images differ in size, `out` has the wrong length,
/// or the distortion is invalid.
pub fn distort_batch(
    images: &[&GrayImage],
    distortion: &KochDistortion,
    seed: u64,
    out: &mut [f32],
) -> Result<(), DataError> {
    distortion
        .validate()
        .map_err(|e| DataError::Invalid(e.to_string()))?;
    let (w, h) = images
        .first()
        .map_or((0, 0), |first| (first.width(), first.height()));
    let len = w * h;
    if let Some(im) = images.iter().find(|im| (im.width(), im.height()) != (w, h)) {
        return Err(DataError::Invalid(format!(
            "images of different sizes in one batch: {w}×{h} and {}×{}",
            im.width(),
            im.height()
        )));
    }
    if out.len() != images.len() * len {
        return Err(DataError::Invalid(format!(
            "a batch of {} images of {w}×{h} needs {} output values, got {}",
            images.len(),
            images.len() * len,
            out.len()
        )));
    }
    if len == 0 {
        return Ok(());
    }
    out.par_chunks_mut(len)
        .zip(images.par_iter())
        .enumerate()
        .with_min_len(4)
        .for_each(|(i, (o, im))| {
            let params = distortion.sample(&mut image_rng(seed, i as u64));
            warp_into(im, &params, o);
        });
    Ok(())
}

/// Warps `src` by `params` into a new float image of the same size (ink = 1.0).
pub fn warp(src: &GrayImage, params: &AffineParams) -> Vec<f32> {
    let mut out = vec![0.0; src.width() * src.height()];
    warp_into(src, params, &mut out);
    out
}

/// Padding of the copy of the ink box: the sampled span reaches 1.5 px beyond the
/// box, and the bilinear footprint one more pixel.
const PAD: usize = 2;

/// Each thread's scratch buffers for [`warp_bbox`].
#[derive(Default)]
struct Scratch {
    /// Zero-padded copy of the ink box.
    bytes: Vec<u8>,
    /// A binary source's box rows, unpacked to a byte per pixel.
    unpacked: Vec<u8>,
    /// `footprint[i]` is non-zero iff the 2×2 block of `bytes` whose top-left pixel is
    /// `i` holds ink.
    footprint: Vec<u8>,
    /// The AVX2 kernel's vertical pairs of `bytes`.
    pairs: Vec<u16>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `INK[p]` is the float ink of the byte `p`: `f32::from(p) / 255`, computed exactly as
/// [`GrayImage::write_f32`] does.
static INK: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut p = 0;
    while p < 256 {
        table[p] = p as f32 * (1.0 / 255.0);
        p += 1;
    }
    table
};

/// Warps `src` by `params` into `out` (same size, row-major, ink = 1.0): each output
/// pixel is the source sampled bilinearly at the preimage of its centre, with zero
/// outside the source. A singular transform gives an empty (all-zero) image.
///
/// # Panics
/// If `out.len() != src.width() * src.height()`.
pub fn warp_into(src: &GrayImage, params: &AffineParams, out: &mut [f32]) {
    warp_into_with(src, params, out, true);
}

/// [`warp_into`] with the sampling kernel chosen: the AVX2 one if `simd` and the CPU
/// has AVX2, the portable one otherwise. Both give the same bits.
fn warp_into_with(src: &GrayImage, params: &AffineParams, out: &mut [f32], simd: bool) {
    let (w, h) = (src.width(), src.height());
    assert_eq!(out.len(), w * h, "warp_into: output length");
    if w == 0 || h == 0 {
        return;
    }
    if params.is_identity() {
        src.write_f32(out);
        return;
    }
    let Some(m) = params.inverse_matrix(w, h) else {
        out.fill(0.0);
        return;
    };
    let Some(bbox) = ink_bbox(src) else {
        out.fill(0.0);
        return;
    };
    SCRATCH.with_borrow_mut(|scratch| warp_bbox(src, &m, bbox, scratch, out, simd));
}

/// Inclusive ink bounding box `(x0, y0, x1, y1)`, or `None` for a blank image.
fn ink_bbox(src: &GrayImage) -> Option<(usize, usize, usize, usize)> {
    let layout = src.layout();
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in src.bytes().chunks_exact(layout.row_bytes()).enumerate() {
        let Some(first) = first_nonzero(row) else {
            continue;
        };
        // A row with ink has a last inked byte too.
        let last = last_nonzero(row).unwrap_or(first);
        let (first, last) = if layout.binary {
            // Bits, the most significant first.
            (
                8 * first + row[first].leading_zeros() as usize,
                8 * last + 7 - row[last].trailing_zeros() as usize,
            )
        } else {
            (first, last)
        };
        x0 = x0.min(first);
        x1 = x1.max(last);
        y0 = y0.min(y);
        y1 = y;
    }
    (y0 != usize::MAX).then_some((x0, y0, x1, y1))
}

/// Whether a 32-byte block holds a non-zero byte.
fn block_nonzero(block: &[u8]) -> bool {
    let word = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().expect("8 bytes"));
    word(0) | word(8) | word(16) | word(24) != 0
}

/// Index of the first non-zero byte: 32 bytes at a time past blank stretches, then
/// eight at a time.
fn first_nonzero(row: &[u8]) -> Option<usize> {
    let skip = row
        .chunks_exact(32)
        .position(block_nonzero)
        .unwrap_or(row.len() / 32)
        * 32;
    let row = &row[skip..];
    let mut words = row.chunks_exact(8);
    for (i, c) in words.by_ref().enumerate() {
        let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if word != 0 {
            return Some(skip + i * 8 + (word.trailing_zeros() / 8) as usize);
        }
    }
    let rest = words.remainder();
    let base = skip + row.len() - rest.len();
    rest.iter().position(|&p| p != 0).map(|i| base + i)
}

/// Index of the last non-zero byte: 32 bytes at a time past blank stretches, then
/// eight at a time.
fn last_nonzero(row: &[u8]) -> Option<usize> {
    let skip = row
        .rchunks_exact(32)
        .position(block_nonzero)
        .unwrap_or(row.len() / 32)
        * 32;
    let row = &row[..row.len() - skip];
    let mut words = row.rchunks_exact(8);
    for (i, c) in words.by_ref().enumerate() {
        let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if word != 0 {
            let end = row.len() - i * 8;
            return Some(end - 1 - (word.leading_zeros() / 8) as usize);
        }
    }
    words.remainder().iter().rposition(|&p| p != 0)
}

/// The general warp, given the inverse matrix and the ink box; `simd` picks the AVX2
/// kernel where the CPU has it.
fn warp_bbox(
    src: &GrayImage,
    m: &[[f64; 3]; 2],
    (bx0, by0, bx1, by1): (usize, usize, usize, usize),
    Scratch {
        bytes,
        unpacked,
        footprint,
        pairs,
    }: &mut Scratch,
    out: &mut [f32],
    simd: bool,
) {
    let w = src.width();
    // Zero-padded copy of the box; buffer coordinates are source coordinates minus
    // (ox, oy). TAIL spare bytes let the AVX2 kernel read whole vectors.
    let bw = bx1 - bx0 + 1;
    let pw = bw + 2 * PAD;
    let ph = by1 - by0 + 1 + 2 * PAD;
    let len = pw * ph;
    bytes.clear();
    bytes.resize(len + TAIL, 0);
    let layout = src.layout();
    let src_rows = src.bytes().chunks_exact(layout.row_bytes()).skip(by0);
    let box_rows = bytes[PAD * pw..]
        .chunks_exact_mut(pw)
        .zip(src_rows)
        .take(ph - 2 * PAD);
    if layout.binary {
        // Unpack the bytes that hold the box's columns, then copy those columns.
        let (first, last) = (bx0 / 8, bx1 / 8);
        let skip = bx0 - 8 * first;
        unpacked.resize(8 * (last - first + 1), 0);
        for (dst, row) in box_rows {
            unpack_bits(&row[first..=last], unpacked);
            dst[PAD..PAD + bw].copy_from_slice(&unpacked[skip..skip + bw]);
        }
    } else {
        for (dst, row) in box_rows {
            dst[PAD..PAD + bw].copy_from_slice(&row[bx0..=bx1]);
        }
    }
    // Checked here (a cached look-up) so that the unsafe call below relies on nothing
    // its callers promise.
    let simd = simd && simd_available() && simd_fits(bytes.len());
    if !simd {
        // Which 2×2 footprints hold ink (the last row and column are never a
        // footprint's top-left corner and stay 0). The AVX2 kernel needs no map: it
        // computes every sample.
        footprint.clear();
        footprint.resize(len, 0);
        for ((f, top), bottom) in footprint
            .chunks_exact_mut(pw)
            .zip(bytes.chunks_exact(pw))
            .zip(bytes.chunks_exact(pw).skip(1))
        {
            // Two vectorisable passes: rows, then neighbouring columns.
            for ((f, &t), &b) in f.iter_mut().zip(top).zip(bottom) {
                *f = t | b;
            }
            for i in 0..f.len() - 1 {
                f[i] |= f[i + 1];
            }
            f[pw - 1] = 0;
        }
    }
    let (bytes, footprint) = (&bytes[..], &footprint[..]);
    // A sample can be non-zero only if its 2×2 footprint meets the box, i.e. its
    // source coordinate is in (b0 − 1, b1 + 1). Sample where it is within
    // [b0 − 1.5, b1 + 1.5] (the half-pixel margin absorbs rounding in the span
    // computation); in buffer coordinates that is [0.5, p − 1.5], whose footprint
    // [0, p − 1] lies in the buffer.
    let (du, dv) = (m[0][0], m[1][0]);
    let rows = Rows {
        m: *m,
        ox: bx0 as f64 - PAD as f64,
        oy: by0 as f64 - PAD as f64,
        u_range: (0.5, pw as f64 - 1.5),
        v_range: (0.5, ph as f64 - 1.5),
        last: (w - 1) as f64,
        // Along a row the buffer coordinates step in 32.32 fixed point: exact integer
        // adds, floor by a shift, weight from the low word, and no float-to-int
        // conversions in the loop. Quantisation error: ~1e-8 px over a row. (A step
        // too large for the format only occurs when the span is a single pixel.)
        step: (to_fixed(du), to_fixed(dv)),
    };
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` implies that `simd_available()` found AVX2 on this CPU.
        unsafe { avx2::warp_rows(bytes, pw, pairs, &rows, out) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = pairs;
    // `out[..zeroed]` is written: the zeros between two spans (the end of one row and
    // the start of the next) are filled in one go.
    let mut zeroed = 0;
    for (y, row_start) in (0..out.len()).step_by(w).enumerate() {
        let Some((start, end, u, v)) = rows.span(y) else {
            continue;
        };
        let span = row_start + start..row_start + end;
        out[zeroed..span.start].fill(0.0);
        zeroed = span.end;
        sample_row(bytes, footprint, pw, u, v, rows.step, &mut out[span]);
    }
    out[zeroed..].fill(0.0);
}

/// Where the preimages of the output rows run through the padded box.
struct Rows {
    /// The inverse matrix (output pixel → source pixel).
    m: [[f64; 3]; 2],
    /// Source coordinates of the box's buffer origin.
    ox: f64,
    oy: f64,
    /// The buffer coordinates that are sampled, `[lo, hi]` in `u` and in `v`.
    u_range: (f64, f64),
    v_range: (f64, f64),
    /// The last column of the output, `w − 1`.
    last: f64,
    /// The step of the buffer coordinates along a row, in 32.32 fixed point.
    step: (i64, i64),
}

impl Rows {
    /// Buffer coordinates of the first pixel of output row `fy`: `(ru, rv)`.
    #[inline(always)]
    fn row_origin(&self, fy: f64) -> (f64, f64) {
        let m = &self.m;
        (
            m[0][1] * fy + m[0][2] - self.ox,
            m[1][1] * fy + m[1][2] - self.oy,
        )
    }

    /// The pixels `start..end` of output row `y` that are sampled, and the fixed-point
    /// buffer coordinates of the first; `None` if none is.
    fn span(&self, y: usize) -> Option<(usize, usize, i64, i64)> {
        let (ru, rv) = self.row_origin(y as f64);
        let (du, dv) = (self.m[0][0], self.m[1][0]);
        let (mut t0, mut t1) = (0.0f64, self.last);
        for (r, d, (lo, hi)) in [(ru, du, self.u_range), (rv, dv, self.v_range)] {
            if d == 0.0 {
                if !(lo..=hi).contains(&r) {
                    t1 = -1.0;
                }
            } else {
                let (a, b) = ((lo - r) / d, (hi - r) / d);
                t0 = t0.max(a.min(b));
                t1 = t1.min(a.max(b));
            }
        }
        // Pixels t0..=t1 (integers) are sampled; both are in [0, w − 1] if any is.
        if t0 > t1 {
            return None;
        }
        let (start, end) = (ceil_nonneg(t0), floor_nonneg(t1) + 1);
        (start < end).then(|| {
            let (u, v) = self.first_sample(start, ru, rv);
            (start, end, u, v)
        })
    }

    /// The fixed-point buffer coordinates of pixel `start` of the row whose origin is
    /// `(ru, rv)`.
    #[inline(always)]
    fn first_sample(&self, start: usize, ru: f64, rv: f64) -> (i64, i64) {
        let first = start as f64;
        (
            to_fixed(ru + first * self.m[0][0]),
            to_fixed(rv + first * self.m[1][0]),
        )
    }
}

#[cfg(target_arch = "x86_64")]
use avx2::TAIL;
/// Spare bytes after the padded box (none needed without the AVX2 kernel).
#[cfg(not(target_arch = "x86_64"))]
const TAIL: usize = 0;

/// Whether the AVX2 kernel runs on this CPU (checked once; cached by std).
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2 kernel can address a padded box of `len` bytes.
fn simd_fits(len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::fits(len)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = len;
        false
    }
}

/// Samples `out.len()` consecutive pixels of an output row from the padded box `bytes`
/// (row length `pw`), starting at the fixed-point buffer coordinates `(u, v)` and
/// stepping by `step`. Most samples of a character fall on paper: those whose 2×2
/// footprint holds no ink (one look-up in `footprint`) are exactly 0.0 — what the
/// arithmetic below gives for four zeros — and skip it.
fn sample_row(
    bytes: &[u8],
    footprint: &[u8],
    pw: usize,
    mut u: i64,
    mut v: i64,
    (su, sv): (i64, i64),
    out: &mut [f32],
) {
    for o in out {
        // u, v ≥ 0.5 − ε > 0 here, so the shift is floor.
        let base = (v >> 32) as usize * pw + (u >> 32) as usize;
        *o = if footprint[base] == 0 {
            0.0
        } else {
            let quad = &bytes[base..base + pw + 2];
            let (a, b) = (INK[usize::from(quad[0])], INK[usize::from(quad[1])]);
            let (c, d) = (INK[usize::from(quad[pw])], INK[usize::from(quad[pw + 1])]);
            let wu = (u as u32) as f32 * FIXED_INV;
            let wv = (v as u32) as f32 * FIXED_INV;
            let top = a + wu * (b - a);
            let bot = c + wu * (d - c);
            top + wv * (bot - top)
        };
        u = u.wrapping_add(su);
        v = v.wrapping_add(sv);
    }
}

/// 2⁻³², the weight of the low word of a 32.32 fixed-point coordinate.
const FIXED_INV: f32 = 1.0 / 4_294_967_296.0;

/// `x` in 32.32 fixed point (saturating): `(x · 2³²).round() as i64`, inline (libm's
/// `round` is a call on baseline x86-64).
fn to_fixed(x: f64) -> i64 {
    let y = x * 4_294_967_296.0;
    if y.abs() < 4_503_599_627_370_496.0 {
        // |y| < 2⁵²: the truncation and the fraction `y − trunc(y)` are exact, so
        // rounding half away from zero is a comparison of the fraction with ±0.5.
        let t = y as i64;
        let frac = y - t as f64;
        t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5)
    } else {
        // Already an integer (or infinite, or NaN, which `as` saturates or zeroes).
        y as i64
    }
}

/// `⌈t⌉` for `0 <= t < 2⁵²` (libm's `ceil` is a call on baseline x86-64).
fn ceil_nonneg(t: f64) -> usize {
    let c = t as usize;
    if (c as f64) < t { c + 1 } else { c }
}

/// `⌊t⌋` for `0 <= t < 2⁵²`.
fn floor_nonneg(t: f64) -> usize {
    t as usize
}

/// A synthetic handwritten-looking character for tests and benchmarks when Omniglot
/// is not at hand: two to four thick quadratic-Bézier strokes (pen radius 1.5–2.5
/// px) on a blank `width × height` image, binary like Omniglot's, with ink on
/// roughly 5–10 % of a 105 × 105 image.
pub fn synthetic_glyph(rng: &mut impl Rng, width: usize, height: usize) -> GrayImage {
    let mut img = GrayImage::blank(width, height);
    if width == 0 || height == 0 {
        return img;
    }
    let (wf, hf) = (width as f64, height as f64);
    let strokes = rng.random_range(2..=4);
    for _ in 0..strokes {
        let mut pt = || {
            (
                rng.random_range(0.15 * wf..=0.85 * wf),
                rng.random_range(0.15 * hf..=0.85 * hf),
            )
        };
        let (p0, p1, p2) = (pt(), pt(), pt());
        let radius: f64 = rng.random_range(1.5..=2.5);
        let approx_len = (p1.0 - p0.0).hypot(p1.1 - p0.1) + (p2.0 - p1.0).hypot(p2.1 - p1.1);
        let steps = (approx_len * 3.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            let cx = a * p0.0 + b * p1.0 + c * p2.0;
            let cy = a * p0.1 + b * p1.1 + c * p2.1;
            stamp_disc(&mut img, cx, cy, radius);
        }
    }
    img
}

fn stamp_disc(img: &mut GrayImage, cx: f64, cy: f64, r: f64) {
    let (w, h) = (img.width(), img.height());
    let x0 = (cx - r).floor().max(0.0) as usize;
    let y0 = (cy - r).floor().max(0.0) as usize;
    let x1 = ((cx + r).ceil() as usize).min(w - 1);
    let y1 = ((cy + r).ceil() as usize).min(h - 1);
    let px = img.pixels_mut();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            if dx * dx + dy * dy <= r * r {
                px[y * w + x] = 255;
            }
        }
    }
}

/// Throughput of [`distort_batch`] in images per second on the current rayon pool
/// (run it inside `ThreadPool::install` to choose the thread count), the way training
/// uses it: consecutive batches of `batch` images through `images`, each into the same
/// output buffer with a new seed, after one warm-up batch, until at least `min_time`
/// has passed. For the `bench data` metric `augment_images_per_s`.
///
/// # Panics
/// As [`distort_batch`]; also if `images` is empty or `batch` is 0.
pub fn augment_images_per_s(
    images: &[&GrayImage],
    distortion: &KochDistortion,
    batch: usize,
    min_time: Duration,
) -> f64 {
    assert!(
        !images.is_empty() && batch > 0,
        "augment_images_per_s: no images"
    );
    let len = images[0].width() * images[0].height();
    let mut out = vec![0.0f32; batch.min(images.len()) * len];
    let batches: Vec<&[&GrayImage]> = images.chunks(batch).collect();
    let mut run = |b: &[&GrayImage], seed: u64| {
        distort_batch(b, distortion, seed, &mut out[..b.len() * len])
            .expect("same-sized images and a valid distortion");
    };
    run(batches[0], u64::MAX);
    let start = Instant::now();
    let (mut done, mut seed) = (0usize, 0u64);
    'timing: loop {
        for b in &batches {
            run(b, seed);
            seed += 1;
            done += b.len();
            if start.elapsed() >= min_time {
                break 'timing;
            }
        }
    }
    std::hint::black_box(&out);
    done as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warp as it was before the byte-box fast path (float copy of the box, every
    /// sample computed), kept verbatim: the current one must match it bit for bit.
    mod previous {
        use std::cell::RefCell;

        use crate::GrayImage;
        use crate::augment::AffineParams;

        /// Padding of the float copy of the ink box: the sampled span reaches 1.5 px beyond
        /// the box, and the bilinear footprint one more pixel.
        const PAD: usize = 2;

        thread_local! {
            static SCRATCH: RefCell<(Vec<f32>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }

        /// Warps `src` by `params` into `out` (same size, row-major, ink = 1.0): each output
        /// pixel is the source sampled bilinearly at the preimage of its centre, with zero
        /// outside the source. A singular transform gives an empty (all-zero) image.
        ///
        /// # Panics
        /// If `out.len() != src.width() * src.height()`.
        pub(super) fn warp_into(src: &GrayImage, params: &AffineParams, out: &mut [f32]) {
            let (w, h) = (src.width(), src.height());
            assert_eq!(out.len(), w * h, "warp_into: output length");
            if w == 0 || h == 0 {
                return;
            }
            if params.is_identity() {
                src.write_f32(out);
                return;
            }
            let Some(m) = params.inverse_matrix(w, h) else {
                out.fill(0.0);
                return;
            };
            SCRATCH.with(|s| {
                let (buf, mask) = &mut *s.borrow_mut();
                let Some(bbox) = ink_bbox(src, mask) else {
                    out.fill(0.0);
                    return;
                };
                warp_bbox(src, &m, bbox, buf, out);
            });
        }

        /// Inclusive ink bounding box `(x0, y0, x1, y1)`, or `None` for a blank image.
        fn ink_bbox(src: &GrayImage, mask: &mut Vec<u8>) -> Option<(usize, usize, usize, usize)> {
            let w = src.width();
            mask.clear();
            mask.resize(w, 0);
            // One vectorisable pass: OR every row into a column mask and into a row flag.
            let (mut y0, mut y1) = (usize::MAX, 0);
            for (y, row) in src.pixels().chunks_exact(w).enumerate() {
                let mut any = 0u8;
                for (m, &p) in mask.iter_mut().zip(row) {
                    *m |= p;
                    any |= p;
                }
                if any != 0 {
                    y0 = y0.min(y);
                    y1 = y;
                }
            }
            let x0 = mask.iter().position(|&v| v != 0)?;
            let x1 = mask.iter().rposition(|&v| v != 0)?;
            Some((x0, y0, x1, y1))
        }

        /// The general warp, given the inverse matrix and the ink box.
        fn warp_bbox(
            src: &GrayImage,
            m: &[[f64; 3]; 2],
            (bx0, by0, bx1, by1): (usize, usize, usize, usize),
            buf: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            let w = src.width();
            // Zero-padded float copy of the box; buffer coordinates are source coordinates
            // minus (ox, oy).
            let bw = bx1 - bx0 + 1;
            let pw = bw + 2 * PAD;
            let ph = by1 - by0 + 1 + 2 * PAD;
            // Only the frame needs zeroing: the copy overwrites the inside.
            buf.resize(pw * ph, 0.0);
            buf[..PAD * pw].fill(0.0);
            buf[(ph - PAD) * pw..].fill(0.0);
            let pixels = src.pixels();
            let src_rows = pixels.chunks_exact(w).skip(by0);
            for (dst, row) in buf[PAD * pw..]
                .chunks_exact_mut(pw)
                .zip(src_rows)
                .take(ph - 2 * PAD)
            {
                dst[..PAD].fill(0.0);
                dst[PAD + bw..].fill(0.0);
                for (d, &p) in dst[PAD..PAD + bw].iter_mut().zip(&row[bx0..=bx1]) {
                    *d = f32::from(p) * (1.0 / 255.0);
                }
            }
            let buf = &buf[..];
            let ox = bx0 as f64 - PAD as f64;
            let oy = by0 as f64 - PAD as f64;
            // A sample can be non-zero only if its 2×2 footprint meets the box, i.e. its
            // source coordinate is in (b0 − 1, b1 + 1). Sample where it is within
            // [b0 − 1.5, b1 + 1.5] (the half-pixel margin absorbs rounding in the span
            // computation); in buffer coordinates that is [0.5, p − 1.5], whose footprint
            // [0, p − 1] lies in the buffer.
            let (ulo, uhi) = (0.5, pw as f64 - 1.5);
            let (vlo, vhi) = (0.5, ph as f64 - 1.5);
            let (du, dv) = (m[0][0], m[1][0]);
            // Along a row the buffer coordinates step in 32.32 fixed point: exact integer
            // adds, floor by a shift, weight from the low word, and no float-to-int
            // conversions in the loop. Quantisation error: ~1e-8 px over a row. (A step too
            // large for the format only occurs when the span is a single pixel.)
            let (su, sv) = (to_fixed(du), to_fixed(dv));
            let last = (w - 1) as f64;
            for (y, row) in out.chunks_exact_mut(w).enumerate() {
                let fy = y as f64;
                let ru = m[0][1] * fy + m[0][2] - ox;
                let rv = m[1][1] * fy + m[1][2] - oy;
                let (mut t0, mut t1) = (0.0f64, last);
                for (r, d, lo, hi) in [(ru, du, ulo, uhi), (rv, dv, vlo, vhi)] {
                    if d == 0.0 {
                        if !(lo..=hi).contains(&r) {
                            t1 = -1.0;
                        }
                    } else {
                        let (a, b) = ((lo - r) / d, (hi - r) / d);
                        t0 = t0.max(a.min(b));
                        t1 = t1.min(a.max(b));
                    }
                }
                // Pixels t0..=t1 (integers) are sampled; both are in [0, w − 1] if any is.
                if t0 > t1 {
                    row.fill(0.0);
                    continue;
                }
                let (start, end) = (ceil_nonneg(t0), floor_nonneg(t1) + 1);
                if start >= end {
                    row.fill(0.0);
                    continue;
                }
                row[..start].fill(0.0);
                row[end..].fill(0.0);
                let first = start as f64;
                let mut u = to_fixed(ru + first * du);
                let mut v = to_fixed(rv + first * dv);
                for o in &mut row[start..end] {
                    // u, v ≥ 0.5 − ε > 0 here, so the shift is floor.
                    let (iu, iv) = ((u >> 32) as usize, (v >> 32) as usize);
                    let wu = (u as u32) as f32 * FIXED_INV;
                    let wv = (v as u32) as f32 * FIXED_INV;
                    let base = iv * pw + iu;
                    let r0 = &buf[base..base + 2];
                    let r1 = &buf[base + pw..base + pw + 2];
                    let top = r0[0] + wu * (r0[1] - r0[0]);
                    let bot = r1[0] + wu * (r1[1] - r1[0]);
                    *o = top + wv * (bot - top);
                    u = u.wrapping_add(su);
                    v = v.wrapping_add(sv);
                }
            }
        }

        /// 2⁻³², the weight of the low word of a 32.32 fixed-point coordinate.
        const FIXED_INV: f32 = 1.0 / 4_294_967_296.0;

        /// `x` in 32.32 fixed point (saturating).
        fn to_fixed(x: f64) -> i64 {
            (x * 4_294_967_296.0).round() as i64
        }

        /// `⌈t⌉` for `0 <= t < 2⁵²` (libm's `ceil` is a call on baseline x86-64).
        fn ceil_nonneg(t: f64) -> usize {
            let c = t as usize;
            if (c as f64) < t { c + 1 } else { c }
        }

        /// `⌊t⌋` for `0 <= t < 2⁵²`.
        fn floor_nonneg(t: f64) -> usize {
            t as usize
        }
    }

    /// Straightforward inverse-mapping bilinear warp over every pixel, in f64.
    fn reference(src: &GrayImage, params: &AffineParams) -> Vec<f32> {
        let (w, h) = (src.width(), src.height());
        let Some(m) = params.inverse_matrix(w, h) else {
            return vec![0.0; w * h];
        };
        let get = |x: f64, y: f64| -> f64 {
            if x < 0.0 || y < 0.0 || x >= w as f64 || y >= h as f64 {
                0.0
            } else {
                f64::from(src.get(x as usize, y as usize)) / 255.0
            }
        };
        let mut out = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f64, y as f64);
                let sx = m[0][0] * xf + m[0][1] * yf + m[0][2];
                let sy = m[1][0] * xf + m[1][1] * yf + m[1][2];
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let v = (1.0 - fy) * ((1.0 - fx) * get(x0, y0) + fx * get(x0 + 1.0, y0))
                    + fy * ((1.0 - fx) * get(x0, y0 + 1.0) + fx * get(x0 + 1.0, y0 + 1.0));
                out[y * w + x] = v as f32;
            }
        }
        out
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn as_f32(src: &GrayImage) -> Vec<f32> {
        let mut v = vec![0.0; src.width() * src.height()];
        src.write_f32(&mut v);
        v
    }

    fn glyphs(n: usize, w: usize, h: usize, seed: u64) -> Vec<GrayImage> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| synthetic_glyph(&mut rng, w, h)).collect()
    }

    /// Random noise with ink anywhere, including the borders.
    fn noise(rng: &mut impl Rng, w: usize, h: usize, density: f64) -> GrayImage {
        let px = (0..w * h)
            .map(|_| {
                if rng.random_bool(density) {
                    rng.random_range(1..=255)
                } else {
                    0
                }
            })
            .collect();
        GrayImage::from_pixels(w, h, px).unwrap()
    }

    fn wide_params(rng: &mut impl Rng) -> AffineParams {
        AffineParams {
            rotation_deg: rng.random_range(-180.0..=180.0),
            shear_x: rng.random_range(-0.6..=0.6),
            shear_y: rng.random_range(-0.6..=0.6),
            scale_x: rng.random_range(0.4..=2.5),
            scale_y: rng.random_range(0.4..=2.5),
            translate_x: rng.random_range(-20.0..=20.0),
            translate_y: rng.random_range(-20.0..=20.0),
        }
    }

    #[test]
    fn defaults_are_identity_and_paper() {
        assert!(AffineParams::default().is_identity());
        assert_eq!(KochDistortion::default(), KochDistortion::PAPER);
        let k = KochDistortion::default();
        assert_eq!(k.p_include, 0.5);
        assert_eq!(k.rotation_deg, [-10.0, 10.0]);
        assert_eq!(k.shear_x, [-0.3, 0.3]);
        assert_eq!(k.shear_y, [-0.3, 0.3]);
        assert_eq!(k.scale_x, [0.8, 1.2]);
        assert_eq!(k.scale_y, [0.8, 1.2]);
        assert_eq!(k.translate_x, [-2.0, 2.0]);
        assert_eq!(k.translate_y, [-2.0, 2.0]);
        assert!(k.validate().is_ok());
        assert!(KochDistortion::none().validate().is_ok());
        let m = AffineParams::IDENTITY.matrix(105, 105);
        assert_eq!(m, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let bad_p = KochDistortion {
            p_include: 1.5,
            ..KochDistortion::PAPER
        };
        assert!(bad_p.validate().is_err());
        let bad_range = KochDistortion {
            scale_x: [1.2, 0.8],
            ..KochDistortion::PAPER
        };
        assert!(bad_range.validate().is_err());
        let nan = KochDistortion {
            translate_y: [f64::NAN, 1.0],
            ..KochDistortion::PAPER
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn matrix_and_inverse_compose_to_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let p = wide_params(&mut rng);
            let f = p.matrix(105, 80);
            let g = p.inverse_matrix(105, 80).unwrap();
            for (x, y) in [(0.0, 0.0), (104.0, 0.0), (13.5, 79.0), (52.0, 39.5)] {
                let (u, v) = (
                    f[0][0] * x + f[0][1] * y + f[0][2],
                    f[1][0] * x + f[1][1] * y + f[1][2],
                );
                let (bx, by) = (
                    g[0][0] * u + g[0][1] * v + g[0][2],
                    g[1][0] * u + g[1][1] * v + g[1][2],
                );
                assert!((bx - x).abs() < 1e-9 && (by - y).abs() < 1e-9);
            }
            // The centre moves by the translation only.
            let (cx, cy) = (52.0, 39.5);
            let u = f[0][0] * cx + f[0][1] * cy + f[0][2];
            let v = f[1][0] * cx + f[1][1] * cy + f[1][2];
            assert!((u - cx - p.translate_x).abs() < 1e-9);
            assert!((v - cy - p.translate_y).abs() < 1e-9);
        }
    }

    #[test]
    fn identity_params_copy_the_input() {
        for img in glyphs(5, 105, 105, 1) {
            let out = warp(&img, &AffineParams::IDENTITY);
            // Bit-identical to the crate's plain conversion...
            assert_eq!(out, as_f32(&img));
            // ...which is p / 255 to within one rounding.
            for (&o, &p) in out.iter().zip(img.pixels().iter()) {
                assert!((o - f32::from(p) / 255.0).abs() <= 1e-7);
            }
        }
    }

    #[test]
    fn nothing_drawn_with_p_zero() {
        let none = KochDistortion::none();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..1000 {
            assert!(none.sample(&mut rng).is_identity());
        }
        let imgs = glyphs(16, 105, 105, 2);
        let refs: Vec<&GrayImage> = imgs.iter().collect();
        let mut out = vec![1.0; 16 * 105 * 105];
        distort_batch(&refs, &none, 99, &mut out).unwrap();
        for (img, o) in imgs.iter().zip(out.chunks_exact(105 * 105)) {
            assert_eq!(o, as_f32(img).as_slice());
            for (&o, &p) in o.iter().zip(img.pixels().iter()) {
                assert!((o - f32::from(p) / 255.0).abs() <= 1e-7);
            }
        }
    }

    #[test]
    fn general_path_with_identity_matrix_is_exact() {
        // Rotation by a full turn goes through the general path.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let img = noise(&mut rng, 31, 17, 0.5);
        let out = warp(&img, &AffineParams::rotation(360.0));
        assert!(max_abs_diff(&out, &as_f32(&img)) < 1e-6);
    }

    fn rotate90_exact(src: &GrayImage) -> Vec<f32> {
        // Counter-clockwise on screen: (x, y) -> (y, n - 1 - x) for an n × n image.
        let n = src.width();
        let mut out = vec![0.0; n * n];
        for y in 0..n {
            for x in 0..n {
                out[(n - 1 - x) * n + y] = f32::from(src.get(x, y)) / 255.0;
            }
        }
        out
    }

    #[test]
    fn rotation_by_90_degrees_is_the_pixel_rotation() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [105, 104, 9] {
            let img = if n > 50 {
                synthetic_glyph(&mut rng, n, n)
            } else {
                noise(&mut rng, n, n, 0.4)
            };
            let want = rotate90_exact(&img);
            let got = warp(&img, &AffineParams::rotation(90.0));
            assert!(max_abs_diff(&got, &want) < 1e-6, "n = {n}");
            // Also through the wider distribution: θ fixed at 90° by a degenerate range.
            let k = KochDistortion::rotation_only(90.0, 90.0);
            let mut out = vec![0.0; n * n];
            distort_into(&img, &k, &mut rng, &mut out);
            assert!(max_abs_diff(&out, &want) < 1e-6);
            // 180° is the exact 90° pixel rotation applied twice.
            let rot180 = rotate90_exact(
                &GrayImage::from_pixels(
                    n,
                    n,
                    want.iter().map(|&v| (v * 255.0).round() as u8).collect(),
                )
                .unwrap(),
            );
            let got180 = warp(&img, &AffineParams::rotation(180.0));
            assert!(max_abs_diff(&got180, &rot180) < 1e-6);
        }
        // Direction: a dot right of centre goes up (counter-clockwise on screen).
        let mut dot = GrayImage::blank(21, 21);
        dot.pixels_mut()[10 * 21 + 15] = 255;
        let out = warp(&dot, &AffineParams::rotation(90.0));
        assert!((out[5 * 21 + 10] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn integer_and_half_pixel_shifts() {
        let (w, h) = (105, 105);
        let mut dot = GrayImage::blank(w, h);
        dot.pixels_mut()[50 * w + 40] = 255;
        for (tx, ty) in [
            (3.0, -2.0),
            (-2.0, 2.0),
            (1.0, 0.0),
            (0.0, -1.0),
            (-40.0, 54.0),
        ] {
            let out = warp(&dot, &AffineParams::translation(tx, ty));
            let (x, y) = ((40.0 + tx) as usize, (50.0 + ty) as usize);
            for (i, &v) in out.iter().enumerate() {
                let want = if i == y * w + x { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-6, "shift ({tx}, {ty}) at {i}: {v}");
            }
        }
        // A shift off the image leaves nothing.
        let out = warp(&dot, &AffineParams::translation(70.0, 0.0));
        assert!(out.iter().all(|&v| v == 0.0));
        // Half a pixel right: the ink splits 0.5 / 0.5 over two pixels.
        let out = warp(&dot, &AffineParams::translation(0.5, 0.0));
        assert!((out[50 * w + 40] - 0.5).abs() < 1e-6);
        assert!((out[50 * w + 41] - 0.5).abs() < 1e-6);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Half a pixel both ways: four quarters.
        let out = warp(&dot, &AffineParams::translation(-0.5, 0.5));
        for (x, y) in [(39, 50), (40, 50), (39, 51), (40, 51)] {
            assert!((out[y * w + x] - 0.25).abs() < 1e-6);
        }
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // A whole glyph shifted by integers equals the shifted pixels.
        let img = &glyphs(1, w, h, 4)[0];
        let out = warp(img, &AffineParams::translation(3.0, -2.0));
        for y in 0..h {
            for x in 0..w {
                let want = if x >= 3 && y + 2 < h {
                    f32::from(img.get(x - 3, y + 2)) / 255.0
                } else {
                    0.0
                };
                assert!((out[y * w + x] - want).abs() < 1e-6);
            }
        }
    }

    /// Case `case` of the randomised warp tests: Koch-sized, small and odd-sized
    /// images of noise at several densities or glyphs, under the paper's distortions or
    /// wide ones.
    fn random_case(rng: &mut ChaCha8Rng, case: usize) -> (GrayImage, AffineParams) {
        let (w, h) = match case % 6 {
            0..=2 => (105, 105),
            3 => (rng.random_range(1..=40), rng.random_range(1..=40)),
            4 => (64, 23),
            _ => (2, 3),
        };
        let img = match case % 5 {
            0 => noise(rng, w, h, 0.3),
            1 => noise(rng, w, h, 1.0),
            2 => noise(rng, w, h, 0.002),
            _ if w >= 20 && h >= 20 => synthetic_glyph(rng, w, h),
            _ => noise(rng, w, h, 0.1),
        };
        let params = if case.is_multiple_of(2) {
            KochDistortion::PAPER.sample(rng)
        } else {
            wide_params(rng)
        };
        (img, params)
    }

    #[test]
    fn fast_path_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(2015);
        let mut worst = 0.0f32;
        for case in 0..600 {
            let (img, params) = random_case(&mut rng, case);
            let (w, h) = (img.width(), img.height());
            let d = max_abs_diff(&warp(&img, &params), &reference(&img, &params));
            assert!(d <= 1e-6, "case {case} ({w}x{h}, {params:?}): {d}");
            worst = worst.max(d);
        }
        // Ink on the very border and in the corners only.
        for (w, h) in [(105, 105), (7, 5)] {
            let mut img = GrayImage::blank(w, h);
            for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)] {
                img.pixels_mut()[y * w + x] = 200;
            }
            for _ in 0..50 {
                let params = wide_params(&mut rng);
                let d = max_abs_diff(&warp(&img, &params), &reference(&img, &params));
                assert!(d <= 1e-6);
            }
        }
        assert!(worst <= 1e-6);
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn previous_warp(img: &GrayImage, params: &AffineParams) -> Vec<f32> {
        let mut out = vec![f32::NAN; img.width() * img.height()];
        previous::warp_into(img, params, &mut out);
        out
    }

    /// The warp (with the AVX2 kernel where the CPU has it) and the portable kernel,
    /// forced, against the previous warp.
    #[test]
    fn matches_the_previous_warp_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(1505);
        for case in 0..1200 {
            let (img, params) = random_case(&mut rng, case);
            let (w, h) = (img.width(), img.height());
            let want = previous_warp(&img, &params);
            assert!(
                same_bits(&warp(&img, &params), &want),
                "case {case} ({w}x{h}, {params:?})"
            );
            assert!(
                same_bits(&warp_with(&img, &params, false), &want),
                "portable kernel, case {case} ({w}x{h}, {params:?})"
            );
        }
    }

    /// A binary image (a bit per pixel) warps to the same bits as the same pixels kept
    /// a byte each, with either kernel: the ink box found in bits and the box rows
    /// unpacked from them, for widths that end rows mid-byte and ink on every border.
    #[test]
    fn binary_sources_warp_as_their_bytes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1470);
        let mut cases: Vec<(GrayImage, AffineParams)> = (0..900)
            .map(|case| {
                let (img, params) = random_case(&mut rng, case);
                let (w, h) = (img.width(), img.height());
                let px = img
                    .pixels()
                    .iter()
                    .map(|&p| if p >= 128 { 255 } else { 0 })
                    .collect();
                (GrayImage::from_pixels(w, h, px).unwrap(), params)
            })
            .collect();
        for w in 1..=17 {
            let h = 1 + w % 5;
            let mut img = GrayImage::blank(w, h);
            for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)] {
                img.pixels_mut()[y * w + x] = 255;
            }
            cases.push((img.clone(), wide_params(&mut rng)));
            cases.push((img, AffineParams::IDENTITY));
        }
        cases.push((GrayImage::blank(9, 4), wide_params(&mut rng)));
        for (case, (bytes, params)) in cases.iter().enumerate() {
            let bits = bytes.to_binary().expect("0 or 255");
            assert!(bits.is_binary() && !bytes.is_binary());
            assert_eq!(&bits, bytes);
            let (w, h) = (bytes.width(), bytes.height());
            for simd in [true, false] {
                assert!(
                    same_bits(
                        &warp_with(&bits, params, simd),
                        &warp_with(bytes, params, simd)
                    ),
                    "case {case} ({w}x{h}, simd {simd}, {params:?})"
                );
            }
        }
    }

    /// The same on real characters: a tenth of the background set, each under three
    /// transforms of the paper's distribution (every component on for one) and one
    /// wider one.
    #[test]
    fn matches_the_previous_warp_bit_for_bit_on_omniglot() {
        let root = siamese_tests::extracted_dataset();
        let index = crate::DatasetIndex::scan(&root.join("images_background")).unwrap();
        let data = index.load().unwrap();
        let always = KochDistortion {
            p_include: 1.0,
            ..KochDistortion::PAPER
        };
        let mut rng = ChaCha8Rng::seed_from_u64(105);
        let mut compared = 0;
        for img in data.images().iter().step_by(10) {
            for params in [
                KochDistortion::PAPER.sample(&mut rng),
                KochDistortion::PAPER.sample(&mut rng),
                always.sample(&mut rng),
                wide_params(&mut rng),
            ] {
                assert!(
                    same_bits(&warp(img, &params), &previous_warp(img, &params)),
                    "{params:?}"
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 4 * 1928);
    }

    fn warp_with(img: &GrayImage, params: &AffineParams, simd: bool) -> Vec<f32> {
        let mut out = vec![f32::NAN; img.width() * img.height()];
        warp_into_with(img, params, &mut out, simd);
        out
    }

    /// The AVX2 kernel against the portable one on many transforms and images: spans
    /// of every length (the eight-pixel groups and their remainders), ink everywhere
    /// including the borders, grey levels, steps of either sign.
    #[test]
    fn simd_kernel_matches_the_scalar_one() {
        if !simd_available() {
            eprintln!("no AVX2 here: the SIMD kernel is not tested");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(808);
        let always = KochDistortion {
            p_include: 1.0,
            ..KochDistortion::PAPER
        };
        for case in 0..3000 {
            let (w, h) = match case % 5 {
                0..=2 => (105, 105),
                3 => (rng.random_range(1..=50), rng.random_range(1..=50)),
                _ => (rng.random_range(1..=9), rng.random_range(1..=9)),
            };
            let img = match case % 4 {
                0 => {
                    let density = rng.random_range(0.0..=1.0);
                    noise(&mut rng, w, h, density)
                }
                1 if w >= 20 && h >= 20 => synthetic_glyph(&mut rng, w, h),
                _ => noise(&mut rng, w, h, 0.02),
            };
            let params = match case % 3 {
                0 => always.sample(&mut rng),
                1 => KochDistortion::PAPER.sample(&mut rng),
                _ => wide_params(&mut rng),
            };
            assert!(
                same_bits(
                    &warp_with(&img, &params, true),
                    &warp_with(&img, &params, false)
                ),
                "case {case} ({w}x{h}, {params:?})"
            );
        }
    }

    #[test]
    fn to_fixed_rounds_like_f64_round() {
        let mut rng = ChaCha8Rng::seed_from_u64(32);
        let want = |x: f64| (x * 4_294_967_296.0).round() as i64;
        let scale = 1.0 / 4_294_967_296.0;
        let mut xs = vec![
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            1e300,
            -1e300,
            2.0f64.powi(20),
            2.0f64.powi(21) - scale,
            -(2.0f64.powi(21)),
        ];
        // Exact halves, and their neighbours, near zero and near 2⁵² (in 2⁻³² units).
        for k in [
            0i64,
            1,
            2,
            3,
            1000,
            -1,
            -2,
            -7,
            (1 << 52) - 3,
            -(1 << 52) + 1,
        ] {
            let half = (k as f64 + 0.5) * scale;
            xs.extend([half, half.next_up(), half.next_down(), -half]);
        }
        for _ in 0..100_000 {
            let e = rng.random_range(-40..=70);
            xs.push(rng.random_range(-1.0..1.0) * 2.0f64.powi(e));
        }
        for x in xs {
            assert_eq!(to_fixed(x), want(x), "{x:e}");
        }
    }

    #[test]
    fn ink_table_matches_the_float_conversion() {
        let mut bytes = GrayImage::blank(256, 1);
        for (p, v) in bytes.pixels_mut().iter_mut().zip(0u8..=255) {
            *p = v;
        }
        let mut want = vec![0.0; 256];
        bytes.write_f32(&mut want);
        assert!(same_bits(&INK, &want));
    }

    #[test]
    fn ink_bbox_finds_the_extremes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let (w, h) = (rng.random_range(1..=40), rng.random_range(1..=12));
            let density = rng.random_range(0.0..0.05);
            let img = noise(&mut rng, w, h, density);
            let inked: Vec<(usize, usize)> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get(x, y) != 0)
                .collect();
            let want = (!inked.is_empty()).then(|| {
                (
                    inked.iter().map(|p| p.0).min().unwrap(),
                    inked.iter().map(|p| p.1).min().unwrap(),
                    inked.iter().map(|p| p.0).max().unwrap(),
                    inked.iter().map(|p| p.1).max().unwrap(),
                )
            });
            assert_eq!(ink_bbox(&img), want, "{w}x{h}");
        }
    }

    /// The same on wider images with blank margins, single dots and full rows.
    #[test]
    fn ink_bbox_finds_the_extremes_of_characters() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for case in 0..2000 {
            let (w, h) = (rng.random_range(1..=140), rng.random_range(1..=110));
            let mut img = GrayImage::blank(w, h);
            let dots = [1, 2, 3, 40][case % 4];
            let (cx0, cx1) = (rng.random_range(0..w), rng.random_range(0..w));
            let (cy0, cy1) = (rng.random_range(0..h), rng.random_range(0..h));
            for _ in 0..dots {
                let x = rng.random_range(cx0.min(cx1)..=cx0.max(cx1));
                let y = rng.random_range(cy0.min(cy1)..=cy0.max(cy1));
                img.pixels_mut()[y * w + x] = rng.random_range(1..=255);
            }
            if case % 7 == 0 {
                let y = rng.random_range(0..h);
                img.pixels_mut()[y * w..(y + 1) * w].fill(9);
            }
            let inked: Vec<(usize, usize)> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get(x, y) != 0)
                .collect();
            let want = (
                inked.iter().map(|p| p.0).min().unwrap(),
                inked.iter().map(|p| p.1).min().unwrap(),
                inked.iter().map(|p| p.0).max().unwrap(),
                inked.iter().map(|p| p.1).max().unwrap(),
            );
            assert_eq!(ink_bbox(&img), Some(want), "case {case}: {w}x{h}");
        }
    }

    #[test]
    fn blank_and_singular() {
        let blank = GrayImage::blank(105, 105);
        let params = AffineParams::rotation(5.0);
        assert!(warp(&blank, &params).iter().all(|&v| v == 0.0));
        let img = &glyphs(1, 105, 105, 9)[0];
        let singular = AffineParams {
            scale_x: 0.0,
            ..AffineParams::IDENTITY
        };
        assert!(singular.inverse_matrix(105, 105).is_none());
        let mut out = vec![1.0; 105 * 105];
        warp_into(img, &singular, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        let empty = GrayImage::blank(0, 0);
        assert!(warp(&empty, &params).is_empty());
    }

    /// Mean and variance of a sample.
    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn drawn_parameters_follow_the_paper() {
        const N: usize = 40_000;
        let k = KochDistortion::PAPER;
        let mut rng = ChaCha8Rng::seed_from_u64(20150706);
        let draws: Vec<AffineParams> = (0..N).map(|_| k.sample(&mut rng)).collect();
        let incl = |t: &AffineParams| {
            [
                t.rotation_deg != 0.0,
                t.shear_x != 0.0 || t.shear_y != 0.0,
                t.scale_x != 1.0 || t.scale_y != 1.0,
                t.translate_x != 0.0 || t.translate_y != 0.0,
            ]
        };
        let flags: Vec<[bool; 4]> = draws.iter().map(incl).collect();
        let n = N as f64;
        let within = |count: usize, p: f64| {
            let sigma = (p * (1.0 - p) / n).sqrt();
            ((count as f64 / n) - p).abs() <= 4.0 * sigma
        };
        for c in 0..4 {
            let count = flags.iter().filter(|f| f[c]).count();
            assert!(within(count, 0.5), "component {c}: {count} / {N}");
            for d in c + 1..4 {
                let both = flags.iter().filter(|f| f[c] && f[d]).count();
                assert!(within(both, 0.25), "components {c}, {d}: {both} / {N}");
            }
        }
        let all = flags.iter().filter(|f| f.iter().all(|&b| b)).count();
        assert!(within(all, 1.0 / 16.0));
        let none = draws.iter().filter(|t| t.is_identity()).count();
        assert!(within(none, 1.0 / 16.0));

        // Values of included components: in range, uniform.
        type Get = fn(&AffineParams) -> f64;
        let fields: [(usize, Get, [f64; 2]); 7] = [
            (0, |t| t.rotation_deg, k.rotation_deg),
            (1, |t| t.shear_x, k.shear_x),
            (1, |t| t.shear_y, k.shear_y),
            (2, |t| t.scale_x, k.scale_x),
            (2, |t| t.scale_y, k.scale_y),
            (3, |t| t.translate_x, k.translate_x),
            (3, |t| t.translate_y, k.translate_y),
        ];
        let mut values_by_field = Vec::new();
        for (comp, get, [lo, hi]) in fields {
            let xs: Vec<f64> = draws
                .iter()
                .zip(&flags)
                .filter(|(_, f)| f[comp])
                .map(|(t, _)| get(t))
                .collect();
            assert!(xs.iter().all(|x| (lo..=hi).contains(x)));
            let m = xs.len() as f64;
            let (mean, var) = moments(&xs);
            let width = hi - lo;
            let true_var = width * width / 12.0;
            assert!(
                (mean - (lo + hi) / 2.0).abs() <= 4.0 * (true_var / m).sqrt(),
                "mean {mean} for [{lo}, {hi}]"
            );
            // Var of the sample variance of a uniform: (μ4 − σ⁴)/m with μ4 = w⁴/80.
            let var_sd = ((width.powi(4) / 80.0 - true_var * true_var) / m).sqrt();
            assert!(
                (var - true_var).abs() <= 4.0 * var_sd,
                "variance {var} vs {true_var} for [{lo}, {hi}]"
            );
            // Ten equal bins, each within 4σ of a tenth.
            let mut bins = [0usize; 10];
            for x in &xs {
                bins[(((x - lo) / width * 10.0) as usize).min(9)] += 1;
            }
            let sigma = (0.1 * 0.9 / m).sqrt();
            for b in bins {
                assert!((b as f64 / m - 0.1).abs() <= 4.0 * sigma, "bins {bins:?}");
            }
            values_by_field.push(xs);
        }
        // The two values of a component are drawn independently of each other.
        for (a, b) in [(1, 2), (3, 4), (5, 6)] {
            let (xs, ys) = (&values_by_field[a], &values_by_field[b]);
            let (mx, vx) = moments(xs);
            let (my, vy) = moments(ys);
            let cov = xs
                .iter()
                .zip(ys)
                .map(|(x, y)| (x - mx) * (y - my))
                .sum::<f64>()
                / (xs.len() as f64 - 1.0);
            let corr = cov / (vx * vy).sqrt();
            assert!(corr.abs() <= 4.0 / (xs.len() as f64).sqrt(), "corr {corr}");
        }
    }

    #[test]
    fn seeded_batches_are_reproducible_and_thread_independent() {
        let imgs = glyphs(37, 105, 105, 12);
        let refs: Vec<&GrayImage> = imgs.iter().collect();
        let k = KochDistortion::PAPER;
        let len = 105 * 105;
        let run = |seed: u64| {
            let mut out = vec![0.0f32; refs.len() * len];
            distort_batch(&refs, &k, seed, &mut out).unwrap();
            out
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| run(42)), a, "{threads} threads");
        }
        // The batch is exactly the per-image warps with the documented streams.
        let params = sample_batch_params(&k, 42, refs.len());
        for (i, (img, p)) in imgs.iter().zip(&params).enumerate() {
            assert_eq!(warp(img, p), &a[i * len..(i + 1) * len]);
        }
        // Both images of a pair (here the same image twice) get their own transform.
        let pair = [&imgs[0], &imgs[0]];
        let mut out = vec![0.0f32; 2 * len];
        let mut differ = 0;
        for seed in 0..20 {
            distort_batch(&pair, &k, seed, &mut out).unwrap();
            let ps = sample_batch_params(&k, seed, 2);
            if ps[0] != ps[1] {
                differ += 1;
            }
        }
        // Both identity has probability 1/256 per seed.
        assert!(differ >= 18);
    }

    #[test]
    fn synthetic_glyphs_look_like_omniglot() {
        let imgs = glyphs(200, 105, 105, 13);
        let fractions: Vec<f64> = imgs
            .iter()
            .map(|im| im.pixels().iter().filter(|&&p| p != 0).count() as f64 / (105.0 * 105.0))
            .collect();
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        assert!((0.04..=0.12).contains(&mean), "mean ink fraction {mean}");
        assert!(
            imgs.iter()
                .all(|im| im.pixels().iter().all(|&p| p == 0 || p == 255))
        );
    }

    /// Loads Omniglot PNGs (black ink on white) from a folder tree, up to `max`.
    fn load_pngs(dir: &std::path::Path, max: usize, out: &mut Vec<GrayImage>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if out.len() >= max {
                return;
            }
            if path.is_dir() {
                load_pngs(&path, max, out);
            } else if path.extension().is_some_and(|e| e == "png") {
                let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
                let mut dec = png::Decoder::new(file);
                dec.set_transformations(png::Transformations::EXPAND);
                let mut reader = dec.read_info().unwrap();
                let mut buf = vec![0; reader.output_buffer_size().unwrap()];
                let info = reader.next_frame(&mut buf).unwrap();
                let (w, h) = (info.width as usize, info.height as usize);
                let ch = info.color_type.samples();
                let px = (0..w * h).map(|i| 255 - buf[i * ch]).collect();
                out.push(GrayImage::from_pixels(w, h, px).unwrap());
            }
        }
    }

    /// Throughput of the batch distortion. Set `OMNIGLOT_PNG_DIR` to an extracted
    /// Omniglot folder to time real characters; synthetic ones otherwise.
    /// `cargo test --release -p siamese-data --lib augment -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark; run in release"]
    fn bench_distort_batch() {
        let mut imgs = Vec::new();
        if let Ok(dir) = std::env::var("OMNIGLOT_PNG_DIR") {
            load_pngs(std::path::Path::new(&dir), 2048, &mut imgs);
        }
        let source = if imgs.is_empty() {
            imgs = glyphs(2048, 105, 105, 1);
            "synthetic"
        } else {
            "omniglot"
        };
        let ink = imgs
            .iter()
            .map(|im| im.pixels().iter().filter(|&&p| p != 0).count() as f64)
            .sum::<f64>()
            / (imgs.len() * 105 * 105) as f64;
        let refs: Vec<&GrayImage> = imgs.iter().collect();
        let k = KochDistortion::PAPER;
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let rate =
                pool.install(|| augment_images_per_s(&refs, &k, 256, Duration::from_secs(3)));
            eprintln!(
                "distort_batch {source} ({} images, ink {:.1}%): {threads} thread(s): {rate:.0} images/s ({:.2} ns/pixel/thread)",
                refs.len(),
                ink * 100.0,
                1e9 * threads as f64 / (rate * 105.0 * 105.0)
            );
        }
        // Always-on parameters (no identity, no skipped component) for the worst case.
        let always = KochDistortion {
            p_include: 1.0,
            ..KochDistortion::PAPER
        };
        let rate = augment_images_per_s(&refs, &always, 256, Duration::from_secs(3));
        eprintln!("distort_batch {source}, p_include = 1, global pool: {rate:.0} images/s");
    }
}
