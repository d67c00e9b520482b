//! The plugins compiled into the server binary, usable as `builtin = "NAME"` in a
//! `[plugins.NAME]` table: their names (which the configuration checks) and their
//! component bytes (which the plugin host compiles). Built from `plugins/` by
//! `host/build.rs`. Imports nothing of the crate.

/// The names a plugin's `builtin` key may take.
pub const NAMES: &[&str] = &["seed-policy", "welcome", "cookie-login", "softphone"];

/// The component bytes of the built-in plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "seed-policy" => Some(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/seed_policy.wasm"
        ))),
        "welcome" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/welcome.wasm"))),
        "cookie-login" => Some(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/cookie_login.wasm"
        ))),
        "softphone" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/softphone.wasm"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_has_its_component() {
        for name in super::NAMES {
            let b = super::bytes(name).unwrap_or_else(|| panic!("{name}: no bytes"));
            // A component's preamble: the Wasm magic, then the component layer.
            assert_eq!(&b[..4], b"\0asm", "{name}");
        }
        assert!(super::bytes("nonesuch").is_none());
    }
}
