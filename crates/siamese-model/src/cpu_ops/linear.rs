//! The fully connected sigmoid layer, `σ(x · wᵀ + b)`, forward and backward in one
//! custom op.
//!
//! Through candle's autograd, `sigmoid(linear(x))` computes the weight gradient of
//! `x · wᵀ` for the transposed view `wᵀ` and then adds its transpose into a zeroed
//! gradient of `w`: a strided pass over all 37.7M weights of the Koch network's
//! 9216 → 4096 layer on every step. Here the weight gradient comes out of one gemm
//! in `w`'s own layout, and the sigmoid's derivative is applied in place.

use candle_core::{Result, Shape};
use rayon::prelude::*;

use super::{Kernel3, Op3Grads, Op3Slices, Op3Tensors, Real, Strides, matmul};

fn threads() -> gemm::Parallelism {
    gemm::Parallelism::Rayon(rayon::current_num_threads())
}

#[inline]
fn sigmoid<T: Real>(v: T) -> T {
    T::ONE / (T::ONE + (-v).exp())
}

/// Forward: `y = σ(x · wᵀ + b)` for `x: (n, k)`, `w: (m, k)`, `b: (m,)`.
pub(crate) fn linear_sigmoid_fwd<T: Real>(
    (n, k, m): (usize, usize, usize),
    x: &[T],
    w: &[T],
    b: &[T],
) -> Vec<T> {
    let mut y = vec![T::ZERO; n * m];
    if y.is_empty() {
        return y;
    }
    for row in y.chunks_exact_mut(m) {
        row.copy_from_slice(b);
    }
    let (xs, wts) = (Strides::row_major(k), Strides::col_major(k));
    let ys = Strides::row_major(m);
    matmul((n, m, k), &mut y, ys, x, xs, w, wts, true, threads());
    y.par_chunks_mut(m.max(1024))
        .for_each(|c| c.iter_mut().for_each(|v| *v = sigmoid(*v)));
    y
}

/// Gradients of [`linear_sigmoid_fwd`] given its output `y` and the output's
/// gradient `dy`: `(dx, dw, db)`.
pub(crate) fn linear_sigmoid_bwd<T: Real>(
    (n, k, m): (usize, usize, usize),
    x: &[T],
    w: &[T],
    y: &[T],
    dy: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    // dz = dy · σ'(z) = dy · y · (1 − y)
    let dz: Vec<T> = y
        .par_iter()
        .zip(dy.par_iter())
        .map(|(&y, &g)| g * y * (T::ONE - y))
        .collect();
    let mut db = vec![T::ZERO; m];
    for row in dz.chunks_exact(m) {
        db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
    }
    // dx (n × k) = dz (n × m) · w (m × k)
    let mut dx = vec![T::ZERO; n * k];
    let (zs, ks) = (Strides::row_major(m), Strides::row_major(k));
    matmul((n, k, m), &mut dx, ks, &dz, zs, w, ks, false, threads());
    // dw (m × k) = dzᵀ (m × n) · x (n × k)
    let mut dw = vec![T::ZERO; m * k];
    let zts = Strides::col_major(m);
    matmul((m, k, n), &mut dw, ks, &dz, zts, x, ks, false, threads());
    (dx, dw, db)
}

/// The custom op: `(x, w, b) -> σ(x · wᵀ + b)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinearSigmoid;

fn dims(x: &Shape, w: &Shape) -> Result<(usize, usize, usize)> {
    let (n, k) = x.dims2()?;
    let (m, wk) = w.dims2()?;
    if wk != k {
        candle_core::bail!("linear-sigmoid: x {x:?} and w {w:?} do not fit");
    }
    Ok((n, k, m))
}

impl Kernel3 for LinearSigmoid {
    const NAME: &'static str = "linear-sigmoid";

    fn out_shape(&self, x: &Shape, w: &Shape, _: &Shape) -> Result<Shape> {
        let (n, _, m) = dims(x, w)?;
        Ok(Shape::from((n, m)))
    }

    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        Ok(linear_sigmoid_fwd(dims(shapes[0], shapes[1])?, x, w, b))
    }

    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>> {
        let nkm = dims(t.x.shape(), t.w.shape())?;
        let (dx, dw, db) = linear_sigmoid_bwd(nkm, v.x, v.w, v.res, v.dy);
        Ok((Some(dx), dw, db))
    }
}

super::custom_op3!(LinearSigmoid);
