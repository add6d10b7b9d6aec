//! `c2vm convert` and `c2vm build`, as a table of contents: each step is one call into the stage
//! module that owns it. Options are checked first (`plan`), then: source → kernel → rootfs →
//! disk → boot → output, then the report.
use crate::boot::{self, BootConfig};
use crate::cmd::ToolFailed;
use crate::disk::esp::{self, EspFile};
use crate::disk::ext4::{self, TreeUsage};
use crate::disk::gpt;
use crate::disk::layout::{Layout, SizeRequest};
use crate::disk::Identifiers;
use crate::kernel;
use crate::output::{self, DiskFormat, PendingOutput};
use crate::plan::{DiskArgs, DiskPlan, ImageArgs, ImagePlan};
use crate::report::{self, Summary, Timings};
use crate::rootfs::app::{self, GuestApp};
use crate::rootfs::boot_files::{self, BootFiles};
use crate::rootfs::guest::GuestRoot;
use crate::rootfs::setup::{self, GuestConfig};
use crate::rootfs::unpack;
use crate::source::docker::Engine;
use crate::source::{self, SourceRef, PLATFORM};
use crate::workspace::Workspace;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `c2vm convert SOURCE`.
pub fn convert(source: &str, disk: &DiskArgs, image: &ImageArgs) -> Result<()> {
    let plan = DiskPlan::from_args(disk)?;
    match SourceRef::parse(source)? {
        SourceRef::Tarball(path) => {
            ImagePlan::check_tarball(image)?;
            require_root()?;
            convert_tarball(&path, &plan)
        }
        SourceRef::Image(reference) => {
            let image = ImagePlan::from_args(image)?;
            require_root()?;
            let engine = Engine::connect()?;
            convert_image(&engine, &reference, &image, &plan)
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
    require_root()?;
    let engine = Engine::connect()?;
    let tag = engine.build_dir(context, dockerfile, build_args)?;
    convert_image(&engine, &tag, &image, &plan)
}

/// c2vm needs root to give unpacked files their owners (and to create device nodes).
fn require_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("c2vm convert must run as root, so that the guest's files keep their owners; run it with sudo");
    }
    Ok(())
}

/// `rootfs:PATH` → workspace → disk.
fn convert_tarball(path: &Path, plan: &DiskPlan) -> Result<()> {
    if plan.size != SizeRequest::Auto {
        // An explicit --size that cannot fit fails now, not after unpacking (headers only: fast).
        if let Ok(usage) = TreeUsage::of_tarball(path) {
            plan_layout(&usage, plan)?;
        }
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let workspace = Workspace::create(&plan.workdir, size)?;
    let mut timings = Timings::default();
    timings.time("unpack", || {
        let mut stream = source::tarball::open(path)?;
        unpack::unpack(&mut stream, &workspace.root())
            .with_context(|| format!("unpacking {}", path.display()))?;
        stream.finish();
        Ok(())
    })?;
    build_disk(workspace, timings, &GuestApp::default(), plan)
}

/// An image reference → (kernel added) → workspace → disk, through the engine.
fn convert_image(
    engine: &Engine,
    reference: &str,
    options: &ImagePlan,
    plan: &DiskPlan,
) -> Result<()> {
    let mut timings = Timings::default();
    let image = timings.time("pull", || {
        engine.ensure_image(reference, options.pull, PLATFORM)
    })?;
    image.check_platform(reference)?;
    // The service comes from the user's image, not the kernel layer built on top of it.
    let app = GuestApp::from_config(&image.config, options.app)?;
    let bootable = timings.time("kernel", || match options.add_kernel {
        true => kernel::add_kernel(engine, &image, reference),
        false => Ok(image.clone()),
    })?;
    let workspace = Workspace::create(&plan.workdir, bootable.size)?;
    timings.time("export+unpack", || {
        let mut stream = engine.export(&bootable)?;
        unpack::unpack(&mut stream, &workspace.root())?;
        stream.finish()
    })?;
    build_disk(workspace, timings, &app, plan)
}

/// Everything after the source: guest setup, disk, boot loaders, output, report.
fn build_disk(
    workspace: Workspace,
    timings: Timings,
    app: &GuestApp,
    plan: &DiskPlan,
) -> Result<()> {
    build_disk_steps(workspace, timings, app, plan).map_err(|e| explain_full_disk(e, plan))
}

fn build_disk_steps(
    workspace: Workspace,
    mut timings: Timings,
    app: &GuestApp,
    plan: &DiskPlan,
) -> Result<()> {
    let ids = Identifiers::random();
    let root = workspace.root();
    let guest = GuestRoot::open(&root)?;
    let boot_cfg = BootConfig {
        cmdline: boot::kernel_cmdline(&ids.root_fs.to_string(), &plan.append_cmdline),
        esp_uuid: ids.esp_uuid(),
        epoch: plan.epoch,
    };
    let (kernel, disabled_units) = timings.spin("setup", "Configuring the guest", || {
        configure_guest(&guest, &boot_cfg, &ids, app, plan)
    })?;

    let usage = TreeUsage::of_tree(&root)?;
    let layout = plan_layout(&usage, plan)?;
    let pending = PendingOutput::new(&plan.output.path)?;
    // Raw output is written in place under its temporary name; other formats are converted from
    // a raw image in the scratch space.
    let raw_path = match plan.output.format {
        DiskFormat::Raw => pending.path().to_path_buf(),
        _ => workspace.scratch().join("disk.raw"),
    };
    let mut image = output::create_raw(&raw_path, layout.disk_size)?;
    let bootcode = boot::mbr_bootcode(plan.bootloader, &layout)?;
    gpt::write_table(&mut image, &layout, &ids.gpt, &bootcode)?;

    timings.spin(
        "mke2fs",
        "Creating the ext4 root filesystem (mke2fs -d)",
        || {
            ext4::make(&ext4::Mkfs {
                image: &raw_path,
                offset: layout.root.start,
                size: layout.root.size,
                tree: &root,
                uuid: &ids.root_fs.to_string(),
                inodes: ext4::inode_count(&usage, layout.root.size),
                scratch: workspace.scratch(),
                epoch: plan.epoch,
            })
        },
    )?;
    timings.spin("esp", "Writing the EFI system partition", || {
        let mut files = kernel_files(&guest, &kernel)?;
        files.extend(boot::esp_files(
            plan.bootloader,
            &boot_cfg,
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
            output::convert(&raw_path, pending.path(), plan.output.format)
        })?;
    }
    pending.commit(plan.output.force)?;
    drop(workspace);

    report::print(&Summary {
        output: &plan.output.path,
        format: plan.output.format,
        root_size: layout.root.size,
        kernel_version: &kernel.version,
        timings: &timings,
        app,
        disabled_units: &disabled_units,
        can_log_in: plan.credentials.allow_login(),
    });
    Ok(())
}

/// Turn the container's tree into a machine's; returns the kernel it boots and the image's own
/// units that were disabled in favour of the app service.
fn configure_guest(
    guest: &GuestRoot,
    boot_cfg: &BootConfig,
    ids: &Identifiers,
    app: &GuestApp,
    plan: &DiskPlan,
) -> Result<(BootFiles, Vec<String>)> {
    setup::configure(
        guest,
        &GuestConfig {
            hostname: plan.hostname.clone(),
            cmdline: boot_cfg.cmdline.clone(),
            root_uuid: ids.root_fs.to_string(),
            esp_uuid: boot_cfg.esp_uuid.clone(),
            credentials: plan.credentials.clone(),
            dns: plan.dns.clone(),
        },
    )?;
    let kernel = boot_files::find(guest)?;
    let disabled =
        app::install(guest, app).context("making the image's ENTRYPOINT/CMD a boot service")?;
    Ok((kernel, disabled))
}

fn plan_layout(usage: &TreeUsage, plan: &DiskPlan) -> Result<Layout> {
    Layout::plan(
        usage,
        plan.size,
        plan.esp_size,
        plan.bootloader.needs_bios_boot_partition(),
    )
}

/// The kernel and initramfs, read from the guest's tree, under the names the loaders boot.
fn kernel_files(guest: &GuestRoot, kernel: &BootFiles) -> Result<Vec<EspFile>> {
    let open = |path: &str, on_esp: &str| -> Result<EspFile> {
        let file = guest
            .open_file(path)?
            .with_context(|| format!("{path} vanished from the staging tree"))?;
        Ok(EspFile {
            path: on_esp.to_string(),
            contents: Box::new(file),
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
