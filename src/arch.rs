//! The one place for what differs between the machines c2vm makes disks for: every stage asks the
//! [`Arch`] its disk is for (the image's, `--platform`'s, or read from a disk's root partition
//! type) instead of comparing strings of its own. Depends on nothing else in c2vm.
use anyhow::{bail, Result};

/// A CPU architecture c2vm boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64: BIOS and UEFI.
    Amd64,
    /// AArch64: UEFI only (QEMU's `virt` machine, the clouds' Graviton/Ampere machines).
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The machine c2vm runs on, where it is one of these.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The host's architecture, or amd64 on a host c2vm makes no disks for: what a choice left
    /// open falls back to (`docker pull` picks the host's platform the same way).
    pub fn host_or_default() -> Arch {
        Arch::host().unwrap_or(Arch::Amd64)
    }

    /// The OCI (and Debian) name: `amd64`, `arm64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Docker Hub's namespace for the official images built for this architecture alone
    /// (`arm64v8/debian`): a name that holds one architecture on any host, where a plain
    /// `debian` would be the host's, or whichever was pulled last.
    pub fn official_images_namespace(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64v8",
        }
    }

    /// The OCI platform, as `--platform` and the engines take it.
    pub fn platform(self) -> String {
        format!("linux/{}", self.name())
    }

    /// An image config's or index entry's architecture (`aarch64`, as some tools write, too).
    pub fn from_oci(name: &str) -> Option<Arch> {
        match name {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// `--platform linux/arm64` (docker's spelling; `linux/arm64/v8` too).
    pub fn parse_platform(text: &str) -> Result<Arch> {
        let parts: Vec<&str> = text.split('/').collect();
        let arch = match parts.as_slice() {
            ["linux", arch] | ["linux", arch, _] => Arch::from_oci(arch),
            _ => None,
        };
        match arch {
            Some(arch) => Ok(arch),
            None => bail!(
                "--platform {text}: c2vm boots {}; use one of those",
                Arch::ALL.map(Arch::platform).join(" or ")
            ),
        }
    }

    /// `uname -m` in the guest.
    pub fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The ELF `e_machine` of the architecture's programs.
    fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,  // EM_X86_64
            Arch::Arm64 => 183, // EM_AARCH64
        }
    }

    /// The architecture of a 64-bit little-endian ELF file from its first 20 bytes.
    pub fn of_elf(header: &[u8]) -> Option<Arch> {
        if header.len() < 20 || &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return None;
        }
        let machine = u16::from_le_bytes([header[18], header[19]]);
        Arch::ALL.into_iter().find(|a| a.elf_machine() == machine)
    }

    /// The GPT type of the root partition (the Discoverable Partitions Specification's), which
    /// is also how `c2vm run` tells a disk's architecture.
    pub fn root_partition_type(self) -> &'static str {
        match self {
            Arch::Amd64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            Arch::Arm64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        }
    }

    /// The architecture whose root partition type this is.
    pub fn of_root_partition_type(guid: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.root_partition_type().eq_ignore_ascii_case(guid))
    }

    /// The same type as systemd-repart's `repart.d` names it.
    pub fn repart_root_type(self) -> &'static str {
        match self {
            Arch::Amd64 => "root-x86-64",
            Arch::Arm64 => "root-arm64",
        }
    }

    /// The suffix of the UEFI file names: `BOOTX64.EFI`, `shimx64.efi`, `grubaa64.efi`.
    pub fn efi_suffix(self) -> &'static str {
        match self {
            Arch::Amd64 => "x64",
            Arch::Arm64 => "aa64",
        }
    }

    /// What UEFI firmware boots from a disk with no boot entries of its own.
    pub fn uefi_default(self) -> String {
        format!("EFI/BOOT/BOOT{}.EFI", self.efi_suffix().to_uppercase())
    }

    /// GRUB's platform name for UEFI (`grub-mkstandalone -O`, `/usr/lib/grub/<it>`).
    pub fn grub_efi_platform(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-efi",
            Arch::Arm64 => "arm64-efi",
        }
    }

    /// The serial console the VM's kernel writes to: the 16550 of PCs, the PL011 of QEMU's and
    /// the clouds' arm64 machines.
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// Whether the machines have a BIOS (SYSLINUX, GRUB's i386-pc stage, the MBR's boot code).
    pub fn has_bios(self) -> bool {
        self == Arch::Amd64
    }

    /// The Rust target c2vm-init is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_as_docker_spells_them() {
        assert_eq!(Arch::parse_platform("linux/arm64").unwrap(), Arch::Arm64);
        assert_eq!(Arch::parse_platform("linux/arm64/v8").unwrap(), Arch::Arm64);
        assert_eq!(Arch::parse_platform("linux/amd64").unwrap(), Arch::Amd64);
        let err = Arch::parse_platform("linux/riscv64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c2vm boots linux/amd64 or linux/arm64"),
            "{err}"
        );
        assert!(Arch::parse_platform("windows/amd64").is_err());
    }

    #[test]
    fn names_follow_the_specs() {
        assert_eq!(Arch::Arm64.uefi_default(), "EFI/BOOT/BOOTAA64.EFI");
        assert_eq!(Arch::Amd64.uefi_default(), "EFI/BOOT/BOOTX64.EFI");
        for arch in Arch::ALL {
            assert_eq!(
                Arch::of_root_partition_type(&arch.root_partition_type().to_lowercase()),
                Some(arch)
            );
        }
        assert_eq!(
            Arch::Arm64.root_partition_type(),
            gpt::partition_types::LINUX_ROOT_ARM_64
                .guid
                .to_string()
                .to_uppercase()
        );
        assert_eq!(
            Arch::Amd64.root_partition_type(),
            gpt::partition_types::LINUX_ROOT_X64
                .guid
                .to_string()
                .to_uppercase()
        );
    }

    #[test]
    fn elf_headers_name_their_machine() {
        let mut header = *b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\xb7\0";
        assert_eq!(Arch::of_elf(&header), Some(Arch::Arm64));
        header[18] = 62;
        assert_eq!(Arch::of_elf(&header), Some(Arch::Amd64));
        header[4] = 1; // 32-bit
        assert_eq!(Arch::of_elf(&header), None);
        assert_eq!(Arch::of_elf(b"#!/bin/sh\n"), None);
    }
}
