//! `c2vm convert` and `c2vm build`, as a table of contents: each step is one call into the stage
//! module that owns it. Options are checked first (`plan`), then: source → kernel → the stream
//! edit (rootfs) into mke2fs (disk) → ESP and boot loaders → output, then the report.
use crate::arch::Arch;
use crate::boot::{self, secure::Decision, secure::SecureBoot, BootConfig};
use crate::choose::{self, KernelPlan};
use crate::cmd::{self, ToolFailed};
use crate::containerdisk::{self, Destination};
use crate::credentials::Login;
use crate::disk::esp::{self, EspFile};
use crate::disk::ext4::{self, Files, Populate, TreeUsage};
use crate::disk::gpt;
use crate::disk::layout::{Layout, SizeRequest};
use crate::disk::luks;
use crate::disk::Identifiers;
use crate::kernel;
use crate::output::{self, DiskFormat, PendingOutput};
use crate::plan::{
    check_template_options, DiskArgs, DiskPlan, DiskSeed, ImageArgs, ImagePlan, InitPlan,
};
use crate::progress;
use crate::report::{self, Summary, Timings};
use crate::rootfs::app::{self, GuestApp};
use crate::rootfs::boot_files::{self, BootFiles};
use crate::rootfs::edit::{self, Edited, Extra};
use crate::rootfs::init::{c2vm, InitSystem};
use crate::rootfs::setup::{self, GuestConfig};
use crate::rootfs::tree::GuestTree;
use crate::rootfs::{self, unpack};
use crate::source::docker::Engine;
use crate::source::layers::LayeredImage;
use crate::source::registry::Access;
use crate::source::{self, SourceRef, TarStream};
use crate::workspace::Workspace;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// `c2vm convert SOURCE`.
pub fn convert(source: &str, disk: &DiskArgs, image: &ImageArgs) -> Result<()> {
    let plan = DiskPlan::from_args(disk)?;
    match SourceRef::parse(source)? {
        SourceRef::Tarball(path) => {
            let platform = ImagePlan::check_tarball(image)?;
            convert_tarball(&path, source, platform, &plan)
        }
        SourceRef::Image(reference) => {
            let image = ImagePlan::from_args(image)?;
            let engine = Engine::connect()?;
            convert_image(&engine, &reference, &image, &plan)
        }
        SourceRef::Layers(transport) => {
            let options = ImagePlan::from_args(image)?;
            let mut timings = Timings::default();
            let image =
                timings.time("pull", || transport.open(&options.access, options.platform))?;
            convert_layers(&image, source, &options, &plan, timings)
        }
    }
}

/// `c2vm build CONTEXT`: the Dockerfile through the engine, then the same conversion.
pub fn build(
    context: &Path,
    dockerfile: Option<&Path>,
    build_args: &[String],
    disk: &DiskArgs,
    image: &ImageArgs,
) -> Result<()> {
    let plan = DiskPlan::from_args(disk)?;
    let image = ImagePlan::from_args(image)?;
    let engine = Engine::connect()?;
    let tag = engine.build_dir(context, dockerfile, build_args, image.platform)?;
    convert_image(&engine, &tag, &image, &plan)
}

/// Opens the source's tar stream, again if a first pass must be redone.
type Open<'a> = dyn Fn() -> Result<Box<dyn TarStream + 'a>> + 'a;

/// What the disk is made from: the stream, what it will need (exact, or an estimate), and what
/// reproducible identifiers derive from.
struct Input<'a> {
    open: &'a Open<'a>,
    usage: TreeUsage,
    exact: bool,
    /// What reproducible identifiers derive from: a [`Seed`], serialised.
    seed: Vec<u8>,
    /// More entries once the image's have passed (a kernel bundle's).
    more: &'a More<'a>,
    /// What runs as PID 1, and how.
    init: InitPlan,
    /// The machine the disk is for.
    arch: Arch,
    /// Which image, for the report.
    identity: Identity,
    /// The engine the image came through, if any (a containerDisk may go there).
    engine: Option<&'a Engine>,
    /// How to reach registries (a containerDisk may be pushed).
    access: Access,
}

/// Which image a disk is made from, as the report says it.
struct Identity {
    source: String,
    id: String,
    diff_ids: Vec<String>,
}

/// Asked when the image's stream ends (see [`edit::edit_with`]).
type More<'a> = dyn Fn(&mut GuestTree) -> Result<Option<Extra<'a>>> + 'a;

/// Every fact that shapes the disk, and nothing else: how the image was fetched (`--pull`,
/// `--tls-verify`, `--cert-dir`, the credentials) never changes it. Serialised for hashing, and
/// never shown: the root password's hash is in it.
#[derive(serde::Serialize)]
struct Seed<'a> {
    /// The tarball's sha256, or the image's layers (its ID where the engine lists none).
    input: String,
    /// The kernel bundle that may be merged in, by its layers.
    bundle: Option<String>,
    app: Option<&'a GuestApp>,
    init: Option<&'a InitPlan>,
    disk: DiskSeed<'a>,
}

impl Seed<'_> {
    fn bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).context("serialising the identifiers' seed")
    }
}

/// `rootfs:PATH` → disk; for `--platform`, else the architecture of the tarball's programs.
fn convert_tarball(
    path: &Path,
    source: &str,
    platform: Option<Arch>,
    plan: &DiskPlan,
) -> Result<()> {
    let arch = match platform {
        Some(arch) => arch,
        None => source::tarball::architecture(path)?,
    };
    check_arch(arch, plan)?;
    if plan.luks.is_some() {
        bail!("--luks-passphrase-file needs an initramfs that unlocks the root, and a rootfs: tarball boots its own; convert an image with --kernel distro or --kernel generic instead");
    }
    // Headers only (data skipped by seeking): the exact need, in seconds.
    let usage = TreeUsage::of_tarball(path)
        .with_context(|| format!("reading the archive {}", path.display()))?;
    let digest = match plan.epoch.is_some() || plan.json {
        true => source::tarball::digest(path)?,
        false => String::new(),
    };
    let open = || -> Result<Box<dyn TarStream>> { Ok(Box::new(source::tarball::open(path)?)) };
    let input = Input {
        open: &open,
        usage,
        exact: true,
        seed: Seed {
            input: format!("rootfs {digest}"),
            bundle: None,
            app: None,
            init: None,
            disk: plan.seed(),
        }
        .bytes()?,
        more: &|_| Ok(None),
        init: InitPlan::tarball(),
        arch,
        identity: Identity {
            source: source.to_string(),
            id: digest.clone(),
            diff_ids: Vec::new(),
        },
        engine: None,
        access: Access::default(),
    };
    build_disk(&input, Timings::default(), &GuestApp::default(), plan)
}

/// An image reference → (kernel added) → disk, through the engine.
fn convert_image(
    engine: &Engine,
    reference: &str,
    options: &ImagePlan,
    plan: &DiskPlan,
) -> Result<()> {
    let mut timings = Timings::default();
    let image = timings.time("pull", || {
        engine.ensure_image(reference, options.pull, options.platform)
    })?;
    let arch = image.check_platform(reference, options.platform)?;
    crate::source::programs::check_image(engine, &image, reference, arch)?;
    check_arch(arch, plan)?;
    // The service comes from the user's image, not the kernel layer built on top of it.
    let app = GuestApp::from_config(&image.config, options.app)?;
    let (kernel_plan, bootable) = timings.time("kernel", || {
        let kernel_plan = choose::kernel(
            engine,
            &image,
            options.kernel,
            options.kernel_image.as_deref(),
            &options.access,
            arch,
            plan.luks.is_some(),
        )?;
        check_template_options(
            options.kernel_flavour,
            options.cloud_init,
            kernel_plan.is_distro(),
        )?;
        check_unlock(plan, &kernel_plan, options)?;
        let bootable = match kernel_plan {
            KernelPlan::Distro => kernel::add_kernel(
                engine,
                &image,
                reference,
                options.kernel_flavour,
                arch,
                plan.secure_boot != SecureBoot::Off,
                kernel::Extras {
                    cloud_init: options.cloud_init,
                    luks: plan.luks.is_some(),
                },
            )?,
            _ => image.clone(),
        };
        Ok((kernel_plan, bootable))
    })?;
    let open = || -> Result<Box<dyn TarStream + '_>> { Ok(Box::new(engine.export(&bootable)?)) };
    let more = |tree: &mut GuestTree| {
        choose::bundle_entries(
            Some(engine),
            &kernel_plan,
            tree,
            options.init.choice,
            plan.luks.is_some(),
        )
    };
    let image = ImageInput {
        engine: Some(engine),
        source: reference,
        details: &bootable,
        named: &image,
        size: bootable.size,
        kernel: &kernel_plan,
        app: &app,
        options,
        arch,
    };
    build_disk(&image.input(&open, &more, plan)?, timings, &app, plan)
}

/// An image read with no engine (a transport) → disk: its layers merged in one stream, and a
/// kernel of its own or from a bundle.
fn convert_layers(
    image: &LayeredImage,
    reference: &str,
    options: &ImagePlan,
    plan: &DiskPlan,
    mut timings: Timings,
) -> Result<()> {
    let arch = image.details.check_platform(reference, options.platform)?;
    check_arch(arch, plan)?;
    let app = GuestApp::from_config(&image.details.config, options.app)?;
    // The image is read without an engine, but c2vm's generic bundle is built in one: an engine
    // that answers serves, whatever transport brought the image.
    let engine = match choose::bundle_needs_engine(options.kernel, options.kernel_image.as_deref())
    {
        true => Engine::connect().ok(),
        false => None,
    };
    let kernel_plan = timings.time("kernel", || {
        choose::kernel_without_image_engine(
            engine.as_ref(),
            options.kernel,
            options.kernel_image.as_deref(),
            &options.access,
            arch,
            plan.luks.is_some(),
        )
    })?;
    check_template_options(
        options.kernel_flavour,
        options.cloud_init,
        kernel_plan.is_distro(),
    )?;
    check_unlock(plan, &kernel_plan, options)?;
    let open = || -> Result<Box<dyn TarStream + '_>> {
        Ok(Box::new(
            image.open("Reading the image's layers into the disk")?,
        ))
    };
    let more = |tree: &mut GuestTree| {
        choose::bundle_entries(
            engine.as_ref(),
            &kernel_plan,
            tree,
            options.init.choice,
            plan.luks.is_some(),
        )
    };
    let input = ImageInput {
        engine: engine.as_ref(),
        source: reference,
        details: &image.details,
        named: &image.details,
        size: image.unpacked_size(),
        kernel: &kernel_plan,
        app: &app,
        options,
        arch,
    };
    build_disk(&input.input(&open, &more, plan)?, timings, &app, plan)
}

/// What an image source (engine or transport) knows, for the disk's [`Input`].
struct ImageInput<'a> {
    engine: Option<&'a Engine>,
    /// As the user named it.
    source: &'a str,
    /// The image the disk is made of (the template's result, where a kernel was added).
    details: &'a source::ImageDetails,
    /// The image the user named, for the report.
    named: &'a source::ImageDetails,
    /// Bytes of its root filesystem, roughly.
    size: u64,
    kernel: &'a KernelPlan,
    app: &'a GuestApp,
    options: &'a ImagePlan,
    arch: Arch,
}

impl<'a> ImageInput<'a> {
    fn input(&self, open: &'a Open<'a>, more: &'a More<'a>, plan: &DiskPlan) -> Result<Input<'a>> {
        let bundle = match self.kernel {
            KernelPlan::Bundle(b) | KernelPlan::ImageElseBundle(b) => Some(b),
            _ => None,
        };
        let seed = Seed {
            input: format!("image {}", self.details.content_id()),
            bundle: bundle.map(|b| b.content_id()),
            app: Some(self.app),
            init: Some(&self.options.init),
            disk: plan.seed(),
        };
        Ok(Input {
            open,
            usage: TreeUsage::estimate(self.size + bundle.map_or(0, |b| b.size() / 4)),
            exact: false,
            seed: seed.bytes()?,
            more,
            init: self.options.init.clone(),
            arch: self.arch,
            identity: Identity {
                source: self.source.to_string(),
                id: self.named.id.clone(),
                diff_ids: self.named.diff_ids.clone(),
            },
            engine: self.engine,
            access: self.options.access.clone(),
        })
    }
}

/// Everything after the source: the root filesystem with guest setup, the ESP, boot loaders,
/// output, report.
fn build_disk(input: &Input, timings: Timings, app: &GuestApp, plan: &DiskPlan) -> Result<()> {
    build_disk_steps(input, timings, app, plan).map_err(|e| explain_full_disk(e, plan))
}

fn build_disk_steps(
    input: &Input,
    mut timings: Timings,
    app: &GuestApp,
    plan: &DiskPlan,
) -> Result<()> {
    let ids = match plan.epoch {
        Some(_) => Identifiers::derive(&input.seed),
        None => Identifiers::random(),
    };
    let esp_uuid = ids.esp_uuid();
    let pending = PendingOutput::new(&plan.output.path)?;
    // Scratch: configs, and the raw image when another format is asked for.
    let scratch_need = match plan.output.format {
        DiskFormat::Raw => 0,
        _ => input.usage.blocks * 4096,
    };
    let workspace = match &plan.populate {
        Populate::Stream => Workspace::create(&plan.workdir, scratch_need)?,
        Populate::Staging(why) => {
            progress::note(&format!(
                "Taking the slower path through a staging tree: {why}; {} for a faster conversion without root.",
                ext4::how_to_get_tar_input()
            ));
            Workspace::create(&plan.workdir, input.usage.blocks * 4096 + scratch_need)?
        }
    };
    let raw_path = match plan.output.format {
        DiskFormat::Raw => pending.path().to_path_buf(),
        _ => workspace.scratch().join("disk.raw"),
    };
    let setup = |guest: &mut GuestTree| {
        configure_guest(guest, &esp_uuid, &ids, app, plan, &input.init, input.arch)
    };
    let root = RootFs {
        input,
        plan,
        ids: &ids,
        raw_path: &raw_path,
        workspace: &workspace,
    };
    let (layout, edited) = match plan.populate {
        Populate::Stream => timings.spin(
            "rootfs",
            "Writing the root filesystem (image stream → mke2fs -d -)",
            || root.stream(&setup),
        )?,
        Populate::Staging(_) => root.staged(&mut timings, &setup)?,
    };
    for line in &edited.notes {
        progress::note(line);
    }
    if let Some(passphrase) = &plan.luks {
        if plan.epoch.is_some() {
            progress::note("Note: an encrypted disk is never byte-reproducible: LUKS2 takes a fresh volume key and salts each time (the rest of its layout still follows SOURCE_DATE_EPOCH)");
        }
        timings.spin(
            "luks",
            "Encrypting the root filesystem (LUKS2, aes-xts-plain64)",
            || {
                luks::seal(
                    &raw_path,
                    layout.root,
                    ids.luks,
                    passphrase,
                    workspace.scratch(),
                )
            },
        )?;
    }
    let SetupDone {
        kernel,
        disabled: disabled_units,
        c2vm_init,
        secure,
        login,
    } = &edited.value;
    let boot_cfg = BootConfig {
        arch: input.arch,
        cmdline: kernel_cmdline(&ids, plan, *c2vm_init, input.arch),
        esp_uuid,
        epoch: plan.epoch,
    };

    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw_path)
        .with_context(|| format!("opening {}", raw_path.display()))?;
    timings.spin("esp", "Writing the EFI system partition", || {
        let mut files = kernel_files(&edited.tree, kernel)?;
        let chain = secure.chain();
        files.extend(boot::esp_files(
            plan.bootloader,
            &boot_cfg,
            chain,
            workspace.scratch(),
        )?);
        esp::write(&image, layout.esp, ids.esp_volume, files, plan.epoch)
    })?;
    image.sync_all().context("flushing the disk image")?;
    drop(image);
    timings.spin("bootloader", "Installing boot loaders", || {
        boot::install(
            plan.bootloader,
            &raw_path,
            &layout,
            &boot_cfg,
            workspace.scratch(),
        )
    })?;
    if plan.output.format != DiskFormat::Raw {
        timings.time("convert", || {
            output::convert(&raw_path, pending.path(), &plan.output)
        })?;
    }
    let containerdisk = match &plan.containerdisk {
        Some(dest) => Some(timings.time("containerdisk", || {
            package_containerdisk(
                dest,
                pending.path(),
                input,
                &kernel.version,
                plan,
                &workspace,
            )
        })?),
        None => None,
    };
    pending.commit(plan.output.force)?;

    report::print(&Summary {
        output: &plan.output.path,
        format: plan.output.format,
        target: &plan.output,
        layout: &layout,
        ids: &ids,
        image: report::ImageIdentity {
            source: &input.identity.source,
            id: &input.identity.id,
            diff_ids: &input.identity.diff_ids,
        },
        json: plan.json,
        containerdisk: containerdisk.as_deref(),
        root_size: layout.root.size,
        kernel_version: &kernel.version,
        timings: &timings,
        app,
        disabled_units,
        c2vm_init: *c2vm_init,
        secure_boot: secure.summary(),
        arch: input.arch,
        login: login.as_ref(),
        encrypted: plan.luks.is_some(),
    });
    Ok(())
}

/// `--containerdisk`: the finished disk (under its temporary name) as KubeVirt's image.
fn package_containerdisk(
    dest: &Destination,
    disk: &Path,
    input: &Input,
    kernel_version: &str,
    plan: &DiskPlan,
    workspace: &Workspace,
) -> Result<String> {
    let connected;
    let engine = match (dest.needs_engine(), input.engine) {
        (true, None) => {
            connected = Engine::connect()?;
            Some(&connected)
        }
        (_, engine) => engine,
    };
    let name = plan
        .output
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the output has no file name")?;
    let said = containerdisk::package(
        disk,
        &name,
        dest,
        &containerdisk::Origin {
            source: &input.identity.source,
            digest: &input.identity.id,
            kernel: kernel_version,
            arch: input.arch,
        },
        &input.access,
        engine,
        workspace.scratch(),
        plan.epoch,
    )?;
    progress::note(&format!("The containerDisk is {said}"));
    Ok(said)
}

/// Guest setup's result.
struct SetupDone {
    /// The kernel the disk boots.
    kernel: BootFiles,
    /// The image's own units disabled in favour of the app service.
    disabled: Vec<String>,
    /// Whether c2vm-init is PID 1.
    c2vm_init: bool,
    /// The Secure Boot chain from the guest's files, or why the loaders are unsigned.
    secure: Decision,
    /// How the disk can be logged into (None: c2vm-init, no login).
    login: Option<Login>,
}
type Setup<'s> = dyn Fn(&mut GuestTree) -> Result<SetupDone> + 's;

/// The root filesystem, filled one of two ways.
struct RootFs<'a, 'i> {
    input: &'a Input<'i>,
    plan: &'a DiskPlan,
    ids: &'a Identifiers,
    raw_path: &'a Path,
    workspace: &'a Workspace,
}

impl RootFs<'_, '_> {
    /// One pass: the source's stream, edited, into `mke2fs -d -` writing the root partition.
    /// Sized from the source's estimate; when that proves too small, one pass to count (the
    /// stream edit measures what it writes) and the real one again.
    fn stream(&self, setup: &Setup) -> Result<(Layout, Edited<SetupDone>)> {
        let layout = self.layout(&self.input.usage, self.input.exact)?;
        match self.stream_into(&layout, &self.input.usage, self.input.exact, setup) {
            Err(e) if ext4::TooSmall::find(&e).is_some() && !self.input.exact => {
                log::info!("the estimate was short ({e:#}); counting the files");
                let counted = self.edit_into(std::io::sink(), setup)?.usage;
                let layout = self.layout(&counted, true)?;
                self.stream_into(&layout, &counted, true, setup)
                    .map(|edited| (layout, edited))
            }
            result => result.map(|edited| (layout, edited)),
        }
    }

    /// `exact`: whether `usage` was counted. An estimate shapes no inode count: it differs by
    /// transport (layers' compressed sizes), and the same image must give the same bytes from
    /// each. The default ratio is generous; where it falls short, the count's pass follows.
    fn stream_into(
        &self,
        layout: &Layout,
        usage: &TreeUsage,
        exact: bool,
        setup: &Setup,
    ) -> Result<Edited<SetupDone>> {
        self.partition(layout)?;
        let mut edited = None;
        let fs = layout.filesystem();
        ext4::make(ext4::Mkfs {
            image: self.raw_path,
            offset: fs.start,
            size: fs.size,
            files: Files::Stream(&mut |stdin| {
                edited = Some(self.edit_into(stdin, setup)?);
                Ok(())
            }),
            uuid: &self.ids.root_fs.to_string(),
            hash_seed: &self.ids.hash_seed.to_string(),
            inodes: match exact {
                true => ext4::inode_count(usage, fs.size),
                false => None,
            },
            scratch: self.workspace.scratch(),
            epoch: self.plan.epoch,
        })?;
        let edited =
            edited.ok_or_else(|| anyhow!("mke2fs finished before the stream was written"))?;
        ext4::set_xattrs(
            self.raw_path,
            fs.start,
            &edited.other_xattrs,
            self.workspace.scratch(),
        )?;
        Ok(edited)
    }

    /// The source's stream, edited, into `sink`.
    fn edit_into(&self, sink: impl Write, setup: &Setup) -> Result<Edited<SetupDone>> {
        let stream = (self.input.open)()?;
        let mut stream = std::io::BufReader::with_capacity(1 << 20, stream);
        let edited = edit::edit_with(
            &mut stream,
            sink,
            &rootfs::edit_policy(self.plan.epoch),
            &mut |tree| (self.input.more)(tree),
            setup,
        );
        // A source that broke (a layer's digest, a registry) explains the edit's failure.
        let edited = match edited {
            Err(e) => return Err(stream.get_mut().failure().unwrap_or(e)),
            Ok(edited) => edited,
        };
        // Read to the real end, past the end-of-archive blocks, so the source finishes cleanly.
        std::io::copy(&mut stream, &mut std::io::sink())
            .context("reading the source to its end")?;
        stream.into_inner().finish()?;
        Ok(edited)
    }

    /// Where mke2fs reads no tar: the edited stream through the safe unpacker into the staging
    /// tree (as root, for owners and devices), then `mke2fs -d TREE`.
    fn staged(&self, timings: &mut Timings, setup: &Setup) -> Result<(Layout, Edited<SetupDone>)> {
        let tree = self.workspace.root();
        let edited = timings.time("unpack", || {
            let (reader, writer) = rustix::pipe::pipe().context("making a pipe")?;
            std::thread::scope(|s| {
                let unpacker = s.spawn(|| unpack::unpack(std::fs::File::from(reader), &tree));
                let edited = self.edit_into(std::fs::File::from(writer), setup);
                let unpacked = unpacker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the unpacker panicked")));
                // Whichever stopped first explains the other's failure: the unpacker's refusal
                // the broken pipe the edit then saw, the edit's refusal the archive cut short
                // that the unpacker then saw.
                match (unpacked, edited) {
                    (Err(unpacker), Err(edit)) if cmd::is_broken_pipe(Some(&edit)) => Err(unpacker),
                    (_, Err(edit)) => Err(edit),
                    (Err(unpacker), Ok(_)) => Err(unpacker),
                    (Ok(()), Ok(edited)) => Ok(edited),
                }
            })
        })?;
        let usage = TreeUsage::of_tree(&tree)?;
        let layout = self.layout(&usage, true)?;
        self.partition(&layout)?;
        timings.spin(
            "mke2fs",
            "Creating the ext4 root filesystem (mke2fs -d)",
            || {
                let fs = layout.filesystem();
                ext4::make(ext4::Mkfs {
                    image: self.raw_path,
                    offset: fs.start,
                    size: fs.size,
                    files: Files::Tree(&tree),
                    uuid: &self.ids.root_fs.to_string(),
                    hash_seed: &self.ids.hash_seed.to_string(),
                    inodes: ext4::inode_count(&usage, fs.size),
                    scratch: self.workspace.scratch(),
                    epoch: self.plan.epoch,
                })
            },
        )?;
        Ok((layout, edited))
    }

    /// The layout for `usage`. An explicit `--size` below an exact need fails here, naming the
    /// smallest that fits; below an estimate it is tried (estimates run high).
    fn layout(&self, usage: &TreeUsage, exact: bool) -> Result<Layout> {
        let bios_boot = self
            .plan
            .bootloader
            .needs_bios_boot_partition(self.input.arch);
        let header = self.plan.root_header();
        let layout = match (self.plan.size, exact) {
            (SizeRequest::Bytes(bytes), false) => {
                Layout::for_disk(bytes, self.plan.esp_size, bios_boot, header)?
            }
            _ => plan_layout(usage, self.plan, self.input.arch)?,
        };
        // GCE takes whole GiB only: the root partition gets the rest.
        let multiple = self.plan.output.format.size_multiple();
        match layout.disk_size % multiple {
            0 => Ok(layout),
            _ => Layout::for_disk(
                layout.disk_size.div_ceil(multiple) * multiple,
                self.plan.esp_size,
                bios_boot,
                header,
            ),
        }
    }

    /// A fresh raw image of the layout's size with its partition table (and MBR boot code).
    fn partition(&self, layout: &Layout) -> Result<()> {
        let mut image = output::create_raw(self.raw_path, layout.disk_size)?;
        let arch = self.input.arch;
        let bootcode = boot::mbr_bootcode(self.plan.bootloader, arch, layout)?;
        gpt::write_table(&mut image, layout, &self.ids.gpt, arch, &bootcode)
    }
}

/// Turn the container's tree into a machine's; returns the kernel it boots and the image's own
/// units that were disabled in favour of the app service.
fn configure_guest(
    guest: &mut GuestTree,
    esp_uuid: &str,
    ids: &Identifiers,
    app: &GuestApp,
    plan: &DiskPlan,
    init: &InitPlan,
    arch: Arch,
) -> Result<SetupDone> {
    // What the image runs as PID 1, asked once: guest setup and the app service depend on it.
    let own_init = InitSystem::detect(guest)?;
    let c2vm_init = choose::c2vm_init(guest, init.choice, !app.process.argv.is_empty(), own_init)?;
    setup::configure(
        guest,
        &GuestConfig {
            settings: &plan.guest,
            arch,
            // The guest's kernel updates write the same command line as the ESP's loaders.
            cmdline: kernel_cmdline(ids, plan, c2vm_init, arch),
            root_uuid: ids.root_fs.to_string(),
            esp_uuid: esp_uuid.to_string(),
            luks_uuid: plan.luks.as_ref().map(|_| ids.luks.to_string()),
        },
        own_init,
    )?;
    let kernel = boot_files::find(guest)?;
    let secure = secure_boot(guest, &kernel, plan, arch)?;
    if c2vm_init {
        let settings = c2vm::Settings {
            guest: &plan.guest,
            restart: init.restart,
            stop_timeout: init.stop_timeout,
        };
        c2vm::install(guest, &app.process, &settings, arch).context("installing c2vm-init")?;
        return Ok(SetupDone {
            kernel,
            disabled: Vec::new(),
            c2vm_init: true,
            secure,
            login: None,
        });
    }
    if !setup::ensure_network(guest, own_init)? {
        progress::note("Note: the image has no DHCP client (systemd-networkd, NetworkManager or dhclient), so the VM will have no network");
    }
    let disabled = app::install(guest, app, own_init)
        .context("making the image's ENTRYPOINT/CMD a boot service")?;
    let credentials = &plan.guest.credentials;
    let login = Login {
        password: credentials.root_password_hash.is_some(),
        ssh_key: credentials.ssh_keys.is_some(),
        credentials_at_boot: own_init == InitSystem::Systemd,
        cloud_init: guest.exists("/usr/bin/cloud-init")?,
    };
    Ok(SetupDone {
        kernel,
        disabled,
        c2vm_init: false,
        secure,
        login: Some(login),
    })
}

/// `--secure-boot`: the chain from the signed files the stream edit copied from the guest, where
/// the kernel the disk boots is signed; decided before the ESP is written, so `on` fails early.
fn secure_boot(
    guest: &GuestTree,
    kernel: &BootFiles,
    plan: &DiskPlan,
    arch: Arch,
) -> Result<Decision> {
    let image = guest
        .contents(kernel.kernel.trim_start_matches('/').as_bytes())
        .with_context(|| format!("{} was not kept from the stream", kernel.kernel))?;
    boot::secure::decide(
        plan.secure_boot,
        plan.bootloader,
        arch,
        (&kernel.kernel, &image),
        |path| guest.contents(path.as_bytes()),
    )
}

/// The kernel command line; c2vm-init is PID 1 by it (`--append-cmdline` still comes last).
/// An encrypted root is named for the initramfs by `cryptopts=` (Debian's initramfs-tools, which
/// the Debian and Ubuntu templates and the generic bundle use): the initramfs itself names no
/// disk, so one build serves every disk.
fn kernel_cmdline(ids: &Identifiers, plan: &DiskPlan, c2vm_init: bool, arch: Arch) -> String {
    let mut append = String::new();
    if plan.luks.is_some() {
        append.push_str(&format!(
            "cryptopts=target={},source=UUID={},luks,discard ",
            luks::MAPPING,
            ids.luks
        ));
    }
    if c2vm_init {
        append.push_str(&format!("init={} ", c2vm::PATH));
    }
    append.push_str(&plan.append_cmdline);
    boot::kernel_cmdline(&ids.root_fs.to_string(), arch, &append)
}

fn plan_layout(usage: &TreeUsage, plan: &DiskPlan, arch: Arch) -> Result<Layout> {
    Layout::plan(
        usage,
        plan.size,
        plan.esp_size,
        plan.bootloader.needs_bios_boot_partition(arch),
        plan.root_header(),
    )
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

/// Once the disk's architecture is known, before any long work: the host's loader tools for it.
fn check_arch(arch: Arch, plan: &DiskPlan) -> Result<()> {
    boot::check_host_tools(plan.bootloader, arch)
}

/// The kernel and initramfs, as copied from the stream, under the names the loaders boot.
fn kernel_files(guest: &GuestTree, kernel: &BootFiles) -> Result<Vec<EspFile>> {
    let open = |path: &str, on_esp: &str| -> Result<EspFile> {
        let data = guest
            .contents(path.trim_start_matches('/').as_bytes())
            .with_context(|| format!("{path} was not kept from the stream"))?;
        Ok(EspFile {
            path: on_esp.to_string(),
            contents: Box::new(std::io::Cursor::new(data)),
        })
    };
    Ok(vec![
        open(&kernel.kernel, boot::KERNEL_ON_ESP)?,
        open(&kernel.initrd, boot::INITRD_ON_ESP)?,
    ])
}

/// A full filesystem shows up deep in a tool's or library's error; say plainly what to do.
fn explain_full_disk(err: anyhow::Error, plan: &DiskPlan) -> anyhow::Error {
    let full = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::ENOSPC)
    }) || ToolFailed::find(&err).is_some_and(|t| t.said(&["No space left on device"]));
    if !full {
        return err;
    }
    err.context(format!(
        "no space left on device: free some space in {} (the output) or {} (--workdir), or write elsewhere",
        plan.output.dir().display(),
        plan.workdir.path().display()
    ))
}
