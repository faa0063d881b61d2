//! The `siamese-cli` binary: parses arguments and wires the library crates together.
fn main() {}
