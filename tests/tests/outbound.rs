//! Outbound HTTP from plugins (`wasi:http`): only to hosts on the plugin's
//! `allowed-outbound-hosts`, refused otherwise (the plugin sees an error; the test
//! plugin then traps, so the request gets the failure policy).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sipwasm_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP service answering every request with `token`; counts requests.
async fn auth_service() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        // Bounded: the test makes a handful of requests.
        for _ in 0..100 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\ntoken",
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

fn config(allowed: &str) -> String {
    format!(
        r#"
[server]
domains = ["localhost", "127.0.0.1"]
data-dir = "{{data}}"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws}}"
plugin = "out"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws2}}"
plugin = "closed-off"

[admin]
listen = "127.0.0.1:{{admin}}"

[plugins.out]
path = "{{plugins}}/outbound.wasm"
deadline = "3s"
allowed-outbound-hosts = [{allowed}]

[plugins.closed-off]
path = "{{plugins}}/outbound.wasm"
deadline = "3s"
"#
    )
}

async fn get(addr: std::net::SocketAddr, target: &str) -> HttpReply {
    http_once(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn plugins_reach_only_the_hosts_they_are_allowed() {
    let (port, seen) = auth_service().await;
    let s = Server::start(&config(&format!("\"http://127.0.0.1:{port}\"")));

    let r = get(
        s.ws,
        &format!("/fetch?http://127.0.0.1:{port}/check?token=abc"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.logs());
    assert_eq!(r.body, b"200 token");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // The same service under another name, and another scheme: not on the list.
    for url in [
        format!("http://localhost:{port}/check"),
        format!("https://127.0.0.1:{port}/check"),
    ] {
        let r = get(s.ws, &format!("/fetch?{url}")).await;
        assert_eq!(r.status, 500, "{url}: {r:?}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "refused requests never left"
    );
    assert!(
        s.wait_for_log(&format!(
            "outbound request to http://localhost:{port} refused: not in allowed-outbound-hosts"
        ))
        .await,
        "{}",
        s.logs()
    );
    // The plugin saw the refusal as an error (its panic message is in the trap report).
    assert!(s.wait_for_log("HttpRequestDenied").await, "{}", s.logs());
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"out\",cause=\"trap\"}")
            .await,
        2
    );

    // A plugin with no allow-list reaches nothing.
    let r = get(s.ws2, &format!("/fetch?http://127.0.0.1:{port}/check")).await;
    assert_eq!(r.status, 500);
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // And the allowed plugin still works after the failures.
    let r = get(s.ws, &format!("/fetch?http://127.0.0.1:{port}/again")).await;
    assert_eq!(r.body, b"200 token");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_bad_allow_list_entry_is_a_config_error_naming_the_key() {
    let err = refused_config(&config("\"127.0.0.1:80\""));
    assert!(
        err.contains("plugins.out.allowed-outbound-hosts") && err.contains("scheme://host"),
        "{err}"
    );
}
