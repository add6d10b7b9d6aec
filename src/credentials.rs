//! Who may log in: the root password (kept only as a SHA-512 crypt hash from the moment it is
//! read) and SSH public keys. Secrets come from files or stdin, never from argv.
use crate::secret::{Secret, SecretText};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What guest setup writes into `/etc/shadow` and `/root/.ssh/authorized_keys`.
#[derive(Clone, Default, serde::Serialize)]
pub struct Credentials {
    /// SHA-512 crypt hash of the root password; the plain text is dropped as soon as it is hashed.
    pub root_password_hash: Option<String>,
    /// authorized_keys lines, newline-terminated.
    pub ssh_keys: Option<String>,
}

/// The hash is enough to attack the password offline: a `Debug` shows only whether there is one.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "root_password_hash",
                &self
                    .root_password_hash
                    .as_ref()
                    .map(|_| crate::secret::REDACTED),
            )
            .field("ssh_keys", &self.ssh_keys)
            .finish()
    }
}

/// How a finished disk can be logged into, as `convert` reports it (and `--json`'s `login`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Login {
    /// A root password hash is in the disk (`--password-file`): every VM made from it has it.
    pub password: bool,
    /// Root's SSH keys are in the disk (`--ssh-key`).
    pub ssh_key: bool,
    /// The guest applies root's password and keys given at boot as systemd credentials.
    pub credentials_at_boot: bool,
    /// The image has cloud-init, which takes users and keys from the cloud's datasource.
    pub cloud_init: bool,
}

impl Login {
    /// The report's line: a warning where the disk has no way in.
    pub fn describe(&self) -> String {
        let baked: Vec<&str> = [
            (self.password, "root's password"),
            (self.ssh_key, "root's SSH key"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect();
        let at_boot = "`c2vm run --ssh-key KEY.pub` or `--password-file FILE`, or the systemd credentials ssh.authorized_keys.root and passwd.hashed-password.root from any hypervisor";
        if !baked.is_empty() {
            let also = if self.credentials_at_boot {
                format!("; keys and passwords given at boot replace them ({at_boot})")
            } else {
                String::new()
            };
            let it = if baked.len() > 1 { "them" } else { "it" };
            return format!(
                "Login: {} in the disk: every VM made from it has {it}{also}",
                baked.join(" and ")
            );
        }
        if self.cloud_init {
            return "Login: no credential in the disk; the image's cloud-init sets users and keys at boot from the cloud's datasource".into();
        }
        if self.credentials_at_boot {
            return format!("Warning: no way to log in is in this disk (root is locked): give root's key or password at boot, {at_boot}; or convert with --ssh-key or --password-file");
        }
        "Warning: no way to log in: no --password-file or --ssh-key was given, and this image's init takes no credentials at boot".into()
    }
}

/// Where the root password comes from.
pub enum PasswordSource<'a> {
    None,
    File(&'a Path),
    Stdin,
}

impl Credentials {
    /// With `reproducible` (the build's SOURCE_DATE_EPOCH and hostname), the password's salt is
    /// derived from them and the password, so the same inputs give the same `/etc/shadow` (and
    /// disk); otherwise it is random.
    pub fn read(
        password: PasswordSource,
        ssh_key: Option<&Path>,
        reproducible: Option<&str>,
    ) -> Result<Credentials> {
        let password = match password {
            PasswordSource::None => None,
            PasswordSource::File(path) => Some(read_password_file(path)?),
            PasswordSource::Stdin => Some(
                Secret::from_stdin(WHAT)
                    .and_then(|s| s.into_text(WHAT))
                    .context("reading the password from stdin")?,
            ),
        };
        Ok(Credentials {
            root_password_hash: password
                .map(|p| hash_password(&p, reproducible))
                .transpose()?,
            ssh_keys: ssh_key.map(read_ssh_key).transpose()?,
        })
    }
}

/// How errors name the password.
const WHAT: &str = "the password";

/// The first line of `path` (for `convert --password-file` and `run --password-file`).
pub fn read_password_file(path: &Path) -> Result<SecretText> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the password file {}", path.display()))?;
    Secret::first_line(file, WHAT)
        .and_then(|s| s.into_text(WHAT))
        .with_context(|| format!("reading the password file {}", path.display()))
}

/// The hash of a password given at boot (`c2vm run --password-file`), with a random salt: only
/// the hash reaches the guest.
pub fn hash_for_boot(password: &str) -> Result<String> {
    hash_password(password, None)
}

/// SHA-512 crypt (`$6$`), what Debian's passwd and chpasswd write.
fn hash_password(password: &str, reproducible: Option<&str>) -> Result<String> {
    let failed = |e| anyhow::anyhow!("hashing the password: {e:?}");
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(failed)?;
    let Some(context) = reproducible else {
        return sha_crypt::sha512_simple(password, &params).map_err(failed);
    };
    // 16 salt characters from crypt's alphabet, from a hash of the build's context and the
    // password: they differ between builds and passwords, and say nothing the hash does not.
    use sha2::Digest;
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let digest = sha2::Sha256::digest(
        [
            b"c2vm password salt\0",
            context.as_bytes(),
            b"\0",
            password.as_bytes(),
        ]
        .concat(),
    );
    let salt: String = digest[..16]
        .iter()
        .map(|b| ALPHABET[usize::from(b % 64)] as char)
        .collect();
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .map_err(failed)?;
    Ok(format!("$6${salt}${hash}"))
}

pub fn read_ssh_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the SSH public key {}", path.display()))?;
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if keys.is_empty() || keys.iter().any(|k| k.contains("PRIVATE KEY")) {
        bail!("{} is not an SSH public key (expected lines like `ssh-ed25519 AAAA... comment`; give the .pub file)", path.display());
    }
    Ok(keys.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_how_to_get_in_and_warns_when_nothing_is_in_the_disk() {
        let baked = Login {
            password: true,
            ssh_key: true,
            credentials_at_boot: true,
            ..Default::default()
        };
        let line = baked.describe();
        assert!(line.starts_with("Login: root's password and root's SSH key in the disk: every VM made from it has them; keys and passwords given at boot replace them"), "{line}");
        let at_boot = Login {
            credentials_at_boot: true,
            ..Default::default()
        };
        assert!(at_boot
            .describe()
            .starts_with("Warning: no way to log in is in this disk"));
        let cloud = Login {
            credentials_at_boot: true,
            cloud_init: true,
            ..Default::default()
        };
        assert!(cloud
            .describe()
            .starts_with("Login: no credential in the disk; the image's cloud-init"));
        let nothing = Login::default().describe();
        assert!(
            nothing.contains("init takes no credentials at boot"),
            "{nothing}"
        );
    }

    #[test]
    fn password_hash_verifies_and_hides_the_text() {
        let hash = hash_password("s3cret", None).unwrap();
        assert!(hash.starts_with("$6$"));
        assert!(!hash.contains("s3cret"));
        assert!(sha_crypt::sha512_check("s3cret", &hash).is_ok());
        assert!(sha_crypt::sha512_check("other", &hash).is_err());
        let same = hash_password("s3cret", Some("1700000000\0vm")).unwrap();
        assert_eq!(
            same,
            hash_password("s3cret", Some("1700000000\0vm")).unwrap()
        );
        assert_ne!(
            same,
            hash_password("s3cret", Some("1700000000\0other")).unwrap()
        );
        assert!(sha_crypt::sha512_check("s3cret", &same).is_ok());
    }

    #[test]
    fn password_file_takes_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\r\nsecond\n").unwrap();
        assert_eq!(&*read_password_file(&path).unwrap(), "first");
        std::fs::write(&path, "\n").unwrap();
        let err = format!("{:#}", read_password_file(&path).unwrap_err());
        assert!(err.contains("the password is empty"), "{err}");
        // Read as every secret is: control characters refused, never shown by Debug.
        std::fs::write(&path, "tab\there\n").unwrap();
        let err = format!("{:#}", read_password_file(&path).unwrap_err());
        assert!(
            err.contains("the password has a control character"),
            "{err}"
        );
        std::fs::write(&path, "s3cret-7731\n").unwrap();
        let password = read_password_file(&path).unwrap();
        assert!(!format!("{password:?}").contains("7731"));
    }

    #[test]
    fn private_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").unwrap();
        let err = format!("{:#}", read_ssh_key(&path).unwrap_err());
        assert!(err.contains("give the .pub file"), "{err}");
        std::fs::write(&path, "# comment\nssh-ed25519 AAAA me\n").unwrap();
        assert_eq!(read_ssh_key(&path).unwrap(), "ssh-ed25519 AAAA me\n");
    }
}
