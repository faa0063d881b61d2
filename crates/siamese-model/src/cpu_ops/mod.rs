//! Fast CPU convolution and max-pool as candle custom ops.
//!
//! candle 0.11's stock CPU `conv2d` is slow, and its backward pass (a naive
//! `conv_transpose2d` for the input gradient, a convolution with the gradient as
//! kernel for the weight gradient) is far slower still. This module provides:
//!
//! - [`conv2d_bias_relu`]: a stride-1, unpadded 2-D convolution with the bias and
//!   (optionally) a ReLU fused in, forward and backward, built on im2col / col2im and
//!   the `gemm` crate (the one candle itself uses), parallelised with rayon across
//!   images with single-threaded gemm calls and per-thread reused buffers;
//! - [`max_pool2x2`]: a 2×2, stride-2 max-pool (floor on odd sizes), forward and
//!   backward;
//! - [`conv2d_bias_relu_pool2x2`]: both fused (for conv1–conv3 of the network): the
//!   unpooled activations never become a tensor, which saves a quarter of a second
//!   per 64 images on conv1 alone;
//! - for the layers where it pays (a cost model picks, per shape: conv2 of the Koch
//!   network at 4 images and more), the same convolutions by FFT: per frequency bin
//!   one gemm over the channels, 2.8× faster than im2col + gemm on conv2 forward and
//!   backward ([`set_conv_algo`] forces either, for measurements; `siamese-cli`
//!   reads it from `SIAMESE_CONV_ALGO=direct|fft`);
//! - [`linear_sigmoid`]: the fully connected sigmoid layer with its weight gradient
//!   computed in the weight's own layout.
//!
//! gemm's AVX-512 kernels are behind its `x86-v4` feature, off by default: on
//! AVX-512 machines, enabling it (`gemm = { workspace = true, features = ["x86-v4"] }`)
//! makes these convolutions about 1.6–1.9× faster (and candle's matmuls too).
//!
//! Both take the fast path for contiguous-or-not CPU tensors of dtype `f32` or `f64`
//! and fall back to candle's stock ops for any other device or dtype, so a model
//! written with them runs unchanged on CUDA or Metal. Gradients flow through candle's
//! autograd: `loss.backward()` gives the gradients of the `Var`s used as weights and
//! biases.
//!
//! Conventions (the stock ops may differ on measure-zero events):
//! - ReLU: the gradient at a pre-activation of exactly zero is zero (PyTorch's
//!   convention; candle's `relu` passes the gradient through at zero).
//! - Max-pool ties: the gradient goes to the first maximum of the window in row-major
//!   order (top-left, top-right, bottom-left, bottom-right), as in PyTorch; candle's
//!   stock backward spreads it over all maxima.

mod bn;
pub use bn::ChannelStats;
mod conv;
pub use conv::{ConvAlgo, set_conv_algo};
mod conv_bn;
mod fft;
mod linear;
mod pool;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, DType, Device, Layout, Result, Shape, Storage, StorageRef, Tensor, WithDType,
};

/// `relu?(conv2d(x, w) + b)` with stride 1, no padding, dilation 1 and groups 1.
///
/// - `x`: `(n, c, h, w)` images; `w`: `(o, c, kh, kw)` kernels; `b`: `(o,)` biases.
/// - Returns `(n, o, h - kh + 1, w - kw + 1)`.
/// - `relu`: apply a ReLU to the result (fused: the backward pass masks the gradient
///   with the output, zero where the output is zero).
/// - `input_grad`: whether the backward pass computes the gradient with respect to
///   `x`. Pass `false` for the first layer, whose input (the images) needs none: it
///   saves a third of that layer's backward cost. With `false`, `x` is treated as a
///   constant (no gradient flows into it, on any device).
///
/// On CPU with `f32`/`f64` this runs the custom op of this module; on any other
/// device or dtype it runs candle's `conv2d`, `broadcast_add` and `relu`.
pub fn conv2d_bias_relu(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    input_grad: bool,
) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (o, wc, kh, kw) = w.dims4()?;
    let bo = b.dims1()?;
    if wc != c || bo != o {
        candle_core::bail!(
            "conv2d_bias_relu: shape mismatch: x {:?}, w {:?}, b {:?}",
            x.shape(),
            w.shape(),
            b.shape()
        );
    }
    if kh == 0 || kw == 0 || h < kh || wd < kw {
        candle_core::bail!("conv2d_bias_relu: kernel {kh}x{kw} does not fit in the input {h}x{wd}");
    }
    if fast_path(&[x, w, b]) {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let b = b.contiguous()?;
        // Computing the input gradient of a tensor that autograd does not track is
        // wasted work: candle would drop it.
        let input_grad = input_grad && x.track_op();
        x.apply_op3(&w, &b, conv::Conv2dBiasRelu { relu, input_grad })
    } else {
        let x = if input_grad { x.clone() } else { x.detach() };
        let y = x.conv2d(w, 0, 1, 1, 1)?;
        let y = y.broadcast_add(&b.reshape((1, o, 1, 1))?)?;
        if relu { y.relu() } else { Ok(y) }
    }
}

/// `max_pool2x2(relu(conv2d(x, w) + b))` in one op: the same result and gradients
/// as [`conv2d_bias_relu`] (with `relu`) followed by [`max_pool2x2`], but on the CPU
/// the unpooled output (4× larger) never becomes a tensor, which saves its memory
/// traffic forward and the pool's backward and candle's gradient bookkeeping on it.
/// Elsewhere, those two functions.
pub fn conv2d_bias_relu_pool2x2(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    input_grad: bool,
) -> Result<Tensor> {
    let ((_, c, h, wd), (o, wc, kh, kw), bo) = (x.dims4()?, w.dims4()?, b.dims1()?);
    let fits = wc == c && bo == o && kh > 0 && kw > 0 && h > kh && wd > kw;
    if fits && fast_path(&[x, w, b]) {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let b = b.contiguous()?;
        let input_grad = input_grad && x.track_op();
        // Autograd keeps the op (and whatever it holds) only when something tracks.
        let keep = input_grad || w.track_op() || b.track_op();
        x.apply_op3(&w, &b, conv::Conv2dBiasReluPool::new(input_grad, keep))
    } else {
        max_pool2x2(&conv2d_bias_relu(x, w, b, true, input_grad)?)
    }
}

/// `σ(x · wᵀ + b)`: the fully connected sigmoid layer, `x: (n, k)`, `w: (m, k)`,
/// `b: (m,)` to `(n, m)`.
///
/// On CPU with `f32`/`f64` one custom op computes it and its gradients (the weight
/// gradient in `w`'s own layout, by one gemm); elsewhere candle's `Linear` and
/// `sigmoid`.
pub fn linear_sigmoid(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ((_, k), (m, wk), bm) = (x.dims2()?, w.dims2()?, b.dims1()?);
    if wk != k || bm != m {
        candle_core::bail!(
            "linear_sigmoid: shape mismatch: x {:?}, w {:?}, b {:?}",
            x.shape(),
            w.shape(),
            b.shape()
        );
    }
    if fast_path(&[x, w, b]) {
        let (w, b) = (w.contiguous()?, b.contiguous()?);
        x.contiguous()?.apply_op3(&w, &b, linear::LinearSigmoid)
    } else {
        use candle_core::Module;
        let linear = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        candle_nn::ops::sigmoid(&linear.forward(x)?)
    }
}

/// 2×2 max-pool with stride 2 of `(n, c, h, w)` into `(n, c, h / 2, w / 2)` (floor:
/// an odd last row or column is dropped).
///
/// On CPU with `f32`/`f64` this runs the custom op of this module (gradient to the
/// first maximum of each window); elsewhere [`max_pool2x2_stock`].
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("max_pool2x2: input {h}x{w} is smaller than the 2x2 window");
    }
    if fast_path(&[x]) {
        x.contiguous()?.apply_op1(pool::MaxPool2x2)
    } else {
        max_pool2x2_stock(x)
    }
}

/// The fallback of [`max_pool2x2`]: the same values as candle's `max_pool2d(2)`, as
/// two max-reductions, because candle 0.11.1's `max_pool2d` backward is wrong: it
/// multiplies the gradient by the fraction of maxima in the window (1/4 without
/// ties) where it should divide by their count. The reductions' backward gives the
/// whole gradient to every maximum of a window (ties are measure-zero in training).
pub fn max_pool2x2_stock(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .reshape((n, c, oh, 2, ow, 2))?
        .max(5)?
        .max(3)
}

/// The statistics batch norm normalises with.
#[derive(Debug, Clone, Copy)]
pub enum BatchNormStats<'a> {
    /// The batch's own mean and biased variance per channel (training mode).
    Batch,
    /// Given per-channel mean and variance (inference mode: the running statistics).
    Running { mean: &'a [f32], var: &'a [f32] },
}

/// `max_pool2x2(relu(γ · (x − μ) / √(σ² + eps) + β))` per channel of `x (n, c, h,
/// w)`, with `γ`, `β` `(c,)`: batch norm, ReLU and a 2×2 stride-2 max-pool (floor),
/// to `(n, c, h/2, w/2)`. Returns also, with [`BatchNormStats::Batch`], the batch's
/// per-channel mean and biased variance (for the running statistics).
///
/// On the CPU (f32/f64) one fused custom op does it, forward and backward
/// (gradient to the first maximum of each window, zero where the output is zero);
/// elsewhere candle's stock ops ([`batch_norm_relu_pool2x2_stock`]).
pub fn batch_norm_relu_pool2x2(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: BatchNormStats<'_>,
    eps: f64,
) -> Result<(Tensor, Option<bn::ChannelStats>)> {
    if !fast_path(&[x, gamma, beta]) {
        return batch_norm_relu_pool2x2_stock(x, gamma, beta, stats, eps);
    }
    let (x, gamma, beta) = (x.contiguous()?, gamma.contiguous()?, beta.contiguous()?);
    match stats {
        BatchNormStats::Batch => {
            let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
            let op = bn::BnReluPool {
                eps,
                norm: bn::Norm::Batch(slot.clone()),
            };
            let y = x.apply_op3(&gamma, &beta, op)?;
            let stats = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Ok((y, stats))
        }
        BatchNormStats::Running { mean, var } => {
            let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect();
            let op = bn::BnReluPool {
                eps,
                norm: bn::Norm::Fixed((widen(mean), widen(var))),
            };
            Ok((x.apply_op3(&gamma, &beta, op)?, None))
        }
    }
}

/// `max_pool2x2(relu(batch_norm(conv2d(x, w, padding))))`: one block of a
/// batch-normalised tower, `x (n, c, h, w)`, `w (o, c, kh, kw)` (no bias: β takes its
/// place), `γ`, `β` `(o,)`, stride 1 and `pad` zeros on every side, to `(n, o,
/// (h + 2·pad − kh + 1) / 2, ..)`. Returns also, with [`BatchNormStats::Batch`], the
/// batch's per-channel mean and biased variance (for the running statistics).
/// `input_grad` as for [`conv2d_bias_relu`].
///
/// The same values and gradients as a padded [`conv2d_bias_relu`] (no ReLU) followed
/// by [`batch_norm_relu_pool2x2`]. On the CPU (f32/f64) one custom op: no padded copy
/// and no convolution output in candle's graph. Elsewhere candle's `conv2d` and
/// [`batch_norm_relu_pool2x2`].
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_relu_pool2x2(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    pad: usize,
    stats: BatchNormStats<'_>,
    eps: f64,
    input_grad: bool,
) -> Result<(Tensor, Option<bn::ChannelStats>)> {
    if !fast_path(&[x, w, gamma, beta]) {
        let x = if input_grad { x.clone() } else { x.detach() };
        let y = x.conv2d(w, pad, 1, 1, 1)?;
        return batch_norm_relu_pool2x2(&y, gamma, beta, stats, eps);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let input_grad = input_grad && x.track_op();
    let keep = input_grad || w.track_op() || gb.track_op();
    match stats {
        BatchNormStats::Batch => {
            let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
            let norm = bn::Norm::Batch(slot.clone());
            let op = conv_bn::ConvBnReluPool::new(pad, input_grad, eps, norm, keep);
            let y = x.apply_op3(&w, &gb, op)?;
            let stats = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Ok((y, stats))
        }
        BatchNormStats::Running { mean, var } => {
            let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect();
            let norm = bn::Norm::Fixed((widen(mean), widen(var)));
            let op = conv_bn::ConvBnReluPool::new(pad, input_grad, eps, norm, keep);
            Ok((x.apply_op3(&w, &gb, op)?, None))
        }
    }
}

/// [`batch_norm_relu_pool2x2`] with candle's stock ops (any device; the reference
/// the fused op is tested against).
pub fn batch_norm_relu_pool2x2_stock(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: BatchNormStats<'_>,
    eps: f64,
) -> Result<(Tensor, Option<bn::ChannelStats>)> {
    let c = x.dim(1)?;
    let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
    let (mean, var, batch) = match stats {
        BatchNormStats::Batch => {
            let mean = x.mean_keepdim((0, 2, 3))?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
            let values = |t: &Tensor| -> Result<Vec<f64>> {
                t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
            };
            let batch = (values(&mean)?, values(&var)?);
            (mean, var, Some(batch))
        }
        BatchNormStats::Running { mean, var } => {
            let t =
                |v: &[f32]| Tensor::from_slice(v, (1, c, 1, 1), x.device())?.to_dtype(x.dtype());
            (t(mean)?, t(var)?, None)
        }
    };
    let xhat = x
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + eps)?.sqrt()?)?;
    let z = xhat
        .broadcast_mul(&per_channel(gamma)?)?
        .broadcast_add(&per_channel(beta)?)?;
    Ok((max_pool2x2_stock(&z.relu()?)?, batch))
}

/// The inputs of a three-input custom op (input, weight, bias).
#[derive(Clone, Copy)]
pub(crate) struct Op3Tensors<'a> {
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    pub b: &'a Tensor,
}

/// The values of a three-input op's inputs, its output and the output's gradient.
pub(crate) struct Op3Slices<'a, T> {
    pub x: &'a [T],
    pub w: &'a [T],
    pub res: &'a [T],
    pub dy: &'a [T],
}

/// The gradients of `x` (if computed), `w` and `b`.
pub(crate) type Op3Grads<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

/// The CPU kernels of a three-input custom op, generic over f32 and f64; the
/// candle plumbing (dtype dispatch, slices, gradient tensors) is [`cpu_fwd3`] and
/// [`bwd3`], shared by every op.
pub(crate) trait Kernel3 {
    const NAME: &'static str;
    fn out_shape(&self, x: &Shape, w: &Shape, b: &Shape) -> Result<Shape>;
    fn forward<T: Real>(&self, shapes: [&Shape; 3], x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>>;
    fn backward<T: Real>(&self, t: Op3Tensors<'_>, v: Op3Slices<'_, T>) -> Result<Op3Grads<T>>;
}

/// candle's `CustomOp3` for a [`Kernel3`]: [`cpu_fwd3`] and [`bwd3`].
macro_rules! custom_op3 {
    ($op:ty) => {
        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                <Self as $crate::cpu_ops::Kernel3>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::cpu_ops::cpu_fwd3(self, (s1, l1), (s2, l2), (s3, l3))
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                b: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad_res: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                let t = $crate::cpu_ops::Op3Tensors { x, w, b };
                $crate::cpu_ops::bwd3(self, t, res, grad_res)
            }
        }
    };
}
pub(crate) use custom_op3;

/// `CustomOp3::cpu_fwd` of a [`Kernel3`].
pub(crate) fn cpu_fwd3<K: Kernel3>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let shapes = [l1.shape(), l2.shape(), l3.shape()];
    let out = k.out_shape(shapes[0], shapes[1], shapes[2])?;
    let (x, w, b) = ((s1, l1), (s2, l2), (s3, l3));
    let y = match s1 {
        CpuStorage::F32(_) => CpuStorage::F32(run_fwd3::<K, f32>(k, shapes, x, w, b)?),
        CpuStorage::F64(_) => CpuStorage::F64(run_fwd3::<K, f64>(k, shapes, x, w, b)?),
        s => candle_core::bail!("{}: unsupported dtype {:?}", K::NAME, s.dtype()),
    };
    Ok((y, out))
}

fn run_fwd3<K: Kernel3, T: Real>(
    k: &K,
    shapes: [&Shape; 3],
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<Vec<T>> {
    let (x, w, b) = (
        layout_slice(s1, l1)?,
        layout_slice(s2, l2)?,
        layout_slice(s3, l3)?,
    );
    k.forward(shapes, x, w, b)
}

/// `CustomOp3::bwd` of a [`Kernel3`].
pub(crate) fn bwd3<K: Kernel3>(
    k: &K,
    t: Op3Tensors<'_>,
    res: &Tensor,
    grad_res: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (res, dy) = (res.contiguous()?, grad_res.contiguous()?);
    match t.x.dtype() {
        DType::F32 => run_bwd3::<K, f32>(k, t, &res, &dy),
        DType::F64 => run_bwd3::<K, f64>(k, t, &res, &dy),
        dt => candle_core::bail!("{}: unsupported dtype {dt:?}", K::NAME),
    }
}

fn run_bwd3<K: Kernel3, T: Real>(
    k: &K,
    t: Op3Tensors<'_>,
    res: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (dx, dw, db) = {
        let (xv, wv) = (CpuView::new(t.x)?, CpuView::new(t.w)?);
        let (rv, dyv) = (CpuView::new(res)?, CpuView::new(dy)?);
        let v = Op3Slices {
            x: xv.slice::<T>()?,
            w: wv.slice::<T>()?,
            res: rv.slice::<T>()?,
            dy: dyv.slice::<T>()?,
        };
        k.backward(t, v)?
    };
    let dev = t.x.device();
    let dx = dx
        .map(|v| Tensor::from_vec(v, t.x.shape(), dev))
        .transpose()?;
    let dw = Tensor::from_vec(dw, t.w.shape(), dev)?;
    let db = Tensor::from_vec(db, t.b.shape(), dev)?;
    Ok((dx, Some(dw), Some(db)))
}

/// Whether the custom ops may run at all ([`use_stock_ops`] clears it).
static CUSTOM_OPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Makes every later call of this module run candle's stock operations, as on a GPU,
/// also on the CPU (`false` restores the custom ops): to check and measure, without
/// a GPU, the path a CUDA or Metal device takes. `siamese-cli` reads it from
/// `SIAMESE_CPU_OPS=stock`.
pub fn use_stock_ops(stock: bool) {
    CUSTOM_OPS.store(!stock, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the custom ops handle these tensors: all on the CPU, same dtype, f32/f64,
/// and not switched off by [`use_stock_ops`].
fn fast_path(ts: &[&Tensor]) -> bool {
    let dtype = ts[0].dtype();
    CUSTOM_OPS.load(std::sync::atomic::Ordering::Relaxed)
        && matches!(dtype, DType::F32 | DType::F64)
        && ts
            .iter()
            .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == dtype)
}

/// Per-thread buffers reused across calls (rayon's worker threads live for the whole
/// program, so a training loop allocates them once).
#[derive(Default)]
pub(crate) struct Scratch<T> {
    /// im2col columns, or the column gradient before col2im.
    pub col: Vec<T>,
    /// A block of outputs or of output gradients.
    pub tmp: Vec<T>,
    /// The unpooled outputs of a task (fused pooling).
    pub full: Vec<T>,
}

/// The element types of the fast path.
pub(crate) trait Real: WithDType + gemm_elem::GemmElem + realfft::FftNum {
    const ZERO: Self;
    const ONE: Self;
    fn exp(self) -> Self;
    /// Runs `f` with this thread's scratch buffers (fresh ones if they are in use,
    /// which only happens if rayon runs another of our tasks inside one of ours).
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R;
}

thread_local! {
    static SCRATCH_F32: RefCell<Scratch<f32>> = RefCell::default();
    static SCRATCH_F64: RefCell<Scratch<f64>> = RefCell::default();
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        SCRATCH_F32.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::default()),
        })
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn with_scratch<R>(f: impl FnOnce(&mut Scratch<Self>) -> R) -> R {
        SCRATCH_F64.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::default()),
        })
    }
}

mod gemm_elem {
    /// Types `gemm::gemm` accepts (it panics on any other).
    pub trait GemmElem {}
    impl GemmElem for f32 {}
    impl GemmElem for f64 {}
}

/// The first `len` elements of `v`, growing it (with zeros) if needed. The contents
/// are whatever the last user left: callers overwrite what they read.
pub(crate) fn buffer<T: Real>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    &mut v[..len]
}

/// A matrix in a slice: element `(i, j)` is at `i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strides {
    pub rs: usize,
    pub cs: usize,
}

impl Strides {
    pub const fn row_major(cols: usize) -> Self {
        Self { rs: cols, cs: 1 }
    }
    pub const fn col_major(rows: usize) -> Self {
        Self { rs: 1, cs: rows }
    }
    /// Checks that a `rows × cols` matrix with these strides lies in `len` elements.
    fn check(self, rows: usize, cols: usize, len: usize, what: &str) {
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(
            last < len,
            "{what}: {rows}x{cols} matrix with strides {self:?} overruns {len} elements"
        );
    }
}

/// `dst (+)= lhs × rhs` with `dst: m × n`, `lhs: m × k`, `rhs: k × n`; adds to `dst`
/// if `accumulate`, overwrites it otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    ds: Strides,
    lhs: &[T],
    ls: Strides,
    rhs: &[T],
    rs: Strides,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    ds.check(m, n, dst.len(), "matmul dst");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * ds.rs + j * ds.cs] = T::ZERO;
                }
            }
        }
        return;
    }
    ls.check(m, k, lhs.len(), "matmul lhs");
    rs.check(k, n, rhs.len(), "matmul rhs");
    // SAFETY: `gemm::gemm` takes raw pointers and strides. We checked above that every
    // element it reads or writes lies inside the three slices; `dst` is a unique
    // borrow so it aliases neither input; `T` is f32 or f64 (sealed by `GemmElem`),
    // types gemm supports; strides fit in isize since they index into slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            ds.cs as isize,
            ds.rs as isize,
            accumulate,
            lhs.as_ptr(),
            ls.cs as isize,
            ls.rs as isize,
            rhs.as_ptr(),
            rs.cs as isize,
            rs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A read lock on a contiguous CPU tensor's storage, to borrow its elements as a
/// slice inside `bwd` (which receives tensors rather than storages).
pub(crate) struct CpuView<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuView<'a> {
    pub fn new(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("cpu_ops: expected a contiguous tensor, got {layout:?}")
        };
        Ok(Self { guard, start, end })
    }

    pub fn slice<T: WithDType>(&self) -> Result<&[T]> {
        match &*self.guard {
            Storage::Cpu(s) => Ok(&s.as_slice::<T>()?[self.start..self.end]),
            _ => candle_core::bail!("cpu_ops: expected a CPU tensor"),
        }
    }
}

/// The elements of a contiguous CPU storage, per its layout.
pub(crate) fn layout_slice<'a, T: WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("cpu_ops: expected a contiguous tensor, got {l:?}")
    };
    Ok(&s.as_slice::<T>()?[start..end])
}
