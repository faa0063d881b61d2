//! Helpers shared by the data crate's integration tests (see `siamese_tests`): where
//! the offline mirror of the Omniglot zips is, and a copy of the data set extracted
//! once for all tests.
#![allow(unused_imports)]

pub use siamese_tests::{extracted_dataset, mirror_dir, workspace_root};
