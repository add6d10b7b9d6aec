//! The root filesystem stage: unpack a tar stream safely into a staging tree, then configure it as
//! a guest (fstab, hostname, passwords, ...). Also finds the kernel and initramfs the disk boots.
pub mod app;
pub mod boot_files;
pub mod guest;
pub mod setup;
pub mod unpack;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The staging tree: a private temporary directory, removed when dropped (on success, error or
/// interrupt alike).
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    pub fn create(workdir: &Path) -> Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix("c2vm-staging.")
            .tempdir_in(workdir)
            .with_context(|| format!("creating a staging tree in {}", workdir.display()))?;
        // The tree is the guest's `/`: root-owned 0755, whatever the umask gave the temp dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("setting the staging tree's mode")?;
        Ok(Staging { dir })
    }

    /// The guest's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Scratch space beside the root (raw disk before conversion, configs), outside the guest.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}
