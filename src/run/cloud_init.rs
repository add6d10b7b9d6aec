//! `c2vm run --cloud-init`: a NoCloud seed for this boot. cloud-init's NoCloud datasource finds
//! its instance's data on a volume labelled `CIDATA` holding `user-data`, `meta-data` and
//! optionally `network-config` (<https://docs.cloud-init.io/en/latest/reference/datasources/nocloud.html>);
//! KubeVirt's `cloudInitNoCloud` volume is the same. c2vm writes it as a small FAT volume with the
//! writer of its ESPs, so no root, loop device or `mkfs` is needed, and attaches it read-only.
//!
//! User-data may hold secrets (passwords, keys, tokens): the seed is a private file (0600, in a
//! 0700 directory, as the credentials' files) removed when the run ends, and c2vm says the
//! files' names, never their contents.
use super::options::CloudInitArgs;
use super::private_dir::private_dir;
use super::qemu_args::{qemu_escape, Attachment};
use crate::disk::esp::{self, EspFile};
use crate::units::MIB;
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The seed's name in its private directory.
const SEED_FILE: &str = "seed.img";
/// The largest seed c2vm writes; user-data is kilobytes, and clouds cap it far lower (EC2 at
/// 16 KiB).
const SEED_MAX: u64 = 64 * MIB;

/// The seed's private file, for as long as QEMU runs.
pub struct NoCloudSeed {
    dir: tempfile::TempDir,
    names: Vec<&'static str>,
}

impl NoCloudSeed {
    /// None without `--cloud-init`.
    pub fn write(args: &CloudInitArgs) -> Result<Option<NoCloudSeed>> {
        let Some(user_data_path) = &args.cloud_init else {
            return Ok(None);
        };
        let user_data = read(user_data_path, "--cloud-init")?;
        check_user_data(&user_data, user_data_path)?;
        let meta_data = match &args.meta_data {
            Some(path) => read(path, "--meta-data")?,
            None => default_meta_data(&user_data).into_bytes(),
        };
        let mut files = vec![("user-data", user_data), ("meta-data", meta_data)];
        if let Some(path) = &args.network_config {
            files.push(("network-config", read(path, "--network-config")?));
        }
        let total: u64 = files.iter().map(|(_, data)| data.len() as u64).sum();
        // Room for FAT's tables and directory beside the data.
        let size = (total + MIB).div_ceil(MIB).max(2) * MIB;
        if size > SEED_MAX {
            bail!(
                "the cloud-init files come to {} MiB, and a seed holds at most {} MiB; keep large files out of user-data (fetch them at boot)",
                total / MIB,
                SEED_MAX / MIB
            );
        }
        let dir = private_dir("c2vm-cloud-init.", "the cloud-init seed")?;
        let path = dir.path().join(SEED_FILE);
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context("creating the cloud-init seed")?;
        image.set_len(size).context("sizing the cloud-init seed")?;
        let names = files.iter().map(|(name, _)| *name).collect();
        let entries = files
            .into_iter()
            .map(|(name, data)| EspFile::bytes(name, data))
            .collect();
        esp::write_small_volume(&image, size, *b"CIDATA     ", entries)?;
        image.sync_all().context("writing the cloud-init seed")?;
        Ok(Some(NoCloudSeed { dir, names }))
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(SEED_FILE)
    }
}

impl Attachment for NoCloudSeed {
    /// The seed as a second, read-only virtio disk.
    fn qemu_args(&self) -> Vec<String> {
        vec![
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=cidata,readonly=on",
                qemu_escape(&self.path().to_string_lossy())
            ),
            "-device".into(),
            "virtio-blk-pci,drive=cidata".into(),
        ]
    }

    /// The files' names.
    fn names(&self) -> Vec<String> {
        self.names.iter().map(|n| n.to_string()).collect()
    }

    fn what(&self) -> &'static str {
        "a cloud-init NoCloud seed for this boot (CIDATA)"
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: reading {}", path.display()))
}

/// The first lines cloud-init acts on (its `user_data` handlers); anything else it ignores in
/// silence, and the machine would boot without the user's settings. Gzip is unpacked first.
const USER_DATA_STARTS: &[&str] = &[
    "#cloud-config",
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "#cloud-config-archive",
    "#cloud-config-jsonp",
    "## template: jinja",
    "Content-Type:",
    "MIME-Version:",
];

fn check_user_data(data: &[u8], path: &Path) -> Result<()> {
    if data.starts_with(&[0x1f, 0x8b]) {
        return Ok(());
    }
    let start = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    if USER_DATA_STARTS
        .iter()
        .any(|s| start.starts_with(s.as_bytes()))
    {
        return Ok(());
    }
    // Not quoted: the file may hold secrets.
    bail!(
        "--cloud-init {}: cloud-init ignores user-data whose first line is not `#cloud-config`, a `#!` script, `#include` or MIME; start it with `#cloud-config`",
        path.display()
    )
}

/// meta-data when none is given: an instance-id from the user-data's hash. The same user-data
/// is the same instance, so per-instance work runs once on a disk that keeps its changes; new
/// user-data is a new instance, and runs.
fn default_meta_data(user_data: &[u8]) -> String {
    let digest = sha2::Sha256::digest(user_data);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("instance-id: c2vm-{hex}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_seed_is_a_private_cidata_volume_with_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let user_data = dir.path().join("user-data");
        std::fs::write(&user_data, "#cloud-config\npassword: secret-7731\n").unwrap();
        let network = dir.path().join("net");
        std::fs::write(&network, "version: 2\n").unwrap();
        let args = CloudInitArgs {
            cloud_init: Some(user_data.clone()),
            meta_data: None,
            network_config: Some(network),
        };
        let seed = NoCloudSeed::write(&args).unwrap().unwrap();
        assert_eq!(seed.names(), ["user-data", "meta-data", "network-config"]);
        let path = seed.path();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // As cloud-init finds it: the label, and the files at the root.
        let image = std::fs::File::open(&path).unwrap();
        let size = image.metadata().unwrap().len();
        let extent = crate::disk::layout::Extent { start: 0, size };
        let files = esp::read_files(
            &image,
            extent,
            &["user-data", "meta-data", "network-config"],
        )
        .unwrap();
        assert_eq!(files[0], b"#cloud-config\npassword: secret-7731\n");
        let meta = String::from_utf8(files[1].clone()).unwrap();
        assert!(meta.starts_with("instance-id: c2vm-"), "{meta}");
        assert_eq!(files[2], b"version: 2\n");
        let mut head = vec![0u8; 64];
        std::io::Read::read_exact(&mut &image, &mut head).unwrap();
        assert_eq!(&head[43..54], b"CIDATA     ", "the FAT12/16 volume label");
        // The same user-data is the same instance; other user-data another.
        assert_eq!(
            default_meta_data(b"#cloud-config\n"),
            default_meta_data(b"#cloud-config\n")
        );
        assert_ne!(
            default_meta_data(b"#cloud-config\n"),
            default_meta_data(b"#cloud-config\na: 1\n")
        );
        drop(seed);
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }

    #[test]
    fn user_data_cloud_init_would_ignore_is_refused_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let user_data = dir.path().join("user-data");
        std::fs::write(&user_data, "users:\n  - name: secret-user-5521\n").unwrap();
        let args = CloudInitArgs {
            cloud_init: Some(user_data),
            ..CloudInitArgs::default()
        };
        let err = format!("{:#}", NoCloudSeed::write(&args).err().unwrap());
        assert!(err.contains("start it with `#cloud-config`"), "{err}");
        assert!(!err.contains("secret-user-5521"), "{err}");
        for good in [
            "#cloud-config\n",
            "#!/bin/sh\n",
            "\u{feff}#cloud-config\n",
            "Content-Type: multipart/mixed\n",
        ] {
            check_user_data(good.as_bytes(), Path::new("u")).unwrap();
        }
        let missing = CloudInitArgs {
            cloud_init: Some(dir.path().join("absent")),
            ..CloudInitArgs::default()
        };
        let err = format!("{:#}", NoCloudSeed::write(&missing).err().unwrap());
        assert!(err.starts_with("--cloud-init: reading "), "{err}");
    }
}
