//! 2×2, stride-2 max-pool (floor on odd sizes), forward and backward.
//!
//! Ties go to the first maximum of the window in row-major order (strict `>`
//! comparisons starting from the top-left element); the backward pass recomputes that
//! argmax from the input, so no indices are stored.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{CpuView, Real, layout_slice};

/// Planes (images × channels) per rayon task, at least.
fn min_planes(plane: usize) -> usize {
    (16 * 1024 / plane.max(1)).max(1)
}

/// Index within the window (0: top-left, 1: top-right, 2: bottom-left,
/// 3: bottom-right) and value of the first maximum.
#[inline]
pub(crate) fn argmax4<T: Real>(a: T, b: T, c: T, d: T) -> (usize, T) {
    let (mut i, mut m) = (0, a);
    if b > m {
        (i, m) = (1, b);
    }
    if c > m {
        (i, m) = (2, c);
    }
    if d > m {
        (i, m) = (3, d);
    }
    (i, m)
}

pub(crate) fn pool_fwd<T: Real>(x: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(x.len(), n * c * h * w);
    let mut y = vec![T::ZERO; n * c * oh * ow];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .with_min_len(min_planes(h * w))
        .for_each(|(y, x)| {
            for (i, yr) in y.chunks_exact_mut(ow).enumerate() {
                let r0 = &x[2 * i * w..][..2 * ow];
                let r1 = &x[(2 * i + 1) * w..][..2 * ow];
                for ((v, a), b) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    *v = argmax4(a[0], a[1], b[0], b[1]).1;
                }
            }
        });
    y
}

pub(crate) fn pool_bwd<T: Real>(
    x: &[T],
    dy: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(x.len(), n * c * h * w);
    assert_eq!(dy.len(), n * c * oh * ow);
    let mut dx = vec![T::ZERO; x.len()];
    if dy.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(dy.par_chunks(oh * ow))
        .with_min_len(min_planes(h * w))
        .for_each(|((dx, x), dy)| {
            for (i, dyr) in dy.chunks_exact(ow).enumerate() {
                let (o0, o1) = (2 * i * w, (2 * i + 1) * w);
                for (j, &g) in dyr.iter().enumerate() {
                    let (a, b) = (o0 + 2 * j, o1 + 2 * j);
                    let (k, _) = argmax4(x[a], x[a + 1], x[b], x[b + 1]);
                    let idx = [a, a + 1, b, b + 1][k];
                    dx[idx] = g;
                }
            }
        });
    dx
}

/// The custom op.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims4()?;
        let (n, c, h, w) = dims;
        let y = match s {
            CpuStorage::F32(_) => CpuStorage::F32(pool_fwd(layout_slice::<f32>(s, l)?, dims)),
            CpuStorage::F64(_) => CpuStorage::F64(pool_fwd(layout_slice::<f64>(s, l)?, dims)),
            _ => candle_core::bail!("max-pool-2x2: unsupported dtype {:?}", s.dtype()),
        };
        Ok((y, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let grad = grad_res.contiguous()?;
        let (xv, gv) = (CpuView::new(arg)?, CpuView::new(&grad)?);
        let dx = match arg.dtype() {
            DType::F32 => Tensor::from_vec(
                pool_bwd::<f32>(xv.slice()?, gv.slice()?, dims),
                dims,
                arg.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                pool_bwd::<f64>(xv.slice()?, gv.slice()?, dims),
                dims,
                arg.device(),
            )?,
            dt => candle_core::bail!("max-pool-2x2: unsupported dtype {dt:?}"),
        };
        Ok(Some(dx))
    }
}
