//! Where the root filesystem comes from. Every source ends the same way: a tar stream of a whole
//! root filesystem, which the rootfs stage edits on its way into the disk. `rootfs:PATH` reads a tarball; an image
//! reference goes through the Docker Engine API.
pub mod docker;
pub mod tarball;

use crate::image::ImageConfig;
use anyhow::{bail, Result};
use std::io::Read;
use std::path::PathBuf;

/// A whole root filesystem as a tar stream; `finish` once it was read to its end (it ends the
/// progress line and lets go of what the source held, e.g. the export's container).
pub trait TarStream: Read {
    fn finish(self: Box<Self>) -> Result<()>;
}

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

/// When to pull an image from its registry.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// The platform c2vm boots.
pub const PLATFORM: &str = "linux/amd64";

/// An image as a source found it.
#[derive(Debug, Clone, Default)]
pub struct ImageDetails {
    pub id: String,
    pub os: String,
    pub architecture: String,
    /// Bytes of its root filesystem, for progress and placing the workspace.
    pub size: u64,
    pub config: ImageConfig,
}

impl ImageDetails {
    /// c2vm boots x86-64 Linux guests only.
    pub fn check_platform(&self, reference: &str) -> Result<()> {
        if self.os != "linux" || self.architecture != "amd64" {
            bail!(
                "{reference} is a {}/{} image; c2vm boots linux/amd64 images only",
                self.os,
                self.architecture
            );
        }
        Ok(())
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
        let err = |t: &str| SourceRef::parse(t).unwrap_err().to_string();
        assert!(
            err("rootfs:").contains("needs a path"),
            "{}",
            err("rootfs:")
        );
        assert!(
            err("a b").contains("is not an image reference"),
            "{}",
            err("a b")
        );
    }
}
