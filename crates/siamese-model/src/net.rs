//! The towers and the siamese network.

use std::sync::{Arc, RwLock};

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};

use crate::config::ModelConfig;
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

/// Batch norm's running statistics of one block, shared by every copy of the
/// network (a [`SiameseNet::detach`]ed copy sees the updates of training).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningStats {
    /// Per-channel running mean.
    pub mean: Vec<f32>,
    /// Per-channel running (unbiased) variance.
    pub var: Vec<f32>,
}

/// Batch norm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Weight of the new batch in the running statistics (PyTorch's default momentum).
pub const BN_MOMENTUM: f64 = 0.1;

/// One block of a batch-normalised tower: 3×3 convolution (zero padding 1) → batch
/// norm → ReLU → 2×2 max-pool.
#[derive(Debug, Clone)]
pub struct BnBlock {
    kernel: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running: Arc<RwLock<RunningStats>>,
    /// The first block's input (the images) needs no gradient.
    first: bool,
}

impl BnBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        use crate::cpu_ops::{BatchNormStats, conv_bn_relu_pool2x2};
        let (k, g, b) = (&self.kernel, &self.gamma, &self.beta);
        if !train {
            let stats = self.running.read().unwrap_or_else(|e| e.into_inner());
            let running = BatchNormStats::Running {
                mean: &stats.mean,
                var: &stats.var,
            };
            return Ok(conv_bn_relu_pool2x2(x, k, g, b, 1, running, BN_EPS, !self.first)?.0);
        }
        let batch = BatchNormStats::Batch;
        let (out, batch) = conv_bn_relu_pool2x2(x, k, g, b, 1, batch, BN_EPS, !self.first)?;
        if let Some((mean, var)) = batch {
            // Statistics over the convolution's output: n × (h × w) per channel.
            let (n, _, h, w) = x.dims4()?;
            let count = (n * h * w) as f64;
            // The running variance is unbiased, as in PyTorch.
            let unbias = if count > 1.0 {
                count / (count - 1.0)
            } else {
                1.0
            };
            let mut stats = self.running.write().unwrap_or_else(|e| e.into_inner());
            let m = BN_MOMENTUM;
            for (r, b) in stats.mean.iter_mut().zip(&mean) {
                *r = ((1.0 - m) * f64::from(*r) + m * b) as f32;
            }
            for (r, b) in stats.var.iter_mut().zip(&var) {
                *r = ((1.0 - m) * f64::from(*r) + m * b * unbias) as f32;
            }
        }
        Ok(out)
    }

    /// The batch statistics of this block's convolution output over `x`: per-channel
    /// mean and biased variance, and how many values each channel had (n × h × w).
    fn batch_stats(&self, x: &Tensor) -> candle_core::Result<(Vec<f64>, Vec<f64>, f64)> {
        use crate::cpu_ops::{BatchNormStats, conv_bn_relu_pool2x2};
        let (k, g, b) = (&self.kernel, &self.gamma, &self.beta);
        let batch = BatchNormStats::Batch;
        let (_, stats) = conv_bn_relu_pool2x2(&x.detach(), k, g, b, 1, batch, BN_EPS, false)?;
        let (mean, var) =
            stats.ok_or_else(|| candle_core::Error::Msg("batch norm gave no statistics".into()))?;
        let (n, _, h, w) = x.dims4()?;
        Ok((mean, var, (n * h * w) as f64))
    }
}

/// One tower. Both images of a pair go through the same tower (the weights are
/// tied).
#[derive(Debug, Clone)]
pub enum Tower {
    /// Koch's: the convolutional layers, then the sigmoid 4096-unit layer.
    Koch { convs: Vec<ConvLayer>, fc: Linear },
    /// The batch-normalised family ([`crate::Arch::ConvBn`]): blocks, then flatten.
    ConvBn { blocks: Vec<BnBlock> },
}

impl Tower {
    /// `(n, 1, h, w)` images to `(n, d)` features; `train` selects batch norm's
    /// training mode (batch statistics, running statistics updated) over inference
    /// mode (running statistics). Koch's towers ignore it.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Tower::Koch { convs, fc } => {
                let mut x = x.clone();
                for conv in convs {
                    x = conv.forward(&x)?;
                }
                let bias = fc
                    .bias()
                    .ok_or_else(|| candle_core::Error::Msg("tower.fc has no bias".into()))?;
                crate::cpu_ops::linear_sigmoid(&x.flatten_from(1)?, fc.weight(), bias)
            }
            Tower::ConvBn { blocks } => {
                let mut x = x.clone();
                for block in blocks {
                    x = block.forward_t(&x, train)?;
                }
                x.flatten_from(1)
            }
        }
    }

    /// The running statistics of each batch-norm block, in order (none for Koch's).
    fn running(&self) -> Vec<Arc<RwLock<RunningStats>>> {
        match self {
            Tower::Koch { .. } => Vec::new(),
            Tower::ConvBn { blocks } => blocks.iter().map(|b| b.running.clone()).collect(),
        }
    }
}

impl Module for Tower {
    /// Inference: `(n, 1, h, w)` images to `(n, d)` features.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }
}

/// The siamese network: a shared [`Tower`] and the weighted-L1 head
/// p = σ(Σⱼ αⱼ |h₁ⱼ − h₂ⱼ| + b), of which it returns the logit (the argument of σ).
///
/// The tensors are those of the `VarBuilder` it was built from: built from a
/// `VarMap`, they are the map's `Var`s, so an optimizer stepping the map's
/// [`all_vars`](VarMap::all_vars) trains this network in place. Batch norm's running
/// statistics are not `Var`s: training-mode forward passes update them.
#[derive(Debug, Clone)]
pub struct SiameseNet {
    config: ModelConfig,
    embed_dim: usize,
    tower: Tower,
    head: Linear,
    params: Vec<(String, Tensor)>,
}

impl SiameseNet {
    /// Builds the network of `config` from the tensors of `vb`, named as in
    /// [`ModelConfig::param_specs`] (`tower.conv1.weight`, ..., `tower.fc.bias`,
    /// `head.weight`, `head.bias`; `tower.block1.conv.weight`, `tower.block1.bn.weight`,
    /// ... for the batch-normalised family). Running statistics
    /// ([`ModelConfig::buffer_specs`]) are read from `vb` when it has them, else start
    /// at mean 0 and variance 1.
    pub fn new(config: ModelConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        let specs = config.param_specs()?;
        let params = specs
            .iter()
            .map(|s| Ok((s.name.clone(), vb.get(s.shape.as_slice(), &s.name)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let mut running = Vec::new();
        let buffers = config.buffer_specs()?;
        for pair in buffers.chunks(2) {
            let values = |spec: &crate::ParamSpec| -> Result<Vec<f32>, ModelError> {
                if vb.contains_tensor(&spec.name) {
                    let t = vb.get(spec.shape.as_slice(), &spec.name)?;
                    Ok(t.to_dtype(DType::F32)?.to_vec1()?)
                } else {
                    let (fill, _) = init::init_distribution(spec.kind);
                    Ok(vec![fill; spec.numel()])
                }
            };
            running.push(Arc::new(RwLock::new(RunningStats {
                mean: values(&pair[0])?,
                var: values(&pair[1])?,
            })));
        }
        Self::build(config, params, running)
    }

    /// The network from its parameters (in [`ModelConfig::param_specs`] order) and
    /// running statistics (one per batch-norm block).
    fn build(
        config: ModelConfig,
        params: Vec<(String, Tensor)>,
        running: Vec<Arc<RwLock<RunningStats>>>,
    ) -> Result<Self, ModelError> {
        let n = params.len();
        let head = Linear::new(params[n - 2].1.clone(), Some(params[n - 1].1.clone()));
        let tower = match config.arch {
            crate::Arch::ConvBn { .. } => {
                let blocks = params[..n - 2]
                    .chunks(3)
                    .zip(running)
                    .enumerate()
                    .map(|(i, (p, running))| BnBlock {
                        kernel: p[0].1.clone(),
                        gamma: p[1].1.clone(),
                        beta: p[2].1.clone(),
                        running,
                        first: i == 0,
                    })
                    .collect();
                Tower::ConvBn { blocks }
            }
            crate::Arch::Koch | crate::Arch::Koch35 => {
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
                Tower::Koch { convs, fc }
            }
        };
        Ok(SiameseNet {
            embed_dim: config.embed_dim()?,
            config,
            tower,
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

    /// The running statistics as tensors on the CPU, named as in
    /// [`ModelConfig::buffer_specs`] (empty for Koch's towers): what a checkpoint
    /// stores beside the parameters.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        let specs = self.config.buffer_specs()?;
        let mut out = Vec::with_capacity(specs.len());
        for (pair, running) in specs.chunks(2).zip(self.tower.running()) {
            let stats = running.read().unwrap_or_else(|e| e.into_inner());
            for (spec, values) in pair.iter().zip([&stats.mean, &stats.var]) {
                let t = Tensor::from_slice(values, spec.shape.as_slice(), &Device::Cpu)?;
                out.push((spec.name.clone(), t));
            }
        }
        Ok(out)
    }

    /// A copy of the running statistics of each batch-norm block.
    pub fn running_stats(&self) -> Vec<RunningStats> {
        self.tower
            .running()
            .iter()
            .map(|r| r.read().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Width of the features [`embed`](Self::embed) returns (4096 for Koch's towers).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
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
        SiameseNet::build(self.config, params, self.tower.running())
            .expect("the same tensors in the same order")
    }

    /// The same network (detached, sharing the running statistics) with the head's
    /// logit mapped to `scale · logit + shift`: Platt scaling of its probability. A
    /// positive `scale` keeps every ranking.
    pub fn with_head_affine(&self, scale: f64, shift: f64) -> Result<Self, ModelError> {
        let n = self.params.len();
        let mut params: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(name, t)| (name.clone(), t.detach()))
            .collect();
        params[n - 2].1 = params[n - 2].1.affine(scale, 0.0)?;
        params[n - 1].1 = params[n - 1].1.affine(scale, shift)?;
        SiameseNet::build(self.config, params, self.tower.running())
    }

    /// AdaBN (Li et al., 2016): the same network (detached) with each batch-norm
    /// block's running statistics replaced by the statistics of its convolution's
    /// output over `images` `(n, 1, s, s)`, block by block (each block's inputs come
    /// through the blocks before it, already adapted), `batch` images at a time; the
    /// variance is stored unbiased, as training stores it. The statistics are exact
    /// over all the images, whatever `batch` is. This network is left as it is. For
    /// Koch's towers, which have no batch norm, it is an error.
    pub fn with_batch_norm_adapted_to(
        &self,
        images: &Tensor,
        batch: usize,
    ) -> Result<Self, ModelError> {
        let Tower::ConvBn { blocks } = &self.tower else {
            return Err(ModelError::BatchNormAdaptation(format!(
                "the {} tower has none (only the batch-normalised towers have it)",
                self.config.arch
            )));
        };
        let n = self.check_input(images)?;
        if n == 0 || batch == 0 {
            return Err(ModelError::BatchNormAdaptation(
                "it needs at least one image, and a batch of at least one".into(),
            ));
        }
        let running: Vec<_> = self
            .running_stats()
            .into_iter()
            .map(|r| Arc::new(RwLock::new(r)))
            .collect();
        let adapted = {
            let detached = self.detach();
            SiameseNet::build(self.config, detached.params, running.clone())?
        };
        let Tower::ConvBn {
            blocks: adapted_blocks,
        } = &adapted.tower
        else {
            unreachable!("the same architecture");
        };
        let dtype = self.params[0].1.dtype();
        for (k, block) in blocks.iter().enumerate() {
            let channels = running[k]
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .mean
                .len();
            let (mut sum, mut sum_sq, mut count) = (vec![0.0; channels], vec![0.0; channels], 0.0);
            for start in (0..n).step_by(batch) {
                let mut x = images
                    .narrow(0, start, batch.min(n - start))?
                    .to_device(self.device())?
                    .to_dtype(dtype)?;
                for earlier in &adapted_blocks[..k] {
                    x = earlier.forward_t(&x, false)?;
                }
                let (mean, var, c) = block.batch_stats(&x)?;
                for ch in 0..channels {
                    sum[ch] += c * mean[ch];
                    sum_sq[ch] += c * (var[ch] + mean[ch] * mean[ch]);
                }
                count += c;
            }
            let unbias = if count > 1.0 {
                count / (count - 1.0)
            } else {
                1.0
            };
            let mut stats = running[k].write().unwrap_or_else(|e| e.into_inner());
            for ch in 0..channels {
                let mean = sum[ch] / count;
                let var = (sum_sq[ch] / count - mean * mean).max(0.0);
                stats.mean[ch] = mean as f32;
                stats.var[ch] = (var * unbias) as f32;
            }
        }
        Ok(adapted)
    }

    /// Embeds `images` `(n, 1, s, s)` (s the configured input size; ink 1.0, background
    /// 0.0) into `(n, d)` features ([`embed_dim`](Self::embed_dim)), in inference
    /// mode (batch norm by its running statistics). Images of another dtype than the
    /// weights are converted.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        self.embed_t(images, false)
    }

    /// [`embed`](Self::embed) in training mode: batch norm normalises by the batch's
    /// statistics and updates its running statistics. The same as `embed` for Koch's
    /// towers.
    pub fn embed_train(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        self.embed_t(images, true)
    }

    /// The number of images in `images`, if they are `(n, 1, s, s)` for this network.
    fn check_input(&self, images: &Tensor) -> Result<usize, ModelError> {
        let s = self.config.input_size;
        let dims = images.dims();
        if dims.len() != 4 || dims[1] != 1 || dims[2] != s || dims[3] != s {
            return Err(ModelError::InputShape {
                input_size: s,
                found: dims.to_vec(),
            });
        }
        Ok(dims[0])
    }

    fn embed_t(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.check_input(images)?;
        let dtype = self.params[0].1.dtype();
        let images = if images.dtype() == dtype {
            images.clone()
        } else {
            images.to_dtype(dtype)?
        };
        Ok(self.tower.forward_t(&images, train)?)
    }

    /// Logits `(n,)` of "same class" for the pairs of features `a[i]`, `b[i]`, both
    /// `(n, d)` from [`embed`](Self::embed). Symmetric: `score(a, b) == score(b, a)`
    /// exactly.
    pub fn score(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, ModelError> {
        let d = self.embed_dim;
        if a.dims() != b.dims() || a.rank() != 2 || a.dim(1)? != d {
            return Err(candle_core::Error::Msg(format!(
                "score: expected two (n, {d}) feature tensors, got {:?} and {:?}",
                a.dims(),
                b.dims()
            ))
            .into());
        }
        let distance = (a - b)?.abs()?;
        Ok(self.head.forward(&distance)?.squeeze(D::Minus1)?)
    }

    /// Logits `(q, s)` of "same class" for every pair of a query `queries[i]` `(q, d)`
    /// and a candidate `candidates[j]` `(s, d)`: the head on all `q·s` pairs at once.
    pub fn score_all(&self, queries: &Tensor, candidates: &Tensor) -> Result<Tensor, ModelError> {
        let d = self.embed_dim;
        let ((q, qd), (s, sd)) = (queries.dims2()?, candidates.dims2()?);
        if qd != d || sd != d {
            return Err(candle_core::Error::Msg(format!(
                "score_all: expected (q, {d}) and (s, {d}) features, got {:?} and {:?}",
                queries.dims(),
                candidates.dims()
            ))
            .into());
        }
        let distance = queries
            .unsqueeze(1)?
            .broadcast_sub(&candidates.unsqueeze(0)?)?
            .abs()?
            .reshape((q * s, d))?;
        Ok(self.head.forward(&distance)?.reshape((q, s))?)
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
