//! Command-line arguments as typed, before any checking (see `plan` for the checked form).
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "c2vm",
    version,
    about = "Turn a container image into a bootable VM disk (BIOS and UEFI), without loop devices or mounts",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl-C, SIGTERM).\n\
                  With `run --exec`, the exit code is the command's own."
)]
pub struct Cli {
    /// More output: -v shows every command run and the whole build log
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert an image (or a root filesystem tarball) into a bootable disk
    Convert(ConvertArgs),
    /// Build a Dockerfile through the Docker Engine API, then convert the result
    Build(BuildArgs),
    /// Boot a disk in QEMU with its serial console on this terminal
    Run(RunArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConvertArgs {
    /// What to convert: an image reference (`debian:latest`, `docker:REF`) or `rootfs:PATH` for a
    /// tarball of a whole root filesystem that already has a kernel in /boot
    pub source: String,
    #[command(flatten)]
    pub disk: DiskArgs,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The build context directory
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (default: Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<PathBuf>,
    /// A build argument, KEY=VALUE; may be repeated
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    #[command(flatten)]
    pub disk: DiskArgs,
    #[command(flatten)]
    pub image: ImageArgs,
}

/// Options for images that come from the Docker daemon.
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// When to pull the image from its registry
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// The image platform; only linux/amd64 is booted
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// The image already has a kernel, initramfs and init: do not add them
    #[arg(long)]
    pub no_kernel: bool,
    /// Run the image's ENTRYPOINT/CMD at boot as a service (default: when the command is not a
    /// bare shell such as `bash`)
    #[arg(long, conflicts_with = "no_app")]
    pub app: bool,
    /// Do not run the image's ENTRYPOINT/CMD at boot
    #[arg(long)]
    pub no_app: bool,
}

impl ImageArgs {
    pub fn app_choice(&self) -> crate::rootfs::app::AppChoice {
        use crate::rootfs::app::AppChoice;
        match (self.app, self.no_app) {
            (true, _) => AppChoice::On,
            (_, true) => AppChoice::Off,
            _ => AppChoice::Auto,
        }
    }
}

/// Options for the disk, whatever the source.
#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// The output disk; its extension picks the format (.img/.raw, .qcow2, .vmdk, .vdi, .vhdx, .vhd)
    #[arg(short, long)]
    pub output: PathBuf,
    /// The output format, when the extension does not say
    #[arg(long, value_enum)]
    pub format: Option<DiskFormat>,
    /// Overwrite the output if it exists
    #[arg(long)]
    pub force: bool,
    /// Whole disk size: `auto` (what the files need plus headroom) or a size such as 4G, 1536M
    #[arg(long, default_value = "auto")]
    pub size: String,
    /// Size of the EFI system partition
    #[arg(long, default_value = "256M")]
    pub esp_size: String,
    /// Boot loaders: syslinux (BIOS) + systemd-boot (UEFI), or GRUB on both
    #[arg(long, value_enum, default_value_t = Bootloader::Syslinux)]
    pub bootloader: Bootloader,
    /// The guest's hostname
    #[arg(long, default_value = "c2vm")]
    pub hostname: String,
    /// Root password: the first line of this file (stored only as a SHA-512 crypt hash)
    #[arg(long, conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Root password: the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// A public key file to put in /root/.ssh/authorized_keys
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// DNS servers for the guest (default: what DHCP provides); may be repeated
    #[arg(long)]
    pub dns: Vec<std::net::IpAddr>,
    /// Extra kernel command-line arguments
    #[arg(long, default_value = "")]
    pub append_cmdline: String,
    /// Where to put the staging tree and temporary files (default: $TMPDIR)
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The disk to boot (raw or any format qemu-img knows)
    pub disk: PathBuf,
    /// Firmware: bios (SeaBIOS) or uefi (OVMF)
    #[arg(long, value_enum, default_value_t = Firmware::Bios)]
    pub firmware: Firmware,
    /// Acceleration: auto uses KVM only where it works (kvm_intel/kvm_amd), else TCG
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
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
    /// Scripted: exit 0 as soon as the console shows this regular expression
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Scripted: log in on the serial console as USER (or USER:PASSWORD)
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub login: Option<String>,
    /// The password for --login, from the first line of this file
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Scripted: after --login, run this shell command, print its stdout, power off, exit with its status
    #[arg(long, requires = "login")]
    pub exec: Option<String>,
    /// Scripted: give up after this many seconds, showing the last console lines
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Vhdx,
    /// VHD (qemu-img calls it vpc)
    Vhd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootloader {
    /// SYSLINUX for BIOS, systemd-boot for UEFI
    Syslinux,
    /// GRUB for BIOS (core.img in a BIOS-boot partition) and UEFI
    Grub,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}
