//! Where everything goes on the disk. All partitions start and end on 1 MiB boundaries.
use super::ext4;
use crate::rootfs::usage::TreeUsage;
use crate::units::{parse_size, MIB};
use anyhow::{bail, Context, Result};

pub const SECTOR: u64 = 512;
/// Space before the first partition: protective MBR, primary GPT header and entries, and room to
/// align to 1 MiB as every partitioning tool does.
pub const HEAD: u64 = MIB;
/// Space after the last partition: the backup GPT (33 sectors), rounded to keep the root aligned.
pub const TAIL: u64 = MIB;
/// GRUB's BIOS-boot partition, holding core.img (GRUB option only).
pub const BIOS_BOOT_SIZE: u64 = MIB;

/// `--size`: what the files need plus headroom, or a fixed whole-disk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SizeRequest {
    Auto,
    Bytes(u64),
}

impl SizeRequest {
    pub fn parse(text: &str) -> Result<SizeRequest> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(SizeRequest::Auto);
        }
        parse_size(text)
            .map(SizeRequest::Bytes)
            .context("--size takes `auto` or a size such as 4G, 1536M, 2GiB")
    }
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub bios_boot: Option<Extent>,
    pub esp: Extent,
    /// The root partition.
    pub root: Extent,
    /// Bytes at the root partition's start before its filesystem: an encrypted root's LUKS2
    /// header, else none.
    pub luks_header: u64,
}

impl Layout {
    /// The layout for a root filesystem holding `usage`, as `--size` asks. A fixed size that
    /// cannot hold the files fails here, naming the smallest that fits; sources call this from
    /// tar headers alone, before unpacking, so the answer comes in seconds.
    pub fn plan(
        usage: &TreeUsage,
        size: SizeRequest,
        esp_size: u64,
        bios_boot: bool,
        luks_header: u64,
    ) -> Result<Layout> {
        let min_root = ext4::min_fs_size(usage);
        match size {
            SizeRequest::Auto => Self::for_root(
                ext4::auto_fs_size(usage) + luks_header,
                esp_size,
                bios_boot,
                luks_header,
            ),
            SizeRequest::Bytes(bytes) => {
                let smallest =
                    Self::for_root(min_root + luks_header, esp_size, bios_boot, luks_header)?
                        .disk_size;
                if bytes < smallest {
                    let header = match luks_header {
                        0 => String::new(),
                        h => format!(" + {} MiB LUKS2 header", h / MIB),
                    };
                    bail!(
                        "--size {} MiB is too small: these files need a disk of at least {} MiB ({} MiB root filesystem{header} + {} MiB ESP and tables); use --size {}M or more, or --size auto",
                        bytes / MIB, smallest / MIB, min_root / MIB, (smallest - min_root - luks_header) / MIB, smallest / MIB
                    );
                }
                Self::for_disk(bytes, esp_size, bios_boot, luks_header)
            }
        }
    }

    /// Bytes the disk needs besides the root partition.
    pub fn overhead(esp_size: u64, bios_boot: bool) -> u64 {
        HEAD + TAIL + esp_size + if bios_boot { BIOS_BOOT_SIZE } else { 0 }
    }

    /// The layout for a whole disk of `disk_size` bytes (rounded down to 1 MiB); the root fills
    /// what is left after the ESP.
    pub fn for_disk(
        disk_size: u64,
        esp_size: u64,
        bios_boot: bool,
        luks_header: u64,
    ) -> Result<Layout> {
        let disk_size = disk_size / MIB * MIB;
        let overhead = Self::overhead(esp_size, bios_boot) + luks_header;
        if disk_size <= overhead {
            let header = match luks_header {
                0 => String::new(),
                h => format!(" and its {} MiB LUKS2 header", h / MIB),
            };
            bail!(
                "a disk of {} MiB leaves no room for the root partition{header}; use a larger --size",
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
            luks_header,
        })
    }

    /// Where the root filesystem is: the root partition after its header.
    pub fn filesystem(&self) -> Extent {
        Extent {
            start: self.root.start + self.luks_header,
            size: self.root.size - self.luks_header,
        }
    }

    /// The layout whose root partition is `root_size` bytes (rounded up to 1 MiB).
    pub fn for_root(
        root_size: u64,
        esp_size: u64,
        bios_boot: bool,
        luks_header: u64,
    ) -> Result<Layout> {
        let root_size = root_size.div_ceil(MIB) * MIB;
        Self::for_disk(
            root_size + Self::overhead(esp_size, bios_boot),
            esp_size,
            bios_boot,
            luks_header,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_aligned_and_leaves_room_for_backup_gpt() {
        let l = Layout::for_disk(2 << 30, 256 * MIB, false, 0).unwrap();
        assert_eq!(l.esp.start, MIB);
        assert_eq!(l.esp.first_lba(), 2048);
        assert_eq!(l.root.start, 257 * MIB);
        assert_eq!((l.root.start + l.root.size), (2 << 30) - MIB);
        assert!(l.disk_size - (l.root.start + l.root.size) >= 33 * SECTOR);
        for e in [l.esp, l.root] {
            assert_eq!(e.start % MIB, 0);
            assert_eq!(e.size % MIB, 0);
        }
    }

    #[test]
    fn grub_layout_puts_bios_boot_first() {
        let l = Layout::for_root(700 * MIB + 1, 256 * MIB, true, 0).unwrap();
        assert_eq!(l.bios_boot.unwrap().start, MIB);
        assert_eq!(l.esp.start, 2 * MIB);
        assert_eq!(l.root.size, 701 * MIB);
        assert_eq!(l.disk_size, 701 * MIB + 256 * MIB + 3 * MIB);
    }

    #[test]
    fn odd_sizes_round_down_and_tiny_disks_fail() {
        let l = Layout::for_disk(1000 * MIB + 12345, 256 * MIB, false, 0).unwrap();
        assert_eq!(l.disk_size, 1000 * MIB);
        let err = Layout::for_disk(200 * MIB, 256 * MIB, false, 0).unwrap_err();
        assert!(err.to_string().contains("no room for the root"), "{err}");
    }

    #[test]
    fn a_fixed_size_too_small_names_the_smallest_that_fits() {
        let usage = TreeUsage {
            blocks: 100_000,
            inodes: 10_000,
        };
        let auto = Layout::plan(&usage, SizeRequest::Auto, 256 * MIB, false, 0).unwrap();
        assert!(auto.root.size > ext4::min_fs_size(&usage));
        let err = Layout::plan(&usage, SizeRequest::Bytes(300 * MIB), 256 * MIB, false, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is too small") && err.contains("use --size"),
            "{err}"
        );
        let fits = Layout::plan(&usage, SizeRequest::Bytes(2 << 30), 256 * MIB, false, 0).unwrap();
        assert_eq!(fits.disk_size, 2 << 30);
        assert_eq!(SizeRequest::parse("auto").unwrap(), SizeRequest::Auto);
        let err = format!("{:#}", SizeRequest::parse("lots").unwrap_err());
        assert!(err.contains("--size takes `auto`"), "{err}");
    }
}
