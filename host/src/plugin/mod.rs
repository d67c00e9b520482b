//! The wasmtime host for policy plugins.
//!
//! One [`wasmtime::Engine`] (pooling allocator, epoch interruption) serves every
//! plugin. Each plugin is compiled once into an `InstancePre`; a call runs in a store
//! with a memory cap and a deadline. A trap, a timeout, running out of memory or an
//! invalid decision never escapes: [`Plugin::decide`] turns it into the plugin's
//! failure policy (500, or the built-in policy), a log line and a counter.

#![warn(missing_docs)]

pub mod bindings;
pub mod breaker;
mod cache;
pub mod decision;
pub mod engine;
pub mod exec;
mod host_impl;
mod limits;
pub mod outbound;
mod output;
mod registrar_view;
mod registry;
mod routes;
pub mod sip_router;
pub mod tools;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Linker;

pub use self::bindings::{HttpRequest, Peer, PeerTransport, Websocket};
pub use self::cache::CompileCache;
use self::host_impl::{HostState, PluginShared};
pub use self::registrar_view::RegistrarView;
pub use self::registry::{PluginSlot, Plugins};
pub use self::routes::PluginRouter;
use crate::config::{FailurePolicy, InstanceMode, PluginConfig};
pub use crate::http::answer::{Decision, Upgrade};
use crate::http::handshake::HandshakeCheck;
use crate::http::response::Response;
use crate::metrics::Metrics;

/// Why a plugin call produced no usable decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginFailure {
    /// The plugin trapped (panic, unreachable, bad memory access...).
    #[error("trap: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("deadline of {0:?} exceeded")]
    Timeout(Duration),
    /// The plugin tried to grow its memory past its cap.
    #[error("memory limit exceeded: {0}")]
    OutOfMemory(String),
    /// The decision broke a host rule.
    #[error("invalid decision: {0}")]
    InvalidDecision(String),
    /// No instance could be made (pool exhausted, start function failed).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// All of the plugin's instances were busy, and `max-waiting` calls already
    /// waited for one, or this call waited its whole deadline.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The plugin is suspended for this long still: nearly all its calls ran into
    /// their deadline lately ([`breaker`]).
    #[error("suspended for {0:?} more: its calls kept running into their deadline")]
    Suspended(Duration),
}

impl PluginFailure {
    /// A short label for metrics: `trap`, `timeout`, `memory`, `invalid`,
    /// `instantiate`, `busy`, `suspended`.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Trap(_) => "trap",
            Self::Timeout(_) => "timeout",
            Self::OutOfMemory(_) => "memory",
            Self::InvalidDecision(_) => "invalid",
            Self::Instantiate(_) => "instantiate",
            Self::Busy(_) => "busy",
            Self::Suspended(_) => "suspended",
        }
    }

    /// For a failure that is not the plugin's fault, or that ends by itself (busy,
    /// suspended), the seconds to come back in: the `closed` policy answers it 503
    /// with that `Retry-After` (the rest of a suspension, at least 1), not 500.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Busy(_) => Some(1),
            Self::Suspended(left) => Some(left.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        }
    }
}

/// The world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `http-handler`: decides HTTP requests on web listeners.
    HttpHandler,
    /// `sip-router`: decides new out-of-dialog SIP requests.
    SipRouter,
}

impl World {
    /// The WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Self::HttpHandler => "http-handler",
            Self::SipRouter => "sip-router",
        }
    }
}

/// A component linked for one world, ready to instantiate.
pub(crate) enum Pre {
    Http(bindings::HttpHandlerPre<HostState>),
    Sip(bindings::SipRouterPre<HostState>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::Http(p) => p.engine(),
            Self::Sip(p) => p.engine(),
        }
    }
}

/// The exports of a live instance.
enum Exports {
    Http(bindings::HttpHandler),
    Sip(bindings::SipRouter),
}

/// A live instance kept for reuse.
struct Instance {
    store: Store<HostState>,
    exports: Exports,
    calls: u64,
    /// Whom the current call is for (the [`breaker`] counts source addresses).
    caller: Option<std::net::IpAddr>,
    /// When the current call began (for [`Plugin::timer`]).
    began: Instant,
    /// Its place among the plugin's `max-instances` (freed when it is dropped).
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// A place for one call, taken before any Wasm runs ([`Plugin::reserve`]).
pub(crate) struct Reserved {
    place: Place,
    /// The call's deadline, counted from when it asked for the place.
    deadline_at: Instant,
    /// Whom the call is for.
    caller: Option<std::net::IpAddr>,
}

enum Place {
    /// An idle instance, reused.
    Idle(Instance),
    /// A free slot for a new instance.
    Slot(tokio::sync::OwnedSemaphorePermit),
}

/// Idle instances kept per plugin at most (each holds a pool slot).
const MAX_IDLE: usize = 16;

/// Where a plugin version came from, for the operator.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its file, or `builtin:NAME`.
    pub source: String,
    /// The first 8 bytes of the component's SHA-256, in hex.
    pub hash: String,
    /// When it was loaded.
    pub loaded: std::time::SystemTime,
}

/// The Call-ID header of a request as a plugin sees it.
pub(crate) fn sip_call_id(request: &bindings::SipRequest) -> Option<&str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Call-ID"))
        .map(|(_, v)| v.as_str())
}

/// One loaded plugin.
pub struct Plugin {
    shared: Arc<PluginShared>,
    version: Version,
    /// Its calls' durations (the plugin's name's histogram, kept across reloads).
    timer: Arc<crate::metrics::LatencyHistogram>,
    pre: Pre,
    failure: FailurePolicy,
    deadline: Duration,
    memory_limit: usize,
    mode: InstanceMode,
    max_reuse: u64,
    /// Extra time past the deadline before the outer timeout drops the call (the
    /// epoch trap normally fires within one tick).
    grace: Duration,
    idle: Mutex<Vec<Instance>>,
    /// `max-instances` permits; each live instance holds one.
    slots: Arc<tokio::sync::Semaphore>,
    /// Calls waiting for a slot now, at most `max_waiting`.
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    /// Failure log lines, once a minute per cause and source.
    log_gate: Mutex<crate::core::limits::LogGate>,
    /// Whether the plugin is suspended (its calls keep running into their deadline).
    breaker: Mutex<breaker::Breaker>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    fn new(
        name: &str,
        version: Version,
        cfg: &PluginConfig,
        pre: Pre,
        context: &registry::HostContext,
        epoch_tick: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let config_json = serde_json::to_string(&cfg.config).expect("a TOML table is valid JSON");
        let allowed: Vec<crate::config::AllowedHost> = cfg
            .allowed_outbound_hosts
            .iter()
            .filter_map(|e| crate::config::AllowedHost::parse(e).ok())
            .collect();
        Self {
            version,
            timer: metrics.plugin_timer(name),
            shared: Arc::new(PluginShared {
                name: name.to_string(),
                config_json,
                myself: context.myself.clone(),
                registrar: context.registrar.clone(),
                nonce: context.nonce.clone(),
                guess_guard: context.guess_guard.clone(),
                metrics: metrics.clone(),
                keys: context.keys.granted(&cfg.keys),
                users: context.users.clone(),
                outbound: outbound::OutboundHooks::new(
                    name,
                    allowed.into(),
                    cfg.outbound_timeout,
                    cfg.max_outbound,
                ),
            }),
            pre,
            failure: cfg.failure,
            deadline: cfg.deadline,
            memory_limit: cfg.memory_limit,
            mode: cfg.instances,
            max_reuse: cfg.max_reuse,
            grace: epoch_tick * 3 + Duration::from_millis(20),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(
                cfg.max_instances.unwrap_or(1).max(1) as usize,
            )),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: cfg.max_waiting,
            log_gate: Mutex::new(crate::core::limits::LogGate::new()),
            breaker: Mutex::new(breaker::Breaker::new(
                cfg.suspend_after,
                cfg.suspend_for,
                cfg.deadline,
            )),
            metrics,
        }
    }

    /// Where this version came from.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Its calls' durations.
    pub fn timer(&self) -> &crate::metrics::LatencyHistogram {
        &self.timer
    }

    /// Whether its calls are suspended now ([`breaker`]).
    pub fn suspended(&self) -> bool {
        self.breaker
            .lock()
            .expect("breaker lock")
            .suspended_for(Instant::now())
            .is_some()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        match self.pre {
            Pre::Http(_) => World::HttpHandler,
            Pre::Sip(_) => World::SipRouter,
        }
    }

    /// What to do when it fails.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure
    }

    /// Counts a failed call, and logs it at most once a minute per cause and source
    /// (a flood that makes every call fail must not flood the log too).
    pub(crate) fn report_failure(
        &self,
        failure: &PluginFailure,
        what: &str,
        source: Option<std::net::IpAddr>,
    ) {
        self.report_failure_of(failure, what, source, None);
    }

    /// [`Self::report_failure`] for a call about the SIP request with `call_id`.
    pub(crate) fn report_failure_of(
        &self,
        failure: &PluginFailure,
        what: &str,
        source: Option<std::net::IpAddr>,
        call_id: Option<&str>,
    ) {
        self.metrics.plugin_failure(self.name(), failure.cause());
        let ip = source.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        if !self
            .log_gate
            .lock()
            .expect("log gate lock")
            .allow(failure.cause(), ip, Instant::now())
        {
            return;
        }
        tracing::warn!(
            plugin = self.name(),
            cause = failure.cause(),
            source = ?source,
            call_id = call_id.unwrap_or(""),
            "plugin failed on {what}: {failure}; policy {:?} (logged at most once a minute per cause and source)",
            self.failure
        );
    }

    /// Asks the plugin about a request and applies the failure policy: always returns
    /// a decision the host can act on.
    pub async fn decide(&self, request: HttpRequest, check: &HandshakeCheck) -> Decision {
        match self.call(&request).await {
            Ok(d) => d,
            Err(failure) => {
                let peer = request.peer.remote_addr.parse().ok();
                self.report_failure(&failure, "an HTTP request", peer);
                match (self.failure, failure.retry_after()) {
                    (FailurePolicy::Closed, Some(secs)) => {
                        let mut r = Response::error(503, "");
                        r.headers.push(("Retry-After".into(), secs.to_string()));
                        Decision::Reply(r)
                    }
                    (FailurePolicy::Closed, _) => Decision::Reply(Response::error(500, "")),
                    (FailurePolicy::Open, _) => builtin_policy(check),
                }
            }
        }
    }

    /// One call: an instance (reused or fresh), the deadline, the decision checked.
    pub async fn call(&self, request: &HttpRequest) -> Result<Decision, PluginFailure> {
        let mut instance = self.begin(request.peer.remote_addr.parse().ok()).await?;
        let Instance { store, exports, .. } = &mut instance;
        let Exports::Http(exports) = exports else {
            return Err(self.wrong_world(World::HttpHandler));
        };
        // The request's credentials, for the plugin's `digest` imports.
        store.data_mut().digest_request = Some(sip_router::DigestFacts::of_http(request));
        let result = within(
            self.deadline + self.grace,
            exports.call_on_http_request(&mut *store, request),
        )
        .await;
        store.data_mut().digest_request = None;
        let guest = self.end(instance, result)?;
        decision::validate(guest).map_err(PluginFailure::InvalidDecision)
    }

    /// `on-sip-request` of a `sip-router` plugin (the decision is not validated yet);
    /// `facts` serve its `digest` imports.
    pub async fn call_sip_request(
        &self,
        request: &bindings::SipRequest,
        facts: &sip_router::DigestFacts,
    ) -> Result<(bindings::GuestSipDecision, Option<crate::media::Choice>), PluginFailure> {
        let reserved = self
            .reserve(request.source.remote_addr.parse().ok())
            .await?;
        self.call_sip_request_in(reserved, request, facts).await
    }

    /// [`Self::call_sip_request`] in a place already [reserved](Self::reserve): the
    /// part that runs Wasm, for the plugin runtime, while waiting for the place is
    /// done where the call was made.
    pub(crate) async fn call_sip_request_in(
        &self,
        reserved: Reserved,
        request: &bindings::SipRequest,
        facts: &sip_router::DigestFacts,
    ) -> Result<(bindings::GuestSipDecision, Option<crate::media::Choice>), PluginFailure> {
        let mut instance = self.start(reserved).await?;
        let Instance { store, exports, .. } = &mut instance;
        let Exports::Sip(exports) = exports else {
            return Err(self.wrong_world(World::SipRouter));
        };
        store.data_mut().digest_request = Some(facts.clone());
        store.data_mut().media_choice = None;
        store.data().output.set_call_id(sip_call_id(request));
        let result = within(
            self.deadline + self.grace,
            exports.call_on_sip_request(&mut *store, request),
        )
        .await;
        store.data_mut().digest_request = None;
        let media = store.data_mut().media_choice.take();
        self.end(instance, result).map(|d| (d, media))
    }

    /// `on-flow-closed` of a `sip-router` plugin.
    pub async fn call_flow_closed(&self, flow: &bindings::ClosedFlow) -> Result<(), PluginFailure> {
        let mut instance = self.begin(flow.flow.remote_addr.parse().ok()).await?;
        let Instance { store, exports, .. } = &mut instance;
        let Exports::Sip(exports) = exports else {
            return Err(self.wrong_world(World::SipRouter));
        };
        let result = within(
            self.deadline + self.grace,
            exports.call_on_flow_closed(store, flow),
        )
        .await;
        self.end(instance, result)
    }

    fn wrong_world(&self, wanted: World) -> PluginFailure {
        PluginFailure::Instantiate(format!(
            "implements {}, called as {}",
            self.world().name(),
            wanted.name()
        ))
    }

    /// An instance (reused or fresh) armed with this call's deadline.
    async fn begin(&self, caller: Option<std::net::IpAddr>) -> Result<Instance, PluginFailure> {
        let reserved = self.reserve(caller).await?;
        self.start(reserved).await
    }

    /// Whether a call may run: [`PluginFailure::Suspended`] while the plugin is
    /// suspended (counted as a call, since the failure policy answers it); `true` for
    /// the probe after a suspension.
    fn admit(&self) -> Result<bool, PluginFailure> {
        let admit = self
            .breaker
            .lock()
            .expect("breaker lock")
            .admit(Instant::now());
        match admit {
            breaker::Admit::Run => Ok(false),
            breaker::Admit::Probe => Ok(true),
            breaker::Admit::Suspended(left) => {
                self.metrics.plugin_call(self.name());
                Err(PluginFailure::Suspended(left))
            }
        }
    }

    /// A place for a call for `caller` now, if there is one (`Ok(None)`: there is
    /// none free now): an idle instance, or a free slot for a new one. Runs no Wasm.
    pub(crate) fn try_reserve(
        &self,
        caller: Option<std::net::IpAddr>,
    ) -> Result<Option<Reserved>, PluginFailure> {
        let probe = self.admit()?;
        let place = self.try_place(caller);
        if probe && place.is_none() {
            // It waits for a place elsewhere and asks again there.
            self.cancel_probe();
        }
        Ok(place)
    }

    fn cancel_probe(&self) {
        self.breaker
            .lock()
            .expect("breaker lock")
            .cancel_probe(Instant::now());
    }

    fn try_place(&self, caller: Option<std::net::IpAddr>) -> Option<Reserved> {
        let deadline_at = Instant::now() + self.deadline;
        if self.mode == InstanceMode::Reuse
            && let Some(i) = self.idle.lock().expect("idle list lock").pop()
        {
            return Some(Reserved {
                place: Place::Idle(i),
                deadline_at,
                caller,
            });
        }
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(Reserved {
            place: Place::Slot(slot),
            deadline_at,
            caller,
        })
    }

    /// A place for a call for `caller`: at once, or after waiting at most the call's
    /// deadline behind at most `max-waiting` other calls ([`PluginFailure::Busy`]
    /// otherwise; [`PluginFailure::Suspended`] while the plugin is suspended, also when
    /// it was suspended during the wait). Runs no Wasm, so it can wait where the call
    /// was made while the plugin runtime runs Wasm; the time waited counts against the
    /// call's deadline.
    pub(crate) async fn reserve(
        &self,
        caller: Option<std::net::IpAddr>,
    ) -> Result<Reserved, PluginFailure> {
        let probe = self.admit()?;
        if let Some(r) = self.try_place(caller) {
            return Ok(r);
        }
        let deadline_at = Instant::now() + self.deadline;
        let slot = match self.slot().await {
            Ok(slot) => slot,
            Err(busy) => {
                if probe {
                    self.cancel_probe();
                }
                return Err(busy);
            }
        };
        if !probe
            && let Some(left) = self
                .breaker
                .lock()
                .expect("breaker lock")
                .suspended_for(Instant::now())
        {
            self.metrics.plugin_call(self.name());
            return Err(PluginFailure::Suspended(left));
        }
        Ok(Reserved {
            place: Place::Slot(slot),
            deadline_at,
            caller,
        })
    }

    /// A call for `caller` that ran finished, at its deadline or not: the [`breaker`]
    /// counts it, and a suspension or a return is logged and counted.
    fn finished(&self, caller: Option<std::net::IpAddr>, timed_out: bool) {
        let change =
            self.breaker
                .lock()
                .expect("breaker lock")
                .finished(Instant::now(), timed_out, caller);
        match change {
            None => {}
            Some(breaker::Change::Suspended(length)) => {
                self.metrics.plugin_suspension(self.name());
                tracing::warn!(
                    plugin = self.name(),
                    "plugin suspended for {length:?}: its calls keep running into their \
                     deadline of {:?}; meanwhile its failure policy ({:?}) answers at once, \
                     then one call probes it",
                    self.deadline,
                    self.failure
                );
            }
            Some(breaker::Change::Resumed) => {
                tracing::info!(
                    plugin = self.name(),
                    "plugin back: a probe call was in time"
                );
            }
        }
    }

    /// The instance for a reserved place (instantiated in its slot if need be), armed
    /// with the call's deadline.
    async fn start(&self, reserved: Reserved) -> Result<Instance, PluginFailure> {
        self.metrics.plugin_call(self.name());
        let began = Instant::now();
        let Reserved {
            place,
            deadline_at,
            caller,
        } = reserved;
        let mut instance = match place {
            Place::Idle(i) => i,
            Place::Slot(slot) => match self.instantiate(deadline_at, slot).await {
                Ok(i) => i,
                Err(failure) => {
                    self.timer.observe(began.elapsed());
                    self.finished(caller, matches!(failure, PluginFailure::Timeout(_)));
                    return Err(failure);
                }
            },
        };
        instance.caller = caller;
        instance.began = began;
        // No request's Call-ID from an earlier call on this instance (a SIP call sets
        // its own; the lines its end flushes keep it).
        instance.store.data().output.set_call_id(None);
        instance.store.data_mut().begin_call(deadline_at);
        instance.store.set_epoch_deadline(1);
        Ok(instance)
    }

    /// Ends a call: its outcome, and the instance kept for reuse when it went well
    /// (an instance that failed in any way is dropped).
    fn end<T>(
        &self,
        mut instance: Instance,
        result: Result<wasmtime::Result<T>, TimedOut>,
    ) -> Result<T, PluginFailure> {
        instance.store.data().output.end_call();
        self.timer.observe(instance.began.elapsed());
        let value = match result {
            Err(_) => Err(PluginFailure::Timeout(self.deadline)),
            Ok(Err(e)) => Err(classify(&e, instance.store.data(), self.deadline)),
            Ok(Ok(v)) => Ok(v),
        };
        self.finished(
            instance.caller,
            matches!(value, Err(PluginFailure::Timeout(_))),
        );
        let value = value?;
        instance.calls += 1;
        if self.mode == InstanceMode::Reuse && instance.calls < self.max_reuse {
            let mut idle = self.idle.lock().expect("idle list lock");
            if idle.len() < MAX_IDLE {
                idle.push(instance);
            }
        }
        Ok(value)
    }

    /// A free slot for a new instance: at once, or after waiting at most the call's
    /// deadline behind at most `max-waiting` other calls.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PluginFailure> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        // Failed before running: counted as a call like any other.
        let busy = |why| {
            self.metrics.plugin_call(self.name());
            Err(PluginFailure::Busy(why))
        };
        let queued = self.waiting.fetch_update(Relaxed, Relaxed, |n| {
            (n < self.max_waiting).then_some(n + 1)
        });
        if queued.is_err() {
            return busy("max-waiting calls wait already");
        }
        struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _leave = Leave(&self.waiting);
        match tokio::time::timeout(self.deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => busy("closed"),
            Err(_) => busy("no instance free within the deadline"),
        }
    }

    async fn instantiate(
        &self,
        deadline_at: Instant,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Instance, PluginFailure> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), self.memory_limit),
        );
        store.limiter(|s| &mut s.memory);
        // At every epoch tick: past the deadline, trap; otherwise yield to the async
        // runtime so that a busy plugin does not starve other connections.
        store.epoch_deadline_callback(|mut ctx| {
            let d = &mut ctx.data_mut().deadline;
            match d.at {
                Some(at) if Instant::now() >= at => {
                    d.expired = true;
                    Err(wasmtime::format_err!("plugin deadline exceeded"))
                }
                _ => Ok(wasmtime::UpdateDeadline::Yield(1)),
            }
        });
        // Start functions run under the same deadline as the call.
        store.data_mut().begin_call(deadline_at);
        store.set_epoch_deadline(1);
        let made = match &self.pre {
            Pre::Http(pre) => pre.instantiate_async(&mut store).await.map(Exports::Http),
            Pre::Sip(pre) => pre.instantiate_async(&mut store).await.map(Exports::Sip),
        };
        match made {
            Ok(exports) => {
                self.metrics.plugin_instantiation(self.name());
                Ok(Instance {
                    store,
                    exports,
                    calls: 0,
                    caller: None,
                    began: Instant::now(),
                    _slot: slot,
                })
            }
            Err(e) => {
                store.data().output.end_call();
                Err(match classify(&e, store.data(), self.deadline) {
                    PluginFailure::Trap(msg) => PluginFailure::Instantiate(msg),
                    other => other,
                })
            }
        }
    }

    /// Drops idle instances (e.g. before the plugin is replaced).
    pub fn clear_idle(&self) {
        self.idle.lock().expect("idle list lock").clear();
    }
}

/// The outer wall-clock limit of a call ran out.
#[derive(Debug)]
struct TimedOut;

/// `fut`, or [`TimedOut`] once `limit` has passed. Unlike `tokio::time::timeout` the
/// timer is only made when `fut` does not finish at its first poll: a plugin call
/// normally does (the epoch deadline bounds running Wasm), and arming a timer would
/// wake the runtime's parked timer thread on every call, which costs more than the
/// call. The timer is for calls that wait on the host (outbound HTTP, a guest sleep).
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Result<F::Output, TimedOut> {
    use std::task::Poll;
    let started = tokio::time::Instant::now();
    let mut fut = std::pin::pin!(fut);
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
        match t.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(TimedOut)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn classify(e: &wasmtime::Error, state: &HostState, deadline: Duration) -> PluginFailure {
    if state.deadline.expired {
        return PluginFailure::Timeout(deadline);
    }
    if state.memory.hit {
        return PluginFailure::OutOfMemory(format!("cap of {} bytes", state.memory.limit()));
    }
    // A trap says what the guest did; anything else is best told by its root cause
    // (the outer layers are wasm backtraces).
    let text = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let mut text: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    // What a language runtime printed last usually says why it trapped (an uncaught
    // exception, a panic message).
    if let Some(line) = state.output.last_stderr() {
        text.push_str(" (stderr: ");
        text.extend(line.trim().chars().take(300));
        text.push(')');
    }
    PluginFailure::Trap(text)
}

/// The decision used when a plugin configured `failure = "open"` fails: upgrade
/// WebSocket handshakes (the host still checks them), 404 for anything else.
pub fn builtin_policy(check: &HandshakeCheck) -> Decision {
    match check {
        HandshakeCheck::NotWebSocket => Decision::Reply(Response::error(404, "")),
        _ => Decision::Upgrade(Upgrade {
            subprotocol: crate::http::handshake::SIP_SUBPROTOCOL.into(),
            headers: Vec::new(),
            identity: Vec::new(),
        }),
    }
}

/// A linker for `world`: WASI p2 (empty context) and the world's host interfaces.
fn linker(engine: &wasmtime::Engine, world: World) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Outgoing HTTP, refused unless the plugin's allow-list names the host.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    match world {
        World::HttpHandler => bindings::HttpHandler::add_to_linker::<
            _,
            wasmtime::component::HasSelf<_>,
        >(&mut linker, |s| s)?,
        World::SipRouter => {
            bindings::SipRouter::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
                &mut linker,
                |s| s,
            )?
        }
    }
    Ok(linker)
}

/// The world a component implements, by its exports.
pub(crate) fn world_of(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> World {
    let sip = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == "on-sip-request");
    if sip {
        World::SipRouter
    } else {
        World::HttpHandler
    }
}

/// The `wasi:` interfaces the host links for real (WASI p2 with an empty context:
/// they load and mostly answer "not permitted" or nothing).
const GRANTED_WASI: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Interfaces of this package a plugin may import.
const SIPWASM_IMPORTS: &[&str] = &[
    "sipwasm:plugin/host@0.2",
    "sipwasm:plugin/types@0.2",
    "sipwasm:plugin/sip-types@0.2",
    "sipwasm:plugin/registrar@0.2",
    "sipwasm:plugin/digest@0.2",
];

/// A component ready to instantiate, and the `wasi:` interfaces it imports that this
/// host does not grant (linked as functions that trap when called).
pub(crate) struct Prepared {
    pub(crate) pre: wasmtime::component::InstancePre<HostState>,
    pub(crate) denied: Vec<String>,
}

/// Links `component` against the host: the host's own interfaces, WASI, and any other
/// `wasi:` interface (say `wasi:keyvalue`, which a language toolchain may add) as
/// traps, so the component loads and a use of what it was not granted fails closed.
/// Any other unknown import is an error that names it.
pub(crate) fn prepare(
    linker: &Linker<HostState>,
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> anyhow::Result<Prepared> {
    let err = match linker.instantiate_pre(component) {
        Ok(pre) => {
            return Ok(Prepared {
                pre,
                denied: Vec::new(),
            });
        }
        Err(e) => e,
    };
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let foreign: Vec<&String> = imports
        .iter()
        .filter(|n| !n.starts_with("wasi:") && !SIPWASM_IMPORTS.iter().any(|p| n.starts_with(p)))
        .collect();
    if !foreign.is_empty() {
        let list: Vec<&str> = foreign.iter().map(|s| s.as_str()).collect();
        anyhow::bail!(
            "it imports {}, which this host does not provide",
            list.join(", ")
        );
    }
    let denied: Vec<String> = imports
        .iter()
        .filter(|n| n.starts_with("wasi:") && !GRANTED_WASI.iter().any(|p| n.starts_with(p)))
        .cloned()
        .collect();
    if denied.is_empty() {
        // Only granted interfaces, yet it does not link: a mismatch in one of them.
        anyhow::bail!("its imports do not match this host's: {err:#}");
    }
    let mut linker = linker.clone();
    for (name, item) in component.component_type().imports(engine) {
        if denied.iter().any(|d| d == name) {
            deny(&mut linker, engine, name, &item.ty)
                .map_err(|e| anyhow::anyhow!("cannot link {name} as denied: {e:#}"))?;
        }
    }
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow::anyhow!("its imports do not match this host's: {e:#}"))?;
    Ok(Prepared { pre, denied })
}

/// Defines every function of the interface `name` as a trap and its resources as
/// opaque host resources.
fn deny(
    linker: &mut Linker<HostState>,
    engine: &wasmtime::Engine,
    name: &str,
    item: &wasmtime::component::types::ComponentItem,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    let ComponentItem::ComponentInstance(instance) = item else {
        let what = name.to_string();
        return linker.root().func_new(name, move |_, _, _, _| {
            wasmtime::bail!("{what} is not granted to plugins")
        });
    };
    let mut inner = linker.instance(name)?;
    for (export, ty) in instance.exports(engine) {
        match ty.ty {
            ComponentItem::ComponentFunc(_) => {
                let what = format!("{name}#{export}");
                inner.func_new(export, move |_, _, _, _| {
                    wasmtime::bail!("{what} is not granted to plugins")
                })?;
            }
            ComponentItem::Resource(_) => {
                inner.resource(
                    export,
                    wasmtime::component::ResourceType::host::<()>(),
                    |_, _| Ok(()),
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}
