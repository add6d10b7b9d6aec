//! What c2vm tells the init: `/.c2vm/config.json`, written at conversion from the image's config
//! (user and groups already resolved against the image's own /etc/passwd and /etc/group).
use serde::Deserialize;

pub const PATH: &str = "/.c2vm/config.json";

/// docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    No,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default = "no_restart")]
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
fn no_restart() -> Restart {
    Restart::No
}
fn sigterm() -> String {
    "SIGTERM".to_string()
}
fn ten() -> u64 {
    10
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            serde_json::from_str(text).map_err(|e| format!("{PATH} is not valid: {e}"))?;
        if config.argv.is_empty() {
            return Err(format!("{PATH} has no command to run"));
        }
        Ok(config)
    }

    /// The app's environment: the image's, with PATH and HOME filled in as docker does.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push(("HOME".into(), self.home.clone()));
        }
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.push(("HOSTNAME".into(), self.hostname.clone()));
        }
        env
    }

    /// The stop signal's number.
    pub fn stop_signal_number(&self) -> i32 {
        signal_number(&self.stop_signal).unwrap_or(libc::SIGTERM)
    }
}

/// `SIGTERM`, `TERM` or `15`.
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let name = name.trim_start_matches("SIG");
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_environment_follow_docker() {
        let c = Config::parse(
            r#"{"argv":["/app","-x"],"env":["GREETING=hi there"],"uid":1000,"gid":1000,
                "home":"/home/app","hostname":"vm"}"#,
        )
        .unwrap();
        assert_eq!(c.workdir, "/");
        assert_eq!(c.restart, Restart::No);
        assert_eq!(c.stop_timeout, 10);
        let env = c.environment();
        assert!(env.contains(&("GREETING".into(), "hi there".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(env.contains(&("HOME".into(), "/home/app".into())));
        let c = Config::parse(
            r#"{"argv":["x"],"env":["PATH=/bin"],"uid":0,"gid":0,"hostname":"h",
                "restart":"on-failure","stop_signal":"SIGQUIT"}"#,
        )
        .unwrap();
        assert_eq!(c.restart, Restart::OnFailure);
        assert_eq!(c.stop_signal_number(), libc::SIGQUIT);
        assert!(c.environment().contains(&("PATH".into(), "/bin".into())));
        assert!(Config::parse(r#"{"argv":[],"uid":0,"gid":0,"hostname":"h"}"#).is_err());
    }
}
