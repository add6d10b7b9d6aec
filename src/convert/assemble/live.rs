//! A live medium after the source (`--format iso` or `pxe`): the root as squashfs from the same
//! edited stream a disk's ext4 takes, the UEFI boot image (the ESP a disk would have, as a file
//! of its own), GRUB's BIOS stage for the ISO, then the medium itself. `pipeline` calls these in
//! place of the disk's root, encryption, ESP and format steps.
use super::{esp_contents, Build};
use crate::boot::{self, guest::Machine};
use crate::disk::{esp, root};
use crate::output::{iso, pxe, DiskFormat, PendingOutput};
use crate::progress;
use crate::rootfs::edit::Edited;
use crate::rootfs::tree::GuestTree;
use anyhow::{Context, Result};

impl Build<'_, '_> {
    /// The squashfs root from the stream, with guest setup (for a live system) as it ends.
    pub fn live_root(&mut self) -> Result<Edited<Machine>> {
        let (plan, input) = (self.plan, self.input);
        let spec = self.machine_spec();
        let policy = boot::guest::edit_policy(plan.epoch, plan.sbom.is_some());
        let setup = |guest: &mut GuestTree| boot::guest::make(guest, &spec);
        let out = self.raw.clone();
        let edited = self.timings.spin(
            "rootfs",
            "Writing the root (image stream → tar2sqfs)",
            || root::write_squashfs(&input.root, &policy, &out, plan.epoch, &setup),
        )?;
        for line in &edited.notes {
            progress::note(line);
        }
        Ok(edited)
    }

    /// The medium from the squashfs root: the ISO, or the network boot set.
    pub fn medium(&mut self, pending: &PendingOutput, edited: &Edited<Machine>) -> Result<()> {
        let plan = self.plan;
        let cfg = self.boot_config(&edited.value);
        let scratch = self.workspace.scratch().to_path_buf();
        match plan.output.format {
            DiskFormat::Pxe => {
                let tree = &edited.tree;
                let file = |path: &str| {
                    tree.contents(path.trim_start_matches('/').as_bytes())
                        .with_context(|| format!("{path} was not kept from the stream"))
                };
                let kernel = &edited.value.kernel;
                let (image, initrd) = (file(&kernel.kernel)?, file(&kernel.initrd)?);
                let parts = pxe::Parts {
                    kernel: &image,
                    initrd: &initrd,
                    root: &self.raw,
                    cmdline: &cfg.cmdline,
                };
                self.timings
                    .spin("pxe", "Writing the network boot set", || {
                        pxe::write(pending.path(), &parts, plan.epoch)
                    })
            }
            _ => {
                let uefi = scratch.join("efi.img");
                let volume = self.ids.esp_volume;
                self.timings
                    .spin("esp", "Writing the UEFI boot image", || {
                        let files = esp_contents(plan, &cfg, edited, &scratch)?;
                        esp::write_image(&uefi, volume, files, plan.epoch)
                    })?;
                let label = self.ids.live_label();
                let bios = scratch.join("bios.img");
                let has_bios = self.input.arch.has_bios();
                if has_bios {
                    let marker = iso::marker(&label);
                    boot::grub::eltorito_image(&cfg, &marker, iso::UEFI_IMAGE_ON_MEDIUM, &bios)?;
                }
                let marker = scratch.join("marker");
                std::fs::write(&marker, "A c2vm live medium.\n")
                    .with_context(|| format!("writing {}", marker.display()))?;
                let parts = iso::Parts {
                    label: &label,
                    root: &self.raw,
                    uefi_image: &uefi,
                    bios_image: has_bios.then_some(bios.as_path()),
                    marker: &marker,
                    arch: self.input.arch,
                };
                self.timings.spin("iso", "Writing the ISO (xorriso)", || {
                    iso::write(pending.path(), &parts, plan.epoch)
                })
            }
        }
    }
}
