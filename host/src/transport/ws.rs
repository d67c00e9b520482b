//! One web connection: HTTP requests decided by the listener's plugin until one is
//! upgraded, then a SIP-over-WebSocket flow until it closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{Shared, WRITES_IN_A_ROW};
use crate::core::identity::Identity;
use crate::core::{FlowId, Incoming, Input, Source, Transport};
use crate::driver::FlowCredit;
use crate::driver::flow::FlowInfo;
use crate::http::answer::{Answer, AnswerContext, Decision, RequestFacts, answer};
use crate::http::handshake::{self, HandshakeCheck};
use crate::http::head::{HeadLimits, Version};
use crate::http::reader::{ReadError, read_request};
use crate::http::response::Response;
use crate::http::ws_frames::FrameTracker;
use crate::metrics::ConnLimit;
use crate::plugin::{HttpRequest, Peer, PeerTransport, PluginRouter, Websocket};

/// How long a write to a client may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to keep reading (and discarding) after an error response, so the client
/// reads the response instead of a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

/// One accepted connection on a web listener.
pub(crate) struct Connection<S> {
    /// The stream (TCP or TLS).
    pub stream: S,
    /// Connection (and later flow) id.
    pub id: FlowId,
    /// Client address.
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// TCP or TLS.
    pub tls: bool,
    /// The first request must be complete by then (counted from the accept).
    pub first_deadline: Instant,
}

/// Serves a web connection to the end.
pub(crate) async fn serve<S>(
    mut conn: Connection<S>,
    router: Arc<PluginRouter>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = HeadLimits {
        max_head_bytes: shared.http.max_head_bytes,
        max_headers: shared.http.max_headers,
        max_body_bytes: shared.http.max_body_bytes,
    };
    let mut shutdown = shared.shutdown.clone();
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let idle_until = Instant::now() + shared.http.idle_timeout;
        let first_deadline = first.then_some(conn.first_deadline);
        let read = read_request(
            &mut conn.stream,
            &mut buf,
            &limits,
            idle_until,
            shared.http.head_timeout,
            first_deadline,
        );
        let request = tokio::select! {
            r = read => r,
            _ = shutdown.changed() => return,
        };
        first = false;
        let request = match request {
            Ok(r) => r,
            Err(ReadError::Head(e)) => {
                shared.metrics.http_rejected();
                tracing::debug!(connection = conn.id, peer = %conn.remote, "bad HTTP request: {e}");
                let resp = Response::error(e.status(), &e.to_string());
                // Answer in the version the client can read; an unparsable request gets 1.1.
                send_and_close(&mut conn.stream, &resp, &shared, Version::Http11, false).await;
                return;
            }
            Err(e) => {
                tracing::debug!(connection = conn.id, peer = %conn.remote, "connection ends: {e}");
                return;
            }
        };
        shared.metrics.http_request();
        let head = request.head;
        let check = handshake::inspect(&head);
        let version = head.version;
        let client_close = head.close;
        let is_head = head.method == "HEAD";
        let wit_request = HttpRequest {
            method: head.method,
            target: head.target,
            version: version.as_str().to_string(),
            headers: head.headers,
            body: request.body,
            peer: Peer {
                remote_addr: conn.remote.ip().to_string(),
                remote_port: conn.remote.port(),
                local_addr: conn.local.ip().to_string(),
                local_port: conn.local.port(),
                transport: if conn.tls {
                    PeerTransport::Tls
                } else {
                    PeerTransport::Tcp
                },
            },
            connection_id: conn.id,
            websocket: match &check {
                HandshakeCheck::NotWebSocket => Websocket::None,
                HandshakeCheck::Offer(o) => Websocket::Offer(o.subprotocols.clone()),
                HandshakeCheck::Invalid(e) => Websocket::Invalid(e.to_string()),
            },
        };
        let facts = RequestFacts {
            version,
            client_close,
            head: is_head,
        };
        // Boxed: the plugin call's state lives only as long as the call.
        // The plugin for this path, in the version serving now (a reload meanwhile
        // does not affect this call). No plugin for the path: 404 from the host.
        let decision = match router.route(&wit_request.target) {
            Some(slot) => {
                // Polled here once; if not done, finished on the plugin runtime.
                let current = slot.current();
                let check = check.clone();
                crate::plugin::exec::bounded(
                    async move { current.decide(wit_request, &check).await },
                )
                .await
            }
            None => Decision::Reply(Response::error(404, "")),
        };
        let cx = AnswerContext {
            server: &shared.server_header,
            date: SystemTime::now(),
            nonce: &shared.nonce,
            peer: Some(conn.remote.ip()),
        };
        match answer(decision, check, facts, cx) {
            Answer::Respond { bytes, keep_alive } => {
                if !write(&mut conn.stream, &bytes).await {
                    return;
                }
                if !keep_alive {
                    linger_close(&mut conn.stream).await;
                    return;
                }
            }
            Answer::Refuse { bytes, error } => {
                shared.metrics.handshake_rejected();
                tracing::debug!(connection = conn.id, peer = %conn.remote, "handshake refused: {error}");
                if write(&mut conn.stream, &bytes).await {
                    linger_close(&mut conn.stream).await;
                }
                return;
            }
            Answer::Upgrade { bytes, identity } => {
                let enforced = if router.enforces_identity() {
                    match Identity::from_attributes(&identity) {
                        Some(proven) => Some(Arc::new(proven)),
                        None => {
                            // The plugin (or its fail-open policy) let in someone it
                            // did not name: nothing to hold the flow to, so no flow.
                            shared.metrics.handshake_rejected();
                            if router.log_unproven(conn.remote.ip()) {
                                tracing::warn!(
                                    connection = conn.id,
                                    peer = %conn.remote,
                                    "WebSocket upgrade refused (500): the listener enforces identity and the plugin attached no `user` (logged at most once a minute per source)"
                                );
                            }
                            let resp = Response::error(500, "");
                            send_and_close(&mut conn.stream, &resp, &shared, version, is_head)
                                .await;
                            return;
                        }
                    }
                } else {
                    None
                };
                if !write(&mut conn.stream, &bytes).await {
                    return;
                }
                let info = FlowInfo {
                    id: conn.id,
                    transport: if conn.tls {
                        Transport::Wss
                    } else {
                        Transport::Ws
                    },
                    remote: conn.remote,
                    local: conn.local,
                    identity,
                    enforced: enforced.is_some(),
                    opened: SystemTime::now(),
                    outgoing: None,
                };
                // Only bytes the client sent after the head remain; drop the spare
                // capacity of the request buffer before the flow holds it for hours.
                buf.shrink_to_fit();
                Box::pin(run_flow(conn.stream, buf, info, enforced, shared)).await;
                return;
            }
        }
    }
}

/// Writes all of `bytes` within [`WRITE_TIMEOUT`]; false when the connection is unusable.
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    let io = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    matches!(timeout(WRITE_TIMEOUT, io).await, Ok(Ok(())))
}

async fn send_and_close<S>(
    stream: &mut S,
    resp: &Response,
    shared: &Shared,
    version: Version,
    is_head: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = resp.serialize(
        &shared.server_header,
        SystemTime::now(),
        false,
        version == Version::Http10,
        is_head,
    );
    if write(stream, &bytes).await {
        linger_close(stream).await;
    }
}

/// Half-closes, then drains what the client still sends for a moment: closing a socket
/// with unread input makes the kernel send a reset that can destroy the response.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    let drain = async {
        let mut scratch = [0u8; 1024];
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

/// Maps a WebSocket read error to the close code to send, or `None` when the
/// connection is already gone.
fn close_code_for(e: &WsError) -> Option<(CloseCode, &'static str)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((CloseCode::Size, "message too big"))
        }
        WsError::Capacity(_) => Some((CloseCode::Size, "too big")),
        WsError::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8 in text message")),
        // A reset is the peer going away, not a protocol error to report to it.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) | WsError::AttackAttempt => {
            Some((CloseCode::Protocol, "protocol error"))
        }
        _ => None,
    }
}

/// What woke the flow loop.
enum Wake {
    In(Option<Result<Message, WsError>>),
    Out(Option<Bytes>),
    /// Nothing to read after [`WRITES_IN_A_ROW`] writes: writing goes on.
    NothingToRead,
    Timer,
    Shutdown,
}

/// Runs an upgraded connection as a SIP flow until it ends.
async fn run_flow<S>(
    stream: S,
    leftover: Vec<u8>,
    info: FlowInfo,
    enforced: Option<Arc<Identity>>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cfg = &shared.websocket;
    let mut ws_config = WebSocketConfig::default();
    ws_config.read_buffer_size = cfg.read_buffer_bytes;
    // Write each message at once; no buffering past one message.
    ws_config.write_buffer_size = 0;
    ws_config.max_write_buffer_size = cfg.max_message_bytes * 4;
    ws_config.max_message_size = Some(cfg.max_message_bytes);
    ws_config.max_frame_size = Some(cfg.max_message_bytes);
    let stream = Watched::new(stream, &leftover, shared.sip.ws_partial_timeout);
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config)).await;

    let (tx, mut rx) = mpsc::channel::<Bytes>(cfg.send_queue);
    let credit = FlowCredit::new(cfg.send_queue);
    let (id, remote, local, transport) = (info.id, info.remote, info.local, info.transport);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let identity: Vec<String> = info
            .identity
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tracing::debug!(
            flow = id,
            peer = %remote,
            identity = %identity.join(" "),
            enforced = enforced.is_some(),
            "WebSocket flow open"
        );
    }
    let guard = shared.flows.register(info, tx);
    let ctl = guard.ctl();
    shared.metrics.ws_upgrade();

    let mut shutdown = shared.shutdown.clone();
    // Messages written since reading last had a turn.
    let mut writes = 0;
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    // One timer for the life of the flow, moved only when it fires: traffic just
    // updates `last_heard`, so busy flows do not churn the timer wheel.
    let timer = sleep_until(last_heard + cfg.ping_interval);
    tokio::pin!(timer);
    loop {
        let event = tokio::select! {
            // In this order: shutdown (a client that never stops sending must not
            // hold it off), then what is due goes out before more is read, but
            // after a run of writes reading gets a turn (a flow others keep sending
            // to still reads its client's answers).
            biased;
            _ = shutdown.changed() => Wake::Shutdown,
            o = rx.recv(), if writes < WRITES_IN_A_ROW => Wake::Out(o),
            m = ws.next() => Wake::In(m),
            () = std::future::ready(()), if writes >= WRITES_IN_A_ROW => Wake::NothingToRead,
            _ = &mut timer => Wake::Timer,
        };
        writes = match event {
            Wake::Out(_) => writes + 1,
            _ => 0,
        };
        match event {
            Wake::In(None) => break,
            Wake::In(Some(Ok(msg))) => {
                last_heard = Instant::now();
                let data: Bytes = match msg {
                    Message::Text(t) => Bytes::from(t),
                    Message::Binary(b) => b,
                    // Pings are answered by tungstenite; a Close is answered too, and
                    // the stream then ends.
                    _ => continue,
                };
                ctl.received(data.len());
                if &data[..] == b"\r\n\r\n" {
                    // RFC 5626 section 4.4.1 keepalive: double CRLF ping, single CRLF pong.
                    shared.metrics.keepalive();
                    if !send(&mut ws, Message::text("\r\n")).await {
                        break;
                    }
                    continue;
                }
                if let Err(refusal) =
                    shared
                        .gate
                        .admit_on_connection(remote.ip(), &data, &shared.server_header)
                {
                    // Past limits.rate: refused unparsed.
                    if let Some(reply) = refusal
                        && !send(
                            &mut ws,
                            Message::text(String::from_utf8_lossy(&reply).into_owned()),
                        )
                        .await
                    {
                        break;
                    }
                    tokio::time::sleep(super::gate::REFUSED_PAUSE).await;
                    continue;
                }
                match crate::sip::parse(&data) {
                    Ok(message) => {
                        ctl.message_in();
                        shared.metrics.sip_in();
                        shared
                            .core
                            .outlet()
                            .captured_in(transport, remote, local, &data);
                        let source = Source {
                            transport,
                            local,
                            remote,
                            flow: Some(id),
                        };
                        let input = Input::Message(Box::new(Incoming {
                            source,
                            message,
                            identity: enforced.clone(),
                        }));
                        let credit = credit.take().await;
                        shared.core.submit(input, credit).await;
                    }
                    Err(e) => {
                        shared.metrics.sip_parse_error();
                        match crate::sip::error_response(&data, &e, &shared.server_header) {
                            Some(reply) => {
                                tracing::debug!(flow = id, peer = %remote, "malformed SIP request answered with 400: {e}");
                                let text = String::from_utf8_lossy(&reply).into_owned();
                                if !send(&mut ws, Message::text(text)).await {
                                    break;
                                }
                            }
                            None => {
                                tracing::debug!(flow = id, peer = %remote, "unparsable SIP message dropped: {e}");
                            }
                        }
                    }
                }
            }
            Wake::In(Some(Err(_))) if ws.get_ref().timed_out => {
                tracing::debug!(flow = id, peer = %remote, "closing with 1008: a frame or message left unfinished");
                shared
                    .admission
                    .timed_out(ConnLimit::WsPartial, remote.ip());
                let frame = CloseFrame {
                    code: CloseCode::Policy,
                    reason: Utf8Bytes::from_static("frame or message left unfinished"),
                };
                let _ = timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
                break;
            }
            Wake::In(Some(Err(e))) => {
                if let Some((code, reason)) = close_code_for(&e) {
                    tracing::debug!(flow = id, peer = %remote, "closing with {}: {e}", u16::from(code));
                    shared.metrics.ws_close_error();
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
                } else {
                    tracing::debug!(flow = id, peer = %remote, "WebSocket read ends: {e}");
                }
                break;
            }
            Wake::Out(Some(payload)) => {
                // One UTF-8 check (a clone of `Bytes` only counts a reference).
                let msg = match Utf8Bytes::try_from(payload.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(payload),
                };
                let len = payload_len(&msg);
                if !send(&mut ws, msg).await {
                    break;
                }
                ctl.sent(len);
                shared.metrics.sip_out();
            }
            // The table let go of the flow: the operator closed it (the admin API).
            Wake::Out(None) => {
                if let Some(reason) = shared.flows.close_reason(id) {
                    tracing::info!(flow = id, peer = %remote, reason = %reason, "flow closed by the operator");
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: Utf8Bytes::from(close_reason(&reason)),
                    };
                    let _ = timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
                }
                break;
            }
            Wake::NothingToRead => {}
            Wake::Timer => {
                let now = Instant::now();
                match ping_sent {
                    // Heard from the client since the ping: all is well.
                    Some(at) if last_heard >= at => {
                        ping_sent = None;
                        timer.as_mut().reset(last_heard + cfg.ping_interval);
                    }
                    Some(_) => {
                        tracing::debug!(flow = id, peer = %remote, "no answer to ping; closing");
                        shared.metrics.ping_timeout();
                        break;
                    }
                    // Traffic came in meanwhile: wait for the real idle deadline.
                    None if last_heard + cfg.ping_interval > now => {
                        timer.as_mut().reset(last_heard + cfg.ping_interval);
                    }
                    None => {
                        if !send(&mut ws, Message::Ping(Bytes::new())).await {
                            break;
                        }
                        ping_sent = Some(now);
                        timer.as_mut().reset(now + cfg.pong_timeout);
                    }
                }
            }
            Wake::Shutdown => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: Utf8Bytes::from_static("server shutting down"),
                };
                let closing = async {
                    ws.close(Some(frame)).await?;
                    // Wait for the client's Close so the handshake completes.
                    while let Some(m) = ws.next().await {
                        m?;
                    }
                    Ok::<_, WsError>(())
                };
                let _ = timeout(shared.grace, closing).await;
                break;
            }
        }
    }
    tracing::debug!(flow = id, peer = %remote, "WebSocket flow closed");
}

/// A client's stream with its frame boundaries followed ([`FrameTracker`]): once a
/// frame or a fragmented message has been left unfinished for `limit`, reading fails
/// with `TimedOut` and [`Watched::timed_out`] is set. The deadline is counted from
/// when the unfinished part began; more bytes of it do not move it (a message trickled
/// in byte by byte must still be complete in time).
struct Watched<S> {
    inner: S,
    tracker: FrameTracker,
    limit: Duration,
    /// Armed while something is unfinished (boxed: only such flows pay for it).
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<S> Watched<S> {
    /// Wraps `inner`; `leftover` are bytes already read after the handshake.
    fn new(inner: S, leftover: &[u8], limit: Duration) -> Self {
        let mut w = Self {
            inner,
            tracker: FrameTracker::new(),
            limit,
            deadline: None,
            timed_out: false,
        };
        w.follow(leftover);
        w
    }

    fn follow(&mut self, bytes: &[u8]) {
        self.tracker.feed(bytes);
        match (self.tracker.pending(), self.deadline.is_some()) {
            (true, false) => self.deadline = Some(Box::pin(sleep(self.limit))),
            (false, true) => self.deadline = None,
            _ => {}
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.follow(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    this.timed_out = true;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "frame or message left unfinished",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn send<S>(ws: &mut WebSocketStream<S>, msg: Message) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    matches!(timeout(WRITE_TIMEOUT, ws.send(msg)).await, Ok(Ok(())))
}

/// A close frame's reason: at most 123 bytes (RFC 6455 5.5: control frames carry at
/// most 125, two of them the code), cut at a character boundary.
fn close_reason(reason: &str) -> String {
    let reason = if reason.is_empty() {
        "closed by the operator"
    } else {
        reason
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// The payload size of a data message.
fn payload_len(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}
