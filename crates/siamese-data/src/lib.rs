//! The data side of one-shot learning on Omniglot: fetching and verifying the data
//! set, indexing and decoding it, Koch et al.'s affine distortions, the named splits,
//! seeded samplers of pairs, batches and N-way k-shot tasks, and the batch of every
//! training step ([`batch`]).
//!
//! This crate knows no network: it hands out images and labels, and turns batches
//! into candle tensors of shape `(n, 1, height, width)`.
//!
//! # Pixel convention
//! Everywhere in this crate and in every tensor it produces, **ink is 1.0 and
//! background is 0.0** (stored as `u8` 255 and 0 in memory). Omniglot's PNGs are the
//! reverse (black ink on white paper); decoding inverts them, so that zero padding,
//! the zero fill of distortions and the network's zero inputs all mean "no ink".

pub mod archive;
pub mod augment;
pub mod batch;
pub mod digest;
mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod image;
pub mod index;
pub mod lake;
pub mod mnist;
mod packed;
pub mod sample;
pub mod sets;
pub mod split;
pub mod tensor;
pub mod user_image;

pub use error::DataError;
pub use image::GrayImage;
pub use index::{Dataset, DatasetIndex};
pub use sets::{MIRROR_ENV, OFFICIAL_BASE_URL, OmniglotSet};
pub use split::{Part, SplitName};

/// The random number generator of every sampler and distortion: ChaCha8, seeded,
/// identical on every platform.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// A [`SeededRng`] from a 64-bit seed.
pub fn seeded_rng(seed: u64) -> SeededRng {
    use rand::SeedableRng;
    SeededRng::seed_from_u64(seed)
}
