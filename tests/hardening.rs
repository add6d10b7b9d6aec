//! Bad input and faults, through the real binary: hostile archives (as `rootfs:` tarballs and as
//! image layers seen through the daemon), odd but valid names, a daemon that refuses c2vm's API
//! version, a read-only output directory, no OVMF, and secrets in verbose logs. Each case checks
//! the exit code, a one-line error that says what to do, and that nothing is left behind or
//! written outside the staging tree.
mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every path under `dir` with its size and mtime: a snapshot to compare after a run.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            all.push((e.path(), meta.len(), meta.mtime()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    all.sort();
    all
}

#[test]
#[ignore = "needs root and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn hostile_archives_are_refused_and_write_nothing_outside_the_staging_tree() {
    let dir = scratch();
    let work = subdir(dir.path(), "work");
    // The target of every escape attempt: a directory beside the work dir, with a file in it.
    let outside = subdir(dir.path(), "outside");
    std::fs::write(outside.join("victim"), "host file").unwrap();
    let abs = outside.to_str().unwrap().to_string();
    let climb = format!("../../../../../../../../../..{abs}");
    let before = snapshot(&outside);

    let mut cases: Vec<(&str, Tar, &str)> = Vec::new();
    let mut a = Tar::new();
    a.file("../victim", b"owned");
    cases.push(("a `..` name", a, "`..`"));
    let mut a = Tar::new();
    a.file("etc/ok", b"fine");
    a.file("usr/../../victim", b"owned");
    cases.push(("`..` in the middle", a, "`..`"));
    let mut a = Tar::new();
    a.symlink("evil", &abs);
    a.file("evil/victim", b"owned");
    cases.push(("a write through an absolute symlink", a, "outside"));
    let mut a = Tar::new();
    a.symlink("evil", &climb);
    a.file("evil/planted", b"owned");
    cases.push(("a write through a relative symlink", a, "outside"));
    let mut a = Tar::new();
    a.hardlink("hard", &format!("{abs}/victim"));
    a.file("hard", b"owned");
    cases.push(("a hardlink to an absolute path", a, "refusing"));
    let mut a = Tar::new();
    a.hardlink("hard", "../../outside/victim");
    cases.push(("a hardlink that climbs out", a, "`..`"));
    let mut a = Tar::new();
    a.dir("etc/");
    a.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    a.symlink("etc", &abs);
    a.file("etc/victim", b"owned");
    cases.push(("a directory replaced by a symlink", a, "refusing"));
    let mut a = Tar::new();
    a.symlink("dev", &climb);
    a.entry("dev/planted-node", tar::EntryType::Fifo, 0o644, None, b"");
    cases.push(("a device node through a symlink", a, "outside"));
    let mut a = Tar::new();
    a.symlink("evil", &abs);
    a.hardlink("evil/victim", "etc/whatever");
    cases.push(("a hardlink written through a symlink", a, "refusing"));

    // A header that claims 3 GiB, with the data missing: found before anything is written.
    let mut a = Tar::new();
    let mut h = a.header(tar::EntryType::Regular, 0o644, 3 << 30);
    h.set_path("huge").unwrap();
    h.set_cksum();
    a.file("small", b"tiny");
    let mut bytes = a.bytes();
    bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[0u8; 4096]);
    let giant = dir.path().join("giant.tar");
    std::fs::write(&giant, &bytes).unwrap();
    for size in ["auto", "1G"] {
        let o = Convert::new(
            &format!("rootfs:{}", giant.display()),
            &dir.path().join("out.img"),
        )
        .args(["--size", size])
        .arg("--workdir")
        .arg(&work)
        .output();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("corrupt or truncated") || err.contains("too small"),
            "a 3 GiB entry with no data, --size {size}: {err}"
        );
        assert_eq!(listing(&work), Vec::<String>::new());
    }
    std::fs::remove_file(&giant).unwrap();

    for (what, mut archive, says) in cases {
        let tarball = dir.path().join("hostile.tar");
        archive.write(&tarball);
        let o = Convert::new(
            &format!("rootfs:{}", tarball.display()),
            &dir.path().join("out.img"),
        )
        .arg("--workdir")
        .arg(&work)
        .output();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            err.contains("refusing archive entry") && err.contains(says),
            "{what}: {err}"
        );
        assert_eq!(
            snapshot(&outside),
            before,
            "{what}: something was written outside the staging tree"
        );
        assert_eq!(
            listing(&work),
            Vec::<String>::new(),
            "{what}: work dir left dirty"
        );
        assert_eq!(
            listing(dir.path()),
            vec!["hostile.tar", "outside", "work"],
            "{what}: output left behind"
        );
        eprintln!("refused as expected: {what}");
    }
}

#[test]
#[ignore = "needs root, the debootstrap test rootfs, the tools of scripts/install-host-deps --test and debugfs; scripts/test runs it"]
fn odd_names_pax_long_names_and_device_nodes_survive_and_secrets_stay_out_of_logs() {
    let dir = scratch();
    // The bootable test root filesystem with odd-but-valid entries appended (GNU tar -A).
    let long_dir = format!("opt/{}", "d".repeat(120));
    let long_name = format!("{long_dir}/{}", "n".repeat(150));
    let extra = Tar::new()
        // A long name in a PAX header (the builder's own long names are GNU entries).
        .pax_file(&long_name, "opt/placeholder", b"pax\n")
        .entry(
            b"opt/new\nline",
            tar::EntryType::Regular,
            0o644,
            None,
            b"ok\n",
        )
        .entry(
            b"opt/latin1-\xe9t\xe9",
            tar::EntryType::Regular,
            0o644,
            None,
            b"ok\n",
        )
        .device("dev/c2vm-test-sda", tar::EntryType::Block, (8, 0), 0o600)
        .bytes();
    let combined = test_rootfs_plus(dir.path(), &extra);
    let disk = dir.path().join("odd.img");
    let pw = password_file(dir.path());
    // Locked: it stages in /dev/shm.
    let o = Convert::new(&format!("rootfs:{}", combined.display()), &disk)
        .verbose()
        .password_file(&pw)
        .locked()
        .output();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = format!("{}{}", stdout(&o), stderr(&o));
    assert!(log.contains("mke2fs"), "-vv shows the commands run: {log}");
    assert!(!log.contains(PASSWORD), "the password is in the -vv log");
    std::fs::remove_file(&combined).unwrap();

    let root = format!("{}?offset={}", disk.display(), partition_offset(&disk, 2));
    tool("e2fsck", &["-fn", &root]);
    let cat = |path: &str| tool("debugfs", &["-R", &format!("cat \"{path}\""), &root]);
    assert_eq!(cat(&format!("/{long_name}")), "pax\n", "PAX long name");
    let stat = tool("debugfs", &["-R", "stat /dev/c2vm-test-sda", &root]);
    assert!(stat.contains("Type: block"), "{stat}");
    assert!(stat.contains("Device major/minor number: 08:00"), "{stat}");
    // The newline and Latin-1 names are there with their exact bytes (debugfs escapes them).
    let names = tool("debugfs", &["-R", "ls /opt", &root]);
    assert!(names.contains("latin1-\\xe9t\\xe9"), "{names}");
    assert!(names.contains("new\\x0aline"), "{names}");
    let shadow = cat("/etc/shadow");
    assert!(shadow.starts_with("root:$6$"), "hash only: {shadow}");
    assert!(!shadow.contains(PASSWORD));
}

/// A stand-in Docker daemon on a unix socket that answers `/version` as told and refuses
/// everything else as a daemon refusing the client's API version does. (No real daemon that
/// refuses this c2vm's API version can run here: Debian's docker.io speaks API 1.41.)
fn fake_daemon(socket: &Path, version_json: &'static str) -> std::thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap_or(0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let (status, body) = if request_line.contains("/version ") {
                ("200 OK", version_json.to_string())
            } else {
                (
                    "400 Bad Request",
                    r#"{"message":"client version 1.53 is too old. Minimum supported API version is 1.55, please upgrade your client to a newer version"}"#.to_string(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nApi-Version: 1.60\r\n\r\n{body}",
                body.len()
            );
        }
    })
}

#[test]
#[ignore = "needs root and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn a_daemon_that_refuses_our_api_version_is_named_with_what_to_upgrade() {
    let dir = scratch();
    for (version, says) in [
        (
            r#"{"Version":"1.13.1","ApiVersion":"1.26","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#,
            "c2vm needs API 1.40 (Docker 19.03) or newer: upgrade Docker",
        ),
        (
            r#"{"Version":"40.0.0","ApiVersion":"1.60","MinAPIVersion":"1.55","Os":"linux","Arch":"amd64"}"#,
            "accepts API 1.55 and newer only, and this c2vm speaks up to 1.53: upgrade c2vm",
        ),
    ] {
        let socket = dir.path().join("docker.sock");
        let _ = std::fs::remove_file(&socket);
        let _daemon = fake_daemon(&socket, version);
        let started = std::time::Instant::now();
        let o = Convert::new("debian:latest", &dir.path().join("x.img"))
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .output();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("c2vm: error")).count(),
            1,
            "{err}"
        );
        assert!(started.elapsed().as_secs() < 10, "should fail at once");
        assert!(!dir.path().join("x.img").exists());
    }
}

#[test]
#[ignore = "needs root (mounts tmpfs) and the debootstrap test rootfs; scripts/test runs it"]
fn a_read_only_output_directory_fails_before_any_work() {
    let dir = scratch();
    let ro = tmpfs(&dir.path().join("ro"), "ro,size=1M");
    let started = std::time::Instant::now();
    let o = Convert::rootfs(&ro.join("x.img")).output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        the_error(&err).contains(&format!(
            "the output directory {} is not writable",
            ro.display()
        )) && err.contains("Read-only file system"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 3,
        "should fail before unpacking"
    );
    assert_eq!(listing(&ro), Vec::<String>::new());
}

#[test]
#[ignore = "needs root (mount namespace), qemu-img and OVMF; scripts/test runs it"]
fn run_without_ovmf_or_qemu_says_which_package_to_install() {
    let dir = scratch();
    let disk = dir.path().join("tiny.qcow2");
    tool(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "64M"],
    );
    // A private mount namespace hides the firmware from this one command only.
    let o = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none /usr/share/OVMF && exec {} run --firmware uefi --expect login: {}",
            env!("CARGO_BIN_EXE_c2vm"),
            disk.display()
        )));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("apt-get install ovmf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists()
            || Path::new("/usr/share/OVMF/OVMF_CODE.fd").exists(),
        "the host's firmware is untouched"
    );
    // No QEMU at all: a PATH with every other tool but not qemu-system-x86_64.
    let bin = subdir(dir.path(), "bin");
    let qemu_img = tool("sh", &["-c", "command -v qemu-img"]);
    std::os::unix::fs::symlink(qemu_img.trim(), bin.join("qemu-img")).unwrap();
    let o = run(c2vm().env("PATH", &bin).arg("run").arg(&disk));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
}

#[test]
#[ignore = "needs root, dockerd, the tools of scripts/install-host-deps --test and debugfs; scripts/test runs it"]
fn hostile_layers_seen_through_the_daemon_cannot_reach_the_host() {
    // An image (imported through the daemon, which keeps such links) whose config files are
    // symlinks to host paths, and a block device node: the guest setup writes inside the tree,
    // and the device stays a node in the guest.
    let dir = scratch();
    let host = subdir(dir.path(), "host");
    for f in ["hostname", "hosts", "fstab", "shadow"] {
        std::fs::write(host.join(f), format!("host {f}\n")).unwrap();
    }
    let hostp = host.to_str().unwrap().to_string();
    let mut a = Tar::new();
    a.dir("etc/");
    a.symlink("etc/hostname", &format!("{hostp}/hostname"));
    a.symlink(
        "etc/hosts",
        &format!("../../../../../../../..{hostp}/hosts"),
    );
    a.symlink("etc/fstab", &format!("{hostp}/fstab"));
    a.symlink("etc/shadow", &format!("{hostp}/shadow"));
    a.file("etc/os-release", b"ID=debian\nVERSION_CODENAME=bookworm\n");
    a.dir("root/");
    a.symlink("root/.ssh", &hostp);
    a.dir("boot/");
    a.file("boot/vmlinuz-6.1.0-c2vm", b"not really a kernel");
    a.file("boot/initrd.img-6.1.0-c2vm", b"not really an initrd");
    // An init of its own (and no command), so that c2vm keeps it rather than bring c2vm-init.
    a.file("sbin/init", b"#!/bin/sh\n");
    a.device("dev/host-disk", tar::EntryType::Block, (8, 0), 0o666);
    let tarball = dir.path().join("layer.tar");
    a.write(&tarball);
    let before = snapshot(&host);
    let key = dir.path().join("key.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2vmHostileLayerTest hostile\n",
    )
    .unwrap();
    let pw = password_file(dir.path());
    let _lock = host_lock();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker import {} c2vm-test-hostile:latest >/dev/null",
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "docker import");
    let before_containers = containers();
    let disk = dir.path().join("hostile.img");
    // With a password: /etc/shadow is a symlink, which c2vm will not write through.
    let o = Convert::new("c2vm-test-hostile:latest", &disk)
        .arg("--no-kernel")
        .password_file(&pw)
        .output();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/shadow in the image is a symlink") && err.contains("regular file"),
        "{err}"
    );
    assert!(!disk.exists());
    let o = Convert::new("c2vm-test-hostile:latest", &disk)
        .arg("--no-kernel")
        .arg("--ssh-key")
        .arg(&key)
        .output();
    tool("docker", &["rmi", "c2vm-test-hostile:latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(containers(), before_containers, "container left behind");
    assert_eq!(
        snapshot(&host),
        before,
        "a host file was written through the image's symlinks"
    );

    let root = format!("{}?offset={}", disk.display(), partition_offset(&disk, 2));
    tool("e2fsck", &["-fn", &root]);
    let cat = |path: &str| tool("debugfs", &["-R", &format!("cat {path}"), &root]);
    assert_eq!(cat("/etc/hostname"), "c2vm\n");
    assert!(cat("/etc/fstab").contains("UUID="));
    assert!(cat("/root/.ssh/authorized_keys").contains("hostile"));
    let stat = tool("debugfs", &["-R", "stat /dev/host-disk", &root]);
    assert!(stat.contains("Type: block"), "{stat}");
}
