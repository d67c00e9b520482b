//! Builds the `sip-router` plugins the benches load: the example `call-policy` that
//! `sipwasm-bench router` measures, and the test plugin `slow-router` whose deadline
//! `sipwasm-bench attack` makes every call hit.

fn main() {
    let dir = sipwasm_plugin_build::build(
        &["call-policy", "slow-router"],
        &["call-policy", "testing/slow-router"],
    );
    sipwasm_plugin_build::copy_to_out_dir(&dir, "call_policy.wasm");
    sipwasm_plugin_build::copy_to_out_dir(&dir, "slow_router.wasm");
}
