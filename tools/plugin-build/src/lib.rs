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
    let manifest_dir = build_env("CARGO_MANIFEST_DIR");
    let plugins = manifest_dir.join("../plugins");
    let out_dir = build_env("OUT_DIR");
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

/// A directory cargo gives a build script (`CARGO_MANIFEST_DIR`, `OUT_DIR`).
fn build_env(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: run from a build script")),
    )
}

/// Copies `file` from `dir` into OUT_DIR.
pub fn copy_to_out_dir(dir: &Path, file: &str) {
    let out_dir = build_env("OUT_DIR");
    let (from, to) = (dir.join(file), out_dir.join(file));
    std::fs::copy(&from, &to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

/// Builds a JavaScript plugin from `plugins/js/<source>` with jco (QuickJS backend)
/// into `OUT_DIR/<out>`, for the world `world` of `wit/`. jco comes from
/// `plugins/js/node_modules` (`npm ci --prefix plugins/js`, done by the test command).
pub fn build_js(source: &str, world: &str, out: &str) -> PathBuf {
    let manifest_dir = build_env("CARGO_MANIFEST_DIR");
    let js = manifest_dir.join("../plugins/js");
    let wit = manifest_dir.join("../wit");
    let out_dir = build_env("OUT_DIR");
    for path in [
        js.join(source),
        js.join("sipwasm"),
        js.join("package-lock.json"),
        wit.clone(),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let jco = js.join("node_modules/.bin/jco");
    if !jco.exists() {
        panic!(
            "{} is missing: install the JavaScript plugin tool chain with \
             `npm ci --prefix plugins/js` (the README's test command does it)",
            jco.display()
        );
    }
    let target = out_dir.join(out);
    let mut cmd = Command::new(&jco);
    cmd.current_dir(&js)
        .arg("componentize")
        .arg(source)
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", world])
        .args(["--backend", "qjs", "--backend-qjs-disable-async"])
        .arg("--out")
        .arg(&target);
    run(cmd, &format!("building the JavaScript plugin {source}"));
    target
}

/// Builds a Python plugin from the module `app` in `plugins/python/<dir>` (with the SDK
/// package `plugins/python/sipwasm` on its path) with
/// componentize-py into `OUT_DIR/<out>`, for the world `world` of `wit/`.
/// componentize-py is `SIPWASM_COMPONENTIZE_PY` if set, else the one in the virtualenv
/// `target/plugin-tools/python` that the test command sets up from
/// `plugins/python/requirements.txt`, else the one on `PATH`.
pub fn build_python(dir: &str, world: &str, out: &str) -> PathBuf {
    let manifest_dir = build_env("CARGO_MANIFEST_DIR");
    let python = manifest_dir.join("../plugins/python");
    let wit = manifest_dir.join("../wit");
    let out_dir = build_env("OUT_DIR");
    for path in [
        python.join(dir),
        python.join("sipwasm"),
        python.join("requirements.txt"),
        wit.clone(),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=SIPWASM_COMPONENTIZE_PY");
    let venv = manifest_dir.join("../target/plugin-tools/python/bin/componentize-py");
    let tool = std::env::var_os("SIPWASM_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
        .unwrap_or_else(|| PathBuf::from("componentize-py"));
    let target = out_dir.join(out);
    let mut cmd = Command::new(&tool);
    cmd.current_dir(python.join(dir))
        .arg("-d")
        .arg(&wit)
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(python.join(dir))
        // The SDK package, `sipwasm`.
        .arg("-p")
        .arg(&python)
        .arg("-o")
        .arg(&target);
    // Bytecode caches would land in the source tree.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    run(cmd, &format!("building the Python plugin {dir}"));
    target
}

fn run(mut cmd: Command, what: &str) {
    for var in SCRUBBED {
        cmd.env_remove(var);
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what} failed ({s}); see the output above"),
        Err(e) => panic!(
            "{what}: cannot run {program}: {e}. Install the plugin tool chains with the \
             README's test command (`./tests/run-all.sh`)"
        ),
    }
}
