//! Building the QEMU command line: accelerator, firmware, disk, network.
use super::boot_settings::CredentialFiles;
use super::cloud_init::Seed;
use super::console::Console;
use super::direct::DirectBoot;
use super::unlock;
use super::{Accel, Firmware, Machine, RunArgs};
use crate::arch::Arch;
use crate::disk::gpt;
use crate::disk::luks::Passphrase;
use crate::progress::note;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

pub struct VmConfig {
    /// `qemu-system-x86_64` or `qemu-system-aarch64`.
    binary: &'static str,
    args: Vec<String>,
    files: VmFiles,
    /// `--firmware uefi-secure`: a scripted run ends at once when the firmware refuses the disk.
    secure_boot: bool,
}

/// Files QEMU uses that must live as long as it runs.
#[derive(Default)]
pub struct VmFiles {
    /// The private copy of the UEFI variable store.
    _vars: Option<tempfile::NamedTempFile>,
    /// The kernel and initramfs of a direct boot (`--direct-kernel`, `--boot-log`).
    _direct: Option<DirectBoot>,
    /// The credentials' private files (removed with them).
    _credentials: Option<CredentialFiles>,
    /// The cloud-init seed (`--cloud-init`, removed with it).
    _seed: Option<Seed>,
}

/// What `qemu-img info --output=json` says about a disk (the fields c2vm uses).
#[derive(Debug, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

pub fn image_info(disk: &Path) -> Result<ImageInfo> {
    let out = crate::cmd::Cmd::new("qemu-img", "Inspecting the disk")
        .args(["info", "--output=json"])
        .arg(disk)
        .run()?;
    parse_image_info(&out.stdout)
}

pub fn parse_image_info(json: &str) -> Result<ImageInfo> {
    serde_json::from_str(json).context("reading qemu-img's JSON")
}

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

/// The QEMU that emulates `arch`'s machines.
fn qemu_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86_64",
        Arch::Arm64 => "qemu-system-aarch64",
    }
}

/// The architecture of the disk, from its root partition's type, and whether that partition is
/// LUKS: the first sectors and the root's first one only, through qemu-img for formats other
/// than raw.
fn disk_arch(disk: &Path, format: &str) -> Result<(Arch, bool)> {
    // As much of the table as there is: a disk smaller than it has none to read.
    let table = read_at(
        disk,
        format,
        0,
        gpt::TABLE_BYTES,
        "the disk's partition table",
    )?;
    // A disk c2vm did not make may have no root partition of a known type: it boots as the
    // host's, as it did before c2vm knew more than one architecture.
    match gpt::root_partition(&table) {
        Ok((arch, root)) => {
            let head = read_at(disk, format, root, 512, "the root partition's first sector")?;
            Ok((arch, head.starts_with(LUKS_MAGIC)))
        }
        Err(why) => {
            let host = Arch::host_or_default();
            note(&format!(
                "c2vm: {} ({why:#}); booting it as {host}",
                disk.display()
            ));
            Ok((host, false))
        }
    }
}

/// What a LUKS volume (1 or 2) starts with.
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

/// Up to `len` bytes of the disk from byte `at`, read through qemu-img for formats other than
/// raw, without converting the rest.
fn read_at(disk: &Path, format: &str, at: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    let read = |path: &Path, at: u64| -> Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.seek(std::io::SeekFrom::Start(at))
            .with_context(|| format!("reading {}", path.display()))?;
        let mut bytes = Vec::with_capacity(len);
        file.take(len as u64)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(bytes)
    };
    if format == "raw" {
        return read(disk, at);
    }
    let dir = tempfile::Builder::new()
        .prefix("c2vm-disk-head.")
        .tempdir()
        .context("creating a temporary directory")?;
    let head = dir.path().join("head.raw");
    // qemu-img dd's skip= is unusable (QEMU 7.2 takes count= as the end, not a length): a
    // window of the disk from the raw driver's offset= and size= instead.
    let input = match at {
        0 => disk.display().to_string(),
        _ => format!(
            "driver=raw,offset={at},size={len},file.driver={format},file.file.driver=file,file.file.filename={}",
            qemu_escape(&disk.display().to_string())
        ),
    };
    let mut dd = crate::cmd::Cmd::new("qemu-img", &format!("Reading {what}")).arg("dd");
    dd = match at {
        0 => dd.args(["-f", format]),
        _ => dd.arg("--image-opts"),
    };
    dd.args(["-O", "raw"])
        .arg(format!("bs={len}"))
        .arg("count=1")
        .arg(format!("if={input}"))
        .arg(format!("of={}", head.display()))
        .run()?;
    read(&head, 0)
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

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

impl VmConfig {
    /// `credentials`: the settings for this boot, checked (`boot_settings::collect`).
    pub fn from_args(
        a: &RunArgs,
        credentials: &[(String, Vec<u8>)],
        seed: Option<Seed>,
    ) -> Result<VmConfig> {
        // What the flags alone rule out, before the disk is read.
        let secure = a.firmware == Some(Firmware::UefiSecure);
        if secure && a.machine == Some(Machine::Pc) {
            bail!(
                "--firmware uefi-secure needs --machine q35: Secure Boot firmware runs in SMM, \
                 which QEMU's pc machine does not give it"
            );
        }
        if secure && (a.direct_kernel || a.boot_log) {
            bail!(
                "--direct-kernel and --boot-log skip the loaders that --firmware uefi-secure is \
                 there to check; drop one of them"
            );
        }
        let info = image_info(&a.disk)?;
        let (arch, encrypted) = disk_arch(&a.disk, &info.format)?;
        match (encrypted, a.luks_passphrase_file.is_some()) {
            (false, true) => bail!(
                "--luks-passphrase-file: the root of {} is not encrypted (no LUKS header); drop the option",
                a.disk.display()
            ),
            (true, false) if a.exec.is_some() => bail!(
                "the root of {} is encrypted: give --luks-passphrase-file FILE, which c2vm types at the guest's prompt (--exec logs in only after that)",
                a.disk.display()
            ),
            (true, false) => note(&format!(
                "c2vm: the root of {} is encrypted: the guest asks for its passphrase on the console (--luks-passphrase-file FILE types it)",
                a.disk.display()
            )),
            _ => {}
        }
        let firmware = match (arch, a.firmware) {
            (Arch::Arm64, Some(Firmware::Bios)) => bail!(
                "--firmware bios: {} is an arm64 disk, and arm64 machines have no BIOS; use --firmware uefi or uefi-secure",
                a.disk.display()
            ),
            (_, Some(firmware)) => firmware,
            (Arch::Amd64, None) => Firmware::Bios,
            (Arch::Arm64, None) => Firmware::Uefi,
        };
        if let (Arch::Arm64, Some(machine)) = (arch, a.machine) {
            bail!(
                "--machine {machine:?} is a PC's; {} is an arm64 disk, which boots on QEMU's virt machine: drop --machine",
                a.disk.display()
            );
        }
        let machine = a.machine.unwrap_or(Machine::Q35);
        let binary = qemu_binary(arch);
        crate::cmd::require(binary)?;
        let kvm = match a.accel {
            Accel::Kvm => {
                if !Path::new("/dev/kvm").exists() {
                    bail!("--accel kvm: /dev/kvm does not exist; use --accel tcg");
                }
                if Arch::host() != Some(arch) {
                    bail!("--accel kvm: {} is an {arch} disk, and KVM runs only the host's own architecture; use --accel tcg", a.disk.display());
                }
                true
            }
            Accel::Tcg => false,
            Accel::Auto => kvm_usable(arch),
        };
        note(&format!(
            "c2vm: booting {} ({arch}, {}, {} MiB, {}) with {}",
            a.disk.display(),
            info.format,
            info.virtual_size >> 20,
            match firmware {
                Firmware::Bios => "BIOS",
                Firmware::Uefi => "UEFI",
                Firmware::UefiSecure => "UEFI with Secure Boot enforced",
            },
            match (kvm, Arch::host() == Some(arch)) {
                (true, _) => "KVM",
                (false, true) => "TCG (software emulation: no usable KVM here)",
                (false, false) => "TCG (software emulation of another architecture)",
            }
        ));
        // Only the devices c2vm adds (-nodefaults): the default floppy, CD-ROM, parallel port
        // and VGA each cost the guest a driver load and a probe, seconds under TCG. Q35's
        // built-in SATA and SMBus controllers, PS/2 port and VMware backdoor go too: the disk is
        // on virtio and the console is serial, so they only cost the guest drivers (ahci, i2c,
        // psmouse) in the initramfs and again in udev.
        let machine = match (arch, machine, secure) {
            // SMM: the firmware's variable store (Secure Boot's keys) is writable only there.
            (Arch::Amd64, Machine::Q35, true) => {
                "q35,smm=on,sata=off,smbus=off,i8042=off,vmport=off"
            }
            (Arch::Amd64, Machine::Q35, false) => "q35,sata=off,smbus=off,i8042=off,vmport=off",
            (Arch::Amd64, Machine::Pc, _) => "pc",
            // AAVMF guards its variable store without a secure world of its own.
            (Arch::Arm64, _, _) => "virt",
        };
        let mut args: Vec<String> = vec![
            "-machine".into(),
            machine.into(),
            "-nodefaults".into(),
            "-name".into(),
            "c2vm".into(),
            "-m".into(),
            a.memory.to_string(),
            "-smp".into(),
            a.cpus.to_string(),
        ];
        // TCG's default CPU (qemu64) has no RDRAND, so the guest's random pool fills only
        // slowly and systemd-random-seed holds sysinit.target until it does; RDRAND (which TCG
        // emulates from the host's getrandom) seeds it at once. Without SVM the guest does not
        // load kvm_amd for nested virtualization nobody uses under emulation.
        // With Secure Boot on, Debian's 6.12 kernel took a double fault on qemu64 under TCG;
        // TCG's `max` model boots it.
        // arm64 under TCG: the kernel reached its root after 2.9 s on cortex-a72, 3.4 s on
        // `max,pauth=off` and 10.3 s on `max` (pointer authentication is slow to emulate).
        let (accel, cpu) = match (kvm, arch, secure) {
            (true, _, _) => ("kvm", "host"),
            (false, Arch::Amd64, false) => ("tcg", "qemu64,+rdrand,-svm"),
            (false, Arch::Amd64, true) => ("tcg", "max"),
            (false, Arch::Arm64, _) => ("tcg", "cortex-a72"),
        };
        args.extend([
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            a.cpu_model.clone().unwrap_or_else(|| cpu.into()),
        ]);
        let disk = a
            .disk
            .canonicalize()
            .with_context(|| format!("resolving {}", a.disk.display()))?;
        args.push("-drive".into());
        args.push(format!(
            "file={},format={},if=none,id=disk0,cache=unsafe",
            qemu_escape(&disk.to_string_lossy()),
            info.format
        ));
        // The disk first in the boot order, so OVMF does not try PXE and HTTP boot before it
        // (a direct boot starts QEMU's own kernel loader instead, which takes index 0).
        let direct = a.direct_kernel || a.boot_log;
        let device = match direct {
            false => "virtio-blk-pci,drive=disk0,bootindex=0",
            true => "virtio-blk-pci,drive=disk0",
        };
        args.extend(["-device".into(), device.into()]);
        if !a.persist {
            args.push("-snapshot".into());
        }
        let mut netdev = "user,id=net0".to_string();
        for p in &a.publish {
            let (ports, proto) = match p.split_once('/') {
                Some((ports, proto @ ("tcp" | "udp"))) => (ports, proto),
                Some(_) => bail!("--publish {p}: the protocol after / must be tcp or udp"),
                None => (p.as_str(), "tcp"),
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
            netdev.push_str(&format!(",hostfwd={proto}:127.0.0.1:{host}-:{guest}"));
        }
        // No option ROM: the disk boots, so the NIC's iPXE ROM would only cost SeaBIOS time.
        args.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            "virtio-net-pci,netdev=net0,romfile=".into(),
        ]);
        let mut files = VmFiles::default();
        if direct {
            let direct = DirectBoot::from_disk(&disk, &info.format, a.boot_log)?;
            args.extend([
                "-kernel".into(),
                direct.kernel.to_string_lossy().into_owned(),
                "-initrd".into(),
                direct.initrd.to_string_lossy().into_owned(),
                "-append".into(),
                direct.cmdline.clone(),
            ]);
            files._direct = Some(direct);
        }
        // arm64's CPU models under TCG have no random-number instruction: the host's entropy
        // through virtio, so the guest's pool (and what waits on it) fills at once.
        if arch == Arch::Arm64 {
            args.extend(["-device".into(), "virtio-rng-pci".into()]);
        }
        if firmware != Firmware::Bios {
            let (code, template) = if arch == Arch::Arm64 {
                let (code, vars) = if secure { AAVMF_SECURE } else { AAVMF };
                for file in [code, vars] {
                    if !Path::new(file).exists() {
                        bail!(
                            "no AAVMF firmware for arm64 found ({file}); {}",
                            crate::host_tools::install_hint(file)
                        );
                    }
                }
                (PathBuf::from(code), PathBuf::from(vars))
            } else if secure {
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
                // The store must not change under QEMU's feet: only SMM code may write it.
                args.extend([
                    "-global".into(),
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                ]);
                (PathBuf::from(code), PathBuf::from(vars))
            } else {
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
                (code, template)
            };
            let copy = tempfile::Builder::new()
                .prefix("c2vm-ovmf-vars.")
                .tempfile()
                .context("creating a UEFI variable store")?;
            std::fs::copy(&template, copy.path())
                .with_context(|| format!("copying {}", template.display()))?;
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ));
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                copy.path().display()
            ));
            files._vars = Some(copy);
        }
        if let Some(creds) = CredentialFiles::write(credentials)? {
            note(&format!(
                "c2vm: settings for this boot (systemd credentials over fw_cfg): {}",
                creds.names().join(", ")
            ));
            args.extend(creds.qemu_args());
            files._credentials = Some(creds);
        }
        if let Some(seed) = seed {
            note(&format!(
                "c2vm: a cloud-init NoCloud seed for this boot (CIDATA): {}",
                seed.names().join(", ")
            ));
            args.extend(seed.qemu_args());
            files._seed = Some(seed);
        }
        Ok(VmConfig {
            binary,
            args,
            files,
            secure_boot: secure,
        })
    }

    /// With `luks`, QEMU's stdin is c2vm's, passed on, and c2vm types the passphrase at the
    /// encrypted root's prompt (see `unlock`).
    pub fn run_interactive(self, luks: Option<&Passphrase>) -> Result<i32> {
        note("c2vm: the serial console is on this terminal. To leave: press Ctrl-A, then X.");
        let mut cmd = Command::new(self.binary);
        cmd.args(&self.args)
            // What -nographic sets up, which -nodefaults turns off: the serial port and the
            // monitor share this terminal (Ctrl-A C switches, Ctrl-A X quits), and Ctrl-C goes
            // to the guest.
            .args([
                "-display",
                "none",
                "-chardev",
                "stdio,id=console,mux=on,signal=off",
                "-serial",
                "chardev:console",
                "-mon",
                "chardev=console,mode=readline",
            ])
            .stdout(Stdio::piped());
        // QEMU puts a terminal on its stdin in raw mode itself; through a pipe, c2vm does.
        let _raw = match luks {
            Some(_) => {
                cmd.stdin(Stdio::piped());
                RawTerminal::on_stdin()?
            }
            None => None,
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.binary))?;
        let typist = match luks.map(|passphrase| Typist::start(&mut child, passphrase)) {
            Some(Ok(typist)) => Some(typist),
            Some(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            None => None,
        };
        // The console passes through c2vm, which watches for c2vm-init's last word: a VM whose
        // init is c2vm-init ends with its app's exit status, as `docker run` does.
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let relay = std::thread::spawn(move || relay_console(stdout, typist));
        let status = child.wait().context("waiting for QEMU")?;
        let relayed = relay.join().unwrap_or_default();
        if relayed.refused {
            return Err(unlock::refused());
        }
        Ok(relayed.status.unwrap_or(status.code().unwrap_or(1)))
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
        Console::new(child, echo, self.files, self.secure_boot)
    }
}

/// What the console showed: the status c2vm-init reported (`c2vm-init: exit N`), and whether
/// the guest refused the encrypted root's passphrase.
#[derive(Debug, Default)]
struct Relayed {
    status: Option<i32>,
    refused: bool,
}

/// Copy the console to our stdout as it comes, typing the passphrase at its prompt.
fn relay_console(mut from: impl std::io::Read, mut typist: Option<Typist>) -> Relayed {
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let mut relayed = Relayed::default();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
        for &b in &buf[..n] {
            if b == b'\n' {
                relayed.status = init_exit_status(&line).or(relayed.status);
                line.clear();
            } else if line.len() < 256 {
                line.push(b);
            }
        }
        if let Some(typist) = typist.as_mut() {
            if !typist.watch(&buf[..n]) {
                relayed.refused = true;
            }
        }
    }
    relayed
}

/// Types the passphrase into QEMU's stdin at the prompt, and passes c2vm's stdin on otherwise.
/// One thread writes to QEMU, fed by both: a QEMU that stops reading then blocks that thread
/// alone, never the relay of its console.
struct Typist {
    to_qemu: std::sync::mpsc::Sender<zeroize::Zeroizing<Vec<u8>>>,
    keys: zeroize::Zeroizing<Vec<u8>>,
    watcher: unlock::Watcher,
    qemu: rustix::process::Pid,
}

impl Typist {
    fn start(child: &mut std::process::Child, passphrase: &Passphrase) -> Result<Typist> {
        use std::io::{Read, Write};
        let mut stdin = child.stdin.take().context("QEMU's stdin")?;
        let qemu = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("QEMU's process id")?;
        let (to_qemu, queue) = std::sync::mpsc::channel::<zeroize::Zeroizing<Vec<u8>>>();
        // Both end with c2vm, or when QEMU's stdin closes.
        std::thread::spawn(move || {
            for bytes in queue {
                if stdin
                    .write_all(&bytes)
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        let forward = to_qemu.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut from = std::io::stdin();
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if forward
                    .send(zeroize::Zeroizing::new(buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Typist {
            to_qemu,
            keys: unlock::keys(passphrase),
            watcher: unlock::Watcher::new(),
            qemu,
        })
    }

    /// Returns false when the guest refused the passphrase (QEMU is then stopped).
    fn watch(&mut self, output: &[u8]) -> bool {
        match self.watcher.feed(output) {
            unlock::Step::Nothing => true,
            unlock::Step::Type => {
                let _ = self.to_qemu.send(self.keys.clone());
                true
            }
            unlock::Step::Refused => {
                let _ = rustix::process::kill_process(self.qemu, rustix::process::Signal::TERM);
                false
            }
        }
    }
}

/// The terminal on c2vm's stdin in raw mode while QEMU reads it through c2vm; restored on drop.
struct RawTerminal(rustix::termios::Termios);

impl RawTerminal {
    fn on_stdin() -> Result<Option<RawTerminal>> {
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(&stdin) {
            return Ok(None);
        }
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        // As QEMU's own raw mode: output still turns `\n` into `\r\n`, so c2vm's and QEMU's
        // messages start at the left edge.
        raw.output_modes.insert(rustix::termios::OutputModes::OPOST);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(Some(RawTerminal(saved)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// `c2vm-init: exit 42` → 42.
fn init_exit_status(line: &[u8]) -> Option<i32> {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches('\r')
        .strip_prefix("c2vm-init: exit ")?
        .trim()
        .parse()
        .ok()
}

/// QEMU's -drive option separates with commas; a comma in a path is doubled.
pub(super) fn qemu_escape(path: &str) -> String {
    path.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_status_comes_from_init_s_last_word() {
        let console = b"booting\r\nhello from the app\r\nc2vm-init: the app exited with status 42\r\nc2vm-init: exit 42\r\n[ 9.1] reboot: Power down\r\n";
        assert_eq!(relay_console(&console[..], None).status, Some(42));
        assert_eq!(relay_console(&b"login: "[..], None).status, None);
    }

    #[test]
    fn parses_qemu_img_info() {
        let json = r#"{"virtual-size": 1310720000, "filename": "d.qcow2", "cluster-size": 65536,
            "format": "qcow2", "actual-size": 702836736, "dirty-flag": false}"#;
        let info = parse_image_info(json).unwrap();
        assert_eq!(info.format, "qcow2");
        assert_eq!(info.virtual_size, 1_310_720_000);
    }

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

    #[test]
    fn commas_are_escaped() {
        assert_eq!(qemu_escape("/a,b.img"), "/a,,b.img");
    }
}
