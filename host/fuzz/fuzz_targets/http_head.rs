#![no_main]
//! Any bytes as an HTTP request head: parsing never panics and respects its limits.

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::http_head::{HeadLimits, parse};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_head_bytes: 4096,
        max_headers: 32,
        max_body_bytes: 1024,
    };
    if let Ok(Some((head, n))) = parse(data, &limits) {
        assert!(n <= data.len() && n <= limits.max_head_bytes);
        assert!(head.headers.len() <= limits.max_headers);
        assert!(head.content_length <= limits.max_body_bytes);
    }
});
