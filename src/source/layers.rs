//! An image as its layers, read with no engine: the layers are merged into one tar stream of the
//! whole root filesystem, as an engine's `export` gives it, with no flattened copy on disk.
//!
//! Each layer is read once, top layer first. The first (topmost) entry of a name wins, and what a
//! layer's whiteouts delete (`.wh.NAME`) or hide (`.wh..wh..opq`, an opaque directory) is left
//! out of every layer below it. That gives the tree applying the layers in order would, without
//! holding anything back: an entry is final when it is first seen. The merged stream then goes
//! through the same stream edit (and its hostile-archive rules) as an export.
//!
//! Every blob is checked against its digest (and each layer's uncompressed stream against the
//! config's diff ID) as it is read: a mismatch fails the conversion before any output is kept.
use super::{ImageDetails, TarStream};
use crate::progress::Stage;
use crate::tar_rules::{self, Stat};
use anyhow::{anyhow, bail, Context, Result};
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

/// Where an image's blobs are: a layout directory, an archive, a registry.
pub trait BlobStore: Send + Sync {
    /// The blob at `location` (a digest, or a path inside an archive), raw.
    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>>;
    /// How messages name the store (`oci:/tmp/debian`).
    fn name(&self) -> String;
    /// The blob's last `n` bytes, where that is cheap (a local file): a gzip member's trailer
    /// says how large its data is.
    fn tail(&self, _location: &str, _n: u64) -> Option<Vec<u8>> {
        None
    }
}

/// How a layer's tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// Not said (docker-archive's `layer.tar`): told by its first bytes.
    Detect,
}

impl Compression {
    /// The compression a layer media type names; `None` for a media type that is no layer.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// One layer: where its blob is and what it must hash to.
#[derive(Debug, Clone)]
pub struct Layer {
    pub location: String,
    /// The blob's digest (`sha256:…`), where the manifest gives one.
    pub digest: Option<String>,
    /// The uncompressed tar's digest, from the config's `rootfs.diff_ids`.
    pub diff_id: Option<String>,
    /// The blob's size in bytes, where known.
    pub size: Option<u64>,
    pub compression: Compression,
}

/// An image read from its layers: details from its config, the root filesystem merged from its
/// layers each time it is opened.
#[derive(Clone)]
pub struct LayeredImage {
    pub details: ImageDetails,
    pub layers: Vec<Layer>,
    pub store: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for LayeredImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.store.name(), self.details.id)
    }
}

/// A compressed layer's tar is about this many times its blob, where the blob does not say:
/// for sizing only (a short guess costs a counting pass, never a broken disk).
const COMPRESSION_RATIO: u64 = 3;

impl LayeredImage {
    /// What the layers unpack to, roughly: for the disk's first size estimate.
    pub fn unpacked_size(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let size = l.size.unwrap_or(0);
                // gzip's trailer holds the data's size (mod 4 GiB: fine for an estimate).
                let gzip_size = || {
                    let tail = self.store.tail(&l.location, 4)?;
                    let isize = u32::from_le_bytes(tail.try_into().ok()?) as u64;
                    (isize >= size / 2).then_some(isize)
                };
                match l.compression {
                    Compression::None | Compression::Detect => size,
                    Compression::Gzip => gzip_size().unwrap_or(size * COMPRESSION_RATIO),
                    Compression::Zstd => size * COMPRESSION_RATIO,
                }
            })
            .sum()
    }

    /// The merged root filesystem as a stream. A thread reads the layers (download,
    /// decompression and digests run beside the edit and mke2fs).
    pub fn open(&self, label: &str) -> Result<MergedStream> {
        let total = self.layers.iter().filter_map(|l| l.size).sum();
        let stage = Stage::bytes(label, total);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(16);
        let image = self.clone();
        let progress = stage.reader(std::io::empty());
        let worker = std::thread::Builder::new()
            .name("c2vm-layers".into())
            .spawn(move || {
                let mut out = ChannelWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                };
                let result = merge(&image, &mut out, &mut |n| progress.advance(n))
                    .and_then(|()| out.flush().context("sending the merged layers"));
                if let Err(e) = result {
                    // The reader may have gone (it stopped first): nothing to tell then.
                    let _ = tx.send(Err(Arc::new(e)));
                }
            })
            .context("starting the layer reader")?;
        Ok(MergedStream {
            rx,
            current: Vec::new(),
            offset: 0,
            failure: None,
            stage: Some(stage),
            worker: Some(worker),
        })
    }
}

type Chunk = std::result::Result<Vec<u8>, Arc<anyhow::Error>>;
const CHUNK: usize = 1 << 20;

/// The merged stream, as the stream edit reads it.
pub struct MergedStream {
    rx: Receiver<Chunk>,
    current: Vec<u8>,
    offset: usize,
    failure: Option<Arc<anyhow::Error>>,
    stage: Option<Stage>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Read for MergedStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            if let Some(e) = &self.failure {
                return Err(std::io::Error::other(format!("{e:#}")));
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Ok(Err(e)) => self.failure = Some(e),
                Err(_) => return Ok(0), // the merge finished
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

impl TarStream for MergedStream {
    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(stage) = self.stage.take() {
            stage.done();
        }
        if let Some(worker) = self.worker.take() {
            worker
                .join()
                .map_err(|_| anyhow!("the layer reader panicked"))?;
        }
        match self.failure.take() {
            Some(e) => Err(anyhow!("{e:#}")),
            None => Ok(()),
        }
    }

    fn failure(&mut self) -> Option<anyhow::Error> {
        // A failure the reader has not reached yet is waiting in the channel.
        while self.failure.is_none() {
            match self.rx.try_recv() {
                Ok(Err(e)) => self.failure = Some(e),
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        self.failure.as_ref().map(|e| anyhow!("{e:#}"))
    }
}

impl Drop for MergedStream {
    fn drop(&mut self) {
        // Closing the channel stops the worker at its next send; wait for it so that no layer
        // download outlives the conversion.
        let (_, rx) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

struct ChannelWriter {
    tx: SyncSender<Chunk>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(Ok(chunk))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }
}

/// What the layers above have decided.
#[derive(Default)]
struct Merge {
    /// Names already emitted by a layer above, and whether each is a directory.
    seen: HashMap<Vec<u8>, bool>,
    /// Names deleted by a whiteout above (with all beneath them).
    deleted: HashSet<Vec<u8>>,
    /// Directories made opaque above: nothing beneath them comes from lower layers.
    opaque: HashSet<Vec<u8>>,
    /// Hardlinks whose target is in a lower layer, by target.
    pending: HashMap<Vec<u8>, Vec<PendingLink>>,
}

impl Merge {
    /// Whether a layer below the ones merged so far may still add `key`.
    fn hidden(&self, key: &[u8]) -> bool {
        if self.seen.contains_key(key)
            || self.deleted.contains(key)
            || self.opaque.contains(&b""[..])
        {
            return true;
        }
        let mut end = 0;
        while let Some(i) = key[end..].iter().position(|b| *b == b'/') {
            let ancestor = &key[..end + i];
            if self.deleted.contains(ancestor)
                || self.opaque.contains(ancestor)
                || self.seen.get(ancestor) == Some(&false)
            {
                return true;
            }
            end += i + 1;
        }
        false
    }
}

/// Blobs held in memory, by location.
struct Memory(HashMap<String, Vec<u8>>);

impl BlobStore for Memory {
    fn open(&self, location: &str) -> Result<Box<dyn Read + Send>> {
        let blob = self.0.get(location).context("no such blob")?.clone();
        Ok(Box::new(std::io::Cursor::new(blob)))
    }
    fn name(&self) -> String {
        "memory".into()
    }
}

/// For the fuzz target (`fuzz/fuzz_targets/merge.rs`) only: the layer merge (`merge`) of layer
/// tars held in memory, bottom first, each plain or compressed (told by its first bytes), with
/// no digests.
pub fn merge_in_memory(layers: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let layers = layers.into_iter().enumerate().map(|(n, blob)| {
        let layer = Layer {
            location: format!("l{n}"),
            digest: None,
            diff_id: None,
            size: None,
            compression: Compression::Detect,
        };
        (layer, blob)
    });
    merge_blobs(layers.collect())
}

/// [`merge`] of an image whose blobs are in memory, each beside its layer, bottom first.
fn merge_blobs(layers: Vec<(Layer, Vec<u8>)>) -> Result<Vec<u8>> {
    let (layers, blobs): (Vec<Layer>, HashMap<String, Vec<u8>>) = layers
        .into_iter()
        .map(|(layer, blob)| {
            let location = layer.location.clone();
            (layer, (location, blob))
        })
        .unzip();
    let image = LayeredImage {
        details: ImageDetails::default(),
        layers,
        store: Arc::new(Memory(blobs)),
    };
    let mut out = Vec::new();
    merge(&image, &mut out, &mut |_| {})?;
    Ok(out)
}

/// Merge `image`'s layers, top first, into one tar stream on `out`; `advance` counts blob bytes.
fn merge(image: &LayeredImage, out: &mut dyn Write, advance: &mut dyn FnMut(u64)) -> Result<()> {
    let mut merge = Merge::default();
    let count = image.layers.len();
    for (index, layer) in image.layers.iter().enumerate().rev() {
        let what = || {
            format!(
                "layer {} of {count} ({}) of {}",
                index + 1,
                layer
                    .digest
                    .as_deref()
                    .or(layer.diff_id.as_deref())
                    .unwrap_or(&layer.location),
                image.store.name()
            )
        };
        let orphans = read_layer(image.store.as_ref(), layer, advance, &mut |entries| {
            merge_layer(&mut merge, entries, out)
        })
        .with_context(what)?;
        if !orphans.is_empty() {
            // Hardlinks to a file a layer above replaced: read the layer again for its data.
            read_layer(image.store.as_ref(), layer, &mut |_| {}, &mut |entries| {
                link_orphans(&orphans, entries, out)
            })
            .with_context(what)?;
        }
    }
    if let Some((target, links)) = merge.pending.iter().next() {
        bail!(
            "the image is broken: {} is a hardlink to {}, which no layer holds",
            String::from_utf8_lossy(&links[0].name),
            String::from_utf8_lossy(target)
        );
    }
    out.write_all(&tar_rules::END)
        .context("ending the merged stream")?;
    Ok(())
}

/// Read one layer's blob: decompressed, its tar's entries (raw: extension headers as entries of
/// their own) handed to `each`, then to the end, checking digests and size.
fn read_layer<T>(
    store: &dyn BlobStore,
    layer: &Layer,
    advance: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(&mut tar::Entries<&mut dyn Read>) -> Result<T>,
) -> Result<T> {
    let raw = store.open(&layer.location)?;
    let mut blob = Checked::new(raw, layer.digest.as_deref(), advance)?;
    match read_blob(&mut blob, layer, each) {
        Ok(value) => {
            check_blob(&blob, layer)?;
            Ok(value)
        }
        Err(e) if e.downcast_ref::<Damaged>().is_some() => {
            // What broke the decompressor or the tar: the blob's digest says it better (a
            // damaged or tampered blob, or one cut short), so it is read to its end for that.
            let _ = std::io::copy(&mut blob, &mut std::io::sink());
            check_blob(&blob, layer)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The blob's size and digest, once read to its end.
fn check_blob<R: Read>(blob: &Checked<R>, layer: &Layer) -> Result<()> {
    if let Some(size) = layer.size {
        if blob.count != size {
            bail!(
                "the blob holds {} bytes where the manifest says {size}: it is truncated or damaged; fetch the image again",
                blob.count
            );
        }
    }
    blob.check("the blob")
}

/// Decompress the blob and hand its tar's entries to `each`; then read to the end, checking the
/// diff ID.
fn read_blob<T>(
    blob: &mut dyn Read,
    layer: &Layer,
    each: &mut dyn FnMut(&mut tar::Entries<&mut dyn Read>) -> Result<T>,
) -> Result<T> {
    let mut buffered = BufReader::with_capacity(1 << 20, blob);
    let compression = match layer.compression {
        Compression::Detect => {
            let head = buffered.fill_buf().map_err(|e| damaged(&e))?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        known => known,
    };
    let mut decoded: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(&mut buffered).map_err(|e| damaged(&e))?,
        ),
        _ => Box::new(&mut buffered),
    };
    let mut uncounted = |_| {};
    let mut tar_stream = Checked::new(&mut decoded, layer.diff_id.as_deref(), &mut uncounted)?;
    let value = {
        let reader: &mut dyn Read = &mut tar_stream;
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries().map_err(|e| damaged(&e))?.raw(true);
        each(&mut entries)?
    };
    // The rest past the end-of-archive blocks still counts for the digests.
    std::io::copy(&mut tar_stream, &mut std::io::sink()).map_err(|e| damaged(&e))?;
    tar_stream.check("its uncompressed tar (diff ID)")?;
    drop(decoded);
    std::io::copy(&mut buffered, &mut std::io::sink()).map_err(|e| damaged(&e))?;
    Ok(value)
}

/// A layer that cannot be read as a (compressed) tar.
#[derive(Debug, thiserror::Error)]
#[error("the layer is truncated or damaged ({0}); fetch the image again")]
struct Damaged(String);

fn damaged(e: &dyn std::fmt::Display) -> anyhow::Error {
    Damaged(e.to_string()).into()
}

/// A reader that hashes what passes and compares it with `expected` at the end.
struct Checked<'p, R> {
    inner: R,
    hasher: Option<(Hasher, String)>,
    count: u64,
    advance: &'p mut dyn FnMut(u64),
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl<'p, R: Read> Checked<'p, R> {
    fn new(inner: R, expected: Option<&str>, advance: &'p mut dyn FnMut(u64)) -> Result<Self> {
        let hasher = match expected {
            None => None,
            Some(d) => {
                let hasher = match d.split_once(':') {
                    Some(("sha256", hex)) if hex.len() == 64 => Hasher::Sha256(Default::default()),
                    Some(("sha512", hex)) if hex.len() == 128 => Hasher::Sha512(Default::default()),
                    _ => bail!("`{d}` is not a digest c2vm can check (sha256 or sha512)"),
                };
                Some((hasher, d.to_string()))
            }
        };
        Ok(Checked {
            inner,
            hasher,
            count: 0,
            advance,
        })
    }

    fn check(&self, what: &str) -> Result<()> {
        let Some((hasher, expected)) = &self.hasher else {
            return Ok(());
        };
        let actual = match hasher {
            Hasher::Sha256(h) => format!("sha256:{:x}", h.clone().finalize()),
            Hasher::Sha512(h) => format!("sha512:{:x}", h.clone().finalize()),
        };
        if actual != *expected {
            bail!("{what} does not match its digest (expected {expected}, got {actual}): the image is damaged or was tampered with; fetch it again");
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hasher {
            Some((Hasher::Sha256(h), _)) => h.update(&buf[..n]),
            Some((Hasher::Sha512(h), _)) => h.update(&buf[..n]),
            None => {}
        }
        self.count += n as u64;
        (self.advance)(n as u64);
        Ok(n)
    }
}

/// One entry as read in raw mode: its extension headers (GNU long names, PAX) gathered.
struct RawEntry {
    /// The bytes to copy for the entry: extension entries, then the header.
    head: Vec<u8>,
    header: tar::Header,
    name: Vec<u8>,
    link: Option<Vec<u8>>,
}

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

fn split_key(key: &[u8]) -> (&[u8], &[u8]) {
    match key.iter().rposition(|b| *b == b'/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (b"", key),
    }
}

/// The next real entry, with its extension headers; `None` at the end.
fn next_entry<'a, R: Read + 'a>(
    entries: &mut tar::Entries<'a, R>,
) -> Result<Option<(RawEntry, tar::Entry<'a, R>)>> {
    let mut head = Vec::new();
    let mut long_name = None;
    let mut long_link = None;
    let mut pax_name = None;
    let mut pax_link = None;
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(|e| damaged(&e))?;
        let kind = entry.header().entry_type();
        let is_extension =
            kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions();
        if !is_extension {
            let header = entry.header().clone();
            head.extend_from_slice(header.as_bytes());
            let name = pax_name
                .or(long_name)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link = pax_link
                .or(long_link)
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            return Ok(Some((
                RawEntry {
                    head,
                    header,
                    name,
                    link,
                },
                entry,
            )));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| damaged(&e))?;
        head.extend_from_slice(entry.header().as_bytes());
        head.extend_from_slice(&data);
        head.extend_from_slice(tar_rules::padding(data.len() as u64));
        let trim = |mut d: Vec<u8>| {
            while d.last() == Some(&0) {
                d.pop();
            }
            d
        };
        if kind.is_gnu_longname() {
            long_name = Some(trim(data));
        } else if kind.is_gnu_longlink() {
            long_link = Some(trim(data));
        } else {
            for ext in tar::PaxExtensions::new(&data) {
                let ext = ext.map_err(|e| damaged(&e))?;
                match ext.key_bytes() {
                    b"path" => pax_name = Some(ext.value_bytes().to_vec()),
                    b"linkpath" => pax_link = Some(ext.value_bytes().to_vec()),
                    _ => {}
                }
            }
        }
    }
    Ok(None)
}

/// Copy an entry's data, padded to whole blocks.
fn copy_data(entry: &mut dyn Read, size: u64, out: &mut dyn Write) -> Result<()> {
    let copied = std::io::copy(entry, out).map_err(|e| damaged(&e))?;
    if copied != size {
        return Err(damaged(&"an entry ends early"));
    }
    out.write_all(tar_rules::padding(size))?;
    Ok(())
}

/// A hardlink whose target is not emitted yet: emitted later, by name and with its header.
struct PendingLink {
    name: Vec<u8>,
    header: tar::Header,
}

fn link_of(raw: &RawEntry, key: &[u8]) -> PendingLink {
    PendingLink {
        name: key.to_vec(),
        header: raw.header.clone(),
    }
}

/// One layer, top-down: emit what no layer above decided, note this layer's whiteouts for the
/// layers below. Returns hardlinks to files of this layer that a layer above replaced.
fn merge_layer(
    merge: &mut Merge,
    entries: &mut tar::Entries<&mut dyn Read>,
    out: &mut dyn Write,
) -> Result<HashMap<Vec<u8>, Vec<PendingLink>>> {
    let mut deleted = HashSet::new();
    let mut opaque = HashSet::new();
    // This layer's names: whether each was emitted (else a layer above hid it), and whether it
    // is a directory.
    let mut here: HashMap<Vec<u8>, (bool, bool)> = HashMap::new();
    let mut orphans: HashMap<Vec<u8>, Vec<PendingLink>> = HashMap::new();
    while let Some((raw, mut entry)) = next_entry(entries)? {
        crate::interrupt::check()?;
        let key = tar_rules::key(&raw.name);
        let (parent, base) = split_key(&key);
        let kind = raw.header.entry_type();
        let size = raw.header.entry_size().map_err(|e| damaged(&e))?;
        if base.starts_with(WHITEOUT) {
            tar_rules::refuse_dotdot(&key).with_context(|| {
                format!("refusing whiteout `{}`", String::from_utf8_lossy(&raw.name))
            })?;
            if base == OPAQUE {
                opaque.insert(parent.to_vec());
            } else if !base.starts_with(b".wh..wh.") {
                deleted.insert(join(parent, &base[WHITEOUT.len()..]));
            }
            // Other `.wh..wh.` names are aufs bookkeeping, never part of the tree.
            drain(&mut entry)?;
            continue;
        }
        let visible = match here.get(&key) {
            Some(&(emitted, _)) => emitted, // a repeated name: the later entry wins
            None => !merge.hidden(&key),
        };
        let is_dir = kind.is_dir();
        if kind.is_hard_link() && visible {
            let target = tar_rules::key(raw.link.as_deref().unwrap_or_default());
            match here.get(&target) {
                Some((true, _)) => {}
                Some((false, _)) => {
                    // Its file was replaced above: its data is read again after this layer.
                    orphans.entry(target).or_default().push(link_of(&raw, &key));
                    here.insert(key, (true, false));
                    continue;
                }
                None => {
                    // A file of a lower layer: emitted with it.
                    merge
                        .pending
                        .entry(target)
                        .or_default()
                        .push(link_of(&raw, &key));
                    here.insert(key, (true, false));
                    continue;
                }
            }
        }
        if visible {
            out.write_all(&raw.head)?;
            copy_data(&mut entry, size, out)?;
            if let Some(links) = merge.pending.remove(&key) {
                for link in links {
                    out.write_all(&head(
                        &link.header,
                        &link.name,
                        Some(&key),
                        tar::EntryType::Link,
                        0,
                    ))?;
                }
            }
        } else if kind.is_file() && merge.pending.contains_key(&key) {
            // Hidden here, yet hardlinks above point to it: the first link gets the data.
            let links = merge.pending.remove(&key).unwrap_or_default();
            write_as_file(&raw.header, &mut entry, size, &links, out)?;
        } else {
            drain(&mut entry)?;
        }
        here.insert(key, (visible, is_dir));
    }
    for (key, (emitted, is_dir)) in here {
        if emitted {
            merge.seen.insert(key, is_dir);
        }
    }
    merge.deleted.extend(deleted);
    merge.opaque.extend(opaque);
    Ok(orphans)
}

/// The second read of a layer for hardlinks whose file a layer above replaced.
fn link_orphans(
    orphans: &HashMap<Vec<u8>, Vec<PendingLink>>,
    entries: &mut tar::Entries<&mut dyn Read>,
    out: &mut dyn Write,
) -> Result<()> {
    let mut done = HashSet::new();
    while let Some((raw, mut entry)) = next_entry(entries)? {
        let key = tar_rules::key(&raw.name);
        let size = raw.header.entry_size().map_err(|e| damaged(&e))?;
        match orphans.get(&key) {
            Some(links) if raw.header.entry_type().is_file() && done.insert(key.clone()) => {
                write_as_file(&raw.header, &mut entry, size, links, out)?
            }
            _ => drain(&mut entry)?,
        }
    }
    if let Some((target, links)) = orphans.iter().find(|(t, _)| !done.contains(*t)) {
        bail!(
            "the image is broken: {} is a hardlink to {}, which its layer does not hold",
            String::from_utf8_lossy(&links[0].name),
            String::from_utf8_lossy(target)
        );
    }
    Ok(())
}

/// A file's data under the first link's name, the other links to that.
fn write_as_file(
    file: &tar::Header,
    data: &mut dyn Read,
    size: u64,
    links: &[PendingLink],
    out: &mut dyn Write,
) -> Result<()> {
    let Some((first, rest)) = links.split_first() else {
        return drain(data);
    };
    out.write_all(&head(
        file,
        &first.name,
        None,
        tar::EntryType::Regular,
        size,
    ))?;
    copy_data(data, size, out)?;
    for link in rest {
        out.write_all(&head(
            &link.header,
            &link.name,
            Some(&first.name),
            tar::EntryType::Link,
            0,
        ))?;
    }
    Ok(())
}

fn drain(entry: &mut dyn Read) -> Result<()> {
    std::io::copy(entry, &mut std::io::sink()).map_err(|e| damaged(&e))?;
    Ok(())
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    match parent.is_empty() {
        true => name.to_vec(),
        false => [parent, b"/", name].concat(),
    }
}

/// The head of an entry c2vm writes itself: the metadata of `meta`, the given name, type, link
/// target and size.
fn head(
    meta: &tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    kind: tar::EntryType,
    size: u64,
) -> Vec<u8> {
    tar_rules::raw_head(tar_rules::header(kind, &Stat::of(meta), size), name, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Tar;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a str),
        Link(&'a str, &'a str),
    }

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut tar = Tar::new();
        for e in entries {
            match e {
                E::Dir(name) => tar.dir(name),
                E::File(name, data) => tar.file(name, data.as_bytes()),
                E::Link(name, target) => tar.hardlink(name, target),
            };
        }
        tar.bytes()
    }

    /// The merged tree as `name [-> target] = data`, sorted.
    fn merged(layers: Vec<Vec<u8>>) -> Result<Vec<String>> {
        let mut list = Vec::new();
        for (n, blob) in layers.into_iter().enumerate() {
            // Layers plain, gzipped and zstd-compressed in turn: the merge reads every kind.
            let (blob, compression) = match n % 3 {
                1 => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&blob).unwrap();
                    (gz.finish().unwrap(), Compression::Gzip)
                }
                2 => (
                    zstd::encode_all(blob.as_slice(), 3).unwrap(),
                    Compression::Detect,
                ),
                _ if n == 0 => (blob, Compression::None),
                _ => (blob, Compression::Detect),
            };
            let layer = Layer {
                location: format!("l{n}"),
                digest: Some(format!("sha256:{:x}", sha2::Sha256::digest(&blob))),
                diff_id: None,
                size: Some(blob.len() as u64),
                compression,
            };
            list.push((layer, blob));
        }
        let out = merge_blobs(list)?;
        let mut archive = tar::Archive::new(out.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut data = String::new();
            entry.read_to_string(&mut data)?;
            names.push(match entry.link_name()? {
                Some(t) => format!("{name} -> {}", t.display()),
                None => format!("{name} = {data}"),
            });
        }
        names.sort();
        Ok(names)
    }

    #[test]
    fn whiteouts_delete_and_opaque_directories_hide_what_lies_below() {
        let base = layer(&[
            E::Dir("a/"),
            E::File("a/gone", "1"),
            E::File("a/stays", "1"),
            E::Dir("d/"),
            E::File("d/x", "1"),
            E::Dir("o/"),
            E::File("o/old", "1"),
            E::File("keep", "old"),
        ]);
        let top = layer(&[
            E::Dir("a/"),
            E::File("a/.wh.gone", ""),
            E::File(".wh.d", ""),
            E::Dir("o/"),
            E::File("o/.wh..wh..opq", ""),
            E::File("o/new", "2"),
            E::File("keep", "new"),
        ]);
        assert_eq!(
            merged(vec![base, top]).unwrap(),
            ["a/ = ", "a/stays = 1", "keep = new", "o/ = ", "o/new = 2"]
        );
        // A third layer (zstd) deletes what the second added and adds back what the first had.
        let base = layer(&[E::Dir("a/"), E::File("a/f", "1")]);
        let mid = layer(&[E::File(".wh.a", ""), E::File("b", "2")]);
        let top = layer(&[E::File(".wh.b", ""), E::Dir("a/"), E::File("a/g", "3")]);
        assert_eq!(merged(vec![base, mid, top]).unwrap(), ["a/ = ", "a/g = 3"]);
    }

    #[test]
    fn a_deleted_directory_made_again_holds_only_the_new_files() {
        let base = layer(&[E::Dir("d/"), E::File("d/old", "1")]);
        let top = layer(&[E::File(".wh.d", ""), E::Dir("d/"), E::File("d/new", "2")]);
        assert_eq!(merged(vec![base, top]).unwrap(), ["d/ = ", "d/new = 2"]);
    }

    #[test]
    fn hardlinks_keep_their_data_when_a_layer_above_replaces_the_first_name() {
        let base = layer(&[E::File("t", "old"), E::Link("l", "t")]);
        let top = layer(&[E::File("t", "new")]);
        assert_eq!(merged(vec![base, top]).unwrap(), ["l = old", "t = new"]);
        // A link in the upper layer to a file of the lower one.
        let base = layer(&[E::File("t", "data")]);
        let top = layer(&[E::Link("l", "t")]);
        assert_eq!(merged(vec![base, top]).unwrap(), ["l -> t", "t = data"]);
    }

    #[test]
    fn a_damaged_blob_fails_on_its_digest() {
        let damaged = Layer {
            location: "l0".into(),
            digest: Some(format!("sha256:{}", "0".repeat(64))),
            diff_id: None,
            size: None,
            compression: Compression::None,
        };
        let err = merge_blobs(vec![(damaged, layer(&[E::File("f", "x")]))]).unwrap_err();
        assert!(
            format!("{err:#}").contains("does not match its digest"),
            "{err:#}"
        );
    }
}
