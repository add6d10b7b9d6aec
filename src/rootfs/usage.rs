//! What a root filesystem will need, counted as ext4 stores it (4 KiB blocks, short symlinks in
//! their inode): from a tarball's headers, a staging tree, an engine's size estimate, or the
//! stream edit as entries pass. The disk stage sizes the partition and the inode count from it.
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// ext4's block size, as c2vm's mke2fs.conf pins it.
pub const BLOCK: u64 = 4096;
/// A symlink's target shorter than this lives in its inode; a longer one takes a block.
const INLINE_SYMLINK: u64 = 60;

/// What a root filesystem holds, counted the way ext4 stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// 4 KiB blocks of file, directory and long-symlink data (hardlinked files once).
    pub blocks: u64,
    pub inodes: u64,
}

/// One entry at a time, whoever walks the tree (a tarball, a directory, the stream edit's
/// output). A hardlink is another name for an inode already counted: nothing to add.
impl TreeUsage {
    /// A tree of its root directory alone.
    pub fn root() -> TreeUsage {
        let mut usage = TreeUsage::default();
        usage.add_dir();
        usage
    }

    /// An inode with `blocks` of data (a device node or fifo has none).
    pub fn add_inode(&mut self, blocks: u64) {
        self.inodes += 1;
        self.blocks += blocks;
    }

    /// A directory: its inode and its first block.
    pub fn add_dir(&mut self) {
        self.add_inode(1);
    }

    /// A regular file of `size` bytes.
    pub fn add_file(&mut self, size: u64) {
        self.add_inode(size.div_ceil(BLOCK));
    }

    /// A symlink whose target is `target_len` bytes long.
    pub fn add_symlink(&mut self, target_len: u64) {
        self.add_inode(u64::from(target_len >= INLINE_SYMLINK));
    }
    /// What a tarball will need, from its headers alone (data is skipped by seeking): fast enough
    /// to refuse a `--size` that cannot fit before anything is unpacked.
    pub fn of_tarball(path: &Path) -> Result<TreeUsage> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut usage = TreeUsage::default();
        let corrupt = |e: std::io::Error| {
            anyhow::anyhow!(
                "{} is corrupt or truncated ({e}); check that it is a complete tar file",
                path.display()
            )
        };
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            let header = entry.header();
            match header.entry_type() {
                tar::EntryType::Link => {}
                tar::EntryType::Directory => usage.add_dir(),
                tar::EntryType::Symlink => {
                    usage.add_symlink(entry.link_name_bytes().map_or(0, |l| l.len() as u64))
                }
                _ => usage.add_file(header.entry_size().unwrap_or(0)),
            }
        }
        Ok(usage)
    }

    /// A guess from an image's size alone (engines report no file count): every byte in its own
    /// blocks, and an inode for every 8 KiB, far more than Debian's 27 KiB a file. A guess that
    /// proves short costs a counting pass, never a broken disk.
    pub fn estimate(bytes: u64) -> TreeUsage {
        let inodes = bytes / 8192 + 4096;
        TreeUsage {
            blocks: bytes.div_ceil(BLOCK) + inodes / 2,
            inodes,
        }
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
        usage.add_dir();
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
            if ft.is_file() {
                // Allocated blocks, so sparse files count as stored; extent tree blocks are noise.
                let allocated = meta.blocks().div_ceil(BLOCK / 512).max(1);
                usage.add_inode(meta.size().div_ceil(BLOCK).min(allocated));
            } else if ft.is_symlink() {
                usage.add_symlink(meta.size());
            } else {
                usage.add_inode(0);
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

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
