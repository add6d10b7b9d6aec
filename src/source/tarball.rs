//! `rootfs:PATH`: a tarball of a whole root filesystem (e.g. what `docker export` writes), read
//! as a stream with progress.
use crate::progress::{ProgressReader, Stage};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The tarball as a stream; [`TarballStream::finish`] ends its progress line.
pub struct TarballStream {
    reader: BufReader<ProgressReader<File>>,
    stage: Stage,
}

/// Open `path` for reading, after checking it is a file.
pub fn open(path: &Path) -> Result<TarballStream> {
    let file = File::open(path)
        .with_context(|| format!("opening the root filesystem tarball {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        bail!(
            "{} is a directory; rootfs: takes a tar file",
            path.display()
        );
    }
    let stage = Stage::bytes("Reading the root filesystem", meta.len());
    let reader = BufReader::with_capacity(1 << 20, stage.reader(file));
    Ok(TarballStream { reader, stage })
}

impl super::TarStream for TarballStream {
    fn finish(self: Box<Self>) -> Result<()> {
        self.stage.done();
        Ok(())
    }
}

impl Read for TarballStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// The tarball's SHA-256, the input half of a reproducible disk's identifiers.
pub fn digest(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("sha256:{:x}", hasher.finalize()))
}
