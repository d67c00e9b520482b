//! Async reading of one HTTP request (head + body) from a stream under size and time
//! limits. The only part of `http/` that does I/O.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use super::head::{self, HeadError, HeadLimits, RequestHead};

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The client closed the connection cleanly between requests.
    #[error("connection closed")]
    Closed,
    /// No (complete) request within the time limit.
    #[error("timed out waiting for the request")]
    Timeout,
    /// The client closed the connection in the middle of a request.
    #[error("connection closed in the middle of a request")]
    Truncated,
    /// The head breaks a rule; answer `e.status()` and close.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Socket error.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// A complete request.
#[derive(Debug)]
pub(crate) struct Request {
    /// The head.
    pub head: RequestHead,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// Reads one request from `stream`.
///
/// `buf` holds bytes already received (a pipelined request); on success it holds the
/// bytes after the request (the next request, or WebSocket frames after a handshake).
/// Nothing must be pending for longer than `idle_until` before the first byte arrives,
/// and the whole request must be in by `complete_within` after its first byte (or by
/// `first_deadline` when given, e.g. counted from the TCP accept).
pub(crate) async fn read_request<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limits: &HeadLimits,
    idle_until: Instant,
    complete_within: std::time::Duration,
    first_deadline: Option<Instant>,
) -> Result<Request, ReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Wait for the first byte (unless one is buffered already).
    if buf.is_empty() {
        let wait_until = first_deadline.map_or(idle_until, |d| d.min(idle_until));
        match timeout_at(wait_until, read_some(stream, buf, limits.max_head_bytes)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(0)) => return Err(ReadError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let deadline = first_deadline.unwrap_or_else(|| Instant::now() + complete_within);
    // What the last parse saw: the head is parsed again only once a read completes a
    // line (or passes the size limit), so a head trickled in byte by byte costs
    // linear time, not a parse per byte.
    let mut parsed_upto = 0;
    let (head, head_len) = loop {
        if worth_parsing(buf, parsed_upto, limits.max_head_bytes) {
            if let Some(done) = head::parse(buf, limits)? {
                break done;
            }
            parsed_upto = buf.len();
        }
        match timeout_at(deadline, read_some(stream, buf, limits.max_head_bytes)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(0)) => return Err(ReadError::Truncated),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    };
    buf.drain(..head_len);
    let need = head.content_length;
    if head.expect_continue && need > buf.len() {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < need {
        match timeout_at(deadline, read_some(stream, buf, need - buf.len())).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(0)) => return Err(ReadError::Truncated),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let rest = buf.split_off(need);
    let body = std::mem::replace(buf, rest);
    Ok(Request { head, body })
}

/// Whether `buf`, of which the first `parsed_upto` bytes were parsed already (an
/// incomplete head), is worth parsing again: it is new (nothing parsed yet), a line was
/// completed since, or it passed the size limit (to be refused). A head only becomes
/// complete, or wrong, at the end of a line.
fn worth_parsing(buf: &[u8], parsed_upto: usize, max_head: usize) -> bool {
    parsed_upto == 0
        || buf.len() > max_head
        || memchr::memchr(b'\n', &buf[parsed_upto.min(buf.len())..]).is_some()
}

/// Reads what is available, at most about `want` more bytes (at least 1 KiB at a time).
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<usize> {
    let chunk = want.clamp(1024, 8 * 1024);
    buf.reserve(chunk);
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let n = stream.read(&mut buf[start..]).await;
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

#[cfg(test)]
mod tests {
    use super::worth_parsing;

    #[test]
    fn a_trickled_head_is_parsed_once_per_line_not_per_byte() {
        let head = b"GET / HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\n\r\n";
        let mut parses = 0;
        let mut parsed_upto = 0;
        for n in 1..=head.len() {
            if worth_parsing(&head[..n], parsed_upto, 16 * 1024) {
                parses += 1;
                parsed_upto = n;
            }
        }
        // The first byte, then once per line end (four of them).
        assert_eq!(parses, 5);
        assert!(
            worth_parsing(&[b'a'; 20], 10, 16),
            "past the limit: refuse it"
        );
    }
}
