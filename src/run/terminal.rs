//! `c2vm run` at a terminal: the serial console and QEMU's monitor on this terminal, the
//! console relayed through c2vm, which watches it for c2vm-init's last word (the app's exit
//! status) and, with `--luks-passphrase-file`, types the encrypted root's passphrase at its
//! prompt while passing the user's keys on (the terminal then in raw mode, as QEMU would set it).
use super::unlock;
use crate::disk::luks::Passphrase;
use crate::progress::note;
use anyhow::{Context, Result};
use std::process::{Command, Stdio};

/// With `luks`, QEMU's stdin is c2vm's, passed on, and c2vm types the passphrase at the
/// encrypted root's prompt (see `unlock`).
pub fn run(binary: &str, args: &[String], luks: Option<&Passphrase>) -> Result<i32> {
    note("c2vm: the serial console is on this terminal. To leave: press Ctrl-A, then X.");
    let mut cmd = Command::new(binary);
    cmd.args(args)
        // What -nographic sets up, which -nodefaults turns off: the serial port and the
        // monitor share this terminal (Ctrl-A C switches, Ctrl-A X quits), and Ctrl-C goes
        // to the guest.
        .args([
            "-display",
            "none",
            "-chardev",
            "stdio,id=console,mux=on,signal=off",
            "-serial",
            "chardev:console",
            "-mon",
            "chardev=console,mode=readline",
        ])
        .stdout(Stdio::piped());
    // QEMU puts a terminal on its stdin in raw mode itself; through a pipe, c2vm does.
    let _raw = match luks {
        Some(_) => {
            cmd.stdin(Stdio::piped());
            crate::raw_terminal::RawTerminal::on_stdin(crate::raw_terminal::Output::Processed)?
        }
        None => None,
    };
    let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
    let typist = match luks.map(|passphrase| Typist::start(&mut child, passphrase)) {
        Some(Ok(typist)) => Some(typist),
        Some(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        None => None,
    };
    // The console passes through c2vm, which watches for c2vm-init's last word: a VM whose
    // init is c2vm-init ends with its app's exit status, as `docker run` does.
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let relay = std::thread::spawn(move || relay_console(stdout, typist));
    let status = child.wait().context("waiting for QEMU")?;
    let relayed = relay.join().unwrap_or_default();
    if relayed.refused {
        return Err(unlock::refused());
    }
    Ok(relayed.status.unwrap_or(status.code().unwrap_or(1)))
}

/// What the console showed: the status c2vm-init reported (`c2vm-init: exit N`), and whether
/// the guest refused the encrypted root's passphrase.
#[derive(Debug, Default)]
struct Relayed {
    status: Option<i32>,
    refused: bool,
}

/// Copy the console to our stdout as it comes, typing the passphrase at its prompt.
fn relay_console(mut from: impl std::io::Read, mut typist: Option<Typist>) -> Relayed {
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let mut relayed = Relayed::default();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
        for &b in &buf[..n] {
            if b == b'\n' {
                relayed.status = init_exit_status(&line).or(relayed.status);
                line.clear();
            } else if line.len() < 256 {
                line.push(b);
            }
        }
        if let Some(typist) = typist.as_mut() {
            if !typist.watch(&buf[..n]) {
                relayed.refused = true;
            }
        }
    }
    relayed
}

/// Types the passphrase into QEMU's stdin at the prompt, and passes c2vm's stdin on otherwise.
/// One thread writes to QEMU, fed by both: a QEMU that stops reading then blocks that thread
/// alone, never the relay of its console.
struct Typist {
    to_qemu: std::sync::mpsc::Sender<zeroize::Zeroizing<Vec<u8>>>,
    keys: zeroize::Zeroizing<Vec<u8>>,
    watcher: unlock::Watcher,
    qemu: rustix::process::Pid,
}

impl Typist {
    fn start(child: &mut std::process::Child, passphrase: &Passphrase) -> Result<Typist> {
        use std::io::{Read, Write};
        let mut stdin = child.stdin.take().context("QEMU's stdin")?;
        let qemu = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("QEMU's process id")?;
        let (to_qemu, queue) = std::sync::mpsc::channel::<zeroize::Zeroizing<Vec<u8>>>();
        // Both end with c2vm, or when QEMU's stdin closes.
        std::thread::spawn(move || {
            for bytes in queue {
                if stdin
                    .write_all(&bytes)
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
            }
        });
        let forward = to_qemu.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut from = std::io::stdin();
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if forward
                    .send(zeroize::Zeroizing::new(buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Typist {
            to_qemu,
            keys: unlock::keys(passphrase),
            watcher: unlock::Watcher::new(),
            qemu,
        })
    }

    /// Returns false when the guest refused the passphrase (QEMU is then stopped).
    fn watch(&mut self, output: &[u8]) -> bool {
        for step in steps(&mut self.watcher, output) {
            match step {
                unlock::Step::Type => {
                    let _ = self.to_qemu.send(self.keys.clone());
                }
                _ => {
                    let _ = rustix::process::kill_process(self.qemu, rustix::process::Signal::TERM);
                    return false;
                }
            }
        }
        true
    }
}

/// What `output` asks of c2vm, in order, the `Nothing`s left out: a second prompt in the same
/// read as the first is still in the watcher's tail after the first, and a refusal.
fn steps(watcher: &mut unlock::Watcher, output: &[u8]) -> Vec<unlock::Step> {
    let mut steps = Vec::new();
    let mut step = watcher.feed(output);
    while step != unlock::Step::Nothing {
        let refused = step == unlock::Step::Refused;
        steps.push(step);
        if refused {
            break;
        }
        step = watcher.feed(b"");
    }
    steps
}

/// `c2vm-init: exit 42` → 42.
fn init_exit_status(line: &[u8]) -> Option<i32> {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches('\r')
        .strip_prefix("c2vm-init: exit ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_status_comes_from_init_s_last_word() {
        let console = b"booting\r\nhello from the app\r\nc2vm-init: the app exited with status 42\r\nc2vm-init: exit 42\r\n[ 9.1] reboot: Power down\r\n";
        assert_eq!(relay_console(&console[..], None).status, Some(42));
        assert_eq!(relay_console(&b"login: "[..], None).status, None);
    }

    #[test]
    fn two_prompts_in_one_read_are_a_refusal() {
        use unlock::Step::{Refused, Type};
        let mut w = unlock::Watcher::new();
        let both = b"Please unlock disk c2vm_root: \r\nNo key\r\nPlease unlock disk c2vm_root: ";
        assert_eq!(steps(&mut w, both), [Type, Refused]);
        let mut w = unlock::Watcher::new();
        assert_eq!(steps(&mut w, b"Please unlock disk c2vm_root: "), [Type]);
        assert_eq!(steps(&mut w, b"\r\nset up successfully\r\n"), []);
    }
}
