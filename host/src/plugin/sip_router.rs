//! The `sip-router` world on the host side: the request as the plugin sees it, its
//! decision checked and turned into what the core does, and the failure policy.

use std::net::IpAddr;
use std::sync::Arc;

use super::bindings::{self, GuestSipDecision};
use super::registrar_view::sip_transport;
use super::{PluginFailure, PluginSlot};
use crate::auth::{NonceCheck, NonceKey, digest_param, realm_is_valid};
use crate::config::FailurePolicy;
use crate::core::{ClosedFlow, RouteDecision, Source};
use crate::sip::headers::{HeaderName, is_token_char};
use crate::sip::message::{Essentials as _, Method, Request};
use crate::sip::uri::Uri;

/// Nonces older than this are stale: the challenge is repeated with `stale=true`.
pub const NONCE_MAX_AGE_SECS: u64 = 300;
/// Most extra headers in a `reply`.
const MAX_REPLY_HEADERS: usize = 32;
/// Longest value of one of them.
const MAX_REPLY_HEADER_VALUE: usize = 4096;
/// Longest reason phrase.
const MAX_REASON: usize = 128;
/// Headers the host writes itself in a reply.
const OWNED: &[HeaderName] = &[
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::ContentLength,
    HeaderName::MaxForwards,
    HeaderName::Server,
    HeaderName::RecordRoute,
];

/// A routing call that did not finish at its first poll.
pub type PendingDecision =
    std::pin::Pin<Box<dyn std::future::Future<Output = RouteDecision> + Send + 'static>>;

/// The configured `sip.router` plugin.
#[derive(Debug, Clone)]
pub struct SipRouter {
    slot: Arc<PluginSlot>,
    nonce: NonceKey,
    /// Digest algorithms offered in challenges, in order.
    algorithms: Arc<[String]>,
    /// Whether calls are polled in place first ([`SipRouter::decide_in_place`]), and
    /// how many deferred calls in a row were quick.
    in_place: Arc<InPlace>,
}

/// A routing call to finish away from the SIP core's task.
pub enum Deferred {
    /// It has its place and started running Wasm: finish it on the plugin runtime.
    Running(PendingDecision),
    /// The plugin had no place for it: wait for one where the call was made (no Wasm
    /// runs meanwhile, and a call the plugin has no room for gets its 503 from there,
    /// however busy the plugin runtime is), then run it on the plugin runtime.
    Waiting(Box<RouteCall>),
}

impl Deferred {
    /// The decision: waits for a place here, runs the Wasm on the plugin runtime.
    pub async fn finish(self) -> RouteDecision {
        match self {
            Self::Running(running) => super::exec::offload(running).await,
            Self::Waiting(call) => match call.plugin.reserve(Some(call.peer)).await {
                Ok(reserved) => super::exec::offload(call.run(reserved)).await,
                Err(failure) => call.failed(&failure),
            },
        }
    }
}

/// One routing call, prepared ([`SipRouter::prepare`]).
pub struct RouteCall {
    plugin: Arc<super::Plugin>,
    request: bindings::SipRequest,
    facts: DigestFacts,
    nonce: NonceKey,
    algorithms: Arc<[String]>,
    peer: IpAddr,
}

impl RouteCall {
    /// Waits for a place and runs, wherever it is polled.
    pub async fn finish(self) -> RouteDecision {
        match self.plugin.reserve(Some(self.peer)).await {
            Ok(reserved) => self.run(reserved).await,
            Err(failure) => self.failed(&failure),
        }
    }

    /// Runs in the place reserved for it.
    async fn run(self, reserved: super::Reserved) -> RouteDecision {
        let outcome = match self
            .plugin
            .call_sip_request_in(reserved, &self.request, &self.facts)
            .await
        {
            Ok((d, media)) => validate(d, &self.facts, &self.nonce, unix_now(), &self.algorithms)
                .map(|d| d.with_media(media))
                .map_err(PluginFailure::InvalidDecision),
            Err(e) => Err(e),
        };
        outcome.unwrap_or_else(|failure| self.failed(&failure))
    }

    /// The failure policy's decision for a call that failed.
    fn failed(&self, failure: &PluginFailure) -> RouteDecision {
        self.plugin.report_failure_of(
            failure,
            "a SIP request",
            Some(self.peer),
            super::sip_call_id(&self.request),
        );
        match (self.plugin.failure_policy(), failure.retry_after()) {
            (FailurePolicy::Closed, Some(secs)) => RouteDecision::Reply {
                status: 503,
                reason: None,
                headers: vec![(HeaderName::RetryAfter, secs.to_string())],
            },
            (FailurePolicy::Closed, _) => RouteDecision::Reply {
                status: 500,
                reason: None,
                headers: Vec::new(),
            },
            (FailurePolicy::Open, _) => RouteDecision::Continue(None),
        }
    }
}

/// Calls are polled on the SIP core's task first only while the plugin answers at
/// once: a call that is not done at its first poll held the core for up to an epoch
/// tick, so from then on calls go straight to the plugin runtime, until
/// [`InPlace::QUICK_STREAK`] of them in a row were done within [`InPlace::QUICK`].
#[derive(Debug, Default)]
pub struct InPlace {
    deferring: std::sync::atomic::AtomicBool,
    quick: std::sync::atomic::AtomicU32,
}

impl InPlace {
    /// A deferred call this quick counts toward polling in place again.
    pub const QUICK: std::time::Duration = std::time::Duration::from_millis(1);
    /// Quick deferred calls in a row after which calls are polled in place again.
    pub const QUICK_STREAK: u32 = 64;

    /// Whether to poll the next call in place.
    pub fn in_place(&self) -> bool {
        !self.deferring.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A call was not done at its first poll in place.
    pub fn was_slow(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.deferring.store(true, Relaxed);
        self.quick.store(0, Relaxed);
    }

    /// A deferred call took `took`.
    pub fn deferred_took(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        if took > Self::QUICK {
            self.quick.store(0, Relaxed);
        } else if self.quick.fetch_add(1, Relaxed) + 1 >= Self::QUICK_STREAK {
            self.deferring.store(false, Relaxed);
            self.quick.store(0, Relaxed);
        }
    }
}

impl SipRouter {
    /// A router calling the plugin in `slot` (its current version at each call);
    /// `nonce` makes the challenges, one per algorithm of `algorithms`.
    pub fn new(slot: Arc<PluginSlot>, nonce: NonceKey, algorithms: &[String]) -> Self {
        Self {
            slot,
            nonce,
            algorithms: algorithms.into(),
            in_place: Arc::default(),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.slot.name()
    }

    /// Prepares asking the plugin about a new out-of-dialog request: the call owns
    /// what it needs (the request as the plugin sees it), so it can run in place or be
    /// moved to a task. Its outcome is the plugin's decision, checked, with the failure
    /// policy applied: `closed` answers 500 (503 when the plugin is busy), `open`
    /// continues with the default routing.
    pub fn prepare(&self, source: &Source, req: &Request, flow: FlowFacts<'_>) -> RouteCall {
        RouteCall {
            plugin: self.slot.current(),
            request: sip_request(req, source, flow.identity),
            facts: DigestFacts::of(req)
                .counted_against(source.remote.ip())
                .proven_by(flow.proven_user),
            nonce: self.nonce.clone(),
            algorithms: self.algorithms.clone(),
            peer: source.remote.ip(),
        }
    }

    /// The whole call as one future (waiting for a place, then running).
    pub fn call(
        &self,
        source: &Source,
        req: &Request,
        flow: FlowFacts<'_>,
    ) -> impl std::future::Future<Output = RouteDecision> + Send + 'static {
        self.prepare(source, req, flow).finish()
    }

    /// [`SipRouter::call`] polled once, in place, when the plugin has a place for it
    /// now: the decision when the plugin made it at once (the usual case: the epoch
    /// deadline bounds running Wasm, and a call yields at its first epoch tick), else
    /// the call to finish elsewhere ([`Deferred`]). While the plugin has been slow
    /// lately ([`InPlace`]) the call is not polled here at all.
    pub fn decide_in_place(
        &self,
        source: &Source,
        req: &Request,
        flow: FlowFacts<'_>,
    ) -> Result<RouteDecision, Deferred> {
        let call = self.prepare(source, req, flow);
        let reserved = match call.plugin.try_reserve(Some(call.peer)) {
            Ok(Some(reserved)) => reserved,
            Ok(None) => return Err(Deferred::Waiting(Box::new(call))),
            Err(failure) => return Ok(call.failed(&failure)),
        };
        let running: PendingDecision = Box::pin(call.run(reserved));
        if !self.in_place.in_place() {
            return Err(Deferred::Running(running));
        }
        super::exec::poll_once(running).map_err(|running| {
            self.in_place.was_slow();
            Deferred::Running(running as PendingDecision)
        })
    }

    /// Whether calls are polled in place now, and the record of deferred ones.
    pub fn in_place(&self) -> &Arc<InPlace> {
        &self.in_place
    }

    /// Tells the plugin a flow closed. A failure is logged and counted.
    pub async fn flow_closed(&self, closed: &ClosedFlow, identity: &[(String, String)]) {
        let plugin = self.slot.current();
        let flow = bindings::ClosedFlow {
            flow: flow(
                closed.transport,
                closed.local,
                closed.remote,
                Some(closed.flow),
                identity,
            ),
            aors: closed.aors.clone(),
        };
        if let Err(failure) = plugin.call_flow_closed(&flow).await {
            plugin.report_failure(&failure, "a closed flow", Some(closed.remote.ip()));
        }
    }
}

/// Seconds since the Unix epoch (nonces are stamped with it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn flow(
    transport: crate::core::Transport,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    connection: Option<u64>,
    identity: &[(String, String)],
) -> bindings::Flow {
    bindings::Flow {
        transport: sip_transport(transport),
        remote_addr: remote.ip().to_string(),
        remote_port: remote.port(),
        local_addr: local.ip().to_string(),
        local_port: local.port(),
        connection_id: connection,
        identity: identity.to_vec(),
    }
}

/// The request as the plugin sees it.
pub fn sip_request(
    req: &Request,
    source: &Source,
    identity: &[(String, String)],
) -> bindings::SipRequest {
    bindings::SipRequest {
        method: req.method.as_str().to_string(),
        request_uri: req.uri.to_string(),
        target: sip_address(&req.uri),
        from: req.get_from().ok().and_then(|f| sip_address(&f.uri)),
        to: req.get_to().ok().and_then(|t| sip_address(&t.uri)),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.as_str().to_string(), h.value.clone()))
            .collect(),
        body: req.body.to_vec(),
        source: flow(
            source.transport,
            source.local,
            source.remote,
            source.flow,
            identity,
        ),
    }
}

/// A URI as plugins see it parsed (`sip-address`): `None` for schemes other than SIP.
fn sip_address(uri: &crate::sip::uri::Uri) -> Option<bindings::SipAddress> {
    let u = uri.as_sip()?;
    let user = u.user.as_deref().map(|user| {
        let mut out = String::with_capacity(user.len());
        crate::sip::uri::push_canonical_user(&mut out, user);
        out
    });
    Some(bindings::SipAddress {
        user,
        host: u.host.to_string().to_ascii_lowercase(),
        port: u.port,
        secure: u.secure,
        aor: crate::core::registrar::aor_of(uri),
    })
}

/// What the router is told of the connection a request came on.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowFacts<'a> {
    /// The attributes its http-handler plugin attached at upgrade (WebSocket flows).
    pub identity: &'a [(String, String)],
    /// The user the host holds it to (a listener with `identity = "enforce"`).
    pub proven_user: Option<&'a str>,
}

/// What checking a decision, and the plugin's `digest` imports, need of its request.
#[derive(Debug, Clone)]
pub struct DigestFacts {
    /// The method (part of the Digest response).
    pub(crate) method: String,
    /// A REGISTER (challenged with 401, else 407).
    register: bool,
    /// The credentials it carries for such a challenge (`Authorization` for REGISTER,
    /// `Proxy-Authorization` otherwise).
    pub(crate) credentials: Vec<String>,
    /// The address it came from: nonces are bound to it, and failed guesses counted
    /// against it (none: not counted).
    pub(crate) peer: Option<IpAddr>,
    /// Its Request-URI as received, which credentials must name.
    pub(crate) uri: String,
    /// Its Call-ID, CSeq and top Via: what a retransmission of it shares.
    pub(crate) txn: String,
    /// Whether a failed Digest check of this request was counted already (a plugin may
    /// check one request against several passwords: one request, one failure).
    pub(crate) failure_counted: bool,
    /// The user the request's connection is held to (`identity = "enforce"`), which
    /// `digest.proven-user` tells the plugin.
    pub(crate) proven_user: Option<String>,
}

impl DigestFacts {
    /// The facts of `req`.
    pub fn of(req: &Request) -> Self {
        let register = req.method == Method::Register;
        let answer = if register {
            HeaderName::Authorization
        } else {
            HeaderName::ProxyAuthorization
        };
        Self {
            method: req.method.as_str().to_string(),
            register,
            credentials: req.headers.get_all(&answer).map(str::to_string).collect(),
            peer: None,
            uri: req.uri.to_string(),
            // A retransmission keeps its Call-ID, CSeq and top Via (its branch); a
            // replay of the same request in a new transaction does not.
            txn: format!(
                "{}\n{}\n{}",
                req.call_id().unwrap_or(""),
                req.headers.get(&HeaderName::CSeq).unwrap_or(""),
                req.headers.values(&HeaderName::Via).next().unwrap_or("")
            ),
            failure_counted: false,
            proven_user: None,
        }
    }

    /// The facts of an HTTP request an `http-handler` decides: its `Authorization`
    /// credentials, method and target, counted against the client's address. Every HTTP
    /// request is a request of its own (there are no retransmissions): a nonce count is
    /// good for one.
    pub fn of_http(req: &bindings::HttpRequest) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        Self {
            method: req.method.clone(),
            register: false,
            credentials: req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
                .collect(),
            peer: req.peer.remote_addr.parse().ok(),
            uri: req.target.clone(),
            txn: format!(
                "http\n{}\n{}",
                req.connection_id,
                SERIAL.fetch_add(1, Ordering::Relaxed)
            ),
            failure_counted: false,
            proven_user: None,
        }
    }

    /// The same facts, for a request on a connection held to `user`.
    pub fn proven_by(self, user: Option<&str>) -> Self {
        Self {
            proven_user: user.map(str::to_string),
            ..self
        }
    }

    /// The same facts, with failed Digest checks counted against `peer`.
    pub fn counted_against(self, peer: IpAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self
        }
    }
}

/// Checks a plugin's decision and turns it into what the core does. A challenge
/// becomes its 401/407 here (the nonce is made with `now_unix`).
pub fn validate(
    d: GuestSipDecision,
    req: &DigestFacts,
    nonce: &NonceKey,
    now_unix: u64,
    algorithms: &[String],
) -> Result<RouteDecision, String> {
    match d {
        GuestSipDecision::Continue => Ok(RouteDecision::Continue(None)),
        GuestSipDecision::Reply(r) => {
            if !(200..=699).contains(&r.status) {
                return Err(format!(
                    "reply status {} is not a final status (200..=699)",
                    r.status
                ));
            }
            if let Some(reason) = &r.reason
                && (reason.is_empty()
                    || reason.len() > MAX_REASON
                    || reason.chars().any(char::is_control))
            {
                return Err(format!(
                    "reason phrase {reason:?} is empty, longer than {MAX_REASON} bytes or has control characters"
                ));
            }
            if r.headers.len() > MAX_REPLY_HEADERS {
                return Err(format!(
                    "{} reply headers, at most {MAX_REPLY_HEADERS}",
                    r.headers.len()
                ));
            }
            let mut headers = Vec::with_capacity(r.headers.len());
            for (name, value) in r.headers {
                if name.is_empty() || !name.bytes().all(is_token_char) {
                    return Err(format!("header name {name:?} is not a token"));
                }
                if value.len() > MAX_REPLY_HEADER_VALUE
                    || value.chars().any(|c| c.is_control() && c != '\t')
                {
                    return Err(format!(
                        "header {name}: value longer than {MAX_REPLY_HEADER_VALUE} bytes or with control characters"
                    ));
                }
                let parsed = HeaderName::parse(&name);
                if OWNED.contains(&parsed) {
                    return Err(format!("header {name} is written by the host"));
                }
                headers.push((parsed, value.trim().to_string()));
            }
            Ok(RouteDecision::Reply {
                status: r.status,
                reason: r.reason,
                headers,
            })
        }
        GuestSipDecision::Relay(target) => {
            // A gateway set by name (`[[gateways]]`); the core answers 500 for a name
            // no set has.
            if let Some(name) = target.trim().strip_prefix("gw:") {
                if !crate::config::gateway_name_is_valid(name) {
                    return Err(format!("relay target {target:?} is not a gateway set name"));
                }
                return Ok(RouteDecision::Relay(Uri::Other(format!("gw:{name}")), None));
            }
            let uri = Uri::parse(target.trim())
                .map_err(|e| format!("relay target {target:?} is not a URI: {e}"))?;
            if uri.as_sip().is_none() {
                return Err(format!(
                    "relay target {target:?} is not a sip: or sips: URI"
                ));
            }
            Ok(RouteDecision::Relay(uri, None))
        }
        GuestSipDecision::Challenge(realm) => {
            if !realm_is_valid(&realm) {
                return Err(format!(
                    "challenge realm {realm:?} is empty, longer than 128 bytes or has control characters"
                ));
            }
            // REGISTER is challenged by the registrar (401), anything else by a proxy
            // (407), RFC 3261 sections 22.2 and 22.3.
            let (status, ask) = if req.register {
                (401, HeaderName::WwwAuthenticate)
            } else {
                (407, HeaderName::ProxyAuthenticate)
            };
            // An old nonce, or one given to another address (a client that moved):
            // the client need not ask its user again.
            let stale = req.credentials.iter().any(|v| {
                digest_param(v, "realm").as_deref() == Some(realm.as_str())
                    && digest_param(v, "nonce").is_some_and(|n| {
                        matches!(
                            nonce.check(&n, &realm, now_unix, NONCE_MAX_AGE_SECS, req.peer),
                            NonceCheck::Stale | NonceCheck::Foreign
                        )
                    })
            });
            let headers = nonce
                .sip_challenge_headers(&realm, now_unix, stale, algorithms, req.peer)
                .into_iter()
                .map(|v| (ask.clone(), v))
                .collect();
            Ok(RouteDecision::Reply {
                status,
                reason: None,
                headers,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_slow_call_sends_the_next_ones_off_the_core_until_a_streak_of_quick_ones() {
        use super::InPlace;
        use std::time::Duration;
        let p = InPlace::default();
        assert!(p.in_place());
        p.was_slow();
        assert!(!p.in_place());
        for _ in 0..InPlace::QUICK_STREAK - 1 {
            p.deferred_took(Duration::from_micros(50));
        }
        // A slow one breaks the streak.
        p.deferred_took(Duration::from_millis(40));
        for _ in 0..InPlace::QUICK_STREAK - 1 {
            p.deferred_took(Duration::from_micros(50));
        }
        assert!(!p.in_place());
        p.deferred_took(Duration::from_micros(50));
        assert!(p.in_place(), "quick again: polled in place");
    }

    use super::*;
    use crate::sip::message::Message;

    fn request(text: &str) -> Request {
        match crate::sip::parse::parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("not a request"),
        }
    }

    fn invite(extra: &str) -> Request {
        request(&format!(
            "INVITE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa\r\n\
             From: <sip:alice@localhost>;tag=1\r\nTo: <sip:bob@localhost>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        ))
    }

    fn algs() -> Vec<String> {
        vec!["MD5".into(), "SHA-256".into()]
    }

    fn reply(status: u16, headers: &[(&str, &str)]) -> GuestSipDecision {
        GuestSipDecision::Reply(bindings::GuestSipReply {
            status,
            reason: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn replies_are_checked() {
        let k = NonceKey::new([1; 32]);
        let req = invite("");
        let check = |d| validate(d, &DigestFacts::of(&req), &k, 10, &algs());
        let ok = check(reply(403, &[("Warning", "399 x \"blocked\"")]));
        assert!(matches!(ok, Ok(RouteDecision::Reply { status: 403, .. })));
        assert!(check(reply(180, &[])).is_err());
        assert!(check(reply(700, &[])).is_err());
        for owned in ["Via", "v", "call-id", "CSeq", "Content-Length", "l", "To"] {
            let e = check(reply(403, &[(owned, "x")])).unwrap_err();
            assert!(e.contains("written by the host"), "{owned}: {e}");
        }
        assert!(check(reply(403, &[("X-A", "a\r\nVia: x")])).is_err());
        assert!(check(reply(403, &[("X A", "a")])).is_err());
        let mut bad_reason = reply(403, &[]);
        if let GuestSipDecision::Reply(r) = &mut bad_reason {
            r.reason = Some("Forbidden\r\n".into());
        }
        assert!(check(bad_reason).is_err());
    }

    #[test]
    fn relay_targets_must_be_sip_uris() {
        let k = NonceKey::new([1; 32]);
        let req = invite("");
        let ok = validate(
            GuestSipDecision::Relay("sip:9001@127.0.0.1:5070".into()),
            &DigestFacts::of(&req),
            &k,
            10,
            &algs(),
        );
        assert!(matches!(ok, Ok(RouteDecision::Relay(_, None))));
        for bad in ["tel:+15551234", "not a uri", ""] {
            assert!(
                validate(
                    GuestSipDecision::Relay(bad.into()),
                    &DigestFacts::of(&req),
                    &k,
                    10,
                    &algs()
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn challenges_are_407_for_proxied_requests_401_for_register_and_stale_when_old() {
        let k = NonceKey::new([1; 32]);
        let d = validate(
            GuestSipDecision::Challenge("sipwasm".into()),
            &DigestFacts::of(&invite("")),
            &k,
            1000,
            &algs(),
        )
        .unwrap();
        let RouteDecision::Reply {
            status, headers, ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(status, 407);
        assert!(
            headers
                .iter()
                .all(|(n, _)| *n == HeaderName::ProxyAuthenticate)
        );
        assert!(headers.iter().all(|(_, v)| !v.contains("stale")));
        let old = k.issue("sipwasm", 1000, None);
        let retry = invite(&format!(
            "Proxy-Authorization: Digest username=\"alice\", realm=\"sipwasm\", nonce=\"{old}\", uri=\"sip:bob@localhost\", response=\"00\"\r\n"
        ));
        let d = validate(
            GuestSipDecision::Challenge("sipwasm".into()),
            &DigestFacts::of(&retry),
            &k,
            1000 + NONCE_MAX_AGE_SECS + 1,
            &algs(),
        )
        .unwrap();
        let RouteDecision::Reply { headers, .. } = d else {
            panic!()
        };
        assert!(headers.iter().all(|(_, v)| v.contains("stale=true")));
        let register = request(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb\r\n\
             From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: c2\r\n\
             CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
        );
        let d = validate(
            GuestSipDecision::Challenge("sipwasm".into()),
            &DigestFacts::of(&register),
            &k,
            5,
            &algs(),
        )
        .unwrap();
        assert!(matches!(d, RouteDecision::Reply { status: 401, .. }));
        assert!(
            validate(
                GuestSipDecision::Challenge("a\r\nb".into()),
                &DigestFacts::of(&register),
                &k,
                5,
                &algs()
            )
            .is_err()
        );
    }
}
