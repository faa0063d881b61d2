//! Several networks, and several views of each image, as one method: the mean of
//! the networks' logits, each on its own features; the mean of the logits over
//! poses, the pair turned alike; the mean of the features over shifts. One network
//! alone scores as the single-network scorer.

use candle_core::Device;
use siamese_data::augment::synthetic_glyph;
use siamese_data::{GrayImage, seeded_rng};
use siamese_eval::{OneShotScorer, TestTimeViews, ensemble_scorer, siamese_scorer_with_views};
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
    let poses = TestTimeViews {
        shift: 1,
        turns: 2,
        mirror: true,
    };
    for views in [TestTimeViews::NONE, TestTimeViews::shifted(1), poses] {
        let each: Vec<Vec<f64>> = nets
            .iter()
            .map(|n| {
                all_pair_scores(
                    &siamese_scorer_with_views(n, "one", views).unwrap(),
                    &images,
                )
            })
            .collect();
        let together = all_pair_scores(&ensemble_scorer(&nets, "all", views).unwrap(), &images);
        assert_eq!(together.len(), 30);
        for (i, &score) in together.iter().enumerate() {
            let mean = each.iter().map(|s| s[i]).sum::<f64>() / 3.0;
            assert!((score - mean).abs() < 1e-5, "pair {i}: {score} vs {mean}");
        }
        // The networks disagree, so the mean is not any one of them.
        assert!(each.iter().all(|s| s != &together));
        // One network is exactly the single-network scorer.
        let alone = all_pair_scores(&ensemble_scorer(&nets[..1], "one", views).unwrap(), &images);
        assert_eq!(alone, each[0]);
    }
}

#[test]
fn an_ensemble_needs_networks_of_one_input_size() {
    let err = ensemble_scorer(&[], "none", TestTimeViews::NONE)
        .err()
        .unwrap();
    assert!(err.to_string().contains("at least one"), "{err}");
    let mixed = [net(1, SIDE), net(2, 2 * SIDE)];
    let err = ensemble_scorer(&mixed, "mixed", TestTimeViews::NONE)
        .err()
        .unwrap();
    assert!(err.to_string().contains("8×8 and 16×16"), "{err}");
}

/// `image` with its content moved `down` and `right` pixels, zero fill.
fn shifted(image: &GrayImage, down: isize, right: isize) -> GrayImage {
    let (w, h) = (image.width() as isize, image.height() as isize);
    let src = image.pixels();
    let mut out = vec![0u8; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = (y - down, x - right);
            if (0..h).contains(&sy) && (0..w).contains(&sx) {
                out[(y * w + x) as usize] = src[(sy * w + sx) as usize];
            }
        }
    }
    GrayImage::from_pixels(w as usize, h as usize, out).unwrap()
}

#[test]
fn shifts_embed_an_image_as_the_mean_features_of_its_shifted_copies() {
    let images = glyphs(3);
    let net = net(5, SIDE);
    let plain = siamese_scorer_with_views(&net, "plain", TestTimeViews::NONE).unwrap();
    for shift in [1usize, 2] {
        let scorer =
            siamese_scorer_with_views(&net, "shifted", TestTimeViews::shifted(shift)).unwrap();
        let s = shift as isize;
        for image in &images {
            let mut copies = vec![image.clone()];
            for (down, right) in [(0, -s), (0, s), (-s, 0), (s, 0)] {
                copies.push(shifted(image, down, right));
            }
            let refs: Vec<&GrayImage> = copies.iter().collect();
            let each: Vec<Vec<f32>> = plain.embed(&refs).unwrap().to_vec2().unwrap();
            let mean: Vec<f32> = (0..each[0].len())
                .map(|j| each.iter().map(|f| f[j]).sum::<f32>() / each.len() as f32)
                .collect();
            let got: Vec<Vec<f32>> = scorer.embed(&[image]).unwrap().to_vec2().unwrap();
            assert_eq!(got[0].len(), mean.len());
            for (g, m) in got[0].iter().zip(&mean) {
                assert!((g - m).abs() < 1e-5, "shift {shift}: {g} vs {m}");
            }
        }
    }
}

#[test]
fn poses_score_the_mean_logit_of_the_pair_turned_alike() {
    let images = glyphs(5);
    let net = net(4, SIDE);
    let shifted_only =
        siamese_scorer_with_views(&net, "shifted", TestTimeViews::shifted(1)).unwrap();
    // Each pose as GrayImage::turned makes it, scored on its own.
    let per_code: Vec<Vec<f64>> = (0..8u8)
        .map(|code| {
            let turned: Vec<GrayImage> = images.iter().map(|i| i.turned(code)).collect();
            all_pair_scores(&shifted_only, &turned)
        })
        .collect();
    for (turns, mirror) in [(4, true), (3, false), (2, true), (1, true)] {
        let views = TestTimeViews {
            shift: 1,
            turns,
            mirror,
        };
        let codes = views.poses();
        let expected_codes: Vec<u8> = [0, 4]
            .iter()
            .take(if mirror { 2 } else { 1 })
            .flat_map(|&m| (0..turns).map(move |t| m + t))
            .collect();
        assert_eq!(codes, expected_codes);
        let posed = all_pair_scores(
            &siamese_scorer_with_views(&net, "poses", views).unwrap(),
            &images,
        );
        for (i, &score) in posed.iter().enumerate() {
            let mean =
                codes.iter().map(|&c| per_code[c as usize][i]).sum::<f64>() / codes.len() as f64;
            assert!(
                (score - mean).abs() < 1e-4,
                "{views:?} pair {i}: {score} vs {mean}"
            );
        }
        // The poses disagree, so the mean is none of them.
        assert!(codes.iter().all(|&c| per_code[c as usize] != posed));
    }
}

#[test]
fn test_time_views_need_one_to_four_turns() {
    let nets = [net(1, SIDE)];
    for turns in [0, 5] {
        let views = TestTimeViews {
            turns,
            ..TestTimeViews::NONE
        };
        let err = ensemble_scorer(&nets, "bad", views).err().unwrap();
        assert!(err.to_string().contains("turns must be 1 to 4"), "{err}");
    }
    let views = TestTimeViews {
        shift: 2,
        turns: 4,
        mirror: true,
    };
    assert_eq!(views.views_per_image(), 8 * 5);
    let name = views.describe().unwrap();
    assert!(
        name.contains("±2 px shifts") && name.contains("8 poses"),
        "{name}"
    );
    assert_eq!(TestTimeViews::NONE.describe(), None);
}
