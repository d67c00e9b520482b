//! The compile cache: plugins compiled once are kept in the data directory, each file
//! signed with the server secret, so a restart loads them in milliseconds and never
//! deserializes a file this server did not write.

use wasmtime::component::Component;

/// Where compiled plugins are kept between runs, and the key that signs them.
#[derive(Clone)]
pub struct CompileCache {
    /// The directory (inside the data directory).
    pub dir: std::path::PathBuf,
    /// The server secret: a cached file is used only if its MAC verifies, so only
    /// files this server wrote are ever deserialized.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("any key length");
        m.update(b"compiled-plugin");
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// The cache file for a component under an engine.
    fn path(&self, engine: &wasmtime::Engine, component: &[u8]) -> std::path::PathBuf {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut sha = sha2::Sha256::new();
        sha.update(h.finish().to_be_bytes());
        sha.update(env!("CARGO_PKG_VERSION").as_bytes());
        sha.update(component);
        let digest = sha.finalize();
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// A compiled component from the cache, if one this server wrote is there.
    pub(super) fn load(&self, engine: &wasmtime::Engine, component: &[u8]) -> Option<Component> {
        let file = std::fs::read(self.path(engine, component)).ok()?;
        if file.len() < 32 {
            return None;
        }
        let (mac, compiled) = file.split_at(32);
        let expected = self.mac(compiled);
        if mac
            .iter()
            .zip(expected.iter())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            tracing::warn!(file = %self.path(engine, component).display(), "cached plugin with a bad MAC ignored");
            return None;
        }
        // SAFETY: wasmtime requires that deserialized bytes come from `serialize` of a
        // compatible engine. The MAC above proves this server wrote these bytes (with
        // its secret) from `Component::serialize`, and the file name includes the
        // engine's compatibility hash and this server's version.
        #[allow(
            unsafe_code,
            reason = "deserializing our own MAC-verified compiled component"
        )]
        let component = unsafe { Component::deserialize(engine, compiled) };
        component.ok()
    }

    /// Stores a compiled component (best effort: a failure only costs a recompile).
    pub(super) fn store(
        &self,
        engine: &wasmtime::Engine,
        component_bytes: &[u8],
        component: &Component,
    ) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(compiled) = component.serialize() else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let path = self.path(engine, component_bytes);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&self.mac(&compiled))?;
                f.write_all(&compiled)
            });
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
