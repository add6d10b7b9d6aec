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

/// Start a conversion, send `signal` when stderr shows `stage`, and check the cleanup.
fn interrupt_at(source: &str, stage: &str, signal: i32, dir: &Path) {
    // Stage on tmpfs, where c2vm stages by default: the 5 s measure c2vm, not how fast a loaded
    // virtual disk deletes 15,000 files.
    let work_dir = tempfile::Builder::new()
        .prefix("c2vm-interrupt-work.")
        .tempdir_in("/dev/shm")
        .unwrap();
    let work = work_dir.path().to_path_buf();
    let out = dir.join("out.qcow2");
    let pw = password_file(dir);
    let mut child = c2vm()
        .args(["convert", source, "-o"])
        .arg(&out)
        .arg("--password-file")
        .arg(&pw)
        .arg("--workdir")
        .arg(&work)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("==> ") && line.contains(stage) {
            assert!(
                !password_in_any_cmdline(),
                "the password is visible in a process argument list"
            );
            break;
        }
    }
    // Keep reading stderr so c2vm's last words have somewhere to go.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    assert!(
        seen.iter().any(|l| l.contains(stage)),
        "never reached {stage}: {seen:?}"
    );
    let sent = Instant::now();
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "c2vm did not stop within 5 s of the signal at {stage}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest = rest.join().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted at {stage}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
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
}

#[test]
fn signals_at_every_stage_clean_up_within_five_seconds() {
    let source = format!("rootfs:{}", test_rootfs().display());
    for (stage, signal) in [
        ("Unpacking", libc::SIGINT),
        ("Creating the ext4", libc::SIGTERM),
        ("Writing the EFI", libc::SIGINT),
        ("Converting", libc::SIGTERM),
    ] {
        let dir = scratch();
        interrupt_at(&source, stage, signal, dir.path());
    }
}

#[test]
fn signal_during_docker_export_removes_the_container() {
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
