//! c2vm's guest agent in guests with an init of their own (systemd, OpenRC): c2vm-init's binary,
//! run as `c2vm-init agent`, serving QEMU's guest agent protocol on the virtio-serial port of
//! that name. It starts only when the hypervisor gives that port (`c2vm run -d`, libvirt,
//! Proxmox, KubeVirt with an agent channel), so a disk booted elsewhere exposes nothing new.
//! c2vm-init guests need none of this: PID 1 serves the port itself.
use super::{c2vm, InitSystem};
use crate::arch::Arch;
use crate::rootfs::tree::{GuestTree, Perms};
use anyhow::Result;

/// Where the binary goes.
pub const BINARY: &str = "/usr/local/lib/c2vm/c2vm-init";
const UNIT: &str = include_str!("../../../templates/guest/c2vm-agent.service");
const UDEV_RULE: &str = include_str!("../../../templates/guest/c2vm-agent.rules");
const OPENRC_SCRIPT: &str = include_str!("../../../templates/guest/c2vm-agent.openrc");

/// Why the guest gets no agent of c2vm's, if it does not.
pub fn install(guest: &mut GuestTree, init: InitSystem, arch: Arch) -> Result<Option<String>> {
    // The image's own QEMU guest agent would hold the same port.
    for own in ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"] {
        if guest.exists(own)? {
            return Ok(Some(format!(
                "the image has its own QEMU guest agent ({own}): `c2vm exec` and `cp` talk to it, without streaming"
            )));
        }
    }
    let Ok(binary) = c2vm::binary(arch) else {
        return Ok(Some(format!(
            "this c2vm was built without c2vm-init for {arch}, which is also its agent"
        )));
    };
    let files: &[(&str, &str, u32)] = match init {
        InitSystem::Systemd => &[
            ("/etc/systemd/system/c2vm-agent.service", UNIT, 0o644),
            ("/etc/udev/rules.d/60-c2vm-agent.rules", UDEV_RULE, 0o644),
        ],
        InitSystem::OpenRc => &[("/etc/init.d/c2vm-agent", OPENRC_SCRIPT, 0o755)],
        InitSystem::Other => {
            return Ok(Some(
                "the image's own init is not one c2vm can add a service to".to_string(),
            ))
        }
    };
    guest.write(BINARY, binary, Perms::root(0o755))?;
    for (path, text, mode) in files {
        guest.write(path, text.as_bytes(), Perms::root(*mode))?;
    }
    if init == InitSystem::OpenRc {
        guest.symlink(
            "/etc/runlevels/default/c2vm-agent",
            "/etc/init.d/c2vm-agent",
        )?;
    }
    Ok(None)
}
