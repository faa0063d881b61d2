//! The two layer kernels of the towers, in one place.
//!
//! Every convolution and max-pool of the network goes through these functions, so
//! that faster implementations (the CPU custom ops of [`crate::cpu_ops`]) can be
//! swapped in by changing the body of one function. For now they are candle's stock
//! operations, which run on every device and support backpropagation.

use candle_core::{Result, Tensor};

/// Valid (unpadded) stride-1 convolution of `x` `(n, c, h, w)` with `weight`
/// `(o, c, k, k)`, plus `bias` `(o,)`, then ReLU: `(n, o, h−k+1, w−k+1)`.
pub(crate) fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    // With the custom ops: `crate::cpu_ops::conv2d_bias_relu(x, weight, bias, true, true)`
    // (they fall back to these stock ops off the CPU themselves).
    let y = x.conv2d(weight, 0, 1, 1, 1)?;
    y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?.relu()
}

/// 2×2 max-pool with stride 2 (odd trailing rows and columns dropped, as in
/// PyTorch's `MaxPool2d(2)`).
pub(crate) fn max_pool2(x: &Tensor) -> Result<Tensor> {
    // With the custom ops: `crate::cpu_ops::max_pool2x2(x)`.
    x.max_pool2d(2)
}
