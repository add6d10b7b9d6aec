//! The kernel stage: a per-distribution Dockerfile from `templates/` adds a kernel, an initramfs,
//! the init system, udev and DHCP networking on top of the user's image, built through the Docker
//! API. The result is tagged with a hash of the base image, the template and the options, so
//! converting the same image again reuses it.
use crate::arch::Arch;
use crate::source::docker::{self, Engine};
use crate::source::{ImageDetails, PullPolicy};
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::collections::HashMap;

/// Distribution families with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Debian,
    Ubuntu,
    Alpine,
    Fedora,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Debian,
        Family::Ubuntu,
        Family::Alpine,
        Family::Fedora,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Debian => "debian",
            Family::Ubuntu => "ubuntu",
            Family::Alpine => "alpine",
            Family::Fedora => "fedora",
        }
    }

    /// The program the template installs with.
    pub fn package_manager(self) -> &'static str {
        match self {
            Family::Debian | Family::Ubuntu => "/usr/bin/apt-get",
            Family::Alpine => "/sbin/apk",
            Family::Fedora => "/usr/bin/dnf",
        }
    }

    /// The kernel package for `flavour` and `arch`, where the template takes one.
    fn kernel_package(self, flavour: Flavour, arch: Arch) -> Result<String> {
        match (self, flavour) {
            (Family::Debian, Flavour::Standard) => Ok(format!("linux-image-{arch}")),
            (Family::Debian, Flavour::Cloud) => Ok(format!("linux-image-cloud-{arch}")),
            (_, Flavour::Standard) => Ok(String::new()),
            (family, flavour) => bail!(
                "--kernel-flavour {}: only Debian images have that kernel, and this one is {}; drop --kernel-flavour",
                flavour.name(),
                family.name()
            ),
        }
    }

    /// The signed packages a Secure Boot chain takes from the guest, where the template installs
    /// them (all or none, where the release has them all): shim, MokManager, and the signed
    /// loader the disk boots, not the other's (GRUB's brings 25 MiB of tools and modules a
    /// systemd-boot disk never runs). See `boot::secure`.
    fn signed_loader_packages(self, arch: Arch, loader: SignedLoader) -> String {
        let loader = match loader {
            SignedLoader::SystemdBoot => format!("systemd-boot-efi-{arch}-signed"),
            SignedLoader::Grub => format!("grub-efi-{arch}-signed"),
        };
        match self {
            Family::Debian => format!("shim-signed shim-helpers-{arch}-signed {loader}"),
            _ => String::new(),
        }
    }

    /// The shell command of the cloud-init layer: the distribution's cloud-init, sudo, and
    /// growpart where it is packed apart; caches cleaned. Alpine's `setup-cloud-init` adds its
    /// OpenRC services.
    fn cloud_init_install(self) -> &'static str {
        match self {
            Family::Debian | Family::Ubuntu => "export DEBIAN_FRONTEND=noninteractive; apt-get update; \\\n    apt-get install -y --no-install-recommends cloud-init cloud-guest-utils sudo; \\\n    apt-get clean; rm -rf /var/lib/apt/lists/*",
            Family::Fedora => "dnf -y install cloud-init cloud-utils-growpart sudo; dnf clean all",
            Family::Alpine => "apk add --no-cache cloud-init sudo; setup-cloud-init",
        }
    }

    /// The shell command of the unlock layer (`--luks-passphrase-file`): the distribution's
    /// initramfs support for LUKS, whose package hook rebuilds the initramfs with cryptsetup and
    /// its prompt. None where c2vm does not know how the initramfs unlocks a root yet.
    fn luks_install(self) -> Option<&'static str> {
        match self {
            Family::Debian | Family::Ubuntu => Some("export DEBIAN_FRONTEND=noninteractive; apt-get update; \\\n    apt-get install -y --no-install-recommends cryptsetup-initramfs; \\\n    apt-get clean; rm -rf /var/lib/apt/lists/*"),
            Family::Fedora | Family::Alpine => None,
        }
    }

    /// The template text, compiled into the binary so c2vm is one self-contained file.
    pub fn template(self) -> &'static str {
        match self {
            Family::Debian => include_str!("../templates/debian.Dockerfile"),
            Family::Ubuntu => include_str!("../templates/ubuntu.Dockerfile"),
            Family::Alpine => include_str!("../templates/alpine.Dockerfile"),
            Family::Fedora => include_str!("../templates/fedora.Dockerfile"),
        }
    }
}

/// Which of the distribution's kernels the template installs (`--kernel-flavour`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// The distribution's default kernel, with every driver: boots on any hypervisor and on
    /// bare metal.
    #[default]
    Standard,
    /// Debian's cloud kernel (linux-image-cloud-amd64): built for VMs (QEMU/KVM, KubeVirt,
    /// Xen, Hyper-V, AWS, GCE, VMware's paravirtual disk and NIC). It leaves out USB, graphics,
    /// sound, Wi-Fi, the e1000 NICs and the LSI/MegaRAID SCSI controllers (VirtualBox's and
    /// VMware's defaults, Proxmox's default SCSI): a Debian boot under emulation is about
    /// 2 s shorter.
    Cloud,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Standard => "standard",
            Flavour::Cloud => "cloud",
        }
    }
}

/// `/etc/os-release` as key/value pairs (quotes removed).
pub fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.replace("\\\"", "\"")))
        })
        .collect()
}

pub fn detect_family(os_release: &HashMap<String, String>) -> Option<Family> {
    let id = os_release.get("ID").map(String::as_str).unwrap_or("");
    let like = os_release.get("ID_LIKE").map(String::as_str).unwrap_or("");
    let ids: Vec<&str> = std::iter::once(id).chain(like.split_whitespace()).collect();
    for candidate in &ids {
        match *candidate {
            "ubuntu" => return Some(Family::Ubuntu),
            "debian" => return Some(Family::Debian),
            "alpine" => return Some(Family::Alpine),
            "fedora" | "centos" | "rhel" | "rocky" | "almalinux" => return Some(Family::Fedora),
            _ => {}
        }
    }
    None
}

/// The loader of a Secure Boot chain, whose signed package the template installs with shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedLoader {
    SystemdBoot,
    Grub,
}

/// The template for `family` on `base_image`. `signed`: the chain's loader, whose packages it
/// installs (none with `--secure-boot off`, whose disk is the one before the chain).
pub fn render(
    family: Family,
    base_image: &str,
    flavour: Flavour,
    arch: Arch,
    signed: Option<SignedLoader>,
) -> Result<String> {
    let kernel_package = family.kernel_package(flavour, arch)?;
    let signed_packages = signed
        .map(|loader| family.signed_loader_packages(arch, loader))
        .unwrap_or_default();
    // shim-signed depends on `grub-efi-ARCH-bin | systemd-boot` and `grub2-common |
    // systemd-boot`. The `systemd-boot` package would install kernels on the ESP its own way,
    // over the ESP c2vm keeps, and GRUB's are tools a systemd-boot disk never runs: with the
    // systemd-boot chain the template satisfies both with a package of its own that provides
    // `systemd-boot` (the loader c2vm-update-boot keeps on the ESP) and holds no file.
    let loader_provides = match signed {
        Some(SignedLoader::SystemdBoot) => "systemd-boot",
        _ => "",
    };
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template(family.name(), family.template())
        .with_context(|| format!("loading the {} template", family.name()))?;
    let text = env
        .get_template(family.name())?
        .render(minijinja::context! {
            base_image => base_image,
            kernel_package => kernel_package,
            signed_packages => signed_packages,
            loader_provides => loader_provides,
            serial_console => arch.serial_console(),
        })
        .with_context(|| format!("rendering the {} template", family.name()))?;
    Ok(text)
}

/// The live media's boot method and its initramfs hook (ISO and network boot, see the files):
/// in every initramfs-tools template and the generic bundle, so any of their disks' kernels can
/// also boot a live medium.
const LIVE_SCRIPT: (&str, &str) = (
    "initramfs-live",
    include_str!("../templates/guest/initramfs-live"),
);
const LIVE_HOOK: (&str, &str) = (
    "initramfs-live-hook",
    include_str!("../templates/guest/initramfs-live-hook"),
);

/// Files beside the Dockerfile in every template's build context (templates COPY what they use).
const CONTEXT_FILES: &[(&str, &str)] = &[
    (
        "initramfs-local-root",
        include_str!("../templates/guest/initramfs-local-root"),
    ),
    LIVE_SCRIPT,
    LIVE_HOOK,
];

const LUKS_KEYRING: (&str, &str) = (
    "initramfs-luks-keyring",
    include_str!("../templates/guest/initramfs-luks-keyring"),
);

/// The unlock layer's initramfs hook (see the file).
const LUKS_FILES: &[(&str, &str)] = &[LUKS_KEYRING];

/// The generic bundle's: the unlock hook and the live media's files.
const GENERIC_FILES: &[(&str, &str)] = &[LUKS_KEYRING, LIVE_SCRIPT, LIVE_HOOK];

/// The tag of the kernel image for this base image, template and options.
pub fn cache_tag(base_id: &str, dockerfile: &str) -> String {
    tag_of("", base_id, dockerfile, CONTEXT_FILES)
}

/// `c2vm-kernel:KIND` and a hash of what a build on `base_id` takes: the same inputs give the
/// same tag, so the build is made once and found again.
fn tag_of(kind: &str, base_id: &str, dockerfile: &str, files: &[(&str, &str)]) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(base_id.as_bytes());
    hash.update([0]);
    hash.update(dockerfile.as_bytes());
    for (name, text) in files {
        hash.update([0]);
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("c2vm-kernel:{kind}{hex}")
}

/// The base of the generic kernel bundle: Debian stable, under the name that holds `arch`'s
/// image alone (`amd64/debian:stable`, `arm64v8/debian:stable`), so bundles for both can be
/// made on one engine.
pub fn generic_base(arch: Arch) -> String {
    format!("{}/debian:stable", arch.official_images_namespace())
}
const GENERIC_TEMPLATE: &str = include_str!("../templates/generic.Dockerfile");

/// c2vm's generic kernel bundle (built once through the engine, then cached by the template's
/// and base image's hash), or the user's own (`--kernel-image`).
/// `luks`: the variant whose initramfs unlocks an encrypted root (`--luks-passphrase-file`).
pub fn bundle(engine: &Engine, own: Option<&str>, arch: Arch, luks: bool) -> Result<ImageDetails> {
    if let Some(reference) = own {
        let image = engine.ensure_image(reference, PullPolicy::Missing, Some(arch))?;
        image.check_platform(reference, Some(arch))?;
        return Ok(image);
    }
    let base = engine.ensure_image(&generic_base(arch), PullPolicy::Missing, Some(arch))?;
    let dockerfile = render_generic(&base.id, arch, luks)?;
    let kind = match luks {
        true => "generic-luks-",
        false => "generic-",
    };
    let tag = tag_of(kind, &base.id, &dockerfile, GENERIC_FILES);
    if let Some(cached) = engine.inspect(&tag)? {
        return Ok(cached);
    }
    check_emulation(arch)?;
    let mut context = vec![("Dockerfile", dockerfile.as_str())];
    context.extend_from_slice(GENERIC_FILES);
    let context = docker::context_of_files(&context)?;
    engine.build(
        context,
        "Dockerfile",
        &tag,
        &HashMap::new(),
        Some(arch),
        &format!("Building the generic kernel bundle for {arch} (once)"),
    )?;
    engine
        .inspect(&tag)?
        .context("the kernel bundle vanished after its build")
}

fn render_generic(base_id: &str, arch: Arch, luks: bool) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(
        GENERIC_TEMPLATE,
        minijinja::context! {
            base_image => base_id,
            arch => arch.name(),
            unlock_packages => if luks { "cryptsetup-initramfs" } else { "" },
        },
    )
    .context("rendering the generic kernel template")
}

/// The family whose template fits `image`: its os-release names one, and the package manager the
/// template uses is there (distroless images name Debian but have no apt).
pub fn distro_family(engine: &Engine, image: &ImageDetails) -> Result<Option<Family>> {
    let container = engine.create_container(&image.id)?;
    let family = read_os_release(engine, &container)?
        .as_ref()
        .and_then(detect_family);
    let usable = match family {
        Some(f) => engine.read_file(&container, f.package_manager())?.is_some(),
        None => false,
    };
    container.remove()?;
    Ok(family.filter(|_| usable))
}

fn read_os_release(
    engine: &Engine,
    container: &docker::ContainerGuard,
) -> Result<Option<HashMap<String, String>>> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(bytes) = engine.read_file(container, path)? {
            return Ok(Some(parse_os_release(&String::from_utf8_lossy(&bytes))));
        }
    }
    Ok(None)
}

/// Read the image's os-release without running it.
pub fn os_release(
    engine: &Engine,
    image: &ImageDetails,
) -> Result<Option<HashMap<String, String>>> {
    let container = engine.create_container(&image.id)?;
    let release = read_os_release(engine, &container)?;
    container.remove()?;
    Ok(release)
}

/// Add a kernel to `image` (or reuse the cached build); returns the kernel image's details.
pub fn add_kernel(
    engine: &Engine,
    image: &ImageDetails,
    reference: &str,
    flavour: Flavour,
    arch: Arch,
    signed: Option<SignedLoader>,
    layers: Extras,
) -> Result<ImageDetails> {
    let release = os_release(engine, image)?;
    let families = Family::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(release) = release else {
        bail!(
            "{reference} has no /etc/os-release, so c2vm cannot tell which kernel to add \
               (it knows {families}); if the image has its own kernel and init, use --no-kernel"
        );
    };
    let Some(family) = detect_family(&release) else {
        bail!("{reference} is {} (ID={}), which c2vm has no kernel template for (it knows {families}); \
               if the image has its own kernel and init, use --no-kernel",
            release.get("PRETTY_NAME").cloned().unwrap_or_default(), release.get("ID").cloned().unwrap_or_default());
    };
    if layers.luks && family.luks_install().is_none() {
        bail!("--luks-passphrase-file: c2vm knows how Debian's and Ubuntu's initramfs (and its generic bundle) unlock an encrypted root, not {}'s yet; drop the option, or use --kernel generic", family.name());
    }
    let dockerfile = render(family, &image.id, flavour, arch, signed)?;
    let tag = cache_tag(&image.id, &dockerfile);
    let build = Build {
        what: "kernel image",
        label: format!("Adding a kernel ({} template, {arch})", family.name()),
        family,
        arch,
    };
    let mut image = build.cached(engine, &dockerfile, CONTEXT_FILES, &tag)?;
    if layers.cloud_init {
        let dockerfile = render_layer(
            "cloud-init",
            include_str!("../templates/cloud-init.Dockerfile"),
            &image.id,
            family.cloud_init_install(),
        )?;
        let tag = tag_of("cloud-init-", &image.id, &dockerfile, CLOUD_INIT_FILES);
        let build = Build {
            what: "cloud-init image",
            label: format!("Adding cloud-init ({} template, {arch})", family.name()),
            ..build
        };
        image = build.cached(engine, &dockerfile, CLOUD_INIT_FILES, &tag)?;
    }
    if layers.luks {
        let install = family.luks_install().unwrap_or_default();
        let dockerfile = render_layer(
            "luks",
            include_str!("../templates/luks.Dockerfile"),
            &image.id,
            install,
        )?;
        let tag = tag_of("luks-", &image.id, &dockerfile, LUKS_FILES);
        let build = Build {
            what: "unlock image",
            label: format!(
                "Adding cryptsetup to the initramfs ({} template, {arch})",
                family.name()
            ),
            ..build
        };
        image = build.cached(engine, &dockerfile, LUKS_FILES, &tag)?;
    }
    Ok(image)
}

/// The layers c2vm may add on the kernel layer, each its own cache entry, so the kernel layer
/// stays one entry shared by every disk of the image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// `--cloud-init`: the distribution's cloud-init.
    pub cloud_init: bool,
    /// `--luks-passphrase-file`: an initramfs that unlocks an encrypted root.
    pub luks: bool,
}

/// One template build on the engine, cached under its tag.
struct Build {
    /// What the result is called in c2vm's notes.
    what: &'static str,
    /// The progress line while it builds.
    label: String,
    family: Family,
    arch: Arch,
}

impl Build {
    /// The image tagged `tag` if the engine has it, else built from `dockerfile` and `files`.
    fn cached(
        &self,
        engine: &Engine,
        dockerfile: &str,
        files: &[(&str, &str)],
        tag: &str,
    ) -> Result<ImageDetails> {
        let (what, family) = (self.what, self.family.name());
        if let Some(cached) = engine.inspect(tag)? {
            crate::progress::note(&format!("Reusing the {what} {tag} ({family} template)"));
            return Ok(cached);
        }
        let mut context = vec![("Dockerfile", dockerfile)];
        context.extend_from_slice(files);
        let context = docker::context_of_files(&context)?;
        check_emulation(self.arch)?;
        engine.build(
            context,
            "Dockerfile",
            tag,
            &HashMap::new(),
            Some(self.arch),
            &self.label,
        )?;
        // Named, so it can be saved or pushed and converted elsewhere with no engine.
        crate::progress::note(&format!(
            "The {what} is {tag} (kept as the cache for next time)"
        ));
        engine
            .inspect(tag)?
            .with_context(|| format!("the {what} {tag} vanished after its build"))
    }
}

/// The cloud-init layer's files beside its Dockerfile.
const CLOUD_INIT_FILES: &[(&str, &str)] = &[(
    "cloud-init-c2vm.cfg",
    include_str!("../templates/guest/cloud-init-c2vm.cfg"),
)];

/// A layer on the image `base_id` from `template`, which runs `install`.
fn render_layer(name: &str, template: &str, base_id: &str, install: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template(name, template)
        .with_context(|| format!("loading the {name} template"))?;
    env.get_template(name)?
        .render(minijinja::context! {
            base_image => base_id,
            install => install,
        })
        .with_context(|| format!("rendering the {name} template"))
}

/// Another architecture's template runs under the host kernel's binfmt_misc emulation, as
/// `docker buildx` does; without a handler, the build would fail at its first command with
/// `exec format error`. qemu-user-static names its handlers by `uname -m` on every host.
fn check_emulation(arch: Arch) -> Result<()> {
    if Arch::host() == Some(arch) {
        return Ok(());
    }
    let handler = format!("/proc/sys/fs/binfmt_misc/qemu-{}", arch.machine());
    match std::fs::read_to_string(&handler) {
        Ok(state) if state.starts_with("enabled") => Ok(()),
        _ => bail!(
            "building the kernel layer of this {arch} image needs {arch} emulation on this {} host, and binfmt_misc has no qemu-{machine} handler; install it with `apt-get install qemu-user-static binfmt-support` (or `update-binfmts --enable qemu-{machine}` where they are installed)",
            Arch::host().map_or("other", Arch::name),
            machine = arch.machine(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_flavour_is_debians_only() {
        const SD: Option<SignedLoader> = Some(SignedLoader::SystemdBoot);
        let debian = |flavour, arch, signed| {
            render(Family::Debian, "sha256:abc", flavour, arch, signed).unwrap()
        };
        let cloud = debian(Flavour::Cloud, Arch::Amd64, SD);
        assert!(cloud.contains(" linux-image-cloud-amd64 "), "{cloud}");
        let standard = debian(Flavour::Standard, Arch::Amd64, SD);
        assert!(standard.contains(" linux-image-amd64 "), "{standard}");
        let arm64 = debian(Flavour::Cloud, Arch::Arm64, SD);
        assert!(arm64.contains(" linux-image-cloud-arm64 "), "{arm64}");
        assert!(
            arm64.contains("-arm64-signed systemd-boot-efi-arm64-signed\""),
            "{arm64}"
        );
        // The signed loader the disk boots and not the other, unless --secure-boot off.
        assert!(
            standard.contains(
                "signed=\"shim-signed shim-helpers-amd64-signed systemd-boot-efi-amd64-signed\""
            ) && !standard.contains("grub-efi-amd64")
                && standard.contains("provides=\"systemd-boot\""),
            "{standard}"
        );
        let grub = debian(Flavour::Standard, Arch::Amd64, Some(SignedLoader::Grub));
        assert!(
            grub.contains("signed=\"shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed\"")
                && !grub.contains("systemd-boot-efi-amd64")
                && grub.contains("provides=\"\""),
            "{grub}"
        );
        let off = debian(Flavour::Standard, Arch::Amd64, None);
        assert!(off.contains("signed=\"\";"), "{off}");
        for family in [Family::Ubuntu, Family::Alpine, Family::Fedora] {
            let err = render(family, "sha256:abc", Flavour::Cloud, Arch::Amd64, SD)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("only Debian images") && err.contains(family.name()),
                "{err}"
            );
        }
    }

    #[test]
    fn alpines_getty_is_on_the_architectures_serial_console() {
        let alpine = |arch| {
            render(
                Family::Alpine,
                "sha256:abc",
                Flavour::Standard,
                arch,
                Some(SignedLoader::SystemdBoot),
            )
        };
        let arm64 = alpine(Arch::Arm64).unwrap();
        assert!(
            arm64.contains("ttyAMA0::respawn:/sbin/getty -L 115200 ttyAMA0 vt100"),
            "{arm64}"
        );
        assert!(!arm64.contains("ttyS0"), "{arm64}");
        assert!(alpine(Arch::Amd64).unwrap().contains("ttyS0::respawn"));
    }

    #[test]
    fn the_generic_bundle_installs_its_architectures_packages() {
        let arm64 = render_generic("sha256:abc", Arch::Arm64, false).unwrap();
        for package in [
            " linux-image-cloud-arm64 ",
            " shim-helpers-arm64-signed ",
            " systemd-boot-efi-arm64-signed ",
            " grub-efi-arm64-signed;",
        ] {
            assert!(arm64.contains(package), "{package}: {arm64}");
        }
        assert!(!arm64.contains("amd64"), "{arm64}");
        let amd64 = render_generic("sha256:abc", Arch::Amd64, false).unwrap();
        assert!(amd64.contains(" linux-image-cloud-amd64 "), "{amd64}");
        assert_eq!(generic_base(Arch::Arm64), "arm64v8/debian:stable");
    }

    #[test]
    fn os_release_parses_and_families_match() {
        let deb = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(deb["VERSION_ID"], "12");
        assert_eq!(detect_family(&deb), Some(Family::Debian));
        let mint = parse_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(detect_family(&mint), Some(Family::Ubuntu));
        let rocky = parse_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(detect_family(&rocky), Some(Family::Fedora));
        assert_eq!(
            detect_family(&parse_os_release("ID=alpine\n")),
            Some(Family::Alpine)
        );
        assert_eq!(detect_family(&parse_os_release("ID=nixos\n")), None);
    }

    /// Every template renders and is a well-formed Dockerfile: FROM the base first, known
    /// instructions only, no secrets.
    #[test]
    fn templates_render_to_wellformed_dockerfiles() {
        const INSTRUCTIONS: &[&str] = &[
            "FROM", "USER", "RUN", "ARG", "ENV", "COPY", "LABEL", "SHELL",
        ];
        for family in Family::ALL {
            let text = render(
                family,
                "sha256:abc",
                Flavour::Standard,
                Arch::Amd64,
                Some(SignedLoader::SystemdBoot),
            )
            .unwrap();
            let mut first = None;
            let mut continued = false;
            for line in text.lines() {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                if !continued {
                    let word = t.split_whitespace().next().unwrap();
                    assert!(
                        INSTRUCTIONS.contains(&word),
                        "{}: unknown instruction in `{t}`",
                        family.name()
                    );
                    first.get_or_insert(t.to_string());
                }
                continued = t.ends_with('\\');
            }
            assert!(!continued, "{}: ends inside a continuation", family.name());
            assert_eq!(first.unwrap(), "FROM sha256:abc", "{}", family.name());
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("password") && !lower.contains("chpasswd"),
                "{}",
                family.name()
            );
            // RUN lines run with `sh -c`: check the shell syntax with sh -n.
            for run in text.split("\nRUN ").skip(1) {
                let body: String = run
                    .split("\n")
                    .take_while(|l| !l.is_empty() && !l.starts_with("RUN"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let out = std::process::Command::new("sh")
                    .args(["-n", "-c", &body])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}\n{body}",
                    family.name(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn templates_copy_only_files_of_the_context() {
        for family in Family::ALL {
            let text = render(
                family,
                "sha256:abc",
                Flavour::Standard,
                Arch::Amd64,
                Some(SignedLoader::SystemdBoot),
            )
            .unwrap();
            for line in text.lines().filter(|l| l.starts_with("COPY ")) {
                let source = line.split_whitespace().nth(1).unwrap();
                assert!(
                    CONTEXT_FILES.iter().any(|(name, _)| *name == source),
                    "{}: COPY {source} is not in the build context",
                    family.name()
                );
            }
        }
        for (name, text) in CONTEXT_FILES.iter().chain(LUKS_FILES) {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", text])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn cache_tag_depends_on_base_and_template() {
        assert_ne!(cache_tag("sha256:a", "x"), cache_tag("sha256:b", "x"));
        assert_ne!(cache_tag("sha256:a", "x"), cache_tag("sha256:a", "y"));
        assert!(cache_tag("a", "b").starts_with("c2vm-kernel:"));
    }
}
