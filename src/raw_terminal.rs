//! The terminal on c2vm's stdin in raw mode, for as long as a guest reads it through c2vm (the
//! console of `run`, the terminal of `exec -t`); restored on drop, so also on an error.
use anyhow::{Context, Result};
use rustix::termios::{self, OptionalActions, OutputModes};

/// What the host's terminal does with what c2vm writes to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `\n` still becomes `\r\n`, as in QEMU's own raw mode: c2vm's and QEMU's messages start
    /// at the left edge.
    Processed,
    /// Written as they come: a guest's terminal already ends its lines in `\r\n`.
    Raw,
}

pub struct RawTerminal(termios::Termios);

impl RawTerminal {
    /// Raw mode, when stdin is a terminal (`None` when it is not).
    pub fn on_stdin(output: Output) -> Result<Option<RawTerminal>> {
        let stdin = std::io::stdin();
        if !termios::isatty(&stdin) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        if output == Output::Processed {
            raw.output_modes.insert(OutputModes::OPOST);
        }
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(Some(RawTerminal(saved)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.0);
    }
}

/// The size of the terminal c2vm writes to (stdout, else stdin), as (rows, columns).
pub fn size() -> Option<(u16, u16)> {
    let of = |fd: std::os::fd::BorrowedFd<'_>| {
        termios::tcgetwinsize(fd)
            .ok()
            .filter(|w| w.ws_row > 0 && w.ws_col > 0)
            .map(|w| (w.ws_row, w.ws_col))
    };
    use std::os::fd::AsFd;
    of(std::io::stdout().as_fd()).or_else(|| of(std::io::stdin().as_fd()))
}
