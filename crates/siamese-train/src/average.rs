//! Weight averaging: an exponential moving average of the network's parameters and
//! batch-norm running statistics over the steps. When a run averages, validation
//! scores the averaged network and the `best` checkpoint holds it; the optimizer goes
//! on stepping the raw weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use siamese_model::SiameseNet;

use crate::TrainError;

/// Whether, and how, a run averages its weights.
///
/// In configuration files `"none"` or `{"ema": {"decay": 0.998}}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightAverage {
    /// Validate and keep the raw weights.
    #[default]
    None,
    /// After step t (counting from 1): θ̄ ← d·θ̄ + (1 − d)·θ with
    /// d = min(`decay`, (1 + t) / (10 + t)), so that the first steps' weights (far
    /// from the later ones) fade quickly. Batch norm's running statistics are
    /// averaged the same way.
    Ema { decay: f64 },
}

impl WeightAverage {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WeightAverage::None => Ok(()),
            WeightAverage::Ema { decay } if (0.0..1.0).contains(&decay) => Ok(()),
            WeightAverage::Ema { decay } => Err(format!(
                "train.weight_average.ema.decay must be in [0, 1) (got {decay})"
            )),
        }
    }
}

/// The exponential moving average of a network ([`WeightAverage::Ema`]), kept in f32 on
/// the CPU (the Conv-4 tower has about 10⁵ scalars: negligible beside a step).
#[derive(Debug, Clone)]
pub struct WeightEma {
    decay: f64,
    config: siamese_model::ModelConfig,
    /// The averaged values of each parameter, then of each running statistic.
    tensors: Vec<FlatTensor>,
}

/// One tensor of a network as f32 values on the CPU.
#[derive(Debug, Clone)]
struct FlatTensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl WeightEma {
    /// An average starting at `net`'s current weights.
    pub fn new(decay: f64, net: &SiameseNet) -> Result<Self, TrainError> {
        Ok(WeightEma {
            decay,
            config: *net.config(),
            tensors: snapshot(net)?,
        })
    }

    /// The decay applied after step `step` (counting from 1).
    pub fn decay_at(&self, step: u64) -> f64 {
        let t = step as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds `net`'s weights after step `step` (counting from 1) into the average.
    pub fn update(&mut self, net: &SiameseNet, step: u64) -> Result<(), TrainError> {
        let d = self.decay_at(step) as f32;
        let current = snapshot(net)?;
        for (avg, now) in self.tensors.iter_mut().zip(&current) {
            debug_assert_eq!(avg.name, now.name);
            for (a, x) in avg.values.iter_mut().zip(&now.values) {
                *a = d * *a + (1.0 - d) * x;
            }
        }
        Ok(())
    }

    /// The averaged network on `device` (plain tensors, inference and saving).
    pub fn net(&self, device: &Device) -> Result<SiameseNet, TrainError> {
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                Ok((
                    t.name.clone(),
                    Tensor::from_slice(&t.values, t.shape.as_slice(), device)?,
                ))
            })
            .collect::<Result<std::collections::HashMap<_, _>, candle_core::Error>>()?;
        Ok(SiameseNet::new(
            self.config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )?)
    }
}

/// Every parameter and running statistic of `net` as f32 values on the CPU.
fn snapshot(net: &SiameseNet) -> Result<Vec<FlatTensor>, TrainError> {
    let buffers = net.named_buffers()?;
    net.named_tensors()
        .iter()
        .chain(&buffers)
        .map(|(name, t)| {
            let values = t
                .detach()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(FlatTensor {
                name: name.clone(),
                shape: t.dims().to_vec(),
                values,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use siamese_model::{Arch, ModelConfig};

    fn tiny() -> ModelConfig {
        ModelConfig {
            arch: Arch::ConvBn { width: 4, depth: 2 },
            input_size: 8,
        }
    }

    fn values(net: &SiameseNet) -> Vec<Vec<f32>> {
        snapshot(net)
            .unwrap()
            .into_iter()
            .map(|t| t.values)
            .collect()
    }

    /// The average after two updates against the formula, the decay's warm-up, and
    /// the averaged network built from the averaged values (running statistics too).
    #[test]
    fn ema_follows_the_formula() {
        let device = Device::Cpu;
        let (a, _) = SiameseNet::init(tiny(), 1, &device).unwrap();
        let (b, _) = SiameseNet::init(tiny(), 2, &device).unwrap();
        let (c, _) = SiameseNet::init(tiny(), 3, &device).unwrap();
        let mut ema = WeightEma::new(0.9, &a).unwrap();
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-12);
        assert_eq!(ema.decay_at(1000), 0.9);
        ema.update(&b, 1).unwrap();
        ema.update(&c, 1000).unwrap();
        let d1 = 2.0f32 / 11.0;
        let (va, vb, vc) = (values(&a), values(&b), values(&c));
        let got = values(&ema.net(&device).unwrap());
        assert_eq!(got.len(), va.len());
        for (i, g) in got.iter().enumerate() {
            for (j, &x) in g.iter().enumerate() {
                let after_b = d1 * va[i][j] + (1.0 - d1) * vb[i][j];
                let want = 0.9 * after_b + 0.1 * vc[i][j];
                assert!((x - want).abs() <= 1e-6 * (1.0 + want.abs()), "{i} {j}");
            }
        }
        // Running statistics are part of the average: their initial values (mean 0,
        // variance 1) survive mixing identical networks.
        let stats = ema.net(&device).unwrap().running_stats();
        assert_eq!(stats.len(), 2);
        assert!(stats[0].var.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn decay_outside_the_unit_interval_is_refused() {
        assert!(WeightAverage::Ema { decay: 1.0 }.validate().is_err());
        assert!(WeightAverage::Ema { decay: -0.1 }.validate().is_err());
        assert!(WeightAverage::Ema { decay: 0.999 }.validate().is_ok());
        assert!(WeightAverage::None.validate().is_ok());
    }
}
