//! `sipwasm-bench core` and `worst`: the SIP core alone, in process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A SIP core with one UDP listener on 127.0.0.1:5060 and the domain `localhost`.
pub(crate) fn bench_core() -> anyhow::Result<(sipwasm::core::Core, SocketAddr)> {
    use sipwasm::core::*;
    let udp: SocketAddr = "127.0.0.1:5060".parse()?;
    let core = Core::new(CoreConfig {
        myself: Arc::new(Myself::new(&["localhost".to_string()], &[udp])),
        listeners: vec![SipListener {
            transport: Transport::Udp,
            addr: udp,
        }],
        server_header: "bench".into(),
        secret: [1; 32],
        timers: transaction::TimerConfig::default(),
        registrar: registrar::RegistrarConfig::default(),
        relay: false,
        trusted: sipwasm::core::peers::TrustedPeers::default(),
        limits: sipwasm::core::CoreLimits::default(),
        media: sipwasm::media::Settings::default(),
        gateways: Vec::new(),
        cluster: None,
    });
    Ok((core, udp))
}

/// Times each of `sipwasm::core::worst::cases()` through a fresh core, `rounds` times.
pub(crate) fn worst(rounds: usize) -> anyhow::Result<()> {
    use sipwasm::core::worst;
    println!("## The worst message of each shape (64 KB, one datagram), through the SIP core\n");
    println!("| case | answer | median ms | max ms | target |");
    println!("|---|---|---|---|---|");
    for case in worst::cases() {
        let mut took = Vec::with_capacity(rounds);
        let mut answer = None;
        for _ in 0..rounds.max(1) {
            let (mut core, udp) = bench_core()?;
            let now = std::time::Instant::now();
            let input = worst::prepare(&mut core, &case, udp, now).map_err(anyhow::Error::msg)?;
            let t = Instant::now();
            core.handle(now, input);
            let (status, _) = worst::outcome(&mut core, udp);
            took.push(t.elapsed());
            answer = status;
        }
        took.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {:.3} | {:.3} | < 5 ms |",
            case.name,
            answer.map_or("forwarded".to_string(), |s| s.to_string()),
            ms(took[took.len() / 2]),
            ms(took[took.len() - 1])
        );
    }
    Ok(())
}

pub(crate) fn core_only(iterations: u64) -> anyhow::Result<()> {
    use sipwasm::core::*;
    let (mut core, udp) = bench_core()?;
    let users = 1000u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let (mut parsing, mut handling) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iterations {
        let u = i % users;
        let text = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKc{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{u}@localhost>;tag=t{u}\r\nTo: <sip:u{u}@localhost>\r\n\
             Call-ID: core-{u}\r\nCSeq: {c} REGISTER\r\nContact: <sip:u{u}@127.0.0.1:{p}>;expires=3600\r\n\
             User-Agent: bench\r\nContent-Length: 0\r\n\r\n",
            p = 20000 + u,
            c = i / users + 1
        );
        let t0 = Instant::now();
        let message = sipwasm::sip::parse(text.as_bytes())?;
        let source = Source {
            transport: Transport::Udp,
            local: udp,
            remote: SocketAddr::from(([127, 0, 0, 1], (20000 + u) as u16)),
            flow: None,
        };
        let now = std::time::Instant::now();
        core.handle(
            now,
            Input::Message(Box::new(Incoming::new(source, message))),
        );
        while let Some(t) = core.poll_transmit() {
            sent += t.payload.len() as u64;
        }
        while core.poll_event().is_some() {}
        let t2 = Instant::now();
        parsing += now - t0;
        handling += t2 - now;
        if i % 1000 == 0 {
            core.handle_timeout(now);
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!(
        "## SIP core alone (parse + registrar + response, {iterations} REGISTERs, {users} users)\n"
    );
    println!(
        "{per:.2} µs per REGISTER ({:.0} per second on one core), {sent} bytes out: \
         parsing {:.2} µs, the core {:.2} µs (the rest builds the request text)\n",
        1e6 / per,
        parsing.as_secs_f64() * 1e6 / iterations as f64,
        handling.as_secs_f64() * 1e6 / iterations as f64,
    );
    Ok(())
}
