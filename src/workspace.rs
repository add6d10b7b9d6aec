//! The staging and scratch workspace: a private temporary directory holding the guest's tree
//! (`root/`) and scratch files beside it (the raw disk before conversion, tool configs). Where it
//! goes is chosen here too, because that choice is about this directory alone.
use crate::units::MIB;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where workspaces may go: `--workdir`, else `$TMPDIR`, else RAM when it has room.
#[derive(Debug, Clone)]
pub struct WorkDir {
    dir: PathBuf,
    /// Neither --workdir nor TMPDIR was given: c2vm may stage in RAM (see [`WorkDir::for_tree`]).
    is_default: bool,
}

impl WorkDir {
    pub fn choose(workdir: Option<&Path>) -> Result<WorkDir> {
        let is_default = workdir.is_none() && std::env::var_os("TMPDIR").is_none();
        let dir = workdir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        if !dir.is_dir() {
            bail!(
                "work directory {} does not exist; create it or choose another with --workdir",
                dir.display()
            );
        }
        Ok(WorkDir { dir, is_default })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where to put a staging tree of about `expected` bytes. Unpacking ~15,000 files is bound by
    /// the filesystem's metadata speed (18 s on a virtual disk, 4 s on tmpfs), so without
    /// --workdir or TMPDIR, c2vm stages in /dev/shm when it is a tmpfs with room for the tree and
    /// the raw disk three times over and the machine has that much memory available.
    fn for_tree(&self, expected: u64) -> PathBuf {
        let shm = Path::new("/dev/shm");
        if self.is_default && expected > 0 {
            let need = expected.saturating_mul(3) + 512 * MIB;
            if is_tmpfs_with_room(shm, need) && mem_available().is_some_and(|m| m > need + need / 2)
            {
                log::debug!(
                    "staging in {} (tmpfs, {} MiB needed)",
                    shm.display(),
                    need / MIB
                );
                return shm.to_path_buf();
            }
        }
        self.dir.clone()
    }
}

// f_type is i64 on x86-64 glibc but narrower elsewhere: the cast is for portability.
#[allow(clippy::unnecessary_cast)]
fn is_tmpfs_with_room(dir: &Path, need: u64) -> bool {
    match rustix::fs::statfs(dir) {
        Ok(st) => {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            st.f_type as i64 == TMPFS_MAGIC && st.f_bavail.saturating_mul(st.f_bsize as u64) >= need
        }
        Err(_) => false,
    }
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One conversion's private directory, removed when dropped (on success, error or interrupt
/// alike).
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// A workspace with an empty guest root, placed for a tree of about `expected` bytes.
    pub fn create(workdir: &WorkDir, expected: u64) -> Result<Workspace> {
        let parent = workdir.for_tree(expected);
        let dir = tempfile::Builder::new()
            .prefix("c2vm-staging.")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a staging tree in {}", parent.display()))?;
        // The tree is the guest's `/`: root-owned 0755, whatever the umask gave the temp dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("setting the staging tree's mode")?;
        let workspace = Workspace { dir };
        std::fs::create_dir(workspace.root()).context("creating the staging root")?;
        Ok(workspace)
    }

    /// The guest's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Scratch space beside the root (raw disk before conversion, configs), outside the guest.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}
