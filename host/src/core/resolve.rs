//! Next hops named by a host name (RFC 3263). The core does no DNS: a branch, or a
//! stateless ACK, whose next hop is a name waits while the shell resolves it
//! ([`super::Core::poll_resolve`]); the ordered targets come back as an input
//! ([`super::Input::Resolved`]) and the branch tries them in turn, moving to the next
//! on a timeout, a transport error or a 503 (RFC 3263 section 4.3).

use std::net::SocketAddr;

use super::Transport;

/// A next hop to resolve: the host of a SIP URI that is not an address, with what the
/// URI fixes of the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedHop {
    /// The host name, lower case, without a trailing dot.
    pub host: String,
    /// The URI's port: no NAPTR or SRV lookup then (RFC 3263 4.2).
    pub port: Option<u16>,
    /// The URI's `transport` parameter: no NAPTR lookup then (4.1).
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS only.
    pub secure: bool,
}

impl std::fmt::Display for NamedHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(t) = self.transport {
            write!(f, ";transport={}", t.via_token().to_ascii_lowercase())?;
        }
        Ok(())
    }
}

/// A name the core waits on ([`super::Core::poll_resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// The id [`super::Input::Resolved`] carries back.
    pub id: u64,
    /// What to resolve.
    pub hop: NamedHop,
}

/// One place a named next hop resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolvedTarget {
    /// Over which transport.
    pub transport: Transport,
    /// Where.
    pub addr: SocketAddr,
    /// Over TLS, the shell's key for the name the certificate must prove (the host
    /// of the URI that was resolved, RFC 5922); 0 over UDP and TCP.
    pub name: u64,
}

/// What came of a [`ResolveRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// The targets in the order RFC 3263 gives them (SRV priority, weights drawn),
    /// at least one.
    Targets(Vec<ResolvedTarget>),
    /// No target: the name does not exist, has no usable records, or no server
    /// answered; the reason for the log and the Warning header.
    Failed(String),
}
