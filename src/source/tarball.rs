//! `rootfs:PATH`: a tarball of a whole root filesystem (e.g. what `docker export` writes).
use crate::progress::{ProgressReader, Stage};
use crate::rootfs::unpack::{unpack, UnpackStats};
use anyhow::{Context, Result};
use std::path::Path;

pub fn unpack_tarball(path: &Path, dest: &Path) -> Result<UnpackStats> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the root filesystem tarball {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        anyhow::bail!(
            "{} is a directory; rootfs: takes a tar file",
            path.display()
        );
    }
    let stage = Stage::bytes("Unpacking the root filesystem", len);
    let reader = std::io::BufReader::with_capacity(1 << 20, ProgressReader::new(file, &stage));
    let stats = unpack(reader, dest).with_context(|| format!("unpacking {}", path.display()))?;
    stage.done();
    Ok(stats)
}

/// What the tarball will need on ext4, from its headers alone (data is skipped by seeking).
pub fn estimate_usage(path: &Path) -> Result<crate::disk::ext4::TreeUsage> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut usage = crate::disk::ext4::TreeUsage::default();
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
            _ => usage.blocks += size.div_ceil(4096),
        }
        usage.inodes += 1;
    }
    Ok(usage)
}
