//! The one way c2vm runs external programs (`mke2fs`, `syslinux`, `qemu-img`, ...): a description
//! for people, stdin closed, the command line logged at debug level, output kept unless the command
//! fails, then the tail of its stderr in the error. Waits poll the interrupt flag so Ctrl-C and
//! SIGTERM stop the child too. A missing program names the package that provides it
//! (`host_tools`, from `host-packages.txt`).
use anyhow::{anyhow, Context, Result};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Find `program` on PATH (or an absolute path), or explain how to install it.
pub fn require(program: &str) -> Result<std::path::PathBuf> {
    find_in_path(program).ok_or_else(|| {
        anyhow!(
            "`{program}` was not found on PATH; {}",
            crate::host_tools::install_hint(program)
        )
    })
}

fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

pub struct Cmd {
    description: String,
    program: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

/// What a finished command printed.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// A program that ran and failed. Its message is for people; callers that must tell one failure
/// from another use [`ToolFailed::said`], the one place where c2vm reads other programs' text.
#[derive(Debug, thiserror::Error)]
#[error("{description} failed: `{command}` exited with {status}\n{tail}")]
pub struct ToolFailed {
    description: String,
    command: String,
    status: String,
    /// The last lines of stderr (or stdout when stderr was empty).
    tail: String,
}

impl ToolFailed {
    /// Whether the program's output says one of `phrases`. mke2fs and friends report "disk full"
    /// and similar conditions only as text and one exit status for all errors, so matching their
    /// words is the only way to know; it happens here and nowhere else.
    /// The last lines the program printed.
    pub fn tail(&self) -> &str {
        &self.tail
    }

    pub fn said(&self, phrases: &[&str]) -> bool {
        phrases.iter().any(|p| self.tail.contains(p))
    }

    /// The failure of a tool anywhere in `err`'s chain, if one failed.
    pub fn find(err: &anyhow::Error) -> Option<&ToolFailed> {
        err.chain().find_map(|e| e.downcast_ref::<ToolFailed>())
    }
}

impl Cmd {
    pub fn new(program: &str, description: &str) -> Cmd {
        Cmd {
            description: description.to_string(),
            program: program.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The command line, shell-escaped, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(self.program.clone())
            .chain(
                self.args
                    .iter()
                    .map(|a| shell_escape::escape(a.to_string_lossy()).into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Result<Command> {
        let path = require(&self.program)?;
        let mut command = Command::new(path);
        command.args(&self.args);
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        Ok(command)
    }

    /// Start the program with stdout and stderr collected by threads.
    fn spawn(&self, stdin: Stdio) -> Result<(Child, Collected, Collected)> {
        log::debug!("running: {}", self.display());
        let mut child = self
            .command()?
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{}: starting `{}`", self.description, self.program))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Ok((child, stdout, stderr))
    }

    /// Run to completion with captured output; a non-zero exit is an error with stderr's tail.
    pub fn run(self) -> Result<Output> {
        let (mut child, stdout, stderr) = self.spawn(Stdio::null())?;
        let status = wait_interruptible(&mut child)?;
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(self.failed(status, tail(&stderr, &stdout)).into());
        }
        Ok(Output { stdout, stderr })
    }

    /// Run with `feed` writing the program's stdin (e.g. a tar stream into `mke2fs -d -`); stdin
    /// is closed when `feed` returns. When the program fails, its error wins: `feed` then
    /// usually only saw a broken pipe. When `feed` fails first (a refused archive, Ctrl-C), the
    /// program is killed, so it never finishes on half an input.
    pub fn run_feeding<T>(
        self,
        feed: impl FnOnce(&mut dyn std::io::Write) -> Result<T>,
    ) -> Result<T> {
        let (mut child, stdout, stderr) = self.spawn(Stdio::piped())?;
        // The feeding thread is busy: another one watches the program's memory.
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (running, pid) = (running.clone(), child.id());
            std::thread::spawn(move || {
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    sample_peak_memory(pid);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let fed = match child.stdin.take() {
            Some(stdin) => {
                // A 1 MiB pipe (Linux's default is 64 KiB): fewer switches between c2vm and the
                // program on a long stream. Only an optimisation, so a refusal is fine.
                let _ = rustix::pipe::fcntl_setpipe_size(&stdin, 1 << 20);
                let mut stdin = std::io::BufWriter::with_capacity(1 << 20, stdin);
                let fed = feed(&mut stdin);
                // Flushing after a failure may block on a program that stopped reading.
                let flushed = match fed.is_ok() {
                    true => stdin.flush().map_err(anyhow::Error::from),
                    false => Ok(()),
                };
                let failed = fed.is_err() || flushed.is_err();
                let broken =
                    is_broken_pipe(fed.as_ref().err()) || is_broken_pipe(flushed.as_ref().err());
                if failed && !broken {
                    let _ = child.kill();
                }
                drop(stdin.into_parts().0);
                flushed.and(fed)
            }
            None => Err(anyhow::anyhow!("no stdin for `{}`", self.program)),
        };
        let status = wait_interruptible(&mut child);
        running.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        let status = status?;
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() && (fed.is_ok() || is_broken_pipe(fed.as_ref().err())) {
            return Err(self.failed(status, tail(&stderr, &stdout)).into());
        }
        fed
    }

    /// Run with stdout handed line by line (split on `\r` or `\n`) to `on_line`, e.g. to follow
    /// `qemu-img -p` progress.
    pub fn run_streaming(self, mut on_line: impl FnMut(&str)) -> Result<()> {
        log::debug!("running: {}", self.display());
        let mut child = self
            .command()?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{}: starting `{}`", self.description, self.program))?;
        let stderr = drain(child.stderr.take());
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let Some(out) = stdout.as_mut() else { return };
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    if b == b'\r' || b == b'\n' {
                        if !line.is_empty() {
                            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                            line.clear();
                        }
                    } else {
                        line.push(b);
                    }
                }
            }
        });
        let status = loop {
            while let Ok(line) = rx.try_recv() {
                on_line(&line);
            }
            if let Some(status) = poll_child(&mut child)? {
                break status;
            }
        };
        let _ = reader.join();
        while let Ok(line) = rx.try_recv() {
            on_line(&line);
        }
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(self.failed(status, tail(&stderr, "")).into());
        }
        Ok(())
    }

    fn failed(&self, status: ExitStatus, tail: String) -> ToolFailed {
        ToolFailed {
            description: self.description.clone(),
            command: self.display(),
            status: describe_status(status),
            tail,
        }
    }
}

/// Whether `err` is (or wraps) a write to a pipe whose reader has gone.
pub fn is_broken_pipe(err: Option<&anyhow::Error>) -> bool {
    err.is_some_and(|e| {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        })
    })
}

type Collected = std::thread::JoinHandle<String>;

/// The largest peak resident memory seen of any program c2vm ran, in KiB. getrusage cannot say:
/// a child's ru_maxrss starts from its parent's size at fork, so it is sampled (VmHWM, which
/// counts from exec) while the program runs.
static PEAK_TOOL_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn sample_peak_memory(pid: u32) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return;
    };
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    PEAK_TOOL_KIB.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
}

/// The largest peak memory of the programs c2vm ran (sampled while they ran), in KiB.
pub fn peak_tool_memory_kib() -> u64 {
    PEAK_TOOL_KIB.load(std::sync::atomic::Ordering::Relaxed)
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// One poll step: the exit status if the child ended; kills it and fails on an interrupt.
fn poll_child(child: &mut Child) -> Result<Option<ExitStatus>> {
    sample_peak_memory(child.id());
    if let Some(status) = child.try_wait().context("waiting for a child process")? {
        return Ok(Some(status));
    }
    if crate::interrupt::is_set() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(crate::interrupt::Interrupted.into());
    }
    std::thread::sleep(Duration::from_millis(20));
    Ok(None)
}

/// Wait for `child`, killing it if the user interrupts c2vm.
pub fn wait_interruptible(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = poll_child(child)? {
            return Ok(status);
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".to_string(),
    }
}

/// The last lines of what the command printed, for an error message.
fn tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_its_package() {
        let err = Cmd::new("qemu-img-does-not-exist", "Testing").run().err();
        let msg = format!("{:#}", err.expect("must fail"));
        assert!(
            msg.contains("apt-get install qemu-img-does-not-exist"),
            "{msg}"
        );
        assert_eq!(crate::host_tools::package_for("mke2fs"), "e2fsprogs");
    }

    #[test]
    fn failure_carries_stderr_tail() {
        let err = Cmd::new("sh", "Testing a failure")
            .args(["-c", "echo boom >&2; exit 3"])
            .run()
            .err()
            .expect("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("Testing a failure failed"), "{msg}");
        assert!(msg.contains("status 3") && msg.contains("boom"), "{msg}");
    }
}
