//! Build and CI automation for the workspace, run as `cargo xtask <command>`.
fn main() {}
