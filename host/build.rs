//! Builds the built-in plugins (`plugins/seed-policy`, `plugins/welcome`,
//! `plugins/cookie-login`, `plugins/softphone`) and leaves them in OUT_DIR for
//! `include_bytes!` in `builtin.rs`.

fn main() {
    commit();
    let dir = sipwasm_plugin_build::build(
        &["seed-policy", "welcome", "cookie-login", "softphone"],
        &[
            "sdk",
            "seed-policy",
            "welcome",
            "cookie-login",
            "softphone/src",
            "softphone/web",
            "softphone/build.rs",
            "softphone/package-lock.json",
        ],
    );
    for file in [
        "seed_policy.wasm",
        "welcome.wasm",
        "cookie_login.wasm",
        "softphone.wasm",
    ] {
        sipwasm_plugin_build::copy_to_out_dir(&dir, file);
    }
}

/// The commit this binary is built from, for `sipwasm --version` (`SIPWASM_COMMIT`):
/// the short hash of HEAD, "unknown" outside a git checkout. Built again when HEAD
/// moves.
fn commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let hash = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIPWASM_COMMIT={hash}");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for watched in ["HEAD", "packed-refs", "refs/heads"] {
            let path = std::path::Path::new(&dir).join(watched);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
