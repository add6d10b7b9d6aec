//! `c2vm exec NAME -- CMD ARGS…`: a command in a running VM through its agent, its stdout and
//! stderr kept apart and streamed as they come (`c2vm-exec-read`, polled), stdin passed with
//! `-i`, and c2vm's exit status the command's (128+N for a signal), as `docker exec`. With `-t`
//! the command gets a terminal in the guest: one output stream, the host's terminal raw and its
//! size followed.
use super::agent::{self, Agent};
use super::options::ExecArgs;
use super::Instance;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::mpsc;

/// `docker exec`'s status for a failure of its own, after the command started.
pub const OWN_FAILURE: i32 = 125;
/// How long one poll may wait in the guest for output.
const POLL_MS: u64 = 200;
/// How long a poll's answer may take before the agent is said to have stopped: a poll is
/// answered within POLL_MS in the guest, so this is only for a slow (emulated, loaded) guest.
const POLL_ANSWER: std::time::Duration = std::time::Duration::from_secs(20);

/// A terminal's size when c2vm's own output is not a terminal.
const DEFAULT_SIZE: (u16, u16) = (24, 80);

pub fn exec(args: &ExecArgs) -> Result<i32> {
    let vm = Instance::running(&args.name)?;
    let (program, rest) = args
        .command
        .split_first()
        .context("give the command after --: c2vm exec NAME -- CMD ARGS…")?;
    let mut env = args.env.clone();
    let mut request = json!({
        "path": program,
        "arg": rest,
        "user": args.user,
        "workdir": args.workdir,
        "stdin": args.interactive,
    });
    if args.tty {
        // The host terminal's type, as ssh passes it, unless -e gives one.
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
            env.push(format!("TERM={term}"));
        }
        let (rows, cols) = crate::raw_terminal::size().unwrap_or(DEFAULT_SIZE);
        request["tty"] = json!({"rows": rows, "cols": cols});
    }
    request["env"] = json!(env);
    run_in(&vm, request, args.interactive)
}

/// `c2vm run --exec CMD` (no `--login`): `sh -c CMD` as root, no stdin.
pub fn shell(vm: &Instance, command: &str) -> Result<i32> {
    run_in(vm, json!({"path": "sh", "arg": ["-c", command]}), false)
}

/// Start `request` (a `c2vm-exec`) and stream it to its end.
fn run_in(vm: &Instance, request: Value, interactive: bool) -> Result<i32> {
    let mut agent = super::connect_agent(vm)?;
    let tty = request.get("tty").is_some();
    let started = agent.call("c2vm-exec", request)?;
    let pid = started["pid"].clone();
    // Keys go to the guest's terminal as typed (^C included) while it runs.
    let _raw = match tty && interactive {
        true => crate::raw_terminal::RawTerminal::on_stdin(crate::raw_terminal::Output::Raw)?,
        false => None,
    };
    let stdin = interactive.then(read_stdin);
    // From here on a failure is c2vm's, not the command's: said, and 125.
    match stream(&mut agent, &pid, stdin, tty) {
        Ok(status) => Ok(status),
        Err(e) if crate::interrupt::is_set() => {
            agent
                .call(
                    "c2vm-exec-kill",
                    json!({"pid": pid, "signal": libc::SIGKILL}),
                )
                .ok();
            Err(e)
        }
        Err(e) => {
            crate::progress::say(&format!("c2vm: error: {e:#}"));
            Ok(OWN_FAILURE)
        }
    }
}

/// Standard input in chunks, read on a thread so the polls go on while it waits; `None` is
/// its end. The channel holds a few chunks: a fast producer waits for the guest.
fn read_stdin() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    tx.send(None).ok();
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Output as it comes, stdin as it comes, until the command has exited: its status.
fn stream(
    agent: &mut Agent,
    pid: &Value,
    stdin: Option<mpsc::Receiver<Option<Vec<u8>>>>,
    tty: bool,
) -> Result<i32> {
    let mut stdin = stdin;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut size = crate::raw_terminal::size();
    loop {
        crate::interrupt::check()?;
        // Polled, not SIGWINCH: a poll goes by every POLL_MS anyway.
        if tty && crate::raw_terminal::size() != size {
            size = crate::raw_terminal::size();
            if let Some((rows, cols)) = size {
                agent.call(
                    "c2vm-exec-resize",
                    json!({"pid": pid, "rows": rows, "cols": cols}),
                )?;
            }
        }
        if let Some(rx) = &stdin {
            while let Ok(chunk) = rx.try_recv() {
                let eof = chunk.is_none();
                let data = agent::encode(&chunk.unwrap_or_default());
                agent.call(
                    "c2vm-exec-write",
                    json!({"pid": pid, "data": data, "eof": eof}),
                )?;
                if eof {
                    stdin = None;
                    break;
                }
            }
        }
        let read = agent.call_within(
            "c2vm-exec-read",
            json!({"pid": pid, "wait-ms": POLL_MS}),
            POLL_ANSWER,
        )?;
        let stdout = agent::bytes(&read, "out-data")?;
        let stderr = agent::bytes(&read, "err-data")?;
        // A reader that went away (`| head`) ends c2vm's copying, not the command.
        out.write_all(&stdout)
            .and_then(|_| out.flush())
            .context("writing the command's stdout")?;
        err.write_all(&stderr).and_then(|_| err.flush()).ok();
        if read["exited"].as_bool() == Some(true) {
            return Ok(status(&read));
        }
    }
}

/// The exit code, or 128 + the signal that ended it.
pub fn status(ended: &Value) -> i32 {
    match (ended["exitcode"].as_i64(), ended["signal"].as_i64()) {
        (Some(code), _) => code as i32,
        (None, Some(signal)) => 128 + signal as i32,
        (None, None) => OWN_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_128_plus_its_number() {
        assert_eq!(status(&json!({"exited": true, "exitcode": 77})), 77);
        assert_eq!(status(&json!({"exited": true, "signal": 9})), 137);
        assert_eq!(status(&json!({"exited": true})), OWN_FAILURE);
    }
}
