//! The disk stage: a GPT raw image written as plain file I/O, no loop devices and no mounts.
//! `layout` does the arithmetic, `gpt` writes the partition table and protective MBR, `ext4`
//! runs `mke2fs -d` into the root partition, `luks` encrypts it where asked, `esp` writes the
//! FAT32 EFI system partition.
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod layout;
pub mod luks;
#[cfg(feature = "cli")]
pub mod root;
pub mod squashfs;
mod window;

/// Every identifier one disk carries, chosen before anything is written.
#[derive(Debug, Clone, Copy)]
pub struct Identifiers {
    /// The GPT's disk and partition GUIDs.
    pub gpt: gpt::DiskIds,
    /// The ext4 root filesystem's UUID (what `root=UUID=` names).
    pub root_fs: uuid::Uuid,
    /// The ESP's FAT volume id.
    pub esp_volume: u32,
    /// The seed of ext4's directory hashes (`-E hash_seed=`), which mke2fs would pick at random.
    pub hash_seed: uuid::Uuid,
    /// An encrypted root's LUKS2 UUID (what the guest's `cryptopts=` and crypttab name).
    pub luks: uuid::Uuid,
}

impl Identifiers {
    /// A live medium's ISO 9660 volume id, which its kernel command line names: `C2VM_` and the
    /// first 8 hex digits of the root's UUID, unique enough among the media of one machine.
    pub fn live_label(&self) -> String {
        let hex = self.root_fs.simple().to_string().to_ascii_uppercase();
        format!("C2VM_{}", &hex[..8])
    }

    pub fn random() -> Identifiers {
        Identifiers {
            gpt: gpt::DiskIds::random(),
            root_fs: uuid::Uuid::new_v4(),
            esp_volume: rand::random(),
            hash_seed: uuid::Uuid::new_v4(),
            luks: uuid::Uuid::new_v4(),
        }
    }

    /// Identifiers for a reproducible build: each one a hash of `seed` (the input's digest and
    /// every option that changes the disk) and its own name, shaped as a random (v4) UUID.
    pub fn derive(seed: &[u8]) -> Identifiers {
        use sha2::Digest;
        let id = |name: &str| {
            let digest = sha2::Sha256::new()
                .chain_update(seed)
                .chain_update(b"\0")
                .chain_update(name.as_bytes())
                .finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        };
        let volume = id("esp volume").as_bytes()[..4]
            .try_into()
            .map(u32::from_le_bytes)
            .unwrap_or_default();
        Identifiers {
            gpt: gpt::DiskIds {
                disk: id("gpt disk"),
                esp: id("gpt esp"),
                root: id("gpt root"),
                bios_boot: id("gpt bios boot"),
            },
            root_fs: id("root filesystem"),
            esp_volume: volume,
            hash_seed: id("ext4 hash seed"),
            luks: id("luks"),
        }
    }

    /// The ESP's volume id as Linux shows it (`ABCD-1234`), for fstab.
    pub fn esp_uuid(&self) -> String {
        esp::volume_uuid(self.esp_volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_identifiers_follow_the_seed() {
        let a = Identifiers::derive(b"sha256:abc|opts");
        let b = Identifiers::derive(b"sha256:abc|opts");
        let c = Identifiers::derive(b"sha256:abc|other opts");
        assert_eq!(a.root_fs, b.root_fs);
        assert_eq!(a.esp_volume, b.esp_volume);
        assert_ne!(a.root_fs, c.root_fs);
        assert_ne!(a.gpt.disk, a.gpt.root);
        assert_eq!(a.root_fs.get_version_num(), 4);
    }
}
