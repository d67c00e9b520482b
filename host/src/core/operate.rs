//! What the operator sees of the core and may change in it (the admin API): the
//! bindings, the transactions and dialogs in flight, each request's final answer for
//! the latency and response-class metrics, and drain mode.
//!
//! Dialogs are counted as a stateful proxy sees them: one starts when a 2xx to an
//! INVITE passes back through this server, and ends with a BYE for it, when a flow of
//! either end closes, or after [`DIALOG_MAX_AGE`] without a BYE (an end that vanished).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::location::Binding;
use super::{Core, Event, FlowId, Source};
use crate::sip::message::Essentials;
use crate::sip::{HeaderName, Method, Request, Response};

/// How long a dialog that never saw its BYE is counted.
pub const DIALOG_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// Most dialogs counted at once; past it new ones are not counted (calls go on).
pub const MAX_DIALOGS: usize = 100_000;

/// Most final answers kept for the driver between two of its turns.
const FINALS_MAX: usize = 65_536;

/// Keeps the `limit` smallest of `v` (oldest start, then lowest id), in order.
fn oldest(v: &mut Vec<(Instant, u64)>, limit: usize) {
    if v.len() > limit {
        if limit == 0 {
            v.clear();
            return;
        }
        v.select_nth_unstable(limit - 1);
        v.truncate(limit);
    }
    v.sort_unstable();
}

/// Retry-After (seconds) of the 503 that answers a new dialog while draining.
pub const DRAIN_RETRY: u32 = 30;

/// A request's final answer: its method's label, status and the time since the core
/// took the request (0 for answers given at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Final {
    /// [`method_label`] of the request.
    pub method: &'static str,
    /// The final status.
    pub status: u16,
    /// From the core taking the request to its final answer.
    pub elapsed: Duration,
}

/// The label of a method in metrics: its name, or `other` for extension methods (a
/// client cannot grow the label set).
pub fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Register => "REGISTER",
        Method::Options => "OPTIONS",
        Method::Info => "INFO",
        Method::Prack => "PRACK",
        Method::Subscribe => "SUBSCRIBE",
        Method::Notify => "NOTIFY",
        Method::Publish => "PUBLISH",
        Method::Refer => "REFER",
        Method::Message => "MESSAGE",
        Method::Update => "UPDATE",
        Method::Other(_) => "other",
    }
}

/// A transaction in flight, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    /// Its id.
    pub id: u64,
    /// `server` (a request received) or `client` (a request sent).
    pub kind: &'static str,
    /// The method.
    pub method: String,
    /// The Call-ID.
    pub call_id: String,
    /// Its state (RFC 3261 17).
    pub state: String,
    /// How long ago it started (server transactions; client ones: 0 when unknown).
    pub age: Duration,
    /// The peer: where the request came from, or where it went.
    pub peer: String,
}

/// A dialog in flight, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogSummary {
    /// The Call-ID.
    pub call_id: String,
    /// The From header's URI (the caller).
    pub from: String,
    /// The To header's URI (the callee).
    pub to: String,
    /// Where the INVITE came from.
    pub caller: String,
    /// The callee's Contact.
    pub callee: String,
    /// Since the 2xx.
    pub age: Duration,
}

/// A dialog as kept.
#[derive(Debug, Clone)]
struct Dialog {
    /// Its key in [`Dialogs::ids`].
    key: DialogKey,
    from: String,
    to: String,
    caller: String,
    callee: String,
    started: Instant,
    /// The flows of its ends, when they came over one (caller, callee).
    flows: [Option<FlowId>; 2],
}

/// Most bytes kept of each of a dialog's strings (a client chooses them).
const DIALOG_FIELD_MAX: usize = 128;

/// `s` cut to [`DIALOG_FIELD_MAX`] bytes at a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(DIALOG_FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Call-ID and the two tags in sorted order.
type DialogKey = (String, String, String);

/// Dialogs in flight, each under an id: found by Call-ID and tags, by the flows of
/// their ends (to end them with a flow), and in the order they started (to age them
/// out). Each dialog's strings are kept once.
#[derive(Debug, Default)]
pub(crate) struct Dialogs {
    ids: HashMap<DialogKey, u64>,
    by_id: HashMap<u64, Dialog>,
    /// (started, id) in the order they started; ids of dialogs that ended are
    /// skipped when they come up, and dropped once they are most of the queue.
    order: std::collections::VecDeque<(Instant, u64)>,
    by_flow: HashMap<FlowId, std::collections::HashSet<u64>>,
    next_id: u64,
}

fn dialog_key(call_id: &str, a: &str, b: &str) -> DialogKey {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    (bounded(call_id), bounded(x), bounded(y))
}

impl Dialogs {
    /// How many are counted.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Entries kept in the start order, ended ones included until they are dropped
    /// (tests check it stays bounded).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.order.len()
    }

    /// Forgets the dialogs older than [`DIALOG_MAX_AGE`] (an end vanished without a
    /// BYE): cheap when there are none.
    fn age_out(&mut self, now: Instant) {
        while let Some(&(started, id)) = self.order.front() {
            if now.saturating_duration_since(started) < DIALOG_MAX_AGE {
                break;
            }
            self.order.pop_front();
            self.remove(id);
        }
        if self.by_id.is_empty() {
            self.order.clear();
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(d) = self.by_id.remove(&id) else {
            return;
        };
        self.ids.remove(&d.key);
        for f in d.flows.into_iter().flatten() {
            if let Some(set) = self.by_flow.get_mut(&f) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_flow.remove(&f);
                }
            }
        }
        // Ids of ended dialogs are dropped from `order` once they are most of it
        // (amortized: at most once per as many removals as there are entries).
        if self.order.len() > 2 * self.by_id.len() + 1024 {
            let live = &self.by_id;
            self.order.retain(|(_, id)| live.contains_key(id));
        }
    }

    /// Records the dialog a 2xx to `invite` (received from `source`) confirms; the
    /// 2xx came from `callee_flow`.
    fn confirmed(
        &mut self,
        invite: &Request,
        source: &Source,
        resp: &Response,
        callee_flow: Option<FlowId>,
        now: Instant,
    ) {
        let (Some(call_id), Some(from_tag), Some(to_tag)) =
            (invite.call_id(), invite.tag_of_from(), resp.tag_of_to())
        else {
            return;
        };
        self.age_out(now);
        let key = dialog_key(call_id, from_tag, to_tag);
        if self.ids.contains_key(&key) || self.by_id.len() >= MAX_DIALOGS {
            return;
        }
        let uri = |h: &HeaderName, from: &crate::sip::Headers| {
            from.get(h)
                .and_then(|v| crate::sip::typed::NameAddr::parse(v).ok())
                .map(|n| bounded(&n.uri.to_string()))
                .unwrap_or_default()
        };
        let id = self.next_id;
        self.next_id += 1;
        let flows = [source.flow, callee_flow];
        for f in flows.iter().flatten() {
            self.by_flow.entry(*f).or_default().insert(id);
        }
        self.order.push_back((now, id));
        self.ids.insert(key.clone(), id);
        self.by_id.insert(
            id,
            Dialog {
                key,
                from: uri(&HeaderName::From, &invite.headers),
                to: uri(&HeaderName::To, &invite.headers),
                caller: source.remote.to_string(),
                callee: uri(&HeaderName::Contact, &resp.headers),
                started: now,
                flows,
            },
        );
    }

    /// A BYE ends its dialog.
    fn ended(&mut self, bye: &Request) {
        if let (Some(call_id), Some(a), Some(b)) =
            (bye.call_id(), bye.tag_of_from(), bye.tag_of_to())
            && let Some(id) = self.ids.get(&dialog_key(call_id, a, b)).copied()
        {
            self.remove(id);
        }
    }

    /// The dialogs of which an end came on `flow` end with it.
    fn flow_closed(&mut self, flow: FlowId) {
        if let Some(ids) = self.by_flow.remove(&flow) {
            for id in ids {
                self.remove(id);
            }
        }
    }

    fn list(&self, now: Instant, limit: usize) -> Vec<DialogSummary> {
        // The oldest first: the front of `order` (skipping those that ended).
        self.order
            .iter()
            .filter_map(|(_, id)| self.by_id.get(id))
            .take(limit)
            .map(|d| DialogSummary {
                call_id: d.key.0.clone(),
                from: d.from.clone(),
                to: d.to.clone(),
                caller: d.caller.clone(),
                callee: d.callee.clone(),
                age: now.saturating_duration_since(d.started),
            })
            .collect()
    }
}

/// Which bindings a listing shows.
#[derive(Debug, Clone, Default)]
pub struct BindingFilter {
    /// This AoR only (its canonical form is compared).
    pub aor: Option<String>,
    /// AoRs starting with this.
    pub prefix: Option<String>,
}

impl Core {
    /// Records a request's final answer for the metrics ([`Core::take_finals`]).
    pub(super) fn record_final(&mut self, method: &'static str, status: u16, elapsed: Duration) {
        if status >= 200 {
            // Bounded for a core whose finals no one takes (benchmarks, fuzzing); the
            // driver takes them after every turn.
            if self.finals.len() < FINALS_MAX {
                self.finals.push(Final {
                    method,
                    status,
                    elapsed,
                });
            }
        }
    }

    /// The final answers given since the last call (the driver feeds them to the
    /// metrics after each turn).
    pub fn take_finals(&mut self) -> std::vec::Drain<'_, Final> {
        self.finals.drain(..)
    }

    /// Counts the dialog that a 2xx to the INVITE of server transaction `id` confirms.
    pub(super) fn dialog_confirmed(&mut self, id: u64, resp: &Response, now: Instant) {
        if let Some(st) = self.servers.get(id)
            && st.request.method == Method::Invite
            && (200..300).contains(&resp.status)
        {
            self.dialogs
                .confirmed(&st.request, &st.source, resp, self.answering_flow, now);
        }
    }

    /// A BYE seen passing through.
    pub(super) fn dialog_bye(&mut self, req: &Request) {
        if req.method == Method::Bye && self.dialogs.len() > 0 {
            self.dialogs.ended(req);
        }
    }

    /// Forgets the dialogs past [`DIALOG_MAX_AGE`] (at every input: cheap).
    pub(super) fn age_out_dialogs(&mut self, now: Instant) {
        self.dialogs.age_out(now);
    }

    /// A flow closed: the dialogs of which an end came on it end.
    pub(super) fn dialog_flow_closed(&mut self, flow: FlowId) {
        self.dialogs.flow_closed(flow);
    }

    /// Transactions still at work (a request without its final answer, either side;
    /// not those only absorbing retransmissions) and dialogs: what a drain waits for.
    /// Gateway probes are not counted (they are the server's own, and start again
    /// every few seconds).
    pub fn in_progress(&mut self, now: Instant) -> (usize, usize) {
        use super::transaction::{ClientState, ServerState};
        self.dialogs.age_out(now);
        let servers = self
            .servers
            .iter()
            .filter(|(_, st)| matches!(st.state, ServerState::Trying | ServerState::Proceeding))
            .count();
        let clients = self
            .clients
            .iter()
            .filter(|(id, ct)| {
                matches!(ct.state, ClientState::Calling | ClientState::Proceeding)
                    && !self.probes.contains_key(id)
            })
            .count();
        (servers + clients, self.dialogs.len())
    }

    /// Dialogs counted now.
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// The dialogs in flight, oldest first, at most `limit`.
    pub fn dialogs(&self, now: Instant, limit: usize) -> Vec<DialogSummary> {
        self.dialogs.list(now, limit)
    }

    /// The transactions in flight, server ones (oldest first) then client ones, at
    /// most `limit`.
    pub fn transactions(&self, now: Instant, limit: usize) -> Vec<TxSummary> {
        // Ordered by start and id, cut to `limit`, before any string is made.
        let mut server_refs: Vec<(Instant, u64)> = self
            .servers
            .iter()
            .map(|(id, st)| (st.started, *id))
            .collect();
        oldest(&mut server_refs, limit);
        let mut client_refs: Vec<(Instant, u64)> = self
            .clients
            .iter()
            .map(|(id, ct)| (ct.started, *id))
            .collect();
        oldest(&mut client_refs, limit.saturating_sub(server_refs.len()));
        let mut servers: Vec<TxSummary> = server_refs
            .iter()
            .filter_map(|(_, id)| self.servers.get(*id))
            .map(|st| TxSummary {
                id: st.id,
                kind: "server",
                method: st.request.method.as_str().to_string(),
                call_id: st.request.call_id().unwrap_or("").to_string(),
                state: format!("{:?}", st.state),
                age: now.saturating_duration_since(st.started),
                peer: st.source.remote.to_string(),
            })
            .collect();
        let clients = client_refs
            .iter()
            .filter_map(|(_, id)| self.clients.get(*id))
            .map(|ct| TxSummary {
                id: ct.id,
                kind: "client",
                method: ct.request.method.as_str().to_string(),
                call_id: ct.request.call_id().unwrap_or("").to_string(),
                state: format!("{:?}", ct.state),
                age: now.saturating_duration_since(ct.started),
                peer: ct.target.describe(),
            });
        servers.extend(clients);
        servers
    }

    /// The bindings `filter` selects, by AoR in order, at most `limit` bindings, and
    /// how many it selects in all.
    pub fn registrations(
        &self,
        filter: &BindingFilter,
        limit: usize,
    ) -> (usize, Vec<(String, Vec<Binding>)>) {
        let wanted = filter.aor.as_deref().map(canonical_aor);
        let mut aors: Vec<(&String, &Vec<Binding>)> = match &wanted {
            Some(aor) => self.location.entry(aor).into_iter().collect(),
            None => self
                .location
                .entries()
                .filter(|(aor, _)| filter.prefix.as_deref().is_none_or(|p| aor.starts_with(p)))
                .collect(),
        };
        let total = aors.iter().map(|(_, b)| b.len()).sum();
        // The first `limit` AoRs in order (each has a binding at least), found in
        // linear time: a listing of a large registrar sorts only what it shows.
        if aors.len() > limit {
            aors.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            aors.truncate(limit);
        }
        aors.sort_by(|a, b| a.0.cmp(b.0));
        let mut left = limit;
        let mut out = Vec::new();
        for (aor, bindings) in aors {
            if left == 0 {
                break;
            }
            let take: Vec<Binding> = bindings.iter().take(left).cloned().collect();
            left -= take.len();
            out.push((aor.clone(), take));
        }
        (total, out)
    }

    /// Removes the bindings of `aor` (all, or the one with id `id`) as if they had
    /// expired: the store and the cluster are told, the AoR is remembered as known
    /// (480, not 404, to its callers). Returns how many went.
    pub fn remove_bindings(&mut self, now: Instant, aor: &str, id: Option<u64>) -> usize {
        let aor = canonical_aor(aor);
        let ids: Vec<u64> = self
            .location
            .lookup(&aor)
            .iter()
            .filter(|b| b.reach.is_local() && id.is_none_or(|i| b.id == i))
            .map(|b| b.id)
            .collect();
        let gone: Vec<Binding> = ids
            .into_iter()
            .filter_map(|i| self.location.remove_id(&aor, i))
            .collect();
        self.forget_in_cluster(&gone);
        let n = gone.len();
        if n > 0 {
            self.mark_known(&aor, now);
        }
        for b in gone {
            self.events.push_back(Event::BindingRemoved(b));
        }
        n
    }

    /// `limits.max-transactions` (a configuration reload).
    pub fn set_max_transactions(&mut self, n: usize) {
        self.cfg.limits.max_transactions = n;
    }

    /// Drain mode: new dialogs (out-of-dialog INVITE, SUBSCRIBE, REFER) get 503 with
    /// `Retry-After`; everything in progress goes on.
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    /// Whether `req` would start a dialog that drain mode refuses.
    pub(super) fn refused_while_draining(&self, req: &Request) -> bool {
        self.draining
            && matches!(
                req.method,
                Method::Invite | Method::Subscribe | Method::Refer
            )
            && req.tag_of_to().is_none()
    }
}

/// The canonical form of an AoR as the registrar keeps it, when it parses.
fn canonical_aor(aor: &str) -> String {
    crate::sip::uri::Uri::parse(aor)
        .ok()
        .and_then(|u| super::registrar::aor_of(&u))
        .unwrap_or_else(|| aor.to_string())
}
