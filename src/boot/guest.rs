//! The guest's side of booting: what turns a container's tree into a machine's (its init, its
//! settings, the app as a service, the kernel it boots and its Secure Boot chain), the kernel
//! command line the loaders and the guest's own kernel updates share, and the hooks that keep
//! the ESP in step with the guest's packages.
use super::{secure, texts, Bootloader};
use crate::arch::Arch;
use crate::credentials::Login;
use crate::disk::esp::EspFile;
use crate::disk::luks;
use crate::progress;
use crate::rootfs::app::{self, GuestApp};
use crate::rootfs::boot_files::{self, BootFiles};
use crate::rootfs::init::{c2vm, InitPlan, InitSystem};
use crate::rootfs::setup::{self, GuestConfig, GuestSettings, LuksRoot};
use crate::rootfs::tree::{GuestTree, Perms};
use crate::rootfs::{edit, init, packages};
use anyhow::{bail, Context, Result};
use secure::{Decision, SecureBoot};

/// What c2vm makes of the container: the options that shape the machine, and the disk's
/// identifiers the guest is told.
pub struct MachineSpec<'a> {
    pub settings: &'a GuestSettings,
    pub init: &'a InitPlan,
    pub app: &'a GuestApp,
    pub arch: Arch,
    pub bootloader: Bootloader,
    pub secure_boot: SecureBoot,
    /// `--append-cmdline`, which comes last on the kernel command line.
    pub append_cmdline: &'a str,
    pub root_uuid: String,
    /// The ESP's FAT volume id as Linux shows it, `ABCD-1234`.
    pub esp_uuid: String,
    /// An encrypted root's LUKS UUID.
    pub luks_uuid: Option<String>,
    /// A live medium's volume label: the root is its read-only image under an overlay in RAM
    /// (the initramfs's `boot=c2vm-live`), not a partition.
    pub live: Option<String>,
}

/// What guest setup made of the tree.
pub struct Machine {
    /// The kernel the disk boots.
    pub kernel: BootFiles,
    /// The kernel command line of the loaders and of the guest's kernel updates.
    pub cmdline: String,
    /// The image's own units disabled in favour of the app service.
    pub disabled: Vec<String>,
    /// Whether c2vm-init is PID 1.
    pub c2vm_init: bool,
    /// The Secure Boot chain from the guest's files, or why the loaders are unsigned.
    pub secure: Decision,
    /// How the disk can be logged into (None: c2vm-init, no login).
    pub login: Option<Login>,
}
/// Turn the container's tree into a machine's: its init, settings and app service, the kernel
/// it boots, and the Secure Boot chain from its files.
pub fn make(guest: &mut GuestTree, spec: &MachineSpec) -> Result<Machine> {
    // What the image runs as PID 1, asked once: guest setup and the app service depend on it.
    let own_init = InitSystem::detect(guest)?;
    let has_command = !spec.app.process.argv.is_empty();
    let c2vm_init = init::c2vm_is_pid1(guest, spec.init.choice, has_command, own_init)?;
    // The loaders and the guest's own kernel updates boot with the same command line.
    let cmdline = kernel_cmdline(spec, c2vm_init);
    setup::configure(
        guest,
        &GuestConfig {
            settings: spec.settings,
            arch: spec.arch,
            root_uuid: spec.root_uuid.clone(),
            esp_uuid: spec.esp_uuid.clone(),
            luks: spec.luks_uuid.clone().map(|uuid| LuksRoot {
                uuid,
                mapping: luks::MAPPING,
            }),
            live: spec.live.is_some(),
        },
        own_init,
    )?;
    install_kernel_hooks(guest, &cmdline, spec.arch)?;
    let kernel = boot_files::find(guest)?;
    if spec.live.is_some() {
        check_live_initramfs(guest, &kernel)?;
    }
    let secure = secure_boot(guest, &kernel, spec)?;
    let mut machine = Machine {
        kernel,
        cmdline,
        disabled: Vec::new(),
        c2vm_init,
        secure,
        login: None,
    };
    if c2vm_init {
        let settings = c2vm::Settings {
            guest: spec.settings,
            restart: spec.init.restart,
            stop_timeout: spec.init.stop_timeout,
        };
        c2vm::install(guest, &spec.app.process, &settings, spec.arch)
            .context("installing c2vm-init")?;
        return Ok(machine);
    }
    if !setup::ensure_network(guest, own_init)? {
        progress::note("Note: the image has no DHCP client (systemd-networkd, NetworkManager or dhclient), so the VM will have no network");
    }
    machine.disabled = app::install(guest, spec.app, own_init)
        .context("making the image's ENTRYPOINT/CMD a boot service")?;
    if let Some(why) = init::agent::install(guest, own_init, spec.arch)? {
        progress::note(&format!("Note: no c2vm guest agent in this disk: {why}"));
    }
    let credentials = &spec.settings.credentials;
    machine.login = Some(Login {
        password: credentials.root_password_hash.is_some(),
        ssh_key: credentials.ssh_keys.is_some(),
        credentials_at_boot: own_init == InitSystem::Systemd,
        cloud_init: guest.exists("/usr/bin/cloud-init")?,
    });
    Ok(machine)
}

/// `--secure-boot`: the chain from the signed files the stream edit copied from the guest, where
/// the kernel the disk boots is signed; decided before the ESP is written, so `on` fails early.
fn secure_boot(guest: &GuestTree, kernel: &BootFiles, spec: &MachineSpec) -> Result<Decision> {
    let image = guest
        .contents(kernel.kernel.trim_start_matches('/').as_bytes())
        .with_context(|| format!("{} was not kept from the stream", kernel.kernel))?;
    secure::decide(
        spec.secure_boot,
        spec.bootloader,
        spec.arch,
        (&kernel.kernel, &image),
        |path| guest.contents(path.as_bytes()),
    )
}

/// The kernel command line; c2vm-init is PID 1 by it (`--append-cmdline` still comes last).
/// An encrypted root is named for the initramfs by `cryptopts=` (Debian's initramfs-tools, which
/// the Debian and Ubuntu templates and the generic bundle use): the initramfs itself names no
/// disk, so one build serves every disk.
fn kernel_cmdline(spec: &MachineSpec, c2vm_init: bool) -> String {
    let mut append = String::new();
    if let Some(uuid) = &spec.luks_uuid {
        append.push_str(&format!(
            "cryptopts=target={},source=UUID={uuid},luks,discard ",
            luks::MAPPING,
        ));
    }
    if c2vm_init {
        append.push_str(&format!("init={} ", c2vm::PATH));
    }
    append.push_str(spec.append_cmdline);
    let root = match &spec.live {
        Some(label) => live_root(label),
        None => format!("root=UUID={} rw", spec.root_uuid),
    };
    super::kernel_cmdline(&root, spec.arch, &append)
}

/// Where c2vm's templates and generic bundle put the live boot method in every initramfs they
/// build (templates/guest/initramfs-live).
const LIVE_BOOT_METHOD: &str = "scripts/c2vm-live";

/// A live medium boots only with c2vm's live boot method in the initramfs, which c2vm's
/// templates and generic bundle build in: an image's own kernel (or one built before) may lack it.
fn check_live_initramfs(guest: &GuestTree, kernel: &BootFiles) -> Result<()> {
    let initrd = (guest.contents(kernel.initrd.trim_start_matches('/').as_bytes()))
        .with_context(|| format!("{} was not kept from the stream", kernel.initrd))?;
    let has = super::initrd::contains(&initrd, LIVE_BOOT_METHOD)
        .with_context(|| format!("reading {}", kernel.initrd))?;
    if !has {
        bail!("the initramfs {} cannot boot a live medium: it has no c2vm live boot method (/{LIVE_BOOT_METHOD}, which c2vm's distribution templates and generic bundle build in); convert with --kernel distro or --kernel generic, or write a disk", kernel.initrd);
    }
    Ok(())
}

/// The live boot method's words (templates/guest/initramfs-live): the medium by its label. A
/// network boot set adds `c2vm.fetched` and the root's checksum to the same line.
pub fn live_root(label: &str) -> String {
    format!("boot=c2vm-live c2vm.live={label}")
}

/// The guest's `/boot`, as copied from the stream: the ESP's own files, since the guest mounts
/// the ESP there. So the kernel and initramfs are on the disk once, under their packages' names.
/// Symlinks and devices cannot be on FAT; their names come back for a note.
pub fn boot_partition_files(guest: &GuestTree) -> (Vec<EspFile>, Vec<String>) {
    let found = guest.files_under(b"boot");
    let (files, others) = (found.files, found.others);
    let files = files
        .into_iter()
        .map(|(path, data)| EspFile {
            path: String::from_utf8_lossy(&path).into_owned(),
            contents: Box::new(std::io::Cursor::new(data)),
        })
        .collect();
    let others = others
        .iter()
        .map(|p| format!("/boot/{}", String::from_utf8_lossy(p)))
        .collect();
    (files, others)
}

/// The names the loaders boot `kernel` by, at the ESP's root (the guest's `/boot`).
pub fn kernel_names(kernel: &BootFiles) -> texts::KernelNames {
    let name = |path: &str| path.trim_start_matches("/boot/").to_string();
    texts::KernelNames {
        kernel: name(&kernel.kernel),
        initrd: name(&kernel.initrd),
    }
}

/// What the stream edit copies for the ESP, whatever its size: the kernels and initramfs, and
/// the signed EFI binaries of a Secure Boot chain.
pub fn boot_file(key: &[u8]) -> bool {
    boot_files::is_candidate(key) || secure::is_candidate(key)
}

/// What the stream edit keeps for guest setup and the ESP, and with `sbom` the package
/// databases the SBOM lists. `epoch` (SOURCE_DATE_EPOCH) clamps every timestamp and dates what
/// setup writes; without it, that is now.
pub fn edit_policy(epoch: Option<i64>, sbom: bool) -> edit::Policy {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let epoch = epoch.map(|e| e.max(0) as u64);
    edit::Policy {
        hold: setup::holds,
        copy: init::systemd::reads,
        boot: boot_file,
        esp: boot_files::on_esp,
        records: match sbom {
            true => packages::is_record,
            false => |_| false,
        },
        clamp_mtime: epoch,
        now: epoch.unwrap_or(now),
    }
}

const HOOK: &str = include_str!("../../templates/guest/hook");
const PREINST_HOOK: &str = include_str!("../../templates/guest/kernel-preinst");

/// Debian and Ubuntu run /etc/kernel/post{inst,rm}.d after installing or removing a kernel and
/// /etc/initramfs/post-update.d after `update-initramfs`: there the boot loaders' entries are
/// pointed at the kernels in /boot (the ESP), so the newest kernel boots and the previous one
/// stays. The script and the loaders' texts it puts on the ESP come from [`texts`], as the
/// disk's own. /etc/kernel/preinst.d gets what lets dpkg replace a kernel's files on FAT.
fn install_kernel_hooks(guest: &mut GuestTree, cmdline: &str, arch: Arch) -> Result<()> {
    if !guest.exists("/etc/kernel/postinst.d")? {
        return Ok(());
    }
    for (path, text, mode) in texts::guest_files(cmdline, arch)? {
        guest.write(&path, text.as_bytes(), Perms::root(mode))?;
    }
    for dir in [
        "/etc/kernel/postinst.d",
        "/etc/kernel/postrm.d",
        "/etc/initramfs/post-update.d",
    ] {
        guest.write(
            &format!("{dir}/zz-c2vm"),
            HOOK.as_bytes(),
            Perms::root(0o755),
        )?;
    }
    // Ubuntu's kernels link /boot/vmlinuz to the newest by default: FAT has no symlinks, and
    // the link's failure would fail the kernel package. The links go to / instead (Debian's way).
    if let Some(conf) = guest.read("/etc/kernel-img.conf")? {
        let conf = String::from_utf8_lossy(&conf);
        if conf.lines().any(is_link_in_boot) {
            let conf: String = conf
                .lines()
                .map(|l| match is_link_in_boot(l) {
                    true => "link_in_boot = no\n".to_string(),
                    false => format!("{l}\n"),
                })
                .collect();
            guest.write("/etc/kernel-img.conf", conf.as_bytes(), Perms::root(0o644))?;
        }
    }
    // Before a kernel package is unpacked: /boot is FAT, where dpkg cannot keep its backup link.
    guest.write(
        "/etc/kernel/preinst.d/c2vm",
        PREINST_HOOK.as_bytes(),
        Perms::root(0o755),
    )?;
    // An upgrade of shim or the signed loader alone runs no kernel hook: dpkg runs the script
    // after each of its runs too (apt's and `dpkg -i`'s), through a shell.
    if guest.exists("/etc/dpkg/dpkg.cfg.d")? {
        let cfg = format!(
            "# Written by c2vm: keep the ESP's kernels and Secure Boot chain in step with the guest's packages.\n\
             post-invoke={script} || echo 'c2vm: {script} failed; the EFI system partition may be stale' >&2\n",
            script = texts::UPDATE_SCRIPT
        );
        guest.write(DPKG_CFG, cfg.as_bytes(), Perms::root(0o644))?;
    }
    Ok(())
}

/// `link_in_boot = yes` (or `Yes`, as kernel-img.conf(5) allows).
fn is_link_in_boot(line: &str) -> bool {
    let mut parts = line.splitn(2, '=').map(str::trim);
    parts.next() == Some("link_in_boot")
        && parts.next().is_some_and(|v| v.eq_ignore_ascii_case("yes"))
}

/// Where dpkg reads its options from, for the update script's hook.
const DPKG_CFG: &str = "/etc/dpkg/dpkg.cfg.d/zz-c2vm";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_hooks_install_the_update_script_and_the_loaders_texts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/kernel/postinst.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/dpkg/dpkg.cfg.d")).unwrap();
        std::fs::write(
            dir.path().join("etc/kernel-img.conf"),
            "do_symlinks = yes\nlink_in_boot = Yes\n",
        )
        .unwrap();
        let cmdline = "root=UUID=x rw";
        let (out, result) = crate::rootfs::edit::edit_dir(dir.path(), |g| {
            install_kernel_hooks(g, cmdline, Arch::Amd64)
        });
        result.unwrap();
        let root = out.path();
        let mode = |f: &str| {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(root.join(f)).unwrap();
            meta.permissions().mode() & 0o7777
        };
        for hook in [
            "etc/kernel/postinst.d/zz-c2vm",
            "etc/kernel/postrm.d/zz-c2vm",
            "etc/initramfs/post-update.d/zz-c2vm",
            "etc/kernel/preinst.d/c2vm",
            "usr/local/sbin/c2vm-update-boot",
        ] {
            assert_eq!(mode(hook), 0o755, "{hook}");
        }
        let syslinux =
            std::fs::read_to_string(root.join("etc/c2vm/boot/with-previous/syslinux/syslinux.cfg"))
                .unwrap();
        assert!(syslinux.contains("LABEL previous\n  KERNEL /@C2VM_PREVIOUS_KERNEL@\n"));
        assert!(syslinux.contains(&format!("APPEND {cmdline}\n")));
        let dpkg = std::fs::read_to_string(root.join(DPKG_CFG.trim_start_matches('/'))).unwrap();
        assert!(dpkg.contains("\npost-invoke=/usr/local/sbin/c2vm-update-boot || "));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/kernel-img.conf")).unwrap(),
            "do_symlinks = yes\nlink_in_boot = no\n"
        );
    }
}
