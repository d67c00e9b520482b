//! A small scripted SIP user agent for tests, over WebSocket (tungstenite), UDP, TCP or
//! TLS: it builds requests and responses by hand so a test can say exactly what goes
//! on the wire, and parses what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sipwasm::sip::headers::HeaderName;
use sipwasm::sip::{Essentials, Message, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{Server, Ws, within};

/// A byte stream SIP is framed on (TCP or TLS).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

enum Conn {
    Ws(Box<Ws<TcpStream>>),
    Udp(UdpSocket, SocketAddr),
    /// TCP or TLS, with what was read and not yet framed.
    Stream(Box<dyn Stream>, Vec<u8>),
}

/// A scripted user agent.
pub struct Ua {
    conn: Conn,
    /// User name (AoR `sip:user@localhost`).
    pub user: String,
    /// Via transport token.
    pub transport: &'static str,
    /// Via sent-by / Contact host.
    pub host: String,
    /// RFC 5626 instance id, when set.
    pub instance: Option<String>,
    cseq: u32,
    counter: u32,
}

/// A dialog as seen by one side.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our URI with tag (`From` of our requests).
    pub local: String,
    /// Their URI with tag (`To` of our requests).
    pub remote: String,
    /// Request-URI: their Contact.
    pub target: String,
    /// Route set, in the order to send.
    pub routes: Vec<String>,
    /// Next CSeq.
    pub cseq: u32,
}

fn header(m: &Message, name: &HeaderName) -> Option<String> {
    m.headers().get(name).map(str::to_string)
}

fn contact_uri(value: &str) -> String {
    let v = value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or(v).to_string(),
    }
}

impl Ua {
    fn new(conn: Conn, user: &str, transport: &'static str, host: String) -> Self {
        Self {
            conn,
            user: user.into(),
            transport,
            host,
            instance: None,
            cseq: 0,
            counter: 0,
        }
    }

    /// A browser-like UA over WebSocket to the server's `ws` listener.
    pub async fn ws(server: &Server, user: &str) -> Self {
        let ws = crate::ws_connect_to(server).await;
        let host = format!("{user}-{}.invalid", rand_tag());
        Self::new(Conn::Ws(Box::new(ws)), user, "WS", host)
    }

    /// A browser-like UA over WebSocket to `path` on listener `addr` (a plugin that
    /// logs it in by its path or query).
    pub async fn ws_at(addr: SocketAddr, path: &str, user: &str) -> Self {
        let ws = crate::ws_connect_path(addr, path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let host = format!("{user}-{}.invalid", rand_tag());
        Self::new(Conn::Ws(Box::new(ws)), user, "WS", host)
    }

    /// [`Ua::ws_at`] with extra handshake headers (a session `Cookie`).
    pub async fn ws_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        user: &str,
    ) -> Self {
        let ws = crate::ws_connect_with(addr, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let host = format!("{user}-{}.invalid", rand_tag());
        Self::new(Conn::Ws(Box::new(ws)), user, "WS", host)
    }

    /// A phone-like UA over UDP.
    pub async fn udp(server: &Server, user: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let host = socket.local_addr().unwrap().to_string();
        Self::new(Conn::Udp(socket, server.sip), user, "UDP", host)
    }

    /// A phone-like UA over UDP from another loopback address (`127.0.0.2`...), which a
    /// test can name as a trusted peer or tell apart from other clients.
    pub async fn udp_from(server: &Server, user: &str, ip: &str) -> Self {
        let socket = UdpSocket::bind((ip, 0)).await.unwrap();
        let host = socket.local_addr().unwrap().to_string();
        Self::new(Conn::Udp(socket, server.sip), user, "UDP", host)
    }

    /// A phone-like UA over TCP.
    pub async fn tcp(server: &Server, user: &str) -> Self {
        let stream = within("connect", TcpStream::connect(server.sip))
            .await
            .unwrap();
        let host = stream.local_addr().unwrap().to_string();
        Self::new(
            Conn::Stream(Box::new(stream), Vec::new()),
            user,
            "TCP",
            host,
        )
    }

    /// A phone-like UA over TLS to the server's `tls` listener (RFC 3261 26.2).
    pub async fn tls(server: &Server, user: &str) -> Self {
        let stream = crate::tls_connect(server.tls, &server.certificate()).await;
        let host = stream.get_ref().0.local_addr().unwrap().to_string();
        Self::new(
            Conn::Stream(Box::new(stream), Vec::new()),
            user,
            "TLS",
            host,
        )
    }

    /// Our Contact URI.
    pub fn contact(&self) -> String {
        // UDP is the default; every other transport is named (`ws` for WS).
        match self.transport {
            "UDP" => format!("sip:{}@{}", self.user, self.host),
            t => format!(
                "sip:{}@{};transport={}",
                self.user,
                self.host,
                t.to_ascii_lowercase()
            ),
        }
    }

    fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// A new top Via for a request of ours.
    pub fn via(&mut self) -> String {
        let n = self.next();
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}{}x{n};rport",
            self.transport,
            self.host,
            self.user,
            rand_tag()
        )
    }

    /// Sends raw text.
    pub async fn send(&mut self, text: &str) {
        match &mut self.conn {
            Conn::Ws(ws) => within("ws send", ws.send(WsMessage::text(text.to_string())))
                .await
                .unwrap(),
            Conn::Udp(s, to) => {
                s.send_to(text.as_bytes(), *to).await.unwrap();
            }
            Conn::Stream(s, _) => s.write_all(text.as_bytes()).await.unwrap(),
        }
    }

    /// The next SIP message (keepalives skipped); `None` when the connection ended or
    /// nothing came within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Message> {
        let fut = async {
            loop {
                let bytes: Vec<u8> = match &mut self.conn {
                    Conn::Ws(ws) => match ws.next().await? {
                        Ok(WsMessage::Text(t)) => t.as_bytes().to_vec(),
                        Ok(WsMessage::Binary(b)) => b.to_vec(),
                        Ok(_) => continue,
                        Err(_) => return None,
                    },
                    Conn::Udp(s, _) => {
                        let mut buf = vec![0u8; 65536];
                        let (n, _) = s.recv_from(&mut buf).await.ok()?;
                        buf.truncate(n);
                        buf
                    }
                    Conn::Stream(s, buf) => loop {
                        if let Ok(Some(sipwasm::sip::framing::Frame::Message(n))) =
                            sipwasm::sip::framing::next_frame(buf, 65535)
                        {
                            break buf.drain(..n).collect();
                        }
                        if buf.starts_with(b"\r\n") {
                            buf.drain(..2);
                            continue;
                        }
                        let mut chunk = [0u8; 8192];
                        let n = s.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    },
                };
                if bytes.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    continue;
                }
                return Some(sipwasm::sip::parse(&bytes).expect("the server sends parsable SIP"));
            }
        };
        tokio::time::timeout(wait, fut).await.ok().flatten()
    }

    /// The next SIP message; panics when none comes.
    pub async fn recv(&mut self) -> Message {
        let user = self.user.clone();
        self.recv_within(crate::WAIT)
            .await
            .unwrap_or_else(|| panic!("{user}: no SIP message within {:?}", crate::WAIT))
    }

    /// The next request (responses skipped are an error).
    pub async fn recv_request(&mut self, method: &str) -> Request {
        match self.recv().await {
            Message::Request(r) if r.method.as_str() == method => r,
            other => panic!("{}: expected {method}, got {}", self.user, describe(&other)),
        }
    }

    /// The next final response (or the given provisional status), skipping 1xx.
    pub async fn recv_final(&mut self) -> Response {
        loop {
            match self.recv().await {
                Message::Response(r) if r.status >= 200 => return r,
                Message::Response(_) => {}
                other => panic!(
                    "{}: expected a response, got {}",
                    self.user,
                    describe(&other)
                ),
            }
        }
    }

    /// The next response with `status` (skipping other provisional ones).
    pub async fn recv_status(&mut self, status: u16) -> Response {
        loop {
            match self.recv().await {
                Message::Response(r) if r.status == status => return r,
                Message::Response(r) if r.status < 200 => {}
                other => panic!("{}: expected {status}, got {}", self.user, describe(&other)),
            }
        }
    }

    /// Whether nothing arrives for `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<Message> {
        self.recv_within(wait).await
    }

    /// A REGISTER for our AoR with `expires`; returns the final response.
    pub async fn register(&mut self, expires: u32) -> Response {
        let text = self.register_text(expires);
        self.send(&text).await;
        self.recv_final().await
    }

    /// The REGISTER text (same Call-ID for one UA, CSeq increasing).
    pub fn register_text(&mut self, expires: u32) -> String {
        self.cseq += 1;
        let via = self.via();
        let mut contact = format!("<{}>;expires={expires}", self.contact());
        let mut supported = "path, gruu";
        if let Some(i) = &self.instance {
            contact.push_str(&format!(";+sip.instance=\"<{i}>\";reg-id=1"));
            supported = "path, gruu, outbound";
        }
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: <sip:{u}@localhost>;tag=reg{u}\r\nTo: <sip:{u}@localhost>\r\n\
             Call-ID: reg-{u}-{h}\r\nCSeq: {c} REGISTER\r\nContact: {contact}\r\n\
             Supported: {supported}\r\nUser-Agent: sipwasm-tests\r\nContent-Length: 0\r\n\r\n",
            u = self.user,
            h = self.host,
            c = self.cseq,
        )
    }

    /// An out-of-dialog request to `sip:to@localhost` (or a full `sip:`/`sips:` URI).
    pub fn request(&mut self, method: &str, to: &str, extra: &str, body: &str) -> (String, Dialog) {
        let via = self.via();
        let n = self.next();
        let tag = format!("t{}{n}", rand_tag());
        let uri = if to.starts_with("sip:") || to.starts_with("sips:") {
            to.to_string()
        } else {
            format!("sip:{to}@localhost")
        };
        let call_id = format!("c-{}-{}-{n}", self.user, rand_tag());
        let local = format!("<sip:{}@localhost>;tag={tag}", self.user);
        let ctype = if body.is_empty() {
            String::new()
        } else if method == "MESSAGE" {
            "Content-Type: text/plain\r\n".into()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        let text = format!(
            "{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {local}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <{contact}>\r\n{extra}{ctype}\
             Content-Length: {len}\r\n\r\n{body}",
            contact = self.contact(),
            len = body.len()
        );
        let dialog = Dialog {
            call_id,
            local,
            remote: format!("<{uri}>"),
            target: uri,
            routes: Vec::new(),
            cseq: 2,
        };
        (text, dialog)
    }

    /// A response to `req`: the fields a response copies
    /// ([`Response::for_request`], To tagged), the Record-Routes and Contact of a
    /// dialog-forming answer.
    pub fn response(&self, req: &Request, status: u16, extra: &str, body: &str) -> String {
        let tag = format!("ans{}", self.user);
        let r = Response::for_request(req, status, Some(&tag));
        let mut s = format!("SIP/2.0 {status} {}\r\n", r.reason);
        for h in r.headers.iter() {
            s.push_str(&format!("{}: {}\r\n", h.name.as_str(), h.value));
        }
        if (101..300).contains(&status) {
            for rr in req.headers.get_all(&HeaderName::RecordRoute) {
                s.push_str(&format!("Record-Route: {rr}\r\n"));
            }
        }
        if (101..300).contains(&status) {
            s.push_str(&format!("Contact: <{}>\r\n", self.contact()));
        }
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        s.push_str(&format!(
            "{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        s
    }

    /// Calls `to` (which rings, then answers), ACKs the 200 and hangs up; returns the
    /// 200 once the BYE got its own 200.
    pub async fn call_and_hang_up(&mut self, to: &str) -> Response {
        let (invite, dialog) = self.request("INVITE", to, "", SDP);
        self.send(&invite).await;
        self.recv_status(180).await;
        let ok = self.recv_status(200).await;
        let mut d = self.dialog_as_caller(dialog, &ok);
        let ack = self.in_dialog(&mut d, "ACK", Some(1));
        self.send(&ack).await;
        let bye = self.in_dialog(&mut d, "BYE", None);
        self.send(&bye).await;
        let bye_ok = self.recv_final().await;
        assert_eq!(bye_ok.status, 200, "BYE: {bye_ok:?}");
        ok
    }

    /// The callee's view of a dialog from the INVITE it answered with a tag.
    pub fn dialog_as_callee(&self, invite: &Request) -> Dialog {
        let to = invite.headers.get(&HeaderName::To).unwrap();
        let local = if to.contains("tag=") {
            to.to_string()
        } else {
            format!("{to};tag=ans{}", self.user)
        };
        Dialog {
            call_id: invite.call_id().unwrap().to_string(),
            local,
            remote: invite.headers.get(&HeaderName::From).unwrap().to_string(),
            target: contact_uri(invite.headers.get(&HeaderName::Contact).unwrap()),
            routes: invite
                .headers
                .values(&HeaderName::RecordRoute)
                .map(str::to_string)
                .collect(),
            cseq: 1,
        }
    }

    /// Completes the caller's view from the 2xx: remote tag, target, reversed route set.
    pub fn dialog_as_caller(&self, mut d: Dialog, ok: &Response) -> Dialog {
        d.remote = ok.headers.get(&HeaderName::To).unwrap().to_string();
        d.target = contact_uri(
            ok.headers
                .get(&HeaderName::Contact)
                .expect("2xx with Contact"),
        );
        let mut rr: Vec<String> = ok
            .headers
            .values(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect();
        rr.reverse();
        d.routes = rr;
        d
    }

    /// An in-dialog request (ACK uses CSeq of the INVITE: pass `cseq` 1).
    pub fn in_dialog(&mut self, d: &mut Dialog, method: &str, cseq: Option<u32>) -> String {
        let via = self.via();
        let seq = cseq.unwrap_or_else(|| {
            let s = d.cseq;
            d.cseq += 1;
            s
        });
        let routes: String = d.routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        format!(
            "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{routes}From: {local}\r\nTo: {remote}\r\n\
             Call-ID: {cid}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n",
            target = d.target,
            local = d.local,
            remote = d.remote,
            cid = d.call_id,
        )
    }

    /// Closes the WebSocket without unregistering (a browser tab that goes away).
    pub async fn vanish(self) {
        if let Conn::Ws(mut ws) = self.conn {
            let _ = Ws::close(&mut *ws, None).await;
        }
    }
}

fn describe(m: &Message) -> String {
    match m {
        Message::Request(r) => format!("request {} {}", r.method, r.uri),
        Message::Response(r) => format!(
            "response {} {} (CSeq {})",
            r.status,
            r.reason,
            header(m, &HeaderName::CSeq).unwrap_or_default()
        ),
    }
}

/// A short random tag.
pub fn rand_tag() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", n, t ^ std::process::id())
}

/// A tiny SDP body.
pub const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
