//! The crate's error type.

use std::path::PathBuf;

use crate::config::ModelConfig;

/// Everything that can go wrong when building, running, saving or loading a network,
/// or choosing the device it runs on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shapes, dtypes, out of memory on a device...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A device specification that is none of `auto`, `cpu`, `cuda`, `cuda:N`,
    /// `metal`, `metal:N`.
    #[error("unknown device {0:?}: expected auto, cpu, cuda, cuda:N, metal or metal:N")]
    UnknownDevice(String),

    /// A device was asked for that this binary was built without.
    #[error(
        "device {device:?} asked for, but this binary was built without {backend} support: \
         rebuild with `--features {feature}`"
    )]
    DeviceNotCompiled {
        /// The device specification as given.
        device: String,
        /// The backend in words ("CUDA", "Metal").
        backend: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },

    /// The backend is compiled in but the device did not answer.
    #[error("device {device:?} is not available")]
    DeviceUnavailable {
        /// The device specification as given.
        device: String,
        /// Why the backend could not open it.
        #[source]
        source: candle_core::Error,
    },

    /// An architecture name that is neither `koch` nor `koch35`.
    #[error("unknown architecture {0:?}: expected koch or koch35")]
    UnknownArch(String),

    /// An initialisation scheme that is neither `paper` nor `lecun`.
    #[error("unknown initialisation {0:?}: expected paper or lecun")]
    UnknownInit(String),

    /// A configuration whose input is too small for its layers (a feature map would
    /// shrink to nothing).
    #[error("input size {input_size} is too small for the {arch} architecture")]
    InputTooSmall {
        /// The architecture's name.
        arch: String,
        /// The input side length asked for.
        input_size: usize,
    },

    /// Batch norm's statistics cannot be adapted: the tower has no batch norm, or no
    /// images (or a batch of none) were given.
    #[error("cannot adapt batch norm: {0}")]
    BatchNormAdaptation(String),

    /// Images of the wrong shape given to the network.
    #[error("expected images of shape (n, 1, {input_size}, {input_size}), got {found:?}")]
    InputShape {
        /// The network's input side length.
        input_size: usize,
        /// The shape given.
        found: Vec<usize>,
    },

    /// Reading or writing a checkpoint failed.
    #[error("{action} checkpoint {}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The checkpoint file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file that is not a valid checkpoint of this crate.
    #[error("corrupt checkpoint {}: {reason}", path.display())]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A checkpoint of another architecture (or input size) than the one expected.
    #[error(
        "checkpoint {} holds a {found} network, but a {expected} network was expected",
        path.display()
    )]
    ArchMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The configuration the caller asked for.
        expected: ModelConfig,
        /// The configuration stored in the file.
        found: ModelConfig,
    },
}
