//! Choosing the device the network runs on, in one place for every command.

use candle_core::Device;

use crate::ModelError;

/// Opens the device named by `spec`:
///
/// * `cpu`: the CPU;
/// * `cuda` or `cuda:N`: CUDA device 0 or N (needs the `cuda` feature);
/// * `metal` or `metal:N`: Metal device 0 or N (needs the `metal` feature);
/// * `auto`: CUDA device 0 if the binary was built with `cuda` and it answers, else
///   Metal device 0 if built with `metal` and it answers, else the CPU.
///
/// Logs the choice at `info` level. Asking explicitly for a backend the binary was
/// built without is [`ModelError::DeviceNotCompiled`], which says which feature to
/// build with; a compiled-in backend whose device does not open is
/// [`ModelError::DeviceUnavailable`].
pub fn select_device(spec: &str) -> Result<Device, ModelError> {
    let lower = spec.trim().to_ascii_lowercase();
    let (kind, ordinal) = match lower.split_once(':') {
        Some((kind, n)) => {
            let n = n
                .parse::<usize>()
                .map_err(|_| ModelError::UnknownDevice(spec.to_string()))?;
            (kind, Some(n))
        }
        None => (lower.as_str(), None),
    };
    match (kind, ordinal) {
        ("auto", None) => Ok(auto_device()),
        ("cpu", None) => {
            tracing::info!(
                "using the CPU ({} threads)",
                candle_core::utils::get_num_threads()
            );
            Ok(Device::Cpu)
        }
        ("cuda", n) => open(spec, Backend::Cuda, n.unwrap_or(0)),
        ("metal", n) => open(spec, Backend::Metal, n.unwrap_or(0)),
        _ => Err(ModelError::UnknownDevice(spec.to_string())),
    }
}

/// A short name of the device's kind: `cpu`, `cuda` or `metal`.
pub fn device_kind(device: &Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else if device.is_metal() {
        "metal"
    } else {
        "cpu"
    }
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Cuda,
    Metal,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Cuda => "CUDA",
            Backend::Metal => "Metal",
        }
    }

    fn feature(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    fn compiled(self) -> bool {
        match self {
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::Metal => cfg!(feature = "metal"),
        }
    }

    fn new_device(self, ordinal: usize) -> candle_core::Result<Device> {
        match self {
            Backend::Cuda => Device::new_cuda(ordinal),
            Backend::Metal => Device::new_metal(ordinal),
        }
    }
}

fn open(spec: &str, backend: Backend, ordinal: usize) -> Result<Device, ModelError> {
    if !backend.compiled() {
        return Err(ModelError::DeviceNotCompiled {
            device: spec.to_string(),
            backend: backend.name(),
            feature: backend.feature(),
        });
    }
    let device = backend
        .new_device(ordinal)
        .map_err(|source| ModelError::DeviceUnavailable {
            device: spec.to_string(),
            source,
        })?;
    tracing::info!("using {} device {ordinal}", backend.name());
    Ok(device)
}

fn auto_device() -> Device {
    let mut reasons = Vec::new();
    for backend in [Backend::Cuda, Backend::Metal] {
        if !backend.compiled() {
            continue;
        }
        match backend.new_device(0) {
            Ok(device) => {
                tracing::info!("device auto: using {} device 0", backend.name());
                return device;
            }
            Err(err) => {
                tracing::info!("device auto: no {} device ({err})", backend.name());
                reasons.push(format!("no {} device answered", backend.name()));
            }
        }
    }
    tracing::info!(
        "device auto: using the CPU ({} threads): {}",
        candle_core::utils::get_num_threads(),
        auto_reason(&reasons)
    );
    Device::Cpu
}

/// Why `auto` chose the CPU, in words.
fn auto_reason(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "this binary has no GPU backend (build with `--features cuda` for CUDA)".to_string()
    } else {
        reasons.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_open_without_a_gpu_backend() {
        assert!(select_device("cpu").unwrap().is_cpu());
        assert!(select_device(" CPU ").unwrap().is_cpu());
        if !cfg!(any(feature = "cuda", feature = "metal")) {
            assert!(select_device("auto").unwrap().is_cpu());
            assert!(auto_reason(&[]).contains("--features cuda"));
        }
        assert_eq!(
            auto_reason(&["no CUDA device answered".into()]),
            "no CUDA device answered"
        );
    }

    #[test]
    fn malformed_specs_are_unknown_devices() {
        for spec in ["gpu", "cuda:x", "cuda:", "cpu:0", "auto:1", "", "cuda:-1"] {
            match select_device(spec) {
                Err(ModelError::UnknownDevice(s)) => assert_eq!(s, spec),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
        let msg = ModelError::UnknownDevice("gpu".into()).to_string();
        assert!(msg.contains("auto, cpu, cuda, cuda:N"), "{msg}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_names_the_feature() {
        for spec in ["cuda", "CUDA:1"] {
            match select_device(spec) {
                Err(
                    e @ ModelError::DeviceNotCompiled {
                        backend: "CUDA",
                        feature: "cuda",
                        ..
                    },
                ) => {
                    let msg = e.to_string();
                    assert!(msg.contains("--features cuda"), "{msg}");
                    assert!(msg.contains(&format!("{spec:?}")), "{msg}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_without_the_feature_names_the_feature() {
        assert!(matches!(
            select_device("metal:0"),
            Err(ModelError::DeviceNotCompiled {
                feature: "metal",
                ..
            })
        ));
    }

    #[test]
    fn device_kinds() {
        assert_eq!(device_kind(&Device::Cpu), "cpu");
    }
}
