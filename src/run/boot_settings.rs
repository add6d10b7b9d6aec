//! Settings and secrets given at boot, not baked into the disk: systemd credentials
//! (<https://systemd.io/CREDENTIALS/>) passed as QEMU fw_cfg files, which systemd (252 and
//! later), the guest's c2vm-credentials unit and c2vm-init read. One disk, many machines: each
//! run gets its own key, password, hostname, environment and arguments.
//!
//! Each value goes into a private file (0600, in a 0700 directory), never onto QEMU's command
//! line, where `ps` shows it to every user (`-smbios type=11,value=…` would). The directory is
//! removed when the run ends, on every exit path (Ctrl-C included: the run unwinds).
use super::options::BootSettingsArgs;
use super::private_dir::private_dir;
use super::qemu_args::{qemu_escape, Attachment};
use anyhow::{bail, Context, Result};
use c2vm_init_config::{encode_args, encode_env, ARGS_CREDENTIAL, ENV_CREDENTIAL};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Where QEMU's fw_cfg carries systemd credentials.
const FW_CFG_PREFIX: &str = "opt/io.systemd.credentials/";
/// QEMU's limit on a fw_cfg file name (FW_CFG_MAX_FILE_PATH, 56 bytes with its NUL).
const FW_CFG_NAME_MAX: usize = 55;
/// systemd refuses larger credentials (CREDENTIAL_SIZE_MAX).
const CREDENTIAL_SIZE_MAX: usize = 1 << 20;

/// One credential: its name and value.
type Credential = (String, Vec<u8>);

/// The credentials of `args`, checked. `root_password`: `--password-file`'s password, given to
/// root as a SHA-512 crypt hash (passwd.hashed-password.root), when the login is root's.
pub fn collect(args: &BootSettingsArgs, root_password: Option<&str>) -> Result<Vec<Credential>> {
    let mut found: Vec<Credential> = Vec::new();
    for item in &args.credential {
        // Without `=` the whole word may be the secret: it is not repeated.
        let (name, value) = item.split_once('=').context(
            "--credential expects NAME=VALUE (secrets are better in --credential-file NAME=PATH)",
        )?;
        found.push((name.to_string(), value.as_bytes().to_vec()));
    }
    for item in &args.credential_file {
        let (name, path) = item
            .split_once('=')
            .with_context(|| format!("--credential-file {item}: expected NAME=PATH"))?;
        let value = std::fs::read(path)
            .with_context(|| format!("--credential-file {name}: reading {path}"))?;
        found.push((name.to_string(), value));
    }
    if let Some(path) = &args.ssh_key {
        let keys = crate::credentials::read_ssh_key(path)?;
        found.push(("ssh.authorized_keys.root".into(), keys.into_bytes()));
    }
    if let Some(name) = &args.hostname {
        crate::rootfs::setup::check_hostname(name)?;
        found.push(("system.hostname".into(), name.clone().into_bytes()));
    }
    if !args.dns.is_empty() {
        let servers: Vec<String> = args.dns.iter().map(|d| d.to_string()).collect();
        found.push(("network.dns".into(), servers.join(" ").into_bytes()));
    }
    if let Some(password) = root_password {
        let hash = crate::credentials::hash_for_boot(password)?;
        found.push(("passwd.hashed-password.root".into(), hash.into_bytes()));
    }
    let vars = environment(&args.env, &args.env_file)?;
    if !vars.is_empty() {
        let text = encode_env(&vars).map_err(|e| anyhow::anyhow!("-e: {e}"))?;
        found.push((ENV_CREDENTIAL.into(), text.into_bytes()));
    }
    if !args.args.is_empty() {
        found.push((ARGS_CREDENTIAL.into(), encode_args(&args.args).into_bytes()));
    }
    for (i, (name, value)) in found.iter().enumerate() {
        check_name(name)?;
        if found[..i].iter().any(|(other, _)| other == name) {
            bail!("the credential {name} is given twice; give it once");
        }
        if value.len() > CREDENTIAL_SIZE_MAX {
            bail!(
                "the credential {name} has {} bytes; systemd takes at most 1 MiB",
                value.len()
            );
        }
    }
    Ok(found)
}

/// A name systemd takes as a credential's (a file name) and QEMU as a fw_cfg file's.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', ',', '\0']) {
        bail!("`{name}` is not a credential name: a file name, without `/` or `,`");
    }
    let room = FW_CFG_NAME_MAX - FW_CFG_PREFIX.len();
    if name.len() > room {
        bail!("the credential name {name} is too long: QEMU's fw_cfg takes names of at most {room} characters");
    }
    Ok(())
}

/// `-e` and `--env-file`, as docker reads them: `KEY=VALUE`, or `KEY` alone for this process's
/// value (left out when it has none); in files, blank lines and `#` comments are skipped.
fn environment(env: &[String], files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut lines: Vec<(String, String)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--env-file: reading {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            lines.push((line.to_string(), format!("--env-file {}", file.display())));
        }
    }
    lines.extend(env.iter().map(|e| (e.clone(), "-e".to_string())));
    let mut vars: Vec<(String, String)> = Vec::new();
    for (line, from) in lines {
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => match std::env::var(&line) {
                Ok(value) => (line.clone(), value),
                Err(_) => continue,
            },
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!("{from}: `{key}` is not a variable name (KEY=VALUE)");
        }
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    }
    Ok(vars)
}

/// The credentials' private files, for as long as QEMU runs.
pub struct CredentialFiles {
    dir: tempfile::TempDir,
    names: Vec<String>,
}

impl CredentialFiles {
    /// None when there are none.
    pub fn write(credentials: &[Credential]) -> Result<Option<CredentialFiles>> {
        if credentials.is_empty() {
            return Ok(None);
        }
        let dir = private_dir("c2vm-credentials.", "the credentials")?;
        for (name, value) in credentials {
            let path = dir.path().join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing the credential {name}"))?;
            file.write_all(value)
                .with_context(|| format!("writing the credential {name}"))?;
        }
        let names = credentials.iter().map(|(name, _)| name.clone()).collect();
        Ok(Some(CredentialFiles { dir, names }))
    }

    #[cfg(test)]
    fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Attachment for CredentialFiles {
    /// One `-fw_cfg` per credential, naming its file.
    fn qemu_args(&self) -> Vec<String> {
        self.names
            .iter()
            .flat_map(|name| {
                let path = self.dir.path().join(name);
                [
                    "-fw_cfg".to_string(),
                    format!(
                        "name={FW_CFG_PREFIX}{name},file={}",
                        qemu_escape(&path.to_string_lossy())
                    ),
                ]
            })
            .collect()
    }

    /// The names, never the values.
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn what(&self) -> &'static str {
        "settings for this boot (systemd credentials over fw_cfg)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BootSettingsArgs {
        BootSettingsArgs::default()
    }

    #[test]
    fn shorthands_become_systemds_credential_names() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pub");
        std::fs::write(&key, "ssh-ed25519 AAAAC3Nza test\n").unwrap();
        let a = BootSettingsArgs {
            ssh_key: Some(key),
            hostname: Some("web-1".into()),
            dns: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            env: vec!["GREETING=hi there".into()],
            args: vec!["serve".into(), "--port".into(), "81".into()],
            ..args()
        };
        let found = collect(&a, Some("sekrit")).unwrap();
        let get = |name: &str| {
            let (_, v) = found.iter().find(|(n, _)| n == name).unwrap();
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(
            get("ssh.authorized_keys.root"),
            "ssh-ed25519 AAAAC3Nza test\n"
        );
        assert_eq!(get("system.hostname"), "web-1");
        assert_eq!(get("network.dns"), "10.0.0.53 fd00::53");
        let hash = get("passwd.hashed-password.root");
        assert!(
            hash.starts_with("$6$") && !hash.contains("sekrit"),
            "{hash}"
        );
        // What the init reads back is what was given.
        assert_eq!(
            c2vm_init_config::decode_env(&get("c2vm.env")).unwrap(),
            [("GREETING".to_string(), "hi there".to_string())]
        );
        assert_eq!(
            c2vm_init_config::decode_args(&get("c2vm.args")).unwrap(),
            ["serve", "--port", "81"]
        );
    }

    #[test]
    fn env_files_then_flags_with_later_values_winning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.env");
        std::fs::write(&file, "# settings\nA=1\n\nB=from file\r\n").unwrap();
        std::env::set_var("C2VM_TEST_PASSED_THROUGH", "yes");
        let vars = environment(
            &[
                "B=from flag".into(),
                "C2VM_TEST_PASSED_THROUGH".into(),
                "C2VM_TEST_UNSET_ANYWHERE".into(),
            ],
            &[file],
        )
        .unwrap();
        let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(vars, ["A=1", "B=from flag", "C2VM_TEST_PASSED_THROUGH=yes"]);
        assert!(environment(&["=x".into()], &[]).is_err());
    }

    #[test]
    fn bad_credentials_are_named_without_their_values() {
        let one = |credential: &str| {
            let a = BootSettingsArgs {
                credential: vec![credential.into()],
                ..args()
            };
            collect(&a, None).unwrap_err().to_string()
        };
        assert!(one("novalue").contains("expects NAME=VALUE"));
        assert!(one("a/b=secret").contains("not a credential name"));
        let long = format!("{}=secret", "x".repeat(40));
        let err = one(&long);
        assert!(err.contains("too long") && !err.contains("secret"), "{err}");
        let a = BootSettingsArgs {
            credential: vec!["system.hostname=a".into()],
            hostname: Some("b".into()),
            ..args()
        };
        let err = collect(&a, None).unwrap_err().to_string();
        assert!(err.contains("given twice") && !err.contains("=a"), "{err}");
    }

    #[test]
    fn files_are_private_and_gone_with_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let files = CredentialFiles::write(&[("system.hostname".into(), b"h".to_vec())])
            .unwrap()
            .unwrap();
        let dir = files.dir().to_path_buf();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("system.hostname")), 0o600);
        let args = files.qemu_args();
        assert_eq!(args[0], "-fw_cfg");
        assert!(args[1].starts_with("name=opt/io.systemd.credentials/system.hostname,file="));
        assert!(!args[1].contains(",h"));
        drop(files);
        assert!(!dir.exists());
        assert!(CredentialFiles::write(&[]).unwrap().is_none());
    }
}
