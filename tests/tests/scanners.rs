//! What the scanners attackers point at SIP servers get (SIPVicious from Debian:
//! `svwar` enumerates users, `svcrack` guesses passwords), with Digest asked for by
//! the example policy plugin.

use std::time::Duration;

use sipwasm_tests::*;
use tokio::process::Command;

/// The call-policy plugin as router, Digest on REGISTER and INVITE for five users, and
/// the guessing limits given by `limits`.
fn server(limits: &str) -> Server {
    Server::standard(&format!(
        r#"
[sip]
router = "router"
{limits}

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
deadline = "2s"
[plugins.router.config.auth]
realm = "sipwasm"
methods = ["REGISTER", "INVITE"]
users = {{ "107" = "1234", "103" = "secret103", "201" = "pw201", "202" = "pw202", "203" = "pw203" }}
"#
    ))
}

/// Runs a SIPVicious tool against the server's UDP port; returns what it printed (its
/// findings as a table on stdout). SIPVicious 0.3.3 ignores its `-b` option and binds
/// on the wildcard address; it sends only to 127.0.0.1, from 127.0.0.1.
async fn sipvicious(s: &Server, tool: &str, args: &[&str]) -> String {
    let local_port = free_port().to_string();
    let port = s.sip.port().to_string();
    let mut cmd = Command::new(tool);
    cmd.args(["-P", &local_port, "-p", &port])
        .args(args)
        .arg("127.0.0.1")
        // Its session files go to $HOME/.sipvicious.
        .env("HOME", s.data_dir.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{tool} {args:?} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {tool} (Debian package sipvicious): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// svcrack guessing `user`'s password (`-r` range or `-d` dictionary in `args`).
async fn svcrack(s: &Server, user: &str, args: &[&str]) -> String {
    let mut all = vec!["-u", user];
    all.extend_from_slice(args);
    sipvicious(s, "svcrack", &all).await
}

/// A row of svcrack's result table naming `user` and `password`.
fn cracked(output: &str, user: &str, password: &str) -> bool {
    output.lines().any(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        cells.contains(&user) && cells.contains(&password)
    })
}

#[tokio::test]
async fn svcrack_never_learns_a_guessed_password() {
    // Per user the default 10 failures, per address 20, in a window of 5 minutes.
    let s = server("auth-failures-per-address = 20");
    // Against the right password only: found. The tool and the credentials work; what
    // follows is the guard's doing.
    let out = svcrack(&s, "107", &["-r", "1234-1234"]).await;
    assert!(
        cracked(&out, "107", "1234"),
        "svcrack found nothing:\n{out}"
    );
    // 300 guesses, the right one 235th: the user is banned at this address after 10
    // failures, and the right guess gets what a wrong one does.
    let failures = s.metric("sipwasm_digest_failures_total").await;
    let out = svcrack(&s, "107", &["-r", "1000-1299"]).await;
    assert!(!cracked(&out, "107", "1234"), "svcrack cracked it:\n{out}");
    assert!(
        s.wait_for_log("failed Digest responses for this user from this address")
            .await
    );
    assert_eq!(
        s.metric("sipwasm_digest_failures_total").await - failures,
        10
    );
    let refused = s.metric("sipwasm_digest_refused_total").await;
    assert!(refused >= 200, "{refused} refused unchecked");
    assert_eq!(s.metric("sipwasm_digest_bans_total").await, 1);
    // Other users at that address (phones behind the same NAT) go on.
    let out = svcrack(&s, "103", &["-d", &dictionary(&s, &["secret103"])]).await;
    assert!(cracked(&out, "103", "secret103"), "{out}");
    // Spraying: up to 8 guesses each for three more users bans the address at its
    // 20th failure, for every user, the right password of 103 included.
    for user in ["201", "202", "203"] {
        if s.metric("sipwasm_digest_bans_total").await == 2 {
            break;
        }
        svcrack(&s, user, &["-r", "1-8"]).await;
    }
    assert!(
        s.wait_for_log("failed Digest responses from this address")
            .await
    );
    assert_eq!(s.metric("sipwasm_digest_bans_total").await, 2);
    let out = svcrack(&s, "103", &["-d", &dictionary(&s, &["secret103"])]).await;
    assert!(!cracked(&out, "103", "secret103"), "{out}");
}

/// A dictionary file for svcrack, one password a line.
fn dictionary(s: &Server, words: &[&str]) -> String {
    let path = s
        .data_dir
        .path()
        .join(format!("dictionary-{}.txt", words.join("-")));
    std::fs::write(&path, words.join("\n") + "\n").unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn guessing_limits_can_be_lowered_or_turned_off() {
    // No limits: the guesser finds the password among 300 guesses.
    let s = server("auth-failures-per-user = 0\nauth-failures-per-address = 0");
    let out = svcrack(&s, "107", &["-r", "1000-1299"]).await;
    assert!(
        cracked(&out, "107", "1234"),
        "svcrack found nothing:\n{out}"
    );
    assert_eq!(s.metric("sipwasm_digest_bans_total").await, 0);
    assert!(s.metric("sipwasm_digest_failures_total").await >= 234);
    drop(s);
    // A short ban: refused during it, the right password works again after it.
    let s = server("auth-failures-per-user = 3\nauth-ban = \"2s\"");
    let out = svcrack(
        &s,
        "107",
        &["-d", &dictionary(&s, &["a", "b", "c", "1234"])],
    )
    .await;
    assert!(!cracked(&out, "107", "1234"), "{out}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = svcrack(&s, "107", &["-r", "1234-1234"]).await;
    assert!(cracked(&out, "107", "1234"), "the ban did not end:\n{out}");
}

#[tokio::test]
async fn svwar_cannot_tell_users_apart() {
    let s = server("");
    // REGISTER, INVITE and OPTIONS scans over a range holding two users: every
    // extension is answered alike (challenged, or 404 when not registered), so the
    // tool finds none.
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let out = sipvicious(&s, "svwar", &["-e", "100-110", "-m", method]).await;
        assert!(out.contains("found nothing"), "{method}:\n{out}");
        assert!(!out.contains("| 103"), "{method}:\n{out}");
        assert!(!out.contains("| 107"), "{method}:\n{out}");
    }
}
