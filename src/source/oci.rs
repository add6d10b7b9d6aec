//! The OCI image model shared by every engine-less source: an index (or Docker manifest list)
//! picks a manifest by platform, the manifest names the config and the layers, the config gives
//! what the VM runs. Types and parsing are the `oci-spec` crate's (the containers ecosystem's
//! Rust types for the image spec); this module only chooses and checks.
use super::layers::{BlobStore, Compression, Layer, LayeredImage};
use super::ImageDetails;
use crate::arch::Arch;
use crate::image::ImageConfig;
use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::Digest as _;
use std::sync::Arc;

/// The largest manifest, index or config c2vm reads (they are a few KiB).
pub const JSON_LIMIT: u64 = 8 << 20;

/// Where manifests and small blobs come from (registries serve the two from different places).
pub trait Fetch {
    /// A manifest or index by digest, checked against it.
    fn manifest(&self, digest: &str) -> Result<Vec<u8>>;
    /// A small blob (the config) by digest, checked against it.
    fn blob(&self, digest: &str) -> Result<Vec<u8>>;
    /// Where layers are read from.
    fn store(&self) -> Arc<dyn BlobStore>;
    /// A layer blob's location in that store.
    fn layer_location(&self, digest: &str) -> String;
}

/// Which image of an index to take: `--platform`'s, else the only image there is, else the
/// host's (as `docker pull` chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted(pub Option<Arch>);

impl Wanted {
    /// The architecture an index with several images is read for.
    fn target(self) -> Arch {
        self.0.unwrap_or_else(Arch::host_or_default)
    }

    fn matches(self, other: &oci_spec::image::Platform) -> bool {
        other.os().to_string() == "linux"
            && Arch::from_oci(&other.architecture().to_string()) == Some(self.target())
    }
}

fn show_platform(p: &Option<oci_spec::image::Platform>) -> String {
    match p {
        Some(p) => match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        },
        None => "unknown".to_string(),
    }
}

/// Whether a manifest's JSON is an index (or manifest list) rather than an image manifest.
pub fn is_index(json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(json).is_ok_and(|p| p.manifests.is_some())
}

/// The entry of `index` for `platform`; `what` names the index in messages.
pub fn pick_platform<'i>(
    index: &'i [Descriptor],
    wanted: Wanted,
    what: &str,
) -> Result<&'i Descriptor> {
    // Attestations (buildx's `unknown/unknown` entries) are never images to boot.
    let images: Vec<&Descriptor> = index
        .iter()
        .filter(|d| {
            d.platform()
                .as_ref()
                .is_none_or(|p| p.os().to_string() != "unknown")
        })
        .collect();
    if let Some(found) = images
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| wanted.matches(p)))
    {
        return Ok(found);
    }
    if let [only] = images.as_slice() {
        // No platform said: the config says, and is checked. With no --platform, the only
        // image is the one to take, whatever its architecture.
        if only.platform().is_none() || wanted.0.is_none() {
            return Ok(only);
        }
    }
    let platform = wanted.target().platform();
    let have: Vec<String> = images.iter().map(|d| show_platform(d.platform())).collect();
    bail!(
        "{what} has no {platform} image (it has {}); choose one with --platform",
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    )
}

/// The sha256 digest of `bytes`, as OCI writes it.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Check `bytes` against `digest` (`sha256:…` or `sha512:…`).
pub fn verify(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let actual = match digest.split_once(':') {
        Some(("sha256", _)) => format!("sha256:{:x}", sha2::Sha256::digest(bytes)),
        Some(("sha512", _)) => format!("sha512:{:x}", sha2::Sha512::digest(bytes)),
        _ => bail!("`{digest}` is not a digest c2vm can check (sha256 or sha512)"),
    };
    if actual != digest {
        bail!("{what} does not match its digest (expected {digest}, got {actual}): the image is damaged or was tampered with; fetch it again");
    }
    Ok(())
}

/// The digest's hex, checked to be hex: it becomes a file name.
pub fn blob_path(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some((alg @ ("sha256" | "sha512"), hex))
            if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(format!("blobs/{alg}/{hex}"))
        }
        _ => bail!("`{digest}` is not a digest c2vm can use (sha256 or sha512)"),
    }
}

/// The image a manifest or index (`json`) names, for `platform`.
pub fn resolve(fetch: &dyn Fetch, json: &[u8], wanted: Wanted, what: &str) -> Result<LayeredImage> {
    let mut json = json.to_vec();
    let mut said = None;
    for _ in 0..4 {
        if !is_index(&json) {
            let image = image_of(fetch, &json, what)?;
            check_index_said(said.as_ref(), &image.details, what)?;
            return Ok(image);
        }
        let index = ImageIndex::from_reader(json.as_slice())
            .map_err(|e| anyhow!("{what}: its index is not valid ({e})"))?;
        let entry = pick_platform(index.manifests(), wanted, what)?;
        said = entry.platform().clone();
        json = fetch.manifest(entry.digest().as_ref())?;
    }
    bail!("{what}: indexes nest too deep")
}

/// An index entry's platform is a claim about the image it names: its config must agree, or the
/// architecture c2vm would boot is not the one the index was picked by.
pub fn check_index_said(
    said: Option<&oci_spec::image::Platform>,
    image: &ImageDetails,
    what: &str,
) -> Result<()> {
    let Some(said) = said else {
        return Ok(());
    };
    let arch = |name: &str| Arch::from_oci(name).map_or(name.to_string(), |a| a.name().to_string());
    if said.os().to_string() != image.os
        || arch(&said.architecture().to_string()) != arch(&image.architecture)
    {
        bail!(
            "{what}: its index says {}, and the image's config says {}/{}; the index is wrong or was edited",
            show_platform(&Some(said.clone())),
            image.os,
            image.architecture
        );
    }
    Ok(())
}

/// The image of a manifest: config read and checked, layers listed.
fn image_of(fetch: &dyn Fetch, json: &[u8], what: &str) -> Result<LayeredImage> {
    let manifest = ImageManifest::from_reader(json)
        .map_err(|e| anyhow!("{what}: its manifest is not valid ({e})"))?;
    let config_digest = manifest.config().digest().to_string();
    let config = fetch
        .blob(&config_digest)
        .with_context(|| format!("reading the config of {what}"))?;
    let config = ImageConfiguration::from_reader(config.as_slice())
        .map_err(|e| anyhow!("{what}: its config is not valid ({e})"))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        bail!(
            "{what}: the manifest has {} layers and the config {}; the image is damaged",
            manifest.layers().len(),
            diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (n, (layer, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let media_type = layer.media_type().to_string();
        let compression = Compression::of_media_type(&media_type).ok_or_else(|| {
            anyhow!("layer {} of {what} has media type `{media_type}`, which is not a filesystem layer c2vm reads (tar, tar+gzip, tar+zstd)", n + 1)
        })?;
        let digest = layer.digest().to_string();
        blob_path(&digest)?;
        layers.push(Layer {
            location: fetch.layer_location(&digest),
            digest: Some(digest),
            diff_id: Some(diff_id.clone()),
            size: Some(layer.size()),
            compression,
        });
    }
    Ok(LayeredImage {
        details: details_of(&config, &config_digest),
        layers,
        store: fetch.store(),
    })
}

/// What an image config says, as the engines report it.
pub fn details_of(config: &ImageConfiguration, id: &str) -> ImageDetails {
    let c = config.config().clone().unwrap_or_default();
    let sorted = |v: &Option<Vec<String>>| {
        let mut v = v.clone().unwrap_or_default();
        v.sort(); // maps in the JSON: the engines report them sorted
        v
    };
    ImageDetails {
        id: id.to_string(),
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        size: 0,
        diff_ids: config.rootfs().diff_ids().clone(),
        config: ImageConfig {
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            exposed_ports: sorted(c.exposed_ports()),
            volumes: sorted(c.volumes()),
            stop_signal: c.stop_signal().clone().unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_are_hex_only() {
        assert_eq!(blob_path("sha256:ab12").unwrap(), "blobs/sha256/ab12");
        assert!(blob_path("sha256:../../etc").is_err());
        assert!(blob_path("md5:ab").is_err());
    }

    #[test]
    fn a_missing_platform_names_the_ones_there() {
        let index: ImageIndex = serde_json::from_str(
            r#"{"schemaVersion":2,"manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","platform":{"os":"linux","architecture":"arm64"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","platform":{"os":"unknown","architecture":"unknown"}}]}"#,
        )
        .unwrap();
        let amd64 = Wanted(Some(Arch::Amd64));
        let err = pick_platform(index.manifests(), amd64, "x").unwrap_err();
        assert!(
            err.to_string()
                .contains("has no linux/amd64 image (it has linux/arm64)"),
            "{err}"
        );
        // With no --platform, the only image is taken, whatever its architecture.
        for wanted in [Wanted(Some(Arch::Arm64)), Wanted(None)] {
            assert_eq!(
                pick_platform(index.manifests(), wanted, "x")
                    .unwrap()
                    .digest()
                    .to_string(),
                format!("sha256:{}", "a".repeat(64))
            );
        }
    }
}
