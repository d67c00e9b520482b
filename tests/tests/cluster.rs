//! Several sipwasm nodes sharing one location service on Redis (`[cluster]`): Debian's
//! redis-server started on a free port with persistence off, nodes on 127.0.0.2,
//! 127.0.0.3 and 127.0.0.4, real browser stacks (JsSIP, SIP.js under Node) and UDP
//! phones registered on different nodes reaching each other.

use std::time::{Duration, Instant};

use serde_json::json;
use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::js::{Agent, Lib, browser_call, browser_calls_phone, phone_calls_browser};
use sipwasm_tests::peer::eventually;
use sipwasm_tests::redis::{Redis, RedisCluster, RedisSentinel};
use sipwasm_tests::sip::Ua;
use sipwasm_tests::*;

const A: [u8; 4] = [127, 0, 0, 2];
const B: [u8; 4] = [127, 0, 0, 3];
const C: [u8; 4] = [127, 0, 0, 4];

/// A node of the standard server on `ip`, in a cluster on `redis`; `extra` TOML
/// before `[cluster]`.
fn node(redis: &Redis, ip: [u8; 4], id: &str, extra: &str) -> Server {
    node_on(&format!("redis = \"{}\"", redis.url()), ip, id, extra)
}

/// [`node`] with its store given as `cluster.redis` (and `sentinel-master`) lines.
fn node_on(store: &str, ip: [u8; 4], id: &str, extra: &str) -> Server {
    node_with_peers(store, "[\"127.0.0.0/8\"]", ip, id, extra)
}

/// [`node_on`] with `cluster.peers` = `peers`.
fn node_with_peers(store: &str, peers: &str, ip: [u8; 4], id: &str, extra: &str) -> Server {
    let template = format!(
        "{}\n{extra}\n[cluster]\nnode-id = \"{id}\"\n{store}\naddress = \"{{ip}}:{{sip}}\"\n\
         peers = {peers}\nheartbeat = \"500ms\"\ndead-after = \"2s\"\n",
        STANDARD.replace("127.0.0.1:{", "{ip}:{"),
    );
    Server::start_at(ip, &template)
}

const AOR: fn(&str) -> String = |u| format!("sip:{u}@localhost");

#[tokio::test]
async fn browsers_on_different_nodes_message_and_call_each_other() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let b = node(&redis, B, "b", "");
    let c = node(&redis, C, "c", "");
    let mut alice = Agent::start(&a, Lib::JsSip, "alice", None).await;
    let mut carol = Agent::start(&c, Lib::JsSip, "carol", None).await;
    let mut sam = Agent::start(&b, Lib::SipJs, "sam", None).await;
    alice.register().await;
    carol.register().await;
    sam.register().await;
    // Each binding is in Redis, owned by the node that holds its flow.
    let records = redis.bindings(&AOR("carol"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1["n"], "c", "{records:?}");

    // SIP.js on B messages JsSIP on A, and back.
    sam.cmd(json!({"cmd": "message", "target": "alice", "body": "from c"}))
        .await;
    assert_eq!(alice.expect("message").await["body"], "from c");
    sam.expect("message_sent").await;
    alice
        .cmd(json!({"cmd": "message", "target": "sam", "body": "from a"}))
        .await;
    assert_eq!(sam.expect("message").await["body"], "from a");
    alice.expect("message_sent").await;

    // JsSIP on A calls JsSIP on C; each side hangs up once.
    browser_call(&mut alice, &mut carol, false).await;
    browser_call(&mut alice, &mut carol, true).await;
    // Unregistered on B: gone from Redis, and a message to it is 480 from A.
    sam.cmd(json!({"cmd": "unregister"})).await;
    sam.expect("unregistered").await;
    assert!(redis.binding_keys(&AOR("sam")).is_empty());
    alice
        .cmd(json!({"cmd": "message", "target": "sam", "body": "?"}))
        .await;
    assert_eq!(alice.expect("message_failed").await["status"], 480);
}

#[tokio::test]
async fn a_udp_phone_registered_through_one_node_is_called_from_another() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let b = node(&redis, B, "b", "");
    let mut browser = Agent::start(&a, Lib::JsSip, "webuser", None).await;
    browser.register().await;
    let mut phone = Ua::udp(&b, "deskphone").await;
    assert_eq!(phone.register(600).await.status, 200);

    // Browser on A → phone on B (through B: the phone's NAT binding is B's), then
    // back.
    let inv = browser_calls_phone(&mut browser, &mut phone).await;
    // Each node record-routes: the dialog's requests go through both.
    assert_eq!(
        inv.headers.values(&HeaderName::RecordRoute).count(),
        4,
        "{inv:?}"
    );
    let top_via = inv.headers.values(&HeaderName::Via).next().unwrap_or("");
    assert!(
        top_via.contains(&b.sip.to_string()),
        "the INVITE comes from node B: {top_via}"
    );
    phone_calls_browser(&mut phone, &mut browser).await;
}

#[tokio::test]
async fn one_instance_registered_on_two_nodes_keeps_one_binding() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let instance = "5c0f7a3e-9d2b-4e61-8f4a-1b2c3d4e5f60";
    let mut old_tab = Agent::start(&a, Lib::JsSip, "mover", Some(instance)).await;
    old_tab.register().await;
    let mut new_tab = Agent::start(&c, Lib::JsSip, "mover", Some(instance)).await;
    new_tab.register().await;
    let records = redis.bindings(&AOR("mover"));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1["n"], "c");
    // A REGISTER query on either node lists the one binding; node A dropped its own
    // (told by the store), so a phone on A reaches the new tab only.
    for n in [&a, &c] {
        let mut phone = Ua::udp(n, "counter").await;
        let (q, _) = phone.request("REGISTER", "sip:localhost", "", "");
        let q = q
            .replace("To: <sip:localhost>", "To: <sip:mover@localhost>")
            .replace("Contact: <", "X-No-Contact: <");
        phone.send(&q).await;
        let r = phone.recv_final().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.values(&HeaderName::Contact).count(), 1, "{r:?}");
    }
    assert_eq!(a.metric("sipwasm_cluster_evictions_total").await, 1);
    let mut phone = Ua::udp(&a, "counter").await;
    let (m, _) = phone.request("MESSAGE", "mover", "", "which tab?");
    phone.send(&m).await;
    new_tab.expect("message").await;
    assert_eq!(phone.recv_final().await.status, 200);
    drop(old_tab);
}

#[tokio::test]
async fn a_dead_node_is_skipped_at_once_purged_and_its_users_come_back_elsewhere() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let mut alice = Agent::start(&a, Lib::JsSip, "alice", None).await;
    alice.register().await;
    let mut carol = Agent::start(&c, Lib::JsSip, "carol", None).await;
    carol.register().await;
    assert_eq!(redis.binding_keys(&AOR("carol")).len(), 1);
    // And 250 phones more on C: its purge takes batches.
    let mut phones = Vec::new();
    for i in 0..250 {
        let mut p = Ua::udp(&c, &format!("bulk{i}")).await;
        assert_eq!(p.register(600).await.status, 200);
        phones.push(p);
    }
    let index = |n: &str| redis.cli(&["SCARD", &format!("sw:{{nodes}}:aors:{n}")]);
    assert_eq!(index("c").trim(), "251");

    c.signal("KILL");
    let killed = Instant::now();
    // A call to carol fails with 480 (her node refuses connections, then is known
    // dead), not after a timeout.
    alice.cmd(json!({"cmd": "call", "target": "carol"})).await;
    let failed = alice.expect("failed").await;
    assert_eq!(failed["status"], 480, "{failed}");
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    // Her binding is purged by A once C's heartbeat expired (dead-after 2 s).
    eventually("C's bindings purged from Redis", || {
        redis.binding_keys(&AOR("carol")).is_empty() && index("c").trim() == "0"
    })
    .await;
    for i in [0, 125, 249] {
        assert!(redis.binding_keys(&AOR(&format!("bulk{i}"))).is_empty());
    }
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "purged after {:?}",
        killed.elapsed()
    );
    assert!(a.wait_for_log("cluster node dead").await);
    // Her browser comes back on A, and the call goes through.
    drop(carol);
    let mut carol = Agent::start(&a, Lib::JsSip, "carol", None).await;
    carol.register().await;
    browser_call(&mut alice, &mut carol, false).await;
}

#[tokio::test]
async fn without_redis_registers_get_503_local_calls_go_on_and_a_restarted_redis_is_refilled() {
    let mut redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let mut p1 = Ua::udp(&a, "p1").await;
    let mut p2 = Ua::udp(&a, "p2").await;
    let mut p3 = Ua::udp(&c, "p3").await;
    for p in [&mut p1, &mut p2, &mut p3] {
        assert_eq!(p.register(600).await.status, 200);
    }
    let mut browser = Agent::start(&c, Lib::SipJs, "web", None).await;
    browser.register().await;

    // Both nodes alive, as A's heartbeat (every 500 ms) sees them.
    let mut nodes = 0;
    for _ in 0..50 {
        nodes = a.metric("sipwasm_cluster_nodes").await;
        if nodes == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes, 2);
    // A hung Redis (SIGSTOP: connections accepted, nothing answered): a REGISTER gets
    // its 503 within cluster.timeout (300 ms), and at once once a heartbeat failed;
    // back when it answers again.
    redis.pause();
    let mut hung = Ua::udp(&a, "hung").await;
    for _ in 0..2 {
        let started = Instant::now();
        let r = hung.register(600).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    redis.resume();
    let mut status = 0;
    for _ in 0..30 {
        status = hung.register(600).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "REGISTER after Redis answered again");
    redis.stop();
    // A REGISTER cannot be decided against the other nodes: 503, Retry-After spread
    // between 10 and 30 s, answered within the store's timeout.
    let mut newcomer = Ua::udp(&a, "newcomer").await;
    let started = Instant::now();
    let r = newcomer.register(600).await;
    assert_eq!(r.status, 503, "{r:?}");
    let retry: u32 = r
        .headers
        .get(&HeaderName::RetryAfter)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {r:?}"));
    assert!((10..=30).contains(&retry), "{retry}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(a.metric("sipwasm_cluster_store_failures_total").await >= 1);
    // Calls between clients of one node go on.
    for _ in 0..3 {
        let (m, _) = p1.request("MESSAGE", "p2", "", "still here");
        p1.send(&m).await;
        let req = p2.recv_request("MESSAGE").await;
        p2.send(&p2.response(&req, 200, "", "")).await;
        assert_eq!(p1.recv_final().await.status, 200);
    }

    // Back, empty: every node writes its bindings again within seconds.
    redis.restart();
    eventually("every binding back in Redis", || {
        ["p1", "p2", "p3", "web", "hung"]
            .iter()
            .all(|u| redis.binding_keys(&AOR(u)).len() == 1)
    })
    .await;
    assert_eq!(redis.bindings(&AOR("p3"))[0].1["n"], "c");
    for n in [&a, &c] {
        assert_eq!(n.metric("sipwasm_cluster_republished_total").await, 1);
    }
    // And across nodes again.
    let (m, _) = p1.request("MESSAGE", "web", "", "back");
    p1.send(&m).await;
    assert_eq!(browser.expect("message").await["body"], "back");
    assert_eq!(p1.recv_final().await.status, 200);
    assert_eq!(newcomer.register(600).await.status, 200);
}

#[tokio::test]
async fn of_two_registers_for_one_binding_on_two_nodes_the_lower_cseq_loses() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let b = node(&redis, B, "b", "");
    // One phone's REGISTERs (one Call-ID, one Contact) reach both nodes, as through
    // DNS SRV across edges: CSeq 10 on A, CSeq 5 on B.
    for round in 0..20 {
        let user = format!("racer{round}");
        let mut on_a = Ua::udp(&a, &user).await;
        let mut on_b = Ua::udp(&b, &user).await;
        let contact = on_a.contact();
        let high = on_a
            .register_text(600)
            .replace("CSeq: 1 REGISTER", "CSeq: 10 REGISTER");
        let low = on_b
            .register_text(600)
            .replace("CSeq: 1 REGISTER", "CSeq: 5 REGISTER")
            .replace(&on_b.contact(), &contact)
            .replace(&format!("reg-{user}-"), "x-")
            .to_string();
        // Same Call-ID on both.
        let call_id = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("Call-ID:"))
                .unwrap()
                .to_string()
        };
        let low = low.replace(&call_id(&low), &call_id(&high));
        let (ra, rb) = tokio::join!(
            async {
                on_a.send(&high).await;
                on_a.recv_final().await
            },
            async {
                on_b.send(&low).await;
                on_b.recv_final().await
            }
        );
        assert_eq!(ra.status, 200, "CSeq 10 always wins: {ra:?}\n{}", a.logs());
        assert!(
            rb.status == 200 || rb.status == 500,
            "CSeq 5: 200 before the other, 500 after: {rb:?}"
        );
        let records = redis.bindings(&AOR(&user));
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].1["s"], 10, "round {round}: {records:?}");
        assert_eq!(records[0].1["n"], "a");
    }
    // After CSeq 10, CSeq 5 on the other node is refused.
    let mut on_a = Ua::udp(&a, "late").await;
    let mut on_b = Ua::udp(&b, "late").await;
    let high = on_a
        .register_text(600)
        .replace("CSeq: 1 REGISTER", "CSeq: 10 REGISTER");
    on_a.send(&high).await;
    assert_eq!(on_a.recv_final().await.status, 200);
    let call = high
        .lines()
        .find(|l| l.starts_with("Call-ID:"))
        .unwrap()
        .to_string();
    let mut low = on_b
        .register_text(600)
        .replace("CSeq: 1 REGISTER", "CSeq: 5 REGISTER")
        .replace(&on_b.contact(), &on_a.contact());
    let own = low
        .lines()
        .find(|l| l.starts_with("Call-ID:"))
        .unwrap()
        .to_string();
    low = low.replace(&own, &call);
    on_b.send(&low).await;
    let r = on_b.recv_final().await;
    assert_eq!(r.status, 500, "{r:?}");
}

#[tokio::test]
async fn a_routing_plugins_lookup_answers_for_every_node() {
    let redis = Redis::start();
    let router = "[sip]\nrouter = \"router\"\n[plugins.router]\n\
                  path = \"{plugins}/call_policy.wasm\"\ndeadline = \"2s\"\n";
    let a = node(&redis, A, "a", router);
    let c = node(&redis, C, "c", router);
    let mut carol = Agent::start(&c, Lib::JsSip, "carol", None).await;
    carol.register().await;
    let mut phone = Ua::udp(&a, "asker").await;
    assert_eq!(phone.register(600).await.status, 200);
    // call-policy answers `OPTIONS whereis` with what `lookup` gives for X-Lookup:
    // on node A, carol's binding on node C, and the asker's own on A.
    for (aor, transport) in [
        ("sip:carol@localhost", "ws"),
        ("sip:asker@localhost", "udp"),
    ] {
        let (q, _) = phone.request("OPTIONS", "whereis", &format!("X-Lookup: {aor}\r\n"), "");
        phone.send(&q).await;
        let r = phone.recv_final().await;
        assert_eq!(r.status, 200, "{r:?}");
        let contacts: Vec<&str> = r.headers.values(&HeaderName::Contact).collect();
        assert_eq!(contacts.len(), 1, "{aor}: {r:?}");
        assert!(
            contacts[0].ends_with(&format!("transport-used={transport}")),
            "{contacts:?}"
        );
    }
    // And a call from A through the plugin reaches her on C.
    let (m, _) = phone.request("MESSAGE", "carol", "", "via the router");
    phone.send(&m).await;
    assert_eq!(carol.expect("message").await["body"], "via the router");
    assert_eq!(phone.recv_final().await.status, 200);
}

#[tokio::test]
async fn a_node_that_drops_its_connection_with_a_request_in_flight_fails_it_at_once() {
    use tokio::io::AsyncReadExt as _;
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    // A node "ghost" whose user's binding is in the store as a node writes it (its
    // heartbeat alive), and whose process takes the request and dies with it.
    let ghost = tokio::net::TcpListener::bind("127.0.0.5:0").await.unwrap();
    let addr = ghost.local_addr().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let contact = "sip:g@x.invalid;transport=ws";
    let record = json!({
        "c": contact, "x": now_ms + 600_000, "u": now_ms, "i": "reg-g", "s": 1,
        "p": [format!("<sip:ftAAAA@{addr};transport=tcp;lr;swc>")],
        "t": "ws", "n": "ghost", "e": "e1",
    });
    redis.cli(&["SET", "sw:{nodes}:beat:ghost", "e1", "PX", "60000"]);
    redis.cli(&[
        "HSET",
        "sw:{sip:ghostuser@localhost}:b",
        contact,
        &record.to_string(),
    ]);
    redis.cli(&[
        "ZADD",
        "sw:{sip:ghostuser@localhost}:x",
        &(now_ms + 600_000).to_string(),
        contact,
    ]);
    let taken = tokio::spawn(async move {
        let (mut s, _) = ghost.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap();
        buf.truncate(n);
        String::from_utf8(buf).unwrap()
    });
    let mut phone = Ua::udp(&a, "caller").await;
    let (m, _) = phone.request("MESSAGE", "ghostuser", "", "hello?");
    let started = Instant::now();
    phone.send(&m).await;
    let r = phone.recv_final().await;
    // Not the 408 of Timer F 32 s later: the user is unavailable.
    assert_eq!(r.status, 480, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let got = taken.await.unwrap();
    assert!(
        got.starts_with(&format!("MESSAGE {contact} SIP/2.0")),
        "{got}"
    );
    assert!(
        got.contains(&format!("Route: <sip:ftAAAA@{addr};transport=tcp;lr;swc>")),
        "{got}"
    );
}

#[tokio::test]
async fn a_restarted_node_publishes_its_udp_phones_again_without_them_registering() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let mut b = node(&redis, B, "b", "");
    let mut phone = Ua::udp(&b, "steady").await;
    assert_eq!(phone.register(3600).await.status, 200);
    let before = redis.bindings(&AOR("steady"));
    assert_eq!(before.len(), 1, "{before:?}");
    let epoch = before[0].1["e"].clone();
    // B restarts (its data directory keeps UDP registrations): no REGISTER is needed,
    // it writes the phone's binding again under its new boot epoch at once...
    b.restart();
    eventually("the phone's binding written again by B's new life", || {
        redis
            .bindings(&AOR("steady"))
            .first()
            .is_some_and(|(_, r)| r["n"] == "b" && r["e"] != epoch)
    })
    .await;
    assert_eq!(redis.binding_keys(&AOR("steady")).len(), 1);
    // ...and a caller on A reaches the phone through B.
    let mut caller = Ua::udp(&a, "caller").await;
    let (m, _) = caller.request("MESSAGE", "steady", "", "still there?");
    caller.send(&m).await;
    let req = phone.recv_request("MESSAGE").await;
    phone.send(&phone.response(&req, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
}

#[tokio::test]
async fn nodes_share_a_redis_cluster() {
    let store = RedisCluster::start();
    let list: Vec<String> = store.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let line = format!("redis = [{}]", list.join(", "));
    let a = node_on(&line, A, "a", "");
    let c = node_on(&line, C, "c", "");
    let mut alice = Agent::start(&a, Lib::JsSip, "alice", None).await;
    let mut carol = Agent::start(&c, Lib::SipJs, "carol", None).await;
    alice.register().await;
    carol.register().await;
    // Phones on both nodes: their AoRs are spread over the cluster's masters.
    let mut phones = Vec::new();
    for i in 0..12 {
        let mut p = Ua::udp(if i % 2 == 0 { &a } else { &c }, &format!("p{i}")).await;
        assert_eq!(p.register(600).await.status, 200);
        phones.push(p);
    }
    let holding = store
        .nodes
        .iter()
        .filter(|n| n.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap_or(0) > 0)
        .count();
    assert!(holding >= 2, "AoRs on {holding} of 3 masters");
    assert_eq!(store.binding_keys(&AOR("carol")).len(), 1);
    // Across nodes both ways, and to a phone on the other node.
    alice
        .cmd(json!({"cmd": "message", "target": "carol", "body": "over the cluster"}))
        .await;
    assert_eq!(carol.expect("message").await["body"], "over the cluster");
    alice.expect("message_sent").await;
    browser_call(&mut carol, &mut alice, true).await;
    let (m, _) = phones[0].request("MESSAGE", "p1", "", "a to c");
    phones[0].send(&m).await;
    let req = phones[1].recv_request("MESSAGE").await;
    let ok = phones[1].response(&req, 200, "", "");
    phones[1].send(&ok).await;
    assert_eq!(phones[0].recv_final().await.status, 200);
}

#[tokio::test]
async fn the_store_follows_a_sentinel_failover() {
    let mut store = RedisSentinel::start();
    let line = format!(
        "redis = \"{}\"\nsentinel-master = \"mymaster\"",
        store.url()
    );
    let a = node_on(&line, A, "a", "");
    let c = node_on(&line, C, "c", "");
    let mut before = Ua::udp(&c, "before").await;
    let mut r = before.register(600).await;
    // The nodes find the master through the Sentinel at their first heartbeat.
    for _ in 0..50 {
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = before.register(600).await;
    }
    assert_eq!(r.status, 200, "{r:?}");
    let old = store.master_port();
    assert_eq!(old, store.master.addr.port());
    // Wait for the replica to have it, then the master dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .replica
        .cli(&["HKEYS", &format!("sw:{{{}}}:b", AOR("before"))])
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "not replicated within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.master.stop();
    let failed = Instant::now();
    // REGISTERs get 503 until the Sentinel promoted the replica, then 200 again.
    let mut after = Ua::udp(&a, "after").await;
    let mut status = 0;
    while failed.elapsed() < Duration::from_secs(30) {
        status = after.register(600).await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status, 200,
        "no REGISTER went through within 30 s of the failover"
    );
    assert_eq!(store.master_port(), store.replica.addr.port());
    // The binding written before the failover is still found: a call from A reaches
    // the phone on C.
    let (m, _) = after.request("MESSAGE", "before", "", "after the failover");
    after.send(&m).await;
    let req = before.recv_request("MESSAGE").await;
    before.send(&before.response(&req, 200, "", "")).await;
    assert_eq!(after.recv_final().await.status, 200);
}

#[tokio::test]
async fn the_store_keeps_what_one_node_would_remember_and_no_more() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let ttl = |aor: &str| -> i64 {
        let out = redis.cli(&["PTTL", &format!("sw:{{{aor}}}:b")]);
        out.trim().parse().unwrap_or_else(|_| panic!("PTTL: {out}"))
    };
    let indexed = |aor: &str| redis.cli(&["SISMEMBER", "sw:{nodes}:aors:a", aor]).trim() == "1";
    // Registered once and left to expire (as a REGISTER flood's AoRs are): its keys
    // go with its binding.
    let mut once = Ua::udp(&a, "once").await;
    assert_eq!(once.register(120).await.status, 200);
    let t = ttl(&AOR("once"));
    assert!((1..=120_000).contains(&t), "{t}");
    assert!(indexed(&AOR("once")));
    // Refreshed, then unregistered: remembered for a day (480 on every node, as on
    // one node), and off the node's index of AoRs to purge.
    let mut gone = Ua::udp(&a, "gone").await;
    assert_eq!(gone.register(120).await.status, 200);
    assert_eq!(gone.register(120).await.status, 200);
    assert_eq!(gone.register(0).await.status, 200);
    assert!(redis.binding_keys(&AOR("gone")).is_empty());
    let t = ttl(&AOR("gone"));
    assert!(t > 23 * 3600 * 1000, "{t}");
    assert!(!indexed(&AOR("gone")));
    let mut caller = Ua::udp(&c, "caller").await;
    for (user, status) in [("gone", 480), ("nobody", 404)] {
        let (m, _) = caller.request("MESSAGE", user, "", "?");
        caller.send(&m).await;
        assert_eq!(caller.recv_final().await.status, status, "{user}");
    }
}

#[tokio::test]
async fn a_node_that_missed_an_eviction_drops_the_binding_once_it_listens_again() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let mut phone = Ua::udp(&a, "roamer").await;
    assert_eq!(phone.register(600).await.status, 200);
    // Another node ("b") took the binding over while A was not listening: the
    // record is b's, and no eviction reaches A.
    let (key, mut record) = redis.bindings(&AOR("roamer")).remove(0);
    record["n"] = json!("b");
    let hash = format!("sw:{{{}}}:b", AOR("roamer"));
    redis.cli(&["HSET", &hash, &key, &record.to_string()]);
    let contacts = |r: &sipwasm::sip::Response| r.headers.values(&HeaderName::Contact).count();
    let mut asker = Ua::udp(&a, "asker").await;
    let query = |asker: &mut Ua| {
        let (q, _) = asker.request("REGISTER", "sip:localhost", "", "");
        q.replace("To: <sip:localhost>", &format!("To: <{}>", AOR("roamer")))
            .replace("Contact: <", "X-No-Contact: <")
    };
    let q = query(&mut asker);
    asker.send(&q).await;
    assert_eq!(
        contacts(&asker.recv_final().await),
        1,
        "A still has its copy"
    );
    // A's subscription drops (as when its Redis connection is lost); listening again,
    // it reads what the store has as its own and drops the rest.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut left = 1;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let q = query(&mut asker);
        asker.send(&q).await;
        left = contacts(&asker.recv_final().await);
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "A dropped the binding the store has as b's");
}

#[tokio::test]
async fn only_the_other_nodes_may_route_by_a_nodes_route() {
    let redis = Redis::start();
    // The test's address is a trusted peer (a gateway, say), not a node.
    let a = node_with_peers(
        &format!("redis = \"{}\"", redis.url()),
        "[\"127.0.0.3\", \"127.0.0.4\"]",
        A,
        "a",
        "[sip]\ntrusted-peers = [\"127.0.0.1\"]\n",
    );
    let mut browser = Ua::ws(&a, "webby").await;
    assert_eq!(browser.register(600).await.status, 200);
    let records = redis.bindings(&AOR("webby"));
    let route = records[0].1["p"][0].as_str().unwrap().to_string();
    assert!(route.contains(";swc>"), "{route}");
    // A request with that route from the gateway: refused, the browser never sees it.
    let mut gateway = Ua::udp(&a, "gw").await;
    let contact = records[0].1["c"].as_str().unwrap().to_string();
    let (m, _) = gateway.request("MESSAGE", &contact, &format!("Route: {route}\r\n"), "hi");
    gateway.send(&m).await;
    let r = gateway.recv_final().await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        browser
            .quiet_for(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_cancel_while_the_store_answers_late_stops_the_call_before_it_rings() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let mut callee = Ua::udp(&c, "callee").await;
    assert_eq!(callee.register(600).await.status, 200);
    let mut caller = Ua::udp(&a, "caller").await;
    // Redis hangs for a moment: the INVITE waits for the look-up, the caller cancels
    // meanwhile, then Redis answers (within cluster.timeout).
    redis.pause();
    let (invite, _) = caller.request("INVITE", "callee", "", sipwasm_tests::sip::SDP);
    caller.send(&invite).await;
    match caller.recv().await {
        sipwasm::sip::Message::Response(r) => assert_eq!(r.status, 100),
        other => panic!("{other:?}"),
    }
    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel =
        cancel[..cancel.find("Content-Type").unwrap()].to_string() + "Content-Length: 0\r\n\r\n";
    caller.send(&cancel).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis.resume();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(caller.recv_final().await.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 487],
        "the CANCEL's 200 and the INVITE's 487"
    );
    // The callee never rings.
    assert!(callee.quiet_for(Duration::from_millis(800)).await.is_none());
}

#[tokio::test]
async fn a_node_taken_for_dead_comes_back_in_a_new_life_with_its_bindings() {
    let redis = Redis::start();
    let a = node(&redis, A, "a", "");
    let c = node(&redis, C, "c", "");
    let mut phone = Ua::udp(&c, "sleeper").await;
    assert_eq!(phone.register(600).await.status, 200);
    let epoch = redis.bindings(&AOR("sleeper"))[0].1["e"].clone();
    // C stalls past dead-after: A takes it for dead and purges its bindings.
    c.signal("STOP");
    eventually("C's binding purged while it stalls", || {
        redis.binding_keys(&AOR("sleeper")).is_empty()
    })
    .await;
    c.signal("CONT");
    // C finds its heartbeat gone: it takes a new epoch (a purge of the old one, still
    // going on somewhere, cannot touch what it writes now) and writes its bindings
    // again, with no REGISTER from the phone.
    eventually("the binding back, in C's new life", || {
        redis
            .bindings(&AOR("sleeper"))
            .first()
            .is_some_and(|(_, r)| r["n"] == "c" && r["e"] != epoch)
    })
    .await;
    let mut caller = Ua::udp(&a, "caller").await;
    let (m, _) = caller.request("MESSAGE", "sleeper", "", "awake?");
    caller.send(&m).await;
    let req = phone.recv_request("MESSAGE").await;
    phone.send(&phone.response(&req, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
}
