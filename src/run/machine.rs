//! Which machine boots the disk: firmware (SeaBIOS, OVMF or AAVMF, with Secure Boot or not, and
//! where the host keeps them), machine type, accelerator (KVM where it works, else TCG) and the
//! QEMU binary, from the options and the disk's architecture.
use super::options::{Accel, BootPathArgs, Firmware, Machine, MachineArgs};
use super::qemu_args::{Board, Pflash};
use crate::arch::Arch;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const OVMF_CODE: &[&str] = &[
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
];
const OVMF_VARS: &[&str] = &[
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/share/OVMF/OVMF_VARS.fd",
];
/// Debian's OVMF with Secure Boot (it needs SMM), and the variable store with Microsoft's keys
/// enrolled and Secure Boot on: a firmware as the clouds ship it. Code and store come in pairs of
/// one size (4 MiB, or the older 2 MiB).
const OVMF_SECURE: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS.ms.fd",
    ),
];
/// AAVMF, the arm64 build of the same firmware (Debian's qemu-efi-aarch64): code and variable
/// store, and the pair with Secure Boot on and Microsoft's keys enrolled.
const AAVMF: (&str, &str) = (
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/usr/share/AAVMF/AAVMF_VARS.fd",
);
const AAVMF_SECURE: (&str, &str) = (
    "/usr/share/AAVMF/AAVMF_CODE.ms.fd",
    "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
);

/// What the flags alone rule out, before the disk is read.
pub fn check_flags(vm: &MachineArgs, boot_path: &BootPathArgs) -> Result<()> {
    if vm.firmware != Some(Firmware::UefiSecure) {
        return Ok(());
    }
    if vm.machine == Some(Machine::Pc) {
        bail!(
            "--firmware uefi-secure needs --machine q35: Secure Boot firmware runs in SMM, \
             which QEMU's pc machine does not give it"
        );
    }
    if boot_path.direct() {
        bail!(
            "--direct-kernel and --boot-log skip the loaders that --firmware uefi-secure is \
             there to check; drop one of them"
        );
    }
    Ok(())
}

/// The machine chosen for a disk of `arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub firmware: Firmware,
    pub board: Board,
    pub kvm: bool,
    /// `qemu-system-x86_64` or `qemu-system-aarch64`.
    pub binary: &'static str,
}

impl Choice {
    pub fn secure_boot(&self) -> bool {
        self.firmware == Firmware::UefiSecure
    }
}

/// Firmware, machine type and accelerator for `disk`, an `arch` disk; its QEMU must be there.
pub fn choose(vm: &MachineArgs, arch: Arch, disk: &Path) -> Result<Choice> {
    let firmware = match (arch, vm.firmware) {
        (Arch::Arm64, Some(Firmware::Bios)) => bail!(
            "--firmware bios: {} is an arm64 disk, and arm64 machines have no BIOS; use --firmware uefi or uefi-secure",
            disk.display()
        ),
        (_, Some(firmware)) => firmware,
        (Arch::Amd64, None) => Firmware::Bios,
        (Arch::Arm64, None) => Firmware::Uefi,
    };
    let board = match (arch, vm.machine) {
        (Arch::Arm64, Some(machine)) => bail!(
            "--machine {machine:?} is a PC's; {} is an arm64 disk, which boots on QEMU's virt machine: drop --machine",
            disk.display()
        ),
        (Arch::Arm64, None) => Board::Virt,
        (Arch::Amd64, Some(Machine::Pc)) => Board::Pc,
        (Arch::Amd64, _) => Board::Q35,
    };
    let binary = qemu_binary(arch);
    crate::cmd::require(binary)?;
    let kvm = match vm.accel {
        Accel::Kvm => {
            if !Path::new("/dev/kvm").exists() {
                bail!("--accel kvm: /dev/kvm does not exist; use --accel tcg");
            }
            if Arch::host() != Some(arch) {
                bail!("--accel kvm: {} is an {arch} disk, and KVM runs only the host's own architecture; use --accel tcg", disk.display());
            }
            true
        }
        Accel::Tcg => false,
        Accel::Auto => kvm_usable(arch),
    };
    Ok(Choice {
        firmware,
        board,
        kvm,
        binary,
    })
}

/// The QEMU that emulates `arch`'s machines.
fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86_64",
        Arch::Arm64 => "qemu-system-aarch64",
    }
}

/// KVM only where it works: the disk is the host's architecture, /dev/kvm opens AND (on x86) a
/// hardware module is loaded. This machine's software `kvm_pvm` crashes on firmware code, so it
/// counts as no KVM.
fn kvm_usable(arch: Arch) -> bool {
    let hardware = match arch {
        Arch::Amd64 => ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|m| Path::new(m).exists()),
        Arch::Arm64 => true, // arm64's KVM is the kernel's own, with no vendor module
    };
    Arch::host() == Some(arch)
        && hardware
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// A UEFI firmware for this run: its code, and a private copy of its variable store that lives
/// as long as this does.
pub struct Uefi {
    pub pflash: Pflash,
    _vars: tempfile::NamedTempFile,
}

/// The UEFI firmware `choice` needs, None for BIOS.
pub fn uefi(choice: &Choice, arch: Arch) -> Result<Option<Uefi>> {
    if choice.firmware == Firmware::Bios {
        return Ok(None);
    }
    let (code, template) = firmware_files(arch, choice.secure_boot())?;
    let copy = tempfile::Builder::new()
        .prefix("c2vm-ovmf-vars.")
        .tempfile()
        .context("creating a UEFI variable store")?;
    std::fs::copy(&template, copy.path())
        .with_context(|| format!("copying {}", template.display()))?;
    Ok(Some(Uefi {
        pflash: Pflash {
            code,
            vars: copy.path().to_path_buf(),
        },
        _vars: copy,
    }))
}

/// The firmware's code and the template of its variable store, as installed on this host.
fn firmware_files(arch: Arch, secure: bool) -> Result<(PathBuf, PathBuf)> {
    if arch == Arch::Arm64 {
        let (code, vars) = if secure { AAVMF_SECURE } else { AAVMF };
        for file in [code, vars] {
            if !Path::new(file).exists() {
                bail!(
                    "no AAVMF firmware for arm64 found ({file}); {}",
                    crate::host_tools::install_hint(file)
                );
            }
        }
        return Ok((PathBuf::from(code), PathBuf::from(vars)));
    }
    if secure {
        let (code, vars) = OVMF_SECURE
            .iter()
            .find(|(code, vars)| Path::new(code).exists() && Path::new(vars).exists())
            .with_context(|| {
                format!(
                    "no Secure Boot OVMF found ({} and {}); {}",
                    OVMF_SECURE[0].0,
                    OVMF_SECURE[0].1,
                    crate::host_tools::install_hint(OVMF_SECURE[0].0)
                )
            })?;
        return Ok((PathBuf::from(code), PathBuf::from(vars)));
    }
    let code = first_existing(OVMF_CODE).with_context(|| {
        format!(
            "no OVMF firmware found (/usr/share/OVMF/OVMF_CODE*.fd); {}",
            crate::host_tools::install_hint(OVMF_CODE[0])
        )
    })?;
    let template = first_existing(OVMF_VARS).with_context(|| {
        format!(
            "no OVMF variable store found; {}",
            crate::host_tools::install_hint(OVMF_VARS[0])
        )
    })?;
    Ok((code, template))
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_firmware_names_ovmf() {
        for file in [
            OVMF_CODE[0],
            OVMF_VARS[0],
            OVMF_SECURE[0].0,
            OVMF_SECURE[0].1,
        ] {
            let hint = crate::host_tools::install_hint(file);
            assert!(hint.ends_with("`apt-get install ovmf`"), "{hint}");
        }
    }
}
