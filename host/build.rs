//! Builds the built-in plugins (`plugins/seed-policy`, `plugins/welcome`) as
//! wasm32-wasip2 components and leaves them in OUT_DIR for `include_bytes!`.
//!
//! The nested cargo gets its own target directory (inside OUT_DIR) so it never waits
//! on the lock of the outer build, and a clean environment so the outer build's flags
//! (clippy's wrapper, coverage or host RUSTFLAGS) do not leak into the guest build.

use std::path::{Path, PathBuf};
use std::process::Command;

const BUILTINS: &[(&str, &str)] = &[("seed-policy", "seed_policy"), ("welcome", "welcome")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let plugins = manifest_dir.join("../plugins");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for path in [
        "../plugins/Cargo.toml",
        "../plugins/Cargo.lock",
        "../plugins/seed-policy",
        "../plugins/welcome",
        "../wit",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
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
    for (package, _) in BUILTINS {
        cmd.args(["-p", package]);
    }
    for var in [
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
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the built-in plugins: {e}"));
    if !status.success() {
        panic!(
            "building the built-in plugins failed (see above). They need the wasm32-wasip2 \
             target: run `rustup target add wasm32-wasip2`."
        );
    }
    for (_, file) in BUILTINS {
        let built = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{file}.wasm"));
        copy(&built, &out_dir.join(format!("{file}.wasm")));
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}
