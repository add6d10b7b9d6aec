//! The host's side of the guest agent: QEMU's guest agent protocol (QGA), JSON objects over the
//! virtio-serial port `org.qemu.guest_agent.0`, which QEMU offers here as a Unix socket. c2vm's
//! guests answer it with c2vm-init's agent; any QGA agent answers the standard commands.
//!
//! Hand-written, not the `qapi` crate: the protocol is one JSON object each way, the handshake
//! c2vm needs (`guest-sync-delimited`, which skips what a previous client left unread) is not in
//! qapi's synchronous client, and c2vm's own `c2vm-*` commands are not in QEMU's schema, which
//! qapi compiles whole.
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to a guest's agent, synchronised.
pub struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The lock on the channel, held while this connection lives.
    _held: Option<std::fs::File>,
}

/// The agent answered with an error (as opposed to not answering).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// How long one answer may take: every command answers at once but `c2vm-exec-read`, which
/// waits at most 5 s; TCG guests can be slow to be scheduled.
const ANSWER: Duration = Duration::from_secs(60);

impl Agent {
    /// Connect and synchronise, waiting at most `wait` for the agent's first answer.
    pub fn connect(socket: &Path, wait: Duration) -> Result<Agent> {
        let writer = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let reader = BufReader::new(writer.try_clone().context("cloning the agent's socket")?);
        let mut agent = Agent {
            reader,
            writer,
            _held: None,
        };
        agent.sync(wait)?;
        Ok(agent)
    }

    /// This connection with the lock on its channel, released when it ends.
    pub fn holding(mut self, lock: std::fs::File) -> Agent {
        self._held = Some(lock);
        self
    }

    /// `guest-sync-delimited`: the agent answers 0xFF then the id, so whatever an earlier client
    /// left unread is skipped up to the 0xFF. A 0xFF sent first resets the agent's parser.
    fn sync(&mut self, wait: Duration) -> Result<()> {
        let id = u32::from_ne_bytes(rand::random::<[u8; 4]>()) & 0x7fff_ffff;
        self.writer
            .write_all(&[0xff])
            .context("writing to the agent")?;
        self.send("guest-sync-delimited", json!({ "id": id }))?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .context("setting the agent's timeout")?;
        let mut byte = [0u8];
        loop {
            self.reader
                .read_exact(&mut byte)
                .map_err(|e| anyhow!("the guest's agent did not answer ({e})"))?;
            if byte[0] == 0xff {
                break;
            }
        }
        let answer = self.answer()?;
        if answer != json!(id) {
            bail!("the guest's agent answered the handshake with {answer}");
        }
        Ok(())
    }

    fn send(&mut self, command: &str, arguments: Value) -> Result<()> {
        let line = super::request_line(command, arguments)?;
        self.writer
            .write_all(&line)
            .context("the guest's agent stopped answering (writing to it)")
    }

    /// The next answer: its `return`, or the agent's error as [`Refused`].
    fn answer(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| self.silence(e))?;
            if n == 0 {
                bail!("the guest's agent stopped answering (its channel closed)");
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{fffd}');
            if !text.is_empty() {
                break;
            }
        }
        let mut value: Value = serde_json::from_slice(line.trim_ascii()).with_context(|| {
            format!(
                "reading the agent's answer {:?}",
                String::from_utf8_lossy(&line)
            )
        })?;
        if let Some(error) = value.get("error") {
            let desc = error["desc"].as_str().unwrap_or("no description");
            return Err(Refused(desc.to_string()).into());
        }
        Ok(value["return"].take())
    }

    /// A failed read, said as a user reads it: a timeout is the time waited.
    fn silence(&self, e: std::io::Error) -> anyhow::Error {
        let waited = self.reader.get_ref().read_timeout().ok().flatten();
        match (e.kind(), waited) {
            (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Some(t)) => anyhow!(
                "the guest's agent stopped answering (nothing in {} s)",
                t.as_secs()
            ),
            _ => anyhow!("the guest's agent stopped answering ({e})"),
        }
    }

    /// Run `command` with `arguments` (`Value::Null` for none); its `return` value.
    pub fn call(&mut self, command: &str, arguments: Value) -> Result<Value> {
        self.call_within(command, arguments, ANSWER)
    }

    /// As [`Agent::call`], giving up when no answer comes within `wait`.
    pub fn call_within(
        &mut self,
        command: &str,
        arguments: Value,
        wait: Duration,
    ) -> Result<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .context("setting the agent's timeout")?;
        self.send(command, arguments)?;
        self.answer()
            .with_context(|| format!("the guest's agent, asked {command}"))
    }
}

/// Bytes from a base64 field of an answer (absent: none).
pub fn bytes(value: &Value, field: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    match value.get(field).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .with_context(|| format!("decoding the agent's {field}")),
    }
}

/// A base64 field for a request.
pub fn encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent on the other end of a socket pair: answers each request with `answers`, in turn.
    fn fake(answers: Vec<&'static [u8]>) -> (Agent, std::thread::JoinHandle<Vec<Value>>) {
        let (host, guest) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut reader = BufReader::new(guest.try_clone().unwrap());
            let mut guest = guest;
            for answer in answers {
                let mut line = Vec::new();
                reader.read_until(b'\n', &mut line).unwrap();
                let request: Value =
                    serde_json::from_slice(line.strip_prefix(&[0xff]).unwrap_or(&line)).unwrap();
                // The answer's bytes as they are (0xFF is no UTF-8), with the sync's id for ID.
                let id = request["arguments"]["id"].to_string();
                let mut out = Vec::new();
                let mut rest = answer;
                while let Some(at) = rest.windows(2).position(|w| w == b"ID") {
                    out.extend_from_slice(&rest[..at]);
                    out.extend_from_slice(id.as_bytes());
                    rest = &rest[at + 2..];
                }
                out.extend_from_slice(rest);
                guest.write_all(&out).unwrap();
                seen.push(request);
            }
            seen
        });
        let reader = BufReader::new(host.try_clone().unwrap());
        let mut agent = Agent {
            reader,
            writer: host,
            _held: None,
        };
        agent.sync(Duration::from_secs(5)).unwrap();
        (agent, server)
    }

    #[test]
    fn the_handshake_skips_what_was_left_then_commands_answer() {
        let (mut agent, server) = fake(vec![
            b"{\"return\": 7}\n\xff{\"return\": ID}\n",
            b"{\"return\": {\"pid\": 42}}\n",
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such file\"}}\n",
        ]);
        let pid = agent
            .call("guest-exec", json!({"path": "/bin/true"}))
            .unwrap();
        assert_eq!(pid["pid"], 42);
        let err = agent
            .call("guest-file-open", json!({"path": "/x"}))
            .unwrap_err();
        assert!(err.downcast_ref::<Refused>().is_some(), "{err:#}");
        assert!(format!("{err:#}").contains("no such file"), "{err:#}");
        let seen = server.join().unwrap();
        assert_eq!(seen[0]["execute"], "guest-sync-delimited");
        assert_eq!(seen[1]["arguments"]["path"], "/bin/true");
    }

    #[test]
    fn an_agent_that_closes_is_said() {
        let (mut agent, server) = fake(vec![b"\xff{\"return\": ID}\n"]);
        server.join().unwrap();
        let err = agent.call("guest-ping", Value::Null).unwrap_err();
        assert!(format!("{err:#}").contains("stopped answering"), "{err:#}");
    }
}
