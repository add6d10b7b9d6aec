//! The options of `convert` and `build`, in the groups `--help` shows them: one flattened
//! struct per group, all defined here. The value types are their domains' (`DiskFormat` is
//! the output's, `Bootloader` the boot stage's); `plan` turns these into checked values.
use crate::boot::{secure::SecureBoot, Bootloader};
use crate::convert::choose::KernelChoice;
use crate::kernel::Flavour;
use crate::output::sbom::SbomFormat;
use crate::output::{Compress, DiskFormat, VmdkSubformat};
use crate::rootfs::init::c2vm::Restart;
use crate::rootfs::init::InitChoice;
use crate::source::PullPolicy;
use clap::Args;
use std::path::PathBuf;

/// Every option of `convert` and `build`, after the source.
#[derive(Args, Debug, Clone)]
pub struct ConvertOptions {
    #[command(flatten, next_help_heading = "Output")]
    pub output: OutputOptions,
    #[command(flatten, next_help_heading = "Disk")]
    pub disk: DiskOptions,
    #[command(flatten, next_help_heading = "Boot")]
    pub boot: BootOptions,
    #[command(flatten, next_help_heading = "Kernel and init")]
    pub kernel: KernelOptions,
    #[command(flatten, next_help_heading = "Guest settings")]
    pub guest: GuestOptions,
    #[command(flatten, next_help_heading = "Encryption")]
    pub encryption: EncryptionOptions,
    #[command(flatten, next_help_heading = "Image source")]
    pub source: SourceOptions,
}

/// Where the disk goes and in which format.
#[derive(Args, Debug, Clone)]
pub struct OutputOptions {
    /// The output disk; its extension picks the format (.img/.raw, .qcow2, .vmdk, .vdi, .vhdx, .vhd)
    #[arg(short, long)]
    pub output: PathBuf,
    /// The output format, when the extension does not say (.tar.gz is GCE's)
    #[arg(long, value_enum)]
    pub format: Option<DiskFormat>,
    /// qcow2 cluster compression [default: zstd, which QEMU 5.1+ reads; zlib for older readers]
    #[arg(long, value_enum)]
    pub compress: Option<Compress>,
    /// VMDK subformat [default: streamOptimized, which AWS and VMware import]
    #[arg(long, value_enum)]
    pub vmdk_subformat: Option<VmdkSubformat>,
    /// Also wrap the disk as a KubeVirt containerDisk: NAME (loaded into the engine),
    /// oci:DIR[:TAG], oci-archive:PATH[:TAG] or docker://REF (pushed, no engine needed)
    #[arg(long, value_name = "REF")]
    pub containerdisk: Option<String>,
    /// With --containerdisk NAME: push it to NAME's registry instead of loading it into the engine
    #[arg(long, requires = "containerdisk")]
    pub push: bool,
    /// Print the result as JSON on standard output (output, format, sizes, kernel, init,
    /// image, identifiers, stage timings); the human report stays on standard error
    #[arg(long)]
    pub json: bool,
    /// Also write the disk's SBOM to FILE: every package of the guest's dpkg or apk database,
    /// the kernel, loaders and files c2vm added, the disk's and the image's digests; *.spdx.json
    /// is SPDX 2.3, *.cdx.json CycloneDX 1.6
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// The SBOM's format, when its name does not say
    #[arg(long, value_enum, requires = "sbom")]
    pub sbom_format: Option<SbomFormat>,
    /// Also write how the disk was made to FILE: an in-toto Statement of SLSA v1 provenance
    /// naming the disk's sha256, the image and kernel by digest, and the options that shape
    /// the disk (never a password, passphrase or key)
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
    /// Sign the provenance with this private key (Ed25519 or ECDSA P-256, PKCS#8 PEM): the
    /// file is then a DSSE envelope
    #[arg(long, value_name = "PEM", requires = "provenance")]
    pub sign_key: Option<PathBuf>,
    /// Overwrite the output (and the SBOM, the provenance) if it exists
    #[arg(long)]
    pub force: bool,
}

/// `--esp-size`'s default.
pub const DEFAULT_ESP_SIZE: &str = "256M";

/// The disk's size, and where the work happens.
#[derive(Args, Debug, Clone)]
pub struct DiskOptions {
    /// Whole disk size: `auto` (what the files need plus headroom) or a size such as 4G, 1536M
    #[arg(long, default_value = "auto")]
    pub size: String,
    /// Size of the EFI system partition
    #[arg(long, default_value = DEFAULT_ESP_SIZE)]
    pub esp_size: String,
    /// Where to put the staging tree and temporary files (default: $TMPDIR)
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// How the disk boots.
#[derive(Args, Debug, Clone)]
pub struct BootOptions {
    /// Boot loaders: syslinux (BIOS) + systemd-boot (UEFI), or GRUB on both
    #[arg(long, value_enum, default_value_t = Bootloader::Syslinux)]
    pub bootloader: Bootloader,
    /// Secure Boot: `auto` puts shim, the distribution's signed loader and kernel on the ESP
    /// where the image has them (the Debian template and the generic bundle do), `on` fails
    /// without them, `off` writes unsigned loaders
    #[arg(long, value_enum, default_value_t = SecureBoot::Auto)]
    pub secure_boot: SecureBoot,
    /// JoinedStream kernel command-line arguments
    #[arg(long, default_value = "")]
    pub append_cmdline: String,
}

/// Which kernel the disk boots, and what runs as PID 1.
#[derive(Args, Debug, Clone)]
pub struct KernelOptions {
    /// Which kernel the disk boots: `distro` adds one from c2vm's template for the image's
    /// distribution, `image` takes the image's own /boot, `generic` c2vm's kernel bundle; `auto`
    /// picks distro where a template and package manager fit, else image, else generic
    #[arg(long, value_enum, default_value_t = KernelChoice::Auto)]
    pub kernel: KernelChoice,
    /// The kernel c2vm adds (`--kernel distro`): `standard`, the distribution's default with
    /// every driver, or `cloud`, Debian's VM kernel: boots about 2 s sooner under emulation,
    /// but has no USB, graphics, e1000 NICs or LSI/MegaRAID SCSI (VirtualBox's and VMware's
    /// defaults)
    #[arg(long, value_enum, default_value_t = Flavour::Standard, alias = "kernel-flavor", value_name = "FLAVOUR")]
    pub kernel_flavour: Flavour,
    /// The image already has a kernel, initramfs and init: the same as `--kernel image`
    #[arg(long, conflicts_with_all = ["kernel", "kernel_image"])]
    pub no_kernel: bool,
    /// A kernel bundle of your own instead of c2vm's generic one: an image holding
    /// /boot/vmlinuz-VER, /boot/initrd.img-VER and /usr/lib/modules/VER
    #[arg(long, value_name = "REF")]
    pub kernel_image: Option<String>,
    /// Install the distribution's cloud-init (`--kernel distro`), so each machine booted from
    /// the disk takes its users, keys, hostname and network from its cloud or hypervisor:
    /// NoCloud (`c2vm run --cloud-init`, KubeVirt), ConfigDrive, GCE, Azure or EC2
    #[arg(long)]
    pub cloud_init: bool,
    /// PID 1: `image` is the image's systemd or OpenRC (with the app as a service), `c2vm` is
    /// c2vm-init running the app directly; `auto` takes the image's where it has one
    #[arg(long, value_enum, default_value_t = InitChoice::Auto)]
    pub init: InitChoice,
    /// With c2vm-init, when the app ends: `no` powers the VM off (like `docker run`)
    #[arg(long, value_enum, default_value_t = Restart::No)]
    pub restart: Restart,
    /// With c2vm-init, seconds between the image's STOPSIGNAL and SIGKILL on the power button
    /// [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// Run the image's ENTRYPOINT/CMD at boot as a service (default: when the command is not a
    /// bare shell such as `bash`)
    #[arg(long, conflicts_with = "no_app")]
    pub app: bool,
    /// Do not run the image's ENTRYPOINT/CMD at boot
    #[arg(long)]
    pub no_app: bool,
}

/// Who the guest is, written into the disk (`c2vm run` has the same settings for one boot).
#[derive(Args, Debug, Clone)]
pub struct GuestOptions {
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
}

/// An encrypted root filesystem.
#[derive(Args, Debug, Clone)]
pub struct EncryptionOptions {
    /// Encrypt the root filesystem (LUKS2, AES-XTS): its passphrase is the first line of this
    /// file, asked on the console at every boot (`c2vm run --luks-passphrase-file` types it)
    #[arg(long, value_name = "FILE", conflicts_with = "luks_passphrase_stdin")]
    pub luks_passphrase_file: Option<PathBuf>,
    /// Encrypt the root filesystem: its passphrase is the first line of standard input
    #[arg(long, conflicts_with_all = ["password_stdin", "creds"])]
    pub luks_passphrase_stdin: bool,
}

/// How the image is fetched; none of these changes the disk.
#[derive(Args, Debug, Clone)]
pub struct SourceOptions {
    /// When to pull the image from its registry [default: missing]
    #[arg(long, value_enum)]
    pub pull: Option<PullPolicy>,
    /// The platform the disk is for, `linux/amd64` or `linux/arm64` [default: the image's own,
    /// or the host's where the source holds several]
    #[arg(long)]
    pub platform: Option<String>,
    /// docker:// credentials: USER, with the password read from standard input (USER:PASS
    /// works too, but puts the password where `ps` shows it)
    #[arg(long, value_name = "USER[:PASS]", conflicts_with = "password_stdin")]
    pub creds: Option<String>,
    /// docker://: check TLS certificates and require HTTPS (plain HTTP is allowed for
    /// localhost and 127.0.0.0/8 only)
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// docker://: a directory of CA certificates (`*.crt`) to trust [default:
    /// /etc/containers/certs.d/HOST, /etc/docker/certs.d/HOST]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}
