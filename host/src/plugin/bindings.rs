//! The `bindgen!` of the host, over `wit/`: one per world, sharing the interfaces they
//! have in common. Everything else imports the curated names re-exported here.

/// Makes cargo rebuild the host when the contract changes: `bindgen!` reads `wit/`
/// but an incremental build does not always notice (a WIT change once left a stale host
/// that refused freshly built plugins).
const _WIT: &str = include_str!("../../../wit/plugin.wit");

mod generated {
    #![allow(missing_docs, reason = "bindgen-generated code")]
    #![allow(unsafe_code, reason = "bindgen-generated typed function handles")]
    #![allow(unreachable_pub, reason = "bindgen-generated code")]

    wasmtime::component::bindgen!({
        world: "http-handler",
        path: "../wit",
        // Plugin calls run on a fiber so that a runaway plugin yields to other
        // connections at every epoch tick; host functions are quick and synchronous.
        exports: { default: async },
    });

    pub mod sip {
        wasmtime::component::bindgen!({
            world: "sip-router",
            path: "../wit",
            exports: { default: async },
            // In a cluster a lookup asks the shared store.
            imports: { "sipwasm:plugin/registrar.lookup": async },
            with: {
                "sipwasm:plugin/host": super::sipwasm::plugin::host,
                "sipwasm:plugin/types": super::sipwasm::plugin::types,
                "sipwasm:plugin/digest": super::sipwasm::plugin::digest,
                "sipwasm:plugin/keys": super::sipwasm::plugin::keys,
                "sipwasm:plugin/credentials": super::sipwasm::plugin::credentials,
            },
        });
    }
}

pub use generated::HttpHandler;
pub use generated::HttpHandlerPre;
pub use generated::sip::sipwasm::plugin::media::{
    Host as MediaImports, MediaChoice as GuestMediaChoice, Relay as GuestRelay,
};
pub use generated::sip::sipwasm::plugin::registrar::Host as RegistrarImports;
pub use generated::sip::sipwasm::plugin::sip_types::{
    ClosedFlow, Contact, Flow, Host as SipTypesImports, SipAddress,
    SipDecision as GuestSipDecision, SipReply as GuestSipReply, SipRequest, SipTransport,
};
pub use generated::sip::{SipRouter, SipRouterPre};
pub use generated::sipwasm::plugin::credentials::Host as CredentialsImports;
pub use generated::sipwasm::plugin::digest::{Host as DigestImports, Verdict as DigestVerdictWit};
pub use generated::sipwasm::plugin::host::{Host as HostImports, Level};
pub use generated::sipwasm::plugin::keys::Host as KeysImports;
pub use generated::sipwasm::plugin::types::{
    Challenge as GuestChallenge, Decision as GuestDecision, Host as TypesImports, HttpRequest,
    Peer, Response as GuestResponse, Transport as PeerTransport, Upgrade as GuestUpgrade,
    Websocket,
};
