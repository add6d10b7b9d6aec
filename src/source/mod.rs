//! Where the root filesystem comes from. Every source ends the same way: a tar stream of a whole
//! root filesystem, which the rootfs stage edits on its way into the disk.
//! - `rootfs:PATH` reads a tarball (`tarball`);
//! - a plain image reference goes through a Docker Engine API, Docker's or Podman's (`docker`);
//! - skopeo's transports need no engine: `oci:`, `oci-archive:`, `docker-archive:` (`layout`)
//!   and `docker://` (`registry`) give an image's layers (`oci`), merged into one stream
//!   (`layers`).
#[cfg(feature = "cli")]
pub mod docker;
pub mod layers;
#[cfg(feature = "cli")]
pub mod layout;
#[cfg(feature = "cli")]
pub mod oci;
#[cfg(feature = "cli")]
pub mod programs;
#[cfg(feature = "cli")]
pub mod registry;
pub mod tarball;

use crate::arch::Arch;
use crate::image::ImageConfig;
use anyhow::{bail, Result};
use std::io::Read;
use std::path::PathBuf;

/// A whole root filesystem as a tar stream; `finish` once it was read to its end (it ends the
/// progress line and lets go of what the source held, e.g. the export's container).
pub trait TarStream: Read {
    fn finish(self: Box<Self>) -> Result<()>;
    /// Why the stream broke, when the source knows better than a reader's error (a layer's
    /// digest, a registry's refusal).
    fn failure(&mut self) -> Option<anyhow::Error> {
        None
    }
}

#[derive(Debug, Clone)]
pub enum SourceRef {
    /// `rootfs:PATH`: a tarball of a whole root filesystem with a kernel in /boot.
    Tarball(PathBuf),
    /// An image reference as docker takes it, through the engine.
    Image(String),
    /// An image with no engine, by one of skopeo's transports.
    Layers(Transport),
}

/// skopeo's transport names for images c2vm reads with no engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `oci:DIR[:TAG]`
    Oci { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:PATH[:TAG]`
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:PATH[:REF]`
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// `docker://REGISTRY/NAME[:TAG|@DIGEST]`
    Registry(String),
}

#[cfg(feature = "cli")]
impl Transport {
    /// The image, its config read and its layers found (none read yet).
    /// `platform`: `--platform`, where given.
    pub fn open(
        &self,
        access: &registry::Access,
        platform: Option<Arch>,
    ) -> Result<layers::LayeredImage> {
        let platform = oci::Wanted(platform);
        match self {
            Transport::Oci { dir, tag } => layout::oci_dir(dir, tag.as_deref(), platform),
            Transport::OciArchive { path, tag } => {
                layout::oci_archive(path, tag.as_deref(), platform)
            }
            Transport::DockerArchive { path, reference } => {
                layout::docker_archive(path, reference.as_deref(), platform)
            }
            Transport::Registry(reference) => registry::image(reference, access, platform),
        }
    }
}

/// `PATH[:TAG]` where a tag has no `/` (so a path may hold `:`).
fn path_and_tag(text: &str) -> (PathBuf, Option<String>) {
    match text.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') && !path.is_empty() => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(text), None),
    }
}

impl SourceRef {
    pub fn parse(text: &str) -> Result<SourceRef> {
        if let Some(path) = text.strip_prefix("rootfs:") {
            if path.is_empty() {
                bail!("`rootfs:` needs a path, e.g. rootfs:/tmp/root.tar");
            }
            return Ok(SourceRef::Tarball(PathBuf::from(path)));
        }
        let layers = |t: Transport| Ok(SourceRef::Layers(t));
        let needs = |what: &str| {
            anyhow::anyhow!("`{text}` names no {what}; e.g. {}", match what {
            "directory" => "oci:/tmp/debian-layout:latest",
            "archive" => "oci-archive:/tmp/debian.tar or docker-archive:/tmp/debian.tar:debian:latest",
            _ => "docker://registry.example:5000/debian:latest",
        })
        };
        if let Some(rest) = text.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(needs("image"));
            }
            return layers(Transport::Registry(rest.to_string()));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = path_and_tag(rest);
            if rest.is_empty() {
                return Err(needs("directory"));
            }
            return layers(Transport::Oci { dir, tag });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (path, tag) = path_and_tag(rest);
            if rest.is_empty() {
                return Err(needs("archive"));
            }
            return layers(Transport::OciArchive { path, tag });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            // The reference may hold `:` (debian:latest), a path rarely does: split at the first.
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => (PathBuf::from(p), Some(r.to_string())),
                _ => (PathBuf::from(rest.trim_end_matches(':')), None),
            };
            if rest.is_empty() {
                return Err(needs("archive"));
            }
            return layers(Transport::DockerArchive { path, reference });
        }
        let image = text.strip_prefix("docker:").unwrap_or(text);
        if image.is_empty() || image.contains(char::is_whitespace) {
            bail!("`{text}` is not an image reference (e.g. debian:latest), rootfs:PATH, oci:DIR, oci-archive:PATH, docker-archive:PATH or docker://REF");
        }
        Ok(SourceRef::Image(image.to_string()))
    }
}

/// A blocking reader over chunks an async task sends (an engine's export, a registry's blob):
/// the stream edit reads synchronously.
pub struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    pub fn new(rx: std::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk?,
                Err(_) => return Ok(0), // the sender finished: end of stream
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// When to pull an image from its registry.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// An image as a source found it.
#[derive(Debug, Clone, Default)]
pub struct ImageDetails {
    pub id: String,
    pub os: String,
    pub architecture: String,
    /// Bytes of its root filesystem, for progress and placing the workspace.
    pub size: u64,
    pub config: ImageConfig,
    /// Its layers' diff IDs (digests of their uncompressed tars), bottom first.
    pub diff_ids: Vec<String>,
}

impl ImageDetails {
    /// What the image holds, whatever carried it: its diff IDs. (Its ID is its config's digest,
    /// which changes when skopeo or a registry rewrites the config between formats.)
    pub fn content_id(&self) -> String {
        match self.diff_ids.is_empty() {
            true => self.id.clone(),
            false => format!("layers {}", self.diff_ids.join(",")),
        }
    }

    /// The architecture the disk is for: the image's, which must be Linux on one c2vm boots
    /// and, with `--platform`, the one asked for.
    pub fn check_platform(&self, reference: &str, wanted: Option<Arch>) -> Result<Arch> {
        let arch = Arch::from_oci(&self.architecture).filter(|_| self.os == "linux");
        match (arch, wanted) {
            (Some(arch), None) => Ok(arch),
            (Some(arch), Some(wanted)) if arch == wanted => Ok(arch),
            (Some(arch), Some(wanted)) => bail!(
                "{reference} is a {} image, not {}: give --platform {} or an image for {}",
                arch.platform(),
                wanted.platform(),
                arch.platform(),
                wanted.platform()
            ),
            (None, _) => bail!(
                "{reference} is a {}/{} image; c2vm boots {}",
                self.os,
                self.architecture,
                Arch::ALL.map(Arch::platform).join(" and ")
            ),
        }
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
        let parse = |t: &str| SourceRef::parse(t).unwrap();
        assert!(
            matches!(parse("docker://127.0.0.1:5000/a/b:1"), SourceRef::Layers(Transport::Registry(r)) if r == "127.0.0.1:5000/a/b:1")
        );
        assert!(
            matches!(parse("oci:/l:v1"), SourceRef::Layers(Transport::Oci { dir, tag }) if dir == std::path::Path::new("/l") && tag.as_deref() == Some("v1"))
        );
        assert!(
            matches!(parse("oci:/a:b/l"), SourceRef::Layers(Transport::Oci { dir, tag: None }) if dir == std::path::Path::new("/a:b/l"))
        );
        assert!(matches!(
            parse("oci-archive:x.tar"),
            SourceRef::Layers(Transport::OciArchive { tag: None, .. })
        ));
        assert!(
            matches!(parse("docker-archive:d.tar:debian:latest"), SourceRef::Layers(Transport::DockerArchive { path, reference }) if path == std::path::Path::new("d.tar") && reference.as_deref() == Some("debian:latest"))
        );
        let err = |t: &str| SourceRef::parse(t).unwrap_err().to_string();
        assert!(
            err("oci:").contains("names no directory"),
            "{}",
            err("oci:")
        );
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
