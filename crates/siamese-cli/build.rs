//! With the `cuda` feature, bakes a run path for the usual CUDA library folders into
//! the binary, so that it finds `libcudart`, `libcublas`, ... of a standard CUDA
//! install (and the driver's `libcuda`) without `LD_LIBRARY_PATH`. A build script
//! rather than `RUSTFLAGS`, which would rebuild every dependency.
//!
//! `SIAMESE_CUDA_RPATH` (folders separated by `:`) replaces the default folders.

const DEFAULT_RPATH: &[&str] = &[
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/local/nvidia/lib64",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SIAMESE_CUDA_RPATH");
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(cuda && linux) {
        return;
    }
    let custom = std::env::var("SIAMESE_CUDA_RPATH").ok();
    let folders: Vec<&str> = match &custom {
        Some(list) => list.split(':').filter(|f| !f.is_empty()).collect(),
        None => DEFAULT_RPATH.to_vec(),
    };
    for folder in folders {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{folder}");
    }
}
