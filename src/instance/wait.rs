//! `c2vm wait NAME --unit U | --port P | --file F | --console REGEX | --exec CMD`: the
//! readiness waits CI needs, each checked about once a second until it holds, failing in one line
//! that says what it last saw. Ports are read from the guest's /proc/net/tcp{,6} and files by
//! `c2vm-stat`, so they need no shell or tool in the guest.
use super::agent::{self, Agent, Refused};
use super::options::WaitArgs;
use super::{state, Instance};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};

/// What one look found.
enum Seen {
    Ready,
    /// Not yet: what was seen, for the timeout's message.
    Not(String),
}

pub fn wait(args: &WaitArgs) -> Result<()> {
    let vm = Instance::running(&args.name)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let console =
        match &args.console {
            Some(pattern) => Some(regex::Regex::new(pattern).with_context(|| {
                format!("--console {pattern:?} is not a valid regular expression")
            })?),
            None => None,
        };
    let mut agent = match console {
        Some(_) => None,
        None => Some(super::connect_agent(&vm)?),
    };
    let mut last = String::from("nothing yet");
    loop {
        crate::interrupt::check()?;
        if !vm.qemu_alive() {
            bail!(
                "the VM {} stopped while waiting ({last}){}",
                vm.name,
                vm.console_tail(5)
            );
        }
        let seen = match (&console, agent.as_mut()) {
            (Some(re), _) => look_at_console(&vm, re),
            (None, Some(agent)) => look(agent, args)?,
            (None, None) => unreachable!("an agent is connected unless the console is watched"),
        };
        match seen {
            Seen::Ready => return Ok(()),
            Seen::Not(what) => last = what,
        }
        if Instant::now() >= deadline {
            bail!(
                "gave up after {} s waiting for {}: {last}",
                args.timeout,
                what(args)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn what(args: &WaitArgs) -> String {
    match (&args.unit, args.port, &args.file, &args.console, &args.exec) {
        (Some(unit), ..) => format!("the unit {unit} to be active"),
        (_, Some(port), ..) => format!("TCP port {port} to listen"),
        (_, _, Some(file), ..) => format!("{file} to exist"),
        (_, _, _, Some(re), _) => format!("the console to show {re:?}"),
        (_, _, _, _, Some(cmd)) => format!("`{cmd}` to succeed"),
        _ => "nothing".to_string(),
    }
}

fn look(agent: &mut Agent, args: &WaitArgs) -> Result<Seen> {
    if let Some(unit) = &args.unit {
        let (status, out) = run(agent, &["systemctl", "is-active", unit])?;
        let state = out.trim().to_string();
        return match (status, state.as_str()) {
            (0, _) => Ok(Seen::Ready),
            (_, "failed") => {
                let (_, why) = run(
                    agent,
                    &["systemctl", "status", "--no-pager", "-n", "5", unit],
                )?;
                bail!("the unit {unit} failed:\n{}", why.trim_end())
            }
            _ => Ok(Seen::Not(format!("{unit} is {state}"))),
        };
    }
    if let Some(port) = args.port {
        return listening(agent, port);
    }
    if let Some(file) = &args.file {
        return match agent.call("c2vm-stat", json!({"path": file, "follow": true})) {
            Ok(_) => Ok(Seen::Ready),
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                Ok(Seen::Not(format!("{file} is not there")))
            }
            Err(e) => Err(e),
        };
    }
    let cmd = args.exec.as_deref().unwrap_or("true");
    let (status, out) = run(agent, &["sh", "-c", cmd])?;
    Ok(match status {
        0 => Seen::Ready,
        n => Seen::Not(format!("it exited {n}: {}", last_line(&out))),
    })
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// A command to its end: status and its stdout and stderr together.
fn run(agent: &mut Agent, argv: &[&str]) -> Result<(i32, String)> {
    let started = agent.call("c2vm-exec", json!({"path": argv[0], "arg": &argv[1..]}))?;
    let pid = started["pid"].clone();
    let mut output = Vec::new();
    loop {
        let read = agent.call("c2vm-exec-read", json!({"pid": pid, "wait-ms": 1000}))?;
        output.extend(agent::bytes(&read, "out-data")?);
        output.extend(agent::bytes(&read, "err-data")?);
        if read["exited"].as_bool() == Some(true) {
            return Ok((
                super::exec::status(&read),
                String::from_utf8_lossy(&output).into_owned(),
            ));
        }
    }
}

/// Whether the guest's kernel has a TCP socket listening on `port` (IPv4 or IPv6).
fn listening(agent: &mut Agent, port: u16) -> Result<Seen> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match read_file(agent, table) {
            Ok(text) => text,
            Err(e) if e.downcast_ref::<Refused>().is_some() => continue,
            Err(e) => return Err(e),
        };
        if listens(&text, port) {
            return Ok(Seen::Ready);
        }
    }
    Ok(Seen::Not(format!("nothing listens on TCP port {port}")))
}

/// In a /proc/net/tcp table: a socket in state 0A (LISTEN) on local port `port`.
fn listens(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && fields.get(3) == Some(&"0A")
    })
}

fn read_file(agent: &mut Agent, path: &str) -> Result<String> {
    let handle = agent.call("guest-file-open", json!({"path": path, "mode": "r"}))?;
    let mut data = Vec::new();
    loop {
        let read = agent.call(
            "guest-file-read",
            json!({"handle": handle, "count": 1 << 20}),
        )?;
        data.extend(agent::bytes(&read, "buf-b64")?);
        if read["eof"].as_bool() != Some(false) {
            break;
        }
    }
    agent.call("guest-file-close", json!({"handle": handle}))?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

fn look_at_console(vm: &Instance, re: &regex::Regex) -> Seen {
    let text = std::fs::read(vm.path(state::CONSOLE)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    match re.is_match(&text) {
        true => Seen::Ready,
        false => Seen::Not(format!("the console's last line: {:?}", last_line(&text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_by_its_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        assert!(listens(table, 8080));
        // Port 22 has only an established connection here.
        assert!(!listens(table, 22));
        assert!(!listens(table, 80));
    }
}
