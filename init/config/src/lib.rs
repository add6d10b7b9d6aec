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
    /// How many of `argv`'s words are the image's ENTRYPOINT: arguments given at boot (the
    /// [`ARGS_CREDENTIAL`]) replace the rest, its CMD, as `docker run IMAGE ARGS` does.
    #[serde(default)]
    pub entrypoint: usize,
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

/// The systemd credentials c2vm-init reads at boot besides systemd's own `system.hostname` and
/// `network.dns`: the app's extra environment, `KEY=VALUE` lines as in docker's `--env-file`
/// (`c2vm run -e`, `--env-file`).
pub const ENV_CREDENTIAL: &str = "c2vm.env";
/// The app's arguments in place of the image's CMD, a JSON array of strings (`c2vm run -- ARGS`).
pub const ARGS_CREDENTIAL: &str = "c2vm.args";

/// [`ENV_CREDENTIAL`]'s text from `KEY=VALUE` pairs: a value holding a newline cannot be written.
pub fn encode_env(vars: &[(String, String)]) -> Result<String, String> {
    let mut text = String::new();
    for (key, value) in vars {
        if key.is_empty() || key.contains(['=', '\n', '\0']) {
            return Err(format!("`{key}` is not a variable name"));
        }
        if value.contains(['\n', '\0']) {
            return Err(format!("the value of {key} holds a newline or NUL, which the environment credential cannot carry"));
        }
        text.push_str(&format!("{key}={value}\n"));
    }
    Ok(text)
}

/// [`ENV_CREDENTIAL`]'s text as `KEY=VALUE` pairs: blank lines and `#` comments are skipped, a
/// line with no `=` is refused.
pub fn decode_env(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                vars.push((key.to_string(), value.to_string()))
            }
            _ => return Err(format!("{ENV_CREDENTIAL}: `{line}` is not KEY=VALUE")),
        }
    }
    Ok(vars)
}

/// [`ARGS_CREDENTIAL`]'s text.
pub fn encode_args(args: &[String]) -> String {
    serde_json::Value::from(args.to_vec()).to_string()
}

pub fn decode_args(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("{ARGS_CREDENTIAL} is not a JSON array of strings: {e}"))
}
