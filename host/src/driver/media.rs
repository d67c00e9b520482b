//! The media engines (rtpengine daemons) over their ng protocol: one UDP socket per
//! engine, replies matched to requests by cookie, retries with the same cookie (the
//! daemon answers a repeat from its cache without acting twice), and each engine's
//! health. An engine that lets a request go unanswered through all its tries is down
//! for `media.disable-for`; then a ping must answer before it is up again. The core
//! learns which engines are up ([`Engines::up`]) and picks among them; what it asks
//! comes here through the driver ([`Engines::call`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::config::MediaConfig;
use crate::hex::hex;
use crate::media::MediaOutcome;
use crate::media::ng::{self, Command, Reply, Value};
use crate::metrics::Metrics;

/// Why an ng request got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NgFailure {
    /// No reply through all the tries (the engine is down now).
    Timeout,
    /// The engine said no (`result: error`, with its reason).
    Refused(String),
    /// The engine takes no new calls now (`result: load limit`).
    LoadLimit(String),
    /// The request does not fit in a datagram, or the socket failed.
    Local(String),
}

impl std::fmt::Display for NgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no answer"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::LoadLimit(why) => write!(f, "load limit: {why}"),
            Self::Local(why) => f.write_str(why),
        }
    }
}

type Waiting = Mutex<HashMap<Vec<u8>, oneshot::Sender<Value>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Engine {
    address: SocketAddr,
    label: String,
    weight: u32,
    socket: Arc<UdpSocket>,
    /// Requests waiting for their reply, by cookie.
    waiting: Arc<Waiting>,
    /// Down until then (and until a ping answers).
    down_until: Mutex<Option<Instant>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The configured engines.
pub(crate) struct Engines {
    engines: Vec<Engine>,
    /// This process's cookies start with it (random: cookies must not repeat across
    /// restarts within the daemon's minute of cache either).
    cookie_prefix: String,
    next_cookie: AtomicU64,
    timeout: Duration,
    tries: u32,
    disable_for: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field(
                "engines",
                &self.engines.iter().map(|e| e.address).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Engines {
    /// Opens a socket per engine of `cfg` (checked by the configuration).
    pub(crate) async fn open(cfg: &MediaConfig, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let list = cfg
            .engines()
            .map_err(|(key, why)| std::io::Error::other(format!("{key}: {why}")))?;
        let mut engines = Vec::with_capacity(list.len());
        for e in list {
            let bind: SocketAddr = if e.address.is_ipv4() {
                "0.0.0.0:0".parse().expect("address")
            } else {
                "[::]:0".parse().expect("address")
            };
            let socket = UdpSocket::bind(bind).await?;
            socket.connect(e.address).await?;
            let socket = Arc::new(socket);
            let waiting: Arc<Waiting> = Arc::default();
            let reader = tokio::spawn(read_replies(socket.clone(), waiting.clone()));
            engines.push(Engine {
                address: e.address,
                label: e.address.to_string(),
                weight: e.weight,
                socket,
                waiting,
                down_until: Mutex::new(None),
                reader,
            });
        }
        let mut seed = [0u8; 6];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            engines,
            cookie_prefix: hex(&seed),
            next_cookie: AtomicU64::new(1),
            timeout: cfg.timeout,
            tries: cfg.tries,
            disable_for: cfg.disable_for,
            metrics,
        })
    }

    /// How many engines there are.
    pub(crate) fn len(&self) -> usize {
        self.engines.len()
    }

    /// The engines' weights, 0 for those that are down: what the core picks from.
    pub(crate) fn up(&self) -> Vec<u32> {
        self.engines
            .iter()
            .map(|e| {
                if lock(&e.down_until).is_some() {
                    0
                } else {
                    e.weight
                }
            })
            .collect()
    }

    /// Asks each engine that is up how many sessions it holds, for
    /// `sipwasm_media_sessions` (an engine that does not answer is left to the next
    /// request or ping to find down).
    pub(crate) async fn count_sessions(&self) {
        for (i, e) in self.engines.iter().enumerate() {
            if lock(&e.down_until).is_some() {
                continue;
            }
            if let Ok(Reply::Ok { dict, .. }) = self.exchange(i, &Command::Statistics, 1).await
                && let Some(n) = ng::sessions_of(&dict)
            {
                self.metrics.media_sessions(&e.label, n);
            }
        }
    }

    /// Pings every engine that is down and whose rest is over; true when one came
    /// back up (the core should learn it).
    pub(crate) async fn probe(&self) -> bool {
        let mut changed = false;
        for (i, e) in self.engines.iter().enumerate() {
            let due = lock(&e.down_until).is_some_and(|t| t <= Instant::now());
            if !due {
                continue;
            }
            match self.exchange(i, &Command::Ping, 1).await {
                Ok(Reply::Pong) => {
                    *lock(&e.down_until) = None;
                    tracing::info!(engine = %e.address, "media engine answers again");
                    changed = true;
                }
                _ => *lock(&e.down_until) = Some(Instant::now() + self.disable_for),
            }
        }
        changed
    }

    /// Pings every engine once (at start): those that do not answer start down.
    pub(crate) async fn ping_all(&self) {
        for (i, e) in self.engines.iter().enumerate() {
            match self.exchange(i, &Command::Ping, self.tries).await {
                Ok(Reply::Pong) => tracing::info!(engine = %e.address, "media engine answers"),
                other => {
                    tracing::warn!(engine = %e.address, reply = ?other, "media engine does not answer ping; no calls go to it for now");
                    *lock(&e.down_until) = Some(Instant::now() + self.disable_for);
                }
            }
        }
    }

    /// Sends `cmd` to engine `idx` and waits for its reply (at most `tries` ×
    /// `timeout`); a silent engine is marked down.
    pub(crate) async fn call(&self, idx: usize, cmd: &Command) -> Result<Reply, NgFailure> {
        let started = Instant::now();
        let result = self.exchange(idx, cmd, self.tries).await;
        let Some(e) = self.engines.get(idx) else {
            return result;
        };
        let outcome = match &result {
            Ok(Reply::Ok { .. } | Reply::Pong) => "ok",
            Ok(Reply::Error(_)) => "error",
            Ok(Reply::LoadLimit(_)) => "load-limit",
            Err(NgFailure::Timeout) => "timeout",
            Err(_) => "local",
        };
        self.metrics
            .media_request(&e.label, cmd.name(), outcome, started.elapsed());
        if matches!(result, Err(NgFailure::Timeout)) {
            let mut down = lock(&e.down_until);
            if down.is_none() {
                tracing::warn!(engine = %e.address, command = cmd.name(), "media engine did not answer; no new calls go to it for {:?}", self.disable_for);
            }
            *down = Some(Instant::now() + self.disable_for);
        }
        result.and_then(|r| match r {
            Reply::Error(why) => Err(NgFailure::Refused(why)),
            Reply::LoadLimit(why) => Err(NgFailure::LoadLimit(why)),
            r => Ok(r),
        })
    }

    /// [`Engines::call`] for an offer or answer, as the core takes it.
    pub(crate) async fn outcome(&self, idx: usize, cmd: &Command) -> MediaOutcome {
        match self.call(idx, cmd).await {
            Ok(Reply::Ok { sdp: Some(sdp), .. }) => MediaOutcome::Sdp(sdp),
            Ok(Reply::Ok {
                sdp: None, warning, ..
            }) => MediaOutcome::Refused(warning.unwrap_or_else(|| "a reply without SDP".into())),
            Ok(Reply::Pong) => MediaOutcome::Refused("a pong for a call".into()),
            Ok(Reply::Error(why) | Reply::LoadLimit(why)) => MediaOutcome::Refused(why),
            Err(NgFailure::Refused(why)) => MediaOutcome::Refused(why),
            Err(f @ (NgFailure::Timeout | NgFailure::LoadLimit(_) | NgFailure::Local(_))) => {
                MediaOutcome::Unavailable(f.to_string())
            }
        }
    }

    async fn exchange(&self, idx: usize, cmd: &Command, tries: u32) -> Result<Reply, NgFailure> {
        let e = self
            .engines
            .get(idx)
            .ok_or_else(|| NgFailure::Local(format!("no media engine {idx}")))?;
        let n = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let cookie = format!("{}_{n}", self.cookie_prefix);
        let datagram = cmd.datagram(&cookie);
        if datagram.len() > ng::MAX_DATAGRAM {
            return Err(NgFailure::Local(format!(
                "{} request of {} bytes is over the ng datagram's {}",
                cmd.name(),
                datagram.len(),
                ng::MAX_DATAGRAM
            )));
        }
        let (tx, mut rx) = oneshot::channel();
        let key = cookie.into_bytes();
        lock(&e.waiting).insert(key.clone(), tx);
        // Whatever happens, the cookie stops waiting when this does.
        struct Unwait<'a>(&'a Waiting, Vec<u8>);
        impl Drop for Unwait<'_> {
            fn drop(&mut self) {
                lock(self.0).remove(&self.1);
            }
        }
        let _unwait = Unwait(&e.waiting, key);
        for _ in 0..tries.max(1) {
            if let Err(err) = e.socket.send(&datagram).await {
                // ICMP port unreachable comes back as ECONNREFUSED on the next send:
                // the engine is not there; the next try may find it.
                tracing::debug!(engine = %e.address, %err, "ng send failed");
            }
            match tokio::time::timeout(self.timeout, &mut rx).await {
                Ok(Ok(dict)) => return Ok(Reply::of(dict)),
                Ok(Err(_)) => return Err(NgFailure::Local("reply reader stopped".into())),
                Err(_) => continue,
            }
        }
        Err(NgFailure::Timeout)
    }
}

/// Hands each reply to the request waiting for its cookie; replies no one waits for
/// (a late answer to a request that gave up) are dropped.
async fn read_replies(socket: Arc<UdpSocket>, waiting: Arc<Waiting>) {
    let mut buf = vec![0u8; ng::MAX_DATAGRAM];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(err) => {
                // ECONNREFUSED after an ICMP unreachable: not fatal for the socket.
                tracing::trace!(%err, "ng receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok((cookie, dict)) = ng::split_reply(&buf[..n]) else {
            tracing::debug!(bytes = n, "unreadable ng reply dropped");
            continue;
        };
        let tx = lock(&waiting).remove(cookie);
        if let Some(tx) = tx {
            let _ = tx.send(dict);
        }
    }
}
