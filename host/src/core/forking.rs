//! Response contexts of the stateful proxy (RFC 3261 section 16.7): forking a request
//! to its branches, each with its alternatives (RFC 5626 flows), choosing the best
//! response, timer C, CANCEL of the branches still ringing, and stateless forwarding.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use hmac::Mac;

use super::media::{BranchMedia, CtxMedia, Held};
use super::proxy::{Candidate, Failover, Forwarding, Next, Route, RrToken, Side};
use super::resolve::{NamedHop, ResolveOutcome, ResolveRequest};
use super::transaction::{ClientEvent, ClientTx};
use super::{Core, Source, Target};
use crate::hex::hex;
use crate::sip::headers::HeaderName;
use crate::sip::message::{Essentials, Method, Request, Response, reason_phrase};
use crate::sip::typed::Via;
use crate::sip::uri::Host;

/// Most challenges of other branches added to the best 401/407 (a UA answers one per
/// realm it knows; more only grows the answer).
const MAX_AGGREGATED: usize = 16;

/// A branch of a response context.
#[derive(Debug)]
pub(super) struct Branch {
    ct: Option<u64>,
    /// Alternatives when the current one fails at the flow level (RFC 5626 section 7),
    /// or the other targets of a name (RFC 3263).
    rest: VecDeque<Next>,
    /// What moves it on to its next alternative besides a failed flow.
    failover: Failover,
    provisional: bool,
    cancel_pending: bool,
    pub(super) done: bool,
    /// Ended by a timeout rather than a response.
    timed_out: bool,
    response: Option<Response>,
    /// Its media leg, when the call's media goes through an engine.
    pub(super) media: Option<BranchMedia>,
}

impl Branch {
    /// A new attempt (the branch's first, or its next flow): no client transaction yet.
    pub(super) fn clear_attempt(&mut self) {
        self.ct = None;
        self.provisional = false;
        self.cancel_pending = false;
        self.response = None;
    }
}

/// A response context: one server transaction, several client transactions.
#[derive(Debug)]
pub(super) struct ProxyCtx {
    st: u64,
    pub(super) invite: bool,
    /// The request after route processing, before per-branch changes.
    pub(super) template: Request,
    pub(super) source: Source,
    record_route: bool,
    /// Loop-detection hash of the request as it arrived (16.6 step 8).
    loop_hash: String,
    pub(super) branches: Vec<Branch>,
    final_sent: bool,
    pub(super) cancelled: bool,
    /// The call's media engine, if its media is relayed.
    pub(super) media: CtxMedia,
    /// When it started: a non-INVITE request tries no new target once its client
    /// would have given up (64×T1).
    started: Instant,
}

impl Core {
    pub(super) fn start_ctx(
        &mut self,
        now: Instant,
        st: u64,
        source: Source,
        mut req: Request,
        forwarding: Forwarding,
    ) {
        let Forwarding {
            branches,
            loop_hash,
            media,
            choice,
            failover,
        } = forwarding;
        let initial = req.tag_of_to().is_none();
        if let Some(engine) = media
            && req.method == Method::Bye
        {
            self.media_dialog_ended(engine, &req);
        }
        let record_route = initial
            && matches!(
                req.method,
                Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
            );
        // Max-Forwards - 1 (16.6 step 3), once for all branches.
        req.set_max_forwards(req.max_forwards().after_hop());
        let ctx_id = self.new_id();
        let ctx = ProxyCtx {
            st,
            invite: req.method == Method::Invite,
            template: req,
            source,
            record_route,
            loop_hash,
            branches: Vec::new(),
            final_sent: false,
            cancelled: false,
            media: CtxMedia::new(media, choice),
            started: now,
        };
        self.ctxs.insert(ctx_id, ctx);
        if let Some(s) = self.servers.get_mut(st) {
            s.ctx = Some(ctx_id);
        }
        for candidates in branches {
            let mut rest: VecDeque<Next> = candidates.into();
            let first = rest.pop_front().expect("non-empty branch");
            let ctx = self.ctxs.get_mut(&ctx_id).expect("just inserted");
            ctx.branches.push(Branch {
                ct: None,
                rest,
                failover,
                provisional: false,
                cancel_pending: false,
                done: false,
                timed_out: false,
                response: None,
                media: None,
            });
            let idx = ctx.branches.len() - 1;
            self.start_branch(now, ctx_id, idx, first);
        }
    }

    pub(super) fn start_branch(&mut self, now: Instant, ctx_id: u64, idx: usize, next: Next) {
        let c = match next {
            Next::At(c) => c,
            Next::Named { uri, hop, path } => {
                return self.resolve_branch(ctx_id, idx, uri, hop, path);
            }
        };
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        let mut req = ctx.template.clone();
        let source = ctx.source;
        let record_route = ctx.record_route;
        let loop_hash = ctx.loop_hash.clone();
        req.uri = c.uri.clone();
        let Some(local) = self.local_for(&c.target, c.transport) else {
            self.on_branch_failed(now, ctx_id, idx, false);
            return;
        };
        // Whether its media goes through an engine, and which.
        let Ok(engine) = self.branch_engine(ctx_id, &source, &c) else {
            let call_id = req.call_id().unwrap_or("").to_string();
            self.events.push_back(super::Event::MediaFailed {
                call_id,
                command: "offer",
                why: "no media engine is up".into(),
            });
            return self.on_branch_failed_because(
                now,
                ctx_id,
                idx,
                500,
                Some("Media Relay Unavailable"),
            );
        };
        if record_route {
            // Two entries, one per side (16.6 step 4, RFC 5658): the top one faces the
            // callee, the other the caller. Each names where requests toward its side
            // go, as a token: the connection, or the UDP address the caller sends from
            // (a phone behind NAT is reached there, not at a private Contact, RFC 5626
            // 5.2, as `nathelper` does) or the callee was reached at. And each is
            // signed for this dialog's Call-ID and caller tag and for its side, so
            // that a captured entry routes nothing else (see `decide`).
            let out_token = match c.target {
                Target::Flow(f) => RrToken::Flow(f),
                Target::Udp { remote, .. } => RrToken::Udp(remote),
                Target::Connect {
                    transport,
                    remote,
                    name,
                } => RrToken::Connect(transport, remote, name),
            };
            let in_token = match source.flow {
                Some(f) => RrToken::Flow(f),
                None => RrToken::Udp(source.remote),
            };
            let call_id = req.call_id().unwrap_or("").to_string();
            let caller_tag = req.tag_of_from().unwrap_or("").to_string();
            let dialog = (call_id.as_str(), caller_tag.as_str());
            let out_rr = self.rr_uri(c.transport, local, out_token, dialog, Side::Callee, engine);
            let in_rr = self.rr_uri(
                source.transport,
                source.local,
                in_token,
                dialog,
                Side::Caller,
                engine,
            );
            req.headers.push_front(HeaderName::RecordRoute, in_rr);
            req.headers.push_front(HeaderName::RecordRoute, out_rr);
        }
        for p in c.path.iter().rev() {
            req.headers.push_front(HeaderName::Route, p.clone());
        }
        let branch = format!("{}.{loop_hash}.{}", self.branch_prefix, self.next_id + 1);
        req.headers
            .push_front(HeaderName::Via, Self::our_via(c.transport, local, &branch));
        let id = self.new_id();
        if let Some(engine) = engine
            && let Some(command) =
                self.branch_media_begin(ctx_id, idx, engine, &branch, &req, c.transport)
        {
            let held = Held {
                engine,
                c,
                ct: id,
                branch,
                req,
            };
            return self.hold_branch(ctx_id, idx, engine, command, held);
        }
        self.send_branch(now, ctx_id, idx, c, id, branch, req);
    }

    /// Sends branch `idx`'s request (built, its SDP rewritten if relayed) in client
    /// transaction `id`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the branch's request and its parts"
    )]
    pub(super) fn send_branch(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        c: Candidate,
        id: u64,
        branch: String,
        req: Request,
    ) {
        let bytes = Bytes::from(req.to_bytes());
        let failover = self.cfg.timers.failover;
        let mut ct = self.client_tx(
            now,
            id,
            branch,
            req,
            bytes.clone(),
            c.target,
            c.transport,
            (ctx_id, idx),
        );
        if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
            // A new candidate (the next flow of an instance) starts afresh.
            let b = &mut ctx.branches[idx];
            b.clear_attempt();
            b.ct = Some(id);
            // Another target of the name waits: this one has `failover-after` to
            // answer at all.
            if b.failover != Failover::Flows && !b.rest.is_empty() {
                ct.answer_by(now + failover);
            }
        }
        self.clients.insert(id, ct);
        self.send(c.target, bytes);
        self.arm_client(id);
    }

    /// A client transaction of a branch reports.
    pub(super) fn on_branch_event(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        event: ClientEvent,
    ) {
        // A relayed branch's SDP goes to the engine first; what follows it waits.
        if let Some(event) = self.media_gate(ctx_id, idx, event) {
            self.on_branch_event_now(now, ctx_id, idx, event);
        }
    }

    /// [`Core::on_branch_event`], its SDP rewritten.
    pub(super) fn on_branch_event_now(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        event: ClientEvent,
    ) {
        let resp = match event {
            ClientEvent::Timeout => return self.on_branch_failed_with(now, ctx_id, idx, 408),
            ClientEvent::Response(r) => r,
        };
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        let status = resp.status;
        match status {
            100..=199 => {
                // Any provisional, 100 included, allows a CANCEL (RFC 3261 9.1).
                let b = &mut ctx.branches[idx];
                b.provisional = true;
                let cancel = b.cancel_pending;
                b.cancel_pending = false;
                let forward = !ctx.final_sent;
                if cancel {
                    self.send_cancel(now, ctx_id, idx);
                }
                // 100 is hop by hop; other provisionals go up.
                if forward && status > 100 {
                    self.forward_response(now, ctx_id, resp);
                }
            }
            200..=299 => {
                ctx.branches[idx].done = true;
                ctx.final_sent = true;
                let invite = ctx.invite;
                self.forward_response(now, ctx_id, resp);
                if invite {
                    self.cancel_ctx(now, ctx_id);
                }
            }
            _ => {
                // A flow that failed: try the next flow of that instance (RFC 5626 7);
                // a target of a name that is unavailable: the next target (RFC 3263
                // 4.3).
                let b = &ctx.branches[idx];
                let moves_on = match b.failover {
                    Failover::Flows => status == 430,
                    Failover::Unavailable => matches!(status, 430 | 503),
                    Failover::ServerErrors => {
                        status == 430 || status == 408 || (500..600).contains(&status)
                    }
                };
                if moves_on && !b.rest.is_empty() && !ctx.cancelled {
                    let next = ctx.branches[idx].rest.pop_front().expect("non-empty");
                    return self.start_branch(now, ctx_id, idx, next);
                }
                let b = &mut ctx.branches[idx];
                b.done = true;
                b.response = Some(resp);
                if status >= 600 && ctx.invite {
                    self.cancel_ctx(now, ctx_id);
                }
                self.maybe_finish(now, ctx_id);
                self.media_branch_failed(ctx_id, idx);
            }
        }
    }

    /// A branch could not be reached (flow gone, connection refused, no route).
    pub(super) fn on_branch_failed(&mut self, now: Instant, ctx_id: u64, idx: usize, flow: bool) {
        // A target of a name is no flow of anyone's: unreachable is 503 there (RFC
        // 3261 16.9), which moves on to the next target, or ends as 500.
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        let named = ctx.branches[idx].failover != Failover::Flows;
        // A registered user's binding that cannot be reached, on a flow or through
        // the node of the cluster holding it (its connection refused): that flow
        // failed (RFC 5626 section 7), and the user is unavailable (480) when it
        // was the last.
        let user = self.is_local_uri(&ctx.template.uri);
        let status = if (flow || user) && !named { 430 } else { 503 };
        self.on_branch_failed_with(now, ctx_id, idx, status);
    }

    fn on_branch_failed_with(&mut self, now: Instant, ctx_id: u64, idx: usize, status: u16) {
        self.on_branch_failed_because(now, ctx_id, idx, status, None);
    }

    /// A branch ended without a response of its own: a synthetic `status` stands for
    /// it, with `why` as its reason phrase and Warning when given.
    pub(super) fn on_branch_failed_because(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        status: u16,
        why: Option<&str>,
    ) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        if ctx.branches[idx].done {
            return;
        }
        // A non-INVITE request's client gives up after 64×T1 (Timer F): no target is
        // tried after that.
        let in_time = ctx.invite || now < ctx.started + 64 * self.cfg.timers.t1;
        if (status != 408 || ctx.branches[idx].failover != Failover::Flows)
            && !ctx.cancelled
            && in_time
            && let Some(next) = ctx.branches[idx].rest.pop_front()
        {
            return self.start_branch(now, ctx_id, idx, next);
        }
        let st = ctx.st;
        // A cancelled INVITE whose branch never answered ends as cancelled.
        let status = if ctx.cancelled && ctx.invite && status == 408 {
            487
        } else {
            status
        };
        let b = &mut ctx.branches[idx];
        b.done = true;
        b.timed_out = status == 408;
        // Whatever client transaction the branch still has is of no use now.
        if let Some(ct) = b.ct.take() {
            self.remove_client(ct);
        }
        // A synthetic response, built from the request we could not deliver.
        let req = self.servers.get(st).map(|s| s.request.clone());
        if let Some(req) = req {
            let warning = why.map(|w| (HeaderName::Warning, format!("399 sipwasm \"{w}\"")));
            let mut resp = self.make_response(&req, status, warning.as_slice());
            if let Some(why) = why {
                resp.reason = why.to_string();
            }
            // It answers our branch: give it our Via on top so forwarding strips it.
            resp.headers
                .push_front(HeaderName::Via, "SIP/2.0/UDP synthetic.invalid");
            if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
                ctx.branches[idx].response = Some(resp);
            }
        }
        self.maybe_finish(now, ctx_id);
        self.media_branch_failed(ctx_id, idx);
    }

    pub(super) fn on_timer_c(&mut self, now: Instant, ctx_id: u64, idx: usize) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        let b = &mut ctx.branches[idx];
        if b.done {
            return;
        }
        if b.provisional {
            // 16.8: CANCEL the branch; its 487 (or nothing) ends it.
            self.send_cancel(now, ctx_id, idx);
        } else {
            self.on_branch_failed_with(now, ctx_id, idx, 408);
        }
    }

    /// All branches done and nothing final sent yet: send the best response (16.7 step 6).
    fn maybe_finish(&mut self, now: Instant, ctx_id: u64) {
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        if ctx.final_sent || !ctx.branches.iter().all(|b| b.done) {
            return;
        }
        if !ctx.invite && ctx.branches.iter().all(|b| b.timed_out) {
            // RFC 4320 4.2: no 408 to a non-INVITE request; the client has timed out
            // by now anyway. The transaction just ends.
            let st = ctx.st;
            self.remove_server(st);
            return;
        }
        let responses: Vec<&Response> = ctx
            .branches
            .iter()
            .filter_map(|b| b.response.as_ref())
            .collect();
        let best = responses
            .iter()
            .find(|r| r.status >= 600)
            .or_else(|| {
                responses
                    .iter()
                    // A timeout or a failed flow says least about the callee.
                    .min_by_key(|r| (r.status / 100, matches!(r.status, 408 | 430), r.status))
            })
            .map(|r| (*r).clone());
        let Some(mut best) = best else {
            return;
        };
        if best.status == 401 || best.status == 407 {
            // Aggregate the challenges of the other branches (16.7 step 7), up to
            // MAX_AGGREGATED of them: each callee's own are relayed whole, but the
            // answer does not grow with the number of branches times what each sent.
            let mut added = 0;
            'responses: for r in &responses {
                if std::ptr::eq(*r, &best) {
                    continue;
                }
                for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                    for v in r.headers.get_all(&name) {
                        if added == MAX_AGGREGATED {
                            break 'responses;
                        }
                        if !best.headers.get_all(&name).any(|x| x == v) {
                            best.headers.push(name.clone(), v);
                            added += 1;
                        }
                    }
                }
            }
        }
        if best.status == 503 {
            best.status = 500;
            best.reason = "Server Internal Error".into();
        }
        // A failed flow of a registered user is ours to handle, not the caller's (RFC
        // 5626 11.5: endpoints do not see 430): the user is unavailable. A flow token
        // in a dialog's route set keeps its 430.
        if best.status == 430 && self.is_local_uri(&ctx.template.uri) {
            best.status = 480;
            best.reason = reason_phrase(480).into();
        }
        if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
            ctx.final_sent = true;
        }
        if best.status >= 300 {
            self.media_call_failed(ctx_id);
        }
        self.forward_response(now, ctx_id, best);
    }

    /// Sends a branch's response upstream: our Via off, through the server transaction.
    fn forward_response(&mut self, now: Instant, ctx_id: u64, mut resp: Response) {
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        let st = ctx.st;
        resp.headers.remove_first_value(&HeaderName::Via);
        self.respond(st, resp, now);
    }

    /// CANCELs every pending branch (after a CANCEL, a 2xx or a 6xx).
    pub(super) fn cancel_ctx(&mut self, now: Instant, ctx_id: u64) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        if !ctx.invite {
            return;
        }
        ctx.cancelled = true;
        let mut to_cancel = Vec::new();
        for (i, b) in ctx.branches.iter_mut().enumerate() {
            if b.done {
                continue;
            }
            if b.provisional {
                to_cancel.push(i);
            } else {
                // 16.10: no CANCEL before a provisional response; send it when one comes.
                b.cancel_pending = true;
            }
        }
        for i in to_cancel {
            self.send_cancel(now, ctx_id, i);
        }
    }

    /// CANCEL for branch `idx` (9.1): same R-URI, top Via, Call-ID, From, To, Route and
    /// CSeq number as the INVITE it cancels.
    fn send_cancel(&mut self, now: Instant, ctx_id: u64, idx: usize) {
        let Some(ct_id) = self.ctxs.get(&ctx_id).and_then(|c| c.branches[idx].ct) else {
            return;
        };
        self.cancel_client(now, ctx_id, idx, ct_id);
    }

    /// Whether client transaction `id` is branch `idx`'s attempt now, not one given up
    /// for the next target.
    pub(super) fn is_current(&self, ctx_id: u64, idx: usize, id: u64) -> bool {
        self.ctxs
            .get(&ctx_id)
            .and_then(|c| c.branches.get(idx))
            .is_some_and(|b| b.ct == Some(id))
    }

    /// An attempt given up for the next target (silent for `sip.failover-after`)
    /// answers after all: a provisional gets its INVITE cancelled (it rings no more),
    /// a 2xx goes up as every 2xx does (RFC 3261 16.7 step 5: the caller's UA ends
    /// the extra dialog); anything else ends there (the transaction ACKs a final
    /// failure itself).
    pub(super) fn on_abandoned_event(
        &mut self,
        now: Instant,
        ctx_id: u64,
        ct_id: u64,
        event: ClientEvent,
    ) {
        let ClientEvent::Response(resp) = event else {
            return;
        };
        let Some(idx) = self.clients.get(ct_id).map(|c| c.owner.1) else {
            return;
        };
        match resp.status {
            100..=199 => self.cancel_client(now, ctx_id, idx, ct_id),
            200..=299 => {
                let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
                    return;
                };
                ctx.final_sent = true;
                let invite = ctx.invite;
                self.forward_response(now, ctx_id, resp);
                // The call is answered: the target tried after it is cancelled.
                if invite {
                    self.cancel_ctx(now, ctx_id);
                }
            }
            _ => {}
        }
    }

    /// CANCEL for client transaction `ct_id` of branch `idx`.
    fn cancel_client(&mut self, now: Instant, ctx_id: u64, idx: usize, ct_id: u64) {
        let Some(ct) = self.clients.get(ct_id) else {
            return;
        };
        let invite = &ct.request;
        let mut headers = crate::sip::headers::Headers::new();
        if let Some(v) = invite.headers.values(&HeaderName::Via).next() {
            headers.push(HeaderName::Via, v);
        }
        for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            if let Some(v) = invite.headers.get(&name) {
                headers.push(name, v);
            }
        }
        let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push(HeaderName::CSeq, format!("{seq} CANCEL"));
        for r in invite.headers.get_all(&HeaderName::Route) {
            headers.push(HeaderName::Route, r);
        }
        headers.push(HeaderName::MaxForwards, "70");
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            headers,
            body: Bytes::new(),
        };
        let (branch, target, reliable) = (ct.branch.clone(), ct.target, ct.reliable);
        if self
            .clients
            .find(&(branch.clone(), Method::Cancel))
            .is_some()
        {
            return;
        }
        let bytes = Bytes::from(cancel.to_bytes());
        let id = self.new_id();
        let t = self.cfg.timers;
        let cct = ClientTx::new(
            id,
            branch,
            cancel,
            bytes.clone(),
            target,
            reliable,
            (ctx_id, idx),
            now,
            &t,
        );
        self.clients.insert(id, cct);
        self.cancels.insert(id);
        self.send(target, bytes);
        self.arm_client(id);
        // Without a final answer 64*T1 after the CANCEL, the INVITE is given up
        // (RFC 3261 9.1): the branch then ends as cancelled.
        if let Some(inv) = self.clients.get_mut(ct_id) {
            inv.give_up_at(now + 64 * t.t1);
        }
        self.arm_client(ct_id);
    }

    /// Forwards a request without a transaction (an ACK for a 2xx).
    pub(super) fn forward_stateless(&mut self, now: Instant, source: Source, mut req: Request) {
        let route = self.decide(now, &source, &mut req);
        let Route::Forward(Forwarding {
            branches, media, ..
        }) = route
        else {
            return;
        };
        let Some(next) = branches
            .into_iter()
            .next()
            .and_then(|b| b.into_iter().next())
        else {
            return;
        };
        match next {
            Next::At(c) => self.send_stateless(c, req, media),
            Next::Named { uri, hop, path } => {
                // ACKs waiting for a name hold no transaction: bounded apart. One
                // dropped here comes again with the 2xx its UAS retransmits.
                if self.acks_resolving >= MAX_ACKS_RESOLVING {
                    return;
                }
                self.acks_resolving += 1;
                let id = self.new_id();
                self.resolves.push_back(ResolveRequest {
                    id,
                    hop: hop.clone(),
                });
                self.resolving.insert(
                    id,
                    Awaiting::Ack {
                        req: Box::new(req),
                        uri,
                        path,
                        media,
                    },
                );
            }
        }
    }

    /// Sends a request forwarded without a transaction to `c`.
    fn send_stateless(&mut self, c: Candidate, mut req: Request, media: Option<usize>) {
        let Some(local) = self.local_for(&c.target, c.transport) else {
            return;
        };
        req.uri = c.uri.clone();
        req.set_max_forwards(req.max_forwards().after_hop());
        // A stable branch for retransmissions of the same ACK.
        let incoming = req
            .headers
            .values(&HeaderName::Via)
            .next()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let mut m = self.hmac();
        m.update(incoming.as_bytes());
        let hex = hex(&m.finalize().into_bytes()[..8]);
        let via = format!(
            "SIP/2.0/{} {}:{};branch={}.ack.{hex}",
            c.transport.via_token(),
            Host::from(local.ip()),
            local.port(),
            self.branch_prefix
        );
        for p in c.path.iter().rev() {
            req.headers.push_front(HeaderName::Route, p.clone());
        }
        req.headers.push_front(HeaderName::Via, via);
        if let Some(engine) = media {
            match self.media_ack(engine, c.target, c.transport, req) {
                Some(r) => req = r,
                None => return,
            }
        }
        self.send(c.target, Bytes::from(req.to_bytes()));
    }
}

/// Most ACKs (for 2xx, forwarded without a transaction) waiting for a name at once.
pub(super) const MAX_ACKS_RESOLVING: usize = 1024;

/// What waits for a name to be resolved ([`Core::resolving`]).
#[derive(Debug)]
pub(super) enum Awaiting {
    /// A branch of a response context.
    Branch {
        ctx: u64,
        idx: usize,
        /// Its Request-URI and Path, for each target.
        uri: crate::sip::uri::Uri,
        path: Vec<String>,
    },
    /// A gateway member's probe.
    Probe { set: usize, member: usize },
    /// An ACK for a 2xx forwarded without a transaction.
    Ack {
        req: Box<Request>,
        uri: crate::sip::uri::Uri,
        path: Vec<String>,
        media: Option<usize>,
    },
}

impl Core {
    /// The next name to resolve, if any.
    pub fn poll_resolve(&mut self) -> Option<ResolveRequest> {
        self.resolves.pop_front()
    }

    /// Member `member` of gateway set `set` waits for its name before its probe.
    pub(super) fn resolve_probe(&mut self, set: usize, member: usize, hop: NamedHop) {
        let id = self.new_id();
        self.resolves.push_back(ResolveRequest { id, hop });
        self.resolving.insert(id, Awaiting::Probe { set, member });
    }

    /// Branch `idx` waits for `hop` to be resolved.
    fn resolve_branch(
        &mut self,
        ctx_id: u64,
        idx: usize,
        uri: crate::sip::uri::Uri,
        hop: NamedHop,
        path: Vec<String>,
    ) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        ctx.branches[idx].clear_attempt();
        let id = self.new_id();
        self.resolves.push_back(ResolveRequest { id, hop });
        self.resolving.insert(
            id,
            Awaiting::Branch {
                ctx: ctx_id,
                idx,
                uri,
                path,
            },
        );
    }

    /// The shell resolved a name: the branch waiting on it tries its targets in
    /// order, the first now, the others when one fails (RFC 3263 4.3).
    pub(super) fn on_resolved(&mut self, now: Instant, id: u64, outcome: ResolveOutcome) {
        let Some(waiting) = self.resolving.remove(&id) else {
            return;
        };
        let targets = match outcome {
            ResolveOutcome::Targets(t) => t,
            ResolveOutcome::Failed(_) => Vec::new(),
        };
        match waiting {
            Awaiting::Probe { set, member } => {
                let first = targets.iter().find_map(|t| {
                    self.candidate_at(
                        self.gateways.member_uri(set, member),
                        t.transport,
                        t.addr,
                        t.name,
                        vec![],
                    )
                });
                match first {
                    Some(c) => self.send_probe(now, set, member, c),
                    None => self.probe_done(set, member, false),
                }
            }
            Awaiting::Ack {
                req,
                uri,
                path,
                media,
            } => {
                self.acks_resolving -= 1;
                let first = targets.iter().find_map(|t| {
                    self.candidate_at(uri.clone(), t.transport, t.addr, t.name, path.clone())
                });
                if let Some(c) = first {
                    self.send_stateless(c, *req, media);
                }
            }
            Awaiting::Branch {
                ctx: ctx_id,
                idx,
                uri,
                path,
            } => {
                let Some(ctx) = self.ctxs.get(&ctx_id) else {
                    return;
                };
                if ctx.branches[idx].done {
                    return;
                }
                if ctx.cancelled {
                    // Cancelled while resolving: ends as cancelled (487 for INVITE).
                    return self.on_branch_failed_because(now, ctx_id, idx, 408, None);
                }
                let resolved = !targets.is_empty();
                let mut candidates: VecDeque<Next> = targets
                    .iter()
                    .filter_map(|t| {
                        self.candidate_at(uri.clone(), t.transport, t.addr, t.name, path.clone())
                    })
                    .map(Next::At)
                    .collect();
                let Some(first) = candidates.pop_front() else {
                    let why = if resolved {
                        "No Listener For The Target's Transport"
                    } else {
                        "Unresolvable Destination"
                    };
                    return self.on_branch_failed_because(now, ctx_id, idx, 500, Some(why));
                };
                let ctx = self.ctxs.get_mut(&ctx_id).expect("checked above");
                let b = &mut ctx.branches[idx];
                b.failover = b.failover.max(Failover::Unavailable);
                while let Some(c) = candidates.pop_back() {
                    b.rest.push_front(c);
                }
                self.start_branch(now, ctx_id, idx, first);
            }
        }
    }
}
