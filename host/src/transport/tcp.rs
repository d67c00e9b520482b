//! SIP over TCP and TLS streams (RFC 3261 section 18.3): accepted and outgoing
//! connections become flows; messages are framed by Content-Length; CRLFCRLF pings
//! get a CRLF (RFC 5626 section 4.4.1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::{Shared, WRITES_IN_A_ROW};
use crate::core::{FlowId, Incoming, Input, Source, Target, Transport};
use crate::driver::FlowCredit;
use crate::driver::flow::FlowInfo;
use crate::driver::outlet::ConnectRequest;
use crate::metrics::ConnLimit;
use crate::sip::framing::{Frame, next_frame_from};
use rustls_pki_types::ServerName;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one SIP stream connection as a flow until it closes. An accepted connection
/// is closed unless a complete SIP message arrives by `first_deadline` (keepalives do
/// not count).
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per kind of stream"
)]
pub(crate) async fn serve_stream<S>(
    mut stream: S,
    id: FlowId,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    shared: Arc<Shared>,
    mut first_deadline: Option<Instant>,
    outgoing: Option<u64>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(shared.websocket.send_queue);
    let credit = FlowCredit::new(shared.websocket.send_queue);
    let info = FlowInfo {
        id,
        transport,
        remote,
        local,
        identity: Vec::new(),
        enforced: false,
        opened: SystemTime::now(),
        outgoing,
    };
    let guard = shared.flows.register(info, tx);
    let ctl = guard.ctl();
    if let Some(name) = outgoing {
        shared
            .core
            .outlet()
            .connector
            .flush_pending(&shared.flows, (transport, remote, name), id);
    }
    tracing::debug!(flow = id, peer = %remote, %transport, "SIP stream flow open");
    let max = shared.sip.max_message_bytes;
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0usize;
    let mut shutdown = shared.shutdown.clone();
    // Messages written since reading last had a turn.
    let mut writes = 0;
    let mut last_activity = Instant::now();
    // Moved only when it fires (traffic just updates `last_activity`); first due at the
    // first-message deadline, if there is one.
    let idle = sleep_until(first_deadline.unwrap_or(last_activity + shared.sip.tcp_idle_timeout));
    tokio::pin!(idle);
    'outer: loop {
        tokio::select! {
            // Shutdown first (a peer that never stops sending must not hold it off),
            // then what is due goes out before more is read (see below), but after a
            // run of writes reading gets a turn (as for WebSocket flows).
            biased;
            _ = shutdown.changed() => break,
            out = rx.recv(), if writes < WRITES_IN_A_ROW => match out {
                Some(payload) => {
                    if !write(&mut stream, &payload).await {
                        break;
                    }
                    ctl.sent(payload.len());
                    writes += 1;
                    last_activity = Instant::now();
                    shared.metrics.sip_out();
                }
                // The table let go of the flow: the operator closed it.
                None => {
                    if let Some(reason) = shared.flows.close_reason(id) {
                        tracing::info!(flow = id, peer = %remote, reason = %reason, "flow closed by the operator");
                    }
                    break;
                }
            },
            r = read_some(&mut stream, &mut buf) => {
                writes = 0;
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        last_activity = Instant::now();
                        ctl.received(n);
                    }
                }
                // Frames are taken from `start` on and the buffer is drained once per
                // read: a read full of CRLF keepalives costs linear time (draining per
                // keepalive moved the rest of the buffer each time), and their answers
                // go out in one write.
                let mut start = 0;
                let mut pongs = 0usize;
                loop {
                    match next_frame_from(&buf[start..], max, &mut scanned) {
                        Ok(None) => break,
                        Ok(Some(Frame::Ping)) => {
                            start += 4;
                            scanned = 0;
                            pongs += 1;
                            shared.metrics.keepalive();
                        }
                        Ok(Some(Frame::Pong)) => {
                            start += 2;
                            scanned = 0;
                        }
                        Ok(Some(Frame::Message(n))) => {
                            // Keepalives before it are answered before it.
                            if pongs > 0 && !write(&mut stream, "\r\n".repeat(std::mem::take(&mut pongs)).as_bytes()).await {
                                break 'outer;
                            }
                            let frame = &buf[start..start + n];
                            if let Err(refusal) = shared.gate.admit_on_connection(remote.ip(), frame, &shared.server_header) {
                                // Past limits.rate: refused unparsed (a complete message
                                // came, so the first-message deadline is met).
                                start += n;
                                scanned = 0;
                                first_deadline = None;
                                if let Some(reply) = refusal
                                    && !write(&mut stream, &reply).await
                                {
                                    break 'outer;
                                }
                                tokio::time::sleep(super::gate::REFUSED_PAUSE).await;
                                continue;
                            }
                            let parsed = crate::sip::parse(frame);
                            let reply = parsed
                                .as_ref()
                                .err()
                                .and_then(|e| crate::sip::error_response(frame, e, &shared.server_header));
                            start += n;
                            scanned = 0;
                            if let Some(reply) = reply
                                && !write(&mut stream, &reply).await
                            {
                                break 'outer;
                            }
                            match parsed {
                                Ok(message) => {
                                    first_deadline = None;
                                    ctl.message_in();
                                    shared.metrics.sip_in();
                                    shared.core.outlet().captured_in(transport, remote, local, frame);
                                    let source = Source { transport, local, remote, flow: Some(id) };
                                    let input = Input::Message(Box::new(Incoming::new(source, message)));
                                    let credit = credit.take().await;
                                    shared.core.submit(input, credit).await;
                                    // Write what is due before handling the next
                                    // message of this read: a burst of requests must
                                    // not overflow the flow's send queue with answers.
                                    while let Ok(payload) = rx.try_recv() {
                                        if !write(&mut stream, &payload).await {
                                            break 'outer;
                                        }
                                        ctl.sent(payload.len());
                                        shared.metrics.sip_out();
                                    }
                                }
                                Err(e) => {
                                    shared.metrics.sip_parse_error();
                                    tracing::debug!(flow = id, peer = %remote, "unparsable SIP message dropped: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            // Framing is lost: nothing after this can be trusted.
                            shared.metrics.sip_parse_error();
                            tracing::debug!(flow = id, peer = %remote, "closing stream: {e}");
                            break 'outer;
                        }
                    }
                }
                if pongs > 0 && !write(&mut stream, "\r\n".repeat(pongs).as_bytes()).await {
                    break 'outer;
                }
                buf.drain(..start);
                if buf.is_empty() && buf.capacity() > 16 * 1024 {
                    buf = Vec::new();
                }
            }
            // Nothing to read after a run of writes: writing goes on.
            () = std::future::ready(()), if writes >= WRITES_IN_A_ROW => writes = 0,
            _ = &mut idle => {
                if first_deadline.is_some_and(|d| d <= Instant::now()) {
                    shared.admission.timed_out(ConnLimit::FirstMessage, remote.ip());
                    break;
                }
                let deadline = last_activity + shared.sip.tcp_idle_timeout;
                if deadline > Instant::now() {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                tracing::debug!(flow = id, peer = %remote, "idle stream closed");
                break;
            }
        }
    }
    let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
    tracing::debug!(flow = id, peer = %remote, "SIP stream flow closed");
}

async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    let io = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    matches!(timeout(WRITE_TIMEOUT, io).await, Ok(Ok(())))
}

/// Opens the connections the core's outlet asks for (`Target::Connect` with no flow
/// to the peer), each on its own task, until the server stops.
pub(crate) async fn open_when_asked(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<ConnectRequest>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            r = requests.recv() => match r {
                Some((transport, remote, name)) => {
                    tokio::spawn(connect(shared.clone(), transport, remote, name));
                }
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Opens a connection for `Target::Connect`, then serves it; reports failure to the core.
async fn connect(shared: Arc<Shared>, transport: Transport, remote: SocketAddr, name: u64) {
    // Requests sent on the connection and still waiting when it closes will get no
    // answer on another: they fail now (a peer that died with them in flight), not at
    // their timeout. Those answered are not touched.
    let gone = |shared: &Arc<Shared>| {
        shared.core.submit_now(Input::SendFailed(Target::Connect {
            transport,
            remote,
            name,
        }));
    };
    let failed = |shared: &Arc<Shared>| {
        shared
            .core
            .outlet()
            .connector
            .drop_pending((transport, remote, name));
        gone(shared);
    };
    if !matches!(transport, Transport::Tcp | Transport::Tls) {
        tracing::warn!(%remote, %transport, "outgoing connections are TCP or TLS; message dropped");
        return failed(&shared);
    }
    // Outgoing connections count against limits.max-connections too.
    let Some(ticket) = shared.admission.outgoing() else {
        return failed(&shared);
    };
    let stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "connect failed: {e}");
            return failed(&shared);
        }
        Err(_) => {
            tracing::debug!(%remote, "connect timed out");
            return failed(&shared);
        }
    };
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return failed(&shared),
    };
    let id = shared.flows.next_id();
    let _ticket = ticket;
    if transport == Transport::Tcp {
        serve_stream(
            stream,
            id,
            transport,
            local,
            remote,
            shared.clone(),
            None,
            Some(0),
        )
        .await;
        return gone(&shared);
    }
    // TLS: the certificate must be valid for the name the target was resolved from
    // (RFC 5922: the URI's host), or for its address when the URI gave one.
    let server_name = if name == 0 {
        Ok(ServerName::IpAddress(remote.ip().into()))
    } else {
        match shared.dns.tls_name(name) {
            Some(n) => ServerName::try_from(n.to_string()).map_err(|e| e.to_string()),
            None => Err(
                "its name is no longer known (resolved before a restart, or \
                         evicted): the connection would prove nothing"
                    .to_string(),
            ),
        }
    };
    let server_name = match server_name {
        Ok(n) => n,
        Err(why) => {
            tracing::warn!(%remote, "TLS next hop not reached: {why}");
            return failed(&shared);
        }
    };
    let connector = tokio_rustls::TlsConnector::from(shared.tls_client.clone());
    let shown = format!("{server_name:?}");
    let stream = match timeout(CONNECT_TIMEOUT, connector.connect(server_name, stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A wrong certificate is the operator's to know about, not a debug line.
            tracing::warn!(%remote, name = %shown, "TLS to next hop failed: {e}");
            return failed(&shared);
        }
        Err(_) => {
            tracing::warn!(%remote, name = %shown, "TLS handshake with next hop timed out");
            return failed(&shared);
        }
    };
    serve_stream(
        stream,
        id,
        transport,
        local,
        remote,
        shared.clone(),
        None,
        Some(name),
    )
    .await;
    gone(&shared);
}
