//! Podman's Docker-compatible API as the engine (Debian's podman, `podman system service` on a
//! private socket and storage, started by scripts/start-podman): `debian:latest` converts with
//! the image pulled by Podman from a local registry, the kernel template built in Podman, boots
//! to a login, and nothing is left in Podman. Its disk also carries the GRUB flavour of the
//! Secure Boot chain (shim, Debian's signed GRUB), booted with Secure Boot enforced.
mod common;
use common::*;
use std::process::Command;

const SOCKET: &str = "unix:///run/c2vm-podman/podman.sock";
/// The podman CLI on the service's storage (written by scripts/start-podman).
const PODMAN: &str = "/run/c2vm-podman/podman";

fn podman(args: &[&str]) -> String {
    tool(PODMAN, args)
}

#[test]
#[ignore = "needs Podman, Docker (to copy debian:latest from), docker-registry, mke2fs and QEMU"]
fn debian_latest_converts_through_podman_and_boots_leaving_nothing_in_it() {
    let dir = scratch();
    let d = dir.path();
    let pw = password_file(d);
    let disk = d.join("podman.qcow2");
    // A registry to pull from: Podman reaches it over plain HTTP only when told.
    let registry = Registry::start("http");
    let port = registry.port;
    let remote = format!("127.0.0.1:{port}/c2vm-test/debian:latest");
    tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "docker-daemon:debian:latest",
            &format!("docker://{remote}"),
        ],
    );
    run_script(
        "start-podman",
        &[("C2VM_PODMAN_INSECURE", &format!("127.0.0.1:{port}"))],
    );
    // The service stops when the test ends; its storage stays, as a cache.
    let _service = Guard::on_drop(|| {
        let _ = Command::new(script("start-podman")).arg("stop").status();
    });
    let before = podman(&["ps", "-aq"]);

    // A missing image: Podman's pull error, in one line.
    let missing = format!("127.0.0.1:{port}/c2vm-test/missing:latest");
    let out = Convert::new(&missing, &d.join("missing.raw"))
        .env("DOCKER_HOST", SOCKET)
        .env("TMPDIR", d)
        .password_file(&pw)
        .output();
    let err = one_error(&out);
    assert!(err.contains("manifest unknown"), "{err}");
    assert!(!d.join("missing.raw").exists());

    // Pulled by Podman from the registry (not in its store before), inspected, its os-release
    // read, the kernel template built in Podman, exported.
    let _ = Command::new(PODMAN).args(["rmi", "-f", &remote]).output();
    let out = Convert::new(&remote, &disk)
        .env("DOCKER_HOST", SOCKET)
        .env("TMPDIR", d)
        .args(["--pull", "always", "--kernel", "distro"])
        .args(["--bootloader", "grub", "--secure-boot", "on"])
        .password_file(&pw)
        .output();
    let said = stderr(&out);
    assert!(out.status.success(), "convert through Podman: {said}");
    assert!(said.contains("Pulling"), "{said}");
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
        "uefi-secure",
        &pw,
        &facts_script(&[
            ("secure_boot", SECURE_BOOT_STATE),
            ("release", "grep ^ID= /etc/os-release"),
            (
                "loaders",
                "dpkg-query -W -f='${Package} ' shim-signed grub-efi-amd64-signed systemd-boot-efi-amd64-signed c2vm-esp-loader 2>/dev/null; true",
            ),
            ("state", "systemctl is-system-running --wait"),
            (
                "addr",
                &format!("{WAIT_FOR_DHCP}; ip -4 -o addr show scope global | awk '{{print $4}}'"),
            ),
        ]),
    );
    assert_eq!(status, 0, "guest said: {guest}");
    let facts = Facts::parse(&guest);
    assert!(facts["release"].contains("ID=debian"), "{guest}");
    assert!(facts["state"].contains("running"), "{guest}");
    assert!(facts["addr"].contains("10.0.2.15/24"), "{guest}");
    assert_eq!(facts["secure_boot"].trim(), "1", "{guest}");
    // Only the chain's loader: GRUB's signed image, not systemd-boot's.
    let mut loaders: Vec<&str> = facts["loaders"].split_whitespace().collect();
    loaders.sort();
    assert_eq!(loaders, ["grub-efi-amd64-signed", "shim-signed"], "{guest}");
}
