//! The root partition, filled: the source's tar stream, edited in flight (rootfs::edit), into
//! `mke2fs -d -` (one pass, no root), or through the safe unpacker into a staging tree and then
//! `mke2fs -d TREE` where mke2fs reads no tar. The partition is sized from the source's estimate;
//! when that proves short, one pass counts the files and the real one follows. The raw image and
//! its partition table are made here too, once the size is known.
use super::ext4::{self, Files, Populate};
use super::gpt;
use super::layout::{Layout, SizeRequest};
use super::Identifiers;
use crate::arch::Arch;
use crate::cmd;
use crate::progress::Timings;
use crate::rootfs::edit::{self, Edited, JoinedStream};
use crate::rootfs::tree::GuestTree;
use crate::rootfs::unpack;
use crate::rootfs::usage::TreeUsage;
use crate::source::TarStream;
use crate::workspace::Workspace;
use anyhow::{anyhow, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Opens the source's tar stream, again if a first pass must be redone.
pub type OpenStream<'a> = dyn Fn() -> Result<Box<dyn TarStream + 'a>> + 'a;

/// Asked when the image's stream ends (see [`edit::edit_with`]): a kernel bundle's entries.
pub type LaterEntries<'a> = dyn Fn(&mut GuestTree) -> Result<Option<JoinedStream<'a>>> + 'a;

/// Guest setup, run on the tree once the stream has passed; its result comes back in [`Edited`].
pub type Setup<'s, T> = dyn Fn(&mut GuestTree) -> Result<T> + 's;

/// What fills the root: the stream and what it will need (counted, or an estimate).
pub struct Source<'a> {
    pub open: &'a OpenStream<'a>,
    pub more: &'a LaterEntries<'a>,
    pub usage: TreeUsage,
    /// Whether `usage` was counted (a tarball's headers) rather than estimated.
    pub exact: bool,
}

/// What the options ask of the disk around the root.
pub struct Shape {
    pub size: SizeRequest,
    pub esp_size: u64,
    /// GRUB's BIOS stage needs a partition of its own.
    pub bios_boot: bool,
    /// Bytes before the filesystem in the root partition (a LUKS2 header).
    pub luks_header: u64,
    /// The disk's size is a multiple of this (GCE takes whole GiB).
    pub multiple: u64,
    pub arch: Arch,
}

/// The root filesystem, filled one of two ways.
pub struct RootFs<'a, 's> {
    pub source: &'a Source<'s>,
    pub shape: &'a Shape,
    /// The MBR's boot code for a layout (the BIOS loader's, where there is one).
    pub bootcode: &'a dyn Fn(&Layout) -> Result<[u8; 440]>,
    pub policy: &'a edit::Policy,
    pub ids: &'a Identifiers,
    pub raw_path: &'a Path,
    pub workspace: &'a Workspace,
    pub epoch: Option<i64>,
}

impl RootFs<'_, '_> {
    /// Fill the root the way `populate` says this host's mke2fs takes files, running `setup` on
    /// the tree once the stream has passed. Returns the layout written and the edit's result.
    pub fn write<T>(
        &self,
        populate: &Populate,
        timings: &mut Timings,
        setup: &Setup<T>,
    ) -> Result<(Layout, Edited<T>)> {
        match populate {
            Populate::Stream => timings.spin(
                "rootfs",
                "Writing the root filesystem (image stream → mke2fs -d -)",
                || self.stream(setup),
            ),
            Populate::Staging(_) => self.staged(timings, setup),
        }
    }

    /// One pass: the source's stream, edited, into `mke2fs -d -` writing the root partition.
    /// Sized from the source's estimate; when that proves too small, one pass to count (the
    /// stream edit measures what it writes) and the real one again.
    fn stream<T>(&self, setup: &Setup<T>) -> Result<(Layout, Edited<T>)> {
        let source = self.source;
        let layout = self.layout(&source.usage, source.exact)?;
        match self.stream_into(&layout, &source.usage, source.exact, setup) {
            Err(e) if ext4::TooSmall::find(&e).is_some() && !source.exact => {
                log::info!("the estimate was short ({e:#}); counting the files");
                let counted = self.edit_into(std::io::sink(), setup)?.usage;
                let layout = self.layout(&counted, true)?;
                self.stream_into(&layout, &counted, true, setup)
                    .map(|edited| (layout, edited))
            }
            result => result.map(|edited| (layout, edited)),
        }
    }

    /// `exact`: whether `usage` was counted. An estimate shapes no inode count: it differs by
    /// transport (layers' compressed sizes), and the same image must give the same bytes from
    /// each. The default ratio is generous; where it falls short, the count's pass follows.
    fn stream_into<T>(
        &self,
        layout: &Layout,
        usage: &TreeUsage,
        exact: bool,
        setup: &Setup<T>,
    ) -> Result<Edited<T>> {
        self.partition(layout)?;
        let mut edited = None;
        let inodes = match exact {
            true => ext4::inode_count(usage, layout.filesystem().size),
            false => None,
        };
        ext4::make(self.mkfs(
            layout,
            Files::Stream(&mut |stdin| {
                edited = Some(self.edit_into(stdin, setup)?);
                Ok(())
            }),
            inodes,
        ))?;
        let edited =
            edited.ok_or_else(|| anyhow!("mke2fs finished before the stream was written"))?;
        ext4::set_xattrs(
            self.raw_path,
            layout.filesystem().start,
            &edited.other_xattrs,
            self.workspace.scratch(),
        )?;
        Ok(edited)
    }

    /// mke2fs's settings for the root of `layout`: the one place they are written.
    fn mkfs<'f>(
        &'f self,
        layout: &Layout,
        files: Files<'f>,
        inodes: Option<u64>,
    ) -> ext4::Mkfs<'f> {
        let fs = layout.filesystem();
        ext4::Mkfs {
            image: self.raw_path,
            offset: fs.start,
            size: fs.size,
            files,
            uuid: self.ids.root_fs,
            hash_seed: self.ids.hash_seed,
            inodes,
            scratch: self.workspace.scratch(),
            epoch: self.epoch,
        }
    }

    /// The source's stream, edited, into `sink`.
    fn edit_into<T>(&self, sink: impl Write, setup: &Setup<T>) -> Result<Edited<T>> {
        edit_stream(self.source, self.policy, sink, setup)
    }

    /// Where mke2fs reads no tar: the edited stream through the safe unpacker into the staging
    /// tree (as root, for owners and devices), then `mke2fs -d TREE`.
    fn staged<T>(&self, timings: &mut Timings, setup: &Setup<T>) -> Result<(Layout, Edited<T>)> {
        let tree = self.workspace.root();
        let edited = timings.time("unpack", || {
            let (reader, writer) = rustix::pipe::pipe().context("making a pipe")?;
            std::thread::scope(|s| {
                let unpacker = s.spawn(|| unpack::unpack(std::fs::File::from(reader), &tree));
                let edited = self.edit_into(std::fs::File::from(writer), setup);
                let unpacked = unpacker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the unpacker panicked")));
                // Whichever stopped first explains the other's failure: the unpacker's refusal
                // the broken pipe the edit then saw, the edit's refusal the archive cut short
                // that the unpacker then saw.
                match (unpacked, edited) {
                    (Err(unpacker), Err(edit)) if cmd::is_broken_pipe(Some(&edit)) => Err(unpacker),
                    (_, Err(edit)) => Err(edit),
                    (Err(unpacker), Ok(_)) => Err(unpacker),
                    (Ok(()), Ok(edited)) => Ok(edited),
                }
            })
        })?;
        let usage = TreeUsage::of_tree(&tree)?;
        let layout = self.layout(&usage, true)?;
        self.partition(&layout)?;
        timings.spin(
            "mke2fs",
            "Creating the ext4 root filesystem (mke2fs -d)",
            || {
                let inodes = ext4::inode_count(&usage, layout.filesystem().size);
                ext4::make(self.mkfs(&layout, Files::Tree(&tree), inodes))
            },
        )?;
        Ok((layout, edited))
    }

    /// The layout for `usage`. An explicit `--size` below an exact need fails here, naming the
    /// smallest that fits; below an estimate it is tried (estimates run high).
    fn layout(&self, usage: &TreeUsage, exact: bool) -> Result<Layout> {
        let shape = self.shape;
        let for_disk =
            |bytes| Layout::for_disk(bytes, shape.esp_size, shape.bios_boot, shape.luks_header);
        let layout = match (shape.size, exact) {
            (SizeRequest::Bytes(bytes), false) => for_disk(bytes)?,
            _ => Layout::plan(
                usage,
                shape.size,
                shape.esp_size,
                shape.bios_boot,
                shape.luks_header,
            )?,
        };
        // GCE takes whole GiB only: the root partition gets the rest.
        match layout.disk_size % shape.multiple {
            0 => Ok(layout),
            _ => for_disk(layout.disk_size.div_ceil(shape.multiple) * shape.multiple),
        }
    }

    /// A fresh raw image of the layout's size with its partition table (and MBR boot code).
    fn partition(&self, layout: &Layout) -> Result<()> {
        let mut image = create_raw(self.raw_path, layout.disk_size)?;
        let bootcode = (self.bootcode)(layout)?;
        gpt::write_table(
            &mut image,
            layout,
            &self.ids.gpt,
            self.shape.arch,
            &bootcode,
        )
    }
}

/// A live medium's root: the source's stream, edited, into a squashfs at `out` (one pass, as for
/// ext4), running `setup` as the stream ends.
pub fn write_squashfs<T>(
    source: &Source,
    policy: &edit::Policy,
    out: &Path,
    epoch: Option<i64>,
    setup: &Setup<T>,
) -> Result<Edited<T>> {
    super::squashfs::make(out, epoch, |stdin| {
        edit_stream(source, policy, stdin, setup)
    })
}

/// The source's stream, edited, into `sink`.
fn edit_stream<T>(
    source: &Source,
    policy: &edit::Policy,
    sink: impl Write,
    setup: &Setup<T>,
) -> Result<Edited<T>> {
    let stream = (source.open)()?;
    let mut stream = std::io::BufReader::with_capacity(1 << 20, stream);
    let edited = edit::edit_with(
        &mut stream,
        sink,
        policy,
        &mut |tree| (source.more)(tree),
        setup,
    );
    // A source that broke (a layer's digest, a registry) explains the edit's failure.
    let edited = match edited {
        Err(e) => return Err(stream.get_mut().failure().unwrap_or(e)),
        Ok(edited) => edited,
    };
    // Read to the real end, past the end-of-archive blocks, so the source finishes cleanly.
    std::io::copy(&mut stream, &mut std::io::sink()).context("reading the source to its end")?;
    stream.into_inner().finish()?;
    Ok(edited)
}

/// Create the raw disk file at `path`, `size` bytes long and sparse, open for writing. 0600 until
/// the output is committed (0644 then): it holds the root password's hash and, for an
/// encrypted root, the plain filesystem until it is sealed.
fn create_raw(path: &Path, size: u64) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    image
        .set_len(size)
        .with_context(|| format!("sizing {}", path.display()))?;
    Ok(image)
}
