//! `--luks-passphrase-file`: the root partition as LUKS2, written as plain file I/O (no root, no
//! loop device, no device-mapper). `cryptsetup luksFormat` writes the header to a scratch file
//! with a volume key c2vm generated; mke2fs has already written the plain filesystem where the
//! data area goes (after the header), and c2vm encrypts it in place with that key, AES-XTS as
//! dm-crypt does, one 4096-byte sector at a time.
//!
//! Only the blocks mke2fs wrote are encrypted: the rest of the partition stays a hole, as sparse
//! as a plain disk. That shows which blocks of the partition were in use when it was made (the
//! same as dm-crypt's `discard` shows after trims); the data in them stays secret.
use super::layout::Extent;
use crate::cmd::Cmd;
use crate::secret::Secret;
use crate::units::MIB;
use aes::cipher::KeyInit;
use aes::Aes256;
use anyhow::{Context, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;
use xts_mode::Xts128;
use zeroize::Zeroizing;

/// The LUKS2 header and key slots before the data: cryptsetup's default for LUKS2.
pub const HEADER: u64 = 16 * MIB;
/// The data area's sector: 4096 bytes, as the filesystem's blocks.
const SECTOR: usize = 4096;
/// aes-xts-plain64 with a 512-bit key: two AES-256 keys, for data and for tweaks.
const KEY_BYTES: usize = 64;
/// The mapped device's name in the guest (`/dev/mapper/c2vm_root`).
pub const MAPPING: &str = "c2vm_root";
/// argon2id's cost, fixed rather than benchmarked on the host: the guest pays it at every
/// unlock, and a VM (under emulation above all) is far slower than the host that converts.
/// 256 MiB fits a 512 MiB guest; 4 passes take about 1 s on a current core.
const PBKDF_MEMORY_KIB: &str = "262144";
const PBKDF_ITERATIONS: &str = "4";

/// The passphrase: the first line of a file or of stdin (read by [`Secret`]), never in argv or
/// a log.
pub struct Passphrase(Secret);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How errors name it.
const WHAT: &str = "the passphrase";

impl Passphrase {
    pub fn from_file(path: &Path) -> Result<Passphrase> {
        let file = std::fs::File::open(path).with_context(|| {
            format!("--luks-passphrase-file {}: cannot read it", path.display())
        })?;
        let secret = Secret::first_line(file, WHAT)
            .with_context(|| format!("--luks-passphrase-file {}", path.display()))?;
        Ok(Passphrase(secret))
    }

    pub fn from_stdin() -> Result<Passphrase> {
        let secret = Secret::from_stdin(WHAT).context("--luks-passphrase-stdin")?;
        Ok(Passphrase(secret))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Turns the plain filesystem mke2fs wrote at `partition.start + HEADER` into a LUKS2 volume:
/// header first, then the data encrypted in place.
pub fn seal(
    image: &Path,
    partition: Extent,
    uuid: uuid::Uuid,
    passphrase: &Passphrase,
    scratch: &Path,
) -> Result<()> {
    let key = volume_key()?;
    let header = format_header(partition, uuid, passphrase, &key, scratch)?;
    let disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    disk.write_all_at(&header, partition.start)
        .context("writing the LUKS2 header")?;
    encrypt_in_place(
        &disk,
        partition.start + HEADER,
        partition.start + partition.size,
        &key,
    )
}

fn volume_key() -> Result<Zeroizing<[u8; KEY_BYTES]>> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, key.as_mut_slice())
        .context("reading random bytes for the volume key")?;
    Ok(key)
}

/// `cryptsetup luksFormat` on a sparse scratch file the partition's size (0600: it holds the key
/// slot): the passphrase and the volume key each through a pipe it reads as `/dev/fd/N`, so
/// neither is in argv, a file or a buffer of c2vm's. Returns the header's bytes; the file is
/// removed on every path (and with the workspace on Ctrl-C).
fn format_header(
    partition: Extent,
    uuid: uuid::Uuid,
    passphrase: &Passphrase,
    key: &[u8; KEY_BYTES],
    scratch: &Path,
) -> Result<Zeroizing<Vec<u8>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = scratch.join("luks-header");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let _remove = RemoveOnDrop(&path);
    file.set_len(partition.size)
        .with_context(|| format!("sizing {}", path.display()))?;
    let key_pipe = KeyPipe::with(key)?;
    let passphrase_pipe = KeyPipe::with(passphrase.bytes())?;
    Cmd::new("cryptsetup", "Writing the LUKS2 header")
        .args(["luksFormat", "--batch-mode", "--type", "luks2"])
        .args([
            "--cipher",
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--sector-size",
            "4096",
        ])
        .args(["--pbkdf", "argon2id", "--pbkdf-memory", PBKDF_MEMORY_KIB])
        .args([
            "--pbkdf-force-iterations",
            PBKDF_ITERATIONS,
            "--pbkdf-parallel",
            "1",
        ])
        .args(["--offset", &(HEADER / 512).to_string()])
        .arg("--uuid")
        .arg(uuid.to_string())
        // Locks live in /run/cryptsetup, which only root may write; this file is c2vm's alone.
        .arg("--disable-locks")
        .arg("--volume-key-file")
        .arg(key_pipe.path())
        .arg("--key-file")
        .arg(passphrase_pipe.path())
        .arg(&path)
        .run()?;
    drop((key_pipe, passphrase_pipe));
    let mut header = Zeroizing::new(vec![0u8; HEADER as usize]);
    file.read_exact_at(&mut header, 0)
        .context("reading the LUKS2 header back")?;
    Ok(header)
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The read end of a pipe holding a secret, open in c2vm without close-on-exec so that
/// cryptsetup inherits it; closed when dropped. A child another thread started meanwhile would
/// inherit it too: none does while the disk is sealed (the pipeline runs one tool at a time).
struct KeyPipe(std::os::fd::OwnedFd);

impl KeyPipe {
    fn with(secret: &[u8]) -> Result<KeyPipe> {
        use std::io::Write;
        let (reader, writer) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("making a pipe")?;
        // At most 512 bytes, which fit in any pipe's buffer: written now, then the write end
        // closes, so cryptsetup reads exactly these bytes.
        std::fs::File::from(writer)
            .write_all(secret)
            .context("writing a key to a pipe")?;
        rustix::io::fcntl_setfd(&reader, rustix::io::FdFlags::empty())
            .context("handing the volume key's pipe on")?;
        Ok(KeyPipe(reader))
    }

    fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/dev/fd/{}", self.0.as_raw_fd())
    }
}

/// Encrypts the data area `[start, end)` of `disk` in place, where mke2fs wrote blocks (holes
/// stay holes). The tweak is dm-crypt's plain64 IV: the sector's offset from the start of the
/// data area in 512-byte units, whatever the sector size (LUKS2 never counts in larger ones).
fn encrypt_in_place(
    disk: &std::fs::File,
    start: u64,
    end: u64,
    key: &[u8; KEY_BYTES],
) -> Result<()> {
    let (data_key, tweak_key) = key.split_at(KEY_BYTES / 2);
    let xts = Xts128::new(
        Aes256::new_from_slice(data_key).context("the volume key")?,
        Aes256::new_from_slice(tweak_key).context("the volume key")?,
    );
    let mut buf = Zeroizing::new(vec![0u8; 4 * MIB as usize]);
    let mut done = start;
    for (from, to) in data_ranges(disk, start, end)? {
        // Whole sectors of the data area (mke2fs writes whole 4 KiB blocks), each once: a host
        // filesystem with smaller blocks may report two ranges within one sector.
        let from = (start + (from - start) / SECTOR as u64 * SECTOR as u64).max(done);
        let to = start + (to - start).div_ceil(SECTOR as u64) * SECTOR as u64;
        let mut at = from;
        while at < to.min(end) {
            crate::interrupt::check()?;
            let len = (to.min(end) - at).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..len];
            disk.read_exact_at(chunk, at)
                .context("reading the root filesystem to encrypt it")?;
            for (i, sector) in chunk.chunks_exact_mut(SECTOR).enumerate() {
                let iv = (at - start) / 512 + (i * SECTOR / 512) as u64;
                xts.encrypt_sector(sector, u128::from(iv).to_le_bytes());
            }
            disk.write_all_at(chunk, at)
                .context("writing the encrypted root filesystem")?;
            at += len as u64;
        }
        done = done.max(at);
    }
    disk.sync_all().context("flushing the encrypted root")
}

/// The ranges of `[start, end)` that hold data (SEEK_DATA/SEEK_HOLE), in order.
fn data_ranges(disk: &std::fs::File, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let mut ranges = Vec::new();
    let mut at = start;
    while at < end {
        let data = match seek(disk, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem that cannot tell: all of it is data (correct, just not sparse).
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if at == start => {
                return Ok(vec![(start, end)])
            }
            Err(e) => return Err(e).context("finding the root filesystem's blocks"),
        };
        if data >= end {
            break;
        }
        let hole =
            seek(disk, SeekFrom::Hole(data)).context("finding the root filesystem's blocks")?;
        ranges.push((data, hole.min(end)));
        at = hole;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passphrase_file_names_its_option_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, "correct horse\r\nsecond line\n").unwrap();
        let p = Passphrase::from_file(&path).unwrap();
        assert_eq!(p.bytes(), b"correct horse");
        assert!(!format!("{p:?}").contains("horse"));
        std::fs::write(&path, "\nnext\n").unwrap();
        let err = format!("{:#}", Passphrase::from_file(&path).unwrap_err());
        assert!(
            err.starts_with("--luks-passphrase-file") && err.contains("the passphrase is empty"),
            "{err}"
        );
    }

    /// The tweak is counted in 512-byte units from the data area: decrypting a sector with the
    /// same key and that tweak gives the plain bytes back, and a hole stays a hole.
    #[test]
    fn only_written_sectors_are_encrypted_with_their_offset_as_tweak() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let start = MIB;
        file.set_len(start + 8 * MIB).unwrap();
        let plain = vec![0x5au8; SECTOR];
        file.write_all_at(&plain, start + 3 * MIB).unwrap();
        let key = [7u8; KEY_BYTES];
        encrypt_in_place(&file, start, start + 8 * MIB, &key).unwrap();
        let mut sector = vec![0u8; SECTOR];
        file.read_exact_at(&mut sector, start + 3 * MIB).unwrap();
        assert_ne!(sector, plain);
        let xts = Xts128::new(
            Aes256::new_from_slice(&key[..32]).unwrap(),
            Aes256::new_from_slice(&key[32..]).unwrap(),
        );
        xts.decrypt_sector(&mut sector, u128::from(3 * MIB / 512).to_le_bytes());
        assert_eq!(sector, plain);
        assert_eq!(data_ranges(&file, start, start + 8 * MIB).unwrap().len(), 1);
    }
}
