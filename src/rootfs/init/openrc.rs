//! Everything c2vm knows about OpenRC guests (Alpine): the app service is an init script under
//! supervise-daemon, started by a launcher that sets the image's environment.
use super::Service;
use crate::rootfs::tree::{GuestTree, Perms};
use anyhow::Result;
use std::fmt::Write as _;

const SCRIPT: &str = "/etc/init.d/c2vm-app";
const LAUNCHER: &str = "/usr/local/lib/c2vm/app-launch";

pub fn is_present(guest: &mut GuestTree) -> Result<bool> {
    guest.exists("/sbin/openrc-run")
}

/// Write the app's launcher and init script, and add it to the default runlevel.
pub fn install_app(guest: &mut GuestTree, service: &Service) -> Result<()> {
    guest.write(LAUNCHER, launcher(service).as_bytes(), Perms::root(0o755))?;
    guest.write(SCRIPT, script(service).as_bytes(), Perms::root(0o755))?;
    guest.symlink("/etc/runlevels/default/c2vm-app", SCRIPT)
}

fn sh_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// OpenRC runs a script, not an argv: this launcher sets the image's environment and working
/// directory and then execs exactly the image's argv.
fn launcher(service: &Service) -> String {
    let (argv, workdir) = (&service.argv, service.workdir.as_str());
    let mut script = String::from(
        "#!/bin/sh\n# The image's ENTRYPOINT + CMD, as `docker run` starts it; written by c2vm.\n",
    );
    for kv in &service.env {
        if let Some((key, value)) = kv.split_once('=') {
            if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                let _ = writeln!(script, "export {key}={}", sh_word(value));
            }
        }
    }
    let _ = writeln!(script, "cd {} || exit 1", sh_word(workdir));
    let words: Vec<String> = argv.iter().map(|a| sh_word(a)).collect();
    let _ = writeln!(script, "exec {}", words.join(" "));
    script
}

fn script(service: &Service) -> String {
    let user = &service.user;
    let who = match (&user.name, &user.group) {
        (Some(n), Some(g)) => format!("{n}:{g}"),
        (Some(n), None) => n.clone(),
        (None, _) => format!("{}:{}", user.uid, user.gid),
    };
    let mut script = format!(
        "#!/sbin/openrc-run\n\
         # The image's ENTRYPOINT + CMD, as `docker run` starts it; written by c2vm.\n\
         description=\"The container image's command (c2vm)\"\n\
         supervisor=supervise-daemon\n\
         command={LAUNCHER}\n\
         command_user={}\n\
         respawn_delay=2\n\
         respawn_max=0\n\
         output_logger=\"tee /dev/console | logger -t c2vm-app\"\n\
         error_logger=\"tee /dev/console | logger -t c2vm-app\"\n",
        sh_word(&who)
    );
    if !service.stop_signal.is_empty() {
        let _ = writeln!(
            script,
            "retry={}",
            sh_word(&format!(
                "{}/10/KILL/5",
                service.stop_signal.trim_start_matches("SIG")
            ))
        );
    }
    script.push_str("\ndepend() {\n\tneed net\n\tafter firstboot\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn openrc_launcher_quotes_for_sh() {
        let service = Service {
            argv: argv(&["/bin/echo", "it's", "$HOME"]),
            env: argv(&["A=b c", "BAD KEY=x"]),
            workdir: "/w d".into(),
            user: crate::rootfs::users::RunAs {
                name: None,
                uid: 0,
                group: None,
                gid: 0,
            },
            stop_signal: String::new(),
        };
        let script = launcher(&service);
        assert!(script.contains("export A='b c'\n"), "{script}");
        assert!(!script.contains("BAD KEY"), "{script}");
        assert!(script.contains("cd '/w d' || exit 1\n"), "{script}");
        assert!(
            script.contains("exec '/bin/echo' 'it'\\''s' '$HOME'\n"),
            "{script}"
        );
    }
}
