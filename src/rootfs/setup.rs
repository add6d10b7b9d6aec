//! Guest setup, as an edit of the image's tree: what turns a container filesystem into a
//! machine's.
//! `docker export` leaves `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` as empty 0755 files
//! (bind-mount targets), a `/.dockerenv`, a regular file at `/dev/console` and the build's
//! machine-id: all of that is put right here.
use super::init::{systemd, InitSystem};
use super::tree::{GuestTree, Perms};
use crate::arch::Arch;
use crate::credentials::Credentials;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;

/// Who the guest is: checked once (`plan`), then passed down whole to guest setup and to
/// c2vm-init. A new guest option is a field here.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuestSettings {
    pub hostname: String,
    pub credentials: Credentials,
    /// Empty: what DHCP provides.
    pub dns: Vec<std::net::IpAddr>,
}

/// What the guest is told about itself: its settings, and where it boots from.
#[derive(Debug, Clone)]
pub struct GuestConfig<'a> {
    pub settings: &'a GuestSettings,
    /// The machine the disk is for: the root partition's type, the ESP's file names.
    pub arch: Arch,
    pub root_uuid: String,
    /// The ESP's FAT volume id as Linux shows it, `ABCD-1234`.
    pub esp_uuid: String,
    /// An encrypted root.
    pub luks: Option<LuksRoot>,
    /// A live medium: the root is a read-only image under an overlay in RAM, with no partition
    /// to mount, grow or check, and no ESP.
    pub live: bool,
}

/// `--hostname`, for the disk or for one boot: what a hostname may be.
pub fn check_hostname(name: &str) -> Result<()> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(ok_label) {
        bail!("`{name}` is not a valid hostname (letters, digits and `-`, dot-separated labels of at most 63)");
    }
    Ok(())
}

/// An encrypted root, as the guest's crypttab names it.
#[derive(Debug, Clone)]
pub struct LuksRoot {
    /// Its LUKS2 UUID.
    pub uuid: String,
    /// The device-mapper name it opens as (`disk::luks::MAPPING`).
    pub mapping: &'static str,
}

/// What setup changes or removes, so the stream edit holds it back until the stream ends:
/// `/etc`, and the container leftovers outside it.
/// Also the few files elsewhere setup may replace (c2vm's own, from an image that was a c2vm
/// guest before): held, they go out once, which a squashfs root needs (tar2sqfs takes no second
/// entry of a name, where mke2fs lets the later win).
pub fn holds(key: &[u8]) -> bool {
    const REPLACED: &[&[u8]] = &[
        b"var/lib/dbus/machine-id",
        b"root/.ssh/authorized_keys",
        b".c2vm/",
        b"usr/local/lib/c2vm/",
        b"usr/local/sbin/c2vm-",
    ];
    key.starts_with(b"etc/")
        || key == b".dockerenv"
        || key == b"dev/console"
        || REPLACED.iter().any(|p| key.starts_with(p))
}

/// `init`: what the image runs as PID 1 (detected once, by the caller).
pub fn configure(guest: &mut GuestTree, cfg: &GuestConfig, init: InitSystem) -> Result<()> {
    let systemd = init == InitSystem::Systemd;
    remove_container_leftovers(guest)?;
    let grows = systemd && !cfg.live && setup_root_growth(guest, cfg.arch)?;
    guest.write(
        "/etc/fstab",
        fstab(cfg, grows).as_bytes(),
        Perms::root(0o644),
    )?;
    if let Some(luks) = &cfg.luks {
        guest.write(
            "/etc/crypttab",
            crypttab(luks).as_bytes(),
            Perms::root(0o644),
        )?;
    }
    guest.write(
        "/etc/hostname",
        format!("{}\n", cfg.settings.hostname).as_bytes(),
        Perms::root(0o644),
    )?;
    guest.write(
        "/etc/hosts",
        hosts(&cfg.settings.hostname).as_bytes(),
        Perms::root(0o644),
    )?;
    write_resolv_conf(guest, &cfg.settings.dns)?;
    // Empty machine-id: systemd makes a new one on first boot, so every VM gets its own.
    guest.write("/etc/machine-id", b"", Perms::root(0o444))?;
    if guest.is_regular("/var/lib/dbus/machine-id")? {
        guest.symlink("/var/lib/dbus/machine-id", "/etc/machine-id")?;
    }
    // The ESP's mount point: the image's /boot went to the ESP itself (boot_files::on_esp).
    guest.mkdir("/boot", Perms::root(0o755))?;
    if let Some(hash) = &cfg.settings.credentials.root_password_hash {
        set_root_password(guest, hash)?;
    }
    if let Some(keys) = &cfg.settings.credentials.ssh_keys {
        guest.mkdir("/root/.ssh", Perms::root(0o700))?;
        guest.write(
            "/root/.ssh/authorized_keys",
            keys.as_bytes(),
            Perms::root(0o600),
        )?;
    }
    setup_sshd(guest, cfg.settings.credentials.ssh_keys.is_some(), systemd)?;
    if systemd {
        guest.write(
            CREDENTIALS_SCRIPT,
            CREDENTIALS_SH.as_bytes(),
            Perms::root(0o755),
        )?;
        systemd::install_unit(guest, "c2vm-credentials.service", CREDENTIALS_UNIT)?;
        systemd::mark_up_to_date(guest)?;
        systemd::skip_wireless_stack(guest)?;
        systemd::skip_unneeded_modprobes(guest)?;
    }
    Ok(())
}

/// DHCP where the image's init can run it (see [`systemd::ensure_dhcp`]); false when the VM will
/// have no network. Images with OpenRC keep their own /etc/network setup.
pub fn ensure_network(guest: &mut GuestTree, init: InitSystem) -> Result<bool> {
    if init == InitSystem::Systemd {
        return systemd::ensure_dhcp(guest);
    }
    Ok(true)
}

/// Settings given at boot as systemd credentials (`c2vm run --ssh-key`, `--password-file`,
/// `--hostname`, or any hypervisor's SMBIOS type 11) applied on every boot that gives them: the
/// unit and the script it runs.
const CREDENTIALS_UNIT: &str = include_str!("../../templates/guest/c2vm-credentials.service");
const CREDENTIALS_SH: &str = include_str!("../../templates/guest/c2vm-credentials");
const CREDENTIALS_SCRIPT: &str = "/usr/local/sbin/c2vm-credentials";

const SSH_HOSTKEYS_UNIT: &str = "\
[Unit]
Description=Generate SSH host keys for this machine (c2vm)
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

/// An image with sshd: host keys baked in at build time would be shared by every VM made from
/// it, so they go, and a first-boot unit makes new ones. With --ssh-key, sshd is enabled.
fn setup_sshd(guest: &mut GuestTree, enable: bool, systemd: bool) -> Result<()> {
    if !guest.is_regular("/usr/sbin/sshd")? {
        return Ok(());
    }
    for name in guest.list("/etc/ssh")? {
        if name.starts_with("ssh_host_") && name.contains("_key") {
            guest.remove(&format!("/etc/ssh/{name}"))?;
        }
    }
    if !systemd {
        return Ok(()); // other inits (Alpine's OpenRC sshd) make missing host keys themselves
    }
    systemd::install_unit(guest, "c2vm-ssh-hostkeys.service", SSH_HOSTKEYS_UNIT)?;
    if enable {
        for name in ["ssh.service", "sshd.service"] {
            if let Some(path) = systemd::find_unit(guest, name)? {
                systemd::enable_unit(guest, name, &path)?;
                break;
            }
        }
    }
    Ok(())
}

fn remove_container_leftovers(guest: &mut GuestTree) -> Result<()> {
    guest.remove("/.dockerenv")?;
    if guest.is_regular("/dev/console")? {
        guest.remove("/dev/console")?;
    }
    Ok(())
}

/// `grow_root`: systemd-growfs grows `/` to its partition at boot (`x-systemd.growfs`).
pub fn fstab(cfg: &GuestConfig, grow_root: bool) -> String {
    if cfg.live {
        return "# Written by c2vm: a live system. The root is a read-only image under an overlay in RAM\n\
                # (see /run/c2vm-live); what is written is lost at power-off. There is no ESP.\n"
            .to_string();
    }
    format!(
        "# Written by c2vm.\n\
         UUID={root}\t/\text4\terrors=remount-ro{grow}\t0\t1\n\
         UUID={esp}\t/boot\tvfat\tumask=0077,nofail\t0\t2\n",
        root = cfg.root_uuid,
        esp = cfg.esp_uuid,
        grow = if grow_root { ",x-systemd.growfs" } else { "" }
    )
}

/// The encrypted root, for the guest's own tools: the initramfs a kernel update rebuilds looks
/// the root's mapping up here (the boot itself is told by `cryptopts=` on the command line).
/// `discard` passes the filesystem's trims down, so freed blocks go back to the host's sparse
/// disk; like c2vm's sparse writing, that shows which blocks are in use, never what they hold.
pub fn crypttab(luks: &LuksRoot) -> String {
    format!(
        "# Written by c2vm: the encrypted root.\n{} UUID={} none luks,discard\n",
        luks.mapping, luks.uuid
    )
}

/// The root partition grows to fill a larger virtual disk on boot: systemd-repart (systemd 245+)
/// grows partition 2 and moves the backup GPT header to the new end; `x-systemd.growfs` in fstab
/// then grows ext4 online. Returns whether the guest (a systemd one) can do it.
fn setup_root_growth(guest: &mut GuestTree, arch: Arch) -> Result<bool> {
    if !systemd::has_program(guest, "systemd-repart")? {
        return Ok(false);
    }
    let conf = format!(
        "# Written by c2vm: let the root partition fill the disk.\n[Partition]\nType={}\n",
        arch.repart_root_type()
    );
    guest.write(
        "/etc/repart.d/50-c2vm-root.conf",
        conf.as_bytes(),
        Perms::root(0o644),
    )?;
    Ok(true)
}

pub fn hosts(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_string()
    } else {
        format!("{hostname} {short}")
    };
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// `/etc/resolv.conf`: a symlink (systemd-resolved, resolvconf) is the image managing it: keep it.
/// Else `--dns` servers, else systemd-resolved's stub if the image has it, else a plain file
/// that the DHCP client fills in.
fn write_resolv_conf(guest: &mut GuestTree, dns: &[std::net::IpAddr]) -> Result<()> {
    if dns.is_empty() && guest.is_symlink("/etc/resolv.conf")? {
        return Ok(());
    }
    if !dns.is_empty() {
        let mut text = String::from("# Written by c2vm (--dns).\n");
        for server in dns {
            let _ = writeln!(text, "nameserver {server}");
        }
        return guest.write("/etc/resolv.conf", text.as_bytes(), Perms::root(0o644));
    }
    if systemd::has_program(guest, "systemd-resolved")? {
        guest.symlink(
            "/etc/resolv.conf",
            "../run/systemd/resolve/stub-resolv.conf",
        )
    } else {
        guest.write(
            "/etc/resolv.conf",
            b"# Written by c2vm: the DHCP client fills this in at boot.\n",
            Perms::root(0o644),
        )
    }
}

/// Put `hash` in root's line of /etc/shadow, keeping every other line, its owner and mode.
fn set_root_password(guest: &mut GuestTree, hash: &str) -> Result<()> {
    if guest.is_symlink("/etc/shadow")? {
        // Its other users' lines are wherever the link points: not something to guess at.
        bail!("/etc/shadow in the image is a symlink, so c2vm cannot set the root password in it; make it a regular file in the image, or convert without --password-file");
    }
    let (old, perms) = match guest.perms("/etc/shadow")? {
        Some(perms) => {
            let text = guest.read("/etc/shadow")?.unwrap_or_default();
            (
                String::from_utf8(text).context("/etc/shadow in the image is not text")?,
                perms,
            )
        }
        None => (String::new(), Perms::root(0o640)),
    };
    guest.write(
        "/etc/shadow",
        shadow_with_root_hash(&old, hash).as_bytes(),
        perms,
    )
}

pub fn shadow_with_root_hash(shadow: &str, hash: &str) -> String {
    let mut out = String::new();
    let mut found = false;
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"root") && fields.len() >= 2 {
            fields[1] = hash;
            // An empty "last changed" field is fine; 0 would force a change at first login.
            if fields.len() > 2 && fields[2] == "0" {
                fields[2] = "";
            }
            found = true;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !found {
        out.insert_str(0, &format!("root:{hash}::0:99999:7:::\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked() {
        assert!(check_hostname("c2vm").is_ok());
        assert!(check_hostname("web-1.example.org").is_ok());
        for bad in ["-bad", "bad_name", ""] {
            let err = check_hostname(bad).unwrap_err().to_string();
            assert!(err.contains("is not a valid hostname"), "{err}");
        }
    }

    static SETTINGS: std::sync::LazyLock<GuestSettings> =
        std::sync::LazyLock::new(|| GuestSettings {
            hostname: "web.example.org".into(),
            credentials: Credentials {
                root_password_hash: Some("$6$salt$hash".into()),
                ssh_keys: Some("ssh-ed25519 AAAA test\n".into()),
            },
            dns: vec![],
        });

    fn cfg() -> GuestConfig<'static> {
        GuestConfig {
            settings: &SETTINGS,
            arch: Arch::Amd64,
            root_uuid: "11111111-2222-3333-4444-555555555555".into(),
            esp_uuid: "ABCD-1234".into(),
            luks: None,
            live: false,
        }
    }

    #[test]
    fn shadow_keeps_other_lines() {
        let old = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let new = shadow_with_root_hash(old, "$6$x$y");
        assert_eq!(
            new,
            "root:$6$x$y:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
        assert!(shadow_with_root_hash("", "$6$x$y").starts_with("root:$6$x$y:"));
    }

    #[test]
    fn fstab_and_hosts() {
        let f = fstab(&cfg(), true);
        assert!(f.contains("UUID=11111111-2222-3333-4444-555555555555\t/\text4\terrors=remount-ro,x-systemd.growfs\t"));
        assert!(!fstab(&cfg(), false).contains("growfs"));
        assert!(f.contains("UUID=ABCD-1234\t/boot\tvfat\tumask=0077,nofail"));
        assert!(hosts("web.example.org").contains("127.0.1.1\tweb.example.org web"));
    }

    fn mode_of(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn configure_fixes_docker_export_leftovers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        for f in [
            "etc/hostname",
            "etc/hosts",
            "etc/resolv.conf",
            ".dockerenv",
            "dev/console",
        ] {
            std::fs::write(root.join(f), "").unwrap();
            std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        let (out, result) = crate::rootfs::edit::edit_dir(root, |g| {
            let init = InitSystem::detect(g)?;
            configure(g, &cfg(), init)
        });
        result.unwrap();
        let root = out.path();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "web.example.org\n"
        );
        let mode = |f: &str| mode_of(&root.join(f));
        assert_eq!(mode("etc/hostname"), 0o644);
        assert_eq!(mode("etc/resolv.conf"), 0o644);
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(!root.join(".dockerenv").exists());
        assert!(!root.join("dev/console").exists());
        assert!(std::fs::read_to_string(root.join("etc/shadow"))
            .unwrap()
            .starts_with("root:$6$salt$hash:"));
        assert_eq!(mode("root/.ssh"), 0o700);
        assert_eq!(mode("root/.ssh/authorized_keys"), 0o600);
    }
}
