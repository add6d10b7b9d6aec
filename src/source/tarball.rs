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
    let (file, meta) = open_file(path)?;
    let stage = Stage::bytes("Reading the root filesystem", meta.len());
    let reader = BufReader::with_capacity(1 << 20, stage.reader(file));
    Ok(TarballStream { reader, stage })
}

/// Before any work: the tarball can be opened, and is a file.
pub fn check_exists(path: &Path) -> Result<()> {
    open_file(path).map(drop)
}

fn open_file(path: &Path) -> Result<(File, std::fs::Metadata)> {
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
    Ok((file, meta))
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

/// The architecture of a tarball's programs, which a `rootfs:` source has no config to say: the
/// first ELF file in the directories of programs (`/bin`, `/sbin`, `/usr/bin`, `/usr/sbin`,
/// `/usr/lib/systemd`). Headers are skipped by seeking; only that file's first bytes are read.
/// A tree with no program there (scripts alone) is taken for the host's, as said.
#[cfg(feature = "cli")]
pub fn architecture(path: &Path) -> Result<crate::arch::Arch> {
    use super::programs::{self, Machine};
    use crate::arch::Arch;
    const PROGRAM_DIRS: [&str; 5] = ["bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/lib/systemd/"];
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let corrupt = |e: std::io::Error| {
        anyhow::anyhow!(
            "{} is corrupt or truncated ({e}); check that it is a complete tar file",
            path.display()
        )
    };
    let mut other = None;
    for entry in archive.entries_with_seek().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = crate::tar_rules::key(&entry.path_bytes());
        if !PROGRAM_DIRS.iter().any(|d| name.starts_with(d.as_bytes())) {
            continue;
        }
        let mut header = [0u8; programs::HEADER_LEN];
        if entry.read_exact(&mut header).is_err() {
            continue;
        }
        match programs::machine(&header) {
            Machine::Known(arch) => return Ok(arch),
            Machine::Other(machine) => other = Some(machine),
            Machine::NotElf => continue,
        }
    }
    match other {
        Some(machine) => bail!(
            "{}: its programs are for ELF machine {machine}, and c2vm boots {}",
            path.display(),
            Arch::ALL.map(Arch::platform).join(" and ")
        ),
        None => {
            let host = Arch::host_or_default();
            crate::progress::note(&format!(
                "No program in {} says its architecture: the disk is for this host's ({host}); --platform chooses",
                path.display()
            ));
            Ok(host)
        }
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;
    use crate::arch::Arch;

    /// A tarball of `files` (path, contents), regular files only.
    fn tarball(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("root.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    #[test]
    fn the_first_program_says_the_tarball_s_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let mut arm64 = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\xb7\0".to_vec();
        arm64.resize(64, 0);
        let mut riscv = arm64.clone();
        riscv[18] = 243;
        // A script and a file outside the program directories are skipped.
        let path = tarball(
            dir.path(),
            &[
                ("etc/x", &arm64[..]),
                ("bin/script", b"#!/bin/sh\n"),
                ("usr/bin/tool", &arm64),
            ],
        );
        assert_eq!(architecture(&path).unwrap(), Arch::Arm64);
        let path = tarball(dir.path(), &[("bin/sh", &riscv[..])]);
        let err = architecture(&path).unwrap_err().to_string();
        assert!(
            err.contains("its programs are for ELF machine 243"),
            "{err}"
        );
    }
}
