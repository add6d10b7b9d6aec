//! The architecture an image's programs are for, read from one program's ELF header. A `rootfs:`
//! tarball has no config to say it (`tarball::architecture`); an image's config can say it wrong:
//! Debian 12's Docker ignores `docker import --platform`, so an arm64 root imported there says
//! amd64, gets the amd64 kernel and template, and fails deep in apt. The check here refuses such
//! an image before any build, in one line.
use crate::arch::Arch;
use crate::image::ImageConfig;
use anyhow::{bail, Result};

/// The first bytes of an ELF file, up to its machine field.
pub const HEADER_LEN: usize = 20;

/// What a file's first bytes say it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// A 64-bit little-endian program for one of the architectures c2vm boots.
    Known(Arch),
    /// Another ELF program (32-bit, another machine): its ELF machine number.
    Other(u16),
    /// Not an ELF file (a script, or shorter than a header).
    NotElf,
}

pub fn machine(header: &[u8]) -> Machine {
    if header.len() < HEADER_LEN || &header[..4] != b"\x7fELF" {
        return Machine::NotElf;
    }
    match Arch::of_elf(header) {
        Some(arch) => Machine::Known(arch),
        None => Machine::Other(u16::from_le_bytes([header[18], header[19]])),
    }
}

/// The programs whose header tells the image's architecture, in the order tried: its shell,
/// busybox (images without a shell link), and the program ENTRYPOINT (else CMD) names by an
/// absolute path (distroless images have no shell).
fn candidates(config: &ImageConfig) -> Vec<String> {
    let mut paths = vec!["/bin/sh".to_string(), "/bin/busybox".to_string()];
    if let Some(program) = config.argv().into_iter().next() {
        if program.starts_with('/') && !paths.contains(&program) {
            paths.push(program);
        }
    }
    paths
}

/// Refuse an image whose program at `path` (first bytes `header`) is for another architecture
/// than its config says. A program of no architecture c2vm knows (32-bit, x32) proves nothing
/// here and passes: the config's architecture then decides, as before.
pub fn check(reference: &str, config: Arch, path: &str, header: &[u8]) -> Result<()> {
    match machine(header) {
        Machine::Known(program) if program != config => bail!(
            "{reference}: its config says {}, but its {path} is a {} program; rebuild or re-import the image with --platform {} (Debian 12's Docker ignores `docker import --platform`)",
            config.platform(),
            program.platform(),
            program.platform()
        ),
        _ => Ok(()),
    }
}

/// Through an engine: the first of the image's [`candidates`] that exists and is an ELF program,
/// checked against `config`, the architecture its config says. The container made to read it is
/// never started, and removed on every path (its guard).
#[cfg(feature = "cli")]
pub fn check_image(
    engine: &super::docker::Engine,
    image: &super::ImageDetails,
    reference: &str,
    config: Arch,
) -> Result<()> {
    let container = engine.create_container(&image.id)?;
    let mut found = None;
    for path in candidates(&image.config) {
        if let Some(header) = engine.read_head(&container, &path, HEADER_LEN)? {
            if machine(&header) != Machine::NotElf {
                found = Some((path, header));
                break;
            }
        }
    }
    container.remove()?;
    match found {
        Some((path, header)) => check(reference, config, &path, &header),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u8) -> Vec<u8> {
        let mut header = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\0\0".to_vec();
        header[18] = machine;
        header
    }

    #[test]
    fn headers_say_their_machine() {
        assert_eq!(machine(&elf(0xb7)), Machine::Known(Arch::Arm64));
        assert_eq!(machine(&elf(62)), Machine::Known(Arch::Amd64));
        assert_eq!(machine(&elf(243)), Machine::Other(243));
        assert_eq!(machine(b"#!/bin/sh\nexec true\n"), Machine::NotElf);
        assert_eq!(machine(b"\x7fELF"), Machine::NotElf);
    }

    #[test]
    fn a_program_for_another_architecture_than_the_config_is_refused_in_one_line() {
        // An arm64 root imported as amd64 (Debian 12's `docker import --platform`).
        let err = check("imported:latest", Arch::Amd64, "/bin/sh", &elf(0xb7)).unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(
            msg,
            "imported:latest: its config says linux/amd64, but its /bin/sh is a linux/arm64 program; rebuild or re-import the image with --platform linux/arm64 (Debian 12's Docker ignores `docker import --platform`)"
        );
        assert!(!msg.contains('\n'));
        let err = check("x", Arch::Arm64, "/app", &elf(62)).unwrap_err();
        assert!(err.to_string().contains("--platform linux/amd64"), "{err}");
        // Agreeing, or nothing to tell by: no objection.
        check("x", Arch::Amd64, "/bin/sh", &elf(62)).unwrap();
        check("x", Arch::Arm64, "/bin/sh", &elf(0xb7)).unwrap();
        check("x", Arch::Amd64, "/bin/sh", &elf(3)).unwrap();
        check("x", Arch::Amd64, "/entrypoint.sh", b"#!/bin/sh\n").unwrap();
    }

    #[test]
    fn the_shell_then_busybox_then_the_entrypoint_program_are_tried() {
        let config = ImageConfig {
            entrypoint: vec!["/app/server".into()],
            cmd: vec!["--port".into()],
            ..Default::default()
        };
        assert_eq!(
            candidates(&config),
            ["/bin/sh", "/bin/busybox", "/app/server"]
        );
        // A name looked up in PATH is not read; CMD's program counts without ENTRYPOINT.
        let config = ImageConfig {
            cmd: vec!["nginx".into()],
            ..Default::default()
        };
        assert_eq!(candidates(&config), ["/bin/sh", "/bin/busybox"]);
        let config = ImageConfig {
            cmd: vec!["/usr/bin/env".into()],
            ..Default::default()
        };
        assert_eq!(candidates(&config).len(), 3);
    }
}
