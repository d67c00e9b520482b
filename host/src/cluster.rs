//! The cluster's shared location store on Redis: the shell's side of
//! [`crate::core::cluster`].
//!
//! **Model.** Redis 7.0 has no per-field expiry, so each address-of-record is two keys
//! with one hash tag (one slot in Redis Cluster): `sw:{AOR}:b`, a hash of binding
//! records (JSON, by [`store_key`]) plus the AoR's version (`#v`), and `sw:{AOR}:x`, a
//! sorted set of the same keys scored by their expiry (Unix milliseconds). A read
//! skips the expired records; every write (a Lua script, by Redis's own clock `TIME`)
//! drops them first; both keys expire at the latest binding's expiry plus a day, so
//! an AoR no one touches again leaves nothing behind. So expiry is exact when read,
//! and memory is bounded without a sweeper.
//!
//! **Liveness.** Each node writes `sw:{nodes}:beat:ID` = its boot epoch every
//! `cluster.heartbeat`, expiring after `cluster.dead-after`, and keeps a map of the
//! live nodes' epochs (`sw:{nodes}:ids` lists the node ids). A lookup skips bindings whose
//! node is not live with the epoch they were written in: a dead node's callers get
//! 480 at once. The live nodes purge a dead node's bindings (by its index
//! `sw:{nodes}:aors:ID`, one node at a time under a lock). The heartbeat is written with
//! `SET … GET`: when the previous value is gone although this node wrote it, Redis
//! lost its data (or this node stalled past `dead-after` and was purged), and the
//! node writes all its bindings again.
//!
//! **Replacement.** A script that overwrites or removes another node's binding
//! publishes its key on `sw:evict:ID`; that node drops its copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::ClusterConfig;
use crate::core::cluster::{ClusterAnswer, ClusterAsk, store_key};
use crate::core::location::{Binding, Reach};
use crate::core::{Input, Transport};
use crate::metrics::Metrics;

/// Writes and removes bindings of one AoR if its version is still `ARGV[1]`, telling
/// other nodes whose bindings it overwrote or removed; with `-1` (publishing again
/// after the store lost its data) whatever the version, and never over another node's
/// binding.
/// Its keys live until the latest binding's expiry plus the grace (ms), or longer if
/// they were to already. ARGV: version, node, AoR, grace, count of writes, the node's
/// epoch, then (key, record, expiry)
/// per write, then the keys to remove. Returns the new version (-1 when refused:
/// versions grow with Redis's clock in ms, so they never repeat even after the AoR's
/// keys were gone) and how many of the keys it wrote were not this node's before.
const COMMIT: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], '#v') or '0')
if ARGV[1] ~= '-1' and tonumber(ARGV[1]) ~= v then return {-1, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, k in ipairs(expired) do redis.call('HDEL', KEYS[1], k) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local function owner(rec)
  if not rec then return nil end
  local ok, o = pcall(cjson.decode, rec)
  if ok then return o end
  return {}
end
local function tell(k, o)
  if o and type(o.n) == 'string' and o.n ~= ARGV[2] then
    redis.call('PUBLISH', 'sw:evict:' .. o.n,
      ARGV[3] .. '\n' .. k .. '\n' .. tostring(o.i) .. '\n' .. tostring(o.s))
  end
end
local added = 0
local i = 7
for _ = 1, tonumber(ARGV[5]) do
  local o = owner(redis.call('HGET', KEYS[1], ARGV[i]))
  local write = true
  if ARGV[1] == '-1' then
    write = not o or o.n == ARGV[2]
  else
    tell(ARGV[i], o)
  end
  if write then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
    if not o or o.n ~= ARGV[2] or o.e ~= ARGV[6] then added = added + 1 end
  end
  i = i + 3
end
while i <= #ARGV do
  tell(ARGV[i], owner(redis.call('HGET', KEYS[1], ARGV[i])))
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  i = i + 1
end
local nv = math.max(v + 1, now)
redis.call('HSET', KEYS[1], '#v', string.format('%.0f', nv))
local function keep(key, at)
  local cur = redis.call('PEXPIRETIME', key)
  if cur == -1 or cur < at then redis.call('PEXPIREAT', key, at) end
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #last == 0 then
  keep(KEYS[1], now + tonumber(ARGV[4]))
  return {nv, added}
end
local at = tonumber(last[2]) + tonumber(ARGV[4])
keep(KEYS[1], at)
keep(KEYS[2], at)
return {nv, added}
";

/// Removes bindings of one AoR that node `ARGV[1]` wrote (in epoch `ARGV[2]`, any when
/// empty): those of `ARGV[3..]` given as (key, Call-ID, CSeq) triples, each only if
/// the record is still that registration or an older one of its Call-ID (not one
/// written since), or all of them when `ARGV[3]` is `*`.
/// Returns how many.
const FORGET: &str = r"
local n = 0
local function drop(k, cid, cseq)
  local rec = redis.call('HGET', KEYS[1], k)
  if not rec then return end
  local ok, o = pcall(cjson.decode, rec)
  if not ok or o.n ~= ARGV[1] or (ARGV[2] ~= '' and o.e ~= ARGV[2]) then return end
  if cid and (o.i ~= cid or (tonumber(o.s) or 0) > tonumber(cseq)) then return end
  redis.call('HDEL', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
  n = n + 1
end
if ARGV[3] == '*' then
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if k ~= '#v' then drop(k, nil, nil) end
  end
else
  for i = 3, #ARGV, 3 do drop(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
end
if n > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local v = tonumber(redis.call('HGET', KEYS[1], '#v') or '0')
  redis.call('HSET', KEYS[1], '#v', string.format('%.0f', math.max(v + 1, now)))
end
return n
";

/// The epoch of dead node `ARGV[1]` (its heartbeat `KEYS[1]` gone, its epoch in
/// `KEYS[2]`), or nil when it is alive or its epoch unknown.
const PURGE_EPOCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
return redis.call('HGET', KEYS[2], ARGV[1])
";

/// Moves index `KEYS[1]` into `KEYS[2]` (joined to what is there), kept a day.
const PURGE_ASIDE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
  redis.call('DEL', KEYS[1])
end
redis.call('PEXPIRE', KEYS[2], 86400000)
return 0
";

/// AoRs remembered for a second write after the store lost them; past it (the store
/// down for good) the next loss writes everything again anyway.
const REPUBLISH_AGAIN_MAX: usize = 1 << 20;

/// AoRs of a dead node purged per `SPOP`.
const PURGE_BATCH: usize = 100;

/// How long the lock on a dead node's purge lasts unless renewed (after each batch).
const PURGE_LOCK_MS: u64 = 10_000;

/// How long the keys of an AoR remembered (its client refreshed or unregistered)
/// outlive its last binding's expiry or removal: so long a call to it is 480 (known,
/// unavailable) on every node rather than 404, as a single node remembers it.
const GRACE_MS: u64 = 24 * 3600 * 1000;

/// A binding as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// Contact.
    c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<u16>,
    /// Expiry, Unix ms.
    x: u64,
    /// Last refresh, Unix ms.
    u: u64,
    /// Call-ID.
    i: String,
    /// CSeq.
    s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u32>,
    /// Other Contact parameters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pa: String,
    /// Path, the owner's route first.
    p: Vec<String>,
    /// Transport it was registered over.
    t: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    g: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<String>,
    /// Owning node.
    n: String,
    /// Its boot epoch.
    e: String,
}

fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
        Transport::Ws => "ws",
        Transport::Wss => "wss",
    }
}

fn transport_of(t: &str) -> Transport {
    match t {
        "udp" => Transport::Udp,
        "tls" => Transport::Tls,
        "ws" => Transport::Ws,
        "wss" => Transport::Wss,
        _ => Transport::Tcp,
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The ids of the nodes that wrote a heartbeat (the node keys share the hash tag
/// `{nodes}`: one slot of a Redis Cluster, so one `MGET` reads them all).
const NODES: &str = "sw:{nodes}:ids";

/// A new epoch: Unix ms now and random bits.
fn new_epoch() -> anyhow::Result<String> {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("random epoch: {e}"))?;
    Ok(format!(
        "{}-{}",
        unix_ms(SystemTime::now()),
        crate::hex::hex(&random)
    ))
}

/// Each node's last epoch (what a purge of it removes, once it is dead).
const EPOCHS: &str = "sw:{nodes}:epochs";

/// A node's heartbeat: its boot epoch, expiring after `cluster.dead-after`.
fn beat_key(node: &str) -> String {
    format!("sw:{{nodes}}:beat:{node}")
}

/// The AoRs a node wrote bindings of (for the purge when it dies).
fn aors_key(node: &str) -> String {
    format!("sw:{{nodes}}:aors:{node}")
}

/// The members of set `key`, read with `SSCAN` (not one reply of a node's whole
/// index); `None` when Redis fails on the way.
async fn members(con: &mut Con, key: &str) -> Option<Vec<String>> {
    let mut iter = con.sscan::<_, String>(key).await.ok()?;
    let mut all = Vec::new();
    while let Some(a) = iter.next_item().await {
        all.push(a.ok()?);
    }
    Some(all)
}

/// The two keys of an AoR.
fn keys(aor: &str) -> (String, String) {
    (format!("sw:{{{aor}}}:b"), format!("sw:{{{aor}}}:x"))
}

/// Where the store is (`cluster.redis`, `cluster.sentinel-master`).
enum Backend {
    /// One Redis: a connection manager that reconnects by itself.
    Single,
    /// A Redis Cluster by its seed nodes (and the seeds, for pub/sub: a message
    /// published on any node reaches the subscribers of every node).
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster::ClusterClient, Vec<redis::Client>),
    /// The master the Sentinels watch, asked again after a failure.
    #[cfg(feature = "redis-sentinel")]
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// A connection to the store, cheap to clone (each ask uses its own clone).
#[derive(Clone)]
enum Con {
    /// To one Redis (or the Sentinels' master).
    Manager(ConnectionManager),
    /// To a Redis Cluster (commands routed by their keys' slot).
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Con {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Manager(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Manager(c) => c.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection to the store and what this node knows of the others.
pub(crate) struct Cluster {
    cfg: ClusterConfig,
    /// This node's boot epoch (Unix ms at start, and random bits).
    epoch: Mutex<String>,
    backend: Backend,
    /// The connection; none until one was made (a Redis Cluster or the Sentinels not
    /// reachable yet), made again after a Sentinel failover.
    con: Mutex<Option<Con>>,
    /// The server to subscribe to for evictions.
    pubsub: Mutex<Option<redis::Client>>,
    /// An ask failed: the heartbeat asks the Sentinels for the master again.
    stale: std::sync::atomic::AtomicBool,
    /// AoRs whose bindings' write after the store lost them failed: written again
    /// at the next heartbeat.
    republish_again: Mutex<std::collections::HashSet<String>>,
    /// The last heartbeat failed: asks fail at once (a REGISTER gets its 503, a call
    /// goes on with this node's bindings, without waiting `cluster.timeout` each)
    /// until a heartbeat goes through again.
    down: std::sync::atomic::AtomicBool,
    commit: redis::Script,
    purge_epoch: redis::Script,
    purge_aside: redis::Script,
    forget: redis::Script,
    /// Live nodes and their epochs, as of the last heartbeat.
    live: Mutex<HashMap<String, String>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.cfg.node_id)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects lazily: a node starts with Redis down, and its REGISTERs get 503
    /// until Redis answers.
    pub(crate) fn new(cfg: &ClusterConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let bad = |e: redis::RedisError| anyhow::anyhow!("cluster.redis: {e}");
        let urls = cfg.redis.list();
        let (backend, con, pubsub) = match cfg.store_kind() {
            crate::config::StoreKind::Single => {
                let client = redis::Client::open(urls[0]).map_err(bad)?;
                let con = Self::manager(&client, cfg.timeout).map_err(bad)?;
                (Backend::Single, Some(con), Some(client))
            }
            #[cfg(feature = "redis-cluster")]
            crate::config::StoreKind::Cluster => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(1)
                    .build()
                    .map_err(bad)?;
                let seeds = urls
                    .iter()
                    .map(|u| redis::Client::open(*u))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                (Backend::Cluster(client, seeds), None, None)
            }
            #[cfg(feature = "redis-sentinel")]
            crate::config::StoreKind::Sentinel => {
                let master = cfg.sentinel_master.clone().unwrap_or_default();
                let sentinel = redis::sentinel::SentinelClient::build(
                    urls.clone(),
                    master,
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(bad)?;
                (
                    Backend::Sentinel(tokio::sync::Mutex::new(sentinel)),
                    None,
                    None,
                )
            }
            #[allow(unreachable_patterns, reason = "with every store feature built")]
            _ => anyhow::bail!("cluster.redis: this build has no support for that kind of store"),
        };
        let epoch = new_epoch()?;
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            epoch: Mutex::new(epoch),
            backend,
            con: Mutex::new(con),
            pubsub: Mutex::new(pubsub),
            stale: std::sync::atomic::AtomicBool::new(false),
            down: std::sync::atomic::AtomicBool::new(false),
            republish_again: Mutex::default(),
            commit: redis::Script::new(COMMIT),
            purge_epoch: redis::Script::new(PURGE_EPOCH),
            purge_aside: redis::Script::new(PURGE_ASIDE),
            forget: redis::Script::new(FORGET),
            live: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    /// A connection manager to `client` (lazy: made at its first command), retrying
    /// little so that a request waits `cluster.timeout` at most.
    fn manager(client: &redis::Client, timeout: Duration) -> redis::RedisResult<Con> {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        client.get_connection_manager_lazy(config).map(Con::Manager)
    }

    /// The current connection.
    fn con(&self) -> redis::RedisResult<Con> {
        self.con
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Io, "not connected to the store yet"))
            })
    }

    /// Whether there is a connection.
    #[cfg(any(feature = "redis-cluster", feature = "redis-sentinel"))]
    fn connected(&self) -> bool {
        self.con
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Makes the connection when there is none (a Redis Cluster, the Sentinels'
    /// master), or asks the Sentinels for the master again after a failure.
    async fn connect(&self) {
        match &self.backend {
            Backend::Single => {}
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(client, _) => {
                if self.connected() {
                    return;
                }
                match client.get_async_connection().await {
                    Ok(c) => {
                        *self.con.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Con::Cluster(c));
                    }
                    Err(e) => tracing::debug!(error = %e, "Redis Cluster not reachable"),
                }
            }
            #[cfg(feature = "redis-sentinel")]
            Backend::Sentinel(sentinel) => {
                let stale = self.stale.swap(false, std::sync::atomic::Ordering::Relaxed);
                if self.connected() && !stale {
                    return;
                }
                let master = sentinel.lock().await.async_get_client().await;
                match master
                    .and_then(|client| Ok((Self::manager(&client, self.cfg.timeout)?, client)))
                {
                    Ok((con, client)) => {
                        let addr = client.get_connection_info().addr().to_string();
                        tracing::info!(master = %addr, "cluster store: the Sentinels' master");
                        *self.con.lock().unwrap_or_else(PoisonError::into_inner) = Some(con);
                        *self.pubsub.lock().unwrap_or_else(PoisonError::into_inner) = Some(client);
                    }
                    Err(e) => {
                        self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(error = %e, "no master from the Sentinels");
                    }
                }
            }
        }
    }

    /// This node's epoch: its boot's, or the one it took when the store lost it.
    fn epoch(&self) -> String {
        self.epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &str {
        &self.cfg.node_id
    }

    /// Answers one ask (`None` for those that want no answer), within
    /// `cluster.timeout`: past it, or on any error, [`ClusterAnswer::Unavailable`].
    pub(crate) async fn answer(&self, ask: ClusterAsk) -> ClusterAnswer {
        let published = match &ask {
            ClusterAsk::Publish { aor, .. } => Some(aor.clone()),
            _ => None,
        };
        let answer = self.answer_in_time(ask).await;
        if let Some(aor) = published
            && answer == ClusterAnswer::Unavailable
        {
            let mut again = self
                .republish_again
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Bounded: at most this node's AoRs; past that, everything again.
            if again.len() < REPUBLISH_AGAIN_MAX {
                again.insert(aor);
            }
        }
        answer
    }

    async fn answer_in_time(&self, ask: ClusterAsk) -> ClusterAnswer {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            self.metrics.cluster_failure();
            return ClusterAnswer::Unavailable;
        }
        let result = tokio::time::timeout(self.cfg.timeout, self.run(ask)).await;
        let answer = match result {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster store");
                // A master that is one no more (READONLY), or gone: ask the Sentinels.
                self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
                ClusterAnswer::Unavailable
            }
            Err(_) => ClusterAnswer::Unavailable,
        };
        match answer {
            ClusterAnswer::Unavailable => self.metrics.cluster_failure(),
            _ => self.metrics.cluster_answered(),
        }
        answer
    }

    /// The bindings of `aor` (normalized) other live nodes hold, for a routing
    /// plugin's `lookup`; none when the store does not answer in time.
    pub(crate) async fn others(&self, aor: &str) -> Vec<Binding> {
        let ask = ClusterAsk::Lookup {
            aor: aor.to_string(),
        };
        match self.answer(ask).await {
            ClusterAnswer::Found { bindings, .. } => bindings,
            _ => Vec::new(),
        }
    }

    async fn run(&self, ask: ClusterAsk) -> redis::RedisResult<ClusterAnswer> {
        let mut con = self.con()?;
        match ask {
            ClusterAsk::Lookup { aor } => {
                let (b, _) = keys(&aor);
                // A plain read: expired records are skipped here (by this node's
                // clock) and dropped by the next write of the AoR, or with its keys.
                let fields: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(&b).query_async(&mut con).await?;
                let now_ms = unix_ms(SystemTime::now());
                let records: Vec<(String, Record)> = fields
                    .iter()
                    .filter(|(k, _)| k != "#v")
                    .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(v).ok()?)))
                    .collect();
                self.learn_owners(&mut con, &records).await?;
                Ok(self.found(now_ms, &fields, records))
            }
            ClusterAsk::Commit {
                aor,
                version,
                save,
                remove,
                remember,
            } => {
                let grace = if remember { GRACE_MS } else { 0 };
                let v = self
                    .write(&mut con, &aor, &version.to_string(), &save, &remove, grace)
                    .await?;
                if v >= 0 && save.is_empty() {
                    // This node holds none of the AoR now: off its index.
                    let _: () = con.srem(aors_key(&self.cfg.node_id), &aor).await?;
                }
                Ok(match u64::try_from(v) {
                    Ok(version) => ClusterAnswer::Committed { version },
                    Err(_) => ClusterAnswer::Conflict,
                })
            }
            ClusterAsk::Publish { aor, save } => {
                let v = self.write(&mut con, &aor, "-1", &save, &[], 0).await?;
                Ok(ClusterAnswer::Committed {
                    version: u64::try_from(v).unwrap_or(0),
                })
            }
            ClusterAsk::Forget { aor, remove, last } => {
                if !remove.is_empty() {
                    let (b, x) = keys(&aor);
                    let mut call = self.forget.key(&b);
                    call.key(&x).arg(&self.cfg.node_id).arg(self.epoch());
                    for (k, call_id, cseq) in &remove {
                        call.arg(k).arg(call_id).arg(cseq);
                    }
                    let _: i64 = call.invoke_async(&mut con).await?;
                }
                if last {
                    let _: () = con.srem(aors_key(&self.cfg.node_id), &aor).await?;
                }
                Ok(ClusterAnswer::Committed { version: 0 })
            }
        }
    }

    /// Runs [`COMMIT`] (and indexes the AoR under this node for the purge).
    async fn write(
        &self,
        con: &mut Con,
        aor: &str,
        version: &str,
        save: &[Binding],
        remove: &[String],
        grace: u64,
    ) -> redis::RedisResult<i64> {
        let (b, x) = keys(aor);
        let now = Instant::now();
        let wall = SystemTime::now();
        let epoch = self.epoch();
        let mut call = self.commit.key(&b);
        call.key(&x)
            .arg(version)
            .arg(&self.cfg.node_id)
            .arg(aor)
            .arg(grace)
            .arg(save.len())
            .arg(&epoch);
        for binding in save {
            let expires = unix_ms(wall + binding.expires_at.saturating_duration_since(now));
            let updated = unix_ms(
                wall.checked_sub(now.saturating_duration_since(binding.updated))
                    .unwrap_or(wall),
            );
            let record = Record {
                c: binding.contact.clone(),
                q: binding.q,
                x: expires,
                u: updated,
                i: binding.call_id.clone(),
                s: binding.cseq,
                inst: binding.instance.clone(),
                r: binding.reg_id,
                pa: binding.params.clone(),
                p: binding.path.clone(),
                t: transport_token(binding.transport).into(),
                g: binding.temp_gruu.clone(),
                ua: binding.user_agent.clone(),
                n: self.cfg.node_id.clone(),
                e: epoch.clone(),
            };
            let json = serde_json::to_string(&record).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Client, "record", e.to_string()))
            })?;
            call.arg(store_key(binding)).arg(json).arg(expires);
        }
        for k in remove {
            call.arg(k);
        }
        let (v, added): (i64, u64) = call.invoke_async(con).await?;
        // Indexed for the purge once, when new (not at every refresh).
        if v >= 0 && added > 0 {
            let _: () = con.sadd(aors_key(&self.cfg.node_id), aor).await?;
        }
        Ok(v)
    }

    /// Asks Redis about the owners of `records` this node does not know as live in
    /// their epoch (a node that started since the last heartbeat): one `MGET`, only
    /// then.
    async fn learn_owners(
        &self,
        con: &mut Con,
        records: &[(String, Record)],
    ) -> redis::RedisResult<()> {
        let mut unknown: Vec<&str> = {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            records
                .iter()
                .map(|(_, r)| r)
                .filter(|r| r.n != self.cfg.node_id && live.get(&r.n) != Some(&r.e))
                .map(|r| r.n.as_str())
                .collect()
        };
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let beats: Vec<Option<String>> = redis::cmd("MGET")
            .arg(unknown.iter().map(|n| beat_key(n)).collect::<Vec<_>>())
            .query_async(con)
            .await?;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for (n, beat) in unknown.into_iter().zip(beats) {
            match beat {
                Some(e) => live.insert(n.to_string(), e),
                None => live.remove(n),
            };
        }
        Ok(())
    }

    /// The other live nodes' bindings among an AoR's records.
    fn found(
        &self,
        now_ms: u64,
        fields: &[(String, String)],
        records: Vec<(String, Record)>,
    ) -> ClusterAnswer {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let version = fields
            .iter()
            .find(|(k, _)| k == "#v")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        // The hash outlives its bindings by a day (its version stays).
        let known = !fields.is_empty();
        let mut bindings = Vec::new();
        for (_, r) in records {
            if r.n == self.cfg.node_id || live.get(&r.n) != Some(&r.e) || r.x <= now_ms {
                continue;
            }
            bindings.push(Binding {
                id: 0,
                aor: String::new(),
                contact: r.c,
                q: r.q,
                expires_at: now + Duration::from_millis(r.x - now_ms),
                updated: now
                    .checked_sub(Duration::from_millis(now_ms.saturating_sub(r.u)))
                    .unwrap_or(now),
                call_id: r.i,
                cseq: r.s,
                instance: r.inst,
                reg_id: r.r,
                path: r.p,
                params: r.pa,
                reach: Reach::Node,
                transport: transport_of(&r.t),
                temp_gruu: r.g,
                user_agent: r.ua,
            });
        }
        ClusterAnswer::Found {
            version,
            bindings,
            known,
        }
    }

    /// Starts the heartbeat and the eviction listener, which send the core their
    /// inputs on `core`; they end when it is closed.
    pub(crate) fn start(self: &Arc<Self>, core: mpsc::Sender<Input>) {
        let me = self.clone();
        let c = core.clone();
        tokio::spawn(async move { me.heartbeats(c).await });
        let me = self.clone();
        tokio::spawn(async move { me.evictions(core).await });
    }

    async fn heartbeats(self: Arc<Self>, core: mpsc::Sender<Input>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written = false;
        loop {
            tick.tick().await;
            if core.is_closed() {
                return;
            }
            let _ = tokio::time::timeout(self.cfg.heartbeat.max(self.cfg.timeout), self.connect())
                .await;
            match tokio::time::timeout(self.cfg.heartbeat.max(self.cfg.timeout), self.beat()).await
            {
                Ok(Ok(previous)) => {
                    if self.down.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!("cluster store reachable again");
                    }
                    // The first heartbeat publishes what this node restored from its
                    // data directory; a later one that finds its own gone, everything.
                    let epoch = self.epoch();
                    let lost = previous.as_deref() != Some(epoch.as_str());
                    if let Some(p) = previous.as_deref()
                        && p != epoch
                        && written
                    {
                        tracing::error!(
                            node = %self.cfg.node_id,
                            "another process heartbeats as this cluster.node-id"
                        );
                    }
                    if lost && written {
                        tracing::warn!(
                            "the cluster store lost this node's heartbeat (restarted empty, or \
                             this node stalled past cluster.dead-after): writing its bindings again"
                        );
                        self.metrics.cluster_republish();
                        // A new life: another node may be purging the one it was taken
                        // for dead in (by its epoch); what it writes now is this one's.
                        if let Ok(e) = new_epoch() {
                            *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = e;
                            if let Err(e) = self.announce().await {
                                tracing::debug!(error = %e, "cluster heartbeat");
                            }
                        }
                    }
                    let again: Vec<String> = std::mem::take(
                        &mut *self
                            .republish_again
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner),
                    )
                    .into_iter()
                    .collect();
                    if lost {
                        let _ = core.send(Input::ClusterRepublish(None)).await;
                    } else if !again.is_empty() {
                        let _ = core.send(Input::ClusterRepublish(Some(again))).await;
                    }
                    written = true;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster heartbeat");
                    self.stale.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.store_down();
                }
                Err(_) => {
                    tracing::debug!("cluster heartbeat timed out");
                    self.store_down();
                }
            }
        }
    }

    /// The store did not take a heartbeat: said once, until it does again.
    fn store_down(&self) {
        if !self.down.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "cluster store unreachable: REGISTERs get 503, calls reach this node's \
                 bindings only, until a heartbeat goes through"
            );
        }
    }

    /// Writes this node's heartbeat and epoch now (after it took a new epoch).
    async fn announce(&self) -> redis::RedisResult<()> {
        let mut con = self.con()?;
        let ttl = u64::try_from(self.cfg.dead_after.as_millis()).unwrap_or(u64::MAX);
        let epoch = self.epoch();
        let _: () = redis::cmd("SET")
            .arg(beat_key(&self.cfg.node_id))
            .arg(&epoch)
            .arg("PX")
            .arg(ttl)
            .query_async(&mut con)
            .await?;
        con.hset(EPOCHS, &self.cfg.node_id, &epoch).await
    }

    /// Writes this node's heartbeat (returning what it replaced), learns the live
    /// nodes, and purges the dead ones.
    async fn beat(self: &Arc<Self>) -> redis::RedisResult<Option<String>> {
        let mut con = self.con()?;
        let ttl = u64::try_from(self.cfg.dead_after.as_millis()).unwrap_or(u64::MAX);
        let previous: Option<String> = redis::cmd("SET")
            .arg(beat_key(&self.cfg.node_id))
            .arg(self.epoch())
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .query_async(&mut con)
            .await?;
        let _: () = con.sadd(NODES, &self.cfg.node_id).await?;
        let earlier: Option<String> = redis::cmd("HGET")
            .arg(EPOCHS)
            .arg(&self.cfg.node_id)
            .query_async(&mut con)
            .await?;
        let epoch = self.epoch();
        if earlier.as_deref() != Some(epoch.as_str()) {
            let _: () = con.hset(EPOCHS, &self.cfg.node_id, &epoch).await?;
            // This node's previous life, whose heartbeat may be gone already: its
            // bindings are gone with it.
            if let Some(old) = earlier {
                let me = self.clone();
                tokio::spawn(async move { me.purge_earlier(&old).await });
            }
        }
        let ids: Vec<String> = con.smembers(NODES).await?;
        let beats: Vec<Option<String>> = if ids.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET")
                .arg(ids.iter().map(|i| beat_key(i)).collect::<Vec<_>>())
                .query_async(&mut con)
                .await?
        };
        let mut live = HashMap::new();
        let mut dead = Vec::new();
        for (id, beat) in ids.into_iter().zip(beats) {
            match beat {
                Some(e) => {
                    live.insert(id, e);
                }
                None => dead.push(id),
            }
        }
        self.metrics.set_cluster_nodes(live.len() as u64);
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) = live;
        for id in dead {
            let lock: Option<String> = redis::cmd("SET")
                .arg(format!("sw:{{nodes}}:purge:{id}"))
                .arg(&self.cfg.node_id)
                .arg("NX")
                .arg("PX")
                .arg(PURGE_LOCK_MS)
                .query_async(&mut con)
                .await?;
            if lock.is_some() {
                // On a task of its own: a dead node of a hundred thousand AoRs takes
                // longer than a heartbeat.
                let me = self.clone();
                tokio::spawn(async move { me.purge_dead(&id).await });
            }
        }
        Ok(previous)
    }

    /// Removes dead node `id`'s bindings of the life that died (its last epoch: a
    /// life that started since keeps its own), renewing the lock meanwhile. Its
    /// index is set aside first and emptied as it goes (a purge cut short goes on
    /// where it stopped); a new life starts an index of its own. Then the node is
    /// forgotten, unless it is alive again.
    async fn purge_dead(&self, id: &str) {
        let Ok(mut con) = self.con() else { return };
        let lock = format!("sw:{{nodes}}:purge:{id}");
        // Its epoch, read in one step with its heartbeat's absence (a node that is
        // back, or whose epoch is unknown, is not purged).
        let epoch: redis::RedisResult<Option<String>> = self
            .purge_epoch
            .key(beat_key(id))
            .key(EPOCHS)
            .arg(id)
            .invoke_async(&mut con)
            .await;
        let epoch = match epoch {
            Ok(Some(e)) => e,
            Ok(None) => {
                let alive: Option<String> = con.get(beat_key(id)).await.ok().flatten();
                if alive.is_none() {
                    // Never wrote an epoch: nothing of it is live.
                    let _: redis::RedisResult<()> = con.srem(NODES, id).await;
                }
                return;
            }
            Err(_) => return,
        };
        // Its index set aside for this death (joined to what a purge of it cut short
        // left; kept a day at most): a life that starts meanwhile indexes its own.
        let index = format!("sw:{{nodes}}:purging:{id}:{epoch}");
        let aside: redis::RedisResult<()> = self
            .purge_aside
            .key(aors_key(id))
            .key(&index)
            .invoke_async(&mut con)
            .await;
        if aside.is_err() {
            return;
        }
        let mut removed = 0u64;
        loop {
            let batch: redis::RedisResult<Vec<String>> = redis::cmd("SPOP")
                .arg(&index)
                .arg(PURGE_BATCH)
                .query_async(&mut con)
                .await;
            let Ok(batch) = batch else { return };
            if batch.is_empty() {
                break;
            }
            for aor in &batch {
                removed += self.forget_all(&mut con, aor, id, &epoch).await;
            }
            let _: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&lock)
                .arg(&self.cfg.node_id)
                .arg("XX")
                .arg("PX")
                .arg(PURGE_LOCK_MS)
                .query_async(&mut con)
                .await;
        }
        let alive: redis::RedisResult<Option<String>> = con.get(beat_key(id)).await;
        if let Ok(None) = alive {
            let _: redis::RedisResult<()> = con.srem(NODES, id).await;
        }
        tracing::info!(node = %id, bindings = removed, "cluster node dead: its bindings purged");
    }

    /// Removes every binding of `aor` that node `id` wrote in `epoch`; how many (none
    /// when Redis fails: a purge goes on with the next AoR).
    async fn forget_all(&self, con: &mut Con, aor: &str, id: &str, epoch: &str) -> u64 {
        let (b, x) = keys(aor);
        let n: redis::RedisResult<u64> = self
            .forget
            .key(&b)
            .key(&x)
            .arg(id)
            .arg(epoch)
            .arg("*")
            .invoke_async(con)
            .await;
        n.unwrap_or(0)
    }

    /// Removes the bindings this node wrote in an earlier life (boot epoch `epoch`),
    /// by its index, which this life shares; returns how many.
    async fn purge_earlier(&self, epoch: &str) -> u64 {
        let Ok(mut con) = self.con() else {
            return 0;
        };
        let id = self.cfg.node_id.as_str();
        let Some(aors) = members(&mut con, &aors_key(id)).await else {
            return 0;
        };
        let mut removed = 0u64;
        for aor in &aors {
            removed += self.forget_all(&mut con, aor, id, epoch).await;
        }
        if removed > 0 {
            tracing::info!(
                bindings = removed,
                "cluster: bindings of this node's earlier life purged"
            );
        }
        removed
    }

    /// The server to subscribe to: in a Redis Cluster each seed in turn (a message
    /// published on any node reaches the subscribers of all), else the store's.
    fn pubsub_client(&self, attempt: usize) -> Option<redis::Client> {
        #[cfg(feature = "redis-cluster")]
        if let Backend::Cluster(_, seeds) = &self.backend
            && !seeds.is_empty()
        {
            return seeds.get(attempt % seeds.len()).cloned();
        }
        let _ = attempt;
        self.pubsub
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads, for each AoR of this node's index, which of its bindings the store has
    /// as this node's (this epoch), and tells the core ([`Input::ClusterHeld`]).
    async fn verify(&self, core: &mpsc::Sender<Input>) {
        let Ok(mut con) = self.con() else { return };
        let epoch = self.epoch();
        let Some(aors) = members(&mut con, &aors_key(&self.cfg.node_id)).await else {
            return;
        };
        for aor in aors {
            let (b, _) = keys(&aor);
            let fields: redis::RedisResult<Vec<(String, String)>> =
                redis::cmd("HGETALL").arg(&b).query_async(&mut con).await;
            let Ok(fields) = fields else { return };
            let mut version = 0;
            let (mut ours, mut others) = (Vec::new(), Vec::new());
            for (k, v) in fields {
                if k == "#v" {
                    version = v.parse().unwrap_or(0);
                } else if serde_json::from_str::<Record>(&v)
                    .is_ok_and(|r| r.n == self.cfg.node_id && r.e == epoch)
                {
                    ours.push(k);
                } else {
                    others.push(k);
                }
            }
            let input = Input::ClusterHeld {
                aor,
                version,
                ours,
                others,
            };
            if core.send(input).await.is_err() {
                return;
            }
        }
    }

    /// Listens on `sw:evict:ID` for bindings of this node other nodes replaced or
    /// removed; reconnects after a heartbeat when the connection drops.
    async fn evictions(self: Arc<Self>, core: mpsc::Sender<Input>) {
        let channel = format!("sw:evict:{}", self.cfg.node_id);
        let mut subscribed_before = false;
        let mut attempt = 0usize;
        loop {
            if core.is_closed() {
                return;
            }
            let client = self.pubsub_client(attempt);
            attempt += 1;
            if let Some(client) = client
                && let Ok(mut pubsub) = client.get_async_pubsub().await
                && pubsub.subscribe(&channel).await.is_ok()
            {
                // Evictions published while this node was not listening are lost:
                // what the store has as this node's is read again.
                if subscribed_before {
                    let me = self.clone();
                    let core = core.clone();
                    tokio::spawn(async move { me.verify(&core).await });
                }
                subscribed_before = true;
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let mut parts = payload.splitn(4, '\n');
                    let (Some(aor), Some(key), Some(call_id), Some(cseq)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    self.metrics.cluster_eviction();
                    let evicted = Input::ClusterEvicted {
                        aor: aor.to_string(),
                        key: key.to_string(),
                        call_id: call_id.to_string(),
                        cseq: cseq.parse().unwrap_or(u32::MAX),
                    };
                    if core.send(evicted).await.is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(self.cfg.heartbeat).await;
        }
    }
}
