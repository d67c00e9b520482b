//! REGISTER (RFC 3261 section 10.3) with Outbound (RFC 5626), Path (RFC 3327) and
//! GRUU (RFC 5627), over the in-memory [`Location`]. Sans-IO.

use std::time::{Duration, Instant};

use super::gruu::TempGruus;
use super::location::{Binding, Location, Reach};
use super::{Source, split_tokens};
use crate::sip::headers::{HeaderName, param};
use crate::sip::message::{Essentials, Request};
use crate::sip::typed::NameAddr;
use crate::sip::uri::Uri;

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shortest accepted registration (else 423 with Min-Expires).
    pub min_expires: u32,
    /// Longest registration (longer requests are cut to this).
    pub max_expires: u32,
    /// When the request gives none.
    pub default_expires: u32,
    /// Flow-Timer sent to Outbound clients (seconds between their keepalives).
    pub flow_timer: u32,
    /// Most bindings one AoR may have (a REGISTER that would exceed it gets 403).
    pub max_contacts: usize,
    /// Most bindings in all (a REGISTER that would add one past it gets 503 with
    /// Retry-After; refreshes and removals always work).
    pub max_bindings: usize,
    /// Whether a Path is stored (and routed through) when the UA did not say
    /// `Supported: path`; else such a REGISTER gets 420 (RFC 3327 section 5.3).
    pub store_path_without_support: bool,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 86_400,
            default_expires: 3_600,
            flow_timer: 120,
            max_contacts: 32,
            max_bindings: 1_000_000,
            store_path_without_support: false,
        }
    }
}

/// A change to persist.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added (or changed by another binding's registration: its temporary GRUU).
    Saved(Binding),
    /// Registered again by the client that has it: a refresh, kept in place.
    Refreshed(Binding),
    /// Removed (unregistered, expired, flow closed).
    Removed(Binding),
}

/// The answer to a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Status code.
    pub status: u16,
    /// Reason phrase, when not the standard one.
    pub reason: Option<String>,
    /// Headers for the response.
    pub headers: Vec<(HeaderName, String)>,
}

impl Outcome {
    fn err(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: Some(reason.into()),
            headers: Vec::new(),
        }
    }
}

/// The normalized address-of-record of a URI: `sip:user@host` (scheme folded to sip,
/// user with its escapes canonical, host lower-cased, no port or parameters). `None`
/// without a user part.
pub fn aor_of(uri: &Uri) -> Option<String> {
    let u = uri.as_sip()?;
    let user = u.user.as_deref()?;
    let mut aor = String::with_capacity(5 + user.len() + 24);
    aor.push_str("sip:");
    crate::sip::uri::push_canonical_user(&mut aor, user);
    aor.push('@');
    let host = aor.len();
    u.host.borrowed().push_to(&mut aor);
    aor[host..].make_ascii_lowercase();
    Some(aor)
}

/// Whether two Contact URIs whose texts differ name the same binding (RFC 3261 10.3
/// step 7 compares them as 19.1.4 says): SIP URIs compared so; other schemes are the
/// same only as the same text.
fn same_uri(a: &Uri, b: &Uri) -> bool {
    matches!((a, b), (Uri::Sip(x), Uri::Sip(y)) if crate::sip::uri::same_sip_uri(x, y))
}

/// The Contact URIs of an AoR's bindings, each parsed at most once per REGISTER (each
/// is compared with every Contact of the request, several times), and only when its
/// text differs from a Contact's (a refresh repeats it and parses nothing).
#[derive(Default)]
struct Bound(std::cell::RefCell<foldhash::HashMap<u64, Option<Uri>>>);

impl Bound {
    /// Whether binding `b` is Contact `s`.
    fn same(&self, b: &Binding, s: &ContactSpec) -> bool {
        if b.contact == s.uri {
            return true;
        }
        let mut parsed = self.0.borrow_mut();
        parsed
            .entry(b.id)
            .or_insert_with(|| Uri::parse(&b.contact).ok())
            .as_ref()
            .is_some_and(|p| same_uri(p, &s.parsed))
    }
}

/// A REGISTER as the registrar takes it: the request, its To (parsed by the caller,
/// which checked its domain) and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The REGISTER.
    pub req: &'a Request,
    /// Its To header.
    pub to: &'a NameAddr,
    /// Where it came from.
    pub source: &'a Source,
}

/// One Contact of a REGISTER, parsed.
struct ContactSpec {
    uri: String,
    parsed: Uri,
    expires: u32,
    q: Option<u16>,
    instance: Option<String>,
    reg_id: Option<u32>,
    /// The other header parameters, as [`Binding::params`] keeps them.
    params: String,
}

/// Contact parameters the registrar reads or writes itself; the others stay with the
/// binding as written.
const OWN_CONTACT_PARAMS: [&str; 6] = [
    "expires",
    "q",
    "+sip.instance",
    "reg-id",
    "pub-gruu",
    "temp-gruu",
];

/// The Contact parameters other than [`OWN_CONTACT_PARAMS`], each with its `;`.
fn other_params(params: &crate::sip::headers::Params) -> String {
    let mut out = String::new();
    for (name, value) in params {
        if OWN_CONTACT_PARAMS
            .iter()
            .any(|own| own.eq_ignore_ascii_case(name))
        {
            continue;
        }
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// A delta-seconds value (RFC 3261 20.19): decimal digits, saturating at 2^32-1 (longer
/// values are capped, not refused: they are capped at `max-expires` anyway).
fn delta_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u32>().unwrap_or(u32::MAX))
}

fn parse_q(v: &str) -> Option<u16> {
    // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Missing digits are zeros: "0.5" is 500 thousandths.
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// What a REGISTER says about its AoR as a whole, read once.
struct Head<'a> {
    aor: String,
    call_id: &'a str,
    cseq: u32,
    /// Its `Supported` option tags.
    supported: Vec<String>,
    /// Its `Expires`, if well-formed.
    expires: Option<u32>,
    /// Its Contact values (`*` included).
    contacts: Vec<&'a str>,
}

impl Head<'_> {
    fn supports(&self, tag: &str) -> bool {
        self.supported.iter().any(|s| s.eq_ignore_ascii_case(tag))
    }
}

/// Which binding a Contact of the request names — the one test every step uses: an
/// Outbound Contact names the binding of its instance and reg-id (RFC 5626 section
/// 6), any other the binding with the same URI (RFC 3261 10.3 step 7).
struct SameBinding {
    /// Outbound is in use for this REGISTER (see [`outbound_in_use`]).
    outbound: bool,
    bound: Bound,
}

impl SameBinding {
    /// Whether `s` registers over Outbound.
    fn outbound(&self, s: &ContactSpec) -> bool {
        self.outbound && s.instance.is_some() && s.reg_id.is_some()
    }

    /// Whether Contact `s` names binding `b`.
    fn names(&self, b: &Binding, s: &ContactSpec) -> bool {
        if self.outbound(s) {
            b.instance == s.instance && b.reg_id == s.reg_id
        } else {
            self.bound.same(b, s)
        }
    }
}

/// Processes a REGISTER at `now` (see [`Registration`]). `gruus` makes temporary
/// GRUUs. The request is checked whole before anything changes (RFC 3261 10.3: a
/// refused REGISTER changes no binding), then each Contact is applied in order.
pub fn register(
    loc: &mut Location,
    Registration { req, to, source }: Registration<'_>,
    now: Instant,
    cfg: &RegistrarConfig,
    gruus: &TempGruus,
    changes: &mut Vec<Change>,
) -> Outcome {
    let head = match read_head(req, to, cfg) {
        Ok(h) => h,
        Err(refused) => return refused,
    };
    if head.contacts.iter().any(|c| c.trim() == "*") {
        return remove_all(loc, &head, now, cfg, gruus, changes);
    }
    let checked = read_contacts(loc, &head, cfg, gruus).and_then(|specs| {
        let path = path_of(req, &head, cfg)?;
        let outbound = outbound_in_use(req, &head, &path, &specs)?;
        let same = SameBinding {
            outbound,
            bound: Bound::default(),
        };
        check_room(loc, &head.aor, &specs, &same, cfg)?;
        check_order(loc, &head, &specs, &same)?;
        Ok((specs, path, same))
    });
    let (specs, path, same) = match checked {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let update = Update {
        head: &head,
        same: &same,
        reach: match source.flow {
            Some(id) => Reach::Flow(id),
            None => Reach::Udp {
                local: source.local,
                remote: source.remote,
            },
        },
        source,
        path: &path,
        user_agent: req.headers.get(&HeaderName::UserAgent).map(str::to_string),
        now,
        gruus,
    };
    let mut used_outbound = false;
    for s in specs {
        used_outbound |= same.outbound(&s);
        update.apply(loc, s, changes);
    }
    let echoed: &[String] = if head.supports("path") { &path } else { &[] };
    let gruu = head.supports("gruu").then_some(gruus);
    ok(loc, &head.aor, now, cfg, gruu, used_outbound, echoed)
}

/// The AoR, Call-ID, CSeq, options, Expires and Contacts of `req`, or why it is
/// refused before any of its Contacts is parsed.
fn read_head<'a>(
    req: &'a Request,
    to: &NameAddr,
    cfg: &RegistrarConfig,
) -> Result<Head<'a>, Outcome> {
    let aor = aor_of(&to.uri).ok_or_else(|| Outcome::err(404, "Not Found: AoR without user"))?;
    let cseq = req.cseq().map_err(|_| Outcome::err(400, "Bad CSeq"))?;
    let contacts: Vec<&str> = req.headers.values(&HeaderName::Contact).collect();
    // Every Contact is parsed and compared with the others and with every binding: bound
    // how many there are before any of that. More than the AoR may hold plus as many
    // removals cannot all be meant (only duplicates could make them fit).
    if contacts.len() > cfg.max_contacts.saturating_mul(2) {
        return Err(Outcome::err(403, "Too Many Contacts"));
    }
    Ok(Head {
        aor,
        call_id: req.call_id().unwrap_or(""),
        cseq: cseq.seq,
        supported: split_tokens(&req.headers, &HeaderName::Supported),
        // A malformed Expires is as good as none (RFC 3261 20.10 treats a malformed
        // `expires` as the default; a `Contact: *` then lacks its `Expires: 0`).
        expires: req
            .headers
            .get(&HeaderName::Expires)
            .and_then(delta_seconds),
        contacts,
    })
}

/// `Contact: *` removes every binding of the AoR, and only with `Expires: 0` (RFC
/// 3261 10.3 step 6).
fn remove_all(
    loc: &mut Location,
    head: &Head<'_>,
    now: Instant,
    cfg: &RegistrarConfig,
    gruus: &TempGruus,
    changes: &mut Vec<Change>,
) -> Outcome {
    if head.contacts.len() != 1 || head.expires != Some(0) {
        return Outcome::err(400, "Contact * needs Expires: 0 and no other Contact");
    }
    let bindings = loc.lookup(&head.aor);
    // A stale request aborts the whole update (10.3 step 6): checked before removing.
    if bindings
        .iter()
        .any(|b| b.call_id == head.call_id && b.cseq > head.cseq)
    {
        return Outcome::err(500, "Out of order CSeq");
    }
    let ids: Vec<u64> = bindings.iter().map(|b| b.id).collect();
    for id in ids {
        if let Some(b) = loc.remove_id(&head.aor, id) {
            changes.push(Change::Removed(b));
        }
    }
    let gruu = head.supports("gruu").then_some(gruus);
    ok(loc, &head.aor, now, cfg, gruu, false, &[])
}

/// The Contacts of the request, parsed and checked, one per binding: the same Contact
/// twice (compared as bindings are) is one binding, as the last copy says, and counts
/// once against `max-contacts`.
fn read_contacts(
    loc: &Location,
    head: &Head<'_>,
    cfg: &RegistrarConfig,
    gruus: &TempGruus,
) -> Result<Vec<ContactSpec>, Outcome> {
    let mut specs = Vec::with_capacity(head.contacts.len());
    for c in &head.contacts {
        specs.push(read_contact(loc, head, c, cfg, gruus)?);
    }
    let mut unique: Vec<ContactSpec> = Vec::with_capacity(specs.len());
    for s in specs.into_iter().rev() {
        if !unique
            .iter()
            .any(|u| u.uri == s.uri || same_uri(&u.parsed, &s.parsed))
        {
            unique.push(s);
        }
    }
    let mut specs = unique;
    specs.reverse();
    Ok(specs)
}

/// One Contact value of the request.
fn read_contact(
    loc: &Location,
    head: &Head<'_>,
    contact: &str,
    cfg: &RegistrarConfig,
    gruus: &TempGruus,
) -> Result<ContactSpec, Outcome> {
    let na = NameAddr::parse(contact).map_err(|_| Outcome::err(400, "Bad Contact"))?;
    if loops_back(&na.uri, &head.aor, loc, gruus) {
        return Err(Outcome::err(403, "Contact Is the AoR or One of Its GRUUs"));
    }
    // Malformed values count as the default (RFC 3261 20.10 says 3600, which is
    // `default-expires` unless the operator changed it).
    let expires = match param(&na.params, "expires") {
        Some(v) => v.and_then(delta_seconds).unwrap_or(cfg.default_expires),
        None => head.expires.unwrap_or(cfg.default_expires),
    };
    let q = match param(&na.params, "q") {
        Some(v) => Some(
            v.and_then(parse_q)
                .ok_or_else(|| Outcome::err(400, "Bad Contact q"))?,
        ),
        None => None,
    };
    let instance = param(&na.params, "+sip.instance").flatten().map(|v| {
        unquote(v)
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    });
    let reg_id = match param(&na.params, "reg-id") {
        Some(v) => Some(
            v.and_then(|v| v.parse::<u32>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| Outcome::err(400, "Bad Contact reg-id"))?,
        ),
        None => None,
    };
    // Too brief is refused only under an hour (RFC 3261 10.3 step 7): a longer
    // request below a `min-expires` set above an hour is granted the minimum.
    if expires != 0 && expires < cfg.min_expires && expires < 3600 {
        return Err(Outcome {
            status: 423,
            reason: None,
            headers: vec![(HeaderName::MinExpires, cfg.min_expires.to_string())],
        });
    }
    Ok(ContactSpec {
        uri: na.uri.to_string(),
        parsed: na.uri,
        expires: match expires {
            0 => 0,
            e => e.clamp(cfg.min_expires, cfg.max_expires),
        },
        q,
        instance,
        reg_id,
        params: other_params(&na.params),
    })
}

/// The request's Path. A Path the UA did not ask for was put there by a proxy on the
/// way: refused unless the operator stores it anyway (RFC 3327 5.3); then it is kept
/// and used, but the 200 only repeats it to a UA that knows the extension.
fn path_of(req: &Request, head: &Head<'_>, cfg: &RegistrarConfig) -> Result<Vec<String>, Outcome> {
    let path: Vec<String> = req
        .headers
        .values(&HeaderName::Path)
        .map(str::to_string)
        .collect();
    if !path.is_empty() && !head.supports("path") && !cfg.store_path_without_support {
        return Err(Outcome {
            status: 420,
            reason: None,
            headers: vec![(HeaderName::Unsupported, "path".into())],
        });
    }
    Ok(path)
}

/// Whether this REGISTER uses Outbound. That needs an instance, a reg-id and the
/// client's `Supported: outbound`, and a first hop that keeps the flow: us (a single
/// Via), or an edge proxy that says so with `ob` on the first Path URI (RFC 5626
/// section 6). A client asking for Outbound through a first hop that cannot do it gets
/// 439; without `Supported: outbound` its reg-id is ignored.
fn outbound_in_use(
    req: &Request,
    head: &Head<'_>,
    path: &[String],
    specs: &[ContactSpec],
) -> Result<bool, Outcome> {
    let wants_outbound = |s: &ContactSpec| s.instance.is_some() && s.reg_id.is_some();
    let first_hop_keeps_flows = || {
        req.headers.values(&HeaderName::Via).nth(1).is_none()
            || path
                .first()
                .and_then(|p| NameAddr::parse(p).ok())
                .is_some_and(|p| p.uri.as_sip().is_some_and(|u| u.param("ob").is_some()))
    };
    let outbound = head.supports("outbound") && first_hop_keeps_flows();
    if head.supports("outbound") && !outbound && specs.iter().any(wants_outbound) {
        return Err(Outcome {
            status: 439,
            reason: None,
            headers: Vec::new(),
        });
    }
    // A reg-id registers one instance over one flow: it cannot come with other
    // Contacts being registered (RFC 5626 section 6 says to refuse that with 400).
    let registering: Vec<&ContactSpec> = specs.iter().filter(|s| s.expires > 0).collect();
    if outbound && registering.len() > 1 && registering.iter().any(|s| wants_outbound(s)) {
        return Err(Outcome::err(
            400,
            "A reg-id Contact must be the only one registered",
        ));
    }
    Ok(outbound)
}

/// Bounds what one AoR holds (bindings kept plus bindings added, `max-contacts`) and
/// the registrar as a whole (bindings this REGISTER would add, not refresh,
/// `max-bindings`).
fn check_room(
    loc: &Location,
    aor: &str,
    specs: &[ContactSpec],
    same: &SameBinding,
    cfg: &RegistrarConfig,
) -> Result<(), Outcome> {
    let bindings = loc.lookup(aor);
    let kept = bindings
        .iter()
        .filter(|b| !specs.iter().any(|s| same.names(b, s)))
        .count();
    let added = specs.iter().filter(|s| s.expires > 0).count();
    if kept + added > cfg.max_contacts {
        return Err(Outcome::err(403, "Too Many Contacts"));
    }
    let before = bindings.len();
    if loc.len() - before + kept + added > cfg.max_bindings && kept + added > before {
        return Err(Outcome {
            status: 503,
            reason: Some("Registrar Full".into()),
            headers: vec![(HeaderName::RetryAfter, "60".into())],
        });
    }
    Ok(())
}

/// Refuses the whole REGISTER when a Contact names a binding a later request of the
/// same Call-ID made (RFC 3261 10.3 step 7). An equal CSeq is a retransmission
/// (requests ending here are answered statelessly): applying it again gives the same
/// bindings and answer.
fn check_order(
    loc: &Location,
    head: &Head<'_>,
    specs: &[ContactSpec],
    same: &SameBinding,
) -> Result<(), Outcome> {
    let stale = specs.iter().any(|s| {
        loc.lookup(&head.aor)
            .iter()
            .any(|b| same.names(b, s) && b.call_id == head.call_id && b.cseq > head.cseq)
    });
    if stale {
        return Err(Outcome::err(500, "Out of order CSeq"));
    }
    Ok(())
}

/// What every Contact of one checked REGISTER is applied with.
struct Update<'a> {
    head: &'a Head<'a>,
    same: &'a SameBinding,
    source: &'a Source,
    reach: Reach,
    path: &'a [String],
    user_agent: Option<String>,
    now: Instant,
    gruus: &'a TempGruus,
}

impl Update<'_> {
    /// Registers, refreshes or removes the binding Contact `s` names, recording what
    /// changed.
    fn apply(&self, loc: &mut Location, s: ContactSpec, changes: &mut Vec<Change>) {
        let aor = &self.head.aor;
        let existing: Vec<u64> = loc
            .lookup(aor)
            .iter()
            .filter(|b| self.same.names(b, &s))
            .map(|b| b.id)
            .collect();
        // A refresh of the one binding this contact has, over the same way in (most
        // REGISTERs) keeps that binding's id, so the location updates it in place.
        let kept = match existing[..] {
            [id] if s.expires != 0 => loc
                .lookup(aor)
                .iter()
                .find(|b| b.id == id && self.same.bound.same(b, &s) && b.reach == self.reach)
                .map(|b| (id, b.temp_gruu.clone(), b.call_id.clone())),
            _ => None,
        };
        // Kept, but written differently this time: the old text leaves the store (its
        // key), the binding stays under the new one.
        if let Some((id, _, _)) = kept
            && let Some(old) = loc
                .lookup(aor)
                .iter()
                .find(|b| b.id == id && b.contact != s.uri)
        {
            changes.push(Change::Removed(old.clone()));
        }
        // The binding this contact had (its temporary GRUU key and Call-ID).
        let mut previous: Option<(Option<String>, String)> = None;
        match &kept {
            Some((_, key, old_call_id)) => previous = Some((key.clone(), old_call_id.clone())),
            None => {
                for id in existing {
                    if let Some(b) = loc.remove_id(aor, id) {
                        if previous.is_none() {
                            previous = Some((b.temp_gruu.clone(), b.call_id.clone()));
                        }
                        // Replaced by another contact (a new flow of the same instance),
                        // or unregistered: either way this one is gone.
                        if s.expires == 0 || !self.same.bound.same(&b, &s) {
                            changes.push(Change::Removed(b));
                        }
                    }
                }
            }
        }
        if s.expires == 0 {
            return;
        }
        let outbound = self.same.outbound(&s);
        let refreshed = kept.is_some();
        let id = kept.map_or_else(|| loc.next_id(), |(id, _, _)| id);
        let temp_gruu = match (&s.instance, self.head.supports("gruu")) {
            (Some(inst), true) => Some(temp_gruu_key(
                loc,
                (aor, inst, id),
                previous,
                (self.head.call_id, outbound),
                self.gruus,
            )),
            _ => None,
        };
        // A new key invalidated the instance's earlier temporary GRUUs: its other
        // bindings take it too, so that the new ones reach all of them.
        if let (Some(inst), Some(key)) = (&s.instance, &temp_gruu) {
            let stale: Vec<Binding> = loc
                .lookup(aor)
                .iter()
                .filter(|o| {
                    o.id != id
                        && o.instance.as_ref() == Some(inst)
                        && o.temp_gruu.as_ref().is_some_and(|k| k != key)
                })
                .cloned()
                .collect();
            for mut o in stale {
                o.temp_gruu = Some(key.clone());
                changes.push(Change::Saved(o.clone()));
                loc.upsert(o);
            }
        }
        let b = Binding {
            id,
            aor: aor.clone(),
            contact: s.uri,
            q: s.q,
            expires_at: self.now + Duration::from_secs(u64::from(s.expires)),
            updated: self.now,
            call_id: self.head.call_id.to_string(),
            cseq: self.head.cseq,
            instance: s.instance,
            reg_id: if outbound { s.reg_id } else { None },
            path: self.path.to_vec(),
            params: s.params,
            reach: self.reach,
            transport: self.source.transport,
            temp_gruu,
            user_agent: self.user_agent.clone(),
        };
        changes.push(if refreshed {
            Change::Refreshed(b.clone())
        } else {
            Change::Saved(b.clone())
        });
        loc.upsert(b);
    }
}

/// Whether a Contact would send requests for `aor` back to it: the AoR itself (no port
/// of its own), its public GRUU, or one of its temporary GRUUs (RFC 5627 section 5.1
/// refuses these with 403: a routing loop).
fn loops_back(contact: &Uri, aor: &str, loc: &Location, gruus: &TempGruus) -> bool {
    let Some(u) = contact.as_sip() else {
        return false;
    };
    // The AoR's user part as `aor_of` writes it; a Contact with another user (written
    // without escapes) is not the AoR, and costs no allocation to tell.
    let aor_user = aor
        .strip_prefix("sip:")
        .and_then(|a| a.rsplit_once('@'))
        .map(|(user, _)| user);
    let may_be_aor = u.port.is_none()
        && u.user
            .as_deref()
            .is_some_and(|user| Some(user) == aor_user || user.contains('%'));
    if may_be_aor && aor_of(contact).is_some_and(|a| a == aor) {
        return true;
    }
    u.user
        .as_deref()
        .and_then(|user| gruus.open(user))
        .is_some_and(|o| loc.by_gruu_key(&o.index).any(|b| b.aor == aor))
}

/// The key for the temporary GRUUs of `instance` under `aor` (see [`super::gruu`]), for
/// binding `id` registered by a REGISTER with `call_id` (over Outbound or not) whose
/// contact had the binding `previous` (key, Call-ID).
///
/// RFC 5627 section 5.1: a REGISTER under another Call-ID than the last one of the
/// instance (of its flow, with Outbound) invalidates all the instance's temporary
/// GRUUs (a new key); so does the instance having had no binding left (5.3). Otherwise
/// the instance keeps its key, and every temporary GRUU handed out with it reaches all
/// of the instance's bindings.
fn temp_gruu_key(
    loc: &Location,
    (aor, instance, id): (&str, &str, u64),
    previous: Option<(Option<String>, String)>,
    (call_id, outbound): (&str, bool),
    gruus: &TempGruus,
) -> String {
    let siblings = || {
        loc.lookup(aor)
            .iter()
            .filter(move |b| b.instance.as_deref() == Some(instance) && b.id != id)
    };
    // Without Outbound the instance's last registration is its latest binding, even
    // under another Contact (a phone whose address changed).
    let previous = previous.or_else(|| {
        (!outbound)
            .then(|| siblings().max_by_key(|b| b.updated))
            .flatten()
            .map(|b| (b.temp_gruu.clone(), b.call_id.clone()))
    });
    match previous {
        Some((_, old_call_id)) if old_call_id != call_id => gruus.key(aor, instance, call_id, id),
        Some((Some(key), _)) => key,
        _ => siblings()
            .find_map(|b| b.temp_gruu.clone())
            .unwrap_or_else(|| gruus.key(aor, instance, call_id, id)),
    }
}

/// The 200 listing every current binding of `aor`.
fn ok(
    loc: &Location,
    aor: &str,
    now: Instant,
    cfg: &RegistrarConfig,
    gruu: Option<&TempGruus>,
    outbound: bool,
    path: &[String],
) -> Outcome {
    let domain = aor.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let mut headers = Vec::with_capacity(loc.lookup(aor).len() + 3 + path.len());
    let mut num = itoa::Buffer::new();
    for b in loc.lookup(aor) {
        // Written piece by piece: this is every REGISTER's answer.
        let mut v = String::with_capacity(b.contact.len() + 160);
        for part in [
            "<",
            b.contact.as_str(),
            ">;expires=",
            num.format(b.remaining(now).max(1)),
        ] {
            v.push_str(part);
        }
        if let Some(q) = b.q {
            v.push_str(";q=");
            push_q(&mut v, q);
        }
        v.push_str(&b.params);
        if let Some(inst) = &b.instance {
            for part in [";+sip.instance=\"<", inst.as_str(), ">\""] {
                v.push_str(part);
            }
            if let Some(r) = b.reg_id {
                v.push_str(";reg-id=");
                v.push_str(num.format(r));
            }
            if let Some(gruus) = gruu {
                for part in [";pub-gruu=\"", aor, ";gr=", inst.as_str(), "\""] {
                    v.push_str(part);
                }
                // The one this binding's last REGISTER was given (the same CSeq
                // gives the same GRUU).
                if let Some(t) = b
                    .temp_gruu
                    .as_deref()
                    .and_then(|key| gruus.issue(key, &b.call_id, b.cseq))
                {
                    for part in [";temp-gruu=\"sip:", t.as_str(), "@", domain, ";gr\""] {
                        v.push_str(part);
                    }
                }
            }
        }
        headers.push((HeaderName::Contact, v));
    }
    if outbound {
        headers.push((HeaderName::Require, "outbound".into()));
        headers.push((HeaderName::FlowTimer, cfg.flow_timer.to_string()));
    }
    for p in path {
        headers.push((HeaderName::Path, p.clone()));
    }
    // Not `gruu`: RFC 5627 section 5.2 asks the registrar to leave it out of the 200
    // (its GRUUs say it).
    headers.push((HeaderName::Supported, "outbound, path".into()));
    Outcome {
        status: 200,
        reason: None,
        headers,
    }
}

/// Appends a qvalue kept in thousandths as RFC 3261 writes it (`1`, `0.5`, `0.125`).
fn push_q(out: &mut String, q: u16) {
    if q >= 1000 {
        out.push('1');
        return;
    }
    out.push('0');
    let digits = [q / 100, q / 10 % 10, q % 10];
    let used = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    if used > 0 {
        out.push('.');
    }
    for &d in &digits[..used] {
        out.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Transport;
    use crate::core::gruu;
    use crate::sip::message::Message;
    use crate::sip::parse;

    fn src(flow: Option<u64>) -> Source {
        Source {
            transport: if flow.is_some() {
                Transport::Ws
            } else {
                Transport::Udp
            },
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            flow,
        }
    }

    fn reg(cseq: u32, extra: &str) -> Request {
        let text = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@localhost>;tag=1\r\nTo: <sip:alice@localhost>\r\nCall-ID: reg1\r\n\
             CSeq: {cseq} REGISTER\r\n{extra}\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn run(loc: &mut Location, r: &Request, flow: Option<u64>, now: Instant) -> Outcome {
        run_changes(loc, r, flow, now, &mut Vec::new())
    }
    /// [`run`], keeping the changes the registration made.
    fn run_changes(
        loc: &mut Location,
        r: &Request,
        flow: Option<u64>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        run_with(&RegistrarConfig::default(), loc, r, flow, now, changes)
    }
    /// [`run_changes`] under another configuration.
    fn run_with(
        cfg: &RegistrarConfig,
        loc: &mut Location,
        r: &Request,
        flow: Option<u64>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        register(
            loc,
            Registration {
                req: r,
                to: &r.get_to().unwrap(),
                source: &src(flow),
            },
            now,
            cfg,
            &TempGruus::new(&[1; 32]),
            changes,
        )
    }

    #[test]
    fn register_refresh_query_unregister() {
        let now = Instant::now();
        let mut loc = Location::new();
        let o = run(
            &mut loc,
            &reg(1, "Contact: <sip:a@x.invalid;transport=ws>;expires=600\r\n"),
            Some(5),
            now,
        );
        assert_eq!(o.status, 200);
        assert_eq!(
            o.headers[0],
            (
                HeaderName::Contact,
                "<sip:a@x.invalid;transport=ws>;expires=600".into()
            )
        );
        // Query: no Contact.
        let o = run(
            &mut loc,
            &reg(2, ""),
            Some(5),
            now + Duration::from_secs(100),
        );
        assert_eq!(o.headers[0].1, "<sip:a@x.invalid;transport=ws>;expires=500");
        // Refresh with the header Expires.
        let o = run(
            &mut loc,
            &reg(
                3,
                "Contact: <sip:a@x.invalid;transport=ws>\r\nExpires: 300\r\n",
            ),
            Some(5),
            now,
        );
        assert!(o.headers[0].1.ends_with("expires=300"));
        assert_eq!(loc.len(), 1);
        // Out of order.
        let o = run(
            &mut loc,
            &reg(2, "Contact: <sip:a@x.invalid;transport=ws>\r\n"),
            Some(5),
            now,
        );
        assert_eq!(o.status, 500);
        // Unregister.
        let o = run(
            &mut loc,
            &reg(4, "Contact: <sip:a@x.invalid;transport=ws>;expires=0\r\n"),
            Some(5),
            now,
        );
        assert_eq!(o.status, 200);
        assert!(loc.is_empty());
    }

    #[test]
    fn min_max_and_star() {
        let now = Instant::now();
        let mut loc = Location::new();
        let o = run(
            &mut loc,
            &reg(1, "Contact: <sip:a@1.2.3.4>;expires=10\r\n"),
            None,
            now,
        );
        assert_eq!(o.status, 423);
        assert_eq!(o.headers, vec![(HeaderName::MinExpires, "60".into())]);
        let o = run(
            &mut loc,
            &reg(2, "Contact: <sip:a@1.2.3.4>;expires=999999\r\n"),
            None,
            now,
        );
        assert!(o.headers[0].1.ends_with("expires=86400"));
        // Longer than any number: capped like any long value.
        let o = run(
            &mut loc,
            &reg(
                3,
                "Contact: <sip:a@1.2.3.4>;expires=99999999999999999999999999\r\n",
            ),
            None,
            now,
        );
        assert_eq!(o.status, 200);
        assert!(o.headers[0].1.ends_with("expires=86400"), "{:?}", o.headers);
        // Malformed values count as the default, 3600 (RFC 3261 20.10), in the Contact
        // or the Expires header.
        for (i, extra) in [
            "Contact: <sip:a@1.2.3.4>;expires=soon\r\n",
            "Contact: <sip:a@1.2.3.4>;expires\r\n",
            "Contact: <sip:a@1.2.3.4>\r\nExpires: -5\r\n",
        ]
        .into_iter()
        .enumerate()
        {
            let o = run(&mut loc, &reg(4 + i as u32, extra), None, now);
            assert_eq!(o.status, 200, "{extra}");
            assert!(
                o.headers[0].1.ends_with("expires=3600"),
                "{extra}: {:?}",
                o.headers
            );
        }
        run(&mut loc, &reg(7, "Contact: <sip:b@1.2.3.4>\r\n"), None, now);
        assert_eq!(loc.len(), 2);
        let o = run(&mut loc, &reg(8, "Contact: *\r\n"), None, now);
        assert_eq!(o.status, 400, "star needs Expires: 0");
        let o = run(
            &mut loc,
            &reg(8, "Contact: *\r\nExpires: zero\r\n"),
            None,
            now,
        );
        assert_eq!(o.status, 400, "star needs Expires: 0");
        // Older than b's registration (same Call-ID): aborted as a whole, a stays too.
        let o = run(&mut loc, &reg(2, "Contact: *\r\nExpires: 0\r\n"), None, now);
        assert_eq!(o.status, 500);
        assert_eq!(loc.len(), 2, "a stale * removes nothing");
        let o = run(&mut loc, &reg(9, "Contact: *\r\nExpires: 0\r\n"), None, now);
        assert_eq!(o.status, 200);
        assert!(loc.is_empty());
        assert_eq!(
            run(
                &mut loc,
                &reg(10, "Contact: <sip:a@1.2.3.4>;q=2\r\n"),
                None,
                now
            )
            .status,
            400
        );
    }

    #[test]
    fn outbound_instance_replaces_and_gruu() {
        let now = Instant::now();
        let mut loc = Location::new();
        let c = "Contact: <sip:x@a.invalid;transport=ws>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1\r\n\
                 Supported: path, gruu, outbound\r\n";
        let o = run(&mut loc, &reg(1, c), Some(1), now);
        assert_eq!(o.status, 200);
        assert!(
            o.headers
                .contains(&(HeaderName::Require, "outbound".into()))
        );
        assert!(o.headers.contains(&(HeaderName::FlowTimer, "120".into())));
        let contact = &o.headers[0].1;
        assert!(contact.contains(
            "pub-gruu=\"sip:alice@localhost;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6\""
        ));
        assert!(contact.contains("temp-gruu=\"sip:tgruu."));
        // Same instance and reg-id from a new flow (page reload, new Call-ID): replaced,
        // and the instance's temporary GRUUs take a new key (the old ones are invalid).
        let c2 = c.replace("sip:x@a.invalid", "sip:y@b.invalid");
        let key = loc.lookup("sip:alice@localhost")[0]
            .temp_gruu
            .clone()
            .unwrap();
        let r = reg(1, &c2).tap_call_id("reg2");
        let o = run(&mut loc, &r, Some(2), now);
        assert_eq!(o.status, 200);
        let all = loc.lookup("sip:alice@localhost");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].reach, Reach::Flow(2));
        let new_key = all[0].temp_gruu.clone().unwrap();
        assert_ne!(new_key, key);
        assert_eq!(gruu::index_key(&new_key), gruu::index_key(&key));
        assert!(loc.remove_flow(1).is_empty());
    }

    /// The temp-gruu a 200 lists for the Contact containing `needle`.
    fn temp_gruu_in(o: &Outcome, needle: &str) -> Option<String> {
        let (_, v) = o
            .headers
            .iter()
            .find(|(n, v)| *n == HeaderName::Contact && v.contains(needle))?;
        let (_, rest) = v.split_once(";temp-gruu=\"sip:")?;
        Some(rest.split_once('@')?.0.to_string())
    }

    #[test]
    fn a_contact_that_is_the_aor_or_one_of_its_gruus_is_refused() {
        let now = Instant::now();
        let mut loc = Location::new();
        let o = run(
            &mut loc,
            &reg(
                1,
                "Contact: <sip:f1@a.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\"\r\n\
                 Supported: gruu\r\n",
            ),
            Some(1),
            now,
        );
        let temp = temp_gruu_in(&o, "sip:f1@").unwrap();
        let looping = [
            "<sip:alice@localhost>".to_string(),
            "<sip:alice@LOCALHOST;transport=udp>".into(),
            "<sip:%61lice@localhost>".into(),
            "<sip:alice@localhost;gr=urn:uuid:1>".into(),
            format!("<sip:{temp}@localhost;gr>"),
        ];
        for contact in &looping {
            let o = run(
                &mut loc,
                &reg(2, &format!("Contact: {contact}\r\n")),
                None,
                now,
            );
            assert_eq!(o.status, 403, "{contact}");
        }
        assert_eq!(loc.lookup("sip:alice@localhost").len(), 1);
        // A port of its own, or another user at the domain, is somewhere else.
        for contact in ["<sip:alice@localhost:5070>", "<sip:bob@localhost>"] {
            let o = run(
                &mut loc,
                &reg(3, &format!("Contact: {contact}\r\n")),
                None,
                now,
            );
            assert_eq!(o.status, 200, "{contact}");
        }
    }

    #[test]
    fn without_outbound_a_new_call_id_of_the_instance_renews_its_temporary_gruus() {
        let now = Instant::now();
        let mut loc = Location::new();
        let phone = |host: &str| {
            format!(
                "Contact: <sip:alice@{host}>;+sip.instance=\"<urn:uuid:2>\"\r\n\
                 Supported: gruu\r\n"
            )
        };
        let key = |loc: &Location, host: &str| {
            loc.lookup("sip:alice@localhost")
                .iter()
                .find(|b| b.contact.contains(host))
                .and_then(|b| b.temp_gruu.clone())
                .unwrap()
        };
        run(&mut loc, &reg(1, &phone("10.0.0.1")), None, now);
        let first = key(&loc, "10.0.0.1");
        // Another address, same Call-ID (a phone that moved): same instance key.
        run(&mut loc, &reg(2, &phone("10.0.0.2")), None, now);
        assert_eq!(key(&loc, "10.0.0.2"), first);
        // Restarted (a new Call-ID) at yet another address: new key, for every
        // binding of the instance.
        let later = now + Duration::from_secs(1);
        run(
            &mut loc,
            &reg(1, &phone("10.0.0.3")).tap_call_id("rebooted"),
            None,
            later,
        );
        let renewed = key(&loc, "10.0.0.3");
        assert_ne!(renewed, first);
        assert_eq!(key(&loc, "10.0.0.1"), renewed);
        assert_eq!(key(&loc, "10.0.0.2"), renewed);
    }

    #[test]
    fn temporary_gruus_are_new_each_refresh_and_follow_the_call_id() {
        let now = Instant::now();
        let mut loc = Location::new();
        let gruus = TempGruus::new(&[1; 32]);
        let instance = "+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"";
        let flow = |n: u32| {
            format!(
                "Contact: <sip:f{n}@a.invalid;transport=ws>;{instance};reg-id={n}\r\n\
                 Supported: gruu, outbound\r\n"
            )
        };
        let reaches = |loc: &Location, user: &str| -> Vec<u64> {
            let Some(o) = gruus.open(user) else {
                return Vec::new();
            };
            let mut ids: Vec<u64> = loc
                .by_gruu_key(&o.index)
                .filter(|b| o.reaches(b.temp_gruu.as_deref().unwrap()))
                .map(|b| b.id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let first = run(&mut loc, &reg(1, &flow(1)), Some(1), now);
        let t1 = temp_gruu_in(&first, "sip:f1@").unwrap();
        // A refresh gets a new one; a retransmission the same one.
        let again = run(&mut loc, &reg(1, &flow(1)), Some(1), now);
        assert_eq!(temp_gruu_in(&again, "sip:f1@").unwrap(), t1);
        let refresh = run(&mut loc, &reg(2, &flow(1)), Some(1), now);
        let t2 = temp_gruu_in(&refresh, "sip:f1@").unwrap();
        assert_ne!(t1, t2);
        let id1 = loc.lookup("sip:alice@localhost")[0].id;
        assert_eq!(reaches(&loc, &t1), [id1]);
        assert_eq!(reaches(&loc, &t2), [id1]);
        // A second flow of the instance (its own reg-id and Call-ID) joins it: the
        // GRUUs reach both, and the 200 lists one for each Contact.
        let second = run(
            &mut loc,
            &reg(1, &flow(2)).tap_call_id("second-flow"),
            Some(2),
            now,
        );
        assert!(temp_gruu_in(&second, "sip:f1@").is_some());
        let t3 = temp_gruu_in(&second, "sip:f2@").unwrap();
        let ids: Vec<u64> = {
            let mut v: Vec<u64> = loc
                .lookup("sip:alice@localhost")
                .iter()
                .map(|b| b.id)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(ids.len(), 2);
        for t in [&t1, &t2, &t3] {
            assert_eq!(reaches(&loc, t), ids, "{t}");
        }
        // The first flow registers under a new Call-ID: every earlier one is invalid,
        // and the new one reaches both flows (the other binding took the new key,
        // saved to the store).
        let mut changes = Vec::new();
        let renewed = run_changes(
            &mut loc,
            &reg(1, &flow(1)).tap_call_id("restarted"),
            Some(1),
            now,
            &mut changes,
        );
        let t4 = temp_gruu_in(&renewed, "sip:f1@").unwrap();
        for t in [&t1, &t2, &t3] {
            assert!(reaches(&loc, t).is_empty(), "{t}");
        }
        assert_eq!(reaches(&loc, &t4), ids);
        let saved: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Saved(b) | Change::Refreshed(b) => Some(b.contact.as_str()),
                Change::Removed(_) => None,
            })
            .collect();
        assert!(saved.iter().any(|c| c.starts_with("sip:f2@")), "{saved:?}");
        // Gone when the instance's last binding goes, for good: registering again,
        // even under the same Call-ID, starts a new set (RFC 5627 5.3).
        loc.remove_flow(1);
        loc.remove_flow(2);
        assert!(reaches(&loc, &t4).is_empty());
        let back = run(
            &mut loc,
            &reg(2, &flow(1)).tap_call_id("restarted"),
            Some(3),
            now,
        );
        let t5 = temp_gruu_in(&back, "sip:f1@").unwrap();
        assert!(reaches(&loc, &t4).is_empty());
        assert_eq!(reaches(&loc, &t5).len(), 1);
        loc.remove_flow(3);
        // Without Supported: gruu, no GRUUs in the 200.
        let plain = run(
            &mut loc,
            &reg(3, &flow(1).replace("gruu, ", "")),
            Some(1),
            now,
        );
        assert_eq!(plain.status, 200);
        assert!(!plain.headers.iter().any(|(_, v)| v.contains("gruu")));
        assert!(
            first
                .headers
                .contains(&(HeaderName::Supported, "outbound, path".into()))
        );
    }

    #[test]
    fn a_path_the_ua_did_not_ask_for_is_refused_or_stored_as_configured() {
        let now = Instant::now();
        let path = "Path: <sip:edge.example.org;lr>, <sip:far.example.org;lr>\r\n\
                    Contact: <sip:alice@10.0.0.8>\r\n";
        let with = |cfg: &RegistrarConfig, loc: &mut Location, extra: &str| {
            run_with(cfg, loc, &reg(1, extra), None, now, &mut Vec::new())
        };
        let stored = |loc: &Location| {
            loc.lookup("sip:alice@localhost")
                .iter()
                .map(|b| b.path.clone())
                .collect::<Vec<_>>()
        };
        let both = vec![
            "<sip:edge.example.org;lr>".to_string(),
            "<sip:far.example.org;lr>".to_string(),
        ];
        let echoed = |o: &Outcome| {
            o.headers
                .iter()
                .filter(|(n, _)| *n == HeaderName::Path)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };

        // The UA knows the extension: stored, in order, and repeated in the 200.
        let mut loc = Location::new();
        let o = with(
            &RegistrarConfig::default(),
            &mut loc,
            &format!("Supported: path\r\n{path}"),
        );
        assert_eq!(o.status, 200);
        assert_eq!(echoed(&o), both);
        assert_eq!(stored(&loc), vec![both.clone()]);

        // It does not: 420 naming the extension, nothing bound (RFC 3327 5.3).
        let mut loc = Location::new();
        let o = with(&RegistrarConfig::default(), &mut loc, path);
        assert_eq!(o.status, 420);
        assert_eq!(o.headers, vec![(HeaderName::Unsupported, "path".into())]);
        assert!(loc.lookup("sip:alice@localhost").is_empty());

        // Stored anyway when the operator says so, but not shown to a UA that would
        // not understand it.
        let lazy = RegistrarConfig {
            store_path_without_support: true,
            ..RegistrarConfig::default()
        };
        let o = with(&lazy, &mut loc, path);
        assert_eq!(o.status, 200);
        assert!(echoed(&o).is_empty());
        assert_eq!(stored(&loc), vec![both]);

        // No Path at all needs no Supported.
        let mut loc = Location::new();
        let o = with(
            &RegistrarConfig::default(),
            &mut loc,
            "Contact: <sip:alice@10.0.0.8>\r\n",
        );
        assert_eq!(o.status, 200);
        assert_eq!(stored(&loc), vec![Vec::<String>::new()]);
    }

    #[test]
    fn the_registrar_as_a_whole_is_bounded_and_refreshes_always_work() {
        let now = Instant::now();
        let mut loc = Location::new();
        let cfg = RegistrarConfig {
            max_bindings: 2,
            ..RegistrarConfig::default()
        };
        let reg_of = |user: &str, cseq: u32, expires: u32| {
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{user}{cseq}\r\n\
                 From: <sip:{user}@localhost>;tag=1\r\nTo: <sip:{user}@localhost>\r\nCall-ID: c-{user}\r\n\
                 CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@10.0.0.1>;expires={expires}\r\n\r\n"
            );
            match parse(text.as_bytes()).unwrap() {
                Message::Request(r) => r,
                _ => unreachable!(),
            }
        };
        let mut changes = Vec::new();
        let mut go =
            |loc: &mut Location, r: &Request| run_with(&cfg, loc, r, None, now, &mut changes);
        assert_eq!(go(&mut loc, &reg_of("a", 1, 600)).status, 200);
        assert_eq!(go(&mut loc, &reg_of("b", 1, 600)).status, 200);
        let full = go(&mut loc, &reg_of("c", 1, 600));
        assert_eq!(full.status, 503);
        assert_eq!(
            full.headers,
            vec![(HeaderName::RetryAfter, "60".to_string())]
        );
        assert_eq!(loc.len(), 2);
        // A refresh and a removal still work; then there is room again.
        assert_eq!(go(&mut loc, &reg_of("a", 2, 600)).status, 200);
        assert_eq!(go(&mut loc, &reg_of("b", 2, 0)).status, 200);
        assert_eq!(go(&mut loc, &reg_of("c", 2, 600)).status, 200);
        assert_eq!(loc.len(), 2);
    }

    /// The worst Contact lists one message can carry cost time linear in their size:
    /// thousands of Contacts are refused before any is parsed, and Contacts with
    /// thousands of parameters each are compared without a quadratic walk.
    #[test]
    fn the_worst_contact_lists_are_answered_without_quadratic_work() {
        let now = Instant::now();
        let mut loc = Location::new();
        // 4,900 distinct Contacts in about 63 KB (the one-packet stall of issue 18).
        let many: Vec<String> = (0..4900).map(|i| format!("sip:{i}@h")).collect();
        let many = format!("Contact: {}\r\n", many.join(","));
        let o = run(&mut loc, &reg(1, &many), None, now);
        assert_eq!(o.status, 403, "{o:?}");
        // The same long Contact twice, 3,000 parameters each: one binding.
        let params: String = (0..3000).map(|i| format!(";p{i}=v")).collect();
        let long = format!("Contact: <sip:a@10.0.0.1{params}>\r\n");
        let o = run(&mut loc, &reg(2, &format!("{long}{long}")), None, now);
        assert_eq!(o.status, 200, "{o:?}");
        assert_eq!(loc.lookup("sip:alice@localhost").len(), 1);
        // And its refresh compares it with the stored one once per Contact.
        let o = run(&mut loc, &reg(3, &long), None, now);
        assert_eq!(o.status, 200, "{o:?}");
        assert_eq!(loc.lookup("sip:alice@localhost").len(), 1);
    }

    #[test]
    fn contact_parameters_are_kept_and_listed() {
        let now = Instant::now();
        let mut loc = Location::new();
        let c = "Contact: <sip:alice@10.0.0.8;transport=tcp>;+sip.ice;expires=600;\
                 +org.linphone.specs=\"groupchat,lime\";q=0.5;video\r\n";
        let o = run(&mut loc, &reg(1, c), None, now);
        assert_eq!(o.status, 200);
        assert_eq!(
            o.headers[0].1,
            "<sip:alice@10.0.0.8;transport=tcp>;expires=600;q=0.5\
             ;+sip.ice;+org.linphone.specs=\"groupchat,lime\";video"
        );
        // A refresh says what the binding has now: the tags it leaves out are gone.
        let c = "Contact: <sip:alice@10.0.0.8;transport=tcp>;expires=600;+sip.ice\r\n";
        let o = run(&mut loc, &reg(2, c), None, now);
        assert_eq!(
            o.headers[0].1,
            "<sip:alice@10.0.0.8;transport=tcp>;expires=600;+sip.ice"
        );
        assert_eq!(loc.lookup("sip:alice@localhost").len(), 1);
        // GRUUs a client wrote itself are not repeated next to ours.
        let c =
            "Contact: <sip:alice@10.0.0.8;transport=tcp>;pub-gruu=\"sip:x@y;gr\";expires=600\r\n";
        let o = run(&mut loc, &reg(3, c), None, now);
        assert_eq!(
            o.headers[0].1,
            "<sip:alice@10.0.0.8;transport=tcp>;expires=600"
        );
    }

    #[test]
    fn outbound_needs_a_first_hop_that_keeps_the_flow() {
        let now = Instant::now();
        let inst = "+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1";
        let via2 = "Via: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bKua\r\n";
        let contact = format!("Contact: <sip:alice@10.0.0.8>;{inst}\r\n");
        let require = |o: &Outcome| {
            o.headers
                .contains(&(HeaderName::Require, "outbound".into()))
        };

        // Through a proxy that put no Path with `ob`: 439 when the UA asks for Outbound.
        let mut loc = Location::new();
        for path in ["", "Path: <sip:edge.example.org;lr>\r\n"] {
            let o = run(
                &mut loc,
                &reg(
                    1,
                    &format!("{via2}{path}Supported: path, outbound\r\n{contact}"),
                ),
                None,
                now,
            );
            assert_eq!(o.status, 439, "{path}");
        }
        assert!(loc.lookup("sip:alice@localhost").is_empty());
        // Without Supported: outbound its reg-id is ignored: a plain binding.
        let o = run(
            &mut loc,
            &reg(1, &format!("{via2}Supported: path\r\n{contact}")),
            None,
            now,
        );
        assert_eq!(o.status, 200);
        assert!(!require(&o));
        assert_eq!(loc.lookup("sip:alice@localhost")[0].reg_id, None);
        // An edge that keeps the flow says so with `ob`: Outbound applies.
        let mut loc = Location::new();
        let o = run(
            &mut loc,
            &reg(
                1,
                &format!(
                    "{via2}Path: <sip:edge.example.org;lr;ob>\r\nSupported: path, outbound\r\n{contact}"
                ),
            ),
            None,
            now,
        );
        assert_eq!(o.status, 200);
        assert!(require(&o));
        assert_eq!(loc.lookup("sip:alice@localhost")[0].reg_id, Some(1));

        // Directly to us, a reg-id Contact registers alone (RFC 5626 section 6: 400).
        let mut loc = Location::new();
        let two = format!("{contact}Contact: <sip:alice@10.0.0.9>\r\nSupported: outbound\r\n");
        assert_eq!(run(&mut loc, &reg(1, &two), None, now).status, 400);
        assert!(loc.lookup("sip:alice@localhost").is_empty());
        // Removing another Contact in the same request is fine.
        let one_and_removal =
            format!("{contact}Contact: <sip:alice@10.0.0.9>;expires=0\r\nSupported: outbound\r\n");
        let o = run(&mut loc, &reg(1, &one_and_removal), None, now);
        assert_eq!(o.status, 200);
        assert!(require(&o));
    }

    #[test]
    fn a_minimum_above_an_hour_raises_long_requests_instead_of_refusing_them() {
        let now = Instant::now();
        let cfg = RegistrarConfig {
            min_expires: 7200,
            default_expires: 7200,
            ..RegistrarConfig::default()
        };
        let mut loc = Location::new();
        let mut go = |cseq, expires: &str| {
            let r = reg(
                cseq,
                &format!("Contact: <sip:alice@10.0.0.8>;expires={expires}\r\n"),
            );
            run_with(&cfg, &mut loc, &r, None, now, &mut Vec::new())
        };
        // Under an hour: 423 with the minimum.
        let o = go(1, "1800");
        assert_eq!(o.status, 423);
        assert_eq!(o.headers, vec![(HeaderName::MinExpires, "7200".into())]);
        // An hour or more: granted, raised to the minimum (RFC 3261 10.3 step 7).
        let o = go(2, "3600");
        assert_eq!(o.status, 200);
        assert_eq!(o.headers[0].1, "<sip:alice@10.0.0.8>;expires=7200");
        // Removal is still removal.
        let o = go(3, "0");
        assert_eq!(o.status, 200);
        assert!(o.headers.iter().all(|(n, _)| *n != HeaderName::Contact));
    }

    trait TapCallId {
        fn tap_call_id(self, id: &str) -> Self;
    }

    impl TapCallId for Request {
        fn tap_call_id(mut self, id: &str) -> Self {
            self.headers.first_mut(&HeaderName::CallId).unwrap().value = id.into();
            self
        }
    }

    #[test]
    fn aors_compare_with_escapes_resolved() {
        let aor = |s: &str| aor_of(&Uri::parse(s).unwrap()).unwrap();
        assert_eq!(
            aor("sip:%61lice@Example.ORG:5070;transport=tcp"),
            "sip:alice@example.org"
        );
        assert_eq!(
            aor("sips:%2b15550100@example.org"),
            "sip:+15550100@example.org"
        );
        assert_eq!(aor("sip:a%40b%3c@example.org"), "sip:a%40b%3C@example.org");
        assert_eq!(aor("sip:a%2fb%3F@example.org"), "sip:a/b?@example.org");
        assert_eq!(aor("sip:a%e9b@example.org"), "sip:a%E9b@example.org");
        // A lone % (refused by the URI parser elsewhere) is kept as it is.
        assert_eq!(aor("sip:100%25@example.org"), "sip:100%25@example.org");
    }

    #[test]
    fn a_contact_given_twice_is_one_binding_as_the_last_copy_says() {
        let now = Instant::now();
        let mut loc = Location::new();
        let max = RegistrarConfig::default().max_contacts;
        // More copies of one Contact than an AoR may hold bindings: one binding.
        let mut extra = "Contact: <sip:b@1.2.3.4>\r\n".to_string();
        for i in 0..max {
            extra.push_str(&format!("Contact: <sip:a@1.2.3.4>;expires={}\r\n", 600 + i));
        }
        let o = run(&mut loc, &reg(1, &extra), None, now);
        assert_eq!(o.status, 200, "{o:?}");
        assert_eq!(loc.len(), 2);
        let last = format!("expires={}", 600 + max - 1);
        assert!(
            o.headers
                .iter()
                .any(|(_, v)| v.starts_with("<sip:a@1.2.3.4>") && v.ends_with(&last)),
            "{:?}",
            o.headers
        );
    }

    #[test]
    fn contacts_match_as_uris_not_as_text() {
        let now = Instant::now();
        let mut loc = Location::new();
        let o = run(
            &mut loc,
            &reg(
                1,
                "Contact: <sip:a@phone.example.org:5070;transport=udp;x=1>\r\n",
            ),
            None,
            now,
        );
        assert_eq!(o.status, 200);
        // A refresh with the host in capitals and the parameters in another order, then
        // an unregistration written yet another way: one binding, then none.
        let mut changes = Vec::new();
        let r = reg(
            2,
            "Contact: <sip:a@PHONE.example.org:5070;x=1;Transport=UDP>\r\n",
        );
        let o = run_changes(&mut loc, &r, None, now, &mut changes);
        assert_eq!(o.status, 200);
        assert_eq!(loc.len(), 1);
        // The old text leaves the store; the binding is saved under the new one.
        assert!(
            matches!(&changes[..], [Change::Removed(old), Change::Refreshed(new)]
            if old.contact.contains("phone.example.org") && new.contact.contains("PHONE"))
        );
        let o = run(
            &mut loc,
            &reg(
                3,
                "Contact: <sip:%61@phone.example.org:5070;transport=udp>;expires=0\r\n",
            ),
            None,
            now,
        );
        assert_eq!(o.status, 200);
        assert!(loc.is_empty());
        // Another port is another binding.
        run(
            &mut loc,
            &reg(4, "Contact: <sip:a@phone.example.org>\r\n"),
            None,
            now,
        );
        run(
            &mut loc,
            &reg(5, "Contact: <sip:a@phone.example.org:5060>\r\n"),
            None,
            now,
        );
        assert_eq!(loc.len(), 2);
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        let q = |v| {
            let mut s = String::new();
            push_q(&mut s, v);
            s
        };
        assert_eq!(q(500), "0.5");
        assert_eq!(q(1000), "1");
        assert_eq!(q(0), "0");
        assert_eq!(q(125), "0.125");
        assert_eq!(q(50), "0.05");
        assert_eq!(q(7), "0.007");
        for v in [0, 1, 10, 99, 100, 333, 999, 1000] {
            assert_eq!(parse_q(&q(v)), Some(v), "{v}");
        }
    }
}
