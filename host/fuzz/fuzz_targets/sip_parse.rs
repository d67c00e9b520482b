#![no_main]
//! Any bytes as a datagram or WebSocket message: parse never panics; what parses
//! serializes and parses again to the same message; a failure may produce a 400.

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::sip;

fuzz_target!(|data: &[u8]| {
    match sip::parse(data) {
        Ok(msg) => {
            let bytes = msg.to_bytes();
            let again = sip::parse(&bytes).expect("a serialized message parses");
            assert_eq!(again.to_bytes(), bytes, "serialization is stable");
        }
        Err(e) => {
            if let Some(resp) = sip::error_response(data, &e, "fuzz") {
                assert!(resp.starts_with(b"SIP/2.0 "));
            }
        }
    }
});
