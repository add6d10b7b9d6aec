//! The disk stage: a GPT raw image written as plain file I/O, no loop devices and no mounts.
//! `layout` does the arithmetic, `gpt` writes the partition table and protective MBR, `ext4`
//! runs `mke2fs -d` into the root partition, `esp` writes the FAT32 EFI system partition.
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod layout;
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
}

impl Identifiers {
    pub fn random() -> Identifiers {
        Identifiers {
            gpt: gpt::DiskIds::random(),
            root_fs: uuid::Uuid::new_v4(),
            esp_volume: rand::random(),
        }
    }

    /// The ESP's volume id as Linux shows it (`ABCD-1234`), for fstab.
    pub fn esp_uuid(&self) -> String {
        esp::volume_uuid(self.esp_volume)
    }
}
