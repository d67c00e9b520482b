//! `slow-router`: a test-only `sip-router` plugin that takes its time. A request with
//! `X-Delay-Ms: N` is decided `continue` after N milliseconds of the plugin's own
//! clock (at most 1,500: the tests give it a 2 s deadline); anything else at once. It
//! lets a test close a connection while its REGISTER is still being decided.
//! `X-Sleep-Ms: N` sleeps N milliseconds (at most 1,500) instead of spinning: the call
//! holds its instance without using the CPU, as a plugin waiting on a slow service does.
//! With `always-ms = N` in its config every request spins N milliseconds (the attack
//! bench makes every call hit the deadline that way).

use std::time::{Duration, Instant};

use sipwasm_plugin::sip::{ClosedFlow, Guest, SipDecision, SipRequest, SipRequestExt};

struct SlowRouter;

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    always_ms: u64,
}

impl Guest for SlowRouter {
    fn on_sip_request(req: SipRequest) -> SipDecision {
        let delay = req
            .header("X-Delay-Ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .max(
                sipwasm_plugin::config::<Config>()
                    .unwrap_or_default()
                    .always_ms,
            )
            .min(1_500);
        if let Some(sleep) = req.header("X-Sleep-Ms").and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_millis(sleep.min(1_500)));
        }
        let until = Instant::now() + Duration::from_millis(delay);
        // Bounded by the clock and by the host's deadline.
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        SipDecision::Continue
    }

    fn on_flow_closed(_flow: ClosedFlow) {}
}

sipwasm_plugin::sip::export!(SlowRouter with_types_in sipwasm_plugin::sip::bindings);
