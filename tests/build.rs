//! Builds every plugin in `plugins/` (the test-only ones too), so the end-to-end tests
//! always run the plugins' current source; the harness finds them through
//! `SIPWASM_TEST_PLUGINS`.

fn main() {
    let dir = sipwasm_plugin_build::build(&[], &["sdk", "seed-policy", "welcome", "testing"]);
    println!("cargo:rustc-env=SIPWASM_TEST_PLUGINS={}", dir.display());
}
