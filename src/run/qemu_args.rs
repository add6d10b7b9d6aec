//! QEMU's argument list, from plain data: a [`VmSpec`] describing the machine, and what the boot
//! attaches ([`Attachment`]). Nothing here reads the host or the disk, so every choice of
//! machine, CPU, firmware drives and network is tested on the vector alone. Also `--publish`'s
//! parser, and the escaping of paths in QEMU's comma-separated options.
use super::medium::Medium;
use crate::arch::Arch;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Something a boot gives the guest besides its disk (the credentials' files, the NoCloud
/// seed): the options that attach it, and the names c2vm may say (never the contents).
pub trait Attachment {
    fn qemu_args(&self) -> Vec<String>;
    fn names(&self) -> Vec<String>;
    /// What it is, for the line c2vm prints before the names.
    fn what(&self) -> &'static str;
}

/// The machine QEMU emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Board {
    /// amd64's PCIe machine.
    Q35,
    /// amd64's i440fx machine.
    Pc,
    /// arm64's only one.
    Virt,
}

/// A UEFI firmware's code and the private copy of its variable store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pflash {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// A kernel booted directly (`-kernel`), not by the disk's loaders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// One `--publish`: a host port on 127.0.0.1 forwarded to a guest port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub udp: bool,
    pub host: u16,
    pub guest: u16,
}

/// Everything QEMU's command line says, decided.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub arch: Arch,
    pub board: Board,
    /// None: the machine's BIOS (SeaBIOS).
    pub uefi: Option<Pflash>,
    /// Secure Boot enforced (`--firmware uefi-secure`).
    pub secure_boot: bool,
    pub kvm: bool,
    /// `--cpu-model`, else the default for the accelerator and architecture.
    pub cpu_model: Option<String>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The disk, as an absolute path.
    pub disk: PathBuf,
    /// Its format, as qemu-img names it.
    pub format: String,
    /// Writes reach the disk (else a snapshot, thrown away at exit).
    pub persist: bool,
    /// How `disk` is attached: a disk, an ISO as a CD or a USB stick; or no disk at all and a
    /// network boot set's directory.
    pub medium: Medium,
    pub direct: Option<KernelBoot>,
    pub forwards: Vec<Forward>,
}

/// QEMU's arguments for `spec` with `attached` (without the console's, which depend on how it
/// is driven).
pub fn qemu_args(spec: &VmSpec, attached: &[&dyn Attachment]) -> Vec<String> {
    let mut args = machine_args(spec);
    let netboot = match &spec.medium {
        Medium::Disk => {
            args.extend(disk_args(spec));
            None
        }
        Medium::Cd | Medium::Usb => {
            args.extend(media_args(spec));
            None
        }
        Medium::Net(dir) => Some(dir.as_path()),
    };
    args.extend(network_args(&spec.forwards, netboot));
    if let Some(direct) = &spec.direct {
        args.extend([
            "-kernel".into(),
            direct.kernel.to_string_lossy().into_owned(),
            "-initrd".into(),
            direct.initrd.to_string_lossy().into_owned(),
            "-append".into(),
            direct.cmdline.clone(),
        ]);
    }
    // arm64's CPU models under TCG have no random-number instruction: the host's entropy
    // through virtio, so the guest's pool (and what waits on it) fills at once.
    if spec.arch == Arch::Arm64 {
        args.extend(["-device".into(), "virtio-rng-pci".into()]);
    }
    if let Some(uefi) = &spec.uefi {
        args.extend(pflash_args(spec, uefi));
    }
    for attachment in attached {
        args.extend(attachment.qemu_args());
    }
    args
}

/// Machine type, memory, CPUs, accelerator and CPU model.
fn machine_args(spec: &VmSpec) -> Vec<String> {
    // Only the devices c2vm adds (-nodefaults): the default floppy, CD-ROM, parallel port
    // and VGA each cost the guest a driver load and a probe, seconds under TCG. Q35's
    // built-in SATA and SMBus controllers, PS/2 port and VMware backdoor go too: the disk is
    // on virtio and the console is serial, so they only cost the guest drivers (ahci, i2c,
    // psmouse) in the initramfs and again in udev.
    let machine = match (spec.board, spec.secure_boot) {
        // SMM: the firmware's variable store (Secure Boot's keys) is writable only there.
        (Board::Q35, true) => "q35,smm=on,sata=off,smbus=off,i8042=off,vmport=off",
        (Board::Q35, false) => "q35,sata=off,smbus=off,i8042=off,vmport=off",
        (Board::Pc, _) => "pc",
        // AAVMF guards its variable store without a secure world of its own.
        (Board::Virt, _) => "virt",
    };
    // TCG's default CPU (qemu64) has no RDRAND, so the guest's random pool fills only
    // slowly and systemd-random-seed holds sysinit.target until it does; RDRAND (which TCG
    // emulates from the host's getrandom) seeds it at once. Without SVM the guest does not
    // load kvm_amd for nested virtualization nobody uses under emulation.
    // With Secure Boot on, Debian's 6.12 kernel took a double fault on qemu64 under TCG;
    // TCG's `max` model boots it.
    // arm64 under TCG: the kernel reached its root after 2.9 s on cortex-a72, 3.4 s on
    // `max,pauth=off` and 10.3 s on `max` (pointer authentication is slow to emulate).
    let (accel, cpu) = match (spec.kvm, spec.arch, spec.secure_boot) {
        (true, _, _) => ("kvm", "host"),
        (false, Arch::Amd64, false) => ("tcg", "qemu64,+rdrand,-svm"),
        (false, Arch::Amd64, true) => ("tcg", "max"),
        (false, Arch::Arm64, _) => ("tcg", "cortex-a72"),
    };
    vec![
        "-machine".into(),
        machine.into(),
        "-nodefaults".into(),
        "-name".into(),
        "c2vm".into(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        spec.cpu_model.clone().unwrap_or_else(|| cpu.into()),
    ]
}

/// The disk on virtio, first in the boot order, and a snapshot unless it persists.
fn disk_args(spec: &VmSpec) -> Vec<String> {
    let mut args = vec![
        "-drive".into(),
        format!(
            "file={},format={},if=none,id=disk0,cache=unsafe",
            qemu_escape(&spec.disk.to_string_lossy()),
            spec.format
        ),
    ];
    // The disk first in the boot order, so OVMF does not try PXE and HTTP boot before it
    // (a direct boot starts QEMU's own kernel loader instead, which takes index 0).
    let device = match spec.direct {
        None => "virtio-blk-pci,drive=disk0,bootindex=0",
        Some(_) => "virtio-blk-pci,drive=disk0",
    };
    args.extend(["-device".into(), device.into()]);
    if !spec.persist {
        args.push("-snapshot".into());
    }
    args
}

/// An ISO, read-only, first in the boot order: a CD on virtio-scsi (SeaBIOS, OVMF and AAVMF
/// boot its El Torito images; the guest's initramfs has virtio_scsi and sr_mod), or a USB stick
/// on an XHCI controller (the hybrid image's partition tables).
fn media_args(spec: &VmSpec) -> Vec<String> {
    let drive = format!(
        "file={},format=raw,if=none,id=medium0,readonly=on",
        qemu_escape(&spec.disk.to_string_lossy())
    );
    let devices: &[&str] = match spec.medium {
        Medium::Usb => &[
            "qemu-xhci,id=xhci",
            "usb-storage,bus=xhci.0,drive=medium0,removable=on,bootindex=0",
        ],
        _ => &[
            "virtio-scsi-pci,id=scsi0",
            "scsi-cd,drive=medium0,bootindex=0",
        ],
    };
    let mut args = vec!["-drive".to_string(), drive];
    for device in devices {
        args.extend(["-device".to_string(), device.to_string()]);
    }
    args
}

/// User-mode networking with the forwarded ports. With `netboot`, QEMU's TFTP server serves that
/// directory and its DHCP names `boot.ipxe`, which the NIC's iPXE ROM (first in the boot order)
/// fetches and runs.
fn network_args(forwards: &[Forward], netboot: Option<&std::path::Path>) -> Vec<String> {
    let mut netdev = "user,id=net0".to_string();
    if let Some(dir) = netboot {
        netdev.push_str(&format!(
            ",tftp={},bootfile={}",
            qemu_escape(&dir.to_string_lossy()),
            crate::output::pxe::IPXE_SCRIPT
        ));
    }
    for f in forwards {
        let proto = if f.udp { "udp" } else { "tcp" };
        netdev.push_str(&format!(
            ",hostfwd={proto}:127.0.0.1:{}-:{}",
            f.host, f.guest
        ));
    }
    // No option ROM where a disk boots: the NIC's iPXE ROM would only cost SeaBIOS time.
    let nic = match netboot {
        Some(_) => "virtio-net-pci,netdev=net0,bootindex=0",
        None => "virtio-net-pci,netdev=net0,romfile=",
    };
    vec!["-netdev".into(), netdev, "-device".into(), nic.into()]
}

/// The firmware's code (read-only) and its variable store as flash drives.
fn pflash_args(spec: &VmSpec, uefi: &Pflash) -> Vec<String> {
    let mut args = Vec::new();
    // OVMF's store must not change under QEMU's feet: only SMM code may write it.
    if spec.secure_boot && spec.arch == Arch::Amd64 {
        args.extend([
            "-global".into(),
            "driver=cfi.pflash01,property=secure,value=on".into(),
        ]);
    }
    args.extend([
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            uefi.code.display()
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", uefi.vars.display()),
    ]);
    args
}

/// `--publish HOST:GUEST` (TCP) or `HOST:GUEST/tcp` or `HOST:GUEST/udp`.
pub fn parse_publish(p: &str) -> Result<Forward> {
    let (ports, udp) = match p.split_once('/') {
        Some((ports, "tcp")) => (ports, false),
        Some((ports, "udp")) => (ports, true),
        Some(_) => bail!("--publish {p}: the protocol after / must be tcp or udp"),
        None => (p, false),
    };
    let (host, guest) = ports
        .split_once(':')
        .with_context(|| format!("--publish {p}: expected HOST:GUEST, e.g. 8080:80"))?;
    let host: u16 = host
        .parse()
        .with_context(|| format!("--publish {p}: bad host port"))?;
    let guest: u16 = guest
        .parse()
        .with_context(|| format!("--publish {p}: bad guest port"))?;
    Ok(Forward { udp, host, guest })
}

/// QEMU's -drive option separates with commas; a comma in a path is doubled.
pub fn qemu_escape(path: &str) -> String {
    path.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            arch: Arch::Amd64,
            board: Board::Q35,
            uefi: None,
            secure_boot: false,
            kvm: false,
            cpu_model: None,
            memory_mib: 1024,
            cpus: 2,
            disk: PathBuf::from("/d/disk,1.qcow2"),
            format: "qcow2".into(),
            medium: Medium::Disk,
            persist: false,
            direct: None,
            forwards: Vec::new(),
        }
    }

    fn words(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    /// The arguments after `flag`, each time it appears.
    fn values(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    struct Fake(&'static str);

    impl Attachment for Fake {
        fn qemu_args(&self) -> Vec<String> {
            vec!["-fw_cfg".into(), format!("name={},file=x", self.0)]
        }
        fn names(&self) -> Vec<String> {
            vec![self.0.into()]
        }
        fn what(&self) -> &'static str {
            "a fake"
        }
    }

    #[test]
    fn an_iso_is_a_read_only_cd_or_usb_stick_and_a_set_boots_from_the_network() {
        let mut iso = spec();
        (iso.disk, iso.format, iso.medium) = ("/m/live.iso".into(), "raw".into(), Medium::Cd);
        let args = qemu_args(&iso, &[]);
        assert_eq!(
            values(&args, "-drive"),
            ["file=/m/live.iso,format=raw,if=none,id=medium0,readonly=on"]
        );
        assert_eq!(
            values(&args, "-device")[..2],
            words(&[
                "virtio-scsi-pci,id=scsi0",
                "scsi-cd,drive=medium0,bootindex=0"
            ])
        );
        assert!(!args.contains(&"-snapshot".to_string()));
        iso.medium = Medium::Usb;
        let args = qemu_args(&iso, &[]);
        assert_eq!(
            values(&args, "-device")[..2],
            words(&[
                "qemu-xhci,id=xhci",
                "usb-storage,bus=xhci.0,drive=medium0,removable=on,bootindex=0"
            ])
        );
        // No disk at all: QEMU's TFTP serves the set, the NIC (with its iPXE ROM) boots first.
        let mut net = spec();
        net.medium = Medium::Net("/sets/a,b".into());
        let args = qemu_args(&net, &[]);
        assert!(values(&args, "-drive").is_empty(), "{args:?}");
        assert_eq!(
            values(&args, "-netdev"),
            ["user,id=net0,tftp=/sets/a,,b,bootfile=boot.ipxe"]
        );
        assert_eq!(
            values(&args, "-device"),
            ["virtio-net-pci,netdev=net0,bootindex=0"]
        );
    }

    #[test]
    fn bios_on_q35_under_tcg_is_the_whole_vector() {
        let args = qemu_args(&spec(), &[]);
        let expected = words(&[
            "-machine",
            "q35,sata=off,smbus=off,i8042=off,vmport=off",
            "-nodefaults",
            "-name",
            "c2vm",
            "-m",
            "1024",
            "-smp",
            "2",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64,+rdrand,-svm",
            "-drive",
            "file=/d/disk,,1.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe",
            "-device",
            "virtio-blk-pci,drive=disk0,bootindex=0",
            "-snapshot",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
        assert_eq!(args, expected);
    }

    #[test]
    fn uefi_and_uefi_secure_attach_flash_and_secure_boot_needs_smm() {
        let uefi = Pflash {
            code: "/fw/CODE.fd".into(),
            vars: "/tmp/vars".into(),
        };
        let plain = VmSpec {
            uefi: Some(uefi.clone()),
            persist: true,
            kvm: true,
            ..spec()
        };
        let args = qemu_args(&plain, &[]);
        assert_eq!(
            values(&args, "-drive")[1..],
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
                "if=pflash,format=raw,unit=1,file=/tmp/vars"
            ]
        );
        assert_eq!(values(&args, "-accel"), ["kvm"]);
        assert_eq!(values(&args, "-cpu"), ["host"]);
        assert!(!args.contains(&"-snapshot".to_string()));
        assert!(!args.contains(&"-global".to_string()));
        let secure = VmSpec {
            uefi: Some(uefi),
            secure_boot: true,
            ..spec()
        };
        let args = qemu_args(&secure, &[]);
        assert_eq!(
            values(&args, "-machine"),
            ["q35,smm=on,sata=off,smbus=off,i8042=off,vmport=off"]
        );
        assert_eq!(values(&args, "-cpu"), ["max"]);
        assert_eq!(
            values(&args, "-global"),
            ["driver=cfi.pflash01,property=secure,value=on"]
        );
        let pc = qemu_args(
            &VmSpec {
                board: Board::Pc,
                ..spec()
            },
            &[],
        );
        assert_eq!(values(&pc, "-machine"), ["pc"]);
    }

    #[test]
    fn arm64_boots_virt_with_rng_and_aavmf_without_smm() {
        let arm = VmSpec {
            arch: Arch::Arm64,
            board: Board::Virt,
            secure_boot: true,
            uefi: Some(Pflash {
                code: "/fw/AAVMF_CODE.ms.fd".into(),
                vars: "/tmp/vars".into(),
            }),
            cpu_model: Some("max".into()),
            ..spec()
        };
        let args = qemu_args(&arm, &[]);
        assert_eq!(values(&args, "-machine"), ["virt"]);
        assert_eq!(values(&args, "-cpu"), ["max"]);
        assert!(values(&args, "-device").contains(&"virtio-rng-pci".to_string()));
        assert!(values(&args, "-global").is_empty());
        let tcg = qemu_args(
            &VmSpec {
                cpu_model: None,
                ..arm
            },
            &[],
        );
        assert_eq!(values(&tcg, "-cpu"), ["cortex-a72"]);
    }

    #[test]
    fn publish_direct_kernel_and_attachments_are_on_the_line() {
        let direct = VmSpec {
            forwards: vec![
                parse_publish("8080:80").unwrap(),
                parse_publish("5353:53/udp").unwrap(),
            ],
            direct: Some(KernelBoot {
                kernel: "/k/vmlinuz".into(),
                initrd: "/k/initrd.img".into(),
                cmdline: "root=UUID=x rw".into(),
            }),
            ..spec()
        };
        let args = qemu_args(&direct, &[&Fake("one"), &Fake("two")]);
        assert_eq!(
            values(&args, "-netdev"),
            ["user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53"]
        );
        assert_eq!(values(&args, "-kernel"), ["/k/vmlinuz"]);
        assert_eq!(values(&args, "-initrd"), ["/k/initrd.img"]);
        assert_eq!(values(&args, "-append"), ["root=UUID=x rw"]);
        // QEMU's loader boots first: the disk takes no boot index.
        assert!(values(&args, "-device").contains(&"virtio-blk-pci,drive=disk0".to_string()));
        // Attachments come last, in order.
        assert_eq!(
            args[args.len() - 4..],
            ["-fw_cfg", "name=one,file=x", "-fw_cfg", "name=two,file=x"]
        );
    }

    #[test]
    fn publish_forms() {
        let tcp = |host, guest| Forward {
            udp: false,
            host,
            guest,
        };
        assert_eq!(parse_publish("8080:80").unwrap(), tcp(8080, 80));
        assert_eq!(parse_publish("2222:22/tcp").unwrap(), tcp(2222, 22));
        assert_eq!(
            parse_publish("5353:53/udp").unwrap(),
            Forward {
                udp: true,
                host: 5353,
                guest: 53
            }
        );
        for (bad, says) in [
            (
                "8080:80/sctp",
                "--publish 8080:80/sctp: the protocol after / must be tcp or udp",
            ),
            ("8080", "--publish 8080: expected HOST:GUEST, e.g. 8080:80"),
            ("http:80", "--publish http:80: bad host port"),
            ("8080:70000", "--publish 8080:70000: bad guest port"),
            (":80/udp", "--publish :80/udp: bad host port"),
        ] {
            let err = parse_publish(bad).unwrap_err().to_string();
            assert_eq!(err, says);
        }
    }

    #[test]
    fn commas_are_escaped() {
        assert_eq!(qemu_escape("/a,b.img"), "/a,,b.img");
    }
}
