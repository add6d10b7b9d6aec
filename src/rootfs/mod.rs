//! The root filesystem stage: the image's tar stream, edited in flight (`edit`) into a machine's
//! tree: fstab, hostname, passwords, the image's process as a service (`setup`, `app`), and the
//! kernel and initramfs the disk boots (`boot_files`). The edited stream goes to `mke2fs -d -`,
//! or through the safe unpacker (`unpack`) into a staging tree where mke2fs is too old.
pub mod app;
pub mod boot_files;
pub mod edit;
pub mod init;
pub mod packages;
pub mod setup;
pub mod tree;
pub mod unpack;
pub mod usage;
mod users;
