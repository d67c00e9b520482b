//! Builds the built-in plugins (`plugins/seed-policy`, `plugins/welcome`,
//! `plugins/cookie-login`, `plugins/softphone`) and leaves them in OUT_DIR for
//! `include_bytes!` in `builtin.rs`.

fn main() {
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
