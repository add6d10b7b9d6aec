//! The schema of `/.c2vm/config.json`: what c2vm tells c2vm-init, written at conversion (by
//! c2vm, `src/rootfs/init/c2vm.rs`, from the image's config, user and groups already resolved
//! against the image's own /etc/passwd and /etc/group) and read at boot (by c2vm-init,
//! `init/src/config.rs`).
//!
//! One crate that both depend on by path, so the writer and the reader cannot drift. A crate
//! rather than one file `include!`d by both: c2vm's `Restart` is also a clap flag (`--restart`)
//! while the static init must not carry clap, and a crate feature (`clap`, c2vm's alone) says
//! that plainly where a file would need a cfg each includer sets. It lives under `init/` because
//! the file is the init's input; it holds the schema only (serde, no I/O, no libc): what the
//! values mean at boot is the init's code.
use serde::{Deserialize, Serialize};

/// Where the file is in the guest.
pub const PATH: &str = "/.c2vm/config.json";

/// What happens when the app ends: `--restart`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// power off, like `docker run`
    #[default]
    No,
    OnFailure,
    Always,
}

/// The image's process and what the init needs beside it. c2vm writes every field; the
/// defaults are what the init assumes of a file that leaves one out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// ENTRYPOINT + CMD, exactly.
    pub argv: Vec<String>,
    /// `KEY=value`, the image's Env.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub workdir: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, from the image's /etc/group.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// From the image's /etc/passwd, else `/`.
    #[serde(default = "root_dir")]
    pub home: String,
    pub hostname: String,
    /// `--dns`: written to /etc/resolv.conf instead of what DHCP gives.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub restart: Restart,
    /// The image's STOPSIGNAL (a name such as `SIGTERM`), sent on the power button.
    #[serde(default = "sigterm")]
    pub stop_signal: String,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default = "ten")]
    pub stop_timeout: u64,
}

fn root_dir() -> String {
    "/".to_string()
}
fn sigterm() -> String {
    "SIGTERM".to_string()
}
fn ten() -> u64 {
    10
}

impl Config {
    /// The file's text as c2vm-init reads it: a config with no command is refused.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            serde_json::from_str(text).map_err(|e| format!("{PATH} is not valid: {e}"))?;
        if config.argv.is_empty() {
            return Err(format!("{PATH} has no command to run"));
        }
        Ok(config)
    }

    /// The file's text as c2vm writes it.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}
