//! Reading an initramfs's file names, to tell whether it can boot a live medium: the kernel
//! takes several cpio (newc) archives one after another, each plain or compressed (Debian's
//! early microcode archive is plain, the main one zstd or gzip); this walks them the same way.
use anyhow::{bail, Context, Result};
use std::io::Read;

const NEWC: &[u8] = b"070701";
const HEADER: usize = 110;

/// Whether the initramfs `image` holds a file named `name` (as the archive spells it, without
/// a leading `/`).
pub fn contains(image: &[u8], name: &str) -> Result<bool> {
    let mut data = std::borrow::Cow::Borrowed(image);
    let mut at = 0;
    loop {
        // Archives are padded with zeros between them.
        while data.get(at) == Some(&0) {
            at += 1;
        }
        let rest = &data[at.min(data.len())..];
        if rest.is_empty() {
            return Ok(false);
        }
        if rest.starts_with(NEWC) {
            let (found, used) = scan_archive(rest, name)?;
            if found {
                return Ok(true);
            }
            at += used;
            continue;
        }
        // A compressed archive runs to the end of the image (what the kernel reads too).
        let mut unpacked = Vec::new();
        let reading = || "reading the initramfs".to_string();
        if rest.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::read::Decoder::new(rest)
                .with_context(reading)?
                .read_to_end(&mut unpacked)
                .with_context(reading)?;
        } else if rest.starts_with(&[0x1f, 0x8b]) {
            flate2::read::MultiGzDecoder::new(rest)
                .read_to_end(&mut unpacked)
                .with_context(reading)?;
        } else {
            bail!("the initramfs is in a compression c2vm does not read (only zstd and gzip)");
        }
        data = std::borrow::Cow::Owned(unpacked);
        at = 0;
    }
}

/// One newc archive from the start of `data`: whether `name` is in it, and its length.
fn scan_archive(data: &[u8], name: &str) -> Result<(bool, usize)> {
    let field = |header: &[u8], i: usize| -> Result<usize> {
        let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i]).unwrap_or("");
        usize::from_str_radix(hex, 16).context("a damaged cpio header in the initramfs")
    };
    let mut at = 0;
    loop {
        let header = data
            .get(at..at + HEADER)
            .filter(|h| h.starts_with(NEWC))
            .context("the initramfs's cpio archive ends early")?;
        let (size, name_len) = (field(header, 6)?, field(header, 11)?);
        let entry = data
            .get(at + HEADER..at + HEADER + name_len.saturating_sub(1))
            .context("the initramfs's cpio archive ends early")?;
        at = (at + HEADER + name_len).next_multiple_of(4);
        at = (at + size).next_multiple_of(4);
        match entry {
            b"TRAILER!!!" => return Ok((false, at)),
            e if e == name.as_bytes() => return Ok((true, at)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = cpio::newc::Builder::new(name).mode(0o100644).nlink(1);
        let mut w = header.write(&mut out, data.len() as u32);
        std::io::Write::write_all(&mut w, data).unwrap();
        w.finish().unwrap();
        out
    }

    fn archive(names: &[&str]) -> Vec<u8> {
        let mut out: Vec<u8> = names.iter().flat_map(|n| entry(n, b"x")).collect();
        cpio::newc::trailer(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_names_in_plain_and_compressed_archives() {
        // An early plain archive, zero padding, then a zstd one, as Debian's are.
        let mut image = archive(&["kernel/x86/microcode/AuthenticAMD.bin"]);
        image.resize(image.len().next_multiple_of(512), 0);
        let main = archive(&["init", "scripts/c2vm-live", "usr/bin/sh"]);
        image.extend(zstd::encode_all(main.as_slice(), 3).unwrap());
        assert!(contains(&image, "scripts/c2vm-live").unwrap());
        assert!(contains(&image, "kernel/x86/microcode/AuthenticAMD.bin").unwrap());
        assert!(!contains(&image, "scripts/live").unwrap());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &main).unwrap();
        assert!(contains(&gz.finish().unwrap(), "scripts/c2vm-live").unwrap());
        assert!(contains(b"\x04\x22\x4d\x18lz4", "init").is_err());
    }
}
