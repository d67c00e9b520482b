//! Next hops named by DNS (RFC 3263) against a real DNS server: Debian's dnsmasq on a
//! free loopback port with NAPTR, SRV and A records for the test's zone, the server
//! pointed at it with `dns.servers`, and answering peers that count what reaches them
//! (sockets of the test, and sipp as a phone).

use std::time::{Duration, Instant};

use sipwasm::sip::message::{Message, Response};
use sipwasm_tests::dnsmasq::Dnsmasq;
use sipwasm_tests::peer::{Peer, eventually};
use sipwasm_tests::sip::Ua;
use sipwasm_tests::sipp::{Sipp, SippRun};
use sipwasm_tests::*;

/// The server with `[dns]` pointed at `dns`, relaying requests for other domains.
fn server(dns: &Dnsmasq, extra: &str) -> Server {
    server_with(dns, "1s", extra)
}

/// The server with `[dns]` pointed at `dns`, relaying requests for other domains,
/// giving up on a silent target after `failover`.
fn server_with(dns: &Dnsmasq, failover: &str, extra: &str) -> Server {
    Server::standard(&format!(
        "[sip]\nrelay = true\nfailover-after = \"{failover}\"\n{extra}\n[dns]\nservers = [\"{}\"]\n",
        dns.addr
    ))
}

/// A MESSAGE from `ua` to `uri`; its final status and how long it took.
async fn message(ua: &mut Ua, uri: &str) -> (u16, Duration) {
    let (text, _) = ua.request("MESSAGE", uri, "", "hi");
    let start = Instant::now();
    ua.send(&text).await;
    let r = ua.recv_final().await;
    (r.status, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_priority_and_weight_are_honoured_and_the_backup_takes_over() {
    let (heavy, light, backup) = (
        Peer::udp(Some(200)).await,
        Peer::udp(Some(200)).await,
        Peer::udp(Some(200)).await,
    );
    let dns = Dnsmasq::start(
        "w.test",
        &[
            format!(
                "--srv-host=_sip._udp.w.test,heavy.w.test,{},10,80",
                heavy.addr.port()
            ),
            format!(
                "--srv-host=_sip._udp.w.test,light.w.test,{},10,20",
                light.addr.port()
            ),
            format!(
                "--srv-host=_sip._udp.w.test,backup.w.test,{},20,50",
                backup.addr.port()
            ),
            "--host-record=heavy.w.test,127.0.0.1".into(),
            "--host-record=light.w.test,127.0.0.1".into(),
            "--host-record=backup.w.test,127.0.0.1".into(),
        ],
        300,
    );
    // Silence would cost 5 s here: the failover below is ICMP's.
    let s = server_with(&dns, "5s", "");
    let mut ua = Ua::udp(&s, "alice").await;
    // sip:svc@w.test: no port, no transport: NAPTR (none here), then SRV for each
    // transport, UDP first.
    for n in 0..1000 {
        let (status, _) = message(&mut ua, "sip:svc@w.test").await;
        assert_eq!(status, 200, "MESSAGE {n}");
    }
    let (h, l) = (heavy.got("MESSAGE"), light.got("MESSAGE"));
    assert_eq!(
        h + l,
        1000,
        "priority 10 takes them all (backup got {})",
        backup.got("MESSAGE")
    );
    assert_eq!(backup.got("MESSAGE"), 0);
    // Weights 80:20, drawn per request: 800 expected, 4 standard deviations either side.
    assert!((750..=850).contains(&h), "heavy {h}, light {l}");
    // The name was looked up once and its answer kept for its TTL.
    assert_eq!(dns.queries("SRV", "_sip._udp.w.test"), 1, "{}", dns.logs());
    assert!(s.metric("sipwasm_dns_cached_total").await >= 999);
    assert_eq!(s.metric("sipwasm_dns_lookups_total").await, 1);

    // Both priority-10 servers gone (their ports answer ICMP unreachable): the backup
    // answers, without the caller waiting.
    heavy.close().await;
    light.close().await;
    let (status, took) = message(&mut ua, "sip:svc@w.test").await;
    assert_eq!(status, 200);
    assert_eq!(backup.got("MESSAGE"), 1);
    assert!(
        took < Duration::from_secs(4),
        "failover by ICMP took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_and_503_move_on_to_the_next_target() {
    let silent = Peer::udp(None).await;
    let busy = Peer::udp(Some(503)).await;
    let good = Peer::udp(Some(200)).await;
    let dns = Dnsmasq::start(
        "f.test",
        &[
            format!(
                "--srv-host=_sip._udp.f.test,silent.f.test,{},10,0",
                silent.addr.port()
            ),
            format!(
                "--srv-host=_sip._udp.f.test,busy.f.test,{},20,0",
                busy.addr.port()
            ),
            format!(
                "--srv-host=_sip._udp.f.test,good.f.test,{},30,0",
                good.addr.port()
            ),
            "--host-record=silent.f.test,127.0.0.1".into(),
            "--host-record=busy.f.test,127.0.0.1".into(),
            "--host-record=good.f.test,127.0.0.1".into(),
        ],
        300,
    );
    let s = server(&dns, "");
    let mut ua = Ua::udp(&s, "alice").await;
    let (status, took) = message(&mut ua, "sip:svc@f.test").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            silent.got("MESSAGE"),
            busy.got("MESSAGE"),
            good.got("MESSAGE")
        ),
        (1, 1, 1)
    );
    // failover-after is 1 s here: the silent one cost that, the 503 nothing.
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // A call goes the same way: the INVITE too, and its 503 is ACKed.
    let (invite, _) = ua.request("INVITE", "sip:svc@f.test", "", sipwasm_tests::sip::SDP);
    ua.send(&invite).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 200);
    eventually("the 503 is ACKed hop by hop", || busy.got("ACK") == 1).await;
    assert_eq!(good.got("INVITE"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naptr_chooses_tcp_and_a_sipp_phone_answers_there() {
    let port = free_port();
    let dns = Dnsmasq::start(
        "n.test",
        &[
            // TCP ordered before UDP: TCP it is, though UDP would work too.
            "--naptr-record=n.test,10,50,S,SIP+D2T,,_sip._tcp.n.test".into(),
            "--naptr-record=n.test,20,50,S,SIP+D2U,,_sip._udp.n.test".into(),
            format!("--srv-host=_sip._tcp.n.test,pbx.n.test,{port},10,10"),
            format!(
                "--srv-host=_sip._udp.n.test,pbx.n.test,{},10,10",
                free_port()
            ),
            "--host-record=pbx.n.test,127.0.0.1".into(),
        ],
        300,
    );
    let s = server(&dns, "");
    let phone = Sipp::start(
        &s,
        SippRun {
            scenario: "uas_answer.xml",
            service: "pbxphone",
            transport: "t1",
            port,
            fill: &[],
            keys: &[],
            load: None,
        },
    );
    // sipp needs a moment to listen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ua = Ua::udp(&s, "alice").await;
    let ok = ua.call_and_hang_up("sip:pbxphone@n.test").await;
    assert_eq!(ok.status, 200);
    phone.success().await;
    assert_eq!(dns.queries("NAPTR", "n.test"), 1, "{}", dns.logs());
    assert_eq!(dns.queries("SRV", "_sip._tcp.n.test"), 1, "{}", dns.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_is_answered_at_once() {
    let dns = Dnsmasq::start(
        "u.test",
        &["--host-record=only-a.u.test,127.0.0.1".into()],
        300,
    );
    let s = server(&dns, "");
    let mut ua = Ua::udp(&s, "alice").await;
    // No such name (NXDOMAIN from the zone's server): 500, quickly, with the reason.
    let (text, _) = ua.request("MESSAGE", "sip:x@nowhere.u.test", "", "hi");
    let start = Instant::now();
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "Unresolvable Destination")
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        s.wait_for_log("next hop did not resolve").await,
        "{}",
        s.logs()
    );
    assert_eq!(s.metric("sipwasm_dns_failures_total").await, 1);
    // Again: from the negative cache, without asking DNS.
    let before = dns.queries("NAPTR", "nowhere.u.test");
    let (status, _) = message(&mut ua, "sip:x@nowhere.u.test").await;
    assert_eq!(status, 500);
    assert_eq!(dns.queries("NAPTR", "nowhere.u.test"), before);
    assert!(s.metric("sipwasm_dns_cached_total").await >= 1);
    // A port on a name: its address only (RFC 3263 4.2); nobody listens there: ICMP,
    // 500 at once.
    let (status, took) = message(&mut ua, "sip:x@only-a.u.test:1").await;
    assert_eq!(status, 500);
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(dns.queries("NAPTR", "only-a.u.test"), 0, "{}", dns.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_without_sip_records_is_reached_at_its_address_on_5060() {
    // A peer on port 5060 of a loopback address of its own (the first free one).
    let mut free = None;
    for last in 200..=250u8 {
        let addr = std::net::SocketAddr::from(([127, 0, 0, last], 5060));
        if let Some(p) = Peer::try_udp_at(addr, Some(200)).await {
            free = Some(p);
            break;
        }
    }
    let peer = free.expect("a free 127.0.0.x:5060");
    let at = peer.addr;
    let dns = Dnsmasq::start(
        "a.test",
        &[format!("--host-record=pbx.a.test,{}", at.ip())],
        300,
    );
    let s = server(&dns, "");
    let mut ua = Ua::udp(&s, "alice").await;
    // No NAPTR, no SRV (RFC 3263 4.2): the name's address, UDP, port 5060.
    let (status, _) = message(&mut ua, "sip:x@pbx.a.test").await;
    assert_eq!(status, 200);
    assert_eq!(peer.got("MESSAGE"), 1);
    for kind in ["NAPTR", "SRV", "A"] {
        let asked = if kind == "SRV" {
            dns.queries(kind, "_sip._udp.pbx.a.test")
        } else {
            dns.queries(kind, "pbx.a.test")
        };
        assert_eq!(asked, 1, "{kind}\n{}", dns.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_that_never_answers_costs_the_dns_timeout_not_a_hang() {
    // Nothing listens on this port: every query times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = Server::standard(&format!(
        "[sip]\nrelay = true\n[dns]\nservers = [\"{}\"]\ntimeout = \"300ms\"\nattempts = 1\n",
        silent.local_addr().unwrap()
    ));
    let mut ua = Ua::udp(&s, "alice").await;
    let (status, took) = message(&mut ua, "sip:x@dark.example.test").await;
    assert_eq!(status, 500);
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(silent);
}

/// A test certificate authority and certificates it issued, as PEM files.
struct TestCa {
    dir: tempfile::TempDir,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sipwasm test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Self { dir, issuer }
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names`: its (cert, key) files.
    fn issue(&self, label: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{label}.crt")),
            self.dir.path().join(format!("{label}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A second server that serves `domain` over TLS only, with `cert`.
fn tls_peer(domain: &str, cert: &std::path::Path, key: &std::path::Path) -> Server {
    Server::start(&format!(
        r#"
[server]
domains = ["{domain}"]
data-dir = "{{data}}"
shutdown-grace = "1s"

[[listen]]
transport = "tls"
address = "127.0.0.1:{{tls}}"
tls-cert = "{}"
tls-key = "{}"
"#,
        cert.display(),
        key.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_reaches_a_tls_peer_whose_certificate_names_the_domain_and_no_other() {
    let ca = TestCa::new();
    // The certificate names the URI's domain (RFC 5922), not the SRV target's host.
    let (good_cert, good_key) = ca.issue("good", &["s.test"]);
    let (bad_cert, bad_key) = ca.issue("bad", &["other.test"]);
    // t.test resolves to the good peer's address too; its certificate does not name
    // t.test.
    let good = tls_peer("s.test", &good_cert, &good_key);
    let bad = tls_peer("o.test", &bad_cert, &bad_key);
    let dns = Dnsmasq::start(
        "test",
        &[
            format!(
                "--srv-host=_sips._tcp.s.test,pbx.s.test,{},10,10",
                good.tls.port()
            ),
            format!(
                "--srv-host=_sips._tcp.o.test,pbx.o.test,{},10,10",
                bad.tls.port()
            ),
            format!(
                "--srv-host=_sips._tcp.t.test,pbx.s.test,{},10,10",
                good.tls.port()
            ),
            "--host-record=pbx.s.test,127.0.0.1".into(),
            "--host-record=pbx.o.test,127.0.0.1".into(),
        ],
        300,
    );
    let s = server(
        &dns,
        &format!("[tls-client]\nca-file = \"{}\"\n", ca.ca_file().display()),
    );
    let mut ua = Ua::tls(&s, "alice").await;
    // OPTIONS to the peer's domain: it answers for itself, over the TLS connection
    // the server opened; a second one reuses that connection.
    for n in 0..2 {
        let (text, _) = ua.request("OPTIONS", "sips:s.test", "", "");
        ua.send(&text).await;
        let r = ua.recv_final().await;
        assert_eq!(r.status, 200, "OPTIONS {n}: {r:?}\n{}", s.logs());
    }
    assert_eq!(
        good.logs().matches("SIP stream flow open").count(),
        1,
        "one connection from the server, reused"
    );
    // The other domain's certificate names another: refused, the caller gets 500.
    let (text, _) = ua.request("OPTIONS", "sips:o.test", "", "");
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        s.wait_for_log("TLS to next hop failed").await,
        "{}",
        s.logs()
    );
    // Another name at the good peer's address: the connection that proved s.test
    // proves nothing for t.test, and a new one is refused.
    let (text, _) = ua.request("OPTIONS", "sips:t.test", "", "");
    ua.send(&text).await;
    assert_eq!(ua.recv_final().await.status, 500);
    // s.test still goes over the connection that proved it.
    let (text, _) = ua.request("OPTIONS", "sips:s.test", "", "");
    ua.send(&text).await;
    assert_eq!(ua.recv_final().await.status, 200);
}

/// A TLS peer that demands a client certificate chained to `ca` and answers each
/// SIP request on the connection with 200; the names its clients' certificates gave.
async fn mutual_tls_peer(
    ca: &TestCa,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use rustls_pki_types::pem::PemObject;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca.ca_file()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = clients.clone();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.len())
                .unwrap_or(0);
            seen.lock()
                .unwrap()
                .push(format!("{presented} certificate(s)"));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // One request at a time: up to its blank line (OPTIONS carry no body).
            for _ in 0..64 {
                let Ok(n) = tls.read(&mut chunk).await else {
                    break;
                };
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    if let Ok(Message::Request(req)) = sipwasm::sip::parse(&head) {
                        let resp = Response::for_request(&req, 200, Some("mtls"));
                        let _ = tls.write_all(&resp.to_bytes()).await;
                    }
                }
            }
        }
    });
    (addr, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_that_demands_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new();
    let (trunk_cert, trunk_key) = ca.issue("trunk", &["m.test"]);
    let (client_cert, client_key) = ca.issue("client", &["sipwasm.example"]);
    let (addr, clients) = mutual_tls_peer(&ca, &trunk_cert, &trunk_key).await;
    let dns = Dnsmasq::start(
        "m.test",
        &[
            format!(
                "--srv-host=_sips._tcp.m.test,trunk.m.test,{},10,10",
                addr.port()
            ),
            "--host-record=trunk.m.test,127.0.0.1".into(),
        ],
        300,
    );
    let s = server(
        &dns,
        &format!(
            "[tls-client]\nca-file = \"{}\"\nclient-cert = \"{}\"\nclient-key = \"{}\"\n",
            ca.ca_file().display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    let mut ua = Ua::tls(&s, "alice").await;
    let (text, _) = ua.request("OPTIONS", "sips:m.test", "", "");
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.logs());
    assert_eq!(
        *clients.lock().unwrap(),
        vec!["1 certificate(s)".to_string()]
    );
}

#[test]
fn a_client_certificate_without_its_key_is_a_config_error() {
    let err = refused_config(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n[tls-client]\nclient-cert = \"/nonexistent.pem\"\n",
    );
    assert!(err.contains("tls-client.client-key"), "{err}");
    // And files that cannot be read stop the start, naming the key.
    let err = refused_config(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n[tls-client]\nca-file = \"/nonexistent/ca.pem\"\n",
    );
    assert!(err.contains("tls-client.ca-file"), "{err}");
}
