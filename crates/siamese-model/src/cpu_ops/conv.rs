//! Stride-1 2-D convolution (unpadded, or zero-padded inside im2col) with fused bias
//! and ReLU: im2col + gemm.
//!
//! Forward, per block of output columns: im2col the block into a `k × cols` matrix
//! (`k = c·kh·kw`), then `y[o, cols] = b[o] + w[o, k] · col[k, cols]` with one
//! single-threaded gemm call, then the ReLU while the block is in cache.
//!
//! Backward, per block: im2col again (cheaper than keeping the whole im2col matrix,
//! 1.4 GB for conv2 at 64 images), mask the output gradient with the output (ReLU),
//! then `dw += gy · colᵀ`, `db += Σ gy`, and, if wanted, `dcol = wᵀ · gy` followed
//! by col2im into `dx`.
//!
//! A block is a few output rows of one image (so that the im2col buffer stays in L2)
//! or, for small outputs, several whole images (so that gemm gets enough columns).
//! Rayon runs whole images in parallel: their outputs and input gradients are
//! disjoint; weight gradients accumulate per group of images and are summed at the
//! end.

use candle_core::{Result, Shape};
use rayon::prelude::*;

use super::fft::Spectra;
use super::{Kernel3, Op3Grads, Op3Slices, Op3Tensors, Real, Scratch, Strides, buffer, matmul};

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    /// Zero padding on every side, applied by im2col (no padded copy of `x`).
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// From the dims of `x: (n, c, h, w)` and `w: (o, c, kh, kw)`.
    pub fn new(x: (usize, usize, usize, usize), w: (usize, usize, usize, usize)) -> Result<Self> {
        Self::padded(x, w, 0)
    }

    /// With `pad` zeros on every side of each input plane.
    pub fn padded(
        (n, c, h, w): (usize, usize, usize, usize),
        (o, wc, kh, kw): (usize, usize, usize, usize),
        pad: usize,
    ) -> Result<Self> {
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        if wc != c || kh == 0 || kw == 0 || hp < kh || wp < kw || pad >= kh || pad >= kw {
            candle_core::bail!(
                "conv2d: bad shapes x ({n}, {c}, {h}, {w}), w ({o}, {wc}, {kh}, {kw}), padding {pad}"
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            pad,
            oh: hp - kh + 1,
            ow: wp - kw + 1,
        })
    }
    /// Rows of the im2col matrix.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per image and channel.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    pub fn x_img(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn y_img(&self) -> usize {
        self.o * self.p()
    }
    pub fn y_shape(&self) -> Shape {
        Shape::from((self.n, self.o, self.oh, self.ow))
    }
    /// Multiply-adds ×2 of the forward pass (also of each backward gemm).
    #[cfg(test)]
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.k() * self.p()) as f64
    }
}

/// The target size of the im2col buffer of a block. Measured on the Koch shapes
/// (2 MiB L2 per core): 2–4 MiB for the deep layers (gemm streams through it, and a
/// larger block means fewer passes over the outputs and weight gradients), but small
/// blocks when `k` is small (conv1, `k` = 100), where gemm's packing dominates.
const COL_BYTES: usize = 3 << 20;
const COL_BYTES_SMALL_K: usize = 256 << 10;
const SMALL_K: usize = 512;

/// How the work is cut into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Images per task (1 unless an image has few output positions).
    pub imgs: usize,
    /// Output rows per block of a one-image task (`oh` when `imgs > 1`).
    pub rows: usize,
    /// Convolve by FFT ([`super::fft`]) instead of im2col + gemm.
    pub fft: bool,
}

/// How the CPU convolutions are computed: each by the algorithm its cost model picks
/// (`Auto`, the default), or all by one of them (for measurements).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// im2col + gemm, or the FFT where it was measured to pay.
    #[default]
    Auto,
    /// im2col + gemm everywhere.
    Direct,
    /// The FFT wherever it applies (unpadded convolutions).
    Fft,
}

impl std::str::FromStr for ConvAlgo {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(ConvAlgo::Auto),
            "direct" => Ok(ConvAlgo::Direct),
            "fft" => Ok(ConvAlgo::Fft),
            other => Err(format!("{other:?} is not auto, direct or fft")),
        }
    }
}

/// The process-wide [`ConvAlgo`] (0 auto, 1 direct, 2 fft).
static ALGO: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets how every later CPU convolution of this process is computed.
pub fn set_conv_algo(algo: ConvAlgo) {
    let code = match algo {
        ConvAlgo::Auto => 0,
        ConvAlgo::Direct => 1,
        ConvAlgo::Fft => 2,
    };
    ALGO.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The algorithm forced by [`set_conv_algo`]: `Some(true)` for the FFT.
fn forced_algo() -> Option<bool> {
    match ALGO.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

impl Plan {
    /// The plan for these sizes: the FFT where its cost model says it pays (or
    /// [`set_conv_algo`] says so), else im2col + gemm with blocks sized for the caches.
    pub fn new<T>(g: &ConvGeom) -> Self {
        let bytes = if g.k() < SMALL_K {
            COL_BYTES_SMALL_K
        } else {
            COL_BYTES
        };
        // The FFT path knows no padding.
        let fft = g.pad == 0 && forced_algo().unwrap_or_else(|| super::fft::pays(g));
        Self {
            fft,
            ..Self::with_col_bytes(g, size_of::<T>(), bytes)
        }
    }

    pub fn with_col_bytes(g: &ConvGeom, elem: usize, bytes: usize) -> Self {
        let target = (bytes / (g.k() * elem)).max(1);
        if g.p() >= target / 2 || g.n == 1 {
            let rows = (target / g.ow).clamp(1, g.oh);
            // Even blocks rather than a full ones and a small remainder.
            let nblocks = g.oh.div_ceil(rows);
            Self {
                imgs: 1,
                rows: g.oh.div_ceil(nblocks),
                fft: false,
            }
        } else {
            Self {
                imgs: (target / g.p()).clamp(1, g.n),
                rows: g.oh,
                fft: false,
            }
        }
    }
}

/// A block of output columns: rows `r0..r0 + rows` of the images `n0..n0 + imgs` of
/// a slice of images (all rows when `imgs > 1`). Column `(img, r, q)` of the block
/// is `(img · rows + r) · ow + q`.
#[derive(Clone, Copy, Debug)]
struct Block {
    n0: usize,
    imgs: usize,
    r0: usize,
    rows: usize,
}

impl Block {
    fn cols(&self, g: &ConvGeom) -> usize {
        self.imgs * self.rows * g.ow
    }
}

/// The blocks of a task of `imgs` images starting at image `n0`.
fn blocks(g: &ConvGeom, plan: Plan, n0: usize, imgs: usize) -> impl Iterator<Item = Block> {
    let (oh, step) = (g.oh, if imgs > 1 { g.oh } else { plan.rows });
    (0..oh).step_by(step).map(move |r0| Block {
        n0,
        imgs,
        r0,
        rows: step.min(oh - r0),
    })
}

/// gemm's own threads only when there are fewer tasks than threads.
fn gemm_parallelism(tasks: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if tasks < threads {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Where output row (or column) `r` of kernel tap `i` reads in an input of `len`
/// rows with `pad` zeros before it: `Some(r + i - pad)` if inside.
#[inline]
fn tap(r: usize, i: usize, pad: usize, len: usize) -> Option<usize> {
    (r + i).checked_sub(pad).filter(|&s| s < len)
}

/// The output columns `q0..q1` whose tap `j` reads inside a row of the input (the
/// others read padding), and the input column of `q0`.
#[inline]
fn inside_cols(g: &ConvGeom, j: usize) -> (usize, usize, usize) {
    let q0 = g.pad.saturating_sub(j);
    let q1 = (g.w + g.pad - j).min(g.ow);
    (q0, q1.max(q0), q0 + j - g.pad)
}

/// `col[(ci, i, j), column] = x[img, ci, r + i - pad, q + j - pad]` (zero outside `x`)
/// over the block's columns.
fn im2col<T: Real>(g: &ConvGeom, x: &[T], blk: Block, col: &mut [T]) {
    let cols = blk.cols(g);
    let seg = blk.rows * g.ow;
    let plane = g.h * g.w;
    let mut rows = col.chunks_exact_mut(cols);
    for ci in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let dst = rows.next().expect("im2col buffer too small");
                let (q0, q1, s0) = inside_cols(g, j);
                for img in 0..blk.imgs {
                    let src = &x[((blk.n0 + img) * g.c + ci) * plane..][..plane];
                    let dst = &mut dst[img * seg..][..seg];
                    for (r, d) in dst.chunks_exact_mut(g.ow).enumerate() {
                        match tap(blk.r0 + r, i, g.pad, g.h) {
                            Some(sr) if g.pad == 0 => {
                                let s = sr * g.w + j;
                                d.copy_from_slice(&src[s..s + g.ow]);
                            }
                            Some(sr) => {
                                d[..q0].fill(T::ZERO);
                                let s = sr * g.w + s0;
                                d[q0..q1].copy_from_slice(&src[s..s + (q1 - q0)]);
                                d[q1..].fill(T::ZERO);
                            }
                            None => d.fill(T::ZERO),
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx[img, ci, r + i - pad, q + j - pad] +=
/// dcol[(ci, i, j), column]` (what falls on the padding is dropped).
fn col2im<T: Real>(g: &ConvGeom, dcol: &[T], blk: Block, dx: &mut [T]) {
    let cols = blk.cols(g);
    let seg = blk.rows * g.ow;
    let plane = g.h * g.w;
    let mut rows = dcol.chunks_exact(cols);
    for ci in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let src = rows.next().expect("col2im buffer too small");
                let (q0, q1, s0) = inside_cols(g, j);
                for img in 0..blk.imgs {
                    let dst = &mut dx[((blk.n0 + img) * g.c + ci) * plane..][..plane];
                    let src = &src[img * seg..][..seg];
                    for (r, s) in src.chunks_exact(g.ow).enumerate() {
                        let Some(dr) = tap(blk.r0 + r, i, g.pad, g.h) else {
                            continue;
                        };
                        let d = dr * g.w + s0;
                        for (d, &s) in dst[d..d + (q1 - q0)].iter_mut().zip(&s[q0..q1]) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// `relu?(x + b)`, keeping NaNs.
#[inline]
fn bias_relu<T: Real>(v: T, b: T, relu: bool) -> T {
    let v = v + b;
    if relu && v < T::ZERO { T::ZERO } else { v }
}

/// Forward pass: `relu?(conv(x, w) + b)` as `(n, o, oh, ow)`, row-major.
pub(crate) fn conv_fwd<T: Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &[T],
    w: &[T],
    b: &[T],
    relu: bool,
) -> Vec<T> {
    assert_eq!(x.len(), g.n * g.x_img());
    assert_eq!(w.len(), g.o * g.k());
    assert_eq!(b.len(), g.o);
    if plan.fft && g.n > 0 {
        let mut y = super::fft::conv_fwd_preact(g, x, w, b);
        if relu {
            y.par_chunks_mut(g.y_img()).for_each(|y| {
                y.iter_mut().for_each(|v| *v = bias_relu(*v, T::ZERO, true));
            });
        }
        return y;
    }
    let mut y = vec![T::ZERO; g.n * g.y_img()];
    if y.is_empty() {
        return y;
    }
    let par = gemm_parallelism(g.n.div_ceil(plan.imgs));
    y.par_chunks_mut(plan.imgs * g.y_img())
        .enumerate()
        .for_each(|(t, y)| {
            let imgs = y.len() / g.y_img();
            let x = &x[t * plan.imgs * g.x_img()..][..imgs * g.x_img()];
            T::with_scratch(|s| {
                for blk in blocks(g, plan, 0, imgs) {
                    fwd_block(g, x, w, b, relu, blk, y, s, par);
                }
            });
        });
    y
}

/// Forward pass with a fused 2×2 max-pool: `pool(relu(conv(x, w) + b))` as
/// `(n, o, oh / 2, ow / 2)`, and the position of each window's maximum (first in
/// row-major order) as `2 · row + column`, for the backward pass.
#[cfg(test)]
pub(crate) fn conv_fwd_pool<T: Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &[T],
    w: &[T],
    b: &[T],
) -> (Vec<T>, Vec<u8>) {
    let (y, codes, kept) = conv_fwd_pool_keep(g, plan, x, w, b, false);
    debug_assert!(kept.is_none());
    (y, codes)
}

/// [`conv_fwd_pool`], also returning, if `keep` and the plan is the FFT, the
/// spectra that [`conv_bwd_kept`] can reuse.
pub(crate) fn conv_fwd_pool_keep<T: Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &[T],
    w: &[T],
    b: &[T],
    keep: bool,
) -> (Vec<T>, Vec<u8>, Option<Spectra<T>>) {
    assert_eq!(x.len(), g.n * g.x_img());
    assert_eq!(w.len(), g.o * g.k());
    assert_eq!(b.len(), g.o);
    let (ph, pw) = (g.oh / 2, g.ow / 2);
    let pooled_img = g.o * ph * pw;
    let mut y = vec![T::ZERO; g.n * pooled_img];
    let mut codes = vec![0u8; y.len()];
    if y.is_empty() {
        return (y, codes, None);
    }
    if plan.fft {
        let (yf, kept) = super::fft::conv_fwd_preact_keep(g, x, w, b, keep);
        y.par_chunks_mut(pooled_img)
            .zip(codes.par_chunks_mut(pooled_img))
            .zip(yf.par_chunks(g.y_img()))
            .for_each(|((y, codes), yf)| pool_relu(g, yf, y, codes));
        return (y, codes, kept);
    }
    let par = gemm_parallelism(g.n.div_ceil(plan.imgs));
    y.par_chunks_mut(plan.imgs * pooled_img)
        .zip(codes.par_chunks_mut(plan.imgs * pooled_img))
        .enumerate()
        .for_each(|(t, (y, codes))| {
            let imgs = y.len() / pooled_img;
            let x = &x[t * plan.imgs * g.x_img()..][..imgs * g.x_img()];
            T::with_scratch(|s| {
                // The task's unpooled outputs, pre-activation, then pooled with the
                // ReLU (max and ReLU commute; the argmax is that of relu-then-pool
                // wherever the gradient is not zero).
                let mut full = std::mem::take(&mut s.full);
                let yf = buffer(&mut full, imgs * g.y_img());
                for blk in blocks(g, plan, 0, imgs) {
                    fwd_block(g, x, w, b, false, blk, yf, s, par);
                }
                pool_relu(g, yf, y, codes);
                s.full = full;
            });
        });
    (y, codes, None)
}

/// The ReLU'd 2×2 max-pool of pre-activation planes `yf` `(.., oh, ow)` into `y`
/// `(.., oh / 2, ow / 2)`, with the argmax codes (max and ReLU commute; the argmax
/// is that of relu-then-pool wherever the gradient is not zero).
fn pool_relu<T: Real>(g: &ConvGeom, yf: &[T], y: &mut [T], codes: &mut [u8]) {
    let (ph, pw) = (g.oh / 2, g.ow / 2);
    let planes = yf.chunks_exact(g.p()).zip(y.chunks_exact_mut(ph * pw));
    for ((src, dst), codes) in planes.zip(codes.chunks_exact_mut(ph * pw)) {
        for i in 0..ph {
            let r0 = &src[2 * i * g.ow..][..2 * pw];
            let r1 = &src[(2 * i + 1) * g.ow..][..2 * pw];
            let win = r0.chunks_exact(2).zip(r1.chunks_exact(2));
            let out = dst[i * pw..][..pw]
                .iter_mut()
                .zip(&mut codes[i * pw..][..pw]);
            for ((v, c), (a, b)) in out.zip(win) {
                let (k, m) = super::pool::argmax4(a[0], a[1], b[0], b[1]);
                (*v, *c) = (bias_relu(m, T::ZERO, true), k as u8);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fwd_block<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    b: &[T],
    relu: bool,
    blk: Block,
    y: &mut [T],
    s: &mut Scratch<T>,
    par: gemm::Parallelism,
) {
    let (k, p, cols) = (g.k(), g.p(), blk.cols(g));
    let col = buffer(&mut s.col, k * cols);
    im2col(g, x, blk, col);
    if blk.imgs == 1 {
        // Straight into the output: preset the bias, accumulate the product.
        let base = blk.n0 * g.y_img() + blk.r0 * g.ow;
        for (o, &bo) in b.iter().enumerate() {
            y[base + o * p..][..cols].fill(bo);
        }
        let ys = Strides { rs: p, cs: 1 };
        let (ws, cs) = (Strides::row_major(k), Strides::row_major(cols));
        matmul(
            (g.o, cols, k),
            &mut y[base..],
            ys,
            w,
            ws,
            col,
            cs,
            true,
            par,
        );
        if relu {
            for o in 0..g.o {
                for v in &mut y[base + o * p..][..cols] {
                    *v = bias_relu(*v, T::ZERO, true);
                }
            }
        }
    } else {
        // Columns span images: compute into a buffer, then scatter.
        let tmp = buffer(&mut s.tmp, g.o * cols);
        let (ws, cs) = (Strides::row_major(k), Strides::row_major(cols));
        matmul((g.o, cols, k), tmp, cs, w, ws, col, cs, false, par);
        for img in 0..blk.imgs {
            for (o, &bo) in b.iter().enumerate() {
                let src = &tmp[o * cols + img * p..][..p];
                let dst = &mut y[(blk.n0 + img) * g.y_img() + o * p..][..p];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = bias_relu(s, bo, relu);
                }
            }
        }
    }
}

/// Where the gradient of the convolution's output comes from.
pub(crate) enum OutGrad<'a, T> {
    /// The gradient `dy` of the output `y` `(n, o, oh, ow)`, masked by `y > 0` when
    /// the ReLU is fused.
    Dense { y: &'a [T], dy: &'a [T], relu: bool },
    /// The gradient `dy` of the ReLU'd, 2×2-max-pooled output `res`
    /// `(n, o, oh / 2, ow / 2)`, with the window argmax `codes` of the forward pass.
    Pooled {
        res: &'a [T],
        dy: &'a [T],
        codes: &'a [u8],
    },
}

impl<T: Real> OutGrad<'_, T> {
    fn check(&self, g: &ConvGeom) {
        match self {
            Self::Dense { y, dy, .. } => {
                assert_eq!(y.len(), g.n * g.y_img());
                assert_eq!(dy.len(), y.len());
            }
            Self::Pooled { res, dy, codes } => {
                assert_eq!(res.len(), g.n * g.o * (g.oh / 2) * (g.ow / 2));
                assert_eq!(dy.len(), res.len());
                assert_eq!(codes.len(), res.len());
            }
        }
    }

    /// Writes the output gradient of image `n`, channel `o`, rows `r0..` of the
    /// convolution (as many as fit in `dst`).
    fn gather(&self, g: &ConvGeom, n: usize, o: usize, r0: usize, dst: &mut [T]) {
        match *self {
            Self::Dense { y, dy, relu } => {
                let off = (n * g.o + o) * g.p() + r0 * g.ow;
                let (src, y) = (&dy[off..][..dst.len()], &y[off..][..dst.len()]);
                if relu {
                    for ((d, &s), &v) in dst.iter_mut().zip(src).zip(y) {
                        *d = if v > T::ZERO { s } else { T::ZERO };
                    }
                } else {
                    dst.copy_from_slice(src);
                }
            }
            Self::Pooled { res, dy, codes } => {
                let (ph, pw) = (g.oh / 2, g.ow / 2);
                let plane = (n * g.o + o) * ph * pw;
                let rows = dst.len() / g.ow;
                dst.fill(T::ZERO);
                // Each pooled cell whose window overlaps the rows sends its gradient
                // to its argmax (window code: 2 · row parity + column parity).
                for pr in r0 / 2..(r0 + rows).div_ceil(2).min(ph) {
                    let row = plane + pr * pw;
                    let (res, dy, codes) =
                        (&res[row..][..pw], &dy[row..][..pw], &codes[row..][..pw]);
                    for (j, ((&v, &gd), &c)) in res.iter().zip(dy).zip(codes).enumerate() {
                        let r = 2 * pr + (c >> 1) as usize;
                        if v > T::ZERO && r >= r0 && r < r0 + rows {
                            dst[(r - r0) * g.ow + 2 * j + (c & 1) as usize] = gd;
                        }
                    }
                }
            }
        }
    }
}

/// Gradients of a convolution.
pub(crate) struct ConvGrads<T> {
    pub dx: Option<Vec<T>>,
    pub dw: Vec<T>,
    pub db: Vec<T>,
}

/// Backward pass, given the forward output `y` (for the ReLU mask) and its
/// gradient `dy`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_bwd<T: Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &[T],
    w: &[T],
    out: OutGrad<'_, T>,
    input_grad: bool,
) -> ConvGrads<T> {
    conv_bwd_kept(g, plan, x, w, out, input_grad, None)
}

/// [`conv_bwd`], reusing the spectra that the forward pass kept (FFT plans).
pub(crate) fn conv_bwd_kept<T: Real>(
    g: &ConvGeom,
    plan: Plan,
    x: &[T],
    w: &[T],
    out: OutGrad<'_, T>,
    input_grad: bool,
    kept: Option<Spectra<T>>,
) -> ConvGrads<T> {
    assert_eq!(x.len(), g.n * g.x_img());
    assert_eq!(w.len(), g.o * g.k());
    out.check(g);
    let (k, xi) = (g.k(), g.x_img());
    let mut dx = input_grad.then(|| vec![T::ZERO; g.n * xi]);
    if g.n == 0 {
        let (dw, db) = (vec![T::ZERO; g.o * k], vec![T::ZERO; g.o]);
        return ConvGrads { dx, dw, db };
    }
    if plan.fft {
        return conv_bwd_fft(g, x, w, &out, input_grad, kept);
    }
    if let Some(kept) = kept {
        kept.recycle();
    }
    // Groups of whole tasks, each with its own weight-gradient accumulator; a few
    // per thread so that rayon can balance them if a core is busy elsewhere.
    let tasks = g.n.div_ceil(plan.imgs);
    let groups = tasks.min(2 * rayon::current_num_threads()).max(1);
    let group_imgs = tasks.div_ceil(groups) * plan.imgs;
    let groups = g.n.div_ceil(group_imgs);
    let par = gemm_parallelism(groups);
    let run = |gi: usize, mut dx: Option<&mut [T]>| {
        let n0 = gi * group_imgs;
        let imgs = group_imgs.min(g.n - n0);
        let x = &x[n0 * xi..][..imgs * xi];
        let mut dw = vec![T::ZERO; g.o * k];
        let mut db = vec![T::ZERO; g.o];
        T::with_scratch(|s| {
            for t0 in (0..imgs).step_by(plan.imgs) {
                for blk in blocks(g, plan, t0, plan.imgs.min(imgs - t0)) {
                    let grads = (&mut dw[..], &mut db[..], dx.as_deref_mut());
                    bwd_block(g, x, w, &out, n0, blk, grads, s, par);
                }
            }
        });
        (dw, db)
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = match dx.as_mut() {
        Some(dx) => dx
            .par_chunks_mut(group_imgs * xi)
            .enumerate()
            .map(|(gi, dx)| run(gi, Some(dx)))
            .collect(),
        None => (0..groups)
            .into_par_iter()
            .map(|gi| run(gi, None))
            .collect(),
    };
    let mut partials = partials.into_iter();
    let (mut dw, mut db) = partials.next().expect("at least one group");
    for (pw, pb) in partials {
        dw.iter_mut().zip(&pw).for_each(|(a, &b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, &b)| *a += b);
    }
    ConvGrads { dx, dw, db }
}

/// [`conv_bwd`] by FFT: the output gradient of every image first, then
/// [`super::fft::conv_bwd`].
fn conv_bwd_fft<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    out: &OutGrad<'_, T>,
    input_grad: bool,
    kept: Option<Spectra<T>>,
) -> ConvGrads<T> {
    let p = g.p();
    let mut dz = super::fft::reuse::take(g.n * g.y_img(), T::ZERO);
    dz.par_chunks_mut(g.y_img()).enumerate().for_each(|(i, d)| {
        for (o, d) in d.chunks_exact_mut(p).enumerate() {
            out.gather(g, i, o, 0, d);
        }
    });
    // Per image, then summed in image order: the same bits whatever the threads.
    let per_image: Vec<Vec<T>> = dz
        .par_chunks(g.y_img())
        .map(|d| {
            d.chunks_exact(p)
                .map(|plane| plane.iter().fold(T::ZERO, |a, &v| a + v))
                .collect()
        })
        .collect();
    let mut db = vec![T::ZERO; g.o];
    for img in &per_image {
        db.iter_mut().zip(img).for_each(|(a, &b)| *a += b);
    }
    let (dw, dx) = super::fft::conv_bwd(g, x, w, &dz, input_grad, kept);
    super::fft::reuse::give(dz);
    ConvGrads { dx, dw, db }
}

#[allow(clippy::too_many_arguments)]
fn bwd_block<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    out: &OutGrad<'_, T>,
    n_base: usize,
    blk: Block,
    (dw, db, dx): (&mut [T], &mut [T], Option<&mut [T]>),
    s: &mut Scratch<T>,
    par: gemm::Parallelism,
) {
    let (k, cols) = (g.k(), blk.cols(g));
    let seg = blk.rows * g.ow;
    let Scratch { col, tmp, .. } = s;
    let col = buffer(col, k * cols);
    im2col(g, x, blk, col);
    // The gradient of the convolution's output over the block: gy[o, column].
    let gy = buffer(tmp, g.o * cols);
    for img in 0..blk.imgs {
        for o in 0..g.o {
            let dst = &mut gy[o * cols + img * seg..][..seg];
            out.gather(g, n_base + blk.n0 + img, o, blk.r0, dst);
        }
    }
    for (dbo, row) in db.iter_mut().zip(gy.chunks_exact(cols)) {
        *dbo += row.iter().fold(T::ZERO, |a, &v| a + v);
    }
    // dw[o, k] += gy[o, cols] · col[k, cols]ᵀ
    let (gs, cs) = (Strides::row_major(cols), Strides::row_major(cols));
    let cts = Strides::col_major(cols);
    matmul(
        (g.o, k, cols),
        dw,
        Strides::row_major(k),
        gy,
        gs,
        col,
        cts,
        true,
        par,
    );
    if let Some(dx) = dx {
        // dcol[k, cols] = w[o, k]ᵀ · gy[o, cols], in the im2col buffer, then col2im.
        let wts = Strides::col_major(k);
        matmul((k, cols, g.o), col, cs, w, wts, gy, gs, false, par);
        col2im(g, col, blk, dx);
    }
}

/// The custom op: `(x, w, b) -> maxpool2x2(relu(conv2d(x, w) + b))`.
#[derive(Debug)]
pub(crate) struct Conv2dBiasReluPool {
    /// Whether the backward pass computes the input gradient.
    pub input_grad: bool,
    /// The argmax codes of the forward pass (one forward per op instance).
    pub codes: std::sync::Mutex<Option<Vec<u8>>>,
    /// Whether a backward pass will follow (autograd tracks the op): then an FFT
    /// forward keeps its spectra here for it.
    pub keep: bool,
    /// [`Spectra`] of the forward pass, as `Spectra<f32>` or `Spectra<f64>`.
    pub kept: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Conv2dBiasReluPool {
    pub fn new(input_grad: bool, keep: bool) -> Self {
        Self {
            input_grad,
            codes: std::sync::Mutex::new(None),
            keep,
            kept: std::sync::Mutex::new(None),
        }
    }

    fn poisoned() -> candle_core::Error {
        candle_core::Error::Msg("conv2d-bias-relu-pool: poisoned".into())
    }
}

impl Kernel3 for Conv2dBiasReluPool {
    const NAME: &'static str = "conv2d-bias-relu-pool2x2";

    fn out_shape(&self, x: &Shape, w: &Shape, _: &Shape) -> Result<Shape> {
        let g = ConvGeom::new(x.dims4()?, w.dims4()?)?;
        Ok(Shape::from((g.n, g.o, g.oh / 2, g.ow / 2)))
    }

    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        let g = ConvGeom::new(shapes[0].dims4()?, shapes[1].dims4()?)?;
        let plan = Plan::new::<T>(&g);
        let (y, codes, kept) = conv_fwd_pool_keep(&g, plan, x, w, b, self.keep);
        *self.codes.lock().map_err(|_| Self::poisoned())? = Some(codes);
        *self.kept.lock().map_err(|_| Self::poisoned())? =
            kept.map(|k| Box::new(k) as Box<dyn std::any::Any + Send>);
        Ok(y)
    }

    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>> {
        let g = ConvGeom::new(t.x.dims4()?, t.w.dims4()?)?;
        let codes = self.codes.lock().map_err(|_| Self::poisoned())?;
        let Some(codes) = codes.as_deref() else {
            candle_core::bail!("conv2d-bias-relu-pool: backward before forward")
        };
        // Taken: a second backward pass recomputes them.
        let kept = (self.kept.lock().map_err(|_| Self::poisoned())?.take())
            .and_then(|k| k.downcast::<Spectra<T>>().ok())
            .map(|k| *k);
        let out = OutGrad::Pooled {
            res: v.res,
            dy: v.dy,
            codes,
        };
        let plan = Plan::new::<T>(&g);
        let grads = conv_bwd_kept::<T>(&g, plan, v.x, v.w, out, self.input_grad, kept);
        Ok((grads.dx, grads.dw, grads.db))
    }
}

super::custom_op3!(Conv2dBiasReluPool);

/// The custom op: `(x, w, b) -> relu?(conv2d(x, w) + b)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dBiasRelu {
    pub relu: bool,
    /// Whether the backward pass computes the input gradient.
    pub input_grad: bool,
}

impl Kernel3 for Conv2dBiasRelu {
    const NAME: &'static str = "conv2d-bias-relu";

    fn out_shape(&self, x: &Shape, w: &Shape, _: &Shape) -> Result<Shape> {
        Ok(ConvGeom::new(x.dims4()?, w.dims4()?)?.y_shape())
    }

    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        let g = ConvGeom::new(shapes[0].dims4()?, shapes[1].dims4()?)?;
        Ok(conv_fwd(&g, Plan::new::<T>(&g), x, w, b, self.relu))
    }

    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>> {
        let g = ConvGeom::new(t.x.dims4()?, t.w.dims4()?)?;
        let out = OutGrad::Dense {
            y: v.res,
            dy: v.dy,
            relu: self.relu,
        };
        let grads = conv_bwd::<T>(&g, Plan::new::<T>(&g), v.x, v.w, out, self.input_grad);
        Ok((grads.dx, grads.dw, grads.db))
    }
}

super::custom_op3!(Conv2dBiasRelu);
