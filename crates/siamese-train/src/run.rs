//! Run folders: `runs/<name>/` with the configuration, the `last` and `best`
//! checkpoints, the metrics and the plots; `runs/latest` points at the newest run.
//!
//! ```text
//! runs/
//!   latest -> 2025-11-28T20-31-05        (symlink, replaced atomically)
//!   2025-11-28T20-31-05/
//!     config.json                         the resolved configuration
//!     metrics.jsonl                       one JSON object per line (see metrics)
//!     loss.png, validation.png            plots, redrawn as training goes
//!     last/  best/                        checkpoints:
//!       model.safetensors                 weights + config + provenance
//!       optimizer.safetensors             the optimizer's tensors (moments, velocities)
//!       state.json                        step, epoch, best score, optimizer step and
//!                                         hyper-parameters, early-stopping counter
//! ```
//!
//! Every file is written to a temporary name in its folder and renamed into place. A
//! checkpoint folder is written whole as `.last.tmp-PID/` and then swapped in (the old
//! one is first renamed to `.last.old`, which [`RunDir::checkpoint`] still finds if the
//! process dies between the two renames).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use siamese_model::SiameseNet;

use crate::TrainError;
use crate::optim::OptimizerState;

/// The name of the link to the newest run in a runs folder.
pub const LATEST: &str = "latest";

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `runs_root/<name>` (default name: the UTC time, `2025-11-28T20-31-05`,
    /// with `-2`, `-3`... appended if taken) and points `runs_root/latest` at it. A
    /// given name that exists already is an error (resume it with `--resume`).
    pub fn create(runs_root: &Path, name: Option<&str>) -> Result<Self, TrainError> {
        std::fs::create_dir_all(runs_root).map_err(TrainError::io("creating", runs_root))?;
        let path = match name {
            Some(name) => {
                if name.is_empty()
                    || name == LATEST
                    || name.contains(['/', '\\'])
                    || name.starts_with('.')
                {
                    return Err(TrainError::Config(format!(
                        "invalid run name {name:?}: a plain folder name other than {LATEST:?}"
                    )));
                }
                let path = runs_root.join(name);
                if path.exists() {
                    return Err(TrainError::Config(format!(
                        "run folder {} exists already: resume it with --resume {0}, or choose another --name",
                        path.display()
                    )));
                }
                std::fs::create_dir(&path).map_err(TrainError::io("creating", &path))?;
                path
            }
            None => {
                let stamp = utc_timestamp(SystemTime::now());
                let mut n = 1;
                loop {
                    let candidate = if n == 1 {
                        runs_root.join(&stamp)
                    } else {
                        runs_root.join(format!("{stamp}-{n}"))
                    };
                    match std::fs::create_dir(&candidate) {
                        Ok(()) => break candidate,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                        Err(e) => return Err(TrainError::io("creating", &candidate)(e)),
                    }
                }
            }
        };
        let run = RunDir { path };
        run.update_latest()?;
        Ok(run)
    }

    /// The run folder at `path`, as it is (for a member of an ensemble).
    pub(crate) fn at(path: PathBuf) -> Self {
        RunDir { path }
    }

    /// An existing run folder (to resume).
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let path = if path.file_name().is_some_and(|n| n == LATEST) {
            std::fs::canonicalize(path).map_err(TrainError::io("resolving", path))?
        } else {
            path.to_path_buf()
        };
        if !path.join("config.json").is_file() {
            return Err(TrainError::Resume {
                path,
                reason: "no config.json: not a run folder".into(),
            });
        }
        Ok(RunDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    pub fn last_dir(&self) -> PathBuf {
        self.path.join("last")
    }

    pub fn best_dir(&self) -> PathBuf {
        self.path.join("best")
    }

    /// The best checkpoint's network: what `eval` and the other commands load.
    pub fn best_model(&self) -> PathBuf {
        Self::best_model_in(&self.path)
    }

    /// [`RunDir::best_model`] of the run folder `dir` (which need not be checked).
    pub fn best_model_in(dir: &Path) -> PathBuf {
        dir.join("best").join(MODEL_FILE)
    }

    /// Points `<runs root>/latest` at this run: a relative symlink made under a
    /// temporary name and renamed over the old one (atomic). Elsewhere than unix, a
    /// `latest` text file holding the run's name.
    pub fn update_latest(&self) -> Result<(), TrainError> {
        let Some(root) = self.path.parent() else {
            return Ok(());
        };
        let link = root.join(LATEST);
        let name = self.name();
        #[cfg(unix)]
        {
            let tmp = root.join(format!(".{LATEST}.tmp-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&name, &tmp).map_err(TrainError::io("linking", &tmp))?;
            std::fs::rename(&tmp, &link).map_err(TrainError::io("replacing", &link))?;
        }
        #[cfg(not(unix))]
        write_atomic(&link, name.as_bytes())?;
        Ok(())
    }

    /// The checkpoint folder `last` (or `best`) if it exists, including a `last`
    /// caught between the two renames of a swap.
    pub fn checkpoint(&self, which: &str) -> Option<PathBuf> {
        let dir = self.path.join(which);
        if dir.join("state.json").is_file() {
            return Some(dir);
        }
        let old = self.path.join(format!(".{which}.old"));
        old.join("state.json").is_file().then_some(old)
    }
}

/// The network's file in a checkpoint folder (`last/`, `best/`).
pub const MODEL_FILE: &str = "model.safetensors";

/// The file of a `last` checkpoint holding the averaged weights of a run that
/// averages them ([`crate::WeightAverage`]).
pub const AVERAGE_FILE: &str = "average.safetensors";

/// Writes `bytes` to `path` atomically with the `atomic-write-file` crate (the one
/// way every crate of the workspace writes a file): the bytes go to a temporary file
/// in the same folder, are flushed to disk, and replace `path` by a rename, so a
/// reader or a crash sees the old file or the new one, never part of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    use std::io::Write;
    let write = || -> std::io::Result<()> {
        let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
        file.write_all(bytes)?;
        file.commit()
    };
    write().map_err(TrainError::io("writing", path))
}

/// `YYYY-MM-DDTHH-MM-SS` in UTC (a file-name-safe ISO 8601).
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The best validation so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    /// Steps completed when it was measured.
    pub step: u64,
    pub epoch: u64,
    pub accuracy: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

/// Everything but the tensors that a checkpoint needs to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed; the next step to take has this index.
    pub step: u64,
    /// The epoch of the next step.
    pub epoch: u64,
    pub best: Option<BestScore>,
    /// Validations since the last new best (the early-stopping counter).
    pub validations_since_best: u64,
    /// Training time so far, all invocations, seconds.
    pub train_seconds: f64,
    /// `sgd` or `adam`.
    pub optimizer: String,
    /// The optimizer's own step count.
    pub optimizer_step: u64,
    /// The optimizer's hyper-parameters (JSON, as its `state()` gives them).
    pub optimizer_hypers: serde_json::Value,
    /// Why the run stopped, once it has (absent while it can go on).
    pub finished: Option<String>,
}

/// Saves a checkpoint folder `dir` (`last` or `best`) whole: the network, the
/// averaged network if there is one ([`AVERAGE_FILE`]), the optimizer's tensors and
/// `state`, into a temporary folder swapped in at the end.
pub fn save_checkpoint(
    dir: &Path,
    net: &SiameseNet,
    averaged: Option<&SiameseNet>,
    optimizer: &OptimizerState,
    state: &TrainState,
    provenance: &serde_json::Value,
) -> Result<(), TrainError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io("removing", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(TrainError::io("creating", &tmp))?;
    // A failure (a full disk) leaves no half-written folder behind.
    let written = write_checkpoint_files(&tmp, net, averaged, optimizer, state, provenance);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    // Swap: dir → .old, tmp → dir, drop .old.
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(TrainError::io("removing", &old))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(TrainError::io("moving aside", dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(TrainError::io("renaming into place", dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(TrainError::io("removing", &old))?;
    }
    Ok(())
}

/// The files of a checkpoint, into the folder `tmp`.
fn write_checkpoint_files(
    tmp: &Path,
    net: &SiameseNet,
    averaged: Option<&SiameseNet>,
    optimizer: &OptimizerState,
    state: &TrainState,
    provenance: &serde_json::Value,
) -> Result<(), TrainError> {
    net.save(tmp.join(MODEL_FILE), provenance)?;
    if let Some(avg) = averaged {
        avg.save(tmp.join(AVERAGE_FILE), provenance)?;
    }
    let tensors: HashMap<String, Tensor> = optimizer
        .tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let opt_bytes = safetensors::serialize(&tensors, None)
        .map_err(|e| TrainError::Tensor(candle_core::Error::Msg(e.to_string())))?;
    write_atomic(&tmp.join("optimizer.safetensors"), &opt_bytes)?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(&tmp.join("state.json"), &json)
}

/// A checkpoint read back: the network as trainable `Var`s, the averaged network if
/// the checkpoint has one, the optimizer's state and the run state.
pub struct LoadedCheckpoint {
    pub net: SiameseNet,
    pub averaged: Option<SiameseNet>,
    pub varmap: candle_nn::VarMap,
    pub optimizer: OptimizerState,
    pub state: TrainState,
}

/// Reads the checkpoint folder `dir` onto `device`.
pub fn load_checkpoint(
    dir: &Path,
    expected: &siamese_model::ModelConfig,
    device: &Device,
) -> Result<LoadedCheckpoint, TrainError> {
    let bad = |reason: String| TrainError::Resume {
        path: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| bad(format!("{}: {e}", state_path.display())))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", state_path.display())))?;
    let (net, varmap, _) =
        SiameseNet::load_trainable(dir.join(MODEL_FILE), Some(expected), device)?;
    let average_path = dir.join(AVERAGE_FILE);
    let averaged = if average_path.exists() {
        Some(SiameseNet::load(&average_path, Some(expected), device)?.0)
    } else {
        None
    };
    let opt_path = dir.join("optimizer.safetensors");
    let tensors = candle_core::safetensors::load(&opt_path, device)
        .map_err(|e| bad(format!("{}: {e}", opt_path.display())))?;
    Ok(LoadedCheckpoint {
        net,
        averaged,
        varmap,
        optimizer: OptimizerState {
            step: state.optimizer_step,
            hypers: state.optimizer_hypers.clone(),
            tensors,
        },
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_764_361_865);
        assert_eq!(utc_timestamp(t), "2025-11-28T20-31-05");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00-00-00");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00-00-00");
    }

    #[test]
    fn runs_are_named_and_latest_follows() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::create(root.path(), None).unwrap();
        let b = RunDir::create(root.path(), None).unwrap();
        assert_ne!(a.path(), b.path());
        let latest = root.path().join(LATEST);
        assert_eq!(
            std::fs::canonicalize(&latest).unwrap(),
            std::fs::canonicalize(b.path()).unwrap()
        );
        let c = RunDir::create(root.path(), Some("mine")).unwrap();
        assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new("mine"));
        assert!(RunDir::create(root.path(), Some("mine")).is_err());
        assert!(RunDir::create(root.path(), Some("latest")).is_err());
        assert_eq!(c.name(), "mine");
        // No stray temporary links.
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
