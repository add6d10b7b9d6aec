//! `c2vm run`: boot a disk in QEMU with a serial console. Interactive by default; scripted with
//! `--expect` (wait for a pattern) or `--login` + `--exec` (run a command, print its stdout, exit
//! with its status) for tests and CI.
mod boot_settings;
mod cloud_init;
mod console;
mod direct;
mod qemu;
mod unlock;

pub use boot_settings::BootSettingsArgs;
pub use cloud_init::CloudInitArgs;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// `c2vm run`: how to boot and, when scripted, what to wait for or run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The disk to boot (raw or any format qemu-img knows)
    pub disk: PathBuf,
    /// Firmware: bios (SeaBIOS), uefi (OVMF; AAVMF for arm64), or uefi-secure (Secure Boot
    /// enforced with Microsoft's keys enrolled, as on most clouds and PCs that have it on)
    /// [default: bios for amd64 disks, uefi for arm64 disks, which have no BIOS]
    #[arg(long, value_enum)]
    pub firmware: Option<Firmware>,
    /// Machine type of amd64 disks: q35 (PCIe, no legacy devices: boots fastest) or pc (i440fx);
    /// the disk boots on both. arm64 disks boot on QEMU's `virt` [default: q35]
    #[arg(long, value_enum)]
    pub machine: Option<Machine>,
    /// Acceleration: auto uses KVM only where it works (kvm_intel/kvm_amd), else TCG
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// QEMU's CPU model [default: host with KVM; under TCG for amd64 qemu64 with RDRAND and
    /// without SVM, which fills the guest's random pool at once, or max with --firmware
    /// uefi-secure; for arm64 cortex-a72, the quickest to boot under emulation]
    #[arg(long, value_name = "MODEL")]
    pub cpu_model: Option<String>,
    /// Memory in MiB
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Virtual CPUs
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Keep changes on the disk (default: a snapshot, thrown away at exit)
    #[arg(long)]
    pub persist: bool,
    /// Forward a host port to the guest, HOST:GUEST (TCP) or HOST:GUEST/udp; may be repeated
    #[arg(long, value_name = "HOST:GUEST")]
    pub publish: Vec<String>,
    /// Scripted: exit 0 as soon as the console shows this regular expression
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Scripted: log in on the serial console as USER (or USER:PASSWORD)
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub login: Option<String>,
    /// Root's password for this boot, from the first line of this file: given to the guest
    /// as a hash (the credential passwd.hashed-password.root), and typed by --login
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Scripted: after --login, run this shell command, print its stdout, power off, exit with its status
    #[arg(long, requires = "login")]
    pub exec: Option<String>,
    /// The passphrase of the disk's encrypted root (the first line of FILE), typed at the
    /// console's prompt at boot
    #[arg(long, value_name = "FILE")]
    pub luks_passphrase_file: Option<PathBuf>,
    /// Boot the disk's kernel and initramfs directly (QEMU's -kernel), with the command line
    /// its loader would give: no firmware boot menu and no boot loader, seconds faster under
    /// emulation. The disk's own loaders are not used, so this proves nothing about them
    #[arg(long)]
    pub direct_kernel: bool,
    /// Show every kernel and systemd message of this boot (the disk boots quietly): boots the
    /// disk's kernel directly (as --direct-kernel), with its command line minus `quiet`
    #[arg(long)]
    pub boot_log: bool,
    /// Scripted: give up after this many seconds, showing the last console lines
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[command(flatten)]
    pub cloud_init: CloudInitArgs,
    #[command(flatten)]
    pub boot: BootSettingsArgs,
}

/// Which firmware QEMU boots with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
    /// OVMF built with Secure Boot and SMM, its variables holding Microsoft's keys (the UEFI CA
    /// that signs shim among them): it runs only what they sign.
    UefiSecure,
}

/// QEMU's machine type.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Q35,
    Pc,
}

/// How QEMU runs the guest's code.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

pub fn run(args: &RunArgs, verbose: bool) -> Result<i32> {
    if !args.disk.exists() {
        bail!(
            "{} does not exist; make one with `c2vm convert`",
            args.disk.display()
        );
    }
    if args.exec.is_some() && args.expect.is_some() {
        bail!("--expect and --exec do not go together: --exec waits for the login prompt itself");
    }
    let password = args
        .password_file
        .as_deref()
        .map(crate::credentials::read_password_file)
        .transpose()?;
    let login = args
        .login
        .as_deref()
        .map(|l| parse_login(l, password.as_deref()))
        .transpose()?;
    if args.login.is_some() && args.exec.is_none() {
        bail!("--login needs --exec CMD (the command to run after logging in)");
    }
    // The password file's password becomes root's at boot unless it is another user's login.
    let root_password = match &login {
        Some((user, _)) if user != "root" => None,
        _ => password.as_deref(),
    };
    let luks = args
        .luks_passphrase_file
        .as_deref()
        .map(crate::disk::luks::Passphrase::from_file)
        .transpose()?;
    let credentials = boot_settings::collect(&args.boot, root_password)?;
    // Written before QEMU is set up, so bad user-data fails first, in one line.
    let seed = cloud_init::Seed::write(&args.cloud_init)?;
    let vm = qemu::VmConfig::from_args(args, &credentials, seed)?;
    if args.expect.is_none() && args.exec.is_none() {
        return vm.run_interactive(luks.as_ref());
    }
    let echo = if args.exec.is_some() {
        verbose
    } else {
        !quiet_mode()
    };
    let mut console = vm.start_scripted(echo)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.timeout);
    if let Some(passphrase) = &luks {
        console.unlock(passphrase, deadline)?;
    }
    if let Some(pattern) = &args.expect {
        let re = regex::Regex::new(pattern)
            .with_context(|| format!("--expect {pattern:?} is not a valid regular expression"))?;
        console.wait_for(&re, deadline, &format!("the console to show {pattern:?}"))?;
        console.stop();
        crate::progress::note(&format!("\nc2vm: saw {pattern:?} on the console"));
        return Ok(0);
    }
    let (user, password) = login.context("--exec needs --login")?;
    console.login(&user, &password, deadline)?;
    let command = args.exec.as_deref().unwrap_or("true");
    let result = console.exec(command, deadline)?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&result.stdout)
        .context("writing the command's output")?;
    std::io::stderr().write_all(&result.stderr).ok();
    // A snapshot is thrown away anyway: no shutdown to wait for (seconds under emulation).
    // With --persist the guest shuts down cleanly, so its writes reach the disk.
    match args.persist {
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
