//! `--containerdisk REF`: the finished disk wrapped as KubeVirt takes a containerDisk, a
//! `FROM scratch` image whose one layer holds `disk/NAME`, owned by uid and gid 107 (the qemu
//! user of KubeVirt's virt-launcher) and readable by it, and nothing else. It goes where REF
//! says: into the engine by name, or with no engine to an OCI layout, an OCI archive, or a
//! registry (`docker://REF`, or a plain name with `--push`). The disk's SBOM and provenance go
//! with it as OCI referrers: artifacts whose `subject` is the containerDisk's manifest, the way
//! `oras attach` and `cosign attest` store them, so existing tools find them.
use crate::arch::Arch;
use crate::source::docker::Engine;
use crate::source::oci;
use crate::source::registry::{self, Access, ReferrerUpload, Upload};
use crate::source::{SourceRef, Transport};
use anyhow::{bail, Context, Result};
use sha2::Digest as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// KubeVirt's virt-launcher runs QEMU as uid and gid 107.
const QEMU_ID: u64 = 107;

/// Where the containerDisk goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Loaded into the engine under this name.
    Engine(String),
    /// An OCI image layout (made, or added to), under a tag.
    Oci { dir: PathBuf, tag: String },
    /// That layout as a tar file.
    OciArchive { path: PathBuf, tag: String },
    /// Pushed to a registry.
    Registry(String),
}

impl Destination {
    /// skopeo's names, as the sources take them; a plain name is the engine's, or the
    /// registry's with `--push`.
    pub fn parse(text: &str, push: bool) -> Result<Destination> {
        let tag = |t: Option<String>| t.unwrap_or_else(|| "latest".to_string());
        Ok(match SourceRef::parse(text)? {
            SourceRef::Image(name) if push => Destination::Registry(name),
            SourceRef::Image(name) => Destination::Engine(name),
            SourceRef::Layers(Transport::Registry(r)) => Destination::Registry(r),
            SourceRef::Layers(Transport::Oci { dir, tag: t }) => Destination::Oci { dir, tag: tag(t) },
            SourceRef::Layers(Transport::OciArchive { path, tag: t }) => {
                Destination::OciArchive { path, tag: tag(t) }
            }
            SourceRef::Layers(Transport::DockerArchive { .. }) | SourceRef::Tarball(_) => bail!(
                "--containerdisk {text}: c2vm writes containerDisks to an engine (NAME), oci:DIR[:TAG], oci-archive:PATH[:TAG] or docker://REF"
            ),
        })
    }

    /// Whether writing there needs the engine.
    pub fn needs_engine(&self) -> bool {
        matches!(self, Destination::Engine(_))
    }
}

/// A file that goes with the containerDisk as a referrer.
pub struct Attachment {
    /// Where it is now (under its temporary name until the disk is committed).
    pub path: PathBuf,
    /// Its media type, which is the artifact's type too: `application/spdx+json`, …
    pub media_type: &'static str,
    /// Its final file name: the layer's title.
    pub title: String,
}

/// OCI 1.1's empty config (`{}`), which artifacts with no config of their own name.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One attachment as an artifact: its manifest (with the containerDisk's as `subject`) and
/// the file's bytes and digest.
struct Referrer {
    manifest: Vec<u8>,
    data: Vec<u8>,
    digest: String,
    artifact_type: &'static str,
}

impl Referrer {
    fn new(attachment: &Attachment, subject: &[u8], created: &str) -> Result<Referrer> {
        let data = std::fs::read(&attachment.path)
            .with_context(|| format!("reading {}", attachment.path.display()))?;
        let digest = oci::digest_of(&data);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": attachment.media_type,
            "config": {
                "mediaType": EMPTY_CONFIG_TYPE,
                "digest": oci::digest_of(EMPTY_CONFIG),
                "size": EMPTY_CONFIG.len(),
                "data": "e30=",
            },
            "layers": [{
                "mediaType": attachment.media_type,
                "digest": digest,
                "size": data.len(),
                "annotations": { "org.opencontainers.image.title": attachment.title },
            }],
            "subject": {
                "mediaType": MANIFEST_TYPE,
                "digest": oci::digest_of(subject),
                "size": subject.len(),
            },
            "annotations": { "org.opencontainers.image.created": created },
        }))?;
        Ok(Referrer {
            manifest,
            data,
            digest,
            artifact_type: attachment.media_type,
        })
    }

    /// Its blobs and manifest in the layout at `dir`, and its entry for the index.
    fn write_to_layout(&self, dir: &Path) -> Result<serde_json::Value> {
        for (digest, data) in [
            (oci::digest_of(EMPTY_CONFIG), EMPTY_CONFIG),
            (self.digest.clone(), self.data.as_slice()),
            (oci::digest_of(&self.manifest), self.manifest.as_slice()),
        ] {
            let path = dir.join(oci::blob_path(&digest)?);
            std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "digest": oci::digest_of(&self.manifest),
            "size": self.manifest.len(),
            "artifactType": self.artifact_type,
        }))
    }

    fn upload(&self) -> ReferrerUpload<'_> {
        ReferrerUpload {
            manifest: &self.manifest,
            blobs: vec![
                (EMPTY_CONFIG, oci::digest_of(EMPTY_CONFIG)),
                (&self.data, self.digest.clone()),
            ],
            artifact_type: self.artifact_type,
        }
    }
}

/// What the labels say the disk came from.
pub struct Origin<'a> {
    pub source: &'a str,
    pub digest: &'a str,
    pub kernel: &'a str,
    /// The VM's architecture: KubeVirt pulls a containerDisk for its node's.
    pub arch: Arch,
}

/// Wrap `disk` (to be named `name` in the image) and send it to `dest`; `scratch` holds the
/// layer on its way. Returns where the image went, for the report.
#[allow(clippy::too_many_arguments)]
pub fn package(
    disk: &Path,
    name: &str,
    dest: &Destination,
    origin: &Origin,
    access: &Access,
    engine: Option<&Engine>,
    scratch: &Path,
    epoch: Option<i64>,
    attachments: &[Attachment],
) -> Result<String> {
    let mtime = epoch
        .map(|e| e.max(0) as u64)
        .unwrap_or_else(crate::units::unix_now);
    let layer = scratch.join("containerdisk-layer.tar");
    let (layer_digest, layer_size) = write_layer(disk, name, &layer, mtime)?;
    let (config, config_digest, manifest) = image_json(origin, name, &layer_digest, layer_size)?;
    let created = crate::units::rfc3339(mtime);
    let referrers = (attachments.iter())
        .map(|a| Referrer::new(a, &manifest, &created))
        .collect::<Result<Vec<_>>>()?;
    let image = Image {
        manifest: &manifest,
        config: &config,
        config_digest: &config_digest,
        layer: &layer,
        layer_digest: &layer_digest,
        referrers: &referrers,
    };
    let said = match dest {
        Destination::Engine(reference) => {
            let engine =
                engine.context("--containerdisk NAME loads into an engine, and there is none")?;
            let archive = scratch.join("containerdisk-load.tar");
            // docker load wants a tag.
            let last = reference.rsplit('/').next().unwrap_or(reference);
            let reference = match last.contains(':') {
                true => reference.clone(),
                false => format!("{reference}:latest"),
            };
            image.docker_archive(&archive, &reference)?;
            engine.load(&archive, &format!("the containerDisk {reference}"))?;
            std::fs::remove_file(&archive).ok();
            if !referrers.is_empty() {
                crate::progress::note("Note: the SBOM and provenance are not attached to the containerDisk: an engine's image store keeps no referrers (they go with it to an OCI layout or a registry)");
            }
            format!("{reference} in the engine")
        }
        Destination::Oci { dir, tag } => {
            image.oci_layout(dir, tag)?;
            format!("oci:{}:{tag}", dir.display())
        }
        Destination::OciArchive { path, tag } => {
            let layout = scratch.join("containerdisk-layout");
            image.oci_layout(&layout, tag)?;
            let pending = crate::output::PendingOutput::new(path)?;
            tar_dir(&layout, pending.path())?;
            pending.commit(true)?;
            format!("oci-archive:{}:{tag}", path.display())
        }
        Destination::Registry(reference) => {
            let digest = registry::push(
                reference,
                access,
                &Upload {
                    manifest: &manifest,
                    config: (&config, &config_digest),
                    layers: &[(&layer, &layer_digest)],
                    referrers: referrers.iter().map(Referrer::upload).collect(),
                },
            )?;
            format!("docker://{reference} ({digest})")
        }
    };
    std::fs::remove_file(&layer).ok();
    Ok(said)
}

/// The containerDisk's config (its labels) and manifest: (config, its digest, manifest).
fn image_json(
    origin: &Origin,
    name: &str,
    layer_digest: &str,
    layer_size: u64,
) -> Result<(Vec<u8>, String, Vec<u8>)> {
    let labels = serde_json::json!({
        "io.c2vm.source": origin.source,
        "io.c2vm.source.digest": origin.digest,
        "io.c2vm.version": env!("CARGO_PKG_VERSION"),
        "io.c2vm.kernel": origin.kernel,
        "org.opencontainers.image.title": name,
    });
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": origin.arch.name(),
        "os": "linux",
        "config": { "Labels": labels },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": format!("c2vm {}: KubeVirt containerDisk", env!("CARGO_PKG_VERSION")) }],
    }))?;
    let config_digest = oci::digest_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        // Uncompressed: the qcow2's clusters are compressed already.
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    }))?;
    Ok((config, config_digest, manifest))
}

/// The one layer: `disk/` and `disk/NAME`, 107:107, the file readable by its owner and group
/// only. Returns its digest and size.
fn write_layer(disk: &Path, name: &str, layer: &Path, mtime: u64) -> Result<(String, u64)> {
    let file =
        std::fs::File::create(layer).with_context(|| format!("creating {}", layer.display()))?;
    let mut builder = tar::Builder::new(Hashing::new(std::io::BufWriter::with_capacity(
        1 << 20,
        file,
    )));
    let header = |kind, mode, size| {
        let owner = crate::tar_rules::Stat {
            mode,
            uid: QEMU_ID,
            gid: QEMU_ID,
            mtime,
        };
        crate::tar_rules::header(kind, &owner, size)
    };
    let mut data =
        std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let size = data
        .metadata()
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    let write = || -> std::io::Result<Hashing<_>> {
        let mut dir = header(tar::EntryType::Directory, 0o555, 0);
        builder.append_data(&mut dir, "disk/", std::io::empty())?;
        let mut file = header(tar::EntryType::Regular, 0o440, size);
        builder.append_data(&mut file, format!("disk/{name}"), &mut data)?;
        let mut hashing = builder.into_inner()?;
        hashing.flush()?;
        Ok(hashing)
    };
    let hashing = write().with_context(|| format!("writing {}", layer.display()))?;
    Ok((
        format!("sha256:{:x}", hashing.hasher.finalize()),
        hashing.count,
    ))
}

/// A writer that hashes and counts what passes.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The image's parts, ready to be laid out.
struct Image<'a> {
    manifest: &'a [u8],
    config: &'a [u8],
    config_digest: &'a str,
    layer: &'a Path,
    layer_digest: &'a str,
    referrers: &'a [Referrer],
}

impl Image<'_> {
    fn blobs(&self, root: &Path) -> Result<()> {
        let put = |digest: &str, write: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
            let path = root.join(oci::blob_path(digest)?);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write(&path)
        };
        put(&oci::digest_of(self.manifest), &|p| {
            Ok(std::fs::write(p, self.manifest)?)
        })?;
        put(self.config_digest, &|p| Ok(std::fs::write(p, self.config)?))?;
        put(self.layer_digest, &|p| {
            std::fs::copy(self.layer, p).with_context(|| format!("writing {}", p.display()))?;
            Ok(())
        })
    }

    /// An OCI layout at `dir`: made, or the tag added to (replacing an image of that tag).
    fn oci_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let index_path = dir.join("index.json");
        let mut index = read_index(&index_path)?;
        self.blobs(dir)?;
        let entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": oci::digest_of(self.manifest),
            "size": self.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        });
        let manifests = index["manifests"]
            .as_array_mut()
            .with_context(|| format!("{} has no manifests list", index_path.display()))?;
        manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        manifests.push(entry);
        // The referrers: untagged, found by their subject (and listed with their type).
        for referrer in self.referrers {
            let entry = referrer.write_to_layout(dir)?;
            manifests.retain(|m| m["digest"] != entry["digest"]);
            manifests.push(entry);
        }
        std::fs::write(&index_path, serde_json::to_vec(&index)?)
            .with_context(|| format!("writing {}", index_path.display()))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}", dir.display()))?;
        Ok(())
    }

    /// What `docker load` takes: `manifest.json` naming the config and the layer, in an OCI
    /// layout's blobs (as Docker 25+ saves).
    fn docker_archive(&self, path: &Path, reference: &str) -> Result<()> {
        let root = path.with_extension("d");
        self.blobs(&root)?;
        let manifest = serde_json::json!([{
            "Config": oci::blob_path(self.config_digest)?,
            "RepoTags": [reference],
            "Layers": [oci::blob_path(self.layer_digest)?],
        }]);
        std::fs::write(root.join("manifest.json"), serde_json::to_vec(&manifest)?)
            .with_context(|| format!("writing {}", root.display()))?;
        tar_dir(&root, path)?;
        std::fs::remove_dir_all(&root).ok();
        Ok(())
    }
}

/// The OCI layout's index at `path`, or an empty one when there is none yet. Only "not found"
/// means none: any other failure (permission, a directory) is reported, since rewriting the
/// index would drop the tags it holds.
fn read_index(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an OCI index", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(serde_json::json!({ "schemaVersion": 2, "manifests": [] }))
        }
        Err(e) => Err(e).with_context(|| format!("reading the OCI index {}", path.display())),
    }
}

/// `dir`'s contents as the tar archive `path` (names relative to `dir`).
fn tar_dir(dir: &Path, path: &Path) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut archive = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(path)?));
        archive.append_dir_all(".", dir)?;
        archive.into_inner()?.flush()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_take_skopeos_names() {
        assert!(
            matches!(Destination::parse("vms/debian:13", false).unwrap(), Destination::Engine(n) if n == "vms/debian:13")
        );
        assert!(
            matches!(Destination::parse("reg.example/vms/debian:13", true).unwrap(), Destination::Registry(n) if n == "reg.example/vms/debian:13")
        );
        assert!(matches!(
            Destination::parse("docker://reg.example/d", false).unwrap(),
            Destination::Registry(_)
        ));
        assert!(
            matches!(Destination::parse("oci:/l", false).unwrap(), Destination::Oci { tag, .. } if tag == "latest")
        );
        assert!(
            matches!(Destination::parse("oci-archive:/a.tar:v2", false).unwrap(), Destination::OciArchive { tag, .. } if tag == "v2")
        );
        let err = Destination::parse("docker-archive:/x.tar", false).unwrap_err();
        assert!(
            err.to_string().contains("c2vm writes containerDisks to"),
            "{err}"
        );
        assert!(Destination::parse("vms/debian", false)
            .unwrap()
            .needs_engine());
    }

    #[test]
    fn unreadable_oci_index_is_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer.tar");
        std::fs::write(&layer, b"layer").unwrap();
        let layout = tmp.path().join("layout");
        // index.json that cannot be read as a file: an error, not an empty index written over it.
        std::fs::create_dir_all(layout.join("index.json")).unwrap();
        let image = Image {
            manifest: b"{}",
            config: b"{}",
            config_digest: &oci::digest_of(b"{}"),
            layer: &layer,
            layer_digest: &oci::digest_of(b"layer"),
            referrers: &[],
        };
        let err = image.oci_layout(&layout, "v1").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("reading the OCI index"), "{msg}");
        assert!(
            msg.contains(&layout.join("index.json").display().to_string()),
            "{msg}"
        );
        assert!(layout.join("index.json").is_dir());
        // A missing index is a new layout.
        let fresh = tmp.path().join("fresh");
        image.oci_layout(&fresh, "v1").unwrap();
        let index = read_index(&fresh.join("index.json")).unwrap();
        assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    }
}
