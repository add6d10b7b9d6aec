//! What a disk is made from: the source's tar stream (a `rootfs:` tarball, an engine's export,
//! or an image's layers merged with no engine), what it will need, the kernel it boots, which
//! image it is for the report, and the seed reproducible identifiers derive from. An image
//! through an engine and one through a transport are one [`ImageSource`]: the rest of the
//! conversion does not tell them apart.
use crate::arch::Arch;
use crate::convert::choose::{self, KernelAsk, KernelPlan};
use crate::convert::plan::{check_template_options, DiskPlan, DiskSeed, ImagePlan};
use crate::disk::root::{LaterEntries, OpenStream, Source};
use crate::kernel;
use crate::progress::Timings;
use crate::rootfs::app::GuestApp;
use crate::rootfs::init::InitPlan;
use crate::rootfs::tree::GuestTree;
use crate::rootfs::usage::TreeUsage;
use crate::source::docker::Engine;
use crate::source::layers::LayeredImage;
use crate::source::registry::Access;
use crate::source::{self, ImageDetails, TarStream};
use anyhow::{bail, Context, Result};
use std::cell::Cell;
use std::path::Path;

/// Everything the disk stages take from the source.
pub struct Input<'a> {
    /// The stream and what it will need.
    pub root: Source<'a>,
    /// What reproducible identifiers derive from: an [`IdentifierSeed`], serialised.
    pub seed: Vec<u8>,
    /// What runs as PID 1, and how.
    pub init: InitPlan,
    /// The image's ENTRYPOINT/CMD as the guest runs it.
    pub app: &'a GuestApp,
    /// The machine the disk is for.
    pub arch: Arch,
    /// Which image, for the report.
    pub identity: Identity,
    /// The engine the image came through, if any (a containerDisk may go there).
    pub engine: Option<&'a Engine>,
    /// How to reach registries (a containerDisk may be pushed).
    pub access: Access,
    /// The kernel bundle that may join the stream, for the SBOM and the provenance.
    pub bundle: Option<KernelBundle<'a>>,
    /// The ID of the image c2vm's kernel template built on the source's (`--kernel distro`),
    /// which the disk is made of: for the provenance.
    pub template: Option<String>,
}

/// Which image a disk is made from, as the report says it.
pub struct Identity {
    pub source: String,
    pub id: String,
    pub diff_ids: Vec<String>,
}

/// Every fact that shapes the disk, and nothing else: how the image was fetched (`--pull`,
/// `--tls-verify`, `--cert-dir`, the credentials) never changes it. Serialised for hashing, and
/// never shown: the root password's hash is in it.
#[derive(serde::Serialize)]
struct IdentifierSeed<'a> {
    /// The tarball's sha256, or the image's layers (its ID where the engine lists none).
    input: String,
    /// The kernel bundle that may be merged in, by its layers.
    bundle: Option<String>,
    app: Option<&'a GuestApp>,
    init: Option<&'a InitPlan>,
    disk: DiskSeed<'a>,
}

impl IdentifierSeed<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).context("serialising the identifiers' seed")
    }
}

/// A `rootfs:` tarball, taken as it is: its own kernel and init, its headers counted exactly.
pub fn tarball<'a>(
    path: &Path,
    source: &str,
    arch: Arch,
    open: &'a OpenStream<'a>,
    app: &'a GuestApp,
    plan: &DiskPlan,
) -> Result<Input<'a>> {
    // Headers only (data skipped by seeking): the exact need, in seconds.
    let usage = TreeUsage::of_tarball(path)
        .with_context(|| format!("reading the archive {}", path.display()))?;
    let digest = match plan.epoch.is_some() || plan.json || plan.provenance.is_some() {
        true => source::tarball::digest(path)?,
        false => String::new(),
    };
    let seed = IdentifierSeed {
        input: format!("rootfs {digest}"),
        bundle: None,
        app: None,
        init: None,
        disk: plan.seed(),
    };
    Ok(Input {
        root: Source {
            open,
            more: &|_| Ok(None),
            usage,
            exact: true,
        },
        seed: seed.bytes()?,
        init: InitPlan::tarball(),
        app,
        arch,
        identity: Identity {
            source: source.to_string(),
            id: digest,
            diff_ids: Vec::new(),
        },
        engine: None,
        access: Access::default(),
        bundle: None,
        template: None,
    })
}

/// An image: through an engine, or its layers read with no engine (a transport).
pub enum ImageSource<'a> {
    Engine {
        engine: &'a Engine,
        details: ImageDetails,
    },
    Layers {
        image: Box<LayeredImage>,
        /// The engine that builds c2vm's generic bundle, where one is needed and answers.
        engine: Option<Engine>,
        /// Why no engine answered, where one was asked for: said where it is missed.
        no_engine: Option<String>,
    },
}

impl<'a> ImageSource<'a> {
    /// An image read with no engine. c2vm's generic bundle is built in one: where the choice
    /// may need it, an engine that answers serves, whatever transport brought the image.
    pub fn layers(image: LayeredImage, options: &ImagePlan) -> ImageSource<'a> {
        let (engine, no_engine) =
            match choose::bundle_needs_engine(options.kernel, options.kernel_image.as_deref()) {
                false => (None, None),
                true => match Engine::connect() {
                    Ok(engine) => (Some(engine), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                },
            };
        ImageSource::Layers {
            image: Box::new(image),
            engine,
            no_engine,
        }
    }

    /// The image the user named.
    pub fn details(&self) -> &ImageDetails {
        match self {
            ImageSource::Engine { details, .. } => details,
            ImageSource::Layers { image, .. } => &image.details,
        }
    }

    /// Before any build: the image's programs are for the architecture its config names (an
    /// image imported on Debian 12's Docker says amd64 whatever it holds). Through an engine
    /// only: a transport's layers are streamed once, into the disk.
    pub fn check_programs(&self, reference: &str, arch: Arch) -> Result<()> {
        match self {
            ImageSource::Engine { engine, details } => {
                source::programs::check_image(engine, details, reference, arch)
            }
            ImageSource::Layers { .. } => Ok(()),
        }
    }

    pub fn engine(&self) -> Option<&Engine> {
        match self {
            ImageSource::Engine { engine, .. } => Some(engine),
            ImageSource::Layers { engine, .. } => engine.as_ref(),
        }
    }

    /// The kernel the disk boots, as far as it is known before the stream, and the image with
    /// the template's kernel layers where it is the distribution's; checked against the options
    /// that only the template takes.
    pub fn kernel(
        &self,
        reference: &str,
        options: &ImagePlan,
        plan: &DiskPlan,
        arch: Arch,
        timings: &mut Timings,
    ) -> Result<Bootable> {
        timings.time("kernel", || {
            let kernel = self.kernel_plan(options, arch, plan.luks.is_some())?;
            check_template_options(
                options.kernel_flavour,
                options.cloud_init,
                kernel.is_distro(),
            )?;
            check_unlock(plan, &kernel, options)?;
            let built = match (&kernel, self) {
                (KernelPlan::Distro, ImageSource::Engine { engine, details }) => {
                    Some(kernel::add_kernel(
                        engine,
                        details,
                        reference,
                        options.kernel_flavour,
                        arch,
                        signed_loader(plan),
                        kernel::Extras {
                            cloud_init: options.cloud_init,
                            luks: plan.luks.is_some(),
                        },
                    )?)
                }
                _ => None,
            };
            Ok(Bootable {
                kernel,
                built,
                joined: Cell::new(false),
            })
        })
    }

    fn kernel_plan(&self, options: &ImagePlan, arch: Arch, luks: bool) -> Result<KernelPlan> {
        let ask = KernelAsk {
            choice: options.kernel,
            own: options.kernel_image.as_deref(),
            access: &options.access,
            arch,
            luks,
        };
        match self {
            ImageSource::Engine { engine, details } => choose::kernel(engine, details, &ask),
            ImageSource::Layers { engine, .. } => {
                choose::kernel_without_image_engine(engine.as_ref(), &ask)
                    .map_err(|e| self.explain_no_engine(e))
            }
        }
    }

    /// An error that a missing engine explains gets the reason the engine did not answer.
    pub fn explain_no_engine(&self, err: anyhow::Error) -> anyhow::Error {
        match self {
            ImageSource::Layers {
                no_engine: Some(why),
                ..
            } if err.to_string().contains("Docker or Podman") => {
                err.context(format!("no Docker or Podman engine answered ({why})"))
            }
            _ => err,
        }
    }

    /// The stream of the image the disk is made of.
    pub fn open(&self, bootable: &Bootable) -> Result<Box<dyn TarStream + '_>> {
        Ok(match self {
            ImageSource::Engine { engine, details } => {
                Box::new(engine.export(bootable.built.as_ref().unwrap_or(details))?)
            }
            ImageSource::Layers { image, .. } => {
                Box::new(image.open("Reading the image's layers into the disk")?)
            }
        })
    }

    /// The disk's input: the stream, sized from the image (and the bundle that may join it).
    pub fn input(
        &'a self,
        reference: &str,
        bootable: &'a Bootable,
        (open, more): (&'a OpenStream<'a>, &'a LaterEntries<'a>),
        app: &'a GuestApp,
        (options, plan, arch): (&ImagePlan, &DiskPlan, Arch),
    ) -> Result<Input<'a>> {
        let (details, size) = match (self, &bootable.built) {
            (ImageSource::Engine { .. }, Some(built)) => (built, built.size),
            (ImageSource::Engine { details, .. }, None) => (details, details.size),
            (ImageSource::Layers { image, .. }, _) => (&image.details, image.unpacked_size()),
        };
        let bundle = match &bootable.kernel {
            KernelPlan::Bundle(b) | KernelPlan::ImageElseBundle(b) => Some(b),
            _ => None,
        };
        let seed = IdentifierSeed {
            input: format!("image {}", details.content_id()),
            bundle: bundle.map(|b| b.content_id()),
            app: Some(app),
            init: Some(&options.init),
            disk: plan.seed(),
        };
        let named = self.details();
        Ok(Input {
            root: Source {
                open,
                more,
                usage: TreeUsage::estimate(size + bundle.map_or(0, |b| b.size() / 4)),
                exact: false,
            },
            seed: seed.bytes()?,
            init: options.init.clone(),
            app,
            arch,
            identity: Identity {
                source: reference.to_string(),
                id: named.id.clone(),
                diff_ids: named.diff_ids.clone(),
            },
            engine: self.engine(),
            access: options.access.clone(),
            bundle: bundle.map(|b| KernelBundle {
                name: match &options.kernel_image {
                    Some(reference) => format!("the kernel bundle {reference} (--kernel-image)"),
                    None => "c2vm's generic kernel bundle".to_string(),
                },
                id: b.image_id().to_string(),
                joined: &bootable.joined,
            }),
            template: bootable.built.as_ref().map(|built| built.id.clone()),
        })
    }
}

/// The kernel the disk boots, and the image built with it where c2vm's template added it.
pub struct Bootable {
    pub kernel: KernelPlan,
    pub built: Option<ImageDetails>,
    /// Whether a kernel bundle joined the stream: set once the stream edit has asked (an image
    /// with a kernel of its own may take none).
    joined: Cell<bool>,
}

/// The kernel bundle a disk may boot, for the SBOM.
pub struct KernelBundle<'a> {
    /// As the user named it (`--kernel-image`), or c2vm's generic bundle.
    pub name: String,
    /// Its image ID.
    pub id: String,
    joined: &'a Cell<bool>,
}

impl KernelBundle<'_> {
    /// Whether its kernel is the disk's: known once the root filesystem is written.
    pub fn joined(&self) -> bool {
        self.joined.get()
    }
}

/// An encrypted root needs an initramfs that asks for the passphrase and unlocks it: the
/// Debian/Ubuntu template's unlock layer or c2vm's generic bundle. An image's own kernel, or a
/// bundle of the user's, may have none, and the disk would stop at boot.
fn check_unlock(plan: &DiskPlan, kernel: &KernelPlan, options: &ImagePlan) -> Result<()> {
    let unlocks = match kernel {
        KernelPlan::Distro => true,
        // ImageElseBundle: an image's own kernel is refused once the stream shows it has one.
        KernelPlan::Bundle(_) | KernelPlan::ImageElseBundle(_) => options.kernel_image.is_none(),
        _ => false,
    };
    if plan.luks.is_some() && !unlocks {
        bail!("--luks-passphrase-file needs an initramfs that unlocks the root: c2vm's template's (--kernel distro) or its generic bundle's (--kernel generic), and this conversion boots the image's own kernel or a bundle of yours; add --kernel distro or --kernel generic");
    }
    Ok(())
}

/// The entries a kernel bundle adds once the image's tree is known (see
/// [`choose::bundle_entries`]).
pub fn bundle_entries<'a>(
    image: &'a ImageSource,
    bootable: &'a Bootable,
    options: &ImagePlan,
    plan: &DiskPlan,
    tree: &mut GuestTree,
) -> Result<Option<crate::rootfs::edit::JoinedStream<'a>>> {
    let entries = choose::bundle_entries(
        image.engine(),
        &bootable.kernel,
        tree,
        options.init.choice,
        plan.luks.is_some(),
    )
    .map_err(|e| image.explain_no_engine(e))?;
    bootable.joined.set(entries.is_some());
    Ok(entries)
}

/// The signed loader the template installs with shim: the one this disk's chain boots.
fn signed_loader(plan: &DiskPlan) -> Option<kernel::SignedLoader> {
    use crate::boot::{secure::SecureBoot, Bootloader};
    match (plan.secure_boot, plan.bootloader) {
        (SecureBoot::Off, _) => None,
        (_, Bootloader::Syslinux) => Some(kernel::SignedLoader::SystemdBoot),
        (_, Bootloader::Grub) => Some(kernel::SignedLoader::Grub),
    }
}
