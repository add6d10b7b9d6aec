//! Driving a guest's serial console: wait for patterns, log in, run a command and read back
//! exactly its output. The command's stdout travels base64-encoded between markers, so prompt,
//! echo and stray kernel messages cannot leak into what c2vm prints.
use super::unlock;
use anyhow::{bail, Context, Result};
use base64::Engine;
use regex::Regex;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

pub struct Console {
    child: Child,
    stdin: ChildStdin,
    buffer: Arc<Mutex<Vec<u8>>>,
    /// Bytes of `buffer` already matched.
    consumed: usize,
    qemu_stderr: Arc<Mutex<Vec<u8>>>,
    /// What QEMU reads while it runs (firmware store, kernel, attachments), removed with it.
    _files: Box<dyn std::any::Any>,
    /// Secure Boot is enforced: the firmware's or shim's refusal ends the wait (see [`REFUSED`]).
    secure_boot: bool,
    /// The console is copied to stderr: c2vm's own words then start on a line of their own.
    echo: bool,
}

/// What OVMF, shim and systemd-boot print when Secure Boot refuses an image: an unsigned loader
/// (`failed to load Boot0001 … Access Denied`), a loader or kernel signed by another key.
const REFUSED: &str =
    r"Access Denied|Security Violation|Security Policy Violation|Security violation";

// The console's fixed patterns, compiled once. A constant pattern either compiles or fails every
// time (the test below forces each), so `expect` cannot fire on input.
static REFUSED_RE: LazyLock<Regex> = LazyLock::new(|| fixed(REFUSED));
/// The loaders colour their errors: the escape sequences stay out of the message.
static COLOURS: LazyLock<Regex> = LazyLock::new(|| fixed(r"\x1b\[[0-9;=?]*[A-Za-z]"));
static LOGIN_PROMPT: LazyLock<Regex> = LazyLock::new(|| fixed(r"login: "));
static PASSWORD_PROMPT: LazyLock<Regex> = LazyLock::new(|| fixed(r"Password: "));
static AFTER_LOGIN: LazyLock<Regex> = LazyLock::new(|| fixed(r"(Login incorrect|[#$] )"));
/// What [`Console::exec`]'s script prints: the status, then stdout and stderr in base64.
static EXEC_RESULT: LazyLock<Regex> =
    LazyLock::new(|| fixed(r"(?s)C2VM_RC=(\d+)\r?\n(.*?)C2VM_MID\r?\n(.*?)C2VM_END"));

fn fixed(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex")
}

pub struct ExecResult {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>, echo: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if echo {
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            if let Ok(mut b) = into.lock() {
                b.extend_from_slice(&buf[..n]);
            }
        }
    });
}

impl Console {
    pub fn new(
        mut child: Child,
        echo: bool,
        files: Box<dyn std::any::Any>,
        secure_boot: bool,
    ) -> Result<Console> {
        let stdin = child.stdin.take().context("QEMU's stdin")?;
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let stderr = child.stderr.take().context("QEMU's stderr")?;
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let qemu_stderr = Arc::new(Mutex::new(Vec::new()));
        pump(stdout, Arc::clone(&buffer), echo);
        pump(stderr, Arc::clone(&qemu_stderr), false);
        Ok(Console {
            child,
            stdin,
            buffer,
            consumed: 0,
            secure_boot,
            echo,
            qemu_stderr,
            _files: files,
        })
    }

    fn text_since(&self, from: usize) -> String {
        let buf = self.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&buf[from.min(buf.len())..]).into_owned()
    }

    fn last_lines(&self, n: usize) -> String {
        let text = self.text_since(0);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Wait until the console output after what was matched before shows `re`; returns the match's
    /// captures as strings (index 0 = whole match).
    pub fn wait_for(&mut self, re: &Regex, deadline: Instant, what: &str) -> Result<Vec<String>> {
        self.wait_until(deadline, what, |text| {
            let caps = re.captures(text)?;
            let end = caps.get(0).map(|m| m.end()).unwrap_or(0);
            let caps = caps
                .iter()
                .map(|c| c.map(|m| m.as_str().to_string()).unwrap_or_default())
                .collect();
            Some((end, caps))
        })
    }

    /// Wait until `found` finds what it looks for in the console output after what was matched
    /// before (each time with all of it); it returns how many bytes of that text it used up.
    fn wait_until<T>(
        &mut self,
        deadline: Instant,
        what: &str,
        mut found: impl FnMut(&str) -> Option<(usize, T)>,
    ) -> Result<T> {
        let (refused, colours) = (&*REFUSED_RE, &*COLOURS);
        loop {
            let text = self.text_since(self.consumed);
            if let Some((end, value)) = found(&text) {
                // Lossy conversion may change lengths; map back by re-encoding the prefix.
                self.consumed += text[..end].len();
                return Ok(value);
            }
            if crate::interrupt::is_set() {
                self.stop();
                return Err(crate::interrupt::Interrupted.into());
            }
            // Nothing boots after a refusal (the firmware tries PXE, then stops): say so now
            // rather than at the timeout, unless the refusal is what was asked for.
            if let Some(line) = self
                .secure_boot
                .then(|| text.lines().find(|l| refused.is_match(l)))
                .flatten()
            {
                let line = colours.replace_all(line, "").trim().to_string();
                self.stop();
                bail!(
                    "Secure Boot refused the disk while waiting for {what} (`{line}`): its loader \
                     or kernel is not signed by a key this firmware trusts; convert it with \
                     --secure-boot on (shim and the signed loader and kernel, from a Debian \
                     image), or boot it with --firmware uefi"
                );
            }
            // The boot will never get further: say why now, not at the timeout.
            if let Some((_, why)) =
                (crate::instance::start::FATAL.iter()).find(|(m, _)| text.contains(m))
            {
                std::thread::sleep(Duration::from_millis(300));
                let lines = self.last_lines(8);
                self.stop();
                bail!("{why}, while waiting for {what}; last console lines:\n{lines}");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let err = self
                    .qemu_stderr
                    .lock()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                bail!(
                    "QEMU exited ({status}) while waiting for {what}\n{}\nlast console lines:\n{}",
                    err.trim(),
                    self.last_lines(20)
                );
            }
            if Instant::now() > deadline {
                let lines = self.last_lines(20);
                self.stop();
                bail!(
                    "timed out waiting for {what} (raise --timeout); last console lines:\n{lines}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn send(&mut self, text: &str) -> Result<()> {
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|_| self.stdin.flush())
            .context("typing on the guest console")
    }

    /// Type the encrypted root's passphrase at its prompt; fails if the guest asks again. The
    /// prompt is watched by [`unlock::Watcher`], as on an interactive console.
    pub fn unlock(
        &mut self,
        passphrase: &crate::disk::luks::Passphrase,
        deadline: Instant,
    ) -> Result<()> {
        let mut watcher = unlock::Watcher::new();
        // The prompt, then (once typed) the volume set up; anything else is a refusal.
        for (what, typed) in [
            ("the encrypted root's passphrase prompt", false),
            ("the encrypted root to unlock", true),
        ] {
            match (
                self.wait_until(deadline, what, watching(&mut watcher))?,
                typed,
            ) {
                (unlock::Step::Type, false) => self
                    .stdin
                    .write_all(&unlock::keys(passphrase))
                    .and_then(|_| self.stdin.flush())
                    .context("typing the passphrase on the guest console")?,
                (unlock::Step::Nothing, true) => return Ok(()),
                _ => break,
            }
        }
        self.stop();
        if self.echo {
            eprintln!();
        }
        Err(unlock::refused())
    }

    pub fn login(&mut self, user: &str, password: &str, deadline: Instant) -> Result<()> {
        self.wait_for(&LOGIN_PROMPT, deadline, "the login prompt")?;
        std::thread::sleep(Duration::from_millis(300));
        self.send(&format!("{user}\n"))?;
        self.wait_for(&PASSWORD_PROMPT, deadline, "the password prompt")?;
        self.send(&format!("{password}\n"))?;
        let caps = self.wait_for(&AFTER_LOGIN, deadline, "a shell prompt after logging in")?;
        if caps[0].contains("incorrect") {
            self.stop();
            bail!("the guest refused the login for {user}: wrong password?");
        }
        Ok(())
    }

    /// Run `command` with `sh` in the logged-in shell; returns its status and decoded output.
    pub fn exec(&mut self, command: &str, deadline: Instant) -> Result<ExecResult> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let script = b64.encode(command.as_bytes());
        // Markers are typed split by quotes ('C2VM_''X'), so only the shell's output matches them.
        self.send(&format!(
            "stty -echo; dmesg -n 1 2>/dev/null; echo {script} | base64 -d > /tmp/.c2vm-cmd; \
             sh /tmp/.c2vm-cmd > /tmp/.c2vm-out 2> /tmp/.c2vm-err < /dev/null; echo C2VM_''RC=$?; \
             base64 /tmp/.c2vm-out; echo C2VM_''MID; base64 /tmp/.c2vm-err; sync; echo C2VM_''END\n"
        ))?;
        let caps = self.wait_for(&EXEC_RESULT, deadline, "the command to finish")?;
        let status: i32 = caps[1]
            .parse()
            .context("reading the command's exit status")?;
        Ok(ExecResult {
            status,
            stdout: decode_block(&caps[2])?,
            stderr: decode_block(&caps[3])?,
        })
    }

    /// Power the guest off, waiting a little for a clean shutdown before pulling the plug.
    pub fn power_off(&mut self) {
        let _ = self.send("poweroff\n");
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if crate::interrupt::is_set() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A [`Console::wait_until`] test that feeds the console's new output to `watcher`: done at its
/// first step (type, or refused), or once the volume is open (up to its word, `Step::Nothing`).
fn watching(
    watcher: &mut unlock::Watcher,
) -> impl FnMut(&str) -> Option<(usize, unlock::Step)> + '_ {
    let mut fed = 0;
    move |text| {
        // From a character's start: what lossy decoding cut at the last look may read otherwise now.
        let mut start = fed.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let new = &text[start..];
        fed = text.len();
        match watcher.feed(new.as_bytes()) {
            unlock::Step::Nothing if watcher.unlocked() => {
                let end = text
                    .find(unlock::UNLOCKED)
                    .map_or(text.len(), |at| at + unlock::UNLOCKED.len());
                Some((end, unlock::Step::Nothing))
            }
            unlock::Step::Nothing => None,
            step => Some((text.len(), step)),
        }
    }
}

/// Decode base64 lines, skipping anything else the console printed in between.
fn decode_block(text: &str) -> Result<Vec<u8>> {
    let clean: String = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .context("decoding the command's output from the console")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A console on `script`, run by sh in place of QEMU.
    fn console(script: &str) -> Console {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Console::new(child, false, Box::new(()), false).unwrap()
    }

    fn passphrase(dir: &std::path::Path) -> crate::disk::luks::Passphrase {
        let file = dir.join("pass");
        std::fs::write(&file, "right\n").unwrap();
        crate::disk::luks::Passphrase::from_file(&file).unwrap()
    }

    #[test]
    fn scripted_unlock_types_once_and_reads_on_after_the_volume_opens() {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Split prompt, as a slow console delivers it; after the volume is open, another
        // volume's prompt is not c2vm's to answer.
        let mut c = console(
            "printf 'Begin: Please unl'; sleep 0.2; printf 'ock disk c2vm_root: '; read pw; \
             echo \"cryptsetup: c2vm_root: set up successfully\"; \
             printf 'Please unlock disk data: '; echo; echo \"typed:$pw\"; printf 'login: '; sleep 5",
        );
        c.unlock(&passphrase(dir.path()), deadline).unwrap();
        let typed = Regex::new(r"typed:(\w*)").unwrap();
        assert_eq!(
            c.wait_for(&typed, deadline, "the echo").unwrap()[1],
            "right"
        );
        let login = Regex::new("login: ").unwrap();
        c.wait_for(&login, deadline, "the login prompt").unwrap();
    }

    #[test]
    fn scripted_unlock_calls_a_second_prompt_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut c = console(
            "printf 'Please unlock disk c2vm_root: '; read pw; \
             echo 'No key available with this passphrase.'; \
             printf 'Please unlock disk c2vm_root: '; sleep 30",
        );
        let started = Instant::now();
        let err = c.unlock(&passphrase(dir.path()), deadline).unwrap_err();
        assert!(err.to_string().contains("refused the passphrase"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(c.child.try_wait().unwrap().is_some(), "the VM is stopped");
    }

    #[test]
    fn decodes_base64_amid_console_noise() {
        let text = "aGVsbG8g\r\n[   12.3] random: crng init done\r\nd29ybGQK\r\n";
        assert_eq!(decode_block(text).unwrap(), b"hello world\n");
        assert_eq!(decode_block("").unwrap(), b"");
    }

    #[test]
    fn fixed_patterns_compile_and_match() {
        assert!(REFUSED_RE.is_match("failed to load Boot0001: Access Denied"));
        assert_eq!(COLOURS.replace_all("\x1b[1;31mDenied\x1b[0m", ""), "Denied");
        assert!(LOGIN_PROMPT.is_match("debian login: "));
        assert!(PASSWORD_PROMPT.is_match("Password: "));
        assert!(AFTER_LOGIN.is_match("root@debian:~# "));
        let caps = EXEC_RESULT
            .captures("C2VM_RC=3\r\naGk=\r\nC2VM_MID\r\nC2VM_END")
            .unwrap();
        assert_eq!((&caps[1], &caps[2]), ("3", "aGk=\r\n"));
    }
}
