#![no_main]
//! Any bytes a WebSocket client may send, cut anywhere: the frame follower never
//! panics, says the same however the stream is split, and agrees with a plain
//! reference reading of the frames (RFC 6455 section 5.2).

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::ws_frames::FrameTracker;

/// Reads whole frames from the start of `data`: whether something is left unfinished
/// (a partial frame or a fragmented message without its final frame), or `None` once
/// the framing is broken.
fn reference(data: &[u8]) -> Option<bool> {
    let mut i = 0usize;
    let mut in_message = false;
    loop {
        if i == data.len() {
            return Some(in_message);
        }
        if data.len() - i < 2 {
            return Some(true);
        }
        let (b0, b1) = (data[i], data[i + 1]);
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        let hdr = 2 + ext + mask;
        if data.len() - i < hdr {
            return Some(true);
        }
        let len: u64 = match ext {
            2 => u64::from(u16::from_be_bytes([data[i + 2], data[i + 3]])),
            8 => u64::from_be_bytes(data[i + 2..i + 10].try_into().unwrap()),
            _ => u64::from(b1 & 0x7f),
        };
        let fin = b0 & 0x80 != 0;
        match b0 & 0x0f {
            1 | 2 if !in_message => in_message = !fin,
            0 if in_message => in_message = !fin,
            8..=10 => {}
            _ => return None,
        }
        let left = (data.len() - i - hdr) as u64;
        if len > left {
            return Some(true);
        }
        i += hdr + len as usize;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = FrameTracker::new();
    whole.feed(stream);
    let mut pieces = FrameTracker::new();
    for piece in stream.chunks(usize::from(cut).max(1)) {
        pieces.feed(piece);
    }
    assert_eq!(whole.pending(), pieces.pending(), "split-dependent");
    if let Some(expected) = reference(stream) {
        assert_eq!(whole.pending(), expected, "disagrees with the reference");
    } else {
        assert!(!whole.pending(), "broken framing reports nothing pending");
    }
});
