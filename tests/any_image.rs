//! Images with no kernel, no init and no package manager become VMs: c2vm's generic kernel bundle
//! and c2vm-init, our own PID 1. The images are built here `FROM scratch` with Debian's static
//! busybox (there is no registry): a web server as a numeric non-root user, a program that exits
//! 42, one that fails once, and an unknown distribution.
mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `c2vm run DISK` to its end: (exit code, console). `firmware` as for [`boot_exec`]; the
/// kernel directly ([`DIRECT`]) unless the test is about firmware: the scratch web server's
/// boots carry the generic bundle's loaders on BIOS and plain UEFI.
fn run_to_end(disk: &Path, firmware: &str) -> (i32, String) {
    let mut command = c2vm();
    command.args(["run", "--cpus", "1"]);
    match firmware {
        DIRECT => command.arg("--direct-kernel"),
        firmware => command.args(["--firmware", firmware]),
    };
    let o = run(command.arg(disk).stdin(Stdio::null()));
    (o.status.code().unwrap_or(-1), stdout(&o))
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror and QEMU; scripts/test runs it"]
fn a_scratch_web_server_boots_on_the_generic_kernel_and_serves_its_page() {
    let dir = user_scratch();
    scratch_image(
        dir.path(),
        "c2vm-test/scratch-web",
        "ENV GREETING=hello-from-env\nWORKDIR /www\nUSER 4242:4242\nEXPOSE 8080\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\", \"mkdir -p /tmp/site && \
         printf 'uid=%s dir=%s greeting=%s\\\\n' \\\"$(id -u)\\\" \\\"$(pwd)\\\" \\\"$GREETING\\\" > /tmp/site/index.html && \
         cat /etc/resolv.conf && ip -4 -o addr show scope global && exec httpd -f -p 8080 -h /tmp/site\"]",
        &[],
    );
    let disk = dir.path().join("web.qcow2");
    let log = stderr(
        &Convert::new("c2vm-test/scratch-web", &disk)
            .by_user()
            .locked()
            .success(),
    );
    assert!(log.contains("Kernel: c2vm's generic bundle"), "{log}");
    assert!(log.contains("Init: c2vm-init"), "{log}");
    for firmware in ["bios", "uefi"] {
        let started = Instant::now();
        let mut vm = Command::new(env!("CARGO_BIN_EXE_c2vm"))
            .args([
                "run",
                "--cpus",
                "1",
                "--firmware",
                firmware,
                "--publish",
                "18081:8080",
            ])
            .arg(&disk)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let page = first_page(18081, Duration::from_secs(120));
        let took = started.elapsed();
        // SAFETY: ends the VM's process group (c2vm and QEMU).
        unsafe { libc::kill(-(vm.id() as i32), libc::SIGTERM) };
        let mut console = String::new();
        use std::io::Read;
        let _ = vm.stdout.take().unwrap().read_to_string(&mut console);
        let _ = vm.wait();
        eprintln!("{firmware}: page after {took:?}\n{console}");
        assert_eq!(
            page, "uid=4242 dir=/www greeting=hello-from-env\n",
            "{console}"
        );
        // DHCP from QEMU's user network: address and DNS, as the app saw them.
        assert!(console.contains("inet 10.0.2.15/24"), "{console}");
        assert!(console.contains("nameserver 10.0.2.3"), "{console}");
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror and QEMU; scripts/test runs it"]
fn the_apps_exit_status_leaves_the_vm_and_restart_on_failure_runs_it_again() {
    let dir = user_scratch();
    scratch_image(
        dir.path(),
        "c2vm-test/exit42",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo hello from the app; exit 42\"]",
        &[],
    );
    // With Secure Boot enforced: shim, the bundle's signed systemd-boot and Debian's signed
    // cloud kernel, all carried by the bundle.
    let disk = dir.path().join("exit42.qcow2");
    let log = stderr(
        &Convert::new("c2vm-test/exit42", &disk)
            .by_user()
            .args(["--secure-boot", "on"])
            .locked()
            .success(),
    );
    assert!(log.contains("Secure Boot: yes"), "{log}");
    let (code, console) = run_to_end(&disk, "uefi-secure");
    assert_eq!(code, 42, "{console}");
    assert!(console.contains("hello from the app"), "{console}");

    // Settings at boot, read by c2vm-init: variables from a file and a flag on top of the
    // image's, arguments in place of its CMD (after its ENTRYPOINT), the hostname. The app's
    // status still leaves the run; no value reaches QEMU's argv; no file is left.
    let tmp = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("app.env");
    std::fs::write(
        &env_file,
        "# the app's settings\nGREETING=from-env-file-5521\n",
    )
    .unwrap();
    let watched = run_watching(
        c2vm()
            .args(["run", "--cpus", "1", "--direct-kernel", "--hostname", "app-1"])
            .args(["-e", "OTHER=from-flag", "--env-file"])
            .arg(&env_file)
            .arg(&disk)
            .args([
                "--",
                "echo greeting=$GREETING other=$OTHER host=$(cat /proc/sys/kernel/hostname); exit 7",
            ])
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null()),
        &["from-env-file-5521"],
    );
    let console = stdout(&watched.output);
    assert_eq!(watched.output.status.code(), Some(7), "{console}");
    assert!(
        console.contains("greeting=from-env-file-5521 other=from-flag host=app-1"),
        "{console}"
    );
    assert!(
        !console.contains("hello from the app"),
        "CMD replaced: {console}"
    );
    assert!(watched.leaks.is_empty(), "{:?}", watched.leaks);
    assert!(
        watched
            .qemu
            .iter()
            .any(|q| q.contains("opt/io.systemd.credentials/c2vm.args")),
        "{:?}",
        watched.qemu
    );
    assert!(
        !watched
            .qemu
            .iter()
            .any(|q| q.contains("from-flag") || q.contains("exit 7")),
        "{:?}",
        watched.qemu
    );
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // Interrupted while the VM runs (SIGINT, as Ctrl-C on a scripted run): it ends at once
    // with 130, QEMU with it, and the credentials' files and the cloud-init seed are gone.
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, "#cloud-config\n").unwrap();
    let mut vm = c2vm()
        .args(["run", "--cpus", "1", "--direct-kernel", "-e", "GREETING=x"])
        .args(["--expect", "never-shown-4417", "--cloud-init"])
        .arg(&user_data)
        .arg(&disk)
        .args(["--", "sleep 600"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let both = |files: Vec<String>| {
        ["c2vm-credentials.", "c2vm-cloud-init."]
            .iter()
            .all(|p| files.iter().any(|f| f.starts_with(p)))
    };
    while !both(listing(tmp.path())) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(both(listing(tmp.path())), "{:?}", listing(tmp.path()));
    std::thread::sleep(Duration::from_secs(5));
    // SAFETY: signals the child just spawned.
    unsafe { libc::kill(vm.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut vm, Duration::from_secs(10), "c2vm run after SIGINT");
    assert_eq!(status.code(), Some(130));
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
    let tmp_path = tmp.path().to_string_lossy().into_owned();
    assert!(
        !command_lines().iter().any(|l| l.contains(&tmp_path)),
        "QEMU outlived the run"
    );

    // On an encrypted root: the generic bundle's initramfs asks for the passphrase, c2vm types
    // it on the console it relays, and the app's status still leaves the run.
    let encrypted = dir.path().join("exit42-luks.qcow2");
    let pass = dir.path().join("luks-passphrase");
    std::fs::write(&pass, "scratch app 5610\n").unwrap();
    let log = stderr(
        &Convert::new("c2vm-test/exit42", &encrypted)
            .by_user()
            .arg("--luks-passphrase-file")
            .arg(&pass)
            .locked()
            .success(),
    );
    assert!(log.contains("Root: encrypted (LUKS2"), "{log}");
    let o = run(c2vm()
        .args([
            "run",
            "--cpus",
            "1",
            "--direct-kernel",
            "--luks-passphrase-file",
        ])
        .arg(&pass)
        .arg(&encrypted)
        .stdin(Stdio::null()));
    let console = stdout(&o);
    assert_eq!(o.status.code(), Some(42), "{console}{}", stderr(&o));
    assert!(
        console.contains("c2vm_root: set up successfully")
            && console.contains("hello from the app"),
        "{console}"
    );
    // A passphrase for a disk whose root is plain is refused before QEMU starts.
    let o = run(c2vm()
        .args(["run", "--direct-kernel", "--luks-passphrase-file"])
        .arg(&pass)
        .arg(&disk));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        the_error(&stderr(&o)).contains("is not encrypted"),
        "{}",
        stderr(&o)
    );

    // Fails once (its mark survives in /tmp across restarts, not across boots), then succeeds.
    // An unknown distribution's os-release changes nothing: generic kernel, c2vm-init.
    scratch_image(
        dir.path(),
        "c2vm-test/flaky",
        "COPY os-release /etc/os-release\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\", \"if [ -e /tmp/ran ]; then echo second run; exit 0; fi; \
         touch /tmp/ran; echo first run fails; exit 3\"]",
        &[(
            "os-release",
            "NAME=\"Nowhere OS\"\nID=nowhere\nVERSION_ID=1\nPRETTY_NAME=\"Nowhere OS 1\"\n",
        )],
    );
    let disk = dir.path().join("flaky.qcow2");
    let log = stderr(
        &Convert::new("c2vm-test/flaky", &disk)
            .by_user()
            .args(["--restart", "on-failure"])
            .locked()
            .success(),
    );
    assert!(
        log.contains("Kernel: c2vm's generic bundle") && log.contains("Init: c2vm-init"),
        "{log}"
    );
    let (code, console) = run_to_end(&disk, DIRECT);
    assert_eq!(code, 0, "{console}");
    let first = console.find("first run fails").unwrap_or(usize::MAX);
    let second = console.find("second run").unwrap_or(0);
    assert!(first < second, "runs twice, failing first: {console}");
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror and QEMU; scripts/test runs it"]
fn an_image_with_systemd_but_no_kernel_boots_to_login_on_the_generic_kernel() {
    let dir = user_scratch();
    let ctx = dir.path().join("systemd");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:latest\n\
         RUN apt-get update && apt-get install -y --no-install-recommends systemd-sysv udev && \
         rm -rf /var/lib/apt/lists/* && ! command -v modprobe\n",
    )
    .unwrap();
    {
        let _lock = host_lock();
        tool(
            "docker",
            &[
                "build",
                "-q",
                "-t",
                "c2vm-test/systemd-nokernel",
                ctx.to_str().unwrap(),
            ],
        );
    }
    let disk = dir.path().join("systemd.qcow2");
    let pw = password_file(dir.path());
    let log = stderr(
        &Convert::new("c2vm-test/systemd-nokernel", &disk)
            .by_user()
            .args(["--kernel", "generic"])
            .password_file(&pw)
            .locked()
            .success(),
    );
    assert!(log.contains("Init: the image's Systemd"), "{log}");
    // Images often leave out kmod: without modprobe the kernel loads no module on demand.
    assert!(log.contains("has no modprobe"), "{log}");
    let (code, out) = boot_exec(
        &disk,
        DIRECT,
        &pw,
        &facts_script(&[
            ("kernel", "uname -r"),
            ("state", "systemctl is-system-running --wait"),
            // No iproute2 in this image: poll `hostname -I` for an IPv4 address, 60 s at most.
            (
                "addresses",
                "for i in $(seq 60); do hostname -I | grep -q '[0-9]\\.[0-9]' && break; sleep 1; \
                 done; hostname -I",
            ),
            ("efi", "findmnt -n -o FSTYPE /boot"),
            ("failed", "systemctl --failed --no-legend --plain | wc -l"),
        ]),
    );
    assert_eq!(code, 0, "{out}");
    let facts = Facts::parse(&out);
    assert!(
        facts["kernel"].ends_with("-cloud-amd64"),
        "the bundle's kernel: {out}"
    );
    assert_eq!(&facts["state"], "running", "{out}");
    assert_eq!(&facts["failed"], "0", "no failed unit: {out}");
    assert_eq!(&facts["efi"], "vfat", "the ESP is mounted: {out}");
    assert_eq!(
        facts["addresses"].split_whitespace().next(),
        Some("10.0.2.15"),
        "DHCP by networkd: {out}"
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror and QEMU; scripts/test runs it"]
fn the_power_button_stops_the_app_with_its_stop_signal_and_powers_off() {
    let dir = user_scratch();
    scratch_image(
        dir.path(),
        "c2vm-test/trap",
        "ENTRYPOINT [\"/bin/sh\", \"-c\", \"trap 'echo app got SIGTERM; exit 0' TERM; \
         echo app ready; while :; do sleep 1; done\"]",
        &[],
    );
    let disk = dir.path().join("trap.qcow2");
    Convert::new("c2vm-test/trap", &disk)
        .by_user()
        .args(["--stop-timeout", "5"])
        .locked()
        .success();
    let mut vm = Command::new(env!("CARGO_BIN_EXE_c2vm"))
        .args(["run", "--direct-kernel", "--cpus", "1"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdin = vm.stdin.take().unwrap();
    let stdout = vm.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut console = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let ready = line.contains("app ready");
                console.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    assert!(
        console.iter().any(|l| l.contains("app ready")),
        "{console:?}"
    );
    // QEMU's monitor shares the console: Ctrl-A c, then the ACPI power button.
    use std::io::Write;
    stdin.write_all(b"\x01c").unwrap();
    stdin.write_all(b"system_powerdown\n").unwrap();
    stdin.flush().unwrap();
    let pressed = Instant::now();
    let status = wait_exit(
        &mut vm,
        Duration::from_secs(5 + 20),
        "the VM after the power button",
    );
    let took = pressed.elapsed();
    console.extend(rx.try_iter());
    let text = console.join("\n");
    eprintln!("off {took:?} after the button\n{text}");
    assert!(text.contains("app got SIGTERM"), "{text}");
    assert_eq!(
        status.code(),
        Some(0),
        "the app's status after its handler: {text}"
    );
}
