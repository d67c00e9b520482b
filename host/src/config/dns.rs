//! `[dns]`: how next hops named by a host name are resolved (RFC 3263: NAPTR, SRV,
//! A/AAAA).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Invalid;

/// `[dns]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsConfig {
    /// Name servers (`"IP:PORT"`, or an IP for port 53), asked in order; empty: those
    /// of `/etc/resolv.conf`.
    #[serde(default, deserialize_with = "servers")]
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for its answer.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Tries of one query (over the servers in turn) before the name fails.
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Most names (with their records) kept resolved; each for its records' TTL.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Longest a resolved name is kept, whatever its TTL says.
    #[serde(default = "default_max_ttl", with = "duration")]
    pub max_ttl: Duration,
    /// How long a name that did not resolve is remembered so (a negative answer's
    /// own TTL when shorter).
    #[serde(default = "default_negative_ttl", with = "duration")]
    pub negative_ttl: Duration,
    /// Most names being resolved at once; requests for more get 500 at once.
    #[serde(default = "default_max_lookups")]
    pub max_lookups: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: default_timeout(),
            attempts: default_attempts(),
            cache_size: default_cache_size(),
            max_ttl: default_max_ttl(),
            negative_ttl: default_negative_ttl(),
            max_lookups: default_max_lookups(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_attempts() -> usize {
    2
}

fn default_cache_size() -> usize {
    4096
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_max_lookups() -> usize {
    256
}

/// `"IP:PORT"` or `"IP"` (port 53).
fn servers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{s}` is not an IP address or IP:PORT"))
                })
        })
        .collect()
}

impl DnsConfig {
    /// The checks of `[dns]`.
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if self.timeout < Duration::from_millis(50) || self.timeout > Duration::from_secs(30) {
            return Err(("dns.timeout".into(), "must be between 50ms and 30s".into()));
        }
        if !(1..=10).contains(&self.attempts) {
            return Err(("dns.attempts".into(), "must be between 1 and 10".into()));
        }
        if !(1..=1_000_000).contains(&self.cache_size) {
            return Err((
                "dns.cache-size".into(),
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.max_ttl < Duration::from_secs(1) {
            return Err(("dns.max-ttl".into(), "must be at least 1s".into()));
        }
        if self.negative_ttl > self.max_ttl {
            return Err((
                "dns.negative-ttl".into(),
                "must be at most dns.max-ttl".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_lookups) {
            return Err((
                "dns.max-lookups".into(),
                "must be between 1 and 100000".into(),
            ));
        }
        Ok(())
    }
}

/// `[tls-client]`: TLS connections the server opens (a `sips:` next hop, a
/// `transport=tls` one, or one a name resolved to TLS).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsClientConfig {
    /// PEM file of the certificate authorities a peer's certificate must chain to;
    /// the system's (`/etc/ssl/certs`) when absent.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate chain shown to peers that ask for one (mutual TLS with a
    /// trunk); with `client-key`.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of `client-cert`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}

impl TlsClientConfig {
    /// The checks of `[tls-client]`.
    pub(super) fn check(&self) -> Result<(), Invalid> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => Err((
                "tls-client.client-key".into(),
                "is required with tls-client.client-cert".into(),
            )),
            (None, Some(_)) => Err((
                "tls-client.client-cert".into(),
                "is required with tls-client.client-key".into(),
            )),
            _ => Ok(()),
        }
    }
}
