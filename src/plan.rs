//! Validate first, then act: the options of `convert` and `build`, and their checked form (sizes
//! parsed, output path writable, password hashed, host tools present), made before c2vm touches
//! an engine or writes a disk.
use crate::arch::Arch;
use crate::boot::{secure::SecureBoot, Bootloader};
use crate::choose::KernelChoice;
use crate::containerdisk::Destination;
use crate::credentials::{Credentials, PasswordSource};
use crate::disk::ext4::{self, Populate};
use crate::disk::layout::SizeRequest;
use crate::disk::luks::Passphrase;
use crate::kernel::Flavour;
use crate::output::{Compress, DiskFormat, OutputTarget, VmdkSubformat};
use crate::rootfs::app::AppChoice;
use crate::rootfs::init::c2vm::Restart;
use crate::rootfs::init::{InitChoice, InitPlan};
use crate::rootfs::setup::{check_hostname, GuestSettings};
use crate::source::registry::Access;
use crate::source::PullPolicy;
use crate::units::{parse_size, MIB};
use crate::workspace::WorkDir;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Options for the disk, whatever the source.
#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
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
    /// Secure Boot: `auto` puts shim, the distribution's signed loader and kernel on the ESP
    /// where the image has them (the Debian template and the generic bundle do), `on` fails
    /// without them, `off` writes unsigned loaders
    #[arg(long, value_enum, default_value_t = SecureBoot::Auto)]
    pub secure_boot: SecureBoot,
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
    /// Encrypt the root filesystem (LUKS2, AES-XTS): its passphrase is the first line of this
    /// file, asked on the console at every boot (`c2vm run --luks-passphrase-file` types it)
    #[arg(long, value_name = "FILE", conflicts_with = "luks_passphrase_stdin")]
    pub luks_passphrase_file: Option<PathBuf>,
    /// Encrypt the root filesystem: its passphrase is the first line of standard input
    #[arg(long, conflicts_with_all = ["password_stdin", "creds"])]
    pub luks_passphrase_stdin: bool,
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

/// Options for images that come from an engine.
#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// When to pull the image from its registry [default: missing]
    #[arg(long, value_enum)]
    pub pull: Option<PullPolicy>,
    /// The platform the disk is for, `linux/amd64` or `linux/arm64` [default: the image's own,
    /// or the host's where the source holds several]
    #[arg(long)]
    pub platform: Option<String>,
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
    /// Install the distribution's cloud-init (`--kernel distro`), so each machine booted from
    /// the disk takes its users, keys, hostname and network from its cloud or hypervisor:
    /// NoCloud (`c2vm run --cloud-init`, KubeVirt), ConfigDrive, GCE, Azure or EC2
    #[arg(long)]
    pub cloud_init: bool,
    /// The image already has a kernel, initramfs and init: the same as `--kernel image`
    #[arg(long, conflicts_with_all = ["kernel", "kernel_image"])]
    pub no_kernel: bool,
    /// A kernel bundle of your own instead of c2vm's generic one: an image holding
    /// /boot/vmlinuz-VER, /boot/initrd.img-VER and /usr/lib/modules/VER
    #[arg(long, value_name = "REF")]
    pub kernel_image: Option<String>,
    /// PID 1: `image` is the image's systemd or OpenRC (with the app as a service), `c2vm` is
    /// c2vm-init running the app directly; `auto` takes the image's where it has one
    #[arg(long, value_enum, default_value_t = InitChoice::Auto)]
    pub init: InitChoice,
    /// With c2vm-init, when the app ends: `no` powers the VM off (like `docker run`)
    #[arg(long, value_enum, default_value_t = Restart::No)]
    pub restart: Restart,
    /// With c2vm-init, seconds between the image's STOPSIGNAL and SIGKILL on the power button
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub stop_timeout: u64,
    /// Run the image's ENTRYPOINT/CMD at boot as a service (default: when the command is not a
    /// bare shell such as `bash`)
    #[arg(long, conflicts_with = "no_app")]
    pub app: bool,
    /// Do not run the image's ENTRYPOINT/CMD at boot
    #[arg(long)]
    pub no_app: bool,
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

/// Everything the disk stages need, checked.
#[derive(Debug)]
pub struct DiskPlan {
    pub output: OutputTarget,
    pub size: SizeRequest,
    pub esp_size: u64,
    pub bootloader: Bootloader,
    pub secure_boot: SecureBoot,
    /// Who the guest is, passed down whole to guest setup and c2vm-init.
    pub guest: GuestSettings,
    pub append_cmdline: String,
    pub workdir: WorkDir,
    /// SOURCE_DATE_EPOCH: the one time every timestamp c2vm and its tools write takes.
    pub epoch: Option<i64>,
    /// How mke2fs takes the files on this host (probed once).
    pub populate: Populate,
    /// `--json`: the result as JSON on standard output.
    pub json: bool,
    /// `--containerdisk`: where the KubeVirt containerDisk goes.
    pub containerdisk: Option<Destination>,
    /// `--luks-passphrase-file`: the root is encrypted with this passphrase.
    pub luks: Option<Passphrase>,
}

impl DiskPlan {
    /// Every option that shapes the disk: half the seed of a reproducible disk's identifiers
    /// (the input is the other), so different options give another disk. The output's name and
    /// format are not in it (the raw disk is the same), nor anything about how the image was
    /// fetched.
    pub fn seed(&self) -> DiskSeed<'_> {
        DiskSeed {
            size: self.size,
            esp_size: self.esp_size,
            bootloader: self.bootloader,
            secure_boot: self.secure_boot,
            guest: &self.guest,
            append_cmdline: &self.append_cmdline,
            epoch: self.epoch,
            encrypted: self.luks.is_some(),
        }
    }

    /// Bytes at the root partition's start before the filesystem: the LUKS2 header, if any.
    pub fn root_header(&self) -> u64 {
        match self.luks {
            Some(_) => crate::disk::luks::HEADER,
            None => 0,
        }
    }

    pub fn from_args(args: &DiskArgs) -> Result<DiskPlan> {
        let output = OutputTarget::check(
            &args.output,
            args.format,
            args.force,
            args.compress,
            args.vmdk_subformat,
        )?;
        let size = SizeRequest::parse(&args.size)?;
        let esp_size = parse_size(&args.esp_size).context("--esp-size")?;
        if esp_size < 64 * MIB || esp_size % MIB != 0 {
            bail!(
                "--esp-size must be a whole number of MiB, at least 64M (got {})",
                args.esp_size
            );
        }
        check_hostname(&args.hostname)?;
        let containerdisk = match &args.containerdisk {
            None => None,
            Some(text) => {
                if !matches!(output.format, DiskFormat::Qcow2 | DiskFormat::Raw) {
                    bail!("--containerdisk wraps a qcow2 or raw disk (what KubeVirt boots); write -o NAME.qcow2");
                }
                Some(Destination::parse(text, args.push)?)
            }
        };
        let password = match (&args.password_file, args.password_stdin) {
            (Some(path), _) => PasswordSource::File(path),
            (None, true) => PasswordSource::Stdin,
            (None, false) => PasswordSource::None,
        };
        let epoch = source_date_epoch()?;
        let credentials = Credentials::read(
            password,
            args.ssh_key.as_deref(),
            epoch.map(|e| format!("{e}\0{}", args.hostname)).as_deref(),
        )?;
        let luks = match (&args.luks_passphrase_file, args.luks_passphrase_stdin) {
            (Some(path), _) => Some(Passphrase::from_file(path)?),
            (None, true) => Some(Passphrase::from_stdin()?),
            (None, false) => None,
        };
        if luks.is_some() {
            crate::cmd::require("cryptsetup")?;
        }
        let workdir = WorkDir::choose(args.workdir.as_deref())?;
        crate::cmd::require("mke2fs")?;
        let populate = ext4::probe(&std::env::temp_dir())?;
        if let Populate::Staging(why) = &populate {
            if !rustix::process::geteuid().is_root() {
                bail!("{why}, and without that c2vm must unpack the image as root; {}, or run c2vm as root", ext4::how_to_get_tar_input());
            }
        }
        // The loaders' host tools depend on the disk's architecture: checked once the source
        // says it (`pipeline::check_arch`).
        Ok(DiskPlan {
            output,
            size,
            esp_size,
            bootloader: args.bootloader,
            secure_boot: args.secure_boot,
            guest: GuestSettings {
                hostname: args.hostname.clone(),
                credentials,
                dns: args.dns.clone(),
            },
            append_cmdline: args.append_cmdline.trim().to_string(),
            workdir,
            epoch,
            populate,
            json: args.json,
            containerdisk,
            luks,
        })
    }
}

/// The disk's options as they go into the identifiers' seed: serialised for hashing, never
/// shown (the password's hash is in it).
#[derive(serde::Serialize)]
pub struct DiskSeed<'a> {
    size: SizeRequest,
    esp_size: u64,
    bootloader: Bootloader,
    secure_boot: SecureBoot,
    guest: &'a GuestSettings,
    append_cmdline: &'a str,
    epoch: Option<i64>,
    encrypted: bool,
}

/// What to do with an image from an engine, checked.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// `--platform`.
    pub platform: Option<Arch>,
    pub pull: PullPolicy,
    pub kernel: KernelChoice,
    /// `--kernel-image`: the bundle to use for `generic`.
    pub kernel_image: Option<String>,
    /// `--kernel-flavour`: for the kernel c2vm adds.
    pub kernel_flavour: Flavour,
    /// `--cloud-init`: a layer with cloud-init on the kernel c2vm adds.
    pub cloud_init: bool,
    pub init: InitPlan,
    pub app: AppChoice,
    /// How to reach registries (docker://).
    pub access: Access,
}

impl ImagePlan {
    pub fn from_args(args: &ImageArgs) -> Result<ImagePlan> {
        let platform = args
            .platform
            .as_deref()
            .map(Arch::parse_platform)
            .transpose()?;
        let kernel = match (args.no_kernel, &args.kernel_image) {
            (true, _) => KernelChoice::Image,
            (_, Some(_)) if args.kernel == KernelChoice::Auto => KernelChoice::Generic,
            (_, Some(_)) if args.kernel != KernelChoice::Generic => {
                bail!(
                    "--kernel-image is a bundle for --kernel generic; drop --kernel {:?}",
                    args.kernel
                )
            }
            _ => args.kernel,
        };
        check_template_options(
            args.kernel_flavour,
            args.cloud_init,
            !matches!(kernel, KernelChoice::Image | KernelChoice::Generic),
        )?;
        Ok(ImagePlan {
            platform,
            pull: args.pull.unwrap_or(PullPolicy::Missing),
            kernel,
            kernel_image: args.kernel_image.clone(),
            kernel_flavour: args.kernel_flavour,
            cloud_init: args.cloud_init,
            init: InitPlan {
                choice: args.init,
                restart: args.restart,
                stop_timeout: args.stop_timeout,
            },
            app: match (args.app, args.no_app) {
                (true, _) => AppChoice::On,
                (_, true) => AppChoice::Off,
                _ => AppChoice::Auto,
            },
            access: Access {
                creds: match &args.creds {
                    None => None,
                    Some(creds) => Some(registry_creds(creds)?),
                },
                insecure: !args.tls_verify,
                cert_dir: args.cert_dir.clone(),
            },
        })
    }

    /// A `rootfs:` tarball is taken as it is: image options would be silently ignored, so they
    /// are refused instead. `--no-kernel` and `--no-app` say what a tarball gets anyway. Returns
    /// `--platform`, which a tarball takes (it has no config to say its architecture).
    pub fn check_tarball(args: &ImageArgs) -> Result<Option<Arch>> {
        let given = [
            (args.pull.is_some(), "--pull"),
            (args.app, "--app"),
            (args.kernel != KernelChoice::Auto, "--kernel"),
            (args.kernel_image.is_some(), "--kernel-image"),
            (args.kernel_flavour != Flavour::Standard, "--kernel-flavour"),
            (args.cloud_init, "--cloud-init"),
            (args.init != InitChoice::Auto, "--init"),
            (args.restart != Restart::No, "--restart"),
            (args.creds.is_some(), "--creds"),
            (!args.tls_verify, "--tls-verify"),
            (args.cert_dir.is_some(), "--cert-dir"),
        ];
        if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
            bail!("{flag} applies to images from an engine; a rootfs: tarball is converted as it is (with its own kernel and init, and no image config): drop {flag}");
        }
        args.platform
            .as_deref()
            .map(Arch::parse_platform)
            .transpose()
    }
}

/// `--kernel-flavour` and `--cloud-init` are options of the template c2vm adds a kernel with:
/// with the image's own kernel or a bundle's (`distro` false) they would be silently ignored, so
/// they are refused. Checked from the flags before any work, and again once `--kernel auto` has
/// decided.
pub fn check_template_options(flavour: Flavour, cloud_init: bool, distro: bool) -> Result<()> {
    if flavour != Flavour::Standard && !distro {
        bail!("--kernel-flavour picks the kernel c2vm adds from its template (--kernel distro, in Docker or Podman), and this conversion takes the image's own or a bundle's; drop --kernel-flavour");
    }
    if cloud_init && !distro {
        bail!("--cloud-init installs cloud-init with the kernel c2vm adds from its template (--kernel distro, in Docker or Podman), and this conversion takes the image's own or a bundle's; drop --cloud-init (c2vm-init guests take their settings as credentials: see `c2vm run --credential`)");
    }
    Ok(())
}

/// `--creds USER[:PASS]`; without `:PASS`, the password is the first line of standard input.
fn registry_creds(text: &str) -> Result<(String, String)> {
    if let Some((user, password)) = text.split_once(':') {
        crate::progress::note("Note: a password given with --creds shows in `ps` to every user; give --creds USER and the password on standard input instead");
        return Ok((user.to_string(), password.to_string()));
    }
    if text.is_empty() {
        bail!("--creds needs a user name: --creds USER, with the password on standard input");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the registry password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("--creds {text}: no password on standard input; pipe it in, e.g. `c2vm convert … --creds {text} < password-file`");
    }
    Ok((text.to_string(), password))
}

/// SOURCE_DATE_EPOCH, read once here (reproducible builds' convention).
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(text) => text.trim().parse().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_args() -> ImageArgs {
        ImageArgs {
            pull: None,
            platform: None,
            kernel: KernelChoice::Auto,
            no_kernel: false,
            kernel_image: None,
            kernel_flavour: Flavour::Standard,
            cloud_init: false,
            init: InitChoice::Auto,
            restart: Restart::No,
            stop_timeout: 10,
            app: false,
            no_app: false,
            creds: None,
            tls_verify: true,
            cert_dir: None,
        }
    }

    #[test]
    fn image_options_are_checked() {
        let plan = ImagePlan::from_args(&image_args()).unwrap();
        assert_eq!(plan.pull, PullPolicy::Missing);
        assert_eq!(plan.kernel, KernelChoice::Auto);
        assert_eq!(plan.app, AppChoice::Auto);
        let no_kernel = ImageArgs {
            no_kernel: true,
            ..image_args()
        };
        assert_eq!(
            ImagePlan::from_args(&no_kernel).unwrap().kernel,
            KernelChoice::Image
        );
        let own = ImageArgs {
            kernel_image: Some("my/kernel".into()),
            ..image_args()
        };
        assert_eq!(
            ImagePlan::from_args(&own).unwrap().kernel,
            KernelChoice::Generic
        );
        let arm = ImageArgs {
            platform: Some("linux/arm64".into()),
            ..image_args()
        };
        assert_eq!(
            ImagePlan::from_args(&arm).unwrap().platform,
            Some(Arch::Arm64)
        );
        let riscv = ImageArgs {
            platform: Some("linux/riscv64".into()),
            ..image_args()
        };
        let err = ImagePlan::from_args(&riscv).unwrap_err().to_string();
        assert!(
            err.contains("c2vm boots linux/amd64 or linux/arm64"),
            "{err}"
        );
        // The cloud kernel is the template's: with the image's own or a bundle's it means nothing.
        let cloud = ImageArgs {
            kernel_flavour: Flavour::Cloud,
            ..image_args()
        };
        assert_eq!(
            ImagePlan::from_args(&cloud).unwrap().kernel_flavour,
            Flavour::Cloud
        );
        for kernel in [KernelChoice::Image, KernelChoice::Generic] {
            let mixed = ImageArgs {
                kernel,
                ..cloud.clone()
            };
            let err = ImagePlan::from_args(&mixed).unwrap_err().to_string();
            assert!(err.contains("drop --kernel-flavour"), "{err}");
        }
        let tarball = ImagePlan::check_tarball(&cloud).unwrap_err().to_string();
        assert!(tarball.contains("drop --kernel-flavour"), "{tarball}");
        // So is cloud-init: it is installed with the template's kernel.
        let cloud_init = ImageArgs {
            cloud_init: true,
            ..image_args()
        };
        assert!(ImagePlan::from_args(&cloud_init).unwrap().cloud_init);
        for kernel in [KernelChoice::Image, KernelChoice::Generic] {
            let mixed = ImageArgs {
                kernel,
                ..cloud_init.clone()
            };
            let err = ImagePlan::from_args(&mixed).unwrap_err().to_string();
            assert!(err.contains("drop --cloud-init"), "{err}");
        }
    }

    #[test]
    fn a_tarball_refuses_image_options() {
        assert!(ImagePlan::check_tarball(&image_args()).is_ok());
        let pull = ImageArgs {
            pull: Some(PullPolicy::Always),
            ..image_args()
        };
        let err = ImagePlan::check_tarball(&pull).unwrap_err().to_string();
        assert!(err.starts_with("--pull applies to images"), "{err}");
        let app = ImageArgs {
            app: true,
            ..image_args()
        };
        let err = ImagePlan::check_tarball(&app).unwrap_err().to_string();
        assert!(err.contains("drop --app"), "{err}");
    }
}
