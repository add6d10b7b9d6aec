//! Where the root filesystem comes from. Every source ends the same way: a tar stream of a whole
//! root filesystem, unpacked into the staging tree. `rootfs:PATH` reads a tarball; an image
//! reference goes through the Docker Engine API.
pub mod docker;
pub mod tarball;

use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum SourceRef {
    /// `rootfs:PATH`: a tarball of a whole root filesystem with a kernel in /boot.
    Tarball(PathBuf),
    /// An image reference as docker takes it.
    Image(String),
}

impl SourceRef {
    pub fn parse(text: &str) -> Result<SourceRef> {
        if let Some(path) = text.strip_prefix("rootfs:") {
            if path.is_empty() {
                bail!("`rootfs:` needs a path, e.g. rootfs:/tmp/root.tar");
            }
            return Ok(SourceRef::Tarball(PathBuf::from(path)));
        }
        let image = text.strip_prefix("docker:").unwrap_or(text);
        if image.is_empty() || image.contains(char::is_whitespace) {
            bail!("`{text}` is not an image reference (e.g. debian:latest) nor rootfs:PATH");
        }
        Ok(SourceRef::Image(image.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert!(
            matches!(SourceRef::parse("rootfs:/a.tar").unwrap(), SourceRef::Tarball(p) if p == std::path::Path::new("/a.tar"))
        );
        assert!(
            matches!(SourceRef::parse("debian:latest").unwrap(), SourceRef::Image(i) if i == "debian:latest")
        );
        assert!(
            matches!(SourceRef::parse("docker:alpine").unwrap(), SourceRef::Image(i) if i == "alpine")
        );
        assert!(SourceRef::parse("rootfs:").is_err());
        assert!(SourceRef::parse("a b").is_err());
    }
}
