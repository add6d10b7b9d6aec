//! The boot stage: boot loaders for BIOS and UEFI on the same ESP, so one image boots on both.
//! Default: SYSLINUX (BIOS; `gptmbr.bin` in the MBR, `syslinux --install` on the unmounted image)
//! and systemd-boot (UEFI). Option: GRUB on both (`grub`). On UEFI, where the guest brings them,
//! shim and the distribution's signed loader go first, so the disk boots with Secure Boot on
//! (`secure`).
pub mod grub;
pub mod secure;
pub mod syslinux;
pub mod texts;

use secure::Chain;

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
    /// GRUB's BIOS stage needs its own small partition for core.img.
    pub fn needs_bios_boot_partition(self) -> bool {
        self == Bootloader::Grub
    }
}

/// The UEFI files of a signed chain, in the order the ESP is written.
fn chain_files(chain: &Chain) -> Vec<EspFile> {
    vec![
        EspFile::bytes(UEFI_DEFAULT, chain.shim.to_vec()),
        EspFile::bytes(secure::LOADER_ON_ESP, chain.loader.to_vec()),
        EspFile::bytes(secure::MOK_MANAGER_ON_ESP, chain.mok_manager.to_vec()),
    ]
}

/// What UEFI firmware boots from a disk with no boot entries of its own (x86-64).
pub const UEFI_DEFAULT: &str = "EFI/BOOT/BOOTX64.EFI";

/// What the loaders boot, from the ESP's root.
pub const KERNEL_ON_ESP: &str = "vmlinuz";
pub const INITRD_ON_ESP: &str = "initrd.img";
/// The kernel command line, as the loaders have it.
pub const CMDLINE_ON_ESP: &str = "c2vm/cmdline";

/// What keeps the boot quiet: every byte on the emulated serial port traps into QEMU, and under
/// software emulation the kernel's and systemd's few hundred lines cost seconds of a boot.
/// Errors still show; `c2vm run --boot-log` shows everything, and `--append-cmdline loglevel=7`
/// makes a disk that always does.
const QUIET: &str = "quiet loglevel=3";

/// What every loader needs to know.
pub struct BootConfig {
    /// The whole kernel command line.
    pub cmdline: String,
    /// The ESP's FAT volume id, `ABCD-1234`.
    pub esp_uuid: String,
    /// SOURCE_DATE_EPOCH, for the dates the loader tools write.
    pub epoch: Option<i64>,
}

pub fn kernel_cmdline(root_uuid: &str, extra: &str) -> String {
    let mut line = format!("root=UUID={root_uuid} rw console=tty0 console=ttyS0,115200 {QUIET}");
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// What a loader needs on the host: programs on PATH, then files (`host-packages.txt` knows
/// the package of each).
pub fn host_needs(bootloader: Bootloader) -> (&'static [&'static str], &'static [&'static str]) {
    match bootloader {
        Bootloader::Syslinux => (
            &["syslinux", "mcopy"],
            &[syslinux::GPTMBR, syslinux::SYSTEMD_BOOT_EFI],
        ),
        Bootloader::Grub => (
            &["grub-mkstandalone", "grub-mkimage"],
            &[grub::BOOT_IMG, grub::EFI_MODULES],
        ),
    }
}

/// Fail before any long work when a host file or program a loader needs is missing.
pub fn check_host_tools(bootloader: Bootloader) -> Result<()> {
    let (programs, files) = host_needs(bootloader);
    for p in programs {
        crate::cmd::require(p)?;
    }
    for file in files {
        if !Path::new(file).exists() {
            bail!(
                "{file} is missing; {}",
                crate::host_tools::install_hint(file)
            );
        }
    }
    Ok(())
}

/// The 440 bytes of BIOS boot code for the protective MBR.
pub fn mbr_bootcode(bootloader: Bootloader, layout: &Layout) -> Result<[u8; 440]> {
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
    match bootloader {
        Bootloader::Syslinux => syslinux::install(image, layout, cfg.epoch),
        Bootloader::Grub => grub::install(image, layout, cfg, scratch),
    }
}
