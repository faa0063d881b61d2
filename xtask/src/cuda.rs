//! `cargo xtask cuda-toolkit` and `cargo xtask build --cuda`: building the CLI with
//! candle's CUDA backend on a machine without a GPU or a CUDA installation.
//!
//! candle's `cuda` feature needs `nvcc` at build time (candle-kernels compiles its
//! kernels to PTX and a static `libmoe.a`) and cudarc links `-lcuda -lnvrtc -lcurand
//! -lcublas -lcublasLt` (and `-lcudnn` with `cudnn`). The toolkit prepared here is:
//!
//! * five PyPI wheels of NVIDIA's CUDA 13.0 (nvcc, nvvm, crt, cccl, the runtime),
//!   unpacked together into `.cuda-toolkit/nvidia/cu13/{bin,include,lib,nvvm}`,
//!   with the run bits of the compiler's programs set and `lib/libcudart.so`
//!   pointing at the real `libcudart.so.13`;
//! * link-time stub libraries in `lib/stubs` (a folder cudarc's build script
//!   searches) with the real libraries' SONAMEs (`libcuda.so.1`, `libcublas.so.13`,
//!   ...) that define every function cudarc's bindings name. Each stub returns the
//!   library's "not initialised" error (the driver's `CUDA_ERROR_STUB_LIBRARY`, as
//!   NVIDIA's own stub `libcuda.so` does), so a binary run against them here starts,
//!   finds no GPU and says so. The binary binds to the real libraries on a GPU
//!   machine; the stubs are never shipped.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The toolkit's folder, relative to the workspace root (ignored by git).
pub const TOOLKIT_DIR: &str = ".cuda-toolkit";
/// Where the wheels unpack, inside [`TOOLKIT_DIR`]: this is `CUDA_HOME`.
pub const CUDA_SUBDIR: &str = "nvidia/cu13";
/// The target directory of the CUDA build, so that it never invalidates
/// `target/release`.
pub const CUDA_TARGET_DIR: &str = "target/cuda";
/// Hopper (H100, H200), the lent GPU machine's chip.
pub const DEFAULT_COMPUTE_CAP: &str = "90";
/// The CUDA version of the wheels, as cudarc's `CUDARC_CUDA_VERSION` spells it.
pub const CUDARC_VERSION: &str = "13000";

/// The pinned wheels: CUDA 13.0, matching the lent machine's driver (580) and its
/// `/usr/local/cuda`. A newer nvcc would likely emit PTX too new for that driver.
pub const WHEELS: &[(&str, &str)] = &[
    ("nvidia-cuda-nvcc", "13.0.88"),
    ("nvidia-nvvm", "13.0.88"),
    ("nvidia-cuda-crt", "13.0.88"),
    ("nvidia-cuda-cccl", "13.0.85"),
    ("nvidia-cuda-runtime", "13.0.96"),
];

/// A link-time stub of one CUDA library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stub {
    /// The real library's SONAME, which the binary will ask for.
    pub soname: &'static str,
    /// The name the linker looks for (`-lcuda` → `libcuda.so`).
    pub link_name: &'static str,
    /// cudarc's module whose `sys` bindings name the library's functions.
    pub cudarc_module: &'static str,
    /// What every function returns: the library's "not initialised" status.
    pub error_code: i32,
}

pub const STUBS: &[Stub] = &[
    Stub {
        soname: "libcuda.so.1",
        link_name: "libcuda.so",
        cudarc_module: "driver",
        error_code: 34, // CUDA_ERROR_STUB_LIBRARY
    },
    Stub {
        soname: "libcublas.so.13",
        link_name: "libcublas.so",
        cudarc_module: "cublas",
        error_code: 1, // CUBLAS_STATUS_NOT_INITIALIZED
    },
    Stub {
        soname: "libcublasLt.so.13",
        link_name: "libcublasLt.so",
        cudarc_module: "cublaslt",
        error_code: 1, // CUBLAS_STATUS_NOT_INITIALIZED
    },
    Stub {
        soname: "libcurand.so.10",
        link_name: "libcurand.so",
        cudarc_module: "curand",
        error_code: 201, // CURAND_STATUS_NOT_INITIALIZED
    },
    Stub {
        soname: "libnvrtc.so.13",
        link_name: "libnvrtc.so",
        cudarc_module: "nvrtc",
        error_code: 11, // NVRTC_ERROR_INTERNAL_ERROR
    },
    Stub {
        soname: "libcudnn.so.9",
        link_name: "libcudnn.so",
        cudarc_module: "cudnn",
        error_code: 1001, // CUDNN_STATUS_NOT_INITIALIZED
    },
];

/// Functions that return a message (`const char *`) rather than a status.
const MESSAGE_FUNCTIONS: &[&str] = &[
    "nvrtcGetErrorString",
    "cublasGetStatusName",
    "cublasGetStatusString",
    "cublasLtGetStatusName",
    "cublasLtGetStatusString",
    "cudnnGetErrorString",
];
/// Functions that write a message through their second argument.
const MESSAGE_OUT_FUNCTIONS: &[&str] = &["cuGetErrorString", "cuGetErrorName"];
const STUB_MESSAGE: &str = "CUDA stub library (link-time only): no GPU driver here";

/// The prepared toolkit of the workspace at `root`.
pub fn toolkit_home(root: &Path) -> PathBuf {
    root.join(TOOLKIT_DIR).join(CUDA_SUBDIR)
}

/// `cargo xtask cuda-toolkit`: downloads the wheels (once), unpacks them, makes the
/// stubs and prints the environment as `export` lines on stdout.
pub fn prepare_toolkit(root: &Path, python: &str, force: bool) -> Result<()> {
    let start = Instant::now();
    let base = root.join(TOOLKIT_DIR);
    let home = toolkit_home(root);
    let wheels_dir = base.join("wheels");
    fs::create_dir_all(&wheels_dir)
        .with_context(|| format!("cannot create {}", wheels_dir.display()))?;

    let missing: Vec<String> = WHEELS
        .iter()
        .filter(|(name, version)| find_wheel(&wheels_dir, name, version).is_none())
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    if missing.is_empty() {
        tracing::info!(
            "all {} wheels present in {}",
            WHEELS.len(),
            wheels_dir.display()
        );
    } else {
        tracing::info!(
            "downloading {} wheel(s) with {python} -m pip (about 100 MB): {}",
            missing.len(),
            missing.join(" ")
        );
        let status = Command::new(python)
            .args(pip_download_args(&wheels_dir, &missing))
            .status()
            .with_context(|| {
                format!("cannot run `{python} -m pip` (pass --python PATH to use another Python)")
            })?;
        if !status.success() {
            bail!(
                "`{python} -m pip download {}` failed ({status}); the wheels come from PyPI",
                missing.join(" ")
            );
        }
    }

    if force || !toolkit_ready(&home) {
        // Unpack into a fresh folder beside the final one, then rename into place.
        let staging = base.join("nvidia.partial");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        for (name, version) in WHEELS {
            let wheel = find_wheel(&wheels_dir, name, version).with_context(|| {
                format!("{name}=={version}: no wheel in {}", wheels_dir.display())
            })?;
            tracing::info!("unpacking {}", wheel.display());
            unpack_wheel(&wheel, &staging)?;
        }
        let staged_home = staging.join(CUDA_SUBDIR.trim_start_matches("nvidia/"));
        finish_layout(&staged_home)?;
        make_stubs(root, &staged_home.join("lib/stubs"))?;
        let final_dir = base.join("nvidia");
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir)
                .with_context(|| format!("cannot remove {}", final_dir.display()))?;
        }
        fs::rename(&staging, &final_dir).with_context(|| {
            format!(
                "cannot rename {} to {}",
                staging.display(),
                final_dir.display()
            )
        })?;
    } else {
        tracing::info!(
            "toolkit already unpacked in {} (--force redoes it)",
            home.display()
        );
    }

    let version = nvcc_version(&home)?;
    if !version.contains("release 13.0") {
        bail!(
            "{}/bin/nvcc reports {:?}, expected release 13.0",
            home.display(),
            version.lines().last().unwrap_or_default()
        );
    }
    tracing::info!(
        "toolkit ready in {:.1} s: {} ({})",
        start.elapsed().as_secs_f64(),
        home.display(),
        version.lines().last().unwrap_or_default().trim()
    );
    let path = std::env::var_os("PATH");
    let env = toolkit_env(&home, path.as_deref(), DEFAULT_COMPUTE_CAP);
    println!("{}", export_lines(&env));
    tracing::info!(
        "to build: cargo xtask build --cuda (or `eval \"$(cargo xtask cuda-toolkit)\"` and cargo \
         build --release -p siamese-cli --features cuda --target-dir {CUDA_TARGET_DIR})"
    );
    tracing::info!(
        "to start the CUDA build here, without a GPU (it then uses the CPU): \
         LD_LIBRARY_PATH={} {CUDA_TARGET_DIR}/release/siamese-cli ...",
        stub_library_path(&home)
    );
    Ok(())
}

/// The arguments of `python -m pip download` for `specs` into `dest`: binary wheels
/// for x86-64 Linux, without dependencies.
pub fn pip_download_args(dest: &Path, specs: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_12_x86_64",
        "--platform",
        "manylinux2010_x86_64",
        "--dest",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(dest.into());
    args.extend(specs.iter().map(OsString::from));
    args
}

/// The wheel of `name==version` in `dir`, if downloaded (`nvidia-cuda-nvcc` is
/// saved as `nvidia_cuda_nvcc-13.0.88-py3-none-....whl`).
pub fn find_wheel(dir: &Path, name: &str, version: &str) -> Option<PathBuf> {
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

fn toolkit_ready(home: &Path) -> bool {
    home.join("bin/nvcc").is_file()
        && home.join("lib/libcudart.so").exists()
        && STUBS
            .iter()
            .all(|s| home.join("lib/stubs").join(s.link_name).exists())
}

/// Unpacks the `nvidia/...` entries of a wheel under `dest` (which stands for the
/// wheel's `nvidia/` folder), keeping the archive's run bits.
fn unpack_wheel(wheel: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a readable wheel", wheel.display()))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("{}: entry {i}", wheel.display()))?;
        let Some(rel) = entry.enclosed_name() else {
            bail!("{}: unsafe entry name in entry {i}", wheel.display());
        };
        let Ok(rel) = rel.strip_prefix("nvidia") else {
            continue; // dist-info
        };
        let out = dest.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: cannot read {}", wheel.display(), rel.display()))?;
        fs::write(&out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
        if let Some(mode) = entry.unix_mode() {
            set_mode(&out, mode & 0o777)?;
        }
    }
    Ok(())
}

/// Sets the run bits of the compiler's programs and points `lib/libcudart.so` at the
/// real `libcudart.so.13`.
fn finish_layout(home: &Path) -> Result<()> {
    for dir in ["bin", "nvvm/bin"] {
        let dir = home.join(dir);
        let entries =
            fs::read_dir(&dir).with_context(|| format!("{} is missing", dir.display()))?;
        for e in entries {
            let path = e?.path();
            if path.is_file() {
                set_mode(&path, 0o755)?;
            }
        }
    }
    let lib = home.join("lib");
    let real = "libcudart.so.13";
    if !lib.join(real).is_file() {
        bail!("{} lacks {real}", lib.display());
    }
    symlink(real, &lib.join("libcudart.so"))
}

/// The function names of cudarc's bindings for one module: the names its
/// `sys/mod.rs` loads (`load::<_F>("cuInit")`), the same with dynamic linking.
pub fn binding_names(source: &str) -> Vec<String> {
    const MARK: &str = "load::<_F>(\"";
    let mut names: Vec<String> = source
        .match_indices(MARK)
        .filter_map(|(i, _)| {
            let rest = &source[i + MARK.len()..];
            let end = rest.find('"')?;
            let name = &rest[..end];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The C source of a stub library defining `names`.
pub fn stub_source(stub: &Stub, names: &[String]) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "/* Link-time stub of {} generated by `cargo xtask cuda-toolkit`: every \
         function fails with {}. Never shipped. */",
        stub.soname, stub.error_code
    );
    let _ = writeln!(c, "static const char MSG[] = \"{STUB_MESSAGE}\";");
    for name in names {
        if MESSAGE_FUNCTIONS.contains(&name.as_str()) {
            let _ = writeln!(c, "const char *{name}(void) {{ return MSG; }}");
        } else if MESSAGE_OUT_FUNCTIONS.contains(&name.as_str()) {
            let _ = writeln!(
                c,
                "int {name}(int e, const char **s) {{ (void)e; if (s) *s = MSG; return 0; }}"
            );
        } else {
            let _ = writeln!(c, "int {name}(void) {{ return {}; }}", stub.error_code);
        }
    }
    c
}

/// Finds cudarc's source (through `cargo metadata`) and compiles one stub library per
/// [`STUBS`] entry into `dir`, with the `link_name` symlink beside each.
fn make_stubs(root: &Path, dir: &Path) -> Result<()> {
    let cudarc = cudarc_source(root)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for stub in STUBS {
        let sys = cudarc
            .join("src")
            .join(stub.cudarc_module)
            .join("sys/mod.rs");
        let source =
            fs::read_to_string(&sys).with_context(|| format!("cannot read {}", sys.display()))?;
        let names = binding_names(&source);
        if names.is_empty() {
            bail!("{}: found no function names", sys.display());
        }
        let c_file = dir.join(format!("{}.c", stub.soname));
        fs::write(&c_file, stub_source(stub, &names))
            .with_context(|| format!("cannot write {}", c_file.display()))?;
        let out = dir.join(stub.soname);
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O0", "-w", "-o"])
            .arg(&out)
            .arg(format!("-Wl,-soname,{}", stub.soname))
            .arg(&c_file)
            .status()
            .with_context(|| format!("cannot run the C compiler `{cc}` (set CC)"))?;
        if !status.success() {
            bail!("`{cc}` failed ({status}) on {}", c_file.display());
        }
        symlink(stub.soname, &dir.join(stub.link_name))?;
        tracing::info!("stub {} ({} functions)", stub.soname, names.len());
    }
    Ok(())
}

/// The folder of the cudarc crate the workspace locks.
fn cudarc_source(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--features", "siamese-model/cuda"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "cudarc")
        .and_then(|p| p["manifest_path"].as_str())
        .context("the workspace's lock file names no cudarc (candle's cuda feature needs it)")?;
    let dir = Path::new(manifest)
        .parent()
        .context("cudarc's manifest path has no folder")?
        .to_path_buf();
    if !dir.join("src").is_dir() {
        // `cargo metadata` resolves but may not download optional packages.
        let status = Command::new(&cargo)
            .args(["fetch", "--locked"])
            .current_dir(root)
            .status()
            .context("cannot run cargo fetch")?;
        if !status.success() || !dir.join("src").is_dir() {
            bail!(
                "cudarc's source is not in {} (cargo fetch failed)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// The environment of a build with the toolkit at `home`: `CUDA_HOME`, its `bin` first
/// on `PATH`, `CUDA_COMPUTE_CAP` (so that the build never calls nvidia-smi) and
/// cudarc's CUDA version.
pub fn toolkit_env(
    home: &Path,
    path: Option<&std::ffi::OsStr>,
    compute_cap: &str,
) -> Vec<(String, OsString)> {
    let mut new_path = OsString::from(home.join("bin"));
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        new_path.push(":");
        new_path.push(p);
    }
    vec![
        ("CUDA_HOME".into(), home.as_os_str().to_owned()),
        ("PATH".into(), new_path),
        ("CUDA_COMPUTE_CAP".into(), compute_cap.into()),
        ("CUDARC_CUDA_VERSION".into(), CUDARC_VERSION.into()),
    ]
}

/// `export NAME='value'` lines, for `eval` in a POSIX shell.
pub fn export_lines(env: &[(String, OsString)]) -> String {
    env.iter()
        .map(|(k, v)| {
            let v = v.to_string_lossy().replace('\'', r"'\''");
            format!("export {k}='{v}'")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `LD_LIBRARY_PATH` that lets the CUDA build start on this GPU-less machine: the
/// stubs and the real runtime.
pub fn stub_library_path(home: &Path) -> String {
    format!(
        "{}:{}",
        home.join("lib/stubs").display(),
        home.join("lib").display()
    )
}

fn nvcc_version(home: &Path) -> Result<String> {
    let nvcc = home.join("bin/nvcc");
    let out = Command::new(&nvcc)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", nvcc.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed: {}",
            nvcc.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Which CUDA a build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolkit {
    /// The toolkit `cargo xtask cuda-toolkit` prepared (its `CUDA_HOME`).
    Prepared(PathBuf),
    /// The machine's own CUDA (nvcc on `PATH` or `CUDA_HOME`), left as it is.
    System,
}

/// Picks the toolkit: `--toolkit DIR` if given; else the prepared one if present;
/// else the machine's own if it has an nvcc; else an error that says what to do.
pub fn choose_toolkit(
    root: &Path,
    explicit: Option<&Path>,
    system_has_nvcc: bool,
) -> Result<Toolkit> {
    if let Some(dir) = explicit {
        if !dir.join("bin/nvcc").is_file() {
            bail!("--toolkit {}: no bin/nvcc there", dir.display());
        }
        return Ok(Toolkit::Prepared(dir.to_path_buf()));
    }
    let home = toolkit_home(root);
    if toolkit_ready(&home) {
        return Ok(Toolkit::Prepared(home));
    }
    if system_has_nvcc {
        return Ok(Toolkit::System);
    }
    bail!(
        "no CUDA toolkit: found no nvcc on PATH or in $CUDA_HOME, and no prepared toolkit in \
         {}; run `cargo xtask cuda-toolkit` first (or install CUDA 12/13 and put nvcc on PATH)",
        home.display()
    )
}

/// Whether the machine has its own nvcc (on `PATH` or under `$CUDA_HOME`).
pub fn system_has_nvcc() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvcc").is_file()));
    let in_home =
        std::env::var_os("CUDA_HOME").is_some_and(|h| Path::new(&h).join("bin/nvcc").is_file());
    on_path || in_home
}

/// Options of `cargo xtask build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub cudnn: bool,
    pub toolkit: Option<PathBuf>,
    pub compute_cap: Option<String>,
}

/// The cargo arguments of the CUDA build.
pub fn build_args(cudnn: bool) -> Vec<String> {
    let features = if cudnn { "cuda,cudnn" } else { "cuda" };
    [
        "build",
        "--release",
        "--locked",
        "-p",
        "siamese-cli",
        "--features",
        features,
        "--target-dir",
        CUDA_TARGET_DIR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The environment of the CUDA build for `toolkit`; `None` values are left as the
/// caller's.
pub fn build_env(toolkit: &Toolkit, compute_cap: Option<&str>) -> Vec<(String, OsString)> {
    match toolkit {
        Toolkit::Prepared(home) => {
            let cap = compute_cap.unwrap_or(DEFAULT_COMPUTE_CAP);
            toolkit_env(home, std::env::var_os("PATH").as_deref(), cap)
        }
        Toolkit::System => compute_cap
            .map(|c| vec![("CUDA_COMPUTE_CAP".to_string(), OsString::from(c))])
            .unwrap_or_default(),
    }
}

/// `cargo xtask build --cuda`: the release CLI with CUDA in [`CUDA_TARGET_DIR`].
/// Returns the binary's path.
pub fn build(root: &Path, options: &BuildOptions) -> Result<PathBuf> {
    let toolkit = choose_toolkit(root, options.toolkit.as_deref(), system_has_nvcc())?;
    let compute_cap = options
        .compute_cap
        .clone()
        .or_else(|| std::env::var("CUDA_COMPUTE_CAP").ok());
    let env = build_env(&toolkit, compute_cap.as_deref());
    match &toolkit {
        Toolkit::Prepared(home) => tracing::info!("using the toolkit in {}", home.display()),
        Toolkit::System => tracing::info!("using the machine's CUDA (nvcc on PATH / CUDA_HOME)"),
    }
    let args = build_args(options.cudnn);
    tracing::info!(
        "cargo {} (a clean build takes about 18 minutes on 2 cores, most of it nvcc on \
         candle's kernels; a rebuild after a change takes seconds)",
        args.join(" ")
    );
    let start = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "the CUDA build failed ({status}): cargo {}; without nvcc it fails with \
             NvccNotFound, without a libcuda to link with `unable to find library -lcuda` \
             (`cargo xtask cuda-toolkit` provides both)",
            args.join(" ")
        );
    }
    let binary = root.join(CUDA_TARGET_DIR).join("release/siamese-cli");
    tracing::info!(
        "built {} in {:.0} s ({:.1} MB)",
        binary.display(),
        start.elapsed().as_secs_f64(),
        fs::metadata(&binary)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    );
    if let Toolkit::Prepared(home) = &toolkit {
        tracing::info!(
            "it needs the NVIDIA driver and CUDA 13 libraries to start; here, without them: \
             LD_LIBRARY_PATH={} {} --device auto ...",
            stub_library_path(home),
            binary.display()
        );
    }
    Ok(binary)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// A symlink `link` → `target`, replacing whatever `link` was.
fn symlink(target: &str, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        fs::remove_file(link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {target}", link.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_names_are_the_loaded_symbols() {
        let src = r#"
            pub unsafe fn cuInit(Flags: c_uint) -> CUresult {
                let _f = _S.get_or_init(|| unsafe { load::<_F>("cuInit") });
            }
            let _f = _S.get_or_init(|| unsafe { load::<_F>("cuMemAlloc_v2") });
            let _f = _S.get_or_init(|| unsafe { load::<_F>("cuInit") });
            load::<_F>("bad name")
        "#;
        assert_eq!(binding_names(src), ["cuInit", "cuMemAlloc_v2"]);
    }

    #[test]
    fn stub_source_fails_every_call_but_gives_messages() {
        let names: Vec<String> = ["cuInit", "cuGetErrorString", "nvrtcGetErrorString"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = stub_source(&STUBS[0], &names);
        assert!(c.contains("int cuInit(void) { return 34; }"));
        assert!(c.contains("int cuGetErrorString(int e, const char **s)"));
        assert!(c.contains("const char *nvrtcGetErrorString(void) { return MSG; }"));
    }

    #[test]
    fn stubs_cover_what_cudarc_links() {
        let sonames: Vec<&str> = STUBS.iter().map(|s| s.soname).collect();
        for lib in [
            "libcuda.so.1",
            "libcublas.so.13",
            "libcublasLt.so.13",
            "libcurand.so.10",
        ] {
            assert!(sonames.contains(&lib), "{lib}");
        }
        for s in STUBS {
            assert!(s.soname.starts_with(s.link_name), "{s:?}");
            assert_ne!(s.error_code, 0);
        }
    }

    #[test]
    fn toolkit_env_puts_nvcc_first() {
        let home = Path::new("/w/.cuda-toolkit/nvidia/cu13");
        let env = toolkit_env(home, Some(std::ffi::OsStr::new("/usr/bin:/bin")), "90");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("CUDA_HOME").unwrap(), "/w/.cuda-toolkit/nvidia/cu13");
        assert_eq!(
            get("PATH").unwrap(),
            "/w/.cuda-toolkit/nvidia/cu13/bin:/usr/bin:/bin"
        );
        assert_eq!(get("CUDA_COMPUTE_CAP").unwrap(), "90");
        assert_eq!(get("CUDARC_CUDA_VERSION").unwrap(), "13000");
        let no_path = toolkit_env(home, None, "80");
        assert_eq!(no_path[1].1, "/w/.cuda-toolkit/nvidia/cu13/bin");
        let text = export_lines(&[("A".into(), "it's".into())]);
        assert_eq!(text, r"export A='it'\''s'");
    }

    #[test]
    fn wheels_are_found_by_normalised_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = "nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.whl";
        fs::write(dir.path().join(f), b"").unwrap();
        fs::write(
            dir.path().join("nvidia_cuda_nvcc-13.1.0-py3-none-any.whl"),
            b"",
        )
        .unwrap();
        assert_eq!(
            find_wheel(dir.path(), "nvidia-cuda-nvcc", "13.0.88").unwrap(),
            dir.path().join(f)
        );
        assert!(find_wheel(dir.path(), "nvidia-nvvm", "13.0.88").is_none());
        let args = pip_download_args(dir.path(), &["a==1".into()]);
        assert_eq!(args[..3], ["-m", "pip", "download"]);
        assert_eq!(args.last().unwrap(), "a==1");
    }

    #[test]
    fn toolkit_choice_prefers_explicit_then_prepared_then_system() {
        let root = tempfile::tempdir().unwrap();
        let err = choose_toolkit(root.path(), None, false).unwrap_err();
        assert!(
            err.to_string().contains("cargo xtask cuda-toolkit"),
            "{err}"
        );
        assert_eq!(
            choose_toolkit(root.path(), None, true).unwrap(),
            Toolkit::System
        );
        let err = choose_toolkit(root.path(), Some(root.path()), true).unwrap_err();
        assert!(err.to_string().contains("no bin/nvcc"), "{err}");
        // A prepared toolkit wins over the system's.
        let home = toolkit_home(root.path());
        fs::create_dir_all(home.join("bin")).unwrap();
        fs::create_dir_all(home.join("lib/stubs")).unwrap();
        fs::write(home.join("bin/nvcc"), b"").unwrap();
        fs::write(home.join("lib/libcudart.so"), b"").unwrap();
        for s in STUBS {
            fs::write(home.join("lib/stubs").join(s.link_name), b"").unwrap();
        }
        assert_eq!(
            choose_toolkit(root.path(), None, true).unwrap(),
            Toolkit::Prepared(home.clone())
        );
        let env = build_env(&Toolkit::Prepared(home), None);
        assert!(
            env.iter()
                .any(|(k, v)| k == "CUDA_COMPUTE_CAP" && v == "90")
        );
        assert!(build_env(&Toolkit::System, None).is_empty());
        assert_eq!(
            build_env(&Toolkit::System, Some("80")),
            [("CUDA_COMPUTE_CAP".to_string(), OsString::from("80"))]
        );
    }

    #[test]
    fn the_cuda_build_has_its_own_target_dir() {
        let args = build_args(false);
        assert!(args.windows(2).any(|w| w == ["--features", "cuda"]));
        assert!(
            args.windows(2)
                .any(|w| w == ["--target-dir", "target/cuda"])
        );
        assert!(build_args(true).contains(&"cuda,cudnn".to_string()));
    }
}
