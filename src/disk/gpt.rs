//! The GUID partition table (crate `gpt`) and the protective MBR carrying BIOS boot code.
use super::layout::{Extent, Layout};
use crate::arch::Arch;
use anyhow::{anyhow, bail, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::partition::PartitionAttributes;
use gpt::partition_types;
use std::fs::File;
use uuid::Uuid;

/// Partition numbers. The root stays partition 2 whatever the boot loader, so tools that grow it
/// on first boot always find it in the same place.
pub const ESP_PARTITION: u32 = 1;
pub const ROOT_PARTITION: u32 = 2;
pub const BIOS_BOOT_PARTITION: u32 = 3;

/// The GUIDs written into the table, chosen up front (random for now: the disk GUIDs do not follow SOURCE_DATE_EPOCH yet).
#[derive(Debug, Clone, Copy)]
pub struct DiskIds {
    pub disk: Uuid,
    pub esp: Uuid,
    pub root: Uuid,
    pub bios_boot: Uuid,
}

impl DiskIds {
    pub fn random() -> DiskIds {
        DiskIds {
            disk: Uuid::new_v4(),
            esp: Uuid::new_v4(),
            root: Uuid::new_v4(),
            bios_boot: Uuid::new_v4(),
        }
    }
}

fn gpt_err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Write primary and backup GPT and the protective MBR (with `bootcode` in its first 440 bytes).
/// The file must already have its final length: the backup header goes at its end.
pub fn write_table(
    file: &mut File,
    layout: &Layout,
    ids: &DiskIds,
    arch: Arch,
    bootcode: &[u8; 440],
) -> Result<()> {
    let root_type = partition_types::Type {
        guid: uuid::Uuid::parse_str(arch.root_partition_type())
            .context("the root partition type")?,
        os: partition_types::OperatingSystem::Linux,
    };
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(ids.disk))
        .map_err(gpt_err)
        .context("creating the GPT")?;
    disk.add_partition_at(
        "EFI system partition",
        ESP_PARTITION,
        layout.esp.first_lba(),
        layout.esp.sectors(),
        partition_types::EFI,
        // SYSLINUX's gptmbr.bin boots the partition with the legacy-BIOS-bootable attribute.
        PartitionAttributes::BOOTABLE.bits(),
    )
    .map_err(gpt_err)
    .context("adding the EFI system partition")?;
    disk.add_partition_at(
        "root",
        ROOT_PARTITION,
        layout.root.first_lba(),
        layout.root.sectors(),
        root_type,
        0,
    )
    .map_err(gpt_err)
    .context("adding the root partition")?;
    if let Some(bios) = layout.bios_boot {
        disk.add_partition_at(
            "BIOS boot",
            BIOS_BOOT_PARTITION,
            bios.first_lba(),
            bios.sectors(),
            partition_types::BIOS,
            0,
        )
        .map_err(gpt_err)
        .context("adding the BIOS boot partition")?;
    }
    // add_partition_at picks random partition GUIDs: put ours in.
    let mut parts = disk.take_partitions();
    for (id, part) in parts.iter_mut() {
        part.part_guid = match *id {
            ESP_PARTITION => ids.esp,
            ROOT_PARTITION => ids.root,
            _ => ids.bios_boot,
        };
    }
    disk.update_partitions(parts)
        .map_err(gpt_err)
        .context("setting partition GUIDs")?;
    disk.write().map_err(gpt_err).context("writing the GPT")?;

    let sectors = layout.disk_size / super::layout::SECTOR;
    let mut mbr =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    // The boot code must be on the struct: overwrite_lba0 writes all 512 bytes.
    mbr.set_bootcode(*bootcode);
    mbr.overwrite_lba0(&mut *file)
        .map_err(gpt_err)
        .context("writing the protective MBR")?;
    Ok(())
}

/// How many bytes [`root_partition`] reads: the protective MBR, the GPT header and 128 entries.
pub const TABLE_BYTES: usize = 34 * 512;

/// The architecture whose root partition type the disk's primary GPT holds, and that partition's
/// first byte on the disk, from the disk's first [`TABLE_BYTES`] (a qcow2 disk's are read
/// through qemu-img without converting the rest).
pub fn root_partition(table: &[u8]) -> Result<(Arch, u64)> {
    for (guid, extent) in entries(table)? {
        if let Some(arch) = Arch::of_root_partition_type(&guid) {
            return Ok((arch, extent.start));
        }
    }
    bail!("the disk has no Linux root partition of a type c2vm knows (x86-64 or arm64); was it made by c2vm?")
}

/// Where the EFI system partition is, from the disk's first [`TABLE_BYTES`] (as
/// [`root_partition`]).
pub fn esp_partition(table: &[u8]) -> Result<Extent> {
    let esp = partition_types::EFI.guid.to_string();
    entries(table)?
        .find(|(guid, _)| guid.eq_ignore_ascii_case(&esp))
        .map(|(_, extent)| extent)
        .context("the disk has no EFI system partition; was it made by c2vm?")
}

/// The primary GPT's entries in `table`: each one's type GUID and where it lies.
fn entries(table: &[u8]) -> Result<impl Iterator<Item = (String, Extent)> + '_> {
    let header = table
        .get(512..512 + 92)
        .filter(|h| h.starts_with(b"EFI PART"))
        .context("the disk has no GPT; was it made by c2vm?")?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (count, size) = (u32_at(80) as usize, u32_at(84) as usize);
    let first = 1024;
    let u64_at = |entry: &[u8], at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&entry[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok((0..count.min(128))
        .map_while(move |i| table.get(first + i * size..first + i * size + 48))
        .map(move |entry| {
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&entry[..16]);
            let guid = uuid::Uuid::from_bytes_le(guid).to_string();
            let (first_lba, last_lba) = (u64_at(entry, 32), u64_at(entry, 40));
            let sector = super::layout::SECTOR;
            let extent = Extent {
                start: first_lba * sector,
                size: (last_lba + 1).saturating_sub(first_lba) * sector,
            };
            (guid, extent)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    #[test]
    fn an_arm64_disk_says_so_by_its_root_type() {
        let mut file = tempfile::tempfile().unwrap();
        let layout = Layout::for_disk(600 * MIB, 256 * MIB, false, 0).unwrap();
        file.set_len(layout.disk_size).unwrap();
        write_table(
            &mut file,
            &layout,
            &DiskIds::random(),
            Arch::Arm64,
            &[0; 440],
        )
        .unwrap();
        let mut table = vec![0u8; TABLE_BYTES];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut table, 0).unwrap();
        assert_eq!(
            root_partition(&table).unwrap(),
            (Arch::Arm64, layout.root.start)
        );
        write_table(
            &mut file,
            &layout,
            &DiskIds::random(),
            Arch::Amd64,
            &[0; 440],
        )
        .unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut table, 0).unwrap();
        assert_eq!(root_partition(&table).unwrap().0, Arch::Amd64);
        assert!(root_partition(&[0u8; TABLE_BYTES]).is_err());
    }

    #[test]
    fn table_reads_back_with_our_guids_and_boot_code() {
        let mut file = tempfile::tempfile().unwrap();
        let layout = Layout::for_disk(600 * MIB, 256 * MIB, false, 0).unwrap();
        file.set_len(layout.disk_size).unwrap();
        let ids = DiskIds::random();
        let mut code = [0u8; 440];
        code[0] = 0x33;
        code[439] = 0x99;
        write_table(&mut file, &layout, &ids, Arch::Amd64, &code).unwrap();
        let disk = gpt::GptConfig::new()
            .writable(false)
            .open_from_device(&mut file)
            .unwrap();
        assert_eq!(*disk.guid(), ids.disk);
        let parts = disk.partitions();
        assert_eq!(parts[&1].part_guid, ids.esp);
        assert_eq!(parts[&1].first_lba, 2048);
        assert_eq!(parts[&1].flags & 4, 4);
        assert_eq!(parts[&2].part_type_guid, partition_types::LINUX_ROOT_X64);
        assert_eq!(
            parts[&2].last_lba + 1,
            (layout.root.start + layout.root.size) / 512
        );
        drop(disk);
        use std::os::unix::fs::FileExt;
        let mut table = vec![0u8; TABLE_BYTES];
        file.read_exact_at(&mut table, 0).unwrap();
        assert_eq!(esp_partition(&table).unwrap(), layout.esp);
        assert!(esp_partition(&[0u8; TABLE_BYTES]).is_err());
        let mut lba0 = [0u8; 512];
        file.read_exact_at(&mut lba0, 0).unwrap();
        assert_eq!(
            (lba0[0], lba0[439], lba0[450], lba0[510], lba0[511]),
            (0x33, 0x99, 0xEE, 0x55, 0xAA)
        );
    }
}
