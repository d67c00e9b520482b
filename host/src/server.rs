//! Wiring: state on disk, listeners, plugins, the core and its driver task, shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::auth::NonceKey;
use crate::config::{Config, ListenTransport};
use crate::core::limits::RateConfig;
use crate::core::registrar::RegistrarConfig;
use crate::core::transaction::TimerConfig;
use crate::core::{Core, CoreConfig, CoreLimits, Myself, SipListener, Transport};
use crate::driver::flow::{FlowInfo, FlowTable};
use crate::driver::media::Engines;
use crate::driver::outlet::{ConnectRequest, Connector, Outlet};
use crate::driver::{self, CoreCell, Router};
use crate::files::{create_private_dir, create_private_file};
use crate::metrics::ConnLimit;
use crate::metrics::Metrics;
use crate::plugin::sip_router::SipRouter;
use crate::plugin::{CompileCache, PluginRouter, Plugins};
use crate::store::Store;
use crate::transport::admission::Admission;
use crate::transport::ws::{self, Connection};
use crate::transport::{Shared, SipLimits, tcp, tls, udp};

/// A bound stream listener (ws, wss, tcp, tls).
struct BoundListener {
    listener: TcpListener,
    local: SocketAddr,
    transport: ListenTransport,
    /// Which plugin decides each request (web listeners).
    plugin: Option<Arc<PluginRouter>>,
    tls: Option<TlsAcceptor>,
}

/// A bound UDP listener.
struct BoundUdp {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
}

/// A server with its sockets bound and plugins compiled, ready to run.
pub struct Server {
    plugins: Plugins,
    watch_interval: Option<Duration>,
    listeners: Vec<BoundListener>,
    udp: Vec<BoundUdp>,
    /// The admin listener, its bearer token and the names it answers to.
    admin: Option<(TcpListener, Arc<str>, Arc<[String]>)>,
    /// What the admin API needs besides the shared state.
    admin_extra: AdminExtra,
    shared: Arc<Shared>,
    closed_rx: mpsc::UnboundedReceiver<Arc<FlowInfo>>,
    connect_rx: mpsc::UnboundedReceiver<ConnectRequest>,
    shutdown_tx: watch::Sender<bool>,
    grace: Duration,
    /// The media engines, pinged while the server runs.
    media: Option<Arc<Engines>>,
}

/// What the admin API needs from start-up.
struct AdminExtra {
    node: Option<String>,
    config_path: Option<std::path::PathBuf>,
    config: Config,
    nofile: u64,
}

impl Server {
    /// Prepares the data directory, binds every listener and loads every plugin.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        Self::bind_as(config, false).await
    }

    /// Checks `config` as a start would — the data directory prepared, certificates
    /// and keys read (or made, as a first start makes them), every plugin compiled,
    /// the media engines', the cluster's and the collectors' addresses parsed — but
    /// binds ephemeral loopback ports instead of the listen addresses (they may be
    /// another machine's, or held by the server this one is to replace) and does not
    /// join the cluster (no heartbeat under this node's id).
    pub async fn check(mut config: Config) -> anyhow::Result<()> {
        let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
        for l in &mut config.listen {
            l.address = ephemeral;
        }
        if let Some(a) = &mut config.admin {
            a.listen = ephemeral;
        }
        Self::bind_as(config, true).await.map(drop)
    }

    async fn bind_as(config: Config, check: bool) -> anyhow::Result<Self> {
        let data_dir = config.data_dir();
        create_private_dir(&data_dir)?;
        let secret = load_or_create_secret(&data_dir)?;
        let admin_token: Option<Arc<str>> = match &config.admin {
            Some(a) => Some(match &a.token {
                Some(t) => t.as_str().into(),
                None => load_or_create_admin_token(&data_dir)?.into(),
            }),
            None => None,
        };

        enum Socket {
            Stream(TcpListener),
            Datagram(Arc<UdpSocket>),
        }
        let mut sockets = Vec::new();
        for (i, l) in config.listen.iter().enumerate() {
            let what = || format!("listen[{i}] ({} {}): cannot bind", l.transport, l.address);
            let (socket, local) = if l.transport == ListenTransport::Udp {
                let s = UdpSocket::bind(l.address).await.with_context(what)?;
                let local = s.local_addr()?;
                raise_udp_buffers(&s, local);
                udp::report_icmp_errors(&s, local);
                (Socket::Datagram(Arc::new(s)), local)
            } else {
                let s = TcpListener::bind(l.address).await.with_context(what)?;
                let local = s.local_addr()?;
                (Socket::Stream(s), local)
            };
            sockets.push((socket, local));
        }
        let admin = match (&config.admin, admin_token) {
            (Some(a), Some(token)) => Some((
                TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("admin.listen ({}): cannot bind", a.listen))?,
                token,
                a.hosts.clone().into(),
            )),
            _ => None,
        };
        let addrs: Vec<SocketAddr> = sockets.iter().map(|(_, a)| *a).collect();
        let myself = Arc::new(Myself::new(&config.server.domains, &addrs));
        let metrics = Arc::new(Metrics::default());

        // Before the plugins: a key file that is missing or broken stops the start.
        let keys = crate::keys::KeyRing::load(
            config
                .keys
                .iter()
                .map(|(name, k)| (name.as_str(), k.file.as_deref())),
            &data_dir,
        )?;
        let users = Arc::new(
            crate::users::UserStore::open(&config.users_file())
                .map_err(|e| anyhow::anyhow!("users.file: {e}"))?,
        );
        let plugins = {
            let (config, myself, metrics) = (config.clone(), myself.clone(), metrics.clone());
            let users = users.clone();
            let cache = CompileCache {
                dir: data_dir.join("cache"),
                secret,
            };
            tokio::task::spawn_blocking(move || {
                Plugins::load(&config, myself, metrics, Some(&cache), &keys, users)
            })
            .await??
        };

        let mut listeners = Vec::new();
        let mut udp = Vec::new();
        let mut sip_listeners = Vec::new();
        for ((socket, local), l) in sockets.into_iter().zip(&config.listen) {
            sip_listeners.push(SipListener {
                transport: l.transport.sip_transport(),
                addr: local,
            });
            let listener = match socket {
                Socket::Datagram(socket) => {
                    udp.push(BoundUdp { socket, local });
                    continue;
                }
                Socket::Stream(s) => s,
            };
            let tls = if l.transport.is_tls() {
                Some(TlsAcceptor::from(
                    tls::server_config(l.tls_cert.as_deref(), l.tls_key.as_deref(), &data_dir)
                        .with_context(|| format!("{} listener {local}", l.transport))?,
                ))
            } else {
                None
            };
            let plugin = l.transport.is_web().then(|| {
                Arc::new(
                    PluginRouter::new(&plugins, l.plugin.as_deref(), &l.routes)
                        .enforcing_identity(l.identity == crate::config::IdentityMode::Enforce),
                )
            });
            listeners.push(BoundListener {
                listener,
                local,
                transport: l.transport,
                plugin,
                tls,
            });
        }
        // A check leaves the location store alone (the server it is to replace may be
        // writing it): it opens a scratch one, removed at once.
        let (store, stored) = if check {
            let scratch = std::env::temp_dir().join(format!(
                "sipwasm-check-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            ));
            create_private_dir(&scratch)?;
            let opened = Store::open(&scratch, std::time::Instant::now());
            let _ = std::fs::remove_dir_all(&scratch);
            opened?
        } else {
            Store::open(&data_dir, std::time::Instant::now())?
        };
        let sip = &config.sip;
        // Per-source limits spare the trusted peers and `limits.exempt`.
        let exempt = crate::core::peers::TrustedPeers::new(
            sip.trusted_peers
                .iter()
                .chain(&config.limits.exempt)
                .chain(config.cluster.iter().flat_map(|c| &c.peers))
                .copied()
                .collect(),
        );
        let gateways: Vec<_> = config
            .gateways
            .iter()
            .map(crate::config::GatewaySetConfig::to_core)
            .collect();
        // Every gateway member is up until its probes say otherwise.
        for g in &gateways {
            for m in &g.members {
                metrics.set_gateway(&g.name, &m.uri.to_string(), true);
            }
        }
        let mut core = Core::new(CoreConfig {
            myself,
            listeners: sip_listeners,
            server_header: config.server.server_header.clone(),
            secret,
            timers: TimerConfig {
                t1: sip.t1,
                t2: sip.t2,
                t4: sip.t4,
                c: sip.timer_c,
                failover: sip.failover_after,
            },
            registrar: RegistrarConfig {
                min_expires: sip.min_expires,
                max_expires: sip.max_expires,
                default_expires: sip.default_expires,
                flow_timer: sip.flow_timer,
                max_contacts: sip.max_contacts,
                max_bindings: sip.max_bindings,
                store_path_without_support: sip.path_without_support
                    == crate::config::PathPolicy::Store,
            },
            relay: sip.relay,
            trusted: crate::core::peers::TrustedPeers::new(
                sip.trusted_peers
                    .iter()
                    .chain(config.cluster.iter().flat_map(|c| &c.peers))
                    .copied()
                    .collect(),
            ),
            limits: CoreLimits {
                max_transactions: config.limits.max_transactions,
            },
            media: config.media.settings(),
            gateways,
            cluster: config
                .cluster
                .as_ref()
                .map(|c| crate::core::cluster::ClusterSettings {
                    route_host: c.route_host(),
                    peers: crate::core::peers::TrustedPeers::new(c.peers.clone()),
                }),
        });
        core.start_probes(std::time::Instant::now());
        let router = plugins.router().map(|slot| {
            tracing::info!(plugin = slot.name(), "SIP requests are routed by plugin");
            Router {
                plugin: SipRouter::new(slot, plugins.nonce_key(), &config.sip.digest_algorithms),
                view: plugins.registrar_view(),
            }
        });
        let restored = stored.len();
        for b in stored {
            let kept = core.restore_binding(b, std::time::Instant::now());
            if let (Some(b), Some(r)) = (kept, &router) {
                r.view.set(&b.aor, core.bindings(&b.aor));
            }
        }
        let nofile = raise_nofile();
        let connection_cap = config.limits.connection_cap(nofile);
        tracing::info!(
            max = connection_cap,
            per_source = config.limits.connections_per_source,
            "connection limits"
        );
        let media = if config.media.engines.is_empty() {
            None
        } else {
            let engines = Engines::open(&config.media, metrics.clone()).await?;
            tracing::info!(
                engines = engines.len(),
                mode = ?config.media.mode(),
                "media relay through rtpengine"
            );
            Some(Arc::new(engines))
        };
        let dns = Arc::new(crate::dns::Dns::new(&config.dns));
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| crate::cluster::Cluster::new(c, metrics.clone()))
            .transpose()?;
        let tls_client = crate::transport::tls::client_config(&config.tls_client)?;
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let flows = Arc::new(FlowTable::new(closed_tx, metrics.clone()));
        let (connect_tx, connect_rx) = mpsc::unbounded_channel();
        let outlet = Outlet {
            flows: flows.clone(),
            udp: udp.iter().map(|u| (u.local, u.socket.clone())).collect(),
            connector: Connector::new(connect_tx),
            metrics: metrics.clone(),
            capture: crate::capture::Capture::open(&config.capture)?,
        };
        let shared = Arc::new(Shared {
            http: config.http.clone(),
            websocket: config.websocket.clone(),
            sip: SipLimits {
                max_message_bytes: config.sip.max_message_bytes,
                tcp_idle_timeout: config.sip.tcp_idle_timeout,
                first_message_timeout: config.limits.first_message_timeout,
                ws_partial_timeout: config.limits.ws_partial_timeout,
            },
            admission: Arc::new(Admission::new(
                connection_cap,
                config.limits.connections_per_source,
                exempt.clone(),
                metrics.clone(),
            )),
            tls_client,
            dns: dns.clone(),
            gate: crate::transport::gate::SourceGate::new(
                RateConfig {
                    per_second: config.limits.rate,
                    burst: config.limits.rate_burst,
                    ban: config.limits.rate_ban,
                },
                exempt,
                metrics.clone(),
            ),
            server_header: config.server.server_header.clone(),
            flows,
            core: CoreCell::new(
                core,
                store,
                router,
                outlet,
                media.clone(),
                dns.clone(),
                cluster.clone(),
            ),
            nonce: NonceKey::new(secret),
            metrics,
            shutdown: shutdown_rx,
            grace: config.server.shutdown_grace,
            drain: Arc::new(crate::drain::Drain::default()),
        });
        if let Some(c) = cluster.as_ref().filter(|_| !check) {
            plugins.registrar_view().attach_cluster(c.clone());
            // The store's news (eviction, data lost) for the core, in order.
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            c.start(tx);
            let cell = Arc::downgrade(&shared.core);
            tokio::spawn(async move {
                while let Some(input) = rx.recv().await {
                    let Some(cell) = cell.upgrade() else { return };
                    cell.submit(input, None).await;
                }
            });
            tracing::info!(node = c.node(), "cluster: location shared on Redis");
        }
        if restored > 0 {
            tracing::info!(
                bindings = restored,
                "restored UDP registrations from the data directory"
            );
        }
        Ok(Self {
            admin_extra: AdminExtra {
                node: config.cluster.as_ref().map(|c| c.node_id.clone()),
                config_path: config.file.clone(),
                config: config.clone(),
                nofile,
            },
            plugins,
            watch_interval: config
                .plugin_runtime
                .watch
                .then_some(config.plugin_runtime.watch_interval),
            listeners,
            udp,
            admin,
            shared,
            closed_rx,
            connect_rx,
            shutdown_tx,
            grace: config.server.shutdown_grace,
            media,
        })
    }

    /// The bound addresses of the listeners, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|l| l.local)
            .chain(self.udp.iter().map(|u| u.local))
            .collect()
    }

    /// Runs until `stop` completes, then closes every WebSocket with 1001 and returns
    /// once connections are gone (or the grace period is over).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            admin_extra,
            plugins,
            watch_interval,
            listeners,
            udp,
            admin,
            shared,
            closed_rx,
            connect_rx,
            shutdown_tx,
            grace,
            media,
        } = self;
        let live = Arc::new(AtomicUsize::new(0));
        let driver = tokio::spawn(driver::drive(shared.core.clone(), closed_rx));
        let prober = media.map(|engines| {
            tokio::spawn(driver::probe_media(Arc::downgrade(&shared.core), engines))
        });
        tokio::spawn(tcp::open_when_asked(shared.clone(), connect_rx));
        let reloader = crate::admin::reload::Reloader {
            shared: shared.clone(),
            plugins: plugins.clone(),
            config_path: admin_extra.config_path.clone(),
            config: Arc::new(tokio::sync::Mutex::new(admin_extra.config.clone())),
            nofile: admin_extra.nofile,
            serial: Arc::new(tokio::sync::Mutex::new(())),
        };
        if let Some((admin, token, hosts)) = admin {
            let addr = admin.local_addr()?;
            tracing::info!(%addr, "admin API listening: dashboard at /ui/, control API at /api/v1/, metrics at /metrics");
            tokio::spawn(crate::admin::serve(
                admin,
                crate::admin::AdminState {
                    shared: shared.clone(),
                    plugins: plugins.clone(),
                    node: admin_extra.node.clone(),
                    started: std::time::SystemTime::now(),
                    started_at: Instant::now(),
                    reloader: reloader.clone(),
                    server: shared.server_header.clone(),
                    token,
                    hosts,
                },
                shared.shutdown.clone(),
            ));
        }
        tokio::spawn(reload_plugins(
            reloader,
            watch_interval,
            shared.shutdown.clone(),
        ));
        for u in udp {
            tracing::info!(transport = "udp", address = %u.local, "listening");
            // One receiver per socket: measured faster than several sharing it (they
            // contend for the socket and wake each other for nothing).
            tokio::spawn(udp::run(u.socket, u.local, shared.clone()));
        }
        for l in listeners {
            match &l.plugin {
                Some(p) => {
                    tracing::info!(transport = %l.transport, address = %l.local, plugins = p.describe(), "listening")
                }
                None => tracing::info!(transport = %l.transport, address = %l.local, "listening"),
            }
            tokio::spawn(accept_loop(l, shared.clone(), live.clone()));
        }
        tokio::select! {
            () = stop => {}
            () = drained(&shared) => {
                tracing::warn!("drained (no dialog or transaction left): stopping as asked");
            }
        }
        tracing::info!(connections = live.load(Ordering::Relaxed), "shutting down");
        let _ = shutdown_tx.send(true);
        let deadline = Instant::now() + grace + Duration::from_millis(500);
        while live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        driver.abort();
        if let Some(p) = prober {
            p.abort();
        }
        // Every answered REGISTER is on disk before the process ends.
        let cell = shared.clone();
        let _ = tokio::task::spawn_blocking(move || cell.core.close_store()).await;
        tracing::info!(remaining = live.load(Ordering::Relaxed), "stopped");
        Ok(())
    }
}

/// Completes once the server drains with `exit` asked and no dialog or transaction at
/// work is left.
async fn drained(shared: &Shared) {
    loop {
        let d = &shared.drain;
        if d.draining() && d.exit_when_empty() {
            if d.out_of_time() {
                tracing::warn!("drain time limit reached with calls left: stopping as asked");
                return;
            }
            if shared.core.call(|core, now| core.in_progress(now)).await == Some((0, 0)) {
                return;
            }
        }
        tokio::select! {
            () = d.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Reloads the configuration on SIGHUP (as `POST /api/v1/reload`: every plugin, the
/// limits; what needs a restart is logged) and, when watching, the plugins whose file
/// changed. Compiling happens on the blocking pool; the old version serves meanwhile.
async fn reload_plugins(
    reloader: crate::admin::reload::Reloader,
    watch: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP handler, reload by signal is off: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(watch.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let all = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = tick.tick() => false,
            _ = shutdown.changed() => return,
        };
        if all {
            tracing::info!("SIGHUP: reloading the configuration and the plugins");
            let (status, answer) = crate::admin::reload::reload(&reloader).await;
            if status != 200 {
                tracing::error!("SIGHUP reload: {answer}");
            }
            continue;
        }
        if watch.is_none() {
            continue;
        }
        let _one_at_a_time = reloader.serial.lock().await;
        let plugins = reloader.plugins.clone();
        let _ = tokio::task::spawn_blocking(move || plugins.reload_changed()).await;
    }
}

/// Decrements the live-connection count when a connection task ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(l: BoundListener, shared: Arc<Shared>, live: Arc<AtomicUsize>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = l.listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(address = %l.local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.drain.draining() {
            // Draining: the client is to connect to another server.
            shared.drain.refused_connection();
            tracing::debug!(%remote, address = %l.local, "connection closed at accept: draining");
            drop(stream);
            continue;
        }
        // Past a connection limit: closed at once (counted and logged by admission).
        let Some(ticket) = shared.admission.admit(remote.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(live.clone());
        let (shared, plugin, tls, local) =
            (shared.clone(), l.plugin.clone(), l.tls.clone(), l.local);
        // Boxed: the task then holds only what each phase needs, not the sum of every
        // branch's state (idle connections are counted in the tens of thousands).
        let fut = Box::pin(serve_accepted(
            stream,
            remote,
            local,
            l.transport,
            tls,
            plugin,
            shared,
        ));
        tokio::spawn(async move {
            let _guard = (guard, ticket);
            fut.await;
        });
    }
}

async fn serve_accepted(
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    transport: ListenTransport,
    tls: Option<TlsAcceptor>,
    plugin: Option<Arc<PluginRouter>>,
    shared: Arc<Shared>,
) {
    // A web connection's first HTTP request, or a SIP connection's first message, must
    // be complete by then (a TLS handshake counts against it).
    let first_deadline = Instant::now()
        + if plugin.is_some() {
            shared.http.head_timeout
        } else {
            shared.sip.first_message_timeout
        };
    let id = shared.flows.next_id();
    match (tls, plugin) {
        (None, Some(plugin)) => {
            let conn = Connection {
                stream,
                id,
                remote,
                local,
                tls: false,
                first_deadline,
            };
            Box::pin(ws::serve(conn, plugin, shared)).await;
        }
        (None, None) => {
            Box::pin(tcp::serve_stream(
                stream,
                id,
                Transport::Tcp,
                local,
                remote,
                shared,
                Some(first_deadline),
                None,
            ))
            .await;
        }
        (Some(acceptor), plugin) => {
            // The TLS handshake counts against the time allowed for the first request.
            let accept = Box::pin(acceptor.accept(stream));
            let stream = match tokio::time::timeout_at(first_deadline, accept).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(connection = id, peer = %remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(connection = id, peer = %remote, "TLS handshake timed out");
                    shared
                        .admission
                        .timed_out(ConnLimit::FirstMessage, remote.ip());
                    return;
                }
            };
            match plugin {
                Some(plugin) => {
                    let conn = Connection {
                        stream,
                        id,
                        remote,
                        local,
                        tls: true,
                        first_deadline,
                    };
                    Box::pin(ws::serve(conn, plugin, shared)).await;
                }
                None => {
                    debug_assert_eq!(transport, ListenTransport::Tls);
                    Box::pin(tcp::serve_stream(
                        stream,
                        id,
                        Transport::Tls,
                        local,
                        remote,
                        shared,
                        Some(first_deadline),
                        None,
                    ))
                    .await;
                }
            }
        }
    }
}

/// Raises the soft open-file limit to the hard one (connections are files) and returns
/// it; `limits.max-connections` derives from it unless set.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    #[allow(unsafe_code, reason = "getrlimit/setrlimit, which std does not wrap")]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    lim.rlim_cur
}

/// The receive and send buffers UDP sockets ask for: room for thousands of datagrams,
/// so a burst, or a short stall of the receiving task, does not drop requests. The
/// kernel caps it at `net.core.rmem_max` / `wmem_max` (its default buffer holds only
/// about a hundred small datagrams).
const UDP_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_BUFFER`] both ways; says so when the kernel grants less.
fn raise_udp_buffers(socket: &UdpSocket, local: SocketAddr) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s
        .set_recv_buffer_size(UDP_BUFFER)
        .and_then(|()| s.set_send_buffer_size(UDP_BUFFER))
    {
        tracing::warn!(%local, "cannot size the UDP socket buffers: {e}");
        return;
    }
    // Linux reports twice what it granted (the rest is its bookkeeping).
    let granted = s.recv_buffer_size().unwrap_or(0) / 2;
    if granted < UDP_BUFFER {
        tracing::info!(
            %local,
            granted,
            asked = UDP_BUFFER,
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max to absorb bursts"
        );
    }
}

/// The admin API's bearer token when the configuration names none: made on first run
/// as `admin-token` in the data directory (32 random bytes in hex, mode 0600), where an
/// operator reads it (`curl -H "Authorization: Bearer $(cat …/admin-token)"`).
fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(text.trim().to_string()),
        Ok(_) => anyhow::bail!("{} holds fewer than 32 characters", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            create_private_file(&path, hex.as_bytes())?;
            Ok(hex)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The 32-byte server secret (nonces, tags, later flow tokens), created on first run.
fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join("secret.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let raw = decode_hex(text.trim())
                .with_context(|| format!("{} is not 64 hex digits", path.display()))?;
            Ok(raw)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("no randomness for the secret: {e}"))?;
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            create_private_file(&path, hex.as_bytes())?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}
