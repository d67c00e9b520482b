//! TLS for `wss` and `tls` listeners: configured PEM files, or a self-signed
//! certificate for localhost generated once into the data directory. And for the
//! connections the server opens (`[tls-client]`): the system's certificate
//! authorities or a configured file, an optional client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Names the generated certificate is valid for.
const SELF_SIGNED_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Where the generated certificate and key live.
pub(crate) fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("localhost.crt"), dir.join("localhost.key"))
}

/// Builds the rustls server configuration for a listener.
pub(crate) fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => ensure_self_signed(data_dir)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a valid pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls configuration of the TLS connections the server opens. A file that
/// cannot be read, or holds nothing usable, stops the start naming its key.
pub(crate) fn client_config(
    cfg: &crate::config::TlsClientConfig,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("tls-client.ca-file: cannot read {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("tls-client.ca-file: bad PEM in {}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!(
                    "tls-client.ca-file: no usable certificate in {}",
                    path.display()
                );
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                tracing::warn!(
                    errors = ?found.errors,
                    "no system certificate authorities: TLS next hops will be refused unless \
                     tls-client.ca-file names the ones to trust"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("tls-client.client-cert: cannot read {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("tls-client.client-cert: bad PEM in {}", cert.display())
                })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "tls-client.client-cert: no certificate in {}",
                    cert.display()
                );
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("tls-client.client-key: cannot read {}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .context("tls-client.client-cert and client-key do not form a valid pair")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Generates the self-signed certificate unless it exists; returns its paths.
fn ensure_self_signed(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = self_signed_paths(data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let dir = cert_path.parent().expect("tls dir");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, generated.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::warn!(
        cert = %cert_path.display(),
        "generated a self-signed certificate for localhost; clients must trust it explicitly. \
         Set tls-cert and tls-key on the wss listener for production"
    );
    Ok((cert_path, key_path))
}

/// Writes a file readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
