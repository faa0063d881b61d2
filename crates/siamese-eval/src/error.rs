use siamese_data::DataError;

/// Errors of building trial sets, running a method and summarising its results.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Loading or sampling the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A tensor operation of a candle-based method failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A method broke the [`crate::OneShotScorer`] contract (wrong number of
    /// embeddings or scores, images it cannot compare, ...).
    #[error("method {method}: {reason}")]
    Method { method: String, reason: String },
    /// Any other failure of a method (for adapters around foreign code).
    #[error("method failed: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Arguments or a trial set that cannot be evaluated.
    #[error("{0}")]
    Invalid(String),
}

impl EvalError {
    pub(crate) fn method(method: &str, reason: impl Into<String>) -> Self {
        EvalError::Method {
            method: method.to_string(),
            reason: reason.into(),
        }
    }
}
