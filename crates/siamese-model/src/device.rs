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
    for backend in [Backend::Cuda, Backend::Metal] {
        if !backend.compiled() {
            continue;
        }
        match backend.new_device(0) {
            Ok(device) => {
                tracing::info!("device auto: using {} device 0", backend.name());
                return device;
            }
            Err(err) => tracing::info!("device auto: no {} device ({err})", backend.name()),
        }
    }
    tracing::info!(
        "device auto: using the CPU ({} threads)",
        candle_core::utils::get_num_threads()
    );
    Device::Cpu
}
