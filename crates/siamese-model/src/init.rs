//! The initialisation of Koch et al. (2015), section 3.3, seeded and reproducible.
//!
//! The paper: "We initialized all network weights in the convolutional layers from a
//! normal distribution with zero-mean and a standard deviation of 10⁻². Biases were
//! also initialized from a normal distribution, but with mean 0.5 and standard
//! deviation 10⁻². In the fully-connected layers, the biases were initialized in the
//! same way as the convolutional layers, but the weights were drawn from a much wider
//! normal distribution with zero-mean and standard deviation 2·10⁻¹."
//!
//! So here: convolution kernels N(0, 0.01²), every bias N(0.5, 0.01²), and the
//! weights of both fully connected layers (the tower's 4096-unit layer and the
//! one-unit head) N(0, 0.2²), all given as standard deviations.
//!
//! That width saturates the 4096-unit sigmoid layer: with 9216 non-negative inputs
//! of typical size ~0.3, its pre-activations start with a standard deviation near
//! 0.2·√9216·0.3 ≈ 6, most units sit at 0 or 1 where the gradient vanishes, and
//! training barely moves (a balanced pair loss stuck near ln 2). [`InitScheme::Lecun`]
//! keeps everything else and draws the fully connected weights from N(0, 1/fan_in)
//! instead (LeCun's scaling), which starts the sigmoid in its linear range.
//!
//! The numbers are drawn on the CPU with ChaCha8 ([`rand_chacha`]) and
//! [`rand_distr::Normal`], not with a device's random number generator, so that a
//! seed gives the same network on every device, platform and thread count. Each
//! parameter tensor is cut into blocks of [`INIT_BLOCK`] values; every block has its
//! own generator, keyed by the seed, the parameter's index and the block's index,
//! which lets the blocks be drawn in parallel without changing the result.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::config::{ModelConfig, ParamKind, ParamSpec};

/// Standard deviation of convolution kernels.
pub const CONV_WEIGHT_STD: f32 = 1e-2;
/// Standard deviation of fully connected weights (the 4096-unit layer and the head).
pub const FC_WEIGHT_STD: f32 = 2e-1;
/// Mean of every bias.
pub const BIAS_MEAN: f32 = 0.5;
/// Standard deviation of every bias.
pub const BIAS_STD: f32 = 1e-2;
/// Values drawn from one generator before the next block starts a new one.
pub const INIT_BLOCK: usize = 1 << 16;

/// How a fresh network's parameters are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// Koch et al.'s distributions, exactly.
    #[default]
    Paper,
    /// The paper's, except fully connected weights N(0, 1/fan_in).
    Lecun,
}

impl InitScheme {
    pub const ALL: [InitScheme; 2] = [InitScheme::Paper, InitScheme::Lecun];

    pub fn name(self) -> &'static str {
        match self {
            InitScheme::Paper => "paper",
            InitScheme::Lecun => "lecun",
        }
    }
}

impl fmt::Display for InitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InitScheme {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InitScheme::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ModelError::UnknownInit(s.to_string()))
    }
}

/// Mean and standard deviation of a parameter of Koch's kinds under the paper's
/// scheme; for the batch-normalised tower's kinds, those that do not depend on the
/// shape (see [`spec_distribution`] for the rest).
pub fn init_distribution(kind: ParamKind) -> (f32, f32) {
    match kind {
        ParamKind::ConvWeight => (0.0, CONV_WEIGHT_STD),
        ParamKind::FcWeight => (0.0, FC_WEIGHT_STD),
        ParamKind::Bias => (BIAS_MEAN, BIAS_STD),
        ParamKind::BnScale | ParamKind::RunningVar => (1.0, 0.0),
        ParamKind::Zero | ParamKind::RunningMean => (0.0, 0.0),
        ParamKind::HeConvWeight => (0.0, 1.0),
        ParamKind::HeadL1 => (-1.0, 0.0),
    }
}

/// Mean and standard deviation of the parameter `spec` under `scheme`. The
/// batch-normalised tower's parameters ignore the scheme: He's N(0, 2/fan_in) for
/// its kernels (PyTorch's and most Conv-4 implementations' choice for ReLU
/// networks), −1/√fan_in for every head weight.
pub fn spec_distribution(spec: &ParamSpec, scheme: InitScheme) -> (f32, f32) {
    // Kernels (out, in, k, k) and linear weights (out, in): the fan-in is the
    // product of all dimensions after the first.
    let fan_in = spec.shape.iter().skip(1).product::<usize>().max(1) as f64;
    match (scheme, spec.kind) {
        (InitScheme::Lecun, ParamKind::FcWeight) => (0.0, (1.0 / fan_in).sqrt() as f32),
        (_, ParamKind::HeConvWeight) => (0.0, (2.0 / fan_in).sqrt() as f32),
        (_, ParamKind::HeadL1) => (-(1.0 / fan_in).sqrt() as f32, 0.0),
        (_, kind) => init_distribution(kind),
    }
}

/// A new `VarMap` holding every parameter of `config`, f32 on `device`, drawn with
/// the paper's scheme as described in the [module documentation](self).
pub fn init_varmap(config: &ModelConfig, seed: u64, device: &Device) -> Result<VarMap, ModelError> {
    init_varmap_with(config, InitScheme::Paper, seed, device)
}

/// [`init_varmap`] with another [`InitScheme`].
pub fn init_varmap_with(
    config: &ModelConfig,
    scheme: InitScheme,
    seed: u64,
    device: &Device,
) -> Result<VarMap, ModelError> {
    let varmap = VarMap::new();
    let specs = config.param_specs()?;
    {
        let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (index, spec) in specs.iter().enumerate() {
            let values = draw(spec, scheme, seed, index as u64);
            let tensor = Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?
                .to_device(device)?
                .to_dtype(DType::F32)?;
            data.insert(spec.name.clone(), Var::from_tensor(&tensor)?);
        }
    }
    tracing::debug!(
        "initialised {} ({} parameters) with seed {seed}, {scheme} scheme",
        config,
        config.num_params()?
    );
    Ok(varmap)
}

fn draw(spec: &ParamSpec, scheme: InitScheme, seed: u64, param_index: u64) -> Vec<f32> {
    let (mean, std) = spec_distribution(spec, scheme);
    if std == 0.0 {
        return vec![mean; spec.numel()];
    }
    let normal = Normal::new(mean, std).expect("finite, positive standard deviation");
    let mut values = vec![0f32; spec.numel()];
    values
        .par_chunks_mut(INIT_BLOCK)
        .enumerate()
        .for_each(|(block, chunk)| {
            let mut rng = block_rng(seed, param_index, block as u64);
            for v in chunk {
                *v = normal.sample(&mut rng);
            }
        });
    values
}

fn block_rng(seed: u64, param_index: u64, block: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&param_index.to_le_bytes());
    key[16..24].copy_from_slice(&block.to_le_bytes());
    key[24..].copy_from_slice(b"koch2015");
    ChaCha8Rng::from_seed(key)
}
