//! Settings given at boot rather than baked into the disk: systemd credentials
//! (<https://systemd.io/CREDENTIALS/>), read where systemd itself reads them in a VM: QEMU's fw_cfg
//! files under `opt/io.systemd.credentials/` (what `c2vm run` passes) and SMBIOS type 11 strings
//! (what other hypervisors and clouds pass). c2vm-init reads `system.hostname`, `network.dns` and
//! c2vm's own names for the app's environment and arguments (the config crate's).
//!
//! The values are never said on the console: only the names of what was applied.
use crate::config::{self, Config};
use std::collections::BTreeMap;

const FW_CFG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials";
const DMI_ENTRIES: &str = "/sys/firmware/dmi/entries";

/// Every credential this boot was given, by name.
pub struct Credentials(BTreeMap<String, Vec<u8>>);

pub fn read() -> Credentials {
    let mut found = BTreeMap::new();
    // SMBIOS first, so that fw_cfg (c2vm run's way) wins where both give a name.
    for entry in std::fs::read_dir(DMI_ENTRIES)
        .into_iter()
        .flatten()
        .flatten()
    {
        if !entry.file_name().to_string_lossy().starts_with("11-") {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("raw")) {
            found.extend(smbios_strings(&raw));
        }
    }
    for entry in std::fs::read_dir(FW_CFG).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Ok(value) = std::fs::read(entry.path().join("raw")) {
            found.insert(name, value);
        }
    }
    Credentials(found)
}

/// The credentials in an SMBIOS type 11 (OEM strings) structure: its formatted area (type,
/// length, handle, count), then its strings, each NUL-terminated, the set ending in an empty one.
/// `io.systemd.credential:NAME=VALUE` and `io.systemd.credential.binary:NAME=BASE64` count.
pub fn smbios_strings(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let (Some(&11), Some(&length)) = (raw.first(), raw.get(1)) else {
        return Vec::new();
    };
    let strings = raw.get(usize::from(length)..).unwrap_or_default();
    strings
        .split(|&b| b == 0)
        .take_while(|s| !s.is_empty())
        .filter_map(|s| {
            let s = std::str::from_utf8(s).ok()?;
            if let Some(rest) = s.strip_prefix("io.systemd.credential:") {
                let (name, value) = rest.split_once('=')?;
                return Some((name.to_string(), value.as_bytes().to_vec()));
            }
            let rest = s.strip_prefix("io.systemd.credential.binary:")?;
            let (name, value) = rest.split_once('=')?;
            use base64::Engine;
            let value = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

impl Credentials {
    fn text(&self, name: &str) -> Result<Option<String>, String> {
        self.0
            .get(name)
            .map(|v| {
                String::from_utf8(v.clone())
                    .map_err(|_| format!("the credential {name} is not text"))
            })
            .transpose()
    }

    /// The config with what the credentials change: the hostname, DNS servers, the app's
    /// environment (on top of the image's, as `docker run -e`) and its arguments (in place of
    /// CMD). Returns the names applied, to say on the console.
    pub fn apply(&self, config: &mut Config) -> Result<Vec<String>, String> {
        let mut applied = Vec::new();
        if let Some(name) = self.text("system.hostname")? {
            config.hostname = name.trim().to_string();
            applied.push("system.hostname".to_string());
        }
        if let Some(servers) = self.text("network.dns")? {
            config.dns = servers.split_whitespace().map(str::to_string).collect();
            applied.push("network.dns".to_string());
        }
        if let Some(text) = self.text(config::ENV_CREDENTIAL)? {
            let vars = config::decode_env(&text)?;
            applied.push(format!(
                "{} ({} variables)",
                config::ENV_CREDENTIAL,
                vars.len()
            ));
            for (key, value) in vars {
                config
                    .env
                    .retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
                config.env.push(format!("{key}={value}"));
            }
        }
        if let Some(text) = self.text(config::ARGS_CREDENTIAL)? {
            let args = config::decode_args(&text)?;
            config
                .argv
                .truncate(config.entrypoint.min(config.argv.len()));
            config.argv.extend(args);
            if config.argv.is_empty() {
                return Err(format!(
                    "{} is empty and the image has no ENTRYPOINT: nothing to run",
                    config::ARGS_CREDENTIAL
                ));
            }
            applied.push(config::ARGS_CREDENTIAL.to_string());
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(argv: &[&str], entrypoint: usize) -> Config {
        let mut c = Config::parse(
            r#"{"argv":["x"],"env":["GREETING=hello","PATH=/bin"],"uid":0,"gid":0,"hostname":"vm"}"#,
        )
        .unwrap();
        c.argv = argv.iter().map(|s| s.to_string()).collect();
        c.entrypoint = entrypoint;
        c
    }

    #[test]
    fn smbios_type_11_strings_hold_text_and_binary_credentials() {
        // Type 11, length 5, handle, one count; then the strings and the closing NUL.
        let mut raw = vec![11, 5, 0x00, 0x0b, 3];
        raw.extend(b"io.systemd.credential:system.hostname=from-smbios\0");
        raw.extend(b"something=else\0");
        raw.extend(b"io.systemd.credential.binary:c2vm.env=R1JFRVRJTkc9aGkK\0\0");
        let found = smbios_strings(&raw);
        assert_eq!(
            found,
            vec![
                ("system.hostname".to_string(), b"from-smbios".to_vec()),
                ("c2vm.env".to_string(), b"GREETING=hi\n".to_vec()),
            ]
        );
        assert!(smbios_strings(&[1, 5, 0, 0, 0]).is_empty());
        assert!(smbios_strings(&[11]).is_empty());
    }

    #[test]
    fn env_adds_and_overrides_and_args_replace_cmd_only() {
        let creds = Credentials(BTreeMap::from([
            ("c2vm.env".to_string(), b"GREETING=hi\nNEW=1\n".to_vec()),
            (
                "c2vm.args".to_string(),
                br#"["serve","--port","81"]"#.to_vec(),
            ),
            ("system.hostname".to_string(), b"app-1\n".to_vec()),
        ]));
        let mut c = config(&["/entry", "old-cmd"], 1);
        let applied = creds.apply(&mut c).unwrap();
        assert_eq!(applied.len(), 3, "{applied:?}");
        assert_eq!(c.argv, ["/entry", "serve", "--port", "81"]);
        assert_eq!(c.env, ["PATH=/bin", "GREETING=hi", "NEW=1"]);
        assert_eq!(c.hostname, "app-1");
        // No ENTRYPOINT: the arguments are the whole command.
        let mut c = config(&["/bin/sh", "-c", "exit 3"], 0);
        creds.apply(&mut c).unwrap();
        assert_eq!(c.argv, ["serve", "--port", "81"]);
        let empty = Credentials(BTreeMap::from([("c2vm.args".to_string(), b"[]".to_vec())]));
        assert!(empty.apply(&mut config(&["/bin/sh"], 0)).is_err());
        let bad = Credentials(BTreeMap::from([(
            "c2vm.env".to_string(),
            b"NOEQUALS".to_vec(),
        )]));
        assert!(bad.apply(&mut config(&["/bin/sh"], 0)).is_err());
    }
}
