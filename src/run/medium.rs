//! What a run boots: a disk, an ISO (as a CD or a USB stick), or a network boot set (a
//! directory, through QEMU's TFTP server and the NIC's iPXE ROM), and the machine each is for.
use super::options::{Media, RunArgs};
use crate::arch::Arch;
use crate::output::{iso, pxe};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    Disk,
    Cd,
    Usb,
    /// The set's directory, as an absolute path.
    Net(PathBuf),
}

/// What `path` (the disk argument, or `--netboot`'s directory) is, checked against the flags
/// that do not apply to it; for a live medium also its architecture.
pub fn probe(a: &RunArgs, path: &Path) -> Result<(Medium, Option<Arch>)> {
    if a.vm.netboot.is_some() {
        return netboot(a, path);
    }
    let Some(arch) = iso::probe(path)? else {
        if a.vm.media.is_some() {
            bail!(
                "--media applies to an ISO; {} is a disk: drop --media",
                path.display()
            );
        }
        return Ok((Medium::Disk, None));
    };
    let shown = path.display();
    if a.vm.persist {
        bail!("--persist keeps a disk's changes; {shown} is an ISO, read-only by design (changes stay in RAM): drop --persist");
    }
    if a.boot_path.direct() {
        bail!("--direct-kernel and --boot-log boot a disk's kernel; {shown} is an ISO, which boots through its own loaders: drop them");
    }
    if a.boot_path.luks_passphrase_file.is_some() {
        bail!("--luks-passphrase-file: {shown} is an ISO, whose root is not encrypted: drop the option");
    }
    let medium = match a.vm.media.unwrap_or(Media::Cd) {
        Media::Cd => Medium::Cd,
        Media::Usb => Medium::Usb,
    };
    Ok((medium, Some(arch.unwrap_or_else(Arch::host_or_default))))
}

/// QEMU's virtio NIC ROM (iPXE, for BIOS and UEFI), which a network boot runs.
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// `--netboot DIR`: a set c2vm wrote (its iPXE script is there), for the kernel's architecture.
fn netboot(a: &RunArgs, dir: &Path) -> Result<(Medium, Option<Arch>)> {
    let shown = dir.display();
    if !dir.join(pxe::IPXE_SCRIPT).is_file() {
        bail!("{shown} is not a network boot set (no {}): make one with `c2vm convert IMAGE --format pxe -o {shown}`", pxe::IPXE_SCRIPT);
    }
    if !Path::new(IPXE_ROM).exists() {
        bail!(
            "{IPXE_ROM} is missing: --netboot boots through the NIC's iPXE ROM; {}",
            crate::host_tools::install_hint(IPXE_ROM)
        );
    }
    if a.boot_path.direct() || a.boot_path.luks_passphrase_file.is_some() {
        bail!("--direct-kernel, --boot-log and --luks-passphrase-file apply to disks; drop them with --netboot");
    }
    let kernel = dir.join(pxe::KERNEL);
    let mut head = [0u8; 64];
    std::fs::File::open(&kernel)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .with_context(|| format!("reading {}", kernel.display()))?;
    // arm64's Image header has its magic at 56; anything else boots as amd64.
    let arch = match &head[56..60] == b"ARM\x64" {
        true => Arch::Arm64,
        false => Arch::Amd64,
    };
    if arch == Arch::Arm64 {
        bail!("--netboot: {shown} is an arm64 set; c2vm boots network sets on amd64 only (QEMU ships no arm64 iPXE ROM): boot its ISO instead");
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {shown}"))?;
    Ok((Medium::Net(dir), Some(arch)))
}
