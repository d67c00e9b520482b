//! SIP over UDP: one task per listener socket. Datagrams in, parsed messages to the
//! core; keepalives (CRLF, STUN binding requests per RFC 5626 section 4.4.2) answered
//! here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{Shared, gate};
use crate::core::limits::LogGate;
use crate::core::{Incoming, Input, Source, Transport};

/// Datagrams read per system call ([`Batch`]).
const BATCH: usize = 8;

/// Receives on `socket` until shutdown, up to 8 datagrams per system call
/// (`recvmmsg`): under a flood the socket is drained at a fraction of the cost of one
/// `recvfrom` each, so the kernel's buffer keeps room for the legitimate datagrams.
pub(crate) async fn run(socket: Arc<UdpSocket>, local: SocketAddr, shared: Arc<Shared>) {
    // One byte more than the largest message allowed: a datagram that fills it is too
    // large (the kernel truncates what does not fit, and says how long it was).
    let max = shared.sip.max_message_bytes.min(65_535);
    let mut batch = Batch::new(max + 1);
    let mut oversize_log = LogGate::new();
    let mut shed_log = LogGate::new();
    let mut sources = Sources::default();
    let mut shutdown = shared.shutdown.clone();
    // Read while there is something to read; wait for readiness only once the socket
    // said it had nothing.
    let mut interest = tokio::io::Interest::READABLE;
    loop {
        // Reading without waiting must still leave the worker to other tasks now and
        // then (a flood that is dropped here awaits nothing else).
        tokio::task::consume_budget().await;
        let received = socket.try_io(interest, || batch.receive(&socket));
        let count = match received {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // An ICMP error queued for the socket makes it ready with ERROR, not
                // READABLE: waited for too, so that the receive that reports it is
                // made. (One interest at a time: tokio's readiness mask of a combined
                // interest is empty.)
                interest = tokio::select! {
                    r = socket.readable() => match r {
                        Ok(()) => tokio::io::Interest::READABLE,
                        Err(_) => return,
                    },
                    r = socket.ready(tokio::io::Interest::ERROR) => match r {
                        Ok(_) => tokio::io::Interest::ERROR,
                        Err(_) => return,
                    },
                    _ = shutdown.changed() => return,
                };
                continue;
            }
            Err(e) => {
                // An ICMP error for an earlier send (port or host unreachable): the
                // addresses it concerns wait in the socket's error queue. Transactions
                // sending there stop retransmitting (a spoofed source's victim, a phone
                // gone away) and their branches fail at once.
                tracing::debug!(%local, "UDP receive error: {e}");
                let queued = crate::driver::outlet::unreachable(&socket);
                // Port unreachable only: the peer said no one listens there. Others
                // (fragmentation needed, time exceeded, a network unreachable for a
                // moment) leave the transactions to their timers.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    continue;
                }
                for remote in queued {
                    shared.metrics.udp_unreachable();
                    let target = crate::core::Target::Udp { local, remote };
                    shared.core.hand_off(Input::SendFailed(target)).await;
                }
                continue;
            }
        };
        for i in 0..count {
            let Some((data, remote, truncated)) = batch.datagram(i) else {
                continue;
            };
            if truncated || data.len() > max {
                // sip.max-message-bytes holds over UDP too: dropped unread (an answer
                // would go to a source anyone can forge), counted, logged once a minute
                // a source.
                shared.metrics.udp_oversize();
                if oversize_log.allow("udp-oversize", remote.ip(), std::time::Instant::now()) {
                    tracing::warn!(
                        peer = %remote,
                        limit = max,
                        "UDP datagram larger than sip.max-message-bytes dropped (logged at most once a minute per source)"
                    );
                }
                continue;
            }
            let Some(input) = datagram(&socket, local, &shared, data, remote) else {
                continue;
            };
            let now = Instant::now();
            let first_seen = sources.seen(remote.ip(), now);
            let Some(input) = shared.core.try_hand_off(input, SHED_ABOVE) else {
                continue;
            };
            // The core is behind: sources that were here before it fell behind wait
            // for a place; newcomers are shed until it catches up.
            if sources.established(first_seen, now) || shared.gate.is_exempt(remote.ip()) {
                shared.core.hand_off(input).await;
            } else {
                shared.metrics.udp_shed();
                if shed_log.allow("udp-shed", remote.ip(), now) {
                    tracing::warn!(
                        peer = %remote,
                        "SIP core overloaded: datagram from a source new since the overload began dropped (logged at most once a minute per source)"
                    );
                }
            }
        }
    }
}

/// Past this many inputs queued for the core (about 20–50 ms of its work), the core is
/// behind: datagrams from sources new since then are dropped (they retransmit, as
/// phones do) so that those from sources already here keep a short queue. Shedding
/// at random (the kernel's full buffer) would hit both alike.
pub(crate) const SHED_ABOVE: usize = crate::core::BUSY_BACKLOG;

/// How long before an overload a source must have been first seen to be established.
const ESTABLISHED: Duration = Duration::from_secs(2);

/// An overload ends once the core has not been found behind for this long.
const CALM: Duration = Duration::from_secs(5);

/// Most sources remembered (about 48 bytes each); past it, sources not remembered
/// count as new.
const MAX_SOURCES: usize = 262_144;

/// Forgotten after this long without a datagram.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// When each recent source ([`crate::core::limits::source_key`]) was first and last
/// seen on this socket, and since when the core has been behind.
#[derive(Default)]
struct Sources {
    seen: foldhash::HashMap<IpAddr, (Instant, Instant)>,
    swept: Option<Instant>,
    /// When the current overload began, and when the core was last found behind.
    overload: Option<(Instant, Instant)>,
}

impl Sources {
    /// Notes a datagram from `ip`; when its source was first seen.
    fn seen(&mut self, ip: IpAddr, now: Instant) -> Instant {
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60))
        {
            self.swept = Some(now);
            self.seen
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < FORGET_AFTER);
            crate::core::sharded::shrink_map(&mut self.seen);
        }
        let key = crate::core::limits::source_key(ip);
        if let Some((first, last)) = self.seen.get_mut(&key) {
            *last = now;
            return *first;
        }
        if self.seen.len() < MAX_SOURCES {
            self.seen.insert(key, (now, now));
        }
        now
    }

    /// The core is behind now: whether a source first seen at `first` was here well
    /// before the overload began (which is now, unless one is still going on).
    fn established(&mut self, first: Instant, now: Instant) -> bool {
        let began = match self.overload {
            Some((began, last)) if now.saturating_duration_since(last) < CALM => began,
            _ => now,
        };
        self.overload = Some((began, now));
        first + ESTABLISHED <= began
    }
}

/// What one datagram is: a keepalive (answered here), a request from a source past its
/// rate (dropped), something unparsable (answered 400 when it can be), or a message for
/// the core.
fn datagram(
    socket: &UdpSocket,
    local: SocketAddr,
    shared: &Shared,
    data: &[u8],
    remote: SocketAddr,
) -> Option<Input> {
    if data.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
        shared.metrics.keepalive();
        return None;
    }
    if let Some(reply) = stun_binding_response(data, remote) {
        shared.metrics.keepalive();
        let _ = socket.try_send_to(&reply, remote);
        return None;
    }
    if shared.gate.admit(remote.ip(), data) != gate::Admit::Pass {
        // Dropped unparsed: an answer would feed the flood, or a spoofed victim.
        shared.metrics.udp_banned();
        return None;
    }
    match crate::sip::parse(data) {
        Ok(message) => {
            shared.metrics.sip_in();
            shared
                .core
                .outlet()
                .captured_in(Transport::Udp, remote, local, data);
            let source = Source {
                transport: Transport::Udp,
                local,
                remote,
                flow: None,
            };
            Some(Input::Message(Box::new(Incoming::new(source, message))))
        }
        Err(e) => {
            shared.metrics.sip_parse_error();
            match crate::sip::error_response(data, &e, &shared.server_header) {
                Some(reply) => {
                    tracing::debug!(peer = %remote, "malformed SIP request answered with 400: {e}");
                    let _ = socket.try_send_to(&reply, remote);
                }
                None => tracing::debug!(peer = %remote, "unparsable SIP datagram dropped: {e}"),
            }
            None
        }
    }
}

/// Buffers for one `recvmmsg` call: [`BATCH`] datagrams of up to `size` bytes each,
/// with their source addresses; the system call's vectors are kept too (no allocation
/// per call), their pointers set afresh before each.
struct Batch {
    buffers: Vec<Vec<u8>>,
    addresses: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    lengths: Vec<(usize, libc::socklen_t, bool)>,
}

// SAFETY: the raw pointers in `iovecs` and `headers` point into the batch's own
// buffers and are rewritten before every use; nothing is shared.
#[allow(
    unsafe_code,
    reason = "raw pointers of recvmmsg's vectors, owned data only"
)]
unsafe impl Send for Batch {}

impl Batch {
    fn new(size: usize) -> Self {
        Self {
            buffers: (0..BATCH).map(|_| vec![0u8; size]).collect(),
            // SAFETY: these C structs are plain old data; all zeroes is a valid value.
            #[allow(unsafe_code, reason = "zeroed C structs for recvmmsg")]
            addresses: vec![unsafe { std::mem::zeroed() }; BATCH],
            iovecs: (0..BATCH)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            #[allow(unsafe_code, reason = "zeroed C structs for recvmmsg")]
            headers: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lengths: vec![(0, 0, false); BATCH],
        }
    }

    /// Reads up to [`BATCH`] datagrams without blocking; how many.
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        for i in 0..BATCH {
            let buffer = &mut self.buffers[i];
            self.iovecs[i] = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            let h = &mut self.headers[i];
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut self.addresses[i]).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = std::ptr::from_mut(&mut self.iovecs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at a live iovec (into a live buffer of its stated
        // length) and a live sockaddr_storage of its stated size, all owned by `self`
        // and untouched during the call; the kernel writes at most that much into each.
        #[allow(unsafe_code, reason = "recvmmsg, which neither std nor socket2 wraps")]
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in self.headers.iter().take(n).enumerate() {
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lengths[i] = (h.msg_len as usize, h.msg_hdr.msg_namelen, truncated);
        }
        Ok(n)
    }

    /// The `i`th datagram of the last [`Self::receive`]: its bytes, its source, and
    /// whether it was longer than the buffer.
    fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr, bool)> {
        let (len, namelen, truncated) = *self.lengths.get(i)?;
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a transparent sockaddr_storage, into which the
        // kernel's address is copied whole; `namelen` bytes of it are the address it
        // wrote (at most the storage's size).
        #[allow(unsafe_code, reason = "reading the address recvmmsg wrote")]
        let addr = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.addresses[i];
            socket2::SockAddr::new(storage, namelen)
        };
        let remote = addr.as_socket()?;
        let len = len.min(self.buffers[i].len());
        Some((&self.buffers[i][..len], remote, truncated))
    }
}

/// Asks the kernel to report ICMP errors for datagrams this unconnected socket sends
/// (`IP_RECVERR` / `IPV6_RECVERR`; without it Linux drops them): each then fails the
/// next receive and leaves the address it concerns in the socket's error queue, which
/// [`run`] reads. Best effort: a kernel that refuses leaves retransmissions to run out
/// on their timers, as before.
pub(crate) fn report_icmp_errors(socket: &UdpSocket, local: SocketAddr) {
    use std::os::fd::AsRawFd as _;
    let (level, name) = if local.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor the socket owns for the duration of the call,
    // with a pointer to a live c_int and its exact size.
    #[allow(
        unsafe_code,
        reason = "one setsockopt that socket2 does not wrap: IP_RECVERR"
    )]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::info!(%local, "ICMP errors not reported for this UDP socket: {}", std::io::Error::last_os_error());
    }
}

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// The response to a STUN Binding request (RFC 5389), carrying the source address in
/// XOR-MAPPED-ADDRESS; `None` when `data` is not one.
pub(crate) fn stun_binding_response(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if data.len() < 20 || data[0..2] != [0x00, 0x01] || data[4..8] != STUN_MAGIC {
        return None;
    }
    let length = u16::from_be_bytes([data[2], data[3]]) as usize;
    if data.len() != 20 + length || !length.is_multiple_of(4) {
        return None;
    }
    let transaction = &data[8..20];
    let port = from.port() ^ 0x2112;
    let mut attr = Vec::with_capacity(24);
    attr.extend_from_slice(&0x0020u16.to_be_bytes());
    match from.ip() {
        IpAddr::V4(ip) => {
            attr.extend_from_slice(&8u16.to_be_bytes());
            attr.extend_from_slice(&[0, 0x01]);
            attr.extend_from_slice(&port.to_be_bytes());
            for (i, b) in ip.octets().iter().enumerate() {
                attr.push(b ^ STUN_MAGIC[i]);
            }
        }
        IpAddr::V6(ip) => {
            attr.extend_from_slice(&20u16.to_be_bytes());
            attr.extend_from_slice(&[0, 0x02]);
            attr.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = STUN_MAGIC.iter().chain(transaction).copied().collect();
            for (i, b) in ip.octets().iter().enumerate() {
                attr.push(b ^ key[i]);
            }
        }
    }
    let mut out = Vec::with_capacity(20 + attr.len());
    out.extend_from_slice(&[0x01, 0x01]);
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&STUN_MAGIC);
    out.extend_from_slice(transaction);
    out.extend_from_slice(&attr);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_overload_sources_from_before_it_are_established_newcomers_are_not() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let phone: IpAddr = "192.0.2.1".parse().unwrap();
        let flood: IpAddr = "198.51.100.7".parse().unwrap();
        let mut sources = Sources::default();
        assert_eq!(sources.seen(phone, at(0)), at(0));
        // The flood's sources arrive at 10 s and the core falls behind at once.
        let first = sources.seen(flood, at(10));
        assert!(!sources.established(first, at(10)));
        assert!(
            sources.established(at(0), at(10)),
            "the phone was here before"
        );
        // Twenty seconds into the flood (the core found behind all along) the
        // newcomers are still new to this overload.
        for s in 11..30 {
            let first = sources.seen(flood, at(s));
            assert!(!sources.established(first, at(s)));
        }
        let first = sources.seen(flood, at(30));
        assert_eq!(first, at(10));
        assert!(!sources.established(first, at(30)));
        // Calm for longer than CALM: a later overload takes them as established.
        assert!(sources.established(first, at(30) + CALM + Duration::from_secs(1)));
        // IPv6 sources count per /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(sources.seen(a, at(40)), sources.seen(b, at(41)));
    }

    #[test]
    fn stun_binding() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&STUN_MAGIC);
        req.extend_from_slice(&[7; 12]);
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = stun_binding_response(&req, from).unwrap();
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[8..20], &[7; 12]);
        // XOR-MAPPED-ADDRESS: port 32853 ^ 0x2112, address ^ magic.
        assert_eq!(u16::from_be_bytes([resp[26], resp[27]]), 32853 ^ 0x2112);
        assert_eq!(resp[28], 192 ^ 0x21);
        assert!(stun_binding_response(b"OPTIONS sip:x SIP/2.0\r\n\r\n", from).is_none());
    }
}
