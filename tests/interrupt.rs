//! Ctrl-C and SIGTERM at each stage of a real conversion: c2vm exits promptly with 130 and leaves
//! no staging tree, no partial output and no container behind. While it runs, the password is in
//! no process's argument list.
mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn password_in_any_cmdline() -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(PASSWORD))
                .unwrap_or(false)
        })
}

/// Wait until stderr of `child` shows a line for which `reached` holds (calling `at_stage` then),
/// send `signal`, and require an exit within 5 s. Returns the exit status and the later stderr.
fn signal_when(
    child: &mut std::process::Child,
    what: &str,
    reached: impl Fn(&str) -> bool,
    at_stage: impl FnOnce(),
    signal: i32,
) -> (std::process::ExitStatus, Vec<String>) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut hit = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if reached(&line) {
            hit = true;
            break;
        }
    }
    // Keep reading stderr so c2vm's last words have somewhere to go.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    assert!(hit, "never reached {what}: {seen:?}");
    at_stage();
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = wait_exit(
        child,
        Duration::from_secs(5),
        &format!("c2vm after the signal at {what}"),
    );
    (status, rest.join().unwrap())
}

/// Start a conversion, send `signal` when stderr shows `stage`, and check the cleanup. A caller
/// whose source is in the daemon holds [`host_lock`], which counts containers.
fn interrupt_at(source: &str, stage: &str, signal: i32, dir: &Path) {
    interrupt_writing(source, "out.qcow2", &[], stage, signal, dir)
}

/// [`interrupt_at`] for the output `out` (in `dir`), converted with `args` too.
fn interrupt_writing(source: &str, out: &str, args: &[&str], stage: &str, signal: i32, dir: &Path) {
    // Stage on tmpfs, where c2vm stages by default: the 5 s measure c2vm, not how fast a loaded
    // virtual disk deletes 15,000 files. Its own directory, named unlike c2vm's staging
    // (`c2vm-*`), which tests that hold the lock expect none of in /dev/shm afterwards.
    let work_dir = tempfile::Builder::new()
        .prefix("interrupt-test-work.")
        .tempdir_in("/dev/shm")
        .unwrap();
    let work = work_dir.path().to_path_buf();
    let out = dir.join(out);
    let pw = password_file(dir);
    let mut child = Convert::new(source, &out)
        .password_file(&pw)
        .args(args)
        .arg("--workdir")
        .arg(&work)
        .command()
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, rest) = signal_when(
        &mut child,
        stage,
        |line| line.starts_with("==> ") && line.contains(stage),
        || {
            assert!(
                !password_in_any_cmdline(),
                "the password is visible in a process argument list"
            )
        },
        signal,
    );
    assert_eq!(status.code(), Some(130), "interrupted at {stage}: {rest:?}");
    assert!(says_interrupted(&rest), "{rest:?}");
    assert_eq!(
        listing(&work),
        Vec::<String>::new(),
        "staging left in the work dir after {stage}"
    );
    assert_eq!(
        listing(dir),
        vec!["password"],
        "output or temp output left after {stage}"
    );
    let left = processes_mentioning(&[dir, &work]);
    assert!(left.is_empty(), "processes left after {stage}: {left:?}");
}

/// Command lines (of any process) that name one of `paths`: a tool c2vm started and left.
fn processes_mentioning(paths: &[&Path]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if paths.iter().any(|p| cmdline.contains(p.to_str().unwrap())) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
#[ignore = "needs root, the debootstrap test rootfs and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn signals_at_every_stage_clean_up_within_five_seconds() {
    let source = format!("rootfs:{}", test_rootfs().display());
    for (stage, signal) in [
        // mid-stream: c2vm feeding the edited tar into mke2fs
        ("Reading the root filesystem", libc::SIGINT),
        ("Writing the root filesystem", libc::SIGTERM),
        ("Writing the EFI", libc::SIGINT),
        ("Converting", libc::SIGTERM),
    ] {
        // No lock: a rootfs source makes no container, and the staging is this test's own. So it
        // runs beside the others, as a loaded machine would run it, where it waited for them.
        let dir = scratch();
        interrupt_at(&source, stage, signal, dir.path());
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn signals_while_writing_live_media_clean_up_within_five_seconds() {
    let _lock = host_lock();
    for (out, args, stage, signal) in [
        (
            "out.iso",
            &[][..],
            "Writing the root (image stream",
            libc::SIGINT,
        ),
        ("out.iso", &[], "Writing the UEFI boot image", libc::SIGTERM),
        ("out.iso", &[], "Writing the ISO", libc::SIGINT),
        (
            "set",
            &["--format", "pxe"],
            "Writing the network boot set",
            libc::SIGTERM,
        ),
    ] {
        let dir = scratch();
        interrupt_writing("debian:latest", out, args, stage, signal, dir.path());
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn signal_during_docker_export_removes_the_container() {
    let _lock = host_lock();
    let before = tool("docker", &["ps", "-aq", "--no-trunc"]);
    let dir = scratch();
    // The kernel image may need building first: let that finish, interrupt the export.
    interrupt_at("debian:latest", "Exporting", libc::SIGINT, dir.path());
    // Container removal happens before exit; give the daemon a moment to settle.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        tool("docker", &["ps", "-aq", "--no-trunc"]),
        before,
        "container left behind"
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn signal_during_an_image_build_stops_it_and_removes_its_container() {
    let _lock = host_lock();
    let before = tool("docker", &["ps", "-aq", "--no-trunc"]);
    let dir = scratch();
    // A unique layer each time, so the build cache cannot skip the long step.
    let ctx = build_context(
        dir.path(),
        &format!(
            "FROM debian:latest\nRUN echo {} && sleep 300\n",
            std::process::id()
        ),
    );
    let out = dir.path().join("out.img");
    let mut child = c2vm()
        .args(["-v", "build"])
        .arg(&ctx)
        .arg("-o")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The RUN step is running once the daemon reports its intermediate container.
    let (status, rest) = signal_when(
        &mut child,
        "the RUN step",
        |line| line.contains("Running in"),
        || {},
        libc::SIGINT,
    );
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(says_interrupted(&rest), "{rest:?}");
    assert!(!out.exists());
    // The daemon cancels the build when c2vm hangs up, and removes the step's container.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = tool("docker", &["ps", "-aq", "--no-trunc"]);
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build's container is still there 20 s after c2vm stopped: {now}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs root, dockerd and the tools of scripts/install-host-deps --test; scripts/test runs it"]
fn signal_during_a_pull_stops_promptly() {
    // A registry that accepts connections and never answers: the daemon's pull hangs, as it
    // does on a stalled network, and Ctrl-C must still end c2vm at once.
    let registry = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = registry.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in registry.incoming().flatten() {
            open.push(stream);
        }
    });
    let dir = scratch();
    let out = dir.path().join("out.img");
    let reference = format!("127.0.0.1:{port}/c2vm/stalled:latest");
    let mut child = Convert::new(&reference, &out)
        .args(["--pull", "always"])
        .command()
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, rest) = signal_when(
        &mut child,
        "the pull",
        |line| line.contains("Pulling"),
        // Let the daemon get stuck on the registry first.
        || std::thread::sleep(Duration::from_secs(2)),
        libc::SIGINT,
    );
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(says_interrupted(&rest), "{rest:?}");
    assert!(!out.exists());
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}
