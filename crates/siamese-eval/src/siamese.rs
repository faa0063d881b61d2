//! The trained network as a one-shot method.

use siamese_model::SiameseNet;

use crate::OneShotScorer;
use crate::scorer::CandleScorer;

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
    CandleScorer::new(
        name,
        net.device().clone(),
        move |x: &candle_core::Tensor| {
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
        },
        move |a: &candle_core::Tensor, b: &candle_core::Tensor| {
            net.score(a, b).map_err(candle_core::Error::wrap)
        },
    )
    .with_input_size(net.config().input_size)
}
