//! The guest's tree as the stream edit sees it: every entry's name, type and metadata, and the
//! contents of the few files guest setup reads or changes. Guest setup works on this view, not on
//! a directory, so nothing is unpacked on the host: what it writes becomes tar entries that
//! follow the image's (`edit`), and mke2fs or the safe unpacker applies them.
//!
//! Paths resolve as inside the guest (`RESOLVE_IN_ROOT`): `/lib -> usr/lib` works, an absolute
//! link stays inside the tree and `..` cannot climb out.
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Owner and mode for a file written into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What an entry is. Names (keys) are guest paths without the leading `/`, as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// Another name for the file at this key.
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// Owner, permission bits (with setuid/setgid/sticky), mtime and xattrs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Where an entry stands in the output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Already written to the output as it passed: it can be replaced (a later entry of the same
    /// name wins in mke2fs and the unpacker) but not removed.
    Passed,
    /// Held back until the stream ends, in source order, so setup may change or remove it.
    Held,
    /// Written by guest setup (new, or replacing a passed entry): goes out at the end.
    Edited,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
    pub size: u64,
    /// The contents, for the files c2vm reads (held, copied or written by setup).
    pub data: Option<Arc<[u8]>>,
    pub state: State,
}

/// Symlinks followed in one lookup before giving up, as Linux does.
const MAX_LINKS: u32 = 40;

#[derive(Default)]
pub struct GuestTree {
    nodes: BTreeMap<Vec<u8>, Node>,
    /// mtime for what setup writes: SOURCE_DATE_EPOCH, or now.
    now: u64,
    /// Directories `resolve` made, in order, for the stream edit to write out at once.
    created: Vec<Vec<u8>>,
}

/// What [`GuestTree::files_under`] finds.
pub struct FilesUnder {
    /// Regular files with the contents the edit kept (a hardlink's are its file's).
    pub files: Vec<(Vec<u8>, Arc<[u8]>)>,
    /// What else is there but directories (symlinks, devices): no contents.
    pub others: Vec<Vec<u8>>,
}

/// What [`GuestTree::resolve`] does with a path's last part when it is a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    Follow,
    Keep,
}

/// Whether [`GuestTree::resolve`] makes the directories a path misses (as `tar -x` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Create,
    Fail,
}

/// How a path's symlinks may be followed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Guest setup: absolute links resolve from the guest root, `..` clamps at it.
    InRoot,
    /// Archive entries: only links that stay inside the tree by relative steps; anything else is
    /// an entry that would be written outside the root on a real unpack, and is refused.
    Strict,
}

impl GuestTree {
    pub fn new(now: u64) -> GuestTree {
        let root = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: now,
            xattrs: Vec::new(),
        };
        // The root directory, under the empty key; mke2fs makes it (root-owned, 0755).
        let nodes = BTreeMap::from([(Vec::new(), Node::new(Kind::Dir, root, None))]);
        GuestTree {
            nodes,
            now,
            created: Vec::new(),
        }
    }

    /// The mtime of what setup writes.
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn get(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    pub fn insert(&mut self, key: Vec<u8>, node: Node) {
        self.nodes.insert(key, node);
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Node> {
        self.nodes.get_mut(key)
    }

    /// Entries setup wrote, in path order (parents before children).
    pub fn edited(&self) -> impl Iterator<Item = (&Vec<u8>, &Node)> {
        self.nodes.iter().filter(|(_, n)| n.state == State::Edited)
    }

    /// What is under the directory `dir` (a key), at any depth, by path below it.
    pub fn files_under(&self, dir: &[u8]) -> FilesUnder {
        let prefix = [dir, b"/"].concat();
        let (mut files, mut others) = (Vec::new(), Vec::new());
        for (key, node) in self.nodes.range(prefix.clone()..) {
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            match (&self.target(node).kind, &self.target(node).data) {
                (Kind::Dir, _) => {}
                (Kind::File, Some(data)) => files.push((rest.to_vec(), data.clone())),
                _ => others.push(rest.to_vec()),
            }
        }
        FilesUnder { files, others }
    }

    /// The directories made since the last call, parents first.
    pub fn take_created(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.created)
    }

    /// A hardlink's file, or the node itself.
    fn target<'a>(&'a self, node: &'a Node) -> &'a Node {
        match &node.kind {
            Kind::Hardlink(to) => self.nodes.get(to).unwrap_or(node),
            _ => node,
        }
    }

    /// The key of `path` with its directories' symlinks resolved (and the last component's too
    /// with [`Last::Follow`]). `None` when a directory on the way is missing (or, with
    /// [`Missing::Create`], after making it) or is not a directory.
    pub fn resolve(
        &mut self,
        path: &[u8],
        follow: Follow,
        last_part: Last,
        missing: Missing,
    ) -> Result<Option<Vec<u8>>> {
        let (follow_last, create) = (last_part == Last::Follow, missing == Missing::Create);
        let mut pending: Vec<Vec<u8>> = split(path).into_iter().rev().collect();
        let mut current: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == b".." {
                if current.pop().is_none() && follow == Follow::Strict {
                    bail!("it leads outside the root through a symlink");
                }
                continue;
            }
            let last = pending.is_empty();
            let key = join(&current, &part);
            let node = self.nodes.get(&key);
            match node.map(|n| &n.kind) {
                Some(Kind::Symlink(target)) if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("/{} in the image: too many levels of symlinks", show(&key));
                    }
                    if target.starts_with(b"/") {
                        if follow == Follow::Strict {
                            bail!(
                                "it leads outside the root through the absolute symlink /{} -> {}",
                                show(&key),
                                show(target)
                            );
                        }
                        current.clear();
                    }
                    pending.extend(split(target).into_iter().rev());
                }
                Some(Kind::Dir) => current.push(part),
                None if create => {
                    let mut node = Node::new(Kind::Dir, self.new_meta(Perms::root(0o755)), None);
                    node.state = State::Edited;
                    self.created.push(key.clone());
                    self.nodes.insert(key, node);
                    current.push(part);
                }
                None if last => current.push(part),
                None => return Ok(None),
                Some(_) if last => current.push(part),
                Some(_) => {
                    if create {
                        bail!("/{} in the image is not a directory", show(&key));
                    }
                    return Ok(None);
                }
            }
        }
        Ok(Some(current.join(&b'/')))
    }

    fn new_meta(&self, perms: Perms) -> Meta {
        Meta {
            mode: perms.mode,
            uid: perms.uid.into(),
            gid: perms.gid.into(),
            mtime: self.now,
            xattrs: Vec::new(),
        }
    }

    /// The node at `rel` without following a final symlink, and its key.
    fn lookup(&mut self, rel: &str) -> Result<Option<(Vec<u8>, &Node)>> {
        let Some(key) = self.resolve(rel.as_bytes(), Follow::InRoot, Last::Keep, Missing::Fail)?
        else {
            return Ok(None);
        };
        Ok(self.nodes.get(&key).map(|n| (key, n)))
    }

    /// Read a regular file; `None` if it does not exist. A symlink is not followed (error).
    pub fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some((_, node)) = self.lookup(rel)? else {
            return Ok(None);
        };
        let node = node.clone();
        let node = self.target(&node);
        match (&node.kind, &node.data) {
            (Kind::File, Some(data)) => Ok(Some(data.to_vec())),
            (Kind::File, None) => Err(anyhow!(
                "c2vm did not keep {rel} from the stream (a file larger than it holds, or outside what guest setup reads)"
            )),
            (Kind::Symlink(_), _) => bail!("{rel} in the image is a symlink; expected a regular file"),
            _ => bail!("{rel} in the image is not a regular file"),
        }
    }

    /// The contents kept for `key`, for the ESP's kernel and initramfs.
    pub fn contents(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.nodes
            .get(key)
            .and_then(|n| self.target(n).data.clone())
    }

    pub fn exists(&mut self, rel: &str) -> Result<bool> {
        Ok(self.lookup(rel)?.is_some())
    }

    /// Owner and mode of what is at `rel` (a symlink's own), if anything.
    pub fn perms(&mut self, rel: &str) -> Result<Option<Perms>> {
        Ok(self.lookup(rel)?.map(|(_, n)| Perms {
            mode: n.meta.mode,
            uid: n.meta.uid as u32,
            gid: n.meta.gid as u32,
        }))
    }

    pub fn is_symlink(&mut self, rel: &str) -> Result<bool> {
        Ok(matches!(
            self.lookup(rel)?.map(|(_, n)| &n.kind),
            Some(Kind::Symlink(_))
        ))
    }

    pub fn is_regular(&mut self, rel: &str) -> Result<bool> {
        let Some((_, node)) = self.lookup(rel)? else {
            return Ok(false);
        };
        let node = node.clone();
        Ok(self.target(&node).kind == Kind::File)
    }

    /// Whether `rel`, following symlinks as the guest would, is a regular file someone may run.
    pub fn is_executable(&mut self, rel: &str) -> Result<bool> {
        let Some(key) =
            self.resolve(rel.as_bytes(), Follow::InRoot, Last::Follow, Missing::Fail)?
        else {
            return Ok(false);
        };
        Ok(self.nodes.get(&key).is_some_and(|n| {
            let n = self.target(n);
            n.kind == Kind::File && n.meta.mode & 0o111 != 0
        }))
    }

    /// Remove a file or symlink if present. Only held entries can go: the rest already passed.
    pub fn remove(&mut self, rel: &str) -> Result<()> {
        let Some((key, node)) = self.lookup(rel)? else {
            return Ok(());
        };
        match (node.state, &node.kind) {
            (_, Kind::Dir) => bail!("{rel} in the image is a directory; c2vm only removes files"),
            (State::Passed, _) => bail!(
                "{rel} already passed into the disk; guest setup must name it among what the stream edit holds back"
            ),
            _ => {
                self.nodes.remove(&key);
                Ok(())
            }
        }
    }

    /// Put `node` at `rel` (missing directories made 0755), replacing a file or symlink there.
    fn put(&mut self, rel: &str, kind: Kind, perms: Perms, data: Option<Vec<u8>>) -> Result<()> {
        let parts = split(rel.as_bytes());
        let Some((name, parent)) = parts.split_last() else {
            bail!("empty guest path");
        };
        let parent = self
            .resolve(
                &parent.join(&b'/'),
                Follow::InRoot,
                Last::Follow,
                Missing::Create,
            )?
            .ok_or_else(|| anyhow!("cannot create the directories of {rel} in the guest"))?;
        let key = if parent.is_empty() {
            name.clone()
        } else {
            [parent, name.clone()].join(&b'/')
        };
        if self.nodes.get(&key).is_some_and(|n| n.kind == Kind::Dir) {
            bail!("{rel} in the image is a directory");
        }
        let mut node = Node::new(kind, self.new_meta(perms), data.map(Arc::from));
        node.state = State::Edited;
        self.nodes.insert(key, node);
        Ok(())
    }

    /// Replace `rel` with a new regular file.
    pub fn write(&mut self, rel: &str, contents: &[u8], perms: Perms) -> Result<()> {
        self.put(rel, Kind::File, perms, Some(contents.to_vec()))
    }

    /// Replace `rel` with a symlink to `target`.
    pub fn symlink(&mut self, rel: &str, target: &str) -> Result<()> {
        self.put(
            rel,
            Kind::Symlink(target.as_bytes().to_vec()),
            Perms::root(0o777),
            None,
        )
    }

    /// Make sure the directory `rel` exists (parents 0755, symlinked ones made where they point),
    /// then give it this owner and mode.
    pub fn mkdir(&mut self, rel: &str, perms: Perms) -> Result<()> {
        let key = self
            .resolve(
                rel.as_bytes(),
                Follow::InRoot,
                Last::Follow,
                Missing::Create,
            )?
            .ok_or_else(|| anyhow!("cannot create {rel} in the guest"))?;
        let meta = self.new_meta(perms);
        if key.is_empty() {
            return Ok(()); // the root: mke2fs makes it root's, 0755
        }
        match self.nodes.get_mut(&key) {
            None => {
                let mut node = Node::new(Kind::Dir, meta, None);
                node.state = State::Edited;
                self.nodes.insert(key, node);
            }
            Some(node) if node.kind == Kind::Dir => {
                let now = (node.meta.mode, node.meta.uid, node.meta.gid);
                if now != (meta.mode, meta.uid, meta.gid) {
                    node.meta.mode = meta.mode;
                    node.meta.uid = meta.uid;
                    node.meta.gid = meta.gid;
                    node.state = State::Edited;
                }
            }
            Some(_) => bail!("{rel} in the image is not a directory"),
        }
        Ok(())
    }

    /// Names in the directory `rel`, sorted (empty if it does not exist).
    pub fn list(&mut self, rel: &str) -> Result<Vec<String>> {
        let Some(key) =
            self.resolve(rel.as_bytes(), Follow::InRoot, Last::Follow, Missing::Fail)?
        else {
            return Ok(Vec::new());
        };
        let prefix = if key.is_empty() {
            Vec::new()
        } else {
            [key.as_slice(), b"/"].concat()
        };
        let mut names = Vec::new();
        for (k, _) in self.nodes.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if !rest.is_empty() && !rest.contains(&b'/') {
                names.push(String::from_utf8_lossy(rest).into_owned());
            }
        }
        Ok(names)
    }
}

impl Node {
    pub fn new(kind: Kind, meta: Meta, data: Option<Arc<[u8]>>) -> Node {
        let size = match (&kind, &data) {
            (Kind::File, Some(d)) => d.len() as u64,
            _ => 0,
        };
        Node {
            kind,
            meta,
            size,
            data,
            state: State::Passed,
        }
    }
}

/// A path's components, without empty ones and `.`.
fn split(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(dir: &[Vec<u8>], name: &[u8]) -> Vec<u8> {
    let mut key = dir.join(&b'/');
    if !key.is_empty() {
        key.push(b'/');
    }
    key.extend_from_slice(name);
    key
}

/// A key for messages.
pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tree of passed entries: `(path, kind, mode, contents)`.
    pub fn tree(entries: &[(&str, Kind, u32, &[u8])]) -> GuestTree {
        let mut t = GuestTree::new(1_700_000_000);
        for (path, kind, mode, data) in entries {
            let meta = Meta {
                mode: *mode,
                uid: 0,
                gid: 0,
                mtime: 1,
                xattrs: Vec::new(),
            };
            let data = (*kind == Kind::File).then(|| Arc::from(data.to_vec()));
            t.insert(
                path.as_bytes().to_vec(),
                Node::new(kind.clone(), meta, data),
            );
        }
        t
    }

    fn link(target: &str) -> Kind {
        Kind::Symlink(target.as_bytes().to_vec())
    }

    #[test]
    fn symlinks_resolve_inside_the_guest() {
        let mut t = tree(&[
            ("usr", Kind::Dir, 0o755, b""),
            ("usr/lib", Kind::Dir, 0o755, b""),
            ("lib", link("usr/lib"), 0o777, b""),
            ("etc", link("/host/etc"), 0o777, b""),
            ("up", link("../../../.."), 0o777, b""),
        ]);
        t.write("/lib/y", b"y", Perms::root(0o644)).unwrap();
        assert_eq!(t.read("/usr/lib/y").unwrap().unwrap(), b"y");
        // An absolute link is followed from the guest root; the host is never a place.
        t.write("/etc/hostname", b"h", Perms::root(0o644)).unwrap();
        assert!(t.get(b"host/etc/hostname").is_some());
        t.write("/up/z", b"z", Perms::root(0o644)).unwrap();
        assert!(t.get(b"z").is_some());
        // Strict resolution (archive entries) refuses both.
        assert!(t
            .resolve(b"etc/x", Follow::Strict, Last::Keep, Missing::Fail)
            .is_err());
        assert!(t
            .resolve(b"up/x", Follow::Strict, Last::Keep, Missing::Fail)
            .is_err());
        assert_eq!(
            t.resolve(b"lib/x", Follow::Strict, Last::Keep, Missing::Fail)
                .unwrap(),
            Some(b"usr/lib/x".to_vec())
        );
    }

    #[test]
    fn passed_entries_can_be_replaced_not_removed() {
        let mut t = tree(&[
            ("etc", Kind::Dir, 0o755, b""),
            ("etc/shadow", Kind::File, 0o640, b"root:*:1::::::\n"),
        ]);
        assert!(t.remove("/etc/shadow").is_err());
        t.write("/etc/shadow", b"new", Perms::root(0o640)).unwrap();
        assert_eq!(t.get(b"etc/shadow").unwrap().state, State::Edited);
        t.remove("/etc/shadow").unwrap();
        assert!(!t.exists("/etc/shadow").unwrap());
    }

    #[test]
    fn mkdir_follows_dangling_links_and_lists() {
        let mut t = tree(&[
            ("root", link("var/roothome"), 0o777, b""),
            ("loop", link("loop"), 0o777, b""),
        ]);
        t.mkdir("/root/.ssh", Perms::root(0o700)).unwrap();
        assert_eq!(t.get(b"var/roothome/.ssh").unwrap().meta.mode, 0o700);
        assert_eq!(t.list("/var").unwrap(), vec!["roothome".to_string()]);
        let err = format!("{:#}", t.mkdir("/loop/x", Perms::root(0o755)).unwrap_err());
        assert!(err.contains("too many levels"), "{err}");
        t.write("/a/b", b"", Perms::root(0o755)).unwrap();
        assert!(t.is_executable("/a/b").unwrap());
        assert!(!t.is_executable("/a").unwrap());
    }
}
