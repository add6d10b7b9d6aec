//! Find the kernel and initramfs the disk boots: the newest `/boot/vmlinuz-VERSION` that has an
//! initramfs beside it (Debian/Ubuntu `initrd.img-V`, Fedora `initramfs-V.img`, Alpine
//! `initramfs-virt`).
use super::tree::GuestTree;
use anyhow::{bail, Result};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub version: String,
    /// Guest paths, e.g. `/boot/vmlinuz-6.1.0-27-amd64`.
    pub kernel: String,
    pub initrd: String,
}

const INITRD_NAMES: &[(&str, &str)] = &[
    ("initrd.img-", ""),
    ("initramfs-", ".img"),
    ("initramfs-", ""),
    ("initrd-", ""),
];

/// What lives on the ESP, which the guest mounts at `/boot`: everything under it. So the kernel
/// packages write their files once, where the loaders read them (docs/lifecycle.md).
pub fn on_esp(key: &[u8]) -> bool {
    key.starts_with(b"boot/")
}

/// The files [`find`] may pick, so the stream edit copies them as they pass (for the ESP).
pub fn is_candidate(key: &[u8]) -> bool {
    let Some(name) = key.strip_prefix(b"boot/") else {
        return false;
    };
    !name.contains(&b'/')
        && (name.starts_with(b"vmlinuz-")
            || INITRD_NAMES
                .iter()
                .any(|(pre, _)| name.starts_with(pre.as_bytes())))
}

pub fn find(guest: &mut GuestTree) -> Result<BootFiles> {
    let names = guest.list("/boot")?;
    let mut found: Vec<BootFiles> = Vec::new();
    for name in &names {
        let Some(version) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        if !guest.is_regular(&format!("/boot/{name}"))? {
            continue;
        }
        let initrd = INITRD_NAMES
            .iter()
            .map(|(pre, post)| format!("{pre}{version}{post}"))
            .find(|candidate| names.contains(candidate));
        if let Some(initrd) = initrd {
            found.push(BootFiles {
                version: version.to_string(),
                kernel: format!("/boot/{name}"),
                initrd: format!("/boot/{initrd}"),
            });
        }
    }
    found.sort_by(|a, b| compare_versions(&a.version, &b.version));
    match found.pop() {
        Some(files) => Ok(files),
        None => bail!(
            "no kernel found: the root filesystem has no /boot/vmlinuz-VERSION with an initramfs beside it \
             (found in /boot: {}); convert an image through the Docker source so c2vm adds one, or install a kernel package in it",
            if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
        ),
    }
}

/// Compare versions the way people read them: `6.1.0-10` after `6.1.0-9`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, p), (true, q)) => {
                let p = p.trim_start_matches('0');
                let q = q.trim_start_matches('0');
                p.len().cmp(&q.len()).then(p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            compare_versions("6.1.0-10-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("5.10.0-28-amd64", "6.1.0-9-amd64"),
            Ordering::Less
        );
        assert_eq!(compare_versions("6.1.0", "6.1.0"), Ordering::Equal);
        assert_eq!(compare_versions("6.1", "6.1.0"), Ordering::Less);
    }

    use crate::rootfs::tree::tests::tree;
    use crate::rootfs::tree::Kind;

    fn boot(files: &[&str]) -> GuestTree {
        let mut entries = vec![("boot".to_string(), Kind::Dir)];
        entries.extend(files.iter().map(|f| (format!("boot/{f}"), Kind::File)));
        let entries: Vec<(&str, Kind, u32, &[u8])> = entries
            .iter()
            .map(|(p, k)| (p.as_str(), k.clone(), 0o644, &b"x"[..]))
            .collect();
        tree(&entries)
    }

    #[test]
    fn newest_kernel_with_an_initramfs_wins() {
        let mut g = boot(&[
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.2.0-1-amd64", /* no initrd */
        ]);
        let files = find(&mut g).unwrap();
        assert_eq!(files.version, "6.1.0-10-amd64");
        assert_eq!(files.initrd, "/boot/initrd.img-6.1.0-10-amd64");
        assert!(is_candidate(b"boot/initrd.img-6.1.0-10-amd64"));
        assert!(!is_candidate(b"boot/grub/x") && !is_candidate(b"usr/boot/vmlinuz-1"));
    }

    #[test]
    fn fedora_and_alpine_names() {
        for (k, i) in [
            (
                "vmlinuz-6.5.6-300.fc39.x86_64",
                "initramfs-6.5.6-300.fc39.x86_64.img",
            ),
            ("vmlinuz-virt", "initramfs-virt"),
        ] {
            let files = find(&mut boot(&[k, i])).unwrap();
            assert_eq!(files.initrd, format!("/boot/{i}"));
        }
    }

    #[test]
    fn no_kernel_is_a_clear_error() {
        let msg = format!("{:#}", find(&mut boot(&[])).unwrap_err());
        assert!(msg.contains("no kernel found"), "{msg}");
    }
}
