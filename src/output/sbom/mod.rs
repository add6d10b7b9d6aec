//! `--sbom FILE`: the disk's software bill of materials, as SPDX 2.3 JSON or CycloneDX 1.6 JSON.
//! It describes the finished disk (its name, format and sha256, and the image it was made from)
//! and lists what is on it: every package of the guest's dpkg or apk database as the disk holds
//! it, the distribution, and what c2vm itself put there (`parts`: the kernel, the Secure Boot
//! chain, the host's loaders, c2vm-init, the files guest setup wrote). Everything comes from what
//! the stream edit kept as the image passed, never from a second read of the image. Written
//! under a temporary name beside it and renamed once the disk is in place, like the disk.
mod cyclonedx;
mod parts;
mod purl;
mod spdx;

use super::{check_output_path, DiskFormat, PendingOutput};
use crate::arch::Arch;
use crate::boot::guest::Machine;
use crate::boot::Bootloader;
use crate::rootfs::packages::{self, Inventory};
use crate::rootfs::tree::GuestTree;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub use parts::Bundle;

/// The SBOM's format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    /// SPDX 2.3, JSON
    Spdx,
    /// CycloneDX 1.6, JSON
    Cyclonedx,
}

/// `--sbom`, checked before any work: its format is known and it can be written.
#[derive(Debug, Clone)]
pub struct SbomTarget {
    pub path: PathBuf,
    pub format: SbomFormat,
}

impl SbomTarget {
    pub fn check(
        path: &Path,
        format: Option<SbomFormat>,
        disk: &Path,
        force: bool,
    ) -> Result<SbomTarget> {
        let format = match format {
            Some(f) => f,
            None => format_from_name(path)?,
        };
        if path == disk {
            bail!(
                "--sbom {} is the disk's own name; give the SBOM another",
                path.display()
            );
        }
        check_output_path(path, force)?;
        Ok(SbomTarget {
            path: path.to_path_buf(),
            format,
        })
    }
}

fn format_from_name(path: &Path) -> Result<SbomFormat> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".spdx.json") {
        Ok(SbomFormat::Spdx)
    } else if name.ends_with(".cdx.json") {
        Ok(SbomFormat::Cyclonedx)
    } else {
        bail!(
            "cannot tell the SBOM format from `{}`; name it *.spdx.json or *.cdx.json, or add --sbom-format spdx|cyclonedx",
            path.display()
        )
    }
}

/// What the SBOM is made from, once the disk is complete under its temporary name.
pub struct Inputs<'a> {
    /// The finished disk's sha256 (hex), hashed once for the SBOM and the provenance.
    pub sha256: &'a str,
    /// Its final name.
    pub name: String,
    pub format: DiskFormat,
    pub arch: Arch,
    /// The image as the user named it, and its ID (empty where unknown).
    pub source: &'a str,
    pub source_id: &'a str,
    pub tree: &'a GuestTree,
    pub machine: &'a Machine,
    pub bootloader: Bootloader,
    /// The kernel bundle merged into the stream, where one was.
    pub bundle: Option<Bundle>,
    /// SOURCE_DATE_EPOCH: the document's date; else now.
    pub epoch: Option<i64>,
}

/// An SBOM written under its temporary name, to be renamed after the disk.
pub struct Written {
    pending: PendingOutput,
    pub path: PathBuf,
    pub format: SbomFormat,
    /// How many packages of the guest's databases it lists.
    pub packages: usize,
    /// The databases it could not read, one sentence each.
    pub unread: Vec<String>,
}

impl Written {
    /// The SBOM as a referrer of the containerDisk, under its media type.
    pub fn attachment(&self) -> super::containerdisk::Attachment {
        super::containerdisk::Attachment {
            path: self.pending.path().to_path_buf(),
            media_type: match self.format {
                SbomFormat::Spdx => "application/spdx+json",
                SbomFormat::Cyclonedx => "application/vnd.cyclonedx+json",
            },
            title: (self.path.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Rename it into place, once the disk is there.
    pub fn commit(self, force: bool) -> Result<Summary> {
        self.pending.commit(force)?;
        Ok(Summary {
            path: self.path,
            format: self.format,
            packages: self.packages,
        })
    }
}

/// What the report and `--json` say of the SBOM.
#[derive(serde::Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub format: SbomFormat,
    pub packages: usize,
}

/// Everything a document says, whichever its format.
struct Facts<'a> {
    disk: Disk,
    source: &'a str,
    /// The image's ID as a sha256 hex digest, where it is one.
    source_sha256: Option<&'a str>,
    source_id: &'a str,
    inventory: Inventory,
    parts: Vec<parts::Part>,
    /// RFC 3339, UTC.
    created: String,
    /// Derived from the disk's digest and the source: the same inputs give the same document.
    uuid: uuid::Uuid,
}

/// The disk the document describes.
struct Disk {
    name: String,
    format: DiskFormat,
    arch: Arch,
    sha256: String,
}

/// Write the SBOM beside its final name; the caller renames it once the disk is in place.
pub fn write(target: &SbomTarget, inputs: &Inputs) -> Result<Written> {
    let facts = facts(inputs)?;
    let text = match target.format {
        SbomFormat::Spdx => spdx::document(&facts)?,
        SbomFormat::Cyclonedx => cyclonedx::document(&facts)?,
    };
    let pending = PendingOutput::new(&target.path)?;
    std::fs::write(pending.path(), text)
        .with_context(|| format!("writing the SBOM {}", pending.path().display()))?;
    Ok(Written {
        pending,
        path: target.path.clone(),
        format: target.format,
        packages: facts.inventory.packages.len(),
        unread: facts.inventory.unread,
    })
}

fn facts<'a>(inputs: &'a Inputs) -> Result<Facts<'a>> {
    let sha256 = inputs.sha256.to_string();
    let inventory = packages::read(inputs.tree);
    let parts = parts::gather(inputs, &inventory);
    let unix = match inputs.epoch {
        Some(epoch) => epoch.max(0) as u64,
        None => crate::units::unix_now(),
    };
    let seed = format!(
        "c2vm {} sbom\n{}\n{}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        sha256,
        inputs.name,
        inputs.source,
        inputs.source_id
    );
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let source_sha256 = inputs
        .source_id
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok(Facts {
        disk: Disk {
            name: inputs.name.clone(),
            format: inputs.format,
            arch: inputs.arch,
            sha256,
        },
        source: inputs.source,
        source_sha256,
        source_id: inputs.source_id,
        inventory,
        parts,
        created: crate::units::rfc3339(unix),
        uuid: uuid::Builder::from_custom_bytes(bytes).into_uuid(),
    })
}

/// The disk format as `--format` names it (`qcow2`, `gce`).
fn format_name(format: DiskFormat) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The sha256 of bytes, as hex.
fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The package URL of a database's package: `pkg:deb/debian/openssl@3.5.1-1?arch=amd64&distro=debian-13`.
/// None without os-release, which names the distribution (the purl's namespace).
fn package_purl(package: &packages::Package, os: Option<&packages::OsRelease>) -> Option<String> {
    let os = os.filter(|os| !os.id.is_empty())?;
    let ty = match package.manager {
        packages::Manager::Dpkg => "deb",
        packages::Manager::Apk => "apk",
    };
    let distro = match os.version_id.is_empty() {
        true => os.id.clone(),
        false => format!("{}-{}", os.id, os.version_id),
    };
    let mut qualifiers = vec![("distro", distro.as_str())];
    if !package.arch.is_empty() {
        qualifiers.push(("arch", package.arch.as_str()));
    }
    Some(purl::encode(
        ty,
        &os.id.to_ascii_lowercase(),
        &package.name,
        &package.version,
        &qualifiers,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::secure::Decision;
    use crate::rootfs::boot_files::BootFiles;
    use crate::rootfs::tree::tests::tree;
    use crate::rootfs::tree::{Kind, Perms};

    const STATUS: &[u8] = b"Package: openssl
Status: install ok installed
Architecture: amd64
Version: 3.5.1-1
Description: toolkit
 more

Package: libstdc++6
Status: install ok installed
Architecture: amd64
Source: gcc-14 (14.2.0-19)
Version: 1:14.2.0-19

Package: linux-image-6.12.38+deb13-amd64
Status: install ok installed
Architecture: amd64
Source: linux-signed-amd64
Version: 6.12.38-1
";

    /// A Debian guest after setup: its databases, its kernel, and files setup wrote (one of them
    /// holding a password hash, which must never reach the SBOM).
    fn guest() -> GuestTree {
        let mut t = tree(&[
            (
                "usr/lib/os-release",
                Kind::File,
                0o644,
                b"PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID=\"13\"\n",
            ),
            ("var/lib/dpkg/status", Kind::File, 0o644, STATUS),
            (
                "boot/vmlinuz-6.12.38+deb13-amd64",
                Kind::File,
                0o644,
                b"kernel",
            ),
            (
                "boot/initrd.img-6.12.38+deb13-amd64",
                Kind::File,
                0o644,
                b"initrd",
            ),
            ("etc", Kind::Dir, 0o755, b""),
        ]);
        t.write(
            "/etc/shadow",
            b"root:$6$salt$SECRETHASH:1::::::\n",
            Perms::root(0o640),
        )
        .unwrap();
        t.write("/etc/hostname", b"vm\n", Perms::root(0o644))
            .unwrap();
        t
    }

    fn machine() -> Machine {
        Machine {
            kernel: BootFiles {
                version: "6.12.38+deb13-amd64".to_string(),
                kernel: "/boot/vmlinuz-6.12.38+deb13-amd64".to_string(),
                initrd: "/boot/initrd.img-6.12.38+deb13-amd64".to_string(),
            },
            cmdline: "root=UUID=x".to_string(),
            disabled: Vec::new(),
            c2vm_init: false,
            secure: Decision::Unsigned("--secure-boot off".to_string()),
            login: None,
        }
    }

    /// Write the SBOM of the test guest in `format`; returns its text.
    fn write_sbom(dir: &Path, name: &str, format: SbomFormat) -> (String, Written) {
        let sha256 = sha256(b"disk bytes");
        let (tree, machine) = (guest(), machine());
        let inputs = Inputs {
            sha256: &sha256,
            name: "d.qcow2".to_string(),
            format: DiskFormat::Qcow2,
            arch: Arch::Arm64,
            source: "debian:trixie",
            source_id: "sha256:5f8d1b7c2b6e9a0d3c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4",
            tree: &tree,
            machine: &machine,
            bootloader: Bootloader::Syslinux,
            bundle: None,
            epoch: Some(1_700_000_000),
        };
        let target = SbomTarget {
            path: dir.join(name),
            format,
        };
        let written = write(&target, &inputs).unwrap();
        let text = std::fs::read_to_string(written.pending.path()).unwrap();
        (text, written)
    }

    #[test]
    fn the_format_follows_the_name_or_the_option() {
        assert_eq!(
            format_from_name(Path::new("a.spdx.json")).unwrap(),
            SbomFormat::Spdx
        );
        assert_eq!(
            format_from_name(Path::new("x/A.CDX.JSON")).unwrap(),
            SbomFormat::Cyclonedx
        );
        let err = format_from_name(Path::new("a.json")).unwrap_err();
        assert!(err.to_string().contains("--sbom-format"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.img");
        let ok = SbomTarget::check(
            &dir.path().join("s.json"),
            Some(SbomFormat::Spdx),
            &disk,
            false,
        );
        assert_eq!(ok.unwrap().format, SbomFormat::Spdx);
        assert!(SbomTarget::check(&disk, Some(SbomFormat::Spdx), &disk, false).is_err());
    }

    #[test]
    fn spdx_lists_packages_with_purls_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (text, written) = write_sbom(dir.path(), "d.spdx.json", SbomFormat::Spdx);
        assert_eq!(written.packages, 3);
        assert!(text.contains("\"pkg:deb/debian/openssl@3.5.1-1?arch=amd64&distro=debian-13\""));
        assert!(text
            .contains("pkg:deb/debian/libstdc%2B%2B6@1%3A14.2.0-19?arch=amd64&distro=debian-13"));
        assert!(text.contains("\"created\": \"2023-11-14T22:13:20Z\""));
        // The kernel's package, the disk's digest, setup's files by path only.
        assert!(text.contains("the guest's package linux-image-6.12.38+deb13-amd64 6.12.38-1"));
        assert!(text.contains(&sha256(b"disk bytes")));
        assert!(text.contains("/etc/shadow"));
        assert!(!text.contains("SECRETHASH") && !text.contains("$6$"));
        // Written under a temporary name beside it, until the disk is in place.
        assert!(!dir.path().join("d.spdx.json").exists());
        written.commit(false).unwrap();
        assert!(dir.path().join("d.spdx.json").exists());
    }

    #[test]
    fn the_same_inputs_under_an_epoch_give_the_same_bytes() {
        for format in [SbomFormat::Spdx, SbomFormat::Cyclonedx] {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (first, _) = write_sbom(a.path(), "s.json", format);
            let (second, _) = write_sbom(b.path(), "s.json", format);
            assert_eq!(first, second, "{format:?}");
        }
    }

    #[test]
    fn a_damaged_database_is_named_in_the_document() {
        let mut t = guest();
        let key = b"var/lib/dpkg/status".to_vec();
        let mut node = t.get(&key).unwrap().clone();
        node.data = Some(std::sync::Arc::from(b"Package: x\nnot a field\n".to_vec()));
        t.insert(key, node);
        let dir = tempfile::tempdir().unwrap();
        let sha256 = sha256(b"d");
        let machine = machine();
        let inputs = Inputs {
            sha256: &sha256,
            name: "d.img".to_string(),
            format: DiskFormat::Raw,
            arch: Arch::Arm64,
            source: "rootfs:x.tar",
            source_id: "",
            tree: &t,
            machine: &machine,
            bootloader: Bootloader::Syslinux,
            bundle: None,
            epoch: None,
        };
        let target = SbomTarget {
            path: dir.path().join("d.cdx.json"),
            format: SbomFormat::Cyclonedx,
        };
        let written = write(&target, &inputs).unwrap();
        assert_eq!(written.packages, 0);
        assert_eq!(written.unread.len(), 1);
        let text = std::fs::read_to_string(written.pending.path()).unwrap();
        assert!(
            text.contains("/var/lib/dpkg/status could not be read: line 2"),
            "{text}"
        );
    }

    /// The documents pass the formats' own validators: `pyspdxtools` (spdx-tools) and
    /// cyclonedx-python-lib's strict JSON schema validation (scripts/install-sbom-tools).
    #[test]
    fn documents_pass_the_standard_validators() {
        let dir = tempfile::tempdir().unwrap();
        let (spdx, _) = write_sbom(dir.path(), "d.spdx.json", SbomFormat::Spdx);
        let spdx_file = dir.path().join("check.spdx.json");
        std::fs::write(&spdx_file, &spdx).unwrap();
        let (pyspdxtools, required) = crate::output::checker("pyspdxtools");
        let (python, _) = crate::output::checker("python3");
        let missing = |what: &str| match required {
            true => panic!("{what} is not in C2VM_SBOM_TOOLS"),
            false => eprintln!("{what} is not installed: that document is not validated"),
        };
        match std::process::Command::new(&pyspdxtools)
            .arg("-i")
            .arg(&spdx_file)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "pyspdxtools: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => missing("pyspdxtools"),
        }
        let (cdx, _) = write_sbom(dir.path(), "d.cdx.json", SbomFormat::Cyclonedx);
        let script = "import sys\n\
    try:\n    from cyclonedx.validation.json import JsonStrictValidator\n    from cyclonedx.schema import SchemaVersion\n\
    except ImportError:\n    sys.exit(3)\n\
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(sys.stdin.read())\n\
    print(error or '')\nsys.exit(1 if error else 0)\n";
        let child = std::process::Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            return missing("python3");
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cdx.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        match out.status.code() {
            Some(3) => missing("cyclonedx-python-lib"),
            _ => assert!(
                out.status.success(),
                "CycloneDX: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        }
    }
}
