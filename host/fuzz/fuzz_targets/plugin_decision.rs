#![no_main]
//! What a plugin's decision puts on the wire: any header name, value and reason
//! phrase a plugin returns is either refused by the host's checks or serialized into
//! exactly one well-formed response with exactly those fields (no header injection,
//! no response splitting).

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::http_response::{Response, reason_is_valid, validate_header};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1}');
    let (name, value, reason) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let body = parts.next().unwrap_or("");
    let header_ok = validate_header(name, value).is_ok();
    let reason_ok = reason_is_valid(reason);
    if !(header_ok && reason_ok) {
        return;
    }
    let resp = Response {
        status: 200,
        reason: Some(reason.to_string()),
        headers: vec![(name.to_string(), value.to_string())],
        body: body.as_bytes().to_vec(),
        close: false,
    };
    let bytes = resp.serialize("fuzz", std::time::UNIX_EPOCH, true, false, false);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let n = match parsed.parse(&bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("not one well-formed response: {other:?}\n{:?}", String::from_utf8_lossy(&bytes)),
    };
    assert_eq!(parsed.code, Some(200));
    let ours: Vec<_> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
    // HTTP trims only spaces and tabs around a value (RFC 9110 OWS), not all of
    // Unicode's white space (a value ending in U+205F keeps it).
    assert_eq!(ours[0].value, value.trim_matches([' ', '\t']).as_bytes());
    assert_eq!(&bytes[n..], body.as_bytes(), "the body is exactly what was given");
});
