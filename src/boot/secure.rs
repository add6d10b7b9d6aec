//! Secure Boot: shim (signed by Microsoft) → the distribution's signed loader → its signed
//! kernel, every signed file taken from the guest's own tree, so the three come from one release
//! (shim's SBAT policy rejects a loader older than it expects) and the guest's upgrades keep them
//! in step (`c2vm-update-boot`).
//!
//! On the ESP (x86-64 names; `aa64` for arm64): `EFI/BOOT/BOOTX64.EFI` is shim;
//! `EFI/BOOT/grubx64.efi` is the loader shim runs by that name (systemd-boot or GRUB);
//! `EFI/BOOT/mmx64.efi` is MokManager. No `fbx64.efi`: shim runs the fallback whenever one is
//! beside it. The loader verifies the kernel through shim's
//! protocol (the distribution's key is built into its shim); the initramfs is not verified.
use super::Bootloader;
use crate::arch::Arch;
use anyhow::{bail, Result};
use std::sync::Arc;

/// `--secure-boot`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureBoot {
    /// The signed chain where the kernel is signed and the image has shim and a signed loader;
    /// else the unsigned loaders, said in the report
    Auto,
    /// The signed chain, or fail before writing the disk
    On,
    /// The unsigned loaders (boots only where Secure Boot is off)
    Off,
}

/// Where Debian's packages put the signed binaries, as keys of the guest's tree: shim-signed,
/// shim-helpers-ARCH-signed, systemd-boot-efi-ARCH-signed, grub-efi-ARCH-signed.
struct Signed {
    shim: String,
    mok_manager: String,
    systemd_boot: String,
    grub: String,
}

impl Signed {
    fn of(arch: Arch) -> Signed {
        let s = arch.efi_suffix();
        Signed {
            shim: format!("usr/lib/shim/shim{s}.efi.signed"),
            mok_manager: format!("usr/lib/shim/mm{s}.efi.signed"),
            systemd_boot: format!("usr/lib/systemd/boot/efi/systemd-boot{s}.efi.signed"),
            grub: format!(
                "usr/lib/grub/{}-signed/grub{s}.efi.signed",
                arch.grub_efi_platform()
            ),
        }
    }

    fn all(&self) -> [&str; 4] {
        [
            &self.shim,
            &self.mok_manager,
            &self.systemd_boot,
            &self.grub,
        ]
    }

    fn loader(&self, bootloader: Bootloader) -> &str {
        match bootloader {
            Bootloader::Syslinux => &self.systemd_boot,
            Bootloader::Grub => &self.grub,
        }
    }
}

/// The loader's name on the ESP beside shim (which is the firmware's default): the name shim
/// looks for.
pub fn loader_on_esp(arch: Arch) -> String {
    format!("EFI/BOOT/grub{}.efi", arch.efi_suffix())
}

/// MokManager's name on the ESP, the name shim looks for.
pub fn mok_manager_on_esp(arch: Arch) -> String {
    format!("EFI/BOOT/mm{}.efi", arch.efi_suffix())
}

/// The files the stream edit copies as they pass, for [`decide`]: every architecture's (the
/// edit needs not know which; an image holds its own only).
pub fn is_candidate(key: &[u8]) -> bool {
    Arch::ALL
        .iter()
        .any(|arch| Signed::of(*arch).all().iter().any(|p| p.as_bytes() == key))
}

/// The guest paths of the signed files, for the guest's update hook: (shim, MokManager,
/// systemd-boot, GRUB).
pub fn guest_paths(arch: Arch) -> [String; 4] {
    Signed::of(arch).all().map(|p| format!("/{p}"))
}

/// The signed binaries for the ESP, from one tree.
pub struct Chain {
    pub shim: Arc<[u8]>,
    pub mok_manager: Arc<[u8]>,
    /// systemd-boot or GRUB.
    pub loader: Arc<[u8]>,
    /// Which, for the report.
    loader_name: &'static str,
    /// Where each came from: (guest path, the Debian package that puts it there), in the order
    /// shim, MokManager, loader.
    sources: [(String, String); 3],
}

/// One signed file of the chain on the ESP, and where it came from, for the SBOM.
pub struct ChainFile<'a> {
    /// `shim`, `MokManager`, `systemd-boot` or `GRUB`.
    pub name: &'static str,
    /// Its path on the ESP.
    pub esp: String,
    /// Where the stream edit copied it from in the guest, e.g. `usr/lib/shim/shimx64.efi.signed`.
    pub guest: &'a str,
    /// The Debian package that installs it there (`shim-signed`, ...).
    pub package: &'a str,
    pub data: &'a [u8],
}

impl Chain {
    /// shim, MokManager and the loader, by their names on the ESP.
    pub fn files(&self, arch: Arch) -> Vec<ChainFile<'_>> {
        let esp = [
            arch.uefi_default(),
            mok_manager_on_esp(arch),
            loader_on_esp(arch),
        ];
        let data = [&self.shim, &self.mok_manager, &self.loader];
        let names = ["shim", "MokManager", self.loader_name];
        esp.into_iter()
            .zip(data)
            .zip(&self.sources)
            .zip(names)
            .map(|(((esp, data), (guest, package)), name)| ChainFile {
                name,
                esp,
                guest,
                package,
                data,
            })
            .collect()
    }
}

/// What the disk gets: the chain, or the unsigned loaders and why.
pub enum Decision {
    Signed(Chain),
    Unsigned(String),
}

impl Decision {
    /// The chain, where the disk gets one.
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            Decision::Signed(chain) => Some(chain),
            Decision::Unsigned(_) => None,
        }
    }

    /// For the report and `--json`: whether the chain is there, and what it is or why not.
    pub fn summary(&self) -> (bool, String) {
        match self {
            Decision::Signed(chain) => (
                true,
                format!(
                    "shim, then the image's signed {} and kernel",
                    chain.loader_name
                ),
            ),
            Decision::Unsigned(why) => (false, why.clone()),
        }
    }
}

/// The chain, where `choice` and the guest allow it. `kernel` is the kernel the disk boots (its
/// guest path, its bytes); `file` gives what the stream edit copied of [`is_candidate`]'s files.
/// `on` without a chain fails here, before the ESP is written.
pub fn decide(
    choice: SecureBoot,
    bootloader: Bootloader,
    arch: Arch,
    kernel: (&str, &[u8]),
    file: impl Fn(&str) -> Option<Arc<[u8]>>,
) -> Result<Decision> {
    if choice == SecureBoot::Off {
        return Ok(Decision::Unsigned("--secure-boot off".to_string()));
    }
    let why = match chain(bootloader, arch, kernel, &file) {
        Ok(chain) => return Ok(Decision::Signed(chain)),
        Err(why) => why,
    };
    if choice == SecureBoot::On {
        bail!("--secure-boot on: {why}; use --secure-boot auto for a disk that boots where Secure Boot is off");
    }
    Ok(Decision::Unsigned(why))
}

fn chain(
    bootloader: Bootloader,
    arch: Arch,
    (kernel_path, kernel): (&str, &[u8]),
    file: &impl Fn(&str) -> Option<Arc<[u8]>>,
) -> std::result::Result<Chain, String> {
    if !is_signed(kernel) {
        return Err(format!("the kernel {kernel_path} carries no signature"));
    }
    let signed = |path: &str, package: &str| {
        match file(path) {
        Some(data) if is_signed(&data) => Ok(data),
        Some(_) => Err(format!("/{path} carries no signature")),
        None => Err(format!(
            "the image has no /{path} (Debian's {package}, which c2vm's Debian template and generic bundle install)"
        )),
    }
    };
    let paths = Signed::of(arch);
    let loader_path = paths.loader(bootloader);
    let (loader_name, loader_package) = match bootloader {
        Bootloader::Syslinux => ("systemd-boot", format!("systemd-boot-efi-{arch}-signed")),
        Bootloader::Grub => ("GRUB", format!("grub-efi-{arch}-signed")),
    };
    let loader = match bootloader {
        Bootloader::Syslinux => signed(
            loader_path,
            &format!("{loader_package}, from Debian 13; --bootloader grub takes GRUB's"),
        )?,
        Bootloader::Grub => signed(loader_path, &loader_package)?,
    };
    let mok_package = format!("shim-helpers-{arch}-signed");
    Ok(Chain {
        shim: signed(&paths.shim, "shim-signed")?,
        mok_manager: signed(&paths.mok_manager, &mok_package)?,
        loader,
        loader_name,
        sources: [
            (paths.shim.clone(), "shim-signed".to_string()),
            (paths.mok_manager.clone(), mok_package),
            (loader_path.to_string(), loader_package),
        ],
    })
}

/// Whether a PE image (a kernel's EFI stub, an EFI loader) carries an Authenticode signature:
/// a non-empty certificate table. Who signed it, the firmware and shim check at boot.
pub fn is_signed(data: &[u8]) -> bool {
    use object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY;
    use object::read::pe::PeFile64;
    use object::LittleEndian as LE;
    PeFile64::<&[u8]>::parse(data).is_ok_and(|pe| {
        pe.data_directory(IMAGE_DIRECTORY_ENTRY_SECURITY)
            .is_some_and(|dir| dir.size.get(LE) > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_signed_binaries_are_candidates() {
        let amd64 = Signed::of(Arch::Amd64);
        assert_eq!(amd64.shim, "usr/lib/shim/shimx64.efi.signed");
        assert_eq!(
            amd64.grub,
            "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
        );
        let arm64 = Signed::of(Arch::Arm64);
        assert_eq!(
            arm64.systemd_boot,
            "usr/lib/systemd/boot/efi/systemd-bootaa64.efi.signed"
        );
        assert_eq!(
            arm64.grub,
            "usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed"
        );
        assert_eq!(loader_on_esp(Arch::Arm64), "EFI/BOOT/grubaa64.efi");
        assert_eq!(mok_manager_on_esp(Arch::Amd64), "EFI/BOOT/mmx64.efi");
        for path in amd64.all().into_iter().chain(arm64.all()) {
            assert!(is_candidate(path.as_bytes()), "{path}");
        }
        assert!(!is_candidate(b"usr/lib/shim/shimx64.efi"));
        assert!(!is_candidate(b"/usr/lib/shim/shimx64.efi.signed"));
    }

    #[test]
    fn what_is_not_a_signed_pe_is_unsigned() {
        assert!(!is_signed(b""));
        assert!(!is_signed(b"MZ not really a PE file"));
        assert!(!is_signed(&[0u8; 4096]));
    }

    #[test]
    fn off_and_an_unsigned_kernel_give_the_unsigned_loaders_and_on_fails() {
        let none = |_: &str| None;
        let d = decide(
            SecureBoot::Off,
            Bootloader::Syslinux,
            Arch::Amd64,
            ("/boot/k", b""),
            none,
        )
        .unwrap();
        assert_eq!(d.summary(), (false, "--secure-boot off".to_string()));
        let d = decide(
            SecureBoot::Auto,
            Bootloader::Grub,
            Arch::Arm64,
            ("/boot/k", b"x"),
            none,
        )
        .unwrap();
        assert_eq!(
            d.summary(),
            (false, "the kernel /boot/k carries no signature".to_string())
        );
        let err = decide(
            SecureBoot::On,
            Bootloader::Grub,
            Arch::Amd64,
            ("/boot/k", b"x"),
            none,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").starts_with(
                "--secure-boot on: the kernel /boot/k carries no signature; use --secure-boot auto"
            ),
            "{err:#}"
        );
    }
}
