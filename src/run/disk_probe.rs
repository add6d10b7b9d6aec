//! Reading the disk before it boots: its format and size (`qemu-img info`), its architecture and
//! whether its root is LUKS (from the partition table and the root's first sector), and windows
//! of it. Formats other than raw are read through qemu-img one window at a time, never converted
//! whole.
use super::qemu_args::qemu_escape;
use crate::arch::Arch;
use crate::disk::gpt;
use crate::progress::note;
use crate::units::MIB;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::io::{Read, Seek};
use std::path::Path;

/// What `qemu-img info --output=json` says about a disk (the fields c2vm uses).
#[derive(Debug, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

pub fn image_info(disk: &Path) -> Result<ImageInfo> {
    let out = crate::cmd::Cmd::new("qemu-img", "Inspecting the disk")
        .args(["info", "--output=json"])
        .arg(disk)
        .run()?;
    parse_image_info(&out.stdout)
}

fn parse_image_info(json: &str) -> Result<ImageInfo> {
    serde_json::from_str(json).context("reading qemu-img's JSON")
}

/// What a LUKS volume (1 or 2) starts with.
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

/// The architecture of the disk, from its root partition's type, and whether that partition is
/// LUKS: the first sectors and the root's first one only.
pub fn disk_arch(disk: &Path, format: &str) -> Result<(Arch, bool)> {
    // As much of the table as there is: a disk smaller than it has none to read.
    let table = read_at(
        disk,
        format,
        0,
        gpt::TABLE_BYTES as u64,
        "the disk's partition table",
    )?;
    // A disk c2vm did not make may have no root partition of a known type: it boots as the
    // host's, as it did before c2vm knew more than one architecture.
    match gpt::root_partition(&table) {
        Ok((arch, root)) => {
            let head = read_at(disk, format, root, 512, "the root partition's first sector")?;
            Ok((arch, head.starts_with(LUKS_MAGIC)))
        }
        Err(why) => {
            let host = Arch::host_or_default();
            note(&format!(
                "c2vm: {} ({why:#}); booting it as {host}",
                disk.display()
            ));
            Ok((host, false))
        }
    }
}

/// Up to `len` bytes of the disk from byte `at`.
pub fn read_at(disk: &Path, format: &str, at: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    if format == "raw" {
        return read_file(disk, at, len);
    }
    let dir = tempfile::Builder::new()
        .prefix("c2vm-disk-head.")
        .tempdir()
        .context("creating a temporary directory")?;
    let window = dir.path().join("window.raw");
    copy_window(disk, format, at, len, &window, what)?;
    read_file(&window, 0, len)
}

fn read_file(path: &Path, at: u64, len: u64) -> Result<Vec<u8>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(at))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// Up to `len` bytes of a disk in `format` (not raw) from byte `at`, written raw into `into`,
/// through qemu-img without converting the rest.
pub fn copy_window(
    disk: &Path,
    format: &str,
    at: u64,
    len: u64,
    into: &Path,
    what: &str,
) -> Result<()> {
    // qemu-img dd's skip= is unusable (QEMU 7.2 takes count= as the end, not a length): a
    // window of the disk from the raw driver's offset= and size= instead.
    let input = match at {
        0 => disk.display().to_string(),
        _ => format!(
            "driver=raw,offset={at},size={len},file.driver={format},file.file.driver=file,file.file.filename={}",
            qemu_escape(&disk.display().to_string())
        ),
    };
    let (bs, count) = blocks(len);
    let mut dd = crate::cmd::Cmd::new("qemu-img", &format!("Reading {what}")).arg("dd");
    dd = match at {
        0 => dd.args(["-f", format]),
        _ => dd.arg("--image-opts"),
    };
    dd.args(["-O", "raw"])
        .arg(format!("bs={bs}"))
        .arg(format!("count={count}"))
        .arg(format!("if={input}"))
        .arg(format!("of={}", into.display()))
        .run()?;
    Ok(())
}

/// qemu-img dd's block size and count for `len` bytes: MiB blocks where they fit exactly, so a
/// large window (an ESP) does not take a buffer of its whole size, else one block.
fn blocks(len: u64) -> (u64, u64) {
    match len {
        0 => (512, 0),
        _ if len % MIB == 0 => (MIB, len / MIB),
        _ => (len, 1),
    }
}

/// A qcow2 file at `overlay` whose reads fall through to `disk` (`format`) and which takes the
/// writes.
pub fn create_overlay(overlay: &Path, disk: &Path, format: &str) -> Result<()> {
    crate::cmd::Cmd::new("qemu-img", "Creating the VM's overlay over its disk")
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(disk)
        .arg(overlay)
        .run()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_img_info() {
        let json = r#"{"virtual-size": 1310720000, "filename": "d.qcow2", "cluster-size": 65536,
            "format": "qcow2", "actual-size": 702836736, "dirty-flag": false}"#;
        let info = parse_image_info(json).unwrap();
        assert_eq!(info.format, "qcow2");
        assert_eq!(info.virtual_size, 1_310_720_000);
    }

    #[test]
    fn windows_are_read_in_whole_blocks() {
        assert_eq!(blocks(512), (512, 1));
        assert_eq!(blocks(gpt::TABLE_BYTES as u64), (17408, 1));
        assert_eq!(blocks(255 * MIB), (MIB, 255));
    }

    #[test]
    fn a_raw_disk_is_read_in_place_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        std::fs::write(&disk, b"0123456789").unwrap();
        assert_eq!(read_at(&disk, "raw", 2, 3, "x").unwrap(), b"234");
        assert_eq!(read_at(&disk, "raw", 8, 512, "x").unwrap(), b"89");
        let (arch, encrypted) = disk_arch(&disk, "raw").unwrap();
        assert_eq!((arch, encrypted), (Arch::host_or_default(), false));
    }
}
