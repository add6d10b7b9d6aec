//! The root filesystem stage: the image's tar stream, edited in flight (`edit`) into a machine's
//! tree: fstab, hostname, passwords, the image's process as a service (`setup`, `app`), and the
//! kernel and initramfs the disk boots (`boot_files`). The edited stream goes to `mke2fs -d -`,
//! or through the safe unpacker (`unpack`) into a staging tree where mke2fs is too old.
pub mod app;
pub mod boot_files;
pub mod edit;
pub mod init;
pub mod setup;
pub mod tree;
pub mod unpack;
mod users;

/// What the stream edit copies for the ESP, whatever its size: the kernels and initramfs, and
/// the signed EFI binaries of a Secure Boot chain.
pub fn boot_file(key: &[u8]) -> bool {
    boot_files::is_candidate(key) || crate::boot::secure::is_candidate(key)
}

/// What the stream edit keeps for guest setup and the ESP. `epoch` (SOURCE_DATE_EPOCH) clamps
/// every timestamp and dates what setup writes; without it, that is now.
pub fn edit_policy(epoch: Option<i64>) -> edit::Policy {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let epoch = epoch.map(|e| e.max(0) as u64);
    edit::Policy {
        hold: setup::holds,
        copy: init::systemd::reads,
        boot: boot_file,
        clamp_mtime: epoch,
        now: epoch.unwrap_or(now),
    }
}
