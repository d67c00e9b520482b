//! Follows the frame boundaries of what a WebSocket client sends (RFC 6455 section 5.2),
//! sans-IO, to tell whether a frame, or a fragmented message, is left unfinished. The
//! WebSocket library buffers partial frames and fragments without saying so; a client
//! that sends half a frame and stops, or the first fragment of a message and then only
//! Pongs, would otherwise hold the connection and its buffer for as long as it likes.
//!
//! Cost: the header bytes are looked at, payload bytes are only counted.

/// Where in the client's byte stream we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame header: `have` of its bytes so far.
    Header { have: usize },
    /// Skipping this many payload bytes.
    Payload { left: u64 },
    /// The stream broke the framing rules; the library closes the connection, and
    /// nothing more is followed.
    Broken,
}

/// Frame and message boundaries of a client's byte stream.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    state: State,
    /// The header being read (at most 2 + 8 + 4 bytes).
    header: [u8; 14],
    /// A data frame without FIN came, and its final continuation has not.
    in_message: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameTracker {
    /// At a frame boundary, outside any message.
    pub fn new() -> Self {
        Self {
            state: State::Header { have: 0 },
            header: [0; 14],
            in_message: false,
        }
    }

    /// Whether something the client started is unfinished: a frame, or a message
    /// whose final fragment has not come.
    pub fn pending(&self) -> bool {
        match self.state {
            State::Header { have } => have > 0 || self.in_message,
            State::Payload { .. } => true,
            State::Broken => false,
        }
    }

    /// Follows `bytes`, the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Broken => return,
                State::Payload { left } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header { have: 0 }
                    } else {
                        State::Payload { left }
                    };
                }
                State::Header { have } => {
                    let need = if have < 2 {
                        2
                    } else {
                        header_len(self.header[1])
                    };
                    let n = (need - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let have = have + n;
                    if have < 2 || have < header_len(self.header[1]) {
                        self.state = State::Header { have };
                        continue;
                    }
                    self.frame_header_done();
                }
            }
        }
    }

    /// A whole header is in `self.header`: note the message state, go to the payload.
    fn frame_header_done(&mut self) {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        let len = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("eight bytes")),
            n => u64::from(n),
        };
        match opcode {
            // Text or binary: starts a message, which ends here when FIN is set.
            1 | 2 => {
                if self.in_message {
                    // A new message inside a fragmented one: a protocol error.
                    self.state = State::Broken;
                    return;
                }
                self.in_message = !fin;
            }
            // Continuation.
            0 => {
                if !self.in_message {
                    self.state = State::Broken;
                    return;
                }
                self.in_message = !fin;
            }
            // Control frames (close, ping, pong) may come between fragments.
            8..=10 => {}
            _ => {
                self.state = State::Broken;
                return;
            }
        }
        self.state = if len == 0 {
            State::Header { have: 0 }
        } else {
            State::Payload { left: len }
        };
    }
}

/// The length of a frame header given its second byte: 2, plus 2 or 8 for an extended
/// length, plus 4 for a mask.
fn header_len(second: u8) -> usize {
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn whole_frames_leave_nothing_pending_byte_by_byte_or_at_once() {
        let mut stream = frame(0x81, b"REGISTER sip:x SIP/2.0");
        stream.extend(frame(0x8A, b""));
        stream.extend(frame(0x82, &[7u8; 300]));
        stream.extend(frame(0x81, &vec![b'a'; 70_000]));
        let mut t = FrameTracker::new();
        t.feed(&stream);
        assert!(!t.pending());
        let mut t = FrameTracker::new();
        let mut pending_inside = 0;
        for b in &stream {
            t.feed(std::slice::from_ref(b));
            pending_inside += usize::from(t.pending());
        }
        assert!(!t.pending());
        assert!(pending_inside > 70_000);
    }

    #[test]
    fn half_a_frame_is_pending_until_its_last_byte() {
        let f = frame(0x81, b"OPTIONS sip:x SIP/2.0");
        let mut t = FrameTracker::new();
        t.feed(&f[..1]);
        assert!(t.pending(), "one header byte");
        t.feed(&f[1..10]);
        assert!(t.pending(), "header and some payload");
        t.feed(&f[10..]);
        assert!(!t.pending());
    }

    #[test]
    fn a_fragmented_message_is_pending_until_its_final_fragment_pongs_between_or_not() {
        let mut t = FrameTracker::new();
        t.feed(&frame(0x01, b"first half "));
        assert!(t.pending());
        t.feed(&frame(0x8A, b""));
        assert!(
            t.pending(),
            "a Pong between fragments does not finish the message"
        );
        t.feed(&frame(0x00, b"middle "));
        assert!(t.pending());
        t.feed(&frame(0x80, b"end"));
        assert!(!t.pending());
    }

    #[test]
    fn broken_framing_stops_following_and_reports_nothing_pending() {
        let mut t = FrameTracker::new();
        t.feed(&frame(0x80, b"a continuation with no message"));
        assert!(!t.pending());
        let mut t = FrameTracker::new();
        t.feed(&frame(0x83, b"reserved opcode"));
        t.feed(&[0x81]);
        assert!(!t.pending());
    }
}
