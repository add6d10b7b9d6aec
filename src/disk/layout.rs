//! Where everything goes on the disk. All partitions start and end on 1 MiB boundaries.
use crate::plan::MIB;
use anyhow::{bail, Result};

pub const SECTOR: u64 = 512;
/// Space before the first partition: protective MBR, primary GPT header and entries, and room to
/// align to 1 MiB as every partitioning tool does.
pub const HEAD: u64 = MIB;
/// Space after the last partition: the backup GPT (33 sectors), rounded to keep the root aligned.
pub const TAIL: u64 = MIB;
/// GRUB's BIOS-boot partition, holding core.img (GRUB option only).
pub const BIOS_BOOT_SIZE: u64 = MIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset from the start of the disk.
    pub start: u64,
    pub size: u64,
}

impl Extent {
    pub fn first_lba(&self) -> u64 {
        self.start / SECTOR
    }
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub bios_boot: Option<Extent>,
    pub esp: Extent,
    pub root: Extent,
}

impl Layout {
    /// Bytes the disk needs besides the root partition.
    pub fn overhead(esp_size: u64, bios_boot: bool) -> u64 {
        HEAD + TAIL + esp_size + if bios_boot { BIOS_BOOT_SIZE } else { 0 }
    }

    /// The layout for a whole disk of `disk_size` bytes (rounded down to 1 MiB); the root fills
    /// what is left after the ESP.
    pub fn for_disk(disk_size: u64, esp_size: u64, bios_boot: bool) -> Result<Layout> {
        let disk_size = disk_size / MIB * MIB;
        let overhead = Self::overhead(esp_size, bios_boot);
        if disk_size <= overhead {
            bail!(
                "a disk of {} MiB leaves no room for the root partition",
                disk_size / MIB
            );
        }
        let mut next = HEAD;
        let bios_boot = bios_boot.then(|| {
            let e = Extent {
                start: next,
                size: BIOS_BOOT_SIZE,
            };
            next += BIOS_BOOT_SIZE;
            e
        });
        let esp = Extent {
            start: next,
            size: esp_size,
        };
        next += esp_size;
        let root = Extent {
            start: next,
            size: disk_size - TAIL - next,
        };
        Ok(Layout {
            disk_size,
            bios_boot,
            esp,
            root,
        })
    }

    /// The layout whose root partition is `root_size` bytes (rounded up to 1 MiB).
    pub fn for_root(root_size: u64, esp_size: u64, bios_boot: bool) -> Result<Layout> {
        let root_size = root_size.div_ceil(MIB) * MIB;
        Self::for_disk(
            root_size + Self::overhead(esp_size, bios_boot),
            esp_size,
            bios_boot,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_aligned_and_leaves_room_for_backup_gpt() {
        let l = Layout::for_disk(2 << 30, 256 * MIB, false).unwrap();
        assert_eq!(l.esp.start, MIB);
        assert_eq!(l.esp.first_lba(), 2048);
        assert_eq!(l.root.start, 257 * MIB);
        assert_eq!(l.root.end(), (2 << 30) - MIB);
        assert!(l.disk_size - l.root.end() >= 33 * SECTOR);
        for e in [l.esp, l.root] {
            assert_eq!(e.start % MIB, 0);
            assert_eq!(e.size % MIB, 0);
        }
    }

    #[test]
    fn grub_layout_puts_bios_boot_first() {
        let l = Layout::for_root(700 * MIB + 1, 256 * MIB, true).unwrap();
        assert_eq!(l.bios_boot.unwrap().start, MIB);
        assert_eq!(l.esp.start, 2 * MIB);
        assert_eq!(l.root.size, 701 * MIB);
        assert_eq!(l.disk_size, 701 * MIB + 256 * MIB + 3 * MIB);
    }

    #[test]
    fn odd_sizes_round_down_and_tiny_disks_fail() {
        let l = Layout::for_disk(1000 * MIB + 12345, 256 * MIB, false).unwrap();
        assert_eq!(l.disk_size, 1000 * MIB);
        assert!(Layout::for_disk(200 * MIB, 256 * MIB, false).is_err());
    }
}
