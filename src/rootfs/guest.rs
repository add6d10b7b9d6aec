//! Files are written relative to the guest root through directory handles, never through host
//! paths: directories resolve with `RESOLVE_IN_ROOT` (symlinks behave as inside the guest) and the
//! final name is never followed, so a symlink in the image (`/etc -> /host/etc`, an
//! `/etc/hostname` pointing at the host's) cannot redirect a write onto the host.
use anyhow::{anyhow, bail, Context, Result};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::io::Write;
use std::path::{Component, Path};

pub struct GuestRoot {
    root: OwnedFd,
    /// Whether written files get the owners asked for: only root can give files away. The
    /// conversion runs as root; unit tests may not, and then files stay the caller's.
    set_owners: bool,
}

/// Owner and mode for a file written into the guest.
#[derive(Clone, Copy, Debug)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Perms {
    pub const fn root(mode: u32) -> Perms {
        Perms {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

impl GuestRoot {
    pub fn open(path: &Path) -> Result<GuestRoot> {
        let root = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)
        .with_context(|| format!("opening the guest root {}", path.display()))?;
        Ok(GuestRoot {
            root,
            set_owners: rustix::process::geteuid().is_root(),
        })
    }

    /// Give `fd` the owner and mode of `perms` (the owner only where that is possible).
    fn set_perms(&self, fd: &OwnedFd, perms: Perms) -> Result<()> {
        if self.set_owners {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(perms.uid)),
                Some(rustix::fs::Gid::from_raw(perms.gid)),
            )
            .map_err(io)?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(perms.mode)).map_err(io)?;
        Ok(())
    }

    fn parts(rel: &str) -> Result<Vec<String>> {
        let mut parts = Vec::new();
        for c in Path::new(rel.trim_start_matches('/')).components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => bail!("bad guest path {rel}"),
            }
        }
        Ok(parts)
    }

    /// Open the directory `rel`, resolving symlinks as if the guest root were `/`
    /// (`RESOLVE_IN_ROOT`: `/lib -> usr/lib` works, `/etc -> /host/etc` stays inside the tree, and
    /// `..` cannot climb out). Missing directories are created (0755) when `create` is set.
    fn dir(&self, rel: &[String], create: bool) -> Result<OwnedFd> {
        self.dir_depth(rel, create, 0)
    }

    fn dir_depth(&self, rel: &[String], create: bool, depth: u32) -> Result<OwnedFd> {
        let path = if rel.is_empty() {
            ".".to_string()
        } else {
            rel.join("/")
        };
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let resolve = rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.root, path.as_str(), flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if create && !rel.is_empty() => {
                let parent = self.dir_depth(&rel[..rel.len() - 1], true, depth)?;
                let name = rel[rel.len() - 1].as_str();
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        // A symlink to a directory the image lacks (`/root -> var/roothome`):
                        // create its target, as `mkdir -p` in the guest would.
                        if let Ok(target) = rustix::fs::readlinkat(&parent, name, Vec::new()) {
                            if depth >= 40 {
                                bail!("/{path} in the image: too many levels of symlinks");
                            }
                            let target = target.to_string_lossy().into_owned();
                            let base = if target.starts_with('/') {
                                Vec::new()
                            } else {
                                rel[..rel.len() - 1].to_vec()
                            };
                            let resolved = lexical_join(base, &target);
                            return self.dir_depth(&resolved, true, depth + 1).with_context(|| {
                                format!("/{path} in the image is a symlink to {target}")
                            });
                        }
                    }
                    Err(e) => {
                        return Err(io(e)).with_context(|| format!("creating /{path} in the guest"))
                    }
                }
                rustix::fs::openat(&parent, name, flags | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(io)
                    .with_context(|| format!("opening /{path} in the guest"))
            }
            Err(Errno::NOTDIR) => bail!("/{path} in the image is not a directory"),
            Err(e) => Err(io(e)).with_context(|| format!("opening /{path} in the guest")),
        }
    }

    fn split(rel: &str) -> Result<(Vec<String>, String)> {
        let mut parts = Self::parts(rel)?;
        let name = parts.pop().ok_or_else(|| anyhow!("empty guest path"))?;
        Ok((parts, name))
    }

    /// Replace `rel` with a new regular file (an existing file or symlink there is removed first).
    pub fn write(&self, rel: &str, contents: &[u8], perms: Perms) -> Result<()> {
        (|| -> Result<()> {
            let (parent, name) = Self::split(rel)?;
            let dir = self.dir(&parent, true)?;
            match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(io(e).into()),
            }
            let fd = rustix::fs::openat(
                &dir,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(io)?;
            self.set_perms(&fd, perms)?;
            let mut file = std::fs::File::from(fd);
            file.write_all(contents)?;
            Ok(())
        })()
        .with_context(|| format!("writing {rel} in the staging tree"))
    }

    /// Read a regular file; `None` if it does not exist. A symlink is not followed (error).
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some(mut file) = self.open_file(rel)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut buf)
            .with_context(|| format!("reading {rel} in the staging tree"))?;
        Ok(Some(buf))
    }

    /// Open a regular file for reading without following any symlink; `None` if missing.
    pub fn open_file(&self, rel: &str) -> Result<Option<std::fs::File>> {
        let (parent, name) = Self::split(rel)?;
        let dir = match self.dir(&parent, false) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => bail!("{rel} in the image is a symlink; expected a regular file"),
            Err(e) => Err(io(e)).with_context(|| format!("opening {rel} in the staging tree")),
        }
    }

    /// What is at `rel`, without following a final symlink; `None` if nothing.
    pub fn stat(&self, rel: &str) -> Result<Option<rustix::fs::Stat>> {
        if Self::parts(rel)?.is_empty() {
            return Ok(Some(rustix::fs::fstat(&self.root).map_err(io)?));
        }
        let (parent, name) = Self::split(rel)?;
        let dir = match self.dir(&parent, false) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io(e)).with_context(|| format!("inspecting {rel} in the staging tree")),
        }
    }

    pub fn is_symlink(&self, rel: &str) -> Result<bool> {
        Ok(self
            .stat(rel)?
            .map(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
            })
            .unwrap_or(false))
    }

    pub fn is_regular(&self, rel: &str) -> Result<bool> {
        Ok(self
            .stat(rel)?
            .map(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
            })
            .unwrap_or(false))
    }

    /// Whether `rel`, following symlinks as the guest would (inside its root), is a regular file
    /// someone may execute.
    pub fn is_executable(&self, rel: &str) -> Result<bool> {
        let parts = Self::parts(rel)?;
        if parts.is_empty() {
            return Ok(false);
        }
        let resolve = rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(
            &self.root,
            parts.join("/").as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(false),
            Err(e) => {
                return Err(io(e)).with_context(|| format!("inspecting {rel} in the staging tree"))
            }
        };
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        Ok(
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                && st.st_mode & 0o111 != 0,
        )
    }

    /// Remove a file or symlink if present.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let (parent, name) = Self::split(rel)?;
        let dir = match self.dir(&parent, false) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io(e)).with_context(|| format!("removing {rel} from the staging tree")),
        }
    }

    /// Replace `rel` with a symlink to `target`.
    pub fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let (parent, name) = Self::split(rel)?;
        let dir = self.dir(&parent, true)?;
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io(e)).with_context(|| format!("replacing {rel}")),
        }
        rustix::fs::symlinkat(target, &dir, name.as_str())
            .map_err(io)
            .with_context(|| format!("creating the symlink {rel} -> {target}"))
    }

    /// Make sure the directory `rel` exists (parents 0755), then set its owner and mode.
    pub fn mkdir(&self, rel: &str, perms: Perms) -> Result<()> {
        let parts = Self::parts(rel)?;
        let fd = self
            .dir(&parts, true)
            .with_context(|| format!("creating {rel} in the staging tree"))?;
        self.set_perms(&fd, perms)
            .with_context(|| format!("setting the owner and mode of {rel} in the staging tree"))
    }

    /// Names in the directory `rel` (empty if it does not exist).
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let parts = Self::parts(rel)?;
        let fd = match self.dir(&parts, false) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        let dir = rustix::fs::Dir::read_from(&fd).map_err(io)?;
        for entry in dir {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// `base` + `target` as guest path components, `..` resolved lexically and clamped at the guest
/// root, as `RESOLVE_IN_ROOT` does.
fn lexical_join(mut base: Vec<String>, target: &str) -> Vec<String> {
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                base.pop();
            }
            name => base.push(name.to_string()),
        }
    }
    base
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_do_not_follow_symlinks_out_of_the_guest() {
        let host = tempfile::tempdir().unwrap();
        let guest = tempfile::tempdir().unwrap();
        let victim = host.path().join("hostname");
        std::fs::write(&victim, "host").unwrap();
        // /etc/hostname -> host file: replaced, host file untouched
        std::fs::create_dir(guest.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&victim, guest.path().join("etc/hostname")).unwrap();
        let g = GuestRoot::open(guest.path()).unwrap();
        g.write("/etc/hostname", b"guest\n", Perms::root(0o644))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host");
        assert_eq!(
            std::fs::read_to_string(guest.path().join("etc/hostname")).unwrap(),
            "guest\n"
        );
        // /var -> absolute host dir: resolved inside the guest, never on the host
        std::os::unix::fs::symlink(host.path(), guest.path().join("var")).unwrap();
        let _ = g.write("/var/x", b"x", Perms::root(0o644));
        assert!(!host.path().join("x").exists());
        // /lib -> usr/lib (merged /usr) works, and `..` links stay inside
        std::fs::create_dir_all(guest.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", guest.path().join("lib")).unwrap();
        g.write("/lib/y", b"y", Perms::root(0o644)).unwrap();
        assert!(guest.path().join("usr/lib/y").exists());
        std::os::unix::fs::symlink("../../../../..", guest.path().join("up")).unwrap();
        g.write("/up/z", b"z", Perms::root(0o644)).unwrap();
        assert!(guest.path().join("z").exists());
    }

    #[test]
    fn dangling_symlinked_directories_are_created_inside_the_guest() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("root")).unwrap();
        // Absolute, relative, and one that climbs past the root: all land inside the tree.
        std::os::unix::fs::symlink(outside.path().join("ssh"), root.join("root/.ssh")).unwrap();
        std::os::unix::fs::symlink("../var/roothome", root.join("home")).unwrap();
        std::os::unix::fs::symlink("../../../../../../elsewhere", root.join("srv")).unwrap();
        let guest = GuestRoot::open(root).unwrap();
        guest.mkdir("/root/.ssh", Perms::root(0o700)).unwrap();
        guest.write("/home/x/f", b"y", Perms::root(0o644)).unwrap();
        guest.write("/srv/f", b"z", Perms::root(0o644)).unwrap();
        let inside = root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("ssh");
        assert!(inside.is_dir());
        assert_eq!(std::fs::read(root.join("var/roothome/x/f")).unwrap(), b"y");
        assert_eq!(std::fs::read(root.join("elsewhere/f")).unwrap(), b"z");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let err = format!(
            "{:#}",
            guest.mkdir("/loop/x", Perms::root(0o755)).unwrap_err()
        );
        assert!(err.contains("creating /loop/x"), "{err}");
    }

    #[test]
    fn write_sets_mode_and_reads_back() {
        let guest = tempfile::tempdir().unwrap();
        let g = GuestRoot::open(guest.path()).unwrap();
        g.write("/a/b/c", b"hello", Perms::root(0o640)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(guest.path().join("a/b/c")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(g.read("/a/b/c").unwrap().unwrap(), b"hello");
        assert_eq!(g.read("/a/missing").unwrap(), None);
        assert_eq!(g.list("/a/b").unwrap(), vec!["c".to_string()]);
    }
}
