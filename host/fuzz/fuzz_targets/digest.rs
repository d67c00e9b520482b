#![no_main]
//! Any Authorization value and any nonce a client may send: reading the Digest
//! parameters and checking the credentials never panics, and credentials made up by
//! the client are never accepted (only a response computed with the password over a
//! nonce of ours can be).

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::auth::{DigestRequest, DigestVerdict, NonceKey, digest_param};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for name in ["username", "realm", "nonce", "uri", "response", "nc", "cnonce", "qop"] {
        let _ = digest_param(&text, name);
    }
    let key = NonceKey::new([9; 32]);
    let peer = Some("192.0.2.1".parse().unwrap());
    let _ = key.check(&text, "sipwasm", 1_000, 300, peer);
    let req = DigestRequest {
        method: "REGISTER",
        uri: "sip:localhost",
        peer,
        txn: "t",
    };
    // Made-up credentials, with or without a nonce of ours in them.
    let ours = key.issue("sipwasm", 1_000, peer);
    let forged = text.replace("NONCE", &ours);
    for creds in [text.as_ref(), forged.as_str()] {
        let v = key.verify([creds], &req, "sipwasm", "secret", 1_001, 300);
        assert!(
            !matches!(v, DigestVerdict::Valid { .. }),
            "made-up credentials accepted: {creds:?}"
        );
    }
});
