//! What c2vm tells the init, `/.c2vm/config.json`, and what the init makes of it. The file's
//! schema is the `c2vm-init-config` crate (init/config/), shared with c2vm, which writes it.
pub use c2vm_init_config::{
    decode_args, decode_env, Config, Restart, ARGS_CREDENTIAL, ENV_CREDENTIAL, PATH,
};

/// docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The app's environment: the image's, with PATH and HOME filled in as docker does.
pub fn environment(config: &Config) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), config.home.clone()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), config.hostname.clone()));
    }
    env
}

/// The stop signal's number.
pub fn stop_signal_number(config: &Config) -> i32 {
    signal_number(&config.stop_signal).unwrap_or(libc::SIGTERM)
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
        let env = environment(&c);
        assert!(env.contains(&("GREETING".into(), "hi there".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(env.contains(&("HOME".into(), "/home/app".into())));
        let c = Config::parse(
            r#"{"argv":["x"],"env":["PATH=/bin"],"uid":0,"gid":0,"hostname":"h",
                "restart":"on-failure","stop_signal":"SIGQUIT"}"#,
        )
        .unwrap();
        assert_eq!(c.restart, Restart::OnFailure);
        assert_eq!(stop_signal_number(&c), libc::SIGQUIT);
        assert!(environment(&c).contains(&("PATH".into(), "/bin".into())));
        assert!(Config::parse(r#"{"argv":[],"uid":0,"gid":0,"hostname":"h"}"#).is_err());
    }
}
