//! `c2vm convert`, as a table of contents: each step is one stage module.
use crate::boot::{self, BootConfig};
use crate::cli::DiskFormat;
use crate::disk::esp::{self, EspFile};
use crate::disk::ext4;
use crate::disk::gpt::{self, DiskIds};
use crate::disk::layout::Layout;
use crate::output::{self, PendingOutput};
use crate::plan::{DiskPlan, SizeRequest, MIB};
use crate::progress::{note, Stage};
use crate::rootfs::app::{self, ImageConfig};
use crate::rootfs::boot_files::BootFiles;
use crate::rootfs::guest::GuestRoot;
use crate::rootfs::setup::{self, GuestConfig};
use crate::rootfs::Staging;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// How long each stage took, for the summary line and `scripts/bench`.
#[derive(Default, Debug)]
pub struct Timings(pub Vec<(&'static str, Duration)>);

impl Timings {
    pub fn add(&mut self, stage: &'static str, took: Duration) {
        self.0.push((stage, took));
    }

    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The identifiers chosen for one disk.
struct Ids {
    disk: DiskIds,
    root_fs: uuid::Uuid,
    esp_volume: u32,
}

impl Ids {
    fn random() -> Ids {
        Ids {
            disk: DiskIds::random(),
            root_fs: uuid::Uuid::new_v4(),
            esp_volume: rand::random(),
        }
    }
}

/// A staging tree that a source has filled with a root filesystem.
pub struct Unpacked {
    pub staging: Staging,
    pub timings: Timings,
    /// The image's process, ports and volumes (none for a `rootfs:` tarball).
    pub image_config: ImageConfig,
}

/// Everything after the source: guest setup, disk, boot loaders, output.
pub fn build_disk(unpacked: Unpacked, plan: &DiskPlan) -> Result<()> {
    build_disk_inner(unpacked, plan).map_err(|e| explain_full_disk(e, plan))
}

/// A full filesystem shows up deep in a tool's or library's error; say plainly what to do.
fn explain_full_disk(err: anyhow::Error, plan: &DiskPlan) -> anyhow::Error {
    let full = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::ENOSPC)
            || c.to_string().contains("No space left on device")
    });
    if !full {
        return err;
    }
    err.context(format!(
        "no space left on device: free some space in {} (the output) or {} (--workdir), or write elsewhere",
        crate::plan::output_dir(&plan.output).display(),
        plan.workdir.display()
    ))
}

fn build_disk_inner(unpacked: Unpacked, plan: &DiskPlan) -> Result<()> {
    let Unpacked {
        staging,
        mut timings,
        image_config,
    } = unpacked;
    let ids = Ids::random();
    let root = staging.root();
    let guest = GuestRoot::open(&root)?;

    let stage = Stage::spinner("Configuring the guest");
    let esp_uuid = esp::volume_uuid(ids.esp_volume);
    let cmdline = boot::kernel_cmdline(&ids.root_fs.to_string(), &plan.append_cmdline);
    setup::configure(
        &guest,
        &GuestConfig {
            hostname: plan.hostname.clone(),
            cmdline: cmdline.clone(),
            root_uuid: ids.root_fs.to_string(),
            esp_uuid: esp_uuid.clone(),
            root_password_hash: plan.root_password_hash.clone(),
            ssh_key: plan.ssh_key.clone(),
            dns: plan.dns.clone(),
        },
    )?;
    let kernel = crate::rootfs::boot_files::find(&guest)?;
    let disabled_units = app::install(&guest, &image_config)
        .context("making the image's ENTRYPOINT/CMD a boot service")?;
    timings.add("setup", stage.done());

    let usage = ext4::measure_tree(&root)?;
    let layout = plan_layout(&usage, plan)?;

    // Raw output is written in place under its temporary name; other formats are converted from
    // a raw image in the scratch space.
    let pending = PendingOutput::new(&plan.output)?;
    let raw_path = if plan.format == DiskFormat::Raw {
        pending.path().to_path_buf()
    } else {
        staging.scratch().join("disk.raw")
    };
    let mut image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&raw_path)
        .with_context(|| format!("creating {}", raw_path.display()))?;
    image
        .set_len(layout.disk_size)
        .with_context(|| format!("sizing {}", raw_path.display()))?;
    let bootcode = boot::mbr_bootcode(plan.bootloader, &layout)?;
    gpt::write_table(&mut image, &layout, &ids.disk, &bootcode)?;

    let stage = Stage::spinner("Creating the ext4 root filesystem (mke2fs -d)");
    ext4::make(&ext4::Mkfs {
        image: &raw_path,
        offset: layout.root.start,
        size: layout.root.size,
        tree: &root,
        uuid: &ids.root_fs.to_string(),
        inodes: ext4::inode_count(&usage, layout.root.size),
        scratch: staging.scratch(),
    })?;
    timings.add("mke2fs", stage.done());

    let stage = Stage::spinner("Writing the EFI system partition");
    let boot_cfg = BootConfig { cmdline, esp_uuid };
    let mut files = kernel_files(&guest, &kernel)?;
    files.extend(boot::esp_files(
        plan.bootloader,
        &boot_cfg,
        staging.scratch(),
    )?);
    esp::write(&image, layout.esp, ids.esp_volume, files)?;
    timings.add("esp", stage.done());

    let stage = Stage::spinner("Installing boot loaders");
    image.sync_all().context("flushing the disk image")?;
    drop(image);
    boot::install(
        plan.bootloader,
        &raw_path,
        &layout,
        &boot_cfg,
        staging.scratch(),
    )?;
    timings.add("bootloader", stage.done());

    if plan.format != DiskFormat::Raw {
        let t = std::time::Instant::now();
        output::convert(&raw_path, pending.path(), plan.format)?;
        timings.add("convert", t.elapsed());
    }
    pending.commit(plan.force)?;
    drop(staging);
    let size = std::fs::metadata(&plan.output)
        .map(|m| m.len())
        .unwrap_or(0);
    let allocated = std::fs::metadata(&plan.output)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    note(&format!(
        "Wrote {} ({}, {} MiB, {} MiB allocated; root {} MiB, kernel {})",
        plan.output.display(),
        output::qemu_format(plan.format),
        size / MIB,
        allocated / MIB,
        layout.root.size / MIB,
        kernel.version
    ));
    note(&format!("Timings: {}", timings.line()));
    note(&format!(
        "Peak memory: {} MiB (c2vm), {} MiB (largest tool)",
        peak_rss_mib(libc::RUSAGE_SELF),
        peak_rss_mib(libc::RUSAGE_CHILDREN)
    ));
    explain_image_config(&image_config, &disabled_units, plan);
    if plan.root_password_hash.is_none() && plan.ssh_key.is_none() {
        note("Note: no --password-file or --ssh-key was given, so no one can log in as root on this disk.");
    }
    Ok(())
}

/// Tell the user what runs at boot and which ports to forward.
fn explain_image_config(config: &ImageConfig, disabled_units: &[String], plan: &DiskPlan) {
    if let Some(spec) = &config.app {
        let argv: Vec<String> = spec
            .argv
            .iter()
            .map(|a| shell_escape::unix::escape(a.into()).into_owned())
            .collect();
        let user = if spec.user.is_empty() {
            "root"
        } else {
            spec.user.as_str()
        };
        note(&format!(
            "At boot the VM runs the image's command as the service c2vm-app, as {user}: {} (--no-app turns this off)",
            argv.join(" ")
        ));
        if !disabled_units.is_empty() {
            note(&format!(
                "Disabled {}: it starts the same program as the image's command",
                disabled_units.join(", ")
            ));
        }
    }
    if !config.exposed_ports.is_empty() {
        let publish: Vec<String> = config
            .exposed_ports
            .iter()
            .filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
                let port: u16 = port.parse().ok()?;
                // Ports below 1024 need root on the host; suggest one above.
                let host = if port < 1024 {
                    port as u32 + 8000
                } else {
                    port as u32
                };
                let suffix = if proto == "tcp" {
                    String::new()
                } else {
                    format!("/{proto}")
                };
                Some(format!("--publish {host}:{port}{suffix}"))
            })
            .collect();
        note(&format!(
            "The image exposes {}: forward them with `c2vm run {} {}`",
            config.exposed_ports.join(", "),
            plan.output.display(),
            publish.join(" ")
        ));
    }
}

fn peak_rss_mib(who: libc::c_int) -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss.max(0) as u64 / 1024
}

/// Work out the disk layout from `--size` and what the staging tree holds.
fn plan_layout(usage: &ext4::TreeUsage, plan: &DiskPlan) -> Result<Layout> {
    let bios_boot = plan.bootloader == crate::cli::Bootloader::Grub;
    let min_root = ext4::min_fs_size(usage);
    match plan.size {
        SizeRequest::Auto => Layout::for_root(ext4::auto_fs_size(usage), plan.esp_size, bios_boot),
        SizeRequest::Bytes(bytes) => {
            let smallest = Layout::for_root(min_root, plan.esp_size, bios_boot)?.disk_size;
            if bytes < smallest {
                bail!(
                    "--size {} MiB is too small: these files need a disk of at least {} MiB ({} MiB root filesystem + {} MiB ESP and tables); use --size {}M or more, or --size auto",
                    bytes / MIB, smallest / MIB, min_root / MIB, (smallest - min_root) / MIB, smallest / MIB
                );
            }
            Layout::for_disk(bytes, plan.esp_size, bios_boot)
        }
    }
}

fn kernel_files(guest: &GuestRoot, kernel: &BootFiles) -> Result<Vec<EspFile>> {
    let open = |path: &str| -> Result<EspFile> {
        let file = guest
            .open_file(path)?
            .with_context(|| format!("{path} vanished from the staging tree"))?;
        Ok(EspFile {
            path: String::new(),
            contents: Box::new(file),
        })
    };
    let mut k = open(&kernel.kernel)?;
    k.path = boot::KERNEL_ON_ESP.to_string();
    let mut i = open(&kernel.initrd)?;
    i.path = boot::INITRD_ON_ESP.to_string();
    Ok(vec![k, i])
}

/// c2vm needs root to give unpacked files their owners (and to create device nodes).
pub fn require_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("c2vm convert must run as root, so that the guest's files keep their owners; run it with sudo");
    }
    Ok(())
}

/// `rootfs:PATH` → staging tree.
pub fn unpack_tarball(path: &std::path::Path, plan: &DiskPlan) -> Result<Unpacked> {
    if plan.size != SizeRequest::Auto {
        // An explicit --size that cannot fit fails now, not after unpacking (headers only: fast).
        if let Ok(usage) = crate::source::tarball::estimate_usage(path) {
            plan_layout(&usage, plan)?;
        }
    }
    let tarball_size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let staging = Staging::create(&plan.staging_dir(tarball_size))?;
    std::fs::create_dir(staging.root()).context("creating the staging root")?;
    let mut timings = Timings::default();
    let t = std::time::Instant::now();
    crate::source::tarball::unpack_tarball(path, &staging.root())?;
    timings.add("unpack", t.elapsed());
    Ok(Unpacked {
        staging,
        timings,
        image_config: ImageConfig::default(),
    })
}

/// An image reference → (kernel added) → staging tree, through the Docker Engine API.
pub fn unpack_image(
    reference: &str,
    image_args: &crate::cli::ImageArgs,
    plan: &DiskPlan,
) -> Result<Unpacked> {
    use crate::source::docker::Engine;
    if image_args.platform != "linux/amd64" {
        bail!(
            "--platform {}: c2vm boots x86-64 VMs only; use --platform linux/amd64",
            image_args.platform
        );
    }
    let mut timings = Timings::default();
    let engine = Engine::connect()?;
    let t = std::time::Instant::now();
    let image = engine.ensure_image(reference, image_args.pull, &image_args.platform)?;
    timings.add("pull", t.elapsed());
    if image.os != "linux" || image.architecture != "amd64" {
        bail!(
            "{reference} is a {}/{} image; c2vm boots linux/amd64 images only",
            image.os,
            image.architecture
        );
    }
    // The service comes from the user's image, not the kernel layer built on top of it.
    let image_config = ImageConfig::from_image(&image, image_args.app_choice())?;
    let t = std::time::Instant::now();
    let bootable = if image_args.no_kernel {
        image.clone()
    } else {
        crate::kernel::add_kernel(&engine, &image, reference)?
    };
    timings.add("kernel", t.elapsed());
    let staging = Staging::create(&plan.staging_dir(bootable.size))?;
    std::fs::create_dir(staging.root()).context("creating the staging root")?;
    let t = std::time::Instant::now();
    engine.export_into(&bootable, &staging.root())?;
    timings.add("export+unpack", t.elapsed());
    Ok(Unpacked {
        staging,
        timings,
        image_config,
    })
}

/// `c2vm build`: the user's Dockerfile through the API; returns the built image's id.
pub fn build_user_image(args: &crate::cli::BuildArgs) -> Result<String> {
    use crate::source::docker::{context_from_dir, Engine};
    let mut build_args = std::collections::HashMap::new();
    for kv in &args.build_args {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--build-arg {kv}: expected KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let dockerfile = args
        .dockerfile
        .clone()
        .unwrap_or_else(|| "Dockerfile".into());
    let dockerfile_text = args.context.join(&dockerfile);
    if !dockerfile_text.is_file() {
        bail!(
            "{} does not exist; give the Dockerfile with -f (relative to the context)",
            dockerfile_text.display()
        );
    }
    let context = context_from_dir(&args.context)?;
    let engine = Engine::connect()?;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&context);
    let tag = format!(
        "c2vm-build:{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    engine.build(
        context,
        &dockerfile.to_string_lossy(),
        &tag,
        &build_args,
        &format!("Building {}", args.context.display()),
    )?;
    Ok(tag)
}
