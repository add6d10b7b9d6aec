//! The disk stage: a GPT raw image written as plain file I/O, no loop devices and no mounts.
//! `layout` does the arithmetic, `gpt` writes the partition table and protective MBR, `ext4`
//! runs `mke2fs -d` into the root partition, `esp` writes the FAT32 EFI system partition.
pub mod esp;
pub mod ext4;
pub mod gpt;
pub mod layout;
pub mod window;
