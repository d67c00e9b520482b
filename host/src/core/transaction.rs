//! RFC 3261 section 17 transactions (with the RFC 6026 Accepted states), sans-IO: the
//! state machines keep their timer deadlines as `Instant`s; the core arms a timer
//! queue with them and calls back when one is due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Source, Target};
use crate::sip::headers::HeaderName;
use crate::sip::message::{Essentials, Method, Request};
use crate::sip::typed::ViaRef;

use super::sharded::Sharded;

/// What finds a transaction from a message (RFC 3261 17.1.3, 17.2.3): the server
/// side's [`ServerKey`], the client side's branch and method.
pub(crate) trait Matched {
    /// The key type.
    type Key: Eq + std::hash::Hash;
    /// This transaction's key.
    fn matching_key(&self) -> Self::Key;
}

impl Matched for ServerTx {
    type Key = ServerKey;
    fn matching_key(&self) -> ServerKey {
        self.key.clone()
    }
}

impl Matched for ClientTx {
    type Key = (String, Method);
    fn matching_key(&self) -> (String, Method) {
        (self.branch.clone(), self.request.method.clone())
    }
}

/// The transactions of one side by id, and their ids by matching key: one table for
/// server and client transactions alike, so that a transaction and its key enter and
/// leave together.
#[derive(Debug)]
pub(crate) struct TxTable<T: Matched> {
    by_id: Sharded<u64, T>,
    by_key: Sharded<T::Key, u64>,
}

impl<T: Matched> Default for TxTable<T> {
    fn default() -> Self {
        Self {
            by_id: Sharded::default(),
            by_key: Sharded::default(),
        }
    }
}

impl<T: Matched> TxTable<T> {
    /// Adds transaction `tx` as `id`, found by its key from now on.
    pub(crate) fn insert(&mut self, id: u64, tx: T) {
        self.by_key.insert(tx.matching_key(), id);
        self.by_id.insert(id, tx);
    }

    /// Removes transaction `id` and its key.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let tx = self.by_id.remove(&id)?;
        self.by_key.remove(&tx.matching_key());
        Some(tx)
    }

    /// The id of the transaction a message with `key` matches.
    pub(crate) fn find<Q>(&self, key: &Q) -> Option<u64>
    where
        T::Key: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        self.by_key.get(key).copied()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.by_id.get_mut(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every transaction with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &T)> {
        self.by_id.iter()
    }

    /// Whether no transaction, and no key, is left.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.by_key.is_empty()
    }

    /// Gives a flood's spare capacity back ([`Sharded::shrink`]); whether the table is
    /// still large.
    pub(crate) fn shrink(&mut self) -> bool {
        let ids = self.by_id.shrink();
        self.by_key.shrink() | ids
    }
}

/// Timer values (RFC 3261 section 17.1.1.1 and table 4).
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
    /// Proxy INVITE timer C (> 3 min).
    pub c: Duration,
    /// How long a target of a name has to answer at all before the next target is
    /// tried (`sip.failover-after`; only while another target waits).
    pub failover: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            c: Duration::from_secs(181),
            failover: Duration::from_secs(5),
        }
    }
}

/// A transaction timer to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerRef {
    /// Server transaction `id`.
    Server(u64),
    /// Client transaction `id`.
    Client(u64),
    /// Registration expiry sweep.
    Expiry,
    /// Once a minute while tables are large: aged entries pruned, spare capacity
    /// given back.
    Housekeeping,
    /// The probes of gateway set `n`.
    Probe(usize),
}

/// Deadlines of everything, earliest first.
///
/// At most one live entry per owner: arming an owner that already waits for an earlier
/// (or equal) time does nothing, and the owner re-arms itself when that earlier entry
/// fires and finds nothing due. Arming earlier replaces the entry; the older one is
/// skipped when popped. So the heap stays proportional to the number of owners, not
/// to the number of messages they receive.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    armed: foldhash::HashMap<TimerRef, Instant>,
}

impl Timers {
    /// Makes sure `r` is woken at or before `at`.
    pub fn arm(&mut self, at: Instant, r: TimerRef) {
        match self.armed.get(&r) {
            Some(&current) if current <= at => {}
            _ => {
                self.armed.insert(r, at);
                self.heap.push(Reverse((at, r)));
            }
        }
    }

    /// Forgets `r` (its owner is gone).
    pub fn disarm(&mut self, r: TimerRef) {
        self.armed.remove(&r);
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, r))) = self.heap.peek() {
            if self.armed.get(r) == Some(t) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops one live timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerRef)> {
        while let Some(&Reverse((t, r))) = self.heap.peek() {
            if t > now {
                return None;
            }
            self.heap.pop();
            if self.armed.get(&r) == Some(&t) {
                self.armed.remove(&r);
                return Some((t, r));
            }
        }
        None
    }

    /// Entries in the heap (live and stale), for tests.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Room held: the larger of the heap's and the index's capacity.
    pub fn capacity(&self) -> usize {
        self.heap.capacity().max(self.armed.capacity())
    }

    /// Gives back the room a flood of owners grew the heap and its index to, once
    /// most of them are gone (stale entries dropped first); neither shrinks on its own.
    /// Whether they are still large. O(entries), so for housekeeping only.
    pub fn shrink(&mut self) -> bool {
        use super::sharded::{SHRINK_FROM, shrink_map};
        if self.heap.capacity() >= SHRINK_FROM {
            let armed = &self.armed;
            self.heap.retain(|Reverse((t, r))| armed.get(r) == Some(t));
            if self.heap.len() * 4 < self.heap.capacity() {
                self.heap.shrink_to_fit();
            }
        }
        let large = shrink_map(&mut self.armed);
        large || self.heap.capacity() >= SHRINK_FROM
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Number of timers armed.
    pub fn armed(&self) -> usize {
        self.armed.len()
    }
}

/// Identifies a server transaction (RFC 3261 section 17.2.3, and the RFC 2543 rule
/// for requests without a magic-cookie branch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey(String);

impl ServerKey {
    /// The key of `req` for method `method` (pass INVITE for an ACK or a CANCEL to find
    /// the INVITE transaction).
    pub fn of(req: &Request, method: &Method) -> Option<Self> {
        let top = req.headers.values(&HeaderName::Via).next()?;
        let via = ViaRef::parse(top).ok()?;
        let mut sent_by = String::with_capacity(32);
        via.host.push_to(&mut sent_by);
        sent_by.push(':');
        sent_by.push_str(itoa::Buffer::new().format(via.port.unwrap_or(0)));
        sent_by.make_ascii_lowercase();
        match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => {
                let method = method.as_str();
                let mut key = String::with_capacity(7 + b.len() + sent_by.len() + method.len());
                for part in ["3261|", b, "|", &sent_by, "|", method] {
                    key.push_str(part);
                }
                Some(Self(key))
            }
            _ => {
                // RFC 2543: Request-URI, To tag, From tag, Call-ID, CSeq number, top Via.
                let to_tag = if *method == Method::Invite && req.method == Method::Ack {
                    // The ACK carries the To tag of our response; the INVITE had none.
                    ""
                } else {
                    req.tag_of_to().unwrap_or("")
                };
                let from_tag = req.tag_of_from().unwrap_or("");
                let cseq = req.cseq().ok()?.seq;
                let top = req.headers.values(&HeaderName::Via).next()?;
                Some(Self(format!(
                    "2543|{}|{to_tag}|{from_tag}|{}|{cseq}|{top}|{method}",
                    req.uri,
                    req.call_id()?
                )))
            }
        }
    }
}

/// Server transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE: nothing sent yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// A final non-2xx (INVITE) or any final (non-INVITE) response was sent.
    Completed,
    /// INVITE: the ACK came.
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026); retransmitted INVITEs are absorbed.
    Accepted,
    /// Done; to be removed.
    Terminated,
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTx {
    /// Id.
    pub id: u64,
    /// Key.
    pub key: ServerKey,
    /// The request (as received, with `received`/`rport` stamped).
    pub request: Request,
    /// Where it came from; responses go back there.
    pub source: Source,
    /// State.
    pub state: ServerState,
    /// The last response sent (for retransmissions).
    pub last: Option<(u16, Bytes)>,
    /// The proxy context serving it, if proxied.
    pub ctx: Option<u64>,
    /// Retransmit timer G (INVITE, unreliable): next time and interval.
    g: Option<(Instant, Duration)>,
    /// Final answers are not retransmitted on timer G: the source is a UDP address that
    /// has not shown it receives our packets (each retransmission toward a spoofed
    /// source would multiply what reaches its victim). A retransmitted request still
    /// gets the answer again, one for one. Set by the core before each answer.
    pub quiet: bool,
    /// The single end timer (H, I, J or L).
    end: Option<Instant>,
    /// When the core took the request.
    pub started: Instant,
}

impl ServerTx {
    /// A new transaction in its initial state.
    pub fn new(id: u64, key: ServerKey, request: Request, source: Source, now: Instant) -> Self {
        let state = if request.method == Method::Invite {
            ServerState::Proceeding
        } else {
            ServerState::Trying
        };
        Self {
            id,
            key,
            request,
            source,
            state,
            last: None,
            ctx: None,
            g: None,
            quiet: false,
            end: None,
            started: now,
        }
    }

    fn invite(&self) -> bool {
        self.request.method == Method::Invite
    }

    /// The transaction's next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.g.map(|g| g.0), self.end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends a response through the transaction. Returns the bytes to send (or `None`
    /// when the state machine forbids it, e.g. after a final response).
    pub fn respond(
        &mut self,
        status: u16,
        bytes: Bytes,
        now: Instant,
        t: &TimerConfig,
    ) -> Option<Bytes> {
        let reliable = self.source.transport.is_reliable();
        match (self.invite(), self.state, status) {
            // RFC 3261 16.7 step 10: a 2xx to an INVITE is forwarded even after a
            // final response went out.
            (true, ServerState::Completed | ServerState::Confirmed, 200..=299) => {
                self.state = ServerState::Accepted;
                self.g = None;
                self.end = Some(now + 64 * t.t1);
                return Some(bytes);
            }
            (_, ServerState::Completed | ServerState::Confirmed | ServerState::Terminated, _) => {
                return None;
            }
            // RFC 6026: further 2xx (from other forks) pass through Accepted.
            (true, ServerState::Accepted, 200..=299) => return Some(bytes),
            (true, ServerState::Accepted, _) => return None,
            (_, _, 100..=199) => {
                self.state = ServerState::Proceeding;
            }
            (true, _, 200..=299) => {
                self.state = ServerState::Accepted;
                self.end = Some(now + 64 * t.t1);
            }
            (true, _, _) => {
                self.state = ServerState::Completed;
                if !reliable && !self.quiet {
                    self.g = Some((now + t.t1, t.t1));
                }
                self.end = Some(now + 64 * t.t1);
            }
            (false, _, _) => {
                self.state = ServerState::Completed;
                self.end = Some(if reliable { now } else { now + 64 * t.t1 });
            }
        }
        self.last = Some((status, bytes.clone()));
        Some(bytes)
    }

    /// A retransmission of the request arrived: what to send again, if anything.
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed => {
                self.last.as_ref().map(|(_, b)| b.clone())
            }
            _ => None,
        }
    }

    /// The ACK for a non-2xx final response arrived. True when it was absorbed here.
    pub fn on_ack(&mut self, now: Instant, t: &TimerConfig) -> bool {
        match self.state {
            ServerState::Completed => {
                self.state = ServerState::Confirmed;
                self.g = None;
                self.end = Some(if self.source.transport.is_reliable() {
                    now
                } else {
                    now + t.t4
                });
                true
            }
            ServerState::Confirmed => true,
            _ => false,
        }
    }

    /// Runs due timers; returns bytes to retransmit.
    pub fn on_timer(&mut self, now: Instant, t: &TimerConfig) -> Option<Bytes> {
        if self.end.is_some_and(|e| e <= now) {
            self.state = ServerState::Terminated;
            self.g = None;
            self.end = None;
            return None;
        }
        match self.g {
            Some((at, interval)) if at <= now && self.state == ServerState::Completed => {
                let next = (interval * 2).min(t.t2);
                self.g = Some((now + next, next));
                self.last.as_ref().map(|(_, b)| b.clone())
            }
            _ => None,
        }
    }
}

/// Client transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Request sent, nothing back yet (Calling for INVITE, Trying otherwise).
    Calling,
    /// A provisional response came.
    Proceeding,
    /// A final non-2xx (INVITE) or any final (non-INVITE) response came.
    Completed,
    /// INVITE: a 2xx came (RFC 6026); further 2xx pass through.
    Accepted,
    /// Done; to be removed.
    Terminated,
}

/// What a client transaction tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Pass this response up.
    Response(crate::sip::message::Response),
    /// No response in time (timer B or F): act as if 408 came.
    Timeout,
}

/// A client transaction.
#[derive(Debug)]
pub struct ClientTx {
    /// Id.
    pub id: u64,
    /// Our branch (top Via of the request).
    pub branch: String,
    /// The request as sent.
    pub request: Request,
    /// Its bytes (for retransmission).
    pub bytes: Bytes,
    /// Where it goes.
    pub target: Target,
    /// Whether the transport is reliable.
    pub reliable: bool,
    /// State.
    pub state: ClientState,
    /// Proxy context and branch index.
    pub owner: (u64, usize),
    /// Retransmit timer (A or E): next time and interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timeout timer (B or F).
    timeout: Option<Instant>,
    /// End timer (D, K or M).
    end: Option<Instant>,
    /// Proxy timer C (INVITE).
    pub timer_c: Option<Instant>,
    /// No response at all by then: give up, so that the next target is tried
    /// ([`ClientTx::answer_by`]).
    answer_by: Option<Instant>,
    /// When it was sent first.
    pub started: Instant,
}

impl ClientTx {
    /// A new transaction; the request is sent by the caller right after.
    #[allow(
        clippy::too_many_arguments,
        reason = "plain constructor of a state record"
    )]
    pub fn new(
        id: u64,
        branch: String,
        request: Request,
        bytes: Bytes,
        target: Target,
        reliable: bool,
        owner: (u64, usize),
        now: Instant,
        t: &TimerConfig,
    ) -> Self {
        let invite = request.method == Method::Invite;
        Self {
            id,
            branch,
            request,
            bytes,
            target,
            reliable,
            state: ClientState::Calling,
            owner,
            retransmit: (!reliable).then_some((now + t.t1, t.t1)),
            timeout: Some(now + 64 * t.t1),
            end: None,
            timer_c: invite.then_some(now + t.c),
            answer_by: None,
            started: now,
        }
    }

    fn invite(&self) -> bool {
        self.request.method == Method::Invite
    }

    /// The next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.retransmit.map(|r| r.0),
            self.timeout,
            self.end,
            self.timer_c,
            self.answer_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A response for this transaction arrived. Returns what to pass up, and whether an
    /// ACK must be sent for it (INVITE non-2xx final, also on retransmissions).
    pub fn on_response(
        &mut self,
        resp: crate::sip::message::Response,
        now: Instant,
        t: &TimerConfig,
    ) -> (Option<ClientEvent>, bool) {
        let status = resp.status;
        // The target answers: it has the transaction's own timers from now on.
        self.answer_by = None;
        match (self.invite(), self.state) {
            (_, ClientState::Terminated) => (None, false),
            (true, ClientState::Completed) => (None, status >= 300),
            (false, ClientState::Completed) => (None, false),
            (true, ClientState::Accepted) => {
                if (200..300).contains(&status) {
                    (Some(ClientEvent::Response(resp)), false)
                } else {
                    (None, false)
                }
            }
            (invite, _) => match status {
                100..=199 => {
                    self.state = ClientState::Proceeding;
                    if invite {
                        self.retransmit = None;
                        self.timeout = None;
                        if status > 100 {
                            self.timer_c = Some(now + t.c);
                        }
                    } else if let Some((at, _)) = self.retransmit {
                        // Proceeding: retransmit at T2.
                        self.retransmit = Some((at.max(now), t.t2));
                    }
                    (Some(ClientEvent::Response(resp)), false)
                }
                200..=299 if invite => {
                    self.state = ClientState::Accepted;
                    self.retransmit = None;
                    self.timeout = None;
                    self.timer_c = None;
                    self.end = Some(now + 64 * t.t1);
                    (Some(ClientEvent::Response(resp)), false)
                }
                _ => {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    self.timeout = None;
                    self.timer_c = None;
                    let linger = if invite {
                        Duration::from_secs(32)
                    } else {
                        t.t4
                    };
                    self.end = Some(if self.reliable { now } else { now + linger });
                    (Some(ClientEvent::Response(resp)), invite)
                }
            },
        }
    }

    /// Gives up waiting for a final response at `at` (after a CANCEL, RFC 3261 9.1).
    pub fn give_up_at(&mut self, at: Instant) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            self.timeout = Some(self.timeout.map_or(at, |t| t.min(at)));
        }
    }

    /// Gives up at `at` unless a response (a provisional one will do) came by then.
    pub fn answer_by(&mut self, at: Instant) {
        if self.state == ClientState::Calling {
            self.answer_by = Some(at);
        }
    }

    /// The request could not be sent: fail like a timeout.
    pub fn on_transport_error(&mut self) -> Option<ClientEvent> {
        match self.state {
            ClientState::Calling | ClientState::Proceeding => {
                self.terminate();
                Some(ClientEvent::Timeout)
            }
            _ => None,
        }
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.timeout = None;
        self.end = None;
        self.timer_c = None;
        self.answer_by = None;
    }

    /// Runs due timers: returns bytes to retransmit, an event for the owner, and
    /// whether timer C fired (the owner then cancels the branch).
    pub fn on_timer(
        &mut self,
        now: Instant,
        t: &TimerConfig,
    ) -> (Option<Bytes>, Option<ClientEvent>, bool) {
        if self.end.is_some_and(|e| e <= now) {
            self.terminate();
            return (None, None, false);
        }
        if self.state == ClientState::Calling && self.answer_by.is_some_and(|a| a <= now) {
            // Given up for the next target, but kept until its own timeout: a late
            // answer still matches it (a provisional gets the INVITE cancelled, a 2xx
            // goes up). No more retransmissions.
            self.answer_by = None;
            self.retransmit = None;
            return (None, Some(ClientEvent::Timeout), false);
        }
        if self.timeout.is_some_and(|e| e <= now) {
            self.terminate();
            return (None, Some(ClientEvent::Timeout), false);
        }
        let mut fired_c = false;
        if self.timer_c.is_some_and(|c| c <= now) {
            self.timer_c = None;
            fired_c = true;
        }
        let mut resend = None;
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            let next = if self.invite() {
                interval * 2
            } else if self.state == ClientState::Proceeding {
                t.t2
            } else {
                (interval * 2).min(t.t2)
            };
            self.retransmit = Some((now + next, next));
            resend = Some(self.bytes.clone());
        }
        (resend, None, fired_c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Transport;
    use crate::sip::message::{Message, Response};
    use crate::sip::parse;

    fn req(method: &str) -> Request {
        let text = format!(
            "{method} sip:b@l SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n\
             From: <sip:a@l>;tag=1\r\nTo: <sip:b@l>\r\nCall-ID: x\r\nCSeq: 1 {method}\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn udp() -> Source {
        Source {
            transport: Transport::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "10.0.0.1:5060".parse().unwrap(),
            flow: None,
        }
    }

    fn resp(status: u16) -> Response {
        Response {
            status,
            reason: "x".into(),
            headers: Default::default(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn keys_match_ack_and_cancel_to_invite() {
        let invite = req("INVITE");
        let mut ack = req("ACK");
        ack.headers
            .first_mut(&HeaderName::To)
            .unwrap()
            .value
            .push_str(";tag=9");
        let k = ServerKey::of(&invite, &Method::Invite).unwrap();
        assert_eq!(ServerKey::of(&ack, &Method::Invite), Some(k.clone()));
        assert_ne!(ServerKey::of(&invite, &Method::Cancel), Some(k));
    }

    #[test]
    fn invite_server_retransmits_final_until_ack() {
        let t = TimerConfig::default();
        let now = Instant::now();
        let r = req("INVITE");
        let mut st = ServerTx::new(
            1,
            ServerKey::of(&r, &Method::Invite).unwrap(),
            r,
            udp(),
            Instant::now(),
        );
        assert!(
            st.respond(486, Bytes::from_static(b"486"), now, &t)
                .is_some()
        );
        assert_eq!(st.state, ServerState::Completed);
        // Timer G at T1, 2T1, 4T1... capped at T2.
        let mut at = now;
        let mut intervals = vec![];
        for _ in 0..5 {
            let next = st.deadline().unwrap();
            intervals.push(next - at);
            at = next;
            assert_eq!(st.on_timer(at, &t).as_deref(), Some(&b"486"[..]));
        }
        assert_eq!(
            intervals,
            [t.t1, t.t1 * 2, t.t1 * 4, t.t2, t.t2].map(|d| d).to_vec()
        );
        assert!(st.on_ack(at, &t));
        assert_eq!(st.state, ServerState::Confirmed);
        st.on_timer(at + t.t4, &t);
        assert_eq!(st.state, ServerState::Terminated);
    }

    #[test]
    fn invite_server_gives_up_at_timer_h() {
        let t = TimerConfig::default();
        let now = Instant::now();
        let r = req("INVITE");
        let mut st = ServerTx::new(
            1,
            ServerKey::of(&r, &Method::Invite).unwrap(),
            r,
            udp(),
            Instant::now(),
        );
        st.respond(404, Bytes::from_static(b"404"), now, &t);
        let mut steps = 0;
        let end = loop {
            let at = st.deadline().unwrap();
            st.on_timer(at, &t);
            steps += 1;
            assert!(steps < 100, "bounded");
            if st.state == ServerState::Terminated {
                break at;
            }
        };
        assert_eq!(end - now, 64 * t.t1);
    }

    #[test]
    fn non_invite_client_retransmits_then_times_out_at_f() {
        let t = TimerConfig::default();
        let now = Instant::now();
        let target = Target::Udp {
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "10.0.0.2:5060".parse().unwrap(),
        };
        let mut ct = ClientTx::new(
            1,
            "b".into(),
            req("MESSAGE"),
            Bytes::from_static(b"M"),
            target,
            false,
            (0, 0),
            now,
            &t,
        );
        let mut sends = 0;
        let (event, at) = loop {
            let at = ct.deadline().unwrap();
            let (resend, ev, _) = ct.on_timer(at, &t);
            sends += usize::from(resend.is_some());
            if let Some(ev) = ev {
                break (ev, at);
            }
            assert!(sends < 100, "bounded");
        };
        assert_eq!(event, ClientEvent::Timeout);
        assert_eq!(at - now, 64 * t.t1);
        // 500ms, 1, 2, 4, 4, 4... within 32 s: 10 retransmissions.
        assert_eq!(sends, 10);
    }

    #[test]
    fn invite_client_acks_non_2xx_and_passes_2xx_retransmissions() {
        let t = TimerConfig::default();
        let now = Instant::now();
        let target = Target::Flow(3);
        let mut ct = ClientTx::new(
            1,
            "b".into(),
            req("INVITE"),
            Bytes::from_static(b"I"),
            target,
            true,
            (0, 0),
            now,
            &t,
        );
        let (ev, ack) = ct.on_response(resp(180), now, &t);
        assert!(matches!(ev, Some(ClientEvent::Response(_))) && !ack);
        let (ev, ack) = ct.on_response(resp(486), now, &t);
        assert!(ev.is_some() && ack);
        let (ev, ack) = ct.on_response(resp(486), now, &t);
        assert!(
            ev.is_none() && ack,
            "retransmitted final: ACK again, not passed up"
        );

        let mut ct = ClientTx::new(
            2,
            "b".into(),
            req("INVITE"),
            Bytes::from_static(b"I"),
            target,
            true,
            (0, 0),
            now,
            &t,
        );
        assert!(ct.on_response(resp(200), now, &t).0.is_some());
        assert!(
            ct.on_response(resp(200), now, &t).0.is_some(),
            "2xx retransmissions pass up"
        );
        assert_eq!(ct.state, ClientState::Accepted);
    }

    #[test]
    fn timer_c_fires_on_a_ringing_invite() {
        let t = TimerConfig::default();
        let now = Instant::now();
        let mut ct = ClientTx::new(
            1,
            "b".into(),
            req("INVITE"),
            Bytes::from_static(b"I"),
            Target::Flow(1),
            true,
            (0, 0),
            now,
            &t,
        );
        ct.on_response(resp(180), now, &t);
        let at = ct.deadline().unwrap();
        assert_eq!(at - now, t.c);
        let (_, _, c) = ct.on_timer(at, &t);
        assert!(c);
    }
}
