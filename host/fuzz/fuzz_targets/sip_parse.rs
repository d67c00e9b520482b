#![no_main]
//! Any bytes as a datagram or WebSocket message: parse never panics; what parses
//! serializes and parses again to the same message; the From, To and Via values the
//! parser checked through borrowed views also build as owned values, and those write
//! back to text that parses; a failure may produce a 400.

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::sip;
use sipwasm_fuzz::sip::headers::HeaderName;
use sipwasm_fuzz::sip::typed::{NameAddr, Via};

fuzz_target!(|data: &[u8]| {
    match sip::parse(data) {
        Ok(msg) => {
            let h = msg.headers();
            for v in h.values(&HeaderName::Via) {
                let via = Via::parse(v).expect("a checked Via builds");
                Via::parse(&via.to_string()).expect("a written Via parses");
            }
            for name in [HeaderName::From, HeaderName::To] {
                let value = h.get(&name).expect("checked present");
                let na = NameAddr::parse(value).expect("a checked name-addr builds");
                NameAddr::parse(&na.to_string()).expect("a written name-addr parses");
            }
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
