//! "Is this host name us?": the configured domains and listen addresses (sans-IO).

use std::net::{IpAddr, SocketAddr};

use crate::sip::uri::{Host, SipUri};

/// The names and addresses that identify this server.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    domains: Vec<String>,
    addrs: Vec<SocketAddr>,
}

impl Myself {
    /// Built from the configured domains and the (bound) listen addresses.
    pub fn new(domains: &[String], addrs: &[SocketAddr]) -> Self {
        Self {
            domains: domains
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            addrs: addrs.to_vec(),
        }
    }

    /// Whether `host` (as in an HTTP `Host` header: `name`, `name:port`, `1.2.3.4:5`,
    /// `[::1]:8080`, or a bare `::1`) names this server. With a port, the port must be
    /// one we listen on.
    pub fn is_myself(&self, host: &str) -> bool {
        let host = host.trim();
        if host.is_empty() {
            return false;
        }
        // A bare IPv6 address (more than one colon, no brackets).
        if !host.starts_with('[')
            && host.matches(':').count() > 1
            && let Ok(ip) = host.parse::<IpAddr>()
        {
            return self.is_my_ip(ip);
        }
        match crate::sip::uri::split_host_port(host) {
            Ok((h, port)) => self.matches(&h, port),
            Err(_) => false,
        }
    }

    /// Whether a SIP URI's host and port are ours.
    pub fn is_myself_uri(&self, uri: &SipUri) -> bool {
        self.matches(&uri.host, uri.port)
    }

    /// Whether a URI's host is one of our domains or addresses, whatever its port.
    pub fn is_my_host(&self, uri: &SipUri) -> bool {
        self.matches(&uri.host, None)
    }

    fn matches(&self, host: &Host, port: Option<u16>) -> bool {
        let host_ok = match host {
            Host::Name(n) => {
                let n = n.trim_end_matches('.');
                self.domains.iter().any(|d| d.eq_ignore_ascii_case(n))
            }
            other => {
                let ip = other.ip().expect("V4/V6 hosts have an IP");
                self.is_my_ip(ip)
            }
        };
        host_ok && port.is_none_or(|p| self.addrs.iter().any(|a| a.port() == p))
    }

    fn is_my_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.domains
            .iter()
            .any(|d| d.parse::<IpAddr>().is_ok_and(|a| canonical(a) == ip))
            || self.addrs.iter().any(|a| {
                let l = canonical(a.ip());
                l == ip || (l.is_unspecified() && ip.is_loopback())
            })
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Myself {
        Myself::new(
            &["Example.org".into(), "192.0.2.7".into()],
            &[
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:8443".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn names_addresses_ports() {
        let m = me();
        for yes in [
            "example.org",
            "EXAMPLE.ORG.",
            "example.org:8080",
            "example.org:8443",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:8443",
            "::1",
            "192.0.2.7",
        ] {
            assert!(m.is_myself(yes), "{yes}");
        }
        for no in [
            "evil.org",
            "example.org:9999",
            "example.org.evil",
            "127.0.0.2",
            "[::2]",
            "",
            "a b",
            "example.org:",
        ] {
            assert!(!m.is_myself(no), "{no}");
        }
    }
}
