//! The layer kernels of the towers, in one place.
//!
//! Every convolution and max-pool of the network goes through these functions. On
//! the CPU (f32/f64) they are the custom ops of [`crate::cpu_ops`]: im2col + gemm with
//! fused bias and ReLU (and, for pooled layers, the 2×2 max-pool in the same op, so
//! the 4× larger unpooled activation is never stored), with a correct pool gradient
//! (candle 0.11.1's stock `max_pool2d` backward scales it by 1/4). Elsewhere they fall
//! back to candle's stock operations.

use candle_core::{Result, Tensor};

/// Valid stride-1 convolution of `x` `(n, c, h, w)` with `weight` `(o, c, k, k)`, plus
/// `bias` `(o,)`, then ReLU, then (with `pool`) a 2×2 stride-2 max-pool (odd trailing
/// rows and columns dropped, as in PyTorch's `MaxPool2d(2)`).
///
/// No gradient is computed for `x` when it is not itself tracked (the input images).
pub(crate) fn conv2d_relu_maybe_pool(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    pool: bool,
) -> Result<Tensor> {
    if pool {
        crate::cpu_ops::conv2d_bias_relu_pool2x2(x, weight, bias, true)
    } else {
        crate::cpu_ops::conv2d_bias_relu(x, weight, bias, true, true)
    }
}
