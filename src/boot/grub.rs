//! GRUB on both firmwares (`--bootloader grub`). Both have a small config built in that reads the
//! menu from the ESP's `grub/grub.cfg`, so the guest can change what boots. UEFI: a standalone
//! grubx64.efi. BIOS: grub-install cannot target an image file, so core.img goes into a BIOS-boot
//! partition and boot.img is patched by hand to find it.
use super::{secure::Chain, texts, BootConfig, Bootloader};
use crate::arch::Arch;
use crate::cmd::Cmd;
use crate::disk::esp::EspFile;
use crate::disk::layout::{Layout, SECTOR};
use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const BOOT_IMG: &str = "/usr/lib/grub/i386-pc/boot.img";
/// GRUB's UEFI modules on the host, for the GRUB c2vm builds where the guest has no signed one.
pub fn efi_modules(arch: Arch) -> String {
    format!("/usr/lib/grub/{}", arch.grub_efi_platform())
}
/// Debian's signed GRUB has its prefix built in (`/EFI/debian`); finding no config there, it
/// reads `grub.cfg` beside itself. c2vm writes it there and leaves `EFI/debian` absent: when that
/// directory exists, shim-signed's upgrade in the guest runs `grub-install`, which would replace
/// the config with one for a `/boot/grub` the guest does not have.
const SIGNED_CFG_ON_ESP: &str = "EFI/BOOT/grub.cfg";
/// In boot.img: where the sector of core.img is stored (GRUB_BOOT_MACHINE_KERNEL_SECTOR).
const BOOT_KERNEL_SECTOR: usize = 0x5C;
/// In boot.img: the boot-drive check, NOPed so that any BIOS drive number works.
const BOOT_DRIVE_CHECK: usize = 0x66;
/// In core.img's first sector (diskboot.img): the blocklist's start sector.
const CORE_BLOCKLIST_START: usize = 0x1F4;

/// What GRUB has built in, on both firmwares: the serial console, the ESP as root, and then the
/// menu in the ESP's `grub/grub.cfg` (from [`texts`]), which a kernel update in the guest rewrites.
/// On arm64 the firmware's console is the serial port already (QEMU's `virt`, the clouds'), and
/// GRUB's `serial` has no PC UART to set up.
fn embedded_cfg(cfg: &BootConfig) -> String {
    let serial = match cfg.arch.has_bios() {
        true => {
            "serial --unit=0 --speed=115200\n\
                 terminal_input serial console\n\
                 terminal_output serial console\n"
        }
        false => "",
    };
    format!(
        "{serial}search --no-floppy --fs-uuid --set=root {uuid}\n\
         configfile /{menu}\n",
        uuid = cfg.esp_uuid,
        menu = texts::GRUB_CFG,
    )
}

pub fn mbr_bootcode(layout: &Layout) -> Result<[u8; 440]> {
    let bios = layout
        .bios_boot
        .ok_or_else(|| anyhow!("GRUB for BIOS needs a BIOS-boot partition"))?;
    let mut img = std::fs::read(BOOT_IMG).with_context(|| {
        format!(
            "reading {BOOT_IMG}; {}",
            crate::host_tools::install_hint(BOOT_IMG)
        )
    })?;
    if img.len() != 512 {
        bail!("{BOOT_IMG} is {} bytes; expected 512", img.len());
    }
    img[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8]
        .copy_from_slice(&bios.first_lba().to_le_bytes());
    img[BOOT_DRIVE_CHECK] = 0x90;
    img[BOOT_DRIVE_CHECK + 1] = 0x90;
    let mut out = [0u8; 440];
    out.copy_from_slice(&img[..440]);
    Ok(out)
}

/// With `chain`, shim runs the guest's signed GRUB, which reads the same built-in config from
/// `EFI/BOOT/grub.cfg` (see [`SIGNED_CFG_ON_ESP`]); without, a GRUB built on the host.
pub fn esp_files(cfg: &BootConfig, chain: Option<&Chain>, scratch: &Path) -> Result<Vec<EspFile>> {
    let mut files = match chain {
        Some(chain) => {
            let mut files = super::chain_files(chain, cfg.arch);
            files.push(EspFile::bytes(SIGNED_CFG_ON_ESP, embedded_cfg(cfg)));
            files
        }
        None => vec![host_grub(cfg, scratch)?],
    };
    files.extend(
        texts::esp_texts(Bootloader::Grub, cfg.arch, &cfg.cmdline, &cfg.kernel, None)?
            .into_iter()
            .map(|(path, text)| EspFile::bytes(&path, text)),
    );
    Ok(files)
}

/// A standalone GRUB for UEFI, built on the host with [`embedded_cfg`] inside.
fn host_grub(cfg: &BootConfig, scratch: &Path) -> Result<EspFile> {
    let cfg_path = scratch.join("grub.cfg");
    std::fs::write(&cfg_path, embedded_cfg(cfg))
        .with_context(|| format!("writing {}", cfg_path.display()))?;
    let arch = cfg.arch;
    crate::cmd::require("grub-mkstandalone")?;
    super::host_file(&efi_modules(arch))?;
    let efi = scratch.join(format!("grub{}.efi", arch.efi_suffix()));
    Cmd::new("grub-mkstandalone", "Building GRUB for UEFI")
        .args(["-O", arch.grub_efi_platform(), "--modules=part_gpt fat",
               "--install-modules=part_gpt fat search search_fs_uuid linux normal configfile serial terminal echo test all_video efi_gop",
               "--locales=", "--fonts=", "--themes=", "-o"])
        .arg(&efi)
        .arg(format!("boot/grub/grub.cfg={}", cfg_path.display()))
        .run()?;
    EspFile::host_file(&arch.uefi_default(), &efi)
}

/// Build core.img with the config embedded and write it into the BIOS-boot partition.
pub fn install(image: &Path, layout: &Layout, cfg: &BootConfig, scratch: &Path) -> Result<()> {
    let bios = layout
        .bios_boot
        .ok_or_else(|| anyhow!("GRUB for BIOS needs a BIOS-boot partition"))?;
    let early = scratch.join("early.cfg");
    std::fs::write(&early, embedded_cfg(cfg))
        .with_context(|| format!("writing {}", early.display()))?;
    let core = scratch.join("core.img");
    Cmd::new("grub-mkimage", "Building GRUB for BIOS")
        .args(["-O", "i386-pc", "-o"])
        .arg(&core)
        .args(["-p", "(hd0,gpt1)/grub", "-c"])
        .arg(&early)
        .args([
            "biosdisk",
            "part_gpt",
            "fat",
            "search",
            "search_fs_uuid",
            "linux",
            "normal",
            "configfile",
            "serial",
            "terminal",
            "boot",
        ])
        .run()?;
    let mut img = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    if img.len() as u64 > bios.size || img.len() < SECTOR as usize {
        bail!(
            "GRUB's core.img is {} bytes; it must fit the {} byte BIOS-boot partition",
            img.len(),
            bios.size
        );
    }
    // diskboot.img loads the rest of core.img from the sector after its own.
    img[CORE_BLOCKLIST_START..CORE_BLOCKLIST_START + 8]
        .copy_from_slice(&(bios.first_lba() + 1).to_le_bytes());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    file.write_all_at(&img, bios.start)
        .context("writing GRUB's core.img")?;
    Ok(())
}

/// GRUB's BIOS hybrid MBR for an ISO written to a USB stick: it loads the El Torito image's
/// core from the sector xorriso patches in (`--grub2-boot-info`).
pub const BOOT_HYBRID_IMG: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// A live medium's BIOS stage, whichever loader the disk would have: GRUB as an El Torito
/// image, which finds the medium by the marker file only it has, opens the UEFI boot image (the
/// FAT file `esp_image` on the medium) as a loopback device and boots the kernel and initramfs
/// from it. So they are on the medium once, read by both firmwares.
pub fn eltorito_image(cfg: &BootConfig, marker: &str, esp_image: &str, out: &Path) -> Result<()> {
    let early = out.with_extension("cfg");
    let text = format!(
        "search --no-floppy --set=root --file /{marker}\n\
         loopback esp /{esp_image}\n\
         linux (esp)/{kernel} {cmdline}\n\
         initrd (esp)/{initrd}\n\
         boot\n",
        kernel = cfg.kernel.kernel,
        initrd = cfg.kernel.initrd,
        cmdline = cfg.cmdline,
    );
    std::fs::write(&early, text).with_context(|| format!("writing {}", early.display()))?;
    Cmd::new("grub-mkimage", "Building GRUB for the medium's BIOS boot")
        .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-o"])
        .arg(out)
        .arg("-c")
        .arg(&early)
        .args([
            "biosdisk",
            "iso9660",
            "part_gpt",
            "part_msdos",
            "fat",
            "loopback",
            "search",
            "search_fs_file",
            "linux",
            "normal",
            "boot",
        ])
        .run()?;
    Ok(())
}
