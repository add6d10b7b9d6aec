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
