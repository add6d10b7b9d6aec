//! Progress for long stages. On a terminal: indicatif bars and spinners on stderr. Elsewhere (logs,
//! CI): one plain line when a stage starts and one when it ends, with its time.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

fn fancy() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// One running stage. Finish it with [`Stage::done`]; dropping it unfinished clears the bar.
pub struct Stage {
    label: String,
    bar: ProgressBar,
    started: Instant,
}

impl Stage {
    /// A stage whose amount of work is unknown: a spinner.
    pub fn spinner(label: &str) -> Stage {
        let bar = if fancy() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        };
        Stage::start(label, bar)
    }

    /// A stage that moves through `total` bytes (0 when unknown).
    pub fn bytes(label: &str, total: u64) -> Stage {
        let bar = if fancy() {
            let bar = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::no_length()
            };
            let template = if total > 0 {
                "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
            } else {
                "{spinner:.cyan} {msg} {bytes} {bytes_per_sec}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        };
        Stage::start(label, bar)
    }

    fn start(label: &str, bar: ProgressBar) -> Stage {
        bar.set_message(label.to_string());
        if !fancy() && !quiet() {
            say(&format!("==> {label}"));
        }
        Stage {
            label: label.to_string(),
            bar,
            started: Instant::now(),
        }
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    pub fn message(&self, msg: &str) {
        self.bar.set_message(format!("{}: {msg}", self.label));
    }

    /// Print a line above the bar (or plainly, without a terminal).
    pub fn println(&self, line: &str) {
        if quiet() {
            return;
        }
        if fancy() {
            self.bar.println(line);
        } else {
            say(line);
        }
    }

    /// End the stage and return how long it took.
    pub fn done(self) -> Duration {
        let took = self.started.elapsed();
        self.bar.finish_and_clear();
        if !quiet() {
            say(&format!("    {} ({:.1}s)", self.label, took.as_secs_f64()));
        }
        took
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// Write a line to stderr. A closed stderr (`c2vm ... 2>&1 | head`) is no reason to fail or
/// panic halfway through writing a disk, so errors are ignored.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A one-line note for people, on stderr, silenced by `-q`.
pub fn note(line: &str) {
    if !quiet() {
        say(line);
    }
}

/// A reader that moves a stage's bar by the bytes read through it. It holds its own handle on the
/// bar, so a source can hand out the stream and keep the stage to finish later.
pub struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl Stage {
    /// Wrap `inner` so that reading from it moves this stage's bar.
    pub fn reader<R>(&self, inner: R) -> ProgressReader<R> {
        ProgressReader {
            inner,
            bar: self.bar.clone(),
        }
    }
}

impl<R> ProgressReader<R> {
    /// Move the bar by bytes that went by another way.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// How long each stage took.
#[derive(Default, Debug)]
pub struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    /// Run `work` as the stage `name`, timed.
    pub fn time<T>(
        &mut self,
        name: &'static str,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let start = Instant::now();
        let value = work()?;
        self.0.push((name, start.elapsed()));
        Ok(value)
    }

    /// Run `work` as the stage `name` behind a spinner saying `label`, timed.
    pub fn spin<T>(
        &mut self,
        name: &'static str,
        label: &str,
        work: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let stage = Stage::spinner(label);
        let value = work()?;
        self.0.push((name, stage.done()));
        Ok(value)
    }

    /// Each stage's name and time, in order.
    pub fn stages(&self) -> &[(&'static str, Duration)] {
        &self.0
    }

    /// `rootfs 1.20s, esp 0.10s`: the report's `Timings:` line, which `scripts/bench` reads.
    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
