//! The root filesystem stage: unpack a tar stream safely into the guest's tree, then configure it
//! as a machine (fstab, hostname, passwords, the image's process as a service). Also finds the
//! kernel and initramfs the disk boots.
pub mod app;
pub mod boot_files;
pub mod guest;
mod init;
pub mod setup;
pub mod unpack;
mod users;
