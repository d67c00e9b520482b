//! The media relay in the proxy, as Kamailio's `rtpengine_manage` does it: an SDP
//! offer in a request (INVITE, UPDATE) or, for a late offer, in a response goes to the
//! call's engine as `offer`; the SDP that answers it as `answer`; a BYE, a final failure
//! of a new call, a branch that lost, timer C and transaction timeouts end the media
//! with `delete`. The message waits for the engine's SDP (its branch's later responses
//! queue behind it, in order); the engine is asked through the driver
//! ([`Core::poll_media`], [`super::Input::Media`]).
//!
//! Which calls: by `media.mode` and the transports of the two sides, decided when a
//! new call's branch starts; the engine is chosen then ([`pick_engine`]) and named in
//! our Record-Route entries (`mr=`, under their signature), so requests inside the
//! dialog go to the same engine without any state here. Each branch of a forked call
//! is its own media leg (`via-branch`: our Via's branch), so a branch that loses is
//! deleted alone.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use super::proxy::{Candidate, Next};
use super::transaction::ClientEvent;
use super::{Core, Event, Source, Target, Transport};
use crate::media::ng::{Command, Flags, Leg};
use crate::media::{Choice, MediaOutcome, MediaRequest, Settings, has_sdp, pick_engine};
use crate::sip::message::{Essentials, Method, Request};

/// The core's media state: the settings, the engines up, what is asked and what waits.
#[derive(Debug, Default)]
pub(super) struct MediaCore {
    settings: Settings,
    /// Each engine's weight, 0 while it is down ([`Core::set_media_engines`]).
    up: Vec<u32>,
    requests: VecDeque<MediaRequest>,
    waits: HashMap<u64, Wait>,
}

/// What waits for a media request's outcome.
#[derive(Debug)]
enum Wait {
    /// A branch's request, built and held until its SDP is rewritten.
    Request {
        ctx: u64,
        idx: usize,
        held: Box<Held>,
    },
    /// The response at the front of a branch's queue.
    Response { ctx: u64, idx: usize },
    /// An ACK with the answer to a late offer, ready to go to `target`.
    Ack { target: Target, req: Box<Request> },
}

/// A branch's request held for its SDP: the rest of [`Core::send_branch`]'s arguments.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) engine: usize,
    pub(super) c: Candidate,
    pub(super) ct: u64,
    pub(super) branch: String,
    pub(super) req: Request,
}

/// A proxy context's media: the dialog's engine (from our Record-Route entries), or
/// the one chosen for a new call, and the engines that failed it.
#[derive(Debug, Default)]
pub(super) struct CtxMedia {
    /// Inside a relayed dialog: its engine.
    pub(super) dialog: Option<usize>,
    /// A new call's engine, once chosen.
    engine: Option<usize>,
    /// Engines that did not answer this call's first offer.
    tried: Vec<usize>,
    /// An engine has this call (an offer or answer succeeded): no moving it any more.
    committed: bool,
    /// The routing plugin's choice for a new call.
    choice: Option<Box<Choice>>,
}

impl CtxMedia {
    pub(super) fn new(dialog: Option<usize>, choice: Option<Box<Choice>>) -> Self {
        Self {
            dialog,
            choice,
            ..Self::default()
        }
    }

    /// The flags for SDP going to a WebSocket side (`web`) or not: the configured ones
    /// and the plugin's.
    fn flags(&self, settings: &Settings, web: bool) -> Flags {
        let mut flags = settings.toward(web).clone();
        if let Some(c) = &self.choice {
            for f in c.extra(web) {
                if !flags.flags.contains(f) {
                    flags.flags.push(f.clone());
                }
            }
        }
        flags
    }
}

/// A relayed branch's media.
#[derive(Debug)]
pub(super) struct BranchMedia {
    engine: usize,
    /// The `via-branch` of a new call's leg (our Via's branch); none in a dialog.
    via_branch: Option<String>,
    /// The Call-ID and the tag of the party that sent the request.
    call_id: String,
    from_tag: String,
    /// The engine holds a leg for this branch (delete it if the branch loses).
    offered: bool,
    /// The request carried an SDP offer (a response's SDP then answers it; without one,
    /// a response's SDP is a late offer).
    request_had_sdp: bool,
    /// Whether SDP toward the request's side goes to a WebSocket (the response's side
    /// is the context's source).
    from_web: bool,
    /// A response waits for the engine; the branch's events queue behind it.
    busy: bool,
    held: VecDeque<ClientEvent>,
    /// The last response SDP rewritten and what it became (2xx retransmissions).
    last: Option<(Bytes, Bytes)>,
}

fn is_web(t: Transport) -> bool {
    matches!(t, Transport::Ws | Transport::Wss)
}

impl MediaCore {
    pub(super) fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }
}

impl Core {
    /// The engines' weights, 0 for those down: new calls are shared among the others.
    pub fn set_media_engines(&mut self, weights: Vec<u32>) {
        self.media.up = weights;
    }

    /// The next request for a media engine, if any.
    pub fn poll_media(&mut self) -> Option<MediaRequest> {
        self.media.requests.pop_front()
    }

    /// Media requests waiting for their outcome.
    pub(super) fn media_waiting(&self) -> usize {
        self.media.waits.len()
    }

    fn ask_media(&mut self, engine: usize, command: Command, wait: Option<Wait>) {
        let id = match wait {
            Some(w) => {
                let id = self.new_id();
                self.media.waits.insert(id, w);
                id
            }
            None => 0,
        };
        self.media.requests.push_back(MediaRequest {
            id,
            engine,
            command,
        });
    }

    fn media_failed(&mut self, call_id: &str, command: &'static str, why: &str) {
        self.events.push_back(Event::MediaFailed {
            call_id: call_id.to_string(),
            command,
            why: why.to_string(),
        });
    }

    /// The engine the media of branch candidate `c` of context `ctx_id` goes through:
    /// the dialog's, or for a new call that the mode relays, the call's (chosen now if
    /// it is the first branch). `Err` when a new call should be relayed and no engine is
    /// up.
    pub(super) fn branch_engine(
        &mut self,
        ctx_id: u64,
        source: &Source,
        c: &Candidate,
    ) -> Result<Option<usize>, ()> {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return Ok(None);
        };
        if let Some(e) = ctx.media.dialog {
            return Ok(Some(e));
        }
        let new_call = ctx.invite && ctx.template.tag_of_to().is_none();
        let relays = match ctx.media.choice.as_ref().and_then(|c| c.relay) {
            Some(chosen) => chosen,
            None => self
                .media
                .settings
                .mode
                .relays(is_web(source.transport), is_web(c.transport)),
        };
        if !new_call || !relays {
            return Ok(None);
        }
        if let Some(e) = ctx.media.engine {
            return Ok(Some(e));
        }
        let call_id = ctx.template.call_id().unwrap_or("");
        match pick_engine(call_id, &self.media.up, &ctx.media.tried) {
            Some(e) => {
                ctx.media.engine = Some(e);
                Ok(Some(e))
            }
            None => Err(()),
        }
    }

    /// Sets up branch `idx`'s media on `engine` for `req` (built, about to be sent
    /// toward `to`); the command to ask first when the request carries SDP for it.
    pub(super) fn branch_media_begin(
        &mut self,
        ctx_id: u64,
        idx: usize,
        engine: usize,
        branch: &str,
        req: &Request,
        to: Transport,
    ) -> Option<Command> {
        let ctx = self.ctxs.get_mut(&ctx_id)?;
        let in_dialog = ctx.media.dialog.is_some();
        let from_web = is_web(ctx.source.transport);
        let call_id = req.call_id().unwrap_or("").to_string();
        let from_tag = req.tag_of_from().unwrap_or("").to_string();
        let to_tag = req.tag_of_to().map(str::to_string);
        let sdp = has_sdp(&req.headers, &req.body);
        let b = &mut ctx.branches[idx];
        // A branch that moves to its next flow (430) leaves its old leg behind.
        let old = b.media.take().filter(|m| m.offered);
        b.media = Some(BranchMedia {
            engine,
            via_branch: (!in_dialog).then(|| branch.to_string()),
            call_id: call_id.clone(),
            from_tag: from_tag.clone(),
            offered: false,
            request_had_sdp: sdp,
            from_web,
            busy: false,
            held: VecDeque::new(),
            last: None,
        });
        if let Some(old) = old {
            self.delete_leg(&old);
        }
        if !sdp {
            return None;
        }
        let flags = self
            .ctxs
            .get(&ctx_id)?
            .media
            .flags(&self.media.settings, is_web(to));
        match req.method {
            Method::Invite | Method::Update => Some(Command::Offer {
                leg: Leg {
                    call_id,
                    from_tag,
                    to_tag,
                    via_branch: (!in_dialog).then(|| branch.to_string()),
                },
                sdp: req.body.to_vec(),
                flags,
            }),
            // The answer to an offer in a reliable provisional response: the
            // offerer is the side the request goes to.
            Method::Prack => Some(Command::Answer {
                leg: Leg {
                    call_id,
                    from_tag: to_tag.unwrap_or_default(),
                    to_tag: Some(from_tag),
                    via_branch: None,
                },
                sdp: req.body.to_vec(),
                flags,
            }),
            _ => None,
        }
    }

    /// Holds a branch's request until its SDP comes back from `engine`.
    pub(super) fn hold_branch(
        &mut self,
        ctx_id: u64,
        idx: usize,
        engine: usize,
        command: Command,
        held: Held,
    ) {
        if let Some(b) = self
            .ctxs
            .get_mut(&ctx_id)
            .and_then(|c| c.branches.get_mut(idx))
        {
            b.clear_attempt();
        }
        self.ask_media(
            engine,
            command,
            Some(Wait::Request {
                ctx: ctx_id,
                idx,
                held: Box::new(held),
            }),
        );
    }

    /// A branch's response or timeout, on its way to [`Core::on_branch_event`]'s work:
    /// `None` when it waits (for the engine, or behind a response that does).
    pub(super) fn media_gate(
        &mut self,
        ctx_id: u64,
        idx: usize,
        event: ClientEvent,
    ) -> Option<ClientEvent> {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return Some(event);
        };
        let in_dialog = ctx.media.dialog.is_some();
        let Some(m) = ctx.branches.get_mut(idx).and_then(|b| b.media.as_mut()) else {
            return Some(event);
        };
        if m.busy {
            m.held.push_back(event);
            return None;
        }
        let ClientEvent::Response(resp) = &event else {
            return Some(event);
        };
        let method = resp.cseq().map(|c| c.method).ok();
        if !(101..300).contains(&resp.status)
            || !matches!(method, Some(Method::Invite | Method::Update))
            || !has_sdp(&resp.headers, &resp.body)
        {
            return Some(event);
        }
        if let Some((was, became)) = &m.last
            && *was == resp.body
        {
            // A retransmitted 2xx, or the same SDP again: the same rewrite.
            let became = became.clone();
            let ClientEvent::Response(mut resp) = event else {
                unreachable!("matched above")
            };
            resp.body = became;
            return Some(ClientEvent::Response(resp));
        }
        let to_tag = resp.tag_of_to().unwrap_or("").to_string();
        let flags = ctx.media.flags(&self.media.settings, m.from_web);
        let leg = |from_tag: String, to_tag: String| Leg {
            call_id: m.call_id.clone(),
            from_tag,
            to_tag: Some(to_tag),
            via_branch: if in_dialog {
                None
            } else {
                m.via_branch.clone()
            },
        };
        let sdp = resp.body.to_vec();
        let command = if m.request_had_sdp {
            Command::Answer {
                leg: leg(m.from_tag.clone(), to_tag),
                sdp,
                flags,
            }
        } else {
            // A late offer: the answerer of the request offers.
            Command::Offer {
                leg: leg(to_tag, m.from_tag.clone()),
                sdp,
                flags,
            }
        };
        m.busy = true;
        m.held.push_front(event);
        let engine = m.engine;
        self.ask_media(engine, command, Some(Wait::Response { ctx: ctx_id, idx }));
        None
    }

    /// The engine's outcome for media request `id`.
    pub(super) fn on_media(&mut self, now: Instant, id: u64, outcome: MediaOutcome) {
        let Some(wait) = self.media.waits.remove(&id) else {
            return;
        };
        match wait {
            Wait::Request { ctx, idx, held } => {
                self.branch_request_done(now, ctx, idx, *held, outcome)
            }
            Wait::Response { ctx, idx } => self.branch_response_done(now, ctx, idx, outcome),
            Wait::Ack { target, req } => {
                let mut req = *req;
                match outcome {
                    MediaOutcome::Sdp(sdp) => req.body = Bytes::from(sdp),
                    MediaOutcome::Unavailable(why) | MediaOutcome::Refused(why) => {
                        let call_id = req.call_id().unwrap_or("").to_string();
                        self.media_failed(&call_id, "answer", &why);
                    }
                }
                self.send(target, Bytes::from(req.to_bytes()));
            }
        }
    }

    fn branch_request_done(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        held: Held,
        outcome: MediaOutcome,
    ) {
        let Held {
            engine,
            c,
            ct,
            branch,
            mut req,
        } = held;
        let command = match req.method {
            Method::Prack => "answer",
            _ => "offer",
        };
        let call_id = req.call_id().unwrap_or("").to_string();
        let live = self
            .ctxs
            .get(&ctx_id)
            .and_then(|ctx| ctx.branches.get(idx))
            .is_some_and(|b| !b.done);
        if !live {
            // The call ended meanwhile: the leg the engine made is of no use.
            if let MediaOutcome::Sdp(_) = outcome {
                let leg = Leg {
                    call_id,
                    from_tag: req.tag_of_from().unwrap_or("").to_string(),
                    to_tag: None,
                    via_branch: Some(branch),
                };
                self.ask_media(engine, Command::Delete { leg }, None);
            }
            return;
        }
        match outcome {
            MediaOutcome::Sdp(sdp) => {
                let ctx = self.ctxs.get_mut(&ctx_id).expect("live");
                ctx.media.committed = true;
                let cancelled = ctx.cancelled;
                if let Some(m) = ctx.branches[idx].media.as_mut() {
                    m.offered = true;
                }
                if cancelled {
                    // CANCELled while the engine worked: the branch never went out.
                    self.media_branch_failed(ctx_id, idx);
                    return self.on_branch_failed_because(now, ctx_id, idx, 487, None);
                }
                req.body = Bytes::from(sdp);
                self.send_branch(now, ctx_id, idx, c, ct, branch, req);
            }
            MediaOutcome::Unavailable(why) => {
                self.media_failed(&call_id, command, &why);
                let ctx = self.ctxs.get_mut(&ctx_id).expect("live");
                if !ctx.media.committed && ctx.media.dialog.is_none() {
                    // A new call on an engine that did not answer: another one, if any
                    // is up, gets it (the branch starts again there).
                    if !ctx.media.tried.contains(&engine) {
                        ctx.media.tried.push(engine);
                    }
                    if ctx.media.engine == Some(engine) {
                        ctx.media.engine = None;
                    }
                    ctx.branches[idx].media = None;
                    return self.start_branch(now, ctx_id, idx, Next::At(c));
                }
                self.on_branch_failed_because(
                    now,
                    ctx_id,
                    idx,
                    500,
                    Some("Media Relay Unavailable"),
                );
            }
            MediaOutcome::Refused(why) => {
                self.media_failed(&call_id, command, &why);
                if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
                    ctx.branches[idx].media = None;
                }
                self.on_branch_failed_because(
                    now,
                    ctx_id,
                    idx,
                    488,
                    Some("Media Relay Refused The SDP"),
                );
            }
        }
    }

    fn branch_response_done(
        &mut self,
        now: Instant,
        ctx_id: u64,
        idx: usize,
        outcome: MediaOutcome,
    ) {
        let Some(m) = self.branch_media_mut(ctx_id, idx) else {
            return;
        };
        m.busy = false;
        let Some(event) = m.held.pop_front() else {
            return;
        };
        let ClientEvent::Response(mut resp) = event else {
            // Only responses are held at the front for the engine.
            return self.on_branch_event_now(now, ctx_id, idx, event);
        };
        let command = if m.request_had_sdp { "answer" } else { "offer" };
        match outcome {
            MediaOutcome::Sdp(sdp) => {
                let sdp = Bytes::from(sdp);
                m.last = Some((resp.body.clone(), sdp.clone()));
                m.offered = true;
                resp.body = sdp;
                if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
                    ctx.media.committed = true;
                }
            }
            MediaOutcome::Unavailable(why) | MediaOutcome::Refused(why) => {
                // The response goes on as it came: the side it goes to may not take its
                // SDP, and says so itself (a 488, a BYE); holding it would hang the call.
                let call_id = resp.call_id().unwrap_or("").to_string();
                self.media_failed(&call_id, command, &why);
            }
        }
        self.on_branch_event_now(now, ctx_id, idx, ClientEvent::Response(resp));
        // What queued behind it, in order, until one waits again.
        while let Some(m) = self.branch_media_mut(ctx_id, idx)
            && !m.busy
            && let Some(next) = m.held.pop_front()
        {
            self.on_branch_event(now, ctx_id, idx, next);
        }
    }

    fn branch_media_mut(&mut self, ctx_id: u64, idx: usize) -> Option<&mut BranchMedia> {
        self.ctxs
            .get_mut(&ctx_id)?
            .branches
            .get_mut(idx)?
            .media
            .as_mut()
    }

    /// Branch `idx` failed: its leg goes, unless the whole call's went already.
    pub(super) fn media_branch_failed(&mut self, ctx_id: u64, idx: usize) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        if ctx.media.dialog.is_some() {
            // A re-INVITE or UPDATE that failed leaves the call's media as it was.
            return;
        }
        let Some(m) = ctx.branches.get_mut(idx).and_then(|b| b.media.as_mut()) else {
            return;
        };
        if !m.offered {
            return;
        }
        m.offered = false;
        let (engine, cmd) = m.leg_to_delete();
        self.ask_media(engine, cmd, None);
    }

    /// A new call's final failure goes upstream: its media goes, all of it.
    pub(super) fn media_call_failed(&mut self, ctx_id: u64) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        if ctx.media.dialog.is_some() {
            return;
        }
        let mut engine = None;
        let mut call_id = String::new();
        for m in ctx.branches.iter_mut().filter_map(|b| b.media.as_mut()) {
            if m.offered {
                m.offered = false;
                engine = Some(m.engine);
                call_id.clone_from(&m.call_id);
            }
        }
        if let Some(engine) = engine {
            self.ask_media(engine, Command::DeleteCall { call_id }, None);
        }
    }

    /// A BYE in a relayed dialog: its media ends.
    pub(super) fn media_dialog_ended(&mut self, engine: usize, req: &Request) {
        let call_id = req.call_id().unwrap_or("").to_string();
        self.ask_media(engine, Command::DeleteCall { call_id }, None);
    }

    fn delete_leg(&mut self, m: &BranchMedia) {
        let (engine, cmd) = m.leg_to_delete();
        self.ask_media(engine, cmd, None);
    }

    /// An ACK in a relayed dialog: the answer to a late offer goes to the engine first.
    /// `Some(req)` when it goes out as it is.
    pub(super) fn media_ack(
        &mut self,
        engine: usize,
        target: Target,
        to: Transport,
        req: Request,
    ) -> Option<Request> {
        if !has_sdp(&req.headers, &req.body) {
            return Some(req);
        }
        let command = Command::Answer {
            leg: Leg {
                call_id: req.call_id().unwrap_or("").to_string(),
                // The offer was in the 2xx: its sender's tag is the ACK's To tag.
                from_tag: req.tag_of_to().unwrap_or("").to_string(),
                to_tag: req.tag_of_from().map(str::to_string),
                via_branch: None,
            },
            sdp: req.body.to_vec(),
            flags: self.media.settings.toward(is_web(to)).clone(),
        };
        self.ask_media(
            engine,
            command,
            Some(Wait::Ack {
                target,
                req: Box::new(req),
            }),
        );
        None
    }
}

impl BranchMedia {
    /// The `delete` of this branch's leg alone: the caller's tag and our Via's branch
    /// (no To tag), as rtpengine matches one fork.
    fn leg_to_delete(&self) -> (usize, Command) {
        (
            self.engine,
            Command::Delete {
                leg: Leg {
                    call_id: self.call_id.clone(),
                    from_tag: self.from_tag.clone(),
                    to_tag: None,
                    via_branch: self.via_branch.clone(),
                },
            },
        )
    }
}
