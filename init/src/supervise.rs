//! The app under init: started as the image's user, its signals forwarded, zombies reaped, its
//! end turned into the VM's end (or a restart).
use crate::config::{self, Config, Restart};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// How the app ended, as a shell (and `docker run`) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

impl Ended {
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => 128 + s,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Ended::Exited(c) => format!("the app exited with status {c}"),
            Ended::Signaled(s) => format!("the app was killed by signal {s} (status {})", 128 + s),
        }
    }
}

/// Signals init waits for: blocked in every thread (set before any thread starts) and taken
/// with sigtimedwait, since PID 1 gets no default action for any signal.
pub const FORWARDED: [i32; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD, libc::SIGPWR]) {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

pub fn block_signals() {
    let set = signal_set();
    // SAFETY: changes only this thread's mask; threads started later inherit it.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn wait_signal(timeout: Duration) -> Option<i32> {
    let set = signal_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: waits for one of the blocked signals in `set`.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

fn spawn(config: &Config) -> Result<u32, String> {
    let mut cmd = Command::new(&config.argv[0]);
    cmd.args(&config.argv[1..])
        .env_clear()
        .envs(config::environment(config))
        .current_dir(&config.workdir);
    let (uid, gid, groups) = (config.uid, config.gid, config.groups.clone());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The app starts with no signal blocked: init blocks the ones it waits for.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", config.argv[0]))?;
    Ok(child.id())
}

/// Reap every child that ended; the app's end, if it was among them.
fn reap(app: u32) -> Option<Ended> {
    let mut ended = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child, not blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return ended;
        }
        if pid as u32 == app {
            ended = Some(if libc::WIFSIGNALED(status) {
                Ended::Signaled(libc::WTERMSIG(status))
            } else {
                Ended::Exited(libc::WEXITSTATUS(status))
            });
        } else {
            // Maybe a process the guest agent started: its status goes back to the agent.
            crate::agent::reaped(pid, status);
        }
    }
}

/// Run the app until the VM should end; returns how it last ended.
pub fn run(config: &Config) -> Result<Ended, String> {
    let mut stopping: Option<Instant> = None;
    loop {
        let app = spawn(config)?;
        let ended = loop {
            let signal = wait_signal(Duration::from_millis(500));
            match signal {
                Some(libc::SIGCHLD) | None => {}
                Some(libc::SIGPWR) => {
                    if stopping.is_none() {
                        crate::system::say(&format!(
                            "power button: sending {} to the app, SIGKILL in {} s",
                            config.stop_signal, config.stop_timeout
                        ));
                        // SAFETY: kill on the app's pid.
                        unsafe { libc::kill(app as i32, config::stop_signal_number(config)) };
                        stopping = Some(Instant::now() + Duration::from_secs(config.stop_timeout));
                    }
                }
                Some(sig) => {
                    // SAFETY: forward to the app.
                    unsafe { libc::kill(app as i32, sig) };
                }
            }
            if let Some(ended) = reap(app) {
                break ended;
            }
            if stopping.is_some_and(|deadline| Instant::now() >= deadline) {
                // SAFETY: the app outlived its stop timeout.
                unsafe { libc::kill(app as i32, libc::SIGKILL) };
            }
        };
        let again = stopping.is_none()
            && match config.restart {
                Restart::No => false,
                Restart::OnFailure => ended != Ended::Exited(0),
                Restart::Always => true,
            };
        if !again {
            return Ok(ended);
        }
        crate::system::say(&format!("{}; restarting it", ended.describe()));
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_docker_run_reports_them() {
        assert_eq!(Ended::Exited(42).code(), 42);
        assert_eq!(Ended::Signaled(15).code(), 143);
        assert!(Ended::Exited(42).describe().contains("status 42"));
    }
}
