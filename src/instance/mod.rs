//! Named VMs that stay up: `c2vm run -d` starts one (`start`), and `exec`, `cp`, `wait`, `logs`,
//! `ps`, `stop` and `kill` drive it, `save` stops it into a file that `run -d --restore` starts
//! again (`saved`), through its guest agent (`agent`, QEMU's guest agent
//! protocol on a virtio-serial port) and QEMU's own socket (`qmp`). A VM's state is one private
//! directory (`state`).
mod agent;
mod copy;
pub mod exec;
pub mod options;
mod qmp;
pub mod saved;
pub mod start;
pub mod state;
mod wait;

pub use copy::cp;
pub use exec::exec;
pub use state::Instance;
pub use wait::wait;

use anyhow::{Context, Result};
use options::{KillArgs, LogsArgs, StopArgs};
use std::time::{Duration, Instant};

/// The guest's agent, answering on a channel no other c2vm command holds; or why not, in one
/// line. c2vm's own channels are tried before QGA's, which other QGA clients use too; when every
/// channel is held, this waits for one.
fn connect_agent(vm: &Instance) -> Result<agent::Agent> {
    let held = hold_a_channel(vm)?;
    let socket = vm.path(&state::channel(held.0).0);
    let agent = agent::Agent::connect(&socket, Duration::from_secs(10)).with_context(|| {
        format!(
            "the VM {} has no agent answering (a disk made by an older c2vm has none: `c2vm run --login USER --exec CMD` over the console still works)",
            vm.name
        )
    })?;
    Ok(agent.holding(held.1))
}

/// How long a command waits for a free channel.
const CHANNEL_WAIT: Duration = Duration::from_secs(600);

/// A channel's number and its lock, held until the file is closed.
fn hold_a_channel(vm: &Instance) -> Result<(usize, std::fs::File)> {
    // A VM started by an older c2vm has channel 0 only.
    let mut order: Vec<usize> = (1..state::CHANNELS)
        .chain([0])
        .filter(|n| vm.path(&state::channel(*n).0).exists())
        .collect();
    if order.is_empty() {
        // No socket at all: connecting says so.
        order.push(0);
    }
    let started = Instant::now();
    loop {
        for &n in &order {
            let path = vm.path(&state::channel(n).1);
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_ok()
            {
                return Ok((n, lock));
            }
        }
        crate::interrupt::check()?;
        if started.elapsed() > CHANNEL_WAIT {
            anyhow::bail!(
                "the VM {}'s {} agent channels stayed busy for {} s: end a command that holds one (an `exec` that runs on, a `wait`)",
                vm.name,
                order.len(),
                CHANNEL_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The directory `path` would be in (`.` for a bare name), which must exist: else `what_to_do`.
fn existing_parent<'a>(path: &'a std::path::Path, what_to_do: &str) -> Result<&'a std::path::Path> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!("{} does not exist: {what_to_do}", dir.display());
    }
    Ok(dir)
}

/// One request line of QGA or QMP: `{"execute": …, "arguments": …}` (none for `Null`).
fn request_line(command: &str, arguments: serde_json::Value) -> Result<Vec<u8>> {
    let mut request = serde_json::json!({ "execute": command });
    if arguments != serde_json::Value::Null {
        request["arguments"] = arguments;
    }
    let mut line = serde_json::to_vec(&request).context("encoding a request")?;
    line.push(b'\n');
    Ok(line)
}

/// `c2vm stop`: the power button, then QEMU killed after `--time`; nothing is left.
pub fn stop(args: &StopArgs) -> Result<()> {
    let vm = Instance::open(&args.name)?;
    shut_down(&vm, Duration::from_secs(args.time))?;
    vm.remove()
}

/// The power button, and QEMU killed if it is still there after `time`.
pub fn shut_down(vm: &Instance, time: Duration) -> Result<()> {
    if !vm.qemu_alive() {
        return Ok(());
    }
    let pressed = qmp::Qmp::connect(&vm.path(state::QMP))
        .and_then(|mut qmp| qmp.execute("system_powerdown", serde_json::Value::Null));
    if let Err(e) = pressed {
        log::info!("the power button: {e:#}");
    }
    let deadline = Instant::now() + time;
    while vm.qemu_alive() && Instant::now() < deadline {
        crate::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    if vm.qemu_alive() {
        crate::progress::note(&format!(
            "c2vm: {} did not power off within {} s: killing it",
            vm.name,
            time.as_secs()
        ));
        kill_qemu(vm)?;
    }
    Ok(())
}

/// `c2vm kill`: QEMU killed at once; nothing is left.
pub fn kill(args: &KillArgs) -> Result<()> {
    let vm = Instance::open(&args.name)?;
    kill_qemu(&vm)?;
    vm.remove()
}

/// SIGKILL, and wait until it is gone.
pub fn kill_qemu(vm: &Instance) -> Result<()> {
    let Some(pid) = vm.pid().filter(|_| vm.qemu_alive()) else {
        return Ok(());
    };
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).ok();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.qemu_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `c2vm ps`: every VM, running or not.
pub fn ps() -> Result<()> {
    let names = Instance::names()?;
    println!(
        "{:<20} {:<8} {:<6} {:>8}  DISK",
        "NAME", "STATUS", "ARCH", "UP"
    );
    let now = crate::units::unix_now();
    for name in names {
        let vm = Instance::open(&name)?;
        let record = vm.record()?;
        let status = match vm.qemu_alive() {
            true => "running",
            false => "exited",
        };
        let up = now.saturating_sub(record.started);
        println!(
            "{:<20} {:<8} {:<6} {:>7}s  {}",
            name, status, record.arch, up, record.disk
        );
    }
    Ok(())
}

/// `c2vm logs`: the console so far; with `-f`, then as it comes until the VM stops.
pub fn logs(args: &LogsArgs) -> Result<()> {
    use std::io::{Read, Seek, Write};
    let vm = Instance::open(&args.name)?;
    let path = vm.path(state::CONSOLE);
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n > 0 {
            out.write_all(&buf[..n])
                .and_then(|_| out.flush())
                .context("writing the console")?;
            continue;
        }
        if !args.follow || !vm.qemu_alive() || crate::interrupt::is_set() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        // The log is only appended to.
        file.stream_position().ok();
    }
}
