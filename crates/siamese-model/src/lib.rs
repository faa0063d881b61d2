//! The siamese network of Koch, Zemel & Salakhutdinov (2015): convolutional towers
//! that embed a character image, and the weighted-L1 head that scores a pair.
//!
//! This crate knows no data set: it takes image tensors and returns features and
//! logits.
//!
//! * [`ModelConfig`] / [`Arch`]: which network (the paper's 105×105 [`Arch::Koch`],
//!   the reduced 35×35 [`Arch::Koch35`], or the batch-normalised 3×3 family
//!   [`Arch::ConvBn`], Conv-4 at 28×28 by default) and the shapes of its parameters
//!   and running statistics;
//! * [`SiameseNet`]: built from a candle `VarBuilder` (or [`SiameseNet::init`] with
//!   the paper's seeded initialisation, see [`init`]); [`SiameseNet::embed`] embeds
//!   each image once (batch norm in inference mode; [`SiameseNet::embed_train`] in
//!   training mode), [`SiameseNet::score`] scores pairs of features,
//!   [`SiameseNet::score_all`] every query against every candidate,
//!   [`SiameseNet::forward_pairs`] embeds and scores;
//! * [`bce_with_logits`]: the training loss, numerically stable;
//! * checkpoints ([`checkpoint`]): one safetensors file with the configuration and
//!   the provenance in its metadata, written atomically;
//! * [`select_device`]: the one place where `auto` / `cpu` / `cuda[:N]` /
//!   `metal[:N]` become a candle `Device`;
//! * [`cpu_ops`]: fast CPU kernels: convolution (im2col + gemm, or FFT), max-pool, the
//!   fully connected sigmoid layer, batch norm + ReLU + max-pool fused.
//!
//! Images are `(n, 1, s, s)` f32 tensors with ink 1.0 and background 0.0, as
//! `siamese-data` produces them.

pub mod checkpoint;
mod config;
pub mod cpu_ops;
mod device;
mod error;
pub mod init;
mod layers;
mod loss;
mod net;

pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use candle_nn;
pub use checkpoint::{CHECKPOINT_FORMAT, CheckpointInfo, read_checkpoint_info};
pub use config::{Arch, ConvSpec, EMBED_DIM, ModelConfig, ParamKind, ParamSpec};
pub use device::{device_kind, select_device};
pub use error::ModelError;
pub use init::InitScheme;
pub use loss::bce_with_logits;
pub use net::{BN_EPS, BN_MOMENTUM, BnBlock, ConvLayer, RunningStats, SiameseNet, Tower};

/// The tensor library and its version, for reports (e.g. `bench train`'s `impl`).
pub const BACKEND: &str = "candle-0.11.1";
