//! Secrets given to c2vm (root's password, the LUKS passphrase): the one reader for all of them.
//! A secret is the first line of a file or of stdin, read a byte at a time into a buffer that is
//! zeroised when dropped, and never shown by `Debug`. Callers add which option it came from.
use anyhow::{bail, Context, Result};
use std::io::Read;
use zeroize::Zeroizing;

/// What a `Debug` of a secret-holding type shows in the secret's place.
pub const REDACTED: &str = "<redacted>";

/// Longer would not be typed at a console prompt (cryptsetup itself takes 512).
const MAX_LEN: usize = 512;

/// A secret's bytes (the passphrase: what is typed at the guest's prompt).
pub struct Secret(Zeroizing<Vec<u8>>);

/// A secret that must be text (a password, hashed by crypt and typed at a login prompt).
pub struct SecretText(Zeroizing<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Secret {
    /// The first line `reader` gives (an open file), without its end: what is typed at a prompt,
    /// then Enter. `what` names the secret in errors ("the passphrase"); opening the file is the
    /// caller's, with its own message. Read a byte at a time (no buffer keeps a copy); control
    /// characters are refused, as a console would act on them (Ctrl-A is QEMU's escape, Ctrl-U
    /// erases the line).
    pub fn first_line(mut reader: impl Read, what: &str) -> Result<Secret> {
        let mut line = Zeroizing::new(Vec::with_capacity(MAX_LEN + 1));
        let mut byte = Zeroizing::new([0u8; 1]);
        while reader
            .read(&mut *byte)
            .with_context(|| format!("reading {what}"))?
            == 1
        {
            match byte[0] {
                b'\n' => break,
                _ if line.len() == MAX_LEN => {
                    bail!("{what} is longer than {MAX_LEN} bytes: put a shorter one on the first line")
                }
                b => line.push(b),
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            bail!("{what} is empty: put it on the first line");
        }
        if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
            bail!("{what} has a control character, which a console prompt cannot take: use printable characters only");
        }
        Ok(Secret(line))
    }

    /// The first line of standard input.
    pub fn from_stdin(what: &str) -> Result<Secret> {
        // Unbuffered: std's stdin buffer would keep a copy for the whole run.
        let stdin = rustix::io::dup(std::io::stdin()).context("reading standard input")?;
        Secret::first_line(std::fs::File::from(stdin), what)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text; `what` names it in the error when it is not UTF-8.
    pub fn into_text(mut self, what: &str) -> Result<SecretText> {
        // The buffer moves into the String (no copy); on failure it is zeroised on drop.
        match String::from_utf8(std::mem::take(&mut *self.0)) {
            Ok(text) => Ok(SecretText(Zeroizing::new(text))),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                bail!("{what} is not UTF-8 text")
            }
        }
    }
}

impl std::ops::Deref for SecretText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_first_line_only() {
        let p =
            Secret::first_line(&b"correct horse\r\nsecond line\n"[..], "the passphrase").unwrap();
        assert_eq!(p.bytes(), b"correct horse");
        let p = Secret::first_line(&b"no newline at all"[..], "the passphrase").unwrap();
        assert_eq!(p.bytes(), b"no newline at all");
        let err = Secret::first_line(&b"\nnext\n"[..], "the password").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the password is empty: put it on the first line"
        );
        let err = Secret::first_line(&[b'x'; 600][..], "the passphrase").unwrap_err();
        assert!(err.to_string().contains("longer than 512"), "{err}");
    }

    #[test]
    fn control_characters_are_refused() {
        for line in [
            &b"ctrl\x01a\n"[..],
            b"tab\there\n",
            b"del\x7f\n",
            b"\x1b[A\n",
        ] {
            let err = Secret::first_line(line, "the password").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("the password has a control character"),
                "{err}"
            );
        }
        // Past the first line, anything goes: it is never read.
        assert!(Secret::first_line(&b"fine\n\x01\n"[..], "the password").is_ok());
    }

    #[test]
    fn debug_is_redacted_and_text_must_be_utf8() {
        let s = Secret::first_line(&b"correct horse\n"[..], "the passphrase").unwrap();
        assert!(!format!("{s:?}").contains("horse"));
        let t = s.into_text("the password").unwrap();
        assert_eq!(&*t, "correct horse");
        assert_eq!(format!("{t:?}"), REDACTED);
        let bad = Secret::first_line(&b"caf\xe9\n"[..], "the password").unwrap();
        let err = bad.into_text("the password").unwrap_err();
        assert_eq!(err.to_string(), "the password is not UTF-8 text");
    }
}
