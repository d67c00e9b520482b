//! Builds every plugin in `plugins/` (the test-only ones too, and the JavaScript and
//! Python examples), so the end-to-end tests always run the plugins' current source; the
//! harness finds them through `SIPWASM_TEST_PLUGINS` (Rust plugins) and
//! `SIPWASM_TEST_FOREIGN_PLUGINS` (the others).

fn main() {
    let dir = sipwasm_plugin_build::build(
        &[],
        &[
            "sdk",
            "seed-policy",
            "welcome",
            "call-policy",
            "origin-gate",
            "token-login",
            "cookie-login",
            "softphone",
            "testing",
        ],
    );
    println!("cargo:rustc-env=SIPWASM_TEST_PLUGINS={}", dir.display());
    let js =
        sipwasm_plugin_build::build_js("seed-policy.js", "http-handler", "seed_policy_js.wasm");
    sipwasm_plugin_build::build_js("token-login.js", "http-handler", "token_login_js.wasm");
    sipwasm_plugin_build::build_python("seed-policy", "http-handler", "seed_policy_py.wasm");
    sipwasm_plugin_build::build_python("token-login", "http-handler", "token_login_py.wasm");
    sipwasm_plugin_build::build_js("call-policy.js", "sip-router", "call_policy_js.wasm");
    sipwasm_plugin_build::build_python("call-policy", "sip-router", "call_policy_py.wasm");
    let foreign = js.parent().expect("OUT_DIR");
    println!(
        "cargo:rustc-env=SIPWASM_TEST_FOREIGN_PLUGINS={}",
        foreign.display()
    );
}
