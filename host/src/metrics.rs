//! Counters and gauges, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::core::CoreStats;

macro_rules! counters {
    ($( $field:ident, $inc:ident, $metric:literal, $help:literal; )*) => {
        /// Server-wide counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $field: AtomicU64, )*
            flows_open: AtomicI64,
            /// The SIP core's state, as of its last round.
            core: CoreGauges,
            /// Connection limits' hits.
            conns: ConnCounters,
            /// (plugin, what) -> count; `what` is `calls`, `instantiations` or a failure cause.
            plugins: Mutex<BTreeMap<(String, &'static str), u64>>,
            /// Requests to the media engines and their round trips.
            media: Mutex<MediaStats>,
            /// (gateway set, member URI) -> up.
            gateways: Mutex<BTreeMap<(String, String), bool>>,
            /// Live nodes of the cluster; 0 without one.
            cluster_nodes: AtomicU64,
            /// Requests' final answers: latency by method, count by method and class.
            finals: Finals,
            /// Plugin call durations by plugin ([`Metrics::plugin_timer`]).
            plugin_time: Mutex<BTreeMap<String, std::sync::Arc<LatencyHistogram>>>,
        }

        impl Metrics {
            $(
                #[doc = $help]
                pub fn $inc(&self) {
                    self.$field.fetch_add(1, Relaxed);
                }
            )*

            fn render_counters(&self, out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP {} {}", $metric, $help);
                    let _ = writeln!(out, "# TYPE {} counter", $metric);
                    let _ = writeln!(out, "{} {}", $metric, self.$field.load(Relaxed));
                )*
            }
        }
    };
}

/// Upper bounds (ms) of the media round-trip histogram's buckets.
const MEDIA_BUCKETS_MS: [f64; 13] = [
    0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 2000.0,
];

/// The media engines' requests and round trips.
#[derive(Debug, Default)]
struct MediaStats {
    /// (engine, command, outcome) -> count.
    requests: BTreeMap<(String, &'static str, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    /// Sessions each engine said it holds, last time it was asked.
    sessions: BTreeMap<String, i64>,
}

/// A latency histogram over [`MEDIA_BUCKETS_MS`] (cumulative buckets).
#[derive(Debug, Default, Clone, Copy)]
struct Histogram {
    buckets: [u64; 13],
    count: u64,
    sum_seconds: f64,
}

counters! {
    http_requests, http_request, "sipwasm_http_requests_total", "HTTP requests read.";
    http_rejected, http_rejected, "sipwasm_http_rejected_total", "HTTP requests refused by the host before any plugin (malformed, too large).";
    handshakes_rejected, handshake_rejected, "sipwasm_ws_handshakes_rejected_total", "Upgrade decisions refused because the handshake was invalid.";
    ws_upgrades, ws_upgrade, "sipwasm_ws_upgrades_total", "WebSocket connections upgraded to SIP flows.";
    ws_close_errors, ws_close_error, "sipwasm_ws_closed_on_error_total", "WebSocket flows closed with 1002, 1007 or 1009.";
    ping_timeouts, ping_timeout, "sipwasm_ws_ping_timeouts_total", "WebSocket flows closed because a ping went unanswered.";
    keepalives, keepalive, "sipwasm_sip_keepalives_total", "CRLFCRLF keepalives answered.";
    sip_in, sip_in, "sipwasm_sip_messages_in_total", "SIP messages received and parsed.";
    sip_out, sip_out, "sipwasm_sip_messages_out_total", "SIP messages sent.";
    sip_parse_errors, sip_parse_error, "sipwasm_sip_parse_errors_total", "Unparsable SIP messages dropped.";
    sip_send_queue_full, sip_send_queue_full, "sipwasm_sip_send_queue_full_total", "SIP messages dropped because their flow's send queue was full (a peer that does not read).";
    flows_closed, flows_closed_inc, "sipwasm_flows_closed_total", "Flows closed.";
    udp_unreachable, udp_unreachable, "sipwasm_udp_unreachable_total", "UDP destinations reported unreachable by ICMP (their transactions stop retransmitting).";
    digest_failures, digest_failure, "sipwasm_digest_failures_total", "SIP requests whose Digest credentials a plugin found wrong.";
    digest_refused, digest_refused, "sipwasm_digest_refused_total", "Digest credentials refused unchecked: their source is banned for guessing.";
    digest_bans, digest_ban, "sipwasm_digest_bans_total", "Bans started for too many failed Digest responses (per user and address, or per address).";
    udp_oversize, udp_oversize, "sipwasm_udp_oversize_total", "UDP datagrams dropped unread because they were larger than sip.max-message-bytes.";
    udp_shed, udp_shed, "sipwasm_udp_shed_total", "UDP datagrams dropped because the SIP core was behind (more than 1,024 inputs queued) and their source was new since it fell behind; sources seen before wait for their turn.";
    dns_cached, dns_cached, "sipwasm_dns_cached_total", "Next hops named by a host name answered from the resolver's cache (RFC 3263 results, kept for their records' TTL).";
    dns_lookups, dns_lookup, "sipwasm_dns_lookups_total", "Next hops' names looked up in DNS (NAPTR, SRV, A/AAAA), cache misses.";
    dns_failures, dns_failure, "sipwasm_dns_failures_total", "Names looked up that gave no target (no such name, no records, no answer); their requests got 500.";
    cluster_answered, cluster_answered, "sipwasm_cluster_store_requests_total", "Requests to the cluster's Redis answered in time (look-ups, writes).";
    cluster_failures, cluster_failure, "sipwasm_cluster_store_failures_total", "Requests to the cluster's Redis that failed or took longer than cluster.timeout: a REGISTER then got 503, a call reached this node's bindings only.";
    cluster_republished, cluster_republish, "sipwasm_cluster_republished_total", "Times this node wrote all its bindings to Redis again (Redis lost them, or this node was taken for dead).";
    cluster_evictions, cluster_eviction, "sipwasm_cluster_evictions_total", "Bindings of this node that another node replaced or removed (a browser's new flow there).";
    udp_banned, udp_banned, "sipwasm_udp_banned_dropped_total", "UDP requests from sources past limits.rate (or banned for it), dropped before parsing (also counted in sipwasm_sip_refused_total{reason=\"rate-limit\"}).";
}

/// Upper bounds (seconds) of the latency histograms' buckets (requests' final answers,
/// plugin calls): from a registrar's answer to a call's ring time.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];

/// A latency histogram updated without a lock: per-bucket counts (not cumulative;
/// rendered cumulative), their count and sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One per bound of [`LATENCY_BUCKETS`], then the overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `q` quantile (0..1) estimated from the buckets (linear within one; the
    /// overflow bucket answers its lower bound), in seconds; `None` before any.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let Some(hi) = LATENCY_BUCKETS.get(i) else {
                    return Some(lo);
                };
                let within = (rank - seen as f64) / *n as f64;
                return Some(lo + (hi - lo) * within.clamp(0.0, 1.0));
            }
            seen += n;
        }
        LATENCY_BUCKETS.last().copied()
    }

    /// Writes the histogram's series with `labels` (`name="value"` pairs, comma
    /// separated, without braces).
    fn render(&self, out: &mut String, metric: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(&counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{metric}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        // From the same loads as the buckets: +Inf is never below the last bound
        // while observations land between the loads.
        let count: u64 = counts.iter().sum();
        let _ = writeln!(out, "{metric}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        if labels.is_empty() {
            let _ = writeln!(out, "{metric}_sum {sum}");
            let _ = writeln!(out, "{metric}_count {count}");
        } else {
            let _ = writeln!(out, "{metric}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{metric}_count{{{labels}}} {count}");
        }
    }
}

/// The method labels of the final-answer metrics (`crate::core::operate::method_label`).
pub const METHOD_LABELS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "other",
];

/// Requests' final answers by method: latency, and counts by class (2xx to 6xx).
#[derive(Debug, Default)]
struct Finals {
    latency: [LatencyHistogram; 15],
    classes: [[AtomicU64; 5]; 15],
}

/// Why a connection was refused or closed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnLimit {
    /// `limits.max-connections` were open: refused at accept.
    Total,
    /// `limits.connections-per-source` were open from its source: refused at accept.
    PerSource,
    /// No complete SIP message within `limits.first-message-timeout`: closed.
    FirstMessage,
    /// A WebSocket frame or message unfinished for `limits.ws-partial-timeout`: closed.
    WsPartial,
}

impl ConnLimit {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "max-connections",
            Self::PerSource => "per-source",
            Self::FirstMessage => "first-message",
            Self::WsPartial => "ws-partial",
        }
    }
}

#[derive(Debug, Default)]
struct ConnCounters {
    open: AtomicI64,
    total: AtomicU64,
    per_source: AtomicU64,
    first_message: AtomicU64,
    ws_partial: AtomicU64,
}

/// Gauges of the SIP core's state ([`CoreStats`]), stored after each of its rounds.
#[derive(Debug, Default)]
struct CoreGauges {
    server_transactions: AtomicU64,
    client_transactions: AtomicU64,
    proxied: AtomicU64,
    routing: AtomicU64,
    media_waiting: AtomicU64,
    cluster_waiting: AtomicU64,
    timers: AtomicU64,
    bindings: AtomicU64,
    aors: AtomicU64,
    dialogs: AtomicU64,
    refused_forged_route: AtomicU64,
    refused_untrusted_path: AtomicU64,
    refused_relay: AtomicU64,
    refused_registrar_full: AtomicU64,
    refused_rate_limit: AtomicU64,
    refused_transactions_full: AtomicU64,
    refused_overload: AtomicU64,
    refused_identity: AtomicU64,
    trimmed_answers: AtomicU64,
}

impl Metrics {
    /// A request refused by `limits.rate` (counted at the door, before parsing, by
    /// `transport::gate::SourceGate`).
    pub fn sip_rate_limited(&self) {
        self.core.refused_rate_limit.fetch_add(1, Relaxed);
    }

    /// Requests refused by `limits.rate` so far.
    pub fn sip_rate_limited_count(&self) -> u64 {
        self.core.refused_rate_limit.load(Relaxed)
    }

    /// The SIP core's state as of its last round: (server transactions, client
    /// transactions, dialogs, bindings, AoRs).
    pub fn core_counts(&self) -> (u64, u64, u64, u64, u64) {
        let g = &self.core;
        (
            g.server_transactions.load(Relaxed),
            g.client_transactions.load(Relaxed),
            g.dialogs.load(Relaxed),
            g.bindings.load(Relaxed),
            g.aors.load(Relaxed),
        )
    }

    /// Records the SIP core's state.
    pub fn set_core(&self, s: CoreStats) {
        let g = &self.core;
        for (gauge, value) in [
            (&g.server_transactions, s.server_transactions),
            (&g.client_transactions, s.client_transactions),
            (&g.proxied, s.proxied),
            (&g.routing, s.routing),
            (&g.media_waiting, s.media_waiting),
            (&g.cluster_waiting, s.cluster_waiting),
            (&g.timers, s.timers),
            (&g.bindings, s.bindings),
            (&g.aors, s.aors),
            (&g.dialogs, s.dialogs),
        ] {
            gauge.store(value as u64, Relaxed);
        }
        for (counter, value) in [
            (&g.refused_forged_route, s.refused.forged_route),
            (&g.refused_untrusted_path, s.refused.untrusted_path),
            (&g.refused_relay, s.refused.relay),
            (&g.refused_registrar_full, s.refused.registrar_full),
            (&g.refused_transactions_full, s.refused.transactions_full),
            (&g.refused_overload, s.refused.overload),
            (&g.refused_identity, s.refused.identity),
            (&g.trimmed_answers, s.refused.trimmed_answer),
        ] {
            counter.store(value, Relaxed);
        }
    }

    fn render_core(&self, out: &mut String) {
        let g = &self.core;
        let _ = writeln!(
            out,
            "# HELP sipwasm_udp_answers_trimmed_total Answers to UDP peers that had not proven they receive our packets, cut to twice their request's size (no amplification toward a spoofed source)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_udp_answers_trimmed_total counter");
        let _ = writeln!(
            out,
            "sipwasm_udp_answers_trimmed_total {}",
            g.trimmed_answers.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP sipwasm_sip_refused_total SIP requests refused for what they tried to make the server do, by reason: forged-route (a Route entry of ours not signed for this dialog), untrusted-path (a Path from a peer not in sip.trusted-peers), relay (a next hop elsewhere from an untrusted client), registrar-full (a new binding past sip.max-bindings: 503), rate-limit (a request from a source past limits.rate, or banned for it, refused before parsing: 503 on connections, dropped over UDP), transactions-full (a new request while limits.max-transactions were in flight: 503), overload (a REGISTER for an address-of-record with no bindings while the core was behind: 503), identity (on a connection whose listener enforces its identity, a REGISTER for another address-of-record or a new request From another user: 403)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_sip_refused_total counter");
        for (reason, counter) in [
            ("forged-route", &g.refused_forged_route),
            ("untrusted-path", &g.refused_untrusted_path),
            ("relay", &g.refused_relay),
            ("registrar-full", &g.refused_registrar_full),
            ("rate-limit", &g.refused_rate_limit),
            ("transactions-full", &g.refused_transactions_full),
            ("overload", &g.refused_overload),
            ("identity", &g.refused_identity),
        ] {
            let _ = writeln!(
                out,
                "sipwasm_sip_refused_total{{reason=\"{reason}\"}} {}",
                counter.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_sip_transactions SIP transactions held now (including those absorbing retransmissions), by side."
        );
        let _ = writeln!(out, "# TYPE sipwasm_sip_transactions gauge");
        for (side, gauge) in [
            ("server", &g.server_transactions),
            ("client", &g.client_transactions),
        ] {
            let _ = writeln!(
                out,
                "sipwasm_sip_transactions{{side=\"{side}\"}} {}",
                gauge.load(Relaxed)
            );
        }
        for (name, help, gauge) in [
            (
                "sipwasm_proxy_requests",
                "Requests being proxied now (open response contexts).",
                &g.proxied,
            ),
            (
                "sipwasm_routing_pending",
                "Requests waiting for the routing plugin's decision.",
                &g.routing,
            ),
            (
                "sipwasm_media_waiting",
                "SIP messages waiting for a media engine's SDP.",
                &g.media_waiting,
            ),
            (
                "sipwasm_cluster_waiting",
                "Requests waiting for the cluster's Redis (a look-up or a REGISTER's write).",
                &g.cluster_waiting,
            ),
            (
                "sipwasm_sip_timers",
                "Timers armed (transactions, registration expiry).",
                &g.timers,
            ),
            (
                "sipwasm_registrar_bindings",
                "Registered contacts.",
                &g.bindings,
            ),
            (
                "sipwasm_sip_dialogs",
                "Dialogs in flight: a 2xx to an INVITE passed, no BYE yet (nor a flow of the caller closed).",
                &g.dialogs,
            ),
            (
                "sipwasm_registrar_aors",
                "Addresses of record with at least one registered contact.",
                &g.aors,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", gauge.load(Relaxed));
        }
    }

    fn conn_counter(&self, what: ConnLimit) -> &AtomicU64 {
        let c = &self.conns;
        match what {
            ConnLimit::Total => &c.total,
            ConnLimit::PerSource => &c.per_source,
            ConnLimit::FirstMessage => &c.first_message,
            ConnLimit::WsPartial => &c.ws_partial,
        }
    }

    /// A connection limit was hit.
    pub fn conn_limit(&self, what: ConnLimit) {
        self.conn_counter(what).fetch_add(1, Relaxed);
    }

    /// How often a connection limit was hit.
    pub fn conn_limits(&self, what: ConnLimit) -> u64 {
        self.conn_counter(what).load(Relaxed)
    }

    /// Connections open now changed by `delta`.
    pub fn connections_open(&self, delta: i64) {
        self.conns.open.fetch_add(delta, Relaxed);
    }

    fn render_conns(&self, out: &mut String) {
        let c = &self.conns;
        let _ = writeln!(
            out,
            "# HELP sipwasm_connections_open TCP, TLS and WebSocket connections open now (accepted and outgoing), as limits.max-connections counts them."
        );
        let _ = writeln!(out, "# TYPE sipwasm_connections_open gauge");
        let _ = writeln!(out, "sipwasm_connections_open {}", c.open.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP sipwasm_connections_refused_total Connections closed at accept by a limit: max-connections (limits.max-connections open), per-source (limits.connections-per-source open from its address or IPv6 /64)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_connections_refused_total counter");
        for what in [ConnLimit::Total, ConnLimit::PerSource] {
            let _ = writeln!(
                out,
                "sipwasm_connections_refused_total{{reason=\"{}\"}} {}",
                what.as_str(),
                self.conn_limits(what)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_connections_timed_out_total Connections closed by a time limit: first-message (no complete SIP message within limits.first-message-timeout of the accept), ws-partial (a WebSocket frame or message unfinished for limits.ws-partial-timeout)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_connections_timed_out_total counter");
        for what in [ConnLimit::FirstMessage, ConnLimit::WsPartial] {
            let _ = writeln!(
                out,
                "sipwasm_connections_timed_out_total{{reason=\"{}\"}} {}",
                what.as_str(),
                self.conn_limits(what)
            );
        }
    }

    /// A flow opened.
    pub fn flow_opened(&self) {
        self.flows_open.fetch_add(1, Relaxed);
    }

    /// A flow closed.
    pub fn flow_closed(&self) {
        self.flows_open.fetch_sub(1, Relaxed);
        self.flows_closed_inc();
    }

    /// Flows open now.
    pub fn flows_open(&self) -> i64 {
        self.flows_open.load(Relaxed)
    }

    fn plugin_count(&self, plugin: &str, what: &'static str) {
        let mut m = self.plugins.lock().expect("metrics lock");
        match m.get_mut(&(plugin.to_string(), what)) {
            Some(n) => *n += 1,
            None => {
                m.insert((plugin.to_string(), what), 1);
            }
        }
    }

    /// A plugin was called.
    pub fn plugin_call(&self, plugin: &str) {
        self.plugin_count(plugin, "calls");
    }

    /// A plugin instance was created.
    pub fn plugin_instantiation(&self, plugin: &str) {
        self.plugin_count(plugin, "instantiations");
    }

    /// A plugin call failed with `cause`.
    pub fn plugin_failure(&self, plugin: &str, cause: &'static str) {
        self.plugin_count(plugin, cause);
    }

    /// A plugin was suspended ([`crate::plugin::breaker`]).
    pub fn plugin_suspension(&self, plugin: &str) {
        self.plugin_count(plugin, "suspensions");
    }

    /// A plugin's calls and failed calls (all causes) so far.
    pub fn plugin_totals(&self, plugin: &str) -> (u64, u64) {
        let m = self.plugins.lock().expect("metrics lock");
        let mut calls = 0;
        let mut failures = 0;
        for ((p, what), n) in m.iter() {
            if p != plugin {
                continue;
            }
            match *what {
                "calls" => calls = *n,
                "instantiations" | "suspensions" => {}
                _ => failures += n,
            }
        }
        (calls, failures)
    }

    /// SIP messages received and parsed so far.
    pub fn sip_in_count(&self) -> u64 {
        self.sip_in.load(Relaxed)
    }

    /// SIP messages sent so far.
    pub fn sip_out_count(&self) -> u64 {
        self.sip_out.load(Relaxed)
    }

    /// How many failures with `cause` a plugin had.
    pub fn plugin_failures(&self, plugin: &str, cause: &'static str) -> u64 {
        let m = self.plugins.lock().expect("metrics lock");
        m.get(&(plugin.to_string(), cause)).copied().unwrap_or(0)
    }

    /// An ng request to media engine `engine` ended with `outcome` after `took`.
    pub fn media_request(
        &self,
        engine: &str,
        command: &'static str,
        outcome: &'static str,
        took: std::time::Duration,
    ) {
        let mut m = self.media.lock().expect("metrics lock");
        *m.requests
            .entry((engine.to_string(), command, outcome))
            .or_default() += 1;
        let h = m.latency.entry(engine.to_string()).or_default();
        let ms = took.as_secs_f64() * 1000.0;
        for (i, le) in MEDIA_BUCKETS_MS.iter().enumerate() {
            if ms <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_seconds += took.as_secs_f64();
    }

    /// The sessions media engine `engine` holds (its `statistics`).
    pub fn media_sessions(&self, engine: &str, sessions: i64) {
        let mut m = self.media.lock().expect("metrics lock");
        m.sessions.insert(engine.to_string(), sessions);
    }

    /// How many ng requests to `engine` ended with `outcome`.
    pub fn media_requests(
        &self,
        engine: &str,
        command: &'static str,
        outcome: &'static str,
    ) -> u64 {
        let m = self.media.lock().expect("metrics lock");
        m.requests
            .get(&(engine.to_string(), command, outcome))
            .copied()
            .unwrap_or(0)
    }

    fn render_media(&self, out: &mut String) {
        // Every family is declared even before (or without) a series, so that
        // dashboards can name it (the series come with `[media]`).
        let m = self.media.lock().expect("metrics lock");
        let _ = writeln!(
            out,
            "# HELP sipwasm_media_sessions Sessions each media engine holds (its own \
             count, asked every 10 s)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_media_sessions gauge");
        for (e, n) in &m.sessions {
            let _ = writeln!(out, "sipwasm_media_sessions{{engine=\"{e}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_media_requests_total Requests to the media engines (rtpengine ng), \
             by engine, command and outcome (ok, error, load-limit, timeout, local)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_media_requests_total counter");
        for ((e, c, o), n) in &m.requests {
            let _ = writeln!(
                out,
                "sipwasm_media_requests_total{{engine=\"{e}\",command=\"{c}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_media_request_seconds Time from an ng request to its reply (or \
             the last try's timeout), by engine."
        );
        let _ = writeln!(out, "# TYPE sipwasm_media_request_seconds histogram");
        for (e, h) in &m.latency {
            for (le, n) in MEDIA_BUCKETS_MS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "sipwasm_media_request_seconds_bucket{{engine=\"{e}\",le=\"{}\"}} {n}",
                    le / 1000.0
                );
            }
            let _ = writeln!(
                out,
                "sipwasm_media_request_seconds_bucket{{engine=\"{e}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "sipwasm_media_request_seconds_sum{{engine=\"{e}\"}} {}",
                h.sum_seconds
            );
            let _ = writeln!(
                out,
                "sipwasm_media_request_seconds_count{{engine=\"{e}\"}} {}",
                h.count
            );
        }
    }

    /// A gateway member's state (from its probes; up at start).
    pub fn set_gateway(&self, set: &str, target: &str, up: bool) {
        self.gateways
            .lock()
            .expect("metrics lock")
            .insert((set.to_string(), target.to_string()), up);
    }

    /// Every gateway member: (set, member URI, up).
    pub fn gateways(&self) -> Vec<(String, String, bool)> {
        self.gateways
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|((s, t), up)| (s.clone(), t.clone(), *up))
            .collect()
    }

    /// A request's final answer (`method` one of [`METHOD_LABELS`]) after `took`.
    pub fn sip_final(&self, method: &str, status: u16, took: std::time::Duration) {
        let m = METHOD_LABELS
            .iter()
            .position(|l| *l == method)
            .unwrap_or(METHOD_LABELS.len() - 1);
        self.finals.latency[m].observe(took);
        let class = usize::from(status / 100).clamp(2, 6) - 2;
        self.finals.classes[m][class].fetch_add(1, Relaxed);
    }

    /// Final answers so far by method and class (`2xx`..`6xx`), those not 0.
    pub fn sip_finals(&self) -> Vec<(&'static str, &'static str, u64)> {
        const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "6xx"];
        let mut out = Vec::new();
        for (m, row) in METHOD_LABELS.iter().zip(&self.finals.classes) {
            for (c, n) in CLASSES.iter().zip(row) {
                let n = n.load(Relaxed);
                if n > 0 {
                    out.push((*m, *c, n));
                }
            }
        }
        out
    }

    /// The duration histogram of plugin `plugin`'s calls (made on first use; the
    /// plugin keeps it across reloads).
    pub fn plugin_timer(&self, plugin: &str) -> std::sync::Arc<LatencyHistogram> {
        self.plugin_time
            .lock()
            .expect("metrics lock")
            .entry(plugin.to_string())
            .or_default()
            .clone()
    }

    fn render_finals(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP sipwasm_sip_request_duration_seconds Time from the core taking a request \
             to its final answer leaving (0 for answers given at once), by method."
        );
        let _ = writeln!(out, "# TYPE sipwasm_sip_request_duration_seconds histogram");
        for (m, h) in METHOD_LABELS.iter().zip(&self.finals.latency) {
            if h.count() > 0 {
                h.render(
                    out,
                    "sipwasm_sip_request_duration_seconds",
                    &format!("method=\"{m}\""),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_sip_responses_total Final answers to requests, by method and class."
        );
        let _ = writeln!(out, "# TYPE sipwasm_sip_responses_total counter");
        for (m, c, n) in self.sip_finals() {
            let _ = writeln!(
                out,
                "sipwasm_sip_responses_total{{method=\"{m}\",class=\"{c}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_plugin_call_duration_seconds Time plugin calls took (from a \
             place for the call, an instance made if need be, to the call's end), by plugin."
        );
        let _ = writeln!(out, "# TYPE sipwasm_plugin_call_duration_seconds histogram");
        for (p, h) in self.plugin_time.lock().expect("metrics lock").iter() {
            h.render(
                out,
                "sipwasm_plugin_call_duration_seconds",
                &format!("plugin=\"{p}\""),
            );
        }
    }

    /// Nodes of the cluster alive at this node's last heartbeat (itself included).
    pub fn set_cluster_nodes(&self, n: u64) {
        self.cluster_nodes.store(n, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_counters(&mut out);
        // Families whose series come with a feature (`[cluster]`, `[[gateways]]`) are
        // declared all the same, so that dashboards can name them.
        let nodes = self.cluster_nodes.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP sipwasm_cluster_nodes Nodes of the cluster alive at this node's last heartbeat, itself included (no series without a cluster)."
        );
        let _ = writeln!(out, "# TYPE sipwasm_cluster_nodes gauge");
        if nodes > 0 {
            let _ = writeln!(out, "sipwasm_cluster_nodes {nodes}");
        }
        {
            let g = self.gateways.lock().expect("metrics lock");
            let _ = writeln!(
                out,
                "# HELP sipwasm_gateway_up Gateway set members up (1) or down (0) by their OPTIONS probes."
            );
            let _ = writeln!(out, "# TYPE sipwasm_gateway_up gauge");
            for ((set, target), up) in g.iter() {
                let target = target.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "sipwasm_gateway_up{{set=\"{set}\",target=\"{target}\"}} {}",
                    u8::from(*up)
                );
            }
        }
        let _ = writeln!(out, "# HELP sipwasm_flows_open SIP flows open now.");
        let _ = writeln!(out, "# TYPE sipwasm_flows_open gauge");
        let _ = writeln!(out, "sipwasm_flows_open {}", self.flows_open());
        self.render_core(&mut out);
        self.render_conns(&mut out);
        self.render_media(&mut out);
        self.render_finals(&mut out);
        let m = self.plugins.lock().expect("metrics lock");
        let _ = writeln!(out, "# HELP sipwasm_plugin_calls_total Plugin calls.");
        let _ = writeln!(out, "# TYPE sipwasm_plugin_calls_total counter");
        for ((p, what), n) in m.iter().filter(|((_, w), _)| *w == "calls") {
            let _ = writeln!(out, "sipwasm_plugin_calls_total{{plugin=\"{p}\"}} {n}");
            let _ = what;
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_plugin_instantiations_total Plugin instances created."
        );
        let _ = writeln!(out, "# TYPE sipwasm_plugin_instantiations_total counter");
        for ((p, _), n) in m.iter().filter(|((_, w), _)| *w == "instantiations") {
            let _ = writeln!(
                out,
                "sipwasm_plugin_instantiations_total{{plugin=\"{p}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_plugin_suspensions_total Times a plugin was suspended because \
             its calls kept running into their deadline."
        );
        let _ = writeln!(out, "# TYPE sipwasm_plugin_suspensions_total counter");
        for ((p, _), n) in m.iter().filter(|((_, w), _)| *w == "suspensions") {
            let _ = writeln!(
                out,
                "sipwasm_plugin_suspensions_total{{plugin=\"{p}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP sipwasm_plugin_failures_total Plugin calls that failed, by cause."
        );
        let _ = writeln!(out, "# TYPE sipwasm_plugin_failures_total counter");
        for ((p, cause), n) in m
            .iter()
            .filter(|((_, w), _)| !matches!(*w, "calls" | "instantiations" | "suspensions"))
        {
            let _ = writeln!(
                out,
                "sipwasm_plugin_failures_total{{plugin=\"{p}\",cause=\"{cause}\"}} {n}"
            );
        }
        out
    }
}
