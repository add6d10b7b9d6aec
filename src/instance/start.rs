//! `c2vm run -d`: once QEMU runs in the background, wait until the guest's agent answers, and
//! fail fast, in one line with the console's last lines, when the guest cannot get there: QEMU
//! exits, the kernel panics, an emergency shell, Secure Boot refuses, the timeout. On any failure
//! or a signal, QEMU is killed and the VM's directory removed: nothing is left.
use super::{agent::Agent, state, Instance};
use anyhow::{bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// QEMU for `vm`, in its own session (a Ctrl-C at this terminal later is not QEMU's): `args`
/// (the machine, its disk and what the boot attaches), then its console to a log, its QMP and
/// agent sockets in the VM's directory, and `extra` (`-incoming` for a restore). Its program
/// and arguments are kept for `c2vm save`.
pub fn spawn(vm: &Instance, binary: &str, args: &[String], extra: &[String]) -> Result<Child> {
    let path = |file: &str| escape(&vm.path(file).to_string_lossy());
    let command = serde_json::json!({"binary": binary, "args": args});
    std::fs::write(vm.path(state::COMMAND), command.to_string())
        .with_context(|| format!("writing {}", vm.path(state::COMMAND).display()))?;
    let log = std::fs::File::create(vm.path(state::QEMU_LOG))
        .with_context(|| format!("creating {}", vm.path(state::QEMU_LOG).display()))?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .args(["-display", "none", "-monitor", "none"])
        .args([
            "-chardev",
            &format!(
                "socket,id=c2vm_console,path={},server=on,wait=off,logfile={}",
                path(state::CONSOLE_SOCKET),
                path(state::CONSOLE)
            ),
            "-serial",
            "chardev:c2vm_console",
        ])
        .args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", path(state::QMP)),
        ])
        .args(["-device", "virtio-serial-pci,id=c2vm_serial"]);
    for n in 0..state::CHANNELS {
        // Channel 0 has QGA's usual port name: libvirt, Proxmox and KubeVirt use the same.
        let name = match n {
            0 => "org.qemu.guest_agent.0".to_string(),
            n => format!("org.c2vm.agent.{n}"),
        };
        let socket = path(&state::channel(n).0);
        cmd.args([
            "-chardev".to_string(),
            format!("socket,id=c2vm_agent{n},path={socket},server=on,wait=off"),
            "-device".to_string(),
            format!("virtserialport,bus=c2vm_serial.0,chardev=c2vm_agent{n},name={name}"),
        ]);
    }
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    log::debug!("running: {binary} {}", args.join(" "));
    let child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
    vm.write_pid(child.id())?;
    Ok(child)
}

/// A path in QEMU's comma-separated options (as `run::qemu_args::qemu_escape`).
fn escape(path: &str) -> String {
    path.replace(',', ",,")
}

/// What on the console means the guest will never answer (or come up at all).
pub const FATAL: &[(&str, &str)] = &[
    ("Kernel panic", "the kernel panicked"),
    (
        "You are in emergency mode",
        "the guest is in systemd's emergency mode",
    ),
    (
        "Give root password for maintenance",
        "the guest stopped at a maintenance shell",
    ),
    (
        "(initramfs)",
        "the guest stopped at the initramfs's shell: its root could not be found or mounted (the console's last lines say why)",
    ),
];
/// An encrypted root's prompt, fatal when no [`ConsoleAnswer`] types at it.
const PASSPHRASE_PROMPT: &str = "Please unlock disk";

/// What answers the console while the VM comes up (an encrypted root's passphrase): given what
/// the guest wrote since the last call, the keys to type, if any; an error ends the wait.
pub trait ConsoleAnswer {
    fn feed(&mut self, output: &[u8]) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>>;
}
/// What Secure Boot's refusal looks like (OVMF, shim, systemd-boot).
const REFUSED: &[&str] = &["Access Denied", "Security Violation", "Security violation"];

/// Removes a VM that did not come up: QEMU killed, its directory gone.
struct Discard<'a> {
    vm: &'a Instance,
    child: Child,
    keep: bool,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.child.kill().ok();
            self.child.wait().ok();
            self.vm.remove().ok();
        }
    }
}

/// Wait for the agent of the VM that `child` (QEMU) runs; `secure_boot`: a refusal on the
/// console ends the wait.
pub fn wait_ready(
    vm: &Instance,
    child: Child,
    timeout: Duration,
    secure_boot: bool,
    answer: Option<&mut dyn ConsoleAnswer>,
) -> Result<()> {
    let mut discard = Discard {
        vm,
        child,
        keep: false,
    };
    let mut console = answer.map(|a| (a, None::<UnixStream>));
    let started = Instant::now();
    // A guest at its login prompt has finished booting: an agent that has not answered a
    // while later is not there.
    let mut at_login: Option<Instant> = None;
    loop {
        crate::interrupt::check()?;
        if let Some(status) = discard.child.try_wait()? {
            let qemu = std::fs::read_to_string(vm.path(state::QEMU_LOG)).unwrap_or_default();
            let qemu = qemu.lines().last().unwrap_or("").trim().to_string();
            bail!(
                "QEMU exited ({status}) before the guest's agent answered{}{}",
                match qemu.is_empty() {
                    true => String::new(),
                    false => format!(": {qemu}"),
                },
                vm.console_tail(5)
            );
        }
        if let Some((answer, socket)) = &mut console {
            answer_console(vm, &mut **answer, socket)?;
        }
        check_console(vm, secure_boot, console.is_none())?;
        // Each try gives the agent a few seconds: a guest still booting does not answer.
        if Agent::connect(&vm.path(state::AGENT), Duration::from_secs(3)).is_ok() {
            discard.keep = true;
            return Ok(());
        }
        if at_login.is_none() && console_shows(vm, "login: ") {
            at_login = Some(Instant::now());
        }
        if at_login.is_some_and(|t| t.elapsed() >= AFTER_LOGIN) {
            bail!(
                "the guest reached its login prompt but no agent answered within {} s: a disk made by an older c2vm has none (`c2vm run --login USER --exec CMD` works over the console){}",
                AFTER_LOGIN.as_secs(),
                vm.console_tail(3)
            );
        }
        if started.elapsed() >= timeout {
            bail!(
                "the guest's agent did not answer within {} s (a disk made by an older c2vm has none: `c2vm run --login USER --exec CMD` over the console still works){}",
                timeout.as_secs(),
                vm.console_tail(5)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the guest wrote to the console since the last call, fed to `answer`, and its keys typed:
/// through the console's socket, connected at the first call.
fn answer_console(
    vm: &Instance,
    answer: &mut dyn ConsoleAnswer,
    socket: &mut Option<UnixStream>,
) -> Result<()> {
    use std::io::{Read, Write};
    if socket.is_none() {
        // QEMU makes it as it starts: not there yet, the next round tries again.
        let Ok(stream) = UnixStream::connect(vm.path(state::CONSOLE_SOCKET)) else {
            return Ok(());
        };
        stream
            .set_nonblocking(true)
            .context("reading the console's socket")?;
        *socket = Some(stream);
    }
    let Some(stream) = socket else {
        return Ok(());
    };
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some(keys) = answer.feed(&buf[..n])? {
                    stream.set_nonblocking(false).ok();
                    stream
                        .write_all(&keys)
                        .context("typing at the guest's console")?;
                    stream.set_nonblocking(true).ok();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e).context("reading the guest's console"),
        }
    }
}

/// How long the agent may take once the login prompt is up (udev starts it at the port's
/// appearance, well before the prompt; under TCG a loaded host can lag).
const AFTER_LOGIN: Duration = Duration::from_secs(45);

fn console_shows(vm: &Instance, text: &str) -> bool {
    let log = std::fs::read(vm.path(state::CONSOLE)).unwrap_or_default();
    String::from_utf8_lossy(&log).contains(text)
}

fn check_console(vm: &Instance, secure_boot: bool, nobody_types: bool) -> Result<()> {
    let text = std::fs::read(vm.path(state::CONSOLE)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    for (mark, what) in FATAL {
        if text.contains(mark) {
            bail!("{what}{}", vm.console_tail(5));
        }
    }
    if nobody_types && text.contains(PASSPHRASE_PROMPT) {
        bail!(
            "the guest asks for its encrypted root's passphrase: give it with --luks-passphrase-file{}",
            vm.console_tail(3)
        );
    }
    if secure_boot && REFUSED.iter().any(|mark| text.contains(mark)) {
        bail!("Secure Boot refused to boot the disk{}", vm.console_tail(5));
    }
    Ok(())
}
