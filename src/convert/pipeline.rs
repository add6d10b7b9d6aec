//! `c2vm convert` and `c2vm build`, as a table of contents: each step is one call into the stage
//! module that owns it. Options are checked first (`plan`), then: the source (`input`: a
//! tarball, or an image through an engine or a transport, with the kernel it boots) → the root
//! filesystem, the stream edited into mke2fs with guest setup on the way (`disk::root`,
//! `boot::guest`) → encryption (`disk::luks`) → the ESP and the boot loaders (`boot`) → the
//! output's format (`output`), or for a live medium the root as squashfs, then the ISO or the
//! network boot set (`build_medium`) → the SBOM (`sbom`) → the provenance (`provenance`) → a
//! containerDisk, with those two as its referrers (`containerdisk`) → the report.
use crate::arch::Arch;
use crate::boot;
use crate::cmd::ToolFailed;
use crate::convert::assemble::Build;
use crate::convert::input::{self, ImageSource, Input};
use crate::convert::options::ConvertOptions;
use crate::convert::plan::{DiskPlan, ImagePlan};
use crate::output::PendingOutput;
use crate::progress::Timings;
use crate::rootfs::app::GuestApp;
use crate::rootfs::tree::GuestTree;
use crate::source::docker::Engine;
use crate::source::{self, SourceRef, TarStream};
use anyhow::Result;
use std::path::Path;

/// `c2vm convert SOURCE`.
pub fn convert(source: &str, options: &ConvertOptions) -> Result<()> {
    let parsed = SourceRef::parse(source)?;
    let image = ImagePlan::for_source(options, &parsed)?;
    let plan = DiskPlan::parse(options)?;
    if let SourceRef::Tarball(path) = &parsed {
        source::tarball::check_exists(path)?;
    }
    let plan = plan.prepare(options)?;
    match parsed {
        SourceRef::Tarball(path) => convert_tarball(&path, source, image.platform, &plan),
        SourceRef::Image(reference) => {
            let engine = Engine::connect()?;
            convert_from_engine(&engine, &reference, &image, &plan)
        }
        SourceRef::Layers(transport) => {
            let mut timings = Timings::default();
            let layers = timings.time("pull", || transport.open(&image.access, image.platform))?;
            let layers = ImageSource::layers(layers, &image);
            convert_image(&layers, source, &image, &plan, timings)
        }
    }
}

/// `c2vm build CONTEXT`: the Dockerfile through the engine, then the same conversion.
pub fn build(
    context: &Path,
    dockerfile: Option<&Path>,
    build_args: &[String],
    options: &ConvertOptions,
) -> Result<()> {
    let image = ImagePlan::from_args(&options.kernel, &options.source)?;
    let plan = DiskPlan::parse(options)?.prepare(options)?;
    let engine = Engine::connect()?;
    let tag = engine.build_dir(context, dockerfile, build_args, image.platform)?;
    convert_from_engine(&engine, &tag, &image, &plan)
}

/// An image in the engine, pulled where `--pull` says.
fn convert_from_engine(
    engine: &Engine,
    reference: &str,
    options: &ImagePlan,
    plan: &DiskPlan,
) -> Result<()> {
    let mut timings = Timings::default();
    let details = timings.time("pull", || {
        engine.ensure_image(reference, options.pull, options.platform)
    })?;
    let image = ImageSource::Engine { engine, details };
    convert_image(&image, reference, options, plan, timings)
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
    check_loader_tools(arch, plan)?;
    let open = || -> Result<Box<dyn TarStream>> { Ok(Box::new(source::tarball::open(path)?)) };
    let app = GuestApp::default();
    let input = input::tarball(path, source, arch, &open, &app, plan)?;
    build_disk(&input, Timings::default(), plan)
}

/// An image (engine or transport) → its kernel chosen (and added) → disk.
fn convert_image(
    image: &ImageSource,
    reference: &str,
    options: &ImagePlan,
    plan: &DiskPlan,
    mut timings: Timings,
) -> Result<()> {
    let arch = image
        .details()
        .check_platform(reference, options.platform)?;
    image.check_programs(reference, arch)?;
    check_loader_tools(arch, plan)?;
    // The service comes from the user's image, not the kernel layer built on top of it.
    let app = GuestApp::from_config(&image.details().config, options.app)?;
    let bootable = image.kernel(reference, options, plan, arch, &mut timings)?;
    let open = || image.open(&bootable);
    let more = |tree: &mut GuestTree| input::bundle_entries(image, &bootable, options, plan, tree);
    let input = image.input(
        reference,
        &bootable,
        (&open, &more),
        &app,
        (options, plan, arch),
    )?;
    build_disk(&input, timings, plan)
}

/// Everything after the source, as named steps on one context; a full filesystem anywhere in
/// them is said plainly.
fn build_disk(input: &Input, timings: Timings, plan: &DiskPlan) -> Result<()> {
    if plan.output.format.is_live() {
        return build_medium(input, timings, plan).map_err(|e| explain_full_disk(e, plan));
    }
    let steps = || -> Result<()> {
        let pending = PendingOutput::for_format(&plan.output.path, plan.output.format)?;
        let mut disk = Build::workspace(input, plan, &pending, timings)?;
        let (layout, edited) = disk.root()?;
        disk.encrypt(&layout)?;
        disk.boot_files(&layout, &edited)?;
        disk.output(&pending)?;
        let sbom = disk.sbom(&pending, &edited)?;
        let provenance = disk.provenance(&pending)?;
        let attachments: Vec<_> = (sbom.iter().map(|s| s.attachment()))
            .chain(provenance.iter().map(|p| p.attachment()))
            .collect();
        let containerdisk = disk.containerdisk(&pending, &edited.value, &attachments)?;
        pending.commit(plan.output.force)?;
        let force = plan.output.force;
        let sbom = sbom.map(|s| s.commit(force)).transpose()?;
        let provenance = provenance.map(|p| p.commit(force)).transpose()?;
        disk.report(
            Some(&layout),
            &edited.value,
            containerdisk.as_deref(),
            (sbom.as_ref(), provenance.as_ref()),
        );
        Ok(())
    };
    steps().map_err(|e| explain_full_disk(e, plan))
}

/// A live medium (`--format iso` or `pxe`): the root as squashfs, then the medium (ISO or network
/// boot set), the SBOM and the provenance.
fn build_medium(input: &Input, timings: Timings, plan: &DiskPlan) -> Result<()> {
    let pending = PendingOutput::for_format(&plan.output.path, plan.output.format)?;
    let mut medium = Build::workspace(input, plan, &pending, timings)?;
    let edited = medium.live_root()?;
    medium.medium(&pending, &edited)?;
    let sbom = medium.sbom(&pending, &edited)?;
    let provenance = medium.provenance(&pending)?;
    pending.commit(plan.output.force)?;
    let force = plan.output.force;
    let sbom = sbom.map(|s| s.commit(force)).transpose()?;
    let provenance = provenance.map(|p| p.commit(force)).transpose()?;
    medium.report(
        None,
        &edited.value,
        None,
        (sbom.as_ref(), provenance.as_ref()),
    );
    Ok(())
}

/// Once the disk's architecture is known, before any long work: the host's loader tools for it.
fn check_loader_tools(arch: Arch, plan: &DiskPlan) -> Result<()> {
    if plan.output.format == crate::output::DiskFormat::Iso {
        boot::check_iso_tools(arch)?;
    }
    boot::check_host_tools(plan.bootloader, arch)
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
