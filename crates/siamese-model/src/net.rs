//! The towers and the siamese network.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};

use crate::config::{EMBED_DIM, ModelConfig};
use crate::{ModelError, init, layers};

/// One convolutional layer of a tower: convolution, bias, ReLU, optional max-pool.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    weight: Tensor,
    bias: Tensor,
    pool: bool,
}

impl Module for ConvLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        layers::conv2d_relu_maybe_pool(x, &self.weight, &self.bias, self.pool)
    }
}

/// One tower: the convolutional layers, then the sigmoid 4096-unit layer. Both
/// images of a pair go through the same tower (the weights are tied).
#[derive(Debug, Clone)]
pub struct Tower {
    convs: Vec<ConvLayer>,
    fc: Linear,
}

impl Module for Tower {
    /// `(n, 1, h, w)` images to `(n, 4096)` features in (0, 1).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for conv in &self.convs {
            x = conv.forward(&x)?;
        }
        let bias = self
            .fc
            .bias()
            .ok_or_else(|| candle_core::Error::Msg("tower.fc has no bias".into()))?;
        crate::cpu_ops::linear_sigmoid(&x.flatten_from(1)?, self.fc.weight(), bias)
    }
}

/// The siamese network: a shared [`Tower`] and the weighted-L1 head
/// p = σ(Σⱼ αⱼ |h₁ⱼ − h₂ⱼ| + b), of which it returns the logit (the argument of σ).
///
/// The tensors are those of the `VarBuilder` it was built from: built from a
/// `VarMap`, they are the map's `Var`s, so an optimizer stepping the map's
/// [`all_vars`](VarMap::all_vars) trains this network in place.
#[derive(Debug, Clone)]
pub struct SiameseNet {
    config: ModelConfig,
    tower: Tower,
    head: Linear,
    params: Vec<(String, Tensor)>,
}

impl SiameseNet {
    /// Builds the network of `config` from the tensors of `vb`, named as in
    /// [`ModelConfig::param_specs`] (`tower.conv1.weight`, ..., `tower.fc.bias`,
    /// `head.weight`, `head.bias`).
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let specs = config.param_specs()?;
        let params = specs
            .iter()
            .map(|s| Ok((s.name.clone(), vb.get(s.shape.as_slice(), &s.name)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let n_convs = config.arch.conv_layers().len();
        let convs = config
            .arch
            .conv_layers()
            .iter()
            .zip(params.chunks(2))
            .map(|(spec, wb)| ConvLayer {
                weight: wb[0].1.clone(),
                bias: wb[1].1.clone(),
                pool: spec.pool,
            })
            .collect();
        let fc = Linear::new(
            params[2 * n_convs].1.clone(),
            Some(params[2 * n_convs + 1].1.clone()),
        );
        let head = Linear::new(
            params[2 * n_convs + 2].1.clone(),
            Some(params[2 * n_convs + 3].1.clone()),
        );
        Ok(SiameseNet {
            config,
            tower: Tower { convs, fc },
            head,
            params,
        })
    }

    /// A freshly initialised network (the paper's initialisation, see [`crate::init`])
    /// and the `VarMap` holding its parameters, f32 on `device`. The same seed gives
    /// the same network on every device.
    pub fn init(
        config: ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap), ModelError> {
        Self::init_with(config, init::InitScheme::Paper, seed, device)
    }

    /// [`SiameseNet::init`] with another [`InitScheme`](init::InitScheme).
    pub fn init_with(
        config: ModelConfig,
        scheme: init::InitScheme,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap), ModelError> {
        let varmap = init::init_varmap_with(&config, scheme, seed, device)?;
        let net = SiameseNet::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((net, varmap))
    }

    /// The architecture and input size.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.params[0].1.device()
    }

    /// The shared tower.
    pub fn tower(&self) -> &Tower {
        &self.tower
    }

    /// Every parameter tensor with its name, in the order of
    /// [`ModelConfig::param_specs`].
    pub fn named_tensors(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Total number of scalars in the parameters.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// The same network with its tensors detached from the `Var`s: it shares their
    /// storage (and so sees later optimizer steps) but records no gradient graph,
    /// which makes inference cheaper in memory.
    pub fn detach(&self) -> Self {
        let params: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, t)| (n.clone(), t.detach()))
            .collect();
        let vb =
            VarBuilder::from_tensors(params.iter().cloned().collect(), DType::F32, self.device());
        SiameseNet::new(self.config, vb).expect("the same tensors under the same names")
    }

    /// Embeds `images` `(n, 1, s, s)` (s the configured input size; ink 1.0, background
    /// 0.0) into `(n, 4096)` features. Images of another dtype than the weights are
    /// converted.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let s = self.config.input_size;
        let dims = images.dims();
        if dims.len() != 4 || dims[1] != 1 || dims[2] != s || dims[3] != s {
            return Err(ModelError::InputShape {
                input_size: s,
                found: dims.to_vec(),
            });
        }
        let dtype = self.params[0].1.dtype();
        let images = if images.dtype() == dtype {
            images.clone()
        } else {
            images.to_dtype(dtype)?
        };
        Ok(self.tower.forward(&images)?)
    }

    /// Logits `(n,)` of "same class" for the pairs of features `a[i]`, `b[i]`, both
    /// `(n, 4096)` from [`embed`](Self::embed). Symmetric: `score(a, b) == score(b, a)`
    /// exactly.
    pub fn score(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, ModelError> {
        if a.dims() != b.dims() || a.rank() != 2 || a.dim(1)? != EMBED_DIM {
            return Err(candle_core::Error::Msg(format!(
                "score: expected two (n, {EMBED_DIM}) feature tensors, got {:?} and {:?}",
                a.dims(),
                b.dims()
            ))
            .into());
        }
        let distance = (a - b)?.abs()?;
        Ok(self.head.forward(&distance)?.squeeze(D::Minus1)?)
    }

    /// Logits `(n,)` of "same class" for the image pairs `left[i]`, `right[i]`, both
    /// `(n, 1, s, s)`: [`embed`](Self::embed) (both sides in one batch) then
    /// [`score`](Self::score).
    pub fn forward_pairs(&self, left: &Tensor, right: &Tensor) -> Result<Tensor, ModelError> {
        let n = left.dim(0)?;
        if left.dims() != right.dims() {
            return Err(candle_core::Error::Msg(format!(
                "forward_pairs: left {:?} and right {:?} differ in shape",
                left.dims(),
                right.dims()
            ))
            .into());
        }
        let features = self.embed(&Tensor::cat(&[left, right], 0)?)?;
        self.score(&features.narrow(0, 0, n)?, &features.narrow(0, n, n)?)
    }
}
