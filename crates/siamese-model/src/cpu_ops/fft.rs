//! Stride-1, unpadded 2-D convolution by FFT, forward and backward.
//!
//! For the deep layers of the network (many channels, kernels of 4×4 to 7×7 on
//! small planes) the convolution theorem does far less arithmetic than im2col +
//! gemm: conv2 (64→128 channels, 7×7 on 48×48) costs 1.42 GFLOP per image directly
//! and 0.08 GFLOP as products of spectra. Every plane is transformed once with a
//! real 2-D FFT of the input's size (`h × w`: the valid outputs never wrap around),
//! and the channel sums become, per frequency bin, one real gemm on a 2×2 block
//! form of the complex matrices:
//!
//! - forward, a correlation: `Z = X · conj(W)ᵀ` (`n × o` from `n × c` and `o × c`);
//! - weight gradient, the correlation of the input with the output gradient:
//!   `dW = conj(D)ᵀ · X` (`o × c`);
//! - input gradient, a full convolution: `dX = D · W` (`n × c`).
//!
//! With `X = Xr + i·Xi` stored as the real `n × 2c` matrix `[Xr Xi]`, the forward
//! product is `[Zr Zi] = [Xr Xi] · M` with `M = [[Wrᵀ, −Wiᵀ], [Wiᵀ, Wrᵀ]]`
//! (`2c × 2o`), and the input gradient is `[dXr dXi] = [Dr Di] · Mᵀ`, so one block
//! matrix per bin serves both. The weight gradient is read off `P = [Dr Di]ᵀ ·
//! [Xr Xi]` (`2o × 2c`): `dWr = P₁₁ + P₂₂`, `dWi = P₁₂ − P₂₁`.
//!
//! Spectra are computed plane by plane (rayon across planes), transposed in cache-
//! sized tiles to bin-major matrices for the gemms (rayon across bins, one single-
//! threaded gemm per bin), and transposed back for the inverse transforms.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use super::conv::ConvGeom;
use super::{Real, Strides, matmul};

/// Bins per task when building bin-major matrices (a tile of that many consecutive
/// bins of every plane is one or two cache lines per plane).
const TILE_BINS: usize = 16;
/// Planes per task when transposing back to plane-major spectra.
const TILE_PLANES: usize = 64;
/// Padding after each bin's matrix: without it, the matrices of consecutive bins
/// are often a power of two apart (32 KiB, 128 KiB), and the transposes, which
/// write one element into each of a tile's bins in turn, thrash a cache set.
const PAD: usize = 16;

/// The distance between consecutive bins' matrices of `len` elements.
fn padded(len: usize) -> usize {
    len + PAD
}

/// Large buffers kept between calls, per thread. Fresh allocations of this size
/// come from `mmap`, and every first touch of a page is a page fault: without
/// reuse, the kernel's page handling took a third of an FFT convolution's time.
pub(super) mod reuse {
    use std::any::Any;
    use std::cell::RefCell;

    /// Buffers kept per thread; the smallest go first when there are more.
    const KEEP: usize = 12;

    thread_local! {
        static KEPT: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer of `len` elements whose contents are unspecified (left by an earlier
    /// user, or `fill`): callers overwrite every element they later read.
    pub fn take<E: Copy + 'static>(len: usize, fill: E) -> Vec<E> {
        let found = KEPT.with(|k| {
            let mut k = k.borrow_mut();
            // The smallest kept buffer of this type that is large enough, else the
            // largest one (grown below).
            let mut best: Option<(usize, usize)> = None;
            for (i, b) in k.iter().enumerate() {
                if let Some(v) = b.downcast_ref::<Vec<E>>() {
                    let cap = v.capacity();
                    let better = match best {
                        None => true,
                        Some((_, c)) if c >= len => cap >= len && cap < c,
                        Some((_, c)) => cap > c,
                    };
                    if better {
                        best = Some((i, cap));
                    }
                }
            }
            best.map(|(i, _)| k.swap_remove(i))
        });
        let mut v = found
            .and_then(|b| b.downcast::<Vec<E>>().ok())
            .map(|b| *b)
            .unwrap_or_default();
        v.resize(len, fill);
        v
    }

    /// Returns a buffer for later [`take`]s on this thread.
    pub fn give<E: Copy + 'static>(v: Vec<E>) {
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            k.push(Box::new(v));
            if k.len() > KEEP {
                k.remove(0);
            }
        });
    }
}

/// Whether the FFT path is expected to beat im2col + gemm on these sizes, forward
/// and backward together.
///
/// A cost model in units of one gemm multiply-add, calibrated on the Koch shapes
/// (AVX-512, 2 cores, 64 images): a 2-D transform of an `nh × nw` plane costs about
/// `FFT_COST · nh·nw·log₂(nh·nw) + PLANE_COST` (reading, writing and transposing it
/// included). Measured, forward + backward: conv2 (7×7 on 48×48, 64→128 channels)
/// 0.62 s by FFT against 1.70 s directly (the model: 0.36 of the direct cost);
/// conv3 (4×4 on 21×21) 0.20 s against 0.18 s; conv1 (10×10 on 105×105, one input
/// channel) and conv4 (4×4 on 9×9) several times slower by FFT. The weights' part
/// (DFT tables times kernels, independent of the batch) keeps small batches direct.
pub(crate) fn pays(g: &ConvGeom) -> bool {
    const FFT_COST: f64 = 40.0;
    const PLANE_COST: f64 = 1.7e5;
    if g.n == 0 || g.o == 0 || g.c == 0 {
        return false;
    }
    let (n, c, o) = (g.n as f64, g.c as f64, g.o as f64);
    let kk = (g.kh * g.kw) as f64;
    // Forward, weight gradient and input gradient.
    let direct = 3.0 * n * o * c * kk * g.p() as f64;
    let bins = (g.h * (g.w / 2 + 1)) as f64;
    let plane = (g.h * g.w) as f64;
    let per_plane = FFT_COST * plane * plane.log2().max(1.0) + PLANE_COST;
    // Inputs twice and input gradients; outputs and output gradients.
    let transforms = (3.0 * n * c + 2.0 * n * o) * per_plane;
    let products = 3.0 * 4.0 * n * c * o * bins;
    // Weight spectra for the forward and input-gradient passes (half of each gemm
    // multiplies zeros), and the weight gradient's inverse.
    let weights = 2.0 * 4.0 * bins * c * o * kk + 4.0 * kk * bins * o * c;
    transforms + products + weights < direct
}

/// Real 2-D transforms of `nh × nw` planes; spectra have `nh · (nw / 2 + 1)` bins,
/// stored column by column (bin `cf · nh + rf`).
struct Fft2<T: Real> {
    nh: usize,
    nw: usize,
    nwc: usize,
    r2c: Arc<dyn RealToComplex<T>>,
    c2r: Arc<dyn ComplexToReal<T>>,
    col_fwd: Arc<dyn Fft<T>>,
    col_inv: Arc<dyn Fft<T>>,
}

/// The buffers of one task's transforms.
struct Fft2Scratch<T> {
    row: Vec<T>,
    row_c: Vec<Complex<T>>,
    r2c: Vec<Complex<T>>,
    c2r: Vec<Complex<T>>,
    col: Vec<Complex<T>>,
}

fn zero<T: Real>() -> Complex<T> {
    Complex::new(T::ZERO, T::ZERO)
}

impl<T: Real> Fft2<T> {
    fn new(nh: usize, nw: usize) -> Self {
        let mut real = RealFftPlanner::<T>::new();
        let mut complex = FftPlanner::<T>::new();
        Self {
            nh,
            nw,
            nwc: nw / 2 + 1,
            r2c: real.plan_fft_forward(nw),
            c2r: real.plan_fft_inverse(nw),
            col_fwd: complex.plan_fft_forward(nh),
            col_inv: complex.plan_fft_inverse(nh),
        }
    }

    fn bins(&self) -> usize {
        self.nh * self.nwc
    }

    /// `1 / (nh · nw)`: the transforms are unnormalised.
    fn norm(&self) -> T {
        <T as candle_core::WithDType>::from_f64(1.0 / (self.nh * self.nw) as f64)
    }

    fn scratch(&self) -> Fft2Scratch<T> {
        let col = self
            .col_fwd
            .get_inplace_scratch_len()
            .max(self.col_inv.get_inplace_scratch_len());
        Fft2Scratch {
            row: self.r2c.make_input_vec(),
            row_c: self.r2c.make_output_vec(),
            r2c: self.r2c.make_scratch_vec(),
            c2r: self.c2r.make_scratch_vec(),
            col: vec![zero(); col],
        }
    }

    /// The spectrum of the `rows × cols` plane `src` (row-major), zero-padded.
    fn forward(
        &self,
        src: &[T],
        (rows, cols): (usize, usize),
        out: &mut [Complex<T>],
        s: &mut Fft2Scratch<T>,
    ) {
        debug_assert!(rows <= self.nh && cols <= self.nw && out.len() == self.bins());
        out.fill(zero());
        for (r, line) in src.chunks_exact(cols).take(rows).enumerate() {
            s.row[..cols].copy_from_slice(line);
            s.row[cols..].fill(T::ZERO);
            self.r2c
                .process_with_scratch(&mut s.row, &mut s.row_c, &mut s.r2c)
                .expect("buffers sized by the plan");
            for (cf, &v) in s.row_c.iter().enumerate() {
                out[cf * self.nh + r] = v;
            }
        }
        self.col_fwd.process_with_scratch(out, &mut s.col);
    }

    /// The top-left `rows × cols` of the inverse transform of `spec` (destroyed),
    /// times `scale`, plus `bias`, into `dst` (row-major).
    #[allow(clippy::too_many_arguments)]
    fn inverse(
        &self,
        spec: &mut [Complex<T>],
        (rows, cols): (usize, usize),
        scale: T,
        bias: T,
        dst: &mut [T],
        s: &mut Fft2Scratch<T>,
    ) {
        debug_assert!(rows <= self.nh && cols <= self.nw && spec.len() == self.bins());
        self.col_inv.process_with_scratch(spec, &mut s.col);
        for (r, line) in dst.chunks_exact_mut(cols).take(rows).enumerate() {
            for (cf, v) in s.row_c.iter_mut().enumerate() {
                *v = spec[cf * self.nh + r];
            }
            // The spectrum of a real row: these are zero up to rounding, and the
            // complex-to-real transform wants them exactly zero.
            s.row_c[0].im = T::ZERO;
            if self.nw.is_multiple_of(2) {
                s.row_c[self.nwc - 1].im = T::ZERO;
            }
            self.c2r
                .process_with_scratch(&mut s.row_c, &mut s.row, &mut s.c2r)
                .expect("buffers sized by the plan");
            for (d, &v) in line.iter_mut().zip(&s.row[..cols]) {
                *d = v * scale + bias;
            }
        }
    }

    /// The spectra of `planes` consecutive `rows × cols` planes of `src`.
    fn spectra(&self, src: &[T], (rows, cols): (usize, usize)) -> Vec<Complex<T>> {
        let bins = self.bins();
        let planes = src.len() / (rows * cols);
        let mut out = reuse::take(planes * bins, zero());
        out.par_chunks_mut(bins)
            .zip(src.par_chunks_exact(rows * cols))
            .for_each_init(
                || self.scratch(),
                |s, (o, p)| self.forward(p, (rows, cols), o, s),
            );
        out
    }

    /// Inverse transforms of consecutive spectra into `rows × cols` planes of `dst`,
    /// with `bias(plane)` added.
    fn inverses(
        &self,
        spec: &mut [Complex<T>],
        (rows, cols): (usize, usize),
        bias: impl Fn(usize) -> T + Sync,
        dst: &mut [T],
    ) {
        let scale = self.norm();
        dst.par_chunks_mut(rows * cols)
            .zip(spec.par_chunks_mut(self.bins()))
            .enumerate()
            .for_each_init(
                || self.scratch(),
                |s, (i, (d, sp))| self.inverse(sp, (rows, cols), scale, bias(i), d, s),
            );
    }
}

/// Plane-major spectra of `n · ch` planes (plane `i · ch + c`) into bin-major real
/// matrices: bin `f` is the `n × 2ch` matrix `[re | im]`, at `f · padded(2 n ch)`.
fn bin_major<T: Real>(spec: &[Complex<T>], bins: usize, n: usize, ch: usize) -> Vec<T> {
    let row = padded(2 * n * ch);
    let mut dst = reuse::take(bins * row, T::ZERO);
    dst.par_chunks_mut(TILE_BINS * row)
        .enumerate()
        .for_each(|(t, d)| {
            let (f0, fl) = (t * TILE_BINS, d.len() / row);
            for i in 0..n {
                for c in 0..ch {
                    let src = &spec[(i * ch + c) * bins + f0..][..fl];
                    let (re, im) = (i * 2 * ch + c, i * 2 * ch + ch + c);
                    for (j, v) in src.iter().enumerate() {
                        d[j * row + re] = v.re;
                        d[j * row + im] = v.im;
                    }
                }
            }
        });
    dst
}

/// The inverse of [`bin_major`].
fn plane_major<T: Real>(src: &[T], bins: usize, n: usize, ch: usize) -> Vec<Complex<T>> {
    let row = padded(2 * n * ch);
    let mut dst = reuse::take(n * ch * bins, zero());
    dst.par_chunks_mut(TILE_PLANES * bins)
        .enumerate()
        .for_each(|(t, d)| {
            let p0 = t * TILE_PLANES;
            let np = d.len() / bins;
            for (f, line) in src.chunks_exact(row).enumerate() {
                for j in 0..np {
                    let (i, c) = ((p0 + j) / ch, (p0 + j) % ch);
                    let base = i * 2 * ch;
                    d[j * bins + f] = Complex::new(line[base + c], line[base + ch + c]);
                }
            }
        });
    dst
}

/// The real and imaginary parts of the 2-D DFT of a `kh × kw` kernel, as matrices:
/// the spectrum at bin `f` is `Σ_pq w[pq] · (cos θ − i·sin θ)`, with
/// `θ = 2π (rf·p / nh + cf·q / nw)` and `f = cf · nh + rf`. For small kernels, a
/// gemm with these tables beats `o · c` FFTs followed by a transpose, and writes
/// the spectra straight into the bin-major layout the per-bin products need.
struct KernelDft<T> {
    kk: usize,
    /// `cos θ`, `sin θ` and `−sin θ`, `bins × kk` row-major.
    cos: Vec<T>,
    sin: Vec<T>,
    neg_sin: Vec<T>,
    /// The inverse restricted to the kernel's taps, `kk × bins` row-major, for the
    /// half spectrum of a real signal: `dw[pq] = Σ_f inv_re[pq, f] · Re[f] +
    /// inv_im[pq, f] · Im[f]`, with the weights of the implied conjugate bins and
    /// the `1 / (nh · nw)` folded in.
    inv_re: Vec<T>,
    inv_im: Vec<T>,
    neg_inv_im: Vec<T>,
}

impl<T: Real> KernelDft<T> {
    fn new(fft: &Fft2<T>, (kh, kw): (usize, usize)) -> Self {
        let (bins, kk) = (fft.bins(), kh * kw);
        let cast = |v: f64| <T as candle_core::WithDType>::from_f64(v);
        let mut dft = Self {
            kk,
            cos: Vec::with_capacity(bins * kk),
            sin: Vec::with_capacity(bins * kk),
            neg_sin: Vec::with_capacity(bins * kk),
            inv_re: vec![T::ZERO; kk * bins],
            inv_im: vec![T::ZERO; kk * bins],
            neg_inv_im: vec![T::ZERO; kk * bins],
        };
        let norm = 1.0 / (fft.nh * fft.nw) as f64;
        for f in 0..bins {
            let (cf, rf) = (f / fft.nh, f % fft.nh);
            // Bins 0 < cf < nw/2 stand for themselves and their conjugates.
            let twice = cf != 0 && 2 * cf != fft.nw;
            let weight = if twice { 2.0 } else { 1.0 } * norm;
            for p in 0..kh {
                for q in 0..kw {
                    let turns = (rf * p) as f64 / fft.nh as f64 + (cf * q) as f64 / fft.nw as f64;
                    let (sin, cos) = (std::f64::consts::TAU * turns).sin_cos();
                    dft.cos.push(cast(cos));
                    dft.sin.push(cast(sin));
                    dft.neg_sin.push(cast(-sin));
                    let pq = p * kw + q;
                    dft.inv_re[pq * bins + f] = cast(weight * cos);
                    dft.inv_im[pq * bins + f] = cast(-weight * sin);
                    dft.neg_inv_im[pq * bins + f] = cast(weight * sin);
                }
            }
        }
        dft
    }
}

/// The block matrices `M = [[Wrᵀ, −Wiᵀ], [Wiᵀ, Wrᵀ]]` (`2c × 2o`) of every bin,
/// `padded(4 c o)` apart, as two gemms: the top half of every bin's matrix is
/// `[cos | sin] · R` and the bottom half `[cos | −sin] · R'`, where `R` and `R'`
/// (`2kk × 2co`) place each kernel under the columns of its block.
fn weight_blocks<T: Real>(fft: &Fft2<T>, dft: &KernelDft<T>, g: &ConvGeom, w: &[T]) -> Vec<T> {
    let bins = fft.bins();
    let (c, o, kk) = (g.c, g.o, dft.kk);
    let (len, half) = (padded(4 * c * o), 2 * c * o);
    // [table_a | table_b], bins × 2kk.
    let tables = |a: &[T], b: &[T]| -> Vec<T> {
        a.chunks_exact(kk)
            .zip(b.chunks_exact(kk))
            .flat_map(|(a, b)| a.iter().chain(b).copied())
            .collect()
    };
    // R: column ci·2o + j takes kernel (j mod o, ci) from the first table if
    // `j < o` is `first_low`, else from the second.
    let spread = |first_low: bool| -> Vec<T> {
        // Mostly zeros, refilled: a reused buffer spares the page faults of 2 × 6 MB
        // per call on conv2.
        let mut r = reuse::take(2 * kk * half, T::ZERO);
        r.fill(T::ZERO);
        for ci in 0..c {
            for oi in 0..o {
                let kernel = &w[(oi * c + ci) * kk..][..kk];
                let (low, high) = (ci * 2 * o + oi, ci * 2 * o + o + oi);
                let (col_a, col_b) = if first_low { (low, high) } else { (high, low) };
                for (pq, &v) in kernel.iter().enumerate() {
                    r[pq * half + col_a] = v;
                    r[(kk + pq) * half + col_b] = v;
                }
            }
        }
        r
    };
    let mut m = reuse::take(bins * len, T::ZERO);
    let par = gemm::Parallelism::Rayon(rayon::current_num_threads());
    let (dst, lhs, rhs) = (
        Strides { rs: len, cs: 1 },
        Strides::row_major(2 * kk),
        Strides::row_major(half),
    );
    // Top: [Wrᵀ | −Wiᵀ] = [cos·w | sin·w]; bottom: [Wiᵀ | Wrᵀ] = [−sin·w | cos·w].
    let top = (tables(&dft.cos, &dft.sin), spread(true));
    let bottom = (tables(&dft.cos, &dft.neg_sin), spread(false));
    for (offset, (table, r)) in [(0, top), (half, bottom)] {
        let dims = (bins, half, 2 * kk);
        matmul(
            dims,
            &mut m[offset..],
            dst,
            &table,
            lhs,
            &r,
            rhs,
            false,
            par,
        );
        reuse::give(r);
    }
    m
}

/// Per bin, `dst_f = lhs_f · rhs_f` with `(m, n, k)` and the strides of one bin's
/// matrices; matrices of consecutive bins are `*_len` apart.
#[allow(clippy::too_many_arguments)]
fn per_bin<T: Real>(
    bins: usize,
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    ds: Strides,
    (lhs, ll, ls): (&[T], usize, Strides),
    (rhs, rl, rs): (&[T], usize, Strides),
) {
    let dl = dst.len() / bins;
    let chunk = bins.div_ceil(8 * rayon::current_num_threads()).max(1);
    dst.par_chunks_mut(chunk * dl)
        .enumerate()
        .for_each(|(t, d)| {
            for (j, df) in d.chunks_exact_mut(dl).enumerate() {
                let f = t * chunk + j;
                let (l, r) = (&lhs[f * ll..][..ll], &rhs[f * rl..][..rl]);
                matmul(
                    (m, n, k),
                    df,
                    ds,
                    l,
                    ls,
                    r,
                    rs,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
}

/// What the forward pass computed that the backward pass needs again: the inputs'
/// bin-major spectra and the weights' block matrices.
pub(crate) struct Spectra<T> {
    xb: Vec<T>,
    m: Vec<T>,
}

impl<T: Copy + 'static> Spectra<T> {
    /// Hands the buffers back for reuse.
    pub(crate) fn recycle(self) {
        reuse::give(self.xb);
        reuse::give(self.m);
    }
}

/// Forward pass without activation: `conv(x, w) + b` as `(n, o, oh, ow)`.
pub(crate) fn conv_fwd_preact<T: Real>(g: &ConvGeom, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    conv_fwd_preact_keep(g, x, w, b, false).0
}

/// [`conv_fwd_preact`], also returning the [`Spectra`] for the backward pass if
/// `keep`.
pub(crate) fn conv_fwd_preact_keep<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    b: &[T],
    keep: bool,
) -> (Vec<T>, Option<Spectra<T>>) {
    let fft = Fft2::<T>::new(g.h, g.w);
    let dft = KernelDft::new(&fft, (g.kh, g.kw));
    let bins = fft.bins();
    let (n, c, o) = (g.n, g.c, g.o);
    let xs = fft.spectra(x, (g.h, g.w));
    let xb = bin_major(&xs, bins, n, c);
    reuse::give(xs);
    let m = weight_blocks(&fft, &dft, g, w);
    let mut zb = reuse::take(bins * padded(n * 2 * o), T::ZERO);
    per_bin(
        bins,
        (n, 2 * o, 2 * c),
        &mut zb,
        Strides::row_major(2 * o),
        (&xb, padded(n * 2 * c), Strides::row_major(2 * c)),
        (&m, padded(4 * c * o), Strides::row_major(2 * o)),
    );
    let spectra = Spectra { xb, m };
    let kept = if keep {
        Some(spectra)
    } else {
        spectra.recycle();
        None
    };
    let mut zs = plane_major(&zb, bins, n, o);
    reuse::give(zb);
    let mut y = vec![T::ZERO; n * g.y_img()];
    fft.inverses(&mut zs, (g.oh, g.ow), |p| b[p % o], &mut y);
    reuse::give(zs);
    (y, kept)
}

/// Backward pass, given the gradient `dz` `(n, o, oh, ow)` of the convolution's
/// output (before bias and activation): the weight gradient `(o, c, kh, kw)` and,
/// with `input_grad`, the input gradient `(n, c, h, w)`. `kept`: the forward pass's
/// [`Spectra`] of the same `x` and `w`, if it kept them.
pub(crate) fn conv_bwd<T: Real>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dz: &[T],
    input_grad: bool,
    kept: Option<Spectra<T>>,
) -> (Vec<T>, Option<Vec<T>>) {
    let fft = Fft2::<T>::new(g.h, g.w);
    let dft = KernelDft::new(&fft, (g.kh, g.kw));
    let bins = fft.bins();
    let (n, c, o, kk) = (g.n, g.c, g.o, dft.kk);
    let ds = fft.spectra(dz, (g.oh, g.ow));
    let db = bin_major(&ds, bins, n, o);
    reuse::give(ds);

    // P = [Dr Di]ᵀ · [Xr Xi] per bin; dW = (P₁₁ + P₂₂) + i·(P₁₂ − P₂₁).
    let (xb, kept_m) = match kept {
        Some(Spectra { xb, m }) => (xb, Some(m)),
        None => {
            let xs = fft.spectra(x, (g.h, g.w));
            let xb = bin_major(&xs, bins, n, c);
            reuse::give(xs);
            (xb, None)
        }
    };
    let (plen, prow) = (padded(4 * o * c), 2 * c);
    let mut pb = reuse::take(bins * plen, T::ZERO);
    per_bin(
        bins,
        (2 * o, 2 * c, n),
        &mut pb,
        Strides::row_major(prow),
        (&db, padded(n * 2 * o), Strides::col_major(2 * o)),
        (&xb, padded(n * 2 * c), Strides::row_major(prow)),
    );
    reuse::give(xb);
    // The kernel taps of the inverse transform, per output channel: dw[oi] (a
    // `kk × c` matrix, column-major) = inv_re·(P₁₁ + P₂₂) + inv_im·(P₁₂ − P₂₁),
    // with each P block of channel oi a `bins × c` matrix.
    let mut dw = vec![T::ZERO; o * c * kk];
    dw.par_chunks_mut(c * kk).enumerate().for_each(|(oi, dw)| {
        let blocks = [
            (oi * prow, &dft.inv_re),
            ((o + oi) * prow + c, &dft.inv_re),
            (oi * prow + c, &dft.inv_im),
            ((o + oi) * prow, &dft.neg_inv_im),
        ];
        for (i, (offset, table)) in blocks.into_iter().enumerate() {
            matmul(
                (kk, c, bins),
                dw,
                Strides::col_major(kk),
                table,
                Strides::row_major(bins),
                &pb[offset..],
                Strides { rs: plen, cs: 1 },
                i > 0,
                gemm::Parallelism::None,
            );
        }
    });
    reuse::give(pb);

    let dx = input_grad.then(|| {
        // dX = [Dr Di] · Mᵀ per bin.
        let m = kept_m.unwrap_or_else(|| weight_blocks(&fft, &dft, g, w));
        let mut dxb = reuse::take(bins * padded(n * 2 * c), T::ZERO);
        per_bin(
            bins,
            (n, 2 * c, 2 * o),
            &mut dxb,
            Strides::row_major(2 * c),
            (&db, padded(n * 2 * o), Strides::row_major(2 * o)),
            (&m, padded(4 * c * o), Strides::col_major(2 * o)),
        );
        reuse::give(m);
        let mut dxs = plane_major(&dxb, bins, n, c);
        reuse::give(dxb);
        let mut dx = vec![T::ZERO; n * g.x_img()];
        fft.inverses(&mut dxs, (g.h, g.w), |_| T::ZERO, &mut dx);
        reuse::give(dxs);
        dx
    });
    reuse::give(db);
    (dw, dx)
}
