//! The image's own process as a boot service, so the VM does what `docker run IMAGE` does:
//! ENTRYPOINT + CMD run at boot with the image's Env, WorkingDir and User, restarted on failure,
//! their output in the journal and on the serial console, started once the network is up.
//! systemd guests get `c2vm-app.service`; Alpine (OpenRC) gets `/etc/init.d/c2vm-app`.
use super::guest::{GuestRoot, Perms};
use crate::source::docker::ImageDetails;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;

pub const SYSTEMD_UNIT: &str = "c2vm-app.service";
const SYSTEMD_UNIT_PATH: &str = "/etc/systemd/system/c2vm-app.service";
const OPENRC_SCRIPT: &str = "/etc/init.d/c2vm-app";
const OPENRC_LAUNCHER: &str = "/usr/local/lib/c2vm/app-launch";

/// What the image's config says about its process and storage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The process to run at boot, if the app service is wanted.
    pub app: Option<AppSpec>,
    /// EXPOSE, as docker writes it: `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// VOLUME directories.
    pub volumes: Vec<String>,
}

/// The image's process, as `docker run` would start it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSpec {
    /// ENTRYPOINT followed by CMD.
    pub argv: Vec<String>,
    /// `KEY=VALUE`, in the image's order.
    pub env: Vec<String>,
    /// USER as written in the image: `name`, `uid`, `name:group`, `uid:gid`, or empty for root.
    pub user: String,
    /// WORKDIR; empty means `/`.
    pub working_dir: String,
    /// STOPSIGNAL; empty means SIGTERM.
    pub stop_signal: String,
}

/// `--app` / `--no-app` / neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppChoice {
    Auto,
    On,
    Off,
}

/// Commands that are an interactive shell or an init, not an application: `debian` (`bash`),
/// `alpine` (`/bin/sh`), an image whose CMD boots systemd. The VM's own login covers these.
fn is_shell_or_init(argv: &[String]) -> bool {
    const SHELLS_AND_INITS: &[&str] = &[
        "sh", "bash", "ash", "dash", "zsh", "fish", "busybox", "init", "systemd",
    ];
    match argv {
        [] => true,
        [only] => {
            let name = only.rsplit('/').next().unwrap_or(only);
            SHELLS_AND_INITS.contains(&name)
        }
        // `bash -l`, `sh -i`: still just a shell.
        [shell, flag] if flag.starts_with('-') && !flag.contains('c') => {
            is_shell_or_init(std::slice::from_ref(shell))
        }
        _ => false,
    }
}

impl ImageConfig {
    pub fn from_image(image: &ImageDetails, choice: AppChoice) -> Result<ImageConfig> {
        let argv: Vec<String> = image
            .entrypoint
            .iter()
            .chain(image.cmd.iter())
            .cloned()
            .collect();
        let wanted = match choice {
            AppChoice::Off => false,
            AppChoice::On => {
                if argv.is_empty() {
                    bail!("--app: the image has no ENTRYPOINT or CMD to run; drop --app, or set CMD in the image");
                }
                true
            }
            AppChoice::Auto => !is_shell_or_init(&argv),
        };
        let app = wanted.then(|| AppSpec {
            argv,
            env: image.env.clone(),
            user: image.user.clone(),
            working_dir: image.working_dir.clone(),
            stop_signal: image.stop_signal.clone(),
        });
        Ok(ImageConfig {
            app,
            exposed_ports: image.exposed_ports.clone(),
            volumes: image.volumes.clone(),
        })
    }
}

/// Put the image's volumes and process into the guest. Returns the units of the image's own
/// that were disabled because they start the same program.
pub fn install(guest: &GuestRoot, config: &ImageConfig) -> Result<Vec<String>> {
    for volume in &config.volumes {
        // A volume the image already has keeps its owner and mode, as docker shows it.
        if guest.stat(volume)?.is_none() {
            guest
                .mkdir(volume, Perms::root(0o755))
                .with_context(|| format!("creating the image's VOLUME {volume}"))?;
        }
    }
    let Some(app) = &config.app else {
        return Ok(Vec::new());
    };
    let workdir = if app.working_dir.is_empty() {
        "/".to_string()
    } else {
        app.working_dir.clone()
    };
    if guest.stat(&workdir)?.is_none() {
        // docker creates a missing WORKDIR at start; so does the VM, once, here.
        guest.mkdir(&workdir, Perms::root(0o755))?;
    }
    let user = resolve_user(guest, &app.user)?;
    let program = resolve_program(guest, app, &workdir)?;
    let mut argv = app.argv.clone();
    argv[0] = program;
    let mut disabled = Vec::new();
    if super::setup::is_systemd(guest)? {
        disabled = disable_duplicate_units(guest, &argv[0])?;
        if user.name.is_none() && !guest.is_executable("/usr/bin/setpriv")? {
            bail!("the image's USER {} has no /etc/passwd entry, and without one only setpriv (util-linux) can run it, which the image lacks; add the user to the image, or convert with --no-app", app.user);
        }
        let unit = systemd_unit(app, &argv, &workdir, &user)?;
        guest.write(SYSTEMD_UNIT_PATH, unit.as_bytes(), Perms::root(0o644))?;
        guest.symlink(
            &format!("/etc/systemd/system/multi-user.target.wants/{SYSTEMD_UNIT}"),
            SYSTEMD_UNIT_PATH,
        )?;
    } else if guest.stat("/sbin/openrc-run")?.is_some() {
        guest.write(
            OPENRC_LAUNCHER,
            openrc_launcher(app, &argv, &workdir).as_bytes(),
            Perms::root(0o755),
        )?;
        guest.write(
            OPENRC_SCRIPT,
            openrc_script(app, &user).as_bytes(),
            Perms::root(0o755),
        )?;
        guest.symlink("/etc/runlevels/default/c2vm-app", OPENRC_SCRIPT)?;
    } else {
        bail!("the image's command cannot be made a boot service: the image has neither systemd nor OpenRC; convert with --no-app");
    }
    Ok(disabled)
}

/// The same program under merged /usr: `/bin/x` and `/usr/bin/x` are one file.
fn same_program(a: &str, b: &str) -> bool {
    a.strip_prefix("/usr").unwrap_or(a) == b.strip_prefix("/usr").unwrap_or(b)
}

/// A package may have enabled its own unit for the program the image runs (Debian's nginx
/// package enables nginx.service): both would start and fight over the port, so that unit is
/// disabled; the image's command is what the container ran.
fn disable_duplicate_units(guest: &GuestRoot, program: &str) -> Result<Vec<String>> {
    const UNIT_DIRS: &[&str] = &[
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ];
    let mut disabled = Vec::new();
    for wants in guest.list("/etc/systemd/system")? {
        if !wants.ends_with(".wants") {
            continue;
        }
        let wants_dir = format!("/etc/systemd/system/{wants}");
        for unit in guest.list(&wants_dir)? {
            if !unit.ends_with(".service") || unit == SYSTEMD_UNIT {
                continue;
            }
            let mut text = None;
            for dir in UNIT_DIRS {
                let path = format!("{dir}/{unit}");
                if guest.is_regular(&path)? {
                    text = guest.read(&path)?;
                    break;
                }
            }
            let text = String::from_utf8_lossy(&text.unwrap_or_default()).into_owned();
            let starts_program = text.lines().any(|line| {
                line.trim()
                    .strip_prefix("ExecStart=")
                    .and_then(|cmd| cmd.split_whitespace().next())
                    .map(|first| {
                        same_program(first.trim_start_matches(['-', '@', ':', '+', '!']), program)
                    })
                    .unwrap_or(false)
            });
            if starts_program {
                guest.remove(&format!("{wants_dir}/{unit}"))?;
                if !disabled.contains(&unit) {
                    disabled.push(unit);
                }
            }
        }
    }
    Ok(disabled)
}

/// Who the process runs as, resolved the way docker (runc) does from the guest's own
/// /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The passwd name, when the user has an entry and the group (if any) has one too (systemd
    /// and OpenRC then also set the supplementary groups, HOME and SHELL from it).
    pub name: Option<String>,
    pub uid: u32,
    /// The group given after `:`, when there was one; else the user's primary group.
    pub group: Option<String>,
    pub gid: u32,
}

fn passwd_lines(guest: &GuestRoot, file: &str) -> Result<Vec<Vec<String>>> {
    let text = guest.read(file)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

pub fn resolve_user(guest: &GuestRoot, spec: &str) -> Result<RunAs> {
    let passwd = passwd_lines(guest, "/etc/passwd")?;
    let groups = passwd_lines(guest, "/etc/group")?;
    resolve_user_in(spec, &passwd, &groups)
}

fn resolve_user_in(spec: &str, passwd: &[Vec<String>], groups: &[Vec<String>]) -> Result<RunAs> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() {
        "root"
    } else {
        user_part
    };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && f[0] == user_part)
        .or_else(|| {
            user_part.parse::<u32>().ok().and_then(|uid| {
                passwd
                    .iter()
                    .find(|f| f.len() >= 4 && f[2].parse() == Ok(uid))
            })
        });
    let (name, uid, primary_gid) = match entry {
        Some(f) => (
            Some(f[0].clone()),
            f[2].parse::<u32>().with_context(|| format!("bad uid for {} in the image's /etc/passwd", f[0]))?,
            f[3].parse::<u32>().unwrap_or(0),
        ),
        None => match user_part.parse::<u32>() {
            // docker runs a numeric uid that has no entry with gid 0.
            Ok(uid) => (None, uid, 0),
            Err(_) => bail!(
                "the image's USER {user_part} is not in its /etc/passwd, so docker could not start it either; fix USER in the image, or convert with --no-app"
            ),
        },
    };
    let (group, gid) = match group_part {
        None | Some("") => (None, primary_gid),
        Some(g) => {
            let by_name = groups.iter().find(|f| f.len() >= 3 && f[0] == g);
            let by_id = g.parse::<u32>().ok().and_then(|gid| {
                groups
                    .iter()
                    .find(|f| f.len() >= 3 && f[2].parse() == Ok(gid))
            });
            match by_name.or(by_id) {
                Some(f) => (
                    Some(f[0].clone()),
                    f[2].parse::<u32>().with_context(|| format!("bad gid for {} in the image's /etc/group", f[0]))?,
                ),
                // A numeric gid with no entry: only setpriv can run it, without a user name.
                None => match g.parse::<u32>() {
                    Ok(gid) => {
                        return Ok(RunAs {
                            name: None,
                            uid,
                            group: None,
                            gid,
                        })
                    }
                    Err(_) => bail!("the image's USER names the group {g}, which is not in its /etc/group; fix USER in the image, or convert with --no-app"),
                },
            }
        }
    };
    Ok(RunAs {
        name,
        uid,
        group,
        gid,
    })
}

/// docker looks a bare program name up in the image's PATH; a boot service needs the full path.
fn resolve_program(guest: &GuestRoot, app: &AppSpec, workdir: &str) -> Result<String> {
    let program = &app.argv[0];
    if program.contains('/') {
        let path = if program.starts_with('/') {
            program.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), program)
        };
        if !guest.is_executable(&path)? {
            bail!("the image's command {program} is not an executable file in the image; fix ENTRYPOINT/CMD, or convert with --no-app");
        }
        return Ok(path);
    }
    let path_var = app
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = format!("{}/{}", dir.trim_end_matches('/'), program);
        if guest.is_executable(&candidate)? {
            return Ok(candidate);
        }
    }
    bail!("the image's command {program} is not in its PATH ({path_var}); fix ENTRYPOINT/CMD, or convert with --no-app")
}

/// One word for a systemd unit file: double-quoted with C escapes, and `%` / `$` doubled so
/// that neither specifiers nor variables are expanded: the process gets exactly these bytes.
pub fn systemd_word(word: &str, expand_dollar: bool) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' if expand_dollar => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn systemd_unit(app: &AppSpec, argv: &[String], workdir: &str, user: &RunAs) -> Result<String> {
    if workdir.contains(['\n', '\r']) {
        bail!("the image's WORKDIR contains a line break; convert with --no-app");
    }
    let mut unit = String::from(
        "# The image's ENTRYPOINT + CMD, as `docker run` starts it; written by c2vm.\n\
         # Turn it off with `systemctl disable --now c2vm-app`.\n\
         [Unit]\n\
         Description=The container image's command (c2vm)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         # Keep trying, as a container with a restart policy would.\n\
         StartLimitIntervalSec=0\n\n\
         [Service]\n\
         Type=simple\n",
    );
    let mut exec_prefix = String::new();
    match &user.name {
        Some(name) => {
            let _ = writeln!(unit, "User={name}");
            if let Some(group) = &user.group {
                let _ = writeln!(unit, "Group={group}");
            }
        }
        // systemd refuses a User= that is not in the user database; setpriv does not.
        None => {
            exec_prefix = format!(
                "/usr/bin/setpriv --reuid={} --regid={} --clear-groups -- ",
                user.uid, user.gid
            );
        }
    }
    let _ = writeln!(unit, "WorkingDirectory={}", workdir.replace('%', "%%"));
    for kv in &app.env {
        let _ = writeln!(unit, "Environment={}", systemd_word(kv, false));
    }
    let words: Vec<String> = argv.iter().map(|a| systemd_word(a, true)).collect();
    let _ = writeln!(unit, "ExecStart={exec_prefix}{}", words.join(" "));
    if !app.stop_signal.is_empty() {
        let signal = app.stop_signal.trim_start_matches("SIG");
        if !signal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            bail!(
                "the image's STOPSIGNAL {} is not a signal name",
                app.stop_signal
            );
        }
        let _ = writeln!(unit, "KillSignal=SIG{signal}");
    }
    unit.push_str(
        "Restart=on-failure\n\
         RestartSec=2\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
    );
    Ok(unit)
}

fn sh_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// OpenRC runs a script, not an argv: this launcher sets the image's environment and working
/// directory and then execs exactly the image's argv.
fn openrc_launcher(app: &AppSpec, argv: &[String], workdir: &str) -> String {
    let mut script = String::from(
        "#!/bin/sh\n# The image's ENTRYPOINT + CMD, as `docker run` starts it; written by c2vm.\n",
    );
    for kv in &app.env {
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

fn openrc_script(app: &AppSpec, user: &RunAs) -> String {
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
         command={OPENRC_LAUNCHER}\n\
         command_user={}\n\
         respawn_delay=2\n\
         respawn_max=0\n\
         output_logger=\"tee /dev/console | logger -t c2vm-app\"\n\
         error_logger=\"tee /dev/console | logger -t c2vm-app\"\n",
        sh_word(&who)
    );
    if !app.stop_signal.is_empty() {
        let _ = writeln!(
            script,
            "retry={}",
            sh_word(&format!(
                "{}/10/KILL/5",
                app.stop_signal.trim_start_matches("SIG")
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
    fn shells_and_inits_are_not_apps() {
        for bare in [
            &["bash"][..],
            &["/bin/sh"],
            &["sh", "-l"],
            &["/sbin/init"],
            &[],
        ] {
            assert!(is_shell_or_init(&argv(bare)), "{bare:?}");
        }
        for app in [
            &["nginx", "-g", "daemon off;"][..],
            &["sh", "-c", "echo hi"],
            &["/docker-entrypoint.sh", "postgres"],
            &["python3"],
        ] {
            assert!(!is_shell_or_init(&argv(app)), "{app:?}");
        }
    }

    #[test]
    fn choice_decides_the_service() {
        let mut image = ImageDetails {
            cmd: argv(&["bash"]),
            exposed_ports: vec!["80/tcp".into()],
            ..Default::default()
        };
        assert_eq!(
            ImageConfig::from_image(&image, AppChoice::Auto)
                .unwrap()
                .app,
            None
        );
        let forced = ImageConfig::from_image(&image, AppChoice::On).unwrap();
        assert_eq!(forced.app.unwrap().argv, argv(&["bash"]));
        image.entrypoint = argv(&["/entry.sh"]);
        image.cmd = argv(&["serve", "--port", "80"]);
        let auto = ImageConfig::from_image(&image, AppChoice::Auto).unwrap();
        assert_eq!(
            auto.app.unwrap().argv,
            argv(&["/entry.sh", "serve", "--port", "80"])
        );
        assert_eq!(auto.exposed_ports, vec!["80/tcp".to_string()]);
        assert_eq!(
            ImageConfig::from_image(&image, AppChoice::Off).unwrap().app,
            None
        );
        image.entrypoint.clear();
        image.cmd.clear();
        let err = ImageConfig::from_image(&image, AppChoice::On).unwrap_err();
        assert!(err.to_string().contains("no ENTRYPOINT or CMD"), "{err}");
    }

    #[test]
    fn users_resolve_like_docker() {
        let passwd: Vec<Vec<String>> = [
            "root:x:0:0::/root:/bin/sh",
            "app:x:1234:1300::/home/app:/bin/sh",
        ]
        .iter()
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect();
        let groups: Vec<Vec<String>> = ["root:x:0:", "staff:x:50:", "apps:x:1300:"]
            .iter()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect();
        let r = |s: &str| resolve_user_in(s, &passwd, &groups);
        assert_eq!(
            r("").unwrap(),
            RunAs {
                name: Some("root".into()),
                uid: 0,
                group: None,
                gid: 0
            }
        );
        assert_eq!(
            r("app").unwrap(),
            RunAs {
                name: Some("app".into()),
                uid: 1234,
                group: None,
                gid: 1300
            }
        );
        assert_eq!(r("1234").unwrap().name.as_deref(), Some("app"));
        assert_eq!(
            r("app:staff").unwrap(),
            RunAs {
                name: Some("app".into()),
                uid: 1234,
                group: Some("staff".into()),
                gid: 50
            }
        );
        assert_eq!(
            r("4000").unwrap(),
            RunAs {
                name: None,
                uid: 4000,
                group: None,
                gid: 0
            }
        );
        assert_eq!(
            r("4000:4001").unwrap(),
            RunAs {
                name: None,
                uid: 4000,
                group: None,
                gid: 4001
            }
        );
        assert_eq!(
            r("app:4001").unwrap(),
            RunAs {
                name: None,
                uid: 1234,
                group: None,
                gid: 4001
            }
        );
        assert!(r("nobody-here")
            .unwrap_err()
            .to_string()
            .contains("not in its /etc/passwd"));
        assert!(r("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("not in its /etc/group"));
    }

    #[test]
    fn systemd_words_keep_every_byte() {
        assert_eq!(systemd_word("daemon off;", true), "\"daemon off;\"");
        assert_eq!(
            systemd_word("a $HOME %n \"q\" \\", true),
            "\"a $$HOME %%n \\\"q\\\" \\\\\""
        );
        assert_eq!(systemd_word("K=$V", false), "\"K=$V\"");
        assert_eq!(systemd_word("x\ny\u{1}", true), "\"x\\ny\\x01\"");
    }

    #[test]
    fn unit_runs_the_argv_as_the_user() {
        let app = AppSpec {
            argv: argv(&["/usr/sbin/nginx", "-g", "daemon off;"]),
            env: argv(&["PATH=/usr/bin:/bin", "GREETING=hello world"]),
            user: "app".into(),
            working_dir: "/srv".into(),
            stop_signal: "SIGQUIT".into(),
        };
        let user = RunAs {
            name: Some("app".into()),
            uid: 1234,
            group: None,
            gid: 1300,
        };
        let unit = systemd_unit(&app, &app.argv, "/srv", &user).unwrap();
        assert!(
            unit.contains("\nUser=app\nWorkingDirectory=/srv\n"),
            "{unit}"
        );
        assert!(unit.contains("\nWorkingDirectory=/srv\n"), "{unit}");
        assert!(
            unit.contains("\nEnvironment=\"GREETING=hello world\"\n"),
            "{unit}"
        );
        assert!(
            unit.contains("\nExecStart=\"/usr/sbin/nginx\" \"-g\" \"daemon off;\"\n"),
            "{unit}"
        );
        assert!(unit.contains("\nKillSignal=SIGQUIT\n"), "{unit}");
        assert!(unit.contains("After=network-online.target"), "{unit}");
        let nobody = RunAs {
            name: None,
            uid: 4000,
            group: None,
            gid: 0,
        };
        let unit = systemd_unit(&app, &app.argv, "/", &nobody).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/setpriv --reuid=4000 --regid=0 --clear-groups -- \"/usr/sbin/nginx\""), "{unit}");
        assert!(!unit.contains("User="), "{unit}");
    }

    #[test]
    fn install_writes_and_enables_the_unit_in_a_systemd_tree() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "lib/systemd/system",
            "usr/bin",
            "etc/systemd/system/multi-user.target.wants",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("lib/systemd/systemd"), "").unwrap();
        std::fs::write(root.join("usr/bin/web"), "").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/web"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(
            root.join("lib/systemd/system/web.service"),
            "[Service]\nExecStart=/bin/web --daemon\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/web.service",
            root.join("etc/systemd/system/multi-user.target.wants/web.service"),
        )
        .unwrap();
        let guest = GuestRoot::open(root).unwrap();
        let config = ImageConfig {
            app: Some(AppSpec {
                argv: argv(&["web", "--port", "80"]),
                env: argv(&["PATH=/bin"]),
                ..Default::default()
            }),
            exposed_ports: vec![],
            volumes: vec!["/data".into()],
        };
        let disabled = install(&guest, &config).unwrap();
        assert_eq!(disabled, vec!["web.service".to_string()]);
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/c2vm-app.service")).unwrap();
        assert!(
            unit.contains("ExecStart=\"/bin/web\" \"--port\" \"80\"\n"),
            "{unit}"
        );
        assert!(unit.contains("WorkingDirectory=/\n"), "{unit}");
        assert!(root
            .join("etc/systemd/system/multi-user.target.wants/c2vm-app.service")
            .is_symlink());
        assert!(!root
            .join("etc/systemd/system/multi-user.target.wants/web.service")
            .exists());
        assert!(root.join("data").is_dir());
        // A command that is not in the image fails with what to do.
        let missing = ImageConfig {
            app: Some(AppSpec {
                argv: argv(&["nope"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = install(&guest, &missing).unwrap_err().to_string();
        assert!(
            err.contains("not in its PATH") && err.contains("--no-app"),
            "{err}"
        );
    }

    #[test]
    fn openrc_launcher_quotes_for_sh() {
        let app = AppSpec {
            argv: argv(&["/bin/echo", "it's", "$HOME"]),
            env: argv(&["A=b c", "BAD KEY=x"]),
            ..Default::default()
        };
        let script = openrc_launcher(&app, &app.argv, "/w d");
        assert!(script.contains("export A='b c'\n"), "{script}");
        assert!(!script.contains("BAD KEY"), "{script}");
        assert!(script.contains("cd '/w d' || exit 1\n"), "{script}");
        assert!(
            script.contains("exec '/bin/echo' 'it'\\''s' '$HOME'\n"),
            "{script}"
        );
    }
}
