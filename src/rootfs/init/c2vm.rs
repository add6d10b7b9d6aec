//! c2vm's own init (`init/`, embedded at build time) for images with no init: it goes to
//! `/.c2vm/init` with its config beside it, and the kernel boots it with `init=`.
use crate::arch::Arch;
use crate::rootfs::app::AppSpec;
use crate::rootfs::setup::GuestSettings;
use crate::rootfs::tree::{GuestTree, Perms};
use crate::rootfs::users;
use anyhow::{bail, Result};
use c2vm_init_config::PATH as CONFIG;

/// The static c2vm-init binary (built by build.rs). Without the `cli` feature (the fuzz
/// targets' build), build.rs builds none and nothing installs it.
#[cfg(feature = "cli")]
const BINARY: &[u8] = include_bytes!(env!("C2VM_INIT_BINARY"));
#[cfg(not(feature = "cli"))]
const BINARY: &[u8] = &[];
/// The aarch64 build, where the host had Debian's cross toolchain when c2vm was built.
#[cfg(feature = "cli")]
const BINARY_AARCH64: Option<&[u8]> = include!(concat!(env!("OUT_DIR"), "/init_aarch64.rs"));
#[cfg(not(feature = "cli"))]
const BINARY_AARCH64: Option<&[u8]> = None;

/// c2vm-init for `arch`'s guests, or why this c2vm has none.
pub fn binary(arch: Arch) -> Result<&'static [u8]> {
    match arch {
        Arch::Amd64 => Ok(BINARY),
        Arch::Arm64 => BINARY_AARCH64.ok_or_else(|| {
            anyhow::anyhow!(
                "this c2vm was built without c2vm-init for arm64 (it needs Debian's rustc-web, libstd-rust-web-dev:arm64 and gcc-aarch64-linux-gnu when c2vm is built: scripts/install-host-deps --arm64); give the image an init of its own"
            )
        }),
    }
}

pub const PATH: &str = "/.c2vm/init";

/// `--restart`: its values are the init's, in the schema crate c2vm and c2vm-init share.
pub use c2vm_init_config::Restart;

/// What the init needs beside the image's process: the guest's settings as a whole (a new
/// one reaches the config from there), and what to do when the app ends.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    pub guest: &'a GuestSettings,
    pub restart: Restart,
    pub stop_timeout: u64,
}

/// Put the init, its config and the mount points it needs into the guest.
pub fn install(
    guest: &mut GuestTree,
    process: &AppSpec,
    settings: &Settings,
    arch: Arch,
) -> Result<()> {
    let binary = binary(arch)?;
    if process.argv.is_empty() {
        bail!("the image has no ENTRYPOINT or CMD, so c2vm-init has nothing to run; set CMD in the image (or drop --no-app)");
    }
    let who = users::identity(guest, &process.user)?;
    let workdir = if process.working_dir.is_empty() {
        "/"
    } else {
        process.working_dir.as_str()
    };
    // The program must be there: a disk whose only process cannot start is no use. (The argv
    // stays as the image has it: the init looks a bare name up in PATH, as docker does.)
    crate::rootfs::app::resolve_program(guest, process, workdir)?;
    let config = c2vm_init_config::Config {
        argv: process.argv.clone(),
        env: process.env.clone(),
        workdir: workdir.to_string(),
        uid: who.uid,
        gid: who.gid,
        groups: who.groups,
        home: who.home,
        hostname: settings.guest.hostname.clone(),
        entrypoint: process.entrypoint,
        dns: settings.guest.dns.iter().map(|d| d.to_string()).collect(),
        restart: settings.restart,
        stop_signal: if process.stop_signal.is_empty() {
            "SIGTERM".to_string()
        } else {
            process.stop_signal.clone()
        },
        stop_timeout: settings.stop_timeout,
    };
    guest.mkdir("/.c2vm", Perms::root(0o755))?;
    guest.write(PATH, binary, Perms::root(0o755))?;
    guest.write(CONFIG, config.to_json()?.as_bytes(), Perms::root(0o644))?;
    // Mount points (a `FROM scratch` image has none) and a WORKDIR docker would make.
    for dir in ["/dev", "/proc", "/sys", "/run", "/etc"] {
        if !guest.exists(dir)? {
            guest.mkdir(dir, Perms::root(0o755))?;
        }
    }
    if !guest.exists("/tmp")? {
        guest.mkdir("/tmp", Perms::root(0o1777))?;
    }
    if !guest.exists(workdir)? {
        guest.mkdir(workdir, Perms::root(0o755))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::tests::tree;
    use crate::rootfs::tree::Kind;

    /// An image with /bin/httpd and a user `web` (uid 1000, home /srv, also in group 33).
    fn web_image() -> GuestTree {
        tree(&[
            ("bin", Kind::Dir, 0o755, b""),
            ("bin/httpd", Kind::File, 0o755, b"\x7fELF"),
            ("etc", Kind::Dir, 0o755, b""),
            (
                "etc/passwd",
                Kind::File,
                0o644,
                b"web:x:1000:1000::/srv:/bin/sh\n",
            ),
            (
                "etc/group",
                Kind::File,
                0o644,
                b"web:x:1000:\nwww:x:33:web\n",
            ),
        ])
    }

    #[test]
    fn the_init_and_its_config_go_in_with_the_user_resolved() {
        let mut t = web_image();
        let process = AppSpec {
            argv: vec!["/bin/httpd".into(), "-f".into()],
            entrypoint: 0,
            env: vec!["GREETING=hi".into()],
            user: "web".into(),
            working_dir: "/srv/www".into(),
            stop_signal: String::new(),
        };
        let guest = GuestSettings {
            hostname: "vm".into(),
            credentials: Default::default(),
            dns: vec![],
        };
        let settings = Settings {
            guest: &guest,
            restart: Restart::OnFailure,
            stop_timeout: 10,
        };
        install(&mut t, &process, &settings, Arch::Amd64).unwrap();
        assert!(t.is_executable(PATH).unwrap());
        let config: serde_json::Value =
            serde_json::from_slice(&t.read(CONFIG).unwrap().unwrap()).unwrap();
        assert_eq!(config["uid"], 1000);
        assert_eq!(config["groups"], serde_json::json!([1000, 33]));
        assert_eq!(config["home"], "/srv");
        assert_eq!(config["restart"], "on-failure");
        assert_eq!(config["stop_signal"], "SIGTERM");
        assert!(t.exists("/srv/www").unwrap() && t.exists("/proc").unwrap());
        assert_eq!(t.perms("/tmp").unwrap().unwrap().mode, 0o1777);
    }

    /// What c2vm writes, c2vm-init's own reader (`Config::parse`, the shared crate's) reads back
    /// to the same values, for every `--restart` and with each field set apart from its default.
    #[test]
    fn what_c2vm_writes_the_init_reads_back_the_same() {
        for restart in [Restart::No, Restart::OnFailure, Restart::Always] {
            let mut t = web_image();
            let process = AppSpec {
                argv: vec!["/bin/httpd".into(), "-f".into(), "a b".into()],
                entrypoint: 1,
                env: vec!["GREETING=hi there".into(), "EMPTY=".into()],
                user: "web".into(),
                working_dir: "/srv/www".into(),
                stop_signal: "SIGQUIT".into(),
            };
            let guest = GuestSettings {
                hostname: "vm1".into(),
                credentials: Default::default(),
                dns: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
            };
            let settings = Settings {
                guest: &guest,
                restart,
                stop_timeout: 42,
            };
            install(&mut t, &process, &settings, Arch::Amd64).unwrap();
            let text = String::from_utf8(t.read(CONFIG).unwrap().unwrap()).unwrap();
            let read = c2vm_init_config::Config::parse(&text).unwrap();
            assert_eq!(
                read,
                c2vm_init_config::Config {
                    argv: process.argv.clone(),
                    env: process.env.clone(),
                    workdir: "/srv/www".into(),
                    uid: 1000,
                    gid: 1000,
                    groups: vec![1000, 33],
                    home: "/srv".into(),
                    hostname: "vm1".into(),
                    entrypoint: 1,
                    dns: vec!["10.0.0.53".into(), "fd00::53".into()],
                    restart,
                    stop_signal: "SIGQUIT".into(),
                    stop_timeout: 42,
                }
            );
        }
    }
}
