//! End-to-end tests of the `siamese-cli` binary live in `tests/tests/`; this library
//! is empty and exists so that they form a workspace member of their own.
