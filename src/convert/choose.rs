//! Which kernel and which init the disk boots, and why; said to the user as it is decided.
//!
//! | `--kernel` | the kernel |
//! |---|---|
//! | `distro` | c2vm's template for the image's distribution, built on the image |
//! | `image` | the image's own `/boot` |
//! | `generic` | c2vm's kernel bundle (or `--kernel-image`), merged into the stream |
//! | `auto` | distro where a template and its package manager fit; else the image's own when it has one; else generic |
//!
//! With no engine (`oci:`, `docker://` and the other transports), `auto` is the image's own
//! kernel, else the `--kernel-image` bundle; there is no template build.
//!
//! `--init auto` takes the image's systemd or OpenRC where it has one, else c2vm-init. Some of
//! this waits for the image's tree: the stream edit asks once the image's entries have passed.
use crate::arch::Arch;
use crate::kernel;
use crate::progress;
use crate::rootfs::boot_files;
use crate::rootfs::edit::JoinedStream;
use crate::rootfs::init::InitChoice;
use crate::rootfs::init::InitSystem;
use crate::rootfs::tree::GuestTree;
use crate::source::docker::Engine;
use crate::source::layers::LayeredImage;
use crate::source::registry::Access;
use crate::source::{ImageDetails, SourceRef};
use anyhow::{anyhow, bail, Result};
use std::io::Read;

/// `--kernel`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    Auto,
    Image,
    Distro,
    Generic,
}

/// The kernel, as far as it can be decided before the stream.
#[derive(Debug, Clone)]
pub enum KernelPlan {
    /// Added by the distribution template (a layer on the image).
    Distro,
    /// The image's own.
    Image,
    /// A bundle's, merged into the stream.
    Bundle(Bundle),
    /// The image's own if it has one, else the bundle's.
    ImageElseBundle(Bundle),
    /// The image's own, which it must have: no engine to build a bundle, and none given.
    ImageOrFail,
}

/// A kernel bundle: an image from the engine, or one read from a transport.
#[derive(Debug, Clone)]
pub enum Bundle {
    Engine(ImageDetails),
    Layers(LayeredImage),
}

impl KernelPlan {
    pub fn is_distro(&self) -> bool {
        matches!(self, KernelPlan::Distro)
    }
}

impl Bundle {
    /// What identifies its contents: its layers.
    pub fn content_id(&self) -> String {
        match self {
            Bundle::Engine(d) => d.content_id(),
            Bundle::Layers(l) => l.details.content_id(),
        }
    }

    /// Its image ID.
    pub fn image_id(&self) -> &str {
        match self {
            Bundle::Engine(d) => &d.id,
            Bundle::Layers(l) => &l.details.id,
        }
    }

    /// Bytes of its root filesystem, for sizing.
    pub fn size(&self) -> u64 {
        match self {
            Bundle::Engine(d) => d.size,
            Bundle::Layers(l) => l.unpacked_size(),
        }
    }

    fn open<'a>(&'a self, engine: Option<&'a Engine>) -> Result<Box<dyn Read + 'a>> {
        Ok(match (self, engine) {
            (Bundle::Engine(details), Some(engine)) => Box::new(engine.export(details)?),
            (Bundle::Engine(_), None) => {
                bail!("the kernel bundle is in an engine, and there is none")
            }
            (Bundle::Layers(image), _) => Box::new(image.open("Reading the kernel bundle")?),
        })
    }
}

/// `--kernel-image REF`: through a transport, else from the engine (connected only then).
fn own_bundle(
    engine: Option<&Engine>,
    reference: &str,
    access: &Access,
    arch: Arch,
) -> Result<Bundle> {
    if let SourceRef::Layers(transport) = SourceRef::parse(reference)? {
        let image = transport.open(access, Some(arch))?;
        image.details.check_platform(reference, Some(arch))?;
        return Ok(Bundle::Layers(image));
    }
    let engine = engine.ok_or_else(|| {
        anyhow!("--kernel-image {reference} names an image in an engine, and this conversion has none; give the bundle as oci:DIR, oci-archive:PATH, docker-archive:PATH or docker://REF")
    })?;
    Ok(Bundle::Engine(kernel::bundle(
        engine,
        Some(reference),
        arch,
        false,
    )?))
}

/// What the options ask of the kernel, for a disk of `arch`.
#[derive(Clone, Copy)]
pub struct KernelAsk<'a> {
    pub choice: KernelChoice,
    /// `--kernel-image`: a bundle of the user's.
    pub own: Option<&'a str>,
    /// How to reach a registry the bundle may be in.
    pub access: &'a Access,
    pub arch: Arch,
    /// The root is encrypted: c2vm's bundle is the variant whose initramfs unlocks it.
    pub luks: bool,
}

impl KernelAsk<'_> {
    /// c2vm's generic bundle for the disk's architecture, built in `engine` (or its cache).
    fn generic_bundle(&self, engine: &Engine) -> Result<Bundle> {
        Ok(Bundle::Engine(kernel::bundle(
            engine, None, self.arch, self.luks,
        )?))
    }
}

/// Whether `choice` may need c2vm's own bundle, which is built in an engine.
pub fn bundle_needs_engine(choice: KernelChoice, own: Option<&str>) -> bool {
    own.is_none() && matches!(choice, KernelChoice::Auto | KernelChoice::Generic)
}

/// The kernel for an image read with no engine (a transport). `engine`, where one answers,
/// builds c2vm's generic bundle (or takes it from its cache) for an image with no kernel; the
/// variant that unlocks an encrypted root where `luks`.
pub fn kernel_without_image_engine(engine: Option<&Engine>, ask: &KernelAsk) -> Result<KernelPlan> {
    let KernelAsk {
        choice,
        own,
        access,
        arch,
        ..
    } = *ask;
    let how = "a kernel bundle with --kernel-image oci:DIR|oci-archive:PATH|docker-archive:PATH|docker://REF, or start Docker or Podman (c2vm builds its generic bundle there)";
    if let (Some(engine), true) = (engine, bundle_needs_engine(choice, own)) {
        let bundle = ask.generic_bundle(engine)?;
        return Ok(match choice {
            KernelChoice::Generic => {
                progress::note("Kernel: c2vm's generic bundle (--kernel generic)");
                KernelPlan::Bundle(bundle)
            }
            _ => KernelPlan::ImageElseBundle(bundle),
        });
    }
    Ok(match (choice, own) {
        (KernelChoice::Distro, _) => bail!("--kernel distro builds c2vm's template on the image, which needs the image in a Docker or Podman engine; give {how}"),
        (KernelChoice::Image, _) => {
            progress::note("Kernel: the image's own (--kernel image)");
            KernelPlan::Image
        }
        (KernelChoice::Generic, None) => bail!("--kernel generic builds c2vm's bundle in Docker or Podman, and none answers; give {how}"),
        (KernelChoice::Generic, Some(r)) => {
            let bundle = own_bundle(None, r, access, arch)?;
            progress::note(&format!("Kernel: the bundle {r} (--kernel-image)"));
            KernelPlan::Bundle(bundle)
        }
        (KernelChoice::Auto, Some(r)) => KernelPlan::ImageElseBundle(own_bundle(None, r, access, arch)?),
        (KernelChoice::Auto, None) => KernelPlan::ImageOrFail,
    })
}

/// `luks`: c2vm's generic bundle, where it is chosen, is the variant that unlocks an
/// encrypted root.
pub fn kernel(engine: &Engine, image: &ImageDetails, ask: &KernelAsk) -> Result<KernelPlan> {
    Ok(match ask.choice {
        KernelChoice::Distro => {
            progress::note("Kernel: the distribution template's (--kernel distro)");
            KernelPlan::Distro
        }
        KernelChoice::Image => {
            progress::note("Kernel: the image's own (--kernel image)");
            KernelPlan::Image
        }
        KernelChoice::Generic => {
            let bundle = match ask.own {
                Some(r) => own_bundle(Some(engine), r, ask.access, ask.arch)?,
                None => ask.generic_bundle(engine)?,
            };
            progress::note(&match ask.own {
                Some(r) => format!("Kernel: the bundle {r} (--kernel-image)"),
                None => "Kernel: c2vm's generic bundle (--kernel generic)".to_string(),
            });
            KernelPlan::Bundle(bundle)
        }
        KernelChoice::Auto => match kernel::distro_family(engine, image)? {
            Some(family) => {
                progress::note(&format!(
                    "Kernel: the {} template's (the image is {0}-based and has its package manager)",
                    family.name()
                ));
                KernelPlan::Distro
            }
            None => KernelPlan::ImageElseBundle(ask.generic_bundle(engine)?),
        },
    })
}

/// Whether the image's init will load kernel modules after boot (udev), so a bundle's modules
/// belong in the guest; c2vm-init loads none (the initramfs has what it needs).
fn loads_modules(tree: &mut GuestTree, init: InitChoice) -> Result<bool> {
    Ok(init != InitChoice::C2vm && InitSystem::detect(tree)? != InitSystem::Other)
}

/// Whether udev and systemd can load a module on demand: they run `modprobe` (kmod's, or
/// busybox's), wherever the image's PATH would find it.
fn has_modprobe(tree: &mut GuestTree) -> Result<bool> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if tree.is_executable(&format!("{dir}/modprobe"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The bundle's entries to merge into the stream, once the image's tree is known: `None` when
/// the image's own kernel boots.
pub fn bundle_entries<'a>(
    engine: Option<&'a Engine>,
    plan: &'a KernelPlan,
    tree: &mut GuestTree,
    init: InitChoice,
    luks: bool,
) -> Result<Option<JoinedStream<'a>>> {
    let bundle = match plan {
        KernelPlan::Bundle(b) => b,
        KernelPlan::ImageElseBundle(b) => {
            if boot_files::find(tree).is_ok() {
                if luks {
                    bail!("--luks-passphrase-file: the image has a kernel of its own, whose initramfs may not unlock an encrypted root; add --kernel generic to boot c2vm's bundle, which does");
                }
                progress::note("Kernel: the image's own (no distribution template fits, and it has one in /boot)");
                return Ok(None);
            }
            progress::note("Kernel: c2vm's generic bundle (no distribution template fits, and the image has no kernel)");
            b
        }
        KernelPlan::ImageOrFail => {
            if boot_files::find(tree).is_ok() {
                progress::note("Kernel: the image's own (in its /boot)");
                return Ok(None);
            }
            bail!("the image has no kernel in /boot, and with no Docker or Podman answering c2vm cannot build its generic bundle: give a kernel bundle with --kernel-image oci:DIR|oci-archive:PATH|docker-archive:PATH|docker://REF, or start Docker or Podman");
        }
        KernelPlan::Distro | KernelPlan::Image => return Ok(None),
    };
    // Under systemd or OpenRC the guest has udev, which loads modules, and may update its kernel:
    // kernel, initramfs and modules go into the filesystem. c2vm-init (or an init c2vm does not
    // know) loads no modules and updates nothing: the kernel goes to the ESP only.
    let modules = loads_modules(tree, init)?;
    if modules && !has_modprobe(tree)? {
        progress::note("Note: the image has no modprobe (no kmod), so modules load only from the initramfs: the bundle's holds the VM's disk, NIC, ext4 and vfat drivers");
    }
    let stream = bundle.open(engine)?;
    Ok(Some(JoinedStream {
        stream,
        keep: Box::new(move |name| is_bundle_file(name, modules)),
        emit: modules,
    }))
}

/// What a guest takes from a bundle: kernel and initramfs with the signed EFI binaries of its
/// Secure Boot chain, and the modules if its init loads any.
fn is_bundle_file(name: &[u8], modules: bool) -> bool {
    crate::boot::guest::boot_file(name) || (modules && name.starts_with(b"usr/lib/modules/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_takes_kernel_files_and_modules_only_when_used() {
        assert!(is_bundle_file(b"boot/vmlinuz-6.12.1-cloud-amd64", false));
        assert!(is_bundle_file(b"boot/initrd.img-6.12.1-cloud-amd64", false));
        assert!(!is_bundle_file(
            b"usr/lib/modules/6.12.1/kernel/x.ko",
            false
        ));
        assert!(is_bundle_file(b"usr/lib/modules/6.12.1/kernel/x.ko", true));
        assert!(!is_bundle_file(b"etc/passwd", true));
    }
}
