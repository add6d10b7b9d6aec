//! The root filesystem: `mke2fs -d STAGING` writes ext4 straight into the root partition of the
//! image (`-E offset=`). Features are pinned by a private mke2fs.conf, since e2fsprogs 1.47 turns
//! on features (orphan_file, metadata_csum_seed) that Debian 10 / Ubuntu 18.04 kernels refuse.
use crate::cmd::{Cmd, ToolFailed};
use crate::units::MIB;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const BLOCK: u64 = 4096;
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

/// What a root filesystem holds, counted the way ext4 stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// 4 KiB blocks of file, directory and long-symlink data (hardlinked files once).
    pub blocks: u64,
    pub inodes: u64,
}

impl TreeUsage {
    /// What a tarball will need, from its headers alone (data is skipped by seeking): fast enough
    /// to refuse a `--size` that cannot fit before anything is unpacked.
    pub fn of_tarball(path: &Path) -> Result<TreeUsage> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut usage = TreeUsage::default();
        for entry in archive.entries_with_seek()? {
            let entry = entry?;
            let header = entry.header();
            let size = header.entry_size().unwrap_or(0);
            match header.entry_type() {
                tar::EntryType::Link => continue, // another name for an inode already counted
                tar::EntryType::Directory => usage.blocks += 1,
                tar::EntryType::Symlink => {
                    if entry.link_name_bytes().map_or(0, |l| l.len()) >= 60 {
                        usage.blocks += 1; // long targets need a block; short ones live in the inode
                    }
                }
                _ => usage.blocks += size.div_ceil(BLOCK),
            }
            usage.inodes += 1;
        }
        Ok(usage)
    }

    /// What the tree at `root` holds.
    pub fn of_tree(root: &Path) -> Result<TreeUsage> {
        measure_tree(root)
    }
}

fn measure_tree(root: &Path) -> Result<TreeUsage> {
    let mut usage = TreeUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        crate::interrupt::check()?;
        usage.inodes += 1;
        usage.blocks += 1;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("inspecting {}", entry.path().display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            if ft.is_file() {
                // Allocated blocks, so sparse files count as stored; extent tree blocks are noise.
                usage.blocks += meta
                    .size()
                    .div_ceil(BLOCK)
                    .min(meta.blocks().div_ceil(8).max(1));
            } else if ft.is_symlink() && meta.size() >= 60 {
                usage.blocks += 1; // symlinks under 60 bytes live in the inode
            }
        }
    }
    Ok(usage)
}

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

pub struct Mkfs<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub tree: &'a Path,
    pub uuid: &'a str,
    pub inodes: Option<u64>,
    /// Where to put the private mke2fs.conf.
    pub scratch: &'a Path,
    /// SOURCE_DATE_EPOCH: every timestamp mke2fs writes.
    pub epoch: Option<i64>,
}

pub fn make(m: &Mkfs) -> Result<()> {
    let conf = m.scratch.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Cmd::new("mke2fs", "Creating the root filesystem")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-U", m.uuid])
        .arg("-d")
        .arg(m.tree)
        .arg("-E")
        .arg(format!("offset={},nodiscard,root_owner=0:0", m.offset))
        .env("MKE2FS_CONFIG", &conf);
    if let Some(n) = m.inodes {
        cmd = cmd.arg("-N").arg(n.to_string());
    }
    if let Some(epoch) = m.epoch {
        cmd = cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    }
    let result = cmd.arg(m.image).arg(format!("{}k", m.size / 1024)).run();
    if let Err(e) = result {
        let full = ToolFailed::find(&e).is_some_and(|t| {
            t.said(&[
                "Could not allocate block",
                "No free space",
                "Could not allocate inode",
            ])
        });
        if full {
            bail!("the files do not fit in a {} MiB root filesystem; use a larger --size (or --size auto)\n{e:#}", m.size / MIB);
        }
        return Err(e);
    }
    Ok(())
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

    #[test]
    fn measures_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let u = measure_tree(dir.path()).unwrap();
        assert_eq!(u.inodes, 3); // root dir, d, a
        assert_eq!(u.blocks, 2 + 3);
    }
}
