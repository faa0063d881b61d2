//! Batch norm, ReLU and 2×2 max-pool in one op, forward and backward.
//!
//! `y = max_pool2x2(relu(γ · (x − μ) / √(σ² + ε) + β))` per channel, where μ and σ²
//! are the batch's mean and biased variance over `(n, h, w)` in training, or given
//! running statistics in inference. Fusing the three saves the unpooled normalised
//! activation (4× the output) and three passes over memory forward and backward;
//! candle's stock ops would take about ten single-threaded passes for the same.
//!
//! Both directions run whole images in parallel: per-channel sums are folded per
//! image and reduced, so no two threads write the same memory.
//!
//! Backward (training): with `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)`, `M = n·h·w` and `g`
//! the gradient reaching the normalised value (the output gradient at the first
//! maximum of each window whose output is positive, zero elsewhere):
//! `dβ = Σg`, `dγ = Σg·x̂`, `dx = γ·r·(g − dβ/M − x̂·dγ/M)`. In inference the
//! statistics are constants: `dx = γ·r·g`.

use std::sync::{Arc, Mutex};

use candle_core::{Result, Shape};
use rayon::prelude::*;

use super::{Kernel3, Op3Grads, Op3Slices, Op3Tensors, Real};

/// Per-channel mean and biased variance.
pub type ChannelStats = (Vec<f64>, Vec<f64>);

/// Which statistics normalise.
#[derive(Clone, Debug)]
pub(crate) enum Norm {
    /// The batch's own (training). The forward pass stores them here, for the
    /// backward pass and for the caller's running statistics.
    Batch(Arc<Mutex<Option<ChannelStats>>>),
    /// Given per-channel mean and variance (inference).
    Fixed(ChannelStats),
}

/// The op: `x (n, c, h, w)`, `γ (c)`, `β (c)` → `(n, c, h/2, w/2)`.
#[derive(Debug)]
pub(crate) struct BnReluPool {
    pub eps: f64,
    pub norm: Norm,
}

super::custom_op3!(BnReluPool);

/// The sizes of batch norm's input `(n, c, h, w)`.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Dims {
    fn of(s: &Shape) -> Result<Self> {
        let (n, c, h, w) = s.dims4()?;
        Ok(Dims { n, c, h, w })
    }
    /// The shape after the 2×2 pool; an error (`what` names the op) if the map is
    /// smaller than the window.
    pub(crate) fn pooled_shape(self, what: &str) -> Result<Shape> {
        if self.h < 2 || self.w < 2 {
            candle_core::bail!(
                "{what}: a {}×{} map is smaller than the 2×2 pool",
                self.h,
                self.w
            );
        }
        Ok(Shape::from((self.n, self.c, self.h / 2, self.w / 2)))
    }

    pub(crate) fn hw(self) -> usize {
        self.h * self.w
    }
    fn out_hw(self) -> usize {
        (self.h / 2) * (self.w / 2)
    }
}

impl BnReluPool {
    /// Mean and `1/√(σ² + ε)` per channel for the forward pass: the batch's
    /// (computed, and stored for the backward pass and the caller) or the given ones.
    pub(crate) fn mean_rstd<T: Real>(&self, d: Dims, x: &[T]) -> Result<(Vec<f64>, Vec<f64>)> {
        let stats = match &self.norm {
            Norm::Fixed(stats) => stats.clone(),
            Norm::Batch(slot) => {
                let stats = batch_stats(d, x);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats.clone());
                stats
            }
        };
        self.with_rstd(d, stats)
    }

    /// The statistics of the forward pass, for the backward pass.
    pub(crate) fn saved_mean_rstd(&self, d: Dims) -> Result<(Vec<f64>, Vec<f64>)> {
        let stats = match &self.norm {
            Norm::Fixed(stats) => stats.clone(),
            Norm::Batch(slot) => slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .ok_or_else(|| {
                    candle_core::Error::Msg("batch norm: backward before forward".into())
                })?,
        };
        self.with_rstd(d, stats)
    }

    /// `(mean, var)` → `(mean, 1/√(var + ε))`, checked against the channels.
    fn with_rstd(&self, d: Dims, (mean, var): ChannelStats) -> Result<(Vec<f64>, Vec<f64>)> {
        if mean.len() != d.c || var.len() != d.c {
            candle_core::bail!(
                "batch norm: {} channels, statistics for {}",
                d.c,
                mean.len()
            );
        }
        let rstd = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        Ok((mean, rstd))
    }
}

/// Per-channel mean and biased variance of `x (n, c, h, w)`, summed in f64.
fn batch_stats<T: Real>(d: Dims, x: &[T]) -> ChannelStats {
    let hw = d.hw();
    let (sum, sq) = x
        .par_chunks(d.c * hw)
        .fold(
            || (vec![0f64; d.c], vec![0f64; d.c]),
            |(mut sum, mut sq), img| {
                for (ch, plane) in img.chunks_exact(hw).enumerate() {
                    let (mut s, mut q) = (0f64, 0f64);
                    for &v in plane {
                        let v = v.to_f64();
                        s += v;
                        q += v * v;
                    }
                    sum[ch] += s;
                    sq[ch] += q;
                }
                (sum, sq)
            },
        )
        .reduce(|| (vec![0f64; d.c], vec![0f64; d.c]), add_pairs);
    let m = (d.n * hw).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let var = sq
        .iter()
        .zip(&mean)
        .map(|(q, mu)| (q / m - mu * mu).max(0.0))
        .collect();
    (mean, var)
}

fn add_pairs(
    (mut a0, mut a1): (Vec<f64>, Vec<f64>),
    (b0, b1): (Vec<f64>, Vec<f64>),
) -> (Vec<f64>, Vec<f64>) {
    a0.iter_mut().zip(&b0).for_each(|(a, b)| *a += b);
    a1.iter_mut().zip(&b1).for_each(|(a, b)| *a += b);
    (a0, a1)
}

/// Offsets of the four pixels of window `(oy, ox)` in a `w`-wide plane, in PyTorch's
/// tie order (top-left, top-right, bottom-left, bottom-right).
#[inline]
fn window(w: usize, oy: usize, ox: usize) -> [usize; 4] {
    let i = 2 * oy * w + 2 * ox;
    [i, i + 1, i + w, i + w + 1]
}

impl Kernel3 for BnReluPool {
    const NAME: &'static str = "batch-norm-relu-pool2x2";

    fn out_shape(&self, x: &Shape, g: &Shape, b: &Shape) -> Result<Shape> {
        let d = Dims::of(x)?;
        if g.dims1()? != d.c || b.dims1()? != d.c {
            candle_core::bail!("batch norm: x {x:?}, γ {g:?}, β {b:?}");
        }
        d.pooled_shape("batch norm")
    }

    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], g: &[T], b: &[T]) -> Result<Vec<T>> {
        let d = Dims::of(shapes[0])?;
        let (mean, rstd) = self.mean_rstd(d, x)?;
        Ok(forward_values(d, x, g, b, &mean, &rstd))
    }

    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>> {
        let d = Dims::of(t.x.shape())?;
        let (mean, rstd) = self.saved_mean_rstd(d)?;
        let training = matches!(self.norm, Norm::Batch(_));
        let (dx, dgamma, dbeta) =
            backward_values(d, v.x, v.w, v.res, v.dy, (&mean, &rstd), training);
        Ok((Some(dx), dgamma, dbeta))
    }
}

/// The forward pass on values: `pool(relu(γ·(x − μ)·r + β))` per channel.
pub(crate) fn forward_values<T: Real>(
    d: Dims,
    x: &[T],
    g: &[T],
    b: &[T],
    mean: &[f64],
    rstd: &[f64],
) -> Vec<T> {
    {
        // z = a·x + s per channel.
        let a: Vec<T> = (0..d.c)
            .map(|ch| <T as candle_core::WithDType>::from_f64(g[ch].to_f64() * rstd[ch]))
            .collect();
        let s: Vec<T> = (0..d.c)
            .map(|ch| {
                <T as candle_core::WithDType>::from_f64(
                    b[ch].to_f64() - mean[ch] * g[ch].to_f64() * rstd[ch],
                )
            })
            .collect();
        let (hw, ohw, ow) = (d.hw(), d.out_hw(), d.w / 2);
        let mut y = vec![T::ZERO; d.n * d.c * ohw];
        y.par_chunks_mut(d.c * ohw)
            .zip(x.par_chunks(d.c * hw))
            .for_each(|(yi, xi)| {
                for ch in 0..d.c {
                    let (plane, out) = (&xi[ch * hw..][..hw], &mut yi[ch * ohw..][..ohw]);
                    let (ac, sc) = (a[ch], s[ch]);
                    for (o, v) in out.iter_mut().enumerate() {
                        let [p0, p1, p2, p3] = window(d.w, o / ow, o % ow);
                        let z = |p: usize| plane[p] * ac + sc;
                        let m = [z(p1), z(p2), z(p3)]
                            .into_iter()
                            .fold(z(p0), |m, v| if v > m { v } else { m });
                        *v = if m > T::ZERO { m } else { T::ZERO };
                    }
                }
            });
        y
    }
}

/// The backward pass on values: given the input `x`, `γ`, the output `res` and its
/// gradient `dy`, the statistics of the forward pass and whether they were the
/// batch's own, returns `(dx, dγ, dβ)`.
pub(crate) fn backward_values<T: Real>(
    d: Dims,
    x: &[T],
    gamma: &[T],
    res: &[T],
    dy: &[T],
    (mean, rstd): (&[f64], &[f64]),
    training: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    {
        let (hw, ohw, ow) = (d.hw(), d.out_hw(), d.w / 2);
        let mut dx = vec![T::ZERO; d.n * d.c * hw];
        // Pass 1: the gradient at each window's first maximum (where the output is
        // positive), and per channel Σg and Σg·x̂.
        let (sum_g, sum_gx) = dx
            .par_chunks_mut(d.c * hw)
            .zip(x.par_chunks(d.c * hw))
            .zip(res.par_chunks(d.c * ohw).zip(dy.par_chunks(d.c * ohw)))
            .fold(
                || (vec![0f64; d.c], vec![0f64; d.c]),
                |(mut sg, mut sgx), ((dxi, xi), (yi, dyi))| {
                    for ch in 0..d.c {
                        let plane = &xi[ch * hw..][..hw];
                        let dplane = &mut dxi[ch * hw..][..hw];
                        let (yc, dyc) = (&yi[ch * ohw..][..ohw], &dyi[ch * ohw..][..ohw]);
                        // argmax of a·x is the argmax of x for a ≥ 0, of −x otherwise.
                        let flip = gamma[ch] < T::ZERO;
                        let (mut s1, mut s2) = (0f64, 0f64);
                        for o in 0..ohw {
                            if yc[o] <= T::ZERO {
                                continue;
                            }
                            let win = window(d.w, o / ow, o % ow);
                            let mut best = win[0];
                            for &p in &win[1..] {
                                let better = if flip {
                                    plane[p] < plane[best]
                                } else {
                                    plane[p] > plane[best]
                                };
                                if better {
                                    best = p;
                                }
                            }
                            let g = dyc[o];
                            dplane[best] = g;
                            let g = g.to_f64();
                            s1 += g;
                            s2 += g * (plane[best].to_f64() - mean[ch]) * rstd[ch];
                        }
                        sg[ch] += s1;
                        sgx[ch] += s2;
                    }
                    (sg, sgx)
                },
            )
            .reduce(|| (vec![0f64; d.c], vec![0f64; d.c]), add_pairs);
        // Pass 2: dx = γ·r·(g − Σg/M − x̂·Σg·x̂/M), the mean terms only in training.
        let m = (d.n * hw).max(1) as f64;
        let coef: Vec<(T, T, T)> = (0..d.c)
            .map(|ch| {
                let k = gamma[ch].to_f64() * rstd[ch];
                let (c1, c2) = if training {
                    (sum_g[ch] / m, sum_gx[ch] / m * rstd[ch])
                } else {
                    (0.0, 0.0)
                };
                // dx = k·g − k·c1 − k·c2·(x − μ)
                (
                    <T as candle_core::WithDType>::from_f64(k),
                    <T as candle_core::WithDType>::from_f64(k * c1 - k * c2 * mean[ch]),
                    <T as candle_core::WithDType>::from_f64(k * c2),
                )
            })
            .collect();
        dx.par_chunks_mut(d.c * hw)
            .zip(x.par_chunks(d.c * hw))
            .for_each(|(dxi, xi)| {
                for (ch, &(k, c0, c1)) in coef.iter().enumerate() {
                    let plane = &xi[ch * hw..][..hw];
                    for (g, &x) in dxi[ch * hw..][..hw].iter_mut().zip(plane) {
                        *g = k * *g - c0 - c1 * x;
                    }
                }
            });
        let dgamma = sum_gx
            .iter()
            .map(|&s| <T as candle_core::WithDType>::from_f64(s))
            .collect();
        let dbeta = sum_g
            .iter()
            .map(|&s| <T as candle_core::WithDType>::from_f64(s))
            .collect();
        (dx, dgamma, dbeta)
    }
}
