//! Architectures and the shapes of their parameters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Width of the embedding both architectures produce (the paper's 4096-unit
/// fully connected layer).
pub const EMBED_DIM: usize = 4096;

/// The two towers of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The network of Koch et al. (2015), figure 4, for 105×105 images:
    /// conv 64@10×10 → ReLU → max-pool 2 → conv 128@7×7 → ReLU → max-pool 2 →
    /// conv 128@4×4 → ReLU → max-pool 2 → conv 256@4×4 → ReLU → flatten (256·6·6 =
    /// 9216) → linear 4096 → sigmoid. 38,951,745 parameters with the head.
    #[default]
    Koch,
    /// A reduced tower for 35×35 images (Omniglot downsampled by 3), the input size
    /// of the paper's MNIST transfer experiment (section 5.3). The paper does not give
    /// its layer sizes; this crate uses conv 64@5×5 → ReLU → max-pool 2 (35 → 31 → 15)
    /// → conv 128@4×4 → ReLU → max-pool 2 (15 → 12 → 6) → conv 128@3×3 → ReLU (6 → 4)
    /// → flatten (128·4·4 = 2048) → linear 4096 → sigmoid. 8,677,249 parameters with
    /// the head.
    Koch35,
}

impl Arch {
    /// Every architecture, in a fixed order.
    pub const ALL: [Arch; 2] = [Arch::Koch, Arch::Koch35];

    /// The lowercase name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Koch => "koch",
            Arch::Koch35 => "koch35",
        }
    }

    /// The input side length the architecture was designed for.
    pub fn default_input_size(self) -> usize {
        match self {
            Arch::Koch => 105,
            Arch::Koch35 => 35,
        }
    }

    /// The convolutional layers of the tower, input to output.
    pub fn conv_layers(self) -> &'static [ConvSpec] {
        const fn c(out_channels: usize, kernel: usize, pool: bool) -> ConvSpec {
            ConvSpec {
                out_channels,
                kernel,
                pool,
            }
        }
        const KOCH: [ConvSpec; 4] = [
            c(64, 10, true),
            c(128, 7, true),
            c(128, 4, true),
            c(256, 4, false),
        ];
        const KOCH35: [ConvSpec; 3] = [c(64, 5, true), c(128, 4, true), c(128, 3, false)];
        match self {
            Arch::Koch => &KOCH,
            Arch::Koch35 => &KOCH35,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ModelError::UnknownArch(s.to_string()))
    }
}

/// One convolutional layer of a tower: valid (unpadded) convolution with stride 1,
/// bias and ReLU, then optionally a 2×2 max-pool with stride 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Number of filters.
    pub out_channels: usize,
    /// Side length of the square kernel.
    pub kernel: usize,
    /// Whether a 2×2 max-pool follows the ReLU.
    pub pool: bool,
}

/// Which network to build: the architecture and the side length of its square,
/// single-channel input. Stored in every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The tower's layers.
    pub arch: Arch,
    /// Side length of the input images, in pixels.
    pub input_size: usize,
}

impl Default for ModelConfig {
    /// The paper's network: [`Arch::Koch`] on 105×105 images.
    fn default() -> Self {
        ModelConfig::new(Arch::Koch)
    }
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}×{} input)",
            self.arch, self.input_size, self.input_size
        )
    }
}

/// What a parameter tensor is, which decides its initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A convolution kernel, `(out, in, k, k)`.
    ConvWeight,
    /// A fully connected weight matrix, `(out, in)` (the tower's 4096-unit layer and
    /// the head).
    FcWeight,
    /// A bias of any layer.
    Bias,
}

/// The name, shape and kind of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name in the `VarMap` and in checkpoints, e.g. `tower.conv1.weight`.
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// What it is.
    pub kind: ParamKind,
}

impl ParamSpec {
    /// Number of scalars in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl ModelConfig {
    /// The architecture at the input size it was designed for.
    pub fn new(arch: Arch) -> Self {
        ModelConfig {
            arch,
            input_size: arch.default_input_size(),
        }
    }

    /// Side length and channels of the last convolutional feature map, or an error if
    /// the input is too small for the layers.
    pub fn feature_map(&self) -> Result<(usize, usize), ModelError> {
        let too_small = || ModelError::InputTooSmall {
            arch: self.arch.to_string(),
            input_size: self.input_size,
        };
        let mut side = self.input_size;
        let mut channels = 1;
        for conv in self.arch.conv_layers() {
            side = side
                .checked_sub(conv.kernel - 1)
                .filter(|&s| s > 0)
                .ok_or_else(too_small)?;
            if conv.pool {
                side /= 2;
                if side == 0 {
                    return Err(too_small());
                }
            }
            channels = conv.out_channels;
        }
        Ok((side, channels))
    }

    /// Length of the flattened last feature map, the input of the 4096-unit layer
    /// (9216 for [`Arch::Koch`] at 105×105).
    pub fn flat_features(&self) -> Result<usize, ModelError> {
        let (side, channels) = self.feature_map()?;
        Ok(side * side * channels)
    }

    /// Every parameter tensor of the network (tower, then head), in a fixed order.
    pub fn param_specs(&self) -> Result<Vec<ParamSpec>, ModelError> {
        let spec = |name: String, shape: Vec<usize>, kind| ParamSpec { name, shape, kind };
        let mut specs = Vec::new();
        let mut in_channels = 1;
        for (i, conv) in self.arch.conv_layers().iter().enumerate() {
            let prefix = format!("tower.conv{}", i + 1);
            let (o, k) = (conv.out_channels, conv.kernel);
            specs.push(spec(
                format!("{prefix}.weight"),
                vec![o, in_channels, k, k],
                ParamKind::ConvWeight,
            ));
            specs.push(spec(format!("{prefix}.bias"), vec![o], ParamKind::Bias));
            in_channels = o;
        }
        let flat = self.flat_features()?;
        specs.push(spec(
            "tower.fc.weight".into(),
            vec![EMBED_DIM, flat],
            ParamKind::FcWeight,
        ));
        specs.push(spec(
            "tower.fc.bias".into(),
            vec![EMBED_DIM],
            ParamKind::Bias,
        ));
        specs.push(spec(
            "head.weight".into(),
            vec![1, EMBED_DIM],
            ParamKind::FcWeight,
        ));
        specs.push(spec("head.bias".into(), vec![1], ParamKind::Bias));
        Ok(specs)
    }

    /// Total number of trainable scalars (38,951,745 for the paper's network).
    pub fn num_params(&self) -> Result<usize, ModelError> {
        Ok(self.param_specs()?.iter().map(ParamSpec::numel).sum())
    }
}
