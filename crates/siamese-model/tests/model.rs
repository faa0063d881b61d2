//! The network: parameter counts, shapes, initialisation, the embed/score API, the
//! loss, training steps and device selection.

use std::sync::OnceLock;

use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use siamese_model::{
    Arch, Device, ModelConfig, ModelError, ParamKind, SiameseNet, Tensor, bce_with_logits,
    select_device,
};

/// The paper's network, initialised once for all tests (38.9 million parameters).
fn koch() -> &'static (SiameseNet, VarMap) {
    static NET: OnceLock<(SiameseNet, VarMap)> = OnceLock::new();
    NET.get_or_init(|| SiameseNet::init(ModelConfig::new(Arch::Koch), 0, &Device::Cpu).unwrap())
}

/// `n` seeded random images of side `s` with values in [0, 1).
fn images(n: usize, s: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(0f32, 1f32).unwrap();
    let data: Vec<f32> = (0..n * s * s).map(|_| uniform.sample(&mut rng)).collect();
    Tensor::from_vec(data, (n, 1, s, s), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn mean_std(t: &Tensor) -> (f64, f64) {
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn parameter_counts() {
    assert_eq!(
        ModelConfig::new(Arch::Koch).num_params().unwrap(),
        38_951_745
    );
    assert_eq!(ModelConfig::new(Arch::Koch).flat_features().unwrap(), 9216);
    assert_eq!(
        ModelConfig::new(Arch::Koch35).num_params().unwrap(),
        8_677_249
    );
    assert_eq!(
        ModelConfig::new(Arch::Koch35).flat_features().unwrap(),
        2048
    );
    let (net, varmap) = koch();
    assert_eq!(net.num_params(), 38_951_745);
    let in_varmap: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    assert_eq!(in_varmap, 38_951_745);
    assert_eq!(varmap.all_vars().len(), 12);
}

#[test]
fn config_serde_and_names() {
    assert_eq!(
        ModelConfig::default(),
        ModelConfig {
            arch: Arch::Koch,
            input_size: 105
        }
    );
    let json = serde_json::to_string(&ModelConfig::new(Arch::Koch35)).unwrap();
    assert_eq!(json, r#"{"arch":"koch35","input_size":35}"#);
    assert_eq!(
        serde_json::from_str::<ModelConfig>(&json).unwrap(),
        ModelConfig::new(Arch::Koch35)
    );
    assert_eq!("KOCH".parse::<Arch>().unwrap(), Arch::Koch);
    assert!(matches!(
        "resnet".parse::<Arch>(),
        Err(ModelError::UnknownArch(_))
    ));
    let tiny = ModelConfig {
        arch: Arch::Koch,
        input_size: 20,
    };
    assert!(matches!(
        tiny.num_params(),
        Err(ModelError::InputTooSmall { .. })
    ));
}

#[test]
fn koch_output_shapes() {
    let (net, _) = koch();
    let x = images(3, 105, 1);
    assert_eq!(net.embed(&x).unwrap().dims(), &[3, 4096]);
    assert_eq!(
        net.forward_pairs(&x, &images(3, 105, 2)).unwrap().dims(),
        &[3]
    );
    let wrong = images(2, 35, 1);
    assert!(matches!(
        net.embed(&wrong),
        Err(ModelError::InputShape {
            input_size: 105,
            ..
        })
    ));
}

#[test]
fn koch35_output_shapes() {
    let (net, _) = SiameseNet::init(ModelConfig::new(Arch::Koch35), 0, &Device::Cpu).unwrap();
    let x = images(5, 35, 1);
    let e = net.embed(&x).unwrap();
    assert_eq!(e.dims(), &[5, 4096]);
    let features: Vec<f32> = e.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        features.iter().all(|&f| (0.0..=1.0).contains(&f)),
        "sigmoid features"
    );
    assert_eq!(
        net.forward_pairs(&x, &images(5, 35, 2)).unwrap().dims(),
        &[5]
    );
}

#[test]
fn init_statistics_follow_the_paper() {
    let (net, _) = koch();
    let specs = net.config().param_specs().unwrap();
    for (spec, (name, t)) in specs.iter().zip(net.named_tensors()) {
        assert_eq!(&spec.name, name);
        assert_eq!(t.dims(), spec.shape.as_slice());
        let (mean, std) = mean_std(t);
        let (want_mean, want_std) = match spec.kind {
            ParamKind::ConvWeight => (0.0, 0.01),
            ParamKind::FcWeight => (0.0, 0.2),
            ParamKind::Bias => (0.5, 0.01),
            other => panic!("{name}: {other:?} is not a kind of Koch's network"),
        };
        // Standard errors: the smallest tensors are the head's bias (1 value) and
        // weight (4096), and conv1's bias (64).
        let n = t.elem_count() as f64;
        let mean_tol = 5.0 * want_std / n.sqrt() + 1e-6;
        assert!(
            (mean - want_mean).abs() < mean_tol,
            "{name}: mean {mean}, want {want_mean}"
        );
        if n >= 64.0 {
            assert!(
                (std / want_std - 1.0).abs() < 0.25,
                "{name}: std {std}, want {want_std}"
            );
        }
        if n >= 4096.0 {
            assert!(
                (std / want_std - 1.0).abs() < 0.05,
                "{name}: std {std}, want {want_std}"
            );
        }
    }
}

#[test]
fn seeded_init_is_reproducible() {
    let config = ModelConfig::new(Arch::Koch35);
    let (a, _) = SiameseNet::init(config, 7, &Device::Cpu).unwrap();
    // Another thread count draws the same numbers.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (b, _) = pool.install(|| SiameseNet::init(config, 7, &Device::Cpu).unwrap());
    let (c, _) = SiameseNet::init(config, 8, &Device::Cpu).unwrap();
    for (((name, ta), (_, tb)), (_, tc)) in a
        .named_tensors()
        .iter()
        .zip(b.named_tensors())
        .zip(c.named_tensors())
    {
        assert_eq!(
            max_abs_diff(ta, tb),
            0.0,
            "{name} differs with the same seed"
        );
        assert!(
            max_abs_diff(ta, tc) > 0.0,
            "{name} is the same with another seed"
        );
    }
}

#[test]
fn embed_then_score_equals_forward_pairs() {
    let (net, _) = SiameseNet::init(ModelConfig::new(Arch::Koch35), 3, &Device::Cpu).unwrap();
    let (left, right) = (images(4, 35, 10), images(4, 35, 11));
    let direct = net.forward_pairs(&left, &right).unwrap();
    let (el, er) = (net.embed(&left).unwrap(), net.embed(&right).unwrap());
    let via_features = net.score(&el, &er).unwrap();
    assert!(
        max_abs_diff(&direct, &via_features) < 1e-4,
        "{direct} vs {via_features}"
    );

    let (koch, _) = koch();
    let (left, right) = (images(2, 105, 12), images(2, 105, 13));
    let direct = koch.forward_pairs(&left, &right).unwrap();
    let via = koch
        .score(&koch.embed(&left).unwrap(), &koch.embed(&right).unwrap())
        .unwrap();
    assert!(max_abs_diff(&direct, &via) < 1e-3, "{direct} vs {via}");
}

#[test]
fn head_is_symmetric() {
    let (net, _) = SiameseNet::init(ModelConfig::new(Arch::Koch35), 4, &Device::Cpu).unwrap();
    let a = net.embed(&images(6, 35, 20)).unwrap();
    let b = net.embed(&images(6, 35, 21)).unwrap();
    let ab: Vec<f32> = net.score(&a, &b).unwrap().to_vec1().unwrap();
    let ba: Vec<f32> = net.score(&b, &a).unwrap().to_vec1().unwrap();
    assert_eq!(ab, ba);
    // Identical features: zero distance, so the logit is the head's bias.
    let aa: Vec<f32> = net.score(&a, &a).unwrap().to_vec1().unwrap();
    let bias: Vec<f32> = net.named_tensors().last().unwrap().1.to_vec1().unwrap();
    assert!(aa.iter().all(|&x| x == bias[0]));
}

#[test]
fn detached_network_gives_the_same_features() {
    let (net, _) = SiameseNet::init(ModelConfig::new(Arch::Koch35), 5, &Device::Cpu).unwrap();
    let x = images(3, 35, 30);
    let frozen = net.detach();
    assert_eq!(
        max_abs_diff(&net.embed(&x).unwrap(), &frozen.embed(&x).unwrap()),
        0.0
    );
}

#[test]
fn bce_with_logits_is_stable() {
    let logits = Tensor::new(&[100f32, -100.0, 0.0, 30.0], &Device::Cpu).unwrap();
    let targets = Tensor::new(&[1f32, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
    let loss: f32 = bce_with_logits(&logits, &targets)
        .unwrap()
        .to_scalar()
        .unwrap();
    let want = (2f32.ln() + 30.0) / 4.0;
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");

    let var = candle_core::Var::from_tensor(&logits).unwrap();
    let grads = bce_with_logits(var.as_tensor(), &targets)
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<f32> = grads.get(var.as_tensor()).unwrap().to_vec1().unwrap();
    // d/dx = (sigmoid(x) - y) / n.
    let want = [0.0, 0.0, -0.125, 0.25];
    for (g, w) in g.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{g:?}");
    }
}

#[test]
fn adam_steps_reduce_the_loss() {
    let (net, varmap) = SiameseNet::init(ModelConfig::new(Arch::Koch35), 6, &Device::Cpu).unwrap();
    let (left, right) = (images(4, 35, 40), images(4, 35, 41));
    let y = Tensor::new(&[1f32, 0., 1., 0.], &Device::Cpu).unwrap();
    let params = ParamsAdamW {
        lr: 1e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params).unwrap();
    let loss =
        |net: &SiameseNet| bce_with_logits(&net.forward_pairs(&left, &right).unwrap(), &y).unwrap();
    let first: f32 = loss(&net).to_scalar().unwrap();
    for _ in 0..3 {
        opt.backward_step(&loss(&net)).unwrap();
    }
    let last: f32 = loss(&net).to_scalar().unwrap();
    assert!(last.is_finite() && last < first, "loss {first} -> {last}");
}

#[test]
fn device_selection() {
    assert!(select_device("cpu").unwrap().is_cpu());
    assert!(matches!(
        select_device("gpu"),
        Err(ModelError::UnknownDevice(_))
    ));
    assert!(matches!(
        select_device("cuda:x"),
        Err(ModelError::UnknownDevice(_))
    ));
    #[cfg(not(feature = "cuda"))]
    {
        let err = select_device("cuda").unwrap_err();
        assert!(matches!(
            err,
            ModelError::DeviceNotCompiled {
                feature: "cuda",
                ..
            }
        ));
        assert!(err.to_string().contains("--features cuda"), "{err}");
        assert!(matches!(
            select_device("cuda:1"),
            Err(ModelError::DeviceNotCompiled { .. })
        ));
    }
    #[cfg(not(feature = "metal"))]
    assert!(matches!(
        select_device("metal"),
        Err(ModelError::DeviceNotCompiled {
            feature: "metal",
            ..
        })
    ));
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    assert!(select_device("auto").unwrap().is_cpu());
}

/// The LeCun scheme changes the fully connected weights alone, to N(0, 1/fan_in),
/// and starts the 4096-unit sigmoid layer out of saturation, where the paper's
/// scheme saturates most of it.
#[test]
fn lecun_init_scales_the_fully_connected_weights_and_avoids_saturation() {
    use siamese_model::InitScheme;
    let config = ModelConfig::new(Arch::Koch);
    let (paper, paper_vars) = SiameseNet::init(config, 9, &Device::Cpu).unwrap();
    let (lecun, lecun_vars) =
        SiameseNet::init_with(config, InitScheme::Lecun, 9, &Device::Cpu).unwrap();
    let get = |vars: &siamese_model::candle_nn::VarMap, name: &str| {
        vars.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    for name in [
        "tower.conv1.weight",
        "tower.conv1.bias",
        "tower.fc.bias",
        "head.bias",
    ] {
        assert_eq!(get(&paper_vars, name), get(&lecun_vars, name), "{name}");
    }
    let std = |v: &[f32]| {
        let sq = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        (sq / v.len() as f64).sqrt() as f32
    };
    let fc = get(&lecun_vars, "tower.fc.weight");
    let fan_in = fc.len() / 4096;
    let expected = (1.0 / fan_in as f32).sqrt();
    assert!(
        (std(&fc) / expected - 1.0).abs() < 0.02,
        "{} vs {expected}",
        std(&fc)
    );
    assert!((std(&get(&paper_vars, "tower.fc.weight")) / 0.2 - 1.0).abs() < 0.02);

    // Inputs like Omniglot: mostly background, some ink.
    let images: Vec<f32> = (0..4 * 105 * 105)
        .map(|i| ((i * 7919) % 13 == 0) as u8 as f32)
        .collect();
    let images = Tensor::from_vec(images, (4, 1, 105, 105), &Device::Cpu).unwrap();
    let saturated = |net: &SiameseNet| {
        let f = net
            .embed(&images)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        f.iter().filter(|&&v| !(0.01..=0.99).contains(&v)).count() as f64 / f.len() as f64
    };
    let (p, l) = (saturated(&paper), saturated(&lecun));
    assert!(p > 0.5, "paper init: {p:.2} of the units saturated");
    assert!(l < 0.05, "lecun init: {l:.2} of the units saturated");
    assert_eq!("LeCun".parse::<InitScheme>().unwrap(), InitScheme::Lecun);
    assert!("xavier".parse::<InitScheme>().is_err());
}

#[test]
fn the_batch_normalised_family_is_configured_by_width_depth_and_input_size() {
    let conv4 = ModelConfig::new(Arch::CONV4);
    assert_eq!(conv4.input_size, 28);
    assert_eq!(conv4.embed_dim().unwrap(), 64); // 28 → 14 → 7 → 3 → 1
    // 4 kernels (1·9·64 + 3·64·9·64), γ and β of 4 blocks, the head.
    assert_eq!(
        conv4.num_params().unwrap(),
        9 * 64 + 3 * 9 * 64 * 64 + 4 * 2 * 64 + 64 + 1
    );
    assert_eq!(conv4.buffer_specs().unwrap().len(), 8);
    let wide = ModelConfig {
        arch: Arch::ConvBn {
            width: 32,
            depth: 3,
        },
        input_size: 35,
    };
    assert_eq!(wide.embed_dim().unwrap(), 32 * 4 * 4); // 35 → 17 → 8 → 4
    assert!(
        ModelConfig {
            arch: Arch::CONV4,
            input_size: 15
        }
        .num_params()
        .is_err()
    );
    for (name, arch) in [
        ("conv4", Arch::CONV4),
        (
            "conv-bn-32x3",
            Arch::ConvBn {
                width: 32,
                depth: 3,
            },
        ),
        ("koch35", Arch::Koch35),
    ] {
        assert_eq!(name.parse::<Arch>().unwrap(), arch);
        assert_eq!(arch.to_string(), name);
    }
    assert!("conv-bn-0x3".parse::<Arch>().is_err());
    // Koch's towers stay strings in JSON, the family is a table.
    assert_eq!(
        serde_json::to_string(&ModelConfig::new(Arch::Koch)).unwrap(),
        r#"{"arch":"koch","input_size":105}"#
    );
    let json = serde_json::to_string(&wide).unwrap();
    assert_eq!(
        json,
        r#"{"arch":{"conv-bn":{"width":32,"depth":3}},"input_size":35}"#
    );
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), wide);

    // Embeddings of the configured width; inference does not depend on the batch.
    let (net, _) = SiameseNet::init(wide, 1, &Device::Cpu).unwrap();
    let x = images(5, 35, 3);
    let all = net.embed(&x).unwrap();
    assert_eq!(all.dims(), &[5, 512]);
    let one = net.embed(&x.narrow(0, 2, 1).unwrap()).unwrap();
    let row: Vec<f32> = all.get(2).unwrap().to_vec1().unwrap();
    assert_eq!(one.get(0).unwrap().to_vec1::<f32>().unwrap(), row);
    // The untrained head scores by negative L1 distance: identical images score
    // highest.
    let s = net.score_all(&all, &all).unwrap().to_vec2::<f32>().unwrap();
    for (i, r) in s.iter().enumerate() {
        assert!(
            r.iter().enumerate().all(|(j, &v)| j == i || v < r[i]),
            "{r:?}"
        );
    }
}

/// AdaBN: the adapted running statistics are the exact statistics of the images,
/// whatever the batch, so inference with them computes what training mode computes
/// on the whole set at once; the first block's against a hand computation; the
/// original network is left alone; Koch's tower has nothing to adapt.
#[test]
fn batch_norm_adapts_to_the_statistics_of_given_images() {
    let config = ModelConfig::new(Arch::CONV4);
    let (net, _) = SiameseNet::init(config, 11, &Device::Cpu).unwrap();
    // Shifted and scaled away from the initial statistics (mean 0, variance 1).
    let x = (images(10, 28, 12) * 3.0)
        .unwrap()
        .affine(1.0, 0.5)
        .unwrap();
    let before = net.running_stats();
    let whole = net.with_batch_norm_adapted_to(&x, 10).unwrap();
    let chunked = net.with_batch_norm_adapted_to(&x, 3).unwrap();
    assert_eq!(
        net.running_stats(),
        before,
        "the original keeps its statistics"
    );
    for (a, b) in whole.running_stats().iter().zip(chunked.running_stats()) {
        for (u, v) in a.mean.iter().chain(&a.var).zip(b.mean.iter().chain(&b.var)) {
            assert!((u - v).abs() <= 1e-4 * u.abs().max(1.0), "{u} against {v}");
        }
    }

    // Block 1 by hand: the convolution (zero padding 1), then per-channel mean and
    // unbiased variance over images × positions.
    let kernel = &net.named_tensors()[0].1;
    let conv = x.conv2d(kernel, 1, 1, 1, 1).unwrap();
    let count = (10 * 28 * 28) as f64;
    let mean = conv.mean_keepdim((0, 2, 3)).unwrap();
    let var = (conv
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .sum((0, 2, 3))
        .unwrap()
        / (count - 1.0))
        .unwrap();
    let mean: Vec<f32> = mean.flatten_all().unwrap().to_vec1().unwrap();
    let var: Vec<f32> = var.to_vec1().unwrap();
    let first = &chunked.running_stats()[0];
    for c in 0..mean.len() {
        assert!((first.mean[c] - mean[c]).abs() <= 1e-4 * mean[c].abs().max(1.0));
        assert!((first.var[c] - var[c]).abs() <= 1e-4 * var[c].abs().max(1.0));
    }

    // Training mode normalises by the batch's own (biased) statistics: the adapted
    // network's inference agrees up to the unbiasing factor, largest in the last
    // block (10 images × 3×3 positions: √(90/89), about 0.6%).
    let adapted = chunked.embed(&x).unwrap();
    let train_mode = net.detach().embed_train(&x).unwrap();
    let scale = train_mode
        .abs()
        .unwrap()
        .max_keepdim(1)
        .unwrap()
        .max(0)
        .unwrap();
    let scale: f32 = scale
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let diff = max_abs_diff(&adapted, &train_mode);
    assert!(diff <= 1e-2 * scale, "{diff} (features up to {scale})");
    let unadapted = net.embed(&x).unwrap();
    let off = max_abs_diff(&unadapted, &train_mode);
    assert!(off > 10.0 * diff, "unadapted {off}, adapted {diff}");

    let err = koch()
        .0
        .with_batch_norm_adapted_to(&images(2, 105, 1), 2)
        .unwrap_err();
    assert!(matches!(err, ModelError::BatchNormAdaptation(_)), "{err}");
    assert!(net.with_batch_norm_adapted_to(&x, 0).is_err());
    let wrong = images(2, 32, 1);
    assert!(matches!(
        net.with_batch_norm_adapted_to(&wrong, 2),
        Err(ModelError::InputShape { .. })
    ));
}
