//! Used by build scripts (`host/build.rs`, `tests/build.rs`) to compile guest plugins
//! from `plugins/` as wasm32-wasip2 components.
//!
//! The nested cargo gets its own target directory (under the caller's OUT_DIR) so it
//! never waits on the outer build's lock, and a clean environment so the outer build's
//! flags (clippy's wrapper, coverage or host RUSTFLAGS) do not leak into the guest build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variables of the outer build that must not reach the guest build.
const SCRUBBED: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_LLVM_COV",
];

/// Builds `packages` (all of the plugins workspace when empty) in release mode and
/// returns the directory holding the `.wasm` files. `watch` lists paths relative to
/// `plugins/` whose changes should re-run the calling build script. Panics with a
/// message that says what to install when the build fails.
pub fn build(packages: &[&str], watch: &[&str]) -> PathBuf {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run from a build script"));
    let plugins = manifest_dir.join("../plugins");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("run from a build script"));
    for path in ["Cargo.toml", "Cargo.lock"].iter().chain(watch) {
        println!("cargo:rerun-if-changed={}", plugins.join(path).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../wit").display()
    );

    let target_dir = out_dir.join("plugins-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    for var in SCRUBBED {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building plugins in {} failed (see above). They need the wasm32-wasip2 target: \
             run `rustup target add wasm32-wasip2`.",
            plugins.display()
        );
    }
    target_dir.join("wasm32-wasip2/release")
}

/// Copies `file` from `dir` into OUT_DIR.
pub fn copy_to_out_dir(dir: &Path, file: &str) {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("run from a build script"));
    let (from, to) = (dir.join(file), out_dir.join(file));
    std::fs::copy(&from, &to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}
