//! `--format iso`: one hybrid file that boots four ways, made by xorriso, as distributions make
//! theirs. As a CD: El Torito's BIOS image (GRUB, where the architecture has a BIOS) and its UEFI
//! image (the FAT boot image: shim, the signed loader, the kernel and initramfs). Written to a
//! USB stick as it is: GRUB's hybrid MBR for BIOS, and a GPT whose EFI partition is that same
//! boot image for UEFI. The root is a squashfs file on the ISO 9660 volume, found by the volume's
//! label (templates/guest/initramfs-live).
use crate::arch::Arch;
use crate::cmd::Cmd;
use anyhow::{Context, Result};
use std::path::Path;

/// Where the parts are on the medium (the BIOS stage and the initramfs read them there).
pub const ROOT_ON_MEDIUM: &str = "live/root.squashfs";
pub const UEFI_IMAGE_ON_MEDIUM: &str = "boot/efi.img";
pub const BIOS_IMAGE_ON_MEDIUM: &str = "boot/bios.img";

/// The file only this medium has, named by its label: GRUB's BIOS stage finds the medium by it
/// when several disks are attached.
pub fn marker(label: &str) -> String {
    format!("c2vm/{label}")
}

/// The parts of a medium, as files in the scratch directory.
pub struct Parts<'a> {
    /// The ISO 9660 volume id, which the kernel command line names (`c2vm.live=`).
    pub label: &'a str,
    pub root: &'a Path,
    pub uefi_image: &'a Path,
    /// GRUB's El Torito image; None where the architecture has no BIOS.
    pub bios_image: Option<&'a Path>,
    /// An empty file for [`marker`].
    pub marker: &'a Path,
    /// The machine it boots, in the volume's application id for `c2vm run`.
    pub arch: Arch,
}

/// The volume's application id: `c2vm live ARCH`.
const APP_ID_PREFIX: &str = "c2vm live ";

/// Write the ISO at `out`. Under SOURCE_DATE_EPOCH (`epoch`), xorriso dates the volume, its
/// files and the GPT's identifiers by it, so the same parts give the same bytes.
pub fn write(out: &Path, parts: &Parts, epoch: Option<i64>) -> Result<()> {
    let appid = format!("{APP_ID_PREFIX}{}", parts.arch);
    let graft = |on: &str, file: &Path| {
        let mut arg = std::ffi::OsString::from(format!("{on}="));
        arg.push(file);
        arg
    };
    // -iso-level 3: a root over 4 GiB is one file in several extents.
    let mut cmd = Cmd::new("xorriso", "Writing the ISO (xorriso)")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-iso-level",
            "3",
            "-rational-rock",
        ])
        .args(["-volid", parts.label, "-appid", &appid, "-output"])
        .arg(out);
    if parts.bios_image.is_some() {
        cmd = cmd
            .args(["-eltorito-boot", BIOS_IMAGE_ON_MEDIUM, "-no-emul-boot"])
            .args([
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "--grub2-boot-info",
            ])
            .args(["--grub2-mbr", crate::boot::grub::BOOT_HYBRID_IMG])
            .arg("-eltorito-alt-boot");
    }
    // The UEFI image is also the GPT's EFI partition: a USB stick's firmware boots from it.
    cmd = cmd
        .args(["-e", UEFI_IMAGE_ON_MEDIUM, "-no-emul-boot"])
        .args([
            "-efi-boot-part",
            "--efi-boot-image",
            "--protective-msdos-label",
        ])
        .arg("-graft-points")
        .arg(graft(ROOT_ON_MEDIUM, parts.root))
        .arg(graft(UEFI_IMAGE_ON_MEDIUM, parts.uefi_image))
        .arg(graft(&marker(parts.label), parts.marker));
    if let Some(bios) = parts.bios_image {
        cmd = cmd.arg(graft(BIOS_IMAGE_ON_MEDIUM, bios));
    }
    if let Some(epoch) = epoch {
        // SOURCE_DATE_EPOCH dates the volume and the GPT; the directories xorriso makes for the
        // graft points would still take the time of day.
        cmd = cmd
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["--set_all_file_dates", &format!("={epoch}")]);
    }
    cmd.run()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// What `path` is, read from its primary volume descriptor: None where it is no ISO 9660 volume
/// (`CD001`), else the architecture c2vm wrote into its application id (None within where
/// another tool made it).
pub fn probe(path: &Path) -> Result<Option<Option<Arch>>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pvd = [0u8; 2048];
    match file.read_exact_at(&mut pvd, 16 * 2048) {
        Ok(()) if &pvd[1..6] == b"CD001" => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    // The application identifier: 128 bytes at 574, padded with spaces, upper case (ISO 9660's
    // a-characters: xorriso folds it).
    let app = String::from_utf8_lossy(&pvd[574..702]).to_ascii_lowercase();
    let arch = (app.trim_end().strip_prefix(APP_ID_PREFIX)).and_then(Arch::from_oci);
    Ok(Some(arch))
}
