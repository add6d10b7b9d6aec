//! Live media: debian:latest as a hybrid ISO (booted as a CD on BIOS and with Secure Boot
//! enforced, as a USB stick on BIOS and UEFI; its root the overlay, forgotten at reboot) and as
//! a network boot set (booted with no disk on BIOS and UEFI, a corrupt root refused); a FROM
//! scratch app as an ISO, serving its page and leaving with its status. Real xorriso, tar2sqfs,
//! QEMU with SeaBIOS, OVMF and iPXE, under TCG.
mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `c2vm SUBCOMMAND ARGS…` with this test's VM state directory.
fn c2vm_in(state: &Path, args: &[&str]) -> Command {
    let mut cmd = c2vm();
    cmd.env("XDG_RUNTIME_DIR", state).args(args);
    cmd
}

/// `c2vm exec NAME -- sh -c SCRIPT` in a VM that stays up: (status, stdout).
fn exec(state: &Path, name: &str, script: &str) -> (i32, String) {
    let o = run(&mut c2vm_in(
        state,
        &["exec", name, "--", "sh", "-c", script],
    ));
    (o.status.code().unwrap_or(-1), stdout(&o))
}

/// `c2vm run ARGS… --exec SCRIPT` through the guest's agent, one boot: its stdout.
fn run_exec(medium: &Path, args: &[&str], script: &str) -> String {
    let started = Instant::now();
    let o = run(c2vm()
        .args(["run", "--cpus", "1"])
        .args(args)
        .arg(medium)
        .args(["--exec", script]));
    eprintln!("--- {args:?}: {:.1} s ---", started.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// debian:latest as an ISO, converted by the test that boots it (seconds): the two ISO tests
/// boot side by side.
fn debian_iso(d: &Path) -> std::path::PathBuf {
    let iso = d.join("debian.iso");
    let out = Convert::new("debian:latest", &iso).locked().success();
    let said = stderr(&out);
    assert!(said.contains("ISO, root squashfs"), "{said}");
    assert!(said.contains("lost at power-off"), "{said}");
    iso
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror, xorriso, tar2sqfs and QEMU; scripts/test runs it"]
fn debian_as_an_iso_boots_as_a_cd_and_forgets_at_reboot() {
    let dir = scratch();
    let d = dir.path();
    let iso = debian_iso(d);

    // Both firmwares' El Torito images, and the tables a USB stick is read by.
    let report = tool(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    );
    assert!(
        report.contains("El Torito boot img :   1  BIOS")
            && report.contains("El Torito boot img :   2  UEFI")
            && report.contains("/boot/efi.img"),
        "{report}"
    );
    let table = tool("fdisk", &["-l", iso.to_str().unwrap()]);
    assert!(
        table.contains("Disklabel type: gpt") && table.contains("EFI System"),
        "{table}"
    );

    // A CD on BIOS, in the background: the root is the overlay on the squashfs, a setting for
    // this boot (the hostname credential) arrives, and what is written is gone after a reboot.
    let state = subdir(d, "state");
    let up = run(c2vm_in(
        &state,
        &[
            "run",
            "-d",
            "--name",
            "live",
            "--cpus",
            "1",
            "--hostname",
            "live-1",
        ],
    )
    .arg(&iso));
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let (code, first) = exec(
        &state,
        "live",
        "findmnt -no FSTYPE /; findmnt -no FSTYPE /run/c2vm-live/medium; hostname; \
         echo written > /root/marker && cat /root/marker; cat /proc/sys/kernel/random/boot_id",
    );
    assert_eq!(code, 0, "{first}");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(
        lines[..4],
        ["overlay", "iso9660", "live-1", "written"],
        "{first}"
    );
    let boot_id = lines[4].to_string();
    let _ = exec(&state, "live", "systemctl reboot");
    let started = Instant::now();
    let after = loop {
        let (code, text) = exec(
            &state,
            "live",
            "cat /proc/sys/kernel/random/boot_id; ls -A /root",
        );
        if code == 0 && !text.starts_with(&boot_id) {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no second boot: {text}"
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(
        !after.contains("marker"),
        "the write outlived the reboot: {after}"
    );
    let _ = run(&mut c2vm_in(&state, &["kill", "live"]));
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror, xorriso, tar2sqfs and QEMU; scripts/test runs it"]
fn debian_as_an_iso_boots_with_secure_boot_and_as_a_usb_stick() {
    let dir = scratch();
    let iso = debian_iso(dir.path());

    // A CD with Secure Boot enforced: shim, the signed loader and kernel from the boot image.
    let secure = run_exec(
        &iso,
        &["--firmware", "uefi-secure"],
        "dmesg | grep -c 'Secure boot enabled'; findmnt -no FSTYPE /",
    );
    assert_eq!(secure, "1\noverlay\n");
    // A USB stick (the same file, as `dd` would write it): GRUB's hybrid MBR on BIOS, the GPT's
    // EFI partition on UEFI; the medium is the stick's disk.
    for firmware in ["bios", "uefi"] {
        let usb = run_exec(
            &iso,
            &["--media", "usb", "--firmware", firmware],
            "findmnt -no SOURCE /run/c2vm-live/medium; cat /sys/block/sda/removable",
        );
        assert_eq!(usb, "/dev/sda\n1\n", "{firmware}");
    }
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror, tar2sqfs, xorriso and QEMU; scripts/test runs it"]
fn an_iso_is_the_same_bytes_under_source_date_epoch() {
    let dir = scratch();
    let d = dir.path();
    let make = |name: &str, hostname: &str| {
        let iso = d.join(name);
        Convert::new("debian:latest", &iso)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--hostname", hostname])
            .locked()
            .success();
        iso
    };
    let (a, b, other) = (make("a.iso", "h"), make("b.iso", "h"), make("c.iso", "h2"));
    assert!(same_bytes(&a, &b), "{}", first_difference(&a, &b));
    assert!(
        !same_bytes(&a, &other),
        "another hostname gave the same ISO"
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror, tar2sqfs and QEMU with iPXE; scripts/test runs it"]
fn debian_as_a_network_boot_set_boots_with_no_disk_and_refuses_a_corrupt_root() {
    let dir = scratch();
    let d = dir.path();
    let set = d.join("netboot");
    let out = Convert::new("debian:latest", &set)
        .args(["--format", "pxe"])
        .locked()
        .success();
    assert!(
        stderr(&out).contains("network boot set"),
        "{}",
        stderr(&out)
    );
    let mut names = listing(&set);
    names.sort();
    for name in [
        "SHA256SUMS",
        "boot.ipxe",
        "initrd.img",
        "root.cpio",
        "vmlinuz",
    ] {
        assert!(names.iter().any(|n| n.ends_with(name)), "{name}: {names:?}");
    }
    let check = run(Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&set));
    assert!(check.status.success(), "{}", stdout(&check));
    // A set is not overwritten without --force, and a failed convert leaves nothing new.
    let again = Convert::new("debian:latest", &set)
        .args(["--format", "pxe"])
        .locked()
        .output();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists; use --force"),
        "{}",
        stderr(&again)
    );

    // No disk at all: iPXE from the NIC's ROM fetches the kernel, the initramfs and the root
    // over QEMU's TFTP; the root is in RAM, under the overlay.
    for firmware in ["bios", "uefi"] {
        let text = run_exec(
            &set,
            &["--firmware", firmware, "--netboot"],
            "findmnt -no FSTYPE /; lsblk -dn -o TYPE | grep -c disk || true",
        );
        assert_eq!(text, "overlay\n0\n", "{firmware}");
    }

    // One byte of the root changed: the boot stops in the initramfs and says why.
    let bad = subdir(d, "bad");
    for name in ["boot.ipxe", "initrd.img", "vmlinuz", "root.cpio"] {
        std::fs::copy(set.join(name), bad.join(name)).unwrap();
    }
    let root = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(bad.join("root.cpio"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8];
    root.read_exact_at(&mut byte, 40 << 20).unwrap();
    root.write_all_at(&[byte[0] ^ 0xff], 40 << 20).unwrap();
    let o = run(c2vm()
        .args(["run", "--cpus", "1", "--netboot"])
        .arg(&bad)
        .args(["--expect", "login:", "--timeout", "300"]));
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("the root image is corrupt"), "{said}");
    assert!(said.contains("initramfs's shell"), "{said}");
}

#[test]
#[ignore = "needs root, dockerd with debian:latest (as amd64/debian:stable too), the Debian mirror, tar2sqfs, xorriso and QEMU; scripts/test runs it"]
fn a_scratch_app_as_an_iso_serves_its_page_and_leaves_with_its_status() {
    let dir = user_scratch();
    let d = dir.path();
    scratch_image(
        d,
        "c2vm-test/live-web",
        "EXPOSE 8080\nENTRYPOINT [\"/bin/sh\", \"-c\", \"mkdir -p /tmp/site && \
         echo served-from-an-iso > /tmp/site/index.html && exec httpd -f -p 8080 -h /tmp/site\"]",
        &[],
    );
    let iso = d.join("web.iso");
    let said = stderr(
        &Convert::new("c2vm-test/live-web", &iso)
            .by_user()
            .locked()
            .success(),
    );
    assert!(said.contains("Kernel: c2vm's generic bundle"), "{said}");
    let started = Instant::now();
    let vm = Command::new(env!("CARGO_BIN_EXE_c2vm"))
        .args(["run", "--cpus", "1", "--publish", "18085:8080"])
        .arg(&iso)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let page = first_page(18085, Duration::from_secs(150));
    eprintln!("--- page after {:?} ---", started.elapsed());
    // SAFETY: ends the VM's process group (c2vm and QEMU), which the test started.
    unsafe { libc::kill(-(vm.id() as i32), libc::SIGTERM) };
    let _ = vm.wait_with_output();
    assert_eq!(page, "served-from-an-iso\n");

    // The app's arguments at boot (after its ENTRYPOINT) and its exit status, through `run`.
    scratch_image(
        d,
        "c2vm-test/live-exit",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"exit 1\"]",
        &[],
    );
    let iso = d.join("exit.iso");
    Convert::new("c2vm-test/live-exit", &iso)
        .by_user()
        .locked()
        .success();
    let o = run(c2vm()
        .args(["run", "--cpus", "1", "-e", "WORD=from-env"])
        .arg(&iso)
        .args(["--", "echo said $WORD; exit 7"])
        .stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stdout(&o).contains("said from-env"), "{}", stdout(&o));
}
