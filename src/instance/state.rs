//! Where a named VM lives while it runs: one private directory per VM under
//! `$XDG_RUNTIME_DIR/c2vm/vms` (else `$TMPDIR/c2vm-UID/vms`), holding QEMU's pid, its QMP and
//! agent sockets (0600: only this user may drive the VM), the console's log, what the boot
//! attached, and a small record of what was booted. Every command reads it here, and handles a VM
//! whose QEMU has died.
use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A VM's directory and name.
pub struct Instance {
    pub name: String,
    pub dir: PathBuf,
}

/// What `c2vm ps` says of a VM, written when it starts.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Record {
    pub disk: String,
    pub arch: String,
    /// Seconds since 1970 when it started.
    pub started: u64,
}

/// The directory that holds every VM's.
fn root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(dir) => PathBuf::from(dir).join("c2vm/vms"),
        None => {
            let uid = rustix::process::getuid().as_raw();
            std::env::temp_dir().join(format!("c2vm-{uid}/vms"))
        }
    }
}

/// A name a VM may have: it becomes a directory's, and shows in `ps`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        bail!("`{name}` is not a VM name: use letters, digits, `-`, `_` and `.`, at most 64");
    }
    Ok(())
}

/// Made 0700 from the start, each level this user's.
fn private_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

impl Instance {
    /// A new VM's directory: refused while one of that name runs; a dead one's is cleared.
    pub fn create(name: &str) -> Result<Instance> {
        check_name(name)?;
        let root = root();
        private_dirs(&root)?;
        let instance = Instance {
            name: name.to_string(),
            dir: root.join(name),
        };
        if instance.dir.exists() {
            if instance.qemu_alive() {
                bail!("a VM named {name} is running; stop it with `c2vm stop {name}`, or give --name another");
            }
            instance.remove()?;
        }
        private_dirs(&instance.dir)?;
        Ok(instance)
    }

    /// A VM started by `c2vm run -d`, running or not.
    pub fn open(name: &str) -> Result<Instance> {
        check_name(name)?;
        let instance = Instance {
            name: name.to_string(),
            dir: root().join(name),
        };
        if !instance.dir.join(RECORD).exists() {
            bail!("no VM named {name}; `c2vm ps` lists them, `c2vm run -d --name {name} DISK` starts one");
        }
        Ok(instance)
    }

    /// A running VM: a dead one is said, and its directory removed.
    pub fn running(name: &str) -> Result<Instance> {
        let instance = Instance::open(name)?;
        if !instance.qemu_alive() {
            let tail = instance.console_tail(5);
            instance.remove()?;
            bail!("the VM {name} is not running (its QEMU has exited){}", tail);
        }
        Ok(instance)
    }

    /// Every VM's name, sorted.
    pub fn names() -> Result<Vec<String>> {
        let root = root();
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            other => other.with_context(|| format!("reading {}", root.display()))?,
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            if entry.path().join(RECORD).exists() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn write_record(&self, record: &Record) -> Result<()> {
        let path = self.path(RECORD);
        let text = serde_json::to_vec_pretty(record).context("serialising the VM's record")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn record(&self) -> Result<Record> {
        let path = self.path(RECORD);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))
    }

    pub fn write_pid(&self, pid: u32) -> Result<()> {
        let path = self.path(PID);
        std::fs::write(&path, pid.to_string())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// QEMU's pid, where it was recorded.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path(PID))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// Whether QEMU still runs: its pid is alive and is a QEMU (a reused pid is not).
    pub fn qemu_alive(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie has exited: only its parent's wait is missing.
        let zombie = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        comm.starts_with("qemu-system") && !zombie
    }

    /// The console's last `n` lines, as `:\n  …` for an error, or nothing.
    pub fn console_tail(&self, n: usize) -> String {
        let text = std::fs::read(self.path(CONSOLE)).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.len() {
            0 => String::new(),
            len => format!(
                "; the console's last lines:\n  {}",
                lines[len.saturating_sub(n)..].join("\n  ")
            ),
        }
    }

    /// The VM's directory and all in it.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// The files in a VM's directory.
pub const RECORD: &str = "vm.json";
pub const PID: &str = "qemu.pid";
pub const QMP: &str = "qmp.sock";
pub const AGENT: &str = "agent.sock";
/// Agent channels in all: QGA's port (AGENT) and c2vm's `org.c2vm.agent.N` beside it, so that
/// several commands (an `exec` that runs long, a `wait`, a `cp`) can drive one VM at once.
pub const CHANNELS: usize = 4;

/// Channel `n`'s socket (0 is QGA's usual port) and the lock file a c2vm command holds while it
/// uses it.
pub fn channel(n: usize) -> (String, String) {
    match n {
        0 => (AGENT.to_string(), "agent.lock".to_string()),
        n => (format!("agent-{n}.sock"), format!("agent-{n}.lock")),
    }
}
pub const CONSOLE: &str = "console.log";
/// The serial console's socket (QEMU logs what the guest writes to CONSOLE, connected or not):
/// how c2vm types an encrypted root's passphrase.
pub const CONSOLE_SOCKET: &str = "console.sock";
/// Where a VM's writes go unless `--persist`: a qcow2 over its disk.
pub const OVERLAY: &str = "overlay.qcow2";
/// QEMU's program and arguments as started, for `c2vm save`.
pub const COMMAND: &str = "qemu.json";
/// QEMU's own stderr.
pub const QEMU_LOG: &str = "qemu.log";
/// What the boot attached (UEFI variables, credentials, the seed): removed with the VM.
pub const FILES: &str = "files";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["web", "ci-1", "a.b_c"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "../x", "with space", &"x".repeat(65)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("is not a VM name"), "{bad}: {err}");
        }
    }
}
