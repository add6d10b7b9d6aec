//! The root filesystem: `mke2fs -d -` reads the edited tar stream from stdin (e2fsprogs 1.47.1+,
//! with libarchive), or `mke2fs -d STAGING` an unpacked tree where mke2fs is older, and writes
//! ext4 straight into the root partition of the image (`-E offset=`). Features are pinned by a private mke2fs.conf, since e2fsprogs 1.47 turns
//! on features (orphan_file, metadata_csum_seed) that Debian 10 / Ubuntu 18.04 kernels refuse.
use crate::cmd::{Cmd, ToolFailed};
use crate::rootfs::usage::{TreeUsage, BLOCK};
use crate::units::MIB;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

const INODE_SIZE: u64 = 256;
/// mke2fs's default bytes-per-inode for ext4.
const INODE_RATIO: u64 = 16384;

/// Features every Linux since 4.4 (Debian 10's 4.19, Ubuntu 18.04's 4.15) mounts read-write.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// ext4's journal size for a filesystem of `fs_blocks` 4 KiB blocks (ext2fs_default_journal_size).
fn journal_blocks(fs_blocks: u64) -> u64 {
    match fs_blocks {
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    }
}

/// The inode count to ask for: mke2fs's default, unless the tree needs more than that allows.
pub fn inode_count(usage: &TreeUsage, fs_size: u64) -> Option<u64> {
    let wanted = usage.inodes + usage.inodes / 4 + 1024;
    (wanted > fs_size / INODE_RATIO).then_some(wanted)
}

/// The smallest filesystem the tree fits in: data, inode tables, journal, group metadata.
pub fn min_fs_size(usage: &TreeUsage) -> u64 {
    let data = usage.blocks * BLOCK;
    let mut size = data + 16 * MIB;
    for _ in 0..8 {
        let inodes = (size / INODE_RATIO).max(usage.inodes + usage.inodes / 4 + 1024);
        let metadata = size / 64; // bitmaps, group descriptors, reserved GDT blocks for growth
        size =
            data + inodes * INODE_SIZE + journal_blocks(size / BLOCK) * BLOCK + metadata + 16 * MIB;
    }
    size.div_ceil(MIB) * MIB
}

/// `--size auto`: the minimum plus headroom to install a few packages and keep logs.
pub fn auto_fs_size(usage: &TreeUsage) -> u64 {
    let min = min_fs_size(usage);
    let headroom = (min / 5).max(256 * MIB);
    (min + headroom).div_ceil(MIB) * MIB
}

/// How this host's mke2fs can be given the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Populate {
    /// A tar stream on stdin: one pass, no staging tree, no root needed.
    Stream,
    /// Only a directory: the stream is unpacked into a staging tree first (as root). Says why.
    Staging(String),
}

/// Ask this host's mke2fs whether it reads tar from stdin: its version (1.47.1 or later), then a
/// tiny real run, which also proves libarchive is there.
pub fn probe(scratch: &Path) -> Result<Populate> {
    let out = Command::new("mke2fs")
        .arg("-V")
        .output()
        .context("running mke2fs -V")?;
    let text = String::from_utf8_lossy(&out.stderr);
    let version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let number = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    if number(&version) < vec![1, 47, 1] {
        return Ok(Populate::Staging(format!(
            "mke2fs {version} cannot read a tar stream (e2fsprogs 1.47.1 or later can)"
        )));
    }
    let image = tempfile::Builder::new()
        .prefix("c2vm-probe.")
        .tempfile_in(scratch)
        .with_context(|| format!("making a scratch file in {}", scratch.display()))?;
    let empty_tar = [0u8; 1024];
    let probe = Cmd::new("mke2fs", "Checking that mke2fs reads tar")
        .args(["-q", "-F", "-d", "-"])
        .arg(image.path())
        .arg("1M")
        .run_feeding(|stdin| Ok(stdin.write_all(&empty_tar)?));
    Ok(match probe {
        Ok(()) => Populate::Stream,
        Err(e) => Populate::Staging(format!(
            "mke2fs {version} cannot read a tar stream here, most likely for want of libarchive ({})",
            ToolFailed::find(&e).map_or_else(|| format!("{e:#}"), |t| t.tail().to_string())
        )),
    })
}

/// How to get an mke2fs that reads tar, on this distro.
pub fn how_to_get_tar_input() -> &'static str {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if os.contains("VERSION_CODENAME=bookworm") {
        "install e2fsprogs 1.47.2 and libarchive13 from bookworm-backports (apt-get install -t bookworm-backports e2fsprogs libarchive13)"
    } else {
        "install e2fsprogs 1.47.1 or later and libarchive (Debian 13, Ubuntu 24.10 and Fedora 40 ship them)"
    }
}

/// Where mke2fs takes the files from.
pub enum Files<'a> {
    Tree(&'a Path),
    /// A tar stream, written by this function into mke2fs's stdin.
    Stream(&'a mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>),
}

pub struct Mkfs<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub files: Files<'a>,
    pub uuid: uuid::Uuid,
    /// The seed of ext4's directory hashes, which mke2fs would pick at random.
    pub hash_seed: uuid::Uuid,
    pub inodes: Option<u64>,
    /// Where to put the private mke2fs.conf.
    pub scratch: &'a Path,
    /// SOURCE_DATE_EPOCH: every timestamp mke2fs writes.
    pub epoch: Option<i64>,
}

pub fn make(m: Mkfs) -> Result<()> {
    let conf = m.scratch.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Cmd::new("mke2fs", "Creating the root filesystem")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-U"])
        .arg(m.uuid.to_string())
        .arg("-d")
        .arg(match &m.files {
            Files::Tree(path) => path.as_os_str(),
            Files::Stream(_) => std::ffi::OsStr::new("-"),
        })
        // The image file is new and sparse, so its blocks read as zeros already: writing zeros over
        // the inode tables and the journal (64 MiB here) would only cost time and disk.
        .arg("-E")
        .arg(format!(
            "offset={},nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0,hash_seed={}",
            m.offset, m.hash_seed
        ))
        .env("MKE2FS_CONFIG", &conf);
    if let Some(n) = m.inodes {
        cmd = cmd.arg("-N").arg(n.to_string());
    }
    if let Some(epoch) = m.epoch {
        cmd = cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    let cmd = cmd.arg(m.image).arg(format!("{}k", m.size / 1024));
    let result = match m.files {
        Files::Tree(_) => cmd.run().map(drop),
        Files::Stream(feed) => cmd.run_feeding(feed),
    };
    if let Err(e) = result {
        let full = ToolFailed::find(&e).is_some_and(|t| {
            t.said(&[
                "Could not allocate block",
                "No free space",
                "Could not allocate inode",
            ])
        });
        if full {
            return Err(e.context(TooSmall(m.size)));
        }
        return Err(e);
    }
    Ok(())
}

/// Set xattrs that `mke2fs -d -` left out (it copies `security.capability` only) with
/// `debugfs -w`: `(guest path key, name, value)`.
pub fn set_xattrs(
    image: &Path,
    offset: u64,
    xattrs: &[(Vec<u8>, String, Vec<u8>)],
    scratch: &Path,
) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let dir = tempfile::tempdir_in(scratch).context("making a scratch directory for xattrs")?;
    let mut script = Vec::new();
    for (i, (key, name, value)) in xattrs.iter().enumerate() {
        if key.contains(&b'"') || key.contains(&b'\n') || name.contains(['"', ' ', '\n']) {
            log::warn!(
                "not setting xattr {name} on /{}: a name debugfs cannot quote",
                String::from_utf8_lossy(key)
            );
            continue;
        }
        let file = dir.path().join(i.to_string());
        std::fs::write(&file, value).context("writing an xattr value")?;
        script.extend_from_slice(format!("ea_set -f {} \"/", file.display()).as_bytes());
        script.extend_from_slice(key);
        script.extend_from_slice(format!("\" {name}\n").as_bytes());
    }
    let commands = dir.path().join("commands");
    std::fs::write(&commands, &script).context("writing debugfs commands")?;
    let out = Cmd::new("debugfs", "Setting the image's other xattrs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(format!("{}?offset={offset}", image.display()))
        .run()?;
    // debugfs reports a failed command on stderr and still exits 0.
    if let Some(line) = out.stderr.lines().find(|l| !l.starts_with("debugfs ")) {
        anyhow::bail!("debugfs could not set an xattr: {line}");
    }
    Ok(())
}

/// mke2fs ran out of blocks or inodes in a root filesystem of this many bytes.
#[derive(Debug)]
pub struct TooSmall(pub u64);

impl std::fmt::Display for TooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the files do not fit in a {} MiB root filesystem; use a larger --size (or --size auto)", self.0 / MIB)
    }
}

impl std::error::Error for TooSmall {}

impl TooSmall {
    pub fn find(err: &anyhow::Error) -> Option<&TooSmall> {
        err.downcast_ref::<TooSmall>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_with_the_tree() {
        let small = TreeUsage {
            blocks: 1000,
            inodes: 100,
        };
        let big = TreeUsage {
            blocks: 160_000,
            inodes: 20_000,
        }; // ~650 MB like Debian + kernel
        assert!(min_fs_size(&small) >= 16 * MIB);
        let min = min_fs_size(&big);
        assert!(min > 160_000 * 4096 && min < 900 * MIB, "{}", min / MIB);
        assert!(auto_fs_size(&big) >= min + 256 * MIB);
        assert_eq!(min % MIB, 0);
    }

    #[test]
    fn many_small_files_ask_for_more_inodes() {
        let usage = TreeUsage {
            blocks: 10_000,
            inodes: 200_000,
        };
        let size = min_fs_size(&usage);
        assert!(inode_count(&usage, size).unwrap() >= 200_000);
        assert_eq!(
            inode_count(
                &TreeUsage {
                    blocks: 100_000,
                    inodes: 1000
                },
                1 << 30
            ),
            None
        );
    }
}
