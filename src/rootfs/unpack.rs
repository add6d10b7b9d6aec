//! Unpack a root filesystem tar stream into the staging tree, keeping what a bootable system needs
//! (numeric owners, modes with setuid/setgid/sticky, xattrs, hardlinks, symlinks, device nodes,
//! fifos, mtimes) and never writing outside the tree, whatever the archive says.
//!
//! Policy for hostile entries (documented in the README): a `..` component, a name or hardlink that
//! leads out of the tree, or a write through a symlink that leaves it, REFUSES the whole archive with
//! an error naming the entry. A half-trusted root filesystem is not something to boot. Leading `/`
//! is stripped (as GNU tar does), since `docker export` and `tar -P` both produce such names.
//!
//! The stream edit applies the same policy before the unpacker sees an archive. The checks here
//! stay on purpose, as a second line of defence: the unpacker writes to the host's filesystem,
//! so it must be safe on its own, whatever reaches it.
use crate::tar_rules::{corrupt, entry_name};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tar::EntryType;

/// Unpack `archive` into `dest` (an empty directory).
///
/// Owners are kept when c2vm runs as root, which conversions through a staging tree require; only
/// root can give files away, so as anyone else (unit tests, the fuzzer) files stay the caller's.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<()> {
    let dest = dest
        .canonicalize()
        .with_context(|| format!("opening the staging tree {}", dest.display()))?;
    let mut archive = tar::Archive::new(archive);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(rustix::process::geteuid().is_root());
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    archive.set_mask(0);

    let mut entries_seen = 0u64;
    // Directory mtimes change as entries land in them: set them once everything is in place.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let entries = archive
        .entries()
        .context("reading the root filesystem archive")?;
    for entry in entries {
        crate::interrupt::check()?;
        let mut entry = entry.map_err(|e| corrupt(&e))?;
        let (raw_name, shown) = entry_name(&entry);
        // Second line of defence (module header): names, hardlink targets, parents through
        // symlinks and the tar crate's `unpack_in` are all checked here again.
        let Some(rel) = sanitize_name(&raw_name)
            .with_context(|| format!("refusing archive entry `{shown}`"))?
        else {
            continue; // the root itself (`./`)
        };
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                make_special(&dest, &rel, &entry)
                    .with_context(|| format!("refusing archive entry `{shown}`"))?;
            }
            EntryType::Link => {
                check_hardlink_target(&entry)
                    .with_context(|| format!("refusing archive entry `{shown}`"))?;
                unpack_entry(&mut entry, &dest, &shown)?;
            }
            _ => {
                if kind.is_dir() {
                    if let Ok(mtime) = entry.header().mtime() {
                        dir_times.push((dest.join(&rel), mtime as i64));
                    }
                }
                unpack_entry(&mut entry, &dest, &shown)?;
            }
        }
        entries_seen += 1;
    }
    for (dir, mtime) in dir_times.iter().rev() {
        set_times(dir, *mtime)
            .with_context(|| format!("setting the mtime of {}", dir.display()))?;
    }
    if entries_seen == 0 {
        bail!("the archive is empty: it holds no root filesystem");
    }
    Ok(())
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<R>, dest: &Path, shown: &str) -> Result<()> {
    match entry.unpack_in(dest) {
        Ok(true) => Ok(()),
        Ok(false) => bail!("refusing archive entry `{shown}`: it leads outside the root"),
        Err(e) => Err(explain_unpack_error(e, shown)),
    }
}

/// Why the tar crate could not unpack an entry, said in terms of what to do.
fn explain_unpack_error(e: std::io::Error, shown: &str) -> anyhow::Error {
    let failure = UnpackFailure::of(&e);
    let text = anyhow::Error::new(e)
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    match failure {
        UnpackFailure::Escapes => anyhow!("refusing archive entry `{shown}`: it would write outside the root through a symlink or link ({text})"),
        UnpackFailure::ReplacesDirectory => anyhow!("refusing archive entry `{shown}`: it would replace a directory that earlier entries made with a non-directory ({text})"),
        UnpackFailure::Full => anyhow!("no space left while unpacking `{shown}`: free some space or choose another --workdir ({text})"),
        UnpackFailure::Truncated => anyhow!("the archive is corrupt or truncated at `{shown}`; check that it is a complete tar file"),
        UnpackFailure::Other => anyhow!("unpacking `{shown}`: {text}"),
    }
}

/// The unpack failures c2vm explains.
#[derive(Debug, PartialEq, Eq)]
enum UnpackFailure {
    Escapes,
    ReplacesDirectory,
    Full,
    Truncated,
    Other,
}

impl UnpackFailure {
    fn of(e: &std::io::Error) -> UnpackFailure {
        // The tar crate wraps the OS's error in its own: look at every error in the chain.
        let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            chain.push(err);
            next = err.source();
        }
        let ios = || {
            chain
                .iter()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
        };
        // The crate keeps the OS error's kind but sometimes drops its number: check both.
        let os_error =
            |code, kind| ios().any(|io| io.raw_os_error() == Some(code) || io.kind() == kind);
        // Two of the crate's own refusals exist only as message text: matched here, nowhere else.
        let says = |phrase: &str| chain.iter().any(|c| c.to_string().contains(phrase));
        if says("outside of destination") {
            UnpackFailure::Escapes
        } else if os_error(libc::EISDIR, std::io::ErrorKind::IsADirectory) {
            UnpackFailure::ReplacesDirectory
        } else if os_error(libc::ENOSPC, std::io::ErrorKind::StorageFull) {
            UnpackFailure::Full
        } else if ios().any(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
            || says("failed to write entire file")
        {
            UnpackFailure::Truncated
        } else {
            UnpackFailure::Other
        }
    }
}

/// The entry's name as a relative path inside the tree; `None` for the root itself.
/// `..` anywhere is refused; leading `/` and `.` components are dropped
/// ([`crate::tar_rules::sanitize`], the stream edit's own rule, checked again here).
fn sanitize_name(raw: &[u8]) -> Result<Option<PathBuf>> {
    use std::os::unix::ffi::OsStringExt;
    let key = crate::tar_rules::sanitize(raw)?;
    Ok(key.map(|k| PathBuf::from(std::ffi::OsString::from_vec(k))))
}

/// A hardlink's target must itself be a name inside the tree.
fn check_hardlink_target<R: Read>(entry: &tar::Entry<R>) -> Result<()> {
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| anyhow!("a hardlink without a target"))?;
    if sanitize_name(&target)?.is_none() {
        bail!("a hardlink to the root directory");
    }
    Ok(())
}

/// Create the parent directories of `rel` inside `dest` and return the parent's real path,
/// refusing any path that resolves (through symlinks) outside `dest`.
fn safe_parent(dest: &Path, rel: &Path) -> Result<PathBuf> {
    let mut current = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            let next = current.join(part);
            match std::fs::symlink_metadata(&next) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&next)
                        .with_context(|| format!("creating {}", next.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("inspecting {}", next.display())),
            }
            current = next
                .canonicalize()
                .with_context(|| format!("resolving {}", next.display()))?;
            if !current.starts_with(dest) {
                bail!("its parent directory leads outside the root through a symlink");
            }
        }
    }
    Ok(current)
}

/// Device nodes and fifos (the tar crate would write them as empty files).
fn make_special<R: Read>(dest: &Path, rel: &Path, entry: &tar::Entry<R>) -> Result<()> {
    use rustix::fs::{FileType, Mode};
    let header = entry.header();
    let parent = safe_parent(dest, rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| anyhow!("a device node without a name"))?;
    let target = parent.join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&target) {
        if meta.is_dir() {
            bail!("a directory of that name exists already");
        }
        std::fs::remove_file(&target).with_context(|| format!("replacing {}", target.display()))?;
    }
    let mode = header.mode().context("reading the mode")? & 0o7777;
    let (file_type, dev) = match header.entry_type() {
        EntryType::Char | EntryType::Block => {
            let major = header.device_major()?.unwrap_or(0);
            let minor = header.device_minor()?.unwrap_or(0);
            let kind = if header.entry_type() == EntryType::Char {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            (kind, rustix::fs::makedev(major, minor))
        }
        _ => (FileType::Fifo, 0),
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &target,
        file_type,
        Mode::from_raw_mode(mode),
        dev,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("creating the device node {}", target.display()))?;
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    // As for files (see `unpack`): owners are given away only by root.
    if rustix::process::geteuid().is_root() {
        rustix::fs::chownat(
            rustix::fs::CWD,
            &target,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("setting the owner of {}", target.display()))?;
    }
    // mknod applied the umask; chown may have cleared setuid: set the mode last.
    rustix::fs::chmod(&target, Mode::from_raw_mode(mode))
        .map_err(std::io::Error::from)
        .with_context(|| format!("setting the mode of {}", target.display()))?;
    if let Ok(mtime) = header.mtime() {
        set_times(&target, mtime as i64)?;
    }
    Ok(())
}

fn set_times(path: &Path, mtime: i64) -> Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("setting the times of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tar;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let result = unpack(bytes, &root);
        (dir, result)
    }

    #[test]
    fn keeps_owners_modes_setuid_hardlinks_and_devices() {
        let mut t = Tar::new().owner(1234, 4321);
        t.entry("./", EntryType::Directory, 0o755, None, b"");
        t.entry("./usr/bin/", EntryType::Directory, 0o755, None, b"");
        t.entry(
            "./usr/bin/passwd",
            EntryType::Regular,
            0o4755,
            None,
            b"binary",
        );
        t.entry(
            "./usr/bin/again",
            EntryType::Link,
            0o4755,
            Some("./usr/bin/passwd"),
            b"",
        );
        t.entry("./tmp/", EntryType::Directory, 0o1777, None, b"");
        t.entry("./bin", EntryType::Symlink, 0o777, Some("usr/bin"), b"");
        t.entry("./dev/", EntryType::Directory, 0o755, None, b"");
        t.entry("./dev/fifo", EntryType::Fifo, 0o600, None, b"");
        let (dir, result) = unpack_bytes(&t.bytes());
        result.unwrap();
        let root = dir.path().join("root");
        let passwd = std::fs::metadata(root.join("usr/bin/passwd")).unwrap();
        assert_eq!(passwd.permissions().mode() & 0o7777, 0o4755);
        if rustix::process::geteuid().is_root() {
            assert_eq!((passwd.uid(), passwd.gid()), (1234, 4321));
        }
        assert_eq!(passwd.mtime(), 1_700_000_000);
        assert_eq!(passwd.nlink(), 2);
        let tmp = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(tmp.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        let fifo = std::fs::symlink_metadata(root.join("dev/fifo")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(fifo.file_type().is_fifo());
    }

    #[test]
    fn refuses_dotdot_names() {
        let mut t = Tar::new();
        t.entry("../escape", EntryType::Regular, 0o644, None, b"x");
        let (dir, result) = unpack_bytes(&t.bytes());
        let msg = format!("{:#}", result.unwrap_err());
        assert!(msg.contains("`..`"), "{msg}");
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn strips_absolute_names_into_the_tree() {
        let mut t = Tar::new();
        t.entry("/etc/abs", EntryType::Regular, 0o644, None, b"x");
        let (dir, result) = unpack_bytes(&t.bytes());
        result.unwrap();
        assert!(dir.path().join("root/etc/abs").is_file());
    }

    #[test]
    fn refuses_writes_through_a_planted_symlink() {
        for target in ["/tmp", "../..", ".."] {
            let outside = tempfile::tempdir().unwrap();
            let mut t = Tar::new();
            let absolute = outside.path().to_str().unwrap().to_string();
            let link = if target == "/tmp" {
                absolute.as_str()
            } else {
                target
            };
            t.entry("evil", EntryType::Symlink, 0o777, Some(link), b"");
            t.entry("evil/planted", EntryType::Regular, 0o644, None, b"owned");
            let (dir, result) = unpack_bytes(&t.bytes());
            let msg = format!("{:#}", result.unwrap_err());
            assert!(
                msg.contains("refusing archive entry `evil/planted`"),
                "symlink to {link}: {msg}"
            );
            assert!(!outside.path().join("planted").exists());
            assert!(!dir.path().join("planted").exists());
        }
    }

    #[test]
    fn refuses_hardlinks_out_of_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "host file").unwrap();
        for target in [
            victim.to_str().unwrap().to_string(),
            "../../victim".to_string(),
        ] {
            let mut t = Tar::new();
            t.entry("link", EntryType::Link, 0o644, Some(&target), b"");
            let (_dir, result) = unpack_bytes(&t.bytes());
            let msg = format!("{:#}", result.unwrap_err());
            assert!(
                msg.contains("refusing archive entry `link`"),
                "hardlink to {target}: {msg}"
            );
        }
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
    }

    #[test]
    fn refuses_device_nodes_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        t.entry(
            "d",
            EntryType::Symlink,
            0o777,
            Some(outside.path().to_str().unwrap()),
            b"",
        );
        t.entry("d/fifo", EntryType::Fifo, 0o644, None, b"");
        let (_dir, result) = unpack_bytes(&t.bytes());
        let msg = format!("{:#}", result.unwrap_err());
        assert!(msg.contains("leads outside the root"), "{msg}");
        assert!(!outside.path().join("fifo").exists());
    }

    #[test]
    fn truncated_and_random_archives_fail_clearly() {
        let mut t = Tar::new();
        t.entry("big", EntryType::Regular, 0o644, None, &vec![7u8; 100_000]);
        let bytes = t.bytes();
        let (_d, result) = unpack_bytes(&bytes[..50_000]);
        let msg = format!("{:#}", result.unwrap_err());
        assert!(msg.contains("corrupt or truncated"), "{msg}");
        let noise: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (_d, result) = unpack_bytes(&noise);
        let msg = format!("{:#}", result.unwrap_err());
        assert!(
            msg.contains("check that it is a complete tar file"),
            "{msg}"
        );
    }

    #[test]
    fn sanitize_rules() {
        assert_eq!(sanitize_name(b"./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(
            sanitize_name(b"/a//b/").unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(sanitize_name(b"./").unwrap(), None);
        let err = sanitize_name(b"a/../../b").unwrap_err().to_string();
        assert!(err.contains("climbs out of the root"), "{err}");
        assert_eq!(
            sanitize_name(b"we\nird\xff").unwrap(),
            Some(PathBuf::from(std::ffi::OsStr::from_bytes_compat(
                b"we\nird\xff"
            )))
        );
    }

    trait FromBytesCompat {
        fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
    }
    impl FromBytesCompat for std::ffi::OsStr {
        fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(b)
        }
    }
}
