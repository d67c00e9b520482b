//! `call-policy`: an example `sip-router` plugin. Called for each new out-of-dialog
//! SIP request before the default registrar/proxy behaviour:
//!
//! ```text
//! a request that must authenticate, without
//!   valid credentials                            -> challenge (401/407), 403 if wrong
//! INVITE/MESSAGE to a blocked number            -> 403 Blocked
//! a Request-URI user with a relay prefix        -> relay to sip:<user>@<address>
//! an INVITE that goes on, with `media` set      -> that media choice for the call
//! OPTIONS sip:whereis@<our domain>, X-Lookup: A -> 200 with one Contact per binding of A
//! anything else                                 -> continue (registrar, proxy)
//! ```
//!
//! and, for each connection that carried SIP and closed, a log line naming it and the
//! addresses-of-record that lost bindings with it.
//!
//! Plugin configuration (the `config` table of the plugin in the server config):
//!
//! ```toml
//! blocked = ["+15550100", "666"]            # Request-URI user parts refused with 403
//! relay = { "9" = "127.0.0.1:5070" }        # user prefix -> next hop (host:port[;transport=tcp],
//!                                           # or "gw:NAME": a [[gateways]] set of the server)
//!
//! [media]                                   # the media of the calls it lets through (optional)
//! relay = "direct"                          # "configured" (media.mode), "relay" or "direct"
//! toward-webrtc = ["codec-offer-opus"]      # rtpengine flags added toward browsers
//! toward-plain = []                         # ... and toward phones
//!
//! [auth]                                    # Digest authentication (optional)
//! realm = "sipwasm"
//! methods = ["REGISTER", "INVITE", "MESSAGE"]
//! users = { alice = "secret" }              # optional: without it, the server's user
//!                                           # store (`sipwasm user add`) is checked
//! ```
//!
//! A REGISTER must be for the authenticated user's own address-of-record. A request on
//! a connection the host holds to its user (`identity = "enforce"` on a WebSocket
//! listener whose plugin logged the user in) needs no challenge.

use std::collections::BTreeMap;

use serde::Deserialize;
use sipwasm_plugin::Level;
use sipwasm_plugin::host;
use sipwasm_plugin::sip::{
    ClosedFlow, MediaChoice, Relay, SipDecision, SipRequest, SipRequestExt, SipTransport, Verdict,
    challenge, digest, lookup, media, relay, reply,
};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    blocked: Vec<String>,
    #[serde(default)]
    relay: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    media: Option<Media>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Media {
    #[serde(default = "configured")]
    relay: String,
    #[serde(default)]
    toward_webrtc: Vec<String>,
    #[serde(default)]
    toward_plain: Vec<String>,
}

fn configured() -> String {
    "configured".into()
}

/// Tells the host how the media of an INVITE that goes on goes; a choice the host
/// refuses is logged (the call goes on as configured).
fn choose_media(media: &Media, req: &SipRequest) {
    if req.method != "INVITE" {
        return;
    }
    let relay = match media.relay.as_str() {
        "relay" => Relay::Relay,
        "direct" => Relay::Direct,
        _ => Relay::Configured,
    };
    let choice = MediaChoice {
        relay,
        toward_webrtc: media.toward_webrtc.clone(),
        toward_plain: media.toward_plain.clone(),
    };
    if let Err(e) = media::choose(&choice) {
        host::log(Level::Warn, &format!("media choice refused: {e}"));
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Auth {
    realm: String,
    methods: Vec<String>,
    /// Passwords in the configuration; `None`: the server's user store.
    #[serde(default)]
    users: Option<BTreeMap<String, String>>,
}

/// `None` when the request may go on; else the decision that stops it.
fn authenticate(auth: &Auth, req: &SipRequest) -> Option<SipDecision> {
    if !auth
        .methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&req.method))
    {
        return None;
    }
    // A connection the host holds to its user (a login at the WebSocket upgrade, with
    // `identity = "enforce"`): proven already, and the host refuses anything on it for
    // or from anyone else.
    if digest::proven_user().is_some() {
        return None;
    }
    let Some(user) = digest::username(&auth.realm) else {
        return Some(challenge(&auth.realm));
    };
    let verdict = match &auth.users {
        Some(users) => {
            let Some(password) = users.get(&user) else {
                host::log(
                    Level::Warn,
                    &format!("unknown user {user:?} in realm {}", auth.realm),
                );
                return Some(reply(403).reason("Unknown User").into());
            };
            digest::verify(&auth.realm, password)
        }
        // The store answers an unknown user as a wrong password.
        None => digest::verify_stored(&auth.realm),
    };
    match verdict {
        Verdict::Valid => {}
        Verdict::Stale | Verdict::Missing => return Some(challenge(&auth.realm)),
        Verdict::Invalid => {
            host::log(Level::Warn, &format!("wrong credentials for {user:?}"));
            return Some(reply(403).reason("Wrong Credentials").into());
        }
    }
    // A user registers its own address-of-record only.
    if req.method.eq_ignore_ascii_case("REGISTER") && req.user_in_to() != Some(user.as_str()) {
        return Some(reply(403).reason("Not Your Address").into());
    }
    None
}

fn transport_name(t: SipTransport) -> &'static str {
    match t {
        SipTransport::Udp => "udp",
        SipTransport::Tcp => "tcp",
        SipTransport::Tls => "tls",
        SipTransport::Ws => "ws",
        SipTransport::Wss => "wss",
    }
}

/// Decides a new request.
fn route(req: SipRequest, settings: &Settings) -> SipDecision {
    if let Some(auth) = &settings.auth
        && let Some(stop) = authenticate(auth, &req)
    {
        return stop;
    }
    if let Some(m) = &settings.media {
        // Decided first: a reply below makes it moot.
        choose_media(m, &req);
    }
    let Some(user) = req.ruri_user() else {
        return SipDecision::Continue;
    };
    if user == "whereis" && req.method == "OPTIONS" && req.ruri_is_ours() {
        let Some(aor) = req.header("X-Lookup") else {
            return reply(400).reason("X-Lookup Missing").into();
        };
        let mut found = reply(200);
        for c in lookup(aor) {
            let value = format!(
                "<{}>;expires={};transport-used={}",
                c.uri,
                c.expires,
                transport_name(c.transport)
            );
            found = found.header("Contact", &value);
        }
        return found.into();
    }
    if matches!(req.method.as_str(), "INVITE" | "MESSAGE")
        && settings.blocked.iter().any(|b| b == user)
    {
        host::log(
            Level::Info,
            &format!(
                "blocked {} to {user} from {}:{}",
                req.method, req.source.remote_addr, req.source.remote_port
            ),
        );
        return reply(403).reason("Blocked").into();
    }
    // The longest matching prefix wins.
    if let Some((_, next_hop)) = settings
        .relay
        .iter()
        .filter(|(prefix, _)| user.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
    {
        // A gateway set (`[[gateways]]`): the host puts the user at the member it picks.
        if next_hop.starts_with("gw:") {
            return relay(next_hop.clone());
        }
        return relay(format!("sip:{user}@{next_hop}"));
    }
    SipDecision::Continue
}

/// Logs a connection that carried SIP and closed, with the AoRs that lost bindings.
fn closed(closed: ClosedFlow, _settings: &Settings) {
    let f = &closed.flow;
    let who = f
        .identity
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    host::log(
        Level::Info,
        &format!(
            "flow closed: {} {}:{} connection {} identity [{who}] bindings lost: [{}]",
            transport_name(f.transport),
            f.remote_addr,
            f.remote_port,
            f.connection_id.map_or("-".to_string(), |c| c.to_string()),
            closed.aors.join(", ")
        ),
    );
}

sipwasm_plugin::sip::router!(route, closed = closed, config = Settings);
