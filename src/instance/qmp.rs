//! QEMU's machine protocol (QMP) on a VM's socket: the power button, saving and restoring. One JSON
//! object each way after a greeting, as the agent's: a few lines, not the `qapi` crate's whole
//! generated schema (see `agent`).
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect, read QEMU's greeting and leave capabilities negotiation.
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let writer = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QEMU's {}", socket.display()))?;
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .context("setting QMP's timeout")?;
        let reader = BufReader::new(writer.try_clone().context("cloning QMP's socket")?);
        let mut qmp = Qmp { reader, writer };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("QEMU's {} did not greet as QMP does", socket.display());
        }
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("reading from QEMU's QMP socket")?;
        if n == 0 {
            bail!("QEMU closed its QMP socket");
        }
        serde_json::from_str(&line).with_context(|| format!("reading QMP's {line:?}"))
    }

    /// Run `command` with `arguments` (`Value::Null` for none); its `return`, skipping the
    /// events QEMU sends between.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = super::request_line(command, arguments)?;
        self.writer
            .write_all(&request)
            .with_context(|| format!("sending QMP's {command}"))?;
        loop {
            let mut answer = self.read()?;
            if answer.get("event").is_some() {
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(anyhow!("QEMU refused {command}: {}", error["desc"]));
            }
            return Ok(answer["return"].take());
        }
    }
}
