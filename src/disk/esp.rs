//! The EFI system partition: FAT32 written with `lamfat` (the fixed 0.4 line of `fatfs`; 0.3.6
//! writes directories fsck.fat rejects) straight into the image through a partition window.
use super::layout::Extent;
use super::window::PartitionWindow;
use crate::units::MIB;
use anyhow::{anyhow, Context, Result};
use std::fs::File;
use std::io::Read;

/// One file to put on the ESP.
pub struct EspFile {
    /// Path on the ESP, `/`-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub contents: Box<dyn Read>,
}

impl EspFile {
    pub fn bytes(path: &str, data: impl Into<Vec<u8>>) -> EspFile {
        EspFile {
            path: path.to_string(),
            contents: Box::new(std::io::Cursor::new(data.into())),
        }
    }

    pub fn host_file(path: &str, host: &std::path::Path) -> Result<EspFile> {
        let file = File::open(host).with_context(|| format!("opening {}", host.display()))?;
        Ok(EspFile {
            path: path.to_string(),
            contents: Box::new(file),
        })
    }
}

/// The volume id as Linux shows it in /dev/disk/by-uuid and fstab: `ABCD-1234`.
pub fn volume_uuid(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xFFFF)
}

/// FAT32 needs at least 65525 clusters (mtools, which `syslinux` uses, and firmware tell FAT16
/// from FAT32 by the count). The largest cluster that leaves them, with room for the two FATs:
/// fewer, larger clusters are fewer FAT updates (2 KiB at the default 256 MiB writes the ESP
/// about twice as fast as 512 bytes did). Large ESPs get 4 KiB clusters.
fn cluster_size(esp_size: u64) -> u32 {
    const MIN_CLUSTERS: u64 = 65525 + 65525 / 20;
    if esp_size > 1024 * MIB {
        return 4096;
    }
    [2048, 1024]
        .into_iter()
        .find(|c| esp_size / u64::from(*c) >= MIN_CLUSTERS)
        .unwrap_or(512)
}

fn fat_err<E: std::fmt::Debug>(e: lamfat::Error<E>) -> anyhow::Error {
    anyhow!("{e:?}")
}

/// Timestamps for FAT entries: SOURCE_DATE_EPOCH when set (reproducible builds), else now (UTC).
#[derive(Debug, Clone, Copy)]
struct FixedTime {
    unix: i64,
}

impl FixedTime {
    fn new(epoch: Option<i64>) -> FixedTime {
        let unix = epoch.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        // FAT dates start in 1980.
        FixedTime {
            unix: unix.max(315_532_800),
        }
    }

    fn parts(&self) -> (u16, u16, u16, u16, u16, u16) {
        let days = self.unix.div_euclid(86_400);
        let secs = self.unix.rem_euclid(86_400);
        let (y, m, d) = crate::units::civil_from_days(days);
        (
            y as u16,
            m as u16,
            d as u16,
            (secs / 3600) as u16,
            (secs % 3600 / 60) as u16,
            (secs % 60) as u16,
        )
    }
}

impl lamfat::TimeProvider for FixedTime {
    fn get_current_date(&self) -> lamfat::Date {
        let (y, m, d, ..) = self.parts();
        lamfat::Date::new(y, m, d)
    }
    fn get_current_date_time(&self) -> lamfat::DateTime {
        let (y, mo, d, h, mi, s) = self.parts();
        lamfat::DateTime::new(
            lamfat::Date::new(y, mo, d),
            lamfat::Time::new(h, mi, s & !1, 0),
        )
    }
}

/// Format the ESP at `extent` of `image` and write `files` into it, dated `epoch` (else now).
pub fn write(
    image: &File,
    extent: Extent,
    volume_id: u32,
    files: Vec<EspFile>,
    epoch: Option<i64>,
) -> Result<()> {
    let options = lamfat::FormatVolumeOptions::new()
        .fat_type(lamfat::FatType::Fat32)
        .bytes_per_cluster(cluster_size(extent.size))
        .volume_id(volume_id)
        .volume_label(*b"ESP        ");
    write_volume(
        image,
        extent,
        options,
        files,
        epoch,
        "the EFI system partition",
    )
}

/// A live medium's UEFI boot image: the same FAT32 ESP as a disk's, in a file of its own at
/// `path`, sized to hold `files` (El Torito and the USB stick's partition table point at it).
/// Returns its size.
pub fn write_image(
    path: &std::path::Path,
    volume_id: u32,
    files: Vec<EspFile>,
    epoch: Option<i64>,
) -> Result<u64> {
    let mut loaded = Vec::with_capacity(files.len());
    let mut bytes = 0;
    for mut file in files {
        let mut data = Vec::new();
        (file.contents.read_to_end(&mut data))
            .with_context(|| format!("reading {} for the boot image", file.path))?;
        bytes += (data.len() as u64).div_ceil(4096) * 4096;
        loaded.push(EspFile::bytes(&file.path, data));
    }
    // FAT32 needs 65525 clusters: at least 33 MiB of 512-byte ones. Then room for the two FATs
    // and the directories.
    let size = (bytes + bytes / 16 + 4 * MIB).max(40 * MIB).div_ceil(MIB) * MIB;
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    image
        .set_len(size)
        .with_context(|| format!("sizing {}", path.display()))?;
    write(&image, Extent { start: 0, size }, volume_id, loaded, epoch)?;
    image
        .sync_all()
        .with_context(|| format!("flushing {}", path.display()))?;
    Ok(size)
}

/// A small FAT volume labelled `label` (FAT12 or FAT16, as its size asks) holding `files` at
/// its root: a cloud-init NoCloud seed is one, labelled `CIDATA`.
pub fn write_small_volume(
    image: &File,
    size: u64,
    label: [u8; 11],
    files: Vec<EspFile>,
) -> Result<()> {
    let options = lamfat::FormatVolumeOptions::new().volume_label(label);
    let extent = Extent { start: 0, size };
    let name = String::from_utf8_lossy(&label).trim_end().to_string();
    write_volume(
        image,
        extent,
        options,
        files,
        None,
        &format!("the {name} volume"),
    )
}

/// Format the FAT volume at `extent` with `options`, then write `files` into it.
fn write_volume(
    image: &File,
    extent: Extent,
    options: lamfat::FormatVolumeOptions,
    files: Vec<EspFile>,
    epoch: Option<i64>,
    volume: &str,
) -> Result<()> {
    let mut window = PartitionWindow::new(image, extent.start, extent.size);
    lamfat::format_volume(&mut lamfat::StdIoWrapper::new(&mut window), options)
        .map_err(fat_err)
        .with_context(|| format!("formatting {volume}"))?;
    std::io::Seek::rewind(&mut window)?;
    let fs = lamfat::FileSystem::new(
        window,
        lamfat::FsOptions::new().time_provider(FixedTime::new(epoch)),
    )
    .map_err(fat_err)
    .with_context(|| format!("opening the new {volume}"))?;
    {
        let root = fs.root_dir();
        for mut file in files {
            crate::interrupt::check()?;
            let parts: Vec<&str> = file.path.split('/').filter(|p| !p.is_empty()).collect();
            let (name, dirs) = parts
                .split_last()
                .ok_or_else(|| anyhow!("empty ESP path"))?;
            let mut dir = root.clone();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(existing) => existing,
                    Err(_) => dir
                        .create_dir(d)
                        .map_err(fat_err)
                        .with_context(|| format!("creating {d} on {volume}"))?,
                };
            }
            let mut out = dir
                .create_file(name)
                .map_err(fat_err)
                .with_context(|| format!("creating {} on {volume}", file.path))?;
            out.truncate().map_err(fat_err)?;
            std::io::copy(&mut file.contents, &mut out).with_context(|| {
                format!(
                    "writing {} on {volume} (is it large enough? see --esp-size)",
                    file.path
                )
            })?;
        }
    }
    fs.unmount()
        .map_err(fat_err)
        .with_context(|| format!("closing {volume}"))?;
    Ok(())
}

/// Read whole files (`/`-separated paths) from the FAT ESP at `extent` of `image`.
pub fn read_files(image: &File, extent: Extent, paths: &[&str]) -> Result<Vec<Vec<u8>>> {
    let window = PartitionWindow::new(image, extent.start, extent.size);
    let fs = lamfat::FileSystem::new(window, lamfat::FsOptions::new())
        .map_err(fat_err)
        .context("opening the EFI system partition")?;
    let root = fs.root_dir();
    paths
        .iter()
        .map(|path| {
            let mut data = Vec::new();
            root.open_file(path)
                .map_err(fat_err)
                .with_context(|| format!("opening {path} on the EFI system partition"))?
                .read_to_end(&mut data)
                .with_context(|| format!("reading {path} on the EFI system partition"))?;
            Ok(data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        let t = FixedTime {
            unix: 1_700_000_000,
        };
        assert_eq!(t.parts(), (2023, 11, 14, 22, 13, 20));
    }

    #[test]
    fn clusters_are_as_large_as_fat32_allows() {
        assert_eq!(cluster_size(64 * MIB), 512);
        assert_eq!(cluster_size(128 * MIB), 1024);
        assert_eq!(cluster_size(256 * MIB), 2048);
        assert_eq!(cluster_size(2048 * MIB), 4096);
        for size in [64, 100, 128, 200, 256, 512, 1024] {
            let size = size * MIB;
            assert!(
                size / u64::from(cluster_size(size)) > 65525 + 65525 / 20,
                "{size}"
            );
        }
    }

    #[test]
    fn volume_uuid_format() {
        assert_eq!(volume_uuid(0xABCD_1234), "ABCD-1234");
        assert_eq!(volume_uuid(0x0000_00FF), "0000-00FF");
    }

    #[test]
    fn esp_round_trips_files() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(300 * MIB).unwrap();
        let extent = Extent {
            start: MIB,
            size: 256 * MIB,
        };
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write(
            &file,
            extent,
            0x1234_5678,
            vec![
                EspFile::bytes("vmlinuz", big.clone()),
                EspFile::bytes("EFI/BOOT/BOOTX64.EFI", b"efi".to_vec()),
                EspFile::bytes("loader/entries/c2vm.conf", b"title c2vm\n".to_vec()),
            ],
            Some(1_700_000_000),
        )
        .unwrap();
        let window = PartitionWindow::new(&file, extent.start, extent.size);
        let fs = lamfat::FileSystem::new(window, lamfat::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), lamfat::FatType::Fat32);
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut fs.root_dir().open_file("vmlinuz").unwrap(), &mut back)
            .unwrap();
        assert_eq!(back, big);
        assert!(fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").is_ok());
        drop(fs);
        let read = read_files(&file, extent, &["vmlinuz", "loader/entries/c2vm.conf"]).unwrap();
        assert_eq!(read, vec![big, b"title c2vm\n".to_vec()]);
        let err = format!("{:#}", read_files(&file, extent, &["nope"]).unwrap_err());
        assert!(
            err.contains("opening nope on the EFI system partition"),
            "{err}"
        );
    }
}
