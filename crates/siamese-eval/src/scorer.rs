//! The method abstraction: embed images once, then score (query, candidate) pairs
//! from the cached embeddings.

use candle_core::{DType, Device, Tensor};
use siamese_data::GrayImage;
use siamese_data::tensor::images_to_tensor;

use crate::EvalError;

/// The embeddings of a batch of images, one row per image, in the order of the
/// images. The evaluation embeds the distinct images of a trial set in batches and
/// joins the batches with [`Embeddings::concat`] before scoring.
pub trait Embeddings: Sized {
    /// Number of rows (embedded images).
    fn rows(&self) -> usize;
    /// The rows of `parts`, one after the other.
    fn concat(parts: Vec<Self>) -> Result<Self, EvalError>;
}

impl<T> Embeddings for Vec<T> {
    fn rows(&self) -> usize {
        self.len()
    }

    fn concat(parts: Vec<Self>) -> Result<Self, EvalError> {
        Ok(parts.into_iter().flatten().collect())
    }
}

/// A tensor whose first dimension indexes images, e.g. `(n, 4096)` features.
impl Embeddings for Tensor {
    fn rows(&self) -> usize {
        self.dims().first().copied().unwrap_or(0)
    }

    fn concat(parts: Vec<Self>) -> Result<Self, EvalError> {
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// A one-shot method: a similarity between two images, computed as
/// `score_pairs(embed(a), embed(b))`.
///
/// # Score convention
/// **Higher is more similar.** Methods built on a distance return the negated
/// distance (see [`crate::ModifiedHausdorff`], [`crate::PixelNn`]); a network returns
/// its logit (not the sigmoid of it, which saturates to exactly 1.0 in `f32` and so
/// makes ties). A NaN score makes its trial wrong.
///
/// # Embed once
/// The evaluation calls [`Self::embed`] on batches of the distinct images of all the
/// trials, each image exactly once, then calls [`Self::score_pairs`] with row indices
/// into the concatenated embeddings. An image's embedding must therefore not depend on
/// the other images of its batch.
pub trait OneShotScorer {
    type Embeddings: Embeddings;

    /// The method's name, as reported.
    fn name(&self) -> String;

    /// The embeddings of `images`, one row per image in order. Called with at most
    /// [`crate::EvalOptions::embed_batch`] images.
    fn embed(&self, images: &[&GrayImage]) -> Result<Self::Embeddings, EvalError>;

    /// The similarity of each `(a, b)` pair of rows of `embeddings` (`a` is the query,
    /// `b` a candidate), higher = more similar; one score per pair, in order. Called
    /// with at most [`crate::EvalOptions::pair_batch`] pairs.
    fn score_pairs(
        &self,
        embeddings: &Self::Embeddings,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError>;
}

impl<S: OneShotScorer + ?Sized> OneShotScorer for &S {
    type Embeddings = S::Embeddings;

    fn name(&self) -> String {
        (**self).name()
    }

    fn embed(&self, images: &[&GrayImage]) -> Result<Self::Embeddings, EvalError> {
        (**self).embed(images)
    }

    fn score_pairs(
        &self,
        embeddings: &Self::Embeddings,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError> {
        (**self).score_pairs(embeddings, pairs)
    }
}

/// A method made of two candle functions, for a siamese network:
///
/// - `embed`: an `(n, 1, h, w)` f32 batch of images (ink = 1.0, as
///   [`images_to_tensor`] makes it, on `device`) → `(n, d)` features (the tower);
/// - `score`: two `(m, d)` feature tensors → `(m,)` (or `(m, 1)`) logits, higher =
///   more similar (the head).
///
/// Features stay on the device; each batch of pairs is gathered with one
/// `index_select` per side and scored with one call of `score`. With
/// [`CandleScorer::with_input_size`], images larger than the network's input are
/// shrunk to it first.
///
/// ```ignore
/// let scorer = CandleScorer::new("koch", device, |x| net.embed(x), |a, b| net.score(a, b));
/// ```
pub struct CandleScorer<E, S> {
    name: String,
    device: Device,
    embed: E,
    score: S,
    input_size: Option<usize>,
}

impl<E, S> CandleScorer<E, S>
where
    E: Fn(&Tensor) -> candle_core::Result<Tensor>,
    S: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
{
    pub fn new(name: impl Into<String>, device: Device, embed: E, score: S) -> Self {
        CandleScorer {
            name: name.into(),
            device,
            embed,
            score,
            input_size: None,
        }
    }

    /// Shrinks images to `side × side` before embedding them ([`GrayImage::shrink_to`]:
    /// block means for a whole factor, area resampling otherwise); smaller or
    /// non-square images are an error.
    pub fn with_input_size(mut self, side: usize) -> Self {
        self.input_size = Some(side);
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl<E, S> CandleScorer<E, S> {
    /// The `(n, 1, s, s)` tensor on the scorer's device that [`OneShotScorer::embed`]
    /// gives the network for these images (shrunk to the input size, ink = 1.0).
    pub fn input_tensor(&self, images: &[&GrayImage]) -> Result<Tensor, EvalError> {
        let shrunk = self.shrink_to_input(images)?;
        Ok(match &shrunk {
            Some(shrunk) => images_to_tensor(&shrunk.iter().collect::<Vec<_>>(), &self.device)?,
            None => images_to_tensor(images, &self.device)?,
        })
    }

    /// The images shrunk to the input size, or `None` when they have it (or none is
    /// set).
    fn shrink_to_input(&self, images: &[&GrayImage]) -> Result<Option<Vec<GrayImage>>, EvalError> {
        let Some(side) = self.input_size else {
            return Ok(None);
        };
        if images
            .iter()
            .all(|i| (i.width(), i.height()) == (side, side))
        {
            return Ok(None);
        }
        let shrunk = images.iter().map(|i| {
            i.shrink_to(side).ok_or_else(|| {
                let (w, h) = (i.width(), i.height());
                let why = format!(
                    "an image is {w}×{h}, the network takes {side}×{side}: images must be \
                     square and at least that large"
                );
                EvalError::method(&self.name, why)
            })
        });
        shrunk.collect::<Result<_, _>>().map(Some)
    }
}

impl<E, S> OneShotScorer for CandleScorer<E, S>
where
    E: Fn(&Tensor) -> candle_core::Result<Tensor>,
    S: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
{
    type Embeddings = Tensor;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn embed(&self, images: &[&GrayImage]) -> Result<Tensor, EvalError> {
        let x = self.input_tensor(images)?;
        let features = (self.embed)(&x)?;
        if features.rank() < 1 || features.rows() != images.len() {
            return Err(EvalError::method(
                &self.name,
                format!(
                    "embedding {} images gave features of shape {:?}",
                    images.len(),
                    features.dims()
                ),
            ));
        }
        // Kernels may run asynchronously: wait for them, so that the evaluation's
        // timing of the embedding phase is honest.
        self.device.synchronize()?;
        Ok(features)
    }

    fn score_pairs(
        &self,
        embeddings: &Tensor,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<f64>, EvalError> {
        let index = |side: fn(&(usize, usize)) -> usize| -> Result<Tensor, EvalError> {
            let rows: Vec<u32> = pairs
                .iter()
                .map(|p| {
                    u32::try_from(side(p))
                        .map_err(|_| EvalError::Invalid("row index overflows u32".into()))
                })
                .collect::<Result<_, _>>()?;
            Ok(embeddings.index_select(
                &Tensor::from_vec(rows, pairs.len(), embeddings.device())?,
                0,
            )?)
        };
        let a = index(|p| p.0)?;
        let b = index(|p| p.1)?;
        let logits = (self.score)(&a, &b)?;
        let scores: Vec<f64> = logits.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        if scores.len() != pairs.len() {
            return Err(EvalError::method(
                &self.name,
                format!(
                    "scoring {} pairs gave logits of shape {:?}",
                    pairs.len(),
                    logits.dims()
                ),
            ));
        }
        Ok(scores)
    }
}
