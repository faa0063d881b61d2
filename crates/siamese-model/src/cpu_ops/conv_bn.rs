//! A whole block of a batch-normalised tower in one op: convolution (zero padding
//! applied inside im2col), batch norm, ReLU and 2×2 max-pool, forward and backward.
//!
//! Composed of [`super::conv`] and [`super::bn`]'s kernels, but as one autograd node:
//! the padded copy of the input, the convolution's output and their gradients never
//! become tensors, so candle neither copies them nor zero-fills and adds their
//! gradient buffers (for the first block at 28×28, 24 MB per 120 images each way).

use std::any::Any;
use std::sync::Mutex;

use candle_core::{Result, Shape};

use super::bn::{BnReluPool, Dims, Norm, backward_values, forward_values};
use super::conv::{ConvGeom, OutGrad, Plan, conv_bwd, conv_fwd};
use super::{CpuView, Kernel3, Op3Grads, Op3Slices, Op3Tensors, Real};

/// The op: `x (n, c, h, w)`, `w (o, c, kh, kw)`, `[γ; β] (2, o)` →
/// `pool(relu(bn(conv_pad(x, w))))` `(n, o, oh / 2, ow / 2)`.
#[derive(Debug)]
pub(crate) struct ConvBnReluPool {
    /// Zeros on every side of the input planes.
    pub pad: usize,
    /// Whether the backward pass computes the input gradient.
    pub input_grad: bool,
    /// Batch norm's ε and statistics.
    pub bn: BnReluPool,
    /// Whether a backward pass will follow: then the forward pass keeps the
    /// convolution's output here (a `Vec<f32>` or `Vec<f64>`), batch norm's input.
    pub keep: bool,
    conv_out: Mutex<Option<Box<dyn Any + Send>>>,
}

super::custom_op3!(ConvBnReluPool);

impl ConvBnReluPool {
    pub fn new(pad: usize, input_grad: bool, eps: f64, norm: Norm, keep: bool) -> Self {
        Self {
            pad,
            input_grad,
            bn: BnReluPool { eps, norm },
            keep,
            conv_out: Mutex::new(None),
        }
    }

    fn geom(&self, x: &Shape, w: &Shape) -> Result<(ConvGeom, Dims)> {
        let g = ConvGeom::padded(x.dims4()?, w.dims4()?, self.pad)?;
        let d = Dims {
            n: g.n,
            c: g.o,
            h: g.oh,
            w: g.ow,
        };
        Ok((g, d))
    }
}

impl Kernel3 for ConvBnReluPool {
    const NAME: &'static str = "conv2d-batch-norm-relu-pool2x2";

    fn out_shape(&self, x: &Shape, w: &Shape, gb: &Shape) -> Result<Shape> {
        let (g, d) = self.geom(x, w)?;
        if gb.dims2()? != (2, g.o) {
            candle_core::bail!("conv-batch-norm: [γ; β] is {gb:?}, expected (2, {})", g.o);
        }
        d.pooled_shape("conv-batch-norm")
    }

    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], w: &[T], gb: &[T]) -> Result<Vec<T>> {
        let (g, d) = self.geom(shapes[0], shapes[1])?;
        let zero_bias = vec![T::ZERO; g.o];
        let y = conv_fwd(&g, Plan::new::<T>(&g), x, w, &zero_bias, false);
        let (mean, rstd) = self.bn.mean_rstd(d, &y)?;
        let out = forward_values(d, &y, &gb[..g.o], &gb[g.o..], &mean, &rstd);
        if self.keep {
            *self.conv_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(y));
        }
        Ok(out)
    }

    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>> {
        let (g, d) = self.geom(t.x.shape(), t.w.shape())?;
        let (mean, rstd) = self.bn.saved_mean_rstd(d)?;
        let gb = CpuView::new(t.b)?;
        let gamma = &gb.slice::<T>()?[..g.o];
        let kept = self.conv_out.lock().unwrap_or_else(|e| e.into_inner());
        let Some(y) = kept.as_ref().and_then(|y| y.downcast_ref::<Vec<T>>()) else {
            candle_core::bail!("conv-batch-norm: backward without a kept forward pass")
        };
        let training = matches!(self.bn.norm, Norm::Batch(_));
        let (dy, dgamma, dbeta) =
            backward_values(d, y, gamma, v.res, v.dy, (&mean, &rstd), training);
        let out = OutGrad::Dense {
            y,
            dy: &dy,
            relu: false,
        };
        let grads = conv_bwd(&g, Plan::new::<T>(&g), v.x, v.w, out, self.input_grad);
        let mut dgb = dgamma;
        dgb.extend(dbeta);
        Ok((grads.dx, grads.dw, dgb))
    }
}
