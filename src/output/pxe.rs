//! `--format pxe`: a directory to boot from the network, with no disk. The kernel and its
//! initramfs, the squashfs root wrapped as a second initramfs (`root.cpio`: the loader fetches
//! it with the kernel, the kernel unpacks it into RAM, and the initramfs checks its sha256 from
//! the command line before it mounts it), and a boot script for each loader: iPXE (`boot.ipxe`,
//! by TFTP or HTTP, its paths relative to where it was fetched), PXELINUX
//! (`pxelinux.cfg/default`) and GRUB (`grub/grub.cfg`), these two with the set at the TFTP
//! server's root. `SHA256SUMS` lists every file.
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::io::Write;
use std::path::Path;

pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const ROOT: &str = "root.cpio";
pub const IPXE_SCRIPT: &str = "boot.ipxe";
/// Where the live boot method looks for the fetched root (templates/guest/initramfs-live).
const ROOT_IN_INITRAMFS: &str = "c2vm/root.squashfs";

/// What goes into the set.
pub struct Parts<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub root: &'a Path,
    /// The live medium's command line (`boot=c2vm-live …`).
    pub cmdline: &'a str,
}

/// Write the set into the empty directory `dir`; dated `epoch` where given.
pub fn write(dir: &Path, parts: &Parts, epoch: Option<i64>) -> Result<()> {
    let write = |name: &str, data: &[u8]| -> Result<()> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
    };
    write(KERNEL, parts.kernel)?;
    write(INITRD, parts.initrd)?;
    let root_sha256 = wrap_root(parts.root, &dir.join(ROOT), epoch)?;
    // The EFI stub reads its initrds by these names from iPXE; on BIOS iPXE hands them all over.
    let cmdline = format!(
        "initrd={INITRD} initrd={ROOT} {} c2vm.fetched c2vm.sha256={root_sha256}",
        parts.cmdline
    );
    write(
        IPXE_SCRIPT,
        format!(
            "#!ipxe\n# Written by c2vm: boots this set from where this script was fetched.\n\
             kernel {KERNEL} {cmdline}\ninitrd {INITRD}\ninitrd {ROOT}\nboot\n"
        )
        .as_bytes(),
    )?;
    write(
        "pxelinux.cfg/default",
        format!(
            "# Written by c2vm: the set at the TFTP server's root.\nDEFAULT c2vm\n\
             LABEL c2vm\n  KERNEL {KERNEL}\n  INITRD {INITRD},{ROOT}\n  APPEND {}\n",
            cmdline.replacen(&format!("initrd={INITRD} initrd={ROOT} "), "", 1)
        )
        .as_bytes(),
    )?;
    write(
        "grub/grub.cfg",
        format!(
            "# Written by c2vm: the set at the TFTP server's root.\nset timeout=0\n\
             menuentry c2vm {{\n  linux /{KERNEL} {}\n  initrd /{INITRD} /{ROOT}\n}}\n",
            cmdline.replacen(&format!("initrd={INITRD} initrd={ROOT} "), "", 1)
        )
        .as_bytes(),
    )?;
    let mut sums = String::new();
    for name in [
        KERNEL,
        INITRD,
        ROOT,
        IPXE_SCRIPT,
        "pxelinux.cfg/default",
        "grub/grub.cfg",
    ] {
        sums.push_str(&format!(
            "{}  {name}\n",
            super::file_sha256(&dir.join(name))?
        ));
    }
    write("SHA256SUMS", sums.as_bytes())
}

/// `root.cpio`: the squashfs as `c2vm/root.squashfs` in a newc archive (what an initramfs is),
/// written from the file without holding it. Returns the squashfs's sha256.
fn wrap_root(squashfs: &Path, out: &Path, epoch: Option<i64>) -> Result<String> {
    let mut root =
        std::fs::File::open(squashfs).with_context(|| format!("opening {}", squashfs.display()))?;
    let len = root.metadata()?.len();
    let Ok(size) = u32::try_from(len) else {
        bail!("the root image is {} MiB; a network boot set's root travels as an initramfs (cpio), which holds files under 4 GiB: make the image smaller, or write --format iso", len >> 20);
    };
    let mtime = epoch.map_or(0, |e| e.clamp(0, i64::from(u32::MAX)) as u32);
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    let dir = cpio::newc::Builder::new("c2vm")
        .ino(1)
        .mode(0o040755)
        .nlink(2)
        .mtime(mtime);
    dir.write(&mut file, 0).finish()?;
    let mut hasher = sha2::Sha256::new();
    let mut entry = cpio::newc::Builder::new(ROOT_IN_INITRAMFS)
        .ino(2)
        .mode(0o100644)
        .nlink(1)
        .mtime(mtime)
        .write(&mut file, size);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut root, &mut buf)
            .with_context(|| format!("reading {}", squashfs.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        entry.write_all(&buf[..n])?;
    }
    entry.finish()?;
    cpio::newc::trailer(&mut file)?;
    file.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}
