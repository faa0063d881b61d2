//! The training loss of the pair classifier.

use candle_core::Tensor;

use crate::ModelError;

/// Binary cross-entropy on logits, averaged over all elements:
/// mean(max(x, 0) − x·y + ln(1 + e^(−|x|))).
///
/// This form never takes the logarithm of a saturated sigmoid, unlike
/// `candle_nn::loss::binary_cross_entropy_with_logit`, which returns NaN or infinity
/// once |x| exceeds about 17 (which the paper's wide initialisation reaches).
/// `logits` and `targets` (0.0 or 1.0) have the same shape.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor, ModelError> {
    let targets = targets.to_dtype(logits.dtype())?;
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let loss = ((logits.relu()? - (logits * targets)?)? + softplus)?;
    Ok(loss.mean_all()?)
}
