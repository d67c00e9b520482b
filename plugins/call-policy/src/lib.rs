//! `call-policy`: an example `sip-router` plugin. Called for each new out-of-dialog
//! SIP request before the default registrar/proxy behaviour:
//!
//! ```text
//! a request that must authenticate, without
//!   valid credentials                            -> challenge (401/407), 403 if wrong
//! INVITE/MESSAGE to a blocked number            -> 403 Blocked
//! a Request-URI user with a relay prefix        -> relay to sip:<user>@<address>
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
//! relay = { "9" = "127.0.0.1:5070" }        # user prefix -> next hop (host:port[;transport=tcp])
//!
//! [auth]                                    # Digest authentication (optional)
//! realm = "sipwasm"
//! methods = ["REGISTER", "INVITE", "MESSAGE"]
//! users = { alice = "secret" }              # a REGISTER must be for the user's own AoR
//! ```

// wit-bindgen's lowering of the `flow` record passes each field as an argument.
#![allow(clippy::too_many_arguments)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    world: "sip-router",
    path: "../../wit",
});

use sipwasm::plugin::digest::{self, Verdict};
use sipwasm::plugin::host::{self, Level};
use sipwasm::plugin::registrar;
use sipwasm::plugin::sip_types::{SipReply, SipTransport};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    blocked: Vec<String>,
    #[serde(default)]
    relay: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<Auth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Auth {
    realm: String,
    methods: Vec<String>,
    users: BTreeMap<String, String>,
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
    let Some(user) = digest::username(&auth.realm) else {
        return Some(SipDecision::Challenge(auth.realm.clone()));
    };
    let Some(password) = auth.users.get(&user) else {
        host::log(
            Level::Warn,
            &format!("unknown user {user:?} in realm {}", auth.realm),
        );
        return Some(reply(403, "Unknown User", vec![]));
    };
    match digest::verify(&auth.realm, password) {
        Verdict::Valid => {}
        Verdict::Stale | Verdict::Missing => {
            return Some(SipDecision::Challenge(auth.realm.clone()));
        }
        Verdict::Invalid => {
            host::log(Level::Warn, &format!("wrong credentials for {user:?}"));
            return Some(reply(403, "Wrong Credentials", vec![]));
        }
    }
    // A user registers its own address-of-record only.
    if req.method.eq_ignore_ascii_case("REGISTER") {
        let to = header(req, "To").unwrap_or("");
        let aor_user = to
            .find("sip:")
            .and_then(|i| user_of(to[i..].trim_end_matches(['>', ' '])));
        if aor_user != Some(user.as_str()) {
            return Some(reply(403, "Not Your Address", vec![]));
        }
    }
    None
}

/// Read once per instance: the host hands every call of an instance the same table.
fn settings() -> &'static Result<Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        serde_json::from_str(&host::plugin_config()).map_err(|e| format!("plugin config: {e}"))
    })
}

/// The user part of a SIP URI (`sip:+1555@host;x=y` -> `+1555`), if it has one.
fn user_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let at = rest.find('@')?;
    let user = &rest[..at];
    // A password (`user:pw@`) is not part of the number.
    Some(user.split(':').next().unwrap_or(user))
}

/// The host part of a SIP URI, without port and parameters.
fn host_of(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .unwrap_or(uri);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    &rest[..end]
}

fn header<'a>(req: &'a SipRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn reply(status: u16, reason: &str, headers: Vec<(String, String)>) -> SipDecision {
    SipDecision::Reply(SipReply {
        status,
        reason: Some(reason.to_string()),
        headers,
    })
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

struct CallPolicy;

impl Guest for CallPolicy {
    fn on_sip_request(req: SipRequest) -> SipDecision {
        let settings = match settings() {
            Ok(s) => s,
            Err(e) => {
                host::log(Level::Error, e);
                return reply(500, "Plugin Misconfigured", vec![]);
            }
        };
        if let Some(auth) = &settings.auth
            && let Some(stop) = authenticate(auth, &req)
        {
            return stop;
        }
        let Some(user) = user_of(&req.request_uri) else {
            return SipDecision::Continue;
        };
        let ours = host::is_myself(host_of(&req.request_uri));
        if ours && user == "whereis" && req.method == "OPTIONS" {
            let Some(aor) = header(&req, "X-Lookup") else {
                return reply(400, "X-Lookup Missing", vec![]);
            };
            let contacts = registrar::lookup(aor)
                .into_iter()
                .map(|c| {
                    (
                        "Contact".to_string(),
                        format!(
                            "<{}>;expires={};transport-used={}",
                            c.uri,
                            c.expires,
                            transport_name(c.transport)
                        ),
                    )
                })
                .collect();
            return reply(200, "OK", contacts);
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
            return reply(403, "Blocked", vec![]);
        }
        // The longest matching prefix wins.
        if let Some((_, next_hop)) = settings
            .relay
            .iter()
            .filter(|(prefix, _)| user.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
        {
            return SipDecision::Relay(format!("sip:{user}@{next_hop}"));
        }
        SipDecision::Continue
    }

    fn on_flow_closed(closed: ClosedFlow) {
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
}

export!(CallPolicy);
