//! Everything c2vm knows about systemd guests: where units live, how `systemctl enable` links
//! them, and the unit that runs the image's process. Guest setup and the app service both use it.
use super::Service;
use crate::rootfs::tree::{GuestTree, Perms};
use anyhow::{bail, Result};
use std::fmt::Write as _;

/// Where unit files live, the admin's first: the one list every lookup uses.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// The unit that runs the image's process.
/// The unit files setup reads (beside `/etc`, which it holds), so the stream edit copies them.
pub fn reads(key: &[u8]) -> bool {
    UNIT_DIRS.iter().any(|dir| {
        key.strip_prefix(&dir.as_bytes()[1..])
            .is_some_and(|rest| rest.starts_with(b"/"))
    })
}

/// DHCP on the first NIC by systemd-networkd, for an image that has networkd but nothing set up
/// (a kernel from the generic bundle brings no network setup, unlike the distro templates).
/// Returns whether the guest will run a DHCP client.
pub fn ensure_dhcp(guest: &mut GuestTree) -> Result<bool> {
    let configured = guest
        .list("/etc/systemd/network")?
        .iter()
        .any(|n| n.ends_with(".network"));
    let other_client = [
        "/usr/sbin/NetworkManager",
        "/usr/sbin/dhclient",
        "/sbin/dhclient",
    ]
    .into_iter()
    .map(|p| guest.is_executable(p))
    .collect::<Result<Vec<bool>>>()?
    .contains(&true);
    if configured || other_client {
        return Ok(true);
    }
    let Some(unit) = find_unit(guest, "systemd-networkd.service")? else {
        return Ok(false);
    };
    guest.write(
        "/etc/systemd/network/80-c2vm-dhcp.network",
        b"# Written by c2vm: DHCP on the VM's NIC.\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
        Perms::root(0o644),
    )?;
    enable_unit(guest, "systemd-networkd.service", &unit)?;
    Ok(true)
}

/// Stamp `/etc` and `/var` as up to date with `/usr`, as systemd-update-done does. Without the
/// stamps every first boot runs what `ConditionNeedsUpdate=` guards (ldconfig, the journal
/// catalog and hwdb rebuilds, systemd-update-done): seconds under emulation, to redo what the
/// package manager's triggers already did when the image was built. The container ran with
/// these caches as they are; so does the VM. An image's own stamp is kept.
pub fn mark_up_to_date(guest: &mut GuestTree) -> Result<()> {
    let stamp = format!(
        "# Written by c2vm: this directory matches /usr (see systemd-update-done.service(8)).\n\
         TIMESTAMP_NSEC={}\n",
        u128::from(guest.now()) * 1_000_000_000
    );
    for path in ["/etc/.updated", "/var/.updated"] {
        if !guest.exists(path)? {
            guest.write(path, stamp.as_bytes(), Perms::root(0o644))?;
        }
    }
    Ok(())
}

/// systemd-networkd asks for the kernel's nl80211 netlink family when it starts, and the kernel
/// loads the whole wireless stack (cfg80211, 1.4 MB) for that alone: about a second of a boot
/// under emulation, in a VM with no Wi-Fi. The blacklist only stops loads by alias; a Wi-Fi
/// driver still pulls cfg80211 in as its dependency.
pub fn skip_wireless_stack(guest: &mut GuestTree) -> Result<()> {
    if !has_program(guest, "systemd-networkd")? || guest.exists(WIRELESS_BLACKLIST)? {
        return Ok(());
    }
    guest.write(
        WIRELESS_BLACKLIST,
        b"# Written by c2vm: systemd-networkd's nl80211 lookup alone does not load cfg80211;\n\
          # a Wi-Fi driver still loads it as a dependency.\n\
          blacklist cfg80211\n",
        Perms::root(0o644),
    )
}

/// Kernel modules systemd loads at every boot "just in case", whose devices load them on first
/// use anyway: `/dev/loop-control` and `/dev/mapper/control` are static nodes that load loop and
/// dm_mod when opened, and a graphics driver pulls drm in as its dependency. Each instance is a
/// process and a module load at sysinit, about 0.2 s of CPU each under emulation, on the way to
/// `login:`. Only units others merely want are masked (fuse and configfs are required by their
/// mounts); an image that has its own say on them is left alone.
const UNNEEDED_MODPROBES: &[&str] = &[
    "modprobe@loop.service",
    "modprobe@dm_mod.service",
    "modprobe@drm.service",
];

pub fn skip_unneeded_modprobes(guest: &mut GuestTree) -> Result<()> {
    if find_unit(guest, "modprobe@.service")?.is_none() {
        return Ok(());
    }
    for unit in UNNEEDED_MODPROBES {
        let path = format!("/etc/systemd/system/{unit}");
        if !guest.exists(&path)? {
            guest.symlink(&path, "/dev/null")?;
        }
    }
    Ok(())
}

const WIRELESS_BLACKLIST: &str = "/etc/modprobe.d/c2vm-no-wireless-autoload.conf";

pub const APP_UNIT: &str = "c2vm-app.service";

pub fn is_present(guest: &mut GuestTree) -> Result<bool> {
    Ok(
        guest.is_regular("/lib/systemd/systemd")?
            || guest.is_regular("/usr/lib/systemd/systemd")?,
    )
}

/// Whether one of systemd's own programs (`systemd-repart`, `systemd-resolved`) is installed.
pub fn has_program(guest: &mut GuestTree, name: &str) -> Result<bool> {
    for dir in ["/lib/systemd", "/usr/lib/systemd", "/usr/bin", "/bin"] {
        if guest.is_regular(&format!("{dir}/{name}"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where `unit` is installed in the guest, if anywhere.
pub fn find_unit(guest: &mut GuestTree, unit: &str) -> Result<Option<String>> {
    for dir in UNIT_DIRS {
        let path = format!("{dir}/{unit}");
        if guest.exists(&path)? {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Enable `unit` for multi-user.target the way `systemctl enable` does.
pub fn enable_unit(guest: &mut GuestTree, unit: &str, unit_path: &str) -> Result<()> {
    guest.symlink(
        &format!("/etc/systemd/system/multi-user.target.wants/{unit}"),
        unit_path,
    )
}

/// Write a unit of c2vm's own into /etc/systemd/system and enable it.
pub fn install_unit(guest: &mut GuestTree, unit: &str, text: &str) -> Result<()> {
    let path = format!("/etc/systemd/system/{unit}");
    guest.write(&path, text.as_bytes(), Perms::root(0o644))?;
    enable_unit(guest, unit, &path)
}

/// A package may have enabled its own unit for the program the image runs (Debian's nginx
/// package enables nginx.service): both would start and fight over the port, so that unit is
/// disabled; the image's command is what the container ran.
pub fn disable_units_running(guest: &mut GuestTree, program: &str) -> Result<Vec<String>> {
    let mut disabled = Vec::new();
    for wants in guest.list("/etc/systemd/system")? {
        if !wants.ends_with(".wants") {
            continue;
        }
        let wants_dir = format!("/etc/systemd/system/{wants}");
        for unit in guest.list(&wants_dir)? {
            if !unit.ends_with(".service") || unit == APP_UNIT {
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

/// The same program under merged /usr: `/bin/x` and `/usr/bin/x` are one file.
fn same_program(a: &str, b: &str) -> bool {
    a.strip_prefix("/usr").unwrap_or(a) == b.strip_prefix("/usr").unwrap_or(b)
}

/// One word for a systemd unit file: double-quoted with C escapes, and `%` / `$` doubled so
/// that neither specifiers nor variables are expanded: the process gets exactly these bytes.
pub fn word(word: &str, expand_dollar: bool) -> String {
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

/// The unit that runs the image's process as `docker run` would.
pub fn app_unit(service: &Service) -> Result<String> {
    let (argv, workdir, user) = (&service.argv, service.workdir.as_str(), &service.user);
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
    for kv in &service.env {
        let _ = writeln!(unit, "Environment={}", word(kv, false));
    }
    let words: Vec<String> = argv.iter().map(|a| word(a, true)).collect();
    let _ = writeln!(unit, "ExecStart={exec_prefix}{}", words.join(" "));
    if !service.stop_signal.is_empty() {
        let signal = service.stop_signal.trim_start_matches("SIG");
        if !signal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            bail!(
                "the image's STOPSIGNAL {} is not a signal name",
                service.stop_signal
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::users::RunAs;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn systemd_words_keep_every_byte() {
        assert_eq!(word("daemon off;", true), "\"daemon off;\"");
        assert_eq!(
            word("a $HOME %n \"q\" \\", true),
            "\"a $$HOME %%n \\\"q\\\" \\\\\""
        );
        assert_eq!(word("K=$V", false), "\"K=$V\"");
        assert_eq!(word("x\ny\u{1}", true), "\"x\\ny\\x01\"");
    }

    #[test]
    fn unit_runs_the_argv_as_the_user() {
        let mut service = Service {
            argv: argv(&["/usr/sbin/nginx", "-g", "daemon off;"]),
            env: argv(&["PATH=/usr/bin:/bin", "GREETING=hello world"]),
            workdir: "/srv".into(),
            user: RunAs {
                name: Some("app".into()),
                uid: 1234,
                group: None,
                gid: 1300,
            },
            stop_signal: "SIGQUIT".into(),
        };
        let unit = app_unit(&service).unwrap();
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
        service.user = RunAs {
            name: None,
            uid: 4000,
            group: None,
            gid: 0,
        };
        service.workdir = "/".into();
        let unit = app_unit(&service).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/setpriv --reuid=4000 --regid=0 --clear-groups -- \"/usr/sbin/nginx\""), "{unit}");
        assert!(!unit.contains("User="), "{unit}");
    }
}
