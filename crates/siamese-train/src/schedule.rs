//! Koch et al.'s schedule for layer-wise SGD, the Adam settings, the optimizer of a
//! configuration ([`Optimizer`], each with its own settings) and the optimizer a run
//! trains with ([`RunOptimizer`]).
//!
//! Koch et al. (2015, §4.1): "learning rates were decayed uniformly across the network
//! by 1 percent per epoch, so that ηⱼ⁽ᵀ⁾ = 0.99 ηⱼ⁽ᵀ⁻¹⁾ [...] momentum starts at 0.5 in
//! every layer, increasing linearly each epoch until reaching the value μⱼ". The paper
//! chose each layer's ηⱼ, μⱼ and λⱼ by Bayesian optimisation (Whetlab) within
//! ηⱼ ∈ [10⁻⁴, 10⁻¹], μⱼ ∈ [0, 1], λⱼ ∈ [0, 0.1] and does not publish the values; see
//! [`SgdSchedule::default`] for the ones used here and why.

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer as _;
use serde::{Deserialize, Serialize};
use siamese_model::SiameseNet;

use crate::TrainError;
use crate::optim::{Adam, AdamConfig, OptimizerState, SgdHyper, SgdMomentum};

/// `lr₀ × decay^epoch`: Koch's per-epoch decay (decay 0.99).
pub fn lr_at(lr0: f64, decay: f64, epoch: u64) -> f64 {
    lr0 * decay.powf(epoch as f64)
}

/// Momentum in epoch `epoch` (0-based): `start` in epoch 0, rising linearly each epoch
/// to `target`, reached at epoch `ramp_epochs` and kept from then on. A ramp of 0
/// epochs means `target` from the start.
pub fn momentum_at(start: f64, target: f64, ramp_epochs: u64, epoch: u64) -> f64 {
    if ramp_epochs == 0 || epoch >= ramp_epochs {
        target
    } else {
        start + (target - start) * epoch as f64 / ramp_epochs as f64
    }
}

/// The layer a parameter belongs to: `tower.conv2.weight` → `conv2`,
/// `tower.fc.bias` → `fc`, `head.weight` → `head`.
pub fn layer_of(param_name: &str) -> &str {
    let rest = param_name.strip_prefix("tower.").unwrap_or(param_name);
    rest.split('.').next().unwrap_or(rest)
}

/// Koch's layer-wise SGD: each layer `j` has its final hyper-parameters (ηⱼ, μⱼ, λⱼ);
/// in epoch `T` it trains with `ηⱼ × lr_decay^T`, momentum [`momentum_at`]`(
/// momentum_start, μⱼ, momentum_ramp_epochs, T)` and L2 weight λⱼ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgdSchedule {
    /// Factor applied to every learning rate each epoch (Koch: 0.99).
    pub lr_decay: f64,
    /// Momentum of every layer in the first epoch (Koch: 0.5).
    pub momentum_start: f64,
    /// Epochs over which the momentum rises linearly from `momentum_start` to each
    /// layer's μⱼ (the paper does not say; 20 here).
    pub momentum_ramp_epochs: u64,
    /// ηⱼ (`lr`), μⱼ (`momentum`, the final value) and λⱼ (`weight_decay`) by layer
    /// name: `conv1`...`conv4`, `fc`, `head`. Entries of layers the architecture lacks
    /// (`conv4` for koch35) are ignored; a layer without an entry is an error.
    pub layers: BTreeMap<String, SgdHyper>,
}

/// The learning rate of every layer in [`SgdSchedule::default`].
pub const DEFAULT_SGD_LR: f64 = 1e-3;
/// The final momentum μⱼ of every layer in [`SgdSchedule::default`].
pub const DEFAULT_SGD_MOMENTUM: f64 = 0.9;
/// The L2 weight λⱼ of the convolutional layers in [`SgdSchedule::default`].
pub const DEFAULT_SGD_CONV_L2: f64 = 2e-2;
/// The L2 weight λⱼ of the 4096-unit layer in [`SgdSchedule::default`].
pub const DEFAULT_SGD_FC_L2: f64 = 2e-4;

impl Default for SgdSchedule {
    /// Koch's schedule (decay 0.99 per epoch, momentum from 0.5) with per-layer values
    /// chosen here, since the paper's are unpublished:
    ///
    /// * ηⱼ = 10⁻³ in every layer, μⱼ = 0.9 in every layer, and λⱼ = 2·10⁻² for the
    ///   convolutions, 2·10⁻⁴ for the 4096-unit layer, 0 for the head. These follow
    ///   the best-known public Keras reimplementation of the paper's layer-wise SGD
    ///   (tensorfreitas, "Siamese-Networks-for-One-Shot-Learning": lr 10⁻³, final
    ///   momentum 0.9, Keras `l2(1e-2)` on the convolutions and `l2(1e-4)` on the dense
    ///   layer; Keras adds `c‖w‖²` to the loss, hence λ = 2c here), all inside the
    ///   paper's search ranges. The head (one weight per feature) is not
    ///   regularised: shrinking it only flattens the logits.
    /// * The ramp to μⱼ takes 20 epochs, Koch's early-stopping patience, so that the
    ///   momentum is at its final value before the first decision to stop could be
    ///   made.
    ///
    /// Not tuned on this implementation yet; every value is a config field and a flag.
    fn default() -> Self {
        let conv = SgdHyper {
            lr: DEFAULT_SGD_LR,
            momentum: DEFAULT_SGD_MOMENTUM,
            weight_decay: DEFAULT_SGD_CONV_L2,
        };
        let mut layers = BTreeMap::new();
        for name in ["conv1", "conv2", "conv3", "conv4"] {
            layers.insert(name.to_string(), conv);
        }
        layers.insert(
            "fc".into(),
            SgdHyper {
                weight_decay: DEFAULT_SGD_FC_L2,
                ..conv
            },
        );
        layers.insert(
            "head".into(),
            SgdHyper {
                weight_decay: 0.0,
                ..conv
            },
        );
        SgdSchedule {
            lr_decay: 0.99,
            momentum_start: 0.5,
            momentum_ramp_epochs: 20,
            layers,
        }
    }
}

impl SgdSchedule {
    /// The hyper-parameters of a layer whose final values are `last`, in `epoch`.
    pub fn at(&self, last: &SgdHyper, epoch: u64) -> SgdHyper {
        SgdHyper {
            lr: lr_at(last.lr, self.lr_decay, epoch),
            momentum: momentum_at(
                self.momentum_start,
                last.momentum,
                self.momentum_ramp_epochs,
                epoch,
            ),
            weight_decay: last.weight_decay,
        }
    }

    /// The final hyper-parameters of the layer of `param_name`.
    pub fn layer(&self, param_name: &str) -> Result<&SgdHyper, TrainError> {
        let layer = layer_of(param_name);
        self.layers.get(layer).ok_or_else(|| {
            TrainError::Config(format!(
                "train.optimizer.sgd.layers has no entry for layer {layer:?} (of parameter \
                 {param_name})"
            ))
        })
    }

    fn check(&self, at: &str) -> Result<(), String> {
        let decay_ok = self.lr_decay > 0.0 && self.lr_decay.is_finite();
        if !decay_ok || !(0.0..1.0).contains(&self.momentum_start) {
            return Err(format!(
                "{at}: lr_decay must be positive and momentum_start in [0, 1)"
            ));
        }
        let non_negative = |x: f64| x >= 0.0 && x.is_finite();
        for (name, h) in &self.layers {
            if !non_negative(h.lr)
                || !(0.0..1.0).contains(&h.momentum)
                || !non_negative(h.weight_decay)
            {
                return Err(format!(
                    "{at}.layers.{name}: lr and weight_decay must be finite and non-negative, \
                     momentum in [0, 1) (got {h:?})"
                ));
            }
        }
        Ok(())
    }
}

/// Adam's settings in a run: [`AdamConfig`] without weight decay, plus a per-epoch
/// learning-rate decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamSettings {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Factor applied to the learning rate each epoch (1 = constant).
    pub lr_decay: f64,
}

impl Default for AdamSettings {
    /// The PyTorch reference's Adam: lr 6·10⁻⁵, PyTorch's betas and epsilon, no decay.
    fn default() -> Self {
        let c = AdamConfig::default();
        AdamSettings {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            lr_decay: 1.0,
        }
    }
}

/// AdamW's settings: Adam's plus the decoupled weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamwSettings {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `w ← w − lr × weight_decay × w` each step.
    pub weight_decay: f64,
    /// Factor applied to the learning rate each epoch (1 = constant).
    pub lr_decay: f64,
}

impl Default for AdamwSettings {
    /// [`AdamSettings::default`] with PyTorch's AdamW decay, 0.01.
    fn default() -> Self {
        AdamwSettings::from_adam(AdamSettings::default(), 0.01)
    }
}

impl AdamwSettings {
    pub fn from_adam(a: AdamSettings, weight_decay: f64) -> Self {
        AdamwSettings {
            lr: a.lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay,
            lr_decay: a.lr_decay,
        }
    }

    /// The settings without the weight decay.
    pub fn adam(&self) -> AdamSettings {
        AdamSettings {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            lr_decay: self.lr_decay,
        }
    }
}

impl AdamSettings {
    fn check(&self, at: &str) -> Result<(), String> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(self.lr) || !positive(self.lr_decay) || !positive(self.eps) {
            return Err(format!("{at}: lr, eps and lr_decay must be positive"));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(format!("{at}: beta1 and beta2 must be in [0, 1)"));
        }
        Ok(())
    }
}

/// The optimizer of a run with its settings.
///
/// In configuration files a one-key table: `{"adam": {"lr": 0.001}}`, `{"adamw":
/// {"lr": 0.001, "weight_decay": 0.01}}` or `{"sgd": {...}}` (fields left out take
/// their defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Koch's layer-wise SGD with momentum and L2 ([`SgdSchedule`]).
    Sgd(SgdSchedule),
    /// Adam, no weight decay.
    Adam(AdamSettings),
    /// AdamW (Adam with decoupled weight decay).
    Adamw(AdamwSettings),
}

impl Optimizer {
    pub const NAMES: [&'static str; 3] = ["sgd", "adam", "adamw"];

    /// `sgd`, `adam` or `adamw`: the configuration's key, recorded in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::Adam(_) => "adam",
            Optimizer::Adamw(_) => "adamw",
        }
    }

    /// This optimizer as the one named `name`: itself when it is that one already;
    /// Adam and AdamW keep their common settings (AdamW with PyTorch's decay, 0.01);
    /// otherwise the named one's defaults.
    pub fn switched_to(&self, name: &str) -> Result<Optimizer, String> {
        Ok(match (self, name) {
            (o, n) if o.name() == n => o.clone(),
            (Optimizer::Adamw(w), "adam") => Optimizer::Adam(w.adam()),
            (Optimizer::Adam(a), "adamw") => Optimizer::Adamw(AdamwSettings::from_adam(
                *a,
                AdamwSettings::default().weight_decay,
            )),
            (_, "sgd") => Optimizer::Sgd(SgdSchedule::default()),
            (_, "adam") => Optimizer::Adam(AdamSettings::default()),
            (_, "adamw") => Optimizer::Adamw(AdamwSettings::default()),
            _ => {
                return Err(format!(
                    "unknown optimizer {name:?}: expected {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }

    /// Sets the learning rate: Adam's, or every layer's ηⱼ for SGD.
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Optimizer::Sgd(s) => s.layers.values_mut().for_each(|h| h.lr = lr),
            Optimizer::Adam(a) => a.lr = lr,
            Optimizer::Adamw(w) => w.lr = lr,
        }
    }

    /// Checks the values (the layers of SGD against `param_names`); the message
    /// names the field.
    pub fn validate(&self, param_names: &[String]) -> Result<(), TrainError> {
        let at = format!("train.optimizer.{}", self.name());
        let check = match self {
            Optimizer::Sgd(s) => {
                for name in param_names {
                    s.layer(name)?;
                }
                s.check(&at)
            }
            Optimizer::Adam(a) => a.check(&at),
            Optimizer::Adamw(w) => w.adam().check(&at).and_then(|()| {
                if w.weight_decay >= 0.0 && w.weight_decay.is_finite() {
                    Ok(())
                } else {
                    Err(format!("{at}.weight_decay must be ≥ 0"))
                }
            }),
        };
        check.map_err(TrainError::Config)
    }
}

/// A multiplier of the learning rate by step, over the optimizer's own per-epoch
/// schedule (Koch's decay, Adam's `lr_decay`).
///
/// In configuration files `"constant"`, or a table:
/// `{"step": {"every": 6000, "factor": 0.5, "warmup": 0}}` (×0.5 every 6,000 steps),
/// `{"cosine": {"steps": 30000, "min_factor": 0.01, "warmup": 500}}` (`"steps": null`
/// or left out: over the run's `train.max_steps`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Always 1.
    #[default]
    Constant,
    /// `factor^⌊step / every⌋` (step decay; 0.5: halving).
    Step {
        every: u64,
        factor: f64,
        /// Linear warm-up over the first steps (0: none).
        #[serde(default)]
        warmup: u64,
    },
    /// Half a cosine from 1 to `min_factor` over `steps` steps, then `min_factor`.
    Cosine {
        /// `None`: the run's `train.max_steps`, so that the cosine follows the budget.
        #[serde(default)]
        steps: Option<u64>,
        min_factor: f64,
        /// Linear warm-up over the first steps (0: none).
        #[serde(default)]
        warmup: u64,
    },
}

impl LrSchedule {
    /// The multiplier at `step` (0-based) of a run of at most `run_steps` steps (a
    /// cosine without its own length spans them): a function of the step alone, so
    /// that a resumed run gets the same values.
    pub fn factor(&self, step: u64, run_steps: Option<u64>) -> f64 {
        let (warmup, decayed) = match *self {
            LrSchedule::Constant => (0, 1.0),
            LrSchedule::Step {
                every,
                factor,
                warmup,
            } => (warmup, factor.powf((step / every.max(1)) as f64)),
            LrSchedule::Cosine {
                steps,
                min_factor,
                warmup,
            } => {
                let steps = steps.or(run_steps).unwrap_or(u64::MAX);
                let t = (step.min(steps) as f64) / (steps.max(1) as f64);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (warmup, min_factor + (1.0 - min_factor) * cos)
            }
        };
        if step < warmup {
            decayed * (step + 1) as f64 / warmup as f64
        } else {
            decayed
        }
    }

    /// Checks the values against a run of at most `run_steps` steps; the message
    /// names the field.
    pub fn validate(&self, run_steps: Option<u64>) -> Result<(), String> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every, factor, .. } => {
                if every == 0 || !(factor > 0.0 && factor.is_finite()) {
                    Err("train.lr_schedule.step: every must be ≥ 1 and factor positive".into())
                } else {
                    Ok(())
                }
            }
            LrSchedule::Cosine { steps: None, .. } if run_steps.is_none() => Err(
                "train.lr_schedule.cosine.steps is required when train.max_steps is not set \
                 (the cosine spans it otherwise)"
                    .into(),
            ),
            LrSchedule::Cosine {
                steps, min_factor, ..
            } => {
                if steps == Some(0) || !(0.0..=1.0).contains(&min_factor) {
                    Err(
                        "train.lr_schedule.cosine: steps must be ≥ 1 and min_factor in [0, 1]"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The optimizer of a run, over the network's variables, with its schedule.
#[derive(Debug)]
pub enum RunOptimizer {
    Sgd {
        opt: SgdMomentum,
        schedule: SgdSchedule,
        /// The final hyper-parameters of each variable, in the optimizer's order.
        last: Vec<SgdHyper>,
    },
    /// Adam or AdamW (`name`), which differ only in the decoupled weight decay.
    Adam {
        opt: Adam,
        name: &'static str,
        base_lr: f64,
        lr_decay: f64,
    },
}

impl RunOptimizer {
    /// `optimizer` over the parameters of `net`, which must be the `Var`s of `varmap`
    /// (as [`SiameseNet::init`] and [`SiameseNet::load_trainable`] make them).
    pub fn new(
        optimizer: &Optimizer,
        net: &SiameseNet,
        varmap: &candle_nn::VarMap,
    ) -> Result<Self, TrainError> {
        let vars = named_vars(net, varmap)?;
        let (adam, decay) = match optimizer {
            Optimizer::Sgd(sgd) => {
                let mut last = Vec::with_capacity(vars.len());
                let mut params = Vec::with_capacity(vars.len());
                for (name, var) in vars {
                    let h = *sgd.layer(&name)?;
                    last.push(h);
                    params.push((var, sgd.at(&h, 0)));
                }
                return Ok(RunOptimizer::Sgd {
                    opt: SgdMomentum::with_hypers(params)?,
                    schedule: sgd.clone(),
                    last,
                });
            }
            Optimizer::Adam(a) => (*a, 0.0),
            Optimizer::Adamw(w) => (w.adam(), w.weight_decay),
        };
        let config = AdamConfig {
            lr: adam.lr,
            beta1: adam.beta1,
            beta2: adam.beta2,
            eps: adam.eps,
            decoupled_weight_decay: decay,
        };
        Ok(RunOptimizer::Adam {
            opt: Adam::new(vars.into_iter().map(|(_, v)| v).collect(), config)?,
            name: optimizer.name(),
            base_lr: adam.lr,
            lr_decay: adam.lr_decay,
        })
    }

    /// Sets the hyper-parameters of `epoch` (learning-rate decay, momentum ramp).
    /// A function of the epoch only, so a resumed run gets the same values.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.set_position(epoch, 1.0);
    }

    /// [`set_epoch`](Self::set_epoch), with every learning rate multiplied by
    /// `lr_factor` (an [`LrSchedule::factor`]).
    pub fn set_position(&mut self, epoch: u64, lr_factor: f64) {
        match self {
            RunOptimizer::Sgd {
                opt,
                schedule,
                last,
            } => {
                for (h, l) in opt.hypers_mut().zip(last.iter()) {
                    *h = schedule.at(l, epoch);
                    h.lr *= lr_factor;
                }
            }
            RunOptimizer::Adam {
                opt,
                base_lr,
                lr_decay,
                ..
            } => opt.set_learning_rate(lr_at(*base_lr, *lr_decay, epoch) * lr_factor),
        }
    }

    /// One update from the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), TrainError> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<(), TrainError> {
        match self {
            RunOptimizer::Sgd { opt, .. } => opt.step(grads)?,
            RunOptimizer::Adam { opt, .. } => opt.step(grads)?,
        }
        Ok(())
    }

    /// The learning rate of the first parameter (conv1's, for SGD).
    pub fn learning_rate(&self) -> f64 {
        match self {
            RunOptimizer::Sgd { opt, .. } => opt.learning_rate(),
            RunOptimizer::Adam { opt, .. } => opt.learning_rate(),
        }
    }

    /// The momentum of the first parameter (SGD only).
    pub fn momentum(&self) -> Option<f64> {
        match self {
            RunOptimizer::Sgd { opt, .. } => opt.hypers().next().map(|h| h.momentum),
            RunOptimizer::Adam { .. } => None,
        }
    }

    /// `sgd`, `adam` or `adamw` ([`Optimizer::name`], recorded in checkpoints).
    pub fn name(&self) -> &'static str {
        match self {
            RunOptimizer::Sgd { .. } => "sgd",
            RunOptimizer::Adam { name, .. } => name,
        }
    }

    /// Whether a checkpoint that records optimizer `saved` can resume into this one.
    /// Checkpoints written before AdamW had a name of its own record it as `adam`.
    pub fn resumes_from(&self, saved: &str) -> bool {
        saved == self.name() || (saved == "adam" && self.name() == "adamw")
    }

    pub fn state(&self) -> Result<OptimizerState, TrainError> {
        Ok(match self {
            RunOptimizer::Sgd { opt, .. } => opt.state()?,
            RunOptimizer::Adam { opt, .. } => opt.state()?,
        })
    }

    pub fn load_state(&mut self, state: &OptimizerState) -> Result<(), TrainError> {
        match self {
            RunOptimizer::Sgd { opt, .. } => opt.load_state(state)?,
            RunOptimizer::Adam { opt, .. } => opt.load_state(state)?,
        }
        Ok(())
    }
}

/// The network's parameters as the `Var`s of `varmap`, in the network's order.
fn named_vars(
    net: &SiameseNet,
    varmap: &candle_nn::VarMap,
) -> Result<Vec<(String, Var)>, TrainError> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let by_name: HashMap<&str, &Var> = data.iter().map(|(k, v)| (k.as_str(), v)).collect();
    net.named_tensors()
        .iter()
        .map(|(name, _)| {
            by_name
                .get(name.as_str())
                .map(|v| (name.clone(), (*v).clone()))
                .ok_or_else(|| TrainError::Config(format!("the network's {name} is not trainable")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_decays_one_percent_per_epoch() {
        assert_eq!(lr_at(0.1, 0.99, 0), 0.1);
        assert!((lr_at(0.1, 0.99, 1) - 0.099).abs() < 1e-15);
        assert!((lr_at(0.1, 0.99, 10) - 0.1 * 0.99f64.powi(10)).abs() < 1e-15);
        assert_eq!(lr_at(6e-5, 1.0, 50), 6e-5);
    }

    #[test]
    fn momentum_ramps_linearly_then_holds() {
        assert_eq!(momentum_at(0.5, 0.9, 20, 0), 0.5);
        assert!((momentum_at(0.5, 0.9, 20, 10) - 0.7).abs() < 1e-12);
        assert!((momentum_at(0.5, 0.9, 20, 19) - 0.88).abs() < 1e-12);
        assert_eq!(momentum_at(0.5, 0.9, 20, 20), 0.9);
        assert_eq!(momentum_at(0.5, 0.9, 20, 500), 0.9);
        assert_eq!(momentum_at(0.5, 0.9, 0, 0), 0.9);
    }

    #[test]
    fn lr_schedules_by_step() {
        assert_eq!(LrSchedule::Constant.factor(12345, None), 1.0);
        let step = LrSchedule::Step {
            every: 100,
            factor: 0.5,
            warmup: 0,
        };
        assert_eq!(
            [0, 99, 100, 250].map(|s| step.factor(s, None)),
            [1.0, 1.0, 0.5, 0.25]
        );
        let warm = LrSchedule::Step {
            every: 100,
            factor: 0.5,
            warmup: 4,
        };
        assert_eq!(
            [0, 1, 3, 4].map(|s| warm.factor(s, None)),
            [0.25, 0.5, 1.0, 1.0]
        );
        let cos = LrSchedule::Cosine {
            steps: Some(100),
            min_factor: 0.1,
            warmup: 0,
        };
        // Its own length wins over the run's.
        assert_eq!(cos.factor(0, Some(7)), 1.0);
        assert!((cos.factor(50, Some(7)) - 0.55).abs() < 1e-12);
        assert!((cos.factor(100, None) - 0.1).abs() < 1e-12);
        assert!((cos.factor(1000, None) - 0.1).abs() < 1e-12);
        // Without one it spans the run; without either it is refused.
        let over_run = LrSchedule::Cosine {
            steps: None,
            min_factor: 0.1,
            warmup: 0,
        };
        assert!((over_run.factor(50, Some(100)) - 0.55).abs() < 1e-12);
        assert!((over_run.factor(100, Some(100)) - 0.1).abs() < 1e-12);
        assert!(over_run.validate(Some(100)).is_ok());
        let err = over_run.validate(None).unwrap_err();
        assert!(err.contains("train.max_steps"), "{err}");
        assert!(
            LrSchedule::Step {
                every: 0,
                factor: 0.5,
                warmup: 0
            }
            .validate(None)
            .is_err()
        );
        let text = r#"{"cosine": {"min_factor": 0.02}}"#;
        let parsed: LrSchedule = serde_json::from_str(text).unwrap();
        assert_eq!(
            parsed,
            LrSchedule::Cosine {
                steps: None,
                min_factor: 0.02,
                warmup: 0
            }
        );
        let text = r#"{"step": {"every": 6000, "factor": 0.5}}"#;
        let parsed: LrSchedule = serde_json::from_str(text).unwrap();
        assert_eq!(
            parsed,
            LrSchedule::Step {
                every: 6000,
                factor: 0.5,
                warmup: 0
            }
        );
    }

    #[test]
    fn schedule_applies_per_layer() {
        let s = SgdSchedule::default();
        let conv = *s.layer("tower.conv3.weight").unwrap();
        let head = *s.layer("head.bias").unwrap();
        assert_eq!(head.weight_decay, 0.0);
        let e5 = s.at(&conv, 5);
        assert!((e5.lr - DEFAULT_SGD_LR * 0.99f64.powi(5)).abs() < 1e-15);
        assert!((e5.momentum - 0.6).abs() < 1e-12);
        assert_eq!(e5.weight_decay, DEFAULT_SGD_CONV_L2);
        assert_eq!(layer_of("tower.fc.weight"), "fc");
        let mut missing = s.clone();
        missing.layers.remove("fc");
        let err = missing.layer("tower.fc.bias").unwrap_err().to_string();
        assert!(err.contains("\"fc\""), "{err}");
    }

    #[test]
    fn optimizers_are_named_by_their_kind() {
        use siamese_model::{ModelConfig, SiameseNet};
        let device = candle_core::Device::Cpu;
        let config = ModelConfig::new(siamese_model::Arch::Koch35);
        let (net, varmap) = SiameseNet::init(config, 0, &device).unwrap();
        let all = [
            Optimizer::Sgd(SgdSchedule::default()),
            Optimizer::Adam(AdamSettings::default()),
            Optimizer::Adamw(AdamwSettings::default()),
        ];
        for optimizer in &all {
            let opt = RunOptimizer::new(optimizer, &net, &varmap).unwrap();
            assert_eq!(opt.name(), optimizer.name());
            assert!(opt.resumes_from(optimizer.name()));
        }
        let adamw = RunOptimizer::new(&all[2], &net, &varmap).unwrap();
        // Checkpoints from before AdamW had its own name.
        assert!(adamw.resumes_from("adam"));
        assert!(!adamw.resumes_from("sgd"));
        let plain = RunOptimizer::new(&all[1], &net, &varmap).unwrap();
        assert!(!plain.resumes_from("adamw"));
    }

    #[test]
    fn switching_optimizers_keeps_what_they_share() {
        let adam = Optimizer::Adam(AdamSettings {
            lr: 1e-3,
            ..AdamSettings::default()
        });
        let Optimizer::Adamw(w) = adam.switched_to("adamw").unwrap() else {
            panic!("not adamw")
        };
        assert_eq!((w.lr, w.weight_decay), (1e-3, 0.01));
        assert_eq!(
            Optimizer::Adamw(w).switched_to("adam").unwrap(),
            adam.clone()
        );
        assert_eq!(adam.switched_to("adam").unwrap(), adam);
        assert_eq!(
            adam.switched_to("sgd").unwrap(),
            Optimizer::Sgd(SgdSchedule::default())
        );
        assert!(adam.switched_to("rmsprop").unwrap_err().contains("rmsprop"));
        let mut sgd = Optimizer::Sgd(SgdSchedule::default());
        sgd.set_lr(0.05);
        let Optimizer::Sgd(s) = &sgd else { panic!() };
        assert!(s.layers.values().all(|h| h.lr == 0.05));
        // A wrong value is named by its path.
        let bad = Optimizer::Adamw(AdamwSettings {
            weight_decay: -1.0,
            ..AdamwSettings::default()
        });
        let err = bad.validate(&[]).unwrap_err().to_string();
        assert!(err.contains("train.optimizer.adamw.weight_decay"), "{err}");
        let err = sgd
            .validate(&["tower.conv9.weight".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv9"), "{err}");
    }
}
