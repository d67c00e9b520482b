//! `[cluster]`: several sipwasm nodes sharing one location service on Redis.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Invalid;
use super::{ListenConfig, ListenTransport, duration};
use crate::core::peers::Cidr;

/// `[cluster]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: letters, digits, `.`, `_`, `-`.
    pub node_id: String,
    /// The Redis server (`redis://HOST:PORT` or `redis://HOST:PORT/DB`, with
    /// `user:password@` when it asks for them); a list of them for a Redis Cluster
    /// (its seed nodes) or, with `sentinel-master`, the Sentinels.
    pub redis: RedisUrls,
    /// The name of the master the Sentinels of `redis` watch: the store is that
    /// master, followed when they fail over.
    #[serde(default)]
    pub sentinel_master: Option<String>,
    /// Where the other nodes send SIP for the bindings this node holds: the address of
    /// one of this node's `[[listen]]` sockets (`transport`), as they reach it.
    pub address: SocketAddr,
    /// `tcp` (the default) or `udp`: how nodes send SIP to each other.
    #[serde(default = "default_transport")]
    pub transport: ListenTransport,
    /// The other nodes' addresses (`IP` or `IP/PREFIX`): only they may route a
    /// request to this node's flows. They are trusted peers (`sip.trusted-peers`).
    #[serde(with = "super::cidrs")]
    pub peers: Vec<Cidr>,
    /// How often this node says it is alive (and learns which nodes are).
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat: Duration,
    /// How long after its last heartbeat a node counts as dead: its bindings are
    /// skipped at once and purged by the others.
    #[serde(default = "default_dead_after", with = "duration")]
    pub dead_after: Duration,
    /// How long a request waits for Redis before it goes on without it (a REGISTER
    /// then gets 503 with `Retry-After`; a call reaches this node's bindings only).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

/// `cluster.redis`: one URL or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RedisUrls {
    /// One server (or, with `sentinel-master`, one Sentinel).
    One(String),
    /// The seed nodes of a Redis Cluster (or, with `sentinel-master`, the Sentinels).
    Many(Vec<String>),
}

impl RedisUrls {
    /// The URLs.
    pub fn list(&self) -> Vec<&str> {
        match self {
            Self::One(u) => vec![u.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Which kind of store `[cluster]` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One Redis.
    Single,
    /// A Redis Cluster (a list of seed nodes).
    Cluster,
    /// The master a Redis Sentinel group watches.
    Sentinel,
}

fn default_transport() -> ListenTransport {
    ListenTransport::Tcp
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}

fn default_dead_after() -> Duration {
    Duration::from_secs(3)
}

fn default_timeout() -> Duration {
    Duration::from_millis(300)
}

impl ClusterConfig {
    /// The checks of `[cluster]` (`listen`: the server's listeners).
    pub(super) fn check(&self, listen: &[ListenConfig]) -> Result<(), Invalid> {
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err((
                "cluster.node-id".into(),
                "must be 1 to 64 letters, digits, `.`, `_` or `-`".into(),
            ));
        }
        let urls = self.redis.list();
        let scheme_ok = |u: &&str| {
            u.starts_with("redis://")
                && u.len() > "redis://".len()
                && !u.contains(char::is_whitespace)
        };
        if urls.is_empty() || !urls.iter().all(scheme_ok) {
            return Err((
                "cluster.redis".into(),
                "must be a redis://HOST:PORT URL, or a list of them".into(),
            ));
        }
        if let Some(m) = &self.sentinel_master
            && (m.is_empty() || m.contains(char::is_whitespace))
        {
            return Err((
                "cluster.sentinel-master".into(),
                "must be the master's name as the Sentinels know it".into(),
            ));
        }
        let built = match self.store_kind() {
            StoreKind::Single => true,
            StoreKind::Cluster => cfg!(feature = "redis-cluster"),
            StoreKind::Sentinel => cfg!(feature = "redis-sentinel"),
        };
        if !built {
            return Err((
                "cluster.redis".into(),
                "this build has no Redis Cluster or Sentinel support (cargo features \
                 redis-cluster, redis-sentinel)"
                    .into(),
            ));
        }
        if !matches!(self.transport, ListenTransport::Tcp | ListenTransport::Udp) {
            return Err(("cluster.transport".into(), "must be `tcp` or `udp`".into()));
        }
        let listened = listen.iter().any(|l| {
            l.transport == self.transport
                && l.address.port() == self.address.port()
                && (l.address.ip() == self.address.ip() || l.address.ip().is_unspecified())
        });
        if !listened {
            return Err((
                "cluster.address".into(),
                format!(
                    "no [[listen]] socket of transport {} serves {}",
                    self.transport_token(),
                    self.address
                ),
            ));
        }
        if self.address.ip().is_unspecified() {
            return Err((
                "cluster.address".into(),
                "must be an address the other nodes can reach, not 0.0.0.0 or ::".into(),
            ));
        }
        if self.peers.is_empty() {
            return Err((
                "cluster.peers".into(),
                "must name the other nodes' addresses".into(),
            ));
        }
        if self.heartbeat < Duration::from_millis(100) || self.heartbeat > Duration::from_secs(60) {
            return Err((
                "cluster.heartbeat".into(),
                "must be between 100ms and 60s".into(),
            ));
        }
        if self.dead_after < 2 * self.heartbeat {
            return Err((
                "cluster.dead-after".into(),
                "must be at least twice cluster.heartbeat".into(),
            ));
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(10) {
            return Err((
                "cluster.timeout".into(),
                "must be between 10ms and 10s".into(),
            ));
        }
        Ok(())
    }

    /// Which kind of store `redis` names: with `sentinel-master` the Sentinels'
    /// master, else a list (of one seed or more) a Redis Cluster, else one Redis.
    pub fn store_kind(&self) -> StoreKind {
        if self.sentinel_master.is_some() {
            StoreKind::Sentinel
        } else if matches!(&self.redis, RedisUrls::Many(_)) {
            StoreKind::Cluster
        } else {
            StoreKind::Single
        }
    }

    /// `tcp` or `udp`.
    pub fn transport_token(&self) -> &'static str {
        match self.transport {
            ListenTransport::Udp => "udp",
            _ => "tcp",
        }
    }

    /// Host, port and transport of this node's route entries.
    pub fn route_host(&self) -> String {
        let host = match self.address {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        format!(
            "{host}:{};transport={}",
            self.address.port(),
            self.transport_token()
        )
    }
}
