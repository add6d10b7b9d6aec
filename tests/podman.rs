//! Podman's Docker-compatible API as the engine (Debian's podman, `podman system service` on a
//! private socket and storage, started by scripts/start-podman): `debian:latest` converts with
//! the kernel template built in Podman, boots to a login, and nothing is left in Podman.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const SOCKET: &str = "unix:///run/c2vm-podman/podman.sock";
/// The podman CLI on the service's storage (written by scripts/start-podman).
const PODMAN: &str = "/run/c2vm-podman/podman";

fn podman(args: &[&str]) -> String {
    tool(PODMAN, args)
}

/// Stops the service when the test ends, however it ends (its storage stays, as a cache).
struct Service;

impl Drop for Service {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/start-podman");
        let _ = Command::new(script).arg("stop").status();
    }
}

#[test]
#[ignore = "needs Podman, Docker (to copy debian:latest from), mke2fs and QEMU"]
fn debian_latest_converts_through_podman_and_boots_leaving_nothing_in_it() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/start-podman");
    let started = Command::new(&script)
        .output()
        .expect("running scripts/start-podman");
    assert!(
        started.status.success(),
        "scripts/start-podman failed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let _service = Service;
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let disk = d.join("podman.qcow2");
    let before = podman(&["ps", "-aq"]);
    let out = run(c2vm()
        .env("DOCKER_HOST", SOCKET)
        .args(["convert", "debian:latest", "--kernel", "distro", "-o"])
        .arg(&disk)
        .arg("--password-file")
        .arg(&pw));
    let said = stderr(&out);
    assert!(out.status.success(), "convert through Podman: {said}");
    assert_eq!(
        podman(&["ps", "-aq"]),
        before,
        "c2vm left a container in Podman"
    );

    // The password is in no layer's history of any image in Podman.
    let images = podman(&["images", "-q", "--no-trunc"]);
    for id in images.lines() {
        let history = podman(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", id]);
        assert!(
            !history.contains(PASSWORD),
            "the password is in the history of {id}"
        );
    }
    let kernel_image = regex::Regex::new(r"c2vm-kernel:[0-9a-f]{16}")
        .unwrap()
        .find(&said)
        .map(|m| m.as_str().to_string());
    assert!(
        kernel_image.is_some(),
        "the kernel image is not named: {said}"
    );

    let (status, guest) = boot_exec(
        &disk,
        "bios",
        &pw,
        "grep ^ID= /etc/os-release; systemctl is-system-running --wait; ip -4 -o addr show scope global | awk '{print $4}'",
    );
    assert_eq!(status, 0, "guest said: {guest}");
    assert!(guest.contains("ID=debian"), "{guest}");
    assert!(guest.contains("running"), "{guest}");
    assert!(guest.contains("10.0.2.15/24"), "{guest}");
}
