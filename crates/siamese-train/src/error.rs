//! The crate's error type.

use std::path::PathBuf;

/// Everything that can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration file that cannot be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    ConfigFile { path: PathBuf, reason: String },

    /// A configuration whose values do not fit together (names the field).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Reading or writing a file of the run folder failed.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A run folder that cannot be resumed (missing or corrupt checkpoint files).
    #[error("cannot resume {}: {reason}", path.display())]
    Resume { path: PathBuf, reason: String },

    /// The loss became NaN or infinite. Training stopped; the last good checkpoint
    /// (if one was written) is kept untouched.
    #[error(
        "the training loss is {loss} at step {step} (epoch {epoch}): training stopped. {}",
        match last_good {
            Some(p) => format!("The last good checkpoint is kept in {} (resume with --resume, \
                                perhaps with a lower learning rate).", p.display()),
            None => "No checkpoint had been written yet.".to_string(),
        }
    )]
    NonFiniteLoss {
        step: u64,
        epoch: u64,
        loss: f32,
        last_good: Option<PathBuf>,
    },

    /// Loading or sampling the data failed.
    #[error(transparent)]
    Data(#[from] siamese_data::DataError),

    /// Building, running or saving the network failed.
    #[error(transparent)]
    Model(#[from] siamese_model::ModelError),

    /// The validation (one-shot evaluation) failed.
    #[error("validation")]
    Eval(#[from] siamese_eval::EvalError),

    /// A tensor operation failed (loss, optimizer step...).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TrainError::Io {
            action,
            path,
            source,
        }
    }
}
