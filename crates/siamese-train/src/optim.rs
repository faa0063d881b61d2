//! Optimizers with per-parameter hyper-parameters and saveable state: SGD with
//! momentum and L2 weight decay (Koch et al.'s layer-wise regime) and Adam / AdamW.
//!
//! Both implement candle-nn's [`Optimizer`]. On the CPU, the update of each parameter
//! runs as one in-place pass over its values (a candle in-place custom op) instead of
//! candle's chain of tensor operations, each of which would allocate a new tensor the
//! size of the parameter (the Koch network's fully connected layer alone holds 37.7M
//! weights); the state (velocities, moments) lives in host vectors. On other devices
//! (CUDA, Metal) the state is tensors on the parameter's device and the same update
//! runs as tensor operations there, written back with [`Var::set`]: nothing crosses
//! to the host during training, only when a checkpoint takes the state.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Result, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of SGD for one parameter tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdHyper {
    pub lr: f64,
    pub momentum: f64,
    /// L2 weight: the gradient gets `weight_decay × w` added (the gradient of
    /// `weight_decay / 2 × ‖w‖²` in the loss).
    pub weight_decay: f64,
}

/// SGD with classical momentum: `v ← μ v − η (g + λ w)`, `w ← w + v`.
#[derive(Debug)]
pub struct SgdMomentum {
    params: Vec<SgdParam>,
}

#[derive(Debug)]
struct SgdParam {
    var: Var,
    hyper: SgdHyper,
    /// The velocity.
    velocity: Slots,
}

/// A parameter's optimizer state: one or more vectors of the parameter's size.
#[derive(Debug)]
enum Slots {
    /// Host vectors, updated in place together with CPU weights.
    Host(Vec<Vec<f32>>),
    /// Tensors on the parameter's (non-CPU) device.
    Device(Vec<Tensor>),
}

impl Slots {
    /// `count` zero vectors for `var`: on the host for a CPU parameter, else on its
    /// device (`force_device` puts them on the device anyway, for tests on the CPU).
    fn zeros(var: &Var, count: usize, force_device: bool) -> Result<Self> {
        if var.device().is_cpu() && !force_device {
            Ok(Slots::Host(vec![vec![0.0; var.elem_count()]; count]))
        } else {
            let zeros = (0..count)
                .map(|_| Tensor::zeros(var.shape(), DType::F32, var.device()))
                .collect::<Result<_>>()?;
            Ok(Slots::Device(zeros))
        }
    }

    /// Slot `i` as a CPU tensor of the parameter's shape, for a checkpoint.
    fn to_cpu_tensor(&self, i: usize, var: &Var) -> Result<Tensor> {
        match self {
            Slots::Host(v) => Tensor::from_slice(&v[i], var.shape(), &Device::Cpu),
            Slots::Device(t) => t[i].to_device(&Device::Cpu),
        }
    }

    /// Replaces slot `i` by the state's tensor `name`.
    fn load(&mut self, i: usize, state: &OptimizerState, name: &str, var: &Var) -> Result<()> {
        let values = state_vec(state, name, var.elem_count())?;
        match self {
            Slots::Host(v) => v[i] = values,
            Slots::Device(t) => t[i] = Tensor::from_vec(values, var.shape(), var.device())?,
        }
        Ok(())
    }
}

impl SgdMomentum {
    /// An optimizer with its own hyper-parameters for each variable.
    pub fn with_hypers(params: Vec<(Var, SgdHyper)>) -> Result<Self> {
        Self::build(params, false)
    }

    fn build(params: Vec<(Var, SgdHyper)>, force_device: bool) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(var, hyper)| {
                check_f32(&var)?;
                Ok(SgdParam {
                    velocity: Slots::zeros(&var, 1, force_device)?,
                    var,
                    hyper,
                })
            })
            .collect::<Result<_>>()?;
        Ok(SgdMomentum { params })
    }

    /// The hyper-parameters of every variable, in order; the schedule edits them
    /// between epochs.
    pub fn hypers_mut(&mut self) -> impl Iterator<Item = &mut SgdHyper> {
        self.params.iter_mut().map(|p| &mut p.hyper)
    }

    pub fn hypers(&self) -> impl Iterator<Item = &SgdHyper> {
        self.params.iter().map(|p| &p.hyper)
    }

    /// The optimizer's state (velocities and hyper-parameters), for checkpoints.
    pub fn state(&self) -> Result<OptimizerState> {
        let mut tensors = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            tensors.insert(
                format!("{i}.velocity"),
                p.velocity.to_cpu_tensor(0, &p.var)?,
            );
        }
        Ok(OptimizerState {
            step: 0,
            hypers: serde_json::to_value(self.hypers().collect::<Vec<_>>())
                .map_err(candle_core::Error::wrap)?,
            tensors,
        })
    }

    /// Restores a state taken by [`Self::state`] from an optimizer over the same
    /// variables.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let hypers: Vec<SgdHyper> =
            serde_json::from_value(state.hypers.clone()).map_err(candle_core::Error::wrap)?;
        if hypers.len() != self.params.len() {
            candle_core::bail!(
                "optimizer state holds {} parameters, the model has {}",
                hypers.len(),
                self.params.len()
            );
        }
        for (i, (p, h)) in self.params.iter_mut().zip(hypers).enumerate() {
            p.hyper = h;
            p.velocity
                .load(0, state, &format!("{i}.velocity"), &p.var)?;
        }
        Ok(())
    }
}

impl Optimizer for SgdMomentum {
    type Config = SgdHyper;

    fn new(vars: Vec<Var>, config: SgdHyper) -> Result<Self> {
        Self::with_hypers(vars.into_iter().map(|v| (v, config)).collect())
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            let h = p.hyper;
            let (lr, mu, wd) = (h.lr as f32, h.momentum as f32, h.weight_decay as f32);
            match &mut p.velocity {
                Slots::Host(slots) => {
                    let mut state: Vec<&mut Vec<f32>> = slots.iter_mut().collect();
                    update_in_place(&p.var, g, &mut state, |w, g, state| {
                        let v = &mut *state[0];
                        for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                            *v = mu * *v - lr * (g + wd * *w);
                            *w += *v;
                        }
                    })?;
                }
                Slots::Device(slots) => {
                    let (w, g) = detached(&p.var, g)?;
                    // v ← μ v − η (g + λ w), w ← w + v
                    let g = if h.weight_decay != 0.0 {
                        (g + w.affine(h.weight_decay, 0.0)?)?
                    } else {
                        g
                    };
                    let v = (slots[0].affine(h.momentum, 0.0)? - g.affine(h.lr, 0.0)?)?;
                    p.var.set(&(w + &v)?)?;
                    slots[0] = v;
                }
            }
        }
        Ok(())
    }

    /// The learning rate of the first parameter (they differ per layer).
    fn learning_rate(&self) -> f64 {
        self.params.first().map_or(0.0, |p| p.hyper.lr)
    }

    /// Sets every parameter's learning rate.
    fn set_learning_rate(&mut self, lr: f64) {
        for h in self.hypers_mut() {
            h.lr = lr;
        }
    }
}

/// Adam's hyper-parameters; `decoupled_weight_decay` > 0 makes it AdamW.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// AdamW's decoupled decay: `w ← w − lr × decay × w` each step.
    pub decoupled_weight_decay: f64,
}

impl Default for AdamConfig {
    /// The PyTorch reference's Adam: lr 6e-5, PyTorch's betas and epsilon, no decay.
    fn default() -> Self {
        AdamConfig {
            lr: 6e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled_weight_decay: 0.0,
        }
    }
}

/// Adam (Kingma & Ba) with bias correction, and AdamW's decoupled weight decay, as
/// PyTorch computes them.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    step: u64,
    params: Vec<AdamParam>,
}

#[derive(Debug)]
struct AdamParam {
    var: Var,
    /// The first and second moments.
    moments: Slots,
}

impl Adam {
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    fn build(vars: Vec<Var>, config: AdamConfig, force_device: bool) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|var| {
                check_f32(&var)?;
                Ok(AdamParam {
                    moments: Slots::zeros(&var, 2, force_device)?,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Adam {
            config,
            step: 0,
            params,
        })
    }

    /// The optimizer's state (moments, step count, configuration), for checkpoints.
    pub fn state(&self) -> Result<OptimizerState> {
        let mut tensors = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            tensors.insert(format!("{i}.m"), p.moments.to_cpu_tensor(0, &p.var)?);
            tensors.insert(format!("{i}.v"), p.moments.to_cpu_tensor(1, &p.var)?);
        }
        Ok(OptimizerState {
            step: self.step,
            hypers: serde_json::to_value(self.config).map_err(candle_core::Error::wrap)?,
            tensors,
        })
    }

    /// Restores a state taken by [`Self::state`] from an optimizer over the same
    /// variables.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.config =
            serde_json::from_value(state.hypers.clone()).map_err(candle_core::Error::wrap)?;
        self.step = state.step;
        for (i, p) in self.params.iter_mut().enumerate() {
            p.moments.load(0, state, &format!("{i}.m"), &p.var)?;
            p.moments.load(1, state, &format!("{i}.v"), &p.var)?;
        }
        Ok(())
    }
}

impl Optimizer for Adam {
    type Config = AdamConfig;

    fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        Self::build(vars, config, false)
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        // PyTorch's formulation: w ← w − (lr / bias1) · m / (√v / √bias2 + eps).
        let step_size = (c.lr / bias1) as f32;
        let inv_bias2_sqrt = (1.0 / bias2_sqrt) as f32;
        let eps = c.eps as f32;
        let decay = (1.0 - c.lr * c.decoupled_weight_decay) as f32;
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            match &mut p.moments {
                Slots::Host(slots) => {
                    let mut state: Vec<&mut Vec<f32>> = slots.iter_mut().collect();
                    update_in_place(&p.var, g, &mut state, |w, g, state| {
                        let [m, v] = state else {
                            unreachable!("two state vectors")
                        };
                        for (((w, &g), m), v) in
                            w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                        {
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            *w = *w * decay - step_size * *m / (v.sqrt() * inv_bias2_sqrt + eps);
                        }
                    })?;
                }
                Slots::Device(slots) => {
                    let (w, g) = detached(&p.var, g)?;
                    let m = (slots[0].affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
                    let v =
                        (slots[1].affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
                    let denom = v
                        .sqrt()?
                        .affine(f64::from(inv_bias2_sqrt), f64::from(eps))?;
                    let update = (m.affine(f64::from(step_size), 0.0)? / denom)?;
                    let w = if c.decoupled_weight_decay != 0.0 {
                        w.affine(f64::from(decay), 0.0)?
                    } else {
                        w
                    };
                    p.var.set(&(w - update)?)?;
                    slots[0] = m;
                    slots[1] = v;
                }
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}

/// What a checkpoint keeps of an optimizer: tensors (moments, velocities) by name,
/// the step count and the hyper-parameters as JSON.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    pub step: u64,
    pub hypers: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
}

fn state_vec(state: &OptimizerState, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = state
        .tensors
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {name}")))?;
    let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    if v.len() != len {
        candle_core::bail!(
            "optimizer state {name} holds {} values, the parameter {len}",
            v.len()
        );
    }
    Ok(v)
}

fn check_f32(var: &Var) -> Result<()> {
    if var.dtype() != DType::F32 {
        candle_core::bail!(
            "the optimizers keep f32 state; got a {:?} parameter",
            var.dtype()
        );
    }
    Ok(())
}

/// The weights and the gradient of a parameter as f32 tensors outside the autograd
/// graph, for updates by tensor operations (whose results must not hold on to the
/// previous steps' tensors).
fn detached(var: &Var, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    if grad.dims() != var.dims() {
        candle_core::bail!(
            "gradient shape {:?} does not match parameter {:?}",
            grad.dims(),
            var.dims()
        );
    }
    Ok((
        var.as_tensor().detach(),
        grad.to_dtype(DType::F32)?.detach(),
    ))
}

/// Runs `update(weights, grads, state)` over a CPU parameter's values in place, inside
/// candle's storage.
fn update_in_place(
    var: &Var,
    grad: &Tensor,
    state: &mut [&mut Vec<f32>],
    update: impl Fn(&mut [f32], &[f32], &mut [&mut Vec<f32>]),
) -> Result<()> {
    if grad.dims() != var.dims() {
        candle_core::bail!(
            "gradient shape {:?} does not match parameter {:?}",
            grad.dims(),
            var.dims()
        );
    }
    if !(var.device().is_cpu() && var.is_contiguous()) {
        candle_core::bail!(
            "in-place optimizer update of a {} parameter (only contiguous CPU ones)",
            if var.device().is_cpu() {
                "non-contiguous"
            } else {
                "non-CPU"
            }
        );
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let op = InPlaceUpdate {
        state: RefCell::new(state),
        update: &update,
    };
    var.as_tensor().inplace_op2(&grad, &op)
}

/// The in-place custom op behind [`update_in_place`].
struct InPlaceUpdate<'a, 'b, F> {
    state: RefCell<&'a mut [&'b mut Vec<f32>]>,
    update: &'a F,
}

impl<F: Fn(&mut [f32], &[f32], &mut [&mut Vec<f32>])> InplaceOp2 for InPlaceUpdate<'_, '_, F> {
    fn name(&self) -> &'static str {
        "optimizer-update"
    }

    fn cpu_fwd(&self, w: &mut CpuStorage, wl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (w, g) else {
            candle_core::bail!("optimizer update: parameters and gradients must be f32");
        };
        let (Some((w0, w1)), Some((g0, g1))) = (wl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            candle_core::bail!("optimizer update: non-contiguous parameter or gradient");
        };
        let mut state = self.state.borrow_mut();
        (self.update)(&mut w[w0..w1], &g[g0..g1], &mut state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{AdamW, ParamsAdamW};

    /// loss = Σ (w − target)² / 2, so grad = w − target.
    fn loss(w: &Var) -> Tensor {
        let target = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0], &Device::Cpu).unwrap();
        (w.as_tensor() - target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap()
    }

    fn var() -> Var {
        Var::new(&[0.0f32, 1.0, -1.0, 2.0], &Device::Cpu).unwrap()
    }

    fn values(w: &Var) -> Vec<f32> {
        w.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn sgd_momentum_matches_the_formula() {
        let w = var();
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        };
        let mut opt = SgdMomentum::new(vec![w.clone()], h).unwrap();
        let target = [1.0f32, -2.0, 0.5, 3.0];
        let mut expected = [0.0f32, 1.0, -1.0, 2.0];
        let mut v = [0.0f32; 4];
        for _ in 0..3 {
            opt.backward_step(&loss(&w)).unwrap();
            for i in 0..4 {
                let g = expected[i] - target[i];
                v[i] = 0.9 * v[i] - 0.1 * (g + 0.01 * expected[i]);
                expected[i] += v[i];
            }
        }
        for (a, b) in values(&w).iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn adam_and_adamw_match_candle() {
        for decay in [0.0, 0.1] {
            let (ours, theirs) = (var(), var());
            let config = AdamConfig {
                lr: 0.05,
                decoupled_weight_decay: decay,
                ..AdamConfig::default()
            };
            let mut a = Adam::new(vec![ours.clone()], config).unwrap();
            let params = ParamsAdamW {
                lr: 0.05,
                weight_decay: decay,
                ..ParamsAdamW::default()
            };
            let mut b = AdamW::new(vec![theirs.clone()], params).unwrap();
            for _ in 0..5 {
                a.backward_step(&loss(&ours)).unwrap();
                b.backward_step(&loss(&theirs)).unwrap();
            }
            for (x, y) in values(&ours).iter().zip(values(&theirs)) {
                assert!((x - y).abs() < 1e-5, "decay {decay}: {x} vs {y}");
            }
            assert_ne!(values(&ours), values(&var()));
        }
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        // Uninterrupted: 5 steps.
        let w = var();
        let mut opt = Adam::new(vec![w.clone()], AdamConfig::default()).unwrap();
        for _ in 0..5 {
            opt.backward_step(&loss(&w)).unwrap();
        }
        // Interrupted after 3 steps, resumed in a fresh optimizer.
        let w2 = var();
        let mut first = Adam::new(vec![w2.clone()], AdamConfig::default()).unwrap();
        for _ in 0..3 {
            first.backward_step(&loss(&w2)).unwrap();
        }
        let state = first.state().unwrap();
        let mut resumed = Adam::new(
            vec![w2.clone()],
            AdamConfig {
                lr: 1.0,
                ..AdamConfig::default()
            },
        )
        .unwrap();
        resumed.load_state(&state).unwrap();
        assert_eq!(resumed.config().lr, 6e-5);
        for _ in 0..2 {
            resumed.backward_step(&loss(&w2)).unwrap();
        }
        assert_eq!(values(&w), values(&w2));

        let s = var();
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let mut sgd = SgdMomentum::new(vec![s.clone()], h).unwrap();
        sgd.backward_step(&loss(&s)).unwrap();
        let state = sgd.state().unwrap();
        let mut other = SgdMomentum::new(vec![var()], h).unwrap();
        other.load_state(&state).unwrap();
        let velocity = |o: &SgdMomentum| o.params[0].velocity.to_cpu_tensor(0, &o.params[0].var);
        assert_eq!(
            velocity(&other).unwrap().to_vec1::<f32>().unwrap(),
            velocity(&sgd).unwrap().to_vec1::<f32>().unwrap()
        );
        let mut wrong = SgdMomentum::new(vec![var(), var()], h).unwrap();
        assert!(wrong.load_state(&state).is_err());
    }

    /// The tensor-operation path (the one CUDA and Metal parameters take), run on the
    /// CPU, against the in-place path.
    #[test]
    fn device_path_matches_the_in_place_path() {
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{what}: {x} vs {y}");
            }
        };
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        };
        for wd in [0.0, 0.01] {
            let h = SgdHyper {
                weight_decay: wd,
                ..h
            };
            let (a, b) = (var(), var());
            let mut host = SgdMomentum::build(vec![(a.clone(), h)], false).unwrap();
            let mut dev = SgdMomentum::build(vec![(b.clone(), h)], true).unwrap();
            assert!(matches!(dev.params[0].velocity, Slots::Device(_)));
            for _ in 0..4 {
                host.backward_step(&loss(&a)).unwrap();
                dev.backward_step(&loss(&b)).unwrap();
            }
            close(&values(&a), &values(&b), "sgd");
        }
        for decay in [0.0, 0.1] {
            let config = AdamConfig {
                lr: 0.05,
                decoupled_weight_decay: decay,
                ..AdamConfig::default()
            };
            let (a, b) = (var(), var());
            let mut host = Adam::build(vec![a.clone()], config, false).unwrap();
            let mut dev = Adam::build(vec![b.clone()], config, true).unwrap();
            for _ in 0..5 {
                host.backward_step(&loss(&a)).unwrap();
                dev.backward_step(&loss(&b)).unwrap();
            }
            close(&values(&a), &values(&b), "adam");
            // The device path's state is a checkpoint like the host path's, and loads
            // into either.
            let (sh, sd) = (host.state().unwrap(), dev.state().unwrap());
            for k in ["0.m", "0.v"] {
                let t = |s: &OptimizerState| s.tensors[k].to_vec1::<f32>().unwrap();
                assert!(sd.tensors[k].device().is_cpu());
                close(&t(&sh), &t(&sd), k);
            }
            let c = var();
            let mut resumed = Adam::build(vec![c.clone()], config, true).unwrap();
            c.set(b.as_tensor()).unwrap();
            resumed.load_state(&sd).unwrap();
            resumed.backward_step(&loss(&c)).unwrap();
            dev.backward_step(&loss(&b)).unwrap();
            assert_eq!(values(&c), values(&b));
        }
    }
}
