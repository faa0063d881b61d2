//! Training of the siamese network: Koch's layer-wise SGD schedule and Adam, on
//! sampled pairs or on all pairs of a batch, with validation by one-shot evaluation,
//! early stopping and resumable runs.
//!
//! So far: the optimizers ([`optim`]); the training loop comes with the training
//! issue.

pub mod optim;
