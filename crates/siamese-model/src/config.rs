//! Architectures and the shapes of their parameters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Width of the embedding Koch's towers produce (the paper's 4096-unit fully
/// connected layer). A [`Arch::ConvBn`] tower's width is [`ModelConfig::embed_dim`].
pub const EMBED_DIM: usize = 4096;

/// The towers: the two of the paper, and a batch-normalised 3×3 convolution family.
///
/// In configuration files and checkpoints Koch's towers are the strings `"koch"` and
/// `"koch35"`, the family a table: `{"conv-bn": {"width": 64, "depth": 4}}`.
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
    /// `depth` blocks of 3×3 convolution (`width` filters, zero padding 1, no bias) →
    /// batch norm → ReLU → 2×2 max-pool (floor), then flatten: the "Conv-4" of the
    /// metric-learning literature at width 64 and depth 4 ([`Arch::CONV4`]), whose
    /// 28×28 input gives a 64-wide embedding (28 → 14 → 7 → 3 → 1). Batch norm
    /// normalises by the batch's statistics in training
    /// ([`crate::SiameseNet::embed_train`]) and by running statistics, kept in the
    /// checkpoint, everywhere else.
    #[serde(rename = "conv-bn")]
    ConvBn {
        /// Filters of every convolution.
        width: usize,
        /// Number of blocks.
        depth: usize,
    },
}

impl Arch {
    /// The named architectures, in a fixed order.
    pub const ALL: [Arch; 3] = [Arch::Koch, Arch::Koch35, Arch::CONV4];

    /// Conv-4: [`Arch::ConvBn`] with 64 filters and 4 blocks.
    pub const CONV4: Arch = Arch::ConvBn {
        width: 64,
        depth: 4,
    };

    /// The name used on the command line: `koch`, `koch35`, `conv4`, or
    /// `conv-bn-WIDTHxDEPTH` for the other members of the family.
    pub fn name(self) -> String {
        match self {
            Arch::Koch => "koch".into(),
            Arch::Koch35 => "koch35".into(),
            Arch::CONV4 => "conv4".into(),
            Arch::ConvBn { width, depth } => format!("conv-bn-{width}x{depth}"),
        }
    }

    /// The input side length the architecture was designed for (28 for the batch-
    /// normalised family: Omniglot area-resampled from 105×105).
    pub fn default_input_size(self) -> usize {
        match self {
            Arch::Koch => 105,
            Arch::Koch35 => 35,
            Arch::ConvBn { .. } => 28,
        }
    }

    /// Whether the tower has batch norm (and so running statistics, and a training
    /// mode that differs from inference).
    pub fn has_batch_norm(self) -> bool {
        matches!(self, Arch::ConvBn { .. })
    }

    /// The convolutional layers of Koch's towers, input to output (none for
    /// [`Arch::ConvBn`], whose blocks are not [`ConvSpec`]s).
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
            Arch::ConvBn { .. } => &[],
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        if let Some(a) = Arch::ALL.into_iter().find(|a| a.name() == name) {
            return Ok(a);
        }
        let family = name
            .strip_prefix("conv-bn-")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(w, d)| Some((w.parse().ok()?, d.parse().ok()?)));
        match family {
            Some((width, depth)) if width > 0 && depth > 0 => Ok(Arch::ConvBn { width, depth }),
            _ => Err(ModelError::UnknownArch(s.to_string())),
        }
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
    /// A bias of Koch's layers.
    Bias,
    /// A convolution kernel followed by batch norm: He's N(0, 2/fan_in).
    HeConvWeight,
    /// Batch norm's scale γ (starts at 1).
    BnScale,
    /// Batch norm's shift β, or a bias that starts at 0.
    Zero,
    /// The head of a batch-normalised tower: every weight −1/√fan_in, so that the
    /// untrained network already scores by (negative) L1 distance.
    HeadL1,
    /// Batch norm's running mean (not trained; starts at 0).
    RunningMean,
    /// Batch norm's running variance (not trained; starts at 1).
    RunningVar,
}

impl ParamKind {
    /// Whether the optimizer trains it (running statistics are updated by the forward
    /// pass in training mode instead).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }
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
        if let Arch::ConvBn { width, depth } = self.arch {
            let mut side = self.input_size;
            for _ in 0..depth {
                side /= 2;
                if side == 0 {
                    return Err(too_small());
                }
            }
            if width == 0 || depth == 0 {
                return Err(too_small());
            }
            return Ok((side, width));
        }
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

    /// Width of the features the tower produces and the head compares: 4096 for
    /// Koch's towers, the flattened last feature map for [`Arch::ConvBn`].
    pub fn embed_dim(&self) -> Result<usize, ModelError> {
        match self.arch {
            Arch::ConvBn { .. } => self.flat_features(),
            Arch::Koch | Arch::Koch35 => Ok(EMBED_DIM),
        }
    }

    /// Every trainable parameter tensor of the network (tower, then head), in a fixed
    /// order.
    pub fn param_specs(&self) -> Result<Vec<ParamSpec>, ModelError> {
        Ok(self
            .tensor_specs()?
            .into_iter()
            .filter(|s| s.kind.trainable())
            .collect())
    }

    /// The tensors that are not trained but belong to the network: batch norm's
    /// running statistics (`tower.block1.bn.running_mean`, `...running_var`; none for
    /// Koch's towers).
    pub fn buffer_specs(&self) -> Result<Vec<ParamSpec>, ModelError> {
        Ok(self
            .tensor_specs()?
            .into_iter()
            .filter(|s| !s.kind.trainable())
            .collect())
    }

    /// Every tensor of a checkpoint: parameters and buffers.
    pub fn tensor_specs(&self) -> Result<Vec<ParamSpec>, ModelError> {
        let spec = |name: String, shape: Vec<usize>, kind| ParamSpec { name, shape, kind };
        if let Arch::ConvBn { width, depth } = self.arch {
            let mut specs = Vec::new();
            let mut in_channels = 1;
            self.feature_map()?;
            for i in 1..=depth {
                let p = format!("tower.block{i}");
                specs.push(spec(
                    format!("{p}.conv.weight"),
                    vec![width, in_channels, 3, 3],
                    ParamKind::HeConvWeight,
                ));
                specs.push(spec(
                    format!("{p}.bn.weight"),
                    vec![width],
                    ParamKind::BnScale,
                ));
                specs.push(spec(format!("{p}.bn.bias"), vec![width], ParamKind::Zero));
                specs.push(spec(
                    format!("{p}.bn.running_mean"),
                    vec![width],
                    ParamKind::RunningMean,
                ));
                specs.push(spec(
                    format!("{p}.bn.running_var"),
                    vec![width],
                    ParamKind::RunningVar,
                ));
                in_channels = width;
            }
            let dim = self.embed_dim()?;
            specs.push(spec("head.weight".into(), vec![1, dim], ParamKind::HeadL1));
            specs.push(spec("head.bias".into(), vec![1], ParamKind::Zero));
            return Ok(specs);
        }
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
