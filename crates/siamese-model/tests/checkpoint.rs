//! Checkpoints: round trips, mismatches, corrupt files, atomic writes.

use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};
use siamese_model::{
    Arch, Device, ModelConfig, ModelError, SiameseNet, Tensor, read_checkpoint_info,
};

fn images(n: usize, s: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(0f32, 1f32).unwrap();
    let data: Vec<f32> = (0..n * s * s).map(|_| uniform.sample(&mut rng)).collect();
    Tensor::from_vec(data, (n, 1, s, s), &Device::Cpu).unwrap()
}

fn koch35(seed: u64) -> SiameseNet {
    SiameseNet::init(ModelConfig::new(Arch::Koch35), seed, &Device::Cpu)
        .unwrap()
        .0
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip_gives_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("model.safetensors");
    let net = koch35(1);
    let provenance = serde_json::json!({"git_commit": "abc123", "train": {"lr": 6e-5}});
    net.save(&path, &provenance).unwrap();
    assert_eq!(
        files_in(&dir.path().join("run")),
        ["model.safetensors"],
        "no temporary file left"
    );

    let info = read_checkpoint_info(&path).unwrap();
    assert_eq!(info.config, ModelConfig::new(Arch::Koch35));
    assert_eq!(info.provenance, provenance);

    let (left, right) = (images(3, 35, 1), images(3, 35, 2));
    let want: Vec<f32> = net.forward_pairs(&left, &right).unwrap().to_vec1().unwrap();
    let (loaded, info2) =
        SiameseNet::load(&path, Some(&ModelConfig::new(Arch::Koch35)), &Device::Cpu).unwrap();
    assert_eq!(info2, info);
    assert_eq!(
        loaded
            .forward_pairs(&left, &right)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        want
    );
    let (trainable, varmap, _) = SiameseNet::load_trainable(&path, None, &Device::Cpu).unwrap();
    assert_eq!(varmap.all_vars().len(), 10);
    assert_eq!(
        trainable
            .forward_pairs(&left, &right)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        want
    );

    // Saving again replaces the file, still without leftovers.
    koch35(2).save(&path, &serde_json::Value::Null).unwrap();
    assert_eq!(files_in(&dir.path().join("run")), ["model.safetensors"]);
    let (other, info3) = SiameseNet::load(&path, None, &Device::Cpu).unwrap();
    assert_eq!(info3.provenance, serde_json::Value::Null);
    assert_ne!(
        other
            .forward_pairs(&left, &right)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        want
    );
}

#[test]
fn another_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    koch35(1).save(&path, &serde_json::Value::Null).unwrap();
    let err =
        SiameseNet::load(&path, Some(&ModelConfig::new(Arch::Koch)), &Device::Cpu).unwrap_err();
    match &err {
        ModelError::ArchMismatch {
            path: p,
            expected,
            found,
        } => {
            assert_eq!(p, &path);
            assert_eq!(expected.arch, Arch::Koch);
            assert_eq!(found.arch, Arch::Koch35);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("koch35") && msg.contains("koch (105"),
        "{msg}"
    );
    // The trainable load checks the same way.
    assert!(matches!(
        SiameseNet::load_trainable(&path, Some(&ModelConfig::new(Arch::Koch)), &Device::Cpu),
        Err(ModelError::ArchMismatch { .. })
    ));
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.safetensors");
    let err = SiameseNet::load(&missing, None, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing.safetensors"), "{err}");
    assert!(matches!(
        read_checkpoint_info(&missing),
        Err(ModelError::Io { .. })
    ));

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    for err in [
        SiameseNet::load(&garbage, None, &Device::Cpu).unwrap_err(),
        read_checkpoint_info(&garbage).unwrap_err(),
    ] {
        assert!(
            matches!(err, ModelError::CorruptCheckpoint { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("garbage.safetensors"), "{err}");
    }

    // A checkpoint cut short: the header is intact, the weights are not.
    let good = dir.path().join("good.safetensors");
    koch35(1).save(&good, &serde_json::Value::Null).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = SiameseNet::load(&truncated, None, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, ModelError::CorruptCheckpoint { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");

    // A valid safetensors file that is not one of ours.
    let foreign = dir.path().join("foreign.safetensors");
    let t = Tensor::zeros((2, 2), siamese_model::DType::F32, &Device::Cpu).unwrap();
    t.save_safetensors("w", &foreign).unwrap();
    let err = SiameseNet::load(&foreign, None, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, ModelError::CorruptCheckpoint { .. }),
        "{err:?}"
    );
}

/// A batch-normalised network whose running statistics have moved saves them,
/// loads them back (for inference and for training) and scores identically.
#[test]
fn batch_norm_statistics_round_trip() {
    let config = ModelConfig::new(Arch::CONV4);
    let (net, _) = SiameseNet::init(config, 3, &Device::Cpu).unwrap();
    let before = net.running_stats();
    net.embed_train(&images(6, 28, 4)).unwrap();
    let moved = net.running_stats();
    assert_ne!(
        before, moved,
        "training mode updates the running statistics"
    );
    // Inference leaves them alone.
    net.embed(&images(6, 28, 5)).unwrap();
    assert_eq!(net.running_stats(), moved);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    net.save(&path, &serde_json::Value::Null).unwrap();
    let (left, right) = (images(4, 28, 6), images(4, 28, 7));
    let want: Vec<f32> = net.forward_pairs(&left, &right).unwrap().to_vec1().unwrap();
    let (loaded, info) = SiameseNet::load(&path, Some(&config), &Device::Cpu).unwrap();
    assert_eq!(info.config, config);
    assert_eq!(loaded.running_stats(), moved);
    let got: Vec<f32> = loaded
        .forward_pairs(&left, &right)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got, want);
    let (trainable, _, _) = SiameseNet::load_trainable(&path, Some(&config), &Device::Cpu).unwrap();
    assert_eq!(trainable.running_stats(), moved);
    // A checkpoint without the statistics is refused by name.
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.remove("tower.block3.bn.running_mean");
    let partial = dir.path().join("partial.safetensors");
    let metadata = std::collections::HashMap::from([
        (
            "format".to_string(),
            siamese_model::CHECKPOINT_FORMAT.to_string(),
        ),
        (
            "config".to_string(),
            serde_json::to_string(&config).unwrap(),
        ),
    ]);
    safetensors::serialize_to_file(tensors, Some(metadata), &partial).unwrap();
    let err = SiameseNet::load(&partial, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tower.block3.bn.running_mean"), "{err}");
}
