//! The disk after the source, one step at a time on one context ([`Build`]): the workspace and
//! identifiers, the root filesystem with guest setup, encryption, the ESP and boot loaders, the
//! output's format and containerDisk, the report. `pipeline` calls them in order.
use crate::boot::{self, guest::Machine, guest::MachineSpec, BootConfig};
use crate::convert::input::Input;
use crate::convert::plan::DiskPlan;
use crate::convert::report::{self, Summary};
use crate::disk::layout::Layout;
use crate::disk::root::{RootFs, Shape};
use crate::disk::{esp, ext4, ext4::Populate, luks, Identifiers};
use crate::output::containerdisk::{self, Destination};
use crate::output::{self, provenance, sbom, DiskFormat, PendingOutput};
use crate::progress::{self, Timings};
use crate::rootfs::edit::Edited;
use crate::rootfs::tree::GuestTree;
use crate::source::docker::Engine;
use crate::workspace::Workspace;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

mod live;

/// One disk being built: what every step reads.
pub struct Build<'a, 'i> {
    input: &'a Input<'i>,
    plan: &'a DiskPlan,
    ids: Identifiers,
    workspace: Workspace,
    /// The raw disk: the output itself, or a scratch file when another format is asked for. A
    /// live medium's squashfs root.
    raw: PathBuf,
    timings: Timings,
    /// The finished disk's sha256, hashed once for the SBOM and the provenance.
    sha256: Option<String>,
}

impl<'a, 'i> Build<'a, 'i> {
    /// The identifiers (derived under SOURCE_DATE_EPOCH) and the scratch space, sized for the
    /// staging tree and the raw image where they are needed.
    pub fn workspace(
        input: &'a Input<'i>,
        plan: &'a DiskPlan,
        pending: &PendingOutput,
        timings: Timings,
    ) -> Result<Build<'a, 'i>> {
        let ids = match plan.epoch {
            Some(_) => Identifiers::derive(&input.seed),
            None => Identifiers::random(),
        };
        let tree_bytes = input.root.usage.blocks * 4096;
        let live = plan.output.format.is_live();
        let mut need = match plan.output.format {
            DiskFormat::Raw => 0,
            _ => tree_bytes,
        };
        if let (Populate::Staging(why), false) = (&plan.populate, live) {
            progress::note(&format!("Taking the slower path through a staging tree: {why}; {} for a faster conversion without root.", ext4::how_to_get_tar_input()));
            need += tree_bytes;
        }
        let workspace = Workspace::create(&plan.workdir, need)?;
        let raw = match plan.output.format {
            DiskFormat::Raw => pending.path().to_path_buf(),
            DiskFormat::Iso | DiskFormat::Pxe => workspace.scratch().join("root.squashfs"),
            _ => workspace.scratch().join("disk.raw"),
        };
        Ok(Build {
            input,
            plan,
            ids,
            workspace,
            raw,
            timings,
            sha256: None,
        })
    }

    /// What guest setup makes of the container, with the disk's identifiers.
    fn machine_spec(&self) -> MachineSpec<'a> {
        let (plan, input, ids) = (self.plan, self.input, &self.ids);
        MachineSpec {
            settings: &plan.guest,
            init: &input.init,
            app: input.app,
            arch: input.arch,
            bootloader: plan.bootloader,
            secure_boot: plan.secure_boot,
            append_cmdline: &plan.append_cmdline,
            root_uuid: ids.root_fs.to_string(),
            esp_uuid: ids.esp_uuid(),
            luks_uuid: plan.luks.as_ref().map(|_| ids.luks.to_string()),
            live: plan.output.format.is_live().then(|| ids.live_label()),
        }
    }

    /// The root filesystem from the stream, with guest setup as the stream ends.
    pub fn root(&mut self) -> Result<(Layout, Edited<Machine>)> {
        let (plan, input, ids) = (self.plan, self.input, &self.ids);
        let spec = self.machine_spec();
        let shape = Shape {
            size: plan.size,
            esp_size: plan.esp_size,
            bios_boot: plan.bootloader.needs_bios_boot_partition(input.arch),
            luks_header: plan.luks_header(),
            multiple: plan.output.format.size_multiple(),
            arch: input.arch,
        };
        let policy = boot::guest::edit_policy(plan.epoch, plan.sbom.is_some());
        let root = RootFs {
            source: &input.root,
            shape: &shape,
            bootcode: &|layout| boot::mbr_bootcode(plan.bootloader, input.arch, layout),
            policy: &policy,
            ids,
            raw_path: &self.raw,
            workspace: &self.workspace,
            epoch: plan.epoch,
        };
        let setup = |guest: &mut GuestTree| boot::guest::make(guest, &spec);
        let (layout, edited) = root.write(&plan.populate, &mut self.timings, &setup)?;
        for line in &edited.notes {
            progress::note(line);
        }
        Ok((layout, edited))
    }

    /// `--luks-passphrase-file`: the root filesystem sealed in place as LUKS2.
    pub fn encrypt(&mut self, layout: &Layout) -> Result<()> {
        let Some(passphrase) = &self.plan.luks else {
            return Ok(());
        };
        if self.plan.epoch.is_some() {
            progress::note("Note: an encrypted disk is never byte-reproducible: LUKS2 takes a fresh volume key and salts each time (the rest of its layout still follows SOURCE_DATE_EPOCH)");
        }
        let label = "Encrypting the root filesystem (LUKS2, aes-xts-plain64)";
        let (raw, ids, scratch) = (&self.raw, &self.ids, self.workspace.scratch());
        self.timings.spin("luks", label, || {
            luks::seal(raw, layout.root, ids.luks, passphrase, scratch)
        })
    }

    /// The ESP (kernel, initramfs, loaders and their Secure Boot chain), then the loaders'
    /// BIOS stages.
    pub fn boot_files(&mut self, layout: &Layout, edited: &Edited<Machine>) -> Result<()> {
        let cfg = self.boot_config(&edited.value);
        let (plan, raw, ids, scratch) = (self.plan, &self.raw, &self.ids, self.workspace.scratch());
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(raw)
            .with_context(|| format!("opening {}", raw.display()))?;
        self.timings
            .spin("esp", "Writing the EFI system partition", || {
                let files = esp_contents(plan, &cfg, edited, scratch)?;
                esp::write(&image, layout.esp, ids.esp_volume, files, plan.epoch)
            })?;
        image.sync_all().context("flushing the disk image")?;
        drop(image);
        self.timings
            .spin("bootloader", "Installing boot loaders", || {
                boot::install(plan.bootloader, raw, layout, &cfg, scratch)
            })
    }

    /// What every loader is told: the kernel, its command line, the ESP.
    fn boot_config(&self, machine: &Machine) -> BootConfig {
        BootConfig {
            arch: self.input.arch,
            cmdline: machine.cmdline.clone(),
            kernel: boot::guest::kernel_names(&machine.kernel),
            esp_uuid: self.ids.esp_uuid(),
            epoch: self.plan.epoch,
        }
    }

    /// The asked format (from the raw image) and `--containerdisk`; returns where that went.
    /// The asked format, from the raw image.
    pub fn output(&mut self, pending: &PendingOutput) -> Result<()> {
        let plan = self.plan;
        if plan.output.format != DiskFormat::Raw {
            let raw = &self.raw;
            let order = match plan.epoch {
                Some(_) => output::WriteOrder::Reproducible,
                None => output::WriteOrder::Fastest,
            };
            self.timings.time("convert", || {
                output::convert(raw, pending.path(), &plan.output, order)
            })?;
        }
        Ok(())
    }

    /// `--containerdisk`, with `attachments` (the SBOM) as its referrers; returns where it went.
    pub fn containerdisk(
        &mut self,
        pending: &PendingOutput,
        machine: &Machine,
        attachments: &[containerdisk::Attachment],
    ) -> Result<Option<String>> {
        let plan = self.plan;
        let Some(dest) = &plan.containerdisk else {
            return Ok(None);
        };
        let version = &machine.kernel.version;
        let (input, scratch) = (self.input, self.workspace.scratch());
        let disk = pending.path();
        let said = self.timings.time("containerdisk", || {
            package_containerdisk(input, plan, scratch, dest, disk, version, attachments)
        })?;
        Ok(Some(said))
    }

    /// The finished disk's sha256 (still under its temporary name), read once whoever asks.
    fn disk_sha256(&mut self, pending: &PendingOutput) -> Result<String> {
        if let Some(sha256) = &self.sha256 {
            return Ok(sha256.clone());
        }
        let sha256 = self.timings.spin("digest", "Hashing the disk", || {
            output::file_sha256(pending.path())
        })?;
        self.sha256 = Some(sha256.clone());
        Ok(sha256)
    }

    /// The disk's final file name, as the SBOM and the provenance name it.
    fn disk_name(&self) -> Result<String> {
        (self.plan.output.path.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .context("the output has no file name")
    }

    /// `--sbom`: the finished disk's SBOM (the disk still under its temporary name), written
    /// beside its own final name, to be renamed after the disk.
    pub fn sbom(
        &mut self,
        pending: &PendingOutput,
        edited: &Edited<Machine>,
    ) -> Result<Option<sbom::Written>> {
        let (plan, input) = (self.plan, self.input);
        let Some(target) = &plan.sbom else {
            return Ok(None);
        };
        let name = self.disk_name()?;
        let sha256 = self.disk_sha256(pending)?;
        let bundle = (input.bundle.as_ref())
            .filter(|b| b.joined())
            .map(|b| sbom::Bundle {
                name: b.name.clone(),
                id: b.id.clone(),
            });
        let inputs = sbom::Inputs {
            sha256: &sha256,
            name,
            format: plan.output.format,
            arch: input.arch,
            source: &input.identity.source,
            source_id: &input.identity.id,
            tree: &edited.tree,
            machine: &edited.value,
            bootloader: plan.bootloader,
            bundle,
            epoch: plan.epoch,
        };
        let written = self
            .timings
            .spin("sbom", "Writing the SBOM", || sbom::write(target, &inputs))?;
        for unread in &written.unread {
            progress::note(&format!("Warning: the SBOM is incomplete: {unread}"));
        }
        Ok(Some(written))
    }

    /// `--provenance`: how the finished disk was made, written beside its own final name (and
    /// signed with `--sign-key`), to be renamed after the disk.
    pub fn provenance(&mut self, pending: &PendingOutput) -> Result<Option<provenance::Written>> {
        let (plan, input) = (self.plan, self.input);
        let Some(target) = &plan.provenance else {
            return Ok(None);
        };
        let name = self.disk_name()?;
        let sha256 = self.disk_sha256(pending)?;
        // The image the kernel came from, where it is not the source: a bundle that joined the
        // stream, or the template's layers built on the source.
        let bundle = (input.bundle.as_ref()).filter(|b| b.joined());
        let kernel = match (bundle, &input.template) {
            (Some(b), _) => Some(provenance::Dependency {
                name: b.name.clone(),
                id: b.id.clone(),
            }),
            (None, Some(id)) => Some(provenance::Dependency {
                name: format!("{} with c2vm's kernel template", input.identity.source),
                id: id.clone(),
            }),
            (None, None) => None,
        };
        let inputs = provenance::Inputs {
            name,
            sha256: &sha256,
            source: &input.identity.source,
            source_id: &input.identity.id,
            diff_ids: &input.identity.diff_ids,
            arch: input.arch,
            kernel,
            epoch: plan.epoch,
        };
        let written = provenance::write(target, &inputs)?;
        Ok(Some(written))
    }

    /// `layout`: a disk's (None for a live medium).
    pub fn report(
        &self,
        layout: Option<&Layout>,
        machine: &Machine,
        containerdisk: Option<&str>,
        outputs: (Option<&sbom::Summary>, Option<&provenance::Summary>),
    ) {
        let (sbom, provenance) = outputs;
        let (input, plan) = (self.input, self.plan);
        report::print(&Summary {
            output: &plan.output.path,
            format: plan.output.format,
            target: &plan.output,
            layout,
            ids: &self.ids,
            image: report::ImageIdentity {
                source: &input.identity.source,
                id: &input.identity.id,
                diff_ids: &input.identity.diff_ids,
            },
            json: plan.json,
            containerdisk,
            sbom,
            provenance,
            root_size: match layout {
                Some(layout) => layout.root.size,
                None => output::sizes(&self.raw).0,
            },
            kernel_version: &machine.kernel.version,
            timings: &self.timings,
            app: input.app,
            disabled_units: &machine.disabled,
            c2vm_init: machine.c2vm_init,
            secure_boot: machine.secure.summary(),
            arch: input.arch,
            login: machine.login.as_ref(),
            encrypted: plan.luks.is_some(),
        });
    }
}

/// The ESP's files: the guest's /boot, less what c2vm's loaders (and their Secure Boot chain)
/// put in the same place, then those.
fn esp_contents(
    plan: &DiskPlan,
    cfg: &BootConfig,
    edited: &Edited<Machine>,
    scratch: &Path,
) -> Result<Vec<esp::EspFile>> {
    let chain = edited.value.secure.chain();
    let loaders = boot::esp_files(plan.bootloader, cfg, chain, scratch)?;
    let (mut files, left_out) = boot::guest::boot_partition_files(&edited.tree);
    files.retain(|f| !loaders.iter().any(|l| l.path.eq_ignore_ascii_case(&f.path)));
    if !left_out.is_empty() {
        progress::note(&format!(
            "Note: /boot is the EFI system partition (FAT), which holds no symlinks or devices: left out {}",
            left_out.join(", ")
        ));
    }
    files.extend(loaders);
    Ok(files)
}

/// `--containerdisk`: the finished disk (under its temporary name) as KubeVirt's image.
fn package_containerdisk(
    input: &Input,
    plan: &DiskPlan,
    scratch: &Path,
    dest: &Destination,
    disk: &Path,
    kernel: &str,
    attachments: &[containerdisk::Attachment],
) -> Result<String> {
    let connected;
    let engine = match (dest.needs_engine(), input.engine) {
        (true, None) => {
            connected = Engine::connect()?;
            Some(&connected)
        }
        (_, engine) => engine,
    };
    let name = (plan.output.path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .context("the output has no file name")?;
    let origin = containerdisk::Origin {
        source: &input.identity.source,
        digest: &input.identity.id,
        kernel,
        arch: input.arch,
    };
    let said = containerdisk::package(
        disk,
        &name,
        dest,
        &origin,
        &input.access,
        engine,
        scratch,
        plan.epoch,
        attachments,
    )?;
    progress::note(&format!("The containerDisk is {said}"));
    Ok(said)
}
