//! The training objectives: Koch's cross-entropy on sampled pairs, the all-pairs
//! objective on a K×M batch, and the softmax cross-entropy of one-shot episodes.
//!
//! The binary terms use [`siamese_model::bce_with_logits`] (numerically stable);
//! Koch's L2 term is the optimizer's weight decay, not part of the loss. Every
//! objective embeds in training mode ([`SiameseNet::embed_train`]: batch norm by the
//! batch's statistics).

use candle_core::{Device, Tensor};
use siamese_data::batch::Batch;
use siamese_model::{SiameseNet, bce_with_logits};

use crate::TrainError;
use crate::config::Objective;

impl Objective {
    /// The loss of one step's `batch` (made by this objective's sampler, so the
    /// batch's kind says which loss): [`pair_loss`], [`all_pairs_loss`] or
    /// [`episode_loss`] with this objective's BCE weight.
    pub fn loss(&self, net: &SiameseNet, batch: &Batch) -> Result<Tensor, TrainError> {
        match batch {
            Batch::Pairs(p) => pair_loss(net, &p.left, &p.right, &p.targets),
            Batch::Classes { images, labels } => all_pairs_loss(net, images, labels),
            Batch::Episode {
                images,
                way,
                queries,
            } => episode_loss(net, images, *way, *queries, self.bce_weight()),
        }
    }

    /// The weight of the balanced BCE term of episodes (0 for the other objectives,
    /// which are BCE already).
    pub fn bce_weight(&self) -> f64 {
        match self {
            Objective::Episodes(e) => e.bce_weight,
            Objective::Pairs(_) | Objective::AllPairs(_) => 0.0,
        }
    }
}

/// Koch's objective: mean binary cross-entropy of the network's logits on the pairs
/// `left[i]`, `right[i]` against `targets` (1 same, 0 different).
pub fn pair_loss(
    net: &SiameseNet,
    left: &Tensor,
    right: &Tensor,
    targets: &Tensor,
) -> Result<Tensor, TrainError> {
    let n = left.dim(0)?;
    let features = net.embed_train(&Tensor::cat(&[left, right], 0)?)?;
    let logits = net.score(&features.narrow(0, 0, n)?, &features.narrow(0, n, n)?)?;
    Ok(bce_with_logits(&logits, targets)?)
}

/// The one-shot episode objective on `images` `(way·(1 + queries), 1, s, s)` laid out
/// class by class (support, then its queries): every image is embedded once, each
/// query is scored by the head against the `way` supports, and the loss is the mean
/// softmax cross-entropy of the true support, plus `bce_weight` × the balanced binary
/// cross-entropy on the same query–support pairs (½ the mean over the `way·queries`
/// positives, ½ over the negatives).
pub fn episode_loss(
    net: &SiameseNet,
    images: &Tensor,
    way: usize,
    queries: usize,
    bce_weight: f64,
) -> Result<Tensor, TrainError> {
    let features = net.embed_train(images)?;
    episode_loss_from_features(&features, way, queries, bce_weight, |q, s| {
        Ok(net.score_all(q, s)?)
    })
}

/// [`episode_loss`] from features `(way·(1 + queries), d)` already embedded, with any
/// head `score_all` (`(q, d)` queries and `(s, d)` supports → `(q, s)` logits).
pub fn episode_loss_from_features(
    features: &Tensor,
    way: usize,
    queries: usize,
    bce_weight: f64,
    score_all: impl Fn(&Tensor, &Tensor) -> Result<Tensor, TrainError>,
) -> Result<Tensor, TrainError> {
    let (n, d) = features.dims2()?;
    if way < 2 || queries == 0 || n != way * (1 + queries) {
        return Err(TrainError::Config(format!(
            "episode loss: {n} feature rows for {way} classes × (1 + {queries}) images"
        )));
    }
    let by_class = features.reshape((way, 1 + queries, d))?;
    let supports = by_class.narrow(1, 0, 1)?.reshape((way, d))?;
    let query_features = by_class
        .narrow(1, 1, queries)?
        .reshape((way * queries, d))?;
    let logits = score_all(&query_features, &supports)?;
    let truth: Vec<u32> = (0..way as u32)
        .flat_map(|c| std::iter::repeat_n(c, queries))
        .collect();
    let device = features.device();
    let truth = Tensor::from_vec(truth, way * queries, device)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &truth)?;
    if bce_weight == 0.0 {
        return Ok(loss);
    }
    let same = candle_nn::encoding::one_hot(truth, way, 1f32, 0f32)?.to_dtype(logits.dtype())?;
    // Balanced: positives and negatives each weigh half whatever their counts.
    let positives = (way * queries) as f64;
    let negatives = positives * (way - 1) as f64;
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let per_pair = ((logits.relu()? - (&logits * &same)?)? + softplus)?;
    let weights = same.affine(0.5 / positives - 0.5 / negatives, 0.5 / negatives)?;
    let bce = (per_pair * weights)?.sum_all()?;
    Ok((loss + (bce * bce_weight)?)?)
}

/// The (i < j) pairs of a batch with `labels`, split into positives (same label) and
/// negatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllPairs {
    pub positives: Vec<(u32, u32)>,
    pub negatives: Vec<(u32, u32)>,
}

impl AllPairs {
    pub fn new(labels: &[usize]) -> Self {
        let mut positives = Vec::new();
        let mut negatives = Vec::new();
        for i in 0..labels.len() {
            for j in i + 1..labels.len() {
                let p = (i as u32, j as u32);
                if labels[i] == labels[j] {
                    positives.push(p);
                } else {
                    negatives.push(p);
                }
            }
        }
        AllPairs {
            positives,
            negatives,
        }
    }

    /// All scored pairs: n(n − 1)/2.
    pub fn len(&self) -> usize {
        self.positives.len() + self.negatives.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The all-pairs objective on `images` `(n, 1, s, s)` with class `labels`: every image
/// is embedded once, every pair (i < j) is scored by the head, and the loss is
/// `½ · BCE(positives, 1) + ½ · BCE(negatives, 0)` (each a mean over its pairs), so
/// that the two kinds weigh the same whatever their counts (a batch of K classes × M
/// images has K·M(M−1)/2 positives and far more negatives). With only one kind
/// present, its mean alone.
pub fn all_pairs_loss(
    net: &SiameseNet,
    images: &Tensor,
    labels: &[usize],
) -> Result<Tensor, TrainError> {
    let features = net.embed_train(images)?;
    all_pairs_loss_from_features(&features, labels, |a, b| Ok(net.score(a, b)?))
}

/// [`all_pairs_loss`] from features `(n, d)` already embedded, with any head `score`
/// (two `(p, d)` feature tensors → `(p,)` logits). The pair feature tensors are built
/// with `index_select`, so the gradient flows back to each image's features once per
/// pair it is in.
pub fn all_pairs_loss_from_features(
    features: &Tensor,
    labels: &[usize],
    score: impl Fn(&Tensor, &Tensor) -> Result<Tensor, TrainError>,
) -> Result<Tensor, TrainError> {
    let n = features.dim(0)?;
    if n != labels.len() || n < 2 {
        return Err(TrainError::Config(format!(
            "all-pairs loss: {n} feature rows for {} labels (need at least 2)",
            labels.len()
        )));
    }
    let pairs = AllPairs::new(labels);
    let device = features.device();
    let part = |list: &[(u32, u32)], target: f32| -> Result<Option<Tensor>, TrainError> {
        if list.is_empty() {
            return Ok(None);
        }
        let (a, b) = index_tensors(list, device)?;
        let logits = score(
            &features.index_select(&a, 0)?,
            &features.index_select(&b, 0)?,
        )?;
        let targets = Tensor::full(target, list.len(), device)?;
        Ok(Some(bce_with_logits(&logits, &targets)?))
    };
    let pos = part(&pairs.positives, 1.0)?;
    let neg = part(&pairs.negatives, 0.0)?;
    Ok(match (pos, neg) {
        (Some(p), Some(q)) => ((p + q)? * 0.5)?,
        (Some(p), None) => p,
        (None, Some(q)) => q,
        (None, None) => unreachable!("n >= 2 gives at least one pair"),
    })
}

fn index_tensors(list: &[(u32, u32)], device: &Device) -> Result<(Tensor, Tensor), TrainError> {
    let a: Vec<u32> = list.iter().map(|p| p.0).collect();
    let b: Vec<u32> = list.iter().map(|p| p.1).collect();
    Ok((
        Tensor::from_vec(a, list.len(), device)?,
        Tensor::from_vec(b, list.len(), device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};
    use candle_nn::VarBuilder;
    use siamese_model::{Arch, EMBED_DIM, ModelConfig};

    fn bce(x: f64, y: f64) -> f64 {
        x.max(0.0) - x * y + (1.0 + (-x.abs()).exp()).ln()
    }

    #[test]
    fn all_pairs_loss_matches_a_hand_computation() {
        // Four images of classes [0, 0, 1, 2], 2-d features, head: logit = w·|a − b| + c.
        let f: [[f64; 2]; 4] = [[0.0, 1.0], [0.5, 0.0], [2.0, 2.0], [1.0, -1.0]];
        let labels = [0, 0, 1, 2];
        let (w, c): ([f64; 2], f64) = ([1.5, -0.5], 0.25);
        let flat: Vec<f32> = f.iter().flatten().map(|&v| v as f32).collect();
        let features = Var::from_vec(flat, (4, 2), &Device::Cpu).unwrap();
        let head = Tensor::new(&[[w[0] as f32], [w[1] as f32]], &Device::Cpu).unwrap();
        let score = |a: &Tensor, b: &Tensor| -> Result<Tensor, TrainError> {
            Ok(((a - b)?.abs()?.matmul(&head)?.squeeze(1)? + c)?)
        };
        let loss = all_pairs_loss_from_features(features.as_tensor(), &labels, score).unwrap();
        let logit = |i: usize, j: usize| -> f64 {
            (0..2)
                .map(|k| w[k] * (f[i][k] - f[j][k]).abs())
                .sum::<f64>()
                + c
        };
        // One positive pair (0, 1); five negatives.
        let pos = bce(logit(0, 1), 1.0);
        let negs = [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        let neg = negs
            .iter()
            .map(|&(i, j)| bce(logit(i, j), 0.0))
            .sum::<f64>()
            / 5.0;
        let expected = 0.5 * pos + 0.5 * neg;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // The gradient reaches every image's features.
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<f32>> = grads.get(features.as_tensor()).unwrap().to_vec2().unwrap();
        assert!(g.iter().all(|row| row.iter().any(|&v| v != 0.0)), "{g:?}");

        let p = AllPairs::new(&[0, 0, 1, 1, 1]);
        assert_eq!((p.positives.len(), p.negatives.len()), (4, 6));
        assert_eq!(AllPairs::new(&[0, 0, 0]).negatives.len(), 0);
    }

    #[test]
    fn episode_loss_matches_a_hand_computation() {
        // 2-way, 2 queries: rows [support 0, q, q, support 1, q, q], 1-d features,
        // head logit = w·|a − b| + c.
        let f = [0.0f64, 0.5, 2.0, 3.0, 2.5, 0.25];
        let (w, c) = (-1.5f64, 0.75);
        let features = Var::from_vec(
            f.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (6, 1),
            &Device::Cpu,
        )
        .unwrap();
        let score_all = |q: &Tensor, s: &Tensor| -> Result<Tensor, TrainError> {
            let d = q.unsqueeze(1)?.broadcast_sub(&s.unsqueeze(0)?)?.abs()?;
            Ok(((d.squeeze(2)? * w)? + c)?)
        };
        let supports = [f[0], f[3]];
        let queries = [(f[1], 0), (f[2], 0), (f[4], 1), (f[5], 1)];
        let logit = |q: f64, s: f64| w * (q - s).abs() + c;
        let ce: f64 = queries
            .iter()
            .map(|&(q, t)| {
                let l: Vec<f64> = supports.iter().map(|&s| logit(q, s)).collect();
                let lse = l.iter().map(|v| v.exp()).sum::<f64>().ln();
                lse - l[t]
            })
            .sum::<f64>()
            / 4.0;
        let (mut pos, mut neg) = (0.0, 0.0);
        for &(q, t) in &queries {
            for (j, &s) in supports.iter().enumerate() {
                if j == t {
                    pos += bce(logit(q, s), 1.0) / 4.0;
                } else {
                    neg += bce(logit(q, s), 0.0) / 4.0;
                }
            }
        }
        for bce_weight in [0.0, 0.5] {
            let loss =
                episode_loss_from_features(features.as_tensor(), 2, 2, bce_weight, score_all)
                    .unwrap();
            let expected = ce + bce_weight * (0.5 * pos + 0.5 * neg);
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (got - expected).abs() < 1e-5,
                "{bce_weight}: {got} vs {expected}"
            );
            let grads = loss.backward().unwrap();
            let g: Vec<Vec<f32>> = grads.get(features.as_tensor()).unwrap().to_vec2().unwrap();
            assert!(g.iter().all(|row| row[0] != 0.0), "{g:?}");
        }
        // A layout that does not fit is an error, not a panic.
        assert!(episode_loss_from_features(features.as_tensor(), 2, 3, 0.0, score_all).is_err());
    }

    #[test]
    fn all_pairs_loss_with_the_network_head() {
        // The koch35 network with a known head, scoring 3 given feature rows.
        let config = ModelConfig::new(Arch::Koch35);
        let mut tensors = std::collections::HashMap::new();
        for spec in config.param_specs().unwrap() {
            tensors.insert(
                spec.name.clone(),
                Tensor::zeros(spec.shape.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            );
        }
        let alpha: Vec<f32> = (0..EMBED_DIM)
            .map(|k| if k < 2 { 1.0 } else { 0.0 })
            .collect();
        tensors.insert(
            "head.weight".into(),
            Tensor::from_vec(alpha, (1, EMBED_DIM), &Device::Cpu).unwrap(),
        );
        tensors.insert(
            "head.bias".into(),
            Tensor::new(&[-1.0f32], &Device::Cpu).unwrap(),
        );
        let net = SiameseNet::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let mut rows = vec![0f32; 3 * EMBED_DIM];
        rows[0] = 1.0; // image 0: (1, 0, ...)
        rows[EMBED_DIM + 1] = 1.0; // image 1: (0, 1, ...)
        rows[2 * EMBED_DIM] = 0.5; // image 2: (0.5, 0, ...)
        let features = Tensor::from_vec(rows, (3, EMBED_DIM), &Device::Cpu).unwrap();
        let loss = all_pairs_loss_from_features(&features, &[0, 1, 0], |a, b| Ok(net.score(a, b)?))
            .unwrap();
        // Pairs: (0,1) different, logit 2 − 1 = 1; (0,2) same, logit 0.5 − 1 = −0.5;
        // (1,2) different, logit 1.5 − 1 = 0.5.
        let expected = 0.5 * bce(-0.5, 1.0) + 0.5 * (bce(1.0, 0.0) + bce(0.5, 0.0)) / 2.0;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }
}
