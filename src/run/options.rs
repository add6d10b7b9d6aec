//! `c2vm run`'s options, all in one place: the disk, then one flattened group per help heading
//! (Machine, Boot path, Scripting, Settings for this boot, cloud-init). The modules that act on
//! them read these structs; none declares options of its own.
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// `c2vm run`: how to boot and, when scripted, what to wait for or run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The disk to boot (raw or any format qemu-img knows), or an ISO c2vm wrote (as a CD, or
    /// with --media usb as a USB stick)
    #[arg(required_unless_present_any = ["restore", "netboot"])]
    pub disk: Option<PathBuf>,
    #[command(flatten)]
    pub vm: MachineArgs,
    #[command(flatten)]
    pub boot_path: BootPathArgs,
    #[command(flatten)]
    pub script: ScriptArgs,
    #[command(flatten)]
    pub boot: BootSettingsArgs,
    #[command(flatten)]
    pub cloud_init: CloudInitArgs,
}

/// The virtual machine: firmware, hardware, and what of it outlives the run.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Machine")]
pub struct MachineArgs {
    /// Firmware: bios (SeaBIOS), uefi (OVMF; AAVMF for arm64), or uefi-secure (Secure Boot
    /// enforced with Microsoft's keys enrolled, as on most clouds and PCs that have it on)
    /// [default: bios for amd64 disks, uefi for arm64 disks, which have no BIOS]
    #[arg(long, value_enum)]
    pub firmware: Option<Firmware>,
    /// Machine type of amd64 disks: q35 (PCIe, no legacy devices: boots fastest) or pc (i440fx);
    /// the disk boots on both. arm64 disks boot on QEMU's `virt` [default: q35]
    #[arg(long, value_enum)]
    pub machine: Option<Machine>,
    /// Acceleration: auto uses KVM only where it works (kvm_intel/kvm_amd), else TCG
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// QEMU's CPU model [default: host with KVM; under TCG for amd64 qemu64 with RDRAND and
    /// without SVM, which fills the guest's random pool at once, or max with --firmware
    /// uefi-secure; for arm64 cortex-a72, the quickest to boot under emulation]
    #[arg(long, value_name = "MODEL")]
    pub cpu_model: Option<String>,
    /// Memory in MiB
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Virtual CPUs
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Keep changes on the disk (default: a snapshot, thrown away at exit)
    #[arg(long)]
    pub persist: bool,
    /// Forward a host port to the guest, HOST:GUEST (TCP) or HOST:GUEST/udp; may be repeated
    #[arg(long, value_name = "HOST:GUEST")]
    pub publish: Vec<String>,
    /// How an ISO is attached: as a CD, or as a USB stick (what the ISO written to a stick
    /// boots as) [default: cd]
    #[arg(long, value_enum)]
    pub media: Option<Media>,
    /// Boot a network boot set (`c2vm convert --format pxe -o DIR`) with no disk: QEMU's TFTP
    /// server serves DIR and the NIC's iPXE ROM boots its boot.ipxe
    #[arg(long, value_name = "DIR", conflicts_with_all = ["disk", "media", "persist"])]
    pub netboot: Option<PathBuf>,
}

/// How the guest gets to its root: the disk's loaders or its kernel directly, and the
/// encrypted root's passphrase on the way.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Boot path")]
pub struct BootPathArgs {
    /// Boot the disk's kernel and initramfs directly (QEMU's -kernel), with the command line
    /// its loader would give: no firmware boot menu and no boot loader, seconds faster under
    /// emulation. The disk's own loaders are not used, so this proves nothing about them
    #[arg(long)]
    pub direct_kernel: bool,
    /// Show every kernel and systemd message of this boot (the disk boots quietly): boots the
    /// disk's kernel directly (as --direct-kernel), with its command line minus `quiet`
    #[arg(long)]
    pub boot_log: bool,
    /// The passphrase of the disk's encrypted root (the first line of FILE), typed at the
    /// console's prompt at boot
    #[arg(long, value_name = "FILE")]
    pub luks_passphrase_file: Option<PathBuf>,
}

impl BootPathArgs {
    /// The disk's kernel is booted directly (`--direct-kernel` or `--boot-log`).
    pub fn direct(&self) -> bool {
        self.direct_kernel || self.boot_log
    }
}

/// What a restore takes from the state file, so may not be given with --restore.
const RESTORED_AS_SAVED: &[&str] = &[
    "disk",
    "firmware",
    "machine",
    "accel",
    "cpu_model",
    "memory",
    "cpus",
    "persist",
    "publish",
    "media",
    "netboot",
    "direct_kernel",
    "boot_log",
    "luks_passphrase_file",
    "password_file",
    "credential",
    "credential_file",
    "ssh_key",
    "dns",
    "env",
    "env_file",
    "args",
    "cloud_init",
];

/// A run without a person at the console: for tests and CI.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Scripting")]
pub struct ScriptArgs {
    /// Start the VM in the background and return once its guest agent answers, printing its
    /// name: then drive it with `c2vm exec`, `cp`, `wait`, `logs`, `stop`
    #[arg(short, long, conflicts_with_all = ["expect", "login", "exec"])]
    pub detach: bool,
    /// With -d: the VM's name [default: c2vm-XXXXXX]
    #[arg(long, requires = "detach")]
    pub name: Option<String>,
    /// With -d: start from a state `c2vm save` wrote, not from a boot (the disk and the
    /// machine's options are the saved VM's). With --hostname the restored guest gets a
    /// distinct identity: that hostname and a new machine-id
    #[arg(
        long,
        value_name = "FILE",
        requires = "detach",
        conflicts_with_all = RESTORED_AS_SAVED
    )]
    pub restore: Option<PathBuf>,
    /// Scripted: exit 0 as soon as the console shows this regular expression
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Scripted: log in on the serial console as USER (or USER:PASSWORD)
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub login: Option<String>,
    /// Scripted: run this shell command, print its stdout (and its stderr apart), power off, and
    /// exit with its status: through the guest's agent (no login, no password), or with
    /// --login over the serial console
    #[arg(long)]
    pub exec: Option<String>,
    /// Scripted (and -d): give up after this many seconds, showing the last console lines
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Settings and secrets given at boot as systemd credentials, not written to the disk.
#[derive(Args, Debug, Clone, Default)]
#[command(
    next_help_heading = "Settings for this boot (they last one boot; `convert --hostname` and \
                         the like write the disk)"
)]
pub struct BootSettingsArgs {
    /// Root's password for this boot, from the first line of this file: given to the guest
    /// as a hash (the credential passwd.hashed-password.root), and typed by --login
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// A systemd credential for this boot, NAME=VALUE (the value shows in `ps` for c2vm's own
    /// process: give secrets with --credential-file); may be repeated
    #[arg(long, value_name = "NAME=VALUE")]
    pub credential: Vec<String>,
    /// A systemd credential for this boot from a file, NAME=PATH; may be repeated
    #[arg(long, value_name = "NAME=PATH")]
    pub credential_file: Vec<String>,
    /// Root's SSH public keys for this boot, replacing the disk's (the credential
    /// ssh.authorized_keys.root)
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// The guest's hostname for this boot only (the credential system.hostname); `c2vm convert
    /// --hostname` writes one onto the disk
    #[arg(long)]
    pub hostname: Option<String>,
    /// DNS servers for this boot (the credential network.dns: c2vm-init and
    /// systemd-resolved read it); may be repeated
    #[arg(long)]
    pub dns: Vec<std::net::IpAddr>,
    /// Set a variable in the app's environment, KEY=VALUE, or KEY to pass this one's (c2vm-init
    /// guests); may be repeated
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read the app's variables from a file of KEY=VALUE lines, as `docker run --env-file`
    /// (c2vm-init guests); may be repeated
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// The app's arguments in place of the image's CMD, after `--`: `c2vm run app.qcow2 -- ARGS`
    /// (c2vm-init guests)
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// A NoCloud seed for the guest's cloud-init, for this boot.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "cloud-init")]
pub struct CloudInitArgs {
    /// Give the guest's cloud-init this user-data (`#cloud-config`, a `#!` script, MIME
    /// multipart…) in a NoCloud seed for this boot; the disk needs cloud-init (`c2vm convert
    /// --cloud-init`)
    #[arg(long, value_name = "USER-DATA")]
    pub cloud_init: Option<PathBuf>,
    /// The seed's meta-data (instance-id, local-hostname) [default: an instance-id derived from
    /// the user-data, so the same user-data is one instance and runs once on a --persist disk]
    #[arg(long, value_name = "FILE", requires = "cloud_init")]
    pub meta_data: Option<PathBuf>,
    /// The seed's network-config (cloud-init's network config, version 1 or 2)
    #[arg(long, value_name = "FILE", requires = "cloud_init")]
    pub network_config: Option<PathBuf>,
}

/// Which firmware QEMU boots with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
    /// OVMF built with Secure Boot and SMM, its variables holding Microsoft's keys (the UEFI CA
    /// that signs shim among them): it runs only what they sign.
    UefiSecure,
}

/// How an ISO is attached.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Cd,
    Usb,
}

/// QEMU's machine type.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Q35,
    Pc,
}

/// How QEMU runs the guest's code.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn help_groups_the_options_and_says_what_lasts_one_boot() {
        let help = Run::command().render_long_help().to_string();
        let mut at = 0;
        for heading in [
            "Machine:",
            "Boot path:",
            "Scripting:",
            "Settings for this boot",
            "cloud-init:",
        ] {
            let found = help[at..].find(heading);
            assert!(
                found.is_some(),
                "{heading} missing, or out of order:\n{help}"
            );
            at += found.unwrap_or(0);
        }
        assert!(help.contains("`convert --hostname`"), "{help}");
        let group = |flag: &str| {
            // Where the option is defined: at a line's start, not named in another's help.
            let i = help
                .find(&format!("\n      {flag}"))
                .or_else(|| help.find(&format!(", {flag}")))
                .unwrap();
            [
                "Machine:",
                "Boot path:",
                "Scripting:",
                "Settings for",
                "cloud-init:",
            ]
            .into_iter()
            .rev()
            .find(|h| help[..i].contains(h))
        };
        assert_eq!(group("--publish"), Some("Machine:"));
        assert_eq!(group("--direct-kernel"), Some("Boot path:"));
        assert_eq!(group("--exec"), Some("Scripting:"));
        assert_eq!(group("--hostname"), Some("Settings for"));
        assert_eq!(group("--network-config"), Some("cloud-init:"));
    }

    #[test]
    fn flags_and_defaults_are_the_ones_they_were() {
        let a = Run::try_parse_from(["c2vm", "disk.img"]).unwrap().run;
        assert_eq!(
            (a.vm.memory, a.vm.cpus, a.vm.accel, a.script.timeout),
            (1024, 2, Accel::Auto, 600)
        );
        let a = Run::try_parse_from([
            "c2vm",
            "d.qcow2",
            "--firmware",
            "uefi-secure",
            "--machine",
            "q35",
            "--publish",
            "8080:80",
            "--login",
            "root",
            "--exec",
            "true",
            "--password-file",
            "pw",
            "-e",
            "A=1",
            "--cloud-init",
            "ud",
            "--",
            "serve",
        ])
        .unwrap()
        .run;
        assert_eq!(a.vm.firmware, Some(Firmware::UefiSecure));
        assert_eq!(a.vm.publish, ["8080:80"]);
        assert_eq!(a.script.exec.as_deref(), Some("true"));
        assert_eq!(a.boot.env, ["A=1"]);
        assert_eq!(a.boot.args, ["serve"]);
        assert!(a.boot.password_file.is_some() && a.cloud_init.cloud_init.is_some());
        // --exec alone goes through the guest's agent; -d is no scripted run.
        assert!(Run::try_parse_from(["c2vm", "d", "--exec", "true"]).is_ok());
        assert!(Run::try_parse_from(["c2vm", "-d", "d", "--exec", "true"]).is_err());
        assert!(Run::try_parse_from(["c2vm", "d", "--name", "web"]).is_err());
        assert!(Run::try_parse_from(["c2vm", "-d", "--restore", "s", "d"]).is_err());
        assert!(Run::try_parse_from(["c2vm", "-d", "--restore", "s"]).is_ok());
        assert!(Run::try_parse_from(["c2vm", "-d", "--restore", "s", "--hostname", "h"]).is_ok());
        for taken in [
            ["--memory", "512"],
            ["--publish", "80:80"],
            ["--firmware", "uefi"],
        ] {
            let mut args = vec!["c2vm", "-d", "--restore", "s"];
            args.extend(taken);
            let err = Run::try_parse_from(args)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("cannot be used with"), "{err}");
        }
        assert!(Run::try_parse_from(["c2vm", "d", "--meta-data", "m"]).is_err());
    }
}
