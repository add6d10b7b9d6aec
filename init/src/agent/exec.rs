//! Processes the agent starts: QGA's guest-exec (output collected whole, read at the end) and
//! c2vm's streaming c2vm-exec (output read while the process runs, in bounded buffers that block
//! the process when full, so the agent's memory does not grow with the output).
//!
//! With a terminal (`"tty"`), the process gets a pseudo-terminal as its controlling terminal:
//! its output is one stream, what c2vm writes is typed at it, and `c2vm-exec-resize` gives it
//! the host terminal's size.
//!
//! As PID 1, c2vm-init's own loop reaps every child (waitpid(-1)); the status of one of ours is
//! handed back through `reaped`, so no exit is lost to that race.
use super::{int_arg, opt_bool, opt_int, opt_str, str_arg, str_list};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// guest-exec keeps at most this much of each stream (QGA's limit), the rest is dropped.
const CAPTURE_CAP: usize = 16 << 20;
/// c2vm-exec buffers at most this much of each stream before the process blocks.
pub(super) const STREAM_CAP: usize = 1 << 20;
/// c2vm-exec-read waits at most this long.
const MAX_WAIT_MS: i64 = 5000;
/// How long c2vm-exec-read waits for more output once some came.
const LINGER: Duration = Duration::from_millis(20);
/// docker's PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Our children not yet waited for, with the raw status when PID 1's loop reaped one first.
static CHILDREN: Mutex<BTreeMap<i32, Option<i32>>> = Mutex::new(BTreeMap::new());
static CHILDREN_CHANGED: Condvar = Condvar::new();

/// Called by PID 1's reaping loop for every child that is not the app: keeps the status of the
/// agent's own (other orphans are not remembered).
pub fn reaped(pid: i32, status: i32) {
    let mut children = lock(&CHILDREN);
    if let Some(slot) = children.get_mut(&pid) {
        *slot = Some(status);
        CHILDREN_CHANGED.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    fn from_raw(raw: i32) -> Status {
        if libc::WIFSIGNALED(raw) {
            Status::Signaled(libc::WTERMSIG(raw))
        } else {
            Status::Exited(libc::WEXITSTATUS(raw))
        }
    }

    fn put(self, map: &mut Map<String, Value>) {
        match self {
            Status::Exited(c) => map.insert("exitcode".into(), c.into()),
            Status::Signaled(s) => map.insert("signal".into(), s.into()),
        };
    }
}

#[derive(Default)]
struct Stream {
    data: Vec<u8>,
    eof: bool,
    truncated: bool,
}

#[derive(Default)]
struct State {
    out: Stream,
    err: Stream,
    status: Option<Status>,
}

impl State {
    fn buffered(&self) -> usize {
        self.out.data.len() + self.err.data.len()
    }

    /// Reaped, and nothing more can come from its pipes.
    fn finished(&self) -> bool {
        self.status.is_some() && self.out.eof && self.err.eof
    }
}

struct Proc {
    state: Mutex<State>,
    /// Signalled on new output, on room made by a read, on the exit.
    changed: Condvar,
    /// c2vm-exec: a full buffer blocks its reader; guest-exec: the excess is dropped.
    blocking: bool,
    cap: usize,
    captured: bool,
    /// Where c2vm-exec-write writes: the pipe to its stdin, or its terminal.
    stdin: Mutex<Option<File>>,
    /// The terminal's controlling side, when it has one.
    tty: Option<File>,
}

/// The processes started and not yet forgotten, by pid.
#[derive(Default)]
pub struct Procs {
    map: Mutex<HashMap<i32, Arc<Proc>>>,
}

impl Procs {
    /// guest-exec {"path", "arg"?, "env"?, "input-data"?, "capture-output"?} → {"pid"}.
    pub fn guest_exec(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let path = str_arg(args, "path")?;
        let mut cmd = Command::new(path);
        cmd.args(str_list(args, "arg")?.unwrap_or_default());
        match str_list(args, "env")? {
            Some(env) => {
                cmd.env_clear();
                set_env(&mut cmd, &env)?;
            }
            // PID 1 may have been given no PATH by the kernel.
            None if std::env::var_os("PATH").is_none() => {
                cmd.env("PATH", DEFAULT_PATH);
            }
            None => {}
        }
        let input = match opt_str(args, "input-data")? {
            Some(b64) => Some(
                B64.decode(b64)
                    .map_err(|e| format!("guest-exec: input-data: {e}"))?,
            ),
            None => None,
        };
        let captured = match args.get("capture-output") {
            Some(Value::String(how)) => how != "none",
            _ => opt_bool(args, "capture-output")?,
        };
        reset_signals(&mut cmd, None);
        let proc = Proc::new(false, CAPTURE_CAP, captured);
        let pid = self
            .start(cmd, proc, input.is_some(), None)
            .map_err(|e| super::os_error(&format!("guest-exec: {path}"), &e))?;
        if let Some(input) = input {
            let proc = self.get(pid)?;
            let stdin = lock(&proc.stdin).take();
            // A thread, so a process that reads its input late cannot block the agent.
            std::thread::spawn(move || {
                if let Some(mut stdin) = stdin {
                    let _ = stdin.write_all(&input);
                }
            });
        }
        Ok(json!({ "pid": pid }))
    }

    /// guest-exec-status {"pid"} → {"exited": false} or {"exited": true, "exitcode"|"signal",
    /// "out-data"?, "err-data"?, "out-truncated"?, "err-truncated"?}.
    pub fn guest_exec_status(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let pid = pid_arg(args)?;
        let proc = self.get(pid)?;
        let mut state = lock(&proc.state);
        if !state.finished() {
            return Ok(json!({ "exited": false }));
        }
        let mut reply = Map::new();
        reply.insert("exited".into(), true.into());
        if let Some(status) = state.status {
            status.put(&mut reply);
        }
        if proc.captured {
            let state = &mut *state;
            for (key, stream) in [("out", &mut state.out), ("err", &mut state.err)] {
                let data = std::mem::take(&mut stream.data);
                reply.insert(format!("{key}-data"), B64.encode(data).into());
                if stream.truncated {
                    reply.insert(format!("{key}-truncated"), true.into());
                }
            }
        }
        drop(state);
        lock(&self.map).remove(&pid);
        Ok(Value::Object(reply))
    }

    /// c2vm-exec {"path", "arg"?, "env"?, "user"?, "workdir"?, "stdin"?, "tty"?: {"rows",
    /// "cols"}} → {"pid"}.
    pub fn c2vm_exec(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let path = str_arg(args, "path")?;
        let user = opt_str(args, "user")?.map(User::lookup).transpose()?;
        // Without a user, the agent's own (root): HOME is root's, as docker exec gives.
        let home = match &user {
            Some(u) => u.home.clone(),
            None => User::lookup("0").map_or_else(|_| "/".to_string(), |u| u.home),
        };
        let mut cmd = Command::new(path);
        cmd.args(str_list(args, "arg")?.unwrap_or_default())
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", &home)
            .env("TERM", "dumb");
        set_env(&mut cmd, &str_list(args, "env")?.unwrap_or_default())?;
        let workdir = opt_str(args, "workdir")?.unwrap_or("/");
        // Checked here: a missing directory would read as a missing program after spawn.
        if !std::path::Path::new(workdir).is_dir() {
            return Err(format!("c2vm-exec: workdir {workdir}: not a directory"));
        }
        cmd.current_dir(workdir);
        reset_signals(&mut cmd, user);
        let stdin = opt_bool(args, "stdin")?;
        let tty = match args.get("tty") {
            None | Some(Value::Null) => None,
            Some(Value::Object(size)) => Some(
                Pty::open(window(size)?)
                    .map_err(|e| super::os_error("c2vm-exec: a terminal", &e))?,
            ),
            Some(_) => return Err("argument 'tty' must be an object {rows, cols}".into()),
        };
        let pid = self
            .start(cmd, Proc::new(true, STREAM_CAP, true), stdin, tty)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("c2vm-exec: {path}: not found"),
                _ => super::os_error(&format!("c2vm-exec: {path}"), &e),
            })?;
        Ok(json!({ "pid": pid }))
    }

    /// c2vm-exec-read {"pid", "wait-ms"?} → {"out-data", "err-data", "exited", "exitcode"?,
    /// "signal"?}: what was buffered, which is then cleared.
    pub fn read(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let pid = pid_arg(args)?;
        let wait = opt_int(args, "wait-ms")?.unwrap_or(0).clamp(0, MAX_WAIT_MS);
        let proc = self.get(pid)?;
        let mut deadline = Instant::now() + Duration::from_millis(wait as u64);
        let mut state = lock(&proc.state);
        let had_data = state.buffered() > 0;
        // Wait for the first output; then a little more for what follows it, so that a fast
        // writer's output comes in large replies, not one per pipe read.
        let mut lingering = false;
        while !had_data && !state.finished() && (!lingering || state.buffered() < STREAM_CAP / 2) {
            let now = Instant::now();
            if !lingering && state.buffered() > 0 {
                lingering = true;
                deadline = deadline.min(now + LINGER);
            }
            if now >= deadline {
                break;
            }
            state = proc
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let out = std::mem::take(&mut state.out.data);
        let err = std::mem::take(&mut state.err.data);
        let exited = state.finished();
        let mut reply = Map::new();
        reply.insert("out-data".into(), B64.encode(out).into());
        reply.insert("err-data".into(), B64.encode(err).into());
        reply.insert("exited".into(), exited.into());
        if exited {
            if let Some(status) = state.status {
                status.put(&mut reply);
            }
        }
        drop(state);
        // Room for the readers blocked on a full buffer.
        proc.changed.notify_all();
        if exited {
            lock(&self.map).remove(&pid);
        }
        Ok(Value::Object(reply))
    }

    /// c2vm-exec-write {"pid", "data"?, "eof"?} → {}.
    pub fn write(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let pid = pid_arg(args)?;
        let data = match opt_str(args, "data")? {
            Some(b64) => B64
                .decode(b64)
                .map_err(|e| format!("c2vm-exec-write: data: {e}"))?,
            None => Vec::new(),
        };
        let proc = self.get(pid)?;
        let mut stdin = lock(&proc.stdin);
        if !data.is_empty() {
            let pipe = stdin
                .as_mut()
                .ok_or_else(|| format!("c2vm-exec-write: the input of process {pid} is closed"))?;
            pipe.write_all(&data)
                .map_err(|e| format!("c2vm-exec-write: process {pid}: {e}"))?;
        }
        if opt_bool(args, "eof")? {
            match (&proc.tty, stdin.as_mut()) {
                // A terminal is not closed at the end of the input, or the process would be
                // hung up: the end-of-file character is typed, as a person would.
                (Some(_), Some(pty)) => pty
                    .write_all(&[4])
                    .map_err(|e| format!("c2vm-exec-write: process {pid}: {e}"))?,
                _ => drop(stdin.take()),
            }
        }
        Ok(json!({}))
    }

    /// c2vm-exec-resize {"pid", "rows", "cols"} → {}: the size of its terminal.
    pub fn resize(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let pid = pid_arg(args)?;
        let proc = self.get(pid)?;
        let tty = proc
            .tty
            .as_ref()
            .ok_or_else(|| format!("c2vm-exec-resize: process {pid} has no terminal"))?;
        set_window(tty, window(args)?).map_err(|e| format!("c2vm-exec-resize: {e}"))?;
        Ok(json!({}))
    }

    /// c2vm-exec-kill {"pid", "signal"} → {}: only processes the agent started.
    pub fn kill(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let pid = pid_arg(args)?;
        let signal = int_arg(args, "signal")?;
        self.get(pid)?;
        // SAFETY: a signal to a child of ours that was not yet forgotten.
        if unsafe { libc::kill(pid, signal as i32) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(super::os_error(&format!("c2vm-exec-kill {pid}"), &e));
        }
        Ok(json!({}))
    }

    fn get(&self, pid: i32) -> Result<Arc<Proc>, String> {
        lock(&self.map)
            .get(&pid)
            .cloned()
            .ok_or_else(|| format!("no process {pid} started by the agent"))
    }

    /// Spawn, with the pipes asked for, and start the threads that read them and wait for it.
    fn start(
        &self,
        mut cmd: Command,
        mut proc: Proc,
        stdin: bool,
        tty: Option<Pty>,
    ) -> std::io::Result<i32> {
        let mut output: Option<File> = None;
        if let Some(pty) = tty {
            // Its stdin, stdout and stderr are the terminal; a session of its own, whose
            // controlling terminal it is (so ^C at the host's terminal reaches it).
            cmd.stdin(Stdio::from(pty.user.try_clone()?))
                .stdout(Stdio::from(pty.user.try_clone()?))
                .stderr(Stdio::from(pty.user));
            // SAFETY: async-signal-safe calls only, between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            output = Some(pty.control.try_clone()?);
            *lock(&proc.stdin) = Some(pty.control.try_clone()?);
            proc.tty = Some(pty.control);
        } else {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
            let piped = || {
                if proc.captured {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            cmd.stdout(piped()).stderr(piped());
        }
        let mut child = {
            // Registered under the lock, so PID 1's reaper cannot miss it however fast it ends.
            let mut children = lock(&CHILDREN);
            let child = cmd.spawn()?;
            children.insert(child.id() as i32, None);
            child
        };
        // The terminal's other side is the child's alone now: its end is the output's end.
        drop(cmd);
        let pid = child.id() as i32;
        if let Some(pipe) = child.stdin.take() {
            *lock(&proc.stdin) = Some(File::from(OwnedFd::from(pipe)));
        }
        {
            let mut state = lock(&proc.state);
            state.out.eof = !proc.captured;
            state.err.eof = !proc.captured || output.is_some();
        }
        let proc = Arc::new(proc);
        if let Some(out) = output {
            let p = proc.clone();
            std::thread::spawn(move || pump(&p, out, |s| &mut s.out));
        }
        if let Some(out) = child.stdout.take() {
            let p = proc.clone();
            std::thread::spawn(move || pump(&p, out, |s| &mut s.out));
        }
        if let Some(err) = child.stderr.take() {
            let p = proc.clone();
            std::thread::spawn(move || pump(&p, err, |s| &mut s.err));
        }
        let p = proc.clone();
        std::thread::spawn(move || {
            let status = wait(child);
            lock(&p.state).status = Some(status);
            p.changed.notify_all();
        });
        lock(&self.map).insert(pid, proc);
        Ok(pid)
    }
}

impl Proc {
    fn new(blocking: bool, cap: usize, captured: bool) -> Proc {
        Proc {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            blocking,
            cap,
            captured,
            stdin: Mutex::new(None),
            tty: None,
        }
    }

    /// Bytes buffered now, both streams (for tests of the bound).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        lock(&self.state).buffered()
    }
}

#[cfg(test)]
impl Procs {
    pub(super) fn buffered(&self, pid: i32) -> usize {
        self.get(pid).map_or(0, |p| p.buffered())
    }
}

fn pid_arg(args: &Map<String, Value>) -> Result<i32, String> {
    i32::try_from(int_arg(args, "pid")?).map_err(|_| "argument 'pid' out of range".to_string())
}

/// A pseudo-terminal: the side the process uses, and the side the agent reads and writes.
struct Pty {
    control: File,
    user: File,
}

impl Pty {
    fn open(size: libc::winsize) -> std::io::Result<Pty> {
        let (mut control, mut user) = (-1, -1);
        // SAFETY: openpty writes two descriptors, which are then owned here.
        let done = unsafe {
            libc::openpty(
                &mut control,
                &mut user,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        if done != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors nothing else owns.
        let (control, user) = unsafe { (File::from_raw_fd(control), File::from_raw_fd(user)) };
        // Not inherited by other processes the agent starts.
        for fd in [&control, &user] {
            // SAFETY: a flag on a descriptor this function owns.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(Pty { control, user })
    }
}

/// {"rows", "cols"} as a window size.
fn window(args: &Map<String, Value>) -> Result<libc::winsize, String> {
    let side = |key| {
        u16::try_from(int_arg(args, key)?).map_err(|_| format!("argument '{key}' out of range"))
    };
    Ok(libc::winsize {
        ws_row: side("rows")?,
        ws_col: side("cols")?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

fn set_window(tty: &File, size: libc::winsize) -> std::io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_env(cmd: &mut Command, env: &[String]) -> Result<(), String> {
    for kv in env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("environment entry {kv:?} is not K=V"))?;
        cmd.env(k, v);
    }
    Ok(())
}

/// In the child: no signal blocked (PID 1 blocks the ones it waits for), and the user's
/// identity when one was asked for.
fn reset_signals(cmd: &mut Command, user: Option<User>) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if let Some(u) = &user {
                if libc::setgroups(u.groups.len(), u.groups.as_ptr()) != 0
                    || libc::setgid(u.gid) != 0
                    || libc::setuid(u.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Read a pipe into its buffer until EOF, waiting for room when the buffer blocks.
fn pump(proc: &Proc, mut pipe: impl Read, stream: fn(&mut State) -> &mut Stream) {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let room = if proc.blocking {
            let mut state = lock(&proc.state);
            while stream(&mut state).data.len() >= proc.cap {
                state = proc.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            proc.cap - stream(&mut state).data.len()
        } else {
            chunk.len()
        };
        let want = room.min(chunk.len());
        let n = match pipe.read(&mut chunk[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        let mut state = lock(&proc.state);
        let s = stream(&mut state);
        if n == 0 {
            s.eof = true;
            drop(state);
            proc.changed.notify_all();
            return;
        }
        let keep = n.min(proc.cap.saturating_sub(s.data.len()));
        s.data.extend_from_slice(&chunk[..keep]);
        s.truncated |= keep < n;
        drop(state);
        proc.changed.notify_all();
    }
}

/// The child's end, from its own waitpid or, when PID 1's loop reaped it first, from `reaped`.
fn wait(mut child: Child) -> Status {
    let pid = child.id() as i32;
    let status = match child.wait() {
        Ok(s) => match s.signal() {
            Some(sig) => Status::Signaled(sig),
            None => Status::Exited(s.code().unwrap_or(0)),
        },
        Err(_) => {
            let mut children = lock(&CHILDREN);
            loop {
                if let Some(Some(raw)) = children.get(&pid) {
                    break Status::from_raw(*raw);
                }
                children = CHILDREN_CHANGED
                    .wait(children)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    };
    lock(&CHILDREN).remove(&pid);
    status
}

/// Who c2vm-exec runs as: "name", "uid", "name:group" or "uid:gid", from the guest's
/// /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    home: String,
}

impl User {
    fn lookup(spec: &str) -> Result<User, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        User::from_files(spec, &passwd, &group)
    }

    pub(super) fn from_files(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
        let (user, wanted_group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 6 && (f[0] == user || f[2] == user));
        let uid = match &entry {
            Some(f) => f[2].parse().ok(),
            None => user.parse().ok(),
        }
        .ok_or_else(|| format!("c2vm-exec: user {user}: not found in /etc/passwd"))?;
        let groups: Vec<Vec<&str>> = group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4)
            .collect();
        let mut gid = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0);
        let mut supplementary: Vec<u32> = Vec::new();
        if let Some(g) = wanted_group {
            gid = groups
                .iter()
                .find(|f| f[0] == g || f[2] == g)
                .and_then(|f| f[2].parse().ok())
                .or_else(|| g.parse().ok())
                .ok_or_else(|| format!("c2vm-exec: group {g}: not found in /etc/group"))?;
        } else if let Some(name) = entry.as_ref().map(|f| f[0]) {
            supplementary = groups
                .iter()
                .filter(|f| f[3].split(',').any(|m| m == name))
                .filter_map(|f| f[2].parse().ok())
                .collect();
        }
        let mut all = vec![gid];
        all.extend(supplementary.into_iter().filter(|g| *g != gid));
        Ok(User {
            uid,
            gid,
            groups: all,
            home: entry.map_or("/".to_string(), |f| f[5].to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reaped_by_pid_1_comes_back_to_the_agent() {
        let child = {
            let mut children = lock(&CHILDREN);
            let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
            children.insert(child.id() as i32, None);
            child
        };
        let pid = child.id() as i32;
        // As PID 1's loop would: take the status before the agent waits for it.
        let mut raw = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut raw, 0) }, pid);
        reaped(pid, raw);
        assert_eq!(wait(child), Status::Exited(7));
        assert!(!lock(&CHILDREN).contains_key(&pid));
        // Orphans PID 1 reaps are not remembered.
        reaped(999_999, 0);
        assert!(!lock(&CHILDREN).contains_key(&999_999));
    }
}
