//! The boot stage: boot loaders for BIOS and UEFI on the same ESP, so one image boots on both.
//! Default: SYSLINUX (BIOS; `gptmbr.bin` in the MBR, `syslinux --install` on the unmounted image)
//! and systemd-boot (UEFI). Option: GRUB on both (`grub`). On UEFI, where the guest brings them,
//! shim and the distribution's signed loader go first, so the disk boots with Secure Boot on
//! (`secure`).
pub mod grub;
pub mod guest;
mod initrd;
pub mod secure;
pub mod syslinux;
pub mod texts;

use secure::Chain;

use crate::arch::Arch;

use crate::disk::esp::EspFile;
use crate::disk::layout::Layout;
use anyhow::{bail, Result};
use std::path::Path;

/// Which boot loaders go on the disk.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Bootloader {
    /// SYSLINUX for BIOS, systemd-boot for UEFI
    Syslinux,
    /// GRUB for BIOS (core.img in a BIOS-boot partition) and UEFI
    Grub,
}

impl Bootloader {
    /// GRUB's BIOS stage needs its own small partition for core.img (where there is a BIOS).
    pub fn needs_bios_boot_partition(self, arch: Arch) -> bool {
        self == Bootloader::Grub && arch.has_bios()
    }
}

/// The UEFI files of a signed chain, in the order the ESP is written.
fn chain_files(chain: &Chain, arch: Arch) -> Vec<EspFile> {
    vec![
        EspFile::bytes(&arch.uefi_default(), chain.shim.to_vec()),
        EspFile::bytes(&secure::loader_on_esp(arch), chain.loader.to_vec()),
        EspFile::bytes(
            &secure::mok_manager_on_esp(arch),
            chain.mok_manager.to_vec(),
        ),
    ]
}

/// The names of the kernel and initramfs the loaders boot, at the ESP's root (the guest's
/// `/boot`), one a line: for `c2vm run --direct-kernel`, whichever loader the disk has.
pub const KERNEL_NAMES_ON_ESP: &str = "c2vm/kernel";
/// The kernel command line, as the loaders have it.
pub const CMDLINE_ON_ESP: &str = "c2vm/cmdline";

/// What keeps the boot quiet: every byte on the emulated serial port traps into QEMU, and under
/// software emulation the kernel's and systemd's few hundred lines cost seconds of a boot.
/// Errors still show; `c2vm run --boot-log` shows everything, and `--append-cmdline loglevel=7`
/// makes a disk that always does.
const QUIET: &str = "quiet loglevel=3";

/// What every loader needs to know.
pub struct BootConfig {
    /// Which machine: the firmware's file names, and whether there is a BIOS to boot from.
    pub arch: Arch,
    /// The whole kernel command line.
    pub cmdline: String,
    /// What the loaders boot, by its names in the guest's `/boot` (the ESP).
    pub kernel: texts::KernelNames,
    /// The ESP's FAT volume id, `ABCD-1234`.
    pub esp_uuid: String,
    /// SOURCE_DATE_EPOCH, for the dates the loader tools write.
    pub epoch: Option<i64>,
}

/// The command line that boots `root` (`root=UUID=… rw` on a disk, the live boot method's words
/// on a live medium) with the serial console, quiet, and `extra` last.
pub fn kernel_cmdline(root: &str, arch: Arch, extra: &str) -> String {
    let serial = arch.serial_console();
    let mut line = format!("{root} console=tty0 console={serial},115200 {QUIET}");
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// What a loader needs on the host for `arch`'s disks: programs on PATH, then files
/// (`host-packages.txt` knows the package of each). An arm64 disk's loaders come from the guest
/// (the Secure Boot chain); the host's are needed only without it, and checked then.
pub fn host_needs(bootloader: Bootloader, arch: Arch) -> (Vec<&'static str>, Vec<String>) {
    match (bootloader, arch) {
        (_, Arch::Arm64) => (Vec::new(), Vec::new()),
        (Bootloader::Syslinux, Arch::Amd64) => (
            vec!["syslinux", "mcopy"],
            vec![
                syslinux::GPTMBR.to_string(),
                syslinux::systemd_boot_efi(arch),
            ],
        ),
        (Bootloader::Grub, Arch::Amd64) => (
            vec!["grub-mkstandalone", "grub-mkimage"],
            vec![grub::BOOT_IMG.to_string(), grub::efi_modules(arch)],
        ),
    }
}

/// Fail before any long work when a host file or program a loader needs is missing.
pub fn check_host_tools(bootloader: Bootloader, arch: Arch) -> Result<()> {
    let (programs, files) = host_needs(bootloader, arch);
    for p in programs {
        crate::cmd::require(p)?;
    }
    for file in files {
        host_file(&file)?;
    }
    Ok(())
}

/// An ISO's BIOS stage (GRUB as an El Torito image, and its hybrid MBR), where `arch` has a BIOS.
pub fn check_iso_tools(arch: Arch) -> Result<()> {
    if arch.has_bios() {
        crate::cmd::require("grub-mkimage")?;
        host_file(grub::BOOT_HYBRID_IMG)?;
    }
    Ok(())
}

/// A file of the host's that a loader needs, or one line saying which package has it.
fn host_file(file: &str) -> Result<&Path> {
    match Path::new(file).exists() {
        true => Ok(Path::new(file)),
        false => bail!(
            "{file} is missing; {}",
            crate::host_tools::install_hint(file)
        ),
    }
}

/// The 440 bytes of BIOS boot code for the protective MBR (zeros where there is no BIOS).
pub fn mbr_bootcode(bootloader: Bootloader, arch: Arch, layout: &Layout) -> Result<[u8; 440]> {
    if !arch.has_bios() {
        return Ok([0; 440]);
    }
    match bootloader {
        Bootloader::Syslinux => syslinux::mbr_bootcode(),
        Bootloader::Grub => grub::mbr_bootcode(layout),
    }
}

/// Loader files and configuration to put on the ESP (besides kernel and initramfs), and the
/// command line in a file of its own for `c2vm run --boot-log`, whichever loader reads it.
/// With `chain`, UEFI boots shim and the signed loader from it; without, the host's loader.
pub fn esp_files(
    bootloader: Bootloader,
    cfg: &BootConfig,
    chain: Option<&Chain>,
    scratch: &Path,
) -> Result<Vec<EspFile>> {
    let mut files = match bootloader {
        Bootloader::Syslinux => syslinux::esp_files(cfg, chain)?,
        Bootloader::Grub => grub::esp_files(cfg, chain, scratch)?,
    };
    files.push(EspFile::bytes(CMDLINE_ON_ESP, format!("{}\n", cfg.cmdline)));
    Ok(files)
}

/// Steps that must come after the ESP is written and closed.
pub fn install(
    bootloader: Bootloader,
    image: &Path,
    layout: &Layout,
    cfg: &BootConfig,
    scratch: &Path,
) -> Result<()> {
    if !cfg.arch.has_bios() {
        return Ok(()); // both loaders' BIOS stages
    }
    match bootloader {
        Bootloader::Syslinux => syslinux::install(image, layout, cfg.epoch),
        Bootloader::Grub => grub::install(image, layout, cfg, scratch),
    }
}
