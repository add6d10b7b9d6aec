//! The machine around the app: filesystems, hostname, the console, power off.
use rustix::mount::{mount, mount_remount, MountFlags};
use std::io::Write;

/// Mount what a Linux userland expects, making mount points the image lacks.
pub fn mount_all() -> Result<(), String> {
    // The initramfs mounted the root read-only or read-write; make it writable first, so that
    // missing mount points can be made.
    mount_remount("/", MountFlags::empty(), "")
        .map_err(|e| format!("remounting / read-write: {e}"))?;
    #[rustfmt::skip]
    let table: &[(&str, &str, &str, MountFlags, &str)] = &[
        ("proc", "/proc", "proc", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", MountFlags::NOSUID | MountFlags::NOEXEC, "gid=5,mode=620,ptmxmode=666"),
        ("shm", "/dev/shm", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=1777"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, ""),
    ];
    for (source, target, fstype, flags, data) in table {
        let _ = std::fs::create_dir_all(target);
        let data = std::ffi::CString::new(*data).map_err(|e| e.to_string())?;
        match mount(*source, *target, *fstype, *flags, Some(data.as_c_str())) {
            Ok(()) => {}
            // The initramfs moved its /dev (and maybe /proc, /sys, /run) here already.
            Err(rustix::io::Errno::BUSY) => {}
            Err(e) => return Err(format!("mounting {fstype} on {target}: {e}")),
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok(())
}

/// The console as stdin, stdout and stderr, if the kernel gave init none.
pub fn ensure_console() {
    if rustix::io::fcntl_getfd(rustix::stdio::stdout()).is_ok() {
        return;
    }
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which nothing else holds yet.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// The hostname, and /etc/hosts naming it (where the image lets us write).
pub fn set_hostname(name: &str) -> Result<(), String> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| format!("setting the hostname: {e}"))?;
    let _ = std::fs::create_dir_all("/etc");
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    std::fs::write("/etc/hosts", hosts).map_err(|e| format!("writing /etc/hosts: {e}"))?;
    std::fs::write("/etc/hostname", format!("{name}\n"))
        .map_err(|e| format!("writing /etc/hostname: {e}"))
}

pub fn write_resolv_conf(servers: &[String]) -> Result<(), String> {
    let mut text = String::from("# Written by c2vm-init.\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    // An image's resolv.conf may be a symlink into /run (systemd-resolved): replace it.
    let _ = std::fs::remove_file("/etc/resolv.conf");
    std::fs::write("/etc/resolv.conf", text).map_err(|e| format!("writing /etc/resolv.conf: {e}"))
}

/// A line on the console, marked as init's.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "c2vm-init: {line}");
    let _ = out.flush();
}

/// Sync and power off: the end of every run, never a kernel panic.
pub fn power_off() -> ! {
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // reboot only returns on failure; halt the CPU politely until the host gives up.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
