//! A live medium's root: squashfs, written by `tar2sqfs` (squashfs-tools-ng) from the edited tar
//! stream on its stdin, in the one pass the ext4 root takes and without root or a staging tree.
//! Why tar2sqfs: Debian 12's squashfs-tools 4.5 has no `sqfstar` and erofs-utils 1.5 no `--tar`,
//! so both would need the tree unpacked first; tar2sqfs has read tar since Debian 11, compresses
//! on every core, and keeps owners, modes, devices and xattrs from the archive. zstd at level 3
//! (what qcow2's clusters use): 0.75 s for the 394 MB test rootfs here, where xz took 33 s for a
//! root 7% smaller and gzip 15 s (docs/live.md).
use crate::cmd::Cmd;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// The compressor and its level: every kernel since 4.14 reads zstd squashfs.
const COMPRESSOR: &str = "zstd";
const LEVEL: &str = "level=3";

/// Write the squashfs at `out` from the tar stream `feed` writes. Under SOURCE_DATE_EPOCH
/// (`epoch`) the image is the same bytes each time: the stream's dates are already clamped, and
/// the superblock takes the epoch too.
pub fn make<T>(
    out: &Path,
    epoch: Option<i64>,
    feed: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = Cmd::new("tar2sqfs", "Writing the squashfs root (tar2sqfs)")
        .args([
            "--quiet",
            "--force",
            "--no-skip",
            "--compressor",
            COMPRESSOR,
        ])
        .args(["--comp-extra", LEVEL, "--num-jobs"])
        .arg(jobs.to_string())
        .arg(out);
    if let Some(epoch) = epoch {
        cmd = cmd
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(["--defaults", &format!("mtime={epoch}")]);
    }
    cmd.run_feeding(feed)
}
