//! The siamese network of Koch, Zemel & Salakhutdinov (2015): convolutional towers
//! that embed a character image, and the weighted-L1 head that scores a pair.
//!
//! This crate knows no data set: it takes image tensors and returns features and
//! logits.

pub mod cpu_ops;
