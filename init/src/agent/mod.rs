//! The guest agent: QEMU's guest agent protocol (QGA) on a virtio-serial port, so that c2vm
//! (and libvirt, Proxmox, any QGA client) can run commands and move files without a login.
//! It owns the transport (a stream of JSON requests, one JSON response per line) and the
//! dispatch of commands; processes live in exec.rs, files in files.rs, the machine's
//! description (OS, network) in info.rs.
//!
//! Two ways to run: `c2vm-init agent [PORT]` as a service of a systemd/OpenRC guest, and a
//! thread of c2vm-init as PID 1 (spawn_if_present). Neither ever exits on an error.
mod exec;
mod files;
mod info;

use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;

pub use exec::reaped;

/// The port's name as QEMU and libvirt give it (`-device virtserialport,name=...`).
const PORT_NAME: &str = "org.qemu.guest_agent.0";
/// Where udev links the port in a guest with udev.
const DEFAULT_PORT: &str = "/dev/virtio-ports/org.qemu.guest_agent.0";
/// c2vm's further channels, `org.c2vm.agent.1`…, served alike: QEMU lets one client at a time
/// on a port, and one `c2vm exec` may hold its channel for as long as its command runs.
const EXTRA_PORTS: &str = "org.c2vm.agent.";
/// A client sends 0xFF to reset the parser; guest-sync-delimited answers with one.
const DELIMITER: u8 = 0xFF;
/// Largest request kept: a guest-file-write of 48 MiB in base64, and some.
const MAX_REQUEST: usize = 80 << 20;

/// Who the agent serves, which decides how it shuts the machine down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// A thread of c2vm-init as PID 1: shut down as the power button does.
    Init,
    /// A service under another init: ask that init.
    Service,
}

/// The agent's state: processes it started, files it opened.
pub struct Agent {
    mode: Mode,
    procs: exec::Procs,
    files: files::Files,
}

/// Every command, and whether it answers on success.
const COMMANDS: &[(&str, bool)] = &[
    ("guest-sync-delimited", true),
    ("guest-sync", true),
    ("guest-ping", true),
    ("guest-info", true),
    ("guest-exec", true),
    ("guest-exec-status", true),
    ("guest-file-open", true),
    ("guest-file-read", true),
    ("guest-file-write", true),
    ("guest-file-close", true),
    ("guest-shutdown", false),
    ("guest-get-osinfo", true),
    ("guest-set-time", true),
    ("guest-network-get-interfaces", true),
    ("c2vm-exec", true),
    ("c2vm-exec-read", true),
    ("c2vm-exec-write", true),
    ("c2vm-exec-kill", true),
    ("c2vm-exec-resize", true),
    ("c2vm-stat", true),
    ("c2vm-mkdir", true),
    ("c2vm-symlink", true),
    ("c2vm-chmod", true),
];

/// A command's failure: QGA's error classes.
enum Failure {
    Generic(String),
    NotFound(String),
}

impl From<String> for Failure {
    fn from(desc: String) -> Self {
        Failure::Generic(desc)
    }
}

/// What a request gets back.
enum Outcome {
    Return(Value),
    /// guest-sync-delimited: a 0xFF byte before the response.
    Delimited(Value),
    /// guest-shutdown: nothing on success.
    Silent,
}

impl Agent {
    pub fn new(mode: Mode) -> Agent {
        Agent {
            mode,
            procs: exec::Procs::default(),
            files: files::Files::default(),
        }
    }

    /// The bytes to write back for one request (the JSON text of one value): empty when the
    /// command answers nothing.
    pub fn respond(&self, request: &[u8]) -> Vec<u8> {
        let (id, outcome) = match serde_json::from_slice::<Value>(request) {
            Ok(Value::Object(req)) => (req.get("id").cloned(), self.dispatch(&req)),
            Ok(_) => (
                None,
                Err(Failure::Generic("a request is a JSON object".into())),
            ),
            Err(e) => (None, Err(Failure::Generic(format!("invalid JSON: {e}")))),
        };
        let (mut body, delimited) = match outcome {
            Ok(Outcome::Return(v)) => (json!({ "return": v }), false),
            Ok(Outcome::Delimited(v)) => (json!({ "return": v }), true),
            Ok(Outcome::Silent) => return Vec::new(),
            Err(Failure::Generic(desc)) => (error("GenericError", &desc), false),
            Err(Failure::NotFound(desc)) => (error("CommandNotFound", &desc), false),
        };
        if let (Some(id), Value::Object(map)) = (id, &mut body) {
            map.insert("id".into(), id);
        }
        let mut out = Vec::new();
        if delimited {
            out.push(DELIMITER);
        }
        out.extend_from_slice(body.to_string().as_bytes());
        out.push(b'\n');
        out
    }

    fn dispatch(&self, req: &Map<String, Value>) -> Result<Outcome, Failure> {
        let name = req
            .get("execute")
            .or_else(|| req.get("exec-oob"))
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::Generic("a request names its command in 'execute'".into()))?;
        let empty = Map::new();
        let args = req
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let value = match name {
            "guest-sync-delimited" => return Ok(Outcome::Delimited(sync_id(args)?)),
            "guest-sync" => sync_id(args)?,
            "guest-ping" => json!({}),
            "guest-info" => guest_info(),
            "guest-shutdown" => {
                info::shutdown(self.mode, opt_str(args, "mode")?.unwrap_or("powerdown"))?;
                return Ok(Outcome::Silent);
            }
            "guest-get-osinfo" => info::osinfo(),
            "guest-set-time" => info::set_time(opt_int(args, "time")?)?,
            "guest-network-get-interfaces" => info::interfaces()?,
            "guest-exec" => self.procs.guest_exec(args)?,
            "guest-exec-status" => self.procs.guest_exec_status(args)?,
            "c2vm-exec" => self.procs.c2vm_exec(args)?,
            "c2vm-exec-read" => self.procs.read(args)?,
            "c2vm-exec-write" => self.procs.write(args)?,
            "c2vm-exec-kill" => self.procs.kill(args)?,
            "c2vm-exec-resize" => self.procs.resize(args)?,
            "guest-file-open" => self.files.open(args)?,
            "guest-file-read" => self.files.read(args)?,
            "guest-file-write" => self.files.write(args)?,
            "guest-file-close" => self.files.close(args)?,
            "c2vm-stat" => files::stat(args)?,
            "c2vm-mkdir" => files::mkdir(args)?,
            "c2vm-symlink" => files::symlink(args)?,
            "c2vm-chmod" => files::chmod(args)?,
            _ => {
                return Err(Failure::NotFound(format!(
                    "The command {name} has not been found"
                )))
            }
        };
        Ok(Outcome::Return(value))
    }
}

fn error(class: &str, desc: &str) -> Value {
    json!({ "error": { "class": class, "desc": desc } })
}

fn sync_id(args: &Map<String, Value>) -> Result<Value, String> {
    args.get("id")
        .filter(|v| v.is_number())
        .cloned()
        .ok_or_else(|| "guest-sync: missing integer 'id'".to_string())
}

fn guest_info() -> Value {
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(
            |(name, answers)| json!({ "name": name, "enabled": true, "success-response": answers }),
        )
        .collect();
    json!({
        "version": concat!("c2vm-init ", env!("CARGO_PKG_VERSION")),
        "supported_commands": commands,
    })
}

// Argument readers shared by exec.rs and files.rs: each error names the argument.

fn str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    opt_str(args, key)?.ok_or_else(|| format!("missing string argument '{key}'"))
}

fn opt_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("argument '{key}' must be a string")),
    }
}

fn int_arg(args: &Map<String, Value>, key: &str) -> Result<i64, String> {
    opt_int(args, key)?.ok_or_else(|| format!("missing integer argument '{key}'"))
}

fn opt_int(args: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("argument '{key}' must be an integer")),
    }
}

fn opt_bool(args: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("argument '{key}' must be a boolean")),
    }
}

fn str_list(args: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| format!("argument '{key}' must be a list of strings")),
        Some(_) => Err(format!("argument '{key}' must be a list of strings")),
    }
}

/// `PATH: reason`, the OS error without Rust's "(os error N)".
fn os_error(path: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    let reason = match text.rfind(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    format!("{path}: {reason}")
}

/// Splits the incoming bytes into requests: one JSON object each, balanced braces outside
/// strings. A 0xFF byte drops what was read so far (QGA's parser reset).
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Framer {
    fn reset(&mut self) {
        *self = Framer::default();
    }

    /// Feed one byte; a whole request when this byte ends one.
    fn feed(&mut self, b: u8) -> Option<Vec<u8>> {
        if b == DELIMITER {
            self.reset();
            return None;
        }
        // Between requests only '{' starts something; whitespace and stray bytes go.
        if self.depth == 0 && b != b'{' {
            return None;
        }
        self.buf.push(b);
        if self.buf.len() > MAX_REQUEST {
            eprintln!("c2vm-init agent: a request over {MAX_REQUEST} bytes, dropped");
            self.reset();
            return None;
        }
        if self.in_string {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.in_string = false,
                _ => {}
            }
            return None;
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    let request = std::mem::take(&mut self.buf);
                    self.reset();
                    return Some(request);
                }
            }
            _ => {}
        }
        None
    }
}

/// Serve one open port until it fails; EOF (no client) is waited out.
fn serve(agent: &Agent, port: &File) -> std::io::Error {
    let mut framer = Framer::default();
    let mut reader = port;
    let mut writer = port;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => {
                // No host side connected: the partial request, if any, is gone with it.
                framer.reset();
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        for &b in &chunk[..n] {
            if let Some(request) = framer.feed(b) {
                let response = agent.respond(&request);
                if !response.is_empty() {
                    if let Err(e) = writer.write_all(&response) {
                        eprintln!("c2vm-init agent: writing a response: {e}");
                    }
                }
            }
        }
    }
}

/// Open the port and serve it, reopening after a failure, forever. `path` None: the udev link,
/// else the device node found in sysfs (a guest with no udev, e.g. OpenRC with mdev).
fn serve_port(agent: &Agent, path: Option<&str>) -> ! {
    // Said once per different failure: a guest without the port would fill its log otherwise.
    let mut last_failure = String::new();
    loop {
        let device = match path {
            Some(p) => Some(p.to_string()),
            None if std::path::Path::new(DEFAULT_PORT).exists() => Some(DEFAULT_PORT.to_string()),
            None => find_port(),
        };
        let failure = match &device {
            None => format!("no virtio-serial port named {PORT_NAME}; waiting for one"),
            Some(device) => match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(device)
            {
                Ok(port) => {
                    last_failure.clear();
                    let e = serve(agent, &port);
                    format!("reading {device}: {e}; reopening")
                }
                Err(e) => format!("opening {device}: {e}"),
            },
        };
        if failure != last_failure {
            eprintln!("c2vm-init agent: {failure}");
            last_failure = failure;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `c2vm-init agent [PORT]`: the agent as a service of the guest's own init.
pub fn serve_forever(port: Option<String>) -> ! {
    let agent: &'static Agent = Box::leak(Box::new(Agent::new(Mode::Service)));
    spawn_extra_ports(agent);
    serve_port(agent, port.as_deref())
}

/// As PID 1: serve the agent's ports in threads when the hypervisor gave them. The device
/// nodes are /dev/vportNpM (devtmpfs; no udev for the /dev/virtio-ports links).
pub fn spawn_if_present() {
    let Some(device) = find_ports(|name| name == PORT_NAME).pop() else {
        return;
    };
    crate::system::say(&format!("guest agent on {device}"));
    let agent: &'static Agent = Box::leak(Box::new(Agent::new(Mode::Init)));
    spawn_extra_ports(agent);
    spawn_serving(agent, device);
}

/// A thread serving each of c2vm's further channels.
fn spawn_extra_ports(agent: &'static Agent) {
    for device in find_ports(|name| name.starts_with(EXTRA_PORTS)) {
        spawn_serving(agent, device);
    }
}

fn spawn_serving(agent: &'static Agent, device: String) {
    let spawned = std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || serve_port(agent, Some(&device)));
    if let Err(e) = spawned {
        eprintln!("c2vm-init agent: starting a thread: {e}");
    }
}

fn find_port() -> Option<String> {
    find_ports(|name| name == PORT_NAME).pop()
}

/// The device nodes of the virtio-serial ports whose names `wanted` takes.
fn find_ports(wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let Ok(ports) = std::fs::read_dir("/sys/class/virtio-ports") else {
        return Vec::new();
    };
    let mut found: Vec<String> = ports
        .flatten()
        .filter(|port| {
            let name = std::fs::read_to_string(port.path().join("name")).unwrap_or_default();
            wanted(name.trim())
        })
        .map(|port| format!("/dev/{}", port.file_name().to_string_lossy()))
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests;
