//! `sipwasm-bench router`: what a sip-router plugin (call-policy) adds to a request.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::decision::load_plugins;
use crate::in_process::bench_core;
use crate::process::start_sipwasm_with;
use crate::sipload;

/// The call-policy component built by this crate's build script.
pub(crate) const CALL_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/call_policy.wasm"));

/// Median and p99 of samples, in µs.
pub(crate) fn median_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (q(0.5).as_secs_f64() * 1e6, q(0.99).as_secs_f64() * 1e6)
}

pub(crate) async fn router(bin: &Path, iterations: usize, seconds: u64) -> anyhow::Result<()> {
    use sipwasm::core::{RouteDecision, Source, Transport};
    let dir = tempfile::tempdir()?;
    let wasm = dir.path().join("call_policy.wasm");
    std::fs::write(&wasm, CALL_POLICY)?;
    let router_config = format!(
        "[sip]\nrouter = \"router\"\n[plugins.router]\npath = \"{}\"\n\
         [plugins.router.config]\nblocked = [\"666\"]\nrelay = {{ \"9\" = \"127.0.0.1:5070\" }}\n",
        wasm.display()
    );

    // In process: the call as the server's core task makes it (inline, no hop).
    let text =
        format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n{router_config}");
    let plugins = load_plugins(&text, "127.0.0.1:5060".parse()?).await?;
    let slot = plugins.router().context("the router plugin")?;
    let router = sipwasm::plugin::sip_router::SipRouter::new(
        slot,
        plugins.nonce_key(),
        &["MD5".to_string()],
    );
    let register = "REGISTER sip:localhost SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK776asdhds;rport=40000;received=127.0.0.1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=1928301774\r\nTo: <sip:alice@localhost>\r\n\
        Call-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 REGISTER\r\n\
        Contact: <sip:alice@127.0.0.1:40000>;expires=3600\r\nUser-Agent: bench\r\nContent-Length: 0\r\n\r\n";
    let request = match sipwasm::sip::parse::parse(register.as_bytes())? {
        sipwasm::sip::message::Message::Request(r) => r,
        _ => bail!("not a request"),
    };
    let source = Source {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse()?,
        remote: "127.0.0.1:40000".parse()?,
        flow: None,
    };
    for _ in 0..500 {
        anyhow::ensure!(
            router.call(&source, &request, Default::default()).await
                == RouteDecision::Continue(None)
        );
    }
    let mut call = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let d = router.call(&source, &request, Default::default()).await;
        call.push(t.elapsed());
        anyhow::ensure!(
            d == RouteDecision::Continue(None),
            "unexpected decision {d:?}"
        );
    }
    // The same with the core idle between requests (as with one client): caches and
    // branch predictors are colder.
    let mut idle = Vec::with_capacity(iterations / 10);
    for _ in 0..iterations / 10 {
        tokio::time::sleep(Duration::from_micros(100)).await;
        let t = Instant::now();
        let d = router.call(&source, &request, Default::default()).await;
        idle.push(t.elapsed());
        anyhow::ensure!(
            d == RouteDecision::Continue(None),
            "unexpected decision {d:?}"
        );
    }
    let (idle50, idle99) = median_p99(&mut idle);

    // The SIP core with and without the router, one REGISTER at a time with the core
    // idle in between (what one client sees, without the network).
    let core_path = async |hook: Option<sipwasm::plugin::sip_router::SipRouter>| {
        use sipwasm::core::*;
        let (mut core, udp) = bench_core()?;
        core.set_routing(hook.is_some());
        let mut samples = Vec::new();
        let mut deferred_calls = 0u32;
        for i in 0..2_000u32 {
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:20000;branch=z9hG4bKi{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:one@localhost>;tag=t1\r\nTo: <sip:one@localhost>\r\n\
                 Call-ID: idle-one\r\nCSeq: {c} REGISTER\r\nContact: <sip:one@127.0.0.1:20000>;expires=3600\r\n\
                 User-Agent: bench\r\nContent-Length: 0\r\n\r\n",
                c = i + 1
            );
            tokio::time::sleep(Duration::from_micros(100)).await;
            let t = Instant::now();
            let message = sipwasm::sip::parse(text.as_bytes())?;
            let source = Source {
                transport: Transport::Udp,
                local: udp,
                remote: "127.0.0.1:20000".parse()?,
                flow: None,
            };
            core.handle(
                std::time::Instant::now(),
                Input::Message(Box::new(Incoming::new(source, message))),
            );
            // As the driver asks the router: in place; a call that meets an epoch tick
            // is finished as the server finishes it (on a task, its decision then an
            // input), and tells the router how long it took, which brings the next
            // calls back in place once it is quick again.
            if let (Some(router), Some(q)) = (&hook, core.route_query()) {
                let id = q.id;
                match router.decide_in_place(q.source, q.request, Default::default()) {
                    Ok(d) => core.route(std::time::Instant::now(), id, d),
                    Err(deferred) => {
                        deferred_calls += 1;
                        core.route_later(std::time::Instant::now(), id);
                        let started = Instant::now();
                        let decision = deferred.finish().await;
                        router.in_place().deferred_took(started.elapsed());
                        core.handle(std::time::Instant::now(), Input::Routed { id, decision });
                    }
                }
            }
            let mut answered = false;
            while let Some(t) = core.poll_transmit() {
                answered |= t.payload.starts_with(b"SIP/2.0 200");
            }
            while core.poll_event().is_some() {}
            let took = t.elapsed();
            if answered {
                samples.push(took);
            }
        }
        anyhow::ensure!(
            samples.len() == 2_000,
            "only {} of 2000 answered",
            samples.len()
        );
        if deferred_calls > 0 {
            eprintln!(
                "{deferred_calls} of 2000 routing calls finished off the core (an epoch tick)"
            );
        }
        anyhow::Ok(median_p99(&mut samples))
    };
    let (bare50, bare99) = core_path(None).await?;
    let (with50, with99) = core_path(Some(router.clone())).await?;
    let (call50, call99) = median_p99(&mut call);
    println!("## sip-router plugin cost (call-policy, Rust guest, reused instance)\n");
    println!("| what | calls | median µs | p99 µs | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| on-sip-request (convert, call, check), in process | {iterations} | {call50:.1} | {call99:.1} | ≤ 10 µs median |"
    );
    println!(
        "| the same, idle 100 µs between calls | {} | {idle50:.1} | {idle99:.1} | ≤ 10 µs median |",
        iterations / 10
    );
    println!(
        "| REGISTER through the SIP core, idle between, no router | 2000 | {bare50:.1} | {bare99:.1} | |"
    );
    println!(
        "| REGISTER through the SIP core, idle between, call-policy | 2000 | {with50:.1} | {with99:.1} | added {:.1} µs median, ≤ 10 |",
        with50 - bare50
    );

    // End to end, same run: one client in a closed loop (the latency a request sees)
    // and 50 (the rate), with and without the router.
    let mut rows = Vec::new();
    for (name, extra) in [
        ("without a router", ""),
        ("with call-policy", router_config.as_str()),
    ] {
        let (t, udp) = start_sipwasm_with(bin, "reuse", true, extra, None).await?;
        let target = sipload::SipTarget {
            ws: t.addr,
            udp,
            pid: Some(t.child.id()),
            with: [0; 4],
        };
        let _ = sipload::register_udp(target, 50, 1).await?;
        let one = sipload::register_udp(target, 1, seconds).await?;
        let many = sipload::register_udp(target, 50, seconds).await?;
        rows.push((name, one, many));
    }
    println!();
    println!(
        "| REGISTER over UDP, {seconds} s each | 1 client /s | p50 µs | p99 µs | 50 clients /s | p50 µs | p99 µs | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, one, many) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            one.rate,
            one.p50,
            one.p99,
            many.rate,
            many.p50,
            many.p99,
            one.errors + many.errors
        );
    }
    let (_, one0, many0) = rows[0];
    let (_, one1, many1) = rows[1];
    println!(
        "\nThe router adds {:+.1} µs to the median request of one client; with 50 clients \
         it runs at {:.2}x the rate without it.\n",
        one1.p50 - one0.p50,
        many1.rate / many0.rate
    );
    Ok(())
}

// ---------------------------------------------------------------- core alone
