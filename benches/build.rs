//! Builds the plugins the benches load: the example `call-policy` that `sipwasm-bench
//! router` measures, the test plugin `slow-router` whose deadline `sipwasm-bench
//! attack` makes every call hit, and token-login in Rust, JavaScript and Python that
//! `sipwasm-bench logins` measures.

fn main() {
    let dir = sipwasm_plugin_build::build(
        &["call-policy", "slow-router", "token-login"],
        &["sdk", "call-policy", "testing/slow-router", "token-login"],
    );
    sipwasm_plugin_build::copy_to_out_dir(&dir, "call_policy.wasm");
    sipwasm_plugin_build::copy_to_out_dir(&dir, "slow_router.wasm");
    sipwasm_plugin_build::copy_to_out_dir(&dir, "token_login.wasm");
    sipwasm_plugin_build::build_js("token-login.js", "http-handler", "token_login_js.wasm");
    sipwasm_plugin_build::build_python("token-login", "http-handler", "token_login_py.wasm");
}
