//! Builds the built-in plugins (`plugins/seed-policy`, `plugins/welcome`) and leaves
//! them in OUT_DIR for `include_bytes!` in `plugin/registry.rs`.

fn main() {
    let dir = sipwasm_plugin_build::build(
        &["seed-policy", "welcome"],
        &["sdk", "seed-policy", "welcome"],
    );
    for file in ["seed_policy.wasm", "welcome.wasm"] {
        sipwasm_plugin_build::copy_to_out_dir(&dir, file);
    }
}
