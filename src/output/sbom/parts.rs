//! What c2vm itself put on the disk, each with where it came from: the kernel (a guest package,
//! or a kernel bundle), the UEFI loaders (the guest's signed Secure Boot chain, or the host's
//! unsigned loader), the BIOS loader (the host's), c2vm-init, and the files guest setup wrote.
use super::{sha256, Inputs};
use crate::boot::{syslinux, Bootloader};
use crate::cmd::Cmd;
use crate::rootfs::init::{agent, c2vm};
use crate::rootfs::packages::{Inventory, Package};
use crate::rootfs::tree::{show, GuestTree, Kind, State};

/// A kernel bundle merged into the stream: as the user named it (or c2vm's generic one), and
/// its image ID.
pub struct Bundle {
    pub name: String,
    pub id: String,
}

/// What a part is, for the document's component type.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Kernel,
    Loader,
    Init,
    Setup,
}

/// One thing on the disk that c2vm put there.
pub struct Part {
    pub role: Role,
    pub name: String,
    pub version: Option<String>,
    /// Where the guest sees it (the ESP is its `/boot`); None for what has no one file.
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// Where it came from, in a sentence.
    pub origin: String,
    /// The guest's or the host's package that brought it: (name, version).
    pub package: Option<(String, String)>,
    /// Guest setup's: the files it wrote.
    pub files: Vec<String>,
}

impl Part {
    fn new(role: Role, name: &str, origin: String) -> Part {
        Part {
            role,
            name: name.to_string(),
            version: None,
            path: None,
            sha256: None,
            origin,
            package: None,
            files: Vec::new(),
        }
    }
}

pub fn gather(inputs: &Inputs, inventory: &Inventory) -> Vec<Part> {
    let mut parts = vec![kernel(inputs, inventory)];
    parts.extend(uefi_loaders(inputs, inventory));
    parts.extend(bios_loader(inputs));
    parts.extend(c2vm_init(inputs));
    parts.extend(setup_files(inputs.tree));
    parts
}

/// The kernel the loaders boot: a bundle's, a guest package's (Debian's `linux-image-VERSION`,
/// Alpine's `linux-FLAVOUR` for `vmlinuz-FLAVOUR`), or the image's own file.
fn kernel(inputs: &Inputs, inventory: &Inventory) -> Part {
    let boot = &inputs.machine.kernel;
    let arch = inputs.arch.to_string();
    let owner = [
        format!("linux-image-{}", boot.version),
        format!("linux-image-{}-unsigned", boot.version),
        format!("linux-{}", boot.version),
    ]
    .iter()
    .find_map(|name| inventory.package(name, &arch));
    let origin = match (&inputs.bundle, owner) {
        (Some(bundle), _) if bundle.id.is_empty() => bundle.name.clone(),
        (Some(bundle), _) => format!("{} (image {})", bundle.name, bundle.id),
        (None, Some(p)) => format!("the guest's package {} {}", p.name, p.version),
        (None, None) => format!(
            "the image's own {} (no package in the databases c2vm reads owns it)",
            boot.kernel
        ),
    };
    let key = boot.kernel.trim_start_matches('/').as_bytes();
    Part {
        version: Some(boot.version.clone()),
        path: Some(boot.kernel.clone()),
        sha256: inputs.tree.contents(key).map(|d| sha256(&d)),
        package: owner.filter(|_| inputs.bundle.is_none()).map(name_version),
        ..Part::new(Role::Kernel, "linux", origin)
    }
}

/// shim, MokManager and the signed loader from the guest; else the host's unsigned loader.
fn uefi_loaders(inputs: &Inputs, inventory: &Inventory) -> Vec<Part> {
    let arch = inputs.arch;
    let Some(chain) = inputs.machine.secure.chain() else {
        let default = format!("/boot/{}", arch.uefi_default());
        let (name, need) = match inputs.bootloader {
            Bootloader::Syslinux => ("systemd-boot", syslinux::systemd_boot_efi(arch)),
            // Built by grub-mkstandalone from the host's modules into a scratch file.
            Bootloader::Grub => ("GRUB", "grub-mkstandalone".to_string()),
        };
        let mut part = host_part(Role::Loader, name, &need);
        part.path = Some(default);
        if inputs.bootloader == Bootloader::Syslinux {
            part.sha256 = std::fs::read(&need).ok().map(|d| sha256(&d));
        }
        return vec![part];
    };
    chain
        .files(arch)
        .into_iter()
        .map(|file| {
            let owner = inventory.package(file.package, &arch.to_string());
            let origin = match owner {
                Some(p) => format!(
                    "/{} of the guest's package {} {}",
                    file.guest, p.name, p.version
                ),
                None => format!(
                    "/{} in the image (its package, {}, is not in the databases c2vm reads)",
                    file.guest, file.package
                ),
            };
            Part {
                version: owner.map(|p| p.version.clone()),
                path: Some(format!("/boot/{}", file.esp)),
                sha256: Some(sha256(file.data)),
                package: owner.map(name_version),
                ..Part::new(Role::Loader, file.name, origin)
            }
        })
        .collect()
}

/// The BIOS stage, from the host: SYSLINUX (`gptmbr.bin` in the MBR, `ldlinux.sys` on the ESP)
/// or GRUB's `boot.img` and core.img.
fn bios_loader(inputs: &Inputs) -> Option<Part> {
    if !inputs.arch.has_bios() {
        return None;
    }
    Some(match inputs.bootloader {
        Bootloader::Syslinux => host_part(Role::Loader, "SYSLINUX", "syslinux"),
        Bootloader::Grub => host_part(Role::Loader, "GRUB (BIOS)", "grub-mkimage"),
    })
}

/// A loader taken from the host, by the host's package that provides `need`.
fn host_part(role: Role, name: &str, need: &str) -> Part {
    let package = crate::host_tools::package_for(need).to_string();
    let version = host_package_version(&package);
    let origin = format!(
        "the host's package {package} {}",
        version.as_deref().unwrap_or("(version unknown)")
    );
    Part {
        version: version.clone(),
        package: version.map(|v| (package, v)),
        ..Part::new(role, name, origin)
    }
}

/// The installed version of a host package, where the host has dpkg; else None. A package
/// installed for two architectures (multiarch) answers once each: one version, or None when
/// they differ (which of them c2vm took is not known here).
fn host_package_version(package: &str) -> Option<String> {
    let out = Cmd::new("dpkg-query", "Asking dpkg for a host package's version")
        .args(["-W", "-f", "${Version}\n", package])
        .run()
        .ok()?;
    let mut versions: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    versions.dedup();
    match versions.as_slice() {
        [version] if !version.is_empty() => Some(version.to_string()),
        _ => None,
    }
}

/// c2vm-init as PID 1, or its binary as the guest agent under the image's own init.
fn c2vm_init(inputs: &Inputs) -> Option<Part> {
    let tree = inputs.tree;
    let written = |path: &str| {
        tree.get(path.trim_start_matches('/').as_bytes())
            .is_some_and(|n| n.state == State::Edited)
    };
    let (path, what) = match inputs.machine.c2vm_init {
        true => (c2vm::PATH, "PID 1"),
        false if written(agent::BINARY) => (agent::BINARY, "the guest agent"),
        false => return None,
    };
    let version = env!("CARGO_PKG_VERSION");
    let key = path.trim_start_matches('/').as_bytes();
    Some(Part {
        version: Some(version.to_string()),
        path: Some(path.to_string()),
        sha256: tree.contents(key).map(|d| sha256(&d)),
        ..Part::new(
            Role::Init,
            "c2vm-init",
            format!("c2vm {version}, which carries it ({what})"),
        )
    })
}

/// What guest setup wrote (fstab, hostname, units, ...), by path only: some hold secrets (the
/// root password's hash), whose contents never go into the SBOM.
fn setup_files(tree: &GuestTree) -> Option<Part> {
    let files: Vec<String> = tree
        .edited()
        .filter(|(_, node)| node.kind != Kind::Dir)
        .map(|(key, _)| format!("/{}", show(key)))
        .collect();
    if files.is_empty() {
        return None;
    }
    Some(Part {
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        files,
        ..Part::new(
            Role::Setup,
            "c2vm guest setup",
            "written by c2vm's guest setup as the disk was made".to_string(),
        )
    })
}

fn name_version(p: &Package) -> (String, String) {
    (p.name.clone(), p.version.clone())
}
