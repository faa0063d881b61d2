//! `cargo xtask device-bundle`: the folder a run on a lent GPU machine carries.
//!
//! The device machine receives the working tree and the folders named in `carry`, 64
//! MiB in all, and reaches nothing else (`../shared` stays behind). The bundle holds
//! what the run needs: the CUDA binary compressed with xz, the Omniglot zips and the
//! MNIST test set's gzip files (the run extracts and verifies them through `--mirror`
//! and `--mnist-mirror`), a copy of the PyTorch baseline
//! `torch_koch.py`, the run script (`xtask/scripts/device_run.sh`) and a manifest. It
//! is written beside its final place and renamed into place once complete.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use sha2::{Digest, Sha256};
use siamese_data::mnist::{MNIST_MIRROR_ENV, MNIST_TEST_FILES};
use siamese_data::{MIRROR_ENV, OmniglotSet};

use crate::cuda::CUDA_TARGET_DIR;

/// The run script, kept in `xtask/scripts/device_run.sh`.
pub const RUN_SCRIPT: &str = include_str!("../scripts/device_run.sh");
/// The default folder of the bundle (ignored by git: `/bundle`).
pub const DEFAULT_OUT: &str = "bundle/gpu";
/// What the device tool lets travel, working tree and carried folders together.
pub const CARRY_LIMIT_MIB: u64 = 64;

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The binary to bundle [default: target/cuda/release/siamese-cli, from `cargo
    /// xtask build --cuda`].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Folder holding the Omniglot zips [default: $OMNIGLOT_MIRROR, else
    /// ../shared/omniglot beside the workspace].
    #[arg(long, value_name = "DIR")]
    pub mirror: Option<PathBuf>,
    /// Folder holding the MNIST test set's gzip files [default: $MNIST_MIRROR, else
    /// ../shared/mnist beside the workspace].
    #[arg(long, value_name = "DIR")]
    pub mnist_mirror: Option<PathBuf>,
    /// The PyTorch baseline [default: ../shared/bench/torch_koch.py beside the
    /// workspace].
    #[arg(long, value_name = "FILE")]
    pub torch_script: Option<PathBuf>,
    /// The bundle folder (relative to the workspace root; it must be ignored by git so
    /// that `carry` may name it).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_OUT)]
    pub out: PathBuf,
    /// The largest bundle allowed, in MiB (the working tree travels too, within 64 MiB
    /// in all).
    #[arg(long, value_name = "MIB", default_value_t = 48)]
    pub max_mib: u64,
}

/// One file of the bundle: where it comes from and its name in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: PathBuf,
    pub name: String,
}

/// The files copied as they are: the Omniglot zips of the standard sets (under
/// `omniglot/`, the run's `--mirror`), the MNIST test set's gzip files (under
/// `mnist/`, its `--mnist-mirror`) and the PyTorch baseline.
pub fn plan(mirror: &Path, mnist_mirror: &Path, torch_script: &Path) -> Vec<Entry> {
    let mut entries: Vec<Entry> = OmniglotSet::STANDARD
        .iter()
        .map(|set| Entry {
            source: mirror.join(set.zip_name()),
            name: format!("omniglot/{}", set.zip_name()),
        })
        .collect();
    entries.extend(MNIST_TEST_FILES.iter().map(|f| Entry {
        source: mnist_mirror.join(f.gz_name),
        name: format!("mnist/{}", f.gz_name),
    }));
    entries.push(Entry {
        source: torch_script.to_path_buf(),
        name: "torch_koch.py".into(),
    });
    entries
}

/// Fails, naming the largest files, when the bundle's `sizes` exceed `max_mib`.
pub fn check_size(sizes: &[(String, u64)], max_mib: u64) -> Result<u64> {
    let total: u64 = sizes.iter().map(|(_, s)| s).sum();
    if total > max_mib * 1024 * 1024 {
        let mut by_size = sizes.to_vec();
        by_size.sort_by_key(|(_, s)| std::cmp::Reverse(*s));
        let largest: Vec<String> = by_size
            .iter()
            .take(3)
            .map(|(n, s)| format!("{n} {:.1} MiB", *s as f64 / 1048576.0))
            .collect();
        bail!(
            "the bundle holds {:.1} MiB, more than --max-mib {max_mib} (the device machine \
             takes {CARRY_LIMIT_MIB} MiB with the working tree); largest: {}",
            total as f64 / 1048576.0,
            largest.join(", ")
        );
    }
    Ok(total)
}

/// The manifest: every file with its size and sha256, and where the binary came from.
pub fn manifest(
    files: &[(String, u64, String)],
    binary: &Path,
    binary_sha256: &str,
    cuda_linked: bool,
    git: &str,
) -> serde_json::Value {
    json!({
        "format": "siamese-oneshot device bundle 1",
        "git": git,
        "binary": {
            "source": binary,
            "sha256_uncompressed": binary_sha256,
            "links_libcuda": cuda_linked,
        },
        "run": "bash run.sh (from anywhere; results into $OUT), or bash run.sh --dry-run",
        "files": files
            .iter()
            .map(|(name, size, sha)| json!({"name": name, "bytes": size, "sha256": sha}))
            .collect::<Vec<_>>(),
    })
}

/// The `run` tool call that carries the bundle at `out` (relative to the root).
pub fn device_command(out: &Path) -> String {
    format!(
        "run(command=\"bash {}/run.sh\", carry=[\"{}\"], timeout_s=600)",
        out.display(),
        out.display()
    )
}

/// Whether an ELF binary asks for `libcuda.so.1` (a build with the `cuda` feature).
pub fn links_libcuda(bytes: &[u8]) -> bool {
    let needle = b"libcuda.so.1";
    bytes.windows(needle.len()).any(|w| w == needle)
}

pub fn device_bundle(root: &Path, args: &BundleArgs) -> Result<()> {
    let binary = args
        .binary
        .clone()
        .unwrap_or_else(|| root.join(CUDA_TARGET_DIR).join("release/siamese-cli"));
    if !binary.is_file() {
        bail!(
            "{} not found: build it first with `cargo xtask build --cuda` (or pass --binary)",
            binary.display()
        );
    }
    let mirror_or = |flag: &Option<PathBuf>, env: &str, shared: &str| match flag {
        Some(m) => m.clone(),
        None => match std::env::var_os(env).filter(|v| !v.is_empty()) {
            Some(m) => PathBuf::from(m),
            None => root.join("../shared").join(shared),
        },
    };
    let mirror = mirror_or(&args.mirror, MIRROR_ENV, "omniglot");
    let mnist_mirror = mirror_or(&args.mnist_mirror, MNIST_MIRROR_ENV, "mnist");
    let torch_script = args
        .torch_script
        .clone()
        .unwrap_or_else(|| root.join("../shared/bench/torch_koch.py"));
    let entries = plan(&mirror, &mnist_mirror, &torch_script);
    for e in &entries {
        if !e.source.is_file() {
            bail!(
                "{} not found (for {} of the bundle; see --mirror / ${MIRROR_ENV}, \
                 --mnist-mirror / ${MNIST_MIRROR_ENV} and --torch-script)",
                e.source.display(),
                e.name
            );
        }
    }
    let out = root.join(&args.out);
    check_ignored(root, &args.out)?;
    // The toolkit (hundreds of MB) must never travel with the working tree.
    check_ignored(root, Path::new(crate::cuda::TOOLKIT_DIR))?;

    let staging = out.with_extension("partial");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;

    let bytes = fs::read(&binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let cuda_linked = links_libcuda(&bytes);
    if !cuda_linked {
        tracing::warn!(
            "{} does not link libcuda: a CPU build (the run then measures the GPU machine's \
             CPU; fine for --dry-run)",
            binary.display()
        );
    }
    let binary_sha = hex::encode(Sha256::digest(&bytes));
    drop(bytes);
    // Without its debug sections (two thirds of it; symbols stay for backtraces).
    let stripped = staging.join("siamese-cli.stripped");
    let strip = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&binary)
        .arg(&stripped)
        .status();
    let to_pack = match strip {
        Ok(s) if s.success() => stripped.clone(),
        other => {
            tracing::warn!(
                "objcopy --strip-debug failed ({other:?}): bundling the binary as it is"
            );
            binary.clone()
        }
    };
    let xz_path = staging.join("siamese-cli.xz");
    tracing::info!(
        "compressing {} with xz ({:.1} MB; about a minute)",
        to_pack.display(),
        fs::metadata(&to_pack)?.len() as f64 / 1e6
    );
    let xz_out = fs::File::create(&xz_path)
        .with_context(|| format!("cannot create {}", xz_path.display()))?;
    let status = Command::new("xz")
        .args(["-6", "-T0", "-c"])
        .arg(&to_pack)
        .stdout(Stdio::from(xz_out))
        .status()
        .context("cannot run xz (install xz-utils)")?;
    if !status.success() {
        bail!("xz failed ({status}) on {}", to_pack.display());
    }
    if stripped.exists() {
        fs::remove_file(&stripped)
            .with_context(|| format!("cannot remove {}", stripped.display()))?;
    }

    for e in &entries {
        let dest = staging.join(&e.name);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(&e.source, &dest)
            .with_context(|| format!("cannot copy {} to {}", e.source.display(), dest.display()))?;
    }
    let script = staging.join("run.sh");
    fs::write(&script, RUN_SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    }

    let mut names: Vec<String> = vec!["siamese-cli.xz".into(), "run.sh".into()];
    names.extend(entries.iter().map(|e| e.name.clone()));
    let mut files = Vec::new();
    for name in &names {
        let path = staging.join(name);
        let (size, sha) = size_and_sha256(&path)?;
        files.push((name.clone(), size, sha));
    }
    let sizes: Vec<(String, u64)> = files.iter().map(|(n, s, _)| (n.clone(), *s)).collect();
    let total = check_size(&sizes, args.max_mib)?;
    let tree = travelling_tree_bytes(root);
    if let Some(tree) = tree
        && tree + total > CARRY_LIMIT_MIB * 1024 * 1024
    {
        bail!(
            "the working tree that travels ({:.1} MiB: tracked and untracked files git does \
             not ignore) and the bundle ({:.1} MiB) exceed the device tool's {CARRY_LIMIT_MIB} \
             MiB",
            tree as f64 / 1048576.0,
            total as f64 / 1048576.0
        );
    }
    let manifest = manifest(
        &files,
        &binary,
        &binary_sha,
        cuda_linked,
        &git_describe(root),
    );
    fs::write(
        staging.join("MANIFEST.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;

    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot remove {}", out.display()))?;
    }
    fs::rename(&staging, &out)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), out.display()))?;
    for (name, size, _) in &files {
        tracing::info!("  {name:<40} {:>8.2} MiB", *size as f64 / 1048576.0);
    }
    tracing::info!(
        "bundle {} written: {:.1} MiB (limit {} MiB); with the working tree that travels: \
         {} (limit {CARRY_LIMIT_MIB} MiB)",
        out.display(),
        total as f64 / 1048576.0,
        args.max_mib,
        tree.map_or("unknown (no git)".to_string(), |t| format!(
            "{:.1} MiB",
            (t + total) as f64 / 1048576.0
        ))
    );
    println!("{}", device_command(&args.out));
    tracing::info!(
        "try it here first: OUT=/tmp/device-out bash {}/run.sh --dry-run (with \
         SIAMESE_LD_LIBRARY_PATH=<toolkit>/lib/stubs:<toolkit>/lib for a CUDA binary)",
        args.out.display()
    );
    Ok(())
}

/// The device tool carries only ignored folders: refuse a bundle git would track.
fn check_ignored(root: &Path, rel: &Path) -> Result<()> {
    let probe = rel.join("run.sh");
    let out = Command::new("git")
        .arg("check-ignore")
        .arg("-q")
        .arg(&probe)
        .current_dir(root)
        .status();
    match out {
        Ok(s) if s.success() => Ok(()),
        Ok(s) if s.code() == Some(1) => bail!(
            "{} is not ignored by git: the device tool carries only ignored folders; use a \
             folder under bundle/ or add it to .gitignore",
            rel.display()
        ),
        // No git (an exported tree): nothing to check.
        _ => Ok(()),
    }
}

/// The bytes of what the device tool sends besides carried folders: the tracked files
/// and the untracked ones git does not ignore (`None` without git).
fn travelling_tree_bytes(root: &Path) -> Option<u64> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        out.stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                fs::symlink_metadata(root.join(String::from_utf8_lossy(p).as_ref())).ok()
            })
            .map(|m| m.len())
            .sum(),
    )
}

fn size_and_sha256(path: &Path) -> Result<(u64, String)> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn git_describe(root: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_holds_the_three_zips_mnist_and_the_baseline() {
        let e = plan(
            Path::new("/m"),
            Path::new("/d"),
            Path::new("/b/torch_koch.py"),
        );
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "omniglot/images_background.zip",
                "omniglot/images_evaluation.zip",
                "omniglot/all_runs.zip",
                "mnist/t10k-images-idx3-ubyte.gz",
                "mnist/t10k-labels-idx1-ubyte.gz",
                "torch_koch.py"
            ]
        );
        assert_eq!(e[0].source, Path::new("/m/images_background.zip"));
        assert_eq!(e[3].source, Path::new("/d/t10k-images-idx3-ubyte.gz"));
    }

    #[test]
    fn the_size_check_names_the_largest_files() {
        let mib = 1024 * 1024;
        let sizes = vec![
            ("a".to_string(), 30 * mib),
            ("b".to_string(), 20 * mib),
            ("c".to_string(), mib),
        ];
        assert_eq!(check_size(&sizes, 64).unwrap(), 51 * mib);
        let err = check_size(&sizes, 48).unwrap_err().to_string();
        assert!(err.contains("51.0 MiB"), "{err}");
        assert!(err.contains("a 30.0 MiB, b 20.0 MiB"), "{err}");
    }

    #[test]
    fn manifest_and_command() {
        let files = vec![("run.sh".to_string(), 10, "ab".to_string())];
        let m = manifest(&files, Path::new("/x/siamese-cli"), "cd", true, "abc");
        assert_eq!(m["files"][0]["name"], "run.sh");
        assert_eq!(m["files"][0]["bytes"], 10);
        assert_eq!(m["binary"]["links_libcuda"], true);
        assert_eq!(
            device_command(Path::new("bundle/gpu")),
            "run(command=\"bash bundle/gpu/run.sh\", carry=[\"bundle/gpu\"], timeout_s=600)"
        );
        assert!(links_libcuda(b"\0libcublas.so.13\0libcuda.so.1\0"));
        assert!(!links_libcuda(b"\0libc.so.6\0"));
    }

    /// The run script parses, guards every stage, writes into $OUT and keeps to the
    /// device tool's eight files.
    #[test]
    fn the_run_script_is_sound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        fs::write(&path, RUN_SCRIPT).unwrap();
        let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "bash -n run.sh");
        for needle in [
            "timeout --kill-after",
            "results.jsonl",
            "--mirror \"$MIRROR\"",
            "--mnist-mirror \"$MNIST_MIRROR\"",
            "torch_koch.py",
            "long:long:0 default:default:0",
            "--preset \"$preset\"",
            "--lake-runs",
            "--way 20",
            "--mnist \"$MNIST\"",
            "--dry-run",
        ] {
            assert!(RUN_SCRIPT.contains(needle), "run.sh lacks {needle:?}");
        }
        let outputs = [
            "results.jsonl",
            "summary.txt",
            "run.log",
            "env.txt",
            "runs.tar",
        ];
        assert!(outputs.len() <= 8);
        for o in outputs {
            assert!(RUN_SCRIPT.contains(o), "{o}");
        }
    }

    #[test]
    fn the_bundle_folder_is_ignored() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let in_git = Command::new("git")
            .args(["rev-parse", "--git-dir"])
            .current_dir(&root)
            .output()
            .is_ok_and(|o| o.status.success());
        if !in_git {
            return; // an exported tree: nothing to check against
        }
        check_ignored(&root, Path::new(DEFAULT_OUT)).unwrap();
        assert!(check_ignored(&root, Path::new("xtask")).is_err());
    }
}
