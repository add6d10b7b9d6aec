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

/// What every boot of a `debian:latest` disk checks, one labelled fact a line. The DHCP lease
/// may come after `running` (the getty waits for no network): the address is polled.
const CHECKS: &str = r#"echo release=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
echo state=$(systemctl is-system-running --wait)
for i in $(seq 60); do a=$(ip -4 -o addr show scope global dynamic | awk '{print $4}'); [ -n "$a" ] && break; sleep 1; done
echo addr=$a
echo leases=$(ip -4 -o addr show scope global | grep -c ' dynamic ')
echo hostname=$(hostname)
echo key=$(cat /root/.ssh/authorized_keys)
echo machine-id=$(cat /etc/machine-id)
echo failed=$(systemctl --failed --no-legend | wc -l)"#;

/// With Secure Boot on: the firmware's variable (its last byte), the kernel's lockdown and its
/// own word.
const SECURE_BOOT: &str = r#"echo secure-boot=$(od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print $NF}')
echo lockdown=$(cat /sys/kernel/security/lockdown)
echo kernel-says=$(dmesg | grep -c 'secureboot: Secure boot enabled')"#;

/// dpkg's check of the files of the kernel and the Secure Boot chain's packages: none missing or
/// changed (what c2vm copies to the ESP stays the packages' own in /boot and /usr/lib).
const DPKG_VERIFY: &str = r#"installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'linux-image-*' shim-signed shim-helpers-amd64-signed systemd-boot-efi-amd64-signed | awk '$1 == "ii" {print $2}')
echo verified=$(echo $installed | wc -w)
echo dpkg-verify=$(dpkg -V $installed 2>&1 | wc -l)"#;

/// The first boot's own work that guest setup takes away: ConditionNeedsUpdate rebuilds, the
/// wireless stack networkd's start would load, modprobe@ units for modules that load on use,
/// KVM for nested guests.
const FIRST_BOOT_WORK: &str = r#"echo conditions=$(for u in ldconfig systemd-journal-catalog-update systemd-update-done; do systemctl show -P ConditionResult $u.service; done | tr '\n' ' ')
echo modprobe-units=$(for m in loop dm_mod drm; do systemctl is-enabled modprobe@$m.service; done | tr '\n' ' ')
echo unwanted-modules=$(lsmod | awk 'NR > 1 {print $1}' | grep -cxE 'cfg80211|kvm|kvm_amd|kvm_intel|drm' || true)"#;

/// Convert as an ordinary user in the docker group (no root needed), leaving no container and
/// no staging behind; returns what c2vm said.
fn convert_image(
    image: &str,
    out: &Path,
    hostname: &str,
    key: &Path,
    dir: &Path,
    extra: &[&str],
) -> String {
    stderr(
        &Convert::new(image, out)
            .by_user()
            .password_file(&password_file(dir))
            .arg("--ssh-key")
            .arg(key)
            .args(["--hostname", hostname])
            .args(extra)
            .locked()
            .leaving_nothing_behind()
            .success(),
    )
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
    Facts::parse(&release)["VERSION_CODENAME"].to_string()
}

/// openssh-server on `debian:latest` (scripts/test builds it): a disk made from it with no
/// credential takes root's key at boot, and ssh gets in.
const SSH_IMAGE: &str = "c2vm-test/debian-ssh:latest";

/// [`CHECKS`]' facts, with root's authorized key `key`: returns the machine-id.
fn check_guest(out: &str, hostname: &str, key: &str) -> String {
    let facts = Facts::parse(out);
    let fact = |name: &str| &facts[name];
    assert_eq!(fact("release"), codename_of("debian:latest"), "{out}");
    assert_eq!(
        fact("state"),
        "running",
        "systemctl is-system-running: {out}"
    );
    assert_eq!(
        fact("addr"),
        "10.0.2.15/24",
        "DHCP address from QEMU's user network: {out}"
    );
    assert_eq!(fact("leases"), "1", "{out}");
    assert_eq!(fact("hostname"), hostname, "{out}");
    assert_eq!(fact("key"), key.trim(), "{out}");
    assert_eq!(fact("machine-id").len(), 32, "machine-id: {out}");
    assert_eq!(fact("failed"), "0", "failed units: {out}");
    fact("machine-id").to_string()
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
    let log = convert_image("debian:latest", &a, "vm-a", &key, dir.path(), &[]);
    assert!(log.contains("Secure Boot: yes"), "{log}");
    assert!(
        log.contains("Login: root's password and root's SSH key in the disk"),
        "{log}"
    );
    // A second conversion reuses the kernel image the first one built (its disk is not booted:
    // A's boot proves the same tree).
    let again = dir.path().join("again.qcow2");
    let log = convert_image("debian:latest", &again, "vm-a", &key, dir.path(), &[]);
    assert!(
        log.contains("Reusing the kernel image"),
        "second convert should reuse the kernel build:\n{log}"
    );
    std::fs::remove_file(&again).unwrap();
    // B has Debian's cloud kernel and sshd, and no credential at all: root is locked, and its
    // one boot gets everything at boot. Its boot checks the flavour with everything else.
    let log = stderr(
        &Convert::new(SSH_IMAGE, &b)
            .by_user()
            .args(["--kernel-flavour", "cloud"])
            .locked()
            .leaving_nothing_behind()
            .success(),
    );
    assert!(log.contains("Warning: no way to log in"), "{log}");
    let shadow = tool(
        "debugfs",
        &[
            "-R",
            "cat /etc/shadow",
            &format!("{}?offset={}", b.display(), partition_offset(&b, 2)),
        ],
    );
    assert!(shadow.starts_with("root:*:"), "root is locked: {shadow}");
    // Only the chain's loader is in the guest: Debian's signed systemd-boot, no GRUB package,
    // its tools or modules (shim-signed's loader dependency met by c2vm-esp-loader).
    let root = format!("{}?offset={}", b.display(), partition_offset(&b, 2));
    let installed: Vec<String> = tool("debugfs", &["-R", "cat /var/lib/dpkg/status", &root])
        .lines()
        .filter_map(|l| l.strip_prefix("Package: ").map(str::to_string))
        .collect();
    for wanted in [
        "shim-signed",
        "systemd-boot-efi-amd64-signed",
        "c2vm-esp-loader",
    ] {
        assert!(
            installed.iter().any(|p| p == wanted),
            "{wanted}: {installed:?}"
        );
    }
    let grub: Vec<&String> = installed.iter().filter(|p| p.starts_with("grub")).collect();
    assert!(
        grub.is_empty(),
        "GRUB's packages in a systemd-boot disk: {grub:?}"
    );
    let lib = tool("debugfs", &["-R", "ls /usr/lib", &root]);
    assert!(!lib.split_whitespace().any(|f| f == "grub"), "{lib}");
    tool("qemu-img", &["check", a.to_str().unwrap()]);
    // The raw disk, as any tool sees it: partition table, ESP and root filesystem all clean.
    tool("sgdisk", &["-v", b.to_str().unwrap()]);
    tool("e2fsck", &["-fn", &root]);
    let esp_copy = dir.path().join("esp.img");
    copy_partition(&b, 1, &esp_copy);
    tool("fsck.fat", &["-n", esp_copy.to_str().unwrap()]);

    // One copy of the kernel and initramfs: on the ESP under their packages' names (the guest
    // mounts it at /boot), none in the root's /boot, which is the empty mount point.
    let out = Command::new("mtype")
        .args(["-i", esp_copy.to_str().unwrap(), "::c2vm/kernel"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "mtype: {}", stderr(&out));
    let names = stdout(&out);
    let (kernel, initrd_name) = names.split_once('\n').unwrap();
    let initrd_name = initrd_name.trim();
    assert!(
        kernel.starts_with("/vmlinuz-") && initrd_name.starts_with("/initrd.img-"),
        "{names}"
    );
    let on_esp = tool(
        "mdir",
        &["-i", esp_copy.to_str().unwrap(), "-/", "-b", "::"],
    );
    for f in [kernel, initrd_name] {
        assert!(
            on_esp.lines().any(|l| l == format!("::{f}")),
            "{f} missing:\n{on_esp}"
        );
    }
    let boot = tool("debugfs", &["-R", "ls /boot", &root]);
    assert!(
        !boot.contains("vmlinuz") && !boot.contains("initrd"),
        "{boot}"
    );

    // The initramfs is zstd (fast boot).
    let initrd = dir.path().join("initrd.img");
    let out = Command::new("mcopy")
        .args([
            "-n",
            "-i",
            esp_copy.to_str().unwrap(),
            &format!("::{initrd_name}"),
        ])
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

    // A with Secure Boot enforced on Microsoft's keys: shim, Debian's signed systemd-boot and
    // kernel, all from the image. Then B, Debian's cloud kernel, on BIOS on QEMU's older `pc`
    // board with the console shown (-v): login: shows, no kernel message before it (a quiet
    // boot), and none of the first-boot work guest setup takes away. Every check of both:
    // release, `running`, the DHCP address, hostname, SSH key, no failed unit, and each its own
    // machine-id. (The signed chain with Secure Boot off boots in any_image: the generic
    // bundle's on plain UEFI.)
    // A's boot is also given another key and hostname: those given at boot replace the disk's.
    let pw = password_file(dir.path());
    let (_, key_a) = ssh_key_pair(dir.path(), "key-a");
    let boot = run(c2vm()
        .args(["run", "--cpus", "1", "--firmware", "uefi-secure"])
        .args(["--login", "root", "--password-file"])
        .arg(&pw)
        .arg("--ssh-key")
        .arg(&key_a)
        .args(["--hostname", "vm-a2", "--timeout", "420", "--exec"])
        .arg(format!("{CHECKS}\n{SECURE_BOOT}\n{DPKG_VERIFY}"))
        .arg(&a));
    let out = stdout(&boot);
    assert_eq!(boot.status.code(), Some(0), "{}", stderr(&boot));
    let id_a = check_guest(&out, "vm-a2", &std::fs::read_to_string(&key_a).unwrap());
    let facts = Facts::parse(&out);
    assert_eq!(&facts["secure-boot"], "1", "SecureBoot variable: {out}");
    assert!(facts["lockdown"].contains("[integrity]"), "{out}");
    assert_eq!(&facts["kernel-says"], "1", "{out}");
    // The kernel's two packages (the image and its metapackage) and the chain's three.
    assert_eq!(&facts["verified"], "5", "{out}");
    assert_eq!(&facts["dpkg-verify"], "0", "{out}");

    // B's root password, key and hostname exist only in this run's credentials: the password
    // logs in on the console and the key over ssh, while the guest waits for that ssh. A
    // credential of another name arrives too. No value reaches any process's argv (-vv: nor
    // c2vm's output), and the private files are gone when the run ends.
    let (key_b, key_b_pub) = ssh_key_pair(dir.path(), "key-b");
    let key_b_line = std::fs::read_to_string(&key_b_pub).unwrap();
    let key_body = key_b_line.split_whitespace().nth(1).unwrap().to_string();
    let extra = dir.path().join("extra-credential");
    std::fs::write(&extra, "file-credential-9361").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let first_key = key_b.clone();
    let ssh = std::thread::spawn(move || {
        ssh_until(
            &key_b,
            18095,
            "hostname; touch /run/c2vm-test-ssh",
            std::time::Duration::from_secs(480),
        )
    });
    let watched = run_watching(
        c2vm()
            .args(["run", "-vv", "--persist", "--cpus", "1", "--machine", "pc"])
            .args(["--login", "root", "--password-file"])
            .arg(&pw)
            .arg("--ssh-key")
            .arg(&key_b_pub)
            .args(["--credential", "system.hostname=vm-b", "--credential-file"])
            .arg(format!("c2vm.test={}", extra.display()))
            .args(["--publish", "18095:22", "--timeout", "480", "--exec"])
            .arg(format!(
                "{CHECKS}\n{FIRST_BOOT_WORK}\necho kernel=$(uname -r)\n\
                 echo extra=$(cat /run/credentials/@system/c2vm.test)\n\
                 for i in $(seq 300); do [ -e /run/c2vm-test-ssh ] && break; sleep 1; done\n\
                 echo ssh-seen=$(ls /run/c2vm-test-ssh)"
            ))
            .arg(&b)
            .env("TMPDIR", tmp.path()),
        &[PASSWORD, &key_body, "file-credential-9361"],
    );
    let boot = &watched.output;
    let (console, out) = (stderr(boot), stdout(boot));
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert_eq!(
        ssh.join().unwrap().as_deref(),
        Some("vm-b\n"),
        "ssh with the key given at boot: {console}"
    );
    assert!(
        watched.leaks.is_empty(),
        "values in argv: {:?}",
        watched.leaks
    );
    assert!(
        watched.qemu.iter().any(|q| q
            .contains("-fw_cfg name=opt/io.systemd.credentials/ssh.authorized_keys.root,file=")),
        "QEMU took the credentials as files: {:?}",
        watched.qemu
    );
    assert!(!console.contains(PASSWORD), "the password in c2vm's output");
    assert!(
        listing(tmp.path()).is_empty(),
        "left behind: {:?}",
        listing(tmp.path())
    );
    assert!(console.contains("login:"), "{console}");
    assert!(
        !console.contains("] Linux version"),
        "kernel messages on a quiet boot: {console}"
    );
    let id_b = check_guest(&out, "vm-b", &key_b_line);
    let facts = Facts::parse(&out);
    assert_eq!(&facts["extra"], "file-credential-9361", "{out}");
    assert_eq!(&facts["ssh-seen"], "/run/c2vm-test-ssh", "{out}");
    assert_eq!(
        &facts["conditions"], "no no no",
        "ConditionNeedsUpdate: {out}"
    );
    assert_eq!(&facts["modprobe-units"], "masked masked masked", "{out}");
    assert_eq!(&facts["unwanted-modules"], "0", "{out}");
    assert!(
        facts["kernel"].ends_with("-cloud-amd64"),
        "B's kernel: {out}"
    );
    assert_ne!(
        id_a, id_b,
        "two VMs from two converts must not share a machine-id"
    );

    // As another hypervisor or a cloud gives them: SMBIOS type 11 strings on a plain QEMU
    // command line, no c2vm. systemd reads them early (dmi-sysfs) and the guest applies them:
    // the hostname shows at the login prompt and the key lets ssh in. B's first boot was kept
    // (--persist), so this is a second run of the same disk: the key and hostname given now
    // replace the first's, whose key no longer gets in.
    let (key_c, key_c_pub) = ssh_key_pair(dir.path(), "key-c");
    let key_c_line = std::fs::read_to_string(&key_c_pub).unwrap();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64,+rdrand,-svm",
        ])
        .args(["-m", "1024", "-smp", "1", "-nodefaults", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-drive"])
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            b.display()
        ))
        .args(["-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:18096-:22"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .args([
            "-smbios",
            "type=11,value=io.systemd.credential:system.hostname=smbios-b",
        ])
        .arg("-smbios")
        .arg(format!(
            "type=11,value=io.systemd.credential:ssh.authorized_keys.root={}",
            key_c_line.trim()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let console = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let console = console.clone();
        let mut stdout = qemu.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                console
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let started = std::time::Instant::now();
    while !console.lock().unwrap().contains(" login:")
        && started.elapsed() < std::time::Duration::from_secs(300)
    {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let hostname = ssh_until(
        &key_c,
        18096,
        "hostname",
        std::time::Duration::from_secs(120),
    );
    let first_key_in = ssh_until(&first_key, 18096, "true", std::time::Duration::from_secs(1));
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = reader.join();
    let console = console.lock().unwrap().clone();
    eprintln!(
        "plain QEMU with SMBIOS credentials: {console}\n--- took {:.1} s ---",
        started.elapsed().as_secs_f64()
    );
    assert!(console.contains("smbios-b login:"), "{console}");
    assert_eq!(hostname.as_deref(), Some("smbios-b\n"), "{console}");
    assert_eq!(first_key_in, None, "the first boot's key still gets in");

    // A copy of A whose kernel on the ESP has lost its signature does not boot with Secure Boot
    // on: shim refuses it, and the run ends on those words, not on a timeout.
    let tampered = dir.path().join("tampered.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            a.to_str().unwrap(),
            tampered.to_str().unwrap(),
        ],
    );
    let esp = format!("{}@@{}", tampered.display(), partition_offset(&tampered, 1));
    let kernel = dir.path().join("vmlinuz");
    let mtools = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let names = mtools(&["mtype", "-i", &esp, "::c2vm/kernel"]);
    let on_esp = format!("::{}", names.lines().next().unwrap());
    mtools(&["mcopy", "-n", "-i", &esp, &on_esp, kernel.to_str().unwrap()]);
    tool("sbattach", &["--remove", kernel.to_str().unwrap()]);
    mtools(&["mcopy", "-o", "-i", &esp, kernel.to_str().unwrap(), &on_esp]);
    let boot = run(c2vm()
        .args([
            "run",
            "--cpus",
            "1",
            "--firmware",
            "uefi-secure",
            "--timeout",
            "180",
        ])
        .args(["--expect", "Verification failed|Security violation"])
        .arg(&tampered));
    let console = stderr(&boot);
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert!(!console.contains("login:"), "{console}");
    std::fs::remove_file(&tampered).unwrap();

    // --boot-log: the kernel's messages are back (its first lines are enough).
    let boot = run(c2vm()
        .args(["run", "--cpus", "1", "--boot-log", "--expect"])
        .arg(r"Command line: .*loglevel=7")
        .args(["--timeout", "300"])
        .arg(&b));
    let console = stderr(&boot);
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert!(console.contains("] Linux version"), "{console}");

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
#[ignore = "needs root, dockerd with the ssh test image and QEMU; scripts/test runs it"]
fn a_cloud_init_disk_takes_a_user_a_file_and_its_hostname_from_a_nocloud_seed_once() {
    // The disk has cloud-init and no credential: convert says cloud-init is the way in, with no
    // warning.
    let dir = user_scratch();
    let disk = dir.path().join("c.qcow2");
    let out = Convert::new(SSH_IMAGE, &disk)
        .by_user()
        .args(["--cloud-init", "--kernel-flavour", "cloud", "--json"])
        .locked()
        .leaving_nothing_behind()
        .success();
    let log = stderr(&out);
    assert!(
        log.contains("the image's cloud-init sets users and keys"),
        "{log}"
    );
    assert!(!log.contains("Warning"), "{log}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["login"]["cloud_init"], true, "{report}");
    assert_eq!(report["login"]["password"], false, "{report}");

    // user-data makes a user with a key and sudo, writes a file owned by that user, and runs a
    // command that counts its runs; meta-data names the machine; network-config adds an
    // address. Root's console login is a
    // credential of the same boot.
    let (key, key_pub) = ssh_key_pair(dir.path(), "key-alice");
    let key_line = std::fs::read_to_string(&key_pub).unwrap();
    let key_body = key_line.split_whitespace().nth(1).unwrap().to_string();
    let user_data = dir.path().join("user-data");
    std::fs::write(
        &user_data,
        format!(
            "#cloud-config\n\
             users:\n  - name: alice\n    shell: /bin/bash\n    sudo: ALL=(ALL) NOPASSWD:ALL\n\
             \x20   ssh_authorized_keys:\n      - {}\n\
             write_files:\n  - path: /etc/c2vm-cloud-init-test\n    content: user-data-secret-5309\n\
             \x20   owner: alice:alice\n    permissions: '0640'\n    defer: true\n\
             runcmd:\n  - [sh, -c, 'echo run >> /var/lib/c2vm-runcmd-count']\n",
            key_line.trim()
        ),
    )
    .unwrap();
    let meta_data = dir.path().join("meta-data");
    std::fs::write(
        &meta_data,
        "instance-id: c2vm-test-1\nlocal-hostname: cloud-c\n",
    )
    .unwrap();
    // network-config: DHCP as before (ssh comes in through it), plus an address of its own.
    // cloud-init's networkd renderer matches the interface by its id, the NIC's name on q35.
    let network_config = dir.path().join("network-config");
    std::fs::write(
        &network_config,
        "version: 2\nethernets:\n  enp0s2:\n    dhcp4: true\n    addresses: [10.99.0.5/24]\n",
    )
    .unwrap();
    let pw = password_file(dir.path());
    let seed = |cmd: &mut Command| {
        cmd.arg("--cloud-init")
            .arg(&user_data)
            .arg("--meta-data")
            .arg(&meta_data)
            .arg("--network-config")
            .arg(&network_config)
            .arg("--password-file")
            .arg(&pw)
            .args(["--cpus", "1", "--login", "root", "--timeout", "480"]);
    };

    // First boot, kept (--persist): alice gets in over ssh with her key, as the guest waits for
    // that, and sees (once cloud-init is done) the hostname, the file and its owner, and sudo;
    // runcmd ran once. No value of the
    // seed reaches any process's argv or c2vm's output, and its private file is gone at the end.
    let ssh = std::thread::spawn(move || {
        ssh_until_as(
            "alice",
            &key,
            18097,
            "sudo -n cloud-init status --wait >/dev/null; hostname; \
             stat -c '%U %a' /etc/c2vm-cloud-init-test && sudo -n touch /run/c2vm-test-ssh",
            std::time::Duration::from_secs(480),
        )
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut first = c2vm();
    first.args(["run", "-vv", "--persist", "--publish", "18097:22"]);
    seed(&mut first);
    first
        .arg("--exec")
        .arg(
            "echo status=$(cloud-init status --wait | tail -n 1)\n\
             echo hostname=$(hostname)\n\
             echo file=$(cat /etc/c2vm-cloud-init-test)\n\
             echo runs=$(wc -l < /var/lib/c2vm-runcmd-count)\n\
             echo failed=$(systemctl --failed --no-legend | wc -l)\n\
             echo static=$(ip -4 -o addr show | grep -c ' 10.99.0.5/24 ')\n\
             for i in $(seq 300); do [ -e /run/c2vm-test-ssh ] && break; sleep 1; done\n\
             echo ssh-seen=$(ls /run/c2vm-test-ssh)",
        )
        .arg(&disk)
        .env("TMPDIR", tmp.path());
    let watched = run_watching(&mut first, &["user-data-secret-5309", &key_body]);
    let boot = &watched.output;
    let (console, out) = (stderr(boot), stdout(boot));
    assert_eq!(boot.status.code(), Some(0), "{console}");
    assert_eq!(
        ssh.join().unwrap().as_deref(),
        Some("cloud-c\nalice 640\n"),
        "ssh as the user-data's user: {console}"
    );
    let facts = Facts::parse(&out);
    assert_eq!(&facts["status"], "status: done", "{out}");
    assert_eq!(&facts["hostname"], "cloud-c", "{out}");
    assert_eq!(&facts["file"], "user-data-secret-5309", "{out}");
    assert_eq!(&facts["runs"], "1", "{out}");
    assert_eq!(&facts["failed"], "0", "{out}");
    assert_eq!(&facts["static"], "1", "network-config's address: {out}");
    assert_eq!(&facts["ssh-seen"], "/run/c2vm-test-ssh", "{out}");
    assert!(
        watched.leaks.is_empty(),
        "values in argv: {:?}",
        watched.leaks
    );
    assert!(
        watched
            .qemu
            .iter()
            .any(|q| q.contains("id=cidata,readonly=on")),
        "the seed is a read-only disk: {:?}",
        watched.qemu
    );
    assert!(
        !console.contains("user-data-secret-5309"),
        "user-data in c2vm's output"
    );
    assert!(
        console
            .contains("NoCloud seed for this boot (CIDATA): user-data, meta-data, network-config"),
        "{console}"
    );
    assert!(
        listing(tmp.path()).is_empty(),
        "left behind: {:?}",
        listing(tmp.path())
    );

    // Second boot with the same seed: the same instance, so its per-instance work (the user,
    // the file, runcmd) does not run again; the hostname and the user are still there.
    let mut second = c2vm();
    second.arg("run");
    seed(&mut second);
    second
        .arg("--exec")
        .arg(
            "echo status=$(cloud-init status --wait | tail -n 1)\n\
             echo runs=$(wc -l < /var/lib/c2vm-runcmd-count)\n\
             echo hostname=$(hostname)\n\
             echo alice=$(id -un alice)",
        )
        .arg(&disk);
    let boot = run(&mut second);
    let out = stdout(&boot);
    assert_eq!(boot.status.code(), Some(0), "{}", stderr(&boot));
    let facts = Facts::parse(&out);
    assert_eq!(&facts["status"], "status: done", "{out}");
    assert_eq!(
        &facts["runs"], "1",
        "runcmd ran again on the second boot: {out}"
    );
    assert_eq!(&facts["hostname"], "cloud-c", "{out}");
    assert_eq!(&facts["alice"], "alice", "{out}");
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn docker_errors_are_clear_and_leave_nothing_behind() {
    let dir = scratch();
    let work = subdir(dir.path(), "work");
    let out = dir.path().join("x.img");
    // `args`: the source, then options.
    let attempt = |args: &[&str], env: Option<(&str, &str)>| {
        let mut convert = Convert::new(args[0], &out)
            .args(&args[1..])
            .arg("--workdir")
            .arg(&work);
        if let Some((k, v)) = env {
            convert = convert.env(k, v);
        }
        let o = convert.output();
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
    let err = attempt(&["debian:latest", "--platform", "linux/riscv64"], None);
    assert!(
        err.contains("c2vm boots linux/amd64 or linux/arm64"),
        "{err}"
    );
    // The engine's debian:latest is amd64: not pulled again (never), and not taken for arm64.
    let err = attempt(
        &[
            "debian:latest",
            "--platform",
            "linux/arm64",
            "--pull",
            "never",
        ],
        None,
    );
    assert!(
        err.contains("debian:latest is a linux/amd64 image, not linux/arm64"),
        "{err}"
    );
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

    // A Debian image whose apt sources lead nowhere: the kernel template's build fails, and
    // the last line says which step and quotes apt's own error, with no terminal escapes.
    let ctx = subdir(dir.path(), "broken-apt");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:latest\n\
         RUN rm -f /etc/apt/sources.list.d/* && \
         echo 'deb http://127.0.0.1:9/debian trixie main' > /etc/apt/sources.list\n",
    )
    .unwrap();
    tool(
        "docker",
        &[
            "build",
            "-q",
            "-t",
            "c2vm-test-broken-apt",
            ctx.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(&ctx).unwrap();
    let err = attempt(&["c2vm-test-broken-apt"], None);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("c2vm: error:") && last.contains("at `RUN") && last.contains("E: "),
        "the last line names the step and quotes apt: {err}"
    );
    assert!(!err.contains('\x1b'), "terminal escapes in: {err}");
    assert!(!err.contains("Removing intermediate container"), "{err}");
    docker(&["rmi", "c2vm-test-broken-apt"]);
    assert_eq!(containers(), before, "a container was left behind");
}

/// An image whose config names the wrong architecture (Debian 12's Docker ignores `docker import
/// --platform`, so an arm64 root imported there says amd64) is refused before any build, in one
/// line that names both and `--platform`, leaving no container behind. The root is one fake
/// program: an ELF header for the architecture the engine is not, imported without a platform
/// (so its config says the engine's, as Debian 12's Docker does whatever was asked).
#[test]
#[ignore = "needs dockerd; scripts/test runs it"]
fn an_image_whose_programs_are_for_another_architecture_than_its_config_is_refused() {
    let dir = scratch();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let engine = docker(&["version", "-f", "{{.Server.Arch}}"]);
    let (config, program, machine) = match engine.trim() {
        "arm64" => ("linux/arm64", "linux/amd64", 62u8),
        _ => ("linux/amd64", "linux/arm64", 0xb7u8),
    };
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\0\0".to_vec();
    elf[18] = machine;
    elf.resize(64, 0);
    std::fs::write(root.join("bin/sh"), &elf).unwrap();
    let tarball = dir.path().join("wrong-arch.tar");
    tool(
        "tar",
        &[
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            "bin",
        ],
    );
    let _lock = host_lock();
    let before = containers();
    docker(&[
        "import",
        "-c",
        "CMD [\"/bin/sh\"]",
        tarball.to_str().unwrap(),
        "c2vm-test-wrong-arch:latest",
    ]);
    let out = dir.path().join("x.img");
    let o = run(c2vm()
        .args([
            "convert",
            "c2vm-test-wrong-arch:latest",
            "--pull",
            "never",
            "-o",
        ])
        .arg(&out));
    docker(&["rmi", "c2vm-test-wrong-arch:latest"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "its config says {config}, but its /bin/sh is a {program} program"
        )) && last.contains(&format!("--platform {program}")),
        "one line names both and --platform: {err}"
    );
    assert!(!out.exists());
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
