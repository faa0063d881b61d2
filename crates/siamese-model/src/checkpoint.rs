//! Checkpoints: the weights, the network's configuration and where they came from,
//! in one file.
//!
//! # Format
//! A checkpoint is one [safetensors](https://huggingface.co/docs/safetensors) file
//! (by convention `model.safetensors`) holding every parameter as a little-endian f32
//! tensor under its name in [`ModelConfig::param_specs`] (`tower.conv1.weight`,
//! `tower.conv1.bias`, ..., `tower.fc.weight`, `tower.fc.bias`, `head.weight`,
//! `head.bias`; PyTorch's layouts: kernels `(out, in, k, k)`, linear weights
//! `(out, in)`), batch norm's running statistics under their names in
//! [`ModelConfig::buffer_specs`] (`tower.block1.bn.running_mean`, ...; PyTorch's
//! names and meaning), and three string entries in the safetensors header's
//! `__metadata__`:
//!
//! * `format`: [`CHECKPOINT_FORMAT`];
//! * `config`: the [`ModelConfig`] as JSON, e.g. `{"arch":"koch","input_size":105}`;
//! * `provenance`: free-form JSON chosen by whoever saved it (the trainer stores its
//!   configuration, the data digest, the git commit, the step...).
//!
//! Any safetensors reader can load the weights; `python -c "import safetensors;
//! print(safetensors.safe_open('model.safetensors','np').metadata())"` shows the rest.
//!
//! # Atomicity
//! [`SiameseNet::save`] writes a temporary file `.NAME.XXXXXX.tmp` in the destination
//! folder, flushes it to disk, then renames it over `NAME`: a reader sees the old
//! checkpoint or the new one, never a partial file. On failure the temporary file is
//! removed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::{ModelConfig, ModelError, SiameseNet};

/// The value of the `format` metadata entry of the checkpoints this crate writes.
pub const CHECKPOINT_FORMAT: &str = "siamese-oneshot/1";

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The network's architecture and input size.
    pub config: ModelConfig,
    /// Free-form JSON stored by whoever saved it (`null` if nothing).
    pub provenance: serde_json::Value,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io {
        action,
        path,
        source,
    }
}

/// Parses the `__metadata__` entries of a checkpoint.
fn parse_info(
    path: &Path,
    metadata: Option<&HashMap<String, String>>,
) -> Result<CheckpointInfo, ModelError> {
    let metadata =
        metadata.ok_or_else(|| corrupt(path, "no metadata: not a siamese-oneshot checkpoint"))?;
    match metadata.get("format") {
        Some(f) if f == CHECKPOINT_FORMAT => {}
        Some(f) => {
            return Err(corrupt(
                path,
                format!("format {f:?}, expected {CHECKPOINT_FORMAT:?}"),
            ));
        }
        None => {
            return Err(corrupt(
                path,
                "no format entry: not a siamese-oneshot checkpoint",
            ));
        }
    }
    let config = metadata
        .get("config")
        .ok_or_else(|| corrupt(path, "no config entry"))?;
    let config: ModelConfig = serde_json::from_str(config)
        .map_err(|e| corrupt(path, format!("config {config:?}: {e}")))?;
    let provenance = match metadata.get("provenance") {
        Some(p) => {
            serde_json::from_str(p).map_err(|e| corrupt(path, format!("provenance: {e}")))?
        }
        None => serde_json::Value::Null,
    };
    Ok(CheckpointInfo { config, provenance })
}

/// Reads the configuration and provenance of the checkpoint at `path` from its
/// header, without reading the weights.
pub fn read_checkpoint_info(path: impl AsRef<Path>) -> Result<CheckpointInfo, ModelError> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| corrupt(path, "shorter than a safetensors header"))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(corrupt(path, format!("header length {len} is implausible")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| corrupt(path, "truncated header"))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<HashMap<String, String>>,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| corrupt(path, format!("header: {e}")))?;
    parse_info(path, header.metadata.as_ref())
}

/// Reads the checkpoint at `path` and checks it: its tensors (f32, on `device`) by
/// name, and what it says about itself.
fn read_checkpoint(
    path: &Path,
    expected: Option<&ModelConfig>,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointInfo), ModelError> {
    let bytes = std::fs::read(path).map_err(io_err("reading", path))?;
    let (_, metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let info = parse_info(path, metadata.metadata().as_ref())?;
    if let Some(expected) = expected
        && *expected != info.config
    {
        return Err(ModelError::ArchMismatch {
            path: path.to_path_buf(),
            expected: *expected,
            found: info.config,
        });
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    let specs = info
        .config
        .tensor_specs()
        .map_err(|e| corrupt(path, e.to_string()))?;
    let mut tensors = HashMap::with_capacity(specs.len());
    for spec in &specs {
        let view = st.tensor(&spec.name).map_err(|_| {
            corrupt(
                path,
                format!("no tensor {} (a {} network has it)", spec.name, info.config),
            )
        })?;
        if view.shape() != spec.shape.as_slice() {
            return Err(corrupt(
                path,
                format!(
                    "tensor {} has shape {:?}, expected {:?}",
                    spec.name,
                    view.shape(),
                    spec.shape
                ),
            ));
        }
        let tensor = view
            .load(device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| corrupt(path, format!("tensor {}: {e}", spec.name)))?;
        tensors.insert(spec.name.clone(), tensor);
    }
    if let Some(extra) = st.names().into_iter().find(|n| !tensors.contains_key(*n)) {
        return Err(corrupt(
            path,
            format!("unexpected tensor {extra} for a {} network", info.config),
        ));
    }
    Ok((tensors, info))
}

impl SiameseNet {
    /// Saves the weights, the configuration and `provenance` to `path` atomically (see
    /// the [module documentation](self)), creating its folder if needed.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        provenance: &serde_json::Value,
    ) -> Result<(), ModelError> {
        let path = path.as_ref();
        if path.file_name().is_none() {
            return Err(ModelError::Io {
                action: "writing",
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
            });
        }
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err("creating the folder of", path))?;
        }

        let buffers = self.named_buffers()?;
        let tensors = self
            .named_tensors()
            .iter()
            .chain(&buffers)
            .map(|(n, t)| {
                Ok((
                    n.clone(),
                    t.to_device(&Device::Cpu)?
                        .to_dtype(DType::F32)?
                        .contiguous()?,
                ))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            (
                "config".to_string(),
                serde_json::to_string(self.config()).expect("plain struct"),
            ),
            ("provenance".to_string(), provenance.to_string()),
        ]);
        let bytes = safetensors::serialize(tensors, Some(metadata))
            .map_err(|e| corrupt(path, e.to_string()))?;
        // The atomic-write-file crate, like every file this workspace writes: a
        // temporary file, flushed, renamed over `path` (the old file or the new one,
        // never part of one).
        let write = || -> std::io::Result<()> {
            let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.commit()
        };
        write().map_err(io_err("writing", path))?;
        tracing::debug!("saved {} to {}", self.config(), path.display());
        Ok(())
    }

    /// Loads the checkpoint at `path` for inference: plain tensors (no `Var`s) on
    /// `device`. With `expected`, a checkpoint of another configuration is
    /// [`ModelError::ArchMismatch`]; without, the network is whatever the file holds.
    pub fn load(
        path: impl AsRef<Path>,
        expected: Option<&ModelConfig>,
        device: &Device,
    ) -> Result<(Self, CheckpointInfo), ModelError> {
        let (tensors, info) = read_checkpoint(path.as_ref(), expected, device)?;
        let net = SiameseNet::new(
            info.config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )?;
        Ok((net, info))
    }

    /// Loads the checkpoint at `path` to train further: the network and the `VarMap`
    /// of its parameters (for an optimizer), on `device`. `expected` as in
    /// [`load`](Self::load).
    pub fn load_trainable(
        path: impl AsRef<Path>,
        expected: Option<&ModelConfig>,
        device: &Device,
    ) -> Result<(Self, VarMap, CheckpointInfo), ModelError> {
        let (tensors, info) = read_checkpoint(path.as_ref(), expected, device)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            for (name, tensor) in tensors {
                data.insert(name, Var::from_tensor(&tensor)?);
            }
        }
        let net = SiameseNet::new(
            info.config,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        Ok((net, varmap, info))
    }
}
