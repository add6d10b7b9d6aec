//! A VM that stays up (`c2vm run -d`), driven like a container through c2vm's guest agent: one
//! boot of debian:latest, then exec (exact bytes, stderr apart, exit codes, stdin, a large
//! output streamed), cp both ways, wait, logs, ps, and stop leaving nothing.
mod common;
use common::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// `c2vm SUBCOMMAND ARGS…` with this test's state directory.
fn c2vm_in(state: &Path, args: &[&str]) -> Command {
    let mut cmd = c2vm();
    cmd.env("XDG_RUNTIME_DIR", state).args(args);
    cmd
}

fn exec(state: &Path, name: &str, argv: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", name, "--"];
    args.extend(argv);
    run(&mut c2vm_in(state, &args))
}

/// `c2vm run -d --restore FILE --name web ARGS…`.
fn restore(state: &Path, file: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec![
        "run",
        "-d",
        "--restore",
        file.to_str().unwrap(),
        "--name",
        "web",
    ];
    all.extend(args);
    run(&mut c2vm_in(state, &all))
}

/// `cmd` interrupted (SIGINT, as Ctrl-C) after `delay`: it exits 130 saying it cleaned up.
fn interrupt_after(mut cmd: Command, delay: std::time::Duration) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(delay);
    // SAFETY: a signal to the child c2vm, which the test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{said}");
    assert!(said.contains(INTERRUPTED), "{said}");
}

/// 100 MB of output through `exec`: all of it arrives, and c2vm's memory does not grow with it.
fn streams_100_mb(state: &Path, name: &str) {
    let mut big = c2vm_in(
        state,
        &["exec", name, "--", "head", "-c", "100000000", "/dev/zero"],
    );
    big.stderr(Stdio::inherit());
    let (peak, bytes, code) = peak_memory(big);
    assert_eq!((bytes, code), (100_000_000, 0));
    assert!(
        peak < 64 << 20,
        "c2vm exec reached {} MiB for 100 MB of output",
        peak >> 20
    );
    eprintln!(
        "--- 100 MB through exec in {name}: c2vm's peak RSS {} MiB ---",
        peak >> 20
    );
}

/// The largest resident size c2vm reached while `cmd` ran (polled), and what it wrote.
fn peak_memory(mut cmd: Command) -> (u64, u64, i32) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match stdout.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (peak, counter.join().unwrap(), code)
}

/// A plain QGA client: a JSON object each way on the agent's socket, after QGA's handshake.
struct Qga {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qga {
    fn connect(socket: &Path) -> Qga {
        use std::io::{BufRead, Write};
        let mut writer = std::os::unix::net::UnixStream::connect(socket).unwrap();
        writer
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut reader = std::io::BufReader::new(writer.try_clone().unwrap());
        writer
            .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":4711}}\n")
            .unwrap();
        let mut junk = Vec::new();
        reader.read_until(0xff, &mut junk).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), r#"{"return":4711}"#);
        Qga { reader, writer }
    }

    fn ask(&mut self, request: &str) -> serde_json::Value {
        use std::io::{BufRead, Write};
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        answer
            .get("return")
            .cloned()
            .unwrap_or_else(|| panic!("{request}: {answer}"))
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and QEMU; scripts/test runs it"]
fn a_debian_vm_boots_once_and_answers_exec_cp_wait_then_stops_leaving_nothing() {
    let dir = scratch();
    let d = dir.path();
    let state = subdir(d, "state");
    let disk = d.join("debian.qcow2");
    let spdx = d.join("debian.spdx.json");
    Convert::new("debian:latest", &disk)
        .password_file(&password_file(d))
        .args(["--sbom".as_ref(), spdx.as_os_str()])
        .locked()
        .success();

    // A SIGINT while `run -d` waits for the agent leaves no VM, socket or file.
    interrupt_after(
        c2vm_in(
            &state,
            &["run", "-d", "--name", "int", disk.to_str().unwrap()],
        ),
        std::time::Duration::from_secs(3),
    );
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());

    // One boot.
    let started = std::time::Instant::now();
    let up = run(&mut c2vm_in(
        &state,
        &["run", "-d", "--name", "web", disk.to_str().unwrap()],
    ));
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    assert_eq!(stdout(&up).trim(), "web");
    eprintln!(
        "--- run -d answered after {:.1} s ---",
        started.elapsed().as_secs_f64()
    );

    // The SBOM, valid SPDX, lists exactly the packages dpkg lists in the booted guest, and what
    // c2vm put there: the kernel the guest runs (its package and the file's sha256 on the ESP),
    // the Secure Boot chain, c2vm-init as the agent. The same image's CycloneDX SBOM, valid
    // too, lists the same packages.
    let sbom = validated_sbom(&spdx);
    let out = exec(
        &state,
        "web",
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version}\n",
        ],
    );
    let mut guest: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("installed ").map(str::to_string))
        .collect();
    guest.sort();
    assert!(guest.len() > 100, "{guest:?}");
    assert_eq!(sbom_packages(&sbom, "deb"), guest);
    let running = stdout(&exec(&state, "web", &["uname", "-r"]));
    let esp_kernel = stdout(&exec(
        &state,
        "web",
        &["sha256sum", &format!("/boot/vmlinuz-{}", running.trim())],
    ));
    let parts = sbom["packages"].as_array().unwrap();
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the SBOM"))
    };
    assert_eq!(part("linux")["versionInfo"], running.trim());
    assert_eq!(
        part("linux")["checksums"][0]["checksumValue"].as_str(),
        esp_kernel.split_whitespace().next()
    );
    for name in [
        "shim",
        "MokManager",
        "systemd-boot",
        "SYSLINUX",
        "c2vm-init",
    ] {
        part(name);
    }
    let cdx = d.join("debian.cdx.json");
    Convert::new("debian:latest", &d.join("again.raw"))
        .args(["--sbom".as_ref(), cdx.as_os_str()])
        .locked()
        .success();
    std::fs::remove_file(d.join("again.raw")).unwrap();
    assert_eq!(sbom_packages(&validated_sbom(&cdx), "deb"), guest);

    // A second VM of that name is refused while the first runs.
    let again = run(&mut c2vm_in(
        &state,
        &["run", "-d", "--name", "web", disk.to_str().unwrap()],
    ));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("a VM named web is running"),
        "{}",
        stderr(&again)
    );

    // Exact bytes, binary included, and stderr apart.
    let out = exec(
        &state,
        "web",
        &["sh", "-c", "printf 'a\\000b\\377\\n'; printf oops >&2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"a\0b\xff\n");
    assert_eq!(out.stderr, b"oops");
    // Exit codes, a signal as 128+N.
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 77", 77),
        ("kill -9 $$", 137),
    ] {
        let out = exec(&state, "web", &["sh", "-c", script]);
        assert_eq!(out.status.code(), Some(code), "{script}: {}", stderr(&out));
    }
    // stdin with -i; -e, -u and -w reach the command.
    let out = run_with_input(
        &mut c2vm_in(
            &state,
            &["exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z; echo $0"],
        ),
        b"from the host\n",
    );
    assert_eq!(stdout(&out), "FROM THE HOST\nsh\n", "{}", stderr(&out));
    let out = run(&mut c2vm_in(
        &state,
        &[
            "exec",
            "-e",
            "GREETING=hi",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "web",
            "--",
            "sh",
            "-c",
            "echo $GREETING $(id -un) $(pwd)",
        ],
    ));
    assert_eq!(stdout(&out), "hi nobody /tmp\n", "{}", stderr(&out));
    // A missing program is c2vm's error for that command, in one line.
    let out = exec(&state, "web", &["no-such-program"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));

    // 100 MB streamed: all of it arrives, and c2vm's memory does not grow with it.
    streams_100_mb(&state, "web");

    // A SIGINT during exec: c2vm exits 130 and the command in the guest is ended too.
    interrupt_after(
        c2vm_in(
            &state,
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo $$ > /tmp/interrupted.pid; exec sleep 600",
            ],
        ),
        std::time::Duration::from_secs(2),
    );
    let out = exec(
        &state,
        "web",
        &[
            "sh",
            "-c",
            "sleep 1; kill -0 $(cat /tmp/interrupted.pid) 2>/dev/null && echo alive || echo gone",
        ],
    );
    assert_eq!(stdout(&out), "gone\n", "{}", stderr(&out));

    // -t: a terminal in the guest. With no terminal on c2vm's side it is 24x80; with one (here
    // script(1)'s) it has that terminal's size, keys typed reach the command, and its status
    // is c2vm's.
    let out = run(&mut c2vm_in(
        &state,
        &[
            "exec",
            "-t",
            "web",
            "--",
            "sh",
            "-c",
            "tty; stty size; [ -t 2 ] && echo err-tty",
        ],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.starts_with("/dev/pts/") && said.contains("\r\n24 80\r\nerr-tty\r\n"),
        "{said:?}"
    );
    let out = run_with_input(
        &mut c2vm_in(
            &state,
            &[
                "exec",
                "-it",
                "web",
                "--",
                "sh",
                "-c",
                "read x; echo got=$x; cat; echo end",
            ],
        ),
        b"typed\nmore\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("got=typed\r\n") && stdout(&out).ends_with("end\r\n"),
        "{:?}",
        stdout(&out)
    );
    let inner = format!(
        "stty rows 33 cols 101; XDG_RUNTIME_DIR={} {} exec -it web -- sh -c 'stty size; read k; echo key=$k; exit 3'",
        state.display(),
        env!("CARGO_BIN_EXE_c2vm")
    );
    let out = run_with_input(
        Command::new("script").args(["-qec", &inner, "/dev/null"]),
        b"x\r",
    );
    assert_eq!(out.status.code(), Some(3), "{:?}", stdout(&out));
    assert!(stdout(&out).contains("33 101\r\n"), "{:?}", stdout(&out));
    assert!(stdout(&out).contains("key=x\r\n"), "{:?}", stdout(&out));

    // An agent that dies while a command runs: c2vm says so in one line with docker's 125,
    // long before the command would have ended; systemd restarts the agent for the next exec.
    // The command that kills it runs while the first holds its channel: commands run side by
    // side.
    let mut long = c2vm_in(
        &state,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 600",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = [0u8; 8];
    long.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"started\n");
    let cut = std::time::Instant::now();
    let kill = exec(
        &state,
        "web",
        &[
            "sh",
            "-c",
            "(sleep 1; systemctl kill --kill-whom=main -s KILL c2vm-agent.service) >/dev/null 2>&1 &",
        ],
    );
    assert_eq!(kill.status.code(), Some(0), "{}", stderr(&kill));
    let mut said = String::new();
    long.stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(long.wait().unwrap().code(), Some(125), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("stopped answering"), "{said}");
    eprintln!(
        "--- a dead agent was said after {:.1} s ---",
        cut.elapsed().as_secs_f64()
    );
    let out = run(&mut c2vm_in(
        &state,
        &["wait", "web", "--exec", "true", "--timeout", "60"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // cp both ways, modes kept; into a directory, and to a new name.
    let host_dir = subdir(d, "tree");
    std::fs::write(host_dir.join("script.sh"), b"#!/bin/sh\necho copied\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        host_dir.join("script.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::create_dir(host_dir.join("sub")).unwrap();
    std::fs::write(host_dir.join("sub/data"), vec![7u8; 3 << 20]).unwrap();
    let cp = run(&mut c2vm_in(
        &state,
        &["cp", host_dir.to_str().unwrap(), "web:/root/"],
    ));
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let out = exec(
        &state,
        "web",
        &[
            "sh",
            "-c",
            "stat -c '%a %s' /root/tree/script.sh /root/tree/sub/data; /root/tree/script.sh",
        ],
    );
    assert_eq!(
        stdout(&out),
        "750 22\n644 3145728\ncopied\n",
        "{}",
        stderr(&out)
    );
    let back = d.join("back");
    let cp = run(&mut c2vm_in(
        &state,
        &["cp", "web:/root/tree", back.to_str().unwrap()],
    ));
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    assert!(same_bytes(
        &host_dir.join("sub/data"),
        &back.join("sub/data")
    ));
    let mode = std::fs::metadata(back.join("script.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    let cp = run(&mut c2vm_in(
        &state,
        &[
            "cp",
            "web:/etc/os-release",
            d.join("no/such/dir/x").to_str().unwrap(),
        ],
    ));
    assert_eq!(cp.status.code(), Some(1));
    assert!(stderr(&cp).contains("does not exist"), "{}", stderr(&cp));
    let cp = run(&mut c2vm_in(
        &state,
        &["cp", host_dir.to_str().unwrap(), "web:/no/such/dir/x"],
    ));
    assert_eq!(cp.status.code(), Some(1));
    assert!(
        stderr(&cp).contains("web:/no/such/dir does not exist"),
        "{}",
        stderr(&cp)
    );

    // wait: a unit, a port (a listener started as a transient service), a file, the console.
    let out = exec(
        &state,
        "web",
        &[
            "systemd-run",
            "--unit=listener",
            "systemd-socket-activate",
            "-l",
            "8080",
            "cat",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for condition in [
        &["--unit", "listener.service"][..],
        &["--port", "8080"],
        &["--file", "/root/tree/script.sh"],
        &["--console", "."],
    ] {
        let mut args = vec!["wait", "web", "--timeout", "60"];
        args.extend(condition);
        let out = run(&mut c2vm_in(&state, &args));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{condition:?}: {}",
            stderr(&out)
        );
    }
    let out = run(&mut c2vm_in(
        &state,
        &["wait", "web", "--port", "9", "--timeout", "2"],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing listens on TCP port 9"),
        "{}",
        stderr(&out)
    );

    // A QGA client that is not c2vm: standard commands only, as libvirt sends them
    // (`virsh qemu-agent-command`, `virsh domifaddr --source agent`).
    let socket = state.join("c2vm/vms/web/agent.sock");
    let mut qga = Qga::connect(&socket);
    let info = qga.ask(r#"{"execute":"guest-info"}"#);
    assert!(
        info["supported_commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "guest-exec"),
        "{info}"
    );
    let pid = qga.ask(r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","echo qga"],"capture-output":true}}"#)["pid"].clone();
    let status = loop {
        let status = qga.ask(&format!(
            r#"{{"execute":"guest-exec-status","arguments":{{"pid":{pid}}}}}"#
        ));
        if status["exited"] == true {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        (status["exitcode"].as_i64(), status["out-data"].as_str()),
        (Some(0), Some("cWdhCg==")),
        "{status}"
    );
    let interfaces = qga.ask(r#"{"execute":"guest-network-get-interfaces"}"#);
    assert!(
        interfaces
            .to_string()
            .contains("\"ip-address\":\"10.0.2.15\""),
        "{interfaces}"
    );
    drop(qga);

    // logs and ps.
    let logs = run(&mut c2vm_in(&state, &["logs", "web"]));
    assert!(!logs.stdout.is_empty());
    let ps = run(&mut c2vm_in(&state, &["ps"]));
    assert!(
        stdout(&ps)
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("running")),
        "{}",
        stdout(&ps)
    );

    // save stops it into one file; a restore answers at once, its writes and the host's clock
    // with it.
    let saved = d.join("web.state");
    let out = exec(
        &state,
        "web",
        &["sh", "-c", "echo kept > /root/marker; cat /etc/machine-id"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let saved_id = stdout(&out);
    let save = run(&mut c2vm_in(
        &state,
        &["save", "web", saved.to_str().unwrap()],
    ));
    assert_eq!(save.status.code(), Some(0), "{}", stderr(&save));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let restored = std::time::Instant::now();
    let up = restore(&state, &saved, &["--hostname", "web-2"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    eprintln!(
        "--- restored and answering after {:.1} s ---",
        restored.elapsed().as_secs_f64()
    );
    // --hostname on a restore: a distinct identity (hostname and machine-id).
    let out = exec(
        &state,
        "web",
        &[
            "sh",
            "-c",
            "cat /root/marker; date +%s; hostname; cat /etc/machine-id",
        ],
    );
    let said = stdout(&out);
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some("kept"), "{said}");
    let guest_time: i64 = lines.next().unwrap().parse().unwrap();
    let host_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_time - host_time).abs() <= 5,
        "guest {guest_time}, host {host_time}"
    );
    assert_eq!(lines.next(), Some("web-2"), "{said}");
    let new_id = lines.next().unwrap_or("");
    assert!(
        new_id.len() == 32 && new_id != saved_id.trim(),
        "{said} (saved: {saved_id})"
    );

    // stop: the power button, and nothing left.
    let stop = run(&mut c2vm_in(&state, &["stop", "web"]));
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
    let out = exec(&state, "web", &["true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no VM named web"), "{}", stderr(&out));

    // A state file from another QEMU is refused in one line, and nothing is left.
    let other = d.join("other-qemu.state");
    // The same file with a manifest saying another QEMU saved it, appended after the first: a
    // later member of a name replaces the earlier one, as in any tar.
    {
        let mut text = String::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&saved).unwrap());
        let mut first = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap(), Path::new("c2vm-state.json"));
        first.read_to_string(&mut text).unwrap();
        let text = text.replace(
            "\"qemu\": \"QEMU emulator version ",
            "\"qemu\": \"QEMU emulator version 0.1 was ",
        );
        std::fs::copy(&saved, &other).unwrap();
        // Over the two zero blocks that end the archive.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&other)
            .unwrap();
        let end = file.metadata().unwrap().len() - 1024;
        file.set_len(end).unwrap();
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(end)).unwrap();
        let mut out = tar::Builder::new(file);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        out.append_data(&mut header, "c2vm-state.json", text.as_bytes())
            .unwrap();
        out.finish().unwrap();
    }
    let refused = run(&mut c2vm_in(
        &state,
        &["run", "-d", "--restore", other.to_str().unwrap()],
    ));
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err = one_error(&refused);
    assert!(
        err.contains("QEMU emulator version 0.1 was")
            && err.contains("a restore needs the same QEMU"),
        "{err}"
    );
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
    std::fs::remove_file(&other).unwrap();

    // A SIGINT during save: the VM is gone (as after any save), and so is the partial file.
    let up = restore(&state, &saved, &[]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let again = d.join("again.state");
    interrupt_after(
        c2vm_in(&state, &["save", "web", again.to_str().unwrap()]),
        std::time::Duration::from_millis(300),
    );
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
    assert_eq!(
        listing(d).iter().filter(|f| f.contains("again")).count(),
        0,
        "{:?}",
        listing(d)
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror and QEMU; scripts/test runs it"]
fn a_scratch_app_vm_answers_exec_cp_and_wait_from_c2vm_init() {
    let dir = scratch();
    let d = dir.path();
    let state = subdir(d, "state");
    scratch_image(
        d,
        "c2vm-test/scratch-session",
        "EXPOSE 8080\nCMD [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/\"]",
        &[],
    );
    let disk = d.join("app.qcow2");
    let cdx = d.join("app.cdx.json");
    let log = stderr(
        &Convert::new("c2vm-test/scratch-session", &disk)
            .args(["--sbom".as_ref(), cdx.as_os_str()])
            .locked()
            .success(),
    );
    assert!(log.contains("Init: c2vm-init"), "{log}");
    // Its SBOM: no package database, so no package; the generic bundle's kernel and c2vm-init
    // as PID 1, and nothing invented.
    let sbom = validated_sbom(&cdx);
    assert_eq!(sbom_packages(&sbom, "deb"), Vec::<String>::new());
    assert_eq!(sbom_packages(&sbom, "apk"), Vec::<String>::new());
    let names: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"linux") && names.contains(&"c2vm-init"),
        "{names:?}"
    );
    let kernel = &sbom["components"][names.iter().position(|n| *n == "linux").unwrap()];
    assert!(kernel.to_string().contains("bundle"), "{kernel}");
    let up = run(&mut c2vm_in(
        &state,
        &["run", "-d", "--name", "app", disk.to_str().unwrap()],
    ));
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));

    // PID 1 serves the agent: exact bytes, stderr apart, exit codes, stdin.
    let out = exec(
        &state,
        "app",
        &["sh", "-c", "printf 'x\\000y'; echo err >&2; exit 77"],
    );
    assert_eq!(
        (out.status.code(), &out.stdout[..], &out.stderr[..]),
        (Some(77), &b"x\0y"[..], &b"err\n"[..])
    );
    for (script, code) in [("exit 0", 0), ("exit 1", 1), ("kill -9 $$", 137)] {
        let out = exec(&state, "app", &["sh", "-c", script]);
        assert_eq!(out.status.code(), Some(code), "{script}: {}", stderr(&out));
    }
    streams_100_mb(&state, "app");
    let out = run_with_input(
        &mut c2vm_in(&state, &["exec", "-i", "app", "--", "tr", "a-z", "A-Z"]),
        b"abc",
    );
    assert_eq!(stdout(&out), "ABC");
    // The app's port, and files both ways.
    let out = run(&mut c2vm_in(
        &state,
        &["wait", "app", "--port", "8080", "--timeout", "60"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = d.join("page.html");
    std::fs::write(&page, b"<p>copied in</p>\n").unwrap();
    let cp = run(&mut c2vm_in(
        &state,
        &["cp", page.to_str().unwrap(), "app:/tmp/"],
    ));
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let back = d.join("back.html");
    let cp = run(&mut c2vm_in(
        &state,
        &["cp", "app:/tmp/page.html", back.to_str().unwrap()],
    ));
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    assert!(same_bytes(&page, &back));

    // The power button reaches the app through c2vm-init; nothing is left.
    let stop = run(&mut c2vm_in(&state, &["stop", "app"]));
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());

    // `run --exec` with no --login goes through the agent: no password, stdout exact, its status.
    let out = run(&mut c2vm_in(
        &state,
        &[
            "run",
            disk.to_str().unwrap(),
            "--exec",
            "cat /etc/hostname; echo apart >&2; exit 5",
        ],
    ));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(stdout(&out), "c2vm\n");
    assert!(stderr(&out).contains("apart"), "{}", stderr(&out));
    assert_eq!(listing(&state.join("c2vm/vms")), Vec::<String>::new());
}

/// `virsh -c qemu:///system ARGS…`: its stdout, or the failure's stderr as Err.
fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("running virsh");
    match out.status.success() {
        true => Ok(stdout(&out)),
        false => Err(stderr(&out)),
    }
}

/// A domain libvirt runs: the disk over a qcow2 overlay, the serial console to a file, user-mode
/// network, and QGA's channel as `virt-install --channel` adds it. SeaBIOS, TCG.
fn domain_xml(name: &str, overlay: &Path, console: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'><source path='{}'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>",
        overlay.display(),
        console.display()
    )
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, libvirt (scripts/install-host-deps --test) and QEMU; scripts/test runs it"]
fn libvirt_drives_a_c2vm_guest_like_any_with_qemus_guest_agent() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let d = dir.path();
    // libvirt runs QEMU as libvirt-qemu, which must reach the files.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = d.join("debian.qcow2");
    Convert::new("debian:latest", &disk).locked().success();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let overlay = d.join("overlay.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            disk.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ],
    );
    let t0 = std::time::Instant::now();
    run_script("start-libvirtd", &[]);
    eprintln!(
        "--- libvirtd answered after {:.1} s ---",
        t0.elapsed().as_secs_f64()
    );
    let name = format!("c2vm-test-{}", std::process::id());
    let xml = d.join("domain.xml");
    let console = d.join("console.log");
    std::fs::write(&xml, domain_xml(&name, &overlay, &console)).unwrap();
    let t0 = std::time::Instant::now();
    virsh(&["create", xml.to_str().unwrap()]).unwrap();
    eprintln!(
        "--- libvirt started the domain in {:.1} s ---",
        t0.elapsed().as_secs_f64()
    );
    let _destroy = {
        let name = name.clone();
        Guard::on_drop(move || {
            let _ = virsh(&["destroy", &name]);
        })
    };

    // virsh qemu-agent-command: once the guest's agent is up, as libvirt's clients ask it.
    let started = std::time::Instant::now();
    let ping = r#"{"execute":"guest-ping"}"#;
    while virsh(&["qemu-agent-command", &name, ping]).is_err() {
        assert!(
            started.elapsed().as_secs() < 300,
            "no agent after 300 s: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    eprintln!(
        "--- libvirt's agent answered after {:.1} s ---",
        started.elapsed().as_secs_f64()
    );
    let info: serde_json::Value = serde_json::from_str(
        &virsh(&["qemu-agent-command", &name, r#"{"execute":"guest-info"}"#]).unwrap(),
    )
    .unwrap();
    assert!(
        info["return"]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with("c2vm-init"),
        "{info}"
    );
    let exec = r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","cat /etc/os-release | grep -c ^ID=debian"],"capture-output":true}}"#;
    let pid: serde_json::Value =
        serde_json::from_str(&virsh(&["qemu-agent-command", &name, exec]).unwrap()).unwrap();
    let status = format!(
        r#"{{"execute":"guest-exec-status","arguments":{{"pid":{}}}}}"#,
        pid["return"]["pid"]
    );
    let ended = loop {
        let now: serde_json::Value =
            serde_json::from_str(&virsh(&["qemu-agent-command", &name, &status]).unwrap()).unwrap();
        if now["return"]["exited"] == true {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // "1\n", base64.
    assert_eq!(
        (
            ended["return"]["exitcode"].as_i64(),
            ended["return"]["out-data"].as_str()
        ),
        (Some(0), Some("MQo=")),
        "{ended}"
    );
    // virsh domifaddr --source agent: the address the guest's DHCP took (the agent starts
    // before the network is up, so until it shows).
    let asked = std::time::Instant::now();
    loop {
        let addresses = virsh(&["domifaddr", &name, "--source", "agent"]).unwrap();
        if addresses.contains("10.0.2.15/24") {
            break;
        }
        assert!(
            asked.elapsed().as_secs() < 120,
            "no DHCP address in 120 s: {addresses}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    // virsh shutdown --mode agent: the guest powers off through its agent.
    virsh(&["shutdown", &name, "--mode", "agent"]).unwrap();
    let asked = std::time::Instant::now();
    while virsh(&["domstate", &name]).is_ok_and(|s| s.contains("running")) {
        assert!(
            asked.elapsed().as_secs() < 120,
            "still running 120 s after the agent shutdown"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!(
        "--- powered off {:.1} s after the agent shutdown ---",
        asked.elapsed().as_secs_f64()
    );
    let console = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(console.contains("login:"), "{console}");
}
