//! SYSLINUX for BIOS and systemd-boot for UEFI, side by side on the ESP.
use super::{secure::Chain, texts, BootConfig, Bootloader};
use crate::arch::Arch;
use crate::cmd::Cmd;
use crate::disk::esp::EspFile;
use crate::disk::layout::{Layout, SECTOR};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
/// The host's (unsigned) systemd-boot, for disks without the Secure Boot chain.
pub fn systemd_boot_efi(arch: Arch) -> String {
    format!(
        "/usr/lib/systemd/boot/efi/systemd-boot{}.efi",
        arch.efi_suffix()
    )
}

pub fn mbr_bootcode() -> Result<[u8; 440]> {
    let code = std::fs::read(GPTMBR).with_context(|| {
        format!(
            "reading {GPTMBR}; {}",
            crate::host_tools::install_hint(GPTMBR)
        )
    })?;
    if code.len() < 440 {
        bail!("{GPTMBR} is {} bytes; expected 440", code.len());
    }
    let mut out = [0u8; 440];
    out.copy_from_slice(&code[..440]);
    Ok(out)
}

/// The texts come from [`texts`]; SYSLINUX's config goes first, then the EFI loader, then
/// systemd-boot's: the order the ESP is written in, which places them in the FAT.
/// With `chain`, shim runs the guest's signed systemd-boot; without, the host's systemd-boot is
/// the firmware's default loader.
pub fn esp_files(cfg: &BootConfig, chain: Option<&Chain>) -> Result<Vec<EspFile>> {
    let mut texts = texts::esp_texts(
        Bootloader::Syslinux,
        cfg.arch,
        &cfg.cmdline,
        &cfg.kernel,
        None,
    )?
    .into_iter()
    .map(|(path, text)| EspFile::bytes(&path, text));
    let mut files: Vec<EspFile> = match cfg.arch.has_bios() {
        true => texts.next().into_iter().collect(),
        false => Vec::new(),
    };
    match chain {
        Some(chain) => files.extend(super::chain_files(chain, cfg.arch)),
        None => files.push(EspFile::host_file(
            &cfg.arch.uefi_default(),
            super::host_file(&systemd_boot_efi(cfg.arch))?,
        )?),
    }
    files.extend(texts);
    Ok(files)
}

/// `syslinux --install` on the unmounted image (it uses mtools), LAST of all writes to the ESP:
/// ldlinux.sys is found by its sector list, which any later change to the ESP can break.
pub fn install(image: &Path, layout: &Layout, epoch: Option<i64>) -> Result<()> {
    let mut cmd = Cmd::new("syslinux", "Installing SYSLINUX (BIOS boot)")
        .arg("--offset")
        .arg(layout.esp.start.to_string())
        .args(["--install", "--directory", "/syslinux"])
        .arg(image)
        .env("MTOOLS_SKIP_CHECK", "1");
    // mtools dates what it writes by SOURCE_DATE_EPOCH when set, else by the current time in
    // TZ: pass the one c2vm was given explicitly, so the environment is read in one place.
    cmd = match epoch {
        Some(epoch) => cmd.env("SOURCE_DATE_EPOCH", epoch.to_string()),
        None => cmd.env("TZ", "UTC"),
    };
    cmd.run()?;
    sync_backup_boot_sector(image, layout.esp.start)
}

/// syslinux rewrites the FAT32 boot sector but not its backup copy, which fsck.fat then reports:
/// copy it over.
fn sync_backup_boot_sector(image: &Path, esp_start: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let mut boot = [0u8; SECTOR as usize];
    file.read_exact_at(&mut boot, esp_start)
        .context("reading the ESP boot sector")?;
    // BPB_BkBootSec, offset 0x32 of a FAT32 boot sector; 6 by convention.
    let backup = u16::from_le_bytes([boot[0x32], boot[0x33]]) as u64;
    if backup == 0 || backup >= 32 {
        bail!("the ESP boot sector names no usable backup sector ({backup})");
    }
    file.write_all_at(&boot, esp_start + backup * SECTOR)
        .context("writing the ESP backup boot sector")?;
    Ok(())
}
