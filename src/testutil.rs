//! Test helpers for the unit tests, and for tests/common, which includes this file by path (the
//! integration tests cannot reach `#[cfg(test)]` items): so it uses nothing of the crate.
// Each side uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A tar archive built entry by entry, names and link targets written as given: hostile ones
/// included (`..`, absolute links, bytes that are not UTF-8), which the tar crate's checked
/// builder methods would refuse or rewrite. Every entry has the archive's owner and mtime
/// (root, 1_700_000_000 unless set).
pub struct Tar {
    builder: tar::Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Longest name or link target a GNU header holds; longer ones get the tar crate's long-name
/// entries.
const HEADER_NAME: usize = 100;

impl Default for Tar {
    fn default() -> Tar {
        Tar::new()
    }
}

impl Tar {
    pub fn new() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
        }
    }

    /// The owner of every entry from here on.
    pub fn owner(mut self, uid: u64, gid: u64) -> Tar {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The mtime of every entry from here on.
    pub fn mtime(mut self, mtime: u64) -> Tar {
        self.mtime = mtime;
        self
    }

    /// A GNU header with the archive's owner and mtime, and no name yet.
    pub fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h
    }

    /// Any entry: `name` and `link` verbatim (as GNU long names where a header cannot hold them).
    pub fn entry(
        &mut self,
        name: impl AsRef<[u8]>,
        kind: tar::EntryType,
        mode: u32,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Tar {
        let name = name.as_ref();
        let mut h = self.header(kind, mode, data.len() as u64);
        if name.len() <= HEADER_NAME && link.is_none_or(|l| l.len() <= HEADER_NAME) {
            let gnu = h.as_gnu_mut().expect("a GNU header");
            gnu.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            self.builder.append(&h, data).unwrap();
        } else {
            let path = Path::new(OsStr::from_bytes(name));
            match link {
                Some(l) => self.builder.append_link(&mut h, path, l),
                None => self.builder.append_data(&mut h, path, data),
            }
            .unwrap();
        }
        self
    }

    /// A directory, mode 0755 (`name` ends with `/` as tar writes them).
    pub fn dir(&mut self, name: &str) -> &mut Tar {
        self.entry(name, tar::EntryType::Directory, 0o755, None, b"")
    }

    /// A regular file, mode 0644.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.entry(name, tar::EntryType::Regular, 0o644, None, data)
    }

    /// A symlink to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.entry(name, tar::EntryType::Symlink, 0o644, Some(target), b"")
    }

    /// A hardlink to the earlier entry `target`.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.entry(name, tar::EntryType::Link, 0o644, Some(target), b"")
    }

    /// A device node (`kind` Block or Char), `major:minor`.
    pub fn device(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        (major, minor): (u32, u32),
        mode: u32,
    ) -> &mut Tar {
        let mut h = self.header(kind, mode, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_path(name).unwrap();
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    /// A regular file whose name a PAX extended header carries, its ustar header naming
    /// `placeholder` (what a reader that ignores PAX would see).
    pub fn pax_file(&mut self, name: &str, placeholder: &str, data: &[u8]) -> &mut Tar {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_path(placeholder).unwrap();
        h.set_cksum();
        self.builder
            .append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        self.builder.append(&h, data).unwrap();
        self
    }

    /// The archive so far, closed with its end-of-archive blocks; the builder starts afresh.
    pub fn bytes(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }

    /// The archive so far, written to `path`.
    pub fn write(&mut self, path: &Path) {
        std::fs::write(path, self.bytes())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}
