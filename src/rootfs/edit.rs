//! The stream edit: the image's tar stream goes through c2vm once, on its way to `mke2fs -d -`
//! (or to the safe unpacker where mke2fs is too old). Most entries pass straight on. The few that
//! guest setup changes or removes (`/etc`, container leftovers) are held back until the stream
//! ends; those it only reads (unit files, the kernel and initramfs) are copied as they pass. At
//! the end, setup runs on the [`GuestTree`] and its result follows as more entries: a later entry
//! of a name replaces the earlier one in both consumers.
//!
//! The hostile-archive policy is applied here, before any consumer sees an entry: a `..` name, a
//! hardlink to a name outside the tree, and an entry through a symlink that leaves the tree refuse
//! the whole archive; an entry through a symlink inside the tree is renamed to where it lands.
use super::tree::{show, Follow, GuestTree, Kind, Last, Meta, Missing, Node, State};
use crate::rootfs::usage::TreeUsage;
use crate::tar_rules::{self, corrupt, entry_name, sanitize, Stat};
use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::sync::Arc;
use tar::EntryType;

/// Files larger than this are never held or copied: setup reads only small text files.
const HOLD_LIMIT: u64 = 1 << 20;
/// All held and copied contents together, but the kernel and initramfs.
const HOLD_BUDGET: u64 = 256 << 20;
/// The kernel and initramfs files copied for the ESP.
const BOOT_BUDGET: u64 = 512 << 20;
/// A package database copied for the SBOM: dpkg's status outgrows [`HOLD_LIMIT`] on big images
/// (about 3 MiB with a desktop), so these have their own, larger allowance.
const RECORD_LIMIT: u64 = 64 << 20;
/// All package databases together.
const RECORD_BUDGET: u64 = 128 << 20;

/// Which entries the edit holds back or copies, by key (guest path without the leading `/`).
pub struct Policy {
    /// Held until the stream ends: guest setup may change or remove them.
    pub hold: fn(&[u8]) -> bool,
    /// Copied as they pass: guest setup reads them.
    pub copy: fn(&[u8]) -> bool,
    /// Copied as they pass, whatever their size: the kernel and initramfs for the ESP.
    pub boot: fn(&[u8]) -> bool,
    /// On the ESP only, which the guest mounts at `/boot`: copied as they pass, whatever their
    /// size, and never written into the filesystem (where the mount would hide them).
    pub esp: fn(&[u8]) -> bool,
    /// Copied as they pass, up to [`RECORD_LIMIT`] each: what the SBOM reads (the package
    /// databases, os-release).
    pub records: fn(&[u8]) -> bool,
    /// With SOURCE_DATE_EPOCH: no timestamp after it (clamped, as reproducible tar does).
    pub clamp_mtime: Option<u64>,
    /// mtime of what setup writes.
    pub now: u64,
}

/// What the edit saw, beside setup's own result.
pub struct Edited<T> {
    pub value: T,
    pub tree: GuestTree,
    /// What the filesystem must hold, counted as entries went out.
    pub usage: TreeUsage,
    /// Things left out, for the user to know (sockets, unknown entry types).
    pub notes: Vec<String>,
    /// Xattrs mke2fs's tar reader does not copy (it keeps `security.capability` only), by key,
    /// for the disk stage to set after it: `(key, name, value)`.
    pub other_xattrs: Vec<(Vec<u8>, String, Vec<u8>)>,
}

/// The xattrs `mke2fs -d` copies from a tar archive (e2fsprogs' create_inode_libarchive.c).
const MKE2FS_XATTRS: &[&str] = &["security.capability", "gnu.translator"];

/// Read `source`, write the edited stream to `sink`, and run `setup` on the tree once the
/// source has ended.
/// A second stream whose entries join the image's, e.g. a kernel bundle's `/boot` and modules:
/// asked for once the image's stream has ended (the choice may depend on what the image holds).
pub struct JoinedStream<'a> {
    pub stream: Box<dyn Read + 'a>,
    /// Which of its entries (by name) to take.
    pub keep: Keep<'a>,
    /// Whether they go into the filesystem too, or are only kept in the tree (a kernel the ESP
    /// needs but the guest's init never updates).
    pub emit: bool,
}

/// A filter on entry names.
pub type Keep<'a> = Box<dyn Fn(&[u8]) -> bool + 'a>;

/// Asked once the image's stream has ended: another stream to take entries from, if any.
pub type MoreEntries<'a, 'b> =
    &'b mut dyn FnMut(&mut GuestTree) -> Result<Option<JoinedStream<'a>>>;

pub fn edit<T>(
    source: impl Read,
    sink: impl Write,
    policy: &Policy,
    setup: impl FnOnce(&mut GuestTree) -> Result<T>,
) -> Result<Edited<T>> {
    edit_with(source, sink, policy, &mut |_| Ok(None), setup)
}

/// [`edit`], with entries from a second stream after the image's.
pub fn edit_with<'a, T>(
    source: impl Read + 'a,
    sink: impl Write,
    policy: &Policy,
    more: MoreEntries<'a, '_>,
    setup: impl FnOnce(&mut GuestTree) -> Result<T>,
) -> Result<Edited<T>> {
    let mut editor = Editor {
        out: Output::new(sink),
        tree: GuestTree::new(policy.now),
        policy,
        held: Vec::new(),
        kept_bytes: 0,
        boot_bytes: 0,
        record_bytes: 0,
        skipped: Vec::new(),
    };
    let image = JoinedStream {
        stream: Box::new(source),
        keep: Box::new(|_| true),
        emit: true,
    };
    if editor.take_all(image)? == 0 {
        bail!("the archive is empty: it holds no root filesystem");
    }
    if let Some(extra) = more(&mut editor.tree)? {
        editor.take_all(extra)?;
    }
    let value = setup(&mut editor.tree)?;
    editor.finish(value)
}

/// Which allowance a kept file counts against.
#[derive(Clone, Copy)]
enum Budget {
    Setup,
    Boot,
    Records,
}

/// The stream edit's state while entries pass.
struct Editor<'p, W: Write> {
    out: Output<W>,
    tree: GuestTree,
    policy: &'p Policy,
    /// Held back for setup, written after it.
    held: Vec<Vec<u8>>,
    /// Bytes kept in memory for setup, and for the ESP.
    kept_bytes: u64,
    boot_bytes: u64,
    record_bytes: u64,
    /// Entries a filesystem cannot hold, for the notes.
    skipped: Vec<String>,
}

impl<W: Write> Editor<'_, W> {
    /// Every entry of one stream that `keep` takes; returns how many were taken.
    fn take_all(&mut self, JoinedStream { stream, keep, emit }: JoinedStream) -> Result<u64> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .context("reading the root filesystem archive")?;
        let mut taken = 0;
        for entry in entries {
            crate::interrupt::check()?;
            let mut entry = entry.map_err(|e| corrupt(&e))?;
            let (raw_name, shown) = entry_name(&entry);
            let refuse = || format!("refusing archive entry `{shown}`");
            let Some(name) = sanitize(&raw_name).with_context(refuse)? else {
                continue; // the root itself (`./`); mke2fs makes it root's
            };
            if !keep(&name) {
                continue;
            }
            if self.take(&mut entry, &name, &shown, emit)? {
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// One entry: into the tree, and out to the sink unless it is held or kept for the ESP
    /// only. False where it was left out.
    fn take<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        name: &[u8],
        shown: &str,
        emit: bool,
    ) -> Result<bool> {
        let refuse = || format!("refusing archive entry `{shown}`");
        let Some(kind) = self.kind(entry, shown)? else {
            return Ok(false);
        };
        let stat = Stat::of(entry.header());
        if stat.mode & 0o170000 == 0o140000 {
            self.skipped.push(format!(
                "{shown} (a socket: programs make their own at run time)"
            ));
            return Ok(false);
        }
        let meta = self.meta(entry, &stat)?;
        let size = if kind == Kind::File { entry.size() } else { 0 };
        let key = self.place(name, &kind).with_context(refuse)?;
        self.emit_created_dirs()?;

        let policy = self.policy;
        let esp = kind != Kind::Dir && (policy.esp)(&key);
        // A hardlink from the filesystem to a file on the ESP: the filesystem gets a copy.
        let (kind, esp_copy) = match kind {
            Kind::Hardlink(t) if !esp && (policy.esp)(&t) => {
                (Kind::File, self.tree.get(&t).and_then(|n| n.data.clone()))
            }
            kind => (kind, None),
        };
        let hardlink_to_held = matches!(&kind, Kind::Hardlink(t) if self.tree.get(t).is_some_and(|n| n.state == State::Held));
        let hold = !esp
            && kind != Kind::Dir
            && size <= HOLD_LIMIT
            && ((policy.hold)(&key) || hardlink_to_held);
        let boot = kind == Kind::File && (esp || (policy.boot)(&key));
        let copy = kind == Kind::File && size <= HOLD_LIMIT && (policy.copy)(&key);
        // Past its allowance a database is not kept (the SBOM says so), never a failed disk.
        let record = kind == Kind::File
            && size <= RECORD_LIMIT
            && self.record_bytes + size <= RECORD_BUDGET
            && (policy.records)(&key);
        let budget = match (boot, hold || copy) {
            (true, _) => Budget::Boot,
            (false, true) => Budget::Setup,
            (false, false) => Budget::Records,
        };
        let data = match (esp_copy, hold || copy || boot || record) {
            (Some(data), _) => Some(data),
            (None, true) => Some(self.read_data(entry, size, budget, shown)?),
            (None, false) => None,
        };
        let mut node = Node::new(kind, meta, data);
        if node.data.is_none() {
            node.size = size;
        }
        if hold {
            node.state = State::Held;
            self.held.push(key.clone());
        } else if !emit || esp {
            // Kept for the ESP only: the tree knows it, the filesystem never sees it.
        } else {
            match &node.data {
                Some(data) => self.out.entry(&key, &node, &mut data.as_ref())?,
                None => self.out.entry(&key, &node, entry)?,
            }
            if node.data.is_none() || !(copy || boot || record) {
                node.data = None;
            }
        }
        self.tree.insert(key, node);
        Ok(true)
    }

    /// What the entry is; None for what a filesystem cannot hold (noted) and PAX headers.
    fn kind<R: Read>(&mut self, entry: &tar::Entry<R>, shown: &str) -> Result<Option<Kind>> {
        let refuse = || format!("refusing archive entry `{shown}`");
        let header = entry.header();
        Ok(Some(match header.entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(
                entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("a symlink without a target"))
                    .with_context(refuse)?
                    .into_owned(),
            ),
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| anyhow!("a hardlink without a target"))
                    .with_context(refuse)?;
                let target = sanitize(&target)
                    .with_context(refuse)?
                    .ok_or_else(|| anyhow!("a hardlink to the root directory"))
                    .with_context(refuse)?;
                let tree = &mut self.tree;
                let target = tree
                    .resolve(&target, Follow::Strict, Last::Keep, Missing::Fail)
                    .with_context(refuse)?
                    .filter(|k| tree.get(k).is_some_and(|n| n.kind != Kind::Dir))
                    .ok_or_else(|| anyhow!("a hardlink to a file not earlier in the archive"))
                    .with_context(refuse)?;
                Kind::Hardlink(target)
            }
            EntryType::Char | EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                match header.entry_type() {
                    EntryType::Char => Kind::Char(major, minor),
                    _ => Kind::Block(major, minor),
                }
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::XGlobalHeader | EntryType::XHeader => return Ok(None),
            other => {
                self.skipped
                    .push(format!("{shown} (tar type {:?})", other.as_byte() as char));
                return Ok(None);
            }
        }))
    }

    /// Owner, mode, mtime (clamped under SOURCE_DATE_EPOCH) and the PAX xattrs.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<R>, stat: &Stat) -> Result<Meta> {
        let mut mtime = stat.mtime;
        if let Some(limit) = self.policy.clamp_mtime {
            mtime = mtime.min(limit);
        }
        let mut meta = Meta {
            mode: stat.mode & 0o7777,
            uid: stat.uid,
            gid: stat.gid,
            mtime,
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(|e| corrupt(&e))? {
            for ext in pax {
                let ext = ext.map_err(|e| corrupt(&e))?;
                if let Some(attr) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    meta.xattrs
                        .push((attr.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(meta)
    }

    /// Where the entry lands: its directories resolved through links inside the tree, the
    /// ones the archive left out made (see [`Editor::emit_created_dirs`]). Refuses to turn a directory into a
    /// file or back; a repeated name is the later entry's.
    fn place(&mut self, name: &[u8], kind: &Kind) -> Result<Vec<u8>> {
        let (parent, base) = match name.iter().rposition(|b| *b == b'/') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => (&b""[..], name),
        };
        // Directories the archive leaves out are made (0755, root's), as tar -x does; mke2fs
        // needs each one before what it holds.
        let parent_key = self
            .tree
            .resolve(parent, Follow::Strict, Last::Follow, Missing::Create)?
            .ok_or_else(|| anyhow!("its directory is not a directory"))?;
        let key = if parent_key.is_empty() {
            base.to_vec()
        } else {
            [parent_key.as_slice(), b"/", base].concat()
        };
        match self.tree.get(&key) {
            Some(n) if n.kind == Kind::Dir && *kind != Kind::Dir => {
                bail!("it would replace a directory that earlier entries made with a non-directory")
            }
            Some(n) if n.kind != Kind::Dir && *kind == Kind::Dir => {
                bail!("it would replace a file that an earlier entry made with a directory")
            }
            Some(n) if *kind != Kind::Dir && n.state == State::Held => {
                self.held.retain(|k| *k != key); // a repeated name: the later entry wins
            }
            _ => {}
        }
        Ok(key)
    }

    /// The directories [`Editor::place`] made, written before what they hold.
    fn emit_created_dirs(&mut self) -> Result<()> {
        for dir in self.tree.take_created() {
            if let Some(node) = self.tree.get_mut(&dir) {
                node.state = State::Passed;
                node.meta.mtime = self.policy.clamp_mtime.unwrap_or(self.policy.now);
                let node = node.clone();
                self.out.entry(&dir, &node, &mut std::io::empty())?;
            }
        }
        Ok(())
    }

    /// The entry's data, kept in memory for setup, the ESP or the SBOM, within their budgets.
    fn read_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        size: u64,
        budget: Budget,
        shown: &str,
    ) -> Result<Arc<[u8]>> {
        let (budget, limit) = match budget {
            Budget::Boot => (&mut self.boot_bytes, BOOT_BUDGET),
            Budget::Setup => (&mut self.kept_bytes, HOLD_BUDGET),
            Budget::Records => (&mut self.record_bytes, RECORD_BUDGET),
        };
        *budget += size;
        if *budget > limit {
            bail!("the image holds more than {} MiB in files guest setup must keep in memory (at `{shown}`); c2vm cannot convert it", limit >> 20);
        }
        let mut buf = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut buf)
            .map_err(|e| corrupt(&e))
            .with_context(|| format!("reading `{shown}`"))?;
        Ok(Arc::from(buf))
    }

    /// After setup: what was held back, then what setup wrote, then the end of the archive.
    fn finish<T>(mut self, value: T) -> Result<Edited<T>> {
        let tree = &self.tree;
        for key in &self.held {
            if let Some(node) = tree.get(key).filter(|n| n.state == State::Held) {
                if let Kind::Hardlink(target) = &node.kind {
                    if tree.get(target).is_none() {
                        bail!(
                            "guest setup removed /{}, which /{} is a hardlink to",
                            show(target),
                            show(key)
                        );
                    }
                }
                let data = node.data.clone().unwrap_or_else(|| Arc::from(Vec::new()));
                self.out.entry(key, node, &mut data.as_ref())?;
            }
        }
        for (key, node) in tree.edited() {
            let data = node.data.clone().unwrap_or_else(|| Arc::from(Vec::new()));
            self.out.entry(key, node, &mut data.as_ref())?;
        }
        let other_xattrs = std::mem::take(&mut self.out.other_xattrs);
        let usage = self.out.finish()?;
        let notes = match self.skipped.len() {
            0 => Vec::new(),
            n => vec![format!(
                "left out {n} archive entr{} a filesystem cannot hold: {}",
                if n == 1 { "y" } else { "ies" },
                self.skipped
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        };
        Ok(Edited {
            value,
            tree: self.tree,
            usage,
            notes,
            other_xattrs,
        })
    }
}

/// The edited stream: GNU tar entries (long names as GNU extensions, xattrs as PAX records),
/// which libarchive (mke2fs) and the tar crate (the unpacker) both read.
struct Output<W: Write> {
    builder: tar::Builder<W>,
    usage: TreeUsage,
    other_xattrs: Vec<(Vec<u8>, String, Vec<u8>)>,
}

impl<W: Write> Output<W> {
    fn new(sink: W) -> Output<W> {
        let mut builder = tar::Builder::new(sink);
        builder.mode(tar::HeaderMode::Complete);
        Output {
            builder,
            usage: TreeUsage::root(),
            other_xattrs: Vec::new(),
        }
    }

    fn entry(&mut self, key: &[u8], node: &Node, data: &mut dyn Read) -> Result<()> {
        self.write(key, node, data)
            .with_context(|| format!("writing /{} into the disk's root filesystem", show(key)))
    }

    fn write(&mut self, key: &[u8], node: &Node, data: &mut dyn Read) -> Result<()> {
        let path = bytes_path(key);
        if !node.meta.xattrs.is_empty() {
            let (h, records) = tar_rules::pax_xattrs(&node.meta.xattrs)?;
            self.builder.append(&h, records.as_slice())?;
            for (name, value) in &node.meta.xattrs {
                if !MKE2FS_XATTRS.contains(&name.as_str()) {
                    self.other_xattrs
                        .push((key.to_vec(), name.clone(), value.clone()));
                }
            }
        }
        let stat = Stat {
            mode: node.meta.mode,
            uid: node.meta.uid,
            gid: node.meta.gid,
            mtime: node.meta.mtime,
        };
        let header = |kind, size| {
            let mut h = tar_rules::header(kind, &stat, size);
            // mke2fs takes atime and ctime from the entry too; unset, they would read 1970.
            if let Some(gnu) = h.as_gnu_mut() {
                gnu.set_atime(stat.mtime);
                gnu.set_ctime(stat.mtime);
            }
            h
        };
        let empty = std::io::empty;
        match &node.kind {
            Kind::File => {
                self.usage.add_file(node.size);
                let mut h = header(EntryType::Regular, node.size);
                self.builder.append_data(&mut h, path, data)?;
            }
            Kind::Dir => {
                self.usage.add_dir();
                let mut h = header(EntryType::Directory, 0);
                self.builder.append_data(&mut h, path, empty())?;
            }
            Kind::Symlink(target) => {
                self.usage.add_symlink(target.len() as u64);
                let mut h = header(EntryType::Symlink, 0);
                self.builder.append_link(&mut h, path, bytes_path(target))?;
            }
            Kind::Hardlink(target) => {
                // Another name, not another inode: nothing to count.
                let mut h = header(EntryType::Link, 0);
                self.builder.append_link(&mut h, path, bytes_path(target))?;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                self.usage.add_inode(0);
                let kind = match node.kind {
                    Kind::Char(..) => EntryType::Char,
                    _ => EntryType::Block,
                };
                let mut h = header(kind, 0);
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                self.builder.append_data(&mut h, path, empty())?;
            }
            Kind::Fifo => {
                self.usage.add_inode(0);
                let mut h = header(EntryType::Fifo, 0);
                self.builder.append_data(&mut h, path, empty())?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<TreeUsage> {
        let usage = self.usage;
        let mut sink = self
            .builder
            .into_inner()
            .context("ending the root filesystem stream")?;
        sink.flush().context("ending the root filesystem stream")?;
        Ok(usage)
    }
}

/// A key or link target as the path [`tar::Builder`] takes.
fn bytes_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// For tests elsewhere: run `setup` as an edit of the directory `src` (tarred), and unpack the
/// edited stream into a new directory, as the staging path does.
#[cfg(test)]
pub(crate) fn edit_dir<T>(
    src: &std::path::Path,
    setup: impl FnOnce(&mut GuestTree) -> Result<T>,
) -> (tempfile::TempDir, Result<T>) {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", src).unwrap();
    let source = b.into_inner().unwrap();
    let policy = Policy {
        hold: super::setup::holds,
        copy: super::init::systemd::reads,
        boot: super::boot_files::is_candidate,
        esp: super::boot_files::on_esp,
        records: |_| false,
        clamp_mtime: None,
        now: 1_700_000_000,
    };
    let mut out = Vec::new();
    let dest = tempfile::tempdir().unwrap();
    match edit(source.as_slice(), &mut out, &policy, setup) {
        Ok(edited) => {
            super::unpack::unpack(out.as_slice(), dest.path()).unwrap();
            (dest, Ok(edited.value))
        }
        Err(e) => (dest, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tar;

    fn policy() -> Policy {
        Policy {
            hold: |k| k.starts_with(b"etc/"),
            copy: |k| k.starts_with(b"usr/lib/systemd/system/"),
            boot: |k| k.starts_with(b"boot/vmlinuz"),
            esp: |_| false,
            records: |k| k == b"var/lib/dpkg/status",
            clamp_mtime: None,
            now: 1_700_000_000,
        }
    }

    fn names(stream: &[u8]) -> Vec<(String, EntryType)> {
        let mut a = tar::Archive::new(stream);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn held_entries_follow_the_rest_with_setups_edits() {
        let mut t = Tar::new();
        t.dir("./")
            .dir("./etc/")
            .file("./etc/hostname", b"")
            .file("./etc/gone", b"x")
            .dir("./usr/")
            .dir("./usr/bin/")
            .entry("./usr/bin/su", EntryType::Regular, 0o4755, None, b"elf")
            .hardlink("./usr/bin/su2", "usr/bin/su");
        let mut out = Vec::new();
        let edited = edit(t.bytes().as_slice(), &mut out, &policy(), |tree| {
            tree.write(
                "/etc/hostname",
                b"vm\n",
                super::super::tree::Perms::root(0o644),
            )?;
            tree.remove("/etc/gone")?;
            tree.write(
                "/usr/bin/su",
                b"new",
                super::super::tree::Perms::root(0o755),
            )
        })
        .unwrap();
        let got = names(&out);
        let order: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            order,
            [
                "etc",
                "usr",
                "usr/bin",
                "usr/bin/su",
                "usr/bin/su2",
                "etc/hostname",
                "usr/bin/su"
            ]
        );
        assert_eq!(edited.usage.inodes, 1 + 5 + 2 - 1);
        // Held, then re-emitted with setup's contents; a passed entry replaced by a later one.
        let mut a = tar::Archive::new(out.as_slice());
        let mut hostname = None;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path_bytes().as_ref() == b"etc/hostname" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                hostname = Some((s, e.header().mode().unwrap()));
            }
        }
        assert_eq!(hostname, Some(("vm\n".to_string(), 0o644)));
    }

    /// A package database past the 1 MiB of setup's files is still kept whole for the SBOM, and
    /// still goes into the filesystem; a larger file that only setup would copy is not kept.
    #[test]
    fn package_databases_are_kept_past_the_hold_limit() {
        let status = vec![b'x'; (HOLD_LIMIT + 10) as usize];
        let unit = vec![b'u'; (HOLD_LIMIT + 10) as usize];
        let mut t = Tar::new();
        t.dir("./")
            .dir("./var/")
            .dir("./var/lib/")
            .dir("./var/lib/dpkg/")
            .file("./var/lib/dpkg/status", &status)
            .dir("./usr/")
            .dir("./usr/lib/")
            .dir("./usr/lib/systemd/")
            .dir("./usr/lib/systemd/system/")
            .file("./usr/lib/systemd/system/big.service", &unit);
        let mut out = Vec::new();
        let edited = edit(t.bytes().as_slice(), &mut out, &policy(), |_| Ok(())).unwrap();
        let kept = edited.tree.contents(b"var/lib/dpkg/status").unwrap();
        assert_eq!(kept.len(), status.len());
        assert!(edited
            .tree
            .contents(b"usr/lib/systemd/system/big.service")
            .is_none());
        assert!(names(&out).contains(&("var/lib/dpkg/status".to_string(), EntryType::Regular)));
    }

    /// /boot's files go to the ESP only: kept in the tree with their contents, never in the
    /// filesystem's stream; a hardlink from outside /boot to one of them becomes a copy there.
    #[test]
    fn boot_files_stay_out_of_the_filesystem_and_keep_their_contents() {
        let mut t = Tar::new();
        t.dir("./")
            .dir("./boot/")
            .file("./boot/vmlinuz-1", b"kernel")
            .hardlink("./boot/vmlinuz", "boot/vmlinuz-1")
            .symlink("./boot/initrd.img", "initrd.img-1")
            .hardlink("./vmlinuz", "boot/vmlinuz-1");
        let policy = Policy {
            esp: |k| k.starts_with(b"boot/"),
            ..policy()
        };
        let mut out = Vec::new();
        let edited = edit(t.bytes().as_slice(), &mut out, &policy, |_| Ok(())).unwrap();
        assert_eq!(
            names(&out),
            [
                ("boot".to_string(), EntryType::Directory),
                ("vmlinuz".to_string(), EntryType::Regular)
            ]
        );
        let mut a = tar::Archive::new(out.as_slice());
        let mut copy = String::new();
        let mut entries = a.entries().unwrap().skip(1);
        entries
            .next()
            .unwrap()
            .unwrap()
            .read_to_string(&mut copy)
            .unwrap();
        assert_eq!(copy, "kernel");
        let found = edited.tree.files_under(b"boot");
        let (files, others) = (found.files, found.others);
        let files: Vec<_> = files.iter().map(|(p, d)| (show(p), d.to_vec())).collect();
        assert_eq!(
            files,
            [
                ("vmlinuz".to_string(), b"kernel".to_vec()),
                ("vmlinuz-1".to_string(), b"kernel".to_vec())
            ]
        );
        assert_eq!(others, [b"initrd.img".to_vec()]);
    }

    #[test]
    fn hostile_names_are_refused_whole() {
        for (entries, why) in [
            (vec![("../x", EntryType::Regular, None)], "climbs out"),
            (
                vec![
                    ("lnk", EntryType::Symlink, Some("/etc")),
                    ("lnk/passwd", EntryType::Regular, None),
                ],
                "absolute symlink",
            ),
            (
                vec![
                    ("up", EntryType::Symlink, Some("../..")),
                    ("up/x", EntryType::Regular, None),
                ],
                "outside the root",
            ),
            (vec![("h", EntryType::Link, Some("nothere"))], "not earlier"),
            (
                vec![
                    ("d", EntryType::Directory, None),
                    ("d", EntryType::Regular, None),
                ],
                "replace a directory",
            ),
        ] {
            let mut t = Tar::new();
            for (n, k, l) in entries {
                t.entry(n, k, 0o755, l, b"");
            }
            let err = edit(t.bytes().as_slice(), std::io::sink(), &policy(), |_| Ok(()))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(
                err.contains("refusing archive entry") && err.contains(why),
                "{why}: {err}"
            );
        }
    }

    #[test]
    fn entries_through_links_inside_the_tree_land_where_they_point() {
        let mut t = Tar::new();
        t.dir("usr/")
            .dir("usr/lib/")
            .symlink("lib", "usr/lib")
            .file("lib/x", b"x");
        let mut out = Vec::new();
        edit(t.bytes().as_slice(), &mut out, &policy(), |_| Ok(())).unwrap();
        assert!(names(&out).iter().any(|(n, _)| n == "usr/lib/x"));
    }

    #[test]
    fn long_and_non_utf8_names_and_xattrs_survive() {
        let long = format!("d/{}", "n".repeat(200));
        let odd = "d/caf\u{e9}";
        let src = Tar::new()
            .dir("d/")
            .file(&long, b"long")
            .file(odd, b"")
            // a Latin-1 name: not UTF-8
            .entry(b"d/\xe9t\xe9", EntryType::Regular, 0o644, None, b"")
            .bytes();
        let mut out = Vec::new();
        edit(src.as_slice(), &mut out, &policy(), |_| Ok(())).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let got: Vec<Vec<u8>> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert!(got.contains(&long.as_bytes().to_vec()));
        assert!(got.contains(&b"d/\xe9t\xe9".to_vec()));
    }
}
