//! Validate first, then act: the options of `convert` and `build`, and their checked form (sizes
//! parsed, output path writable, password hashed, host tools present), made before c2vm touches
//! an engine or writes a disk.
use crate::arch::Arch;
use crate::boot::{secure::SecureBoot, Bootloader};
use crate::convert::choose::KernelChoice;
use crate::convert::options::{
    ConvertOptions, EncryptionOptions, GuestOptions, KernelOptions, OutputOptions, SourceOptions,
    DEFAULT_ESP_SIZE,
};
use crate::credentials::{Credentials, PasswordSource};
use crate::disk::ext4::{self, Populate};
use crate::disk::layout::SizeRequest;
use crate::disk::luks::Passphrase;
use crate::kernel::Flavour;
use crate::output::containerdisk::Destination;
use crate::output::provenance::{self, IsSet, ProvenanceTarget, SigningKey};
use crate::output::sbom::SbomTarget;
use crate::output::{DiskFormat, OutputTarget};
use crate::rootfs::app::AppChoice;
use crate::rootfs::init::c2vm::Restart;
use crate::rootfs::init::{self, InitChoice, InitPlan};
use crate::rootfs::setup::{check_hostname, GuestSettings};
use crate::source::registry::Access;
use crate::source::{PullPolicy, SourceRef};
use crate::units::{parse_size, MIB};
use crate::workspace::WorkDir;
use anyhow::{bail, Context, Result};

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
    /// `--sbom`: where the SBOM goes, and its format.
    pub sbom: Option<SbomTarget>,
    /// `--provenance`: where it goes, what it records of the options, the `--sign-key`.
    pub provenance: Option<ProvenanceTarget>,
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
    pub fn luks_header(&self) -> u64 {
        match self.luks {
            Some(_) => crate::disk::luks::HEADER,
            None => 0,
        }
    }

    /// After [`DiskPlan::parse`] and the source's own checks: the secrets read, then the host
    /// probed, so which error a user sees for bad input never depends on the host.
    pub fn prepare(mut self, options: &ConvertOptions) -> Result<DiskPlan> {
        self.read_sign_key(&options.output)?;
        self.read_secrets(&options.guest, &options.encryption)?;
        self.check_host()?;
        Ok(self)
    }

    /// The options alone, checked without reading a secret or probing the host.
    pub fn parse(options: &ConvertOptions) -> Result<DiskPlan> {
        let (out, disk, boot, guest) = (
            &options.output,
            &options.disk,
            &options.boot,
            &options.guest,
        );
        let output = OutputTarget::check(
            &out.output,
            out.format,
            out.force,
            out.compress,
            out.vmdk_subformat,
        )?;
        if output.format.is_live() {
            check_live(options, output.format)?;
        }
        let sbom = (out.sbom.as_deref())
            .map(|path| SbomTarget::check(path, out.sbom_format, &output.path, out.force))
            .transpose()?;
        let epoch = source_date_epoch()?;
        let sbom_path = sbom.as_ref().map(|s| s.path.as_path());
        let provenance = (out.provenance.as_deref())
            .map(|path| {
                let recorded = recorded(options, &output, epoch);
                ProvenanceTarget::check(path, &output.path, sbom_path, out.force, recorded)
            })
            .transpose()?;
        let esp_size = parse_size(&disk.esp_size).context("--esp-size")?;
        if esp_size < 64 * MIB || esp_size % MIB != 0 {
            bail!(
                "--esp-size must be a whole number of MiB, at least 64M (got {})",
                disk.esp_size
            );
        }
        check_hostname(&guest.hostname)?;
        let containerdisk = match &out.containerdisk {
            None => None,
            Some(text) => {
                if !matches!(output.format, DiskFormat::Qcow2 | DiskFormat::Raw) {
                    bail!("--containerdisk wraps a qcow2 or raw disk (what KubeVirt boots); write -o NAME.qcow2");
                }
                Some(Destination::parse(text, out.push)?)
            }
        };
        Ok(DiskPlan {
            output,
            size: SizeRequest::parse(&disk.size)?,
            esp_size,
            bootloader: boot.bootloader,
            secure_boot: boot.secure_boot,
            guest: GuestSettings {
                hostname: guest.hostname.clone(),
                credentials: Credentials::default(),
                dns: guest.dns.clone(),
            },
            append_cmdline: boot.append_cmdline.trim().to_string(),
            workdir: WorkDir::choose(disk.workdir.as_deref())?,
            epoch,
            // Until the host is probed (`check_host`).
            populate: Populate::Stream,
            json: out.json,
            containerdisk,
            luks: None,
            sbom,
            provenance,
        })
    }

    /// `--sign-key`: read and checked first among the secrets (a refusal consumes no stdin).
    fn read_sign_key(&mut self, out: &OutputOptions) -> Result<()> {
        if let (Some(target), Some(path)) = (&mut self.provenance, &out.sign_key) {
            target.sign_with(SigningKey::read(path)?);
        }
        Ok(())
    }

    /// The root password and SSH key (hashed and read for the guest) and the LUKS passphrase,
    /// from their files or standard input.
    fn read_secrets(&mut self, guest: &GuestOptions, encryption: &EncryptionOptions) -> Result<()> {
        let password = match (&guest.password_file, guest.password_stdin) {
            (Some(path), _) => PasswordSource::File(path),
            (None, true) => PasswordSource::Stdin,
            (None, false) => PasswordSource::None,
        };
        let salt_seed = self.epoch.map(|e| format!("{e}\0{}", guest.hostname));
        self.guest.credentials =
            Credentials::read(password, guest.ssh_key.as_deref(), salt_seed.as_deref())?;
        self.luks = match (
            &encryption.luks_passphrase_file,
            encryption.luks_passphrase_stdin,
        ) {
            (Some(path), _) => Some(Passphrase::from_file(path)?),
            (None, true) => Some(Passphrase::from_stdin()?),
            (None, false) => None,
        };
        Ok(())
    }

    /// The host's tools for what the options ask: a live medium's writers, or mke2fs and how it
    /// takes the files (probed in the work directory, where the conversion writes), cryptsetup
    /// for an encrypted root. The loaders' tools depend on the disk's architecture: checked once the source says it
    /// (`pipeline::check_loader_tools`).
    fn check_host(&mut self) -> Result<()> {
        if self.output.format.is_live() {
            // tar2sqfs takes the stream whatever this host's mke2fs reads.
            return self.output.check_live_tools();
        }
        if self.luks.is_some() {
            crate::cmd::require("cryptsetup")?;
        }
        crate::cmd::require("mke2fs")?;
        self.populate = ext4::probe(self.workdir.path())?;
        if let Populate::Staging(why) = &self.populate {
            if !rustix::process::geteuid().is_root() {
                bail!("{why}, and without that c2vm must unpack the image as root; {}, or run c2vm as root", ext4::how_to_get_tar_input());
            }
        }
        Ok(())
    }
}

/// A live medium's root is read-only and sized by its files: the options that shape or seal a
/// writable disk do not apply.
fn check_live(options: &ConvertOptions, format: DiskFormat) -> Result<()> {
    let (what, out) = match format {
        DiskFormat::Iso => ("an ISO", "-o NAME.iso"),
        _ => ("a network boot set", "--format pxe -o DIR"),
    };
    let disk = &options.disk;
    if disk.size != "auto" {
        bail!("--size sets a disk's size; {what}'s root is read-only and as large as its files: drop --size");
    }
    if disk.esp_size != DEFAULT_ESP_SIZE {
        bail!("--esp-size sets a disk's EFI partition; {what}'s boot image is sized to its files: drop --esp-size");
    }
    let enc = &options.encryption;
    if enc.luks_passphrase_file.is_some() || enc.luks_passphrase_stdin {
        bail!("an encrypted root needs a writable disk, and {what}'s root is a read-only image in the clear: drop --luks-passphrase-file, or write a disk instead of {out}");
    }
    if format == DiskFormat::Iso && options.boot.bootloader == Bootloader::Grub {
        bail!("--bootloader grub: an ISO boots GRUB on BIOS and systemd-boot (signed, with shim) on UEFI, whatever the disk would; drop --bootloader");
    }
    if format == DiskFormat::Pxe {
        let out = &options.output;
        if out.sbom.is_some() || out.provenance.is_some() {
            bail!("--sbom and --provenance describe one file, and a network boot set is a directory: write --format iso or a disk for them");
        }
    }
    Ok(())
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

/// What `--provenance` records of the options: those that shape the disk, in the command line's
/// spelling; of the secrets only whether they were given.
fn recorded(
    options: &ConvertOptions,
    output: &OutputTarget,
    epoch: Option<i64>,
) -> provenance::Parameters {
    let (boot, k, guest, enc) = (
        &options.boot,
        &options.kernel,
        &options.guest,
        &options.encryption,
    );
    let app = match (k.app, k.no_app) {
        (true, _) => "on",
        (_, true) => "off",
        _ => "auto",
    };
    provenance::Parameters {
        format: cli_name(&output.format),
        compress: (output.format == DiskFormat::Qcow2).then(|| cli_name(&output.compress)),
        vmdk_subformat: (output.format == DiskFormat::Vmdk)
            .then(|| cli_name(&output.vmdk_subformat)),
        size: options.disk.size.clone(),
        esp_size: options.disk.esp_size.clone(),
        bootloader: cli_name(&boot.bootloader),
        secure_boot: cli_name(&boot.secure_boot),
        append_cmdline: boot.append_cmdline.trim().to_string(),
        kernel: match k.no_kernel {
            true => cli_name(&KernelChoice::Image),
            false => cli_name(&k.kernel),
        },
        kernel_flavour: cli_name(&k.kernel_flavour),
        kernel_image: k.kernel_image.clone(),
        cloud_init: k.cloud_init,
        init: cli_name(&k.init),
        restart: cli_name(&k.restart),
        stop_timeout: k.stop_timeout,
        app: app.to_string(),
        hostname: guest.hostname.clone(),
        dns: guest.dns.iter().map(ToString::to_string).collect(),
        root_password: IsSet {
            set: guest.password_file.is_some() || guest.password_stdin,
        },
        ssh_key: IsSet {
            set: guest.ssh_key.is_some(),
        },
        encrypted: enc.luks_passphrase_file.is_some() || enc.luks_passphrase_stdin,
        containerdisk: options.output.containerdisk.clone(),
        source_date_epoch: epoch,
    }
}

/// An option's value as the command line spells it.
fn cli_name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
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
    /// The image options for `source`: a `rootfs:` tarball refuses those it would ignore.
    pub fn for_source(options: &ConvertOptions, source: &SourceRef) -> Result<ImagePlan> {
        if let SourceRef::Tarball(_) = source {
            check_tarball(&options.kernel, &options.source)?;
        }
        ImagePlan::from_args(&options.kernel, &options.source)
    }

    pub fn from_args(k: &KernelOptions, source: &SourceOptions) -> Result<ImagePlan> {
        let platform = source
            .platform
            .as_deref()
            .map(Arch::parse_platform)
            .transpose()?;
        let kernel = match (k.no_kernel, &k.kernel_image) {
            (true, _) => KernelChoice::Image,
            (_, Some(_)) if k.kernel == KernelChoice::Auto => KernelChoice::Generic,
            (_, Some(_)) if k.kernel != KernelChoice::Generic => {
                bail!(
                    "--kernel-image is a bundle for --kernel generic; drop --kernel {:?}",
                    k.kernel
                )
            }
            _ => k.kernel,
        };
        // Before any work, from the flags; again once `--kernel auto` has decided.
        check_template_options(
            k.kernel_flavour,
            k.cloud_init,
            !matches!(kernel, KernelChoice::Image | KernelChoice::Generic),
        )?;
        Ok(ImagePlan {
            platform,
            pull: source.pull.unwrap_or(PullPolicy::Missing),
            kernel,
            kernel_image: k.kernel_image.clone(),
            kernel_flavour: k.kernel_flavour,
            cloud_init: k.cloud_init,
            init: InitPlan {
                choice: k.init,
                restart: k.restart,
                stop_timeout: k.stop_timeout.unwrap_or(init::DEFAULT_STOP_TIMEOUT),
            },
            app: match (k.app, k.no_app) {
                (true, _) => AppChoice::On,
                (_, true) => AppChoice::Off,
                _ => AppChoice::Auto,
            },
            access: Access {
                creds: match &source.creds {
                    None => None,
                    Some(creds) => Some(registry_creds(creds)?),
                },
                insecure: !source.tls_verify,
                cert_dir: source.cert_dir.clone(),
            },
        })
    }
}

/// A `rootfs:` tarball is taken as it is: image options would be silently ignored, so they are
/// refused instead. `--no-kernel` and `--no-app` say what a tarball gets anyway, and
/// `--platform` it takes (it has no config to say its architecture).
fn check_tarball(k: &KernelOptions, source: &SourceOptions) -> Result<()> {
    let image_options = [
        (source.pull.is_some(), "--pull"),
        (k.app, "--app"),
        (k.kernel != KernelChoice::Auto, "--kernel"),
        (k.kernel_image.is_some(), "--kernel-image"),
        (k.kernel_flavour != Flavour::Standard, "--kernel-flavour"),
        (k.cloud_init, "--cloud-init"),
        (k.init != InitChoice::Auto, "--init"),
        (k.restart != Restart::No, "--restart"),
        (k.stop_timeout.is_some(), "--stop-timeout"),
    ];
    if let Some((_, flag)) = image_options.iter().find(|(set, _)| *set) {
        bail!("{flag} applies to images; a rootfs: tarball is converted as it is (with its own kernel and init, and no image config): drop {flag}");
    }
    // How a registry is reached: a tarball is read from a path.
    let registry_options = [
        (source.creds.is_some(), "--creds"),
        (!source.tls_verify, "--tls-verify"),
        (source.cert_dir.is_some(), "--cert-dir"),
    ];
    if let Some((_, flag)) = registry_options.iter().find(|(set, _)| *set) {
        bail!("{flag} applies to images pulled from a registry (docker://, or --kernel-image docker://); a rootfs: tarball is read from its path: drop {flag}");
    }
    Ok(())
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
    use clap::Parser;

    /// The options as `c2vm convert debian:latest -o disk.img EXTRA…` parses them.
    fn options(extra: &[&str]) -> ConvertOptions {
        let argv = ["c2vm", "convert", "debian:latest", "-o", "disk.img"];
        let cli = crate::Cli::try_parse_from(argv.iter().chain(extra)).unwrap();
        match cli.command {
            crate::cli::Command::Convert(args) => args.options,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn image(extra: &[&str]) -> Result<ImagePlan> {
        let options = options(extra);
        ImagePlan::from_args(&options.kernel, &options.source)
    }

    fn tarball(extra: &[&str]) -> Result<ImagePlan> {
        ImagePlan::for_source(&options(extra), &SourceRef::Tarball("root.tar".into()))
    }

    fn refusal(result: Result<ImagePlan>) -> String {
        result.map(drop).unwrap_err().to_string()
    }

    #[test]
    fn image_options_are_checked() {
        let plan = image(&[]).unwrap();
        assert_eq!(plan.pull, PullPolicy::Missing);
        assert_eq!(plan.kernel, KernelChoice::Auto);
        assert_eq!(plan.app, AppChoice::Auto);
        assert_eq!(plan.init.stop_timeout, init::DEFAULT_STOP_TIMEOUT);
        assert_eq!(image(&["--no-kernel"]).unwrap().kernel, KernelChoice::Image);
        let own = image(&["--kernel-image", "my/kernel"]).unwrap();
        assert_eq!(own.kernel, KernelChoice::Generic);
        let arm = image(&["--platform", "linux/arm64"]).unwrap();
        assert_eq!(arm.platform, Some(Arch::Arm64));
        let err = refusal(image(&["--platform", "linux/riscv64"]));
        assert!(
            err.contains("c2vm boots linux/amd64 or linux/arm64"),
            "{err}"
        );
        // The cloud kernel is the template's: with the image's own or a bundle's it means nothing.
        let cloud = image(&["--kernel-flavour", "cloud"]).unwrap();
        assert_eq!(cloud.kernel_flavour, Flavour::Cloud);
        for kernel in ["image", "generic"] {
            let err = refusal(image(&["--kernel-flavour", "cloud", "--kernel", kernel]));
            assert!(err.contains("drop --kernel-flavour"), "{err}");
        }
        let err = refusal(tarball(&["--kernel-flavour", "cloud"]));
        assert!(err.contains("drop --kernel-flavour"), "{err}");
        // So is cloud-init: it is installed with the template's kernel.
        assert!(image(&["--cloud-init"]).unwrap().cloud_init);
        for kernel in ["image", "generic"] {
            let err = refusal(image(&["--cloud-init", "--kernel", kernel]));
            assert!(err.contains("drop --cloud-init"), "{err}");
        }
    }

    #[test]
    fn a_tarball_refuses_image_options() {
        assert!(tarball(&["--platform", "linux/arm64", "--no-app"]).is_ok());
        let err = refusal(tarball(&["--pull", "always"]));
        assert!(err.starts_with("--pull applies to images"), "{err}");
        let err = refusal(tarball(&["--app"]));
        assert!(err.contains("drop --app"), "{err}");
    }

    #[test]
    fn a_tarball_refuses_stop_timeout_even_at_its_default() {
        for value in ["30", "10"] {
            let err = refusal(tarball(&["--stop-timeout", value]));
            assert!(err.contains("drop --stop-timeout"), "{err}");
        }
        assert_eq!(
            image(&["--stop-timeout", "30"]).unwrap().init.stop_timeout,
            30
        );
    }

    #[test]
    fn a_tarball_names_registry_options_as_what_they_are() {
        for flags in [
            &["--creds", "user:secret"][..],
            &["--tls-verify", "false"],
            &["--cert-dir", "/etc/certs"],
        ] {
            let err = refusal(tarball(flags));
            assert!(
                err.starts_with(&format!(
                    "{} applies to images pulled from a registry (docker://",
                    flags[0]
                )),
                "{err}"
            );
            assert!(!err.contains("engine"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn disk_options_are_checked_without_the_host() {
        let plan = DiskPlan::parse(&options(&["--size", "4G", "--hostname", "web"])).unwrap();
        assert_eq!(plan.size, SizeRequest::Bytes(4 << 30));
        assert_eq!(plan.guest.hostname, "web");
        // Neither secrets nor the host are looked at yet.
        assert!(plan.luks.is_none());
        assert!(plan.guest.credentials.root_password_hash.is_none());
        let missing = options(&["--password-file", "/nonexistent/pw", "--hostname=bad_name"]);
        let err = DiskPlan::parse(&missing).unwrap_err().to_string();
        assert!(err.contains("is not a valid hostname"), "{err}");
        let err = DiskPlan::parse(&options(&["--esp-size", "10M"])).unwrap_err();
        assert!(err.to_string().contains("at least 64M"), "{err}");
    }

    /// The provenance of a disk made with every secret given holds none of them: not the
    /// password, its hash, the LUKS passphrase, the SSH key's text, nor their files' names.
    #[test]
    fn the_provenance_records_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let password = file("pw-file", "PASSWORD-hunter2\n");
        let passphrase = file("luks-file", "PASSPHRASE-correct-horse\n");
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl SSHCOMMENT";
        let ssh_key = file("key-file.pub", &format!("{ssh}\n"));
        let provenance = dir.path().join("d.intoto.json");
        let given = options(&[
            "--provenance",
            provenance.to_str().unwrap(),
            "--password-file",
            &password,
            "--luks-passphrase-file",
            &passphrase,
            "--ssh-key",
            &ssh_key,
        ]);
        let mut plan = DiskPlan::parse(&given).unwrap();
        plan.read_secrets(&given.guest, &given.encryption).unwrap();
        let target = plan.provenance.as_ref().unwrap();
        let inputs = provenance::Inputs {
            name: "disk.img".into(),
            sha256: "00",
            source: "debian:latest",
            source_id: "",
            diff_ids: &[],
            arch: Arch::Amd64,
            kernel: None,
            epoch: None,
        };
        provenance::write(target, &inputs)
            .unwrap()
            .commit(false)
            .unwrap();
        let text = std::fs::read_to_string(&provenance).unwrap();
        for secret in [
            "hunter2",
            "correct-horse",
            "AAAAC3NzaC1lZDI1NTE5",
            "SSHCOMMENT",
            "$6$",
            "pw-file",
            "luks-file",
            "key-file",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let external = &doc["predicate"]["buildDefinition"]["externalParameters"];
        assert_eq!(external["rootPassword"]["set"], true);
        assert_eq!(external["sshKey"]["set"], true);
        assert_eq!(external["encrypted"], true);
    }

    #[test]
    fn a_sign_key_needs_provenance_and_is_checked_first() {
        let argv = ["c2vm", "convert", "x", "-o", "d.img", "--sign-key", "k.pem"];
        assert!(crate::Cli::try_parse_from(argv).is_err());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let provenance = dir.path().join("p.json");
        let given = options(&[
            "--provenance",
            provenance.to_str().unwrap(),
            "--sign-key",
            key.to_str().unwrap(),
        ]);
        let mut plan = DiskPlan::parse(&given).unwrap();
        let err = plan.read_sign_key(&given.output).unwrap_err().to_string();
        assert!(err.contains("openssl pkcs8 -topk8 -nocrypt"), "{err}");
        assert!(!provenance.exists());
    }
}
