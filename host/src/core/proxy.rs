//! Where the stateful proxy sends a request (RFC 3261 section 16): routing
//! decisions, Record-Route, loop detection, the registrar and local requests. The
//! response contexts it starts are in `forking.rs`.

use std::net::SocketAddr;
use std::time::Instant;

use hmac::Mac;

use super::flowtoken::FlowTokens;
use super::location::Binding;
use super::registrar::{self, Change, aor_of};
use super::resolve::NamedHop;
use super::transaction::TimerRef;
use super::{
    ALLOW, Core, Event, FlowId, Refusal, SUPPORTED, Source, Target, Transport, split_tokens,
};
use crate::hex::hex;
use crate::sip::headers::HeaderName;
use crate::sip::message::{Essentials, Method, Request};
use crate::sip::typed::{NameAddr, Via};
use crate::sip::uri::{Host, SipUri, Uri};

/// One place a branch can try.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// The Request-URI to send.
    pub(super) uri: Uri,
    /// Where to send it.
    pub(super) target: Target,
    /// Over which transport.
    pub(super) transport: Transport,
    /// Route headers to put first (a binding's Path).
    pub(super) path: Vec<String>,
}

/// What moves a branch on to its next alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Failover {
    /// A failed flow only (430, a connection gone: RFC 5626 section 7).
    Flows,
    /// Targets of a name (RFC 3263 4.3): also a 503, a transport error, or silence
    /// for `sip.failover-after`.
    Unavailable,
    /// Members of a gateway set: also a 408 and any 5xx.
    ServerErrors,
}

/// Where a branch goes next: a place, or a name to resolve first (RFC 3263).
#[derive(Debug, Clone)]
pub(super) enum Next {
    /// A place.
    At(Candidate),
    /// A host name: the branch waits for the shell to resolve it, then tries what
    /// it resolved to in turn.
    Named {
        /// The Request-URI to send.
        uri: Uri,
        /// What to resolve.
        hop: NamedHop,
        /// Route headers to put first (a binding's Path).
        path: Vec<String>,
    },
}

/// What a Record-Route entry of ours names in its user part: where requests of the
/// dialog sent toward that entry's side go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RrToken {
    /// A connection (the party's own, or one to an edge in front of it).
    Flow(FlowId),
    /// A UDP peer's real address.
    Udp(SocketAddr),
    /// A next hop the server connects to over TCP or TLS (with, over TLS, the key of
    /// the name its certificate must prove; 0 for its address).
    Connect(Transport, SocketAddr, u64),
}

/// The party of a dialog a Record-Route entry of ours faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The one that sent the dialog-creating request (its From tag is the dialog's
    /// caller tag).
    Caller,
    /// The one that request went to.
    Callee,
}

impl Side {
    fn letter(self) -> char {
        match self {
            Self::Caller => 'c',
            Self::Callee => 'e',
        }
    }
}

/// A signed Record-Route entry of ours, popped from a Route header: `sip:TOKEN@us;lr;sw=
/// SIDE MAC`, the MAC over the dialog's Call-ID and caller tag, the side and the token
/// ([`Core::rr_mac`]). It authorises one thing: sending that dialog's requests toward
/// that side, to the token's address.
#[derive(Debug)]
struct RrEntry {
    side: Side,
    mac: String,
    user: String,
    token: RrToken,
    /// The media engine of the dialog (`mr=`), when its media is relayed.
    media: Option<usize>,
}

/// Highest media engine index a Record-Route entry may name.
const MAX_MEDIA_ENGINE: usize = 999;

impl RrEntry {
    /// The signed entry `uri` is; `Ok(None)` for an entry of ours without a signature
    /// (a pre-loaded route to us); `Err` for one whose token or signature is not ours.
    fn of(uri: &SipUri, tokens: &FlowTokens) -> Result<Option<Self>, ()> {
        let user = uri.user.as_deref().unwrap_or("");
        let Some(sw) = uri.param("sw") else {
            // Tokens of ours come only in signed entries.
            return match user.get(..2) {
                Some("ft" | "fu" | "fc" | "fs") => Err(()),
                _ => Ok(None),
            };
        };
        let sw = sw.ok_or(())?;
        let side = match sw.as_bytes().first() {
            Some(b'c') => Side::Caller,
            Some(b'e') => Side::Callee,
            _ => return Err(()),
        };
        let token = match user.get(..2) {
            Some("ft") => RrToken::Flow(tokens.decode(user).ok_or(())?),
            Some("fu") => RrToken::Udp(tokens.decode_udp(user).ok_or(())?),
            Some("fc" | "fs") => {
                let (t, a, name) = tokens.decode_connect(user).ok_or(())?;
                RrToken::Connect(t, a, name)
            }
            _ => return Err(()),
        };
        let media = match uri.param("mr") {
            None => None,
            Some(v) => Some(
                v.and_then(|v| v.parse::<usize>().ok())
                    .filter(|e| *e <= MAX_MEDIA_ENGINE)
                    .ok_or(())?,
            ),
        };
        Ok(Some(Self {
            side,
            mac: sw[1..].to_string(),
            user: user.to_string(),
            token,
            media,
        }))
    }

    /// Whether the entry was made for the dialog with this Call-ID and caller tag.
    fn signed_for(&self, core: &Core, call_id: &str, caller_tag: &str) -> bool {
        let expected = core.rr_mac(call_id, caller_tag, self.side, &self.user, self.media);
        // Compared in constant time: the MAC is what an attacker would guess at.
        expected.len() == self.mac.len()
            && expected
                .bytes()
                .zip(self.mac.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

/// A `Warning` (RFC 3261 20.43) that says in words why a request was refused.
pub(super) fn warning(text: &str) -> (HeaderName, String) {
    (HeaderName::Warning, format!("399 sipwasm \"{text}\""))
}

/// The Request-URI for a request retargeted to a registered Contact. A Contact may carry
/// `?headers` and a `method` parameter (RFC 3261 19.1.1, Table 1: allowed in a registrar's
/// Contact), neither of which may appear in a Request-URI; both are dropped, everything else
/// (transport, maddr, user, unknown parameters) is kept as 19.1.5 asks.
fn request_uri_of_contact(contact: &str) -> Option<Uri> {
    let mut uri = Uri::parse(contact).ok()?;
    if let Uri::Sip(u) = &mut uri {
        u.headers = None;
        u.params
            .retain(|(name, _)| !name.eq_ignore_ascii_case("method"));
    }
    Some(uri)
}

/// What `stamp_received` adds to a request's top Via at most (`;received=` and an IPv6
/// address, an `rport` value), rounded up.
pub(super) const STAMPED_AT_MOST: usize = 64;

/// Most Route entries of ours popped from one request; more is a loop (482).
const MAX_OWN_ROUTES: usize = 8;

/// Where routing decided a request goes.
pub(super) enum Route {
    /// Answer it here.
    Answer {
        /// The status.
        status: u16,
        /// The reason phrase when not the status's usual one ("Too Many Contacts").
        reason: Option<String>,
        /// Header fields to add.
        headers: Vec<(HeaderName, String)>,
    },
    /// Forward statefully.
    Forward(Forwarding),
    /// Wait for the cluster's shared store (`[cluster]`): the AoR's bindings on
    /// other nodes.
    Cluster(Wait),
}

/// What a request for the store becomes in [`Route::Cluster`] ([`super::cluster`]).
#[derive(Debug)]
pub(super) enum Wait {
    /// A request for a user: its bindings on other nodes are looked up.
    Call {
        /// The AoR.
        aor: String,
        /// The loop hash.
        hash: String,
    },
    /// A REGISTER (checked as far as it can be without the AoR's bindings).
    Register {
        /// The AoR.
        aor: String,
    },
}

/// Where a request is forwarded.
#[derive(Debug)]
pub(super) struct Forwarding {
    /// One branch each; each with its alternatives (an instance's flows).
    pub(super) branches: Vec<Vec<Next>>,
    /// The request's loop-detection hash, computed on it as it arrived (RFC 3261 16.6
    /// step 8).
    pub(super) loop_hash: String,
    /// Inside a dialog whose media goes through an engine: which one (our Record-Route
    /// entries say so).
    pub(super) media: Option<usize>,
    /// The routing plugin's choice of a new call's media.
    pub(super) choice: Option<Box<crate::media::Choice>>,
    /// What moves a branch to its next alternative.
    pub(super) failover: Failover,
}

impl Route {
    /// With the routing plugin's choice of the call's media (for a forwarded request).
    pub(super) fn with_media(mut self, choice: Option<Box<crate::media::Choice>>) -> Self {
        if let Self::Forward(f) = &mut self {
            f.choice = choice;
        }
        self
    }
}

impl Route {
    /// Forward to one place.
    fn to(c: Next, loop_hash: String) -> Self {
        Self::Forward(Forwarding {
            branches: vec![vec![c]],
            loop_hash,
            media: None,
            choice: None,
            failover: Failover::Flows,
        })
    }
}

impl Route {
    /// An answer with the status's usual reason phrase.
    pub(super) fn answer(status: u16, headers: Vec<(HeaderName, String)>) -> Self {
        Self::Answer {
            status,
            reason: None,
            headers,
        }
    }
}

impl Core {
    /// Whether `req` is inside a dialog we record-routed: a To tag, and on top of its
    /// Route (or, from a strict router, as its Request-URI) our entry signed for its
    /// Call-ID and one of its tags ([`Core::decide`] checks the whole route set). What
    /// is not is a new request for the routing plugin: a To tag alone proves nothing,
    /// and a REGISTER never belongs to a dialog (RFC 3261 10.2), so neither gets past
    /// the plugin's authentication.
    pub(super) fn in_our_dialog(&self, req: &Request) -> bool {
        if req.method == Method::Register || req.tag_of_to().is_none() {
            return false;
        }
        let call_id = req.call_id().unwrap_or("");
        let proves = |uri: &Uri| {
            self.is_local_uri(uri)
                && uri
                    .as_sip()
                    .and_then(|u| RrEntry::of(u, &self.tokens).ok().flatten())
                    .is_some_and(|e| {
                        [req.tag_of_from(), req.tag_of_to()]
                            .into_iter()
                            .flatten()
                            .any(|tag| e.signed_for(self, call_id, tag))
                    })
        };
        match req.headers.values(&HeaderName::Route).next() {
            Some(first) => NameAddr::parse(first).is_ok_and(|na| proves(&na.uri)),
            None => proves(&req.uri),
        }
    }

    /// 403 for a request whose signed Route entries do not fit it (forged, edited, or
    /// replayed from another dialog), counted.
    fn forged_route(&mut self, source: &Source, req: &Request, now: Instant) -> Route {
        self.refuse(Refusal::ForgedRoute, source.remote, req, now);
        Route::answer(403, vec![warning("Route Not Of This Dialog")])
    }

    /// Decides what happens to a new request: answer it here, or forward it.
    pub(super) fn decide(&mut self, now: Instant, source: &Source, req: &mut Request) -> Route {
        // A strict router before us (RFC 3261 16.4): the Request-URI is one of our
        // Record-Route entries (they all carry `sw`) and the target is the last Route
        // value. Put both back as a loose router sends them; our entry is then popped
        // below like any other, with the same checks.
        if self.is_local_uri(&req.uri)
            && req.uri.as_sip().is_some_and(|u| u.param("sw").is_some())
            && let Some(last) = req.headers.take_last_value(&HeaderName::Route)
        {
            let Ok(target) = NameAddr::parse(&last) else {
                return Route::answer(400, vec![]);
            };
            let ours = std::mem::replace(&mut req.uri, target.uri);
            req.headers
                .push_front(HeaderName::Route, format!("<{ours}>"));
        }
        // Max-Forwards (RFC 3261 16.3 step 3).
        let max_forwards = req.max_forwards();
        let to_us = self.is_local_uri(&req.uri);
        // For the server itself: the registrar, or our URI without a user part.
        let for_server = to_us
            && (req.method == Method::Register
                || req.uri.as_sip().is_some_and(|u| u.user.is_none()));
        // Only what ends here may arrive with none left: an OPTIONS to a user would be
        // forwarded (16.3 step 3 allows the exception "for the server itself").
        if max_forwards.exhausted()
            && !(for_server && matches!(req.method, Method::Options | Method::Register))
        {
            return Route::answer(483, vec![]);
        }
        // Proxy-Require (16.3 step 5).
        if let Some(refusal) = bad_extension(req, &HeaderName::ProxyRequire) {
            return refusal;
        }
        // Loop detection (16.3 step 4): one of our Vias carries this request's hash.
        // Only requests we may forward can loop; those for the registrar or for us
        // without a user part are answered here.
        let ends_here = for_server && req.headers.get(&HeaderName::Route).is_none();
        let hash = if ends_here {
            String::new()
        } else {
            self.loop_hash(req)
        };
        if !ends_here && self.looped(req, &hash) {
            return Route::answer(482, vec![]);
        }

        // Our own Route entries (16.4): pop them. A route set names us once per side of
        // a dialog we record-routed (two entries, RFC 5658), each signed for that
        // dialog and naming where requests toward its side go; an entry of ours
        // without a signature (a client's pre-loaded route to us) only says "us". A
        // few more are tolerated, but not thousands in one datagram (each pop rewrites
        // the line).
        let mut dialog: Vec<RrEntry> = Vec::new();
        // Another node of the cluster forwarding to a binding this node holds: the
        // flow (or UDP address) our route entry names.
        let mut from_node: Option<RrToken> = None;
        for popped in 0.. {
            let Some(first) = req
                .headers
                .values(&HeaderName::Route)
                .next()
                .map(str::to_string)
            else {
                break;
            };
            let Ok(na) = NameAddr::parse(&first) else {
                return Route::answer(400, vec![]);
            };
            if !self.is_local_uri(&na.uri) {
                break;
            }
            if popped == MAX_OWN_ROUTES {
                return Route::answer(482, vec![]);
            }
            req.headers.remove_first_value(&HeaderName::Route);
            let sip = na.uri.as_sip().expect("local URIs are SIP URIs");
            if sip.param("swc").is_some() {
                let user = sip.user.as_deref().unwrap_or("");
                let token = match user.get(..2) {
                    Some("ft") => self.tokens.decode(user).map(RrToken::Flow),
                    Some("fu") => self.tokens.decode_udp(user).map(RrToken::Udp),
                    _ => None,
                };
                // Only the other nodes (`cluster.peers`) route by these, once per
                // request.
                match token {
                    Some(t) if self.is_cluster_peer(source.remote.ip()) && from_node.is_none() => {
                        from_node = Some(t);
                        continue;
                    }
                    _ => return self.forged_route(source, req, now),
                }
            }
            match RrEntry::of(sip, &self.tokens) {
                Ok(Some(entry)) => dialog.push(entry),
                Ok(None) => {}
                Err(()) => return self.forged_route(source, req, now),
            }
        }
        if dialog.is_empty()
            && let Some(token) = from_node
        {
            let uri = req.uri.clone();
            let to = |target, transport| {
                Route::to(
                    Next::At(Candidate {
                        uri,
                        target,
                        transport,
                        path: vec![],
                    }),
                    hash,
                )
            };
            if let RrToken::Connect(..) = token {
                return self.forged_route(source, req, now);
            }
            // The flow gone: 430, and the node that asked tries the AoR's other
            // bindings (RFC 5626 section 5.3).
            return match self.token_destination(token) {
                Ok((target, transport)) => to(target, transport),
                Err(status) => Route::answer(status, vec![]),
            };
        }
        // The last entry of ours faces where the request goes: its token is the
        // destination, whatever the Request-URI says (an in-dialog request reaches the
        // party the dialog was set up with, at the address it was reached at then).
        if let Some(dest) = dialog.last() {
            // Only requests inside the dialog (with a To tag) may use its route: an
            // out-of-dialog request naming it would reach a party without the router.
            if req.tag_of_to().is_none() {
                return self.forged_route(source, req, now);
            }
            // Requests toward the callee come from the caller (its tag is their From
            // tag), requests toward the caller carry its tag in To.
            let tag = match dest.side {
                Side::Callee => req.tag_of_from(),
                Side::Caller => req.tag_of_to(),
            };
            let call_id = req.call_id().unwrap_or("");
            let Some(tag) = tag else {
                return self.forged_route(source, req, now);
            };
            if !dialog.iter().all(|e| e.signed_for(self, call_id, tag)) {
                return self.forged_route(source, req, now);
            }
            // A strict router next (RFC 3261 16.6 step 6): its URI becomes the
            // Request-URI, the target the last Route value; it is reached at the token.
            let next = req
                .headers
                .values(&HeaderName::Route)
                .next()
                .map(str::to_string);
            if let Some(next) = next
                && let Ok(na) = NameAddr::parse(&next)
                && na.uri.as_sip().is_some_and(|u| u.param("lr").is_none())
            {
                req.headers.remove_first_value(&HeaderName::Route);
                let target = std::mem::replace(&mut req.uri, na.uri);
                req.headers.push(HeaderName::Route, format!("<{target}>"));
            }
            let uri = req.uri.clone();
            let media = dest.media;
            let candidate = |target, transport| {
                Route::Forward(Forwarding {
                    branches: vec![vec![Next::At(Candidate {
                        uri,
                        target,
                        transport,
                        path: vec![],
                    })]],
                    loop_hash: hash,
                    media,
                    choice: None,
                    failover: Failover::Flows,
                })
            };
            return match self.token_destination(dest.token) {
                Ok((target, transport)) => candidate(target, transport),
                Err(status) => Route::answer(status, vec![]),
            };
        }
        // Out of any dialog of ours, only the operator's trusted peers (or a server set
        // to relay) steer requests elsewhere: an untrusted client's Route and
        // Request-URI are claims, never destinations (the egress rule).
        let may_steer = self.cfg.relay || self.is_trusted(source);
        // A remaining Route is the next hop (loose routing).
        let next = req
            .headers
            .values(&HeaderName::Route)
            .next()
            .map(str::to_string);
        if let Some(next) = next {
            if !may_steer {
                self.refuse(Refusal::Relay, source.remote, req, now);
                return Route::answer(403, vec![warning("Not Relaying For You")]);
            }
            let Ok(na) = NameAddr::parse(&next) else {
                return Route::answer(400, vec![]);
            };
            // A next hop without `lr` is a strict router (RFC 3261 16.6 step 6): it gets
            // its own URI as the Request-URI and the target as the last Route value.
            let ruri = if na.uri.as_sip().is_some_and(|u| u.param("lr").is_none()) {
                req.headers.remove_first_value(&HeaderName::Route);
                let target = std::mem::replace(&mut req.uri, na.uri.clone());
                req.headers.push(HeaderName::Route, format!("<{target}>"));
                na.uri.clone()
            } else {
                req.uri.clone()
            };
            return match self.candidate_for(&na.uri, ruri, vec![]) {
                Ok(c) => Route::to(c, hash),
                Err(status) => Route::answer(status, vec![]),
            };
        }
        if req.uri.as_sip().is_none() {
            // tel:, urn:, or a scheme nobody knows: nothing here routes those.
            return Route::answer(416, vec![]);
        }
        if to_us {
            return self.local_request(now, source, req, hash);
        }
        if let Some(c) = self.flow_of_contact(&req.uri) {
            return Route::to(Next::At(c), hash);
        }
        // Other domains: only for those who may steer.
        if !may_steer {
            self.refuse(Refusal::Relay, source.remote, req, now);
            return Route::answer(403, vec![warning("Not Relaying For You")]);
        }
        match self.candidate_for(&req.uri, req.uri.clone(), vec![]) {
            Ok(c) => Route::to(c, hash),
            Err(status) => Route::answer(status, vec![]),
        }
    }

    /// Whether one of our Vias carries `hash`: the request passed here before in the
    /// same shape (RFC 3261 16.3 step 4).
    fn looped(&self, req: &Request, hash: &str) -> bool {
        req.headers.values(&HeaderName::Via).any(|v| {
            Via::parse(v)
                .ok()
                .and_then(|v| v.branch().map(str::to_string))
                .is_some_and(|b| {
                    b.strip_prefix(&self.branch_prefix)
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|rest| rest.starts_with(hash))
                })
        })
    }

    /// The routing plugin's `relay`: `target` becomes the Request-URI; a URI of ours is
    /// looked up in the location service (an alias), a registered WebSocket contact goes
    /// to its flow, anything else to its literal address. The checks every forwarded
    /// request gets still apply (Max-Forwards, Proxy-Require, loops).
    pub(super) fn relay_to(
        &mut self,
        now: Instant,
        source: &Source,
        req: &mut Request,
        target: Uri,
    ) -> Route {
        if req.max_forwards().exhausted() {
            return Route::answer(483, vec![]);
        }
        if let Some(refusal) = bad_extension(req, &HeaderName::ProxyRequire) {
            return refusal;
        }
        if let Uri::Other(t) = &target
            && let Some(name) = t.strip_prefix("gw:")
        {
            return self.relay_to_gateways(req, name);
        }
        req.uri = target;
        let hash = self.loop_hash(req);
        if self.looped(req, &hash) {
            return Route::answer(482, vec![]);
        }
        if self.is_local_uri(&req.uri) {
            return self.local_request(now, source, req, hash);
        }
        if let Some(c) = self.flow_of_contact(&req.uri) {
            return Route::to(Next::At(c), hash);
        }
        match self.candidate_for(&req.uri, req.uri.clone(), vec![]) {
            Ok(c) => Route::to(c, hash),
            Err(status) => Route::answer(status, vec![]),
        }
    }

    /// Requests whose Request-URI is ours: the registrar, OPTIONS, or a user. In a
    /// cluster, a user's bindings on other nodes are looked up first.
    fn local_request(
        &mut self,
        now: Instant,
        source: &Source,
        req: &Request,
        hash: String,
    ) -> Route {
        if req.method == Method::Register {
            return self.register(now, source, req);
        }
        if self.clustered()
            && req.uri.as_sip().is_some_and(|u| u.user.is_some())
            && let Some(aor) = aor_of(&req.uri)
        {
            return Route::Cluster(Wait::Call { aor, hash });
        }
        self.local_request_with(now, req, hash, &[], false)
    }

    /// [`Core::local_request`] with the bindings other nodes of the cluster hold
    /// (`remote`), and whether the store knew the AoR at all (`known`: 480 rather
    /// than 404 when no binding is left).
    pub(super) fn local_request_with(
        &mut self,
        now: Instant,
        req: &Request,
        hash: String,
        remote: &[Binding],
        known_elsewhere: bool,
    ) -> Route {
        let uri = req.uri.as_sip().expect("local URIs are SIP URIs");
        if uri.user.is_none() {
            return match req.method {
                Method::Options => Route::answer(
                    200,
                    vec![
                        (HeaderName::Allow, ALLOW.into()),
                        (HeaderName::Accept, "application/sdp".into()),
                        (HeaderName::Supported, SUPPORTED.join(", ")),
                    ],
                ),
                _ => Route::answer(404, vec![]),
            };
        }
        // GRUUs (RFC 5627): a temporary one names an instance registered under one
        // Call-ID, a public one an instance.
        let user = uri.user.as_deref().unwrap_or("");
        let bindings: Vec<Binding> = if let Some(opened) = self.gruus.open(user) {
            // All the instance's bindings share its current key. One registered under
            // another Call-ID since, or none left, invalidated it: 404 (RFC 5627 5.1,
            // 5.3).
            let reached: Vec<Binding> = self
                .location
                .by_gruu_key(&opened.index)
                .filter(|b| b.temp_gruu.as_deref().is_some_and(|k| opened.reaches(k)))
                .cloned()
                .collect();
            if reached.is_empty() {
                return Route::answer(404, vec![]);
            }
            reached
        } else {
            let Some(aor) = aor_of(&req.uri) else {
                return Route::answer(404, vec![]);
            };
            let all = self.location.lookup(&aor).iter().chain(remote);
            match uri.param("gr") {
                Some(Some(instance)) => all
                    .filter(|b| b.instance.as_deref() == Some(instance))
                    .cloned()
                    .collect(),
                _ => all.cloned().collect(),
            }
        };
        if bindings.is_empty() {
            let known = known_elsewhere
                || aor_of(&req.uri).is_some_and(|a| {
                    self.known_aors
                        .get(&a)
                        .is_some_and(|t| now.saturating_duration_since(*t) < super::KNOWN_FOR)
                });
            return Route::answer(if known { 480 } else { 404 }, vec![]);
        }
        let mut groups = group_by_instance(bindings);
        // Highest q first; most recent first within equal q.
        groups.sort_by_key(|g| std::cmp::Reverse(g[0].q.unwrap_or(1000)));
        let mut branches = Vec::new();
        // One branch per UDP address: bindings registered directly from one address (one
        // socket that registered many Contacts, say at a victim's address) get the
        // request once, not once each.
        let mut targets: Vec<Target> = Vec::new();
        for g in groups {
            let candidates: Vec<Next> = g
                .iter()
                .filter_map(|b| {
                    let uri = request_uri_of_contact(&b.contact)?;
                    // Through an edge proxy: to the first Path URI, as a Route set's
                    // first hop is reached (RFC 3327 5.3, 3261 16.6 step 7), an
                    // address or a name resolved by RFC 3263 (a Path URI we cannot
                    // send to falls back to where the REGISTER came from; so does one
                    // naming us, which would loop). A binding on a connection stays on
                    // it: the edge opened it to be reused.
                    if matches!(
                        b.reach,
                        super::location::Reach::Udp { .. } | super::location::Reach::Node
                    ) && let Some(c) = b
                        .path
                        .first()
                        .and_then(|p| NameAddr::parse(p).ok())
                        .filter(|p| !self.is_local_uri(&p.uri))
                        .and_then(|p| self.candidate_for(&p.uri, uri.clone(), b.path.clone()).ok())
                    {
                        return Some(c);
                    }
                    let transport = match b.reach {
                        super::location::Reach::Flow(f) => self
                            .flows
                            .get(&f)
                            .map(|(t, _, _)| *t)
                            .unwrap_or(b.transport),
                        super::location::Reach::Udp { .. } => Transport::Udp,
                        // Its node's route did not lead anywhere.
                        super::location::Reach::Node => return None,
                    };
                    Some(Next::At(Candidate {
                        uri,
                        target: b.reach.target()?,
                        transport,
                        path: b.path.clone(),
                    }))
                })
                .filter(|n| {
                    // Direct UDP registrations only: bindings behind an edge (a Path,
                    // one connection) share its address and are its to fork.
                    let Next::At(c) = n else { return true };
                    if !(c.path.is_empty() && matches!(c.target, Target::Udp { .. })) {
                        return true;
                    }
                    let new = !targets.contains(&c.target);
                    if new {
                        targets.push(c.target);
                    }
                    new
                })
                .collect();
            if !candidates.is_empty() {
                branches.push(candidates);
            }
        }
        if branches.is_empty() {
            return Route::answer(480, vec![]);
        }
        Route::Forward(Forwarding {
            branches,
            loop_hash: hash,
            media: None,
            choice: None,
            failover: Failover::Flows,
        })
    }

    fn register(&mut self, now: Instant, source: &Source, req: &Request) -> Route {
        // The parser checked To; an address-of-record in no domain of ours is not
        // found here (RFC 3261 10.3 step 5: 404, which phones do not take for a wrong
        // password as they may a 403).
        // Its connection closed while the routing plugin decided (the flow's bindings
        // were removed then): a binding made now would outlive its flow for good.
        if let Some(flow) = source.flow
            && !self.flows.contains_key(&flow)
        {
            return Route::answer(430, vec![]);
        }
        let Some(to) = req.get_to().ok().filter(|t| {
            t.uri
                .as_sip()
                .is_some_and(|u| self.cfg.myself.is_my_host(u))
        }) else {
            return Route::answer(404, vec![]);
        };
        if let Some(refusal) = bad_extension(req, &HeaderName::Require) {
            return refusal;
        }
        // A Path names where requests for these bindings go (RFC 3327): only a trusted
        // peer may say so. From anyone else it would make the server send to an
        // address the client chose (the egress rule of the README's security model).
        if req.headers.get(&HeaderName::Path).is_some() && !self.is_trusted(source) {
            self.refuse(Refusal::UntrustedPath, source.remote, req, now);
            return Route::answer(403, vec![warning("Path Accepted Only From Trusted Peers")]);
        }
        // A UDP phone refreshing its registration by the Call-ID only it and we know
        // has shown that it receives what we send to its address.
        let udp_remote = (source.flow.is_none()).then_some(source.remote);
        if let Some(remote) = udp_remote
            && !self.udp_verified(remote, now)
            && let Some(call_id) = req.call_id()
            && let Some(aor) = aor_of(&to.uri)
            && self.location.lookup(&aor).iter().any(|b| {
                b.call_id == call_id
                    && matches!(b.reach, super::location::Reach::Udp { remote: r, .. } if r == remote)
            })
        {
            self.mark_udp_verified(remote, now);
        }
        // Behind: a new address-of-record waits (503, cheaply) so that the phones
        // already registered keep moving; refreshes and removals go on.
        if self.backlog > super::BUSY_BACKLOG
            && let Some(aor) = aor_of(&to.uri)
            && self.location.lookup(&aor).is_empty()
        {
            self.refuse(Refusal::Overload, source.remote, req, now);
            return Route::answer(
                503,
                vec![(HeaderName::RetryAfter, super::OVERLOAD_RETRY.to_string())],
            );
        }
        if self.clustered()
            && let Some(aor) = aor_of(&to.uri)
        {
            return Route::Cluster(Wait::Register { aor });
        }
        let mut changes = Vec::with_capacity(2);
        let outcome = registrar::register(
            &mut self.location,
            registrar::Registration {
                req,
                to: &to,
                source,
            },
            now,
            &self.cfg.registrar,
            &self.gruus,
            &mut changes,
        );
        self.registered(now, source, req, outcome, changes)
    }

    /// The answer to a REGISTER the registrar decided (`outcome`), after what it
    /// changed (`changes`, already applied) is told.
    pub(super) fn registered(
        &mut self,
        now: Instant,
        source: &Source,
        req: &Request,
        outcome: registrar::Outcome,
        changes: Vec<Change>,
    ) -> Route {
        for c in changes {
            match c {
                // An AoR is remembered once its client refreshes or removes a
                // binding; a new binding only renews an AoR remembered already (one
                // left to expire unrefreshed, as a REGISTER flood's are, takes no place).
                Change::Refreshed(b) => {
                    self.mark_known(&b.aor, now);
                    self.events.push_back(Event::BindingSaved(b));
                }
                Change::Saved(b) => {
                    self.touch_known(&b.aor, now);
                    self.events.push_back(Event::BindingSaved(b));
                }
                Change::Removed(b) => {
                    self.mark_known(&b.aor, now);
                    self.events.push_back(Event::BindingRemoved(b));
                }
            }
        }
        self.arm_expiry();
        if outcome.status == 503 {
            self.refuse(Refusal::RegistrarFull, source.remote, req, now);
        }
        let mut headers = outcome.headers;
        if outcome.status == 200 && !self.date.is_empty() {
            headers.push((HeaderName::Date, self.date.clone()));
        }
        if source.flow.is_none()
            && !self.udp_proven(source.remote, now)
            && let Ok(to) = req.get_to()
        {
            self.bound_answer(req, source.remote, &to, &mut headers);
        }
        Route::Answer {
            status: outcome.status,
            reason: outcome.reason,
            headers,
        }
    }

    /// No amplification toward a spoofed source: a registrar's 200 to a UDP address that
    /// has not shown it receives our packets is at most twice its request's size. The
    /// Contacts of other devices (bindings not reached at this address) are left out,
    /// last first, until it fits, and a Warning says so where it fits; the sender's own bindings are
    /// always listed (all a UA looks for in the 200). Over TCP, TLS or WebSocket, or
    /// once the address answered us or refreshed by its Call-ID, the 200 lists every
    /// binding as RFC 3261 10.3 step 8 says.
    fn bound_answer(
        &self,
        req: &Request,
        remote: SocketAddr,
        to: &NameAddr,
        headers: &mut Vec<(HeaderName, String)>,
    ) {
        // What the answer adds to what it copies from the request (Via, From, To,
        // Call-ID, CSeq): its status line, Server, Content-Length and these headers.
        let line = |(n, v): &(HeaderName, String)| n.as_str().len() + 2 + v.len() + 2;
        let added: usize =
            64 + self.cfg.server_header.len() + headers.iter().map(line).sum::<usize>();
        // A cheap floor for the request: any REGISTER is longer than this.
        if added <= 300 {
            return;
        }
        // The request as it arrived: `received` and `rport` were added to its top Via
        // since (at most `;received=` with an IPv6 address and `=65535`: 55 bytes).
        let request = req.to_bytes().len().saturating_sub(STAMPED_AT_MOST);
        let budget = 2 * request;
        let mut size = self.response_bytes(req, 200, None, headers).len();
        if size <= budget {
            return;
        }
        let Some(aor) = aor_of(&to.uri) else {
            return;
        };
        let own: Vec<&str> = self
            .location
            .lookup(&aor)
            .iter()
            .filter(
                |b| matches!(b.reach, super::location::Reach::Udp { remote: r, .. } if r == remote),
            )
            .map(|b| b.contact.as_str())
            .collect();
        let is_own = |v: &str| {
            own.iter().any(|c| {
                v.strip_prefix('<')
                    .and_then(|rest| rest.strip_prefix(c))
                    .is_some_and(|rest| rest.starts_with('>'))
            })
        };
        let mut left_out = false;
        while size > budget {
            let Some(i) = headers
                .iter()
                .rposition(|(n, v)| *n == HeaderName::Contact && !is_own(v))
            else {
                break;
            };
            size -= line(&headers[i]);
            headers.remove(i);
            left_out = true;
        }
        // Said in words when the words fit too.
        let note = warning("Other Contacts Left Out Over UDP; Ask Over TCP or TLS");
        if left_out && size + line(&note) <= budget {
            headers.push(note);
        }
    }

    /// Where a token of one of our route entries sends a request: its flow (430 when
    /// it is gone), or its address from our listener of its transport (500 when
    /// there is none).
    fn token_destination(&self, token: RrToken) -> Result<(Target, Transport), u16> {
        match token {
            RrToken::Flow(flow) => match self.flows.get(&flow) {
                Some(&(transport, _, _)) => Ok((Target::Flow(flow), transport)),
                None => Err(430),
            },
            RrToken::Udp(remote) => match self.listener(Transport::Udp, remote.is_ipv4()) {
                Some(local) => Ok((Target::Udp { local, remote }, Transport::Udp)),
                None => Err(500),
            },
            RrToken::Connect(transport, remote, name) => {
                match self.listener(transport, remote.is_ipv4()) {
                    Some(_) => Ok((
                        Target::Connect {
                            transport,
                            remote,
                            name,
                        },
                        transport,
                    )),
                    None => Err(500),
                }
            }
        }
    }

    /// Whether `req` comes from another node of the cluster for a binding this node
    /// holds (its top Route is our cluster route entry): the node it came through
    /// asked its routing plugin already.
    pub(super) fn sent_by_cluster_node(&self, source: &Source, req: &Request) -> bool {
        self.is_cluster_peer(source.remote.ip())
            && req
                .headers
                .values(&HeaderName::Route)
                .next()
                .and_then(|r| NameAddr::parse(r).ok())
                .is_some_and(|na| {
                    self.is_local_uri(&na.uri)
                        && na.uri.as_sip().is_some_and(|u| u.param("swc").is_some())
                })
    }

    /// Whether `source` is one of the operator's trusted peers (`sip.trusted-peers`),
    /// whose Path and Route headers may steer requests.
    pub(super) fn is_trusted(&self, source: &Source) -> bool {
        self.cfg.trusted.contains(source.remote.ip())
    }

    /// Whether a URI names this server (host and, if given, port).
    pub(super) fn is_local_uri(&self, uri: &Uri) -> bool {
        uri.as_sip()
            .is_some_and(|u| self.cfg.myself.is_myself_uri(u))
    }

    /// A WebSocket client's Contact (`sip:x@abc.invalid;transport=ws`) has no address:
    /// find the flow it registered over.
    fn flow_of_contact(&self, uri: &Uri) -> Option<Candidate> {
        let b = self.location.on_flow_with_contact(&uri.to_string())?;
        let flow = b.on_flow()?;
        let (transport, _, _) = *self.flows.get(&flow)?;
        Some(Candidate {
            uri: uri.clone(),
            target: Target::Flow(flow),
            transport,
            path: vec![],
        })
    }

    /// Where a request addressed by `next_hop` goes: its address, or its host name to
    /// resolve (RFC 3263, in the shell). What cannot be reached is 500, not 503: a 503
    /// tells RFC 3263 clients this server is down, and they would fail over and stay
    /// away (16.7 step 6 says the same of 503s from downstream).
    fn candidate_for(&self, next_hop: &Uri, ruri: Uri, path: Vec<String>) -> Result<Next, u16> {
        let Some(u) = next_hop.as_sip() else {
            return Err(416);
        };
        let param = u.param("transport").flatten().map(str::to_ascii_lowercase);
        // A sips: URI goes over TLS only (RFC 3261 26.2.2; `transport=tcp` there means
        // TLS over TCP, RFC 3263 4.1).
        let transport = match param.as_deref() {
            None if u.secure => Some(Transport::Tls),
            None => None,
            Some("udp") if u.secure => return Err(500),
            Some("udp") => Some(Transport::Udp),
            Some("tcp") if u.secure => Some(Transport::Tls),
            Some("tcp") => Some(Transport::Tcp),
            Some("tls") => Some(Transport::Tls),
            // A WebSocket client is reached on its flow only (flow_of_contact).
            Some("ws") | Some("wss") => return Err(480),
            Some(_) => return Err(500),
        };
        let Some(ip) = u.host.ip() else {
            let host = u
                .host
                .to_string()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            // `.invalid` never resolves (RFC 6761 6.4): a WebSocket client's Contact.
            if host == "invalid" || host.ends_with(".invalid") {
                return Err(480);
            }
            return Ok(Next::Named {
                uri: ruri,
                hop: NamedHop {
                    host,
                    port: u.port,
                    // With a port, RFC 3263 4.1 takes UDP for sip: (TLS for sips:).
                    transport: transport.or(u.port.map(|_| Transport::Udp)),
                    secure: u.secure,
                },
                path,
            });
        };
        let transport = transport.unwrap_or(Transport::Udp);
        let port = u.port.unwrap_or(if transport == Transport::Tls {
            5061
        } else {
            5060
        });
        let remote = SocketAddr::new(ip, port);
        self.candidate_at(ruri, transport, remote, 0, path)
            .map(Next::At)
            .ok_or(500)
    }

    /// A candidate at an address, when we have a listener of its transport to send
    /// from (and name in Via); `name` as in [`Target::Connect`].
    pub(super) fn candidate_at(
        &self,
        uri: Uri,
        transport: Transport,
        remote: SocketAddr,
        name: u64,
        path: Vec<String>,
    ) -> Option<Candidate> {
        let target = match transport {
            Transport::Udp => {
                let local = self.listener(Transport::Udp, remote.is_ipv4())?;
                Target::Udp { local, remote }
            }
            t => {
                self.listener(t, remote.is_ipv4())?;
                Target::Connect {
                    transport: t,
                    remote,
                    name: if t == Transport::Tls { name } else { 0 },
                }
            }
        };
        Some(Candidate {
            uri,
            target,
            transport,
            path,
        })
    }

    /// Our listener for a transport (same address family preferred).
    fn listener(&self, t: Transport, v4: bool) -> Option<SocketAddr> {
        let of_t = self.cfg.listeners.iter().filter(|l| l.transport == t);
        of_t.clone()
            .find(|l| l.addr.is_ipv4() == v4)
            .or_else(|| of_t.clone().next())
            .map(|l| l.addr)
    }

    /// Our address on the side of `target` (for Via and Record-Route).
    pub(super) fn local_for(&self, target: &Target, transport: Transport) -> Option<SocketAddr> {
        match *target {
            Target::Udp { local, .. } => Some(local),
            Target::Flow(f) => self.flows.get(&f).map(|(_, l, _)| *l),
            Target::Connect { remote, .. } => self.listener(transport, remote.is_ipv4()),
        }
    }

    /// The loop-detection hash of a request (RFC 3261 16.6 step 8): the fields that
    /// change when a request is retargeted.
    fn loop_hash(&self, req: &Request) -> String {
        let mut m = self.hmac();
        m.update(req.uri.to_string().as_bytes());
        m.update(req.tag_of_from().unwrap_or("").as_bytes());
        m.update(req.tag_of_to().unwrap_or("").as_bytes());
        m.update(req.call_id().unwrap_or("").as_bytes());
        m.update(&req.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes());
        for r in req.headers.values(&HeaderName::Route) {
            m.update(r.as_bytes());
        }
        for r in req.headers.values(&HeaderName::ProxyRequire) {
            m.update(r.as_bytes());
        }
        hex(&m.finalize().into_bytes()[..4])
    }

    /// The MAC of a Record-Route entry of ours (`sw=` after the side's letter): the
    /// dialog's Call-ID and caller tag (the From tag of the request that created it),
    /// the side the entry faces and its user part (the token naming where requests
    /// toward that side go), and the media engine of a relayed dialog. Each field is
    /// length-prefixed, so no two differ only in where one ends.
    fn rr_mac(
        &self,
        call_id: &str,
        caller_tag: &str,
        side: Side,
        user: &str,
        media: Option<usize>,
    ) -> String {
        let mut m = self.hmac();
        m.update(b"record-route/2");
        for field in [call_id.as_bytes(), caller_tag.as_bytes(), user.as_bytes()] {
            m.update(&(field.len() as u64).to_be_bytes());
            m.update(field);
        }
        m.update(&[side.letter() as u8]);
        if let Some(engine) = media {
            m.update(b"media");
            m.update(&(engine as u64).to_be_bytes());
        }
        hex(&m.finalize().into_bytes()[..8])
    }

    /// A Record-Route URI naming us on one side of a dialog.
    pub(super) fn rr_uri(
        &self,
        transport: Transport,
        local: SocketAddr,
        token: RrToken,
        (call_id, caller_tag): (&str, &str),
        side: Side,
        media: Option<usize>,
    ) -> String {
        let host = Host::from(local.ip());
        let user = match token {
            RrToken::Flow(f) => self.tokens.encode(f),
            RrToken::Udp(a) => self.tokens.encode_udp(a),
            RrToken::Connect(t, a, name) => self
                .tokens
                .encode_connect(t, a, name)
                .expect("connect tokens are made for TCP and TLS targets"),
        };
        let tp = transport
            .uri_param()
            .map(|p| format!(";transport={p}"))
            .unwrap_or_default();
        let mac = self.rr_mac(call_id, caller_tag, side, &user, media);
        let mr = media.map(|e| format!(";mr={e}")).unwrap_or_default();
        format!(
            "<sip:{user}@{host}:{}{tp};lr{mr};sw={}{mac}>",
            local.port(),
            side.letter()
        )
    }
}

/// 420 with `Unsupported` when `header` (Require or Proxy-Require) names an option tag
/// we do not support.
fn bad_extension(req: &Request, header: &HeaderName) -> Option<Route> {
    let unsupported: Vec<String> = split_tokens(&req.headers, header)
        .into_iter()
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    (!unsupported.is_empty())
        .then(|| Route::answer(420, vec![(HeaderName::Unsupported, unsupported.join(", "))]))
}

/// Groups bindings by instance (RFC 5626: one branch per instance, its flows most
/// recent first); bindings without an instance are branches of their own.
fn group_by_instance(mut bindings: Vec<Binding>) -> Vec<Vec<Binding>> {
    bindings.sort_by_key(|b| std::cmp::Reverse(b.updated));
    let mut groups: Vec<Vec<Binding>> = Vec::new();
    for b in bindings {
        match b.instance.as_ref().and_then(|i| {
            groups
                .iter_mut()
                .find(|g| g[0].instance.as_ref() == Some(i))
        }) {
            Some(g) => g.push(b),
            None => groups.push(vec![b]),
        }
    }
    groups
}

impl Core {
    /// `relay("gw:NAME")`: the members of set NAME that are up, in the order its
    /// algorithm gives, each with the Request-URI's user at the member's host, port
    /// and parameters; the branch moves on at a 408, a 5xx, a transport error or
    /// silence.
    fn relay_to_gateways(&mut self, req: &mut Request, name: &str) -> Route {
        let Some(set) = self.gateways.find(name) else {
            return Route::Answer {
                status: 500,
                reason: Some("No Such Gateway Set".into()),
                headers: vec![warning(&format!("No Gateway Set {name}"))],
            };
        };
        let hash = self.loop_hash(req);
        if self.looped(req, &hash) {
            return Route::answer(482, vec![]);
        }
        // The user the member gets: a SIP URI's, or a tel: URI's number (as
        // `user=phone`, RFC 3261 19.1.6).
        let (user, secure, phone) = match &req.uri {
            Uri::Sip(u) => (u.user.clone(), u.secure, false),
            Uri::Other(t) if t.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("tel:")) => {
                let number = t[4..].split(';').next().unwrap_or("");
                if number.is_empty() {
                    return Route::answer(416, vec![]);
                }
                (Some(number.to_string()), false, true)
            }
            Uri::Other(_) => return Route::answer(416, vec![]),
        };
        let order = self.gateways.order(set, req);
        let candidates: Vec<Next> = order
            .into_iter()
            .filter_map(|m| {
                let member = self.gateways.set(set).members[m].uri.clone();
                // A sips: request goes over TLS all the way (RFC 3261 26.2.2): only
                // to sips: members.
                if secure && !member.secure {
                    return None;
                }
                let mut ruri = member.clone();
                ruri.user.clone_from(&user);
                if phone && ruri.param("user").is_none() {
                    ruri.params.push(("user".into(), Some("phone".into())));
                }
                self.candidate_for(&Uri::Sip(member), Uri::Sip(ruri), vec![])
                    .ok()
            })
            .collect();
        if candidates.is_empty() {
            return Route::Answer {
                status: 500,
                reason: Some("All Gateways Down".into()),
                headers: vec![warning(&format!("All Gateways Of {name} Down"))],
            };
        }
        Route::Forward(Forwarding {
            branches: vec![candidates],
            loop_hash: hash,
            media: None,
            choice: None,
            failover: Failover::ServerErrors,
        })
    }

    /// Starts probing the gateway sets that have probes (at start-up: every member
    /// up until its probes say otherwise).
    pub fn start_probes(&mut self, now: Instant) {
        for set in 0..self.gateways.len() {
            if self.gateways.set(set).probe_every.is_some() {
                self.timers.arm(now, TimerRef::Probe(set));
            }
        }
    }

    /// An OPTIONS to each member of `set` without a probe in flight; again in
    /// `probe-interval`.
    pub(super) fn probe_set(&mut self, now: Instant, set: usize) {
        let Some(every) = self.gateways.set(set).probe_every else {
            return;
        };
        for m in 0..self.gateways.set(set).members.len() {
            if self.probing.contains(&(set, m)) {
                continue;
            }
            let uri = self.gateways.member_uri(set, m);
            match self.candidate_for(&uri, uri.clone(), vec![]) {
                Ok(Next::At(c)) => self.send_probe(now, set, m, c),
                Ok(Next::Named { hop, .. }) => {
                    self.probing.insert((set, m));
                    self.resolve_probe(set, m, hop);
                }
                Err(_) => self.probe_done(set, m, false),
            }
        }
        self.timers.arm(now + every, TimerRef::Probe(set));
    }

    /// Sends member `m`'s probe to `c` (its address, or the first target its name
    /// resolved to).
    pub(super) fn send_probe(&mut self, now: Instant, set: usize, m: usize, c: Candidate) {
        let Some(local) = self.local_for(&c.target, c.transport) else {
            self.probing.remove(&(set, m));
            return self.probe_done(set, m, false);
        };
        use std::hash::BuildHasher as _;
        let id = self.new_id();
        let tag = self.tag_keys.hash_one(("probe", id));
        let host = Host::from(local.ip());
        let mut headers = crate::sip::headers::Headers::new();
        // Unguessable: a probe's answer decides a member's state, so a forged one must
        // not match (the id is a counter; the MAC is over it under the secret).
        let mut mac = self.hmac();
        mac.update(b"gateway-probe");
        mac.update(&id.to_be_bytes());
        let mac = hex(&mac.finalize().into_bytes()[..8]);
        let branch = format!("{}.probe.{id}.{mac}", self.branch_prefix);
        headers.push(HeaderName::Via, Self::our_via(c.transport, local, &branch));
        headers.push(HeaderName::MaxForwards, "70");
        headers.push(
            HeaderName::From,
            format!("<sip:sipwasm@{host}>;tag={tag:016x}"),
        );
        headers.push(HeaderName::To, format!("<{}>", c.uri));
        headers.push(HeaderName::CallId, format!("probe-{tag:016x}-{id}"));
        headers.push(HeaderName::CSeq, "1 OPTIONS");
        headers.push(HeaderName::ContentLength, "0");
        let req = Request {
            method: Method::Options,
            uri: c.uri.clone(),
            headers,
            body: bytes::Bytes::new(),
        };
        let bytes = bytes::Bytes::from(req.to_bytes());
        let mut ct = self.client_tx(
            now,
            id,
            branch,
            req,
            bytes.clone(),
            c.target,
            c.transport,
            (u64::MAX, 0),
        );
        // A member silent for failover-after is as good as down for calls: the probe
        // fails then, not at Timer F.
        ct.answer_by(now + self.cfg.timers.failover);
        self.clients.insert(id, ct);
        self.probes.insert(id, (set, m));
        self.probing.insert((set, m));
        self.send(c.target, bytes);
        self.arm_client(id);
    }

    /// What a probe's client transaction reported, if `id` is a probe: a final answer
    /// below 500 but 408 is alive; 408, 5xx, a timeout or a transport error is not.
    /// True when `id` was a probe (nothing else is to be done with its event).
    pub(super) fn probe_event(
        &mut self,
        _now: Instant,
        id: u64,
        event: Option<&super::transaction::ClientEvent>,
    ) -> bool {
        let Some(&(set, m)) = self.probes.get(&id) else {
            return false;
        };
        let ok = match event {
            None => return true,
            Some(super::transaction::ClientEvent::Response(r)) if r.status < 200 => return true,
            Some(super::transaction::ClientEvent::Response(r)) => r.status != 408 && r.status < 500,
            Some(super::transaction::ClientEvent::Timeout) => false,
        };
        self.probes.remove(&id);
        self.probing.remove(&(set, m));
        // Given up (no answer in failover-after) or answered: nothing more of it
        // matters, late answers included.
        self.remove_client(id);
        self.probe_done(set, m, ok);
        true
    }

    /// Whether a response to probe `id` came from where the probe went (its address
    /// over UDP, the connection's peer otherwise; the port may differ over UDP).
    pub(super) fn probe_answered_from(&self, id: u64, source: &Source) -> bool {
        let Some(ct) = self.clients.get(id) else {
            return false;
        };
        match ct.target {
            Target::Udp { remote, .. } => {
                source.flow.is_none() && source.remote.ip() == remote.ip()
            }
            Target::Connect {
                transport, remote, ..
            } => source.transport == transport && source.remote.ip() == remote.ip(),
            Target::Flow(f) => source.flow == Some(f),
        }
    }

    /// Counts a probe's outcome; tells the shell when the member changed state.
    pub(super) fn probe_done(&mut self, set: usize, m: usize, ok: bool) {
        self.probing.remove(&(set, m));
        if let Some(change) = self.gateways.probed(set, m, ok) {
            self.events.push_back(super::Event::GatewayState(change));
        }
    }
}
