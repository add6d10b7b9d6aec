//! Images from a real Docker daemon: convert `debian:latest`, boot on BIOS and UEFI, log in and
//! check what a user would (release, systemd state, DHCP address, hostname, machine-id, SSH key);
//! `c2vm build`; and that no container or secret is left in the daemon.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn docker(args: &[&str]) -> String {
    tool("docker", args)
}

/// What a user would check after logging in, by name (the address once DHCP has given one).
fn checks() -> String {
    facts_script(&[
        ("release", "grep ^VERSION_CODENAME= /etc/os-release"),
        ("state", "systemctl is-system-running --wait"),
        (
            "addr",
            &format!(
                "{WAIT_FOR_DHCP}; ip -4 -o addr show scope global dynamic | awk '{{print $4}}'"
            ),
        ),
        ("hostname", "hostname"),
        ("key", "cat /root/.ssh/authorized_keys"),
        ("machine_id", "cat /etc/machine-id"),
        ("failed", "systemctl --failed --no-legend | wc -l"),
    ])
}

/// The release of the image the daemon holds as `debian:latest` (trixie, or whatever a registry
/// gave), as its own os-release says.
fn codename_of(image: &str) -> String {
    // `docker run` makes a container: not while another test counts them.
    let _lock = host_lock();
    let release = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        image,
        "/etc/os-release",
    ]);
    let line = release
        .lines()
        .find(|l| l.starts_with("VERSION_CODENAME="))
        .unwrap_or_else(|| panic!("{image} has no VERSION_CODENAME: {release}"));
    line.to_string()
}

fn check_guest(out: &str, hostname: &str) -> String {
    let facts = Facts::parse(out);
    assert_eq!(&facts["release"], codename_of("debian:latest"));
    assert_eq!(&facts["state"], "running", "systemctl is-system-running");
    assert_eq!(
        &facts["addr"], "10.0.2.15/24",
        "DHCP address from QEMU's user network"
    );
    assert_eq!(&facts["hostname"], hostname);
    assert_eq!(
        &facts["key"],
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGM2dm0tdGVzdC1rZXktbm90LXJlYWwtYnV0LWZpbmU c2vm-test"
    );
    let machine_id = &facts["machine_id"];
    assert_eq!(machine_id.len(), 32, "machine-id: {machine_id}");
    assert_eq!(&facts["failed"], "0", "failed units: {out}");
    machine_id.to_string()
}

fn ssh_key(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("key.pub");
    std::fs::write(&p, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGM2dm0tdGVzdC1rZXktbm90LXJlYWwtYnV0LWZpbmU c2vm-test\n").unwrap();
    p
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and QEMU; scripts/test runs it"]
fn debian_latest_boots_on_bios_and_uefi_with_network_and_its_own_machine_id() {
    let dir = user_scratch();
    let key = ssh_key(dir.path());
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.img");
    let pw = password_file(dir.path());
    // As an ordinary user in the docker group: no root needed.
    let convert = |out: &Path, hostname: &str| {
        Convert::new("debian:latest", out)
            .by_user()
            .password_file(&pw)
            .arg("--ssh-key")
            .arg(&key)
            .args(["--hostname", hostname])
            .leaving_nothing_behind()
            .success()
    };
    convert(&a, "vm-a");
    let log = stderr(&convert(&b, "vm-b"));
    assert!(
        log.contains("Reusing the kernel image"),
        "second convert should reuse the kernel build:\n{log}"
    );
    tool("qemu-img", &["check", a.to_str().unwrap()]);
    // The raw disk, as any tool sees it: partition table, ESP and root filesystem all clean.
    tool("sgdisk", &["-v", b.to_str().unwrap()]);
    let root = format!("{}?offset={}", b.display(), partition_offset(&b, 2));
    tool("e2fsck", &["-fn", &root]);
    let esp_copy = dir.path().join("esp.img");
    copy_partition(&b, 1, &esp_copy);
    tool("fsck.fat", &["-n", esp_copy.to_str().unwrap()]);

    let (code, out) = boot_exec(&a, "bios", &pw, &checks());
    assert_eq!(code, 0, "{out}");
    let id_a = check_guest(&out, "vm-a");
    let (code, out) = boot_exec(&b, "uefi", &pw, &checks());
    assert_eq!(code, 0, "{out}");
    let id_b = check_guest(&out, "vm-b");
    assert_ne!(
        id_a, id_b,
        "two VMs from two converts must not share a machine-id"
    );

    // The password is in no image the daemon holds (history of every layer).
    for image in docker(&["images", "-aq"]).lines() {
        let history = docker(&["history", "--no-trunc", image]);
        assert!(
            !history.contains(PASSWORD),
            "password found in the history of {image}"
        );
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror and QEMU; scripts/test runs it"]
fn build_of_a_small_dockerfile_boots_and_shows_its_file() {
    let dir = scratch();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("marker.txt"), "made-by-c2vm-build\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM debian:latest\n\
        RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n\
        COPY marker.txt /etc/c2vm-marker\n").unwrap();
    let out = dir.path().join("built.qcow2");
    let pw = password_file(dir.path());
    {
        let _lock = host_lock();
        let before = containers();
        let o = run(c2vm()
            .arg("build")
            .arg(&ctx)
            .arg("-o")
            .arg(&out)
            .arg("--password-file")
            .arg(&pw));
        assert!(o.status.success(), "build failed: {}", stderr(&o));
        assert_eq!(containers(), before, "c2vm build left a container behind");
    }
    let (code, stdout) = boot_exec(
        &out,
        "bios",
        &pw,
        "cat /etc/c2vm-marker; echo '{\"a\":41}' | jq .a",
    );
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout, "made-by-c2vm-build\n41\n");
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and scripts/install-host-deps's tools; scripts/test runs it"]
fn docker_errors_are_clear_and_leave_nothing_behind() {
    let dir = scratch();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = dir.path().join("x.img");
    let attempt = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = c2vm();
        cmd.arg("convert")
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg("--workdir")
            .arg(&work);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let o = run(&mut cmd);
        assert_eq!(o.status.code(), Some(1), "should fail with exit code 1");
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "no output on failure");
        assert_eq!(listing(&work), Vec::<String>::new(), "work dir left dirty");
        assert_eq!(
            listing(dir.path()),
            vec!["work"],
            "temporary output left beside the target"
        );
        err
    };
    let _lock = host_lock();
    let before = containers();

    let err = attempt(&["c2vm-no-such-image:nope", "--pull", "never"], None);
    assert!(
        err.contains("not in the engine") && err.contains("--pull never"),
        "{err}"
    );
    let err = attempt(&["c2vm-no-such-image:nope"], None);
    assert!(
        err.contains("pulling c2vm-no-such-image:nope failed"),
        "{err}"
    );
    let err = attempt(
        &["debian:latest"],
        Some(("DOCKER_HOST", "unix:///nonexistent/docker.sock")),
    );
    assert!(
        err.contains("no Docker or Podman engine answers at unix:///nonexistent/docker.sock"),
        "{err}"
    );
    let err = attempt(&["debian:latest", "--platform", "linux/arm64"], None);
    assert!(err.contains("linux/amd64"), "{err}");
    let err = attempt(
        &[
            "debian:latest",
            "--kernel",
            "image",
            "--kernel-flavour",
            "cloud",
        ],
        None,
    );
    assert!(err.contains("drop --kernel-flavour"), "{err}");

    // An image with no os-release: c2vm cannot pick a kernel template.
    let tarball = dir.path().join("noos.tar");
    tool(
        "tar",
        &[
            "-C",
            "/usr/share/doc",
            "-cf",
            tarball.to_str().unwrap(),
            "e2fsprogs",
        ],
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker import -c 'CMD [\"/x\"]' {} c2vm-test-noos:latest >/dev/null",
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(&tarball).unwrap();
    // Asked for the distribution's kernel, c2vm cannot pick a template.
    let err = attempt(&["c2vm-test-noos:latest", "--kernel", "distro"], None);
    assert!(
        err.contains("no /etc/os-release") && err.contains("--no-kernel"),
        "{err}"
    );
    // By default it takes the generic kernel and c2vm-init, which refuses a command the image
    // does not have.
    let err = attempt(&["c2vm-test-noos:latest"], None);
    assert!(
        err.contains("/x is not an executable file in the image"),
        "{err}"
    );
    let err = attempt(&["c2vm-test-noos:latest", "--no-kernel"], None);
    assert!(err.contains("no kernel found"), "{err}");
    docker(&["rmi", "c2vm-test-noos:latest"]);
    assert_eq!(containers(), before, "a container was left behind");
}

/// How the first bytes after the uncompressed early cpio archives (initramfs-tools keeps
/// already-compressed modules there) are compressed.
fn initramfs_compression(initrd: &[u8]) -> &'static str {
    let mut pos = 0;
    while pos + 110 <= initrd.len() {
        if initrd[pos] == 0 {
            pos += 1; // padding between archives
            continue;
        }
        if &initrd[pos..pos + 6] != b"070701" {
            break;
        }
        let field = |at: usize| {
            let text = std::str::from_utf8(&initrd[pos + at..pos + at + 8]).unwrap();
            usize::from_str_radix(text, 16).unwrap()
        };
        let (size, name_len) = (field(54), field(94));
        let data = (pos + 110 + name_len + 3) & !3;
        pos = (data + size + 3) & !3;
    }
    match initrd.get(pos..pos + 4) {
        Some([0x28, 0xb5, 0x2f, 0xfd]) => "zstd",
        Some([0x02, 0x21, 0x4c, 0x18]) => "lz4",
        Some([0x1f, 0x8b, _, _]) => "gzip",
        Some([0xfd, b'7', b'z', b'X']) => "xz",
        _ => "unknown",
    }
}

/// The fast-boot defaults lose nothing: the console is quiet (kernel messages only with
/// `--boot-log`), the initramfs is zstd, and the disk still boots on QEMU's older `pc` board.
/// (The DHCP address, `running` and no failed units are checked on every boot above.)
#[test]
#[ignore = "needs root, dockerd with debian:latest and scripts/install-host-deps's tools; scripts/test runs it"]
fn fast_boot_is_quiet_by_default_with_a_zstd_initramfs_and_a_boot_log_on_demand() {
    let dir = user_scratch();
    let key = ssh_key(dir.path());
    let disk = dir.path().join("d.img");
    let pw = password_file(dir.path());
    Convert::new("debian:latest", &disk)
        .by_user()
        .password_file(&pw)
        .arg("--ssh-key")
        .arg(&key)
        .args(["--hostname", "vm-fast"])
        .leaving_nothing_behind()
        .success();

    let esp = format!("{}@@{}", disk.display(), partition_offset(&disk, 1));
    let initrd = dir.path().join("initrd.img");
    let out = Command::new("mcopy")
        .args(["-n", "-i", &esp, "::initrd.img"])
        .arg(&initrd)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "mcopy: {}", stderr(&out));
    let bytes = std::fs::read(&initrd).unwrap();
    assert_eq!(
        initramfs_compression(&bytes),
        "zstd",
        "{} bytes",
        bytes.len()
    );

    // The older board, BIOS, with the console shown (-v): login: shows, and no kernel message
    // before it. Inside: no failed unit, the address from DHCP, and none of the first-boot work
    // guest setup takes away (ConditionNeedsUpdate rebuilds, the wireless stack networkd's
    // start would load, modprobe@ units for modules that load on use, KVM for nested guests).
    let script = format!(
        "systemctl is-system-running --wait >/dev/null; {WAIT_FOR_DHCP}\n{}",
        facts_script(&[
            ("failed", "systemctl --failed --no-legend | wc -l"),
            (
                "dhcp",
                "ip -4 -o addr show scope global | grep -c ' dynamic '"
            ),
            (
                "needs_update",
                "for u in ldconfig systemd-journal-catalog-update systemd-update-done; do \
                 systemctl show -P ConditionResult $u.service; done"
            ),
            (
                "modprobe",
                "for m in loop dm_mod drm; do systemctl is-enabled modprobe@$m.service; done"
            ),
            (
                "modules",
                "lsmod | awk 'NR > 1 {print $1}' \
                 | grep -cxE 'cfg80211|kvm|kvm_amd|kvm_intel|drm' || true"
            ),
        ])
    );
    let boot = run(c2vm()
        .args(["run", "-v", "--cpus", "1", "--machine", "pc"])
        .args(["--login", "root", "--password-file"])
        .arg(&pw)
        .args(["--timeout", "300", "--exec", &script])
        .arg(&disk));
    let console = stderr(&boot);
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert!(console.contains("login:"), "{console}");
    assert!(
        !console.contains("] Linux version"),
        "kernel messages on a quiet boot: {console}"
    );
    let said = stdout(&boot);
    let facts = Facts::parse(&said);
    assert_eq!(
        [
            &facts["failed"],
            &facts["dhcp"],
            &facts["needs_update"],
            &facts["modprobe"],
            &facts["modules"]
        ],
        ["0", "1", "no\nno\nno", "masked\nmasked\nmasked", "0"],
        "failed units, DHCP addresses, ConditionNeedsUpdate results, modprobe@ units, modules that should not load: {said}"
    );

    // --boot-log: the kernel's messages are back (its first lines are enough).
    let boot = run(c2vm()
        .args([
            "run",
            "--cpus",
            "1",
            "--boot-log",
            "--expect",
            r"Command line: .*loglevel=7",
        ])
        .args(["--timeout", "300"])
        .arg(&disk));
    let console = stderr(&boot);
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert!(console.contains("] Linux version"), "{console}");
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and QEMU; scripts/test runs it"]
fn cloud_kernel_flavour_boots_debian_on_uefi_with_network() {
    let dir = user_scratch();
    let disk = dir.path().join("cloud.img");
    let pw = password_file(dir.path());
    Convert::new("debian:latest", &disk)
        .by_user()
        .args(["--kernel-flavour", "cloud"])
        .password_file(&pw)
        .leaving_nothing_behind()
        .success();
    let (code, said) = boot_exec_with(
        &disk,
        "uefi",
        &pw,
        &facts_script(&[
            ("kernel", "uname -r"),
            ("state", "systemctl is-system-running --wait"),
            (
                "dhcp",
                &format!("{WAIT_FOR_DHCP}; ip -4 -o addr show scope global | grep -c ' dynamic '"),
            ),
        ]),
        false,
        300,
    );
    assert_eq!(code, 0, "{said}");
    let facts = Facts::parse(&said);
    assert!(facts["kernel"].ends_with("-cloud-amd64"), "kernel: {said}");
    assert_eq!(
        [&facts["state"], &facts["dhcp"]],
        ["running", "1"],
        "{said}"
    );
}
