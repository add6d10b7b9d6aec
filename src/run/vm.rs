//! The VM of one run, step by step: the flags checked, the disk probed, the machine chosen, the
//! boot's files made (firmware store, direct kernel), QEMU's arguments built from them, and those
//! files kept until QEMU is gone. Then QEMU starts, at a terminal or under a script.
use super::console::Console;
use super::direct::DirectBoot;
use super::disk_probe::{self, ImageInfo};
use super::machine::{self, Choice, Uefi};
use super::medium::{self, Medium};
use super::options::{Firmware, RunArgs};
use super::qemu_args::{self, Attachment, VmSpec};
use super::terminal;
use crate::arch::Arch;
use crate::disk::luks::Passphrase;
use crate::instance::{self, Instance};
use crate::progress::note;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Vm {
    /// The disk's machine.
    pub arch: Arch,
    /// `qemu-system-x86_64` or `qemu-system-aarch64`.
    binary: &'static str,
    args: Vec<String>,
    files: VmFiles,
    /// `--firmware uefi-secure`: a scripted run ends at once when the firmware refuses the disk.
    secure_boot: bool,
}

/// Files QEMU uses that must live as long as it runs.
struct VmFiles {
    /// The private copy of the UEFI variable store.
    _uefi: Option<Uefi>,
    /// The kernel and initramfs of a direct boot (`--direct-kernel`, `--boot-log`).
    _direct: Option<DirectBoot>,
    /// What the boot attaches (the credentials' files, the cloud-init seed), removed with it.
    _attached: Vec<Box<dyn Attachment>>,
}

impl Vm {
    /// `attached`: the settings for this boot and the like, written and checked.
    /// `overlay`: for a VM in the background, where its writes go when they are not kept
    /// (`--persist` off): a qcow2 file over the disk, in the VM's directory, so `c2vm save` can
    /// take them along (QEMU's `-snapshot` keeps them where nothing else can).
    pub fn prepare(
        a: &RunArgs,
        disk: &Path,
        attached: Vec<Box<dyn Attachment>>,
        overlay: Option<&Path>,
    ) -> Result<Vm> {
        machine::check_flags(&a.vm, &a.boot_path)?;
        let forwards =
            a.vm.publish
                .iter()
                .map(|p| qemu_args::parse_publish(p))
                .collect::<Result<Vec<_>>>()?;
        let (medium, live_arch) = medium::probe(a, disk)?;
        let (arch, info) = match live_arch {
            Some(arch) => (arch, None),
            None => {
                let info = disk_probe::image_info(disk)?;
                let (arch, encrypted) = disk_probe::disk_arch(disk, &info.format)?;
                check_encryption(a, disk, encrypted)?;
                (arch, Some(info))
            }
        };
        let choice = machine::choose(&a.vm, arch, disk)?;
        announce(disk, arch, info.as_ref(), &medium, &choice);
        let disk = disk
            .canonicalize()
            .with_context(|| format!("resolving {}", disk.display()))?;
        let format = info.map_or_else(|| "raw".to_string(), |i| i.format);
        let direct = match a.boot_path.direct() {
            true => Some(DirectBoot::from_disk(&disk, &format, a.boot_path.boot_log)?),
            false => None,
        };
        let uefi = machine::uefi(&choice, arch)?;
        for attachment in &attached {
            note(&format!(
                "c2vm: {}: {}",
                attachment.what(),
                attachment.names().join(", ")
            ));
        }
        // A live medium is read-only: nothing to keep, nothing to overlay.
        let (disk, format, persist) = match (overlay, a.vm.persist, &medium) {
            (Some(overlay), false, Medium::Disk) => {
                disk_probe::create_overlay(overlay, &disk, &format)?;
                (overlay.to_path_buf(), "qcow2".to_string(), true)
            }
            _ => (disk, format, a.vm.persist),
        };
        let spec = VmSpec {
            arch,
            board: choice.board,
            uefi: uefi.as_ref().map(|u| u.pflash.clone()),
            secure_boot: choice.secure_boot(),
            kvm: choice.kvm,
            cpu_model: a.vm.cpu_model.clone(),
            memory_mib: a.vm.memory,
            cpus: a.vm.cpus,
            disk,
            format,
            persist,
            medium,
            direct: direct.as_ref().map(|d| d.boot.clone()),
            forwards,
        };
        let refs: Vec<&dyn Attachment> = attached.iter().map(|a| a.as_ref()).collect();
        let args = qemu_args::qemu_args(&spec, &refs);
        Ok(Vm {
            arch,
            binary: choice.binary,
            args,
            files: VmFiles {
                _uefi: uefi,
                _direct: direct,
                _attached: attached,
            },
            secure_boot: spec.secure_boot,
        })
    }

    /// With `luks`, c2vm types the passphrase at the encrypted root's prompt (see `terminal`).
    pub fn run_interactive(self, luks: Option<&Passphrase>) -> Result<i32> {
        let status = terminal::run(self.binary, &self.args, luks);
        drop(self.files);
        status
    }

    pub fn start_scripted(self, echo: bool) -> Result<Console> {
        let mut cmd = Command::new(self.binary);
        cmd.args(&self.args)
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        log::debug!("running: {} {}", self.binary, self.args.join(" "));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.binary))?;
        Console::new(child, echo, Box::new(self.files), self.secure_boot)
    }
}

impl Vm {
    /// `--firmware uefi-secure`: Secure Boot's refusal on the console ends a wait.
    pub fn secure_boot(&self) -> bool {
        self.secure_boot
    }

    /// `c2vm run -d`: QEMU in the background for `vm` (see `instance::start::spawn`). The
    /// boot's files were made under the VM's directory (TMPDIR), so they are left there for
    /// QEMU, and go when the VM is removed.
    pub fn start_detached(self, vm: &Instance) -> Result<Child> {
        let child = instance::start::spawn(vm, self.binary, &self.args, &[])?;
        std::mem::forget(self.files);
        Ok(child)
    }
}

/// The passphrase is given exactly when the root is encrypted, and a scripted login needs it.
fn check_encryption(a: &RunArgs, disk: &Path, encrypted: bool) -> Result<()> {
    match (encrypted, a.boot_path.luks_passphrase_file.is_some()) {
        (false, true) => bail!(
            "--luks-passphrase-file: the root of {} is not encrypted (no LUKS header); drop the option",
            disk.display()
        ),
        (true, false) if a.script.exec.is_some() => bail!(
            "the root of {} is encrypted: give --luks-passphrase-file FILE, which c2vm types at the guest's prompt (--exec logs in only after that)",
            disk.display()
        ),
        (true, false) => note(&format!(
            "c2vm: the root of {} is encrypted: the guest asks for its passphrase on the console (--luks-passphrase-file FILE types it)",
            disk.display()
        )),
        _ => {}
    }
    Ok(())
}

/// One line on what boots, and how.
fn announce(disk: &Path, arch: Arch, info: Option<&ImageInfo>, medium: &Medium, choice: &Choice) {
    let what = match (info, medium) {
        (Some(info), _) => format!("{}, {} MiB", info.format, info.virtual_size >> 20),
        (None, Medium::Usb) => "ISO as a USB stick".to_string(),
        (None, Medium::Net(_)) => "network boot set, no disk".to_string(),
        (None, _) => "ISO as a CD".to_string(),
    };
    note(&format!(
        "c2vm: booting {} ({arch}, {what}, {}) with {}",
        disk.display(),
        match choice.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
            Firmware::UefiSecure => "UEFI with Secure Boot enforced",
        },
        match (choice.kvm, Arch::host() == Some(arch)) {
            (true, _) => "KVM",
            (false, true) => "TCG (software emulation: no usable KVM here)",
            (false, false) => "TCG (software emulation of another architecture)",
        }
    ));
}
