//! The trained network as a one-shot method.

use siamese_model::SiameseNet;

use crate::OneShotScorer;
use crate::scorer::CandleScorer;

/// The network as a [`OneShotScorer`]: the tower embeds each image once, the head
/// scores (query, candidate) pairs of embeddings; the score is the head's logit.
pub fn siamese_scorer<'a>(net: &'a SiameseNet, name: &str) -> impl OneShotScorer + 'a {
    CandleScorer::new(
        name,
        net.device().clone(),
        move |x: &candle_core::Tensor| net.embed(x).map_err(candle_core::Error::wrap),
        move |a: &candle_core::Tensor, b: &candle_core::Tensor| {
            net.score(a, b).map_err(candle_core::Error::wrap)
        },
    )
}
