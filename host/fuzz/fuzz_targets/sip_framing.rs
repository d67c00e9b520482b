#![no_main]
//! Any bytes on a TCP stream, cut anywhere: framing never panics, never claims more
//! bytes than it has, and gives the same frames however the stream is split.

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::sip::framing::{Frame, next_frame};

fn frames(data: &[u8], chunk: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Ok(Some(f)) = next_frame(&buf, 4096) {
            let n = match f {
                Frame::Ping => 4,
                Frame::Pong => 2,
                Frame::Message(n) => n,
            };
            assert!(n <= buf.len());
            buf.drain(..n);
            out.push(f);
        }
        if next_frame(&buf, 4096).is_err() {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let chunk = usize::from(data[0] % 17) + 1;
    let whole = frames(&data[1..], data.len());
    let pieces = frames(&data[1..], chunk);
    // However the stream is cut, the same frames come out.
    assert_eq!(whole, pieces);
});
