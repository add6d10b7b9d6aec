//! Init systems, one module each. Guest setup and the app service ask here what the guest runs
//! as PID 1 and use that module's knowledge (unit directories, enabling, service files).
pub mod c2vm;
pub mod openrc;
pub mod systemd;

use crate::rootfs::tree::GuestTree;
use crate::rootfs::users::RunAs;
use anyhow::Result;

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
