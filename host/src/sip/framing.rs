//! Message boundaries on stream transports (TCP, TLS): RFC 3261 section 18.3, with the
//! RFC 5626 CRLF keepalive. Sans-IO: look at the front of a buffer, say what is there.

/// What starts the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A double CRLF keepalive ping of 4 bytes: answer with a single CRLF.
    Ping,
    /// A lone CRLF (a keepalive pong, or padding between messages): skip 2 bytes.
    Pong,
    /// A complete message of this many bytes (head and body).
    Message(usize),
}

/// A stream that cannot be framed: the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The head has no Content-Length (mandatory on streams).
    #[error("message without Content-Length on a stream")]
    NoContentLength,
    /// Content-Length is not a number, or two disagree.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// The message is larger than the limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

/// Looks at the front of `buf`. `Ok(None)`: read more.
pub fn next_frame(buf: &[u8], max_message: usize) -> Result<Option<Frame>, FrameError> {
    next_frame_from(buf, max_message, &mut 0)
}

/// [`next_frame`] for a buffer that grows between calls: `scanned` remembers how far
/// the search for the end of the head got, so a client trickling bytes costs linear
/// work, not quadratic. Reset it to 0 after consuming a frame.
pub fn next_frame_from(
    buf: &[u8],
    max_message: usize,
    scanned: &mut usize,
) -> Result<Option<Frame>, FrameError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Some(Frame::Ping));
    }
    // Up to four bytes of CR LF CR LF may be a ping still arriving: wait for the rest
    // rather than take it for a pong, so a ping split across reads is still answered.
    if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
        return Ok(None);
    }
    if buf.starts_with(b"\r\n") {
        return Ok(Some(Frame::Pong));
    }
    let Some((head_end, body_start)) = super::parse::find_head_end_from(buf, *scanned) else {
        *scanned = buf.len();
        if buf.len() > max_message {
            return Err(FrameError::TooLarge(max_message));
        }
        return Ok(None);
    };
    let length = content_length(&buf[..head_end])?.ok_or(FrameError::NoContentLength)?;
    let total = body_start
        .checked_add(length)
        .ok_or(FrameError::TooLarge(max_message))?;
    if total > max_message {
        return Err(FrameError::TooLarge(max_message));
    }
    Ok((buf.len() >= total).then_some(Frame::Message(total)))
}

/// The Content-Length of a head (`Content-Length` or compact `l`), if present.
fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = trim(&line[colon + 1..]);
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadContentLength);
        }
        let n: usize = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(FrameError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FrameError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:b@l SIP/2.0\r\nl: 5\r\n\r\nhello";

    #[test]
    fn keepalives() {
        assert_eq!(next_frame(b"\r\n\r\nINVITE", 1000), Ok(Some(Frame::Ping)));
        assert_eq!(next_frame(b"\r\nINVITE", 1000), Ok(Some(Frame::Pong)));
        assert_eq!(next_frame(b"\r", 1000), Ok(None));
        assert_eq!(next_frame(b"\r\n", 1000), Ok(None), "maybe half a ping");
        assert_eq!(next_frame(b"\r\n\r", 1000), Ok(None));
        assert_eq!(next_frame(b"\r\n\rX", 1000), Ok(Some(Frame::Pong)));
        assert_eq!(next_frame(b"", 1000), Ok(None));
    }

    #[test]
    fn messages_across_and_within_reads() {
        for cut in 0..MSG.len() {
            assert_eq!(next_frame(&MSG[..cut], 1000), Ok(None), "cut at {cut}");
        }
        assert_eq!(next_frame(MSG, 1000), Ok(Some(Frame::Message(MSG.len()))));
        let two = [MSG, MSG].concat();
        assert_eq!(next_frame(&two, 1000), Ok(Some(Frame::Message(MSG.len()))));
    }

    #[test]
    fn errors() {
        let no_cl = b"OPTIONS sip:b@l SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(next_frame(no_cl, 1000), Err(FrameError::NoContentLength));
        let bad = b"OPTIONS sip:b@l SIP/2.0\r\nContent-Length: x\r\n\r\n";
        assert_eq!(next_frame(bad, 1000), Err(FrameError::BadContentLength));
        let two = b"OPTIONS sip:b@l SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n";
        assert_eq!(next_frame(two, 1000), Err(FrameError::BadContentLength));
        assert_eq!(next_frame(MSG, 10), Err(FrameError::TooLarge(10)));
        assert_eq!(
            next_frame(&[b'a'; 2000], 1000),
            Err(FrameError::TooLarge(1000))
        );
        let big = b"OPTIONS sip:b@l SIP/2.0\r\nContent-Length: 999999999\r\n\r\n";
        assert_eq!(next_frame(big, 1000), Err(FrameError::TooLarge(1000)));
    }

    #[test]
    fn bare_lf_heads_frame_as_they_parse() {
        // Framing and parsing agree on where a bare-LF head ends, so the next message
        // on the stream is not swallowed.
        let lf = b"OPTIONS sip:b@l SIP/2.0\nContent-Length: 0\n\nINVITE";
        assert_eq!(next_frame(lf, 1000), Ok(Some(Frame::Message(lf.len() - 6))));
    }

    #[test]
    fn trickled_bytes_are_scanned_once() {
        let mut scanned = 0;
        let mut buf = Vec::new();
        for (i, &b) in MSG.iter().enumerate() {
            buf.push(b);
            let r = next_frame_from(&buf, 1000, &mut scanned);
            if i + 1 < MSG.len() {
                assert_eq!(r, Ok(None));
            } else {
                assert_eq!(r, Ok(Some(Frame::Message(MSG.len()))));
            }
        }
    }
}
