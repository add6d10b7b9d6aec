//! Tar as c2vm reads and writes it: entry names as keys, an entry's metadata read from its
//! header, and the headers c2vm writes itself. The stream edit (`rootfs::edit`), the unpacker
//! (`rootfs::unpack`) and the layer merge (`source::layers`) all go by these rules.
use anyhow::{anyhow, bail, Result};
use std::io::Read;
use tar::{EntryType, Header};

/// Tar's record: headers and data fill whole records.
const RECORD: usize = 512;
/// The end of an archive: two zero records.
pub const END: [u8; 2 * RECORD] = [0; 2 * RECORD];
/// A header's name and link fields hold this many bytes; longer values need an extension.
const NAME_FIELD: usize = 100;

/// Zeros that pad `len` bytes of data to whole records.
pub fn padding(len: u64) -> &'static [u8] {
    &END[..(RECORD - (len % RECORD as u64) as usize) % RECORD]
}

/// An entry's raw name, and how messages show it.
pub fn entry_name<R: Read>(entry: &tar::Entry<R>) -> (Vec<u8>, String) {
    let raw = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw).escape_debug().to_string();
    (raw, shown)
}

/// A name as a key (a guest path without the leading `/`): empty and `.` parts dropped, so a
/// leading `/` or `./`, doubled and trailing `/` go (as GNU tar does). `..` parts are kept, for
/// the caller to refuse ([`sanitize`]) or leave to the stream edit (the layer merge).
pub fn key(raw: &[u8]) -> Vec<u8> {
    raw.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// Refuse a key with a `..` part: it would climb out of the root.
pub fn refuse_dotdot(key: &[u8]) -> Result<()> {
    if key.split(|b| *b == b'/').any(|p| p == b"..") {
        bail!("the name climbs out of the root with `..`");
    }
    Ok(())
}

/// A name as a key ([`key`]), checked: a NUL byte or a `..` part refused. `None` for the root
/// itself (`./`).
pub fn sanitize(raw: &[u8]) -> Result<Option<Vec<u8>>> {
    if raw.contains(&0) {
        bail!("the name has a NUL byte");
    }
    let key = key(raw);
    refuse_dotdot(&key)?;
    Ok((!key.is_empty()).then_some(key))
}

pub fn corrupt(e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!("the archive is corrupt or truncated ({e}); check that it is a complete tar file")
}

/// An entry's owner, mode and mtime as c2vm reads them: a blank or broken field reads as 0
/// (the mode as 0644), in every reader, so the merge and the edit agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// As in the header, file type bits included where the archive gives them.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Stat {
    pub fn of(header: &Header) -> Stat {
        Stat {
            mode: header.mode().unwrap_or(0o644),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
        }
    }
}

/// The GNU header of an entry c2vm writes: its type, `stat` and size. Name, link target and
/// checksum are the writer's: [`tar::Builder`] sets them, or [`raw_head`].
pub fn header(kind: EntryType, stat: &Stat, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(stat.mode);
    h.set_uid(stat.uid);
    h.set_gid(stat.gid);
    h.set_mtime(stat.mtime);
    h.set_size(size);
    h
}

/// `header` with `name` and `link` written verbatim, as [`tar::Builder`] will not (it refuses
/// `..`, which the layer merge leaves for the stream edit to refuse): a name or link longer
/// than its field goes first in a GNU long-name extension (`././@LongLink`). Returns the bytes
/// that precede the entry's data.
pub fn raw_head(mut header: Header, name: &[u8], link: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut long = |kind: EntryType, value: &[u8]| {
        let mut h = Header::new_gnu();
        put(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(value.len() as u64 + 1);
        h.set_cksum();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(value);
        bytes.push(0);
        bytes.extend_from_slice(padding(value.len() as u64 + 1));
    };
    if name.len() > NAME_FIELD {
        long(EntryType::GNULongName, name);
    }
    if let Some(link) = link.filter(|l| l.len() > NAME_FIELD) {
        long(EntryType::GNULongLink, link);
    }
    put(&mut header.as_old_mut().name, name);
    if let Some(link) = link {
        put(&mut header.as_old_mut().linkname, link);
    }
    header.set_cksum();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Copy into a fixed header field, cut to its length (a long value has its own extension).
fn put(field: &mut [u8], value: &[u8]) {
    let n = field.len().min(value.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// A PAX extended header carrying the next entry's xattrs (`SCHILY.xattr.NAME`, as GNU tar and
/// Docker write them), and its records.
pub fn pax_xattrs(xattrs: &[(String, Vec<u8>)]) -> Result<(Header, Vec<u8>)> {
    let mut records = Vec::new();
    for (name, value) in xattrs {
        let body_len = " SCHILY.xattr.".len() + name.len() + 1 + value.len() + 1;
        // The record's length counts its own digits.
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        records.extend_from_slice(format!("{len} SCHILY.xattr.{name}=").as_bytes());
        records.extend_from_slice(value);
        records.push(b'\n');
    }
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_path("././@PaxHeader")?;
    h.set_mode(0o644);
    h.set_size(records.len() as u64);
    h.set_cksum();
    Ok((h, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_keys() {
        assert_eq!(key(b"./a//b/./c/"), b"a/b/c");
        assert_eq!(key(b"/../x"), b"../x"); // kept for the stream edit to refuse
        assert_eq!(
            sanitize(b"/etc/./hostname").unwrap(),
            Some(b"etc/hostname".to_vec())
        );
        assert_eq!(sanitize(b"./").unwrap(), None);
        let err = sanitize(b"a/../../b").unwrap_err().to_string();
        assert!(err.contains("climbs out of the root"), "{err}");
        let err = sanitize(b"a\0b").unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
        assert_eq!(sanitize(b"...").unwrap(), Some(b"...".to_vec()));
    }

    #[test]
    fn raw_heads_with_long_names_read_back() {
        let name = [b"d/".as_slice(), &[b'n'; 150], b"/.."].concat();
        let link = [b'l'; 120];
        let stat = Stat {
            mode: 0o4755,
            uid: 1000,
            gid: 50,
            mtime: 1_600_000_000,
        };
        let mut bytes = raw_head(header(EntryType::Link, &stat, 0), &name, Some(&link));
        bytes.extend_from_slice(&END);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<_> = archive.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.path_bytes().as_ref(), name.as_slice());
        assert_eq!(entry.link_name_bytes().unwrap().as_ref(), link.as_slice());
        assert_eq!(Stat::of(entry.header()), stat);
        assert_eq!(padding(0).len() + padding(512).len(), 0);
        assert_eq!(padding(1).len(), 511);
    }

    #[test]
    fn xattrs_read_back_from_the_pax_header() {
        let xattrs = vec![
            ("user.a".to_string(), b"x".to_vec()),
            ("security.capability".to_string(), vec![1, 0, 0, 2, 0]),
        ];
        let (pax, records) = pax_xattrs(&xattrs).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&pax, records.as_slice()).unwrap();
        let mut h = header(EntryType::Regular, &Stat::of(&tar::Header::new_gnu()), 0);
        b.append_data(&mut h, "f", std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let got: Vec<(String, Vec<u8>)> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let key = e.key().unwrap().trim_start_matches("SCHILY.xattr.");
                (key.to_string(), e.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(got, xattrs);
    }
}
