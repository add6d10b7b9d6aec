//! A temporary directory only this user (and root) may list or open, for what a boot hands the
//! guest that may be secret (the credentials' files, the cloud-init seed).
use anyhow::{Context, Result};

/// Made private before anything is in it (tempfile's own mode follows the umask). Removed when
/// dropped.
pub fn private_dir(prefix: &str, what: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .with_context(|| format!("creating a private directory for {what}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making the directory of {what} private"))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_owner_may_enter() {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_dir("c2vm-test.", "a test").unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
