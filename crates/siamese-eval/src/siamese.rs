//! The trained network as a one-shot method.

use siamese_model::SiameseNet;

use crate::OneShotScorer;
use crate::scorer::CandleScorer;

/// The network as a [`OneShotScorer`]: the tower embeds each image once, the head
/// scores (query, candidate) pairs of embeddings; the score is the head's logit.
/// Images a whole factor larger than the network's input are shrunk to it (Omniglot's
/// 105×105 by 3 for `koch35`).
pub fn siamese_scorer<'a>(net: &'a SiameseNet, name: &str) -> impl OneShotScorer + 'a {
    CandleScorer::new(
        name,
        net.device().clone(),
        move |x: &candle_core::Tensor| net.embed(x).map_err(candle_core::Error::wrap),
        move |a: &candle_core::Tensor, b: &candle_core::Tensor| {
            net.score(a, b).map_err(candle_core::Error::wrap)
        },
    )
    .with_input_size(net.config().input_size)
}
