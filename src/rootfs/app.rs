//! The image's own process as a boot service, so the VM does what `docker run IMAGE` does:
//! ENTRYPOINT + CMD run at boot with the image's Env, WorkingDir and User, restarted on failure,
//! their output in the journal and on the serial console, started once the network is up.
//! This module decides whether there is a service and what it runs; the init system's own
//! module (`rootfs::init`) writes it in that init's terms.
use crate::image::ImageConfig;
use crate::rootfs::init::{self, InitSystem, Service};
use crate::rootfs::tree::{GuestTree, Perms};
use crate::rootfs::users;
use anyhow::{bail, Context, Result};

/// What the VM takes from the image's config: the process to run (if any), ports and volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuestApp {
    /// The process to run at boot as a service, if one is wanted (`--app`, or a command that
    /// is not a bare shell). Serialised under its old name: the identifiers' seed holds it.
    #[serde(rename = "app")]
    pub service: Option<AppSpec>,
    /// EXPOSE, as docker writes it: `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// VOLUME directories.
    pub volumes: Vec<String>,
    /// The image's process whether or not it is a service: c2vm-init runs it even when it is a
    /// shell (on the console, like `docker run -it`). Empty argv when the image has none, or
    /// with --no-app.
    pub process: AppSpec,
}

/// The image's process, as `docker run` would start it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppSpec {
    /// ENTRYPOINT followed by CMD.
    pub argv: Vec<String>,
    /// How many of `argv`'s words are ENTRYPOINT's (arguments at boot replace the rest).
    pub entrypoint: usize,
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

impl GuestApp {
    pub fn from_config(config: &ImageConfig, choice: AppChoice) -> Result<GuestApp> {
        let argv = config.argv();
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
        let process = AppSpec {
            argv: if choice == AppChoice::Off {
                Vec::new()
            } else {
                argv
            },
            entrypoint: match choice {
                AppChoice::Off => 0,
                _ => config.entrypoint.len(),
            },
            env: config.env.clone(),
            user: config.user.clone(),
            working_dir: config.working_dir.clone(),
            stop_signal: config.stop_signal.clone(),
        };
        let service = wanted.then(|| process.clone());
        Ok(GuestApp {
            service,
            process,
            exposed_ports: config.exposed_ports.clone(),
            volumes: config.volumes.clone(),
        })
    }
}

/// Put the image's volumes and process into the guest. Returns the units of the image's own
/// that were disabled because they start the same program.
pub fn install(guest: &mut GuestTree, config: &GuestApp, init: InitSystem) -> Result<Vec<String>> {
    for volume in &config.volumes {
        // A volume the image already has keeps its owner and mode, as docker shows it.
        if !guest.exists(volume)? {
            guest
                .mkdir(volume, Perms::root(0o755))
                .with_context(|| format!("creating the image's VOLUME {volume}"))?;
        }
    }
    let Some(app) = &config.service else {
        return Ok(Vec::new());
    };
    let workdir = if app.working_dir.is_empty() {
        "/".to_string()
    } else {
        app.working_dir.clone()
    };
    if !guest.exists(&workdir)? {
        // docker creates a missing WORKDIR at start; so does the VM, once, here.
        guest.mkdir(&workdir, Perms::root(0o755))?;
    }
    let mut argv = app.argv.clone();
    argv[0] = resolve_program(guest, app, &workdir)?;
    let service = Service {
        argv,
        env: app.env.clone(),
        workdir,
        user: users::resolve(guest, &app.user)?,
        stop_signal: app.stop_signal.clone(),
    };
    match init {
        InitSystem::Systemd => {
            let disabled = init::systemd::disable_units_running(guest, &service.argv[0])?;
            if service.user.name.is_none() && !guest.is_executable("/usr/bin/setpriv")? {
                bail!("the image's USER {} has no /etc/passwd entry, and without one only setpriv (util-linux) can run it, which the image lacks; add the user to the image, or convert with --no-app", app.user);
            }
            let unit = init::systemd::app_unit(&service)?;
            init::systemd::install_unit(guest, init::systemd::APP_UNIT, &unit)?;
            Ok(disabled)
        }
        InitSystem::OpenRc => {
            init::openrc::install_app(guest, &service)?;
            Ok(Vec::new())
        }
        InitSystem::Other => bail!("the image's command cannot be made a boot service: the image has neither systemd nor OpenRC; convert with --no-app"),
    }
}

/// docker looks a bare program name up in the image's PATH; a boot service needs the full path.
/// The program as a full path in the guest.
pub(crate) fn resolve_program(
    guest: &mut GuestTree,
    app: &AppSpec,
    workdir: &str,
) -> Result<String> {
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
        let mut image = ImageConfig {
            cmd: argv(&["bash"]),
            exposed_ports: vec!["80/tcp".into()],
            ..Default::default()
        };
        assert_eq!(
            GuestApp::from_config(&image, AppChoice::Auto)
                .unwrap()
                .service,
            None
        );
        let forced = GuestApp::from_config(&image, AppChoice::On).unwrap();
        assert_eq!(forced.service.unwrap().argv, argv(&["bash"]));
        image.entrypoint = argv(&["/entry.sh"]);
        image.cmd = argv(&["serve", "--port", "80"]);
        let auto = GuestApp::from_config(&image, AppChoice::Auto).unwrap();
        assert_eq!(
            auto.service.unwrap().argv,
            argv(&["/entry.sh", "serve", "--port", "80"])
        );
        assert_eq!(auto.exposed_ports, vec!["80/tcp".to_string()]);
        assert_eq!(
            GuestApp::from_config(&image, AppChoice::Off)
                .unwrap()
                .service,
            None
        );
        image.entrypoint.clear();
        image.cmd.clear();
        let err = GuestApp::from_config(&image, AppChoice::On).unwrap_err();
        assert!(err.to_string().contains("no ENTRYPOINT or CMD"), "{err}");
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
        let config = GuestApp {
            service: Some(AppSpec {
                argv: argv(&["web", "--port", "80"]),
                env: argv(&["PATH=/bin"]),
                ..Default::default()
            }),
            exposed_ports: vec![],
            volumes: vec!["/data".into()],
            process: AppSpec::default(),
        };
        // A command that is not in the image fails with what to do.
        let missing = GuestApp {
            service: Some(AppSpec {
                argv: argv(&["nope"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (out, result) = crate::rootfs::edit::edit_dir(root, |guest| {
            let init = InitSystem::detect(guest)?;
            let err = install(guest, &missing, init).unwrap_err().to_string();
            assert!(
                err.contains("not in its PATH") && err.contains("--no-app"),
                "{err}"
            );
            install(guest, &config, init)
        });
        let disabled = result.unwrap();
        let root = out.path();
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
    }
}
