//! Runs the sans-IO SIP core for the tasks that have work for it.
//!
//! There is no core task that every message hops to. A task with an input for the core
//! (a connection's message, a UDP datagram, a routing decision that was deferred)
//! queues it and, when no one else is running the core, runs it at once: everything
//! queued so far, in arrival order, then sends what the core produced. A task that
//! finds the core running only queues, and the running task takes its input before it
//! stops. So a request is parsed, handled and answered on the task that read it, with
//! no wake-up of another task in between, and one queue keeps every input in order.
//!
//! The driver task ([`drive`]) runs the core's timers, hands it the flows that closed
//! (after their last message, which their task queued before closing), and takes over
//! when a task has run the core for a budget of inputs (256) and more are waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

pub(crate) mod flow;
pub(crate) mod media;
pub(crate) mod outlet;

use self::flow::FlowInfo;
use self::media::Engines;
use self::outlet::Outlet;
use crate::cluster::Cluster;
use crate::core::resolve::ResolveOutcome;
use crate::core::{Core, Event, Input};
use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::plugin::RegistrarView;
use crate::plugin::sip_router::SipRouter;
use crate::store::Store;

/// Inputs queued for the core before the tasks that bring more wait.
pub(crate) const CORE_INBOX: usize = 4096;

/// Inputs one task handles in one turn at the core before it leaves the rest to the
/// driver task (batches are cut to it): a connection task does not serve the whole
/// server for long.
const RUN_BUDGET: usize = 256;

/// The `sip.router` plugin and the registrar view its `lookup` reads.
pub(crate) struct Router {
    /// The plugin.
    pub plugin: SipRouter,
    /// What its `lookup` reads; refreshed per AoR when bindings change.
    pub view: Arc<RegistrarView>,
}

/// Something for the core, in arrival order.
enum Work {
    /// An input; `counted` when it holds a place of [`CORE_INBOX`]; `credit` is its
    /// connection's (see [`FlowCredit`]), given back once its answers are queued.
    Input {
        input: Input,
        counted: bool,
        credit: Option<OwnedSemaphorePermit>,
    },
    /// A flow closed (reported after its task queued its last message).
    Closed(Arc<FlowInfo>),
    /// The core's deadline has passed.
    Timeout,
    /// The operator's look or change ([`CoreCell::call`]), in turn with the inputs.
    Call(CoreCall),
}

/// A look at or change of the core for the admin API ([`CoreCell::call`]).
type CoreCall = Box<dyn FnOnce(&mut Core, std::time::Instant) + Send>;

/// The queue and who is running the core.
#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// A task is running the core and will take what is queued before it stops.
    running: bool,
}

/// The core's next deadline and the one the driver task's timer is set for.
#[derive(Default)]
struct Deadline {
    next: Option<std::time::Instant>,
    armed: Option<std::time::Instant>,
}

/// What only the task running the core touches.
struct Driven {
    core: Core,
    store: Store,
    router: Option<Router>,
    /// Flows reported closed in this turn, for the identity of their FlowClosed event.
    closing: Vec<Arc<FlowInfo>>,
    /// The second the core's Date was made for.
    date_second: u64,
    /// When the allocator was last asked to give freed memory back
    /// ([`crate::memory::give_back`]).
    gave_back: std::time::Instant,
    /// The queue's previous buffer, swapped in to keep its capacity.
    spare: VecDeque<Work>,
    /// Credits of the inputs of this turn, given back after its sends.
    credits: Vec<OwnedSemaphorePermit>,
    /// The cell this is in, for the routing decisions that come later ([`ask_router`]).
    cell: Weak<CoreCell>,
    /// The media engines, when `[media]` names any.
    media: Option<Arc<Engines>>,
    /// Resolves the next hops named by a host name.
    dns: Arc<Dns>,
    /// The cluster's shared location store, when `[cluster]` is set.
    cluster: Option<Arc<Cluster>>,
}

/// How many of a connection's messages may be in the core at once: half its send
/// queue, so the answers to them fit there even when another task runs the core and
/// handles them all in one turn. A client sending a burst (sipp over TCP, a page
/// registering many lines) is read at the pace it is answered instead of having
/// answers dropped; the other half is room for what other flows send it meanwhile.
#[derive(Debug)]
pub(crate) struct FlowCredit(Arc<Semaphore>);

impl FlowCredit {
    /// Credit for a flow whose send queue holds `send_queue` messages.
    pub(crate) fn new(send_queue: usize) -> Self {
        Self(Arc::new(Semaphore::new((send_queue / 2).max(1))))
    }

    /// Waits until fewer than the allowed messages are in the core; the permit goes
    /// with the next input.
    pub(crate) async fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }
}

/// The SIP core with its queue: see the module documentation.
pub(crate) struct CoreCell {
    queue: Mutex<Queue>,
    /// Places in the queue for inputs from connections; returned as they are handled.
    space: Semaphore,
    /// Locked by the task running the core (`Queue::running`), and by [`Self::with_core`]
    /// at start-up.
    state: Mutex<Driven>,
    deadline: Mutex<Deadline>,
    /// Wakes the driver task: an earlier deadline, or a queue left over.
    wake: Notify,
    /// Where what the core produced is sent.
    outlet: Outlet,
}

impl std::fmt::Debug for CoreCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreCell")
            .field("queued", &lock(&self.queue).work.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while running the core is a bug the fuzz targets look for; should one
    // happen, the server goes on with the core as it was left rather than stop serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CoreCell {
    /// The core with the store it reports bindings to, the routing plugin, if any
    /// (routing is turned on in the core with it), and where it sends.
    pub(crate) fn new(
        mut core: Core,
        store: Store,
        router: Option<Router>,
        outlet: Outlet,
        media: Option<Arc<Engines>>,
        dns: Arc<Dns>,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        core.set_routing(router.is_some());
        if let Some(m) = &media {
            core.set_media_engines(m.up());
        }
        let deadline = Deadline {
            next: core.poll_timeout(),
            armed: None,
        };
        Arc::new_cyclic(|cell| Self {
            queue: Mutex::new(Queue::default()),
            space: Semaphore::new(CORE_INBOX),
            state: Mutex::new(Driven {
                core,
                store,
                router,
                closing: Vec::new(),
                date_second: 0,
                gave_back: std::time::Instant::now(),
                spare: VecDeque::new(),
                credits: Vec::new(),
                cell: cell.clone(),
                media,
                dns,
                cluster,
            }),
            deadline: Mutex::new(deadline),
            wake: Notify::new(),
            outlet,
        })
    }

    /// Where the core's messages are sent: the flows, UDP sockets and connections
    /// being opened.
    pub(crate) fn outlet(&self) -> &Outlet {
        &self.outlet
    }

    /// Calls `f` on the core: set-up before the server starts (the routing hook), the
    /// driver task's first look.
    /// Writes what the location store has queued and stops its writer (at shutdown,
    /// once nothing runs the core any more).
    pub(crate) fn close_store(&self) {
        lock(&self.state).store.close();
    }

    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut Core, Option<&Router>) -> R) -> R {
        let mut state = lock(&self.state);
        let state = &mut *state;
        f(&mut state.core, state.router.as_ref())
    }

    /// Hands `input` to the core, waiting while [`CORE_INBOX`] inputs are queued, and
    /// runs the core when no other task is. A connection's input comes with its
    /// [`FlowCredit`].
    pub(crate) async fn submit(&self, input: Input, credit: Option<OwnedSemaphorePermit>) {
        let counted = self.place().await;
        self.push(Work::Input {
            input,
            counted,
            credit,
        });
    }

    /// Hands `input` to the core like [`Self::submit`], but leaves running the core to
    /// the driver task: for the one task that reads a UDP socket for every peer, which
    /// goes on receiving while the core works on another CPU (measured: running the
    /// core in place there cost half the UDP REGISTER rate).
    pub(crate) async fn hand_off(&self, input: Input) {
        let counted = self.place().await;
        self.queue_for_driver(input, counted);
    }

    /// [`Self::hand_off`] at once if fewer than `below` inputs hold places in the
    /// queue; the input back otherwise (the caller sheds it or waits).
    pub(crate) fn try_hand_off(&self, input: Input, below: usize) -> Option<Input> {
        if self.queued() >= below {
            return Some(input);
        }
        match self.space.try_acquire() {
            Ok(p) => {
                p.forget();
                self.queue_for_driver(input, true);
                None
            }
            Err(_) => Some(input),
        }
    }

    /// Inputs holding places in the queue now.
    pub(crate) fn queued(&self) -> usize {
        CORE_INBOX.saturating_sub(self.space.available_permits())
    }

    fn queue_for_driver(&self, input: Input, counted: bool) {
        let tell = {
            let mut q = lock(&self.queue);
            q.work.push_back(Work::Input {
                input,
                counted,
                credit: None,
            });
            // Whoever queued into an empty queue with no one running has told already.
            !q.running && q.work.len() == 1
        };
        if tell {
            self.wake.notify_one();
        }
    }

    /// Waits for a place in the queue and takes it; false if the queue's bound is gone
    /// (it never closes; the input would go in all the same).
    async fn place(&self) -> bool {
        self.space.acquire().await.map(|p| p.forget()).is_ok()
    }

    /// Runs `f` on the core in its turn, after what is queued now, and returns what it
    /// gives: the admin API's looks and changes. What `f` makes the core send or tell
    /// goes out as after any input.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, std::time::Instant) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(Work::Call(Box::new(move |core, now| {
            let _ = tx.send(f(core, now));
        })));
        rx.await.ok()
    }

    /// Hands `input` to the core at once, past the bound: for the few inputs that must
    /// not wait or be lost (a connection that could not be opened).
    pub(crate) fn submit_now(&self, input: Input) {
        self.push(Work::Input {
            input,
            counted: false,
            credit: None,
        });
    }

    /// Queues `work` and runs the core if no one is; true when this call ran it (and so
    /// handled `work`, or left it to the driver task with what was queued before it).
    fn push(&self, work: Work) -> bool {
        {
            let mut q = lock(&self.queue);
            q.work.push_back(work);
            if q.running {
                return false;
            }
            q.running = true;
        }
        self.run();
        true
    }

    /// Runs the core if no one is and something is queued.
    fn run_if_idle(&self) {
        {
            let mut q = lock(&self.queue);
            if q.running || q.work.is_empty() {
                return;
            }
            q.running = true;
        }
        self.run();
    }

    /// One turn at the core; the caller has set `Queue::running`.
    fn run(&self) {
        let mut state = lock(&self.state);
        let mut handled = 0;
        loop {
            let mut batch = std::mem::take(&mut state.spare);
            {
                let mut q = lock(&self.queue);
                if q.work.is_empty() || handled >= RUN_BUDGET {
                    let left = !q.work.is_empty();
                    q.running = false;
                    drop(q);
                    state.spare = batch;
                    if left {
                        // The driver task takes over (or a task that queues first).
                        self.wake.notify_one();
                    }
                    break;
                }
                let room = RUN_BUDGET - handled;
                state.core.set_backlog(q.work.len());
                if q.work.len() <= room {
                    std::mem::swap(&mut q.work, &mut batch);
                } else {
                    batch.extend(q.work.drain(..room));
                }
            }
            handled += batch.len();
            // Places in the queue go back however the turn ends.
            let places = batch
                .iter()
                .filter(|w| matches!(w, Work::Input { counted: true, .. }))
                .count();
            let state = &mut *state;
            // The core is the only code here that could panic; caught, the loop always
            // comes back to clear `running` above.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                state.turn(&mut batch, &self.outlet)
            }));
            if outcome.is_err() {
                // A bug (the fuzz targets look for these): the batch's other inputs are
                // lost, the server goes on with the core as it was left.
                tracing::error!(lost = batch.len(), "the SIP core panicked; inputs dropped");
                batch.clear();
                state.credits.clear();
                state.closing.clear();
            }
            state.spare = batch;
            self.space.add_permits(places);
            self.publish_deadline(state.core.poll_timeout());
        }
    }

    /// Records the core's next deadline; wakes the driver task when its timer is set
    /// later than that (or not at all).
    fn publish_deadline(&self, next: Option<std::time::Instant>) {
        let mut d = lock(&self.deadline);
        d.next = next;
        if let Some(next) = next
            && d.armed.is_none_or(|armed| next < armed)
        {
            self.wake.notify_one();
        }
    }
}

impl Driven {
    /// Handles `batch` (emptied), sends what the core produced and acts on its events.
    fn turn(&mut self, batch: &mut VecDeque<Work>, outlet: &Outlet) {
        refresh_date(&mut self.core, &mut self.date_second);
        let now = std::time::Instant::now();
        let give_back = now.saturating_duration_since(self.gave_back) >= GIVE_BACK_EVERY;
        if give_back {
            self.gave_back = now;
            crate::memory::give_back();
        }
        for work in batch.drain(..) {
            let now = std::time::Instant::now();
            match work {
                Work::Input { input, credit, .. } => {
                    self.credits.extend(credit);
                    self.core.handle(now, input);
                    if let Some(router) = &self.router {
                        ask_router(&mut self.core, router, outlet, &self.cell);
                    }
                }
                Work::Closed(info) => {
                    let id = info.id;
                    if self.router.is_some() {
                        self.closing.push(info);
                    }
                    self.core.handle(now, Input::FlowClosed(id));
                }
                Work::Timeout => self.core.handle_timeout(now),
                Work::Call(f) => f(&mut self.core, now),
            }
        }
        ask_dns(&mut self.core, &self.dns, &self.cell, &outlet.metrics);
        if let Some(cluster) = &self.cluster {
            ask_cluster(&mut self.core, cluster, &self.cell);
        }
        if give_back && batch.capacity() > RUN_BUDGET {
            // The queue's two buffers take turns as the batch: a burst of inputs that
            // grew them past a turn's budget is given back within two minutes.
            batch.shrink_to(RUN_BUDGET);
        }
        // Counted before the answers go out: a client that reads /metrics after its
        // answer sees it counted.
        outlet.metrics.set_core(self.core.stats());
        for f in self.core.take_finals() {
            outlet.metrics.sip_final(f.method, f.status, f.elapsed);
        }
        send_transmits(&mut self.core, outlet);
        // The answers are in the send queues: the connections may bring more.
        self.credits.clear();
        ask_media(&mut self.core, self.media.as_ref(), &self.cell);
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::BindingSaved(b) => {
                    tracing::debug!(aor = %b.aor, contact = %b.contact, call_id = %b.call_id, "binding saved");
                    self.store.saved(&b, std::time::Instant::now());
                    if let Some(r) = &self.router {
                        r.view.set(&b.aor, self.core.bindings(&b.aor));
                    }
                }
                Event::BindingRemoved(b) => {
                    tracing::debug!(aor = %b.aor, contact = %b.contact, call_id = %b.call_id, "binding removed");
                    self.store.removed(&b);
                    if let Some(r) = &self.router {
                        r.view.set(&b.aor, self.core.bindings(&b.aor));
                    }
                }
                Event::Refused {
                    why,
                    source,
                    call_id,
                } => {
                    tracing::warn!(
                        %source,
                        %call_id,
                        reason = why.as_str(),
                        "{} (logged at most once a minute per source)",
                        why.describe()
                    );
                }
                Event::GatewayState(change) => {
                    outlet
                        .metrics
                        .set_gateway(&change.set, &change.target, change.up);
                    if change.up {
                        tracing::info!(set = %change.set, target = %change.target, "gateway up (answers its probes)");
                    } else {
                        tracing::warn!(set = %change.set, target = %change.target, "gateway down (its probes failed); skipped until it answers again");
                    }
                }
                Event::MediaFailed {
                    call_id,
                    command,
                    why,
                } => {
                    tracing::warn!(%call_id, command, %why, "media relay failed for a call");
                }
                Event::FlowClosed(closed) => {
                    let Some(r) = &self.router else { continue };
                    let identity = self
                        .closing
                        .iter()
                        .find(|i| i.id == closed.flow)
                        .map(|i| i.identity.clone())
                        .unwrap_or_default();
                    let plugin = r.plugin.clone();
                    tokio::spawn(crate::plugin::exec::offload(async move {
                        plugin.flow_closed(&closed, &identity).await
                    }));
                }
            }
        }
        self.closing.clear();
    }
}

/// Answers the core's names to resolve: from the cache in this turn (so their
/// messages go out with it), or by a lookup on a task of its own whose outcomes come
/// back as inputs ([`Input::Resolved`]); one lookup per name however many wait.
fn ask_dns(core: &mut Core, dns: &Arc<Dns>, cell: &Weak<CoreCell>, metrics: &Arc<Metrics>) {
    while let Some(req) = core.poll_resolve() {
        let now = std::time::Instant::now();
        if let Some(outcome) = dns.cached(&req.hop, now) {
            metrics.dns_cached();
            core.handle(
                now,
                Input::Resolved {
                    id: req.id,
                    outcome,
                },
            );
            continue;
        }
        match dns.wait(&req.hop, req.id) {
            Ok(false) => {}
            Ok(true) => {
                metrics.dns_lookup();
                let (dns, cell, metrics) = (dns.clone(), cell.clone(), metrics.clone());
                tokio::spawn(async move {
                    // Should this task end before its answers are in, the requests
                    // waiting get a failure instead of waiting for good.
                    let mut guard = Abandoned {
                        dns: &dns,
                        hop: &req.hop,
                        cell: &cell,
                        armed: true,
                    };
                    let answers = dns.look_up(&req.hop).await;
                    // Those requests have their answers; later ones for the name are
                    // another lookup's.
                    guard.armed = false;
                    if answers
                        .first()
                        .is_some_and(|(_, o)| matches!(o, ResolveOutcome::Failed(_)))
                    {
                        metrics.dns_failure();
                    }
                    let Some(cell) = cell.upgrade() else { return };
                    for (id, outcome) in answers {
                        cell.submit(Input::Resolved { id, outcome }, None).await;
                    }
                });
            }
            Err(()) => {
                metrics.dns_failure();
                let outcome = ResolveOutcome::Failed(
                    "too many names being looked up at once (dns.max-lookups)".into(),
                );
                core.handle(
                    now,
                    Input::Resolved {
                        id: req.id,
                        outcome,
                    },
                );
            }
        }
    }
}

/// Sends the core's asks to the cluster's store, each on a task of its own (bounded
/// in time by `cluster.timeout`); the answers come back as inputs
/// ([`Input::Cluster`]). Asks with id 0 want no answer.
fn ask_cluster(core: &mut Core, cluster: &Arc<Cluster>, cell: &Weak<CoreCell>) {
    while let Some(req) = core.poll_cluster() {
        let (cluster, cell) = (cluster.clone(), cell.clone());
        tokio::spawn(async move {
            let answer = cluster.answer(req.ask).await;
            if req.id == 0 {
                return;
            }
            let Some(cell) = cell.upgrade() else { return };
            cell.submit(Input::Cluster { id: req.id, answer }, None)
                .await;
        });
    }
}

/// Fails the requests waiting for a lookup that was dropped before it ended.
struct Abandoned<'a> {
    dns: &'a Dns,
    hop: &'a crate::core::resolve::NamedHop,
    cell: &'a Weak<CoreCell>,
    /// Until the lookup ended.
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(cell) = self.cell.upgrade() else {
            return;
        };
        for id in self.dns.abandon(self.hop) {
            let outcome = ResolveOutcome::Failed("the lookup ended early".into());
            cell.submit_now(Input::Resolved { id, outcome });
        }
    }
}

/// Sends the core's media requests to the engines, each on a task of its own; the
/// outcomes come back as inputs ([`Input::Media`]), after the engines' weights when a
/// request found its engine down ([`Input::MediaEngines`]). A delete waits for nothing.
fn ask_media(core: &mut Core, engines: Option<&Arc<Engines>>, cell: &Weak<CoreCell>) {
    while let Some(req) = core.poll_media() {
        let Some(engines) = engines else {
            // No engines: the core asks none (it relays nothing without them).
            continue;
        };
        let (engines, cell) = (engines.clone(), cell.clone());
        tokio::spawn(async move {
            let before = engines.up();
            let outcome = engines.outcome(req.engine, &req.command).await;
            let after = engines.up();
            let Some(cell) = cell.upgrade() else { return };
            if before != after {
                cell.submit(Input::MediaEngines(after), None).await;
            }
            if req.id != 0 {
                cell.submit(
                    Input::Media {
                        id: req.id,
                        outcome,
                    },
                    None,
                )
                .await;
            }
        });
    }
}

/// Pings the engines that are down once their rest is over (every second), and tells
/// the core when one is back; every 10 s asks those up how many sessions they hold.
/// Runs until the server stops.
pub(crate) async fn probe_media(cell: Weak<CoreCell>, engines: Arc<Engines>) {
    engines.ping_all().await;
    if let Some(c) = cell.upgrade() {
        c.submit(Input::MediaEngines(engines.up()), None).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for n in 0u64.. {
        tick.tick().await;
        if n % 10 == 0 {
            engines.count_sessions().await;
        }
        if engines.probe().await {
            let Some(c) = cell.upgrade() else { return };
            c.submit(Input::MediaEngines(engines.up()), None).await;
        }
    }
}

/// How often the allocator is asked to give freed memory back to the system.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(60);

/// The driver task: the core's timers, closed flows, and a queue left over by a task
/// that used its budget. Runs until the server aborts it when stopping.
pub(crate) async fn drive(cell: Arc<CoreCell>, mut closed: mpsc::UnboundedReceiver<Arc<FlowInfo>>) {
    // One timer, moved only when the core's next deadline changes.
    let far = || Instant::now() + Duration::from_secs(24 * 3600);
    let sleep = tokio::time::sleep_until(far());
    tokio::pin!(sleep);
    // Bindings restored from the store count from the start.
    cell.with_core(|core, _| cell.outlet.metrics.set_core(core.stats()));
    // The timer fired and another task is handling it: wait for that task's word.
    let mut fired = false;
    // The deadline the timer is set for (`None`: far away); moved only when it changes,
    // as every move takes the runtime's timer lock.
    let mut set_for = None;
    loop {
        if !fired {
            let next = {
                let mut d = lock(&cell.deadline);
                d.armed = d.next;
                d.next
            };
            if next != set_for || sleep.is_elapsed() {
                set_for = next;
                sleep
                    .as_mut()
                    .reset(next.map_or_else(far, Instant::from_std));
            }
        }
        tokio::select! {
            () = cell.wake.notified() => {
                fired = false;
                cell.run_if_idle();
            }
            () = &mut sleep => {
                lock(&cell.deadline).armed = None;
                set_for = None;
                sleep.as_mut().reset(far());
                // When another task runs it, that task says when the next deadline
                // is (`armed` is none, so it wakes this task).
                fired = !cell.push(Work::Timeout);
            }
            info = closed.recv() => match info {
                Some(info) => {
                    cell.push(Work::Closed(info));
                }
                None => return,
            },
        }
    }
}

/// Gives the core the wall-clock time as an HTTP-date when the second has changed
/// since `second` (one clock read per turn, one formatting per second).
fn refresh_date(core: &mut Core, second: &mut u64) {
    let wall = std::time::SystemTime::now();
    let now = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now != *second {
        *second = now;
        core.set_date(httpdate::fmt_http_date(wall));
    }
}

/// Sends everything the core queued. Sending can fail at once (a flow that is gone):
/// the core is told, which may produce more to send. Bounded rounds.
fn send_transmits(core: &mut Core, outlet: &Outlet) {
    for _ in 0..8 {
        let mut failed = Vec::new();
        while let Some(t) = core.poll_transmit() {
            if let Some(target) = outlet.dispatch(t, &mut failed) {
                failed.push(target);
            }
        }
        if failed.is_empty() {
            break;
        }
        for target in failed {
            core.handle(std::time::Instant::now(), Input::SendFailed(target));
        }
    }
}

/// Asks the routing plugin about the request the core just took, if it is waiting for
/// a decision ([`Core::route_query`]), in place: on the task running the core. A
/// plugin answers in microseconds, and a hop to another task would cost more than the
/// call; a call still running at its first epoch tick (it yields there) moves to the
/// plugin runtime ([`crate::plugin::exec`]) and its decision comes back as an input, so
/// a slow plugin holds the core for one tick at most, once: after that its calls go
/// to the plugin runtime at once until it is quick again ([`InPlace`]). A call the
/// plugin has no place for (every instance busy) waits for one on a task here, not on
/// the plugin runtime, so when the plugin is saturated the calls past `max-waiting`
/// get their 503 at once.
///
/// [`InPlace`]: crate::plugin::sip_router::InPlace
fn ask_router(core: &mut Core, router: &Router, outlet: &Outlet, cell: &Weak<CoreCell>) {
    let Some(q) = core.route_query() else {
        return;
    };
    let id = q.id;
    let info = q.source.flow.and_then(|f| outlet.flows.get(f));
    let identity = info.as_ref().map_or(&[][..], |i| i.identity.as_slice());
    let proven_user = info
        .as_ref()
        .filter(|i| i.enforced)
        .and_then(|i| i.identity.iter().find(|(k, _)| k == "user"))
        .map(|(_, v)| v.as_str());
    let flow = crate::plugin::sip_router::FlowFacts {
        identity,
        proven_user,
    };
    let deferred_call_id = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        use crate::sip::message::Essentials as _;
        q.request.call_id().unwrap_or("").to_string()
    });
    match router.plugin.decide_in_place(q.source, q.request, flow) {
        Ok(decision) => core.route(std::time::Instant::now(), id, decision),
        Err(deferred) => {
            tracing::debug!(
                id,
                call_id = deferred_call_id.as_deref().unwrap_or(""),
                "routing call deferred"
            );
            core.route_later(std::time::Instant::now(), id);
            let in_place = router.plugin.in_place().clone();
            let cell = cell.clone();
            let routed = async move {
                let started = std::time::Instant::now();
                let decision = deferred.finish().await;
                in_place.deferred_took(started.elapsed());
                if let Some(cell) = cell.upgrade() {
                    cell.submit(Input::Routed { id, decision }, None).await;
                }
            };
            tokio::spawn(routed);
        }
    }
}
