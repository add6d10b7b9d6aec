//! Init systems, one module each. Guest setup and the app service ask here what the guest runs
//! as PID 1 and use that module's knowledge (unit directories, enabling, service files).
pub mod agent;
pub mod c2vm;
pub mod openrc;
pub mod systemd;

use crate::progress;
use crate::rootfs::tree::GuestTree;
use crate::rootfs::users::RunAs;
use anyhow::{bail, Result};

/// A long-running process for the init to start at boot, in any init's terms.
#[derive(Debug, Clone)]
pub struct Service {
    /// The program as a full path in the guest, then its arguments.
    pub argv: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub workdir: String,
    pub user: RunAs,
    /// The signal that stops it; empty for SIGTERM.
    pub stop_signal: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    OpenRc,
    /// Neither: c2vm can set the guest up but not add services to it.
    Other,
}

impl InitSystem {
    pub fn detect(guest: &mut GuestTree) -> Result<InitSystem> {
        Ok(if systemd::is_present(guest)? {
            InitSystem::Systemd
        } else if openrc::is_present(guest)? {
            InitSystem::OpenRc
        } else {
            InitSystem::Other
        })
    }
}

/// `--init`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum InitChoice {
    Auto,
    Image,
    C2vm,
}

/// `--stop-timeout`'s default: seconds between the app's stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// `--init` and what c2vm-init needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitPlan {
    pub choice: InitChoice,
    pub restart: c2vm::Restart,
    pub stop_timeout: u64,
}

impl InitPlan {
    /// What a `rootfs:` tarball gets: its own init where it has one.
    pub fn tarball() -> InitPlan {
        InitPlan {
            choice: InitChoice::Auto,
            restart: c2vm::Restart::No,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

/// Whether c2vm-init is PID 1 (else the image's own init). `has_command`: whether the image has
/// a command for c2vm-init to run; without one, `auto` keeps an image's own `/sbin/init` of a
/// kind c2vm does not know (busybox init, runit).
/// `own`: what the image itself runs as PID 1.
pub fn c2vm_is_pid1(
    tree: &mut GuestTree,
    choice: InitChoice,
    has_command: bool,
    own: InitSystem,
) -> Result<bool> {
    if choice == InitChoice::Auto
        && own == InitSystem::Other
        && !has_command
        && tree.exists("/sbin/init")?
    {
        progress::note("Init: the image's own /sbin/init (it has no command for c2vm-init to run)");
        return Ok(false);
    }
    Ok(match (choice, own) {
        (InitChoice::C2vm, _) => {
            progress::note("Init: c2vm-init (--init c2vm)");
            true
        }
        (_, InitSystem::Other) if choice == InitChoice::Image => {
            bail!("--init image: the image has no init (neither systemd nor OpenRC); use --init c2vm (or auto)")
        }
        (_, InitSystem::Other) => {
            progress::note("Init: c2vm-init (the image has no init of its own)");
            true
        }
        (_, own) => {
            progress::note(&format!(
                "Init: the image's {own:?}, with the app as a service"
            ));
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::tests::tree;
    use crate::rootfs::tree::Kind;

    #[test]
    fn auto_takes_c2vm_init_unless_the_image_has_an_init_to_keep() {
        let systemd = || {
            tree(&[
                ("usr", Kind::Dir, 0o755, b""),
                ("usr/lib", Kind::Dir, 0o755, b""),
                ("usr/lib/systemd", Kind::Dir, 0o755, b""),
                ("usr/lib/systemd/systemd", Kind::File, 0o755, b""),
            ])
        };
        let busybox_init = || {
            tree(&[
                ("sbin", Kind::Dir, 0o755, b""),
                ("sbin/init", Kind::File, 0o755, b""),
            ])
        };
        let nothing = || tree(&[("bin", Kind::Dir, 0o755, b"")]);
        let decide = |mut tree: GuestTree, choice, has_command| {
            let own = InitSystem::detect(&mut tree)?;
            c2vm_is_pid1(&mut tree, choice, has_command, own)
        };
        assert!(!decide(systemd(), InitChoice::Auto, true).unwrap());
        assert!(decide(systemd(), InitChoice::C2vm, true).unwrap());
        assert!(decide(nothing(), InitChoice::Auto, true).unwrap());
        // An unknown init and no command: keep the image's own.
        assert!(!decide(busybox_init(), InitChoice::Auto, false).unwrap());
        assert!(decide(busybox_init(), InitChoice::Auto, true).unwrap());
        let err = decide(nothing(), InitChoice::Image, true).unwrap_err();
        assert!(err.to_string().contains("--init c2vm"), "{err}");
    }
}
