//! `c2vm run`: boot a disk in QEMU with a serial console. Interactive by default; scripted with
//! `--expect` (wait for a pattern) or `--login` + `--exec` (run a command, print its stdout, exit
//! with its status) for tests and CI.
//!
//! The modules, by job: `options` (every flag), `vm` (the steps of one boot), `qemu_args`
//! (QEMU's argument list from plain data, and what a boot attaches), `machine` (firmware,
//! machine type, accelerator), `medium` (a disk, an ISO as a CD or USB stick, or a network boot
//! set), `disk_probe` (reading the disk before it boots), `direct` (the
//! disk's kernel booted directly), `boot_settings` and `cloud_init` (what a boot attaches),
//! `private_dir`, `terminal` (the interactive console), `console` (the scripted one) and
//! `unlock` (the encrypted root's prompt, for both).
mod boot_settings;
mod cloud_init;
mod console;
mod direct;
mod disk_probe;
mod machine;
mod medium;
mod options;
mod private_dir;
mod qemu_args;
mod terminal;
mod unlock;
mod vm;

pub use options::RunArgs;

use crate::disk::luks::Passphrase;
use crate::instance::{self, Instance};
use anyhow::{bail, Context, Result};
use console::Console;
use qemu_args::Attachment;
use std::path::Path;
use std::time::Instant;

pub fn run(args: &RunArgs, verbose: bool) -> Result<i32> {
    if let Some(saved) = &args.script.restore {
        let name = args
            .script
            .name
            .clone()
            .unwrap_or_else(|| random_name("c2vm"));
        instance::saved::restore(saved, &name, args.boot.hostname.as_deref())?;
        println!("{name}");
        return Ok(0);
    }
    let Some(disk) = args.disk.as_deref().or(args.vm.netboot.as_deref()) else {
        bail!("give the disk to boot: c2vm run DISK");
    };
    if !disk.exists() {
        bail!(
            "{} does not exist; make one with `c2vm convert`",
            disk.display()
        );
    }
    let script = &args.script;
    if script.exec.is_some() && script.expect.is_some() {
        bail!("--expect and --exec do not go together: --exec waits for the login prompt itself");
    }
    let password = args
        .boot
        .password_file
        .as_deref()
        .map(crate::credentials::read_password_file)
        .transpose()?;
    let login = script
        .login
        .as_deref()
        .map(|l| parse_login(l, password.as_deref()))
        .transpose()?;
    if script.login.is_some() && script.exec.is_none() {
        bail!("--login needs --exec CMD (the command to run after logging in)");
    }
    // The password file's password becomes root's at boot unless it is another user's login.
    let root_password = match &login {
        Some((user, _)) if user != "root" => None,
        _ => password.as_deref(),
    };
    let luks = args
        .boot_path
        .luks_passphrase_file
        .as_deref()
        .map(crate::disk::luks::Passphrase::from_file)
        .transpose()?;
    if script.detach {
        return detached(args, disk, root_password, luks.as_ref());
    }
    if let (Some(command), None) = (&script.exec, &script.login) {
        return exec_through_agent(args, disk, root_password, luks.as_ref(), command);
    }
    let attached = attachments(args, root_password)?;
    let vm = vm::Vm::prepare(args, disk, attached, None)?;
    if script.expect.is_none() && script.exec.is_none() {
        return vm.run_interactive(luks.as_ref());
    }
    let echo = if script.exec.is_some() {
        verbose
    } else {
        !quiet_mode()
    };
    let mut console = vm.start_scripted(echo)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(script.timeout);
    if let Some(passphrase) = &luks {
        console.unlock(passphrase, deadline)?;
    }
    match login {
        Some((user, password)) => exec(args, &mut console, &user, &password, deadline),
        None => expect(
            script.expect.as_deref().unwrap_or(""),
            &mut console,
            deadline,
        ),
    }
}

/// `-d`: the VM in the background, named, its files in its own directory; returns once its
/// agent answers, having printed its name. Nothing is left if it does not come up.
fn detached(
    args: &RunArgs,
    disk: &Path,
    root_password: Option<&str>,
    luks: Option<&Passphrase>,
) -> Result<i32> {
    let name = match &args.script.name {
        Some(name) => name.clone(),
        None => random_name("c2vm"),
    };
    start_in_background(args, disk, root_password, luks, &name)?;
    println!("{name}");
    Ok(0)
}

fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// `--exec` without `--login`: the VM in the background for the one command, through its agent;
/// stopped and removed after it, whatever happens.
fn exec_through_agent(
    args: &RunArgs,
    disk: &Path,
    root_password: Option<&str>,
    luks: Option<&Passphrase>,
    command: &str,
) -> Result<i32> {
    let vm = start_in_background(args, disk, root_password, luks, &random_name("c2vm-exec"))?;
    let status = instance::exec::shell(&vm, command);
    // A snapshot is thrown away anyway: no shutdown to wait for (seconds under emulation).
    // With --persist the guest shuts down cleanly, so its writes reach the disk.
    let stopped = match args.vm.persist {
        true => instance::shut_down(&vm, std::time::Duration::from_secs(120)),
        false => instance::kill_qemu(&vm),
    };
    vm.remove()?;
    stopped?;
    status
}

/// QEMU in the background with the agent's channel, and its agent answering; an encrypted
/// root's passphrase typed at its console's prompt on the way.
fn start_in_background(
    args: &RunArgs,
    disk: &Path,
    root_password: Option<&str>,
    luks: Option<&Passphrase>,
    name: &str,
) -> Result<Instance> {
    let instance = Instance::create(name)?;
    let prepared = (|| {
        // What the boot writes (firmware variables, credentials, the seed) goes in the VM's
        // directory, where it stays while QEMU runs and goes with the VM.
        let files = instance.path(instance::state::FILES);
        std::fs::create_dir(&files).with_context(|| format!("creating {}", files.display()))?;
        std::env::set_var("TMPDIR", &files);
        let attached = attachments(args, root_password)?;
        let overlay = instance.path(instance::state::OVERLAY);
        let vm = vm::Vm::prepare(args, disk, attached, Some(&overlay))?;
        instance.write_record(&instance::state::Record {
            disk: disk.canonicalize()?.to_string_lossy().into_owned(),
            arch: vm.arch.to_string(),
            started: crate::units::unix_now(),
        })?;
        Ok::<_, anyhow::Error>(vm)
    })();
    let vm = match prepared {
        Ok(vm) => vm,
        Err(e) => {
            instance.remove().ok();
            return Err(e);
        }
    };
    let secure_boot = vm.secure_boot();
    let child = match vm.start_detached(&instance) {
        Ok(child) => child,
        Err(e) => {
            instance.remove().ok();
            return Err(e);
        }
    };
    let timeout = std::time::Duration::from_secs(args.script.timeout);
    let mut typist = luks.map(unlock::Typist::new);
    let answer = typist
        .as_mut()
        .map(|t| t as &mut dyn instance::start::ConsoleAnswer);
    instance::start::wait_ready(&instance, child, timeout, secure_boot, answer)?;
    Ok(instance)
}

/// What the boot attaches: the settings for this boot (checked, then written), and the
/// cloud-init seed. Written before QEMU is set up, so bad user-data fails first, in one line.
fn attachments(args: &RunArgs, root_password: Option<&str>) -> Result<Vec<Box<dyn Attachment>>> {
    let credentials = boot_settings::collect(&args.boot, root_password)?;
    let seed = cloud_init::NoCloudSeed::write(&args.cloud_init)?;
    let mut attached: Vec<Box<dyn Attachment>> = Vec::new();
    if let Some(files) = boot_settings::CredentialFiles::write(&credentials)? {
        attached.push(Box::new(files));
    }
    if let Some(seed) = seed {
        attached.push(Box::new(seed));
    }
    Ok(attached)
}

/// `--expect`: exit 0 once the console shows `pattern`.
fn expect(pattern: &str, console: &mut Console, deadline: Instant) -> Result<i32> {
    let re = regex::Regex::new(pattern)
        .with_context(|| format!("--expect {pattern:?} is not a valid regular expression"))?;
    console.wait_for(&re, deadline, &format!("the console to show {pattern:?}"))?;
    console.stop();
    crate::progress::note(&format!("\nc2vm: saw {pattern:?} on the console"));
    Ok(0)
}

/// `--login` and `--exec`: the command's output on stdout, its status as c2vm's.
fn exec(
    args: &RunArgs,
    console: &mut Console,
    user: &str,
    password: &str,
    deadline: Instant,
) -> Result<i32> {
    console.login(user, password, deadline)?;
    let command = args.script.exec.as_deref().unwrap_or("true");
    let result = console.exec(command, deadline)?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&result.stdout)
        .context("writing the command's output")?;
    std::io::stderr().write_all(&result.stderr).ok();
    // A snapshot is thrown away anyway: no shutdown to wait for (seconds under emulation).
    // With --persist the guest shuts down cleanly, so its writes reach the disk.
    match args.vm.persist {
        true => console.power_off(),
        false => console.stop(),
    }
    Ok(result.status)
}

fn quiet_mode() -> bool {
    log::max_level() < log::LevelFilter::Info
}

/// `USER` or `USER:PASSWORD`; the password may come from a file instead (keeps it out of argv).
fn parse_login(login: &str, from_file: Option<&str>) -> Result<(String, String)> {
    let (user, inline) = match login.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (login.to_string(), None),
    };
    if user.is_empty() {
        bail!("--login needs a user name, e.g. --login root --password-file pw.txt");
    }
    let password = match (inline, from_file) {
        (Some(p), None) => p,
        (None, Some(p)) => p.to_string(),
        (Some(_), Some(_)) => bail!(
            "give the password either in --login USER:PASSWORD or in --password-file, not both"
        ),
        (None, None) => bail!(
            "--login {user} needs a password: --login {user}:PASSWORD or --password-file FILE"
        ),
    };
    Ok((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_the_seed_are_attached_to_qemu_s_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            run: RunArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let user_data = dir.path().join("user-data");
        std::fs::write(&user_data, "#cloud-config\n").unwrap();
        let args = Run::try_parse_from([
            "c2vm".as_ref(),
            "disk.img".as_ref(),
            "--hostname".as_ref(),
            "web-1".as_ref(),
            "--cloud-init".as_ref(),
            user_data.as_os_str(),
        ])
        .unwrap()
        .run;
        let attached = attachments(&args, Some("pw")).unwrap();
        let names: Vec<Vec<String>> = attached.iter().map(|a| a.names()).collect();
        assert_eq!(
            names,
            [
                vec!["system.hostname", "passwd.hashed-password.root"],
                vec!["user-data", "meta-data"]
            ]
        );
        let spec = qemu_args::VmSpec {
            arch: crate::arch::Arch::Amd64,
            board: qemu_args::Board::Q35,
            uefi: None,
            secure_boot: false,
            kvm: false,
            cpu_model: None,
            memory_mib: 512,
            cpus: 1,
            disk: "/d.img".into(),
            format: "raw".into(),
            persist: false,
            medium: super::medium::Medium::Disk,
            direct: None,
            forwards: Vec::new(),
        };
        let refs: Vec<&dyn Attachment> = attached.iter().map(|a| a.as_ref()).collect();
        let line = qemu_args::qemu_args(&spec, &refs);
        let tail = &line[line.len() - 8..];
        assert_eq!(tail[0], "-fw_cfg");
        assert!(tail[1].starts_with("name=opt/io.systemd.credentials/system.hostname,file="));
        assert_eq!(tail[2], "-fw_cfg");
        assert!(tail[3]
            .starts_with("name=opt/io.systemd.credentials/passwd.hashed-password.root,file="));
        assert_eq!(tail[4], "-drive");
        assert!(tail[5].ends_with("seed.img,format=raw,if=none,id=cidata,readonly=on"));
        assert_eq!(tail[6..], ["-device", "virtio-blk-pci,drive=cidata"]);
        // The names only, never a value.
        assert!(!line
            .iter()
            .any(|a| a.contains("web-1") || a.contains("pw,")));
    }

    #[test]
    fn login_forms() {
        assert_eq!(
            parse_login("root:pw", None).unwrap(),
            ("root".into(), "pw".into())
        );
        let err = parse_login("root", None).unwrap_err().to_string();
        assert!(err.contains("needs a password"), "{err}");
        let err = parse_login(":pw", None).unwrap_err().to_string();
        assert!(err.contains("needs a user name"), "{err}");
        assert_eq!(parse_login("root", Some("secret")).unwrap().1, "secret");
        let err = parse_login("root:a", Some("b")).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
    }
}
