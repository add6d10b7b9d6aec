//! `c2vm run --luks-passphrase-file`: an encrypted root's initramfs asks for the passphrase on
//! the serial console, and c2vm types it there, once. A second prompt means the guest refused
//! it: c2vm stops the VM and says so, rather than leave a scripted run waiting for its timeout.
//! [`Watcher`] is the one state machine for both consoles, the interactive relay's and the
//! scripted one's.
use crate::disk::luks::{Passphrase, MAPPING};
use anyhow::anyhow;
use regex::Regex;
use std::sync::LazyLock;
use zeroize::Zeroizing;

/// What Debian's and Ubuntu's initramfs (cryptsetup-initramfs's askpass) print, and c2vm's
/// generic bundle with them, for c2vm's volume: `Please unlock disk c2vm_root: ` (another volume
/// of the image's own crypttab is the user's to answer).
pub static PROMPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!("Please unlock disk {}: ", regex::escape(MAPPING))).expect("constant regex")
});
/// Its word once the volume is open.
pub const UNLOCKED: &str = "set up successfully";

/// The error of a refused passphrase.
pub fn refused() -> anyhow::Error {
    anyhow!("the guest refused the passphrase of its encrypted root (it asked again): check --luks-passphrase-file")
}

/// The keys to type: the passphrase, then Enter.
pub fn keys(passphrase: &Passphrase) -> Zeroizing<Vec<u8>> {
    let mut keys = Zeroizing::new(Vec::with_capacity(passphrase.bytes().len() + 1));
    keys.extend_from_slice(passphrase.bytes());
    keys.push(b'\n');
    keys
}

/// `run -d`'s answer at the console of a VM in the background: the passphrase typed at the
/// first prompt, a second prompt a refusal that ends the wait.
pub struct Typist {
    watcher: Watcher,
    keys: Zeroizing<Vec<u8>>,
}

impl Typist {
    pub fn new(passphrase: &Passphrase) -> Typist {
        Typist {
            watcher: Watcher::new(),
            keys: keys(passphrase),
        }
    }
}

impl crate::instance::start::ConsoleAnswer for Typist {
    fn feed(&mut self, output: &[u8]) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        match self.watcher.feed(output) {
            Step::Type => Ok(Some(self.keys.clone())),
            Step::Refused => Err(refused()),
            Step::Nothing => Ok(None),
        }
    }
}

/// Watches an interactive console's output for the prompt (which ends no line).
pub struct Watcher {
    /// The console since the last prompt, at most a line's worth.
    tail: String,
    prompts: u32,
    /// The volume is open: nothing more to watch for.
    unlocked: bool,
}

/// What the console's latest output asks of c2vm.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The first prompt: type the passphrase.
    Type,
    /// A prompt after the passphrase was typed: it was wrong.
    Refused,
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher {
            tail: String::new(),
            prompts: 0,
            unlocked: false,
        }
    }

    /// The volume is open: later prompts are for the image's own volumes, not c2vm's.
    pub fn unlocked(&self) -> bool {
        self.unlocked
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Step {
        if self.unlocked {
            return Step::Nothing;
        }
        self.tail.push_str(&String::from_utf8_lossy(bytes));
        if self.prompts > 0 && self.tail.contains(UNLOCKED) {
            self.unlocked = true;
            return Step::Nothing;
        }
        if let Some(m) = PROMPT.find(&self.tail) {
            self.tail.drain(..m.end());
            self.prompts += 1;
            return match self.prompts {
                1 => Step::Type,
                _ => Step::Refused,
            };
        }
        if self.tail.len() > 512 {
            let cut = self.tail.len() - 256;
            let cut = (cut..self.tail.len())
                .find(|&i| self.tail.is_char_boundary(i))
                .unwrap_or(0);
            self.tail.drain(..cut);
        }
        Step::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_at_the_first_prompt_and_calls_a_second_one_a_refusal() {
        let mut w = Watcher::new();
        assert_eq!(
            w.feed(b"Begin: Running /scripts/local-top ... Please unl"),
            Step::Nothing
        );
        assert_eq!(w.feed(b"ock disk c2vm_root: "), Step::Type);
        assert_eq!(w.feed(b"\r\n"), Step::Nothing);
        assert_eq!(
            w.feed(b"No key available with this passphrase.\r\nPlease unlock disk c2vm_root: "),
            Step::Refused
        );
        // Unlocked: a later prompt for a volume of the image's own is not c2vm's to answer.
        let mut w = Watcher::new();
        assert_eq!(w.feed(b"Please unlock disk c2vm_root: "), Step::Type);
        assert_eq!(
            w.feed(b"cryptsetup: c2vm_root: set up successfully\r\n"),
            Step::Nothing
        );
        assert_eq!(w.feed(b"Please unlock disk c2vm_root: "), Step::Nothing);
        assert_eq!(w.feed(b"Please unlock disk data: "), Step::Nothing);
        // Two prompts in one read: the second waits in the tail for the next feed.
        let mut w = Watcher::new();
        let both = b"Please unlock disk c2vm_root: \r\nNo key\r\nPlease unlock disk c2vm_root: ";
        assert_eq!(w.feed(both), Step::Type);
        assert_eq!(w.feed(b""), Step::Refused);
    }
}
