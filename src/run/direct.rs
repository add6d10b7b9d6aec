//! `c2vm run --direct-kernel` and `--boot-log`: boot the disk's own kernel and initramfs directly
//! (QEMU `-kernel`) with the command line its loaders give, for `--boot-log` minus what quiets
//! the console, so the kernel's and systemd's messages show again. The disk's boot loaders are
//! skipped for this one boot; nothing on the disk changes.
use super::disk_probe;
use super::qemu_args::KernelBoot;
use crate::boot::texts;
use crate::disk::layout::Extent;
use crate::disk::{esp, gpt};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

/// Where the boot loaders find the kernel command line on c2vm's ESP.
const CMDLINE_FILES: &[&str] = &[crate::boot::CMDLINE_ON_ESP, "loader/entries/c2vm.conf"];

/// Kernel, initramfs and command line taken from a disk, in a private directory.
pub struct DirectBoot {
    _dir: tempfile::TempDir,
    pub boot: KernelBoot,
}

impl DirectBoot {
    /// `verbose_console`: the command line with every console message on (`--boot-log`).
    pub fn from_disk(disk: &Path, format: &str, verbose_console: bool) -> Result<DirectBoot> {
        let dir = tempfile::Builder::new()
            .prefix("c2vm-direct-boot.")
            .tempdir()
            .context("creating a directory for the kernel")?;
        let (esp_image, extent) = open_esp(disk, format, dir.path())?;
        let read =
            |path: &str| esp::read_files(&esp_image, extent, &[path]).map(|mut v| v.remove(0));
        let cmdline = CMDLINE_FILES
            .iter()
            .find_map(|path| read(path).ok().map(|bytes| (*path, bytes)))
            .map(|(path, bytes)| parse_cmdline(path, &String::from_utf8_lossy(&bytes)))
            .context(
                "the disk's ESP holds no kernel command line (c2vm/cmdline); was it made by c2vm?",
            )??;
        // Disks from earlier c2vm versions keep the kernel under fixed names, with no record of them.
        let names = read(crate::boot::KERNEL_NAMES_ON_ESP)
            .ok()
            .and_then(|text| texts::parse_kernel_names(&String::from_utf8_lossy(&text)))
            .unwrap_or_else(|| texts::KernelNames {
                kernel: "vmlinuz".to_string(),
                initrd: "initrd.img".to_string(),
            });
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        for (on_esp, host) in [(&names.kernel, &kernel), (&names.initrd, &initrd)] {
            std::fs::write(host, read(on_esp)?)
                .with_context(|| format!("writing {}", host.display()))?;
        }
        drop(esp_image);
        std::fs::remove_file(dir.path().join(ESP_COPY)).ok();
        Ok(DirectBoot {
            _dir: dir,
            boot: KernelBoot {
                kernel,
                initrd,
                cmdline: match verbose_console {
                    true => verbose(&cmdline),
                    false => cmdline,
                },
            },
        })
    }
}

/// The raw copy of a non-raw disk's ESP, in the direct boot's directory until its files are out.
const ESP_COPY: &str = "esp.raw";

/// The disk's ESP as raw bytes, and where in that file it lies: a raw disk's in place, another
/// format's copied out of it alone, by the same window reader that reads its partition table.
fn open_esp(disk: &Path, format: &str, dir: &Path) -> Result<(File, Extent)> {
    let table = disk_probe::read_at(
        disk,
        format,
        0,
        gpt::TABLE_BYTES as u64,
        "the disk's partition table",
    )?;
    let extent = gpt::esp_partition(&table)?;
    if format == "raw" {
        let file = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
        return Ok((file, extent));
    }
    let copy = dir.join(ESP_COPY);
    disk_probe::copy_window(
        disk,
        format,
        extent.start,
        extent.size,
        &copy,
        "the disk's boot files",
    )?;
    let file = File::open(&copy).with_context(|| format!("opening {}", copy.display()))?;
    Ok((
        file,
        Extent {
            start: 0,
            size: extent.size,
        },
    ))
}

/// The command line from `c2vm/cmdline` (the whole file) or a systemd-boot entry (`options`).
fn parse_cmdline(path: &str, text: &str) -> Result<String> {
    let line = if path.ends_with(".conf") {
        text.lines()
            .find_map(|l| l.strip_prefix("options "))
            .unwrap_or("")
    } else {
        text.trim()
    };
    if line.trim().is_empty() {
        bail!("{path} on the disk's ESP holds no kernel command line");
    }
    Ok(line.trim().to_string())
}

/// The same command line with every console message on: `quiet` and `loglevel=` dropped, full
/// kernel and systemd output asked for.
fn verbose(cmdline: &str) -> String {
    let mut words: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| {
            *w != "quiet" && !w.starts_with("loglevel=") && !w.starts_with("systemd.show_status=")
        })
        .collect();
    words.extend(["loglevel=7", "systemd.show_status=true"]);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    /// A raw disk with a GPT and an ESP holding a kernel, an initramfs and a command line.
    fn disk_with_boot_files(dir: &Path) -> PathBuf {
        use crate::disk::{esp::EspFile, layout::Layout};
        let layout = Layout::for_disk(40 * MIB, 8 * MIB, false, 0).unwrap();
        let raw = dir.join("disk.raw");
        let mut disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&raw)
            .unwrap();
        disk.set_len(layout.disk_size).unwrap();
        let ids = gpt::DiskIds::random();
        gpt::write_table(
            &mut disk,
            &layout,
            &ids,
            crate::arch::Arch::Amd64,
            &[0; 440],
        )
        .unwrap();
        let volume = tempfile::tempfile().unwrap();
        volume.set_len(layout.esp.size).unwrap();
        let files = vec![
            EspFile::bytes(crate::boot::CMDLINE_ON_ESP, "root=UUID=x rw quiet\n"),
            EspFile::bytes(
                crate::boot::KERNEL_NAMES_ON_ESP,
                "/vmlinuz-6.12.9+deb13-amd64\n/initrd.img-6.12.9+deb13-amd64\n",
            ),
            EspFile::bytes("vmlinuz-6.12.9+deb13-amd64", b"the kernel".to_vec()),
            EspFile::bytes("initrd.img-6.12.9+deb13-amd64", b"the initramfs".to_vec()),
            EspFile::bytes("vmlinuz-6.12.8+deb13-amd64", b"the old kernel".to_vec()),
        ];
        esp::write_small_volume(&volume, layout.esp.size, *b"ESP        ", files).unwrap();
        let mut bytes = vec![0u8; layout.esp.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&volume, &mut bytes, 0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&disk, &bytes, layout.esp.start).unwrap();
        raw
    }

    #[test]
    fn boot_files_come_from_the_esp_of_a_raw_or_qcow2_disk() {
        let dir = tempfile::tempdir().unwrap();
        let raw = disk_with_boot_files(dir.path());
        let direct = DirectBoot::from_disk(&raw, "raw", false).unwrap();
        let boot = &direct.boot;
        assert_eq!(boot.cmdline, "root=UUID=x rw quiet");
        assert_eq!(std::fs::read(&boot.kernel).unwrap(), b"the kernel");
        assert_eq!(std::fs::read(&boot.initrd).unwrap(), b"the initramfs");
        if std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("no qemu-img here: the qcow2 half is skipped");
            return;
        }
        let qcow2 = dir.path().join("disk.qcow2");
        crate::cmd::Cmd::new("qemu-img", "test")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2)
            .run()
            .unwrap();
        let direct = DirectBoot::from_disk(&qcow2, "qcow2", true).unwrap();
        assert_eq!(
            direct.boot.cmdline,
            "root=UUID=x rw loglevel=7 systemd.show_status=true"
        );
        assert_eq!(std::fs::read(&direct.boot.kernel).unwrap(), b"the kernel");
        assert_eq!(
            std::fs::read(&direct.boot.initrd).unwrap(),
            b"the initramfs"
        );
        // Only the kernel's files stay: the ESP's copy is gone.
        let left: Vec<_> = std::fs::read_dir(direct._dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn boot_log_turns_the_console_back_on() {
        assert_eq!(
            verbose("root=UUID=x rw console=ttyS0,115200 quiet loglevel=3 foo"),
            "root=UUID=x rw console=ttyS0,115200 foo loglevel=7 systemd.show_status=true"
        );
        assert_eq!(
            parse_cmdline(
                "loader/entries/c2vm.conf",
                "title c2vm\noptions root=UUID=y rw\n"
            )
            .unwrap(),
            "root=UUID=y rw"
        );
        let err = parse_cmdline("c2vm/cmdline", "\n").unwrap_err().to_string();
        assert!(err.contains("holds no kernel command line"), "{err}");
    }
}
