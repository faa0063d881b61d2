//! Several networks as one method: the mean of their logits, each on its own
//! features; one network alone scores as the single-network scorer.

use candle_core::Device;
use siamese_data::augment::synthetic_glyph;
use siamese_data::{GrayImage, seeded_rng};
use siamese_eval::{OneShotScorer, ensemble_scorer, siamese_scorer_shifted};
use siamese_model::init::InitScheme;
use siamese_model::{Arch, ModelConfig, SiameseNet};

const SIDE: usize = 8;

fn net(seed: u64, input_size: usize) -> SiameseNet {
    let config = ModelConfig {
        arch: Arch::ConvBn { width: 4, depth: 2 },
        input_size,
    };
    SiameseNet::init_with(config, InitScheme::Lecun, seed, &Device::Cpu)
        .unwrap()
        .0
        .detach()
}

fn glyphs(n: usize) -> Vec<GrayImage> {
    let mut rng = seeded_rng(3);
    (0..n)
        .map(|_| synthetic_glyph(&mut rng, SIDE, SIDE))
        .collect()
}

/// Scores of every ordered pair of distinct images.
fn all_pair_scores(scorer: &impl OneShotScorer, images: &[GrayImage]) -> Vec<f64> {
    let refs: Vec<&GrayImage> = images.iter().collect();
    let features = scorer.embed(&refs).unwrap();
    let pairs: Vec<(usize, usize)> = (0..images.len())
        .flat_map(|a| {
            (0..images.len())
                .filter(move |&b| b != a)
                .map(move |b| (a, b))
        })
        .collect();
    scorer.score_pairs(&features, &pairs).unwrap()
}

#[test]
fn an_ensemble_scores_the_mean_of_its_networks_logits() {
    let images = glyphs(6);
    let nets = [net(1, SIDE), net(2, SIDE), net(3, SIDE)];
    for shift in [0, 1] {
        let each: Vec<Vec<f64>> = nets
            .iter()
            .map(|n| all_pair_scores(&siamese_scorer_shifted(n, "one", shift), &images))
            .collect();
        let together = all_pair_scores(&ensemble_scorer(&nets, "all", shift).unwrap(), &images);
        assert_eq!(together.len(), 30);
        for (i, &score) in together.iter().enumerate() {
            let mean = each.iter().map(|s| s[i]).sum::<f64>() / 3.0;
            assert!((score - mean).abs() < 1e-5, "pair {i}: {score} vs {mean}");
        }
        // The networks disagree, so the mean is not any one of them.
        assert!(each.iter().all(|s| s != &together));
        // One network is exactly the single-network scorer.
        let alone = all_pair_scores(&ensemble_scorer(&nets[..1], "one", shift).unwrap(), &images);
        assert_eq!(alone, each[0]);
    }
}

#[test]
fn an_ensemble_needs_networks_of_one_input_size() {
    let err = ensemble_scorer(&[], "none", 0).err().unwrap();
    assert!(err.to_string().contains("at least one"), "{err}");
    let mixed = [net(1, SIDE), net(2, 2 * SIDE)];
    let err = ensemble_scorer(&mixed, "mixed", 0).err().unwrap();
    assert!(err.to_string().contains("8×8 and 16×16"), "{err}");
}
