//! Builds the example `sip-router` plugin (`plugins/call-policy`) that `sipwasm-bench
//! router` measures.

fn main() {
    let dir = sipwasm_plugin_build::build(&["call-policy"], &["call-policy"]);
    sipwasm_plugin_build::copy_to_out_dir(&dir, "call_policy.wasm");
}
