//! Private files in the data directory: made for this user only (directories 0700,
//! files 0600), a file flushed to disk before it counts as made.

use std::path::Path;

use anyhow::Context as _;

/// Creates the data directory (and its parents) readable by this user only: it holds
/// the server secret, the admin token, TLS keys and the registrations.
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    // One made by an earlier version, or by hand, is closed too.
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("cannot make data directory {} private", dir.display()))?;
        tracing::info!(dir = %dir.display(), "data directory made private (mode 0700)");
    }
    Ok(())
}

/// Writes a new file only this user can read, flushed to disk before it counts as made.
pub(crate) fn create_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()
        .with_context(|| format!("cannot flush {}", path.display()))?;
    Ok(())
}
