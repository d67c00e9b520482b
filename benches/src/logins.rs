//! `sipwasm-bench logins`: WebSocket handshakes per second through token-login in
//! Rust, JavaScript and Python (each handshake carries a valid token: the plugin
//! parses it and the host checks its HMAC), beside seed-policy (no login), in the same
//! run, against the same server build.

use crate::handshakes::handshake_rate_with;
use crate::process::{Target, free_port, start_sipwasm_config};
use std::path::Path;

/// The token-login components built by `build.rs`.
const PLUGINS: &[(&str, &str)] = &[
    (
        "token-login (Rust)",
        concat!(env!("OUT_DIR"), "/token_login.wasm"),
    ),
    (
        "token-login (JavaScript)",
        concat!(env!("OUT_DIR"), "/token_login_js.wasm"),
    ),
    (
        "token-login (Python)",
        concat!(env!("OUT_DIR"), "/token_login_py.wasm"),
    ),
];

/// Starts the server with one ws listener decided by `plugin_toml` (a `[plugins.p]`
/// body) and a generated `[keys.login]`.
async fn start(bin: &Path, name: &str, port: u16, plugin_toml: &str) -> anyhow::Result<Target> {
    let body = format!(
        "[[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:{port}\"\nplugin = \"p\"\n\
         [keys.login]\n[plugins.p]\n{plugin_toml}\n"
    );
    start_sipwasm_config(bin, name, port, &body, None).await
}

/// A token for `user` valid for an hour, under the server's generated key.
fn token(dir: &Path, user: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let hex = std::fs::read_to_string(dir.join("keys/login.key"))?;
    let hex = hex.trim();
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let signed = format!("{expiry}:{user}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)?;
    mac.update(signed.as_bytes());
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signed}%3A{mac}").replacen(':', "%3A", 1))
}

pub(crate) async fn logins(bin: &Path, seconds: u64, concurrency: usize) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let port = free_port();
    let seed = start(
        bin,
        "seed-policy (Rust, no login)",
        port,
        &format!("builtin = \"seed-policy\"\n[plugins.p.config]\nweb-ports = [{port}]\n"),
    )
    .await?;
    let request = crate::handshakes::handshake_request(seed.addr);
    rows.push((
        seed.name.clone(),
        handshake_rate_with(&seed, request, seconds, concurrency).await?,
    ));
    drop(seed);
    for (name, path) in PLUGINS {
        // The Python interpreter needs more than the default 32 MiB.
        let t = start(
            bin,
            name,
            free_port(),
            &format!(
                "path = {path:?}\nkeys = [\"login\"]\nmemory-limit = \"96MiB\"\ndeadline = \"1s\"\n"
            ),
        )
        .await?;
        let token = token(t.dir.path(), "alice")?;
        let request = crate::handshakes::handshake_request(t.addr).replacen(
            "GET / ",
            &format!("GET /?token={token} "),
            1,
        );
        rows.push((
            t.name.clone(),
            handshake_rate_with(&t, request, seconds, concurrency).await?,
        ));
    }
    crate::handshakes::print_rates(
        &format!(
            "WebSocket logins per second ({concurrency} clients, {seconds} s: connect, a token checked, 101, close)"
        ),
        "plugin",
        "vs seed-policy",
        &rows,
    );
    Ok(())
}
