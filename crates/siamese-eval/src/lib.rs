//! One-shot evaluation of a siamese network (or a baseline) on Omniglot: Koch's
//! within-alphabet construction, Lake's 20 official runs, and binary verification,
//! with 95% confidence intervals.
//!
//! It uses `siamese-data` for tasks and `siamese-model` for embeddings; it is filled
//! in by the evaluation issue.
