//! Images as files, with skopeo's transport names: `oci:DIR[:TAG]` (an OCI image layout),
//! `oci-archive:PATH[:TAG]` (that layout as a tar) and `docker-archive:PATH[:REF]` (what
//! `docker save` writes: `manifest.json` beside the config and layers, in the legacy layout or
//! inside the OCI layout newer Dockers write). Archives are never unpacked: c2vm indexes the
//! tar once and reads each blob where it lies.
use super::layers::{BlobStore, Compression, Layer, LayeredImage};
use super::oci::{self, Fetch, Wanted, JSON_LIMIT};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files of a layout, by path inside it.
trait Files: BlobStore {
    fn exists(&self, path: &str) -> bool;
    /// Its size, where cheap to know.
    fn size(&self, path: &str) -> Option<u64> {
        self.place(path).map(|p| p.2)
    }
    /// The file holding it, its offset there and its size.
    fn place(&self, path: &str) -> Option<(PathBuf, u64, u64)>;
    fn read_small(&self, path: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open(path)?
            .take(JSON_LIMIT + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {path} in {}", self.name()))?;
        if data.len() as u64 > JSON_LIMIT {
            bail!(
                "{path} in {} is too large to be image metadata",
                self.name()
            );
        }
        Ok(data)
    }
}

/// `oci:DIR`.
struct Dir {
    root: PathBuf,
    name: String,
}

impl Dir {
    fn path(&self, path: &str) -> Result<PathBuf> {
        if path.split('/').any(|p| p == ".." || p.is_empty()) {
            bail!("`{path}` is not a path inside {}", self.name);
        }
        Ok(self.root.join(path))
    }
}

impl BlobStore for Dir {
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let full = self.path(path)?;
        match File::open(&full) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "{} has no {path}: the layout is incomplete; copy the image again",
                    self.name
                )
            }
            Err(e) => Err(e).with_context(|| format!("opening {}", full.display())),
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Files for Dir {
    fn exists(&self, path: &str) -> bool {
        self.path(path).is_ok_and(|p| p.is_file())
    }
    fn place(&self, path: &str) -> Option<(PathBuf, u64, u64)> {
        let full = self.path(path).ok()?;
        let size = full.metadata().ok()?.len();
        Some((full, 0, size))
    }
}

/// A tar archive of a layout: an index of its members, each read in place.
struct Archive {
    path: PathBuf,
    name: String,
    /// Member → (offset of its data, size).
    members: HashMap<String, (u64, u64)>,
}

fn member_key(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Archive {
    fn index(path: &Path, name: String) -> Result<Archive> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        if file.metadata()?.is_dir() {
            bail!(
                "{} is a directory; {name} takes a tar file (oci: takes a directory)",
                path.display()
            );
        }
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut members = HashMap::new();
        let mut links = Vec::new();
        let not_tar = |e: &dyn std::fmt::Display| {
            anyhow!("{} is not a readable tar archive ({e}); give the file `docker save` or `skopeo copy` wrote", path.display())
        };
        for entry in archive.entries_with_seek().map_err(|e| not_tar(&e))? {
            let entry = entry.map_err(|e| not_tar(&e))?;
            let member = member_key(&String::from_utf8_lossy(&entry.path_bytes()));
            match entry.header().entry_type() {
                t if t.is_file() => {
                    members.insert(member, (entry.raw_file_position(), entry.size()));
                }
                // `docker save` links a layer that two images share.
                t if t.is_symlink() || t.is_hard_link() => {
                    let target =
                        String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default())
                            .into_owned();
                    let target = match t.is_symlink() {
                        true => member_key(&format!(
                            "{}/{target}",
                            member.rsplit_once('/').map_or("", |p| p.0)
                        )),
                        false => member_key(&target),
                    };
                    links.push((member, target));
                }
                _ => {}
            }
        }
        for (member, target) in links {
            // `a/../b` after joining: resolve `..` within the archive only.
            let mut parts: Vec<&str> = Vec::new();
            for p in target.split('/') {
                match p {
                    ".." => {
                        parts.pop();
                    }
                    p => parts.push(p),
                }
            }
            if let Some(found) = members.get(&parts.join("/")).copied() {
                members.insert(member, found);
            }
        }
        if members.is_empty() {
            bail!(
                "{} holds no files; give the file `docker save` or `skopeo copy` wrote",
                path.display()
            );
        }
        Ok(Archive {
            path: path.to_path_buf(),
            name,
            members,
        })
    }
}

impl BlobStore for Archive {
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let Some(&(offset, size)) = self.members.get(&member_key(path)) else {
            bail!(
                "{} has no {path}: the archive is incomplete; save or copy the image again",
                self.name
            );
        };
        let mut file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        file.seek(SeekFrom::Start(offset))
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(Box::new(file.take(size)))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Files for Archive {
    fn exists(&self, path: &str) -> bool {
        self.members.contains_key(&member_key(path))
    }
    fn place(&self, path: &str) -> Option<(PathBuf, u64, u64)> {
        let &(offset, size) = self.members.get(&member_key(path))?;
        Some((self.path.clone(), offset, size))
    }
}

/// An OCI layout's blobs, through [`Fetch`].
struct LayoutFetch(Arc<dyn Files>);

impl LayoutFetch {
    fn read(&self, digest: &str, what: &str) -> Result<Vec<u8>> {
        let data = self.0.read_small(&oci::blob_path(digest)?)?;
        oci::verify(
            &data,
            digest,
            &format!("the {what} {digest} in {}", self.0.name()),
        )?;
        Ok(data)
    }
}

impl Fetch for LayoutFetch {
    fn manifest(&self, digest: &str) -> Result<Vec<u8>> {
        self.read(digest, "manifest")
    }
    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        self.read(digest, "blob")
    }
    fn store(&self) -> Arc<dyn BlobStore> {
        Arc::new(Shared(self.0.clone()))
    }
    fn layer_location(&self, digest: &str) -> String {
        oci::blob_path(digest).unwrap_or_default()
    }
}

/// An `Arc<dyn Files>` as a plain blob store.
struct Shared(Arc<dyn Files>);

impl BlobStore for Shared {
    fn open(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        self.0.open(path)
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn tail(&self, path: &str, n: u64) -> Option<Vec<u8>> {
        let (file, offset, size) = self.0.place(path)?;
        let mut file = File::open(file).ok()?;
        file.seek(SeekFrom::Start(offset + size.checked_sub(n)?))
            .ok()?;
        let mut tail = Vec::new();
        file.take(n).read_to_end(&mut tail).ok()?;
        Some(tail)
    }
}

/// `oci:DIR[:TAG]`.
pub fn oci_dir(dir: &Path, tag: Option<&str>, wanted: Wanted) -> Result<LayeredImage> {
    if !dir.is_dir() {
        bail!("{} is not a directory; oci: takes an OCI image layout directory (oci-archive: takes its tar)", dir.display());
    }
    let files = Arc::new(Dir {
        root: dir.to_path_buf(),
        name: format!("oci:{}", dir.display()),
    });
    from_oci_layout(files, tag, wanted)
}

/// `oci-archive:PATH[:TAG]`.
pub fn oci_archive(path: &Path, tag: Option<&str>, wanted: Wanted) -> Result<LayeredImage> {
    let files = Arc::new(Archive::index(
        path,
        format!("oci-archive:{}", path.display()),
    )?);
    from_oci_layout(files, tag, wanted)
}

/// The image an OCI layout's `index.json` names: by tag (`org.opencontainers.image.ref.name`),
/// or the only one, then by platform.
fn from_oci_layout(
    files: Arc<dyn Files>,
    tag: Option<&str>,
    wanted: Wanted,
) -> Result<LayeredImage> {
    let name = files.name();
    if !files.exists("index.json") {
        bail!("{name} has no index.json: it is not an OCI image layout");
    }
    let index = files.read_small("index.json")?;
    let index = oci_spec::image::ImageIndex::from_reader(index.as_slice())
        .map_err(|e| anyhow!("{name}: index.json is not valid ({e})"))?;
    let ref_name = |d: &oci_spec::image::Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned())
    };
    let tags: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
    let candidates: Vec<oci_spec::image::Descriptor> = match tag {
        Some(tag) => index
            .manifests()
            .iter()
            .filter(|d| ref_name(d).as_deref() == Some(tag))
            .cloned()
            .collect(),
        None => index.manifests().clone(),
    };
    let what = match tag {
        Some(t) => format!("{name}:{t}"),
        None => name.clone(),
    };
    let fetch = LayoutFetch(files);
    let entry = match candidates.as_slice() {
        [] if tag.is_some() => return Err(not_named(&name, "tagged ", tag, &tags)),
        [] => bail!("{name} holds no image"),
        [one] if one.platform().is_some() => {
            oci::pick_platform(std::slice::from_ref(one), wanted, &what)?.clone()
        }
        [one] => one.clone(),
        // Several: one image per platform, or several images (then a tag must choose).
        many if many.iter().all(|d| d.platform().is_some()) => {
            oci::pick_platform(many, wanted, &what)?.clone()
        }
        _ => bail!(
            "{name} holds {} images; name one as {name}:TAG (tags: {})",
            candidates.len(),
            tags.join(", ")
        ),
    };
    let json = fetch.manifest(entry.digest().as_ref())?;
    let image = oci::resolve(&fetch, &json, wanted, &what)?;
    oci::check_index_said(entry.platform().as_ref(), &image.details, &what)?;
    Ok(image)
}

/// `docker-archive:PATH[:REF]`.
pub fn docker_archive(
    path: &Path,
    reference: Option<&str>,
    wanted: Wanted,
) -> Result<LayeredImage> {
    let name = format!("docker-archive:{}", path.display());
    let files: Arc<dyn Files> = Arc::new(Archive::index(path, name.clone())?);
    if !files.exists("manifest.json") {
        if files.exists("index.json") {
            return from_oci_layout(files, reference, wanted);
        }
        bail!("{name} has no manifest.json: it is not what `docker save` writes");
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let manifest: Vec<Entry> = serde_json::from_slice(&files.read_small("manifest.json")?)
        .map_err(|e| anyhow!("{name}: manifest.json is not valid ({e})"))?;
    let tags: Vec<String> = manifest
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    let matches = |e: &&Entry| match reference {
        None => true,
        Some(r) => e.repo_tags.iter().flatten().any(|t| same_reference(t, r)),
    };
    let chosen: Vec<&Entry> = manifest.iter().filter(matches).collect();
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] if reference.is_some() => return Err(not_named(&name, "", reference, &tags)),
        [] => bail!("{name} holds no image"),
        _ => bail!(
            "{name} holds {} images; name one as {name}:REF (e.g. {})",
            chosen.len(),
            tags.first().cloned().unwrap_or_default()
        ),
    };
    let config_bytes = files.read_small(&entry.config)?;
    // The config's name is its digest: in the OCI layout `blobs/sha256/HEX`, in the legacy one
    // `HEX.json`.
    let hex = entry
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json");
    let id = format!("sha256:{hex}");
    oci::verify(&config_bytes, &id, &format!("the config of {name}"))?;
    let config = oci_spec::image::ImageConfiguration::from_reader(config_bytes.as_slice())
        .map_err(|e| anyhow!("{name}: its config is not valid ({e})"))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "{name}: manifest.json has {} layers and the config {}; the archive is damaged",
            entry.layers.len(),
            diff_ids.len()
        );
    }
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(location, diff_id)| {
            let Some(size) = files.size(location) else {
                bail!("{name} has no {location}: the archive is incomplete; save it again")
            };
            Ok(Layer {
                location: location.clone(),
                digest: None,
                diff_id: Some(diff_id.clone()),
                size: Some(size),
                compression: Compression::Detect,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let details = oci::details_of(&config, &id);
    Ok(LayeredImage {
        details,
        layers,
        store: Arc::new(Shared(files)),
    })
}

/// An archive or layout lacks the image asked for: say which it has.
fn not_named(name: &str, how: &str, asked: Option<&str>, have: &[String]) -> anyhow::Error {
    let have = match have.is_empty() {
        true => "no tags".to_string(),
        false => have.join(", "),
    };
    anyhow!(
        "{name} has no image {how}{}; it has: {have}",
        asked.unwrap_or_default()
    )
}

/// Whether two references name the same image, as docker shortens them
/// (`docker.io/library/debian:latest` is `debian:latest`; no tag is `latest`).
fn same_reference(a: &str, b: &str) -> bool {
    fn normal(r: &str) -> String {
        let r = r
            .strip_prefix("docker.io/")
            .unwrap_or(r)
            .strip_prefix("library/")
            .unwrap_or(r.strip_prefix("docker.io/").unwrap_or(r));
        let last = r.rsplit('/').next().unwrap_or(r);
        match last.contains(':') || last.contains('@') {
            true => r.to_string(),
            false => format!("{r}:latest"),
        }
    }
    normal(a) == normal(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_compare_as_docker_shortens_them() {
        assert!(same_reference(
            "debian:latest",
            "docker.io/library/debian:latest"
        ));
        assert!(same_reference("debian", "debian:latest"));
        assert!(same_reference(
            "localhost:5000/a/b:1",
            "localhost:5000/a/b:1"
        ));
        assert!(!same_reference("debian:12", "debian:latest"));
    }
}
