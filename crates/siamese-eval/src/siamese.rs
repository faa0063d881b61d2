//! The trained network as a one-shot method.

use siamese_data::GrayImage;
use siamese_model::SiameseNet;

use crate::scorer::CandleScorer;
use crate::{EvalError, OneShotScorer};

/// The network as a [`OneShotScorer`]: the tower embeds each image once, the head
/// scores (query, candidate) pairs of embeddings; the score is the head's logit.
/// Images larger than the network's input are shrunk to it (Omniglot's 105×105 by
/// block means to 35×35 for `koch35`, by area resampling to 28×28 for `conv4`).
pub fn siamese_scorer<'a>(net: &'a SiameseNet, name: &str) -> impl OneShotScorer + 'a {
    siamese_scorer_shifted(net, name, 0)
}

/// [`siamese_scorer`] with test-time augmentation: each image's embedding is the mean
/// of the tower's features of five views of it, the image itself and its copies
/// shifted by `shift` pixels left, right, up and down (zero fill). 0: no views. It
/// treats every image alike, supports and queries, and uses no labels.
pub fn siamese_scorer_shifted<'a>(
    net: &'a SiameseNet,
    name: &str,
    shift: usize,
) -> impl OneShotScorer + 'a {
    ensemble_scorer(std::slice::from_ref(net), name, shift)
        .expect("one network is always a valid ensemble")
}

/// Several networks as one method: an image's embedding is each network's
/// (test-time-augmented as in [`siamese_scorer_shifted`]) features side by side, and
/// a pair's score is the mean of the networks' logits. Averaging independently
/// trained networks cancels part of each one's errors. The networks must take the
/// same input size; one network scores exactly as [`siamese_scorer_shifted`].
pub fn ensemble_scorer<'a>(
    nets: &'a [SiameseNet],
    name: &str,
    shift: usize,
) -> Result<impl OneShotScorer + 'a, EvalError> {
    let first = nets
        .first()
        .ok_or_else(|| EvalError::method(name, "an ensemble needs at least one network"))?;
    let side = first.config().input_size;
    if let Some(other) = nets.iter().find(|n| n.config().input_size != side) {
        let why = format!(
            "the networks take different input sizes ({side}×{side} and {0}×{0}): an \
             ensemble embeds each image once, at one size",
            other.config().input_size
        );
        return Err(EvalError::method(name, why));
    }
    let widths: Vec<usize> = nets.iter().map(SiameseNet::embed_dim).collect();
    let embed_one = move |net: &SiameseNet, x: &candle_core::Tensor| {
        if shift == 0 {
            return net.embed(x).map_err(candle_core::Error::wrap);
        }
        let (n, _, h, w) = x.dims4()?;
        let s = shift;
        let padded = x.pad_with_zeros(2, s, s)?.pad_with_zeros(3, s, s)?;
        let views = [(s, s), (s, 0), (s, 2 * s), (0, s), (2 * s, s)]
            .iter()
            .map(|&(top, left)| padded.narrow(2, top, h)?.narrow(3, left, w))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let all = candle_core::Tensor::cat(&views, 0)?;
        let features = net.embed(&all).map_err(candle_core::Error::wrap)?;
        let d = features.dim(1)?;
        features.reshape((views.len(), n, d))?.mean(0)
    };
    Ok(CandleScorer::new(
        name,
        first.device().clone(),
        move |x: &candle_core::Tensor| {
            if let [net] = nets {
                return embed_one(net, x);
            }
            let parts = nets
                .iter()
                .map(|net| embed_one(net, x))
                .collect::<candle_core::Result<Vec<_>>>()?;
            candle_core::Tensor::cat(&parts, 1)
        },
        move |a: &candle_core::Tensor, b: &candle_core::Tensor| {
            if let [net] = nets {
                return net.score(a, b).map_err(candle_core::Error::wrap);
            }
            let mut sum: Option<candle_core::Tensor> = None;
            let mut offset = 0;
            for (net, &d) in nets.iter().zip(&widths) {
                let logits = net
                    .score(&a.narrow(1, offset, d)?, &b.narrow(1, offset, d)?)
                    .map_err(candle_core::Error::wrap)?
                    .flatten_all()?;
                offset += d;
                sum = Some(match sum {
                    Some(s) => (s + logits)?,
                    None => logits,
                });
            }
            sum.expect("at least one network") / nets.len() as f64
        },
    )
    .with_input_size(side))
}

/// AdaBN for an evaluation: `net` with batch norm's statistics taken from `images`
/// (prepared as the scorer prepares them: shrunk to the input size), `batch` at a
/// time, instead of from the training images ([`SiameseNet::with_batch_norm_adapted_to`]).
/// It uses the images without their labels, but all of them together: a transductive
/// step outside Koch's protocol, reported as such.
pub fn adapt_batch_norm(
    net: &SiameseNet,
    images: &[&GrayImage],
    batch: usize,
) -> Result<SiameseNet, EvalError> {
    const NAME: &str = "batch-norm adaptation";
    if images.is_empty() {
        return Err(EvalError::method(NAME, "no images to adapt to"));
    }
    let identity = |x: &candle_core::Tensor| Ok(x.clone());
    let prepare = CandleScorer::new(NAME, net.device().clone(), identity, |a, _| Ok(a.clone()))
        .with_input_size(net.config().input_size);
    let parts = images
        .chunks(batch.max(1))
        .map(|chunk| prepare.input_tensor(chunk))
        .collect::<Result<Vec<_>, _>>()?;
    let x = candle_core::Tensor::cat(&parts, 0)?;
    net.with_batch_norm_adapted_to(&x, batch)
        .map_err(|e| EvalError::method(NAME, e.to_string()))
}
