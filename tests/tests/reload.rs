//! Drop-in and hot reload: a plugin file replaced on disk, SIGHUP and the admin call
//! swap the plugin atomically; a broken replacement is refused and the old version
//! keeps serving; handshakes under load never fail across reloads.

use std::path::Path;
use std::time::Duration;

use sipwasm_tests::*;

const CONFIG: &str = r#"
[server]
domains = ["localhost", "127.0.0.1"]
data-dir = "{data}"

[[listen]]
transport = "ws"
address = "127.0.0.1:{ws}"
plugin = "live"

[admin]
listen = "127.0.0.1:{admin}"

[plugin-runtime]
watch-interval = "200ms"

[plugins.live]
path = "LIVE"
"#;

/// Replaces `dst` with `src` atomically (as a deploy tool would).
fn deploy(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

async fn get(addr: std::net::SocketAddr, path: &str) -> HttpReply {
    http_once(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
}

async fn wait_for_count(s: &Server, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while s.logs().matches(needle).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} #{n} in:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replaced_files_sighup_and_the_admin_call_reload_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wasm");
    deploy(&plugin("misbehave"), &live);
    let s = Server::start(&CONFIG.replace("LIVE", &live.display().to_string()));
    assert_eq!(get(s.ws, "/").await.body, b"ok", "misbehave serves");

    // A new file: picked up by the watcher.
    deploy(&plugin("welcome"), &live);
    wait_for_count(&s, "plugin reloaded", 1).await;
    let page = get(s.ws, "/").await;
    assert!(String::from_utf8_lossy(&page.body).contains("<title>sipwasm</title>"));

    // A broken file: refused, the old version keeps serving.
    std::fs::write(dir.path().join("junk"), b"\0asm\x01\0\0\0junk").unwrap();
    deploy(&dir.path().join("junk"), &live);
    wait_for_count(&s, "reload rejected, the old version stays", 1).await;
    let page = get(s.ws, "/").await;
    assert!(String::from_utf8_lossy(&page.body).contains("<title>sipwasm</title>"));

    // SIGHUP reloads at once.
    deploy(&plugin("misbehave"), &live);
    s.signal("HUP");
    wait_for_count(&s, "plugin reloaded", 2).await;
    assert_eq!(get(s.ws, "/").await.body, b"ok");

    // The admin call reloads and says what happened.
    let r = s.admin_request("POST", "/plugins/reload").await;
    assert_eq!(r.status, 200, "{r:?}");
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["live"]["reloaded"], true);
}

#[tokio::test]
async fn handshakes_never_fail_across_reloads_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wasm");
    deploy(&plugin("misbehave"), &live);
    let s = Server::start(&CONFIG.replace("LIVE", &live.display().to_string()));
    // SIP flows opened before the reloads must live through them.
    let mut flows = Vec::new();
    for _ in 0..4 {
        flows.push(ws_connect(s.ws).await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, stop) = (s.ws, stop.clone());
            tokio::spawn(async move {
                let mut done = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && done < 10_000 {
                    let r = http_once(
                        addr,
                        handshake(&format!("localhost:{}", addr.port()), "").as_bytes(),
                    )
                    .await;
                    assert_eq!(r.status, 101, "a handshake failed during a reload: {r:?}");
                    done += 1;
                }
                done
            })
        })
        .collect();
    // Both plugins upgrade SIP handshakes; swap between them three times.
    for (i, name) in ["welcome", "misbehave", "welcome"].iter().enumerate() {
        deploy(&plugin(name), &live);
        wait_for_count(&s, "plugin reloaded", i + 1).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("no client saw a failure");
    }
    assert!(total > 50, "only {total} handshakes ran");
    for (i, ws) in flows.iter_mut().enumerate() {
        options_round_trip(ws, &format!("reload{i}"), "WS", false).await;
    }
    assert_eq!(
        s.metric("sipwasm_flows_open").await,
        4,
        "{}",
        s.metrics().await
    );
}
