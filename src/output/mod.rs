//! The output stage: the disk is built under a temporary name beside the output and renamed into
//! place only when complete; raw stays sparse, other formats go through `qemu-img convert`.
//! Everything about the output path lives here: its format, the checks made before any work, the
//! temporary file, and the final rename.
pub mod containerdisk;
pub mod iso;
pub mod provenance;
pub mod pxe;
pub mod sbom;

use crate::cmd::Cmd;
use crate::progress::Stage;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The disk image formats c2vm writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    /// qcow2, with compressed clusters (--compress)
    Qcow2,
    /// VMDK for AWS and VMware import (--vmdk-subformat)
    Vmdk,
    Vdi,
    Vhdx,
    /// A fixed VHD of a whole number of MiB, as Azure takes it (qemu-img calls it vpc)
    Vhd,
    /// GCE's image: disk.raw, sparse, in a gzipped GNU tar, the disk a whole number of GiB
    Gce,
    /// A live medium: a hybrid ISO that boots as a CD (BIOS, UEFI) or written to a USB stick; its
    /// root is read-only, with changes in RAM
    Iso,
    /// A network boot set (a directory): kernel, initramfs, the root to fetch into RAM, and boot
    /// scripts for iPXE, PXELINUX and GRUB
    Pxe,
}

impl DiskFormat {
    /// A live medium (no partitions: a read-only root under an overlay in RAM).
    pub fn is_live(self) -> bool {
        matches!(self, DiskFormat::Iso | DiskFormat::Pxe)
    }

    /// What the whole disk's size must be a multiple of.
    pub fn size_multiple(self) -> u64 {
        match self {
            DiskFormat::Gce => 1 << 30,
            _ => 1 << 20,
        }
    }
}

/// qcow2 cluster compression.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// zstd clusters: small and fast; QEMU 5.1 or later reads them
    Zstd,
    /// zlib clusters: for older readers
    Zlib,
    None,
}

/// The VMDK subformat.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum VmdkSubformat {
    /// Compressed, streamable: what AWS VM Import and VMware's OVF import take
    #[value(name = "streamOptimized")]
    #[serde(rename = "streamOptimized")]
    StreamOptimized,
    /// Sparse, for VMware Workstation and VirtualBox to run in place
    #[value(name = "monolithicSparse")]
    #[serde(rename = "monolithicSparse")]
    MonolithicSparse,
}

/// The output, checked before any work: its format is known, it does not exist (unless
/// `--force`), and its directory exists and is writable.
#[derive(Debug, Clone)]
pub struct OutputTarget {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub force: bool,
    /// qcow2 only.
    pub compress: Compress,
    /// VMDK only.
    pub vmdk_subformat: VmdkSubformat,
}

impl OutputTarget {
    /// The programs a live medium is written with.
    pub fn check_live_tools(&self) -> Result<()> {
        if self.format.is_live() {
            crate::cmd::require("tar2sqfs")?;
        }
        if self.format == DiskFormat::Iso {
            crate::cmd::require("xorriso")?;
        }
        Ok(())
    }

    pub fn check(
        path: &Path,
        format: Option<DiskFormat>,
        force: bool,
        compress: Option<Compress>,
        vmdk_subformat: Option<VmdkSubformat>,
    ) -> Result<OutputTarget> {
        let format = match format {
            Some(f) => f,
            None => format_from_extension(path)?,
        };
        if compress.is_some() && format != DiskFormat::Qcow2 {
            bail!("--compress applies to qcow2 output; this output is {format:?}: drop --compress");
        }
        if vmdk_subformat.is_some() && format != DiskFormat::Vmdk {
            bail!("--vmdk-subformat applies to VMDK output; this output is {format:?}: drop --vmdk-subformat");
        }
        match format {
            DiskFormat::Pxe => check_output_dir(path, force)?,
            _ => check_output_path(path, force)?,
        }
        match format {
            // Their tools are checked with the host's (`DiskPlan::prepare`), after the options.
            DiskFormat::Raw | DiskFormat::Pxe | DiskFormat::Iso => {}
            DiskFormat::Gce => {
                crate::cmd::require("tar")?;
                crate::cmd::require("gzip")?;
            }
            _ => {
                crate::cmd::require("qemu-img")?;
            }
        }
        Ok(OutputTarget {
            path: path.to_path_buf(),
            format,
            force,
            compress: compress.unwrap_or(Compress::Zstd),
            vmdk_subformat: vmdk_subformat.unwrap_or(VmdkSubformat::StreamOptimized),
        })
    }

    /// The directory the output goes to (where a full disk would need room).
    pub fn dir(&self) -> PathBuf {
        output_dir(&self.path)
    }
}

fn format_from_extension(output: &Path) -> Result<DiskFormat> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar.gz") {
        return Ok(DiskFormat::Gce);
    }
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "img" | "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        "vmdk" => DiskFormat::Vmdk,
        "vdi" => DiskFormat::Vdi,
        "vhdx" => DiskFormat::Vhdx,
        "vhd" | "vpc" => DiskFormat::Vhd,
        "iso" => DiskFormat::Iso,
        _ => bail!(
            "cannot tell the disk format from `{}`; use an extension (.img, .raw, .qcow2, .vmdk, .vdi, .vhdx, .vhd, .tar.gz for GCE, .iso) or --format (pxe writes a directory)",
            output.display()
        ),
    })
}

/// The output must not exist (unless --force) and its directory must exist and be writable:
/// found out now, not after minutes of work.
fn check_output_path(output: &Path, force: bool) -> Result<()> {
    if output.exists() && !force {
        bail!(
            "{} already exists; use --force to overwrite it",
            output.display()
        );
    }
    if output.is_dir() {
        bail!(
            "{} is a directory; give a file name for the disk",
            output.display()
        );
    }
    check_output_parent(output)
}

/// A network boot set's directory: new, or replaced with --force (then it must hold a set, or
/// nothing: c2vm removes no other directory); its parent exists and is writable.
fn check_output_dir(output: &Path, force: bool) -> Result<()> {
    if output.exists() {
        if !force {
            bail!(
                "{} already exists; use --force to replace it",
                output.display()
            );
        }
        let is_set = output.join(pxe::IPXE_SCRIPT).is_file()
            || std::fs::read_dir(output).is_ok_and(|mut d| d.next().is_none());
        if !output.is_dir() || !is_set {
            bail!(
                "{} is not a network boot set c2vm wrote; give a new directory name",
                output.display()
            );
        }
    }
    check_output_parent(output)
}

/// The output's directory exists and takes a new file.
fn check_output_parent(output: &Path) -> Result<()> {
    let dir = output_dir(output);
    if !dir.is_dir() {
        bail!(
            "the output directory {} does not exist; create it first",
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".c2vm-probe")
        .tempfile_in(&dir)
        .with_context(|| format!("the output directory {} is not writable", dir.display()))?;
    Ok(())
}

fn output_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// qemu-img's name for a format.
pub fn qemu_format(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Raw | DiskFormat::Gce | DiskFormat::Iso | DiskFormat::Pxe => "raw",
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Vmdk => "vmdk",
        DiskFormat::Vdi => "vdi",
        DiskFormat::Vhdx => "vhdx",
        DiskFormat::Vhd => "vpc",
    }
}

/// A file (or a network boot set's directory) being written beside the final output; removed on
/// drop unless committed.
pub struct PendingOutput {
    temp: Option<tempfile::TempPath>,
    temp_dir: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl PendingOutput {
    /// For `format`: a directory for a network boot set, else a file.
    pub fn for_format(target: &Path, format: DiskFormat) -> Result<PendingOutput> {
        if format != DiskFormat::Pxe {
            return PendingOutput::new(target);
        }
        let dir = output_dir(target);
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name(target)))
            .suffix(".c2vm-partial")
            .tempdir_in(&dir)
            .with_context(|| format!("creating a temporary output in {}", dir.display()))?;
        Ok(PendingOutput {
            temp: None,
            temp_dir: Some(temp),
            target: target.to_path_buf(),
        })
    }

    pub fn new(target: &Path) -> Result<PendingOutput> {
        let dir = output_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".c2vm-partial")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary output in {}", dir.display()))?
            .into_temp_path();
        Ok(PendingOutput {
            temp: Some(temp),
            temp_dir: None,
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        match (&self.temp, &self.temp_dir) {
            (Some(temp), _) => temp,
            (None, Some(dir)) => dir.path(),
            (None, None) => &self.target,
        }
    }

    /// Rename into place (atomically replacing an old output when --force was given).
    pub fn commit(mut self, force: bool) -> Result<()> {
        if !force && self.target.exists() {
            anyhow::bail!(
                "{} appeared while c2vm was working; not overwriting it (use --force)",
                self.target.display()
            );
        }
        if let Some(dir) = self.temp_dir.take() {
            return commit_dir(dir, &self.target);
        }
        let temp = self.temp.take().context("output already committed")?;
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", temp.display()))?;
        temp.persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming the finished disk to {}", self.target.display()))?;
        Ok(())
    }
}

/// A network boot set's directory into place: an old one (--force) is moved aside first and
/// removed once the new one is there.
fn commit_dir(dir: tempfile::TempDir, target: &Path) -> Result<()> {
    let new = dir.keep();
    let renaming = || format!("renaming the finished set to {}", target.display());
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(renaming)?;
    let old = target.exists().then(|| new.with_extension("old"));
    if let Some(old) = &old {
        std::fs::rename(target, old).with_context(renaming)?;
    }
    if let Err(e) = std::fs::rename(&new, target) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, target);
        }
        let _ = std::fs::remove_dir_all(&new);
        return Err(e).with_context(renaming);
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old set at {}", old.display()))?;
    }
    Ok(())
}

fn file_name(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The sha256 of a file as hex, read once in large blocks: the finished disk's, which the SBOM
/// and the provenance share. A sparse file's holes (most of a raw
/// disk) are hashed as the zeros they read as, without reading them: the kernel would only
/// make those zeros up page by page.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reading = || format!("reading {}", path.display());
    let len = file.metadata().with_context(reading)?.len();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        // Where the next data starts, and where it ends: the end of the file where the
        // filesystem cannot say (then all of it is read).
        let data = match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(at) => at.min(len),
            Err(rustix::io::Errno::NXIO) => len,
            Err(_) => pos,
        };
        while pos < data {
            crate::interrupt::check()?;
            let n = (data - pos).min(zeros.len() as u64) as usize;
            hasher.update(&zeros[..n]);
            pos += n as u64;
        }
        let hole =
            rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(pos)).map_or(len, |at| at.min(len));
        while pos < hole {
            crate::interrupt::check()?;
            let want = (hole - pos).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], pos).with_context(reading)?;
            if n == 0 {
                bail!("{} changed while it was read", path.display());
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// What the finished output takes: its length and the bytes allocated to it.
pub fn sizes(path: &Path) -> (u64, u64) {
    std::fs::metadata(path)
        .map(|m| (m.len(), std::os::unix::fs::MetadataExt::blocks(&m) * 512))
        .unwrap_or((0, 0))
}

/// Convert the finished raw image (named `disk.raw`, as GCE wants it) into `dest` as `target`
/// says, showing progress.
/// How qemu-img may order what it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WriteOrder {
    /// Clusters in the disk's order: the same bytes from the same disk (`SOURCE_DATE_EPOCH`).
    Reproducible,
    /// Several clusters compressed and written at once, as they finish: qcow2 compression on
    /// every core (about 1.5x faster on two), the clusters' order in the file varying.
    Fastest,
}

pub fn convert(raw: &Path, dest: &Path, target: &OutputTarget, order: WriteOrder) -> Result<()> {
    let format = target.format;
    if format == DiskFormat::Gce {
        return gce_tarball(raw, dest);
    }
    // Per format: qcow2's compressed clusters; the VMDK subformat; Azure's fixed VHD, sized to
    // exactly the disk (qemu-img would otherwise round to its CHS geometry).
    let options: Vec<String> = match (format, target.compress) {
        (DiskFormat::Qcow2, Compress::None) => vec![],
        (DiskFormat::Qcow2, c) => vec![
            "-c".into(),
            "-o".into(),
            format!(
                "compression_type={}",
                if c == Compress::Zstd { "zstd" } else { "zlib" }
            ),
        ],
        (DiskFormat::Vmdk, _) => vec![
            "-o".into(),
            format!(
                "subformat={}",
                match target.vmdk_subformat {
                    VmdkSubformat::StreamOptimized => "streamOptimized",
                    VmdkSubformat::MonolithicSparse => "monolithicSparse",
                }
            ),
        ],
        (DiskFormat::Vhd, _) => vec!["-o".into(), "subformat=fixed,force_size=on".into()],
        _ => vec![],
    };
    let parallel: &[&str] = match (format, target.compress, order) {
        (DiskFormat::Qcow2, Compress::Zstd | Compress::Zlib, WriteOrder::Fastest) => {
            &["-W", "-m", "4"]
        }
        _ => &[],
    };
    let stage = Stage::bytes(&format!("Converting to {}", qemu_format(format)), 100);
    Cmd::new("qemu-img", "Converting the disk")
        .args(["convert", "-p", "-f", "raw", "-O", qemu_format(format)])
        .args(parallel)
        .args(&options)
        .arg(raw)
        .arg(dest)
        .run_streaming(|line| {
            // "    (42.00/100%)"
            if let Some(pct) = line
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.split('/').next())
            {
                if let Ok(p) = pct.parse::<f64>() {
                    stage.set_position(p as u64);
                }
            }
        })?;
    stage.done();
    Ok(())
}

/// GCE's image format: `disk.raw` alone in a gzipped GNU tar (oldgnu, sparse).
fn gce_tarball(raw: &Path, dest: &Path) -> Result<()> {
    if raw.file_name().and_then(|n| n.to_str()) != Some("disk.raw") {
        bail!("GCE wants the disk named disk.raw, not {}", raw.display());
    }
    let dir = raw.parent().context("the raw disk has no directory")?;
    let stage = Stage::spinner("Packing disk.raw for GCE (sparse tar, gzip)");
    Cmd::new("tar", "Packing the GCE image")
        .args([
            "--format=oldgnu",
            "--sparse",
            "--gzip",
            "--create",
            "--file",
        ])
        .arg(dest)
        .arg("-C")
        .arg(dir)
        .arg("disk.raw")
        .run()?;
    stage.done();
    Ok(())
}

/// For tests: a standard checker of what c2vm writes (pyspdxtools, CycloneDX's and
/// securesystemslib's Python): from `C2VM_SBOM_TOOLS` (scripts/install-sbom-tools' environment,
/// which scripts/test sets), where it must be, so true; else from PATH, where it may be missing.
#[cfg(test)]
pub(crate) fn checker(name: &str) -> (PathBuf, bool) {
    match std::env::var_os("C2VM_SBOM_TOOLS") {
        Some(dir) => (Path::new(&dir).join(name), true),
        None => (PathBuf::from(name), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holes hashed as zeros give the digest of the bytes the file reads as: data at the start,
    /// in the middle (not on a page boundary) and at the end, holes between, a hole at the end.
    #[test]
    fn a_sparse_files_sha256_is_that_of_its_bytes() {
        use sha2::Digest;
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        for (len, writes) in [
            (
                9 << 20,
                vec![
                    (0u64, 5000usize),
                    (3 << 20 | 123, 70_000),
                    ((9 << 20) - 10, 10),
                ],
            ),
            (5 << 20, vec![(1 << 20, 4096)]),
            (0, vec![]),
        ] {
            let path = dir.path().join("sparse");
            let file = std::fs::File::create(&path).unwrap();
            file.set_len(len).unwrap();
            let mut bytes = vec![0u8; len as usize];
            for (at, n) in writes {
                let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 + 1).collect();
                file.write_all_at(&data, at).unwrap();
                bytes[at as usize..at as usize + n].copy_from_slice(&data);
            }
            drop(file);
            let expected = format!("{:x}", sha2::Sha256::digest(&bytes));
            assert_eq!(file_sha256(&path).unwrap(), expected, "{len}");
        }
    }

    #[test]
    fn format_follows_extension() {
        for (name, format) in [
            ("a.qcow2", DiskFormat::Qcow2),
            ("a.IMG", DiskFormat::Raw),
            ("a.vhd", DiskFormat::Vhd),
            ("d.tar.gz", DiskFormat::Gce),
            ("live.ISO", DiskFormat::Iso),
        ] {
            assert_eq!(format_from_extension(Path::new(name)).unwrap(), format);
        }
        let err = format_from_extension(Path::new("a.udf")).unwrap_err();
        assert!(err.to_string().contains("or --format"), "{err}");
    }

    #[test]
    fn an_existing_output_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.img");
        std::fs::write(&out, b"x").unwrap();
        let err = OutputTarget::check(&out, None, false, None, None).unwrap_err();
        assert!(err.to_string().contains("use --force"), "{err}");
        let ok = OutputTarget::check(&out, None, true, None, None).unwrap();
        assert_eq!(ok.format, DiskFormat::Raw);
        assert_eq!(ok.dir(), dir.path());
        let err =
            OutputTarget::check(&dir.path().join("no/d.img"), None, false, None, None).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
